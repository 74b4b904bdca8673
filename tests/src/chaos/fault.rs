//! The list of faults, their names (the report's and `CHAOS_FAULTS`'s),
//! which of them the short suite of `scripts/test` runs, and the dispatch
//! to the module that sets each up and injects it.

use super::run::{Run, Setup};
use super::{classic, dead_letters, frozen, index, injected, network, source_pause};

/// One fault of the suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// kill -9 of mongo-source, then a new one.
    KillSource,
    /// kill -9 of es-sync, then a new one.
    KillSync,
    /// Kafka restarted.
    RestartKafka,
    /// Elasticsearch restarted.
    RestartElasticsearch,
    /// MongoDB restarted.
    RestartMongo,
    /// mongo-source stopped (SIGSTOP) past its lease.
    PauseSource,
    /// es-sync stopped past its group session.
    PauseSync,
    /// Elasticsearch with one write thread and a queue of one under a burst.
    WriteRejections,
    /// `index.blocks.write` on one index for 5-30 s.
    WriteBlock,
    /// The flood-stage disk watermark: the node sets `read_only_allow_delete`.
    FloodStage,
    /// One index closed, then opened.
    CloseIndex,
    /// One alias deleted, then created again.
    AliasDeleted,
    /// `index.mapping.total_fields.limit` met by a new field, then raised.
    FieldLimit,
    /// Elasticsearch frozen (SIGSTOP) while es-sync gets SIGTERM.
    FrozenEsSigterm,
    /// Elasticsearch frozen during `es-sync replay --coordinate`.
    FrozenEsReplay,
    /// Latency and connection resets between the binaries and Kafka.
    SlowBroker,
    /// Kafka unreachable for a while (every packet held), then resets.
    PartitionedBroker,
    /// Latency, a stall and resets between es-sync and Elasticsearch.
    SlowElasticsearch,
    /// mongo-source stopped inside a transaction past `transaction.timeout.ms`.
    SourcePastTxnTimeout,
    /// es-sync's dead-letter topic deleted (no auto-creation) while a bad
    /// document comes.
    DlqUnavailable,
    /// A record just under mongo-source's limit that Elasticsearch refuses.
    NearLimitDeadLetter,
    /// A panic in an es-sync bulk task and in a mongo-source stream.
    TaskPanic,
    /// A sender whose versions come from a clock ahead or behind.
    ClockSkew,
}

impl Fault {
    /// Every fault, in the order the suite runs them.
    pub const ALL: [Fault; 23] = [
        Fault::KillSource,
        Fault::KillSync,
        Fault::RestartKafka,
        Fault::RestartElasticsearch,
        Fault::RestartMongo,
        Fault::PauseSource,
        Fault::PauseSync,
        Fault::WriteRejections,
        Fault::WriteBlock,
        Fault::FloodStage,
        Fault::CloseIndex,
        Fault::AliasDeleted,
        Fault::FieldLimit,
        Fault::FrozenEsSigterm,
        Fault::FrozenEsReplay,
        Fault::SlowBroker,
        Fault::PartitionedBroker,
        Fault::SlowElasticsearch,
        Fault::SourcePastTxnTimeout,
        Fault::DlqUnavailable,
        Fault::NearLimitDeadLetter,
        Fault::TaskPanic,
        Fault::ClockSkew,
    ];

    /// The faults of the short suite (`scripts/test`), with short windows.
    /// It must take no longer than the chaos test it replaced (about
    /// 460 s in `scripts/test` on the 2-core machine: kills, restarts and
    /// pauses, which `e2e_pipeline`, `source_crash`, `source_cluster`,
    /// `sync_backpressure` and `sync_rejections` also test on the shared
    /// bench), so it keeps one fault of each family that is cheap to run:
    /// an index refusing writes (a write block, a closed index, a deleted
    /// alias, the field limit), a partitioned broker, the dead-letter topic
    /// away, a record just under the source limit, injected panics. The
    /// flood stage (the node's disk check takes 10-20 s to apply it),
    /// Elasticsearch frozen under SIGTERM and during a replay, the slow
    /// broker and Elasticsearch, the source stopped past its transaction
    /// timeout and clock skew run in the full suite (`scripts/chaos`).
    /// Elasticsearch frozen under SIGTERM runs here too (it found the
    /// roll-up of a reply deleted just before a stop).
    pub const SHORT: [Fault; 9] = [
        Fault::WriteBlock,
        Fault::CloseIndex,
        Fault::AliasDeleted,
        Fault::FieldLimit,
        Fault::PartitionedBroker,
        Fault::DlqUnavailable,
        Fault::NearLimitDeadLetter,
        Fault::TaskPanic,
        Fault::FrozenEsSigterm,
    ];

    /// Its name in reports and in `CHAOS_FAULTS`.
    pub fn name(self) -> String {
        format!("{self:?}")
    }

    /// The fault named `name` (as [`Fault::name`] writes it, any case).
    pub fn parse(name: &str) -> Option<Fault> {
        Self::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(name.trim()))
    }

    /// Settings of the run before its binaries start (environment of the
    /// binaries, proxies in their way).
    pub fn setup(self, s: &mut Setup) {
        match self {
            Fault::FrozenEsSigterm | Fault::FrozenEsReplay => frozen::setup(self, s),
            Fault::SlowBroker | Fault::PartitionedBroker | Fault::SlowElasticsearch => {
                network::setup(self, s)
            }
            Fault::SourcePastTxnTimeout => source_pause::setup(s),
            Fault::TaskPanic | Fault::ClockSkew => injected::setup(self, s),
            _ => {}
        }
    }

    /// Injects the fault into a running pipeline under load; returns when
    /// the fault is over (the operator's fix included).
    pub async fn inject(self, run: &mut Run) {
        match self {
            Fault::KillSource
            | Fault::KillSync
            | Fault::RestartKafka
            | Fault::RestartElasticsearch
            | Fault::RestartMongo
            | Fault::PauseSource
            | Fault::PauseSync
            | Fault::WriteRejections => classic::inject(self, run).await,
            Fault::WriteBlock
            | Fault::FloodStage
            | Fault::CloseIndex
            | Fault::AliasDeleted
            | Fault::FieldLimit => index::inject(self, run).await,
            Fault::FrozenEsSigterm | Fault::FrozenEsReplay => frozen::inject(self, run).await,
            Fault::SlowBroker | Fault::PartitionedBroker | Fault::SlowElasticsearch => {
                network::inject(self, run).await
            }
            Fault::SourcePastTxnTimeout => source_pause::inject(run).await,
            Fault::DlqUnavailable | Fault::NearLimitDeadLetter => {
                dead_letters::inject(self, run).await
            }
            Fault::TaskPanic | Fault::ClockSkew => injected::inject(self, run).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_the_short_suite_is_a_subset() {
        for f in Fault::ALL {
            assert_eq!(Fault::parse(&f.name()), Some(f));
        }
        assert_eq!(Fault::parse("writeblock"), Some(Fault::WriteBlock));
        assert_eq!(Fault::parse("nothing"), None);
        assert!(Fault::SHORT.iter().all(|f| Fault::ALL.contains(f)));
    }
}
