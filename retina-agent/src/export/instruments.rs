//! One observable instrument per collector metric, reading the collectors' own state.

use std::collections::HashMap;

use opentelemetry::{KeyValue, metrics::Meter};

use super::SharedAgent;
use crate::{
    agent::Agent,
    drops::collector::{DROP_BYTES, DROP_COUNT, MAP_CAPACITY},
    metrics::{Kind, Metric, Number},
};

/// A metric and the collectors (by position in the agent) that emit it.
struct Plan {
    metric: &'static Metric,
    collectors: Vec<usize>,
}

/// Per-metric series limits for the SDK's aggregation (which preallocates that many
/// entries per instrument and reader): `floor`, or twice the series seen in the first
/// cycle if more, and for the drop metrics the drop map's capacity (one series per map
/// key, plus the overflow series).
pub(super) fn series_limits(agent: &Agent, floor: usize) -> HashMap<String, usize> {
    let mut seen: HashMap<&'static str, usize> = HashMap::new();
    let mut drop_capacity = None;
    agent.visit(
        &mut |metric: &'static Metric, _: &[KeyValue], value: Number| {
            *seen.entry(metric.name).or_default() += 1;
            if metric.name == MAP_CAPACITY.name {
                drop_capacity = Some(value.as_f64() as usize);
            }
        },
    );
    let mut limits: HashMap<String, usize> = seen
        .into_iter()
        .map(|(name, n)| (name.to_string(), floor.max(n.saturating_mul(2))))
        .collect();
    if let Some(cap) = drop_capacity {
        for m in [&DROP_COUNT, &DROP_BYTES] {
            let l = limits.entry(m.name.to_string()).or_insert(floor);
            *l = (*l).max(cap.saturating_add(1));
        }
    }
    limits
}

/// Visits the points of `name` held by the collectors at `collectors`.
fn observe(
    agent: &SharedAgent,
    collectors: &[usize],
    name: &'static str,
    mut f: impl FnMut(&[KeyValue], Number),
) {
    let guard = agent.lock();
    let Some(agent) = guard.as_ref() else { return };
    for (i, (collector, _)) in agent.collectors().enumerate() {
        if collectors.contains(&i) {
            collector.visit(
                &mut |metric: &'static Metric, attrs: &[KeyValue], value: Number| {
                    if metric.name == name {
                        f(attrs, value);
                    }
                },
            );
        }
    }
}

/// A counter value as `u64`; `None` for a value that cannot be one (negative, NaN).
fn counter_value(n: Number) -> Option<u64> {
    match n {
        Number::U64(v) => Some(v),
        Number::F64(v) if v.is_finite() && v >= 0.0 => Some(v as u64),
        Number::F64(_) => None,
    }
}

/// Registers an instrument for every distinct metric the agent's collectors list. Returns
/// how many.
pub(super) fn register(meter: &Meter, agent: &SharedAgent) -> usize {
    let mut plans: Vec<Plan> = Vec::new();
    {
        let guard = agent.lock();
        let Some(a) = guard.as_ref() else { return 0 };
        for (i, (collector, _)) in a.collectors().enumerate() {
            for &metric in collector.metrics() {
                match plans.iter_mut().find(|p| p.metric.name == metric.name) {
                    Some(p) if p.metric.kind != metric.kind || p.metric.unit != metric.unit => {
                        tracing::warn!(
                            metric = metric.name,
                            collector = collector.name(),
                            "metric already registered with another type or unit; not exported \
                             from this collector"
                        );
                    }
                    Some(p) => p.collectors.push(i),
                    None => plans.push(Plan {
                        metric,
                        collectors: vec![i],
                    }),
                }
            }
        }
    }
    let n = plans.len();
    for Plan { metric, collectors } in plans {
        let agent = agent.clone();
        let name = metric.name;
        match metric.kind {
            Kind::Counter => {
                meter
                    .u64_observable_counter(name)
                    .with_unit(metric.unit)
                    .with_description(metric.description)
                    .with_callback(move |o| {
                        observe(&agent, &collectors, name, |attrs, v| {
                            if let Some(v) = counter_value(v) {
                                o.observe(v, attrs);
                            }
                        })
                    })
                    .build();
            }
            Kind::Gauge => {
                meter
                    .f64_observable_gauge(name)
                    .with_unit(metric.unit)
                    .with_description(metric.description)
                    .with_callback(move |o| {
                        observe(&agent, &collectors, name, |attrs, v| {
                            o.observe(v.as_f64(), attrs)
                        })
                    })
                    .build();
            }
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_values() {
        assert_eq!(counter_value(Number::U64(7)), Some(7));
        assert_eq!(counter_value(Number::F64(7.9)), Some(7));
        assert_eq!(counter_value(Number::F64(-1.0)), None);
        assert_eq!(counter_value(Number::F64(f64::NAN)), None);
    }
}
