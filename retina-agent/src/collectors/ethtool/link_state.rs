//! Link state (speed, duplex, rings, channels) from the ethtool generic-netlink family.
//!
//! [`query_link_state`] does the work: three dump requests (`ETHTOOL_MSG_LINKMODES_GET`,
//! `ETHTOOL_MSG_RINGS_GET`, `ETHTOOL_MSG_CHANNELS_GET`) over one fresh connection, each
//! answering for every interface that supports it. The `ethtool` crate builds and parses
//! those messages with heap allocations, so this never runs inside a collection cycle:
//! [`LinkStateCollector`] runs it on a thread of its own (a current-thread tokio runtime)
//! every `link_state_interval`, and sooner when `collect` sees a new interface; `collect`
//! only swaps in the latest prepared result, and `visit` reads it.

use std::{
    collections::BTreeMap,
    sync::{Arc, Condvar, Mutex, MutexGuard},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use ethtool::{
    EthtoolAttr, EthtoolChannelAttr, EthtoolHeader, EthtoolLinkModeAttr, EthtoolLinkModeDuplex,
    EthtoolRingAttr,
};
use futures_util::StreamExt;
use opentelemetry::KeyValue;

use super::{
    EthtoolConfig, EthtoolError, NIC_CHANNEL_COUNT, NIC_LINK_DUPLEX, NIC_LINK_SPEED, NIC_RING_SIZE,
    attr,
};
use crate::{
    collectors::{CollectError, Collector},
    filter::NameFilter,
    links::Links,
    metrics::{Metric, Number, Visitor, attr::INTERFACE_NAME},
};

static LINK_METRICS: [&Metric; 4] = [
    &NIC_LINK_SPEED,
    &NIC_LINK_DUPLEX,
    &NIC_RING_SIZE,
    &NIC_CHANNEL_COUNT,
];

/// Event-triggered refreshes (a new interface) are at least this far apart.
const MIN_GAP: Duration = Duration::from_secs(1);

/// `SPEED_UNKNOWN` in `<linux/ethtool.h>`.
const SPEED_UNKNOWN: u32 = u32::MAX;

/// Why a link-state refresh failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LinkStateError {
    #[error("ethtool netlink: opening the connection: {0}")]
    Connect(String),
    #[error("ethtool netlink: {request} dump: {error}")]
    Request {
        request: &'static str,
        error: String,
    },
    #[error("ethtool link state: {0}")]
    Worker(String),
    #[error("ethtool link state: no refresh within {0:?}")]
    Timeout(Duration),
}

/// One interface's link state as the kernel reported it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkState {
    pub name: String,
    /// Mb/s; `None` when unknown (no carrier, virtual device without a speed).
    pub speed_mbps: Option<u32>,
    /// `Some(true)` full, `Some(false)` half, `None` unknown.
    pub duplex_full: Option<bool>,
    /// `(ring, setting, size)`: ring `rx`/`tx`/`rx_mini`/`rx_jumbo`, setting
    /// `current`/`max`. Only rings the driver has.
    pub rings: Vec<(&'static str, &'static str, u32)>,
    /// `(type, setting, count)`: type `rx`/`tx`/`other`/`combined`, setting
    /// `current`/`max`. Only channel types the driver has.
    pub channels: Vec<(&'static str, &'static str, u32)>,
}

/// Link state by ifindex.
pub type LinkStateTable = BTreeMap<u32, LinkState>;

fn header(h: &[EthtoolHeader]) -> (Option<u32>, Option<String>) {
    let mut index = None;
    let mut name = None;
    for a in h {
        match a {
            EthtoolHeader::DevIndex(i) => index = Some(*i),
            EthtoolHeader::DevName(n) => name = Some(n.clone()),
            _ => {}
        }
    }
    (index, name)
}

