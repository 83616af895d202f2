//! Loads and attaches the embedded eBPF program, and reads its maps without allocating.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::Map,
    programs::{BtfTracePoint, RawTracePoint},
};
use retina_ebpf_common::{
    BTF_PROGRAM_NAME, COUNTS_MAP, COUNTS_STRIDE_GLOBAL, DEFAULT_DROPS_MAX_ENTRIES, DROPS_MAP,
    DropKey, DropValue, EPOCH_MAP, FREE_SLOTS_MAP, LOCATIONS_GLOBAL, NOT_DROP_REASONS_GLOBAL,
    OFFSETS_GLOBAL, OFFSETS_HAS_NETNS, OFFSETS_VALID, OVERFLOW_MAP, Offsets, PROGRAM_NAME,
    REASON_ARG, TRACEPOINT,
};

use crate::btf::{Btf, BtfError};

/// The eBPF object built by `cargo xtask build`, embedded so the binary is self-contained.
static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("RETINA_EBPF_OBJECT"));

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
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

/// Derives the offsets the program needs from the running kernel's BTF.
pub fn offsets_from_btf(btf: &Btf) -> Result<Offsets, ProbeError> {
    match btf.tracepoint_args(TRACEPOINT) {
        None => return Err(ProbeError::NoTracepoint),
        Some(n) if (n as usize) <= REASON_ARG => {
            return Err(ProbeError::NoReasonArgument { found: n });
        }
        Some(_) => {}
    }
    let field = |s: &str, f: &str| btf.field_offset(s, f).map_err(ProbeError::Layout);
    let mut offsets = Offsets {
        skb_dev: field("sk_buff", "dev")?,
        skb_sk: field("sk_buff", "sk")?,
        skb_len: field("sk_buff", "len")?,
        skb_protocol: field("sk_buff", "protocol")?,
        dev_ifindex: field("net_device", "ifindex")?,
        flags: OFFSETS_VALID,
        ..Offsets::zeroed()
    };
    // Without CONFIG_NET_NS, possible_net_t is empty and every drop is in init_net.
    if let (Ok(dev_net), Ok(sk_net), Ok(net_inum)) = (
        btf.field_offset("net_device", "nd_net.net"),
        btf.field_offset("sock", "__sk_common.skc_net.net"),
        btf.field_offset("net", "ns.inum"),
    ) {
        offsets.dev_net = dev_net;
        offsets.sk_net = sk_net;
        offsets.net_inum = net_inum;
        offsets.flags |= OFFSETS_HAS_NETNS;
    }
    Ok(offsets)
}

/// Values of `enum skb_drop_reason` that are not drops, as a bit mask (bit N: value N):
/// `SKB_NOT_DROPPED_YET` and `SKB_CONSUMED` where this kernel defines them. Their numbers
/// differ between kernels (6.1: NOT_DROPPED_YET = 0 and NOT_SPECIFIED = 1; 6.2+: CONSUMED =
/// 1 and NOT_SPECIFIED = 2; 5.17: neither, NOT_SPECIFIED = 0), so they come from BTF like
/// the reason names.
pub fn not_drop_reasons(btf: &Btf) -> u32 {
    btf.enum_values(super::reasons::CORE_ENUM)
        .unwrap_or_default()
        .iter()
        .filter(|v| matches!(v.name.as_str(), "SKB_NOT_DROPPED_YET" | "SKB_CONSUMED"))
        .filter(|v| v.value < 32)
        .fold(0, |mask, v| mask | (1 << v.value))
}

/// Effective capability bits of this process, from /proc/self/status.
fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// Fails early, with a message naming what is missing, instead of an EPERM from deep
/// inside the loader.
pub fn check_capabilities() -> Result<(), ProbeError> {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
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
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            max_entries: DEFAULT_DROPS_MAX_ENTRIES,
            hook: Hook::Auto,
            locations: false,
        }
    }
}

