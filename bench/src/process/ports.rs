//! Ports for the listeners of the processes the bench starts (admin
//! endpoints, Kafka Connect's REST, Monstache's HTTP server): from a range
//! given on the command line (`--ports LOW-HIGH`, so that a shared machine's
//! port plan is kept), or any free port.

use anyhow::{bail, Result};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// Hands out ports that were free when asked, round-robin over the range.
#[derive(Debug)]
pub struct Ports {
    range: Option<(u16, u16)>,
    next: AtomicU32,
}

impl Ports {
    /// Ports from `range` (inclusive), or any free port when `None`.
    pub fn new(range: Option<(u16, u16)>) -> Self {
        Self {
            range,
            next: AtomicU32::new(0),
        }
    }

    /// A port free now (the listener that proved it is closed again).
    pub fn take(&self) -> Result<u16> {
        let Some((lo, hi)) = self.range else {
            return Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port());
        };
        let size = u32::from(hi - lo) + 1;
        for _ in 0..size {
            let i = self.next.fetch_add(1, Ordering::Relaxed) % size;
            let port = lo + u16::try_from(i).unwrap_or(0);
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Ok(port);
            }
        }
        bail!("no free port in {lo}-{hi}");
    }

    /// `127.0.0.1:{a free port}`.
    pub fn addr(&self) -> Result<String> {
        Ok(format!("127.0.0.1:{}", self.take()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_from_the_range_and_skip_busy_ones() {
        // A range of two ports whose first is held by a listener. Both below
        // Linux's ephemeral range (32768 and up), so no `bind(0)` of a test
        // running beside this one takes the free one between the check and
        // the take (seen in a fresh CI run).
        let Some((held, busy, free)) = (23_000..24_000u16).find_map(|p| {
            let held = TcpListener::bind(("127.0.0.1", p)).ok()?;
            TcpListener::bind(("127.0.0.1", p + 1)).ok()?;
            Some((held, p, p + 1))
        }) else {
            return; // every pair taken by someone else: nothing to show
        };
        let p = Ports::new(Some((busy, free)));
        assert_eq!(p.take().expect("port"), free);
        assert_eq!(
            p.take().expect("port"),
            free,
            "round-robin skips the busy one"
        );
        drop(held);
        let all_busy = TcpListener::bind("127.0.0.1:0").expect("bind");
        let b = all_busy.local_addr().expect("addr").port();
        let err = Ports::new(Some((b, b))).take().expect_err("busy");
        assert!(err.to_string().contains("no free port"));
        assert!(Ports::new(None).take().expect("any") > 0);
    }
}