/// Reads the link state of every interface whose name `filter` selects, with three
/// dumps over a new ethtool netlink connection. Needs a tokio runtime with IO enabled.
///
/// A message that does not decode (the `ethtool` crate refuses an interface name that is
/// not UTF-8) costs only its own interface: the rest of the dump is still read. The first
/// error is returned next to the (partial) table.
pub async fn query_link_state(
    filter: &NameFilter,
) -> Result<(LinkStateTable, Option<LinkStateError>), LinkStateError> {
    let (conn, mut handle, _) =
        ethtool::new_connection().map_err(|e| LinkStateError::Connect(e.to_string()))?;
    let mut table = LinkStateTable::new();
    let mut first_error = None;
    let work = async {
        for request in ["LINKMODES", "RINGS", "CHANNELS"] {
            let result = match request {
                "LINKMODES" => handle
                    .link_mode()
                    .get(None)
                    .execute()
                    .await
                    .map(|s| s.boxed_local()),
                "RINGS" => handle
                    .ring()
                    .get(None)
                    .execute()
                    .await
                    .map(|s| s.boxed_local()),
                _ => handle
                    .channel()
                    .get(None)
                    .execute()
                    .await
                    .map(|s| s.boxed_local()),
            };
            let mut stream = match result {
                Ok(s) => s,
                Err(e) => {
                    first_error.get_or_insert(LinkStateError::Request {
                        request,
                        error: e.to_string(),
                    });
                    continue;
                }
            };
            while let Some(msg) = stream.next().await {
                let msg = match msg {
                    Ok(m) => m,
                    Err(e) => {
                        // One message the crate cannot decode (an interface whose name is
                        // not UTF-8: it parses names as `String`) spoils only that
                        // interface: the rest of the dump still comes.
                        first_error.get_or_insert(LinkStateError::Request {
                            request,
                            error: e.to_string(),
                        });
                        continue;
                    }
                };
                apply_link_state(&mut table, filter, &msg.payload.nlas);
            }
        }
    };
    // The connection future drives the socket; it is dropped (closing the socket) once
    // the requests are done.
    tokio::select! {
        biased;
        () = work => {}
        () = conn => {
            return Err(LinkStateError::Connect("connection closed".into()));
        }
    }
    Ok((table, first_error))
}

/// Folds one reply message (its attributes as the `ethtool` crate decoded them) into
/// `table`, as [`query_link_state`] does with every message of its dumps. Public as the
/// entry point of the fuzz target `ethtool` (`fuzz/`).
pub fn apply_link_state(table: &mut LinkStateTable, filter: &NameFilter, nlas: &[EthtoolAttr]) {
    let (mut index, mut name) = (None, None);
    for nla in nlas {
        let h = match nla {
            EthtoolAttr::LinkMode(EthtoolLinkModeAttr::Header(h))
            | EthtoolAttr::Ring(EthtoolRingAttr::Header(h))
            | EthtoolAttr::Channel(EthtoolChannelAttr::Header(h)) => h,
            _ => continue,
        };
        (index, name) = header(h);
    }
    let (Some(index), Some(name)) = (index, name) else {
        return;
    };
    if !filter.matches(&name) {
        return;
    }
    let state = table.entry(index).or_insert_with(|| LinkState {
        name,
        ..LinkState::default()
    });
    for nla in nlas {
        match nla {
            EthtoolAttr::LinkMode(EthtoolLinkModeAttr::Speed(s)) => {
                state.speed_mbps = (*s != SPEED_UNKNOWN && *s != 0).then_some(*s);
            }
            EthtoolAttr::LinkMode(EthtoolLinkModeAttr::Duplex(d)) => {
                state.duplex_full = match d {
                    EthtoolLinkModeDuplex::Full => Some(true),
                    EthtoolLinkModeDuplex::Half => Some(false),
                    _ => None,
                };
            }
            EthtoolAttr::Ring(r) => {
                let (ring, setting, v) = match r {
                    EthtoolRingAttr::Rx(v) => ("rx", "current", v),
                    EthtoolRingAttr::RxMax(v) => ("rx", "max", v),
                    EthtoolRingAttr::Tx(v) => ("tx", "current", v),
                    EthtoolRingAttr::TxMax(v) => ("tx", "max", v),
                    EthtoolRingAttr::RxMini(v) => ("rx_mini", "current", v),
                    EthtoolRingAttr::RxMiniMax(v) => ("rx_mini", "max", v),
                    EthtoolRingAttr::RxJumbo(v) => ("rx_jumbo", "current", v),
                    EthtoolRingAttr::RxJumboMax(v) => ("rx_jumbo", "max", v),
                    _ => continue,
                };
                state.rings.push((ring, setting, *v));
            }
            EthtoolAttr::Channel(c) => {
                let (kind, setting, v) = match c {
                    EthtoolChannelAttr::RxCount(v) => ("rx", "current", v),
                    EthtoolChannelAttr::RxMax(v) => ("rx", "max", v),
                    EthtoolChannelAttr::TxCount(v) => ("tx", "current", v),
                    EthtoolChannelAttr::TxMax(v) => ("tx", "max", v),
                    EthtoolChannelAttr::OtherCount(v) => ("other", "current", v),
                    EthtoolChannelAttr::OtherMax(v) => ("other", "max", v),
                    EthtoolChannelAttr::CombinedCount(v) => ("combined", "current", v),
                    EthtoolChannelAttr::CombinedMax(v) => ("combined", "max", v),
                    _ => continue,
                };
                state.channels.push((kind, setting, *v));
            }
            _ => {}
        }
    }
}

