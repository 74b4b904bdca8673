//! Test-only fault injection: named points in the product code where a test
//! can make a panic happen, to prove that the supervision around it turns
//! the panic into a logged error, a restart and a non-ready health state.
//!
//! The switch exists only when the crate is built with the `faults` feature,
//! which only the test crates enable (`tests/Cargo.toml`, dev-dependencies).
//! In any other build — the Dockerfile builds `--bin mongo-source --bin
//! es-sync`, which never selects the test crates — [`panic_point`] is an
//! empty inline function: the point's name is not even computed.

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

/// Arms the point `name` to fire `times` times (test builds only).
#[cfg(feature = "faults")]
pub fn arm(name: &str, times: u32) {
    armed::arm(name, times);
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

    fn points() -> MutexGuard<'static, HashMap<String, u32>> {
        static POINTS: OnceLock<Mutex<HashMap<String, u32>>> = OnceLock::new();
        POINTS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn arm(name: &str, times: u32) {
        points().insert(name.to_string(), times);
    }

    pub fn remaining(name: &str) -> u32 {
        points().get(name).copied().unwrap_or(0)
    }

    pub fn take(name: &str) -> bool {
        let mut p = points();
        match p.get_mut(name) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
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
