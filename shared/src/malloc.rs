//! glibc malloc tuning, applied first thing in each binary's `main`.
//!
//! glibc gives each thread that meets a locked arena a new one, up to 8 per
//! core, and an arena keeps the memory it once held. Both binaries run
//! tokio workers, blocking-pool threads and librdkafka's own threads, so a
//! catch-up burst left memory in many arenas: es-sync over 100k records
//! (shared bench, 3 runs each) held a median RSS of 67-84 MiB with the
//! default and 61-70 MiB with 2 arenas, at the same or a higher rate (9.0k,
//! 13.3k, 13.3k docs/s vs 10.2k, 15.8k, 15.5k). A `MALLOC_ARENA_MAX` set in
//! the environment wins: the limit is applied only when it is unset.

/// Arenas when the environment does not say: measured above.
pub const DEFAULT_ARENAS: i32 = 2;

/// Limits glibc to `DEFAULT_ARENAS` arenas unless `MALLOC_ARENA_MAX` is
/// set. Returns the limit applied, or None (set by the environment, or not
/// glibc). Call before any thread starts: arenas made earlier stay.
pub fn limit_arenas() -> Option<i32> {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return None;
    }
    set_arena_max(DEFAULT_ARENAS).then_some(DEFAULT_ARENAS)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn set_arena_max(n: i32) -> bool {
    // SAFETY: mallopt only sets a tunable of the allocator; M_ARENA_MAX
    // takes any positive int, and the call is thread-safe.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, n) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_arena_max(_n: i32) -> bool {
    false
}