/// How the probe attaches to `kfree_skb`.
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
    epoch_map: OwnedFd,
    overflow: OwnedFd,
    ncpus: usize,
    max_entries: u32,
    locations: bool,
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
}

/// The shared mapping of the counts array: `ncpus` regions of `stride` [`DropValue`]s.
struct Counts {
    ptr: *mut DropValue,
    len: usize,
    stride: usize,
    ncpus: usize,
}

// SAFETY: the mapping is owned by this value and only read or written through it (and by
// the kernel); its memory is valid for its lifetime wherever it is used.
unsafe impl Send for Counts {}
// SAFETY: as above; `&Counts` only reads.
unsafe impl Sync for Counts {}

impl Counts {
    fn map(fd: BorrowedFd<'_>, ncpus: usize, stride: usize) -> Result<Counts, ProbeError> {
        let bytes = ncpus * stride * std::mem::size_of::<DropValue>();
        // SAFETY: sysconf has no memory-safety preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
        let len = bytes.div_ceil(page) * page;
        // SAFETY: maps `len` bytes of the array's memory-mappable storage (its size rounded
        // up to a page, as the kernel allows); checked for MAP_FAILED below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(ProbeError::Read {
                map: COUNTS_MAP,
                source: io::Error::last_os_error(),
            });
        }
        Ok(Counts {
            ptr: ptr.cast(),
            len,
            stride,
            ncpus,
        })
    }

    /// The counts of `slot` summed over CPUs.
    fn sum(&self, slot: u32) -> DropValue {
        let mut total = DropValue::default();
        for cpu in 0..self.ncpus {
            // SAFETY: `cpu * stride + slot` is inside the mapping (slot < stride); the
            // program writes each field with an aligned 8-byte store, so a volatile 8-byte
            // load sees a whole value.
            let (packets, bytes) = unsafe {
                let v = self.ptr.add(cpu * self.stride + slot as usize);
                (
                    std::ptr::read_volatile(&raw const (*v).packets),
                    std::ptr::read_volatile(&raw const (*v).bytes),
                )
            };
            total.packets = total.packets.wrapping_add(packets);
            total.bytes = total.bytes.wrapping_add(bytes);
        }
        total
    }

    /// Zeroes `slot` on every CPU (when no program can be counting into it).
    fn zero(&self, slot: u32) {
        for cpu in 0..self.ncpus {
            // SAFETY: as in `sum`; nothing writes the slot concurrently.
            unsafe {
                std::ptr::write_volatile(
                    self.ptr.add(cpu * self.stride + slot as usize),
                    DropValue::default(),
                );
            }
        }
    }
}

