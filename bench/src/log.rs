//! Progress lines on stderr (stdout carries the result JSON) and the wall
//! clock in the forms the phases need.

/// Seconds since the epoch (0 if the clock is before it).
pub fn unix_now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
        .unwrap_or(0)
}

/// One progress line, prefixed with the time of day (UTC seconds).
pub fn log(msg: &str) {
    eprintln!("[bench {}] {msg}", unix_now() % 86_400);
}
