//! TCP events per socket cgroup in the host's network namespace (issue 23, item 2): a
//! process in a `.service` cgroup whose connects time out, and two services that reset
//! each other's connections, with the agent run as the packaged unit runs it (uid 65534,
//! only CAP_BPF and CAP_PERFMON). Each count is compared with the kernel's own counter for
//! the namespace (`/proc/net/netstat`, `/proc/net/snmp`), which must move by exactly the
//! same amount while nothing else runs (the privileged tests hold a lock).

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use anyhow::{Context, Result, bail, ensure};
use retina_tests::{
    nstcp::counter,
    unit::{Proc, snapshot_as_unit},
    workload::{cgroup_v2_root, remove_cgroup},
    *,
};

const RETRANSMITS: &str = "retina.tcp.retransmit.count";
const CONNECT_FAILURES: &str = "retina.tcp.connect.failure.count";
const RESETS: &str = "retina.tcp.reset.count";

/// A slice of our own at the hierarchy's root, named as systemd names a top-level slice
/// (no `-`); removed on drop, after the services in it.
struct Slice(PathBuf);

impl Slice {
    fn new(root: &Path, tag: &str) -> Result<Slice> {
        let dir = root.join(format!("retinatest{tag}{}.slice", std::process::id()));
        std::fs::create_dir(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        Ok(Slice(dir))
    }
}

impl Drop for Slice {
    fn drop(&mut self) {
        remove_cgroup(&self.0);
    }
}

/// `traffic ARGS` started inside the cgroup `slice/unit` (created; the process killed and
/// the cgroup removed on drop). The shell moves itself into the cgroup and then becomes
/// the program, so every socket it makes is the cgroup's.
struct Service {
    child: Child,
    dir: PathBuf,
    unit: String,
}

impl Service {
    fn start(slice: &Slice, unit: &str, args: &[&str]) -> Result<Service> {
        let dir = slice.0.join(unit);
        std::fs::create_dir(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        let script = format!(
            "echo $$ > '{}/cgroup.procs' && exec '{}' {}",
            dir.display(),
            traffic(),
            args.join(" ")
        );
        let child = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn();
        match child {
            Ok(child) => Ok(Service {
                child,
                dir,
                unit: unit.to_string(),
            }),
            Err(e) => {
                remove_cgroup(&dir);
                bail!("starting {unit}: {e}");
            }
        }
    }

    /// Its next line of output.
    fn line(&mut self) -> Result<String> {
        let out = self.child.stdout.as_mut().context("stdout")?;
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line)?;
        Ok(line.trim().to_string())
    }

