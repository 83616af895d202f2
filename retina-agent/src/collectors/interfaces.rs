//! Per-interface state kept across collection cycles, keyed by ifindex: the bookkeeping
//! the `netdev`, `ethtool` and `ethtool_link` collectors share.
//!
//! A cycle calls [`Interfaces::begin`], then [`Interfaces::track`] for every link of the
//! cycle's [`Links`](crate::kernel::links::Links) table, then [`Interfaces::end`]. The caller's
//! closure builds an entry when its ifindex first appears, or when the ifindex now names
//! another device (another [`Link::instance`] or another name); `end` forgets every entry
//! the cycle did not track. Entries live in one vector sorted by ifindex and are updated in
//! place, so a cycle in which no interface appears allocates nothing.

use std::sync::Arc;

use crate::kernel::links::Link;

/// What [`Interfaces::track`] did with a link's entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// The entry describes the same device as in the previous cycle.
    Kept,
    /// The ifindex is new: its entry was just built.
    Added,
    /// The ifindex now names another device: its entry was just rebuilt, nothing of the
    /// old one is kept.
    Replaced,
}

/// Per-ifindex state of type `T`, for the interfaces of the last cycle's link table.
#[derive(Debug)]
pub(crate) struct Interfaces<T> {
    /// Sorted by ifindex.
    entries: Vec<Entry<T>>,
    cycle: u64,
    /// At most this many entries; [`Interfaces::track`] ignores interfaces beyond it.
    limit: usize,
}

#[derive(Debug)]
struct Entry<T> {
    ifindex: u32,
    /// [`Link::instance`] of the device the value was built for.
    instance: u64,
    /// The name the value was built for (its attribute sets carry it).
    name: Arc<str>,
    /// Cycle that last tracked the interface.
    seen: u64,
    value: T,
}

impl<T> Default for Interfaces<T> {
    fn default() -> Self {
        Interfaces::new()
    }
}

impl<T> Interfaces<T> {
    /// No limit on the number of interfaces.
    pub(crate) fn new() -> Self {
        Interfaces::with_limit(usize::MAX)
    }

    /// At most `limit` interfaces are tracked; [`Interfaces::track`] returns `None` for
    /// any new one beyond.
    pub(crate) fn with_limit(limit: usize) -> Self {
        Interfaces {
            entries: Vec::new(),
            cycle: 0,
            limit,
        }
    }

    /// Starts a cycle; returns its number (the first cycle is 1).
    pub(crate) fn begin(&mut self) -> u64 {
        self.cycle += 1;
        self.cycle
    }

    /// The current cycle's number (0 before the first [`Interfaces::begin`]).
    pub(crate) fn cycle(&self) -> u64 {
        self.cycle
    }

    /// Marks `link` as seen this cycle and returns its entry, built with `make` if the
    /// ifindex is new or now names another device. `None` (and `make` not called) when
    /// the ifindex is new and the limit is reached.
    pub(crate) fn track(
        &mut self,
        link: &Link,
        make: impl FnOnce(&Link) -> T,
    ) -> Option<(&mut T, Change)> {
        let cycle = self.cycle;
        let (i, change) = match self
            .entries
            .binary_search_by_key(&link.ifindex, |e| e.ifindex)
        {
            Ok(i) => {
                let e = &mut self.entries[i];
                if e.instance == link.instance && *e.name == *link.name {
                    (i, Change::Kept)
                } else {
                    *e = Entry::new(link, cycle, make(link));
                    (i, Change::Replaced)
                }
            }
            Err(_) if self.entries.len() >= self.limit => return None,
            Err(i) => {
                self.entries.insert(i, Entry::new(link, cycle, make(link)));
                (i, Change::Added)
            }
        };
        let e = &mut self.entries[i];
        e.seen = cycle;
        Some((&mut e.value, change))
    }

    /// Ends the cycle: forgets every interface it did not track. Returns how many.
    pub(crate) fn end(&mut self) -> usize {
        let (cycle, before) = (self.cycle, self.entries.len());
        self.entries.retain(|e| e.seen == cycle);
        before - self.entries.len()
    }

    /// The entry of `ifindex`, if it is tracked.
    #[cfg(any(test, feature = "internals"))]
    pub(crate) fn get(&self, ifindex: u32) -> Option<&T> {
        self.index(ifindex).map(|i| &self.entries[i].value)
    }

    /// The entry of `ifindex`, if it is tracked.
    pub(crate) fn get_mut(&mut self, ifindex: u32) -> Option<&mut T> {
        self.index(ifindex).map(|i| &mut self.entries[i].value)
    }

    /// Number of interfaces tracked.
    #[cfg(any(test, feature = "internals"))]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries in ifindex order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &T> {
        self.entries.iter().map(|e| &e.value)
    }

    /// The tracked ifindexes, in order.
    #[cfg(test)]
    pub(crate) fn ifindexes(&self) -> impl Iterator<Item = u32> + '_ {
        self.entries.iter().map(|e| e.ifindex)
    }

    fn index(&self, ifindex: u32) -> Option<usize> {
        self.entries
            .binary_search_by_key(&ifindex, |e| e.ifindex)
            .ok()
    }
}

impl<T> Entry<T> {
    fn new(link: &Link, seen: u64, value: T) -> Self {
        Entry {
            ifindex: link.ifindex,
            instance: link.instance,
            name: link.name.clone(),
            seen,
            value,
        }
    }
}

#[cfg(test)]
mod tests;
