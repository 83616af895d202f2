//! Drop locations (`drops.locations`): the kernel function that freed each dropped packet,
//! named from `/proc/kallsyms` once per new address.
//!
//! The probe puts the tracepoint's `location` (a return address inside the function that
//! called `kfree_skb_reason`) into the key. Each address is looked up once, when its first
//! key appears, and remembered with the start of its function; keys whose addresses lie in
//! one function share one series, whose `drop.location` is the function's name (no offset,
//! so one function is one series however many drop sites it has). At most `capacity`
//! distinct functions are named: drops in further functions keep their other attributes,
//! go without `drop.location`, and are counted in `retina.drop.location.overflow`.

use std::collections::HashMap;

use opentelemetry::{StringValue, Value};

use super::kallsyms::Kallsyms;

/// The series location of an address whose function could not be named (or a key without
/// a location): the series carries no `drop.location`.
pub(crate) const UNNAMED: u64 = 0;
/// The series location of addresses below every kernel symbol: `drop.location="unknown"`.
/// Not a function start (those are kernel addresses, far above).
pub(crate) const UNKNOWN: u64 = 1;

/// Default of `drops.locations_capacity`.
pub const DEFAULT_CAPACITY: u32 = 256;

pub struct Locations {
    symbols: Kallsyms,
    /// Address in a key → the location of its series (a function start, [`UNNAMED`] or
    /// [`UNKNOWN`]).
    known: HashMap<u64, u64>,
    /// Series location → its `drop.location` value, built once.
    names: HashMap<u64, Value>,
    capacity: usize,
}

impl Locations {
    pub fn new(symbols: Kallsyms, capacity: u32) -> Self {
        Locations {
            symbols,
            known: HashMap::new(),
            names: HashMap::new(),
            capacity: capacity as usize,
        }
    }

    /// The series location of `addr`, if it has been seen: no allocation, no lookup in
    /// the symbol table.
    pub(crate) fn get(&self, addr: u64) -> Option<u64> {
        if addr == 0 {
            return Some(UNNAMED);
        }
        self.known.get(&addr).copied()
    }

    /// The series location of `addr`, naming it from the symbol table the first time.
    pub(crate) fn learn(&mut self, addr: u64) -> u64 {
        if let Some(l) = self.get(addr) {
            return l;
        }
        let (location, name) = match self.symbols.lookup(addr) {
            Some((start, name)) => (start, name),
            None => (UNKNOWN, "unknown"),
        };
        let location = if self.names.contains_key(&location) {
            location
        } else if self.names.len() < self.capacity {
            self.names
                .insert(location, Value::String(StringValue::from(name.to_string())));
            location
        } else {
            UNNAMED
        };
        self.known.insert(addr, location);
        location
    }

    /// The `drop.location` of a series location; `None` for [`UNNAMED`].
    pub(crate) fn name(&self, location: u64) -> Option<&Value> {
        self.names.get(&location)
    }

    /// Functions named so far (at most the capacity).
    pub(crate) fn named(&self) -> usize {
        self.names.len()
    }

}

#[cfg(test)]
mod tests;
