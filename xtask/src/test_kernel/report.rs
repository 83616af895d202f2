//! What a guest reported, judged against what it was meant to run, and the kernel matrix
//! (Markdown) written from the runs.
//!
//! The guest's protocol on the serial console (`xtask/guest/init.sh`), one line each:
//! - `RETINA-GUEST: FACT KEY VALUE...`: something this kernel differs in;
//! - `RETINA-GUEST: RUN FILE`, then the test binary's output as `FILE| ...` lines;
//! - `RETINA-GUEST: TEST FILE ok|failed|ignored NAME`: libtest's `--logfile`, per test;
//! - `RETINA-GUEST: DONE FILE rc=N seconds=S`: the binary's exit status and run time;
//! - `RETINA-GUEST-RESULT: N test files run`, then the guest powers off.
//!
//! A file that should run passes only with exit status 0 and an `ok` for each of its tests
//! (minus those the plan left out): a crash, a timeout or a missing test fails it.

use std::{collections::BTreeMap, fmt::Write as _, fs, path::Path};

use anyhow::{Context as _, Result, bail};

use super::suite::Planned;

const LINE_PREFIX: &str = "RETINA-GUEST: ";
const RESULT_PREFIX: &str = "RETINA-GUEST-RESULT:";

/// The facts the matrix shows, with their labels, in order.
const FACTS: &[(&str, &str)] = &[
    ("reasons", "drop reasons (`enum skb_drop_reason`)"),
    ("hook", "drop hook the agent attached"),
    ("softnet-columns", "`/proc/net/softnet_stat` columns"),
    ("kfree-skb-fields", "`skb:kfree_skb` tracepoint fields"),
];

#[derive(Default)]
struct FileLog {
    /// `(status, test)` from the guest's `TEST` lines.
    tests: Vec<(String, String)>,
    rc: Option<String>,
    seconds: Option<f64>,
}

/// Everything a guest printed that the protocol defines.
#[derive(Default)]
pub struct Console {
    pub facts: BTreeMap<String, String>,
    files: BTreeMap<String, FileLog>,
    pub finished: bool,
}

impl Console {
    pub fn feed(&mut self, line: &str) {
        if line.contains(RESULT_PREFIX) {
            self.finished = true;
            return;
        }
        let Some(at) = line.find(LINE_PREFIX) else {
            return;
        };
        let mut words = line[at + LINE_PREFIX.len()..].split_whitespace();
        match (words.next(), words.next()) {
            (Some("FACT"), Some(key)) => {
                let value: Vec<&str> = words.collect();
                self.facts.insert(key.to_string(), value.join(" "));
            }
            (Some("RUN"), Some(file)) => {
                self.files.insert(file.to_string(), FileLog::default());
            }
            (Some("TEST"), Some(file)) => {
                if let (Some(status), Some(test)) = (words.next(), words.next()) {
                    let log = self.files.entry(file.to_string()).or_default();
                    log.tests.push((status.to_string(), test.to_string()));
                }
            }
            (Some("DONE"), Some(file)) => {
                let log = self.files.entry(file.to_string()).or_default();
                for word in words {
                    if let Some(rc) = word.strip_prefix("rc=") {
                        log.rc = Some(rc.to_string());
                    } else if let Some(s) = word.strip_prefix("seconds=") {
                        log.seconds = s.parse().ok();
                    }
                }
            }
            _ => {}
        }
    }
}

pub enum Cell {
    Passed {
        passed: usize,
        seconds: f64,
    },
    Failed {
        passed: usize,
        /// Failed tests, tests without a result, or what went wrong with the binary.
        problems: Vec<String>,
    },
    NotRun(String),
}

pub struct FileVerdict {
    pub name: String,
    /// How many tests the file has.
    pub tests: usize,
    pub cell: Cell,
    /// Tests of a file that ran, left out, with the reason.
    pub not_run: Vec<(String, String)>,
}

/// One guest's run.
pub struct KernelRun {
    pub package: String,
    pub version: String,
    pub release: String,
    pub accel: &'static str,
    pub guest_secs: f64,
    pub facts: BTreeMap<String, String>,
    /// Why the guest did not report to the end (timeout, crash), if it did not.
    pub error: Option<String>,
    pub files: Vec<FileVerdict>,
}

