//! `run` with `drops.flows`: drains the kernel's sampled drop events and, with OTLP, sends
//! each as a `retina.drop` log record; once per interval reads the flow counters for the
//! `drop_flows` collector.
//!
//! Events are rate-limited in the kernel (`drops.flow_events_per_second`), so naming one
//! (reason, interface, workload) and building its record may allocate. At most
//! [`MAX_PER_WAKE`] events are handled per wake-up; the rest wait in the ring buffer (and
//! the kernel counts what does not fit as suppressed).

use std::{sync::Arc, time::Duration};

use aya::maps::{MapData, RingBuf};
use opentelemetry::{
    Value,
    logs::{AnyValue, LogRecord as _, Severity},
};
use retina_ebpf_common::flows::{FAMILY_IPV4, FlowEvent};
use tokio::{
    io::{Interest, unix::AsyncFd},
    sync::watch,
    task::JoinHandle,
};

use crate::{
    collectors::drops::{
        flow_metrics::FlowCounters,
        flows::{FlowSource, address, describe, event, has_ports, is_icmp, transport},
        kallsyms::Kallsyms,
    },
    commands::snapshot::flows::tcp_flags,
    export::{LogOutput, SharedAgent},
    kernel::netns::NetnsNames,
    model::{Workload, attr},
    workload::{Workloads, attr as workload_attr, sockets::SocketOwners},
};

/// Events handled per wake-up of the ring buffer, at most.
const MAX_PER_WAKE: usize = 1024;
/// The event name of the log records.
pub(crate) const EVENT_NAME: &str = "retina.drop";

/// The running task.
pub(crate) struct FlowExport {
    stop: watch::Sender<bool>,
    task: JoinHandle<Option<LogOutput>>,
}

/// What names an event.
struct Namer {
    source: FlowSource,
    agent: SharedAgent,
    netns: NetnsNames,
    workloads: Workloads,
    owners: SocketOwners,
    symbols: Option<Kallsyms>,
}

impl FlowExport {
    /// Starts the task: `ring` drained (into `logs` when there is an output, else left to
    /// the kernel), the counters read every `interval`.
    pub(crate) fn start(
        source: FlowSource,
        ring: Option<RingBuf<MapData>>,
        agent: SharedAgent,
        logs: Option<LogOutput>,
        counters: Arc<FlowCounters>,
        interval: Duration,
        locations: bool,
    ) -> std::io::Result<FlowExport> {
        let ring = match (ring, &logs) {
            // SAFETY: the ring buffer owns its descriptor, which stays open and the same for
            // as long as it lives, and the AsyncFd owns the ring buffer.
            (Some(r), Some(_)) => Some(
                unsafe { AsyncFd::register_with_interest(r, Interest::READABLE) }
                    .map_err(|e| e.into_parts().1)?,
            ),
            _ => None,
        };
        let host = source.host_netns;
        let mut namer = Namer {
            source,
            agent,
            netns: NetnsNames::new(),
            workloads: Workloads::new(host),
            owners: SocketOwners::new(),
            symbols: if locations { Kallsyms::load().ok() } else { None },
        };
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut ring = ring;
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut events = Vec::with_capacity(MAX_PER_WAKE);
            loop {
                tokio::select! {
                    guard = readable(&mut ring) => match guard {
                        Ok(mut guard) => {
                            let full = drain(guard.get_inner_mut(), &mut events);
                            if !full {
                                guard.clear_ready();
                            }
                            namer.send(&mut events, logs.as_ref());
                        }
                        Err(e) => {
                            tracing::warn!("polling the drop flow events: {e}; no more are exported");
                            ring = None;
                        }
                    },
                    _ = ticker.tick() => namer.count(&counters),
                    _ = stopped.changed() => break,
                }
            }
            if let Some(fd) = &mut ring {
                drain(fd.get_mut(), &mut events);
                namer.send(&mut events, logs.as_ref());
            }
            namer.count(&counters);
            logs
        });
        Ok(FlowExport { stop, task })
    }

    /// Stops the task (after a last drain) and hands the log output back, to be flushed.
    pub(crate) async fn stop(self) -> Option<LogOutput> {
        let _ = self.stop.send(true);
        self.task.await.ok().flatten()
    }
}

type Ring = AsyncFd<RingBuf<MapData>>;

/// The ring buffer becoming readable; never, without one.
async fn readable(
    ring: &mut Option<Ring>,
) -> std::io::Result<tokio::io::unix::AsyncFdReadyMutGuard<'_, RingBuf<MapData>>> {
    match ring {
        Some(fd) => fd.readable_mut().await,
        None => std::future::pending().await,
    }
}

/// Moves up to [`MAX_PER_WAKE`] events into `events`; `true` if more may wait.
fn drain(ring: &mut RingBuf<MapData>, events: &mut Vec<FlowEvent>) -> bool {
    while events.len() < MAX_PER_WAKE {
        let Some(item) = ring.next() else {
            return false;
        };
        if let Some(e) = event(&item) {
            events.push(e);
        }
    }
    true
}

/// `CLOCK_MONOTONIC` (what `bpf_ktime_get_ns` reads) in nanoseconds.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid pointer it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