/// One interface's data points, built on the worker thread.
struct Prepared {
    name: Arc<str>,
    points: Box<[Point]>,
}

/// A metric, its attributes and its value.
type Point = (&'static Metric, Box<[KeyValue]>, u64);

fn prepare(table: LinkStateTable) -> BTreeMap<u32, Prepared> {
    table
        .into_iter()
        .map(|(index, s)| {
            let name: Arc<str> = Arc::from(s.name.as_str());
            let iface = || KeyValue::new(INTERFACE_NAME, name.clone());
            let mut points = Vec::new();
            if let Some(mbps) = s.speed_mbps {
                points.push((
                    &NIC_LINK_SPEED,
                    Box::from([iface()]),
                    u64::from(mbps) * 1_000_000,
                ));
            }
            if let Some(full) = s.duplex_full {
                points.push((&NIC_LINK_DUPLEX, Box::from([iface()]), u64::from(full)));
            }
            for (ring, setting, v) in s.rings {
                let attrs = Box::from([
                    iface(),
                    KeyValue::new(attr::RING, ring),
                    KeyValue::new(attr::RING_SETTING, setting),
                ]);
                points.push((&NIC_RING_SIZE, attrs, u64::from(v)));
            }
            for (kind, setting, v) in s.channels {
                let attrs = Box::from([
                    iface(),
                    KeyValue::new(attr::CHANNEL_TYPE, kind),
                    KeyValue::new(attr::CHANNEL_SETTING, setting),
                ]);
                points.push((&NIC_CHANNEL_COUNT, attrs, u64::from(v)));
            }
            (
                index,
                Prepared {
                    name,
                    points: points.into_boxed_slice(),
                },
            )
        })
        .collect()
}

#[derive(Default)]
struct SharedState {
    requested: bool,
    shutdown: bool,
    /// Refreshes completed so far.
    generation: u64,
    published: Option<BTreeMap<u32, Prepared>>,
    error: Option<LinkStateError>,
    /// The worker thread has ended without being asked to (it failed to start its
    /// runtime, or panicked).
    exited: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<SharedState>,
    /// Wakes the worker (request or shutdown).
    wake: Condvar,
    /// Signals a finished refresh.
    done: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, SharedState> {
        // A poisoned lock only means the worker panicked mid-update: the data is plain.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Known {
    instance: u64,
    seen: u64,
}

/// Speed, duplex, ring sizes and channel counts of every selected interface.
///
/// Owns a worker thread (named `retina-ethtool-link`, with a current-thread tokio
/// runtime) that runs [`query_link_state`] every `link_state_interval`, and soon after
/// [`Collector::collect`] sees an interface it had not seen before. `collect` never
/// blocks and, in steady state, never allocates: it installs the newest finished refresh,
/// forgets interfaces that are gone from the link table or were re-created, and wakes the
/// worker for new ones. Dropping the collector stops the worker.
///
/// The agent adds it like any other collector; there is nothing else to call. One-shot
/// users (the `snapshot` command, tests) call [`LinkStateCollector::refresh_blocking`] to
/// wait for a fresh result.
pub struct LinkStateCollector {
    shared: Arc<Shared>,
    worker: Option<JoinHandle<()>>,
    filter: NameFilter,
    table: BTreeMap<u32, Prepared>,
    known: BTreeMap<u32, Known>,
    cycle: u64,
    /// Generation of the installed table.
    installed: u64,
    /// The worker's end has been logged.
    exit_logged: bool,
}

impl LinkStateCollector {
    /// Starts the worker; the first refresh begins right away.
    pub fn new(config: &EthtoolConfig) -> Result<LinkStateCollector, EthtoolError> {
        let filter = config.interface_filter();
        let shared = Arc::new(Shared::default());
        shared.lock().requested = true;
        let worker = {
            let shared = shared.clone();
            let filter = filter.clone();
            let interval = config.link_state_interval.max(MIN_GAP);
            std::thread::Builder::new()
                .name("retina-ethtool-link".into())
                .spawn(move || worker(&shared, &filter, interval))
                .map_err(EthtoolError::Thread)?
        };
        Ok(LinkStateCollector {
            shared,
            worker: Some(worker),
            filter,
            table: BTreeMap::new(),
            known: BTreeMap::new(),
            cycle: 0,
            installed: 0,
            exit_logged: false,
        })
    }

    /// Asks the worker for a refresh now and waits (up to `timeout`) for it to finish,
    /// then installs it as `collect` would.
    pub fn refresh_blocking(
        &mut self,
        links: &Links,
        timeout: Duration,
    ) -> Result<(), LinkStateError> {
        // A timeout too long to add to the clock is no deadline.
        let deadline = Instant::now().checked_add(timeout);
        let target = {
            let mut s = self.shared.lock();
            s.requested = true;
            self.shared.wake.notify_all();
            s.generation + 1
        };
        let mut s = self.shared.lock();
        while s.generation < target && !s.exited {
            s = match deadline {
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(LinkStateError::Timeout(timeout));
                    }
                    self.shared
                        .done
                        .wait_timeout(s, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                None => self.shared.done.wait(s).unwrap_or_else(|e| e.into_inner()),
            };
        }
        if s.exited {
            drop(s);
            return Err(self.worker_gone());
        }
        let error = s.error.clone();
        drop(s);
        self.install(links);
        error.map_or(Ok(()), Err)
    }

    /// The error for a worker that has ended: logged once, then returned every cycle (so
    /// `retina.agent.collect.failures{collector="ethtool_link"}` keeps counting), with no
    /// stale link state left to export.
    fn worker_gone(&mut self) -> LinkStateError {
        self.table.clear();
        if !self.exit_logged {
            self.exit_logged = true;
            tracing::error!(
                "ethtool link state: the worker thread has ended; link speed, duplex, rings and \
                 channels are no longer reported"
            );
        }
        LinkStateError::Worker("the worker thread has ended".into())
    }

    /// Interfaces with link state currently held.
    pub fn interfaces(&self) -> usize {
        self.table.len()
    }

    /// Takes the newest published refresh, if any, and keeps only entries that still
    /// match the link table. Returns the refresh's error, if it had one.
    fn install(&mut self, links: &Links) -> Option<LinkStateError> {
        let mut error = None;
        {
            let mut s = self.shared.lock();
            if s.generation > self.installed {
                self.installed = s.generation;
                if let Some(new) = s.published.take() {
                    self.table = new;
                }
                error = s.error.take();
            }
        }
        // Entries of interfaces gone from the link table, or whose ifindex now names
        // another device, are dropped right away; the device's successor gets a refresh.
        self.table
            .retain(|index, p| links.get(*index).is_some_and(|l| *l.name == *p.name));
        error
    }
}

/// Marks the worker as ended when it returns or unwinds, unless it was told to stop.
struct ExitGuard<'a>(&'a Shared);

impl Drop for ExitGuard<'_> {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        if !s.shutdown {
            s.exited = true;
            self.0.done.notify_all();
        }
    }
}

