//! The `qdisc` collector: statistics of every queueing discipline (`tc -s qdisc`) and of
//! the classes of classful ones (`tc -s class`), over rtnetlink.
//!
//! # What a cycle asks the kernel
//!
//! One `RTM_GETQDISC` dump (every visible qdisc of the agent's network namespace: roots,
//! children, `ingress`/`clsact`), then one `RTM_GETTCLASS` dump for each interface that has
//! a qdisc with real classes (`htb`, `hfsc`, `prio`, `drr`, `ets`, `qfq`, `mqprio`, ...).
//! The class dump is skipped for kinds listed in [`NO_CLASSES`]: classless ones, and those
//! whose "classes" are flows (`fq_codel`, `sfq`) or duplicates of child qdiscs (`mq`,
//! `tbf`). Replies are parsed in place out of one receive buffer kept across cycles; a
//! known series is updated in place, so a steady cycle allocates nothing (attribute sets
//! are built once, when a qdisc or class appears). Series of qdiscs and classes that a
//! complete dump no longer reports are dropped.
//!
//! # Values
//!
//! From `TCA_STATS2`: `TCA_STATS_BASIC` (bytes, packets; `TCA_STATS_PKT64` when the kernel
//! adds it for packet counts beyond 32 bits) and `TCA_STATS_QUEUE` (qlen, backlog, drops,
//! requeues, overlimits). Without `TCA_STATS2`, the legacy `TCA_STATS` (no requeues: that
//! series is then absent). A class that reports no statistics is not exported. The
//! kernel's counters are the qdisc's own since it was created; a replaced qdisc starts
//! from zero.
//!
//! # Attributes
//!
//! `network.interface.name`, `qdisc.kind` (`htb`, `tbf`, ...), `qdisc.handle` and
//! `qdisc.parent` in tc's notation (`1:`, `1:10`, `root`, `ffff:fff1`), `qdisc.class`
//! (`qdisc` or `class`).

mod msg;
mod table;
#[cfg(test)]
mod tests;

use std::{
    io,
    os::fd::{AsRawFd, OwnedFd, RawFd},
};

use serde::Deserialize;

use self::{
    msg::{RTM_GETQDISC, RTM_GETTCLASS, TCMSG_LEN},
    table::{Dump, Step, Table},
};
use crate::{
    collectors::{CollectError, Collector},
    kernel::links::{
        self, INITIAL_BUF, LinkError, Links, MAX_ATTEMPTS, MAX_BUF, Malformed, RECV_TIMEOUT,
    },
    model::{Kind, Metric, Number, Visitor},
};

pub(crate) const QDISC_PACKETS: Metric = Metric {
    name: "retina.qdisc.packets",
    unit: "{packet}",
    description: "Packets the qdisc or class sent (tc -s: Sent ... pkt)",
    kind: Kind::Counter,
};
pub(crate) const QDISC_BYTES: Metric = Metric {
    name: "retina.qdisc.bytes",
    unit: "By",
    description: "Bytes the qdisc or class sent",
    kind: Kind::Counter,
};
pub(crate) const QDISC_DROPS: Metric = Metric {
    name: "retina.qdisc.drops",
    unit: "{packet}",
    description: "Packets the qdisc or class dropped",
    kind: Kind::Counter,
};
pub(crate) const QDISC_OVERLIMITS: Metric = Metric {
    name: "retina.qdisc.overlimits",
    unit: "{packet}",
    description: "Times the qdisc or class was over its limit (rate, queue) for a packet",
    kind: Kind::Counter,
};
pub(crate) const QDISC_REQUEUES: Metric = Metric {
    name: "retina.qdisc.requeues",
    unit: "{packet}",
    description: "Packets put back in the queue because the device could not take them",
    kind: Kind::Counter,
};
pub(crate) const QDISC_BACKLOG: Metric = Metric {
    name: "retina.qdisc.backlog",
    unit: "By",
    description: "Bytes waiting in the qdisc or class",
    kind: Kind::Gauge,
};
pub(crate) const QDISC_QLEN: Metric = Metric {
    name: "retina.qdisc.qlen",
    unit: "{packet}",
    description: "Packets waiting in the qdisc or class",
    kind: Kind::Gauge,
};

static METRICS: &[&Metric] = &[
    &QDISC_PACKETS,
    &QDISC_BYTES,
    &QDISC_DROPS,
    &QDISC_OVERLIMITS,
    &QDISC_REQUEUES,
    &QDISC_BACKLOG,
    &QDISC_QLEN,
];

/// Attribute keys.
pub(crate) const ATTR_KIND: &str = "qdisc.kind";
pub(crate) const ATTR_HANDLE: &str = "qdisc.handle";
pub(crate) const ATTR_PARENT: &str = "qdisc.parent";
pub(crate) const ATTR_CLASS: &str = "qdisc.class";

