//! Durations as the configuration and the command line spell them: a `humantime` string
//! (`10s`, `500ms`, `1m 30s`) or, in the file, a whole number of seconds; never zero.
//!
//! The one duration parser of the agent: the flags ([`parse`]) and every duration key of
//! the file ([`deserialize`]: `interval`, `export.timeout`, `ethtool.link_state_interval`)
//! use it, so the same mistake gets the same words wherever it is made. Ranges are checked
//! apart, with the key (`config::limits`).

use std::{fmt, time::Duration};

use serde::Deserializer;

/// A humantime duration string greater than zero (`10s`, `500ms`, `1m`).
pub fn parse(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|_| format!("invalid duration {s:?} (examples: 10s, 500ms, 1m)"))?;
    if d.is_zero() {
        return Err(format!("invalid duration {s:?}: must be greater than zero"));
    }
    Ok(d)
}

/// A file key's duration (`#[serde(deserialize_with = "crate::duration::deserialize")]`):
/// a string for [`parse`], or a whole number of seconds greater than zero.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = Duration;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration such as \"10s\", \"500ms\", \"1m\" or whole seconds")
        }
        fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Duration, E> {
            match u64::try_from(n) {
                Ok(s) => self.visit_u64(s),
                Err(_) => Err(E::custom(format!(
                    "invalid duration {n}: must be greater than zero"
                ))),
            }
        }
        fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Duration, E> {
            if n == 0 {
                return Err(E::custom("invalid duration 0: must be greater than zero"));
            }
            Ok(Duration::from_secs(n))
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Duration, E> {
            parse(s).map_err(E::custom)
        }
    }
    d.deserialize_any(V)
}

#[cfg(test)]
mod tests;
