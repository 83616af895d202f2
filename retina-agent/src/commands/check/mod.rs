//! `retina-agent check`: can this machine, with this configuration, run the agent?
//!
//! Every check prints one line, `PASS|WARN|FAIL  NAME: DETAIL`, and a `hint:` line with
//! what to do when it did not pass. FAIL means the agent would not do its job (no drop
//! counting, an exporter that cannot start, a configuration it refuses); WARN means it would
//! run, with a limitation or relying on something outside (an unreachable collector). The
//! probe check really loads, attaches and detaches the eBPF program.
//!
//! The drop counter's checks (kernel, BTF, capabilities, tracepoint, probe) are in
//! `kernel`, the informational mounts and the exporters' endpoints in `endpoints`.

mod endpoints;
mod kernel;
mod locations;
mod workload_netstat;
mod tcp_events;
mod workloads;

use std::{fmt, path::Path, process::ExitCode};

use serde_json::json;

pub(crate) use self::endpoints::{CONNECT_TIMEOUT, otlp, prometheus};
use crate::{
    cli::CheckFormat,
    collectors::drops::Hook,
    config::{ConfigError, Loaded, Origin},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    Pass,
    Warn,
    Fail,
}

impl Status {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Check {
    pub(crate) name: &'static str,
    pub(crate) status: Status,
    pub(crate) detail: String,
    /// What to do about it (for WARN and FAIL).
    pub(crate) hint: Option<String>,
}

impl Check {
    fn pass(name: &'static str, detail: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Pass,
            detail: detail.into(),
            hint: None,
        }
    }

    fn warn(name: &'static str, detail: impl Into<String>, hint: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Warn,
            detail: detail.into(),
            hint: Some(hint.into()),
        }
    }

    fn fail(name: &'static str, detail: impl Into<String>, hint: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Fail,
            detail: detail.into(),
            hint: Some(hint.into()),
        }
    }
}

/// What `check` checks.
pub(crate) struct Input<'a> {
    /// The configuration as loaded (file, environment, flags), or why it could not be.
    pub(crate) config: Result<&'a Loaded, &'a ConfigError>,
    /// `--btf`: read BTF from this file instead of the running kernel's.
    pub(crate) btf_path: Option<&'a Path>,
    /// `--drop-hook`: which tracepoint flavour the probe check attaches.
    pub(crate) hook: Hook,
}
/// Exit status for a configuration that cannot be used, as `run` gives it.
const EXIT_CONFIG: u8 = 2;