fn worker(shared: &Shared, filter: &NameFilter, interval: Duration) {
    let _exit = ExitGuard(shared);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("ethtool link state: starting the worker's runtime: {e}");
            return;
        }
    };
    let mut last: Option<Instant> = None;
    loop {
        {
            let mut s = shared.lock();
            // `None`: no periodic refresh is due (the interval runs past the clock's end;
            // the configuration caps it far below that).
            let next = match last {
                None => Some(Instant::now()),
                Some(l) => l.checked_add(interval),
            };
            loop {
                if s.shutdown {
                    return;
                }
                let now = Instant::now();
                let gap_ok = last.is_none_or(|l| now.saturating_duration_since(l) >= MIN_GAP);
                if (s.requested && gap_ok) || next.is_some_and(|n| now >= n) {
                    break;
                }
                let until = if s.requested {
                    Some(last.and_then(|l| l.checked_add(MIN_GAP)).unwrap_or(now))
                } else {
                    next
                };
                s = match until {
                    Some(until) => {
                        shared
                            .wake
                            .wait_timeout(s, until.saturating_duration_since(now))
                            .unwrap_or_else(|e| e.into_inner())
                            .0
                    }
                    None => shared.wake.wait(s).unwrap_or_else(|e| e.into_inner()),
                };
            }
            s.requested = false;
        }
        last = Some(Instant::now());
        let result = runtime.block_on(query_link_state(filter));
        let mut s = shared.lock();
        match result {
            Ok((table, partial)) => {
                if let Some(e) = &partial {
                    tracing::debug!("ethtool link state: {e}");
                }
                s.published = Some(prepare(table));
                s.error = partial;
            }
            Err(e) => {
                tracing::debug!("ethtool link state: {e}");
                s.error = Some(e);
            }
        }
        s.generation += 1;
        shared.done.notify_all();
    }
}

impl Drop for LinkStateCollector {
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.wake.notify_all();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

impl Collector for LinkStateCollector {
    fn name(&self) -> &'static str {
        "ethtool_link"
    }

