//! OTLP metrics in Protocol Buffers wire format (opentelemetry-proto v1), written straight
//! from the collectors' data points into buffers the exporter reuses.
//!
//! Every message's length is computed before it is written (sizes are exact and cheap to
//! compute from the data), so nothing is encoded twice and nothing is back-patched. The
//! layout, field numbers and wire types are those of `metrics/v1/metrics.proto`,
//! `common/v1/common.proto`, `resource/v1/resource.proto` and
//! `collector/metrics/v1/metrics_service.proto`; a test decodes the output with the
//! reference types of the `opentelemetry-proto` crate.

use opentelemetry::{KeyValue, Value};

use crate::metrics::{Kind, Metric};

const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LEN: u64 = 2;
const FIXED32: u64 = 5;

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push(v as u8 | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn tag_len(field: u32) -> usize {
    varint_len(u64::from(field) << 3)
}

fn put_tag(buf: &mut Vec<u8>, field: u32, wire: u64) {
    put_varint(buf, u64::from(field) << 3 | wire);
}

/// Size of a length-delimited field with `n` bytes of content.
fn len_field(field: u32, n: usize) -> usize {
    tag_len(field) + varint_len(n as u64) + n
}

fn put_len(buf: &mut Vec<u8>, field: u32, n: usize) {
    put_tag(buf, field, LEN);
    put_varint(buf, n as u64);
}

fn put_str(buf: &mut Vec<u8>, field: u32, s: &str) {
    put_len(buf, field, s.len());
    buf.extend_from_slice(s.as_bytes());
}

fn put_fixed64(buf: &mut Vec<u8>, field: u32, v: u64) {
    put_tag(buf, field, FIXED64);
    buf.extend_from_slice(&v.to_le_bytes());
}

/// Size of a non-empty string field (proto3 leaves empty strings out).
fn opt_str_field(field: u32, s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        len_field(field, s.len())
    }
}

fn put_opt_str(buf: &mut Vec<u8>, field: u32, s: &str) {
    if !s.is_empty() {
        put_str(buf, field, s);
    }
}

// ---- common.v1: AnyValue, KeyValue ----

/// Size of an `AnyValue` message. Arrays (no collector emits one) are sent as an empty
/// value rather than formatted, which would allocate.
fn any_value_len(v: &Value) -> usize {
    match v {
        Value::String(s) => len_field(1, s.as_str().len()),
        Value::Bool(_) => 2,
        Value::I64(i) => 1 + varint_len(*i as u64),
        Value::F64(_) => 9,
        _ => 0,
    }
}

fn put_any_value(buf: &mut Vec<u8>, v: &Value) {
    match v {
        Value::String(s) => put_str(buf, 1, s.as_str()),
        Value::Bool(b) => {
            put_tag(buf, 2, VARINT);
            buf.push(u8::from(*b));
        }
        Value::I64(i) => {
            put_tag(buf, 3, VARINT);
            put_varint(buf, *i as u64);
        }
        Value::F64(f) => put_fixed64(buf, 4, f.to_bits()),
        _ => {}
    }
}

fn key_value_len(kv: &KeyValue) -> usize {
    len_field(1, kv.key.as_str().len()) + len_field(2, any_value_len(&kv.value))
}

fn put_key_value(buf: &mut Vec<u8>, field: u32, kv: &KeyValue) {
    put_len(buf, field, key_value_len(kv));
    put_str(buf, 1, kv.key.as_str());
    put_len(buf, 2, any_value_len(&kv.value));
    put_any_value(buf, &kv.value);
}

fn attributes_len(field: u32, attrs: &[KeyValue]) -> usize {
    attrs
        .iter()
        .map(|kv| len_field(field, key_value_len(kv)))
        .sum()
}

fn put_attributes(buf: &mut Vec<u8>, field: u32, attrs: &[KeyValue]) {
    for kv in attrs {
        put_key_value(buf, field, kv);
    }
}

// ---- metrics.v1 ----

/// `AggregationTemporality` of a sum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Temporality {
    Delta = 1,
    Cumulative = 2,
}

/// The value of a `NumberDataPoint`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PointValue {
    Int(i64),
    Double(f64),
}