/// Qdisc kinds whose interfaces get no class dump: no classes, flows as classes, or classes
/// that repeat a child qdisc's statistics.
pub(crate) const NO_CLASSES: &[&str] = &[
    "noqueue",
    "noop",
    "pfifo_fast",
    "pfifo",
    "bfifo",
    "pfifo_head_drop",
    "fq",
    "fq_codel",
    "fq_pie",
    "sfq",
    "cake",
    "codel",
    "pie",
    "hhf",
    "choke",
    "sfb",
    "red",
    "tbf",
    "netem",
    "plug",
    "skbprio",
    "mq",
    "ingress",
    "clsact",
];

/// `[qdisc]` configuration.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct QdiscConfig {
    /// Whether the collector runs (default `true`).
    pub(crate) enabled: bool,
    /// Whether classes of classful qdiscs are exported too (default `true`).
    pub(crate) classes: bool,
}

impl Default for QdiscConfig {
    fn default() -> Self {
        QdiscConfig {
            enabled: true,
            classes: true,
        }
    }
}

/// Why the `qdisc` collector could not start or a cycle failed.
#[derive(Debug, thiserror::Error)]
pub enum QdiscError {
    #[error("qdisc collector: {0}")]
    Socket(#[from] LinkError),
    #[error("rtnetlink {op}: {source}")]
    Io { op: &'static str, source: io::Error },
    #[error("rtnetlink {op}: no reply within {timeout:?}")]
    Timeout {
        op: &'static str,
        timeout: std::time::Duration,
    },
    #[error("rtnetlink {op}: kernel error: {source}")]
    Kernel { op: &'static str, source: io::Error },
    #[error("rtnetlink {op}: malformed reply (message at byte {offset}{}): {what}",
        ifindex.map(|i| format!(", interface {i}")).unwrap_or_default())]
    Malformed {
        op: &'static str,
        offset: usize,
        ifindex: Option<u32>,
        what: Malformed,
    },
    #[error("rtnetlink {op}: a {len}-byte datagram exceeds the {max}-byte buffer limit")]
    TooLarge {
        op: &'static str,
        len: usize,
        max: usize,
    },
    #[error("rtnetlink {op}: qdiscs kept changing during {attempts} dumps")]
    Inconsistent { op: &'static str, attempts: u32 },
}

/// Qdisc and class statistics over rtnetlink.
pub struct QdiscCollector {
    sock: OwnedFd,
    portid: u32,
    seq: u32,
    buf: Vec<u8>,
    dirty: bool,
    table: Table,
}

impl std::fmt::Debug for QdiscCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QdiscCollector")
            .field("series", &self.table.series.len())
            .finish_non_exhaustive()
    }
}

impl QdiscCollector {
    /// Opens an rtnetlink socket in the calling thread's network namespace.
    pub fn new(config: &QdiscConfig) -> Result<QdiscCollector, QdiscError> {
        let (sock, portid) = links::open_socket(0, 0)?;
        Ok(QdiscCollector {
            sock,
            portid,
            seq: 0,
            buf: vec![0; INITIAL_BUF],
            dirty: false,
            table: Table {
                classes: config.classes,
                ..Table::default()
            },
        })
    }

    /// Number of qdiscs and classes exported.
    #[cfg(feature = "internals")]
    pub fn exported(&self) -> usize {
        self.table.series.len()
    }

    /// Dumps every qdisc, then the classes of interfaces with classful qdiscs.
    pub(crate) fn update(&mut self, links: &Links) -> Result<(), QdiscError> {
        let fd = self.sock.as_raw_fd();
        if self.dirty {
            links::drain(fd, &mut self.buf, None);
            self.dirty = false;
        }
        self.table.stamp += 1;
        self.table.cursor = 0;
        self.table.classful.clear();
        let mut complete = self.dump(links, RTM_GETQDISC, 0)?;
        let mut i = 0;
        while i < self.table.classful.len() {
            let ifindex = self.table.classful[i];
            complete &= self.dump(links, RTM_GETTCLASS, ifindex)?;
            i += 1;
        }
        if complete {
            let stamp = self.table.stamp;
            self.table.series.retain(|s| s.seen == stamp);
        }
        Ok(())
    }

    /// Applies the reply datagrams of a qdisc dump and then of class dumps (`classes`) as
    /// [`QdiscCollector::update`] would, without a socket, against the interface table
    /// `links`; each dump's sequence number and port id are those of its first message.
    /// Returns the number of series exported, or the first dump's error. The entry point
    /// of the fuzz target `rtnetlink` (`fuzz/`) and of tests.
    #[cfg(feature = "internals")]
    pub fn apply_replies(
        links: &Links,
        qdiscs: &[&[u8]],
        classes: &[&[&[u8]]],
    ) -> Result<usize, QdiscError> {
        let mut table = Table {
            classes: true,
            ..Table::default()
        };
        table.stamp += 1;
        let mut complete = true;
        for (class, datagrams) in
            std::iter::once((false, qdiscs)).chain(classes.iter().map(|c| (true, *c)))
        {
            let (seq, portid) = datagrams
                .iter()
                .find(|d| d.len() >= links::NLMSG_HDRLEN)
                .map_or((0, 0), |d| (links::read_u32(d, 8), links::read_u32(d, 12)));
            let mut dump = Dump {
                op: if class {
                    "RTM_GETTCLASS dump"
                } else {
                    "RTM_GETQDISC dump"
                },
                seq,
                portid,
                class,
                interrupted: false,
                error: None,
            };
            let mut done = false;
            for data in datagrams {
                match table.feed(links, &mut dump, data) {
                    Step::More => {}
                    Step::Done | Step::Abort => {
                        done = true;
                        break;
                    }
                }
            }
            if let Some(e) = dump.error {
                return Err(e);
            }
            complete &= done && !dump.interrupted;
        }
        if complete {
            let stamp = table.stamp;
            table.series.retain(|s| s.seen == stamp);
        }
        Ok(table.series.len())
    }

