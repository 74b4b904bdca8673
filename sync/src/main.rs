//! The `es-sync` binary: `es-sync --config FILE` runs the sync;
//! `es-sync replay ...` moves a consumer group; `es-sync reindex ...`
//! rebuilds an alias into a new index; `es-sync verify ...` compares a
//! collection with its index; `es-sync dlq replay ...` re-drives dead
//! letters. See `docs/sync.md`.

use anyhow::Context as _;
use clap::{ArgGroup, Parser, Subcommand};
use es_sync::ops::replay::{self, Target};
use std::path::PathBuf;

/// Kafka change-event topics into Elasticsearch, idempotent and replayable.
#[derive(Debug, Parser)]
#[command(name = "es-sync", version, about, long_about = None)]
struct Cli {
    /// Configuration file (TOML). Every key can be overridden by an
    /// `ES_SYNC__{SECTION}__{KEY}` environment variable.
    #[arg(
        long,
        short,
        value_name = "FILE",
        global = true,
        default_value = "config/es-sync.toml"
    )]
    config: PathBuf,
    /// What to do; without a command, es-sync runs the sync.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the sync (the default): consume the topics, index into Elasticsearch.
    Run,
    /// Move the committed offsets of a consumer group, so the next run
    /// reprocesses from there. Refuses while the group has active members.
    #[command(group(ArgGroup::new("target").required(true).args(["to_timestamp", "to_earliest", "to_offsets"])))]
    Replay {
        /// Consumer group to move (default: kafka.group_id of the config).
        #[arg(long, value_name = "GROUP")]
        group: Option<String>,
        /// Topic to move (repeatable; default: every topic of the config).
        #[arg(long, value_name = "TOPIC")]
        topic: Vec<String>,
        /// Move to the first offset at or after this time: milliseconds
        /// since the epoch or YYYY-MM-DDTHH:MM:SS[.fff]Z (UTC).
        #[arg(long, value_name = "T")]
        to_timestamp: Option<String>,
        /// Move to the earliest offset the topics still hold.
        #[arg(long)]
        to_earliest: bool,
        /// Move to explicit offsets: topic:partition:offset,...
        #[arg(long, value_name = "LIST")]
        to_offsets: Option<String>,
        /// Print current and target offsets and the records to reprocess
        /// per partition; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Admin URLs of every running instance of the group
        /// (http://host:port,...): they are asked to leave the group, the
        /// offsets are moved, and they rejoin. Uses admin.token.
        #[arg(long, value_name = "URLS", value_delimiter = ',')]
        coordinate: Vec<String>,
    },
    /// Rebuild a topic's alias into a new concrete index from the earliest
    /// offset (separate consumer group), then swap the alias atomically.
    /// Compare a MongoDB collection with its alias document by document:
    /// missing, extra and stale documents, a JSON summary on stdout, exit
    /// code 1 when they differ. `--repair` re-emits the differences through
    /// the topic (versioned like any change).
    Verify {
        /// Topic of the config whose alias is compared.
        #[arg(long, value_name = "TOPIC")]
        topic: String,
        /// MongoDB connection string.
        #[arg(long, env = "MONGODB_URI", value_name = "URI", hide_env_values = true)]
        mongodb_uri: String,
        /// `db.collection` (default: from the topic name prefix.db.collection).
        #[arg(long, value_name = "DB.COLL")]
        collection: Option<String>,
        /// Re-emit missing, stale and extra documents through the topic.
        #[arg(long)]
        repair: bool,
        /// Documents per batch (memory is bounded by it).
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// Ids listed per kind of difference.
        #[arg(long, default_value_t = 10)]
        sample: usize,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    Reindex {
        /// Topic to rebuild (one of the config's topics).
        #[arg(long, value_name = "TOPIC")]
        topic: String,
        /// Name of the new concrete index, e.g. cards-000002.
        #[arg(long, value_name = "NEW_INDEX")]
        into: String,
        /// Where the documents come from: `topic` (the topic alone, refused
        /// when it no longer holds every document), `index` (a copy of the
        /// current index, then the topic from the running group's offsets),
        /// or `auto`: `topic` when its history is complete, else `index`.
        #[arg(long, value_name = "SOURCE", default_value = "auto")]
        from: es_sync::ops::reindex::From,
    },
    /// The dead-letter topic.
    Dlq {
        /// What to do with it.
        #[command(subcommand)]
        command: DlqCommand,
    },
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// Re-drive dead-lettered records to their original topic and
    /// partition, once the cause is fixed; each dead letter at most once
    /// over all runs (a mark is written with it, in one transaction).
    Replay {
        /// Only this error type (`dlq.error.type`, repeatable), e.g.
        /// mapper_parsing_exception.
        #[arg(long, value_name = "TYPE")]
        error_type: Vec<String>,
        /// Only dead letters of this source topic (repeatable).
        #[arg(long, value_name = "TOPIC")]
        topic: Vec<String>,
        /// Only dead letters written at or after T (`dlq.failed_at`): ms
        /// since the epoch or YYYY-MM-DDTHH:MM:SS[.fff]Z.
        #[arg(long, value_name = "T")]
        since: Option<String>,
        /// Only dead letters written before T.
        #[arg(long, value_name = "T")]
        until: Option<String>,
        /// Print what would be re-driven, per error type and topic; write
        /// nothing.
        #[arg(long)]
        dry_run: bool,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
        /// `transactional.id` of the re-drive producer (default
        /// `{kafka.group_id}.dlq-replay`); runs with the same id never
        /// overlap.
        #[arg(long, value_name = "ID")]
        transactional_id: Option<String>,
    },
}

