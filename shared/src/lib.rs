//! Code shared by `mongo-source` and `es-sync`, and nothing else: the wire
//! contract ([`wire`]: change events, versions) and the BSON/JSON mapping, configuration loading, telemetry,
//! the admin HTTP server, the retry policy, the Kafka access check,
//! malloc tuning and shutdown plumbing.

pub mod admin;
pub mod config;
pub mod ejson;
pub mod kafka_access;
pub mod malloc;
pub mod retry;
pub mod shutdown;
pub mod state;
pub mod telemetry;
pub mod wire;

pub use prometheus_client;
