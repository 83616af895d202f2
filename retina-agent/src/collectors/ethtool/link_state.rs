//! The `ethtool_link` collector: speed, duplex, ring sizes and channel counts of every
//! selected interface, from the ethtool generic-netlink family ([`query_link_state`]).
//!
//! That query allocates, so it never runs inside a collection cycle: a task on the agent's
//! tokio runtime waits, in one `select!`, for the refresh interval, for a trigger (a new
//! interface, or [`LinkStateCollector::refresh`]) and for shutdown; it runs the query,
//! builds the data points and publishes them. `collect` only swaps in the newest
//! published result, and `visit` reads it.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use opentelemetry::KeyValue;
use tokio::{
    sync::{Notify, oneshot, watch},
    task::JoinHandle,
    time::Instant,
};

use super::{
    EthtoolConfig, EthtoolError, NIC_CHANNEL_COUNT, NIC_LINK_DUPLEX, NIC_LINK_SPEED, NIC_RING_SIZE,
    attr,
    netlink::{LinkStateError, LinkStateTable, query_link_state},
};
use crate::{
    collectors::{
        CollectError, Collector,
        interfaces::{Change, Interfaces},
    },
    filter::NameFilter,
    kernel::links::Links,
    model::{Metric, Number, Visitor, attr::INTERFACE_NAME, in_key_order},
};

static LINK_METRICS: [&Metric; 4] = [
    &NIC_LINK_SPEED,
    &NIC_LINK_DUPLEX,
    &NIC_RING_SIZE,
    &NIC_CHANNEL_COUNT,
];

/// Triggered refreshes (a new interface) are at least this far apart.
const MIN_GAP: Duration = Duration::from_secs(1);

/// One interface's data points, built by the task.
struct Prepared {
    name: Arc<str>,
    points: Box<[Point]>,
    /// The settings this interface's driver hard-codes ([`driver_constants`]), set from
    /// the link table's kind each cycle: not exported.
    constants: &'static [Setting],
}

/// A metric, its attributes, its value, and which setting it is.
type Point = (&'static Metric, Box<[KeyValue]>, u64, Setting);

/// What a point reports, as far as [`driver_constants`] tells them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Setting {
    Speed,
    Duplex,
    /// A channel count's `max`.
    ChannelsMax,
    Other,
}

/// The link settings a virtual device's driver reports as constants, by the interface's
/// kind (`IFLA_INFO_KIND`): exported, they would be series that can never move, one set
/// per pod on a Kubernetes node. `veth` answers every query with 10 Gb/s, full duplex
/// (`veth_get_link_ksettings`), and its channel maximums are the queue counts fixed when
/// the pair was made (`veth_get_channels`; the current counts can change with
/// `ethtool -L`, and stay). `tun` answers 10 Mb/s, full duplex (`tun_get_link_ksettings`).
fn driver_constants(kind: Option<&str>) -> &'static [Setting] {
    match kind {
        Some("veth") => &[Setting::Speed, Setting::Duplex, Setting::ChannelsMax],
        Some("tun") => &[Setting::Speed, Setting::Duplex],
        _ => &[],
    }
}

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
                    Setting::Speed,
                ));
            }
            if let Some(full) = s.duplex_full {
                points.push((
                    &NIC_LINK_DUPLEX,
                    Box::from([iface()]),
                    u64::from(full),
                    Setting::Duplex,
                ));
            }
            for (ring, setting, v) in s.rings {
                let attrs = Box::from(in_key_order([
                    iface(),
                    KeyValue::new(attr::RING, ring),
                    KeyValue::new(attr::RING_SETTING, setting),
                ]));
                points.push((&NIC_RING_SIZE, attrs, u64::from(v), Setting::Other));
            }
            for (kind, setting, v) in s.channels {
                let attrs = Box::from(in_key_order([
                    iface(),
                    KeyValue::new(attr::CHANNEL_TYPE, kind),
                    KeyValue::new(attr::CHANNEL_SETTING, setting),
                ]));
                let setting = match setting {
                    "max" => Setting::ChannelsMax,
                    _ => Setting::Other,
                };
                points.push((&NIC_CHANNEL_COUNT, attrs, u64::from(v), setting));
            }
            (
                index,
                Prepared {
                    name,
                    points: points.into_boxed_slice(),
                    constants: &[],
                },
            )
        })
        .collect()
}

/// What the task hands to the collector.
#[derive(Default)]
struct Shared {
    slot: Mutex<Slot>,
    /// Asks the task for a refresh (a permit is kept until the task takes it).
    trigger: Notify,
}

