//! The command line: `bench [run options]` runs the benchmark (called by
//! `scripts/bench`); `bench raw-read ...` and `bench bulk-load ...` are the
//! baselines, run by the bench itself as child processes so that they are
//! pinned and sampled like the binaries they are compared with.
//!
//! Options are `--key value` pairs (and the flags `--quick`, `--help`);
//! lists are comma-separated.

use crate::peers::PeerOpts;
use anyhow::{bail, Context as _, Result};
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

/// What to do.
#[derive(Debug)]
pub enum Command {
    /// The benchmark.
    Run(Box<Opts>),
    /// Baseline child: the raw change-stream read.
    RawRead(crate::baseline::raw_read::Args),
    /// Baseline child: straight `_bulk`.
    BulkLoad(crate::baseline::bulk::Args),
    /// Print the usage.
    Help,
}

/// The phases a run can take (`--phases`, all by default).
///
/// `sync` and `rollup` read the topics of the `source` phase's warm-up
/// round; without `source` they get topics of their own (seeded and written
/// by one unmeasured mongo-source pass), so `--phases sync` runs alone.
pub const PHASES: &[&str] = &[
    "source",
    "sync",
    "rollup",
    "latency",
    "rust",
    "monstache",
    "scale",
];

/// Options of a benchmark run.
#[derive(Clone, Debug)]
pub struct Opts {
    /// Quick mode (small sizes, short latency runs).
    pub quick: bool,
    /// Documents per throughput trial (seeded once per server).
    pub docs: u64,
    /// Interleaved trials per comparison (at least 1; the issue asks 5).
    pub trials: usize,
    /// Fixed rates of the latency runs, changes/s.
    pub rates: Vec<u64>,
    /// Seconds per latency run.
    pub rate_secs: u64,
    /// Latency runs per rate (interleaved over the rates).
    pub rate_runs: usize,
    /// MongoDB URI (the Python SecantusDB of scripts/stack).
    pub mongo_uri: String,
    /// Second MongoDB URI (the Rust SecantusDB): a second source phase, the
    /// latency phase and the scale runs use it.
    pub mongo_rs_uri: Option<String>,
    /// Kafka bootstrap.
    pub kafka: String,
    /// Elasticsearch URL.
    pub es: String,
    /// Directory of the release binaries.
    pub bin_dir: PathBuf,
    /// Repository root.
    pub repo: PathBuf,
    /// Work directory (configs, logs, perf data).
    pub work: PathBuf,
    /// Seed of the workload.
    pub seed: u64,
    /// The command as typed (for the report).
    pub command: String,
    /// Installed peers (`--peer-*`, from `scripts/bench.d/peers`).
    pub peers: PeerOpts,
    /// Partitions of the event topics (3).
    pub partitions: i32,
    /// Document counts of the scale runs (measure 5).
    pub scale_docs: Vec<u64>,
    /// Partitions (= es-sync instances) of the scale runs.
    pub scale_partitions: Vec<i32>,
    /// Documents per partition-scale run.
    pub scale_partition_docs: u64,
    /// CPUs (taskset list) of the measured processes: our binaries, the
    /// baselines and the peers; `None` = not pinned.
    pub pin_measured: Option<String>,
    /// CPUs the servers were pinned to by scripts/bench (for the report).
    pub pin_servers: Option<String>,
    /// CPUs of the bench itself (load generator, readers, pollers), pinned
    /// by scripts/bench (for the report).
    pub pin_harness: Option<String>,
    /// Ports for admin, REST and HTTP listeners of the processes the bench
    /// starts (`--ports 49400-49499`); `None` = any free port.
    pub ports: Option<(u16, u16)>,
    /// The servers' pids (`--server-pids kafka=PID,...`), for their CPU.
    pub servers: crate::process::servers::Servers,
    /// Where profiles go (`--profile DIR`); `None` = no profiles.
    pub profile_dir: Option<PathBuf>,
    /// The phases to run.
    pub phases: BTreeSet<String>,
    /// `[bulk]` keys replacing the shipped ones for es-sync and the `_bulk`
    /// baseline (`--bulk max_actions=2000,max_bytes=10485760`).
    pub bulk: Vec<(String, u64)>,
}

impl Opts {
    /// Whether `phase` is selected.
    pub fn runs(&self, phase: &str) -> bool {
        self.phases.contains(phase)
    }
}

