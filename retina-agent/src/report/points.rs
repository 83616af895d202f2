//! The data points the agent holds at one moment, owned (attributes sorted by key), and
//! the change of its counters between two such moments.

use std::{collections::HashMap, fmt::Write as _};

use opentelemetry::{KeyValue, Value};
use serde_json::Value as Json;

use crate::{
    agent::Agent,
    model::{Kind, Metric, Number},
};

/// One data point, owned, with attributes sorted by key.
#[derive(Clone, Debug)]
pub(crate) struct Point {
    pub(crate) metric: &'static Metric,
    pub(crate) attributes: Vec<(String, Json)>,
    pub(crate) value: Number,
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
pub(crate) fn capture(agent: &Agent) -> Vec<Point> {
    capture_matching(agent, |_| true)
}

/// The data points of the metrics `keep` accepts.
pub(crate) fn capture_matching(agent: &Agent, keep: impl Fn(&Metric) -> bool) -> Vec<Point> {
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
pub(crate) fn deltas(before: &[Point], after: Vec<Point>) -> Vec<Point> {
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

/// Sorts points by metric name, then attributes, for stable output.
pub(crate) fn sort(points: &mut [Point]) {
    points.sort_by(|a, b| {
        a.metric
            .name
            .cmp(b.metric.name)
            .then_with(|| format!("{:?}", a.attributes).cmp(&format!("{:?}", b.attributes)))
    });
}

#[cfg(test)]
mod tests;
