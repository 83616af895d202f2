//! What `retina-agent check` asks of the drop probe, without the collector: does this
//! kernel's BTF have what the probe needs, and does the probe load and attach?

use retina_ebpf_common::BTF_PROGRAM_NAME;


use super::probe::{
    DropProbe, Hook, ProbeError, ProbeOptions, SocketOwnerSupport, offsets_from_btf,
};
use crate::kernel::btf::Btf;

/// Which flavour of the program attached to `kfree_skb`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Attached {
    /// The BTF-enabled tracepoint (`tp_btf`).
    BtfTracepoint,
    /// The raw tracepoint.
    RawTracepoint,
}

impl Attached {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Attached::BtfTracepoint => "BTF-enabled tracepoint",
            Attached::RawTracepoint => "raw tracepoint",
        }
    }
}

/// The outcome of the preflight.
#[derive(Debug)]
pub(crate) struct Preflight {
    /// Whether the kernel's `kfree_skb` tracepoint carries the drop reason and BTF has the
    /// `sk_buff`/`net_device` fields the program reads; if so, which socket owners it sees.
    pub(crate) tracepoint: Result<SocketOwnerSupport, ProbeError>,
    /// Loading the probe as the agent would (a drop map of `max_entries` entries) and
    /// attaching it, then detaching it: which flavour attached, or why it did not.
    pub(crate) load: Result<Attached, ProbeError>,
}

/// Checks the tracepoint in `btf`, then really loads, attaches and detaches the probe.
pub(crate) fn preflight(btf: &Btf, max_entries: u32, hook: Hook) -> Preflight {
    Preflight {
        tracepoint: tracepoint(btf),
        load: load(btf, max_entries, hook),
    }
}

/// Whether the probe finds its tracepoint and structure layout in `btf`.
pub(crate) fn tracepoint(btf: &Btf) -> Result<SocketOwnerSupport, ProbeError> {
    offsets_from_btf(btf).map(|o| SocketOwnerSupport::of(&o))
}

fn load(btf: &Btf, max_entries: u32, hook: Hook) -> Result<Attached, ProbeError> {
    let options = ProbeOptions {
        max_entries,
        hook,
        ..ProbeOptions::default()
    };
    let probe = DropProbe::load(btf, &options)?;
    let attached = match probe.program_name() {
        BTF_PROGRAM_NAME => Attached::BtfTracepoint,
        _ => Attached::RawTracepoint,
    };
    // Dropping detaches the program and frees its maps.
    drop(probe);
    Ok(attached)
}