/// Appends one `NumberDataPoint` as field 1 (`data_points`) of a `Gauge` or `Sum`.
pub fn put_data_point(
    buf: &mut Vec<u8>,
    attrs: &[KeyValue],
    start_unix_nanos: u64,
    unix_nanos: u64,
    value: PointValue,
) {
    // start_time_unix_nano (2, left out when 0 as proto3 does), time_unix_nano (3),
    // as_double (4) or as_int (6): one-byte tags and eight-byte fixed values each.
    let fixed = if start_unix_nanos == 0 { 2 } else { 3 };
    let len = attributes_len(7, attrs) + fixed * 9;
    put_len(buf, 1, len);
    if start_unix_nanos != 0 {
        put_fixed64(buf, 2, start_unix_nanos);
    }
    put_fixed64(buf, 3, unix_nanos);
    match value {
        PointValue::Double(f) => put_fixed64(buf, 4, f.to_bits()),
        PointValue::Int(i) => put_fixed64(buf, 6, i as u64),
    }
    put_attributes(buf, 7, attrs);
}

/// One metric of a request: its identity and its encoded data points (what
/// [`put_data_point`] appended).
pub struct MetricPoints<'a> {
    pub metric: &'a Metric,
    pub temporality: Temporality,
    pub points: &'a [u8],
}

impl MetricPoints<'_> {
    /// Size of the `Gauge` or `Sum` message.
    fn data_len(&self) -> usize {
        match self.metric.kind {
            Kind::Gauge => self.points.len(),
            // aggregation_temporality (2) and is_monotonic (3): two bytes each.
            Kind::Counter => self.points.len() + 4,
        }
    }

    /// Size of the `Metric` message.
    fn len(&self) -> usize {
        let m = self.metric;
        let data_field = match m.kind {
            Kind::Gauge => 5,
            Kind::Counter => 7,
        };
        opt_str_field(1, m.name)
            + opt_str_field(2, m.description)
            + opt_str_field(3, m.unit)
            + len_field(data_field, self.data_len())
    }

    fn put(&self, buf: &mut Vec<u8>) {
        let m = self.metric;
        put_len(buf, 2, self.len());
        put_opt_str(buf, 1, m.name);
        put_opt_str(buf, 2, m.description);
        put_opt_str(buf, 3, m.unit);
        match m.kind {
            Kind::Gauge => {
                put_len(buf, 5, self.data_len());
                buf.extend_from_slice(self.points);
            }
            Kind::Counter => {
                put_len(buf, 7, self.data_len());
                buf.extend_from_slice(self.points);
                put_tag(buf, 2, VARINT);
                put_varint(buf, self.temporality as u64);
                put_tag(buf, 3, VARINT);
                buf.push(1);
            }
        }
    }
}

/// The instrumentation scope every metric is reported under.
pub struct Scope<'a> {
    pub name: &'a str,
    pub version: &'a str,
}

/// Writes an `ExportMetricsServiceRequest` with one `ResourceMetrics` and one
/// `ScopeMetrics` holding `metrics` into `out` (cleared first). `metrics` is iterated
/// twice (sizes, then bytes), so it must yield the same items both times.
pub fn put_request<'a, I>(out: &mut Vec<u8>, resource: &[KeyValue], scope: &Scope<'_>, metrics: I)
where
    I: Iterator<Item = MetricPoints<'a>> + Clone,
{
    out.clear();
    let metrics_len: usize = metrics.clone().map(|m| len_field(2, m.len())).sum();
    let scope_len = opt_str_field(1, scope.name) + opt_str_field(2, scope.version);
    let scope_metrics_len = len_field(1, scope_len) + metrics_len;
    let resource_len = attributes_len(1, resource);
    let resource_metrics_len = len_field(1, resource_len) + len_field(2, scope_metrics_len);
    out.reserve(len_field(1, resource_metrics_len));

    put_len(out, 1, resource_metrics_len);
    put_len(out, 1, resource_len);
    put_attributes(out, 1, resource);
    put_len(out, 2, scope_metrics_len);
    put_len(out, 1, scope_len);
    put_opt_str(out, 1, scope.name);
    put_opt_str(out, 2, scope.version);
    for m in metrics {
        m.put(out);
    }
}

/// What an `ExportMetricsServiceResponse` said about rejected points.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PartialSuccess {
    pub rejected_data_points: i64,
    pub error_message: String,
}

/// A malformed response (the collector's answer is data from the network: never trusted).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed ExportMetricsServiceResponse at byte {at}")]
pub struct DecodeError {
    at: usize,
}

