//! `es-sync replay`: rewinds (or forwards) the committed offsets of a
//! consumer group, so the next `es-sync` run reprocesses from there.
//!
//! Targets: `--to-earliest` (each partition's low watermark),
//! `--to-timestamp T` (the first offset at or after `T`, milliseconds since
//! the epoch or `YYYY-MM-DDTHH:MM:SS[.fff]Z`), `--to-offsets
//! topic:partition:offset,...`. `--dry-run` prints the current and target
//! offsets and the records each partition will reprocess, and changes
//! nothing.
//!
//! It refuses while the group has active members: offsets committed under
//! a running consumer would be overwritten by its next commit. Stop
//! `es-sync` first, or pass `--coordinate URL,...` (the admin URLs of every
//! running instance, token from `admin.token`): each instance is asked to
//! finish its in-flight work, commit and leave the group (`POST
//! /group/leave`), the offsets are moved once the group is empty, and the
//! instances rejoin (`POST /group/rejoin`) and continue from the new
//! offsets, without a restart.
//!
//! Delivery guarantee: a replay only makes records be delivered again;
//! external versions make that harmless (documents end in the same state).

use crate::config::SyncConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use std::time::Duration;

/// Where to move the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Each partition's low watermark.
    Earliest,
    /// The first offset at or after this time (ms since the epoch).
    Timestamp(i64),
    /// Explicit offsets.
    Offsets(Vec<(String, i32, i64)>),
}

/// Why a replay could not be planned or applied.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// Bad command-line value.
    #[error("{0}")]
    Usage(String),
    /// Kafka failed.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// A running instance did not do what `--coordinate` asked.
    #[error("coordination with {url}: {message}")]
    Coordinate {
        /// The admin URL.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The group has active members.
    #[error(
        "consumer group `{group}` has {members} active member(s) ({clients}); stop es-sync \
         (every instance of the group) before moving its offsets, or pass --coordinate with \
         the admin URLs of the running instances"
    )]
    ActiveMembers {
        /// The group.
        group: String,
        /// How many.
        members: usize,
        /// Their client ids and hosts.
        clients: String,
    },
}

/// One partition of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanRow {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Committed offset now (`None`: nothing committed).
    pub current: Option<i64>,
    /// Offset to commit.
    pub target: i64,
    /// Low watermark.
    pub low: i64,
    /// High watermark.
    pub high: i64,
}

impl PlanRow {
    /// Records to (re)process from the target to the end of the partition.
    pub fn to_process(&self) -> i64 {
        (self.high - self.target).max(0)
    }
}

/// Parses `topic:partition:offset,...` (topic names may contain `:` only
/// before the last two fields).
pub fn parse_offsets(s: &str) -> Result<Vec<(String, i32, i64)>, ReplayError> {
    let mut out = Vec::new();
    for item in s.split(',').map(str::trim).filter(|x| !x.is_empty()) {
        let mut it = item.rsplitn(3, ':');
        let (Some(off), Some(part), Some(topic)) = (it.next(), it.next(), it.next()) else {
            return Err(ReplayError::Usage(format!(
                "`{item}`: expected topic:partition:offset"
            )));
        };
        let part: i32 = part.parse().map_err(|_| {
            ReplayError::Usage(format!("`{item}`: partition `{part}` is not a number"))
        })?;
        let off: i64 = off.parse().ok().filter(|o: &i64| *o >= 0).ok_or_else(|| {
            ReplayError::Usage(format!("`{item}`: offset `{off}` is not a number >= 0"))
        })?;
        if topic.is_empty() || part < 0 {
            return Err(ReplayError::Usage(format!(
                "`{item}`: empty topic or negative partition"
            )));
        }
        out.push((topic.to_string(), part, off));
    }
    if out.is_empty() {
        return Err(ReplayError::Usage(
            "--to-offsets needs at least one topic:partition:offset".into(),
        ));
    }
    Ok(out)
}

