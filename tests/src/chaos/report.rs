//! The outcome of one chaos run and the Markdown table of a suite
//! (`CHAOS_REPORT`, `bench/results/chaos-<date>.md`).

use serde_json::Value;
use std::fmt;
use std::time::Duration;

/// The verifier's counts, summed over both topics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Verdict {
    /// In MongoDB, not in Elasticsearch.
    pub missing: u64,
    /// Different content (roll-up included).
    pub stale: u64,
    /// In Elasticsearch, not in MongoDB.
    pub extra: u64,
    /// Documents compared (MongoDB side).
    pub documents: u64,
}

impl Verdict {
    /// Adds one `es-sync verify` JSON report.
    pub fn add(&mut self, report: &Value) {
        let n = |k: &str| report[k].as_u64().unwrap_or(0);
        self.missing += n("missing");
        self.stale += n("stale");
        self.extra += n("extra");
        self.documents += n("mongo_documents");
    }

    /// Nothing missing, stale or extra.
    pub fn equal(&self) -> bool {
        self.missing == 0 && self.stale == 0 && self.extra == 0
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{} of {}",
            self.missing, self.stale, self.extra, self.documents
        )
    }
}

/// One run of one fault.
#[derive(Debug, Clone, Default)]
pub struct Row {
    /// The fault's name.
    pub fault: String,
    /// What the fault did this time (durations, counts it saw).
    pub note: String,
    /// Round (0-based).
    pub round: usize,
    /// MongoDB writes made (load and fault).
    pub writes: u64,
    /// Transactions committed by the load.
    pub transactions: u64,
    /// Cards near or over the record limit written by the load.
    pub large: u64,
    /// Change events on both topics.
    pub events: usize,
    /// From the end of the fault until a new card was searchable.
    pub recovery: Duration,
    /// Records on es-sync's dead-letter topic.
    pub dlq_sync: usize,
    /// Records on mongo-source's dead-letter topic (pointers of the
    /// documents cut to fit).
    pub dlq_source: usize,
    /// Change events seen twice by a read_committed consumer.
    pub duplicates: usize,
    /// `es-sync verify` on both topics.
    pub verdict: Verdict,
    /// What went wrong (empty when the run passed).
    pub problems: Vec<String>,
}

impl Row {
    /// A run that failed before it could be checked.
    pub fn failed(fault: String, round: usize, why: String) -> Self {
        Self {
            fault,
            round,
            problems: vec![why],
            ..Self::default()
        }
    }

    /// The header of the table.
    pub const HEADER: &'static str = "| fault | run | writes (txns, large) | events | recovery | DLQ es-sync / source | duplicates | verifier missing/stale/extra of docs | result |\n|---|---|---|---|---|---|---|---|---|\n";

    /// The row as a Markdown table line.
    pub fn line(&self) -> String {
        let fault = if self.note.is_empty() {
            self.fault.clone()
        } else {
            format!("{} ({})", self.fault, self.note)
        };
        format!(
            "| {fault} | {} | {} ({}, {}) | {} | {:.1} s | {} / {} | {} | {} | {} |",
            self.round,
            self.writes,
            self.transactions,
            self.large,
            self.events,
            self.recovery.as_secs_f64(),
            self.dlq_sync,
            self.dlq_source,
            self.duplicates,
            self.verdict,
            if self.problems.is_empty() {
                "pass".to_string()
            } else {
                format!("FAIL: {}", self.problems.join("; ").replace('|', "/"))
            }
        )
    }
}

/// The table of `rows`, with a summary line.
pub fn table(rows: &[Row]) -> String {
    let mut text = String::from(Row::HEADER);
    for r in rows {
        text.push_str(&r.line());
        text.push('\n');
    }
    let failed = rows.iter().filter(|r| !r.problems.is_empty()).count();
    text.push_str(&format!(
        "\n{} runs, {} passed, {} failed; {} writes, {} change events, {} duplicates\n",
        rows.len(),
        rows.len() - failed,
        failed,
        rows.iter().map(|r| r.writes).sum::<u64>(),
        rows.iter().map(|r| r.events).sum::<usize>(),
        rows.iter().map(|r| r.duplicates).sum::<usize>(),
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_row_reads_as_a_table_line_and_problems_fail_it() {
        let mut v = Verdict::default();
        v.add(&json!({"missing": 0, "stale": 0, "extra": 0, "mongo_documents": 40}));
        v.add(&json!({"missing": 1, "stale": 0, "extra": 0, "mongo_documents": 2}));
        assert!(!v.equal());
        let mut row = Row {
            fault: "WriteBlock".into(),
            note: "12 s".into(),
            writes: 10,
            verdict: v,
            ..Row::default()
        };
        assert!(row.line().contains("| WriteBlock (12 s) | 0 | 10 (0, 0) |"));
        assert!(row.line().contains("| 1/0/0 of 42 | pass |"));
        row.problems.push("a | b".into());
        assert!(row.line().ends_with("| FAIL: a / b |"));
        assert!(table(&[row]).contains("1 runs, 0 passed, 1 failed"));
    }
}