/// One decoded field: number, wire type, content (length-delimited fields) and value
/// (varints).
struct Field<'a> {
    number: u64,
    wire: u64,
    content: &'a [u8],
    value: u64,
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn err(&self) -> DecodeError {
        DecodeError { at: self.pos }
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for shift in (0..70).step_by(7) {
            let b = *self.data.get(self.pos).ok_or_else(|| self.err())?;
            self.pos += 1;
            if shift == 63 && b > 1 {
                return Err(self.err());
            }
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(self.err())
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or_else(|| self.err())?;
        let s = self.data.get(self.pos..end).ok_or_else(|| self.err())?;
        self.pos = end;
        Ok(s)
    }

    /// The next field; `None` at the end.
    fn field(&mut self) -> Result<Option<Field<'a>>, DecodeError> {
        if self.pos == self.data.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let mut f = Field {
            number: key >> 3,
            wire: key & 7,
            content: &[],
            value: 0,
        };
        match f.wire {
            VARINT => f.value = self.varint()?,
            FIXED64 => _ = self.bytes(8)?,
            FIXED32 => _ = self.bytes(4)?,
            LEN => {
                let n = usize::try_from(self.varint()?).map_err(|_| self.err())?;
                f.content = self.bytes(n)?;
            }
            _ => return Err(self.err()),
        }
        Ok(Some(f))
    }
}

