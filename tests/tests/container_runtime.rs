//! One run through a real container runtime: podman (with runc) starts a container from a
//! busybox root file system imported locally (no registry), and drops made by a program
//! inside the container, in the container's own network namespace, carry the container's
//! id as podman reports it. The agent runs as the packaged unit runs it: uid 65534 with
//! `CAP_BPF` and `CAP_PERFMON`, under `ProtectProc=invisible` (the container's processes
//! are root's, which that hides from it).

use std::{os::unix::fs::MetadataExt as _, process::Command};

use anyhow::{Context, Result, ensure};
use retina_tests::{
    unit::{Proc, snapshot_as_unit},
    *,
};

/// A value from `podman`'s stdout; fails with its stderr.
fn podman(args: &[&str]) -> Result<String> {
    let out = run("podman", args)?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A locally imported image and a container started from it; both removed on drop.
struct Container {
    image: String,
    name: String,
    id: String,
    pid: u32,
}

impl Container {
    fn start() -> Result<Container> {
        let tag = std::process::id();
        let dir = TempDir::new("podman-rootfs")?;
        let root = dir.join("root");
        std::fs::create_dir_all(root.join("bin"))?;
        std::fs::create_dir_all(root.join("tmp"))?;
        std::fs::copy("/bin/busybox", root.join("bin/busybox"))
            .context("copying /bin/busybox (Debian's busybox-static) into the root fs")?;
        for applet in ["sh", "sleep", "tftp", "true"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))?;
        }
        let tar = dir.join("root.tar");
        run(
            "tar",
            [
                "-C",
                root.to_str().context("path")?,
                "-cf",
                tar.to_str().context("path")?,
                ".",
            ],
        )?;
        let image = format!("localhost/retina-test-busybox:{tag}");
        podman(&["import", tar.to_str().context("path")?, &image])?;
        let mut c = Container {
            image,
            name: format!("retina-test-{tag}"),
            id: String::new(),
            pid: 0,
        };
        // podman's defaults raise the file and process limits (to 1048576 files), which this
        // sandbox refuses; lowering them is always allowed.
        let (nofile, nproc) = ("nofile=1024:1024", "nproc=1024:1024");
        c.id = podman(&[
            "run",
            "-d",
            "--runtime",
            "runc",
            "--network",
            "none",
            "--ulimit",
            nofile,
            "--ulimit",
            nproc,
            "--name",
            &c.name,
            &c.image,
            "/bin/sleep",
            "3600",
        ])?;
        ensure!(
            c.id.len() == 64 && c.id.bytes().all(|b| b.is_ascii_hexdigit()),
            "podman run printed {:?}, not a container id",
            c.id
        );
        c.pid = podman(&["inspect", "-f", "{{.State.Pid}}", &c.name])?
            .parse()
            .context("container pid")?;
        Ok(c)
    }

    /// UDP datagrams the container's namespace received for closed ports (`Udp: NoPorts`).
    fn no_ports(&self) -> Result<u64> {
        let snmp = std::fs::read_to_string(format!("/proc/{}/net/snmp", self.pid))?;
        let mut udp = snmp.lines().filter(|l| l.starts_with("Udp: "));
        let (names, values) = (
            udp.next().context("Udp header")?,
            udp.next().context("Udp")?,
        );
        let i = names
            .split_whitespace()
            .position(|n| n == "NoPorts")
            .context("NoPorts")?;
        values
            .split_whitespace()
            .nth(i)
            .context("NoPorts value")?
            .parse()
            .context("NoPorts")
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        for args in [
            vec!["rm", "-f", "-t", "0", self.name.as_str()],
            vec!["rmi", "-f", self.image.as_str()],
        ] {
            let ok = Command::new("podman")
                .args(&args)
                .output()
                .is_ok_and(|o| o.status.success());
            if !ok {
                eprintln!("cleanup: podman {} failed", args.join(" "));
            }
        }
    }
}

#[test]
fn drops_inside_a_podman_container_carry_its_container_id() -> Result<()> {
    require_root();
    let c = Container::start()?;
    let netns = std::fs::metadata(format!("/proc/{}/ns/net", c.pid))?.ino();
    let cgroup = std::fs::read_to_string(format!("/proc/{}/cgroup", c.pid))?;
    eprintln!("container {} (pid {}), cgroups:\n{cgroup}", c.id, c.pid);
    let before = c.no_ports()?;
    // busybox's tftp asks 127.0.0.1:69, where nothing listens, and retries: each datagram
    // is a NO_SOCKET drop inside the container's namespace.
    let (doc, _) = snapshot_as_unit(Proc::Invisible, || {
        podman(&[
            "exec",
            &c.name,
            "sh",
            "-c",
            "tftp -g -r x -l /tmp/x 127.0.0.1; true",
        ])
        .map(|_| ())
    })?;
    let sent = c.no_ports()? - before;
    ensure!(sent > 0, "tftp sent nothing to a closed port");
    let inode = netns.to_string();
    let pts = points(
        &doc,
        "retina.drop.count",
        &[
            ("drop.reason", "NO_SOCKET"),
            ("network.namespace.inode", inode.as_str()),
        ],
    );
    assert_eq!(
        pts.len(),
        1,
        "one series in the container's namespace: {doc:#}"
    );
    assert_eq!(
        attr_str(pts[0], "container.id"),
        Some(c.id.clone()),
        "{doc:#}"
    );
    assert_eq!(pts[0]["value"].as_u64(), Some(sent), "{doc:#}");
    assert!(attr_str(pts[0], "k8s.pod.uid").is_none());
    Ok(())
}