/// Parses a time: milliseconds since the epoch, or UTC
/// `YYYY-MM-DDTHH:MM:SS[.fff]Z`.
pub fn parse_timestamp(s: &str) -> Result<i64, ReplayError> {
    let bad = || {
        ReplayError::Usage(format!(
            "`{s}`: expected ms since the epoch or YYYY-MM-DDTHH:MM:SS[.fff]Z"
        ))
    };
    if let Ok(ms) = s.parse::<i64>() {
        return if ms >= 0 { Ok(ms) } else { Err(bad()) };
    }
    let b = s.as_bytes();
    if b.len() < 20
        || !s.ends_with('Z')
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(bad());
    }
    let num =
        |r: std::ops::Range<usize>| s.get(r).and_then(|x| x.parse::<i64>().ok()).ok_or_else(bad);
    let (y, mo, d, h, mi, se) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    let frac = &s[19..s.len() - 1];
    let ms = match frac {
        "" => 0,
        f if f.starts_with('.') && f.len() <= 4 && f.len() > 1 => {
            let digits = &f[1..];
            let v: i64 = digits.parse().map_err(|_| bad())?;
            v * 10i64.pow(3 - digits.len() as u32)
        }
        _ => return Err(bad()),
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return Err(bad());
    }
    // Days from civil (Howard Hinnant).
    let yy = if mo <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(((days * 86_400 + h * 3600 + mi * 60 + se) * 1000) + ms)
}

fn client(cfg: &SyncConfig, group: &str) -> Result<BaseConsumer, ReplayError> {
    Ok(cfg
        .kafka
        .client_config()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()?)
}

/// Asks the es-sync whose admin server is at `base` (e.g.
/// `http://127.0.0.1:9465`) to `POST {path}`, with the bearer `token`.
pub async fn admin_post(base: &str, path: &str, token: Option<&str>) -> Result<(), ReplayError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let err = |message: String| ReplayError::Coordinate {
        url: base.to_string(),
        message,
    };
    let url = url::Url::parse(base).map_err(|e| err(e.to_string()))?;
    if url.scheme() != "http" {
        return Err(err("only http:// admin URLs are supported".into()));
    }
    let host = url
        .host_str()
        .ok_or_else(|| err("no host".into()))?
        .to_string();
    let port = url.port().unwrap_or(80);
    let mut stream = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| err(e.to_string()))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!("POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n");
    stream
        .write_all(req.as_bytes())
        .await
        .map_err(|e| err(e.to_string()))?;
    let mut resp = Vec::new();
    stream
        .read_to_end(&mut resp)
        .await
        .map_err(|e| err(e.to_string()))?;
    let text = String::from_utf8_lossy(&resp);
    let status = text.split_whitespace().nth(1).unwrap_or("");
    if status == "200" {
        Ok(())
    } else {
        let body = text
            .split("\r\n\r\n")
            .nth(1)
            .unwrap_or("")
            .trim()
            .to_string();
        Err(err(format!("POST {path} answered {status}: {body}")))
    }
}

/// Waits until `group` has no active members (after a coordinated leave).
pub fn wait_group_empty(
    cfg: &SyncConfig,
    group: &str,
    timeout: Duration,
) -> Result<(), ReplayError> {
    let start = std::time::Instant::now();
    loop {
        match check_no_members(cfg, group) {
            Ok(()) => return Ok(()),
            Err(e @ ReplayError::ActiveMembers { .. }) if start.elapsed() >= timeout => {
                return Err(e)
            }
            Err(ReplayError::ActiveMembers { .. }) => {
                std::thread::sleep(Duration::from_millis(300))
            }
            Err(e) => return Err(e),
        }
    }
}

/// Refuses if `group` has active members.
pub fn check_no_members(cfg: &SyncConfig, group: &str) -> Result<(), ReplayError> {
    let c = client(cfg, group)?;
    let timeout = Duration::from_millis(cfg.kafka.operation_timeout_ms);
    let list = c.fetch_group_list(Some(group), timeout)?;
    for g in list.groups() {
        if g.name() == group && !g.members().is_empty() {
            let clients = g
                .members()
                .iter()
                .map(|m| format!("{}@{}", m.client_id(), m.client_host()))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(ReplayError::ActiveMembers {
                group: group.into(),
                members: g.members().len(),
                clients,
            });
        }
    }
    Ok(())
}

