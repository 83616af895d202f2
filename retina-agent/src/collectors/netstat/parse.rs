//! The two file layouts of the netstat collector, parsed in place: validation and value
//! extraction every cycle ([`scan_pairs`], [`scan_lines`]), and table building when the
//! layout changes ([`build_pairs`], [`build_lines`]).

use std::{collections::HashSet, sync::Arc};

use opentelemetry::KeyValue;

use super::{ATTR_FIELD, ATTR_GROUP, GAUGES, Problem, Raw, Slot};
use crate::{
    filter::NameFilter,
    model::{Kind, Number, in_key_order},
};

/// Non-empty lines with their 1-based numbers.
pub(super) fn lines(buf: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    buf.split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace))
}

pub(super) fn tokens(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(u8::is_ascii_whitespace)
        .filter(|t| !t.is_empty())
}

/// `Group: rest` -> (`Group`, `rest`).
pub(super) fn split_prefix(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = line.iter().position(|&b| b == b':')?;
    let prefix = &line[..colon];
    (!prefix.is_empty() && !prefix.iter().any(u8::is_ascii_whitespace))
        .then(|| (prefix, &line[colon + 1..]))
}

pub(super) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A decimal number, optionally negative, within `i64::MIN..=u64::MAX`.
pub(super) fn parse_num(t: &[u8]) -> Option<i128> {
    let (neg, digits) = match t {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, t),
    };
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    let mut v: i128 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v * 10 + i128::from(d - b'0');
    }
    let v = if neg { -v } else { v };
    (i128::from(i64::MIN)..=i128::from(u64::MAX))
        .contains(&v)
        .then_some(v)
}

/// Validates a `Pairs` file and collects its values into `scratch`. Returns whether its
/// header lines are exactly `layout`. Allocates nothing unless it fails.
pub(super) fn scan_pairs(
    buf: &[u8],
    layout: &[u8],
    scratch: &mut Vec<Raw>,
) -> Result<bool, (usize, Problem)> {
    scratch.clear();
    let mut lines = lines(buf);
    let mut cursor = 0;
    let mut same = true;
    let mut any = false;
    while let Some((hline, header)) = lines.next() {
        any = true;
        let (hprefix, names) = split_prefix(header).ok_or((hline, Problem::NoPrefix))?;
        let Some((vline, values)) = lines.next() else {
            return Err((
                hline,
                Problem::MissingValueLine {
                    group: text(hprefix),
                },
            ));
        };
        let (vprefix, values) = split_prefix(values).ok_or((vline, Problem::NoPrefix))?;
        if hprefix != vprefix {
            return Err((
                vline,
                Problem::PrefixMismatch {
                    header: text(hprefix),
                    values: text(vprefix),
                },
            ));
        }
        let (mut n, mut v) = (tokens(names), tokens(values));
        let mut count = 0;
        loop {
            match (n.next(), v.next()) {
                (Some(name), Some(value)) => {
                    let value = parse_num(value).ok_or_else(|| {
                        (
                            vline,
                            Problem::NotANumber {
                                field: format!("{}:{}", text(hprefix), text(name)),
                                text: text(value),
                            },
                        )
                    })?;
                    scratch.push(Raw { value, line: vline });
                    count += 1;
                }
                (None, None) => break,
                (name, value) => {
                    let names = count + usize::from(name.is_some()) + n.count();
                    let values = count + usize::from(value.is_some()) + v.count();
                    return Err((
                        vline,
                        Problem::CountMismatch {
                            group: text(hprefix),
                            names,
                            values,
                        },
                    ));
                }
            }
        }
        if same {
            let end = cursor + header.len();
            if layout.get(cursor..end) == Some(header) && layout.get(end) == Some(&b'\n') {
                cursor = end + 1;
            } else {
                same = false;
            }
        }
    }
    if !any {
        return Err((1, Problem::Empty));
    }
    Ok(same && cursor == layout.len())
}

/// Validates a `Lines` (`snmp6`) file and collects its values into `scratch`. Returns
/// whether its names are exactly `layout`. Allocates nothing unless it fails.
pub(super) fn scan_lines(
    buf: &[u8],
    layout: &[u8],
    scratch: &mut Vec<Raw>,
) -> Result<bool, (usize, Problem)> {
    scratch.clear();
    let mut cursor = 0;
    let mut same = true;
    for (line, l) in lines(buf) {
        let mut t = tokens(l);
        let (Some(name), Some(value), None) = (t.next(), t.next(), t.next()) else {
            return Err((
                line,
                Problem::Snmp6Fields {
                    tokens: tokens(l).count(),
                },
            ));
        };
        let value = parse_num(value).ok_or_else(|| {
            (
                line,
                Problem::NotANumber {
                    field: text(name),
                    text: text(value),
                },
            )
        })?;
        scratch.push(Raw { value, line });
        if same {
            let end = cursor + name.len();
            if layout.get(cursor..end) == Some(name) && layout.get(end) == Some(&b'\n') {
                cursor = end + 1;
            } else {
                same = false;
            }
        }
    }
    if scratch.is_empty() {
        return Err((1, Problem::Empty));
    }
    Ok(same && cursor == layout.len())
}

