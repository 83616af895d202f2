//! Raw bpf(2) for the eBPF overhead measurement: an empty raw-tracepoint program on
//! `kfree_skb` (the baseline), per-program run-time statistics, and the
//! `kernel.bpf_stats_enabled` sysctl.

use std::{
    ffi::CStr,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
};

use anyhow::{Context, Result, ensure};
use retina_agent::kernel::sys::{
    BPF_MAP_CREATE, BPF_MAP_UPDATE_ELEM, BPF_OBJ_GET_INFO_BY_FD, BPF_PROG_LOAD,
    BPF_RAW_TRACEPOINT_OPEN, bpf,
};
use serde_json::{Value, json};

const BPF_PROG_TYPE_RAW_TRACEPOINT: u32 = 17;

const BPF_PROG_TYPE_TRACING: u32 = 26;
const BPF_TRACE_RAW_TP: u32 = 23;

/// `union bpf_attr` for BPF_PROG_LOAD, up to `attach_btf_obj_fd`.
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    prog_btf_fd: u32,
    func_info_rec_size: u32,
    func_info: u64,
    func_info_cnt: u32,
    line_info_rec_size: u32,
    line_info: u64,
    line_info_cnt: u32,
    attach_btf_id: u32,
    attach_btf_obj_fd: u32,
    _pad: u32,
}

/// Loads `insns` and attaches them to the `kfree_skb` tracepoint: as a raw tracepoint
/// program (`attach_btf_id == 0`, attached by name) or as a BTF-typed `tp_btf` program
/// (`attach_btf_id` = the vmlinux BTF id of `btf_trace_kfree_skb`).
fn load_and_attach(
    insns: &[u64],
    name: &[u8],
    tracepoint: &CStr,
    attach_btf_id: u32,
) -> Result<(OwnedFd, OwnedFd)> {
    let license = c"GPL";
    let mut prog_name = [0u8; 16];
    prog_name[..name.len().min(15)].copy_from_slice(&name[..name.len().min(15)]);
    let mut log = vec![0u8; 64 * 1024];
    let (prog_type, expected_attach_type) = if attach_btf_id == 0 {
        (BPF_PROG_TYPE_RAW_TRACEPOINT, 0)
    } else {
        (BPF_PROG_TYPE_TRACING, BPF_TRACE_RAW_TP)
    };
    let mut attr = ProgLoadAttr {
        prog_type,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        kern_version: 0,
        prog_flags: 0,
        prog_name,
        prog_ifindex: 0,
        expected_attach_type,
        prog_btf_fd: 0,
        func_info_rec_size: 0,
        func_info: 0,
        func_info_cnt: 0,
        line_info_rec_size: 0,
        line_info: 0,
        line_info_cnt: 0,
        attach_btf_id,
        attach_btf_obj_fd: 0,
        _pad: 0,
    };
    // SAFETY: a BPF_PROG_LOAD attr (unknown trailing fields zero) whose instruction,
    // license and log pointers refer to live buffers of the lengths given.
    let fd = match unsafe { bpf(BPF_PROG_LOAD, &mut attr) } {
        Ok(fd) => fd,
        Err(e) => {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            anyhow::bail!(
                "BPF_PROG_LOAD {}: {e}\n{}",
                String::from_utf8_lossy(name),
                String::from_utf8_lossy(&log[..end])
            );
        }
    };
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    let prog = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut attr = RawTpAttr {
        name: if attach_btf_id == 0 {
            tracepoint.as_ptr() as u64
        } else {
            0
        },
        prog_fd: prog.as_raw_fd() as u32,
        _pad: 0,
        cookie: 0,
    };
    // SAFETY: a BPF_RAW_TRACEPOINT_OPEN attr whose name is null or a live C string.
    let fd = unsafe { bpf(BPF_RAW_TRACEPOINT_OPEN, &mut attr) }
        .with_context(|| format!("BPF_RAW_TRACEPOINT_OPEN {tracepoint:?}"))?;
    // SAFETY: as above.
    let link = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    Ok((prog, link))
}

