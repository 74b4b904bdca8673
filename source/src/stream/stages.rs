//! Where a stream's task spends its time while it follows the change
//! stream, so an operator (and the benchmark) can tell which side limits
//! its rate: MongoDB, Kafka, or mongo-source's own work. Counted in
//! `mongo_source_stage_seconds_total{stream, stage}`:
//!
//! - `read`: waiting for the next event (a `getMore` round trip when the
//!   driver's buffer is empty; the previous batch's commit is driven
//!   meanwhile, see [`super::pipeline`]). Idle streams spend their time
//!   here.
//! - `commit_wait`: a batch is ready but the previous one's Kafka
//!   transaction has not committed yet (at most one in flight).
//! - `convert`: the rest: decoding events and building their records,
//!   mongo-source's own CPU on this task.
//!
//! The three add up to the task's wall time in the loop. They are added to
//! the counter after each batch and after each empty answer from MongoDB
//! (so an idle stream's counter moves every `batch.max_wait_ms` or so).
//! Observing only: nothing here changes what is delivered.

use std::time::{Duration, Instant};

/// One stage of [`StageClock`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Waiting for MongoDB.
    Read,
    /// Waiting for the previous commit.
    CommitWait,
    /// Own work.
    Convert,
}

impl Stage {
    /// All stages, as exported.
    pub const ALL: [Stage; 3] = [Stage::Read, Stage::CommitWait, Stage::Convert];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Read => "read",
            Stage::CommitWait => "commit_wait",
            Stage::Convert => "convert",
        }
    }
}

/// Splits the wall time since it started (or was last taken) into the
/// [`Stage`]s: the waits are timed by [`StageClock::wait`], the rest is
/// `convert`.
#[derive(Debug)]
pub struct StageClock {
    since: Instant,
    read: Duration,
    commit_wait: Duration,
}

impl StageClock {
    /// Starts counting now.
    pub fn start() -> Self {
        Self::start_at(Instant::now())
    }

    fn start_at(since: Instant) -> Self {
        Self {
            since,
            read: Duration::ZERO,
            commit_wait: Duration::ZERO,
        }
    }

    /// Awaits `f`, counting its time as `stage` (a wait: `Read` or
    /// `CommitWait`).
    pub async fn wait<T>(&mut self, stage: Stage, f: impl std::future::Future<Output = T>) -> T {
        let began = Instant::now();
        let out = f.await;
        self.add(stage, began.elapsed());
        out
    }

    fn add(&mut self, stage: Stage, d: Duration) {
        match stage {
            Stage::Read => self.read += d,
            Stage::CommitWait => self.commit_wait += d,
            // Whatever is not a wait is convert already.
            Stage::Convert => {}
        }
    }

    /// The time per stage since the start or the last take, and starts
    /// over.
    pub fn take(&mut self) -> [(Stage, Duration); 3] {
        self.take_at(Instant::now())
    }

    fn take_at(&mut self, now: Instant) -> [(Stage, Duration); 3] {
        let total = now.saturating_duration_since(self.since);
        let waits = self.read + self.commit_wait;
        let out = [
            (Stage::Read, self.read),
            (Stage::CommitWait, self.commit_wait),
            (Stage::Convert, total.saturating_sub(waits)),
        ];
        *self = Self::start_at(now);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rest_of_the_wall_time_is_convert_and_a_take_starts_over() {
        let t0 = Instant::now();
        let mut c = StageClock::start_at(t0);
        c.add(Stage::Read, Duration::from_millis(30));
        c.add(Stage::CommitWait, Duration::from_millis(50));
        c.add(Stage::Read, Duration::from_millis(5));
        let got = c.take_at(t0 + Duration::from_millis(100));
        assert_eq!(
            got,
            [
                (Stage::Read, Duration::from_millis(35)),
                (Stage::CommitWait, Duration::from_millis(50)),
                (Stage::Convert, Duration::from_millis(15)),
            ]
        );
        let again = c.take_at(t0 + Duration::from_millis(120));
        assert_eq!(again[0].1, Duration::ZERO);
        assert_eq!(again[2], (Stage::Convert, Duration::from_millis(20)));
    }

    #[tokio::test]
    async fn a_timed_wait_counts_as_its_stage() {
        let mut c = StageClock::start();
        c.wait(
            Stage::CommitWait,
            tokio::time::sleep(Duration::from_millis(20)),
        )
        .await;
        let got = c.take();
        assert!(got[1].1 >= Duration::from_millis(20), "{got:?}");
        assert_eq!(got[0].1, Duration::ZERO);
    }
}
