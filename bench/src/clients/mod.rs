//! Clients of the servers and of the binaries' admin endpoints.

pub mod es;
pub mod http;
pub mod kafka;
pub mod metrics;