/// Decodes the `partial_success` of an `ExportMetricsServiceResponse`; `None` when the
/// collector accepted everything.
pub fn decode_response(data: &[u8]) -> Result<Option<PartialSuccess>, DecodeError> {
    let mut r = Reader { data, pos: 0 };
    let mut out = None;
    while let Some(field) = r.field()? {
        if field.number != 1 || field.wire != LEN {
            continue;
        }
        let mut p = PartialSuccess::default();
        let mut inner = Reader {
            data: field.content,
            pos: 0,
        };
        while let Some(f) = inner.field()? {
            match (f.number, f.wire) {
                (1, VARINT) => p.rejected_data_points = f.value as i64,
                (2, LEN) => p.error_message = String::from_utf8_lossy(f.content).into_owned(),
                _ => {}
            }
        }
        out = Some(p);
    }
    Ok(out.filter(|p| p.rejected_data_points != 0 || !p.error_message.is_empty()))
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::{
        collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse},
        common::v1::any_value,
        metrics::v1::{metric::Data, number_data_point},
    };
    use prost::Message;

    use super::*;

    static DROPS: Metric = Metric {
        name: "retina.drop.count",
        unit: "{packet}",
        description: "Packets the kernel dropped",
        kind: Kind::Counter,
    };
    static SPEED: Metric = Metric {
        name: "retina.nic.link.speed",
        unit: "bit/s",
        description: "",
        kind: Kind::Gauge,
    };

    #[test]
    fn varint_lengths() {
        for v in [0u64, 1, 127, 128, 16383, 16384, u32::MAX as u64, u64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v), "{v}");
            let mut r = Reader { data: &b, pos: 0 };
            assert_eq!(r.varint(), Ok(v));
        }
    }

    #[test]
    fn request_decodes_with_the_reference_types() {
        let long = "x".repeat(300);
        let attrs_a = [
            KeyValue::new("drop.reason", "NO_SOCKET"),
            KeyValue::new("network.namespace.inode", 4026531840i64),
            KeyValue::new("flag", true),
            KeyValue::new("ratio", 0.5),
        ];
        let attrs_b = [KeyValue::new("network.interface.name", long.clone())];
        let mut drops = Vec::new();
        put_data_point(&mut drops, &attrs_a, 5, 10, PointValue::Int(1000));
        put_data_point(&mut drops, &[], 5, 10, PointValue::Int(-1));
        let mut speed = Vec::new();
        put_data_point(&mut speed, &attrs_b, 0, 10, PointValue::Double(1e10));
        let metrics = [
            MetricPoints {
                metric: &DROPS,
                temporality: Temporality::Delta,
                points: &drops,
            },
            MetricPoints {
                metric: &SPEED,
                temporality: Temporality::Cumulative,
                points: &speed,
            },
        ];
        let resource = [KeyValue::new("service.name", "retina-agent")];
        let mut out = vec![1, 2, 3];
        put_request(
            &mut out,
            &resource,
            &Scope {
                name: "retina-agent",
                version: "0.1.0",
            },
            metrics.iter().map(|m| MetricPoints { ..*m }),
        );
        let req = ExportMetricsServiceRequest::decode(&out[..]).unwrap();
        // Byte for byte what the reference encoder writes.
        assert_eq!(req.encode_to_vec(), out);
        let rm = &req.resource_metrics[0];
        let res = rm.resource.as_ref().unwrap();
        assert_eq!(res.attributes[0].key, "service.name");
        let sm = &rm.scope_metrics[0];
        let scope = sm.scope.as_ref().unwrap();
        assert_eq!(
            (scope.name.as_str(), scope.version.as_str()),
            ("retina-agent", "0.1.0")
        );
        assert_eq!(sm.metrics.len(), 2);
        let m = &sm.metrics[0];
        assert_eq!(m.name, "retina.drop.count");
        assert_eq!(m.unit, "{packet}");
        assert_eq!(m.description, "Packets the kernel dropped");
        let Some(Data::Sum(sum)) = &m.data else {
            panic!("not a sum: {m:?}")
        };
        assert!(sum.is_monotonic);
        assert_eq!(sum.aggregation_temporality, 1);
        assert_eq!(sum.data_points.len(), 2);
        let p = &sum.data_points[0];
        assert_eq!((p.start_time_unix_nano, p.time_unix_nano), (5, 10));
        assert_eq!(p.value, Some(number_data_point::Value::AsInt(1000)));
        let values: Vec<_> = p
            .attributes
            .iter()
            .map(|kv| (kv.key.as_str(), kv.value.clone().unwrap().value.unwrap()))
            .collect();
        assert_eq!(
            values,
            [
                (
                    "drop.reason",
                    any_value::Value::StringValue("NO_SOCKET".into())
                ),
                (
                    "network.namespace.inode",
                    any_value::Value::IntValue(4026531840)
                ),
                ("flag", any_value::Value::BoolValue(true)),
                ("ratio", any_value::Value::DoubleValue(0.5)),
            ]
        );
        assert_eq!(
            sum.data_points[1].value,
            Some(number_data_point::Value::AsInt(-1))
        );
        let m = &sm.metrics[1];
        assert_eq!(m.description, "");
        let Some(Data::Gauge(g)) = &m.data else {
            panic!("not a gauge: {m:?}")
        };
        assert_eq!(
            g.data_points[0].value,
            Some(number_data_point::Value::AsDouble(1e10))
        );
        assert_eq!(g.data_points[0].attributes[0].key, "network.interface.name");
    }

    #[test]
    fn empty_request_is_valid() {
        let mut out = Vec::new();
        put_request(
            &mut out,
            &[],
            &Scope {
                name: "s",
                version: "",
            },
            std::iter::empty(),
        );
        let req = ExportMetricsServiceRequest::decode(&out[..]).unwrap();
        assert!(req.resource_metrics[0].scope_metrics[0].metrics.is_empty());
    }

    #[test]
    fn response_partial_success() {
        let encode = |rejected: i64, msg: &str| {
            ExportMetricsServiceResponse {
                partial_success: Some(
                    opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsPartialSuccess {
                        rejected_data_points: rejected,
                        error_message: msg.into(),
                    },
                ),
            }
            .encode_to_vec()
        };
        assert_eq!(decode_response(&[]), Ok(None));
        assert_eq!(decode_response(&encode(0, "")), Ok(None));
        assert_eq!(
            decode_response(&encode(3, "too old")),
            Ok(Some(PartialSuccess {
                rejected_data_points: 3,
                error_message: "too old".into()
            }))
        );
        // Unknown fields of every wire type are skipped.
        let mut extra = vec![0x10, 0x05, 0x19, 1, 2, 3, 4, 5, 6, 7, 8, 0x25, 1, 2, 3, 4];
        extra.extend(encode(1, ""));
        assert_eq!(
            decode_response(&extra)
                .unwrap()
                .unwrap()
                .rejected_data_points,
            1
        );
        // Truncated or garbage input is an error, never a panic.
        let good = encode(3, "too old");
        for cut in 1..good.len() {
            assert!(decode_response(&good[..cut]).is_err(), "cut at {cut}");
        }
        assert!(decode_response(&[0xff; 12]).is_err());
        assert!(decode_response(&[0x0f]).is_err());
    }
}