/// `union bpf_attr` for BPF_RAW_TRACEPOINT_OPEN.
#[repr(C)]
struct RawTpAttr {
    name: u64,
    prog_fd: u32,
    _pad: u32,
    cookie: u64,
}

/// `union bpf_attr` for BPF_OBJ_GET_INFO_BY_FD.
#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// An empty program (`r0 = 0; exit`) attached to the `kfree_skb` raw tracepoint, the same
/// hook as the agent's: what the hook costs with a program that does nothing. Detached
/// and unloaded on drop (closing both descriptors).
pub struct EmptyProgram {
    _link: OwnedFd,
    pub prog: OwnedFd,
}

impl EmptyProgram {
    pub fn attach(tracepoint: &CStr) -> Result<EmptyProgram> {
        let (prog, link) =
            load_and_attach(&[mov_imm(0, 0), exit()], b"retina_empty", tracepoint, 0)?;
        Ok(EmptyProgram { _link: link, prog })
    }
}

// ---- eBPF instructions (code, dst:4 | src:4, off, imm), little endian ----

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    u64::from(code)
        | (u64::from(dst & 0xf) << 8)
        | (u64::from(src & 0xf) << 12)
        | (u64::from(off as u16) << 16)
        | (u64::from(imm as u32) << 32)
}
/// `dst = imm` (BPF_ALU64 | BPF_MOV | BPF_K).
fn mov_imm(dst: u8, imm: i32) -> u64 {
    insn(0xb7, dst, 0, 0, imm)
}
/// `dst = src` (BPF_ALU64 | BPF_MOV | BPF_X).
fn mov_reg(dst: u8, src: u8) -> u64 {
    insn(0xbf, dst, src, 0, 0)
}
/// `dst += imm` (BPF_ALU64 | BPF_ADD | BPF_K).
fn add_imm(dst: u8, imm: i32) -> u64 {
    insn(0x07, dst, 0, 0, imm)
}
/// `dst = *(size *)(src + off)` (BPF_LDX | BPF_MEM), size 1, 2, 4 or 8 bytes.
fn ldx(size: u8, dst: u8, src: u8, off: i16) -> u64 {
    let sz = match size {
        1 => 0x10,
        2 => 0x08,
        4 => 0x00,
        _ => 0x18,
    };
    insn(0x61 | sz, dst, src, off, 0)
}
/// `if dst == 0 goto +off` (BPF_JMP | BPF_JEQ | BPF_K).
fn jeq0(dst: u8, off: i16) -> u64 {
    insn(0x15, dst, 0, off, 0)
}
/// `*(size *)(dst + off) = imm` (BPF_ST | BPF_MEM), size 4 or 8 bytes.
fn st(size: u8, dst: u8, off: i16, imm: i32) -> u64 {
    insn(if size == 4 { 0x62 } else { 0x7a }, dst, 0, off, imm)
}
/// `*(u64 *)(dst + off) = src` (BPF_STX | BPF_MEM | BPF_DW).
fn stx64(dst: u8, src: u8, off: i16) -> u64 {
    insn(0x7b, dst, src, off, 0)
}
/// `dst = map` (BPF_LD | BPF_IMM | BPF_DW with BPF_PSEUDO_MAP_FD): two instruction slots.
fn ld_map_fd(dst: u8, fd: BorrowedFd<'_>) -> [u64; 2] {
    [insn(0x18, dst, 1, 0, fd.as_raw_fd()), 0]
}
fn call(helper: i32) -> u64 {
    insn(0x85, 0, 0, 0, helper)
}
fn exit() -> u64 {
    insn(0x95, 0, 0, 0, 0)
}

const BPF_FUNC_MAP_LOOKUP_ELEM: i32 = 1;
const BPF_FUNC_PROBE_READ_KERNEL: i32 = 113;

