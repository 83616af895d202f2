//! A workload the way kubelet, a container runtime or systemd makes one: a process inside a
//! network namespace, in a cgroup named in their layout. Shared by `tests/workload.rs` and
//! the bench's workload section.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};

/// The cgroup v2 mount point (`/sys/fs/cgroup` on a pure-v2 host, `/sys/fs/cgroup/unified`
/// on a hybrid one).
pub fn cgroup_v2_root() -> Result<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts")?;
    for root in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        if std::path::Path::new(root).join("cgroup.procs").exists()
            && mounts
                .lines()
                .any(|l| l.split_whitespace().nth(1) == Some(root) && l.contains("cgroup2"))
        {
            return Ok(PathBuf::from(root));
        }
    }
    bail!("no cgroup v2 hierarchy mounted at /sys/fs/cgroup or /sys/fs/cgroup/unified")
}

/// A `sleep` inside the named network namespace `netns`, moved into the cgroup `path`
/// (relative to the v2 root; created, with every missing parent). Killed and the cgroups
/// it created removed on drop; drop workloads sharing parents in reverse creation order.
pub struct Workload {
    child: Child,
    created: Vec<PathBuf>,
}

impl Workload {
    pub fn start(netns: &str, path: &str) -> Result<Workload> {
        let root = cgroup_v2_root()?;
        let mut w = Workload {
            child: Command::new("ip")
                .args(["netns", "exec", netns, "sleep", "3600"])
                .stdin(Stdio::null())
                .spawn()
                .context("starting sleep in the namespace")?,
            created: Vec::new(),
        };
        let mut dir = root;
        for c in path.split('/').filter(|c| !c.is_empty()) {
            dir.push(c);
            if !dir.exists() {
                std::fs::create_dir(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
                w.created.push(dir.clone());
            }
        }
        let pid = w.pid();
        std::fs::write(dir.join("cgroup.procs"), pid.to_string())
            .with_context(|| format!("moving {pid} into {}", dir.display()))?;
        // `ip netns exec` has become `sleep` in that namespace once its ns/net differs.
        let host = std::fs::read_link("/proc/self/ns/net")?;
        let end = Instant::now() + Duration::from_secs(10);
        while std::fs::read_link(format!("/proc/{pid}/ns/net"))? == host {
            ensure!(Instant::now() < end, "process {pid} never entered {netns}");
            std::thread::sleep(Duration::from_millis(5));
        }
        let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
        ensure!(cg.contains(path), "process {pid} is not in {path}: {cg}");
        Ok(w)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for dir in self.created.iter().rev() {
            remove_cgroup(dir);
        }
    }
}

/// Removes the empty cgroup `dir` (for up to 2 s, while its last process is reaped);
/// says so on stderr when it cannot. For cleanup on drop.
pub fn remove_cgroup(dir: &std::path::Path) {
    for _ in 0..100 {
        if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("cleanup: could not remove {}", dir.display());
}
