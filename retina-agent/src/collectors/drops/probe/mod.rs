//! Loads and attaches the embedded eBPF program, and reads its maps without allocating.
//!
//! [`layout`] derives what the program needs to know about the kernel from BTF; `maps`
//! holds the reads and writes of its maps.

pub(crate) mod layout;
mod maps;

use std::{
    io,
    os::fd::{AsFd, OwnedFd},
};

use aya::{
    Ebpf, EbpfLoader,
    programs::{BtfTracePoint, RawTracePoint},
};
use retina_ebpf_common::{
    BTF_PROGRAM_NAME, CACHE_MAP, COUNTS_MAP, COUNTS_STRIDE_GLOBAL, DEFAULT_DROPS_MAX_ENTRIES, DROPS_MAP,
    DropKey, DropValue, EPOCH_MAP, FREE_SLOTS_MAP, LOCATIONS_GLOBAL, NOT_DROP_REASONS_GLOBAL,
    OFFSETS_GLOBAL, OVERFLOW_MAP, PROGRAM_NAME, PROTOCOLS_MAP, TRACEPOINT, USERNS_FREE_SLOTS_MAP,
    USERNS_OVERFLOW_MAP,
};

use retina_ebpf_common::flows::{
    FLOW_BUCKET_MAP, FLOW_EVENTS_MAP, FLOW_FRONT_MAP, FLOW_OFFSETS_GLOBAL, FLOW_SEQ_MAP, FLOW_STATS_MAP, FLOW_RATE_GLOBAL, FLOW_SNAPLEN_GLOBAL,
    FLOW_SNAPLEN_MAX, FLOWS_GLOBAL, FLOWS_MAP,
};

use self::maps::{Counts, batch_read, map_fd, push_slot, set_epoch, set_protocol_word};
pub use self::layout::{not_drop_reasons, offsets_from_btf};
pub(crate) use self::{layout::SocketOwnerSupport, maps::ReadBuffers};
use crate::{
    kernel::btf::{Btf, BtfError},
    kernel::sys::{CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN, effective_caps},
};

/// The eBPF object built by `cargo xtask build`, embedded so the binary is self-contained.
static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("RETINA_EBPF_OBJECT"));

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(
        "this retina-agent was built without its eBPF programs (no nightly rust-src or bpf-linker at build time): build it with `cargo xtask build`"
    )]
    NotEmbedded,
    #[error(
        "kernel structure layout: {0} (the drop probe derives sk_buff/net_device offsets from BTF)"
    )]
    Layout(#[source] BtfError),
    #[error(
        "the kernel's `{TRACEPOINT}` tracepoint has {found} arguments; counting by drop reason needs the `reason` argument (Linux 5.17 or newer)"
    )]
    NoReasonArgument { found: u32 },
    #[error("the kernel's BTF has no `{TRACEPOINT}` tracepoint (btf_trace_{TRACEPOINT})")]
    NoTracepoint,
    #[error(
        "missing capabilities {missing}: loading the drop probe needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN); run as root or grant them (see packaging/retina-agent.service)"
    )]
    Capabilities { missing: String },
    #[error("loading eBPF program `{PROGRAM_NAME}`: {0}")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("eBPF program `{PROGRAM_NAME}`: {0}")]
    Program(#[source] aya::programs::ProgramError),
    #[error("eBPF object has no `{0}` {1}")]
    Missing(&'static str, &'static str),
    #[error(
        "the BTF-enabled tracepoint was required, but the kernel's BTF (/sys/kernel/btf/vmlinux) cannot be read"
    )]
    NoKernelBtf,
    #[error(transparent)]
    Flows(#[from] super::flows::FlowMapError),
    #[error("reading eBPF map `{map}`: {source}")]
    Read {
        map: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("reading the run statistics of eBPF program `{program}`: {source}")]
    ProgramInfo {
        program: &'static str,
        source: io::Error,
    },
    #[error("drop map capacity {0} is too large for this machine's CPUs")]
    Capacity(u32),
    #[error("cannot count possible CPUs ({path}): {source}")]
    Cpus {
        path: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Fails early, with a message naming what is missing, instead of an EPERM from deep
/// inside the loader.
pub(crate) fn check_capabilities() -> Result<(), ProbeError> {
    let Some(caps) = effective_caps() else {
        return Ok(()); // Cannot tell: let the kernel decide.
    };
    let has = |c: u32| caps & (1 << c) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
        .into_iter()
        .filter(|(c, _)| !has(*c))
        .map(|(_, n)| n)
        .collect();
    Err(ProbeError::Capabilities {
        missing: missing.join(", "),
    })
}

/// Options for loading the probe.
#[derive(Clone, Debug)]
pub struct ProbeOptions {
    /// Capacity of the drop map (distinct reason/namespace/interface/protocol keys).
    pub max_entries: u32,
    /// Which tracepoint flavour to attach.
    pub hook: Hook,
    /// Put the drop location (the tracepoint's `location` address) into every key
    /// (`drops.locations`). Off by default: it multiplies the keys.
    pub locations: bool,
    /// Count drops per flow and sample them (`drops.flows`); off by default.
    pub flows: Option<super::flows::FlowOptions>,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            max_entries: DEFAULT_DROPS_MAX_ENTRIES,
            hook: Hook::Auto,
            locations: false,
            flows: None,
        }
    }
}