fn any(v: &Value) -> AnyValue {
    match v {
        Value::String(s) => AnyValue::String(s.clone()),
        Value::I64(i) => AnyValue::Int(*i),
        Value::F64(f) => AnyValue::Double(*f),
        Value::Bool(b) => AnyValue::Boolean(*b),
        other => AnyValue::String(other.to_string().into()),
    }
}

impl Namer {
    fn count(&mut self, counters: &FlowCounters) {
        match self.source.maps.read() {
            Ok((_, stats)) => counters.store(&stats),
            Err(e) => tracing::debug!("reading the drop flow counters: {e}"),
        }
        self.owners.check();
        self.netns.release_deleted();
    }

    /// Sends `events` (emptied) as log records.
    fn send(&mut self, events: &mut Vec<FlowEvent>, logs: Option<&LogOutput>) {
        let Some(logs) = logs else {
            events.clear();
            return;
        };
        self.owners.resolve(events.iter().map(|e| e.cgroup));
        let now_wall = std::time::SystemTime::now();
        let now_mono = monotonic_ns();
        for e in events.drain(..) {
            let mut record = logs.record();
            let ago = Duration::from_nanos(now_mono.saturating_sub(e.time_ns));
            record.set_timestamp(now_wall.checked_sub(ago).unwrap_or(now_wall));
            self.fill(&e, &mut record);
            logs.emit(record);
        }
    }

    /// The workload of the flow's namespace, or for a host interface its peer's.
    fn namespace_workload(&mut self, netns: u32, ifindex: u32) -> Option<Arc<Workload>> {
        if netns == self.source.host_netns || netns == 0 {
            let agent = self.agent.lock();
            return agent
                .as_ref()
                .and_then(|a| a.links().get(ifindex))
                .and_then(|l| l.workload.clone());
        }
        self.workloads.lookup(netns)
    }

    fn interface(&mut self, netns: u32, ifindex: u32) -> Option<Arc<str>> {
        if ifindex == 0 {
            return None;
        }
        if netns == self.source.host_netns || netns == 0 {
            let agent = self.agent.lock();
            return agent
                .as_ref()
                .and_then(|a| a.links().get(ifindex))
                .map(|l| l.name.clone());
        }
        self.netns.interface(netns, ifindex)
    }

    fn fill(&mut self, e: &FlowEvent, r: &mut opentelemetry_sdk::logs::SdkLogRecord) {
        let k = &e.key;
        let reason = self.source.reasons.name(k.reason);
        r.set_event_name(EVENT_NAME);
        r.set_severity_number(Severity::Info);
        r.set_body(AnyValue::String(format!("{reason} {}", describe(k)).into()));
        r.add_attribute(attr::DROP_REASON, AnyValue::String(reason.to_string().into()));
        r.add_attribute("network.transport", transport(k.protocol));
        let t = if k.family == FAMILY_IPV4 { "ipv4" } else { "ipv6" };
        r.add_attribute(attr::NETWORK_TYPE, t);
        r.add_attribute("source.address", address(k.family, &k.saddr).to_string());
        r.add_attribute("destination.address", address(k.family, &k.daddr).to_string());
        if k.fragment != 0 {
            r.add_attribute("network.fragment", true);
        } else if has_ports(k.protocol) {
            r.add_attribute("source.port", k.sport);
            r.add_attribute("destination.port", k.dport);
        } else if is_icmp(k.protocol) {
            r.add_attribute("icmp.type", k.sport);
            r.add_attribute("icmp.code", k.dport);
        }
        if k.protocol == 6 {
            r.add_attribute("tcp.flags", tcp_flags(u64::from(e.tcp_flags)));
        }
        if let Some(name) = self.interface(k.netns, k.ifindex) {
            r.add_attribute(attr::INTERFACE_NAME, name.to_string());
        }
        if k.ifindex != 0 {
            r.add_attribute(attr::INTERFACE_INDEX, k.ifindex);
        }
        if k.netns != 0 {
            r.add_attribute(attr::NETNS_INODE, k.netns);
        }
        if let Some((start, name)) = self.symbols.as_ref().and_then(|s| s.lookup(e.location)) {
            let _ = start;
            r.add_attribute(attr::DROP_LOCATION, name.to_string());
        }
        r.add_attribute("network.packet.length", e.len);
        // As on the drop metrics: the socket's owner, else the namespace's workload.
        let owner = self.owners.get(e.cgroup).cloned();
        if e.cgroup != 0 {
            let id = i64::try_from(e.cgroup).unwrap_or(i64::MAX);
            r.add_attribute(workload_attr::SOCKET_CGROUP_ID, id);
        }
        if let Some(o) = &owner {
            r.add_attribute(workload_attr::SOCKET_CGROUP, o.path.to_string());
        }
        let workload = match owner {
            Some(o) if !o.workload.is_empty() => Some(o.workload.clone()),
            _ => self.namespace_workload(k.netns, k.ifindex),
        };
        if let Some(w) = workload {
            let mut attrs = Vec::new();
            w.push_attributes(&mut attrs);
            for kv in attrs {
                r.add_attribute(kv.key, any(&kv.value));
            }
        }
    }
}
