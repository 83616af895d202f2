//! `retina-agent snapshot`: attach, wait (or run a command), print what happened.

use std::{fmt::Write as _, os::fd::AsFd, process::ExitCode, time::Duration};

use anyhow::{Context as _, Result};
use serde_json::{Map, Value as Json, json};

use super::emit;

pub(crate) mod flows;
mod pcap;
use crate::{
    agent::Agent,
    cli::{Format, SnapshotArgs},
    config::Config,
    model::Number,
    report::{self, Point, capture, deltas, losses, tcphealth},
};

fn number_json(n: Number) -> Json {
    match n {
        Number::U64(v) => Json::from(v),
        Number::F64(v) => Json::from(v),
    }
}

/// The snapshot as JSON: its data points, what is degraded, and the window.
pub(crate) fn document(points: &[Point], window: Option<Duration>, agent: &Agent) -> Json {
    let metrics: Vec<Json> = points
        .iter()
        .map(|p| {
            let attributes: Map<String, Json> = p.attributes.iter().cloned().collect();
            json!({
                "name": p.metric.name,
                "type": p.metric.kind.as_str(),
                "unit": p.metric.unit,
                "attributes": attributes,
                "value": number_json(p.value),
            })
        })
        .collect();
    let degraded: Vec<Json> = agent
        .degraded()
        .iter()
        .map(|d| json!({"collector": d.collector, "reason": d.reason}))
        .collect();
    let mut doc = json!({ "metrics": metrics, "degraded": degraded });
    if let Some(w) = window {
        doc["window_seconds"] = Json::from(w.as_secs_f64());
    }
    doc
}

pub(crate) fn render_table(points: &[Point]) -> String {
    let value = |n: Number| match n {
        Number::U64(v) => v.to_string(),
        Number::F64(v) => v.to_string(),
    };
    let name_w = points
        .iter()
        .map(|p| p.metric.name.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let vals: Vec<String> = points.iter().map(|p| value(p.value)).collect();
    let val_w = vals.iter().map(String::len).max().unwrap_or(5).max(5);
    let mut out = format!("{:name_w$}  {:>val_w$}  ATTRIBUTES\n", "METRIC", "VALUE");
    for (p, v) in points.iter().zip(&vals) {
        let attrs: Vec<String> = p
            .attributes
            .iter()
            .map(|(k, v)| match v {
                Json::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect();
        let _ = writeln!(
            out,
            "{:name_w$}  {v:>val_w$}  {}",
            p.metric.name,
            attrs.join(" ")
        );
    }
    out
}

/// Takes two snapshots around `args`' window (a duration, or a command and its settle
/// time) and prints their difference, or the second one with `--cumulative`.
pub(crate) async fn command(config: &Config, args: &SnapshotArgs) -> Result<ExitCode> {
    // An unknown user is refused before anything is attached.
    let account = args.user.as_deref().map(super::child::lookup).transpose()?;
    // Both looks read every workload namespace: a one-shot look has no steady cycles to
    // spread the reads over.
    let mut config = config.clone();
    config.netstat.workloads.whole_cycles = true;
    let config = &config;
    let mut agent = Agent::new(config).context("starting the agent")?;
    for d in agent.degraded() {
        tracing::warn!(collector = d.collector, "not collecting: {}", d.reason);
    }
    let flows = match config.drops.flows {
        true => Some(flows::Look::start(&mut agent)?),
        false => None,
    };
    agent.cycle();
    let before = capture(&agent);
    let started = std::time::Instant::now();
    let mut code = ExitCode::SUCCESS;
    if let Some((program, rest)) = args.command.split_first() {
        // CMD's stdout goes to our stderr: stdout carries the snapshot alone (JSON stays
        // parsable), and CMD's output is still seen on a terminal.
        let stdout = std::io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .context("duplicating stderr for the command's output")?;
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(rest).stdout(std::process::Stdio::from(stdout));
        let whom = match &account {
            Some(a) => format!(" as {} (uid {})", a.name, a.uid),
            None => {
                if let Some(note) = super::child::sudo_note(program) {
                    eprintln!("{note}");
                }
                String::new()
            }
        };
        super::child::confine(&mut cmd, account);
        let status = cmd
            .status()
            .await
            .with_context(|| format!("running {program}{whom}"))?;
        if !status.success() {
            eprintln!("retina-agent: {program} exited with {status}");
            code = ExitCode::from(status.code().map_or(1, |c| c.clamp(1, 255) as u8));
        }
        tokio::time::sleep(args.settle).await;
    } else {
        tokio::time::sleep(args.duration).await;
    }
    let window = started.elapsed();
    agent.cycle();
    let after = capture(&agent);
    let mut points = if args.cumulative {
        after
    } else {
        deltas(&before, after)
    };
    report::sort(&mut points);
    let flows = match flows {
        Some(look) => Some(
            look.finish(&agent, args.pcap.as_deref(), config.drops.locations)
                .await?,
        ),
        None => None,
    };
    match args.format {
        Format::Json => {
            let mut doc = document(&points, (!args.cumulative).then_some(window), &agent);
            if let Some(f) = &flows {
                doc["flows"] = f.json.clone();
            }
            emit(&format!("{doc}\n"))?
        }
        Format::Table => emit(&format!(
            "{}\n{}{}{}",
            render_table(&points),
            losses::render(&losses::rows(&points)),
            tcphealth::render(tcphealth::rows(&points)),
            flows.as_ref().map_or("", |f| f.table.as_str())
        ))?,
    }
    Ok(code)
}