impl KernelRun {
    pub fn failed_files(&self) -> Vec<&str> {
        self.files
            .iter()
            .filter(|f| matches!(f.cell, Cell::Failed { .. }))
            .map(|f| f.name.as_str())
            .collect()
    }
}

/// Each planned file's verdict from what the guest printed.
pub fn judge(plan: &[Planned], console: &Console) -> Vec<FileVerdict> {
    plan.iter()
        .map(|planned| {
            let file = planned.file;
            let mut not_run = planned.skipped.clone();
            for test in &file.ignored {
                not_run.push((
                    test.clone(),
                    "#[ignore] in the source (not run on the host either)".to_string(),
                ));
            }
            if let Some(reason) = &planned.not_run {
                return FileVerdict {
                    name: file.name.clone(),
                    tests: file.tests.len(),
                    cell: Cell::NotRun(reason.clone()),
                    not_run: Vec::new(),
                };
            }
            let cell = match console.files.get(&file.name) {
                None => Cell::Failed {
                    passed: 0,
                    problems: vec!["never started".to_string()],
                },
                Some(log) => file_cell(planned, log),
            };
            FileVerdict {
                name: file.name.clone(),
                tests: file.tests.len(),
                cell,
                not_run,
            }
        })
        .collect()
}

fn file_cell(planned: &Planned, log: &FileLog) -> Cell {
    let mut problems = Vec::new();
    let mut passed = 0;
    for test in &planned.file.tests {
        if planned.skipped.iter().any(|(t, _)| t == test) {
            continue;
        }
        let full = planned.file.full_name(test);
        match log.tests.iter().find(|(_, t)| *t == full) {
            Some((status, _)) if status == "ok" => passed += 1,
            Some((status, _)) => problems.push(format!("{test} {status}")),
            None => problems.push(format!("{test}: no result")),
        }
    }
    match log.rc.as_deref() {
        Some("0") => {}
        Some("143") => problems.push("timed out in the guest (killed)".to_string()),
        Some(rc) => problems.push(format!("exit status {rc}")),
        None => problems.push("did not finish".to_string()),
    }
    if problems.is_empty() {
        Cell::Passed {
            passed,
            seconds: log.seconds.unwrap_or(0.0),
        }
    } else {
        Cell::Failed { passed, problems }
    }
}

fn cell_text(file: &FileVerdict) -> String {
    let not_run = file.not_run.len();
    let extra = if not_run > 0 {
        format!(", {not_run} not run")
    } else {
        String::new()
    };
    match &file.cell {
        Cell::Passed { passed, seconds } => format!("pass ({passed}{extra}; {seconds:.0} s)"),
        Cell::Failed { passed, problems } => {
            format!("**FAIL**: {} ({passed} passed{extra})", problems.join("; "))
        }
        Cell::NotRun(_) => format!("not run¹ ({} tests)", file.tests),
    }
}

/// The kernel matrix: test files × kernels, the facts per kernel, and every test not run
/// with its reason.
pub fn matrix(runs: &[KernelRun], when: &str, command: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Last run: {when}, `{command}`.\n");
    let head: Vec<String> = runs.iter().map(|r| format!("`{}`", r.release)).collect();
    let _ = writeln!(out, "| Test file | {} |", head.join(" | "));
    let _ = writeln!(out, "|---|{}", "---|".repeat(runs.len()));
    let mut names: Vec<&str> = runs
        .iter()
        .flat_map(|r| r.files.iter().map(|f| f.name.as_str()))
        .collect();
    names.sort();
    names.dedup();
    for name in names {
        let cells: Vec<String> = runs
            .iter()
            .map(|r| match r.files.iter().find(|f| f.name == name) {
                Some(f) => cell_text(f),
                None => "—".to_string(),
            })
            .collect();
        let _ = writeln!(out, "| `{name}` | {} |", cells.join(" | "));
    }
    let row = |out: &mut String, label: &str, f: &dyn Fn(&KernelRun) -> String| {
        let cells: Vec<String> = runs.iter().map(f).collect();
        let _ = writeln!(out, "| {label} | {} |", cells.join(" | "));
    };
    row(&mut out, "*Debian package*", &|r| {
        format!("`{}` {}", r.package, r.version)
    });
    for (key, label) in FACTS {
        row(&mut out, &format!("*{label}*"), &|r| {
            r.facts
                .get(*key)
                .cloned()
                .unwrap_or_else(|| "?".to_string())
        });
    }
    row(&mut out, "*guest run (boot to power-off)*", &|r| {
        let outcome = r.error.as_deref().unwrap_or("completed");
        format!("{:.0} s under {}, {outcome}", r.guest_secs, r.accel)
    });

    let mut notes: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for run in runs {
        for file in &run.files {
            if let Cell::NotRun(reason) = &file.cell {
                notes
                    .entry(format!("`{}` (the whole file): {reason}", file.name))
                    .or_default()
                    .push(&run.release);
            }
            for (test, reason) in &file.not_run {
                notes
                    .entry(format!("`{}::{test}`: {reason}", file.name))
                    .or_default()
                    .push(&run.release);
            }
        }
    }
    if !notes.is_empty() {
        let _ = writeln!(out, "\nNot run in the guest (listed by the harness):\n");
        for (note, kernels) in notes {
            let on = if kernels.len() == runs.len() {
                "every kernel".to_string()
            } else {
                kernels.join(", ")
            };
            let _ = writeln!(out, "- ¹ {note} ({on})");
        }
    }
    out
}

