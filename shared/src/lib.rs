//! Code shared by `mongo-source` and `es-sync`, and nothing else: the wire
//! contract ([`wire`]: change events, versions) and the BSON/JSON mapping, configuration loading, telemetry,
//! the admin HTTP server, the retry policy, the Kafka access check,
//! malloc tuning, shutdown plumbing, task supervision and the test-only
//! fault switch.

pub mod admin;
pub mod config;
pub mod ejson;
pub mod faults;
pub mod kafka_access;
pub mod kafka_client;
pub mod malloc;
pub mod retry;
pub mod shutdown;
pub mod state;
pub mod supervise;
pub mod telemetry;
pub mod wire;

pub use prometheus_client;
