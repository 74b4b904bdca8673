//! The binaries' metrics: sums of metric
//! families in the OpenMetrics text of `/metrics`, and a sampler that
//! records several families over time (throughput, pause, bulks in flight)
//! while a trial runs.

use crate::series::thin_columns;
use crate::stats::round;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The `/metrics` text of `admin`, `None` if it does not answer 200.
pub async fn scrape(admin: &str) -> Option<String> {
    match super::http::get(admin, "/metrics").await {
        Ok((200, body)) => Some(body),
        _ => None,
    }
}

/// Sum of a metric family's samples (one parser for the bench and the
/// tests: `e2e_tests::metric_sum`).
pub use e2e_tests::metric_sum;

/// One column of a [`Sampler`]: a name in the output and the metric family.
pub type Column = (&'static str, &'static str);

/// es-sync's series: documents done, the backpressure pause, the bulks in
/// flight (histogram of in-flight-when-started: its sum and count give the
/// mean between two samples) and the records buffered.
pub const ES_SYNC_COLUMNS: &[Column] = &[
    ("docs", "es_sync_documents_total"),
    ("paused", "es_sync_consumer_paused"),
    ("in_flight_sum", "es_sync_bulk_in_flight_sum"),
    ("in_flight_count", "es_sync_bulk_in_flight_count"),
    ("buffered", "es_sync_buffered_records"),
];

/// mongo-source's series: events committed, and the wall time of its
/// streams' tasks by stage (`mongo_source_stage_seconds_total`, summed over
/// streams: which side limits the rate).
pub const MONGO_SOURCE_COLUMNS: &[Column] = &[
    ("events", "mongo_source_events_total"),
    ("read_s", "mongo_source_stage_seconds_total{stage=\"read\"}"),
    (
        "commit_wait_s",
        "mongo_source_stage_seconds_total{stage=\"commit_wait\"}",
    ),
    (
        "convert_s",
        "mongo_source_stage_seconds_total{stage=\"convert\"}",
    ),
];

/// Samples [`Column`]s of one endpoint every `every` in the background.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    points: Arc<Mutex<Vec<Vec<f64>>>>,
    columns: &'static [Column],
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    /// Starts sampling `columns` of `admin`; times are seconds since `t0`.
    pub fn start(admin: &str, columns: &'static [Column], every: Duration, t0: Instant) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let points: Arc<Mutex<Vec<Vec<f64>>>> = Arc::default();
        let (admin, flag, pts) = (admin.to_string(), stop.clone(), points.clone());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !flag.load(Ordering::Relaxed) {
                tick.tick().await;
                if let Some(body) = scrape(&admin).await {
                    let mut row = vec![round(t0.elapsed().as_secs_f64(), 2)];
                    row.extend(columns.iter().map(|(_, m)| metric_sum(&body, m)));
                    pts.lock().expect("points").push(row);
                }
            }
        });
        Self {
            stop,
            points,
            columns,
            task,
        }
    }

    /// The last sampled value of column `name` (0 before the first sample).
    pub fn latest(&self, name: &str) -> f64 {
        let Some(i) = self.columns.iter().position(|(n, _)| *n == name) else {
            return 0.0;
        };
        self.points
            .lock()
            .expect("points")
            .last()
            .map_or(0.0, |r| r[i + 1])
    }

    /// Stops; returns every sample (rows of `t` then the columns).
    pub async fn stop(self) -> Samples {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        let rows = std::mem::take(&mut *self.points.lock().expect("points"));
        Samples {
            columns: self.columns,
            rows,
        }
    }
}

/// The samples of a stopped [`Sampler`].
pub struct Samples {
    columns: &'static [Column],
    rows: Vec<Vec<f64>>,
}

impl Samples {
    /// `[t, value]` of column `name`.
    pub fn column(&self, name: &str) -> Vec<[f64; 2]> {
        let Some(i) = self.columns.iter().position(|(n, _)| *n == name) else {
            return vec![];
        };
        self.rows.iter().map(|r| [r[0], r[i + 1]]).collect()
    }

    /// As JSON columns (`{"t": [...], "docs": [...], ...}`), thinned for
    /// the plots.
    pub fn json(&self) -> Value {
        let rows = thin_columns(&self.rows);
        let mut out = serde_json::Map::new();
        out.insert(
            "t".into(),
            json!(rows.iter().map(|r| r[0]).collect::<Vec<_>>()),
        );
        for (i, (name, _)) in self.columns.iter().enumerate() {
            out.insert(
                (*name).into(),
                json!(rows.iter().map(|r| r[i + 1]).collect::<Vec<_>>()),
            );
        }
        Value::Object(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// What the sampler's endpoint answers.
    const TEXT: &str = "es_sync_documents_total{index=\"cards\"} 30\n\
es_sync_documents_total{index=\"replies\"} 12\n\
es_sync_consumer_paused 1\n\
es_sync_bulk_in_flight_sum 14.0\n\
es_sync_bulk_in_flight_count 5\n";

    #[tokio::test]
    async fn the_sampler_records_every_column_of_a_live_endpoint() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await;
                let reply = format!("HTTP/1.0 200 OK\r\n\r\n{TEXT}");
                let _ = s.write_all(reply.as_bytes()).await;
            }
        });
        let s = Sampler::start(
            &addr,
            ES_SYNC_COLUMNS,
            Duration::from_millis(10),
            Instant::now(),
        );
        let t0 = Instant::now();
        while s.latest("docs") < 42.0 && t0.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(s.latest("paused"), 1.0);
        let samples = s.stop().await;
        assert!(!samples.column("in_flight_sum").is_empty());
        let j = samples.json();
        let t = j["t"].as_array().expect("t");
        assert!(!t.is_empty());
        assert_eq!(j["docs"][0], json!(42.0));
        assert_eq!(j["in_flight_count"][0], json!(5.0));
        assert_eq!(samples.column("buffered").len(), t.len());
    }
}
