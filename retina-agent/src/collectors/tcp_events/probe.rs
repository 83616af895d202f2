//! Loads the TCP event programs (`retina-ebpf/src/tcp.rs`), attaches each to its
//! BTF-enabled tracepoint (no tracefs needed), and reads their per-CPU map without
//! allocating.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, RawFd},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Map, MapData},
    programs::{BtfTracePoint, tp_btf::BtfTracePointLink},
};
use retina_ebpf_common::tcp::{
    DEFAULT_TCP_MAX_ENTRIES, TCP_COUNTS_MAP, TCP_OFFSETS_GLOBAL, TCP_OFFSETS_RETRANSMIT_ERR,
    TCP_OFFSETS_VALID, TCP_OVERFLOW_MAP, TCP_PROGRAMS, TcpCounts, TcpOffsets,
};

use crate::kernel::{
    btf::{Btf, BtfError},
    sys::{BPF_MAP_DELETE_ELEM, BPF_MAP_LOOKUP_ELEM, bpf},
};

/// The TCP event programs, embedded like the drop program.
static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("RETINA_TCP_OBJECT"));

const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;

#[derive(Debug, thiserror::Error)]
pub enum TcpProbeError {
    #[error(
        "kernel structure layout: {0} (the TCP event programs read struct sock fields from BTF)"
    )]
    Layout(#[source] BtfError),
    #[error("{0}")]
    Capabilities(String),
    #[error("none of the TCP tracepoints ({}) is in the kernel's BTF", names())]
    NoTracepoint,
    #[error("loading the TCP event programs: {0}")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("TCP event program `{program}` on tracepoint `{tracepoint}`: {source}")]
    Program {
        program: &'static str,
        tracepoint: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error(
        "the kernel's BTF (/sys/kernel/btf/vmlinux) cannot be read: the TCP event programs are BTF-enabled tracepoints"
    )]
    NoKernelBtf,
    #[error("the TCP event object has no `{0}` {1}")]
    Missing(&'static str, &'static str),
    #[error("eBPF map `{map}`: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot count possible CPUs ({path}): {source}")]
    Cpus {
        path: &'static str,
        #[source]
        source: io::Error,
    },
}

fn names() -> String {
    TCP_PROGRAMS
        .iter()
        .map(|(_, tp)| *tp)
        .collect::<Vec<_>>()
        .join(", ")
}

/// What the running kernel offers the programs: the tracepoints it has, and the offsets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Support {
    pub(crate) offsets: TcpOffsets,
    /// The tracepoints of [`TCP_PROGRAMS`] the kernel has (`btf_trace_NAME` in its BTF).
    pub(crate) present: Vec<&'static str>,
    /// Those it lacks: their events are not counted.
    pub(crate) missing: Vec<&'static str>,
}

/// Derives the offsets and the tracepoints present from `btf`; `host_netns`: the inode of
/// the network namespace whose sockets are counted.
pub(crate) fn support(btf: &Btf, host_netns: u32) -> Result<Support, TcpProbeError> {
    let field = |s: &str, f: &str| btf.field_offset(s, f).map_err(TcpProbeError::Layout);
    let mut offsets = TcpOffsets {
        sk_cgroup: field("sock", "sk_cgrp_data.cgroup")?,
        cgroup_kn: field("cgroup", "kn")?,
        kn_id: field("kernfs_node", "id")?,
        sk_state: field("sock", "__sk_common.skc_state")?,
        sk_protocol: field("sock", "sk_protocol")?,
        sk_net: field("sock", "__sk_common.skc_net.net")?,
        net_inum: field("net", "ns.inum")?,
        host_netns,
        flags: TCP_OFFSETS_VALID,
        _pad: 0,
    };
    // Newer kernels pass `err` and call the tracepoint for failed retransmits too.
    if btf.tracepoint_args("tcp_retransmit_skb").is_some_and(|n| n >= 3) {
        offsets.flags |= TCP_OFFSETS_RETRANSMIT_ERR;
    }
    let (present, missing) = split(|tp| btf.tracepoint_args(tp).is_some());
    let support = Support {
        offsets,
        present,
        missing,
    };
    if support.present.is_empty() {
        return Err(TcpProbeError::NoTracepoint);
    }
    Ok(support)
}

