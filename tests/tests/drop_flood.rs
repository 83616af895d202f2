//! Issue 26, item 3: no unprivileged user can push other workloads' drops into overflow.
//!
//! The attacker is a real unprivileged user (uid [`ATTACKER`]) in a user and network
//! namespace of its own (`traffic flood`: `unshare -Urn`, one AF_PACKET frame per EtherType
//! on its `lo`, over and over). The agent runs as the packaged unit does: uid 65534 with only
//! CAP_BPF and CAP_PERFMON. Counts are read from its Prometheus endpoint.

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};
use retina_tests::{child::Running, poll, *};

/// The unprivileged user the flood runs as (no passwd entry needed).
const ATTACKER: u32 = 60026;
const NO_SOCKET: &str = "NO_SOCKET";

/// `traffic flood [passes]` as [`ATTACKER`], without any capability; killed on drop.
/// Returns once the first pass is sent, with the inode of the attacker's namespace.
fn flood(passes: Option<u64>) -> Result<(Running, String)> {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={ATTACKER}"))
        .arg(format!("--regid={ATTACKER}"))
        .args(["--clear-groups", "--inh-caps=-all", "--bounding-set=-all"])
        .arg(traffic())
        .arg("flood");
    if let Some(n) = passes {
        cmd.arg(n.to_string());
    }
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut running = Running::spawn(cmd)?;
    let stdout = running.child().stdout.take().context("flood stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let Some(inode) = line.trim().strip_prefix("netns ") else {
        bail!("the flood did not start (it says why above): {line:?}");
    };
    Ok((running, inode.to_string()))
}

/// The agent as the unit runs it, with `config` plus a Prometheus endpoint and no export;
/// returns once its endpoint serves the drop metrics, with the endpoint's address.
fn agent_as_unit(dir: &TempDir, config: &str) -> Result<(Running, String)> {
    let addr = format!("127.0.0.1:{}", free_port()?);
    let path = dir.join("agent.toml");
    std::fs::write(
        &path,
        format!("{config}\n[export]\nenabled = false\n[prometheus]\nlisten = \"{addr}\"\n"),
    )?;
    let mut cmd = unit::setpriv(&unit::unit_capabilities());
    cmd.arg(agent_bin())
        .args(["run", "--interval", "500ms", "--config"])
        .arg(&path)
        .env_remove("RUST_LOG")
        .env_remove("RETINA_CONFIG");
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let running = Running::spawn(cmd)?;
    let up = poll::until(|| {
        Ok(http_get(&addr, "/metrics")
            .ok()
            .filter(|(s, b)| *s == 200 && b.contains("retina_drop_map_capacity"))
            .map(|_| ()))
    })?;
    if up.is_none() {
        bail!("the agent's endpoint {addr} never served the drop metrics");
    }
    Ok((running, addr))
}

/// Samples of `name` in a Prometheus text scrape whose labels include all of `want`:
/// (labels, value).
fn samples<'a>(scrape: &'a str, name: &str, want: &[(&str, &str)]) -> Vec<(&'a str, u64)> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let labels = match series.strip_prefix(name)? {
                "" => "",
                rest => rest.strip_prefix('{')?.strip_suffix('}')?,
            };
            let all = want
                .iter()
                .all(|(k, v)| labels.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
            all.then(|| (labels, value.parse::<f64>().unwrap_or(0.0) as u64))
        })
        .collect()
}

fn total(scrape: &str, name: &str, want: &[(&str, &str)]) -> u64 {
    samples(scrape, name, want).iter().map(|(_, v)| v).sum()
}

fn scrape(addr: &str) -> Result<String> {
    let (status, body) = http_get(addr, "/metrics")?;
    anyhow::ensure!(status == 200, "scrape: {status}");
    Ok(body)
}

