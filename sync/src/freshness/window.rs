//! The freshness of the last `window` ms per alias, for `/status`: a ring
//! of [`SLOTS`] slots of [`Bins`] (bounded), quantiles over the slots still
//! inside the window.

use super::bins::Bins;
use std::collections::VecDeque;

/// Slots per window.
pub(crate) const SLOTS: i64 = 30;

/// Observed freshness values of the last `window_ms`.
#[derive(Debug)]
pub(crate) struct Window {
    window_ms: i64,
    slot_ms: i64,
    /// `(slot start, values)`, oldest first.
    slots: VecDeque<(i64, Bins)>,
}

/// What `/status` shows of a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Summary {
    /// Documents observed.
    pub(crate) count: u64,
    /// Median, ms.
    pub(crate) p50_ms: u64,
    /// 99th percentile, ms.
    pub(crate) p99_ms: u64,
}

impl Window {
    /// A window of `window_ms` (at least [`SLOTS`] ms).
    pub(crate) fn new(window_ms: i64) -> Self {
        let window_ms = window_ms.max(SLOTS);
        Self {
            window_ms,
            slot_ms: window_ms / SLOTS,
            slots: VecDeque::new(),
        }
    }

    /// Counts `n` documents that became searchable `value_ms` after their
    /// commit, observed at `now`.
    pub(crate) fn add(&mut self, now: i64, value_ms: u64, n: u64) {
        let start = now - now.rem_euclid(self.slot_ms);
        match self.slots.back_mut() {
            Some((s, bins)) if *s == start => bins.add(value_ms, n),
            _ => {
                let mut bins = Bins::default();
                bins.add(value_ms, n);
                self.slots.push_back((start, bins));
            }
        }
        self.expire(now);
    }

    fn expire(&mut self, now: i64) {
        while self
            .slots
            .front()
            .is_some_and(|(s, _)| *s + self.slot_ms <= now - self.window_ms)
        {
            self.slots.pop_front();
        }
    }

    /// Quantiles of what was observed in the window ending at `now`.
    pub(crate) fn summary(&mut self, now: i64) -> Option<Summary> {
        self.expire(now);
        let mut all = Bins::default();
        for (_, b) in &self.slots {
            all.merge(b);
        }
        Some(Summary {
            count: all.total(),
            p50_ms: all.quantile(0.5)?,
            p99_ms: all.quantile(0.99)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_cover_the_window_only() {
        let mut w = Window::new(300_000);
        assert_eq!(w.summary(0), None);
        for i in 0..100 {
            w.add(1_000 + i, 20 + i as u64, 1);
        }
        w.add(2_000, 9_000, 1);
        let s = w.summary(2_000).unwrap();
        assert_eq!(s.count, 101);
        assert_eq!(s.p50_ms, 70);
        assert_eq!(s.p99_ms, 119);
        // Five minutes after its slot ended the first slot is gone.
        w.add(311_000, 100, 1);
        let s = w.summary(311_000).unwrap();
        assert_eq!(s.count, 1);
        assert_eq!(s.p50_ms, 100);
        assert!(w.slots.len() <= SLOTS as usize + 1);
        assert_eq!(w.summary(700_000), None);
    }
}