/// Builds the slots of a validated `Pairs` file.
pub(super) fn build_pairs(
    buf: &[u8],
    filter: &NameFilter,
) -> Result<(Vec<u8>, Vec<Slot>), (usize, Problem)> {
    let mut b = Builder::new(filter);
    let mut lines = lines(buf);
    while let (Some((hline, header)), Some(_)) = (lines.next(), lines.next()) {
        let (group, names) = split_prefix(header).ok_or((hline, Problem::NoPrefix))?;
        b.layout.extend_from_slice(header);
        b.layout.push(b'\n');
        let group = b.group(group, hline)?;
        for name in tokens(names) {
            b.field(&group, name, hline)?;
        }
    }
    Ok((b.layout, b.slots))
}

/// Builds the slots of a validated `Lines` (`snmp6`) file.
pub(super) fn build_lines(
    buf: &[u8],
    filter: &NameFilter,
) -> Result<(Vec<u8>, Vec<Slot>), (usize, Problem)> {
    let mut b = Builder::new(filter);
    for (line, l) in lines(buf) {
        let Some(name) = tokens(l).next() else {
            continue;
        };
        b.layout.extend_from_slice(name);
        b.layout.push(b'\n');
        let (group, field) = split_snmp6(name);
        let group = b.group(group, line)?;
        b.field(&group, field, line)?;
    }
    Ok((b.layout, b.slots))
}

/// `Ip6InReceives` -> (`Ip6`, `InReceives`): the group runs up to the first `6`. A name
/// without a `6` inside it goes to group `snmp6`, whole.
pub(super) fn split_snmp6(name: &[u8]) -> (&[u8], &[u8]) {
    match name.iter().position(|&b| b == b'6') {
        Some(i) if i > 0 && i + 1 < name.len() => (&name[..=i], &name[i + 1..]),
        _ => (b"snmp6", name),
    }
}

/// Accumulates a new table (allocation is expected here).
struct Builder<'f> {
    filter: &'f NameFilter,
    layout: Vec<u8>,
    slots: Vec<Slot>,
    seen: HashSet<(Arc<str>, Arc<str>)>,
    last_group: Option<Arc<str>>,
}

impl<'f> Builder<'f> {
    fn new(filter: &'f NameFilter) -> Self {
        Builder {
            filter,
            layout: Vec::new(),
            slots: Vec::new(),
            seen: HashSet::new(),
            last_group: None,
        }
    }

    /// The group name as a shared string (consecutive fields share one allocation).
    fn group(&mut self, raw: &[u8], line: usize) -> Result<Arc<str>, (usize, Problem)> {
        if let Some(g) = &self.last_group
            && g.as_bytes() == raw
        {
            return Ok(g.clone());
        }
        let g: Arc<str> = std::str::from_utf8(raw)
            .map_err(|_| (line, Problem::NotUtf8(text(raw))))?
            .into();
        self.last_group = Some(g.clone());
        Ok(g)
    }

    fn field(&mut self, group: &Arc<str>, raw: &[u8], line: usize) -> Result<(), (usize, Problem)> {
        let field: Arc<str> = std::str::from_utf8(raw)
            .map_err(|_| (line, Problem::NotUtf8(text(raw))))?
            .into();
        if !self.seen.insert((group.clone(), field.clone())) {
            return Err((
                line,
                Problem::Duplicate {
                    group: group.to_string(),
                    field: field.to_string(),
                },
            ));
        }
        let kind = if GAUGES.contains(&(&**group, &*field)) {
            Kind::Gauge
        } else {
            Kind::Counter
        };
        let name: Box<str> = format!("{group}:{field}").into();
        let selected = self.filter.matches(&name);
        self.slots.push(Slot {
            name,
            attrs: selected.then(|| {
                in_key_order([
                    KeyValue::new(ATTR_GROUP, group.clone()),
                    KeyValue::new(ATTR_FIELD, field),
                ])
            }),
            kind,
            value: Number::U64(0),
        });
        Ok(())
    }
}

/// Fails if a counter is negative (gauges may be: `Tcp: MaxConn` is -1).
pub(super) fn check_values(slots: &[Slot], values: &[Raw]) -> Result<(), (usize, Problem)> {
    for (slot, raw) in slots.iter().zip(values) {
        if slot.kind == Kind::Counter && raw.value < 0 {
            let field = slot.name.to_string();
            return Err((
                raw.line,
                Problem::NegativeCounter {
                    field,
                    // In range: parse_num bounds negatives by i64::MIN.
                    value: i64::try_from(raw.value).unwrap_or(i64::MIN),
                },
            ));
        }
    }
    Ok(())
}

/// Counters are exact `u64`s (checked non-negative); gauges are `f64`.
pub(super) fn to_number(kind: Kind, v: i128) -> Number {
    match kind {
        Kind::Counter => Number::U64(u64::try_from(v).unwrap_or(0)),
        Kind::Gauge => Number::F64(v as f64),
    }
}