impl Drop for Counts {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, not used after this.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// `union bpf_attr` for BPF_MAP_LOOKUP_ELEM.
#[repr(C)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// `union bpf_attr` for BPF_MAP_*_BATCH.
#[repr(C)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// `union bpf_attr` for BPF_OBJ_GET_INFO_BY_FD.
#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<()> {
    // SAFETY: `attr` is a properly laid out bpf_attr variant for `cmd`, and every pointer in
    // it refers to a live buffer of the size the map needs.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>(),
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Reusable buffers for reading the drop maps in batches.
pub struct ReadBuffers {
    keys: Vec<DropKey>,
    slots: Vec<u32>,
    values: Vec<DropValue>,
}

/// Entries fetched per BPF_MAP_LOOKUP_BATCH call.
const BATCH: usize = 256;

impl DropProbe {
    /// Derives offsets from `btf`, loads the embedded program with them, and attaches it
    /// to the `kfree_skb` raw tracepoint (no tracefs needed).
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
        let counts_entries = u32::try_from(ncpus)
            .ok()
            .and_then(|n| n.checked_mul(stride))
            .ok_or_else(too_big)?;
        // The loader parses the kernel's BTF for its relocations (EbpfLoader::new) and
        // drops it with itself at the end of this statement; the attach point's copy is
        // parsed after that, so the two (~9 MiB each) are never alive together.
        let mut ebpf = EbpfLoader::new()
            .override_global(OFFSETS_GLOBAL, &offsets, true)
            .override_global(NOT_DROP_REASONS_GLOBAL, &not_drops, true)
            .override_global(COUNTS_STRIDE_GLOBAL, &stride, true)
            .override_global(LOCATIONS_GLOBAL, &u32::from(options.locations), true)
            .map_max_entries(DROPS_MAP, options.max_entries)
            .map_max_entries(COUNTS_MAP, counts_entries)
            .map_max_entries(FREE_SLOTS_MAP, options.max_entries)
            .load(OBJECT)
            .map_err(|e| ProbeError::Load(Box::new(e)))?;
        let kernel_btf = aya::Btf::from_sys_fs().ok();
        // Before the program is attached: every slot free (slot 0 on top), epoch 1.
        let free_slots = map_fd(&ebpf, FREE_SLOTS_MAP)?;
        for slot in (0..options.max_entries).rev() {
            push_slot(&free_slots, slot)?;
        }
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
        Ok(DropProbe {
            ebpf,
            program,
            program_fd,
            drops,
            counts,
            free_slots,
            epoch_map,
            overflow,
            ncpus,
            max_entries: options.max_entries,
            locations: options.locations,
            epoch,
            pending: Vec::new(),
            pairs: Vec::with_capacity(options.max_entries as usize),
            created_seen: 0,
            reread: true,
        })
    }

    /// Name of the attached program in the object: [`BTF_PROGRAM_NAME`] or, where the
    /// kernel refused that, [`PROGRAM_NAME`].
    pub fn program_name(&self) -> &'static str {
        self.program
    }

    /// The loaded object, e.g. to attach the aya-log reader.
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    pub fn max_entries(&self) -> u32 {
        self.max_entries
    }

    /// Whether the program puts the drop location into the keys.
    pub fn locations(&self) -> bool {
        self.locations
    }

    /// Every key in the map as of the last [`Self::read`].
    pub fn keys(&self) -> impl Iterator<Item = &DropKey> {
        self.pairs.iter().map(|(_, k)| k)
    }

    /// Drops the program could not count: tracepoint hits the kernel skipped because the
    /// program was already running on that CPU (a drop in an interrupt that arrived while
    /// it ran), `bpf_prog_info.recursion_misses` (Linux 5.12+; 0 before). One syscall.
    pub fn missed(&self) -> Result<u64, ProbeError> {
        // `struct bpf_prog_info` up to `recursion_misses` (offset 208, include/uapi/linux/
        // bpf.h); the kernel fills what it has of it and reports the length.
        const RECURSION_MISSES: usize = 208;
        let mut info = [0u64; RECURSION_MISSES / 8 + 1];
        let mut attr = InfoAttr {
            bpf_fd: self.program_fd.as_raw_fd() as u32,
            info_len: std::mem::size_of_val(&info) as u32,
            info: info.as_mut_ptr() as u64,
        };
        bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).map_err(|source| ProbeError::ProgramInfo {
            program: self.program,
            source,
        })?;
        Ok(if attr.info_len as usize > RECURSION_MISSES {
            info[RECURSION_MISSES / 8]
        } else {
            0
        })
    }

    /// Buffers sized for this machine's CPUs, to pass to [`Self::read`] every cycle.
    pub fn buffers(&self) -> ReadBuffers {
        ReadBuffers {
            keys: vec![DropKey::default(); BATCH],
            slots: vec![0; BATCH],
            values: vec![DropValue::default(); BATCH * self.ncpus],
        }
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
        let mut slot = 0u32;
        let mut attr = ElemAttr {
            map_fd: self.drops.as_fd().as_raw_fd() as u32,
            _pad: 0,
            key: key as *const DropKey as u64,
            value: &mut slot as *mut u32 as u64,
            flags: 0,
        };
        match bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(false),
            Err(e) => return Err(err(e)),
        }
        attr.value = 0;
        match bpf(BPF_MAP_DELETE_ELEM, &mut attr) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(false),
            Err(e) => return Err(err(e)),
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
            push_slot(&self.free_slots, slot)?;
        }
        Ok(())
    }

    /// Drops that found the map full, summed over CPUs.
    pub fn overflow(&self, buffers: &mut ReadBuffers) -> Result<DropValue, ProbeError> {
        let key = 0u32;
        let mut attr = ElemAttr {
            map_fd: self.overflow.as_fd().as_raw_fd() as u32,
            _pad: 0,
            key: &key as *const u32 as u64,
            value: buffers.values.as_mut_ptr() as u64,
            flags: 0,
        };
        bpf(BPF_MAP_LOOKUP_ELEM, &mut attr).map_err(|source| ProbeError::Read {
            map: OVERFLOW_MAP,
            source,
        })?;
        Ok(sum(&buffers.values[..self.ncpus]))
    }
}

