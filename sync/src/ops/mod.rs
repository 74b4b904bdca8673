//! Operator commands, beside the pipeline rather than inside it: each runs
//! once from the command line (`es-sync verify|replay|reindex`) and reads
//! or writes the wire contract ([`shared::wire`]) like the pipeline does.
//!
//! - [`verify`]: compare a collection with its index, and repair through
//!   the topic;
//! - [`replay`]: move a consumer group's offsets;
//! - [`reindex`]: build a new index (from the topic, or from the current
//!   index plus the topic) and swap the alias.

pub mod reindex;
pub mod replay;
pub mod rollup_check;
pub mod verify;
