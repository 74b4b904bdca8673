//! Faults tests can inject into a running es-sync, in this process only
//! (nothing in the configuration or the environment reaches them): the
//! supervision of tasks is tested with a real panic.

use std::sync::Mutex;

static PANIC_ON: Mutex<Option<String>> = Mutex::new(None);

/// Makes the next bulk task holding document `id` panic, once (`None`
/// clears it).
pub fn panic_once_on(id: Option<&str>) {
    *PANIC_ON
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = id.map(str::to_string);
}

/// The armed id if `ids` holds it (and disarms it).
pub(crate) fn panic_on(ids: &[String]) -> Option<String> {
    let mut armed = PANIC_ON
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match armed.as_deref() {
        Some(id) if ids.iter().any(|i| i == id) => armed.take(),
        _ => None,
    }
}
