//! TCP connects made from inside a named network namespace by a thread of the test
//! process (`setns` on that thread only), and a namespace's own protocol counters as
//! `ip netns exec … cat /proc/net/{snmp,netstat}` prints them: the references the
//! per-workload counters (`retina.workload.netstat.stat`) are compared with.

use std::{
    net::{SocketAddr, TcpStream},
    os::fd::AsRawFd as _,
    time::Duration,
};

use anyhow::{Context, Result, bail};

use crate::NetNs;

/// How `count` connects ended.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcomes {
    pub refused: u64,
    pub timed_out: u64,
    pub connected: u64,
    pub other: u64,
}

/// `count` connects to `addr` from inside `ns`, all at once (one thread each, each in the
/// namespace), each given up after `timeout`.
pub fn connect_from(
    ns: &NetNs,
    addr: SocketAddr,
    count: u64,
    timeout: Duration,
) -> Result<Outcomes> {
    let path = format!("/run/netns/{}", ns.name);
    let threads: Vec<_> = (0..count)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || -> Result<std::io::Result<TcpStream>> {
                let f = std::fs::File::open(&path).with_context(|| format!("open {path}"))?;
                // SAFETY: setns on a namespace file descriptor we hold, for this thread.
                if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    bail!("setns {path}: {}", std::io::Error::last_os_error());
                }
                Ok(TcpStream::connect_timeout(&addr, timeout))
            })
        })
        .collect();
    let mut out = Outcomes::default();
    for t in threads {
        let r = t
            .join()
            .map_err(|_| anyhow::anyhow!("connect thread panicked"))??;
        match r {
            Ok(_) => out.connected += 1,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => out.refused += 1,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => out.timed_out += 1,
            Err(_) => out.other += 1,
        }
    }
    Ok(out)
}

/// `GROUP:FIELD` of `/proc/net/snmp` or `/proc/net/netstat` (whichever has the group) as
/// `ip netns exec NS cat` prints it; `ns = None`: the test's own (the host's) namespace.
pub fn counter(ns: Option<&NetNs>, group: &str, field: &str) -> Result<u64> {
    let file = if group.ends_with("Ext") {
        "/proc/net/netstat"
    } else {
        "/proc/net/snmp"
    };
    let text = match ns {
        Some(ns) => String::from_utf8(ns.exec("cat", &[file])?.stdout)?,
        None => std::fs::read_to_string(file)?,
    };
    let prefix = format!("{group}:");
    let mut lines = text.lines().filter(|l| l.starts_with(&prefix));
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        if let Some(i) = names.split_whitespace().position(|n| n == field) {
            return values
                .split_whitespace()
                .nth(i)
                .context("short value line")?
                .parse()
                .context("not a number");
        }
    }
    bail!("{group}:{field} not in {file}")
}
