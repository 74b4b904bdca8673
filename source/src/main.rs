//! `mongo-source` binary: parse the command line, load and validate the
//! config, set up logging, run until SIGTERM/SIGINT.

use clap::Parser;
use mongo_source::config::{SourceConfig, ENV_PREFIX};
use std::path::PathBuf;
use std::process::ExitCode;

/// MongoDB change streams into Kafka, exactly once.
///
/// Every config key can be overridden by an environment variable
/// MONGO_SOURCE__{SECTION}__{KEY} (e.g. MONGO_SOURCE__MONGODB__URI).
#[derive(Parser, Debug)]
#[command(name = "mongo-source", version, about, long_about = None)]
struct Cli {
    /// Path of the TOML configuration file.
    #[arg(short, long, env = "MONGO_SOURCE_CONFIG", value_name = "FILE")]
    config: PathBuf,
    /// Check the configuration and exit (no connection is made).
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    // Before any thread exists: arenas made earlier would stay.
    shared::malloc::limit_arenas();
    shared::malloc::fix_mmap_threshold();
    let cli = Cli::parse();
    let cfg: SourceConfig = match shared::config::load(&cli.config, ENV_PREFIX)
        .and_then(|c: SourceConfig| c.validate().map(|()| c))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mongo-source: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.check {
        println!("configuration {} is valid", cli.config.display());
        return ExitCode::SUCCESS;
    }
    shared::telemetry::init(&cfg.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mongo-source: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let shutdown = shared::shutdown::on_signal();
        mongo_source::run(cfg, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "mongo-source stopped");
            eprintln!("mongo-source: {e:#}");
            ExitCode::FAILURE
        }
    }
}
