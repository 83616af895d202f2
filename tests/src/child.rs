//! Child processes of the agent for fault tests: a clean environment, a bounded wait that
//! reports a hang (and the peak RSS), a memory cgroup of their own, FIFOs.

use std::{
    os::unix::{ffi::OsStrExt, process::CommandExt},
    path::Path,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};

use crate::{agent_bin, unique_name};

/// The agent as the packaged unit runs it (uid 65534, the unit's capabilities) with a clean
/// environment (the test's own must not decide the outcome).
pub fn agent(args: &[&str]) -> Command {
    let mut cmd = crate::unit::setpriv(&crate::unit::unit_capabilities());
    cmd.arg(agent_bin())
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("OTEL_METRIC_EXPORT_INTERVAL")
        .env_remove("RETINA_LOG_FORMAT")
        .env_remove("RETINA_CONFIG")
        .env_remove("RETINA_BTF")
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Kills the child's process group unless it was waited for.
pub struct Running(Option<Child>);

impl Running {
    pub fn spawn(mut cmd: Command) -> Result<Running> {
        Ok(Running(Some(cmd.spawn().context("spawning the agent")?)))
    }

    pub fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("child")
    }

    /// Whether the child has exited, without reaping it (so [`Running::wait`] still can).
    pub fn exited(&self) -> bool {
        // SAFETY: an all-zero siginfo is valid for waitid to overwrite.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `pid` is our child; `info` is valid for writes.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                self.pid() as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        // SAFETY: waitid filled `info` (si_pid 0 when nothing has exited).
        r == 0 && unsafe { info.si_pid() } != 0
    }

    pub fn pid(&self) -> i32 {
        self.0.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// Waits up to `limit` (a hang is the failure these tests look for), with the peak RSS
    /// of the child in KiB.
    // The child is reaped by `wait4` (for its rusage), which clippy cannot see.
    #[allow(clippy::zombie_processes)]
    pub fn wait(mut self, limit: Duration) -> Result<(Output, i64)> {
        let mut child = self.0.take().expect("child");
        let pid = child.id() as i32;
        let deadline = Instant::now() + limit;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let read = |p: Option<Box<dyn std::io::Read + Send>>| {
            std::thread::spawn(move || {
                let mut v = Vec::new();
                if let Some(mut p) = p {
                    let _ = p.read_to_end(&mut v);
                }
                v
            })
        };
        let out_t = read(stdout.map(|s| Box::new(s) as Box<dyn std::io::Read + Send>));
        let err_t = read(stderr.map(|s| Box::new(s) as Box<dyn std::io::Read + Send>));
        loop {
            let mut status = 0;
            // SAFETY: an all-zero rusage is valid for wait4 to overwrite.
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: `pid` is our child; `status` and `usage` are valid for writes.
            let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
            if r == pid {
                let out = Output {
                    status: std::os::unix::process::ExitStatusExt::from_raw(status),
                    stdout: out_t.join().unwrap_or_default(),
                    stderr: err_t.join().unwrap_or_default(),
                };
                return Ok((out, usage.ru_maxrss));
            }
            ensure!(r == 0, "wait4: {}", std::io::Error::last_os_error());
            if Instant::now() > deadline {
                // SAFETY: kill has no memory-safety preconditions; the group is our child's.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
                let _ = child.wait();
                bail!(
                    "the agent did not exit within {limit:?}: {}",
                    String::from_utf8_lossy(&err_t.join().unwrap_or_default())
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            // SAFETY: as above.
            unsafe { libc::kill(-(c.id() as i32), libc::SIGKILL) };
            let _ = c.wait();
        }
    }
}

/// A memory cgroup of its own for one child (cgroup v2 when its memory controller is on,
/// else v1), removed on drop: its peak usage is the child's own memory, not what it shared
/// with the test process at fork.
pub struct MemCgroup {
    dir: std::path::PathBuf,
    v2: bool,
}

impl MemCgroup {
    pub fn new(limit: u64) -> Result<MemCgroup> {
        let v2 = std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
            .is_ok_and(|c| c.split_whitespace().any(|w| w == "memory"));
        let root = if v2 {
            "/sys/fs/cgroup"
        } else {
            "/sys/fs/cgroup/memory"
        };
        let dir = Path::new(root).join(unique_name("rmemcg"));
        std::fs::create_dir(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        let cg = MemCgroup { dir, v2 };
        let limit_file = if v2 {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        };
        std::fs::write(cg.dir.join(limit_file), limit.to_string())?;
        Ok(cg)
    }

    /// Makes `cmd`'s process join the cgroup before it executes the agent.
    pub fn adopt(&self, cmd: &mut Command) -> Result<()> {
        let procs = std::ffi::CString::new(self.dir.join("cgroup.procs").as_os_str().as_bytes())?;
        // SAFETY: between fork and exec the closure only calls open, write and close.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
                libc::close(fd);
                if ok {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        Ok(())
    }

    /// Peak memory use in bytes.
    pub fn peak(&self) -> Result<u64> {
        let file = if self.v2 {
            "memory.peak"
        } else {
            "memory.max_usage_in_bytes"
        };
        Ok(std::fs::read_to_string(self.dir.join(file))?
            .trim()
            .parse()?)
    }
}

impl Drop for MemCgroup {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir(&self.dir) {
            eprintln!("cleanup: rmdir {}: {e}", self.dir.display());
        }
    }
}

/// A FIFO at `path` that anyone may read (0644), so the agent, run as the unit's user,
/// meets the FIFO itself rather than a permission error.
pub fn mkfifo(path: &Path) -> Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: `c` is a valid C string.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o644) };
    ensure!(
        rc == 0,
        "mkfifo {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    Ok(())
}
