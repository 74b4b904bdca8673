//! Topic administration: create missing topics (the positions topic always
//! compacted) and read each topic's `max.message.bytes`, the broker-side
//! record limit that the size check must respect.

use crate::config::{KafkaConfig, SourceConfig, TopicsConfig};
use crate::error::{Result, StreamError};
use rdkafka::admin::{
    AdminClient, AdminOptions, NewPartitions, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use std::time::Duration;

/// An admin client.
pub struct Topics {
    admin: AdminClient<DefaultClientContext>,
    opts: AdminOptions,
    opts_timeout: Duration,
}

impl Topics {
    /// Creates the client (no I/O yet).
    pub fn new(cfg: &KafkaConfig) -> Result<Self> {
        let admin = super::client_config(cfg)
            .create()
            .map_err(StreamError::Kafka)?;
        let opts = AdminOptions::new()
            .operation_timeout(Some(Duration::from_millis(cfg.operation_timeout_ms)))
            .request_timeout(Some(Duration::from_millis(cfg.operation_timeout_ms)));
        Ok(Self {
            admin,
            opts,
            opts_timeout: Duration::from_millis(cfg.operation_timeout_ms),
        })
    }

    /// Creates the cluster's coordination topics when missing: the leases
    /// topic (one partition per stream, grown when streams were added) and
    /// the members topic. Always done, whatever `topics.create` says: they
    /// are this binary's own.
    pub async fn ensure_cluster(
        self: &std::sync::Arc<Self>,
        cfg: &SourceConfig,
        streams: usize,
    ) -> Result<()> {
        let leases = cfg.leases_topic();
        let members = cfg.members_topic();
        let rf = || TopicReplication::Fixed(cfg.topics.replication_factor);
        let wanted = i32::try_from(streams).unwrap_or(i32::MAX).max(1);
        let new = [
            NewTopic::new(&leases, wanted, rf()),
            NewTopic::new(&members, 1, rf())
                .set("retention.ms", "600000")
                .set("segment.ms", "60000"),
        ];
        let mut created_leases = false;
        for r in self.admin.create_topics(new.iter(), &self.opts).await? {
            match r {
                Ok(name) => created_leases |= name == leases,
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    tracing::error!(topic = %name, ?code, "cannot create topic");
                    return Err(StreamError::Kafka(rdkafka::error::KafkaError::AdminOp(
                        code,
                    )));
                }
            }
        }
        let have = if created_leases {
            None
        } else {
            Some(self.partitions_blocking(&leases).await?)
        };
        let have = match lease_partitions(have, streams) {
            Leases::Ready => return Ok(()),
            Leases::NotVisibleYet => {
                return Err(StreamError::Internal(format!(
                    "topic {leases}: its partitions are not in the metadata yet"
                )))
            }
            Leases::Grow { from } => from,
        };
        tracing::info!(topic = %leases, from = have, to = streams, "adding lease partitions");
        let grow = [NewPartitions::new(&leases, streams)];
        for r in self
            .admin
            .create_partitions(grow.iter(), &self.opts)
            .await?
        {
            if let Err((name, code)) = r {
                // Another instance starting beside this one grew it first.
                if code == RDKafkaErrorCode::InvalidPartitions
                    && self.partitions_blocking(&leases).await? >= streams
                {
                    continue;
                }
                tracing::error!(topic = %name, ?code, "cannot add partitions");
                return Err(StreamError::Kafka(rdkafka::error::KafkaError::AdminOp(
                    code,
                )));
            }
        }
        Ok(())
    }

    /// Number of partitions of `topic`, read off the async runtime.
    async fn partitions_blocking(self: &std::sync::Arc<Self>, topic: &str) -> Result<usize> {
        let me = self.clone();
        let topic = topic.to_string();
        let timeout = self.opts_timeout;
        tokio::task::spawn_blocking(move || me.partitions(&topic, timeout))
            .await
            .map_err(|e| StreamError::Internal(e.to_string()))?
            .map(|p| p.len())
    }

    /// Creates the event topics, the dead-letter topic and the compacted
    /// positions topic when missing (existing topics are left unchanged).
    pub async fn ensure(&self, topics: &TopicsConfig, event_topics: &[String]) -> Result<()> {
        if !topics.create {
            return Ok(());
        }
        let positions = topics.offsets_topic();
        let dlq = topics.dlq_topic();
        let rf = || TopicReplication::Fixed(topics.replication_factor);
        let mut new: Vec<NewTopic<'_>> = event_topics
            .iter()
            .map(|t| NewTopic::new(t, topics.partitions, rf()))
            .collect();
        new.push(NewTopic::new(&dlq, 1, rf()));
        new.push(
            NewTopic::new(&positions, 1, rf())
                .set("cleanup.policy", "compact")
                // Small segments so compaction keeps the topic tiny.
                .set("segment.ms", "3600000")
                .set("min.cleanable.dirty.ratio", "0.1"),
        );
        let results = self.admin.create_topics(new.iter(), &self.opts).await?;
        for r in results {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    tracing::error!(topic = %name, ?code, "cannot create topic");
                    return Err(StreamError::Kafka(rdkafka::error::KafkaError::AdminOp(
                        code,
                    )));
                }
            }
        }
        Ok(())
    }

    /// The topic's `max.message.bytes`, if the broker tells.
    pub async fn max_message_bytes(&self, topic: &str) -> Result<Option<usize>> {
        let res = self
            .admin
            .describe_configs([&ResourceSpecifier::Topic(topic)], &self.opts)
            .await?;
        for r in res {
            match r {
                Ok(resource) => {
                    if let Some(entry) = resource.get("max.message.bytes") {
                        return Ok(entry.value.as_deref().and_then(|v| v.parse().ok()));
                    }
                }
                Err(RDKafkaErrorCode::UnknownTopicOrPartition) => {
                    return Err(StreamError::Kafka(rdkafka::error::KafkaError::AdminOp(
                        RDKafkaErrorCode::UnknownTopicOrPartition,
                    )))
                }
                Err(code) => {
                    tracing::warn!(topic, ?code, "cannot read max.message.bytes");
                }
            }
        }
        Ok(None)
    }

    /// The partitions of `topic`; empty when the broker says the topic
    /// does not exist.
    ///
    /// A topic created a moment ago (by this instance or by another one
    /// starting beside it) can be missing from the broker's metadata, or
    /// listed with no partitions and `LeaderNotAvailable`, for a while:
    /// that is waited out, up to `timeout`, instead of being read as "no
    /// partitions" (which made two instances starting together try to
    /// grow the leases topic from 0 and fail with `InvalidPartitions`).
    pub fn partitions(&self, topic: &str, timeout: Duration) -> Result<Vec<i32>> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let md = self.admin.inner().fetch_metadata(Some(topic), timeout)?;
            let entry = md.topics().iter().find(|t| t.name() == topic);
            let ids: Vec<i32> = entry
                .map(|t| t.partitions().iter().map(|p| p.id()).collect())
                .unwrap_or_default();
            let error = entry.and_then(|t| t.error()).map(RDKafkaErrorCode::from);
            match settled(error, ids.len()) {
                Settled::Yes => return Ok(ids),
                Settled::Missing => return Ok(Vec::new()),
                Settled::NotYet if std::time::Instant::now() >= deadline => {
                    return Err(StreamError::Kafka(
                        rdkafka::error::KafkaError::MetadataFetch(
                            error.unwrap_or(RDKafkaErrorCode::LeaderNotAvailable),
                        ),
                    ))
                }
                Settled::NotYet => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

/// What the leases topic needs ([`Topics::ensure_cluster`]).
#[derive(Debug, PartialEq, Eq)]
enum Leases {
    /// One partition per stream already.
    Ready,
    /// Fewer partitions than streams (streams were added): grow it.
    Grow {
        /// Partitions it has.
        from: usize,
    },
    /// The metadata shows no partition: the topic was just created (by
    /// another instance) and the metadata has not caught up; retry.
    NotVisibleYet,
}

/// What to do with the leases topic, given its partitions as the metadata
/// shows them (`None`: this call created it, with one per stream; reading
/// them right after creating it can find none yet, and "growing" it then
/// is refused with `InvalidPartitions`, as a first start met about once in
/// five on a busy broker).
fn lease_partitions(have: Option<usize>, streams: usize) -> Leases {
    match have {
        None => Leases::Ready,
        Some(0) => Leases::NotVisibleYet,
        Some(n) if n < streams => Leases::Grow { from: n },
        Some(_) => Leases::Ready,
    }
}

/// What one metadata answer says about a topic.
#[derive(Debug, PartialEq, Eq)]
enum Settled {
    /// It exists, with these partitions.
    Yes,
    /// The broker says it does not exist.
    Missing,
    /// Being created, or not yet known to the broker answering: ask again.
    NotYet,
}

fn settled(error: Option<RDKafkaErrorCode>, partitions: usize) -> Settled {
    match error {
        Some(RDKafkaErrorCode::UnknownTopicOrPartition) => Settled::Missing,
        None if partitions > 0 => Settled::Yes,
        // Partitions listed but some leader is missing: the topic exists.
        Some(RDKafkaErrorCode::LeaderNotAvailable) if partitions > 0 => Settled::Yes,
        _ => Settled::NotYet,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leases_topic_created_now_is_ready_whatever_the_metadata_shows() {
        assert_eq!(lease_partitions(None, 2), Leases::Ready);
        assert_eq!(lease_partitions(Some(0), 2), Leases::NotVisibleYet);
        assert_eq!(lease_partitions(Some(1), 2), Leases::Grow { from: 1 });
        assert_eq!(lease_partitions(Some(2), 2), Leases::Ready);
        assert_eq!(lease_partitions(Some(3), 2), Leases::Ready);
    }

    #[test]
    fn metadata_of_a_topic_being_created_is_not_an_answer() {
        assert_eq!(settled(None, 3), Settled::Yes);
        assert_eq!(
            settled(Some(RDKafkaErrorCode::UnknownTopicOrPartition), 0),
            Settled::Missing
        );
        assert_eq!(
            settled(Some(RDKafkaErrorCode::LeaderNotAvailable), 0),
            Settled::NotYet
        );
        assert_eq!(settled(None, 0), Settled::NotYet);
        assert_eq!(
            settled(Some(RDKafkaErrorCode::LeaderNotAvailable), 2),
            Settled::Yes
        );
    }
}
