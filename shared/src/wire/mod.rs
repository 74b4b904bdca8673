//! The wire contract between `mongo-source` and `es-sync`, in one place:
//! every record either binary writes or reads is built and parsed here.
//! The schema of each is documented once, in `docs/events.md`.
//!
//! - [`event`]: the change event (`mongo-source.change.v1`): value, key,
//!   headers;
//! - [`change_stream`]: a MongoDB change-stream document (or a snapshot
//!   copy) into a change event;
//! - [`version`]: the version layout (the Elasticsearch external version);
//! - [`position`]: the resume position record of a `mongo-source` stream;
//! - [`resume_token`]: the transaction index inside a MongoDB resume token
//!   (for the MongoDB Kafka Connector's records);
//! - [`dlq`]: es-sync's dead-letter topic: added headers, the pointer that
//!   replaces a record too large to copy, the mark of a re-driven record;
//! - [`record_size`]: a record's size as the broker counts it against
//!   `max.message.bytes`.

pub mod change_stream;
pub mod dlq;
pub mod event;
pub mod position;
pub mod record_size;
pub mod resume_token;
pub mod source_dlq;
pub mod version;