/// The kernel structure offsets the agent's program reads (from BTF).
#[derive(Clone, Copy, Debug)]
pub struct ReadOffsets {
    pub skb_dev: u32,
    pub skb_len: u32,
    pub skb_protocol: u32,
    pub dev_ifindex: u32,
    pub dev_net: u32,
    pub net_inum: u32,
}

/// The six kernel reads the agent's program makes per drop (skb->dev, dev->ifindex,
/// dev->nd_net, net->ns.inum, skb->protocol, skb->len) and nothing else, in two forms on
/// the same hook:
/// * `probe`: a raw tracepoint program calling `bpf_probe_read_kernel` for each, as the
///   agent's program does today;
/// * `direct`: a `tp_btf` program whose `skb` argument is a typed kernel pointer, so the
///   same reads are plain loads (the verifier checks them against BTF; the JIT emits
///   fault-tolerant loads).
pub struct ReadVariants {
    pub probe: (OwnedFd, OwnedFd),
    pub direct: Option<(OwnedFd, OwnedFd)>,
    pub direct_error: Option<String>,
}

impl ReadVariants {
    pub fn attach(
        o: &ReadOffsets,
        tracepoint: &CStr,
        attach_btf_id: Option<u32>,
    ) -> Result<ReadVariants> {
        let off = |v: u32| v as i32;
        // Probe-read variant: r6 = skb, r7 = dev, r8 = net; scratch on the stack.
        let mut p = vec![ldx(8, 6, 1, 0)];
        let read = |p: &mut Vec<u64>, slot: i16, size: i32, base: u8, offset: i32| {
            p.extend([
                mov_reg(1, 10),
                add_imm(1, i32::from(slot)),
                mov_imm(2, size),
                mov_reg(3, base),
                add_imm(3, offset),
                call(BPF_FUNC_PROBE_READ_KERNEL),
            ]);
        };
        read(&mut p, -8, 8, 6, off(o.skb_dev));
        p.push(ldx(8, 7, 10, -8));
        read(&mut p, -16, 4, 7, off(o.dev_ifindex));
        read(&mut p, -24, 8, 7, off(o.dev_net));
        p.push(ldx(8, 8, 10, -24));
        read(&mut p, -32, 4, 8, off(o.net_inum));
        read(&mut p, -40, 2, 6, off(o.skb_protocol));
        read(&mut p, -48, 4, 6, off(o.skb_len));
        p.extend([mov_imm(0, 0), exit()]);
        let probe = load_and_attach(&p, b"retina_probe6", tracepoint, 0)?;

        let d = direct_reads(o);
        let (direct, direct_error) = match attach_btf_id {
            Some(id) => match load_and_attach(&d, b"retina_direct6", tracepoint, id) {
                Ok(v) => (Some(v), None),
                Err(e) => (None, Some(format!("{e:#}"))),
            },
            None => (
                None,
                Some("no btf_trace_kfree_skb in the kernel's BTF".into()),
            ),
        };
        Ok(ReadVariants {
            probe,
            direct,
            direct_error,
        })
    }
}

/// `union bpf_attr` for BPF_MAP_CREATE, up to `map_flags`.
#[repr(C)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}

/// `union bpf_attr` for BPF_MAP_UPDATE_ELEM.
#[repr(C)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

const BPF_MAP_TYPE_PERCPU_HASH: u32 = 5;
const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;

/// A per-CPU map of 16-byte values (the agent's `DropValue`), created with `map_type`,
/// `key_size` and `max_entries`, with `key` present (all CPUs' values zero).
fn percpu_map_with(map_type: u32, key: &[u8], max_entries: u32) -> Result<OwnedFd> {
    let mut attr = MapCreateAttr {
        map_type,
        key_size: key.len() as u32,
        value_size: 16,
        max_entries,
        map_flags: 0,
    };
    // SAFETY: a BPF_MAP_CREATE attr without pointers.
    let fd = unsafe { bpf(BPF_MAP_CREATE, &mut attr) }.context("BPF_MAP_CREATE")?;
    // SAFETY: a new descriptor that nothing else owns.
    let map = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // Per-CPU values: one 16-byte slot per possible CPU.
    let cpus = aya::util::nr_cpus().map_err(|(p, e)| anyhow::anyhow!("{p}: {e}"))?;
    let values = vec![0u8; 16 * cpus];
    let mut attr = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: key.as_ptr() as u64,
        value: values.as_ptr() as u64,
        flags: 0,
    };
    // SAFETY: a BPF_MAP_UPDATE_ELEM attr pointing at a live key of `key_size` bytes and
    // one live 16-byte value per possible CPU.
    unsafe { bpf(BPF_MAP_UPDATE_ELEM, &mut attr) }.context("BPF_MAP_UPDATE_ELEM")?;
    Ok(map)
}