    /// Waits for it to exit successfully; its last line of output.
    fn finish(&mut self) -> Result<String> {
        let line = self.line()?;
        let status = self.child.wait()?;
        ensure!(status.success(), "{} failed: {status}", self.unit);
        Ok(line)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        remove_cgroup(&self.dir);
    }
}

/// An nftables table dropping every TCP segment to `port` on input (so SYNs to it leave
/// this host's socket and are never answered); deleted on drop.
struct DropSyns(String);

impl DropSyns {
    fn new(port: u16) -> Result<DropSyns> {
        let table = format!("retinatcp{}", std::process::id());
        let script = format!(
            "add table inet {table}\n\
             add chain inet {table} input {{ type filter hook input priority 0 ; }}\n\
             add rule inet {table} input tcp dport {port} drop\n"
        );
        let path = std::env::temp_dir().join(format!("{table}.nft"));
        std::fs::write(&path, script)?;
        let out = run("nft", ["-f", path.to_str().context("path")?]);
        let _ = std::fs::remove_file(&path);
        out?;
        Ok(DropSyns(table))
    }
}

impl Drop for DropSyns {
    fn drop(&mut self) {
        if let Err(e) = run("nft", ["delete", "table", "inet", &self.0]) {
            eprintln!("cleanup: {e}");
        }
    }
}

fn under(doc: &serde_json::Value, metric: &str, unit: &str, extra: &[(&str, &str)]) -> u64 {
    let mut want = vec![("systemd.unit", unit)];
    want.extend_from_slice(extra);
    sum(doc, metric, &want)
}

/// Every TCP event point of `unit` is zero (or there is none).
fn none_under(doc: &serde_json::Value, unit: &str) -> bool {
    [RETRANSMITS, CONNECT_FAILURES, RESETS]
        .iter()
        .all(|m| under(doc, m, unit, &[]) == 0)
}

#[test]
fn a_services_syn_retransmits_and_failed_connects_are_counted_under_its_unit() -> Result<()> {
    require_root();
    let root = cgroup_v2_root()?;
    let slice = Slice::new(&root, "tcpsyn")?;
    let dead = free_port()?;
    let _nft = DropSyns::new(dead)?;
    // Another service connects, successfully, to a listener of the test's own.
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let live = listener.local_addr()?.port();
    const ATTEMPTS: u32 = 3;
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        use std::io::Read as _;
        for _ in 0..ATTEMPTS {
            let (mut s, _) = listener.accept()?;
            let mut buf = [0u8; 16];
            while s.read(&mut buf)? > 0 {}
        }
        Ok(())
    });
    let (mut before, mut after) = (0, 0);
    let (mut a_out, mut b_out) = (String::new(), String::new());
    let (mut a_unit, mut b_unit) = (String::new(), String::new());
    // The services' cgroups outlive the window: the agent resolves a cgroup id at its
    // collection after the window, and a removed cgroup has no name any more.
    let mut keep = Vec::new();
    let (doc, _) = snapshot_as_unit(Proc::Host, || {
        before = counter(None, "TcpExt", "TCPSynRetrans")?;
        // 1.5 s per attempt: the first SYN and, after the initial RTO of 1 s, one
        // retransmit, then the socket is closed in SYN_SENT.
        let dst = format!("127.0.0.1:{dead}");
        let mut a = Service::start(
            &slice,
            "retina-test-client.service",
            &["connect", &dst, "3", "1500"],
        )?;
        a_out = a.finish()?;
        a_unit = a.unit.clone();
        keep.push(a);
        let dst = format!("127.0.0.1:{live}");
        let mut b = Service::start(
            &slice,
            "retina-test-quiet.service",
            &["connect", &dst, "3", "5000"],
        )?;
        b_out = b.finish()?;
        b_unit = b.unit.clone();
        keep.push(b);
        after = counter(None, "TcpExt", "TCPSynRetrans")?;
        Ok(())
    })?;
    server
        .join()
        .map_err(|_| anyhow::anyhow!("listener thread panicked"))??;
    assert_eq!(a_out, "connected 0 failed 3");
    assert_eq!(b_out, "connected 3 failed 0");
    let syn_retrans = after - before;
    ensure!(
        syn_retrans >= 1,
        "no SYN was retransmitted (TCPSynRetrans {before} -> {after})"
    );
    assert_eq!(
        under(&doc, RETRANSMITS, &a_unit, &[]),
        syn_retrans,
        "the unit's retransmits against TcpExt:TCPSynRetrans: {doc:#}"
    );
    assert_eq!(
        under(&doc, CONNECT_FAILURES, &a_unit, &[]),
        u64::from(ATTEMPTS),
        "{doc:#}"
    );
    assert!(
        none_under(&doc, &b_unit),
        "{b_unit} must show no TCP events: {doc:#}"
    );
    // The series names the cgroup by path and id.
    let pts = points(&doc, RETRANSMITS, &[("systemd.unit", a_unit.as_str())]);
    assert_eq!(pts.len(), 1, "{doc:#}");
    let dir = slice.0.join(&a_unit);
    let id = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&dir)?);
    assert_eq!(attr_str(pts[0], "socket.cgroup.id"), Some(id.to_string()));
    let path = format!("/{}", dir.strip_prefix(&root)?.display());
    assert_eq!(attr_str(pts[0], "socket.cgroup"), Some(path));
    Ok(())
}

#[test]
fn resets_sent_and_received_are_counted_under_the_units_owning_the_sockets() -> Result<()> {
    require_root();
    let root = cgroup_v2_root()?;
    let slice = Slice::new(&root, "tcprst")?;
    const N: u64 = 5;
    let mut server = Service::start(
        &slice,
        "retina-test-rst.service",
        &["reset-server", "127.0.0.1:0", "5"],
    )?;
    let port = server.line()?;
    let (mut before, mut after) = (0, 0);
    let mut client_out = String::new();
    let mut client_unit = String::new();
    let mut keep = Vec::new();
    let (doc, _) = snapshot_as_unit(Proc::Host, || {
        before = counter(None, "Tcp", "OutRsts")?;
        let dst = format!("127.0.0.1:{port}");
        let mut c = Service::start(
            &slice,
            "retina-test-peer.service",
            &["reset-client", &dst, "5"],
        )?;
        client_out = c.finish()?;
        client_unit = c.unit.clone();
        keep.push(c);
        server.child.wait()?;
        after = counter(None, "Tcp", "OutRsts")?;
        Ok(())
    })?;
    assert_eq!(client_out, format!("reset {N}"));
    assert_eq!(after - before, N, "Tcp:OutRsts moved by another amount");
    let sent = [("network.io.direction", "transmit")];
    let received = [("network.io.direction", "receive")];
    let s = server.unit.as_str();
    assert_eq!(under(&doc, RESETS, s, &sent), N, "{doc:#}");
    assert_eq!(under(&doc, RESETS, s, &received), 0, "{doc:#}");
    assert_eq!(under(&doc, RESETS, &client_unit, &received), N, "{doc:#}");
    assert_eq!(under(&doc, RESETS, &client_unit, &sent), 0, "{doc:#}");
    assert_eq!(
        under(&doc, CONNECT_FAILURES, &client_unit, &[]),
        0,
        "{doc:#}"
    );
    Ok(())
}