    /// One dump, retried while truncated or interrupted. `Ok(false)`: it never completed
    /// (the series it did report are updated; none is removed).
    fn dump(&mut self, links: &Links, ty: u16, ifindex: u32) -> Result<bool, QdiscError> {
        let op = if ty == RTM_GETQDISC {
            "RTM_GETQDISC dump"
        } else {
            "RTM_GETTCLASS dump"
        };
        let fd = self.sock.as_raw_fd();
        for _ in 0..MAX_ATTEMPTS {
            self.seq = self.seq.wrapping_add(1);
            let mut body = [0u8; TCMSG_LEN];
            body[4..8].copy_from_slice(&ifindex.to_ne_bytes());
            links::send_dump_request(fd, ty, self.seq, &body)
                .map_err(|source| QdiscError::Io { op, source })?;
            let mut dump = Dump {
                op,
                seq: self.seq,
                portid: self.portid,
                class: ty == RTM_GETTCLASS,
                interrupted: false,
                error: None,
            };
            match self.receive(fd, links, &mut dump)? {
                false => continue,
                true if dump.interrupted => continue,
                true => {}
            }
            return match dump.error {
                Some(e) => Err(e),
                None => Ok(true),
            };
        }
        Err(QdiscError::Inconsistent {
            op,
            attempts: MAX_ATTEMPTS,
        })
    }

    /// Reads the replies of `dump`; `Ok(false)` when a datagram was cut (the buffer grew).
    fn receive(&mut self, fd: RawFd, links: &Links, dump: &mut Dump) -> Result<bool, QdiscError> {
        loop {
            let n = match links::recv(fd, &mut self.buf, 0) {
                Ok(n) => n,
                Err(e) => {
                    self.dirty = true;
                    return Err(if e.kind() == io::ErrorKind::WouldBlock {
                        QdiscError::Timeout {
                            op: dump.op,
                            timeout: RECV_TIMEOUT,
                        }
                    } else {
                        QdiscError::Io {
                            op: dump.op,
                            source: e,
                        }
                    });
                }
            };
            if n > self.buf.len() {
                links::drain(fd, &mut self.buf, Some(dump.seq));
                if n > MAX_BUF {
                    return Err(QdiscError::TooLarge {
                        op: dump.op,
                        len: n,
                        max: MAX_BUF,
                    });
                }
                self.buf
                    .resize(n.next_power_of_two().clamp(INITIAL_BUF, MAX_BUF), 0);
                return Ok(false);
            }
            match self.table.feed(links, dump, &self.buf[..n]) {
                Step::More => {}
                Step::Done => return Ok(true),
                Step::Abort => {
                    links::drain(fd, &mut self.buf, Some(dump.seq));
                    return Ok(true);
                }
            }
        }
    }
}

impl Collector for QdiscCollector {
    fn name(&self) -> &'static str {
        "qdisc"
    }

    fn metrics(&self) -> &'static [&'static Metric] {
        METRICS
    }

    fn collect(&mut self, links: &Links) -> Result<(), CollectError> {
        Ok(self.update(links)?)
    }

    fn visit(&self, visitor: &mut dyn Visitor) {
        for s in &self.table.series {
            let queueless = match &*s.kind {
                // `noqueue` has no enqueue function: the kernel transmits past it and counts
                // nothing. `noop` (a device that is down) is the kernel's one shared
                // qdisc, which frees what it gets without counting.
                "noqueue" | "noop" => continue,
                // Classify only: no queue, no shaping, no requeue; packets, bytes and
                // drops (TC_ACT_SHOT) count.
                "ingress" | "clsact" => true,
                _ => false,
            };
            let (a, st) = (&s.attrs[..], &s.stats);
            visitor.point(&QDISC_PACKETS, a, Number::U64(st.packets));
            visitor.point(&QDISC_BYTES, a, Number::U64(st.bytes));
            visitor.point(&QDISC_DROPS, a, Number::U64(st.drops));
            if queueless {
                continue;
            }
            visitor.point(&QDISC_OVERLIMITS, a, Number::U64(st.overlimits));
            if let Some(r) = st.requeues {
                visitor.point(&QDISC_REQUEUES, a, Number::U64(r));
            }
            visitor.point(&QDISC_BACKLOG, a, Number::U64(st.backlog));
            visitor.point(&QDISC_QLEN, a, Number::U64(st.qlen));
        }
    }
}
