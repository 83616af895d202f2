//! Raw bpf(2) for the eBPF overhead measurement: an empty raw-tracepoint program on
//! `kfree_skb` (the baseline), per-program run-time statistics, and the
//! `kernel.bpf_stats_enabled` sysctl.

use std::{
    ffi::CStr,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
};

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;
const BPF_PROG_TYPE_RAW_TRACEPOINT: u32 = 17;

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is the bpf_attr variant `cmd` expects (the kernel checks that bytes
    // beyond the ones it knows are zero), and every pointer in it refers to live memory of
    // the size the command needs.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>(),
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// `union bpf_attr` for BPF_PROG_LOAD, up to `expected_attach_type`.
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
        // BPF_MOV64_IMM(R0, 0) and BPF_EXIT_INSN(), as (code, regs, off, imm) in 8 bytes.
        let insns: [u64; 2] = [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];
        let license = c"GPL";
        let mut name = [0u8; 16];
        name[..12].copy_from_slice(b"retina_empty");
        let mut attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_RAW_TRACEPOINT,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level: 0,
            log_size: 0,
            log_buf: 0,
            kern_version: 0,
            prog_flags: 0,
            prog_name: name,
            prog_ifindex: 0,
            expected_attach_type: 0,
        };
        let fd = bpf(BPF_PROG_LOAD, &mut attr).context("BPF_PROG_LOAD (empty program)")?;
        // SAFETY: the kernel returned a new descriptor that nothing else owns.
        let prog = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let mut attr = RawTpAttr {
            name: tracepoint.as_ptr() as u64,
            prog_fd: prog.as_raw_fd() as u32,
            _pad: 0,
            cookie: 0,
        };
        let fd = bpf(BPF_RAW_TRACEPOINT_OPEN, &mut attr)
            .with_context(|| format!("BPF_RAW_TRACEPOINT_OPEN {tracepoint:?}"))?;
        // SAFETY: as above.
        let link = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        Ok(EmptyProgram { _link: link, prog })
    }
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
        bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).context("BPF_OBJ_GET_INFO_BY_FD")?;
        ensure!(
            attr.info_len >= 220,
            "bpf_prog_info too short ({} bytes): kernel without run-time statistics",
            attr.info_len
        );
        let u32_at = |off: usize| {
            let w = buf[off / 8];
            if off % 8 == 0 { w as u32 } else { (w >> 32) as u32 }
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
