//! Test-only fault injection: named points in the product code where a test
//! can make a fault happen at an exact place, to prove what the code around
//! it does: a panic ([`panic_point`]; supervision turns it into a logged
//! error, a restart and a non-ready health state) or a stop of the whole
//! process with SIGSTOP ([`stop_point`]; a process paused with a Kafka
//! transaction open, which the test resumes with SIGCONT).
//!
//! The switch exists only when the crate is built with the `faults` feature,
//! which only the tests crate enables (`tests/Cargo.toml`; a workspace
//! build such as `cargo build --workspace --bins` unifies it into the
//! binaries it builds). In any other build — the Dockerfile builds `--bin
//! mongo-source --bin es-sync`, which never selects the tests crate — the
//! points are empty inline functions: a point's name is not even computed.
//!
//! A test arms a point in its own process with [`arm`], or in a binary it
//! starts with the environment variable [`ENV`]: `name=times[@skip]`
//! entries separated by commas (fire `times` times after `skip` passes).

/// The environment variable that arms points in a process (test builds).
pub const ENV: &str = "SEARCH_PIPELINE_FAULTS";

/// Panics here if a test armed the point named by `name()` (the name is
/// built only when the `faults` feature is on).
#[inline(always)]
pub fn panic_point(name: impl FnOnce() -> String) {
    #[cfg(feature = "faults")]
    {
        let name = name();
        if armed::take(&name) {
            panic!("fault injected at {name}");
        }
    }
    #[cfg(not(feature = "faults"))]
    let _ = name;
}

/// Stops the whole process with SIGSTOP here if a test armed the point
/// named by `name()`; it goes on when the test sends SIGCONT.
///
/// The signal is raised on the calling thread, so this thread stops before
/// it returns from here (the other threads follow within the group stop).
/// It used to be sent to the process by a `kill` child: the kernel may
/// then let another thread take the stop, and under load the calling
/// thread ran on for milliseconds; a test once saw the paused
/// transaction's commit marker written 1.5 ms after this point, so no
/// transaction was open during the pause.
#[inline(always)]
pub fn stop_point(name: impl FnOnce() -> String) {
    #[cfg(feature = "faults")]
    {
        let name = name();
        if armed::take(&name) {
            let pid = std::process::id();
            tracing::warn!(point = %name, pid, "fault injected: stopping the process (SIGSTOP)");
            eprintln!("fault injected at {name}: SIGSTOP to pid {pid}");
            raise_stop();
        }
    }
    #[cfg(not(feature = "faults"))]
    let _ = name;
}

/// SIGSTOP to the calling thread (see [`stop_point`]).
#[cfg(feature = "faults")]
#[allow(unsafe_code)]
fn raise_stop() {
    // SAFETY: raise only sends a signal to the calling thread; SIGSTOP
    // cannot be caught, so no handler runs.
    unsafe {
        libc::raise(libc::SIGSTOP);
    }
}

/// Arms the point `name` to fire `times` times (test builds only).
#[cfg(feature = "faults")]
pub fn arm(name: &str, times: u32) {
    armed::arm(name, 0, times);
}

/// How many firings of `name` are left (test builds only).
#[cfg(feature = "faults")]
pub fn remaining(name: &str) -> u32 {
    armed::remaining(name)
}

#[cfg(feature = "faults")]
mod armed {
    use std::collections::HashMap;
    use std::sync::{Mutex, MutexGuard, OnceLock};

    /// Passes to let go by, then firings left.
    #[derive(Clone, Copy)]
    struct Point {
        skip: u32,
        times: u32,
    }

    fn points() -> MutexGuard<'static, HashMap<String, Point>> {
        static POINTS: OnceLock<Mutex<HashMap<String, Point>>> = OnceLock::new();
        POINTS
            .get_or_init(|| Mutex::new(from_env()))
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The points armed by [`super::ENV`]; a malformed entry is reported
    /// and left out.
    fn from_env() -> HashMap<String, Point> {
        let mut out = HashMap::new();
        let Ok(spec) = std::env::var(super::ENV) else {
            return out;
        };
        for entry in spec.split(',').filter(|e| !e.trim().is_empty()) {
            match parse(entry.trim()) {
                Some((name, point)) => {
                    tracing::warn!(
                        point = %name, times = point.times, skip = point.skip,
                        "test fault switch armed from {}", super::ENV
                    );
                    out.insert(name, point);
                }
                None => tracing::error!(entry, "malformed {} entry", super::ENV),
            }
        }
        out
    }

    fn parse(entry: &str) -> Option<(String, Point)> {
        let (name, count) = entry.rsplit_once('=')?;
        let (times, skip) = match count.split_once('@') {
            Some((t, s)) => (t.parse().ok()?, s.parse().ok()?),
            None => (count.parse().ok()?, 0),
        };
        Some((name.to_string(), Point { skip, times }))
    }

    pub fn arm(name: &str, skip: u32, times: u32) {
        points().insert(name.to_string(), Point { skip, times });
    }

    pub fn remaining(name: &str) -> u32 {
        points().get(name).map_or(0, |p| p.times)
    }

    pub fn take(name: &str) -> bool {
        let mut p = points();
        match p.get_mut(name) {
            Some(point) if point.skip > 0 => {
                point.skip -= 1;
                false
            }
            Some(point) if point.times > 0 => {
                point.times -= 1;
                true
            }
            _ => false,
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn env_entries_parse() {
            let (name, p) = parse("source.txn.stop:a.b.c=1@20").unwrap();
            assert_eq!(
                (name.as_str(), p.times, p.skip),
                ("source.txn.stop:a.b.c", 1, 20)
            );
            let (_, p) = parse("x=3").unwrap();
            assert_eq!((p.times, p.skip), (3, 0));
            assert!(parse("x").is_none() && parse("x=many").is_none());
        }

        #[test]
        fn skipped_passes_do_not_fire() {
            arm("faults-test.skip", 2, 1);
            assert!(!take("faults-test.skip") && !take("faults-test.skip"));
            assert!(take("faults-test.skip"));
            assert!(!take("faults-test.skip"));
        }
    }
}

#[cfg(all(test, feature = "faults"))]
mod tests {
    use super::*;

    #[test]
    fn an_armed_point_fires_as_often_as_armed() {
        panic_point(|| "faults-test.unarmed".into());
        arm("faults-test.once", 1);
        let fired = std::panic::catch_unwind(|| panic_point(|| "faults-test.once".into()));
        assert!(fired.is_err());
        assert_eq!(remaining("faults-test.once"), 0);
        panic_point(|| "faults-test.once".into());
    }
}