/// The usage text.
pub fn usage() -> &'static str {
    "bench [--quick] [--docs N] [--trials N] [--rates 200,1000] [--rate-secs S] [--rate-runs N]
      --mongo URI [--mongo-rs URI] --kafka HOST:PORT --es URL --bin-dir DIR --repo DIR --work DIR
      [--seed N] [--command TEXT] [--partitions 3] [--scale-docs 10000,100000] [--scale-partitions 1,3,6]
      [--scale-partition-docs N] [--pin-measured CPUS] [--pin-servers CPUS] [--pin-harness CPUS]
      [--ports LOW-HIGH] [--server-pids NAME=PID,...] [--profile DIR] [--phases source,sync,rollup,latency,rust,monstache,scale]
      [--bulk max_actions=N,max_bytes=B,...]
      [--peer-connect DIR] [--peer-monstache BIN] [--peer-vector BIN] [--peer-status-dir DIR]
bench raw-read --uri URI --db DB --ts SECONDS --n EVENTS --batch-size N --max-await-ms MS
bench bulk-load --es URL --docs FILE --prefix P --max-actions N --max-bytes B --in-flight K"
}

/// `--key value` pairs and flags of `args`.
pub struct Args {
    map: HashMap<String, String>,
    flags: BTreeSet<String>,
}

const FLAGS: &[&str] = &["quick", "help"];

impl Args {
    /// Splits `args` into flags and `--key value` pairs.
    pub fn parse(args: &[String]) -> Result<Self> {
        let (mut map, mut flags) = (HashMap::new(), BTreeSet::new());
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let Some(k) = a.strip_prefix("--") else {
                bail!("unexpected argument `{a}`\n{}", usage());
            };
            if FLAGS.contains(&k) {
                flags.insert(k.to_string());
                continue;
            }
            let v = it
                .next()
                .with_context(|| format!("--{k} needs a value\n{}", usage()))?;
            if map.insert(k.to_string(), v.clone()).is_some() {
                bail!("--{k} given twice");
            }
        }
        Ok(Self { map, flags })
    }

    /// Whether the flag was given.
    pub fn flag(&self, k: &str) -> bool {
        self.flags.contains(k)
    }

    /// A value, if given.
    pub fn get(&self, k: &str) -> Option<&str> {
        self.map.get(k).map(String::as_str)
    }

    /// A required value.
    pub fn req(&self, k: &str) -> Result<String> {
        self.get(k)
            .map(String::from)
            .with_context(|| format!("--{k} missing\n{}", usage()))
    }

    /// A parsed value or `default`.
    pub fn num<T: std::str::FromStr>(&self, k: &str, default: T) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(k) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse()
                .map_err(|e| anyhow::anyhow!("--{k} {v}: {e}")),
        }
    }

    /// A comma-separated list or `default`.
    pub fn list<T: std::str::FromStr>(&self, k: &str, default: Vec<T>) -> Result<Vec<T>>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(k) {
            None => Ok(default),
            Some(v) => v
                .split(',')
                .filter(|x| !x.trim().is_empty())
                .map(|x| {
                    x.trim()
                        .parse()
                        .map_err(|e| anyhow::anyhow!("--{k}: `{x}`: {e}"))
                })
                .collect(),
        }
    }

    /// The keys given, for the checks of unknown options.
    fn keys(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(String::as_str)
    }

    /// Fails on a key not in `known` (a typo must not silently run the
    /// defaults).
    pub fn only(&self, known: &[&str]) -> Result<()> {
        let mut bad: Vec<&str> = self.keys().filter(|k| !known.contains(k)).collect();
        bad.sort_unstable();
        if let Some(k) = bad.first() {
            bail!("unknown option --{k}\n{}", usage());
        }
        Ok(())
    }
}

const RUN_KEYS: &[&str] = &[
    "docs",
    "trials",
    "rates",
    "rate-secs",
    "rate-runs",
    "mongo",
    "mongo-rs",
    "kafka",
    "es",
    "bin-dir",
    "repo",
    "work",
    "seed",
    "command",
    "partitions",
    "scale-docs",
    "scale-partitions",
    "scale-partition-docs",
    "pin-measured",
    "pin-servers",
    "pin-harness",
    "ports",
    "server-pids",
    "profile",
    "phases",
    "bulk",
    "peer-connect",
    "peer-monstache",
    "peer-vector",
    "peer-status-dir",
];

