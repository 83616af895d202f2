//! Section 9, issue 26 item 4: socket cgroup ids that are nowhere (sockets that outlived
//! their cgroups) in a tree of `CGROUPS` empty cgroups. Before, every cycle whose keys
//! brought such an id back walked the whole tree; now a removed id is remembered and
//! answered without a walk. Measured per cycle: a fresh `SocketOwners` resolving the
//! `SOCKETS` ids (the walk every such cycle cost before) against one that has found them
//! removed and forgotten them (`resolve` from the negative cache, `check`, `forget_gone`:
//! the most a cycle costs now), CPU, same run.

use std::{os::unix::fs::MetadataExt as _, path::PathBuf};

use anyhow::{Context, Result, ensure};
use retina_agent::workload::sockets::SocketOwners;
use serde_json::{Value, json};

use crate::sys;

pub const CGROUPS: usize = 5000;
pub const SOCKETS: usize = 100;

/// The bench's cgroups, removed on drop.
struct Tree {
    top: PathBuf,
    dirs: Vec<PathBuf>,
}

impl Drop for Tree {
    fn drop(&mut self) {
        for d in self.dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
        let _ = std::fs::remove_dir(&self.top);
    }
}

pub struct RemovedReport {
    pub walk_cpu_us: sys::Summary,
    pub cached_cpu_us: sys::Summary,
    pub json: Value,
}

pub fn run(runs: usize) -> Result<RemovedReport> {
    let root = retina_tests::workload::cgroup_v2_root()?;
    let top = root.join(format!("retinabench{}.slice", std::process::id()));
    std::fs::create_dir(&top).with_context(|| format!("mkdir {}", top.display()))?;
    let mut tree = Tree {
        top: top.clone(),
        dirs: Vec::new(),
    };
    for i in 0..CGROUPS {
        let d = top.join(format!("c{i}"));
        std::fs::create_dir(&d).with_context(|| format!("mkdir {}", d.display()))?;
        tree.dirs.push(d);
    }
    // The removed cgroups' ids (made, read, removed).
    let mut ids = Vec::new();
    for i in 0..SOCKETS {
        let d = top.join(format!("gone{i}"));
        std::fs::create_dir(&d)?;
        ids.push(std::fs::metadata(&d)?.ino());
        std::fs::remove_dir(&d)?;
    }
    let (mut walk, mut cached) = (Vec::new(), Vec::new());
    let mut owners = SocketOwners::with_root(Some(root.clone()));
    owners.resolve(ids.iter().copied());
    ensure!(owners.check(), "the removed ids were not found removed");
    owners.forget_gone(|_| false);
    ensure!(
        owners.removed_len() == SOCKETS,
        "not all removed ids remembered"
    );
    for _ in 0..runs.max(5) {
        sys::check_stop()?;
        let mut fresh = SocketOwners::with_root(Some(root.clone()));
        let c = sys::thread_cpu_ns();
        fresh.resolve(ids.iter().copied());
        walk.push(sys::thread_cpu_ns() - c);
        let c = sys::thread_cpu_ns();
        owners.resolve(ids.iter().copied());
        let gone = owners.check();
        owners.forget_gone(|_| false);
        cached.push(sys::thread_cpu_ns() - c);
        ensure!(gone, "the cached ids were not found gone");
    }
    drop(tree);
    let walk_cpu_us = sys::Summary::of(&walk).scaled(1e-3);
    let cached_cpu_us = sys::Summary::of(&cached).scaled(1e-3);
    let json = json!({
        "empty_cgroups": CGROUPS,
        "removed_socket_cgroups": SOCKETS,
        "per_cycle_walk_cpu_us": walk_cpu_us.json(),
        "per_cycle_cached_cpu_us": cached_cpu_us.json(),
    });
    Ok(RemovedReport {
        walk_cpu_us,
        cached_cpu_us,
        json,
    })
}
