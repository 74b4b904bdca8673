//! What a `dlq replay` run found and did, as a table per error type and
//! topic, and the progress bar it draws meanwhile.

use serde::Serialize;

/// The dead letters of one error type and source topic.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Row {
    /// `dlq.error.type`.
    pub error_type: String,
    /// Source topic (where they are re-driven to).
    pub topic: String,
    /// Selected: not re-driven before, matching the filters.
    pub records: u64,
    /// Of those, pointers (the original is read back from the topic).
    pub pointers: u64,
    /// Pointers whose original the topic no longer holds (not re-driven).
    pub gone: u64,
    /// Re-driven by this run.
    pub redriven: u64,
}

impl Row {
    /// An empty row.
    pub fn new(error_type: &str, topic: &str) -> Self {
        Self {
            error_type: error_type.to_string(),
            topic: topic.to_string(),
            records: 0,
            pointers: 0,
            gone: 0,
            redriven: 0,
        }
    }
}

/// The outcome of a run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    /// The dead-letter topic read.
    pub dlq_topic: String,
    /// Nothing was written.
    pub dry_run: bool,
    /// Dead letters in the topic.
    pub dead_letters: u64,
    /// Of those, re-driven by an earlier run (marked).
    pub already_redriven: u64,
    /// Of those, left out by the filters.
    pub filtered_out: u64,
    /// Records that are neither dead letters nor marks (not es-sync's).
    pub foreign: u64,
    /// Selected dead letters per error type and topic.
    pub rows: Vec<Row>,
    /// Re-driven by this run.
    pub redriven: u64,
    /// Pointers whose original is gone.
    pub gone: u64,
    /// Re-driven records older than `index.gc_deletes` (12 h): one may
    /// bring back a document deleted since; `es-sync verify --repair`
    /// removes it.
    pub older_than_gc_deletes: u64,
    /// Wall time.
    pub seconds: f64,
}

impl Report {
    /// Selected dead letters (all rows).
    pub fn selected(&self) -> u64 {
        self.rows.iter().map(|r| r.records).sum()
    }

    /// The table and summary printed by the command.
    pub fn render(&self) -> String {
        let mut out = format!(
            "dead-letter topic {}: {} dead letters, {} re-driven before, {} left out by the filters{}\n",
            self.dlq_topic,
            self.dead_letters,
            self.already_redriven,
            self.filtered_out,
            if self.foreign > 0 {
                format!(", {} other records ignored", self.foreign)
            } else {
                String::new()
            }
        );
        out.push_str(&format!(
            "{:<32} {:<36} {:>8} {:>8} {:>6} {:>9}\n",
            "error type", "topic", "records", "pointers", "gone", "re-driven"
        ));
        for r in &self.rows {
            out.push_str(&format!(
                "{:<32} {:<36} {:>8} {:>8} {:>6} {:>9}\n",
                r.error_type, r.topic, r.records, r.pointers, r.gone, r.redriven
            ));
        }
        if self.dry_run {
            out.push_str(&format!(
                "dry run: nothing written; {} dead letters would be re-driven{}\n",
                self.selected() - self.gone,
                gone_note(self.gone)
            ));
        } else {
            out.push_str(&format!(
                "re-driven {} dead letters to their topics in {:.1} s{}\n",
                self.redriven,
                self.seconds,
                gone_note(self.gone)
            ));
            if self.older_than_gc_deletes > 0 {
                out.push_str(&format!(
                    "warning: {} re-driven records are older than index.gc_deletes (12 h): one of \
                     them may bring back a document deleted since; run `es-sync verify --repair` \
                     on their topics\n",
                    self.older_than_gc_deletes
                ));
            }
        }
        out
    }
}

fn gone_note(gone: u64) -> String {
    if gone == 0 {
        String::new()
    } else {
        format!(" ({gone} pointers name records their topic no longer holds: not re-driven)")
    }
}

/// A progress bar on stderr, hidden when `enabled` is false.
pub fn progress_bar(enabled: bool) -> indicatif::ProgressBar {
    if !enabled {
        return indicatif::ProgressBar::hidden();
    }
    let bar =
        indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:30}] {pos}/{len} records, {per_sec}, ETA {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(dry_run: bool) -> Report {
        let mut a = Row::new("mapper_parsing_exception", "live.mountain.card");
        a.records = 4;
        a.pointers = 1;
        a.redriven = if dry_run { 0 } else { 4 };
        Report {
            dlq_topic: "live.dlq.sync".into(),
            dry_run,
            dead_letters: 6,
            already_redriven: 1,
            filtered_out: 1,
            foreign: 0,
            rows: vec![a],
            redriven: if dry_run { 0 } else { 4 },
            gone: 0,
            older_than_gc_deletes: 0,
            seconds: 0.5,
        }
    }

    #[test]
    fn the_table_shows_each_error_type_and_topic() {
        let text = report(true).render();
        assert!(
            text.contains("6 dead letters, 1 re-driven before, 1 left out"),
            "{text}"
        );
        let row = text
            .lines()
            .find(|l| l.starts_with("mapper_parsing_exception"))
            .expect("row");
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cols,
            [
                "mapper_parsing_exception",
                "live.mountain.card",
                "4",
                "1",
                "0",
                "0"
            ]
        );
        assert!(
            text.contains("dry run: nothing written; 4 dead letters would be re-driven"),
            "{text}"
        );
        let done = report(false).render();
        assert!(done.contains("re-driven 4 dead letters"), "{done}");
        let mut old = report(false);
        old.older_than_gc_deletes = 2;
        assert!(old
            .render()
            .contains("warning: 2 re-driven records are older"));
    }
}