/// Parses the command line (without the program name).
pub fn parse(args: &[String]) -> Result<Command> {
    match args.first().map(String::as_str) {
        Some("raw-read") => Ok(Command::RawRead(crate::baseline::raw_read::Args::parse(
            &Args::parse(&args[1..])?,
        )?)),
        Some("bulk-load") => Ok(Command::BulkLoad(crate::baseline::bulk::Args::parse(
            &Args::parse(&args[1..])?,
        )?)),
        _ => {
            let a = Args::parse(args)?;
            if a.flag("help") {
                return Ok(Command::Help);
            }
            a.only(RUN_KEYS)?;
            Ok(Command::Run(Box::new(run_opts(&a)?)))
        }
    }
}

/// `LOW-HIGH` of `--ports`.
fn port_range(v: &str) -> Result<(u16, u16)> {
    let (lo, hi) = v
        .split_once('-')
        .with_context(|| format!("--ports {v}: expected LOW-HIGH"))?;
    let (lo, hi): (u16, u16) = (lo.trim().parse()?, hi.trim().parse()?);
    if lo == 0 || hi < lo {
        bail!("--ports {v}: expected 0 < LOW <= HIGH");
    }
    Ok((lo, hi))
}

fn run_opts(a: &Args) -> Result<Opts> {
    let quick = a.flag("quick");
    fn pick<T>(quick: bool, q: T, f: T) -> T {
        if quick {
            q
        } else {
            f
        }
    }
    let phases: BTreeSet<String> = match a.get("phases") {
        None => PHASES.iter().map(|s| s.to_string()).collect(),
        Some(v) => {
            let set: BTreeSet<String> = v.split(',').map(|s| s.trim().to_string()).collect();
            if let Some(bad) = set.iter().find(|p| !PHASES.contains(&p.as_str())) {
                bail!(
                    "--phases: unknown phase `{bad}` (known: {})",
                    PHASES.join(", ")
                );
            }
            set
        }
    };
    let trials = a.num("trials", 5usize)?;
    if trials == 0 {
        bail!("--trials must be at least 1");
    }
    let rate_runs = a.num("rate-runs", 2usize)?;
    if rate_runs == 0 {
        bail!("--rate-runs must be at least 1");
    }
    let nonempty = |k: &str| a.get(k).filter(|v| !v.trim().is_empty()).map(String::from);
    Ok(Opts {
        quick,
        docs: a.num("docs", pick(quick, 10_000, 50_000))?,
        trials,
        rates: a.list("rates", pick(quick, vec![200, 1000], vec![200, 1000, 5000]))?,
        rate_secs: a.num("rate-secs", pick(quick, 15, 60))?,
        rate_runs,
        mongo_uri: a.req("mongo")?,
        mongo_rs_uri: nonempty("mongo-rs"),
        kafka: a.req("kafka")?,
        es: a.req("es")?,
        bin_dir: a.req("bin-dir")?.into(),
        repo: a.req("repo")?.into(),
        work: a.req("work")?.into(),
        seed: a.num("seed", 42)?,
        command: a.get("command").unwrap_or_default().to_string(),
        peers: PeerOpts {
            connect_home: a.get("peer-connect").map(PathBuf::from),
            monstache_bin: a.get("peer-monstache").map(PathBuf::from),
            vector_bin: a.get("peer-vector").map(PathBuf::from),
            status_dir: a.get("peer-status-dir").map(PathBuf::from),
        },
        partitions: a.num("partitions", 3)?,
        scale_docs: a.list(
            "scale-docs",
            pick(
                quick,
                vec![10_000, 30_000],
                vec![10_000, 100_000, 1_000_000],
            ),
        )?,
        scale_partitions: a.list("scale-partitions", pick(quick, vec![1, 3], vec![1, 3, 6]))?,
        scale_partition_docs: a.num("scale-partition-docs", pick(quick, 10_000, 50_000))?,
        pin_measured: nonempty("pin-measured"),
        pin_servers: nonempty("pin-servers"),
        pin_harness: nonempty("pin-harness"),
        ports: a.get("ports").map(port_range).transpose()?,
        servers: crate::process::servers::Servers::parse(a.get("server-pids").unwrap_or(""))?,
        profile_dir: nonempty("profile").map(PathBuf::from),
        phases,
        bulk: a
            .get("bulk")
            .map(bulk_overrides)
            .transpose()?
            .unwrap_or_default(),
    })
}