/// Computes the plan for `group` on `topics` (I/O: metadata, watermarks,
/// committed offsets, offsets for times).
pub fn plan(
    cfg: &SyncConfig,
    group: &str,
    topics: &[String],
    target: &Target,
) -> Result<Vec<PlanRow>, ReplayError> {
    let c = client(cfg, group)?;
    let timeout = Duration::from_millis(cfg.kafka.operation_timeout_ms);
    let mut tpl = TopicPartitionList::new();
    for t in topics {
        let md = c.fetch_metadata(Some(t), timeout)?;
        let Some(mt) = md.topics().iter().find(|x| x.name() == t) else {
            return Err(ReplayError::Usage(format!("topic `{t}` not found")));
        };
        if mt.error().is_some() || mt.partitions().is_empty() {
            return Err(ReplayError::Usage(format!(
                "topic `{t}` not found or has no partitions"
            )));
        }
        for p in mt.partitions() {
            tpl.add_partition(t, p.id());
        }
    }
    let committed = c.committed_offsets(tpl.clone(), timeout)?;
    let by_time = match target {
        Target::Timestamp(ms) => {
            let mut q = TopicPartitionList::new();
            for e in tpl.elements() {
                q.add_partition_offset(e.topic(), e.partition(), Offset::Offset(*ms))?;
            }
            Some(c.offsets_for_times(q, timeout)?)
        }
        _ => None,
    };
    if let Target::Offsets(list) = target {
        for (t, p, _) in list {
            if tpl.find_partition(t, *p).is_none() {
                return Err(ReplayError::Usage(format!(
                    "{t}:{p} is not a partition of the replayed topics"
                )));
            }
        }
    }
    let mut rows = Vec::new();
    for e in tpl.elements() {
        let (topic, partition) = (e.topic().to_string(), e.partition());
        let (low, high) = c.fetch_watermarks(&topic, partition, timeout)?;
        let current = match committed
            .find_partition(&topic, partition)
            .map(|x| x.offset())
        {
            Some(Offset::Offset(o)) => Some(o),
            _ => None,
        };
        let target = match target {
            Target::Earliest => Some(low),
            Target::Timestamp(_) => match by_time
                .as_ref()
                .and_then(|b| b.find_partition(&topic, partition))
                .map(|x| x.offset())
            {
                Some(Offset::Offset(o)) => Some(o),
                _ => Some(high), // nothing at or after T: the end
            },
            Target::Offsets(list) => list
                .iter()
                .find(|(t, p, _)| *t == topic && *p == partition)
                .map(|(_, _, o)| *o),
        };
        let Some(target) = target else { continue };
        if target < low || target > high {
            return Err(ReplayError::Usage(format!(
                "{topic}:{partition}: offset {target} is outside the partition's {low}..={high}"
            )));
        }
        rows.push(PlanRow {
            topic,
            partition,
            current,
            target,
            low,
            high,
        });
    }
    Ok(rows)
}

/// A replay as asked on the command line.
#[derive(Debug, Clone)]
pub struct Request {
    /// Group (default: `kafka.group_id`).
    pub group: Option<String>,
    /// Topics (default: those of `--to-offsets`, else every configured topic).
    pub topics: Vec<String>,
    /// Where to.
    pub target: Target,
    /// Only print.
    pub dry_run: bool,
    /// Admin URLs of running instances to coordinate with.
    pub coordinate: Vec<String>,
}

/// Runs a replay request; returns the table to print.
pub fn execute(cfg: &SyncConfig, req: Request) -> Result<String, ReplayError> {
    let group = req.group.unwrap_or_else(|| cfg.kafka.group_id.clone());
    let topics: Vec<String> = match (&req.target, req.topics.is_empty()) {
        (_, false) => req.topics,
        (Target::Offsets(list), true) => {
            let mut t: Vec<String> = list.iter().map(|x| x.0.clone()).collect();
            t.sort();
            t.dedup();
            t
        }
        (_, true) => cfg.topics.iter().map(|t| t.topic.clone()).collect(),
    };
    let target = &req.target;
    if req.dry_run {
        let rows = plan(cfg, &group, &topics, target)?;
        return Ok(render(&group, &rows, true));
    }
    if req.coordinate.is_empty() {
        check_no_members(cfg, &group)?;
        let rows = plan(cfg, &group, &topics, target)?;
        apply(cfg, &group, &rows)?;
        return Ok(render(&group, &rows, false));
    }
    let token = cfg
        .admin
        .resolve_token()
        .map_err(|e| ReplayError::Usage(e.to_string()))?
        .map(|t| t.expose().to_string());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ReplayError::Usage(format!("cannot start the async runtime: {e}")))?;
    // Every instance is asked, whatever the others answer (a rejoin that
    // stopped at the first failure left the rest out of the group); the
    // failures are reported together.
    let call = |path: &'static str| {
        rt.block_on(async {
            let mut failed = Vec::new();
            for u in &req.coordinate {
                if let Err(e) = admin_post(u, path, token.as_deref()).await {
                    failed.push(e.to_string());
                }
            }
            if failed.is_empty() {
                Ok(())
            } else {
                Err(ReplayError::Coordinate {
                    url: req.coordinate.join(","),
                    message: failed.join("; "),
                })
            }
        })
    };
    let moved = call("/group/leave").and_then(|()| {
        wait_group_empty(
            cfg,
            &group,
            Duration::from_millis(cfg.kafka.session_timeout_ms),
        )?;
        let rows = plan(cfg, &group, &topics, target)?;
        apply(cfg, &group, &rows)?;
        Ok(rows)
    });
    // Rejoin whatever happened, so the instances keep working.
    let rejoined = call("/group/rejoin");
    let rows = moved?;
    rejoined?;
    Ok(render(&group, &rows, false))
}