/// Reads a whole map with BPF_MAP_LOOKUP_BATCH, `keys.len()` entries per call, calling `f`
/// with each batch's keys and values. `values` holds `keys.len()` values.
fn batch_read<K, V>(
    fd: BorrowedFd<'_>,
    map: &'static str,
    keys: &mut [K],
    values: &mut [V],
    mut f: impl FnMut(&[K], &[V]),
) -> Result<(), ProbeError> {
    let mut token = 0u32;
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                &token as *const u32 as u64
            },
            out_batch: &mut token as *mut u32 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: keys.len().min(values.len()) as u32,
            map_fd: fd.as_raw_fd() as u32,
            elem_flags: 0,
            flags: 0,
        };
        first = false;
        let done = match bpf(BPF_MAP_LOOKUP_BATCH, &mut attr) {
            Ok(()) => false,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => true,
            Err(source) => return Err(ProbeError::Read { map, source }),
        };
        let n = (attr.count as usize).min(keys.len());
        f(&keys[..n], &values[..n]);
        if done {
            return Ok(());
        }
    }
}

fn push_slot(free_slots: &OwnedFd, slot: u32) -> Result<(), ProbeError> {
    let mut attr = ElemAttr {
        map_fd: free_slots.as_raw_fd() as u32,
        _pad: 0,
        key: 0,
        value: &slot as *const u32 as u64,
        flags: 0,
    };
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map_err(|source| ProbeError::Read {
        map: FREE_SLOTS_MAP,
        source,
    })
}

