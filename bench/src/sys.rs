//! Clocks, /proc readings, signal handling, child-process guards and sample statistics.

use std::{
    io::Read as _,
    process::{Child, Command},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

// ---- Clocks ----

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock ids used here always exist.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CPU time this thread has used (CLOCK_THREAD_CPUTIME_ID: user + system, ns-precise).
pub fn thread_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CPU time of the whole process, all threads.
pub fn process_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// User and system CPU time of this thread from getrusage(RUSAGE_THREAD), in µs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rusage {
    pub user_us: u64,
    pub sys_us: u64,
}

impl Rusage {
    pub fn thread() -> Rusage {
        // SAFETY: all-zero is a valid `rusage`.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `ru` is a valid, writable rusage; RUSAGE_THREAD exists since Linux 2.6.26.
        unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
        let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
        Rusage {
            user_us: us(ru.ru_utime),
            sys_us: us(ru.ru_stime),
        }
    }

    pub fn since(self, earlier: Rusage) -> Rusage {
        Rusage {
            user_us: self.user_us.saturating_sub(earlier.user_us),
            sys_us: self.sys_us.saturating_sub(earlier.sys_us),
        }
    }
}

// ---- /proc ----

/// A `kB` field (`VmRSS`, `VmHWM`) of /proc/PID/status (`self` for this process).
pub fn status_kib(pid: &str, field: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("{path} has no {field}"))
}

pub fn rss_kib_self() -> u64 {
    status_kib("self", "VmRSS").unwrap_or(0)
}

/// utime + stime of a process, in clock ticks (/proc/PID/stat fields 14 and 15).
pub fn cpu_ticks(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name (field 2) may contain spaces and parentheses: skip past the last ')'.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14 → index 11.
    let n = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("{path}: field {}", i + 3))
    };
    Ok(n(11)? + n(12)?)
}

/// CPU time of a whole process (every thread, those that exited included), in
/// nanoseconds: its process CPU-time clock (`clock_getcpuclockid`), which the scheduler
/// keeps to the nanosecond. `/proc/PID/stat` counts 10 ms ticks, too coarse for a daemon
/// that uses a few ms per 10 s.
pub fn cpu_ns(pid: u32) -> Result<u64> {
    let pid = libc::pid_t::try_from(pid).context("pid out of range")?;
    let mut clock: libc::clockid_t = 0;
    // SAFETY: `clock` is a valid out-pointer for the call.
    let rc = unsafe { libc::clock_getcpuclockid(pid, &mut clock) };
    if rc != 0 {
        bail!(
            "clock_getcpuclockid({pid}): {}",
            std::io::Error::from_raw_os_error(rc)
        );
    }
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; `clock` came from clock_getcpuclockid.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("clock_gettime(CPU clock of {pid})"));
    }
    Ok(u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000
        + u64::try_from(ts.tv_nsec).unwrap_or(0))
}

/// Clock ticks per second (for [`cpu_ticks`]).
pub fn clk_tck() -> u64 {
    // SAFETY: sysconf has no preconditions.
    match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        t if t > 0 => t as u64,
        _ => 100,
    }
}

/// The 1, 5 and 15 minute load averages.
pub fn loadavg() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut it = text
        .split_whitespace()
        .map(|v| v.parse::<f64>().unwrap_or(f64::NAN));
    [
        it.next().unwrap_or(f64::NAN),
        it.next().unwrap_or(f64::NAN),
        it.next().unwrap_or(f64::NAN),
    ]
}

/// The machine, for the report: CPU model, logical CPUs, kernel, date.
pub fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_default();
    let kernel = retina_agent::kernel::sys::uname()
        .map(|u| u.release)
        .unwrap_or_default();
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    json!({
        "cpu_model": model,
        "nproc": nproc,
        "kernel": kernel,
        "date_utc": date,
        "loadavg_at_start": loadavg(),
    })
}

// ---- Ctrl-C ----

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// SIGINT, SIGTERM and SIGHUP set a flag instead of killing the process, so every long loop
/// stops at its next check and the RAII guards (veths, namespaces, children, sysctls) run.
pub fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: all-zero is a valid sigaction; the handler only stores to an atomic,
        // which is async-signal-safe.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