/// How the probe attaches to `kfree_skb` (`--drop-hook`: the variants' docs are its help).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Hook {
    /// The BTF-enabled tracepoint where it loads, else the raw tracepoint.
    #[default]
    Auto,
    /// Only the BTF-enabled tracepoint (`tp_btf`, direct loads).
    Btf,
    /// Only the raw tracepoint (`bpf_probe_read_kernel`): what kernels without BTF-enabled
    /// tracepoints run.
    Raw,
}

/// The part of a drop map of `capacity` keys that keys of network namespaces owned by a
/// non-initial user namespace may occupy (together): a sixteenth, at least one. Such a
/// namespace is one any unprivileged user can make (`unshare -Urn`) and do anything in, so
/// its keys must not be able to push the host's and root-created namespaces' drops into
/// overflow (issue 26); a rootless container makes a handful of keys.
pub(crate) fn user_ns_pool(capacity: u32) -> u32 {
    (capacity / 16).clamp(1, capacity.max(1))
}

/// The loaded, attached program. Dropping it detaches the program and frees the maps.
///
/// The program keeps each key's counts in its own slot of a memory-mapped array (one region
/// per CPU) and the key-to-slot mapping in a hash map (see retina-ebpf). A read sums the
/// slots of the known keys straight from the mapping, and re-reads the hash map only when
/// the program says it created keys. Removing a key frees its slot in two
/// steps: [`Self::remove`] deletes the mapping and invalidates the program's per-CPU caches
/// (a new epoch); the next [`Self::read`] waits for an RCU grace period, after which no
/// program run can still count into the slot, zeroes the slot and makes it free again.
pub struct DropProbe {
    ebpf: Ebpf,
    program: &'static str,
    /// The attached program, for its run statistics.
    program_fd: OwnedFd,
    drops: OwnedFd,
    counts: Counts,
    free_slots: OwnedFd,
    /// The free slots reserved for namespaces owned by non-initial user namespaces: those
    /// from `shared` up.
    userns_slots: OwnedFd,
    shared: u32,
    epoch_map: OwnedFd,
    overflow: OwnedFd,
    userns_overflow: OwnedFd,
    ncpus: usize,
    max_entries: u32,
    epoch: u32,
    /// Slots of removed keys, freed at the next read.
    pending: Vec<u32>,
    /// (slot, key) of every key in the map, as of the last re-read; capacity: the map's.
    pairs: Vec<(u32, DropKey)>,
    /// Keys the program had created (summed over CPUs) at the last re-read.
    created_seen: u64,
    /// Re-read the hash map at the next read (also the read after one that found new keys:
    /// the count of created keys may become visible a moment before the key does).
    reread: bool,
    /// With flows on: their maps, until taken.
    flows: Option<super::flows::FlowMaps>,
}

