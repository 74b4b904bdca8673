//! The baselines our binaries are compared with, each doing the same work
//! without the pipeline: run as child processes of the bench (`bench
//! raw-read`, `bench bulk-load`), pinned and sampled like our binaries.

pub mod bulk;
pub mod raw_read;
