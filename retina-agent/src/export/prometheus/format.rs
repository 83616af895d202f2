//! The exposition format of a scrape, negotiated by its `Accept` header.
//!
//! `prometheus-client` encodes OpenMetrics 1.0 only. Prometheus asks for it first, but
//! other readers (`curl`, `promtool check metrics`, older scrapers, anything sending
//! `Accept: text/plain` or `*/*`) expect the classic text format 0.0.4, whose parser
//! refuses an `info` type and reads a counter family `x` with samples `x_total` as two
//! families. So OpenMetrics is served only to a client that asks for it (with a `q`
//! at least that of `text/plain`), and everyone else gets the same samples in the 0.0.4
//! text format ([`to_text`]): a counter's family is named after its samples (`x_total`),
//! `info` becomes a `gauge` family `x_info`, and `# UNIT` and `# EOF` are left out. The
//! sample lines are the same in both formats.

use std::fmt::Write as _;

use http::HeaderValue;

pub(super) const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub(super) const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The exposition format of one scrape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Format {
    OpenMetrics,
    /// The Prometheus text format 0.0.4.
    Text,
}

impl Format {
    pub(super) fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => OPENMETRICS,
            Format::Text => TEXT,
        }
    }
}

/// The `q` of one media range (`1` when absent or unreadable).
fn quality(params: &str) -> f32 {
    params
        .split(';')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
        .and_then(|(_, v)| v.trim().parse::<f32>().ok())
        .map_or(1.0, |q| q.clamp(0.0, 1.0))
}

/// OpenMetrics when `accept` asks for `application/openmetrics-text` at least as much as
/// for the text format (`text/plain`, `text/*`, `*/*`); else the text format.
pub(super) fn negotiate(accept: Option<&HeaderValue>) -> Format {
    let Some(accept) = accept.and_then(|a| a.to_str().ok()) else {
        return Format::Text;
    };
    let (mut openmetrics, mut text) = (0.0f32, 0.0f32);
    for range in accept.split(',') {
        let (media, params) = range.split_once(';').unwrap_or((range, ""));
        let media = media.trim();
        let q = quality(params);
        if media.eq_ignore_ascii_case("application/openmetrics-text") {
            openmetrics = openmetrics.max(q);
        } else if ["text/plain", "text/*", "*/*"]
            .iter()
            .any(|m| media.eq_ignore_ascii_case(m))
        {
            text = text.max(q);
        }
    }
    if openmetrics > 0.0 && openmetrics >= text {
        Format::OpenMetrics
    } else {
        Format::Text
    }
}

/// Rewrites the OpenMetrics exposition `om` (as `prometheus-client` writes it) into the
/// text format 0.0.4, into `out` (cleared first).
pub(super) fn to_text(om: &str, out: &mut String) -> std::fmt::Result {
    out.clear();
    // The `# HELP` line waits for its `# TYPE` line, which decides the family's name.
    let mut help: Option<(&str, &str)> = None;
    for line in om.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            help = Some((name, text));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (suffix, kind) = match kind {
                "counter" => ("_total", "counter"),
                "info" => ("_info", "gauge"),
                "gauge" => ("", "gauge"),
                "histogram" => ("", "histogram"),
                "summary" => ("", "summary"),
                _ => ("", "untyped"),
            };
            if let Some((h, text)) = help.take()
                && h == name
            {
                writeln!(out, "# HELP {name}{suffix} {text}")?;
            }
            writeln!(out, "# TYPE {name}{suffix} {kind}")?;
        } else if line.starts_with("# UNIT ") || line == "# EOF" {
            // Not part of the 0.0.4 format.
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
