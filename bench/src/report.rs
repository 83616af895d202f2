//! The human-readable table (stdout and Markdown) next to the JSON document.

use std::fmt::Write as _;

/// Whether a figure meets its target.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Info,
    Met,
    Missed,
}

impl Status {
    pub fn check(ok: bool) -> Status {
        if ok { Status::Met } else { Status::Missed }
    }

    fn as_str(self) -> &'static str {
        match self {
            Status::Info => "",
            Status::Met => "met",
            Status::Missed => "MISSED",
        }
    }
}

pub struct Row {
    pub section: String,
    pub what: String,
    pub value: String,
    pub target: String,
    pub status: Status,
}

#[derive(Default)]
pub struct Table {
    pub rows: Vec<Row>,
    printed: usize,
}

impl Table {
    pub fn info(&mut self, section: &str, what: &str, value: String) {
        self.push(section, what, value, "", Status::Info);
    }

    pub fn push(&mut self, section: &str, what: &str, value: String, target: &str, status: Status) {
        self.rows.push(Row {
            section: section.to_string(),
            what: what.to_string(),
            value,
            target: target.to_string(),
            status,
        });
    }

    /// Prints the rows added since the last call (progress while the bench runs).
    pub fn flush_new(&mut self) {
        for r in &self.rows[self.printed..] {
            eprintln!(
                "    {:<58} {:>16}  {}",
                r.what,
                r.value,
                match r.status {
                    Status::Info => String::new(),
                    s => format!("[{} {}]", s.as_str(), r.target),
                }
            );
        }
        self.printed = self.rows.len();
    }

    pub fn missed(&self) -> Vec<&Row> {
        self.rows
            .iter()
            .filter(|r| r.status == Status::Missed)
            .collect()
    }

    pub fn text(&self) -> String {
        let w0 = self.rows.iter().map(|r| r.section.len()).max().unwrap_or(0);
        let w1 = self.rows.iter().map(|r| r.what.len()).max().unwrap_or(0);
        let w2 = self.rows.iter().map(|r| r.value.len()).max().unwrap_or(0);
        let w3 = self.rows.iter().map(|r| r.target.len()).max().unwrap_or(0);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<w0$}  {:<w1$}  {:>w2$}  {:<w3$}  status",
            "section", "figure", "value", "target"
        );
        let _ = writeln!(out, "{}", "-".repeat(w0 + w1 + w2 + w3 + 16));
        for r in &self.rows {
            let _ = writeln!(
                out,
                "{:<w0$}  {:<w1$}  {:>w2$}  {:<w3$}  {}",
                r.section,
                r.what,
                r.value,
                r.target,
                r.status.as_str()
            );
        }
        out
    }

    pub fn markdown(&self) -> String {
        let mut out = String::from(
            "| section | figure | value | target | status |\n|---|---|---:|---|---|\n",
        );
        for r in &self.rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                r.section,
                r.what,
                r.value,
                r.target,
                r.status.as_str()
            );
        }
        out
    }
}
