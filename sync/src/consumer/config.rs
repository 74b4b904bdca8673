//! The librdkafka client configuration of the consumer group.

use crate::config::SyncConfig;
use rdkafka::ClientConfig;

/// Client configuration of the consumer group (also used by `replay`).
pub fn consumer_config(cfg: &SyncConfig, group: &str) -> ClientConfig {
    let mut cc = cfg.kafka.client_config();
    cc.set("group.id", group)
        .set("enable.auto.commit", "true")
        .set(
            "auto.commit.interval.ms",
            cfg.consumer.commit_interval_ms.to_string(),
        )
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", &cfg.kafka.auto_offset_reset)
        // Incremental rebalances: a member joining or leaving moves only
        // the partitions that must move; the others keep their in-flight
        // work (the context handles incremental assign/revoke lists).
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set(
            "session.timeout.ms",
            cfg.kafka.session_timeout_ms.to_string(),
        )
        // Prefetch bounds. Our own buffer (`consumer.max_buffered_*`) is
        // what bounds memory by design, and what bulk requests are cut
        // from; librdkafka's queue only has to refill it within a fetch's
        // round trip (consuming runs ~100x faster than indexing). Its
        // defaults would add far more while catching up (measured: ~40
        // MiB of zstd output buffers and 18k queued messages, issue 6): it
        // keeps 100,000 messages per partition queued, and one fetch may
        // carry 1 MiB of *compressed* records per partition.
        //
        // What a queued message costs is more than its bytes: librdkafka
        // decompresses a whole record batch into one buffer, and frees it
        // when the batch's last message is polled. A zstd frame written by
        // librdkafka (mongo-source) or by the Java client (the Kafka
        // Connector) does not state its decompressed size, so that buffer
        // is guessed at 2x the compressed size, then grown to 6x, 18x, ...
        // until the batch fits. With 1,000 messages and 256 KiB per
        // partition these buffers were 19.5 MB of es-sync's 47 MB heap at
        // its peak (heaptrack, 50,000 records over 6 partitions, issue 17);
        // with 100 messages and 64 KiB, 5.9 MB of 31 MB. A fetch still
        // brings at least one whole batch (KIP-74), so a record batch
        // larger than these limits is never stuck.
        .set("queued.min.messages", "100")
        .set(
            "queued.max.messages.kbytes",
            (cfg.consumer.max_buffered_bytes / 4 / 1024)
                .max(1024)
                .to_string(),
        )
        .set("fetch.max.bytes", (1usize << 20).to_string())
        .set("max.partition.fetch.bytes", (64usize << 10).to_string())
        // With bounded queues the fetcher reaches its thresholds all the
        // time, and librdkafka then waits `fetch.queue.backoff.ms` (1 s by
        // default) before fetching that partition again: es-sync idled in
        // ~0.5-1 s gaps every second, with ~0.9 requests in flight instead
        // of 4 (measured: 6.0k -> 14.3k docs/s on the bench, issue 6).
        .set("fetch.queue.backoff.ms", "10");
    // Last: the operator's properties override the defaults above.
    cfg.kafka.client.apply_properties(&mut cc);
    cc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> SyncConfig {
        let text = include_str!("../../../config/es-sync.toml");
        let mut cfg: SyncConfig = shared::config::load_str(
            text,
            std::path::Path::new("config/es-sync.toml"),
            "ES_SYNC",
            std::iter::empty(),
        )
        .unwrap();
        cfg.resolve_paths(std::path::Path::new("config"));
        cfg.validate().unwrap();
        cfg
    }

    #[test]
    fn prefetch_is_bounded_by_our_own_buffer_limits() {
        let mut cfg = shipped();
        cfg.consumer.max_buffered_bytes = 16 << 20;
        let cc = consumer_config(&cfg, "g");
        // librdkafka defaults: 100000 messages, 65536 KiB, 52428800, 1048576.
        assert_eq!(cc.get("queued.min.messages"), Some("100"));
        assert_eq!(cc.get("queued.max.messages.kbytes"), Some("4096"));
        assert_eq!(cc.get("fetch.max.bytes"), Some("1048576"));
        assert_eq!(cc.get("max.partition.fetch.bytes"), Some("65536"));
        assert_eq!(cc.get("fetch.queue.backoff.ms"), Some("10"));
        assert_eq!(cc.get("enable.auto.offset.store"), Some("false"));
    }

    #[test]
    fn user_properties_override_the_prefetch_bounds() {
        let mut cfg = shipped();
        cfg.kafka.client.properties.insert(
            "queued.max.messages.kbytes".into(),
            shared::config::Secret::new("65536"),
        );
        let cc = consumer_config(&cfg, "g");
        assert_eq!(cc.get("queued.max.messages.kbytes"), Some("65536"));
    }
}
