//! `retina-agent snapshot`: attach, wait (or run a command), print what happened.

use std::{collections::HashMap, fmt::Write as _, os::fd::AsFd, process::ExitCode, time::Duration};

use anyhow::{Context as _, Result};

use opentelemetry::{KeyValue, Value};
use serde_json::{Map, Value as Json, json};

use super::emit;
use crate::{
    agent::Agent,
    cli::SnapshotArgs,
    config::Config,
    model::{Kind, Metric, Number},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Json,
    Table,
}

/// One data point, owned, with attributes sorted by key.
#[derive(Clone, Debug)]
pub struct Point {
    pub metric: &'static Metric,
    pub attributes: Vec<(String, Json)>,
    pub value: Number,
}

fn json_value(v: &Value) -> Json {
    match v {
        Value::Bool(b) => Json::Bool(*b),
        Value::I64(i) => Json::from(*i),
        Value::F64(f) => Json::from(*f),
        other => Json::String(other.as_str().into_owned()),
    }
}

/// Every data point the agent holds right now.
pub fn capture(agent: &Agent) -> Vec<Point> {
    capture_matching(agent, |_| true)
}

/// The data points of the metrics `keep` accepts.
pub fn capture_matching(agent: &Agent, keep: impl Fn(&Metric) -> bool) -> Vec<Point> {
    let mut points = Vec::new();
    agent.visit(
        &mut |metric: &'static Metric, attrs: &[KeyValue], value: Number| {
            if !keep(metric) {
                return;
            }
            let mut attributes: Vec<(String, Json)> = attrs
                .iter()
                .map(|kv| (kv.key.as_str().to_string(), json_value(&kv.value)))
                .collect();
            attributes.sort_by(|a, b| a.0.cmp(&b.0));
            points.push(Point {
                metric,
                attributes,
                value,
            });
        },
    );
    points
}

fn identity(p: &Point) -> String {
    let mut s = p.metric.name.to_string();
    for (k, v) in &p.attributes {
        let _ = write!(s, "\u{1f}{k}={v}");
    }
    s
}

/// The change of every counter between `before` and `after` (series that moved only, a
/// counter that went backwards is taken as reset), and every gauge as it is in `after`.
pub fn deltas(before: &[Point], after: Vec<Point>) -> Vec<Point> {
    let base: HashMap<String, Number> = before.iter().map(|p| (identity(p), p.value)).collect();
    after
        .into_iter()
        .filter_map(|mut p| {
            if p.metric.kind == Kind::Counter {
                let old = base.get(&identity(&p)).copied();
                p.value = match (old, p.value) {
                    (Some(Number::U64(a)), Number::U64(b)) if b >= a => Number::U64(b - a),
                    (Some(Number::F64(a)), Number::F64(b)) if b >= a => Number::F64(b - a),
                    (_, v) => v,
                };
                if p.value.as_f64() == 0.0 {
                    return None;
                }
            }
            Some(p)
        })
        .collect()
}

fn number_json(n: Number) -> Json {
    match n {
        Number::U64(v) => Json::from(v),
        Number::F64(v) => Json::from(v),
    }
}

/// Sorts points by metric name, then attributes, for stable output.
pub fn sort(points: &mut [Point]) {
    points.sort_by(|a, b| {
        a.metric
            .name
            .cmp(b.metric.name)
            .then_with(|| format!("{:?}", a.attributes).cmp(&format!("{:?}", b.attributes)))
    });
}

/// The snapshot as JSON: its data points, what is degraded, and the window.
pub fn document(points: &[Point], window: Option<Duration>, agent: &Agent) -> Json {
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

pub fn render_table(points: &[Point]) -> String {
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
pub async fn command(config: &Config, args: &SnapshotArgs) -> Result<ExitCode> {
    // An unknown user is refused before anything is attached.
    let account = args.user.as_deref().map(super::child::lookup).transpose()?;
    let mut agent = Agent::new(config).context("starting the agent")?;
    for d in agent.degraded() {
        tracing::warn!(collector = d.collector, "not collecting: {}", d.reason);
    }
    let flows = match config.drops.flows {
        true => Some(super::flows::Look::start(&mut agent)?),
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
    sort(&mut points);
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
            "{}\n{}{}",
            render_table(&points),
            super::losses::render(&super::losses::rows(&points)),
            flows.as_ref().map_or("", |f| f.table.as_str())
        ))?,
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    static C: Metric = Metric {
        name: "c",
        unit: "1",
        description: "",
        kind: Kind::Counter,
    };
    static G: Metric = Metric {
        name: "g",
        unit: "1",
        description: "",
        kind: Kind::Gauge,
    };

    fn p(metric: &'static Metric, a: &str, v: u64) -> Point {
        Point {
            metric,
            attributes: vec![("k".into(), Json::from(a))],
            value: Number::U64(v),
        }
    }

    #[test]
    fn deltas_of_counters_gauges_as_they_are() {
        let before = vec![
            p(&C, "x", 10),
            p(&C, "y", 5),
            p(&C, "r", 100),
            p(&G, "x", 7),
        ];
        let after = vec![
            p(&C, "x", 15),
            p(&C, "y", 5),
            p(&C, "r", 3),
            p(&C, "new", 4),
            p(&G, "x", 2),
        ];
        let d = deltas(&before, after);
        let got: Vec<(&str, String, u64)> = d
            .iter()
            .map(|p| {
                let Number::U64(v) = p.value else { panic!() };
                (p.metric.name, p.attributes[0].1.to_string(), v)
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("c", "\"x\"".into(), 5),
                ("c", "\"r\"".into(), 3),
                ("c", "\"new\"".into(), 4),
                ("g", "\"x\"".into(), 2)
            ]
        );
    }
}