impl DropProbe {
    /// Derives offsets from `btf`, loads the embedded program with them, and attaches it
    /// to `kfree_skb` (no tracefs needed): as the BTF-enabled tracepoint where the kernel
    /// takes it, else as the raw tracepoint, or only one of them (`options.hook`).
    pub fn load(btf: &Btf, options: &ProbeOptions) -> Result<Self, ProbeError> {
        check_capabilities()?;
        let offsets = offsets_from_btf(btf)?;
        let not_drops = not_drop_reasons(btf);
        let ncpus =
            aya::util::nr_cpus().map_err(|(path, source)| ProbeError::Cpus { path, source })?;
        // One region of `stride` counts per possible CPU (the last entry of each: the keys
        // that CPU created).
        let too_big = || ProbeError::Capacity(options.max_entries);
        let stride = options.max_entries.checked_add(1).ok_or_else(too_big)?;
        let pool = user_ns_pool(options.max_entries);
        let shared = options.max_entries - pool;
        let counts_entries = u32::try_from(ncpus)
            .ok()
            .and_then(|n| n.checked_mul(stride))
            .ok_or_else(too_big)?;
        let flows = options.flows.unwrap_or_default();
        let flow_globals = (
            u32::from(options.flows.is_some()),
            super::flows::offsets_from_btf(btf),
            flows.per_cpu_rate(ncpus),
            flows.snaplen.min(FLOW_SNAPLEN_MAX),
        );
        let (flow_capacity, ring_bytes) = match options.flows {
            Some(f) => (f.capacity, super::flows::RING_BYTES),
            None => (1, 4096),
        };
        // The loader parses the kernel's BTF for its relocations (EbpfLoader::new) and
        // drops it with itself at the end of this statement; the attach point's copy is
        // parsed after that, so the two (~9 MiB each) are never alive together.
        if OBJECT.is_empty() {
            return Err(ProbeError::NotEmbedded);
        }
        let mut ebpf = EbpfLoader::new()
            .override_global(OFFSETS_GLOBAL, &offsets, true)
            .override_global(NOT_DROP_REASONS_GLOBAL, &not_drops, true)
            .override_global(COUNTS_STRIDE_GLOBAL, &stride, true)
            .override_global(LOCATIONS_GLOBAL, &u32::from(options.locations), true)
            .override_global(FLOWS_GLOBAL, &flow_globals.0, true)
            .override_global(FLOW_OFFSETS_GLOBAL, &flow_globals.1, true)
            .override_global(FLOW_RATE_GLOBAL, &flow_globals.2, true)
            .override_global(FLOW_SNAPLEN_GLOBAL, &flow_globals.3, true)
            .map_max_entries(FLOWS_MAP, flow_capacity)
            .map_max_entries(FLOW_EVENTS_MAP, ring_bytes)
            .map_max_entries(DROPS_MAP, options.max_entries)
            .map_max_entries(COUNTS_MAP, counts_entries)
            .map_max_entries(FREE_SLOTS_MAP, shared.max(1))
            .map_max_entries(USERNS_FREE_SLOTS_MAP, pool)
            .load(OBJECT)
            .map_err(|e| ProbeError::Load(Box::new(e)))?;
        let kernel_btf = aya::Btf::from_sys_fs().ok();
        // Before the program is attached: every slot free (slot 0 on top), epoch 1.
        let free_slots = map_fd(&ebpf, FREE_SLOTS_MAP)?;
        for slot in (0..shared).rev() {
            push_slot(&free_slots, FREE_SLOTS_MAP, slot)?;
        }
        let userns_slots = map_fd(&ebpf, USERNS_FREE_SLOTS_MAP)?;
        for slot in (shared..options.max_entries).rev() {
            push_slot(&userns_slots, USERNS_FREE_SLOTS_MAP, slot)?;
        }
        let protocols = map_fd(&ebpf, PROTOCOLS_MAP)?;
        for (i, word) in super::protocols::words().into_iter().enumerate() {
            if word != 0 {
                set_protocol_word(&protocols, i as u32, word)?;
            }
        }
        drop(protocols);
        let epoch_map = map_fd(&ebpf, EPOCH_MAP)?;
        let epoch = 1;
        set_epoch(&epoch_map, epoch)?;
        let btf_attempt = match options.hook {
            Hook::Raw => None,
            Hook::Auto | Hook::Btf => kernel_btf.as_ref().map(|btf| attach_btf(&mut ebpf, btf)),
        };
        let program = match btf_attempt {
            Some(Ok(())) => BTF_PROGRAM_NAME,
            Some(Err(e)) if options.hook == Hook::Btf => return Err(e),
            None if options.hook == Hook::Btf => {
                return Err(ProbeError::NoKernelBtf);
            }
            fallback => {
                if let Some(Err(e)) = fallback {
                    tracing::info!(
                        "BTF-enabled tracepoint unavailable ({e}); using the raw tracepoint"
                    );
                }
                let program: &mut RawTracePoint = ebpf
                    .program_mut(PROGRAM_NAME)
                    .ok_or(ProbeError::Missing(PROGRAM_NAME, "program"))?
                    .try_into()
                    .map_err(ProbeError::Program)?;
                program.load().map_err(ProbeError::Program)?;
                program.attach(TRACEPOINT).map_err(ProbeError::Program)?;
                PROGRAM_NAME
            }
        };
        drop(kernel_btf);
        tracing::info!(
            program,
            "drop probe attached to kfree_skb; {}",
            SocketOwnerSupport::of(&offsets).as_str()
        );
        let program_fd = ebpf
            .program(program)
            .ok_or(ProbeError::Missing(program, "program"))?
            .fd()
            .map_err(ProbeError::Program)?
            .as_fd()
            .try_clone_to_owned()
            .map_err(|source| ProbeError::ProgramInfo { program, source })?;
        let drops = map_fd(&ebpf, DROPS_MAP)?;
        let counts = Counts::map(map_fd(&ebpf, COUNTS_MAP)?.as_fd(), ncpus, stride as usize)?;
        let overflow = map_fd(&ebpf, OVERFLOW_MAP)?;
        let userns_overflow = map_fd(&ebpf, USERNS_OVERFLOW_MAP)?;
        let flows = match options.flows {
            Some(_) => Some(super::flows::FlowMaps::take(&mut ebpf)?),
            None => None,
        };
        // The program is loaded and holds every map it uses: the object's own descriptors
        // of the maps user space reads through its copies above, or never reads, are
        // closed (an agent under a low `LimitNOFILE=` needs them for its other work). The
        // drop map stays (tests and the bench look it up by name).
        for name in [
            FREE_SLOTS_MAP,
            USERNS_FREE_SLOTS_MAP,
            PROTOCOLS_MAP,
            EPOCH_MAP,
            COUNTS_MAP,
            OVERFLOW_MAP,
            USERNS_OVERFLOW_MAP,
            CACHE_MAP,
            FLOWS_MAP,
            FLOW_SEQ_MAP,
            FLOW_STATS_MAP,
            FLOW_BUCKET_MAP,
            FLOW_FRONT_MAP,
            FLOW_EVENTS_MAP,
        ] {
            drop(ebpf.take_map(name));
        }
        Ok(DropProbe {
            flows,
            ebpf,
            program,
            program_fd,
            drops,
            counts,
            free_slots,
            userns_slots,
            shared,
            epoch_map,
            overflow,
            userns_overflow,
            ncpus,
            max_entries: options.max_entries,
            epoch,
            pending: Vec::new(),
            pairs: Vec::with_capacity(options.max_entries as usize),
            created_seen: 0,
            reread: true,
        })
    }

