//! mongo-source instances run as processes (for kill -9 and SIGSTOP), the
//! views of their admin servers, a steady insert load, and the
//! exactly-once check of what a read_committed consumer sees.

use crate::kafka::Rec;
use crate::process::Proc;
use crate::{free_port, http_get};
use mongodb::bson::{doc, Document};
use serde_json::Value;
use std::collections::HashSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// One mongo-source process.
pub struct Instance {
    /// Its `cluster.instance_id`.
    pub id: String,
    /// Its admin port.
    pub port: u16,
    /// The process.
    pub proc: Proc,
}

impl Instance {
    /// Starts mongo-source with config file `cfg` as instance `id`.
    pub fn start(cfg: &str, id: &str) -> Self {
        Self::start_with(cfg, id, &[])
    }

    /// [`Instance::start`] with more environment variables.
    pub fn start_with(cfg: &str, id: &str, env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut vars = vec![
            ("MONGO_SOURCE__ADMIN__LISTEN", listen.as_str()),
            ("MONGO_SOURCE__CLUSTER__INSTANCE_ID", id),
        ];
        vars.extend_from_slice(env);
        let proc = Proc::start("mongo-source", &["--config", cfg], &vars);
        Self {
            id: id.to_string(),
            port,
            proc,
        }
    }

    /// Whether the process is stopped (SIGSTOP), from `/proc/{pid}/stat`.
    pub fn stopped(&self) -> bool {
        proc_state(&format!("/proc/{}/stat", self.proc.child.id())).as_deref() == Some("T")
    }

    /// What the kernel says of the process: its state and how many of its
    /// threads are in each state (`R`, `S`, `T`, `Z`, ...), for failure
    /// messages.
    pub fn kernel_state(&self) -> String {
        let pid = self.proc.child.id();
        let state = |path: &str| proc_state(path).unwrap_or_else(|| "gone".into());
        let mut threads = std::collections::BTreeMap::<String, usize>::new();
        if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for t in dir.flatten() {
                let s = state(&format!("{}/stat", t.path().display()));
                *threads.entry(s).or_default() += 1;
            }
        }
        format!(
            "pid {pid} state {} threads {threads:?}",
            state(&format!("/proc/{pid}/stat"))
        )
    }

    /// Sends `signal` (`-STOP`, `-CONT`, ...) to the process.
    pub fn signal(&self, signal: &str) {
        let pid = self.proc.child.id().to_string();
        let ok = Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill");
        assert!(ok.success(), "kill {signal} {pid}");
    }

    /// Its `/status` (Null while it does not answer).
    pub async fn status(&self) -> Value {
        status(self.port).await
    }

    /// Its local view of `stream` on `/status`.
    pub async fn stream(&self, stream: &str) -> Option<Value> {
        self.status().await["streams"]
            .as_array()?
            .iter()
            .find(|x| x["stream"] == stream)
            .cloned()
    }
}

/// `/status` of the admin server on `port` (Null while it does not answer).
pub async fn status(port: u16) -> Value {
    match http_get(port, "/status").await {
        Some(b) => serde_json::from_str(&b).unwrap_or(Value::Null),
        None => Value::Null,
    }
}

/// The instance that reports `stream` RUNNING locally, if any.
pub async fn running_owner(instances: &[&Instance], stream: &str) -> Option<String> {
    for i in instances {
        if i.stream(stream).await?["state"] == "RUNNING" {
            return Some(i.id.clone());
        }
    }
    None
}

/// The change events among `recs` (snapshot records and markers left out).
pub fn changes(recs: &[Rec]) -> Vec<&Rec> {
    recs.iter()
        .filter(|r| !r.value["op"].as_str().unwrap_or("").starts_with("snapshot"))
        .collect()
}

/// Each change once (by key and version) and `expected` of them.
pub fn assert_exactly_once(recs: &[&Rec], expected: usize) {
    let mut seen = HashSet::new();
    for r in recs {
        let key = (r.key.clone(), r.value["version"].as_u64());
        assert!(seen.insert(key.clone()), "duplicate {key:?}");
    }
    assert_eq!(
        recs.len(),
        expected,
        "every acknowledged write exactly once"
    );
}

/// Inserts `{_id: n, body}` (n = 1, 2, ...) into `coll`, `per_call`
/// documents per call (`insert_many` when more than one), one call every
/// `every`, until `stop`; counts the acknowledged documents in `writes`.
pub fn spawn_inserts(
    coll: mongodb::Collection<Document>,
    body: String,
    per_call: usize,
    every: Duration,
    writes: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut n = 0_i64;
        while !stop.load(Ordering::Relaxed) {
            let docs: Vec<Document> = (0..per_call)
                .map(|_| {
                    n += 1;
                    doc! { "_id": n, "body": &body }
                })
                .collect();
            if per_call == 1 {
                coll.insert_one(&docs[0]).await.expect("insert");
            } else {
                coll.insert_many(&docs).await.expect("insert_many");
            }
            writes.fetch_add(per_call as u64, Ordering::SeqCst);
            tokio::time::sleep(every).await;
        }
    })
}

/// Fences the producer of `transactional_id` from outside the cluster:
/// `init_transactions` with the same id, as a second deployment would.
/// `false` when this producer was itself fenced on the way: the owner
/// reopened its producer at the same moment (after an earlier fencing),
/// so it may not have been fenced by this one; the caller tries again.
pub async fn fence(transactional_id: &str) -> bool {
    use rdkafka::producer::{BaseProducer, Producer};
    use rdkafka::types::RDKafkaErrorCode;
    let mut c = crate::kafka::config();
    c.set("transactional.id", transactional_id);
    let p: BaseProducer = c.create().expect("producer");
    let r = tokio::task::spawn_blocking(move || p.init_transactions(Duration::from_secs(30)))
        .await
        .expect("the blocking task");
    match r {
        Ok(()) => true,
        Err(rdkafka::error::KafkaError::Transaction(e))
            if matches!(
                e.code(),
                RDKafkaErrorCode::ProducerFenced
                    | RDKafkaErrorCode::InvalidProducerEpoch
                    | RDKafkaErrorCode::Fenced
            ) =>
        {
            eprintln!("the fencing producer was fenced itself (raced a reopen): {e}");
            false
        }
        Err(e) => panic!("init_transactions: {e}"),
    }
}

/// The state letter in a `/proc/.../stat` file (`pid (comm) S ...`: it
/// follows the last `)`), or None when the file cannot be read.
fn proc_state(path: &str) -> Option<String> {
    let stat = std::fs::read_to_string(path).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().next().map(str::to_string)
}