/// With the flood running and a map of 64 keys (4 of them the user namespaces' pool), a
/// root-created pod-like namespace's 1000 datagrams to a closed port get their exact
/// series; the attacker holds at most the pool, and whatever does not fit is counted in
/// the pool's own overflow series, never the shared one.
#[test]
fn an_ethertype_flood_from_a_user_namespace_leaves_a_pods_drops_exact() -> Result<()> {
    require_root();
    let dir = TempDir::shared("drop-flood")?;
    let (_agent, addr) = agent_as_unit(&dir, "[drops]\nmap_entries = 64")?;
    let (_flood, attacker) = flood(None)?;
    let pod = NetNs::new("podf")?;
    let inode = pod.inode()?.to_string();
    pod.exec(&traffic(), &["udp", "127.0.0.1:9", "1000", "32"])?;
    let want = [
        ("network_namespace_inode", inode.as_str()),
        ("drop_reason", NO_SOCKET),
    ];
    let pod_count = poll::settle(
        || Ok(total(&scrape(&addr)?, "retina_drop_count_total", &want)),
        |n| *n >= 1000,
    )?;
    let text = scrape(&addr)?;
    assert_eq!(pod_count, 1000, "{text}");
    assert_eq!(
        samples(&text, "retina_drop_count_total", &want).len(),
        1,
        "{text}"
    );
    // The attacker: at most the pool's 4 keys, the rest in the pool's overflow, which
    // keeps growing while the flood runs; nothing in the shared overflow.
    let mine = [("network_namespace_inode", attacker.as_str())];
    let keys = samples(&text, "retina_drop_count_total", &mine).len();
    assert!((1..=4).contains(&keys), "{keys} attacker series: {text}");
    let pool = [("drop_pool", "user_namespace")];
    let spilled = total(&text, "retina_drop_overflow_count_total", &pool);
    assert!(spilled > 0, "the flood's drops are not counted: {text}");
    let shared: u64 = samples(&text, "retina_drop_overflow_count_total", &[])
        .iter()
        .filter(|(labels, _)| labels.is_empty())
        .map(|(_, v)| v)
        .sum();
    assert_eq!(shared, 0, "{text}");
    let later = poll::until(|| {
        let n = total(&scrape(&addr)?, "retina_drop_overflow_count_total", &pool);
        Ok((n > spilled).then_some(n))
    })?;
    assert!(later.is_some(), "the pool's overflow stopped at {spilled}");
    Ok(())
}

/// At the default capacity the whole flood fits, and every EtherType the kernel does not
/// name is one series, `network.type="other"`, with every frame of the pass counted.
#[test]
fn unnamed_ethertypes_share_one_series() -> Result<()> {
    require_root();
    let dir = TempDir::shared("drop-flood")?;
    let (_agent, addr) = agent_as_unit(&dir, "")?;
    let (mut flood, attacker) = flood(Some(1))?;
    let status = flood.child().wait()?;
    assert!(status.success(), "flood: {status}");
    let other = [
        ("network_namespace_inode", attacker.as_str()),
        ("network_type", "other"),
    ];
    let named = retina_agent::collectors::drops::protocols::NAMED;
    let unnamed = retina_tests::flood::ETHERTYPES
        .filter(|p| !named.contains(p))
        .count() as u64;
    let count = poll::settle(
        || Ok(total(&scrape(&addr)?, "retina_drop_count_total", &other)),
        |n| *n >= unnamed,
    )?;
    let text = scrape(&addr)?;
    assert_eq!(count, unnamed, "{text}");
    let unhandled = [
        ("network_namespace_inode", attacker.as_str()),
        ("network_type", "other"),
        ("drop_reason", "UNHANDLED_PROTO"),
    ];
    assert_eq!(
        samples(&text, "retina_drop_count_total", &unhandled).len(),
        1
    );
    let mine = [("network_namespace_inode", attacker.as_str())];
    let keys = samples(&text, "retina_drop_count_total", &mine).len();
    assert!(keys <= named.len() + 1, "{keys} series: {text}");
    assert_eq!(
        total(&text, "retina_drop_overflow_count_total", &[]),
        0,
        "{text}"
    );
    Ok(())
}
