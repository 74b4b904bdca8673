//! Time series for the throughput-over-time plots: a counter of a binary's
//! `/metrics` sampled every 200 ms while a phase runs, as
//! `[seconds since spawn, value]` pairs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most points kept per series (the plots need no more).
const MAX_POINTS: usize = 400;

/// A background sampler of one counter.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<[f64; 2]>>,
}

impl Sampler {
    /// Starts sampling `metric` (summed over its labels) from `admin`.
    pub fn start(admin: &str, metric: &str, t0: Instant) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (admin, metric, flag) = (admin.to_string(), metric.to_string(), stop.clone());
        let task = tokio::spawn(async move {
            let mut points = vec![];
            while !flag.load(Ordering::Relaxed) {
                if let Ok((200, body)) = crate::es::http_get(&admin, "/metrics").await {
                    let v = crate::es::metric_sum(&body, &metric);
                    points.push([crate::round(t0.elapsed().as_secs_f64(), 2), v]);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            points
        });
        Self { stop, task }
    }

    /// Stops and returns the (thinned) points.
    pub async fn stop(self) -> Vec<[f64; 2]> {
        self.stop.store(true, Ordering::Relaxed);
        thin(&self.task.await.unwrap_or_default())
    }
}

/// Keeps at most [`MAX_POINTS`] evenly spaced points, always the last.
pub fn thin(points: &[[f64; 2]]) -> Vec<[f64; 2]> {
    if points.len() <= MAX_POINTS {
        return points.to_vec();
    }
    let step = points.len().div_ceil(MAX_POINTS);
    let mut out: Vec<[f64; 2]> = points.iter().step_by(step).copied().collect();
    if let Some(last) = points.last() {
        if out.last() != Some(last) {
            out.push(*last);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thinning_keeps_first_last_and_bounds_the_count() {
        let pts: Vec<[f64; 2]> = (0..1001)
            .map(|i| [f64::from(i), f64::from(i * 2)])
            .collect();
        let t = thin(&pts);
        assert!(t.len() <= MAX_POINTS + 1);
        assert_eq!(t.first(), Some(&[0.0, 0.0]));
        assert_eq!(t.last(), Some(&[1000.0, 2000.0]));
        assert_eq!(thin(&pts[..10]).len(), 10);
    }
}
