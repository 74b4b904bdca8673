//! What every phase shares: the options, the port allocator, where the
//! measured processes are pinned, the batch settings of the comparisons and
//! an Elasticsearch client.

use crate::cli::Opts;
use crate::clients::es::Es;
use crate::process::pin::Pin;
use crate::process::ports::Ports;
use crate::templates::Batching;
use anyhow::Result;
use std::path::PathBuf;

/// The run's shared state.
pub struct Ctx {
    /// Options.
    pub o: Opts,
    /// Ports for the children's listeners.
    pub ports: Ports,
    /// Where measured processes run.
    pub pin: Pin,
    /// Batch settings of ours and the baselines.
    pub batching: Batching,
    /// Elasticsearch.
    pub es: Es,
}

impl Ctx {
    /// From the options (reads `config/es-sync.toml`).
    pub fn new(o: Opts) -> Result<Self> {
        Ok(Self {
            ports: Ports::new(o.ports),
            pin: Pin {
                cpus: o.pin_measured.clone(),
            },
            batching: Batching::load(&o.repo)?.with_bulk(&o.bulk)?,
            es: Es::new(&o.es)?,
            o,
        })
    }

    /// A file in the work directory.
    pub fn work(&self, name: &str) -> PathBuf {
        self.o.work.join(name)
    }

    /// `config/indices` of the repository.
    pub fn index_dir(&self) -> PathBuf {
        self.o.repo.join("config/indices")
    }
}