/// A program attached to `kfree_skb` with its maps; detached and freed on drop.
pub struct Variant {
    pub prog: OwnedFd,
    _link: OwnedFd,
    _map: Option<OwnedFd>,
}

/// Attaches `insns` as `tp_btf` where `attach_btf_id` is known, else as a raw tracepoint
/// (the dispatch, and so the cost of an empty program, is the same for both).
fn variant(
    insns: &[u64],
    name: &[u8],
    tracepoint: &CStr,
    attach_btf_id: Option<u32>,
    map: Option<OwnedFd>,
) -> Result<Variant> {
    let (prog, link) = load_and_attach(insns, name, tracepoint, attach_btf_id.unwrap_or(0))?;
    Ok(Variant {
        prog,
        _link: link,
        _map: map,
    })
}

/// The map half of the agent's per-drop work, without the kernel reads: a lookup of one
/// constant key and the in-place `packets += 1; bytes += 32` on the returned per-CPU slot.
/// * `hash`: a `BPF_MAP_TYPE_PERCPU_HASH` of 16-byte keys like the agent's `DROPS` (same
///   `max_entries`, so the same bucket array), the key inserted beforehand;
/// * `array`: a `BPF_MAP_TYPE_PERCPU_ARRAY` of the same size, constant index.
pub fn map_variant(
    hash: bool,
    key: [u32; 4],
    max_entries: u32,
    tracepoint: &CStr,
    attach_btf_id: Option<u32>,
) -> Result<Variant> {
    let (map, key_insns, key_len, name): (_, Vec<u64>, i16, &[u8]) = if hash {
        let bytes: Vec<u8> = key.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let map = percpu_map_with(BPF_MAP_TYPE_PERCPU_HASH, &bytes, max_entries)?;
        let st_key = (0..4)
            .map(|i| st(4, 10, -16 + 4 * i as i16, key[i] as i32))
            .collect();
        (map, st_key, 16, b"retina_hash1")
    } else {
        let index = key[0] % max_entries;
        let map = percpu_map_with(BPF_MAP_TYPE_PERCPU_ARRAY, &index.to_ne_bytes(), max_entries)?;
        (map, vec![st(4, 10, -4, index as i32)], 4, b"retina_array1")
    };
    let mut p = key_insns;
    p.extend(ld_map_fd(1, map.as_fd()));
    p.extend([
        mov_reg(2, 10),
        add_imm(2, -i32::from(key_len)),
        call(BPF_FUNC_MAP_LOOKUP_ELEM),
        jeq0(0, 6),
        ldx(8, 1, 0, 0),
        add_imm(1, 1),
        stx64(0, 1, 0),
        ldx(8, 1, 0, 8),
        add_imm(1, 32),
        stx64(0, 1, 8),
        mov_imm(0, 0),
        exit(),
    ]);
    variant(&p, name, tracepoint, attach_btf_id, Some(map))
}

/// The six reads as direct loads from the `tp_btf` program's typed `skb` (a NULL dev skips
/// its three).
fn direct_reads(o: &ReadOffsets) -> Vec<u64> {
    vec![
        ldx(8, 6, 1, 0),
        ldx(8, 7, 6, o.skb_dev as i16),
        ldx(2, 4, 6, o.skb_protocol as i16),
        ldx(4, 5, 6, o.skb_len as i16),
        jeq0(7, 3),
        ldx(4, 2, 7, o.dev_ifindex as i16),
        ldx(8, 8, 7, o.dev_net as i16),
        ldx(4, 3, 8, o.net_inum as i16),
        mov_imm(0, 0),
        exit(),
    ]
}

