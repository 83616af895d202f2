//! Informational mounts and the exporters' endpoints: is the OTLP collector reachable, can
//! the Prometheus address be bound?

use std::{
    net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs},
    time::Duration,
};

use super::Check;
#[cfg(test)]
use super::Status;
use crate::config;

/// How long the collector reachability check waits for a TCP connection.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The informational mount checks: bpffs and tracefs.
pub(super) fn mounts() -> [Check; 2] {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    [
        mount(
            &mounts,
            "bpffs",
            "bpf",
            "mount -t bpf bpf /sys/fs/bpf (only to inspect programs with bpftool; the agent pins nothing)",
        ),
        mount(
            &mounts,
            "tracefs",
            "tracefs",
            "mount -t tracefs tracefs /sys/kernel/tracing (only for tracing tools; the agent attaches raw tracepoints by name)",
        ),
    ]
}

/// Mount points of file systems of type `fstype` in `/proc/self/mounts` text.
pub(crate) fn mount_points<'a>(mounts: &'a str, fstype: &str) -> Vec<&'a str> {
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_dev, point, ty) = (f.next()?, f.next()?, f.next()?);
            (ty == fstype).then_some(point)
        })
        .collect()
}

fn mount(mounts: &str, name: &'static str, fstype: &str, hint: &str) -> Check {
    let points = mount_points(mounts, fstype);
    if points.is_empty() {
        Check::warn(
            name,
            "not mounted (informational: the agent does not need it)",
            hint,
        )
    } else {
        Check::pass(name, format!("mounted at {}", points.join(", ")))
    }
}

/// Whether the OTLP collector accepts TCP connections. The agent retries an unreachable
/// collector, so this only warns.
pub(crate) fn otlp(endpoint: &str, timeout: Duration) -> Check {
    const NAME: &str = "otlp";
    let Some((host, port)) = config::endpoint_host_port(endpoint) else {
        return Check::fail(
            NAME,
            format!("cannot parse endpoint {endpoint:?}"),
            "write it as http://HOST:PORT",
        );
    };
    let hint = "start the collector or fix export.endpoint / --otlp-endpoint; the agent keeps collecting and retries";
    let addrs: Vec<SocketAddr> = match (host.as_str(), port).to_socket_addrs() {
        Ok(a) => a.collect(),
        Err(e) => {
            return Check::warn(
                NAME,
                format!("{endpoint}: cannot resolve {host}: {e}"),
                hint,
            );
        }
    };
    let mut last = None;
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, timeout) {
            Ok(_) => {
                return Check::pass(NAME, format!("{endpoint}: {addr} accepts connections"));
            }
            Err(e) => last = Some(format!("{addr}: {e}")),
        }
    }
    Check::warn(
        NAME,
        format!(
            "{endpoint}: not reachable ({})",
            last.unwrap_or_else(|| format!("{host} has no address"))
        ),
        hint,
    )
}

/// Whether the Prometheus endpoint's address can be bound (the listener is closed again).
pub(crate) fn prometheus(listen: SocketAddr) -> Check {
    const NAME: &str = "prometheus";
    match TcpListener::bind(listen) {
        Ok(_) => Check::pass(NAME, format!("{listen} can be bound")),
        Err(e) => {
            let hint = match e.kind() {
                std::io::ErrorKind::AddrInUse => format!(
                    "another process listens on it (`ss -ltnp 'sport = :{}'`; is retina-agent already running?); choose another with prometheus.listen or --prometheus-listen",
                    listen.port()
                ),
                std::io::ErrorKind::PermissionDenied => {
                    "ports below 1024 need CAP_NET_BIND_SERVICE; use a higher port".to_string()
                }
                std::io::ErrorKind::AddrNotAvailable => {
                    "no interface of this machine has that address; use 0.0.0.0 or a local address"
                        .to_string()
                }
                _ => "fix prometheus.listen or --prometheus-listen".to_string(),
            };
            Check::fail(NAME, format!("cannot bind {listen}: {e}"), hint)
        }
    }
}

#[cfg(test)]
mod tests;
