//! The chaos suite (`tests/tests/chaos.rs`, run by `scripts/test` in its
//! short form and by `scripts/chaos` in full): each [`Fault`] is injected
//! into the whole pipeline (mongo-source and es-sync as child processes)
//! under a steady mixed write load ([`load`]), on a private copy of the
//! bench ([`stack::ChaosStack`]), at a seeded random moment; then the load
//! stops and the run checks what the operator must be able to trust
//! ([`run::check`]): Elasticsearch equal to MongoDB document by document,
//! `es-sync verify` reporting 0 missing, 0 stale and 0 extra on both
//! topics, no change event twice for a read_committed consumer, dead
//! letters only for documents bad by themselves, and both binaries exiting
//! 0 on SIGTERM. One [`report::Row`] per run.
//!
//! One module per family of faults: [`classic`] (kills, restarts, pauses,
//! write rejections), [`index`] (the index refuses writes until an
//! operator acts), [`frozen`] (Elasticsearch frozen while es-sync stops or
//! replays), [`network`] (a slow, partitioned or resetting broker or
//! Elasticsearch, through [`crate::proxy`]), [`source_pause`] (mongo-source
//! stopped past its transaction timeout), [`dead_letters`] (the dead-letter
//! topic gone, a record just under the source limit that es-sync must
//! dead-letter), [`injected`] (a panic through the test-only fault switch,
//! a sender with a skewed clock).

pub mod classic;
pub mod dead_letters;
mod fault;
pub mod frozen;
pub mod index;
pub mod injected;
pub mod load;
pub mod network;
pub mod report;
pub mod run;
pub mod source_pause;
pub mod stack;

pub use fault::Fault;
