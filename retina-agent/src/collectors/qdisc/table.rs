//! The qdisc collector's series table and the dump state that feeds it: rtnetlink
//! datagrams of one `RTM_GETQDISC` or `RTM_GETTCLASS` dump are walked in place and
//! applied to the table, updating known series without allocating.

use std::{io, sync::Arc};

use opentelemetry::KeyValue;

use super::{
    ATTR_CLASS, ATTR_HANDLE, ATTR_KIND, ATTR_PARENT, NO_CLASSES, QdiscError,
    msg::{RTM_NEWQDISC, RTM_NEWTCLASS, TcMsg, TcStats, classid, parse_tc, qdisc_handle},
};
use crate::{
    kernel::links::{
        Links, Malformed, NLM_F_DUMP_INTR, NLMSG_DONE, NLMSG_ERROR, NLMSG_HDRLEN, NLMSG_NOOP,
        NLMSG_OVERRUN, align4, lossy_arc, lossy_eq, read_i32, read_u16, read_u32,
    },
    model::{attr, in_key_order},
};

/// One exported qdisc or class.
#[derive(Debug)]
pub(super) struct Series {
    pub(super) key: (u32, bool, u32, u32),
    /// [`Link::instance`](crate::kernel::links::Link::instance) the attributes were built for.
    pub(super) instance: u64,
    /// [`Links::generation`] when `instance` was last checked.
    pub(super) generation: u64,
    pub(super) kind: Arc<str>,
    /// Not a kind of [`NO_CLASSES`].
    pub(super) classful: bool,
    pub(super) attrs: [KeyValue; 5],
    pub(super) stats: TcStats,
    pub(super) seen: u64,
}

#[derive(Debug, Default)]
pub(super) struct Table {
    /// Sorted by key (ifindex, is class, handle, parent).
    pub(super) series: Vec<Series>,
    pub(super) stamp: u64,
    /// Interfaces with a classful qdisc, from this cycle's qdisc dump.
    pub(super) classful: Vec<u32>,
    pub(super) classes: bool,
    /// Index of the series after the one last applied.
    pub(super) cursor: usize,
}

/// State of one dump while its datagrams arrive.
pub(super) struct Dump {
    pub(super) op: &'static str,
    pub(super) seq: u32,
    pub(super) portid: u32,
    pub(super) class: bool,
    pub(super) interrupted: bool,
    pub(super) error: Option<QdiscError>,
}

pub(super) enum Step {
    More,
    Done,
    Abort,
}

impl Table {
    pub(super) fn feed(&mut self, links: &Links, dump: &mut Dump, data: &[u8]) -> Step {
        let mut off = 0;
        while off < data.len() {
            let left = data.len() - off;
            let len = if left >= NLMSG_HDRLEN {
                read_u32(data, off) as usize
            } else {
                0
            };
            if len < NLMSG_HDRLEN || len > left {
                dump.error.get_or_insert(QdiscError::Malformed {
                    op: dump.op,
                    offset: off,
                    ifindex: None,
                    what: if left < NLMSG_HDRLEN {
                        Malformed::TrailingBytes { left }
                    } else {
                        Malformed::MessageLength {
                            len: len as u32,
                            avail: left,
                        }
                    },
                });
                return Step::Abort;
            }
            let ty = read_u16(data, off + 4);
            let flags = read_u16(data, off + 6);
            let seq = read_u32(data, off + 8);
            let pid = read_u32(data, off + 12);
            let payload = &data[off + NLMSG_HDRLEN..off + len];
            let at = off;
            off += align4(len);
            if seq != dump.seq || pid != dump.portid {
                continue;
            }
            if flags & NLM_F_DUMP_INTR != 0 {
                dump.interrupted = true;
            }
            match ty {
                NLMSG_NOOP => {}
                NLMSG_DONE | NLMSG_ERROR => {
                    let err = payload.get(..4).map_or(0, |b| read_i32(b, 0));
                    if err < 0 {
                        dump.error.get_or_insert(QdiscError::Kernel {
                            op: dump.op,
                            source: io::Error::from_raw_os_error(err.saturating_neg()),
                        });
                    }
                    return Step::Done;
                }
                NLMSG_OVERRUN => {
                    dump.error.get_or_insert(QdiscError::Kernel {
                        op: dump.op,
                        source: io::Error::from_raw_os_error(libc::ENOBUFS),
                    });
                    return Step::Abort;
                }
                RTM_NEWQDISC | RTM_NEWTCLASS if (ty == RTM_NEWTCLASS) == dump.class => {
                    match parse_tc(payload) {
                        Ok(msg) => self.apply(links, dump.class, &msg),
                        Err((ifindex, what)) => {
                            dump.error.get_or_insert(QdiscError::Malformed {
                                op: dump.op,
                                offset: at,
                                ifindex,
                                what,
                            });
                        }
                    }
                }
                _ => {}
            }
        }
        Step::More
    }

    pub(super) fn apply(&mut self, links: &Links, class: bool, m: &TcMsg<'_>) {
        let key = (m.ifindex, class, m.handle, m.parent);
        // Fast path: dumps come in the same order every cycle, so the series after the
        // last one applied is usually this one; its interface is known to be the same
        // device while the link table's generation has not moved.
        let found = match self.series.get(self.cursor) {
            Some(s) if s.key == key => Ok(self.cursor),
            _ => self.series.binary_search_by_key(&key, |s| s.key),
        };
        if let (Ok(i), Some(stats)) = (found, m.stats) {
            let generation = links.generation();
            let s = &mut self.series[i];
            let same_kind = s.kind.as_bytes() == m.kind || lossy_eq(m.kind, &s.kind);
            let same_link = s.generation == generation
                || links
                    .get(m.ifindex)
                    .is_some_and(|l| l.instance == s.instance);
            if same_kind && same_link {
                s.generation = generation;
                s.stats = stats;
                s.seen = self.stamp;
                let classful = s.classful;
                self.cursor = i + 1;
                self.note_classful(class, classful, m.ifindex);
                return;
            }
        }
        let classful = !NO_CLASSES.iter().any(|k| k.as_bytes() == m.kind);
        self.note_classful(class, classful, m.ifindex);
        let Some(stats) = m.stats else { return };
        // An interface the link table does not know yet is picked up next cycle.
        let Some(link) = links.get(m.ifindex) else {
            return;
        };
        let kind = lossy_arc(m.kind);
        let handle = if class {
            classid(m.handle)
        } else {
            qdisc_handle(m.handle)
        };
        let s = Series {
            key,
            instance: link.instance,
            generation: links.generation(),
            attrs: in_key_order([
                KeyValue::new(attr::INTERFACE_NAME, link.name.clone()),
                KeyValue::new(ATTR_KIND, kind.clone()),
                KeyValue::new(ATTR_HANDLE, Arc::<str>::from(handle)),
                KeyValue::new(ATTR_PARENT, Arc::<str>::from(classid(m.parent))),
                KeyValue::new(ATTR_CLASS, if class { "class" } else { "qdisc" }),
            ]),
            kind,
            classful,
            stats,
            seen: self.stamp,
        };
        let i = match found {
            Ok(i) => {
                self.series[i] = s;
                i
            }
            Err(i) => {
                self.series.insert(i, s);
                i
            }
        };
        self.cursor = i + 1;
    }

    /// Remembers that the interface of a qdisc of a classful kind needs a class dump.
    pub(super) fn note_classful(&mut self, class: bool, classful: bool, ifindex: u32) {
        if !class && classful && self.classes && self.classful.last() != Some(&ifindex) {
            self.classful.push(ifindex);
        }
    }
}