/// The newest finished refresh, until `collect` installs it.
#[derive(Default)]
struct Slot {
    /// Refreshes finished so far.
    generation: u64,
    published: Option<BTreeMap<u32, Prepared>>,
    error: Option<LinkStateError>,
    /// Messages of the newest refresh refused for a name that is not UTF-8.
    odd_names: u32,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Slot> {
        // A poisoned lock only means the task panicked mid-update: the data is plain.
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Speed, duplex, ring sizes and channel counts of every selected interface.
///
/// Owns a task on the tokio runtime it was created on (the agent's) that runs
/// [`query_link_state`] every `link_state_interval`, and soon after
/// [`Collector::collect`] sees an interface it had not seen before. `collect` never
/// blocks and, in steady state, never allocates: it installs the newest finished refresh,
/// forgets interfaces that are gone from the link table or were re-created, and triggers
/// the task for new ones. Dropping the collector stops the task.
///
/// The agent adds it like any other collector; there is nothing else to call. One-shot
/// users (tests) await [`LinkStateCollector::refresh`] for a fresh result.
pub struct LinkStateCollector {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
    /// The generation of the last finished refresh; closed when the task ends.
    #[cfg_attr(
        not(any(test, feature = "internals")),
        allow(dead_code, reason = "only the one-shot `refresh` (tests, bench) reads it; the task signals through the same channel in every build")
    )]
    done: watch::Receiver<u64>,
    /// Dropped with the collector: the task's shutdown signal.
    _stop: oneshot::Sender<()>,
    filter: NameFilter,
    table: BTreeMap<u32, Prepared>,
    known: Interfaces<()>,
    /// Generation of the installed table.
    installed: u64,
    /// The task's end has been logged.
    exit_logged: bool,
    /// Interfaces (by [`Link::instance`](crate::kernel::links::Link)) already named in
    /// the log for having no link state because their name is not UTF-8.
    odd_logged: Vec<u64>,
    /// Leave out what virtual drivers hard-code ([`driver_constants`]).
    hide_constants: bool,
}

impl LinkStateCollector {
    /// Starts the task on the current tokio runtime; the first refresh begins as soon as
    /// the runtime runs it.
    pub fn new(config: &EthtoolConfig) -> Result<LinkStateCollector, EthtoolError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(EthtoolError::Runtime)?;
        let filter = config.interface_filter();
        let shared = Arc::new(Shared::default());
        let (stop, stopped) = oneshot::channel();
        let (finished, done) = watch::channel(0);
        let interval = config.link_state_interval.max(MIN_GAP);
        let task = runtime.spawn(run(
            shared.clone(),
            filter.clone(),
            interval,
            stopped,
            finished,
        ));
        Ok(LinkStateCollector::with_task(
            filter, shared, task, done, stop,
        ))
    }

    fn with_task(
        filter: NameFilter,
        shared: Arc<Shared>,
        task: JoinHandle<()>,
        done: watch::Receiver<u64>,
        stop: oneshot::Sender<()>,
    ) -> LinkStateCollector {
        LinkStateCollector {
            shared,
            task,
            done,
            _stop: stop,
            filter,
            table: BTreeMap::new(),
            known: Interfaces::new(),
            installed: 0,
            exit_logged: false,
            odd_logged: Vec::new(),
            hide_constants: false,
        }
    }

    /// Leaves out the settings virtual drivers hard-code (`veth`'s and `tun`'s speed and
    /// duplex, `veth`'s channel maximums: [`driver_constants`]), as the `informative`
    /// series policy wants; `everything` keeps them.
    pub(crate) fn hiding_driver_constants(mut self, hide: bool) -> LinkStateCollector {
        self.hide_constants = hide;
        self
    }

    /// Triggers a refresh now and waits (up to `timeout`) for it to finish, then installs
    /// it as `collect` would. The task runs on its runtime meanwhile: on a current-thread
    /// runtime, await this inside that runtime's `block_on`.
    #[cfg(any(test, feature = "internals"))]
    pub async fn refresh(
        &mut self,
        links: &Links,
        timeout: Duration,
    ) -> Result<(), LinkStateError> {
        let target = self.shared.lock().generation + 1;
        self.shared.trigger.notify_one();
        let mut done = self.done.clone();
        match tokio::time::timeout(timeout, done.wait_for(|g| *g >= target)).await {
            Err(_) => return Err(LinkStateError::Timeout(timeout)),
            Ok(Err(_)) => return Err(self.task_gone()),
            Ok(Ok(_)) => {}
        }
        let error = self.shared.lock().error.clone();
        self.install(links);
        error.map_or(Ok(()), Err)
    }

    /// The error for a task that has ended: logged once, then returned every cycle (so
    /// `retina.agent.collect.failures{collector="ethtool_link"}` keeps counting), with no
    /// stale link state left to export.
    fn task_gone(&mut self) -> LinkStateError {
        self.table.clear();
        if !self.exit_logged {
            self.exit_logged = true;
            tracing::error!(
                "ethtool link state: the refresh task has ended; link speed, duplex, rings and \
                 channels are no longer reported"
            );
        }
        LinkStateError::Worker("the refresh task has ended".into())
    }

    /// The kernel's link-state messages about an interface whose name is not UTF-8 do not
    /// decode (the `ethtool` crate parses names as `String`): that interface gets no link
    /// state, which is not a collection failure. Each such interface is named in the log
    /// once (its ifindex and its name with U+FFFD for the invalid bytes).
    fn name_odd_interfaces(&mut self, links: &Links) {
        let mut named = false;
        for link in links.iter().filter(|l| l.raw_name.is_some()) {
            named = true;
            if self.odd_logged.contains(&link.instance) {
                continue;
            }
            self.odd_logged.push(link.instance);
            tracing::warn!(
                ifindex = link.ifindex,
                interface = %link.name,
                "ethtool link state: the interface's name is not UTF-8 (bytes \"{}\"); it \
                 gets no link speed, duplex, rings or channels",
                link.name_bytes().escape_ascii()
            );
        }
        // Gone from the link table: their entries go, so that a list rebuilt by renames
        // stays as short as the odd interfaces there are.
        self.odd_logged
            .retain(|i| links.iter().any(|l| l.instance == *i));
        if !named {
            tracing::debug!(
                "ethtool link state: a message named an interface whose name is not UTF-8, \
                 no longer in the link table"
            );
        }
    }

    /// Interfaces with link state currently held.
    #[cfg(test)]
    pub(crate) fn interfaces(&self) -> usize {
        self.table.len()
    }

    /// Takes the newest published refresh, if any, and keeps only entries that still
    /// match the link table. Returns the refresh's error, if it had one.
    fn install(&mut self, links: &Links) -> Option<LinkStateError> {
        let mut error = None;
        let mut odd_names = 0;
        {
            let mut s = self.shared.lock();
            if s.generation > self.installed {
                self.installed = s.generation;
                if let Some(new) = s.published.take() {
                    self.table = new;
                }
                error = s.error.take();
                odd_names = std::mem::take(&mut s.odd_names);
            }
        }
        if odd_names > 0 {
            self.name_odd_interfaces(links);
        }
        // Entries of interfaces gone from the link table, or whose ifindex now names
        // another device, are dropped right away; the device's successor gets a refresh.
        self.table.retain(|index, p| match links.get(*index) {
            Some(l) if *l.name == *p.name => {
                p.constants = match self.hide_constants {
                    true => driver_constants(l.kind.as_deref()),
                    false => &[],
                };
                true
            }
            _ => false,
        });
        error
    }
}