/// The tracepoints of [`TCP_PROGRAMS`] that `has` says the kernel has, and those it lacks.
fn split(has: impl Fn(&str) -> bool) -> (Vec<&'static str>, Vec<&'static str>) {
    TCP_PROGRAMS.iter().map(|(_, tp)| *tp).partition(|tp| has(tp))
}

/// The attached programs. Dropping it detaches them and frees the maps.
///
/// It keeps one descriptor per attachment (the link, which holds its program in the
/// kernel) and one per map it reads: six. The object, its programs' descriptors, its
/// read-only data and its BTF are closed once the programs are attached, so that the
/// agent under a low `LimitNOFILE=` is not short of descriptors for its other work.
pub struct TcpProbe {
    /// Only for the bench (its programs' run statistics).
    #[cfg_attr(not(feature = "internals"), allow(dead_code, reason = "read by `program_fd`, for the bench"))]
    ebpf: Option<Ebpf>,
    _links: Vec<BtfTracePointLink>,
    counts: MapData,
    overflow: MapData,
    ncpus: usize,
    max_entries: u32,
    /// One value per possible CPU, for lookups.
    values: Vec<TcpCounts>,
    missing: Vec<&'static str>,
}

impl std::fmt::Debug for TcpProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpProbe")
            .field("missing", &self.missing)
            .finish_non_exhaustive()
    }
}

impl TcpProbe {
    /// Loads the programs of the tracepoints `btf` has and attaches them.
    pub(crate) fn load(btf: &Btf, host_netns: u32, max_entries: u32) -> Result<TcpProbe, TcpProbeError> {
        Self::load_with(btf, host_netns, max_entries, false)
    }

    /// [`Self::load`], keeping the programs' descriptors when `keep_programs` (the bench
    /// reads their run statistics).
    pub(crate) fn load_with(
        btf: &Btf,
        host_netns: u32,
        max_entries: u32,
        keep_programs: bool,
    ) -> Result<TcpProbe, TcpProbeError> {
        crate::collectors::drops::probe::check_capabilities()
            .map_err(|e| TcpProbeError::Capabilities(e.to_string()))?;
        let support = support(btf, host_netns)?;
        let ncpus =
            aya::util::nr_cpus().map_err(|(path, source)| TcpProbeError::Cpus { path, source })?;
        let mut ebpf = EbpfLoader::new()
            .btf(None)
            .override_global(TCP_OFFSETS_GLOBAL, &support.offsets, true)
            .map_max_entries(TCP_COUNTS_MAP, max_entries.max(1))
            .load(OBJECT)
            .map_err(|e| TcpProbeError::Load(Box::new(e)))?;
        let kernel_btf = aya::Btf::from_sys_fs().map_err(|_| TcpProbeError::NoKernelBtf)?;
        let mut links = Vec::with_capacity(TCP_PROGRAMS.len());
        for (program, tracepoint) in TCP_PROGRAMS {
            if !support.present.contains(&tracepoint) {
                continue;
            }
            let err = |source| TcpProbeError::Program {
                program,
                tracepoint,
                source,
            };
            let p: &mut BtfTracePoint = ebpf
                .program_mut(program)
                .ok_or(TcpProbeError::Missing(program, "program"))?
                .try_into()
                .map_err(err)?;
            p.load(tracepoint, &kernel_btf).map_err(err)?;
            let id = p.attach().map_err(err)?;
            // An owned link stays attached when the program's descriptor is closed.
            links.push(p.take_link(id).map_err(err)?);
        }
        drop(kernel_btf);
        let counts = take_map(&mut ebpf, TCP_COUNTS_MAP)?;
        let overflow = take_map(&mut ebpf, TCP_OVERFLOW_MAP)?;
        Ok(TcpProbe {
            ebpf: keep_programs.then_some(ebpf),
            _links: links,
            counts,
            overflow,
            ncpus,
            max_entries: max_entries.max(1),
            values: vec![TcpCounts::default(); ncpus],
            missing: support.missing,
        })
    }