const BEGIN: &str = "<!-- BEGIN kernel-matrix";
const END: &str = "<!-- END kernel-matrix -->";

/// Replaces the marked block of `doc` with `matrix`.
pub fn update_doc(doc: &Path, matrix: &str) -> Result<()> {
    let text = fs::read_to_string(doc).with_context(|| format!("cannot read {}", doc.display()))?;
    let (Some(begin), Some(end)) = (text.find(BEGIN), text.find(END)) else {
        bail!(
            "{} has no `{BEGIN} ... -->` ... `{END}` block to write the matrix into",
            doc.display()
        );
    };
    let begin_end = begin + text[begin..].find("-->").context("unterminated marker")? + 3;
    if end < begin_end {
        bail!("{}: the matrix markers are out of order", doc.display());
    }
    let new = format!("{}\n{matrix}{}", &text[..begin_end], &text[end..]);
    fs::write(doc, new).with_context(|| format!("cannot write {}", doc.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_kernel::suite::TestFile;

    #[test]
    fn protocol_lines_and_verdicts() {
        let mut console = Console::default();
        for line in [
            "RETINA-GUEST: FACT reasons 66",
            "RETINA-GUEST: RUN drops",
            "drops| test a ... ok",
            "[  3.1] noise RETINA-GUEST: TEST drops ok a",
            "RETINA-GUEST: TEST drops failed b",
            "RETINA-GUEST: DONE drops rc=101 seconds=12.5",
            "RETINA-GUEST: RUN netdev",
            "RETINA-GUEST: TEST netdev ok n",
            "RETINA-GUEST: DONE netdev rc=0 seconds=3",
            "RETINA-GUEST-RESULT: 2 test files run",
        ] {
            console.feed(line);
        }
        assert!(console.finished);
        assert_eq!(console.facts["reasons"], "66");
        let file = |name: &str, tests: &[&str]| TestFile {
            name: name.to_string(),
            exe: name.into(),
            prefix: String::new(),
            tests: tests.iter().map(|t| t.to_string()).collect(),
            ignored: Vec::new(),
        };
        let (drops, netdev, ethtool) = (
            file("drops", &["a", "b", "c"]),
            file("netdev", &["n", "m"]),
            file("ethtool", &["e"]),
        );
        let plan = [
            Planned {
                file: &drops,
                not_run: None,
                skipped: vec![("c".to_string(), "needs x".to_string())],
            },
            Planned {
                file: &netdev,
                not_run: None,
                skipped: vec![("m".to_string(), "needs y".to_string())],
            },
            Planned {
                file: &ethtool,
                not_run: None,
                skipped: Vec::new(),
            },
        ];
        let verdicts = judge(&plan, &console);
        match &verdicts[0].cell {
            Cell::Failed { passed, problems } => {
                assert_eq!(*passed, 1);
                assert_eq!(problems, &["b failed", "exit status 101"]);
            }
            _ => panic!("drops should fail"),
        }
        assert!(matches!(verdicts[1].cell, Cell::Passed { passed: 1, .. }));
        assert_eq!(verdicts[1].not_run.len(), 1);
        // Planned to run, never started: a failure, not a pass.
        assert!(matches!(verdicts[2].cell, Cell::Failed { .. }));
    }
}
