//! The exposition: a `prometheus-client` [`Collector`] that streams the collectors' current
//! values through the crate's OpenMetrics text encoder, one family per exported metric
//! (families without points are left out), then `target_info` from the resource.
//!
//! Names follow the OpenTelemetry-to-Prometheus rules: dots become underscores, the unit's
//! word is appended (`By` → `_bytes`, `s` → `_seconds`, `bit/s` → `_bits_per_second`;
//! `{annotations}` and `1` on counters add nothing) unless the name ends with it already,
//! counter samples end in `_total` (the encoder adds it); attribute keys become labels the
//! same way.

use std::{fmt::Write as _, sync::Arc};

use opentelemetry::{KeyValue, Value};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, LabelSetEncoder, MetricEncoder, NoLabelSet},
    metrics::MetricType,
};

use super::super::{
    SharedAgent,
    catalog::{Catalog, counter_value},
    selfmetrics::ExportStats,
};
use crate::model::{Kind, Metric, Number};

/// The Prometheus unit word for an OpenTelemetry (UCUM) unit; `None` adds nothing.
fn unit_word(unit: &str, kind: Kind) -> Option<&'static str> {
    Some(match unit {
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "bit/s" => "bits_per_second",
        "By/s" => "bytes_per_second",
        "%" => "percent",
        // A dimensionless counter counts things: `_ratio_total` would mislead.
        "1" if kind == Kind::Gauge => "ratio",
        _ => return None,
    })
}

/// Writes a metric or label name: each run of characters Prometheus cannot hold as one
/// `_` per character (and a `_` before a leading digit), in as few writes as there are
/// runs: the encoder's writer is dynamic, so a write per character would dominate a
/// scrape.
fn put_name(out: &mut impl std::fmt::Write, key: &str) -> std::fmt::Result {
    if key.starts_with(|c: char| c.is_ascii_digit()) {
        out.write_char('_')?;
    }
    let mut rest = key;
    while !rest.is_empty() {
        let ok = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        out.write_str(&rest[..ok])?;
        rest = &rest[ok..];
        let Some(c) = rest.chars().next() else { break };
        out.write_char('_')?;
        rest = &rest[c.len_utf8()..];
    }
    Ok(())
}

/// The Prometheus label name of an attribute key (`host.name` → `host_name`).
pub(crate) fn label_name(key: &str) -> String {
    let mut name = String::with_capacity(key.len() + 1);
    // Writing into a String cannot fail.
    let _ = put_name(&mut name, key);
    name
}

/// The name of `m`'s series as Prometheus stores them (counters with `_total`).
pub(crate) fn family_name(m: &Metric) -> String {
    let mut name = String::with_capacity(m.name.len() + 24);
    // Writing into a String cannot fail.
    let _ = put_name(&mut name, m.name);
    if let Some(word) = unit_word(m.unit, m.kind)
        && !name.strip_suffix(word).is_some_and(|h| h.ends_with('_'))
    {
        name.push('_');
        name.push_str(word);
    }
    if m.kind == Kind::Counter && !name.ends_with("_total") {
        name.push_str("_total");
    }
    name
}

/// The OpenMetrics family name: a counter's is its series name without `_total`.
fn descriptor_name(m: &Metric) -> String {
    let mut name = family_name(m);
    if m.kind == Kind::Counter {
        name.truncate(name.len() - "_total".len());
    }
    name
}

/// Writes `s` with `\`, `"` and newlines escaped.
fn put_escaped(out: &mut impl std::fmt::Write, s: &str) -> std::fmt::Result {
    let mut rest = s;
    while let Some(i) = rest.find(['\\', '"', '\n']) {
        out.write_str(&rest[..i])?;
        out.write_str(match rest.as_bytes()[i] {
            b'\\' => "\\\\",
            b'"' => "\\\"",
            _ => "\\n",
        })?;
        rest = &rest[i + 1..];
    }
    out.write_str(rest)
}

/// A data point's attributes as a label set.
struct Labels<'a>(&'a [KeyValue]);