    /// The loaded program `name` (one of [`TCP_PROGRAMS`]), for its run statistics (bench).
    #[cfg(feature = "internals")]
    pub fn program_fd(&self, name: &str) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.ebpf.as_ref()?.program(name)?.fd().ok().map(|fd| fd.as_fd())
    }

    /// The tracepoints this kernel lacks (their events are not counted).
    pub(crate) fn missing(&self) -> &[&'static str] {
        &self.missing
    }

    pub(crate) fn max_entries(&self) -> u32 {
        self.max_entries
    }

    /// Calls `f` with every cgroup id in the map and its counts summed over CPUs: one
    /// `bpf(2)` call per id to find it and one to read it; no allocation.
    pub(crate) fn read(&mut self, mut f: impl FnMut(u64, TcpCounts)) -> Result<(), TcpProbeError> {
        let err = |source| TcpProbeError::Map {
            map: TCP_COUNTS_MAP,
            source,
        };
        let mut key: Option<u64> = None;
        let mut next = 0u64;
        // A map never holds more than its capacity; the bound keeps a concurrently
        // changing map from looping forever.
        for _ in 0..=self.max_entries {
            let mut attr = ElemAttr {
                map_fd: self.counts.fd().as_fd().as_raw_fd() as u32,
                _pad: 0,
                key: key.as_ref().map_or(0, |k| k as *const u64 as u64),
                value: &mut next as *mut u64 as u64,
                flags: 0,
            };
            // SAFETY: a BPF_MAP_GET_NEXT_KEY attr for a map of `u64` keys, pointing at a
            // live key (or none: the first key) and a live `u64` for the next one.
            match unsafe { bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) } {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
                Err(e) => return Err(err(e)),
            }
            key = Some(next);
            match self.lookup(self.counts.fd().as_fd().as_raw_fd(), &next).map_err(err)? {
                Some(counts) => f(next, counts),
                None => continue, // Deleted in between.
            }
        }
        Ok(())
    }

    /// Events that found the map full, summed over CPUs.
    pub(crate) fn overflow(&mut self) -> Result<TcpCounts, TcpProbeError> {
        let fd = self.overflow.fd().as_fd().as_raw_fd();
        let counts = self
            .lookup(fd, &0u32)
            .map_err(|source| TcpProbeError::Map {
                map: TCP_OVERFLOW_MAP,
                source,
            })?;
        Ok(counts.unwrap_or_default())
    }

    /// Removes cgroup `id` from the map (its cgroup is gone); false when it was not there.
    pub(crate) fn remove(&mut self, id: u64) -> Result<bool, TcpProbeError> {
        let mut attr = ElemAttr {
            map_fd: self.counts.fd().as_fd().as_raw_fd() as u32,
            _pad: 0,
            key: &id as *const u64 as u64,
            value: 0,
            flags: 0,
        };
        // SAFETY: a BPF_MAP_DELETE_ELEM attr for a map of `u64` keys, pointing at a live key.
        match unsafe { bpf(BPF_MAP_DELETE_ELEM, &mut attr) } {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(source) => Err(TcpProbeError::Map {
                map: TCP_COUNTS_MAP,
                source,
            }),
        }
    }

    /// The per-CPU values of `key` in the per-CPU map `fd`, summed.
    fn lookup<K>(&mut self, fd: RawFd, key: &K) -> io::Result<Option<TcpCounts>> {
        let values = &mut self.values;
        let mut attr = ElemAttr {
            map_fd: fd as u32,
            _pad: 0,
            key: key as *const K as u64,
            value: values.as_mut_ptr() as u64,
            flags: 0,
        };
        // SAFETY: a BPF_MAP_LOOKUP_ELEM attr for a per-CPU map of `TcpCounts` (whose size
        // is a multiple of 8) keyed by `K`; the kernel writes one value per possible CPU,
        // and `values` holds `ncpus` of them.
        match unsafe { bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) } {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
            Err(e) => return Err(e),
        }
        let mut total = TcpCounts::default();
        for v in &values[..self.ncpus] {
            for (t, x) in total.events.iter_mut().zip(v.events) {
                *t = t.wrapping_add(x);
            }
        }
        Ok(Some(total))
    }
}

/// `union bpf_attr` for BPF_MAP_*_ELEM and BPF_MAP_GET_NEXT_KEY.
#[repr(C)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// Takes map `name` out of `ebpf` (its descriptor then lives as long as the probe).
fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<MapData, TcpProbeError> {
    match ebpf.take_map(name) {
        Some(Map::PerCpuHashMap(data) | Map::PerCpuArray(data)) => Ok(data),
        _ => Err(TcpProbeError::Missing(name, "map")),
    }
}

/// Default capacity of the per-cgroup map.
pub const DEFAULT_MAX_ENTRIES: u32 = DEFAULT_TCP_MAX_ENTRIES;

#[cfg(test)]
mod tests;