fn set_epoch(epoch_map: &OwnedFd, epoch: u32) -> Result<(), ProbeError> {
    let key = 0u32;
    let mut attr = ElemAttr {
        map_fd: epoch_map.as_raw_fd() as u32,
        _pad: 0,
        key: &key as *const u32 as u64,
        value: &epoch as *const u32 as u64,
        flags: 0,
    };
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map_err(|source| ProbeError::Read {
        map: EPOCH_MAP,
        source,
    })
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

fn sum(per_cpu: &[DropValue]) -> DropValue {
    per_cpu
        .iter()
        .fold(DropValue::default(), |acc, v| DropValue {
            packets: acc.packets.wrapping_add(v.packets),
            bytes: acc.bytes.wrapping_add(v.bytes),
        })
}

fn map_fd(ebpf: &Ebpf, name: &'static str) -> Result<OwnedFd, ProbeError> {
    let data = match ebpf.map(name) {
        Some(
            Map::HashMap(data)
            | Map::PerCpuHashMap(data)
            | Map::Array(data)
            | Map::PerCpuArray(data)
            | Map::Stack(data),
        ) => data,
        _ => return Err(ProbeError::Missing(name, "map")),
    };
    // Duplicate the map's own descriptor: reopening it by id (`info()?.fd()`,
    // BPF_MAP_GET_FD_BY_ID) needs CAP_SYS_ADMIN.
    data.fd()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|source| ProbeError::Read { map: name, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_drop_reasons_follow_the_kernels_numbering() {
        use crate::btf::tests::Builder;
        let mask = |values: &[(&str, u32)]| {
            let mut b = Builder::new();
            b.enumeration("skb_drop_reason", values);
            not_drop_reasons(&Btf::parse("fixture".into(), b.build(), None).unwrap())
        };
        // 5.17: the enum starts with NOT_SPECIFIED; everything is a drop.
        assert_eq!(mask(&[("SKB_DROP_REASON_NOT_SPECIFIED", 0)]), 0);
        // 5.18 to 6.1: NOT_SPECIFIED = 1 must be counted.
        let v6_1 = [
            ("SKB_NOT_DROPPED_YET", 0),
            ("SKB_DROP_REASON_NOT_SPECIFIED", 1),
            ("SKB_DROP_REASON_NO_SOCKET", 2),
        ];
        assert_eq!(mask(&v6_1), 0b01);
        // 6.2 and later.
        let v6_18 = [
            ("SKB_NOT_DROPPED_YET", 0),
            ("SKB_CONSUMED", 1),
            ("SKB_DROP_REASON_NOT_SPECIFIED", 2),
        ];
        assert_eq!(mask(&v6_18), 0b11);
        // No enum at all: the probe does not load there anyway; nothing is excluded.
        assert_eq!(
            not_drop_reasons(&Btf::parse("f".into(), Builder::new().build(), None).unwrap()),
            0
        );
    }

    /// BTF holding only `btf_trace_kfree_skb`: a typedef of a pointer to a function of the
    /// context plus `args` tracepoint arguments, as vmlinux BTF describes raw tracepoints.
    fn tracepoint_btf(args: u32) -> Btf {
        let mut strings = b"\0int\0btf_trace_kfree_skb\0".to_vec();
        let (int_name, typedef_name) = (1u32, 5u32);
        let mut types: Vec<u32> = vec![int_name, 1 << 24, 4, 32]; // [1] int
        types.extend([0, (13 << 24) | (args + 1), 1]); // [2] func_proto returning int
        for _ in 0..=args {
            types.extend([0, 1]); // unnamed parameter of type int
        }
        types.extend([0, 2 << 24, 2]); // [3] pointer to [2]
        types.extend([typedef_name, 8 << 24, 3]); // [4] typedef to [3]
        let types: Vec<u8> = types.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut blob = vec![0x9f, 0xeb, 1, 0];
        for v in [
            24,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            blob.extend_from_slice(&v.to_le_bytes());
        }
        blob.extend_from_slice(&types);
        blob.append(&mut strings);
        Btf::parse("fixture".into(), blob, None).unwrap()
    }

    #[test]
    fn kernels_without_the_reason_argument_are_named() {
        // Before 5.17: trace_kfree_skb(skb, location).
        let old = offsets_from_btf(&tracepoint_btf(2)).unwrap_err();
        assert!(
            matches!(old, ProbeError::NoReasonArgument { found: 2 }),
            "{old}"
        );
        assert!(old.to_string().contains("5.17"), "{old}");
        // 5.17 to 6.1: (skb, location, reason); 6.11+ adds rx_sk. Both get past the check
        // (this fixture then lacks struct sk_buff).
        for args in [3, 4] {
            let err = offsets_from_btf(&tracepoint_btf(args)).unwrap_err();
            assert!(matches!(err, ProbeError::Layout(_)), "{args} args: {err}");
        }
    }

    #[test]
    fn offsets_on_this_kernel() {
        let btf = Btf::from_sys().unwrap();
        let o = offsets_from_btf(&btf).unwrap();
        assert_eq!(o.flags, OFFSETS_VALID | OFFSETS_HAS_NETNS);
        // Sanity against the layout every 64-bit kernel shares: dev follows next/prev.
        assert_eq!(o.skb_dev, 16);
        assert!(o.skb_len > o.skb_dev && o.net_inum > 0 && o.dev_ifindex > 0);
    }
}
