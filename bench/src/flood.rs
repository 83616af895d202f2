//! Section 10: the real daemon under the EtherType flood of issue 26, item 3. The agent
//! runs as the packaged unit does (uid 65534, CAP_BPF + CAP_PERFMON only) with
//! `run --interval 1s`, export off and its Prometheus endpoint scraped every second; a
//! root-created namespace drops 1000 datagrams, then an unprivileged user (uid
//! [`ATTACKER`]) runs `flood-child` (`retina_tests::flood`) from a user and network
//! namespace of its own. The figures, each over the same window length: CPU per cycle
//! (all the agent's threads, from `/proc/PID/task/*/schedstat`), peak RSS, scrape size and
//! series, before the flood, in its first seconds (series creation) and while it goes on.

use std::{
    fs::File,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::{
    node_exporter,
    sys::{self, ChildGuard},
};

/// The unprivileged user the flood runs as.
pub const ATTACKER: u32 = 60026;

pub struct Options<'a> {
    pub agent_bin: &'a Path,
    pub window: Duration,
    pub log: PathBuf,
}

/// CPU time of every thread of `pid`, in ns.
fn cpu_ns(pid: u32) -> Result<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let stat = std::fs::read_to_string(task?.path().join("schedstat")).unwrap_or_default();
        total += stat
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(total)
}

/// One window: CPU per 1 s cycle, peak RSS, the last scrape's size and samples.
fn window(
    agent: &mut ChildGuard,
    prom: std::net::SocketAddr,
    length: Duration,
    log: &Path,
) -> Result<Value> {
    let pid = agent.pid();
    let cpu0 = cpu_ns(pid)?;
    let start = Instant::now();
    let (mut rss_max, mut bytes, mut samples, mut scrapes) = (0, 0, 0, 0u32);
    let mut next_scrape = start;
    while start.elapsed() < length {
        sys::check_stop()?;
        if let Some(status) = agent.exited() {
            bail!("retina-agent exited ({status}); see {}", log.display());
        }
        if let Ok(r) = sys::status_kib(&pid.to_string(), "VmRSS") {
            rss_max = rss_max.max(r);
        }
        if Instant::now() >= next_scrape {
            let body = node_exporter::scrape(prom)?;
            bytes = body.len();
            samples = node_exporter::samples(&body);
            scrapes += 1;
            next_scrape += Duration::from_secs(1);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let seconds = start.elapsed().as_secs_f64();
    let cpu_ms = (cpu_ns(pid)? - cpu0) as f64 / 1e6;
    Ok(json!({
        "seconds": sys::round3(seconds),
        "cpu_ms_per_cycle": sys::round3(cpu_ms / seconds),
        "rss_kib_max": rss_max,
        "scrape_bytes": bytes,
        "scrape_samples": samples,
        "scrapes": scrapes,
    }))
}

/// Sum of the samples of `name` in a scrape whose labels contain `label`.
fn sum(body: &str, name: &str, label: &str) -> u64 {
    body.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

pub fn run(o: &Options) -> Result<Value> {
    let exe = std::env::current_exe().context("current_exe")?;
    let ns = retina_tests::NetNs::new("bflood")?;
    let inode = ns.inode()?;
    let prom: std::net::SocketAddr = ([127, 0, 0, 1], sys::free_port()?).into();
    let config = o.log.with_file_name("flood-agent.toml");
    std::fs::write(
        &config,
        format!("[export]\nenabled = false\n[prometheus]\nlisten = \"{prom}\"\n"),
    )?;
    let log = File::create(&o.log).with_context(|| format!("creating {}", o.log.display()))?;
    let mut cmd = sys::agent_as_unit(o.agent_bin);
    cmd.args(["run", "--interval", "1s", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let mut agent = ChildGuard::spawn("retina-agent", &mut cmd)?;
    let ready = Instant::now() + Duration::from_secs(20);
    while node_exporter::scrape(prom).is_err() {
        if Instant::now() > ready || agent.exited().is_some() {
            bail!(
                "the agent's endpoint {prom} never answered; see {}",
                o.log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let udp = |n: &str| -> Result<()> {
        let status = Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .arg(&exe)
            .args(["udp-child", n])
            .status()?;
        anyhow::ensure!(status.success(), "udp-child: {status}");
        Ok(())
    };
    udp("1000")?;
    sys::sleep(Duration::from_secs(5))?;
    let normal = window(&mut agent, prom, o.window, &o.log)?;

    let mut flood = Command::new("setpriv");
    flood
        .arg(format!("--reuid={ATTACKER}"))
        .arg(format!("--regid={ATTACKER}"))
        .args(["--clear-groups", "--inh-caps=-all", "--bounding-set=-all"])
        .arg(&exe)
        .arg("flood-child")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut flood = ChildGuard::spawn("flood-child", &mut flood)?;
    let onset = window(&mut agent, prom, Duration::from_secs(5), &o.log)?;
    let mut line = String::new();
    let out = flood.child.stdout.take().context("flood stdout")?;
    BufReader::new(out).read_line(&mut line)?;
    let attacker = line.trim().strip_prefix("netns ").map(str::to_string);
    let Some(attacker) = attacker else {
        bail!("the flood did not start: {line:?}");
    };
    let flooded = window(&mut agent, prom, o.window, &o.log)?;
    // The pod's drops during the flood: exact, in their own series.
    udp("1000")?;
    sys::sleep(Duration::from_secs(3))?;
    let body = node_exporter::scrape(prom)?;
    let pod_label = format!("network_namespace_inode=\"{inode}\"");
    let pod = sum(&body, "retina_drop_count_total", &pod_label);
    let mine = format!("network_namespace_inode=\"{attacker}\"");
    let attacker_series = body
        .lines()
        .filter(|l| l.starts_with("retina_drop_count_total") && l.contains(&mine))
        .count();
    let r = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    Ok(json!({
        "command": format!("setpriv (uid 65534, CAP_BPF+CAP_PERFMON) {} run --interval 1s --config {}", o.agent_bin.display(), config.display()),
        "normal": normal,
        "flood_onset_5s": onset,
        "flooded": flooded,
        "cpu_ratio_flooded_to_normal": sys::round3(r(&flooded, "cpu_ms_per_cycle") / r(&normal, "cpu_ms_per_cycle")),
        "cpu_ratio_onset_to_normal": sys::round3(r(&onset, "cpu_ms_per_cycle") / r(&normal, "cpu_ms_per_cycle")),
        "pod_no_socket_drops_after_2000_sent": pod,
        "attacker_series": attacker_series,
        "attacker_drops_counted": sum(&body, "retina_drop_count_total", &mine),
        "user_namespace_overflow": sum(&body, "retina_drop_overflow_count_total", "drop_pool=\"user_namespace\""),
        "map_entries": sum(&body, "retina_drop_map_entries", ""),
    }))
}

/// `udp-child N`: N datagrams to 127.0.0.1:9 (nothing listens: NO_SOCKET drops).
pub fn udp_child(n: u64) -> Result<()> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let mut sent = 0;
    while sent < n {
        match socket.send_to(&[0x5a; 32], "127.0.0.1:9") {
            Ok(_) => sent += 1,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
