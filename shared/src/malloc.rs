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

/// Blocks of this size or more come from `mmap` and go back to the system
/// when freed, when the environment does not say (`MALLOC_MMAP_THRESHOLD_`).
///
/// glibc starts at 128 KiB but raises the threshold to the size of each
/// mmapped block freed (up to 32 MiB): after the first bulk body or
/// decompressed fetch of a few MiB was freed, every later one came from
/// the heap, where blocks of changing sizes left holes that the heap
/// keeps; es-sync's peak RSS rose with the run's length (41.5 MiB after
/// 10k documents, 60.7 MiB after 30k, issue 17). Setting the threshold
/// fixes it at 128 KiB (glibc's own start). Measured with it (scripts/bench
/// --quick --phases sync,scale): steady RSS 38.6 MiB (was 42.6), peak 39.6
/// -> 50.4 MiB (was 41.5 -> 60.7), CPU 0.024 s per 1,000 documents (was
/// 0.027).
pub const MMAP_THRESHOLD: i32 = 128 << 10;

/// Limits glibc to `DEFAULT_ARENAS` arenas unless `MALLOC_ARENA_MAX` is
/// set. Returns the limit applied, or None (set by the environment, or not
/// glibc). Call before any thread starts: arenas made earlier stay.
pub fn limit_arenas() -> Option<i32> {
    set_unless_env("MALLOC_ARENA_MAX", Tunable::ArenaMax, DEFAULT_ARENAS)
}

/// Fixes the mmap threshold at [`MMAP_THRESHOLD`] unless
/// `MALLOC_MMAP_THRESHOLD_` is set. Returns the threshold applied, or None
/// (set by the environment, or not glibc).
pub fn fix_mmap_threshold() -> Option<i32> {
    set_unless_env(
        "MALLOC_MMAP_THRESHOLD_",
        Tunable::MmapThreshold,
        MMAP_THRESHOLD,
    )
}

/// The glibc malloc tunables set here.
#[derive(Clone, Copy)]
enum Tunable {
    /// `M_ARENA_MAX`: any positive int.
    ArenaMax,
    /// `M_MMAP_THRESHOLD`: a threshold set so is kept (no longer adjusted).
    MmapThreshold,
}

/// Sets `tunable` to `value` unless the environment variable `env` (glibc's
/// own for it) is set, which then wins; the value applied, or None.
fn set_unless_env(env: &str, tunable: Tunable, value: i32) -> Option<i32> {
    if std::env::var_os(env).is_some() {
        return None;
    }
    mallopt(tunable, value).then_some(value)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn mallopt(tunable: Tunable, value: i32) -> bool {
    let param = match tunable {
        Tunable::ArenaMax => libc::M_ARENA_MAX,
        Tunable::MmapThreshold => libc::M_MMAP_THRESHOLD,
    };
    // SAFETY: mallopt only sets a tunable of the allocator, and the call is
    // thread-safe.
    unsafe { libc::mallopt(param, value) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn mallopt(_tunable: Tunable, _value: i32) -> bool {
    false
}