/// `KEY=VALUE,...` of `--bulk`.
fn bulk_overrides(v: &str) -> Result<Vec<(String, u64)>> {
    v.split(',')
        .filter(|x| !x.trim().is_empty())
        .map(|kv| {
            let (k, n) = kv
                .split_once('=')
                .with_context(|| format!("--bulk `{kv}`: expected KEY=VALUE"))?;
            let n: u64 = n
                .trim()
                .parse()
                .map_err(|e| anyhow::anyhow!("--bulk `{kv}`: {e}"))?;
            Ok((k.trim().to_string(), n))
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    const REQUIRED: &str =
        "--mongo m --kafka k --es http://127.0.0.1:3 --bin-dir /b --repo /r --work /w";

    /// Options of no real servers, for the config renderers' tests.
    pub(crate) fn opts() -> Opts {
        match parse(&args(REQUIRED)) {
            Ok(Command::Run(o)) => *o,
            other => panic!("parse: {other:?}"),
        }
    }

    #[test]
    fn defaults_of_full_and_quick_runs() {
        let o = opts();
        assert!(!o.quick);
        assert_eq!(
            (o.docs, o.trials, o.rate_secs, o.rate_runs),
            (50_000, 5, 60, 2)
        );
        assert_eq!(o.rates, vec![200, 1000, 5000]);
        assert_eq!(o.phases.len(), PHASES.len());
        assert_eq!(o.pin_measured, None);
        let Command::Run(q) = parse(&args(&format!("--quick {REQUIRED}"))).expect("quick") else {
            panic!("not a run")
        };
        assert!(q.quick);
        assert_eq!((q.docs, q.trials), (10_000, 5));
        assert_eq!(q.rates, vec![200, 1000]);
    }

    #[test]
    fn values_lists_ports_and_phases_are_parsed() {
        let Command::Run(o) = parse(&args(&format!(
            "{REQUIRED} --docs 7 --trials 3 --rates 5,6 --ports 49400-49499 --phases sync,latency --pin-measured 1 --mongo-rs r"
        )))
        .expect("parse") else {
            panic!("not a run")
        };
        assert_eq!((o.docs, o.trials), (7, 3));
        assert_eq!(o.rates, vec![5, 6]);
        assert_eq!(o.ports, Some((49400, 49499)));
        assert!(o.runs("sync") && o.runs("latency") && !o.runs("source"));
        assert_eq!(o.pin_measured.as_deref(), Some("1"));
        assert_eq!(o.mongo_rs_uri.as_deref(), Some("r"));
        assert!(o.bulk.is_empty());
        let Command::Run(o) = parse(&args(&format!(
            "{REQUIRED} --bulk max_actions=2000,max_bytes=10485760"
        )))
        .expect("parse") else {
            panic!("not a run")
        };
        assert_eq!(
            o.bulk,
            vec![
                ("max_actions".to_string(), 2000),
                ("max_bytes".to_string(), 10_485_760)
            ]
        );
    }

    #[test]
    fn bad_input_is_named() {
        let err = |s: &str| format!("{:#}", parse(&args(s)).expect_err(s));
        assert!(err("--docs 5").contains("--mongo missing"));
        assert!(err(&format!("{REQUIRED} --doc 5")).contains("unknown option --doc"));
        assert!(err(&format!("{REQUIRED} --docs many")).contains("--docs many"));
        assert!(err(&format!("{REQUIRED} --phases source,lunch")).contains("`lunch`"));
        assert!(err(&format!("{REQUIRED} --ports 5")).contains("LOW-HIGH"));
        assert!(err(&format!("{REQUIRED} --ports 9-3")).contains("LOW <= HIGH"));
        assert!(err(&format!("{REQUIRED} --trials 0")).contains("at least 1"));
        assert!(err(&format!("{REQUIRED} --docs 1 --docs 2")).contains("twice"));
        assert!(err(&format!("{REQUIRED} stray")).contains("`stray`"));
        assert!(err(&format!("{REQUIRED} --seed")).contains("--seed needs a value"));
        assert!(err(&format!("{REQUIRED} --bulk max_actions")).contains("KEY=VALUE"));
        assert!(err(&format!("{REQUIRED} --bulk max_actions=x")).contains("max_actions=x"));
    }

    #[test]
    fn subcommands_and_help() {
        assert!(matches!(parse(&args("--help")), Ok(Command::Help)));
        assert!(matches!(
            parse(&args(
                "raw-read --uri u --db d --ts 1 --n 2 --batch-size 3 --max-await-ms 4"
            )),
            Ok(Command::RawRead(_))
        ));
        assert!(matches!(
            parse(&args("bulk-load --es e --docs f --prefix p --max-actions 1 --max-bytes 2048 --in-flight 1")),
            Ok(Command::BulkLoad(_))
        ));
    }
}
