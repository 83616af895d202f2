//! Polling instead of fixed sleeps before exact-count assertions: the kernel counts a drop
//! when it processes the packet, which can be after the sender has returned (the receive
//! side runs from the softirq backlog), and an exporter sends when its interval comes. A
//! test polls until the count it asserts on has settled, with a generous deadline, then
//! asserts on the value: the deadline only ends the waiting, it is never what fails.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// How long [`settle`] polls at most; far beyond what a loaded machine needs.
pub const DEADLINE: Duration = Duration::from_secs(30);
/// Between two reads.
const STEP: Duration = Duration::from_millis(20);

/// Reads `read` until `done` holds for its value and the next read, a moment later,
/// returns the same value (settled), or until [`DEADLINE`]; returns the last value read.
pub fn settle<T: PartialEq>(
    mut read: impl FnMut() -> Result<T>,
    done: impl Fn(&T) -> bool,
) -> Result<T> {
    let start = Instant::now();
    let mut last = read()?;
    loop {
        std::thread::sleep(STEP);
        let next = read()?;
        if (done(&next) && next == last) || start.elapsed() > DEADLINE {
            return Ok(next);
        }
        last = next;
    }
}

/// Polls `f` until it returns `Some`, or until [`DEADLINE`]: then `None`.
pub fn until<T>(mut f: impl FnMut() -> Result<Option<T>>) -> Result<Option<T>> {
    let start = Instant::now();
    loop {
        if let Some(v) = f()? {
            return Ok(Some(v));
        }
        if start.elapsed() > DEADLINE {
            return Ok(None);
        }
        std::thread::sleep(STEP);
    }
}

/// `Udp: NoPorts` of `ns` (`/proc/net/snmp` read inside it): datagrams to a closed port the
/// kernel has processed there, each a NO_SOCKET drop right after it counts it.
pub fn udp_no_ports(ns: &crate::NetNs) -> Result<u64> {
    let out = ns.exec("cat", &["/proc/net/snmp"])?;
    let text = String::from_utf8(out.stdout)?;
    let mut udp = text.lines().filter(|l| l.starts_with("Udp: "));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        anyhow::bail!("no Udp lines in /proc/net/snmp of {}", ns.name);
    };
    let value = names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "NoPorts")
        .map(|(_, v)| v.parse::<u64>())
        .transpose()?;
    value.with_context(|| format!("no Udp NoPorts in /proc/net/snmp of {}", ns.name))
}

/// Waits until `ns` has processed at least `n` datagrams to closed ports
/// ([`udp_no_ports`]), or until [`DEADLINE`]; returns the last count (the caller's
/// assertion on what the agent counted says what was missing).
pub fn udp_no_ports_reach(ns: &crate::NetNs, n: u64) -> Result<u64> {
    settle(|| udp_no_ports(ns), |&seen| seen >= n)
}