/// The per-cgroup map is bounded: with room for one cgroup, the events of a second are
/// counted in the overflow, by kind, and none is lost.
#[test]
fn a_full_map_counts_the_overflow_by_kind() -> Result<()> {
    use retina_agent::collectors::{Collector, tcp_events::TcpEventCollector};
    use retina_ebpf_common::tcp::{CONNECT_FAILURES, RESETS_RECEIVED};
    require_root();
    let root = cgroup_v2_root()?;
    let slice = Slice::new(&root, "tcpfull")?;
    let mut c = TcpEventCollector::load(None, 1)?;
    let links = retina_agent::kernel::links::Links::new()?;
    let closed = free_port()?;
    let dst = format!("127.0.0.1:{closed}");
    // This process's cgroup takes the one entry...
    for _ in 0..2 {
        let r = std::net::TcpStream::connect(&dst);
        ensure!(r.is_err(), "port {closed} accepted a connection");
    }
    c.collect(&links).map_err(|e| anyhow::anyhow!("{e}"))?;
    let rows: Vec<_> = c.rows().collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].connect_failures, 2, "{rows:?}");
    // ...so a service's refused connects find the map full.
    let mut s = Service::start(
        &slice,
        "retina-test-full.service",
        &["connect", &dst, "3", "1000"],
    )?;
    assert_eq!(s.finish()?, "connected 0 failed 3");
    c.collect(&links).map_err(|e| anyhow::anyhow!("{e}"))?;
    let rows: Vec<_> = c.rows().collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].connect_failures, 2, "{rows:?}");
    let overflow = c.overflow().events;
    assert_eq!(overflow[CONNECT_FAILURES], 3, "{overflow:?}");
    assert_eq!(overflow[RESETS_RECEIVED], 3, "{overflow:?}");
    // And it is exported, by kind.
    let mut exported = Vec::new();
    c.visit(&mut |m: &'static retina_agent::model::Metric,
                  attrs: &[opentelemetry::KeyValue],
                  v: retina_agent::model::Number| {
        if m.name == "retina.tcp.event.overflow" {
            exported.push((attrs[0].value.as_str().into_owned(), v.as_f64()));
        }
    });
    exported.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        exported,
        [
            ("connect_failure".to_string(), 3.0),
            ("reset_received".to_string(), 3.0),
            ("reset_sent".to_string(), 0.0),
            ("retransmit".to_string(), 0.0),
        ]
    );
    Ok(())
}

/// A removed cgroup's room in the bounded map goes to the next cgroup, which starts from
/// zero: with room for one cgroup, a second service's refused connects are counted exactly,
/// under its own id, once the first service's cgroup is gone and its series went.
#[test]
fn a_removed_cgroups_room_serves_the_next_cgroup_from_zero() -> Result<()> {
    use retina_agent::collectors::{Collector, tcp_events::TcpEventCollector};
    require_root();
    let root = cgroup_v2_root()?;
    let slice = Slice::new(&root, "tcpreuse")?;
    let mut c = TcpEventCollector::load(None, 1)?;
    let links = retina_agent::kernel::links::Links::new()?;
    let collect = |c: &mut TcpEventCollector| c.collect(&links).map_err(|e| anyhow::anyhow!("{e}"));
    let closed = free_port()?;
    let dst = format!("127.0.0.1:{closed}");
    let mut first = Service::start(
        &slice,
        "retina-test-reuse-first.service",
        &["connect", &dst, "3", "1000"],
    )?;
    assert_eq!(first.finish()?, "connected 0 failed 3");
    collect(&mut c)?;
    let rows: Vec<_> = c.rows().collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].connect_failures, 3, "{rows:?}");
    let first_id = rows[0].cgroup_id;
    // Its cgroup goes; the series (and the id's entry) go once it is found gone and
    // stopped growing.
    drop(first);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while c.rows().count() > 0 {
        ensure!(
            std::time::Instant::now() < deadline,
            "the removed cgroup's series is still there"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
        collect(&mut c)?;
    }
    let mut second = Service::start(
        &slice,
        "retina-test-reuse-second.service",
        &["connect", &dst, "2", "1000"],
    )?;
    assert_eq!(second.finish()?, "connected 0 failed 2");
    collect(&mut c)?;
    let rows: Vec<_> = c.rows().collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_ne!(rows[0].cgroup_id, first_id, "{rows:?}");
    assert_eq!(rows[0].connect_failures, 2, "{rows:?}");
    assert_eq!(rows[0].resets_received, 2, "{rows:?}");
    assert_eq!(c.overflow().events, [0; 4]);
    Ok(())
}