/// Commits the plan's targets for `group`.
pub fn apply(cfg: &SyncConfig, group: &str, rows: &[PlanRow]) -> Result<(), ReplayError> {
    let c = client(cfg, group)?;
    let mut tpl = TopicPartitionList::new();
    for r in rows {
        tpl.add_partition_offset(&r.topic, r.partition, Offset::Offset(r.target))?;
    }
    c.commit(&tpl, CommitMode::Sync)?;
    Ok(())
}

/// The plan as a table for people.
pub fn render(group: &str, rows: &[PlanRow], dry_run: bool) -> String {
    let mut out = format!(
        "{} consumer group `{group}`:\n{:<40} {:>9} {:>12} {:>12} {:>12}\n",
        if dry_run {
            "DRY RUN, nothing changed; would move"
        } else {
            "moved"
        },
        "TOPIC",
        "PARTITION",
        "CURRENT",
        "TARGET",
        "TO_PROCESS"
    );
    let mut total = 0;
    for r in rows {
        total += r.to_process();
        out.push_str(&format!(
            "{:<40} {:>9} {:>12} {:>12} {:>12}\n",
            r.topic,
            r.partition,
            r.current.map_or("-".to_string(), |c| c.to_string()),
            r.target,
            r.to_process()
        ));
    }
    out.push_str(&format!("total records to process: {total}\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_list_parses() {
        assert_eq!(
            parse_offsets("live.mountain.card:0:5, live.mountain.card:2:0").unwrap(),
            vec![
                ("live.mountain.card".into(), 0, 5),
                ("live.mountain.card".into(), 2, 0)
            ]
        );
        assert_eq!(
            parse_offsets("a:b:1:2").unwrap(),
            vec![("a:b".into(), 1, 2)]
        );
        for bad in ["", "t:0", "t:x:1", "t:0:-1", ":0:1", "t:-1:0"] {
            assert!(parse_offsets(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn timestamps_parse() {
        assert_eq!(parse_timestamp("1700000000000").unwrap(), 1_700_000_000_000);
        assert_eq!(parse_timestamp("1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(
            parse_timestamp("2023-11-14T22:13:20Z").unwrap(),
            1_700_000_000_000
        );
        assert_eq!(
            parse_timestamp("2023-11-14T22:13:20.5Z").unwrap(),
            1_700_000_000_500
        );
        assert_eq!(
            parse_timestamp("2024-02-29T00:00:00.123Z").unwrap(),
            1_709_164_800_123
        );
        for bad in [
            "-5",
            "2023-11-14 22:13:20Z",
            "2023-13-01T00:00:00Z",
            "yesterday",
            "2023-11-14T22:13:20.1234Z",
        ] {
            assert!(parse_timestamp(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn plan_table_counts_records() {
        let rows = vec![
            PlanRow {
                topic: "t".into(),
                partition: 0,
                current: Some(10),
                target: 0,
                low: 0,
                high: 10,
            },
            PlanRow {
                topic: "t".into(),
                partition: 1,
                current: None,
                target: 3,
                low: 3,
                high: 4,
            },
        ];
        let text = render("g", &rows, true);
        assert!(text.starts_with("DRY RUN"), "{text}");
        assert!(text.contains("total records to process: 11"), "{text}");
        assert!(
            text.lines().any(|l| l.contains(" 1 ") && l.contains(" - ")),
            "{text}"
        );
    }
}
