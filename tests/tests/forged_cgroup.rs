//! Attribution nobody can forge (issue 26, item 2): a tenant given a cgroup subtree of its
//! own (`mkdir $CG/d; chown nobody: $CG/d $CG/d/cgroup.procs`, as systemd's `Delegate=`
//! or an administrator does) names cgroups inside it like a pod, a container or a
//! service, moves itself in and overflows a socket's receive buffer, or drops packets in a
//! network namespace of its own. None of that may come out as the workload it claims:
//! it comes out as the user it is (`user.id`).
//!
//! Real cgroups in the cgroup v2 hierarchy (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified`
//! on a hybrid host), a real unprivileged user (uid 65534 through `setpriv`), removed and
//! killed on drop.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
};

use anyhow::{Context, Result, bail, ensure};
use retina_tests::{
    workload::{cgroup_v2_root, remove_cgroup},
    *,
};

const NOBODY: u32 = 65534;
const UID: &str = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0";
const ID: &str = "4f1e2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8";

/// The probe's forged cgroups (below the delegated directory).
fn forged() -> Vec<String> {
    let uid_ = UID.replace('-', "_");
    vec![
        format!("kubepods-burstable-pod{uid_}.slice"),
        format!("docker-{ID}.scope"),
        "sshd.service".to_string(),
        format!("x/libpod_parent/libpod-{ID}"),
        format!("kubepods/pod{UID}/{ID}"),
    ]
}

/// A cgroup at the hierarchy's root handed to uid 65534 (directory and `cgroup.procs`);
/// on drop its tenants are killed and every cgroup in it removed, deepest first.
struct Delegated {
    root: PathBuf,
    dir: PathBuf,
    tenants: Vec<Tenant>,
}

impl Delegated {
    fn new(tag: &str) -> Result<Delegated> {
        let root = cgroup_v2_root()?;
        let dir = root.join(format!("retina{tag}{}", std::process::id()));
        std::fs::create_dir(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        let d = Delegated {
            root,
            dir,
            tenants: Vec::new(),
        };
        for p in [d.dir.clone(), d.dir.join("cgroup.procs")] {
            std::os::unix::fs::chown(&p, Some(NOBODY), Some(NOBODY))
                .with_context(|| format!("chown {}", p.display()))?;
        }
        Ok(d)
    }

    /// The path of `rel` (below the delegated directory) as the agent names it: below the
    /// hierarchy's root.
    fn agent_path(&self, rel: &str) -> String {
        let d = self.dir.strip_prefix(&self.root).unwrap_or(&self.dir);
        format!("/{}/{rel}", d.display())
    }

    /// Starts `script` as uid 65534 inside the delegated directory (root moves it there);
    /// the script then creates `rel` itself, moves itself in and goes on with `then`.
    /// Returns the first line it prints.
    fn tenant(&mut self, rel: &str, then: &str) -> Result<(usize, String)> {
        let target = self.dir.join(rel);
        let script = format!(
            "read _ && mkdir -p '{t}' && echo $$ > '{t}/cgroup.procs' && {then}",
            t = target.display()
        );
        let mut child = Command::new("setpriv")
            .arg(format!("--reuid={NOBODY}"))
            .arg(format!("--regid={NOBODY}"))
            .args(["--clear-groups", "--", "sh", "-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("setpriv")?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        self.tenants.push(Tenant { child, stdin });
        let t = self.tenants.last_mut().context("tenant")?;
        std::fs::write(self.dir.join("cgroup.procs"), t.child.id().to_string())
            .context("moving the tenant into the delegated cgroup")?;
        writeln!(t.stdin.as_mut().context("stdin")?, "go")?;
        let mut line = String::new();
        BufReader::new(stdout.context("stdout")?).read_line(&mut line)?;
        ensure!(
            !line.is_empty(),
            "the tenant in {rel} exited before its first line"
        );
        let pid = t.child.id();
        let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
        ensure!(cg.contains(rel), "tenant {pid} is not in {rel}: {cg}");
        // The tenant made its cgroups itself: they are its user's.
        ensure!(
            std::fs::metadata(&target)?.uid() == NOBODY,
            "{rel} not the tenant's"
        );
        Ok((self.tenants.len() - 1, line.trim().to_string()))
    }
}

struct Tenant {
    child: Child,
    stdin: Option<ChildStdin>,
}

/// Every directory below `dir`, deepest first.
fn subdirs(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            subdirs(&e.path(), out);
            out.push(e.path());
        }
    }
}

impl Drop for Delegated {
    fn drop(&mut self) {
        for t in &mut self.tenants {
            let _ = t.child.kill();
            let _ = t.child.wait();
        }
        let mut dirs = Vec::new();
        subdirs(&self.dir, &mut dirs);
        for d in dirs {
            remove_cgroup(&d);
        }
        remove_cgroup(&self.dir);
    }
}

/// A UDP socket's own drop count (`/proc/net/udp`, last column), by local port.
fn kernel_drops(port: u16) -> Result<u64> {
    let port = format!(":{port:04X}");
    let table = std::fs::read_to_string("/proc/net/udp")?;
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.get(1).is_some_and(|a| a.ends_with(&port)) {
            return f.last().context("drops column")?.parse().context("drops");
        }
    }
    bail!("no socket on port {port} in /proc/net/udp")
}