    fn metrics(&self) -> &'static [&'static Metric] {
        &LINK_METRICS
    }

    fn collect(&mut self, links: &Links) -> Result<(), CollectError> {
        if self.shared.lock().exited {
            return Err(Box::new(self.worker_gone()));
        }
        self.cycle += 1;
        let cycle = self.cycle;
        let mut new = false;
        for link in links.iter() {
            match self.known.entry(link.ifindex) {
                std::collections::btree_map::Entry::Occupied(o) => {
                    let k = o.into_mut();
                    if k.instance != link.instance {
                        // Another device behind this ifindex: what we hold is not its.
                        k.instance = link.instance;
                        self.table.remove(&link.ifindex);
                        new |= self.filter.matches(&link.name);
                    }
                    k.seen = cycle;
                }
                std::collections::btree_map::Entry::Vacant(v) => {
                    // The first cycle's interfaces are covered by the initial refresh.
                    new |= cycle > 1 && self.filter.matches(&link.name);
                    v.insert(Known {
                        instance: link.instance,
                        seen: cycle,
                    });
                }
            }
        }
        self.known.retain(|_, k| k.seen == cycle);
        if new {
            self.shared.lock().requested = true;
            self.shared.wake.notify_all();
        }
        match self.install(links) {
            Some(e) => Err(Box::new(e)),
            None => Ok(()),
        }
    }

    fn visit(&self, visitor: &mut dyn Visitor) {
        for p in self.table.values() {
            for (metric, attrs, v) in p.points.iter() {
                visitor.point(metric, attrs, Number::U64(*v));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interval_past_the_clock_s_end_does_not_kill_the_worker() {
        // The configuration caps link_state_interval at a day; the worker must not rely on it.
        let config = EthtoolConfig {
            link_state_interval: Duration::MAX,
            ..EthtoolConfig::default()
        };
        let mut c = LinkStateCollector::new(&config).unwrap();
        let links = Links::from_links([]);
        for _ in 0..2 {
            if let Err(e) = c.refresh_blocking(&links, Duration::from_secs(30)) {
                assert!(!matches!(e, LinkStateError::Worker(_)), "{e}");
            }
            assert!(!c.shared.lock().exited);
        }
    }

    #[test]
    fn a_worker_that_ends_is_reported_every_cycle() {
        let shared = Arc::new(Shared::default());
        let worker = {
            let shared = shared.clone();
            std::thread::spawn(move || {
                let _exit = ExitGuard(&shared);
                panic!("injected worker failure");
            })
        };
        assert!(worker.join().is_err());
        let mut c = LinkStateCollector {
            shared,
            worker: None,
            filter: NameFilter::all(),
            table: prepare(LinkStateTable::from([(
                1,
                LinkState {
                    name: "eth0".into(),
                    speed_mbps: Some(1000),
                    ..LinkState::default()
                },
            )])),
            known: BTreeMap::new(),
            cycle: 0,
            installed: 0,
            exit_logged: false,
        };
        let links = Links::from_links([crate::links::Link::new(1, "eth0")]);
        for _ in 0..3 {
            let e = c.collect(&links).unwrap_err();
            assert_eq!(
                e.to_string(),
                "ethtool link state: the worker thread has ended"
            );
            // Nothing stale is left to export.
            assert_eq!(c.interfaces(), 0);
        }
        assert!(c.exit_logged);
        let e = c.refresh_blocking(&links, Duration::MAX).unwrap_err();
        assert!(matches!(e, LinkStateError::Worker(_)), "{e}");
        // A shutdown the collector asked for is not a failure.
        let shared = Arc::new(Shared::default());
        shared.lock().shutdown = true;
        drop(ExitGuard(&shared));
        assert!(!shared.lock().exited);
    }

    #[test]
    fn prepare_builds_points() {
        let mut t = LinkStateTable::new();
        t.insert(
            3,
            LinkState {
                name: "veth0".into(),
                speed_mbps: Some(10_000),
                duplex_full: Some(true),
                rings: vec![("rx", "current", 256), ("rx", "max", 4096)],
                channels: vec![("combined", "current", 4)],
            },
        );
        t.insert(
            4,
            LinkState {
                name: "eth0".into(),
                ..Default::default()
            },
        );
        let p = prepare(t);
        let v = &p[&3].points;
        assert_eq!(v.len(), 5);
        assert_eq!(v[0].0.name, "retina.nic.link.speed");
        assert_eq!(v[0].2, 10_000_000_000);
        assert_eq!(v[1].2, 1);
        assert_eq!(v[3].1[2], KeyValue::new(attr::RING_SETTING, "max"));
        assert!(p[&4].points.is_empty());
    }
}