/// Waits until `deadline`; forever when there is none.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// The refresh task: one refresh right away, then one `interval` after the previous one,
/// or at least [`MIN_GAP`] after it when triggered; until `stop` fires or its sender is
/// dropped.
async fn run(
    shared: Arc<Shared>,
    filter: NameFilter,
    interval: Duration,
    mut stop: oneshot::Receiver<()>,
    finished: watch::Sender<u64>,
) {
    let mut last: Option<Instant> = None;
    let mut requested = false;
    loop {
        // `None`: no periodic refresh is due (the interval runs past the clock's end; the
        // configuration caps it far below that).
        let due = match last {
            None => Some(Instant::now()),
            Some(l) => l.checked_add(interval),
        };
        let soon = last.and_then(|l| l.checked_add(MIN_GAP));
        tokio::select! {
            biased;
            _ = &mut stop => return,
            () = shared.trigger.notified(), if !requested => {
                requested = true;
                continue;
            }
            () = sleep_until(soon.or(due)), if requested => {}
            () = sleep_until(due) => {}
        }
        requested = false;
        last = Some(Instant::now());
        let result = tokio::select! {
            biased;
            _ = &mut stop => return,
            r = query_link_state(&filter) => r,
        };
        let (published, error, odd_names) = match result {
            Ok((table, partial)) => (Some(prepare(table)), partial.error, partial.odd_names),
            Err(e) => (None, Some(e), 0),
        };
        if let Some(e) = &error {
            tracing::debug!("ethtool link state: {e}");
        }
        let generation = {
            let mut s = shared.lock();
            if published.is_some() {
                s.published = published;
            }
            s.error = error;
            s.odd_names = odd_names;
            s.generation += 1;
            s.generation
        };
        finished.send_replace(generation);
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
        if self.task.is_finished() {
            return Err(Box::new(self.task_gone()));
        }
        let cycle = self.known.begin();
        let mut new = false;
        for link in links.iter() {
            match self.known.track(link, |_| ()) {
                Some((_, Change::Replaced)) => {
                    // Another device behind this ifindex: what we hold is not its.
                    self.table.remove(&link.ifindex);
                    new |= self.filter.matches(&link.name);
                }
                // The first cycle's interfaces are covered by the initial refresh.
                Some((_, Change::Added)) => new |= cycle > 1 && self.filter.matches(&link.name),
                Some((_, Change::Kept)) | None => {}
            }
        }
        self.known.end();
        if new {
            self.shared.trigger.notify_one();
        }
        match self.install(links) {
            Some(e) => Err(Box::new(e)),
            None => Ok(()),
        }
    }

    fn visit(&self, visitor: &mut dyn Visitor) {
        for p in self.table.values() {
            for (metric, attrs, v, setting) in p.points.iter() {
                if !p.constants.contains(setting) {
                    visitor.point(metric, attrs, Number::U64(*v));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