impl EncodeLabelSet for Labels<'_> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> std::fmt::Result {
        for kv in self.0 {
            let mut label = encoder.encode_label();
            let mut key = label.encode_label_key()?;
            put_name(&mut key, kv.key.as_str())?;
            let mut value = key.encode_label_value()?;
            match &kv.value {
                Value::String(s) => put_escaped(&mut value, s.as_str())?,
                Value::I64(v) => write!(value, "{v}")?,
                Value::F64(v) => write!(value, "{v}")?,
                Value::Bool(v) => value.write_str(if *v { "true" } else { "false" })?,
                _ => {}
            }
            value.finish()?;
        }
        Ok(())
    }
}

/// Writes one sample of `kind` into a family encoder.
fn put_sample(
    family: &mut MetricEncoder<'_>,
    kind: Kind,
    attrs: &[KeyValue],
    value: Number,
) -> std::fmt::Result {
    let labels = Labels(attrs);
    if attrs.is_empty() {
        // No `{}` on a sample without labels.
        put_value(family, kind, value)
    } else {
        put_value(&mut family.encode_family(&labels)?, kind, value)
    }
}

fn put_value(sample: &mut MetricEncoder<'_>, kind: Kind, value: Number) -> std::fmt::Result {
    match (kind, value) {
        (Kind::Counter, v) => match counter_value(v) {
            Some(v) => sample.encode_counter::<NoLabelSet, u64, f64>(&v, None),
            // A counter value that cannot be one is left out, not exported as garbage.
            None => Ok(()),
        },
        (Kind::Gauge, Number::U64(v)) => sample.encode_gauge(&v),
        (Kind::Gauge, Number::F64(v)) => sample.encode_gauge(&v),
    }
}

/// Streams the agent's metrics into the `prometheus-client` encoder at each scrape.
#[derive(Debug)]
pub(super) struct Families {
    agent: SharedAgent,
    catalog: Arc<Catalog>,
    export_stats: Option<Arc<ExportStats>>,
    /// Per metric: the OpenMetrics family name.
    names: Vec<String>,
    /// The resource's attributes, sorted by key.
    target_info: Vec<KeyValue>,
}

impl Families {
    pub(super) fn new(
        agent: SharedAgent,
        catalog: Arc<Catalog>,
        export_stats: Option<Arc<ExportStats>>,
        target_info: Vec<KeyValue>,
    ) -> Families {
        let names = catalog.metrics().map(descriptor_name).collect();
        Families {
            agent,
            catalog,
            export_stats,
            names,
            target_info,
        }
    }
}

fn metric_type(kind: Kind) -> MetricType {
    match kind {
        Kind::Counter => MetricType::Counter,
        Kind::Gauge => MetricType::Gauge,
    }
}

impl Collector for Families {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        {
            let guard = self.agent.lock();
            if let Some(agent) = guard.as_ref() {
                for (i, m) in self.catalog.metrics().enumerate() {
                    let name = &self.names[i];
                    // The family's header is written with its first point.
                    let mut slot = Some(&mut encoder);
                    let mut family = None;
                    let mut result = Ok(());
                    self.catalog.visit_capped(
                        i,
                        agent,
                        self.export_stats.as_deref(),
                        &mut |attrs, value| {
                            if result.is_err() {
                                return;
                            }
                            if family.is_none()
                                && let Some(e) = slot.take()
                            {
                                match e.encode_descriptor(
                                    name,
                                    m.description,
                                    None,
                                    metric_type(m.kind),
                                ) {
                                    Ok(f) => family = Some(f),
                                    Err(err) => result = Err(err),
                                }
                            }
                            if let Some(f) = &mut family {
                                result = put_sample(f, m.kind, attrs, value);
                            }
                        },
                    );
                    result?;
                }
            }
        }
        let mut info =
            encoder.encode_descriptor("target", "Target metadata", None, MetricType::Info)?;
        info.encode_info(&Labels(&self.target_info))
    }
}

#[cfg(test)]
mod tests;