pub fn stopped() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// Fails with "interrupted" once a stop signal arrived.
pub fn check_stop() -> Result<()> {
    if stopped() {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps `d`, waking early (with an error) on a stop signal.
pub fn sleep(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    loop {
        check_stop()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

// ---- Children ----

/// `rotel-agent` (the PyPI collector at `bin`) discarding what it receives, OTLP/gRPC on
/// `grpc` and OTLP/HTTP on `http` (127.0.0.1), its output discarded.
pub fn blackhole_rotel(bin: &std::path::Path, grpc: u16, http: u16) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(["start", "--exporter", "blackhole", "--otlp-grpc-endpoint"])
        .arg(format!("127.0.0.1:{grpc}"))
        .arg("--otlp-http-endpoint")
        .arg(format!("127.0.0.1:{http}"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    cmd
}

/// Waits up to 20 s for something (`what`) to listen on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16, what: &str) -> Result<()> {
    let end = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > end {
            bail!("{what} did not listen on 127.0.0.1:{port} within 20 s");
        }
        sleep(Duration::from_millis(50))?;
    }
    Ok(())
}

/// The agent at `agent_bin` as the packaged unit runs it: uid and gid 65534, only
/// CAP_BPF and CAP_PERFMON (inheritable, ambient and bounding), no new privileges; its
/// arguments are the caller's to add.
pub fn agent_as_unit(agent_bin: &std::path::Path) -> Command {
    let caps = "-all,+bpf,+perfmon";
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(format!("--inh-caps={caps}"))
        .arg(format!("--ambient-caps={caps}"))
        .arg(format!("--bounding-set={caps}"))
        .arg("--no-new-privs")
        .arg(agent_bin);
    cmd
}

/// A child process, terminated (SIGTERM, then SIGKILL after 2 s) and reaped on drop.
pub struct ChildGuard {
    pub child: Child,
    pub name: String,
}

impl ChildGuard {
    pub fn spawn(name: &str, cmd: &mut Command) -> Result<ChildGuard> {
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        Ok(ChildGuard {
            child,
            name: name.to_string(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status)` if the child has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits for the child to exit and returns its stdout (which must be piped).
    pub fn wait_stdout(mut self) -> Result<(std::process::ExitStatus, String)> {
        let mut out = String::new();
        if let Some(mut stdout) = self.child.stdout.take() {
            stdout
                .read_to_string(&mut out)
                .with_context(|| format!("reading the output of {}", self.name))?;
        }
        let status = self.child.wait()?;
        Ok((status, out))
    }

    fn terminate(&mut self) {
        if self.exited().is_some() {
            return;
        }
        // SAFETY: kill(2) on the pid of a child we have not reaped yet.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let end = Instant::now() + Duration::from_secs(2);
        while Instant::now() < end {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.terminate();
    }
}

// ---- Statistics ----

/// Median, p99, mean, min and max of a set of samples (nanoseconds or any unit).
#[derive(Clone, Copy, Debug, Default)]
pub struct Summary {
    pub n: usize,
    pub median: f64,
    pub p99: f64,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    pub fn of(samples: &[u64]) -> Summary {
        if samples.is_empty() {
            return Summary::default();
        }
        let mut s = samples.to_vec();
        s.sort_unstable();
        let n = s.len();
        let pct = |q: f64| s[((q * n as f64).ceil() as usize).clamp(1, n) - 1] as f64;
        Summary {
            n,
            median: pct(0.5),
            p99: pct(0.99),
            mean: s.iter().map(|&v| v as f64).sum::<f64>() / n as f64,
            min: s[0] as f64,
            max: s[n - 1] as f64,
        }
    }

    /// Scaled copy (e.g. ns → µs with 1e-3).
    pub fn scaled(self, k: f64) -> Summary {
        Summary {
            median: self.median * k,
            p99: self.p99 * k,
            mean: self.mean * k,
            min: self.min * k,
            max: self.max * k,
            ..self
        }
    }

    pub fn json(&self) -> Value {
        json!({
            "n": self.n,
            "median": round3(self.median),
            "p99": round3(self.p99),
            "mean": round3(self.mean),
            "min": round3(self.min),
            "max": round3(self.max),
        })
    }
}

/// Rounds to 3 decimals for the JSON report.
pub fn round3(v: f64) -> f64 {
    if v.is_finite() {
        (v * 1000.0).round() / 1000.0
    } else {
        v
    }
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for a local bench).
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}
