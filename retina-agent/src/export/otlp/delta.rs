//! Delta temporality through synchronous counters bound to each series.
//!
//! Under cumulative temporality the OTLP output reads the collectors' counters through
//! observable instruments ([`super::pipeline`]): the SDK's `PrecomputedSum` drains its map on
//! every collect, which is also how a deleted interface's series leave the export. Under
//! delta that path reports every series on every export, a zero for one that did not move,
//! and pays the drain for each.
//!
//! Here each counter metric is a synchronous `Counter<u64>` instead. Before every collect
//! [`Changes::feed`] walks the metric's series and adds to each, through a handle bound to its
//! attributes (one atomic add), what it counted since the last feed. The SDK's delta collect
//! exports only the series that were added to, so **a series that did not move sends no
//! point**. A series the collectors no longer hold loses its handle, and the SDK evicts it
//! at its next collect without an update.
//!
//! The sum of every delta exported for a series is its value: its first feed adds the whole
//! value, as the observable path's first delta is the whole value; a value below the last
//! one is a counter that restarted, and its new value is the change. The last values outlive
//! a pipeline rebuild (grown cardinality limits: [`Changes::attach`]), so nothing counted in
//! between is lost or counted twice.
//!
//! Memory: one entry per series (its attributes, the last value and the handle), made when
//! the series first shows; the steady feed allocates nothing.

use std::collections::HashMap;

use foldhash::fast::RandomState;
use opentelemetry::{
    KeyValue,
    metrics::{BoundCounter, Counter},
};

use crate::model::Number;

use super::super::catalog::counter_value;

/// One series of a counter metric.
struct Series {
    /// The value at the last feed.
    last: u64,
    /// The value before the last feed, for [`Changes::rewind`].
    before: u64,
    /// Bound at the first change the series hands to the current pipeline's counter.
    bound: Option<BoundCounter<u64>>,
    /// The feed that last saw it.
    seen: u64,
    /// The feed that first saw it.
    born: u64,
}

#[derive(Default)]
struct Metric {
    /// The current pipeline's counter; `None` for a gauge.
    counter: Option<Counter<u64>>,
    series: HashMap<Box<[KeyValue]>, Series, RandomState>,
}

/// The last value of every series of every counter metric, by catalog index.
pub(super) struct Changes {
    metrics: Vec<Metric>,
    feed: u64,
}

impl Changes {
    /// State for `len` metrics (the catalog's), with no instrument yet.
    pub(super) fn new(len: usize) -> Changes {
        Changes {
            metrics: (0..len).map(|_| Metric::default()).collect(),
            feed: 0,
        }
    }

    /// Takes the counters of a new pipeline (`None` for a gauge), one per metric. The
    /// handles bound to the old ones are dropped; the last values stay, so the new
    /// pipeline's first export carries what was counted since the old one's last.
    pub(super) fn attach(&mut self, counters: Vec<Option<Counter<u64>>>) {
        for (m, c) in self.metrics.iter_mut().zip(counters) {
            m.counter = c;
            for s in m.series.values_mut() {
                s.bound = None;
            }
        }
    }

    /// Starts a feed: every metric's series are fed once in it.
    pub(super) fn begin(&mut self) {
        self.feed += 1;
    }

    /// Adds to the counter of metric `i` what each of its series counted since the last
    /// feed. `visit` hands over the metric's current points. Returns how many series it
    /// has (0 for a gauge). Series it no longer has are forgotten.
    pub(super) fn feed(
        &mut self,
        i: usize,
        visit: impl FnOnce(&mut dyn FnMut(&[KeyValue], Number)),
    ) -> usize {
        let feed = self.feed;
        let Some(Metric {
            counter: Some(counter),
            series,
        }) = self.metrics.get_mut(i)
        else {
            return 0;
        };
        let mut n = 0;
        visit(&mut |attrs, value| {
            let Some(v) = counter_value(value) else {
                return;
            };
            n += 1;
            match series.get_mut(attrs) {
                Some(s) => {
                    // Below the last value: the counter restarted from zero.
                    let change = v.checked_sub(s.last).unwrap_or(v);
                    s.before = s.last;
                    s.last = v;
                    s.seen = feed;
                    if change > 0 {
                        s.bound
                            .get_or_insert_with(|| counter.bind(attrs))
                            .add(change);
                    }
                }
                None => {
                    let bound = (v > 0).then(|| {
                        let b = counter.bind(attrs);
                        b.add(v);
                        b
                    });
                    series.insert(
                        attrs.into(),
                        Series {
                            last: v,
                            before: 0,
                            bound,
                            seen: feed,
                            born: feed,
                        },
                    );
                }
            }
        });
        // Every series seen is in the map (found or added): any more are gone.
        if series.len() != n {
            series.retain(|_, s| s.seen == feed);
        }
        n
    }

    /// Takes the last feed back, when the export it fed did not reach the collector (the
    /// send failed, or the collect was thrown away because the pipeline outgrew its
    /// cardinality limits and was rebuilt): the next feed adds those changes again. Series
    /// the last feed did not see (gone) stay forgotten.
    pub(super) fn rewind(&mut self) {
        let feed = self.feed;
        for m in &mut self.metrics {
            m.series.retain(|_, s| s.born != feed);
            for s in m.series.values_mut().filter(|s| s.seen == feed) {
                s.last = s.before;
            }
        }
    }

    /// Series held for metric `i` (for the tests).
    #[cfg(test)]
    pub(super) fn held(&self, i: usize) -> usize {
        self.metrics.get(i).map_or(0, |m| m.series.len())
    }
}

#[cfg(test)]
mod tests;
