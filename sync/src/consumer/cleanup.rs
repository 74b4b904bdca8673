//! Snapshot cleanup: at the end of a snapshot, delete the documents of
//! that partition and namespace older than the snapshot (refresh, then
//! delete-by-query), retried with backoff until it succeeds, whatever the
//! error: the partition waits meanwhile and `/status` says why. Its marker
//! is never dead-lettered (that would leave documents deleted in MongoDB
//! searchable).

use super::jobs::{Kind, Outcome, Unit};
use super::partition::{WaitKind, Waiting, Work};
use super::poller::Tp;
use super::{Loop, Report};
use crate::action::Action;
use crate::elastic;
use serde_json::json;

impl Loop {
    pub(super) fn start_cleanup(&mut self, tp: &Tp) {
        let Some(p) = self.parts.get_mut(tp) else {
            return;
        };
        let epoch = p.epoch;
        let Some(q) = p.take_cleanup() else { return };
        let Work::Cleanup {
            action:
                Action::SnapshotEnd {
                    index,
                    ns,
                    partition,
                    version,
                },
        } = q.work
        else {
            p.cleanup_finished();
            return;
        };
        let es = self.es.clone();
        let tx = self.tx.clone();
        let stop = self.stop_of(tp, epoch);
        let metrics = self.metrics.clone();
        let retry = self.cfg.retry.clone();
        let tp = tp.clone();
        let offset = q.offset;
        let unit = Unit {
            tp: tp.clone(),
            epoch,
            kind: Kind::Cleanup,
        };
        self.spawn(unit, async move {
            let query = json!({"bool": {"filter": [
                {"range": {"_sync.version": {"lt": version}}},
                {"term": {"_sync.partition": partition}},
                {"term": {"_sync.ns": ns}},
            ]}});
            let mut failures = 0u64;
            // Every failure (a closed or blocked index, a missing alias or
            // permission, a node away) is one an operator fixes: never
            // dead-lettered, since the documents deleted in MongoDB would
            // then stay searchable.
            let result = shared::retry::retry_forever(
                &retry,
                &stop,
                |e: &elastic::EsError, d| {
                    metrics.retry("cleanup", 1);
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!(%index, %ns, partition, error = %e, "snapshot cleanup failed; retrying until it succeeds");
                    } else {
                        tracing::debug!(%index, error = %e, delay_ms = d.as_millis() as u64, "snapshot cleanup still failing");
                    }
                    let _ = tx.send(Report::Waiting {
                        tp: tp.clone(),
                        epoch,
                        why: Waiting::Cleanup(format!(
                            "snapshot cleanup of {ns} in {index} failing ({failures} tries), retrying: {e}"
                        )),
                    });
                },
                || async {
                    elastic::refresh(&es, &index).await?;
                    elastic::delete_by_query(&es, &index, &query).await
                },
            )
            .await;
            let done = match result {
                Ok(deleted) => {
                    tracing::info!(%index, %ns, partition, version, deleted, failures, "snapshot cleanup done");
                    metrics
                        .cleanups
                        .get_or_create(&crate::metrics::IndexLabels {
                            index: index.clone(),
                        })
                        .inc_by(deleted);
                    vec![offset]
                }
                Err(shared::retry::Cancelled) => Vec::new(),
            };
            let _ = tx.send(Report::WaitOver {
                tp: tp.clone(),
                epoch,
                kind: WaitKind::Cleanup,
            });
            Outcome {
                unit: Unit {
                    tp,
                    epoch,
                    kind: Kind::Cleanup,
                },
                done,
            }
        });
    }
}