    /// Name of the attached program in the object: [`BTF_PROGRAM_NAME`] or, where the
    /// kernel refused that, [`PROGRAM_NAME`].
    pub(crate) fn program_name(&self) -> &'static str {
        self.program
    }

    /// The loaded object, e.g. to attach the aya-log reader.
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    pub(crate) fn max_entries(&self) -> u32 {
        self.max_entries
    }

    /// With flows on, their maps (once).
    pub fn take_flows(&mut self) -> Option<super::flows::FlowMaps> {
        self.flows.take()
    }


    /// Every key in the map as of the last [`Self::read`].
    pub(crate) fn keys(&self) -> impl Iterator<Item = &DropKey> {
        self.pairs.iter().map(|(_, k)| k)
    }

    /// Drops the program could not count: tracepoint hits the kernel skipped because the
    /// program was already running on that CPU (a drop in an interrupt that arrived while
    /// it ran), `bpf_prog_info.recursion_misses` (Linux 5.12+; 0 before). One syscall.
    pub(crate) fn missed(&self) -> Result<u64, ProbeError> {
        maps::recursion_misses(self.program_fd.as_fd()).map_err(|source| ProbeError::ProgramInfo {
            program: self.program,
            source,
        })
    }

    /// Buffers sized for this machine's CPUs, to pass to [`Self::read`] every cycle.
    pub fn buffers(&self) -> ReadBuffers {
        ReadBuffers::new(self.ncpus)
    }

    /// Calls `f` with every key and its value summed over CPUs, from the mapped counts.
    /// Re-reads the key-to-slot hash map (batched lookups into `buffers`, one syscall per
    /// 256 keys) only when the program created keys since the last re-read. No allocation.
    pub fn read(
        &mut self,
        buffers: &mut ReadBuffers,
        mut f: impl FnMut(&DropKey, DropValue),
    ) -> Result<(), ProbeError> {
        self.release_pending()?;
        let created = self.counts.sum(self.max_entries).packets;
        if created != self.created_seen || self.reread {
            self.reread = created != self.created_seen;
            self.created_seen = created;
            let pairs = &mut self.pairs;
            pairs.clear();
            let ReadBuffers { keys, slots, .. } = buffers;
            batch_read(self.drops.as_fd(), DROPS_MAP, keys, slots, |keys, slots| {
                for (key, &slot) in keys.iter().zip(slots) {
                    if pairs.len() < pairs.capacity() && slot < self.max_entries {
                        pairs.push((slot, *key));
                    }
                }
            })?;
        }
        for (slot, key) in &self.pairs {
            f(key, self.counts.sum(*slot));
        }
        Ok(())
    }

    /// Removes `key` from the drop map. `Ok(false)` when it was not there. Its slot is
    /// freed at the next [`Self::read`].
    pub fn remove(&mut self, key: &DropKey) -> Result<bool, ProbeError> {
        let err = |source| ProbeError::Read {
            map: DROPS_MAP,
            source,
        };
        let Some(slot) = maps::lookup_slot(self.drops.as_fd(), key).map_err(err)? else {
            return Ok(false);
        };
        if !maps::delete(self.drops.as_fd(), key).map_err(err)? {
            return Ok(false);
        }
        // Programs must stop using cached mappings to the slot.
        self.epoch = self.epoch.wrapping_add(1).max(1);
        set_epoch(&self.epoch_map, self.epoch)?;
        self.pending.push(slot);
        self.pairs.retain(|(s, _)| *s != slot);
        Ok(true)
    }

    /// Frees the slots of keys removed since the last read: once every program run that
    /// could have found one in its cache has ended (an RCU grace period: the program runs
    /// with preemption disabled, and `membarrier(MEMBARRIER_CMD_GLOBAL)` waits for one),
    /// zeroes their counts and pushes them on the free stack.
    fn release_pending(&mut self) -> Result<(), ProbeError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        // SAFETY: membarrier takes no pointers.
        let r = unsafe {
            libc::syscall(
                libc::SYS_membarrier,
                1, /* MEMBARRIER_CMD_GLOBAL */
                0,
                0,
            )
        };
        if r != 0 {
            // nohz_full kernels refuse it: the removal was at least one collection interval
            // ago, far longer than any program run.
            tracing::debug!(
                "membarrier: {}; freeing drop slots without it",
                io::Error::last_os_error()
            );
        }
        while let Some(slot) = self.pending.pop() {
            self.counts.zero(slot);
            if slot < self.shared {
                push_slot(&self.free_slots, FREE_SLOTS_MAP, slot)?;
            } else {
                push_slot(&self.userns_slots, USERNS_FREE_SLOTS_MAP, slot)?;
            }
        }
        Ok(())
    }

    /// Drops that found the map full, summed over CPUs.
    pub fn overflow(&self, buffers: &mut ReadBuffers) -> Result<DropValue, ProbeError> {
        maps::sum_per_cpu(self.overflow.as_fd(), buffers, self.ncpus).map_err(|source| {
            ProbeError::Read {
                map: OVERFLOW_MAP,
                source,
            }
        })
    }
}

impl DropProbe {
    /// Drops in namespaces owned by non-initial user namespaces that found their reserved
    /// pool full, summed over CPUs.
    pub(crate) fn user_ns_overflow(&self, buffers: &mut ReadBuffers) -> Result<DropValue, ProbeError> {
        maps::sum_per_cpu(self.userns_overflow.as_fd(), buffers, self.ncpus).map_err(|source| {
            ProbeError::Read {
                map: USERNS_OVERFLOW_MAP,
                source,
            }
        })
    }
}

/// Loads and attaches the `tp_btf` variant of the program.
fn attach_btf(ebpf: &mut Ebpf, btf: &aya::Btf) -> Result<(), ProbeError> {
    let program: &mut BtfTracePoint = ebpf
        .program_mut(BTF_PROGRAM_NAME)
        .ok_or(ProbeError::Missing(BTF_PROGRAM_NAME, "program"))?
        .try_into()
        .map_err(ProbeError::Program)?;
    program.load(TRACEPOINT, btf).map_err(ProbeError::Program)?;
    program.attach().map_err(ProbeError::Program)?;
    Ok(())
}

#[cfg(test)]
mod tests;