/// No point anywhere carries the forged pod, container or service.
fn nothing_claimed(doc: &serde_json::Value) {
    for (key, forged) in [
        ("k8s.pod.uid", UID),
        ("container.id", ID),
        ("systemd.unit", "sshd.service"),
    ] {
        let claimed = points(doc, "retina.drop.count", &[(key, forged)]);
        assert!(
            claimed.is_empty(),
            "{key}={forged} was forged: {claimed:#?}"
        );
    }
}

/// The agent as the unit runs it: uid 65534, only CAP_BPF and CAP_PERFMON.
fn snapshot_as_unit(cmd: &str) -> Result<serde_json::Value> {
    let setpriv = unit::setpriv_args(&unit::unit_capabilities());
    let out = run(
        &setpriv[0],
        setpriv[1..].iter().map(String::as_str).chain([
            agent_bin().to_str().context("agent path")?,
            "snapshot",
            "--format",
            "json",
            "--",
            "sh",
            "-c",
            cmd,
        ]),
    )?;
    serde_json::from_slice(&out.stdout).context("parsing the snapshot")
}

/// Each forged cgroup holds a UDP server whose tiny buffer overflows: its drops are
/// counted exactly, under its real path and its user, and under no workload it names.
#[test]
fn forged_cgroups_in_a_delegated_subtree_name_only_their_user() -> Result<()> {
    require_root();
    let mut d = Delegated::new("forge")?;
    let mut sinks = Vec::new();
    for rel in forged() {
        let then = format!("exec '{}' sink 127.0.0.1:0 2048", traffic());
        let (_, port) = d.tenant(&rel, &then)?;
        let port: u16 = port.parse().with_context(|| format!("port {port:?}"))?;
        sinks.push((rel, port));
    }
    let flood: Vec<String> = sinks
        .iter()
        .map(|(_, port)| format!("'{}' udp 127.0.0.1:{port} 300 64", traffic()))
        .collect();
    let doc = snapshot_as_unit(&flood.join(" && "))?;
    nothing_claimed(&doc);
    for (rel, port) in &sinks {
        let dropped = kernel_drops(*port)?;
        ensure!(
            dropped > 100,
            "only {dropped} of 300 datagrams overflowed {rel}"
        );
        let path = d.agent_path(rel);
        let pts = points(
            &doc,
            "retina.drop.count",
            &[("socket.cgroup", path.as_str())],
        );
        let counted: u64 = pts.iter().map(|p| p["value"].as_u64().unwrap_or(0)).sum();
        assert_eq!(counted, dropped, "{rel}: {pts:#?}");
        for p in pts {
            assert_eq!(attr_str(p, "user.id"), Some(NOBODY.to_string()), "{p:#}");
            for key in ["k8s.pod.uid", "container.id", "systemd.unit"] {
                assert_eq!(attr_str(p, key), None, "{rel} claimed {key}: {p:#}");
            }
        }
    }
    Ok(())
}

/// `unshare -Urn` inside a forged pod slice: the namespace's `NO_SOCKET` drops carry the
/// user, not the pod. The agent runs as root here: attributing a namespace to the
/// processes in it reads their `/proc/PID/ns/net`, which the unit's identity may not
/// (issue 26, item 1); as root the scan sees the tenant, so the test shows what it makes
/// of it.
#[test]
fn a_user_namespace_inside_a_forged_pod_slice_is_not_the_pod() -> Result<()> {
    require_root();
    let mut d = Delegated::new("userns")?;
    let fifos = TempDir::shared("forge-fifo")?;
    let (go, done) = (fifos.join("go"), fifos.join("done"));
    for f in [&go, &done] {
        run("mkfifo", ["-m", "0666", f.to_str().context("fifo")?])?;
    }
    let rel = &forged()[0];
    let then = format!(
        "exec unshare -Urn sh -c \"ip link set lo up && echo up && read _ < '{go}' && \
         '{t}' udp 127.0.0.1:9 200 64 && echo sent > '{done}' && exec sleep 3600\"",
        go = go.display(),
        done = done.display(),
        t = traffic(),
    );
    let (i, _) = d.tenant(rel, &then)?;
    let pid = d.tenants[i].child.id();
    let netns = std::fs::metadata(format!("/proc/{pid}/ns/net"))?.ino();
    ensure!(
        netns != std::fs::metadata("/proc/self/ns/net")?.ino(),
        "the tenant has no namespace of its own"
    );
    let cmd = format!("echo go > '{}' && cat '{}'", go.display(), done.display());
    let doc = snapshot_as_unit(&cmd)?;
    nothing_claimed(&doc);
    let ns = netns.to_string();
    let want = [
        ("drop.reason", "NO_SOCKET"),
        ("network.namespace.inode", ns.as_str()),
    ];
    let pts = points(&doc, "retina.drop.count", &want);
    let counted: u64 = pts.iter().map(|p| p["value"].as_u64().unwrap_or(0)).sum();
    assert_eq!(counted, 200, "{pts:#?}");
    for p in pts {
        assert_eq!(attr_str(p, "user.id"), Some(NOBODY.to_string()), "{p:#}");
        assert_eq!(attr_str(p, "k8s.pod.uid"), None, "{p:#}");
    }
    Ok(())
}