fn main() -> std::process::ExitCode {
    // Before any thread exists: arenas made earlier would stay.
    shared::malloc::limit_arenas();
    shared::malloc::fix_mmap_threshold();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            // The cause chain, without repeating a cause already in the text.
            let mut msg = String::new();
            for cause in e.chain() {
                let s = cause.to_string();
                if !msg.contains(&s) {
                    if !msg.is_empty() {
                        msg.push_str(": ");
                    }
                    msg.push_str(&s);
                }
            }
            eprintln!("es-sync: {msg}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    let cfg = es_sync::SyncConfig::load(&cli.config)
        .with_context(|| format!("invalid configuration {}", cli.config.display()))?;
    shared::telemetry::init(&cfg.log);
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            rt.block_on(async {
                let shutdown = shared::shutdown::on_signal();
                es_sync::run(cfg, shutdown).await
            })?;
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Replay {
            group,
            topic,
            to_timestamp,
            to_earliest,
            to_offsets,
            dry_run,
            coordinate,
        } => {
            let target = match (to_timestamp, to_earliest, to_offsets) {
                (Some(t), _, _) => Target::Timestamp(replay::parse_timestamp(&t)?),
                (_, true, _) => Target::Earliest,
                (_, _, Some(o)) => Target::Offsets(replay::parse_offsets(&o)?),
                _ => {
                    anyhow::bail!("one of --to-timestamp, --to-earliest, --to-offsets is required")
                }
            };
            let request = replay::Request {
                group,
                topics: topic,
                target,
                dry_run,
                coordinate,
            };
            print!("{}", replay::execute(&cfg, request)?);
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Verify {
            topic,
            mongodb_uri,
            collection,
            repair,
            batch,
            sample,
            quiet,
        } => {
            let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            let request = es_sync::ops::verify::Request {
                topic,
                mongodb_uri,
                collection,
                repair,
                batch: batch.max(1),
                sample,
                progress: !quiet,
            };
            let report = rt.block_on(es_sync::ops::verify::verify(&cfg, request))?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            if !report.equal {
                return Ok(std::process::ExitCode::from(1));
            }
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Dlq {
            command:
                DlqCommand::Replay {
                    error_type,
                    topic,
                    since,
                    until,
                    dry_run,
                    quiet,
                    transactional_id,
                },
        } => {
            let request = es_sync::ops::dlq_replay::Request {
                error_types: error_type,
                topics: topic,
                since: since.as_deref().map(replay::parse_timestamp).transpose()?,
                until: until.as_deref().map(replay::parse_timestamp).transpose()?,
                dry_run,
                progress: !quiet,
                transactional_id,
            };
            let report = es_sync::ops::dlq_replay::run(&cfg, &request)?;
            print!("{}", report.render());
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Reindex { topic, into, from } => {
            let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            let report = rt.block_on(async {
                let shutdown = shared::shutdown::on_signal();
                es_sync::ops::reindex::reindex(cfg, &topic, &into, from, shutdown).await
            })?;
            println!(
                "alias {} now points at {} (was {:?}), built from the {}; consumer group {} can \
                 be deleted; the old indices are kept",
                report.alias,
                report.index,
                report.previous,
                match report.from {
                    es_sync::ops::reindex::From::Index => "current index and the topic",
                    _ => "topic",
                },
                report.group
            );
            Ok(std::process::ExitCode::SUCCESS)
        }
    }
}