/// The same direct reads as [`ReadVariants`]' `direct`, on their own, for attaching ahead
/// of the agent's program: programs on one tracepoint run in attach order, so this one
/// meets `skb->dev`, `dev->nd_net` and `net->ns.inum` as cold as the agent's program
/// meets them in production (attached after it, they are already in cache).
pub fn direct_reads_variant(
    o: &ReadOffsets,
    tracepoint: &CStr,
    attach_btf_id: u32,
) -> Result<Variant> {
    variant(
        &direct_reads(o),
        b"retina_direct6f",
        tracepoint,
        Some(attach_btf_id),
        None,
    )
}

/// The vmlinux BTF type id of the typedef `name` (e.g. `btf_trace_kfree_skb`, what a
/// `tp_btf` program attaches to).
pub fn vmlinux_typedef_id(name: &str) -> Result<Option<u32>> {
    let data =
        std::fs::read("/sys/kernel/btf/vmlinux").context("reading /sys/kernel/btf/vmlinux")?;
    let u32_at = |o: usize| -> Result<u32> {
        Ok(u32::from_le_bytes(
            data.get(o..o + 4).context("truncated BTF")?.try_into()?,
        ))
    };
    anyhow::ensure!(
        data.len() > 24 && data[0] == 0x9f && data[1] == 0xeb,
        "not little-endian BTF"
    );
    let hdr_len = u32_at(4)? as usize;
    let type_off = hdr_len + u32_at(8)? as usize;
    let type_end = type_off + u32_at(12)? as usize;
    let str_off = hdr_len + u32_at(16)? as usize;
    let name_at = |o: u32| -> &[u8] {
        let start = str_off + o as usize;
        let rest = data.get(start..).unwrap_or(&[]);
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        &rest[..end]
    };
    let mut off = type_off;
    let mut id = 1u32;
    while off + 12 <= type_end {
        let name_off = u32_at(off)?;
        let info = u32_at(off + 4)?;
        let kind = (info >> 24) & 0x1f;
        let vlen = (info & 0xffff) as usize;
        if kind == 8 && name_at(name_off) == name.as_bytes() {
            return Ok(Some(id));
        }
        off += 12
            + match kind {
                1 | 14 | 17 => 4,
                3 => 12,
                4 | 5 | 15 | 19 => 12 * vlen,
                6 | 13 => 8 * vlen,
                _ => 0,
            };
        id += 1;
    }
    Ok(None)
}

/// What `struct bpf_prog_info` says about a program (the fields the bench reports).
#[derive(Clone, Copy, Debug, Default)]
pub struct ProgInfo {
    pub id: u32,
    pub jited_len: u32,
    pub xlated_len: u32,
    pub run_time_ns: u64,
    pub run_cnt: u64,
    pub verified_insns: u32,
}

