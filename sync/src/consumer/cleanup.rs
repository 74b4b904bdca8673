//! Snapshot cleanup: at the end of a snapshot, delete the documents of
//! that partition and namespace older than the snapshot (refresh, then
//! delete-by-query), retried; dead-lettered when it keeps failing.

use super::partition::Work;
use super::{Loop, Report, Tp};
use crate::action::Action;
use crate::dlq::DlqReason;
use crate::elastic;
use serde_json::json;

impl Loop {
    pub(super) fn start_cleanup(&mut self, tp: &Tp) {
        let Some(p) = self.parts.get_mut(tp) else {
            return;
        };
        let Some(q) = p.queue.pop_front() else { return };
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
            return;
        };
        p.busy = true;
        let epoch = p.epoch;
        self.in_flight += 1;
        self.tasks += 1;
        let es = self.es.clone();
        let tx = self.tx.clone();
        let stop = self.hard_stop.clone();
        let metrics = self.metrics.clone();
        let retry = self.cfg.retry.clone();
        let dlq = self.dlq.clone();
        let tp = tp.clone();
        let offset = q.offset;
        let record = q.record;
        tokio::spawn(async move {
            let query = json!({"bool": {"filter": [
                {"range": {"_sync.version": {"lt": version}}},
                {"term": {"_sync.partition": partition}},
                {"term": {"_sync.ns": ns}},
            ]}});
            let result = shared::retry::retry(
                &retry,
                &stop,
                |e: &elastic::EsError, d| {
                    metrics.retry("cleanup", 1);
                    tracing::warn!(error = %e, delay_ms = d.as_millis() as u64, "snapshot cleanup failed; retrying");
                },
                || async {
                    elastic::refresh(&es, &index).await?;
                    elastic::delete_by_query(&es, &index, &query).await
                },
            )
            .await;
            let finished = match result {
                Ok(deleted) => {
                    tracing::info!(%index, %ns, partition, version, deleted, "snapshot cleanup done");
                    metrics
                        .cleanups
                        .get_or_create(&crate::metrics::IndexLabels {
                            index: index.clone(),
                        })
                        .inc_by(deleted);
                    true
                }
                Err(shared::retry::RetryError::Failed(e)) => {
                    let why = DlqReason {
                        error_type: "snapshot_cleanup_failed".into(),
                        reason: e.to_string(),
                        index: Some(index.clone()),
                    };
                    dlq.send(&record, &why, &stop).await
                }
                Err(shared::retry::RetryError::Cancelled) => false,
            };
            let done = if finished {
                vec![(tp.clone(), epoch, offset)]
            } else {
                Vec::new()
            };
            let _ = tx.send(Report::Finished {
                release: vec![(tp, epoch)],
                done,
                slot: true,
            });
        });
    }
}
