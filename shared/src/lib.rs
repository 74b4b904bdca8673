//! Code shared by `mongo-source` and `es-sync`, and nothing else: the change
//! event envelope and its JSON mapping, configuration loading, telemetry,
//! the admin HTTP server, the retry policy, the Kafka access check,
//! malloc tuning, shutdown plumbing, task supervision and the test-only
//! fault switch.

pub mod admin;
pub mod config;
pub mod ejson;
pub mod event;
pub mod faults;
pub mod kafka_access;
pub mod malloc;
pub mod retry;
pub mod shutdown;
pub mod state;
pub mod supervise;
pub mod telemetry;
pub mod version;

pub use prometheus_client;