impl ProgInfo {
    pub fn of(fd: BorrowedFd<'_>) -> Result<ProgInfo> {
        // `struct bpf_prog_info` is 232 bytes on 6.x kernels; a larger zeroed buffer is
        // fine (the kernel fills what it knows and reports the length).
        let mut buf = [0u64; 40];
        let mut attr = InfoAttr {
            bpf_fd: fd.as_raw_fd() as u32,
            info_len: std::mem::size_of_val(&buf) as u32,
            info: buf.as_mut_ptr() as u64,
        };
        // SAFETY: a BPF_OBJ_GET_INFO_BY_FD attr pointing at `info_len` writable bytes.
        unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) }.context("BPF_OBJ_GET_INFO_BY_FD")?;
        ensure!(
            attr.info_len >= 220,
            "bpf_prog_info too short ({} bytes): kernel without run-time statistics",
            attr.info_len
        );
        let u32_at = |off: usize| {
            let w = buf[off / 8];
            if off.is_multiple_of(8) {
                w as u32
            } else {
                (w >> 32) as u32
            }
        };
        // Offsets of `struct bpf_prog_info` (include/uapi/linux/bpf.h): id 4,
        // jited_prog_len 16, xlated_prog_len 20, run_time_ns 192, run_cnt 200,
        // verified_insns 216.
        Ok(ProgInfo {
            id: u32_at(4),
            jited_len: u32_at(16),
            xlated_len: u32_at(20),
            run_time_ns: buf[192 / 8],
            run_cnt: buf[200 / 8],
            verified_insns: u32_at(216),
        })
    }

    pub fn json(&self) -> Value {
        json!({
            "id": self.id,
            "jited_bytes": self.jited_len,
            "xlated_bytes": self.xlated_len,
            "verified_insns": self.verified_insns,
        })
    }
}

const BPF_STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Sets `kernel.bpf_stats_enabled=1`; restores the previous value on drop.
pub struct BpfStats {
    previous: String,
}

impl BpfStats {
    pub fn enable() -> Result<BpfStats> {
        let previous = std::fs::read_to_string(BPF_STATS_SYSCTL)
            .with_context(|| format!("reading {BPF_STATS_SYSCTL}"))?
            .trim()
            .to_string();
        std::fs::write(BPF_STATS_SYSCTL, "1")
            .with_context(|| format!("writing 1 to {BPF_STATS_SYSCTL}"))?;
        Ok(BpfStats { previous })
    }

    pub fn previous(&self) -> &str {
        &self.previous
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(BPF_STATS_SYSCTL, &self.previous) {
            eprintln!(
                "cleanup: restoring {BPF_STATS_SYSCTL}={}: {e}",
                self.previous
            );
        }
    }
}

fn per_run(before: &ProgInfo, after: &ProgInfo) -> (u64, f64) {
    let runs = after.run_cnt - before.run_cnt;
    let ns = (after.run_time_ns - before.run_time_ns) as f64 / runs.max(1) as f64;
    (runs, ns)
}

/// The agent's program in a collector's probe (the BTF-typed one where the kernel allows
/// it, else the raw tracepoint one) and a descriptor for its statistics.
pub(crate) fn agent_program(
    drops: &mut retina_agent::collectors::drops::DropCollector,
) -> Result<(&'static str, OwnedFd)> {
    let ebpf = drops.probe_mut().ebpf_mut();
    [
        retina_ebpf_common::BTF_PROGRAM_NAME,
        retina_ebpf_common::PROGRAM_NAME,
    ]
    .into_iter()
    .find_map(|name| {
        let fd = ebpf
            .program(name)?
            .fd()
            .ok()?
            .as_fd()
            .try_clone_to_owned()
            .ok()?;
        Some((name, fd))
    })
    .context("the agent's drop program is not loaded")
}

/// Run-time statistics of several programs over one flood.
pub(crate) struct Measured {
    before: Vec<ProgInfo>,
}

impl Measured {
    pub(crate) fn start(progs: &[BorrowedFd<'_>]) -> Result<Measured> {
        Ok(Measured {
            before: progs
                .iter()
                .map(|fd| ProgInfo::of(*fd))
                .collect::<Result<_>>()?,
        })
    }

    /// (runs, ns per run, info at the end) for each program, in order.
    pub(crate) fn end(self, progs: &[BorrowedFd<'_>]) -> Result<Vec<(u64, f64, ProgInfo)>> {
        self.before
            .iter()
            .zip(progs)
            .map(|(b, fd)| {
                let a = ProgInfo::of(*fd)?;
                let (runs, ns) = per_run(b, &a);
                Ok((runs, ns, a))
            })
            .collect()
    }
}

pub(crate) fn program_json(r: &(u64, f64, ProgInfo)) -> Value {
    json!({ "info": r.2.json(), "runs": r.0, "ns_per_run": super::sys::round3(r.1) })
}
