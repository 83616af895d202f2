//! Hostile collectors: one answering a gigabyte, in a memory cgroup.

use super::*;

// ---- Hostile peers ----

/// A memory cgroup limited to `limit` bytes, removed on drop (its processes are killed
/// first). Cgroup v2 where the memory controller is there (`/sys/fs/cgroup` on pure-v2
/// hosts, `/sys/fs/cgroup/unified` on hybrid ones), else the v1 memory hierarchy.
struct MemoryCgroup {
    dir: PathBuf,
    v2: bool,
}

impl MemoryCgroup {
    fn new(tag: &str, limit: u64) -> Result<Self> {
        let has_memory = |root: &str| {
            std::fs::read_to_string(format!("{root}/cgroup.subtree_control"))
                .is_ok_and(|c| c.split_whitespace().any(|w| w == "memory"))
        };
        let name = format!("retina-test-{tag}-{}", std::process::id());
        let (dir, v2) = if has_memory("/sys/fs/cgroup") {
            (PathBuf::from("/sys/fs/cgroup").join(&name), true)
        } else if has_memory("/sys/fs/cgroup/unified") {
            (PathBuf::from("/sys/fs/cgroup/unified").join(&name), true)
        } else if std::path::Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists() {
            (PathBuf::from("/sys/fs/cgroup/memory").join(&name), false)
        } else {
            bail!("no cgroup memory controller on this host (v2 or v1)");
        };
        std::fs::create_dir(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        let cg = MemoryCgroup { dir, v2 };
        let (file, value) = if v2 {
            ("memory.max", limit.to_string())
        } else {
            ("memory.limit_in_bytes", limit.to_string())
        };
        std::fs::write(cg.dir.join(file), value)
            .with_context(|| format!("setting {file} in {}", cg.dir.display()))?;
        if v2 {
            // No swap either, so the limit is the limit.
            let _ = std::fs::write(cg.dir.join("memory.swap.max"), "0");
        } else {
            let _ = std::fs::write(
                cg.dir.join("memory.memsw.limit_in_bytes"),
                limit.to_string(),
            );
        }
        Ok(cg)
    }

    fn procs(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    /// OOM kills in the cgroup so far.
    fn oom_kills(&self) -> Result<u64> {
        let (file, key) = if self.v2 {
            ("memory.events", "oom_kill")
        } else {
            ("memory.oom_control", "oom_kill")
        };
        let text = std::fs::read_to_string(self.dir.join(file))?;
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
            .unwrap_or(0))
    }

    /// The cgroup's peak memory use, in bytes, where the kernel keeps it.
    fn peak(&self) -> Option<u64> {
        let file = if self.v2 {
            "memory.peak"
        } else {
            "memory.max_usage_in_bytes"
        };
        std::fs::read_to_string(self.dir.join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        if let Ok(pids) = std::fs::read_to_string(self.procs()) {
            for pid in pids
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                // SAFETY: kill(2) on a pid read from our own test cgroup.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        for _ in 0..100 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("cleanup: could not remove {}", self.dir.display());
    }
}

/// An OTLP/HTTP "collector" that answers every request `200` with `Content-Length: 1 GiB`
/// and streams zeros for as long as the client reads (at most 1 GiB a connection).
struct HugeAnswers {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HugeAnswers {
    fn start() -> Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let port = listener.local_addr()?.port();
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                let Ok((mut s, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                let flag = flag.clone();
                std::thread::spawn(move || {
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                    let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
                    // The request: headers, then whatever body came with them.
                    let mut buf = [0u8; 64 * 1024];
                    let _ = s.read(&mut buf);
                    let head = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 1073741824\r\n\r\n";
                    if s.write_all(head).is_err() {
                        return;
                    }
                    let zeros = vec![0u8; 1 << 20];
                    for _ in 0..1024 {
                        if flag.load(Ordering::SeqCst) || s.write_all(&zeros).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Ok(HugeAnswers {
            port,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for HugeAnswers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A collector answering 1 GiB to every export: the agent, in a 256 MiB memory cgroup as
/// the unit runs it, reads at most 4 MiB of each answer, counts every export as failed
/// and keeps running.
#[test]
fn a_collector_answering_a_gigabyte_cannot_exhaust_memory() -> Result<()> {
    require_root();
    let dir = TempDir::new("huge")?;
    let cgroup = MemoryCgroup::new("huge", 256 << 20)?;
    let huge = HugeAnswers::start()?;
    let env = [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".to_string()),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{}", huge.port),
        ),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "3000".to_string()),
    ];
    let mut agent = start_agent_with(
        &dir,
        "agent",
        &env,
        Launch::InCgroup(&cgroup.procs()),
        "# empty: defaults\n",
    )?;
    let failures = agent.wait_for_export_failures(5.0, Duration::from_secs(90))?;
    agent.proc.ensure_alive()?;
    let rss = agent.proc.rss_kib()?;
    eprintln!(
        "after {failures} failed exports: RSS {rss} KiB, cgroup peak {:?} bytes, OOM kills {}",
        cgroup.peak(),
        cgroup.oom_kills()?
    );
    assert_eq!(cgroup.oom_kills()?, 0, "the agent was OOM-killed");
    assert!(rss < 64 * 1024, "RSS {rss} KiB reading a 1 GiB answer");
    let log = agent.log();
    assert!(log.contains("OTLP export failed"), "{log}");
    assert!(
        log.contains("4 MiB"),
        "the reason should name the limit: {log}"
    );
    agent.stop()?;
    Ok(())
}
