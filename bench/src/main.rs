//! Benchmark harness of the pipeline (`scripts/bench`): runs `mongo-source`
//! and `es-sync` as processes against a private stack and measures each
//! against a baseline doing the same work, in interleaved trials of one run
//! (see `docs/benchmarks.md`). The result JSON goes to stdout.
//!
//! Modules by concern: `cli` (command line), `process` (child processes,
//! pinning, ports, resource sampling, profiles), `templates` (configs),
//! `seed`, `phases` (what is measured), `baseline` (the baseline children),
//! `peers`, `stats` (what is reported), `clients` (servers and endpoints).

mod baseline;
mod cli;
mod clients;
mod ctx;
mod log;
mod ours;
mod peers;
mod phases;
mod process;
mod run;
mod seed;
mod series;
mod stats;
mod templates;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match cli::parse(&args)? {
        cli::Command::Help => println!("{}", cli::usage()),
        cli::Command::RawRead(a) => baseline::raw_read::main(a).await?,
        cli::Command::BulkLoad(a) => baseline::bulk::main(a).await?,
        cli::Command::Run(o) => {
            let result = run::run(*o).await?;
            println!("{}", serde_json::to_string_pretty(&result)?);
        }
    }
    Ok(())
}
