//! The probe's maps from user space: the memory-mapped counts array, and the `bpf(2)` map
//! and program commands (lookups, batched reads, updates, deletes, run statistics), none
//! of which allocates.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
};

use aya::{Ebpf, maps::Map};
use retina_ebpf_common::{COUNTS_MAP, DropKey, DropValue, EPOCH_MAP, PROTOCOLS_MAP};

use super::ProbeError;
use crate::kernel::sys::{
    BPF_MAP_DELETE_ELEM, BPF_MAP_LOOKUP_BATCH, BPF_MAP_LOOKUP_ELEM, BPF_MAP_UPDATE_ELEM,
    BPF_OBJ_GET_INFO_BY_FD, bpf,
};

/// The shared mapping of the counts array: `ncpus` regions of `stride` [`DropValue`]s.
pub(super) struct Counts {
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
    pub(super) fn map(
        fd: BorrowedFd<'_>,
        ncpus: usize,
        stride: usize,
    ) -> Result<Counts, ProbeError> {
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
    pub(super) fn sum(&self, slot: u32) -> DropValue {
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
    pub(super) fn zero(&self, slot: u32) {
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

/// `union bpf_attr` for BPF_MAP_*_ELEM.
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

/// `union bpf_attr` for BPF_OBJ_GET_INFO_BY_FD.
#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// Entries fetched per BPF_MAP_LOOKUP_BATCH call.
const BATCH: usize = 256;

/// Reusable buffers for reading the drop maps in batches.
pub struct ReadBuffers {
    pub(super) keys: Vec<DropKey>,
    pub(super) slots: Vec<u32>,
    pub(super) values: Vec<DropValue>,
}

impl ReadBuffers {
    /// Buffers for a machine with `ncpus` possible CPUs.
    pub(super) fn new(ncpus: usize) -> ReadBuffers {
        ReadBuffers {
            keys: vec![DropKey::default(); BATCH],
            slots: vec![0; BATCH],
            values: vec![DropValue::default(); BATCH * ncpus],
        }
    }
}

/// The slot of `key` in the key-to-slot hash map `drops`; `None` when it is not there.
pub(super) fn lookup_slot(drops: BorrowedFd<'_>, key: &DropKey) -> io::Result<Option<u32>> {
    let mut slot = 0u32;
    let mut attr = ElemAttr {
        map_fd: drops.as_raw_fd() as u32,
        _pad: 0,
        key: key as *const DropKey as u64,
        value: &mut slot as *mut u32 as u64,
        flags: 0,
    };
    // SAFETY: a BPF_MAP_LOOKUP_ELEM attr for the drop map, whose keys are `DropKey`s and
    // whose values are `u32` slots, pointing at a live key and a live slot.
    match unsafe { bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) } {
        Ok(_) => Ok(Some(slot)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Deletes `key` from the hash map `drops`; `false` when it was not there.
pub(super) fn delete(drops: BorrowedFd<'_>, key: &DropKey) -> io::Result<bool> {
    let mut attr = ElemAttr {
        map_fd: drops.as_raw_fd() as u32,
        _pad: 0,
        key: key as *const DropKey as u64,
        value: 0,
        flags: 0,
    };
    // SAFETY: a BPF_MAP_DELETE_ELEM attr for the drop map, whose keys are `DropKey`s,
    // pointing at a live key (no value).
    match unsafe { bpf(BPF_MAP_DELETE_ELEM, &mut attr) } {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The per-CPU values of entry 0 of the per-CPU array `map` of [`DropValue`]s, summed
/// over the `ncpus` CPUs (read into `buffers`).
pub(super) fn sum_per_cpu(
    map: BorrowedFd<'_>,
    buffers: &mut ReadBuffers,
    ncpus: usize,
) -> io::Result<DropValue> {
    let key = 0u32;
    let values = &mut buffers.values;
    check_room(values.len(), ncpus)?;
    let mut attr = ElemAttr {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: &key as *const u32 as u64,
        value: values.as_mut_ptr() as u64,
        flags: 0,
    };
    // SAFETY: a BPF_MAP_LOOKUP_ELEM attr for a per-CPU array of `DropValue`s with a `u32`
    // key; the kernel writes one value per possible CPU (`ncpus`), and `values` holds at
    // least that many (checked above).
    unsafe { bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) }?;
    Ok(sum(&values[..ncpus]))
}

fn check_room(len: usize, ncpus: usize) -> io::Result<()> {
    if len < ncpus {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "read buffer smaller than the number of CPUs",
        ));
    }
    Ok(())
}

/// Reads a whole map with BPF_MAP_LOOKUP_BATCH, `keys.len()` entries per call, calling `f`
/// with each batch's keys and values. `values` holds `keys.len()` values: the map's values
/// must be `V`s (not per-CPU).
pub(super) fn batch_read<K, V>(
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
        // SAFETY: a BPF_MAP_LOOKUP_BATCH attr whose key and value buffers each hold
        // `count` entries of the map's key and value types, and whose batch token is a
        // live `u32` (the hash map's token size).
        let done = match unsafe { bpf(BPF_MAP_LOOKUP_BATCH, &mut attr) } {
            Ok(_) => false,
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

/// Writes `value` at `key` of the `u32` map `map`, or, without a key, pushes it on the
/// stack `map`.
fn update_u32(map: &OwnedFd, key: Option<&u32>, value: u32) -> io::Result<()> {
    let mut attr = ElemAttr {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: key.map_or(0, |k| k as *const u32 as u64),
        value: &value as *const u32 as u64,
        flags: 0,
    };
    // SAFETY: a BPF_MAP_UPDATE_ELEM attr for a map of `u32` values, keyed by a live `u32`
    // or (a stack) by nothing.
    unsafe { bpf(BPF_MAP_UPDATE_ELEM, &mut attr) }.map(|_| ())
}

/// Makes `slot` free again: pushes it on the free-slot stack `free_slots` (the map
/// `name`).
pub(super) fn push_slot(
    free_slots: &OwnedFd,
    name: &'static str,
    slot: u32,
) -> Result<(), ProbeError> {
    update_u32(free_slots, None, slot).map_err(|source| ProbeError::Read { map: name, source })
}

/// Writes word `index` of the bit set of EtherTypes that keep their own key.
pub(super) fn set_protocol_word(protocols: &OwnedFd, index: u32, word: u32) -> Result<(), ProbeError> {
    update_u32(protocols, Some(&index), word).map_err(|source| ProbeError::Read {
        map: PROTOCOLS_MAP,
        source,
    })
}

/// Publishes a new epoch: programs stop using the slots cached under the old one.
pub(super) fn set_epoch(epoch_map: &OwnedFd, epoch: u32) -> Result<(), ProbeError> {
    update_u32(epoch_map, Some(&0), epoch).map_err(|source| ProbeError::Read {
        map: EPOCH_MAP,
        source,
    })
}

/// `recursion_misses` of the program behind `program` (`struct bpf_prog_info`, Linux
/// 5.12+; 0 where the kernel's info is shorter).
pub(super) fn recursion_misses(program: BorrowedFd<'_>) -> io::Result<u64> {
    // `struct bpf_prog_info` up to `recursion_misses` (offset 208, include/uapi/linux/
    // bpf.h); the kernel fills what it has of it and reports the length.
    const RECURSION_MISSES: usize = 208;
    let mut info = [0u64; RECURSION_MISSES / 8 + 1];
    let mut attr = InfoAttr {
        bpf_fd: program.as_raw_fd() as u32,
        info_len: std::mem::size_of_val(&info) as u32,
        info: info.as_mut_ptr() as u64,
    };
    // SAFETY: a BPF_OBJ_GET_INFO_BY_FD attr pointing at `info_len` writable bytes.
    unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) }?;
    Ok(if attr.info_len as usize > RECURSION_MISSES {
        info[RECURSION_MISSES / 8]
    } else {
        0
    })
}

fn sum(per_cpu: &[DropValue]) -> DropValue {
    per_cpu
        .iter()
        .fold(DropValue::default(), |acc, v| DropValue {
            packets: acc.packets.wrapping_add(v.packets),
            bytes: acc.bytes.wrapping_add(v.bytes),
        })
}

/// A descriptor of the map `name` of `ebpf`, owned.
pub(super) fn map_fd(ebpf: &Ebpf, name: &'static str) -> Result<OwnedFd, ProbeError> {
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