/// Runs the checks, prints them in `format` and says how they went: 0 all passed, 1 some
/// failed, 2 the configuration is refused (the same status `run` gives it).
pub(crate) fn command(input: &Input<'_>, format: CheckFormat) -> ExitCode {
    let checks = run(input);
    let text = match format {
        CheckFormat::Text => render_text(&checks),
        CheckFormat::Json => format!("{}\n", render_json(&checks)),
    };
    if let Err(e) = super::emit(&text) {
        eprintln!("error: writing to stdout: {e}");
        return ExitCode::FAILURE;
    }
    if input.config.is_err() {
        ExitCode::from(EXIT_CONFIG)
    } else if passed(&checks) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Runs every check, in the order they are printed.
pub(crate) fn run(input: &Input<'_>) -> Vec<Check> {
    let mut checks = vec![config_check(input.config)];
    let config = input.config.ok().map(|l| &l.config);

    // The drop counter: kernel, BTF, capabilities, tracepoint, a real load.
    let first_drop_check = checks.len();
    let map_entries = config.map_or(retina_ebpf_common::DEFAULT_DROPS_MAX_ENTRIES, |c| {
        c.drops.map_entries
    });
    checks.extend(kernel::drop_counter(
        input.btf_path,
        map_entries,
        input.hook,
    ));
    if config.is_some_and(|c| !c.drops.enabled) {
        // Nothing of this is needed when drop counting is off: report, do not fail.
        for c in &mut checks[first_drop_check..] {
            if c.status == Status::Fail {
                c.status = Status::Warn;
                c.detail.push_str(" (drops.enabled = false: not needed)");
            }
        }
    }

    // Drop locations name kernel functions from /proc/kallsyms (CAP_SYSLOG).
    checks.push(locations::drop_locations(
        config.is_some_and(|c| c.drops.enabled && c.drops.locations),
    ));

    // TCP events per socket cgroup (they come with the drop counter).
    let tcp = checks.len();
    checks.push(tcp_events::tcp_events(input.btf_path));
    if config.is_some_and(|c| !c.drops.enabled) {
        checks[tcp].detail.push_str(" (drops.enabled = false: not started)");
    }

    // Pod, container and unit attribution: the task iterator, or what /proc shows.
    checks.push(workloads::workloads());
    checks.push(workload_netstat::workload_netstat(
        config.is_none_or(|c| c.netstat.enabled && c.netstat.workloads.enabled),
    ));

    // Informational: the agent needs neither.
    checks.extend(endpoints::mounts());

    // The exporters, as configured (file, environment, flags).
    match config {
        Some(c) if c.export.enabled => {
            checks.push(otlp(&c.export.resolved_endpoint(), CONNECT_TIMEOUT))
        }
        Some(_) => checks.push(Check::pass(
            "otlp",
            "export disabled (export.enabled = false)",
        )),
        None => checks.push(Check::warn(
            "otlp",
            "not checked: the configuration is invalid",
            "fix the configuration first",
        )),
    }
    match config {
        Some(c) if c.prometheus.enabled => checks.push(prometheus(c.prometheus.listen)),
        Some(_) => checks.push(Check::pass(
            "prometheus",
            "endpoint disabled (prometheus.enabled = false)",
        )),
        None => checks.push(Check::warn(
            "prometheus",
            "not checked: the configuration is invalid",
            "fix the configuration first",
        )),
    }
    checks
}

/// Whether no check failed.
pub(crate) fn passed(checks: &[Check]) -> bool {
    !checks.iter().any(|c| c.status == Status::Fail)
}

/// One line per check, a `hint:` line under those that did not pass, and a summary.
pub(crate) fn render_text(checks: &[Check]) -> String {
    let mut out = String::new();
    for c in checks {
        out.push_str(&format!("{}  {}: {}\n", c.status, c.name, c.detail));
        if let Some(hint) = &c.hint
            && c.status != Status::Pass
        {
            out.push_str(&format!("      hint: {hint}\n"));
        }
    }
    let count = |s: Status| checks.iter().filter(|c| c.status == s).count();
    out.push_str(&format!(
        "{} passed, {} warnings, {} failed\n",
        count(Status::Pass),
        count(Status::Warn),
        count(Status::Fail)
    ));
    out
}

/// `{"ok": bool, "checks": [{"name", "status", "detail", "hint"}]}`.
pub(crate) fn render_json(checks: &[Check]) -> serde_json::Value {
    let list: Vec<serde_json::Value> = checks
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "status": c.status.as_str(),
                "detail": c.detail,
                "hint": c.hint,
            })
        })
        .collect();
    json!({ "ok": passed(checks), "checks": list })
}

fn config_check(config: Result<&Loaded, &ConfigError>) -> Check {
    const NAME: &str = "config";
    match config {
        Ok(l) => match &l.origin {
            Origin::File(p) => Check::pass(NAME, format!("{} is valid", p.display())),
            Origin::Defaults { missing } => {
                Check::pass(NAME, format!("no {}: built-in defaults", missing.display()))
            }
        },
        Err(e @ ConfigError::Env { .. }) => {
            Check::fail(NAME, e.to_string(), "fix or unset the environment variable")
        }
        Err(e) => Check::fail(
            NAME,
            e.to_string(),
            "fix the key named above; packaging/config.toml (installed as /etc/retina-agent/config.toml) lists every key with its default",
        ),
    }
}

#[cfg(test)]
mod tests;
