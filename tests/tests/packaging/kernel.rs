//! The kernel's side: which operation needs which capability, independently of the
//! agent's own capability check. This test re-runs itself under setpriv with fewer
//! capabilities; the child does the raw operations and prints what the kernel said.

use super::*;

const CHILD_ENV: &str = "RETINA_CAPS_CHILD";
const CHILD_VETH: &str = "RETINA_CAPS_VETH";
const CHILD_NETNS: &str = "RETINA_CAPS_NETNS";
const RESULT_PREFIX: &str = "CAPS-RESULT ";

/// `union bpf_attr` is at most this big for the commands used here.
#[repr(C, align(8))]
struct BpfAttr([u8; 128]);

impl BpfAttr {
    fn new() -> Self {
        BpfAttr([0; 128])
    }
    fn u32_at(&mut self, offset: usize, v: u32) -> &mut Self {
        self.0[offset..offset + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64_at(&mut self, offset: usize, v: u64) -> &mut Self {
        self.0[offset..offset + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
}

fn bpf(cmd: i64, attr: &mut BpfAttr) -> Result<i32, String> {
    // SAFETY: attr is a zero-initialised bpf_attr of 128 bytes whose pointers (if any)
    // point to live buffers.
    match unsafe { retina_agent::kernel::sys::bpf(cmd, attr) } {
        Ok(fd) => Ok(fd as i32),
        Err(e) => Err(errno_text(e)),
    }
}

fn errno_name() -> String {
    errno_text(std::io::Error::last_os_error())
}

fn errno_text(err: std::io::Error) -> String {
    match err.raw_os_error() {
        Some(libc::EPERM) => "EPERM".into(),
        Some(libc::EACCES) => "EACCES".into(),
        Some(libc::EOPNOTSUPP) => "EOPNOTSUPP".into(),
        Some(libc::EINVAL) => "EINVAL".into(),
        _ => err.to_string(),
    }
}

fn outcome(r: Result<i32, String>) -> String {
    match r {
        Ok(fd) => {
            // SAFETY: fd was just returned by the kernel and is owned here.
            unsafe { libc::close(fd) };
            "ok".into()
        }
        Err(e) => e,
    }
}

/// `ioctl(SIOCETHTOOL)` on `ifname` with `data` (an ethtool command structure).
fn ethtool(ifname: &str, data: &mut [u8]) -> Result<i32, String> {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        data: *mut u8,
        _pad: [u8; 16],
    }
    let mut req = IfReq {
        name: [0; 16],
        data: data.as_mut_ptr(),
        _pad: [0; 16],
    };
    req.name[..ifname.len()].copy_from_slice(ifname.as_bytes());
    // SAFETY: plain socket creation.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(errno_name());
    }
    // SAFETY: req is a valid ifreq whose data pointer refers to `data`, which is large
    // enough for the command it holds.
    let r = unsafe { libc::ioctl(sock, SIOCETHTOOL, &mut req as *mut IfReq) };
    let result = if r < 0 { Err(errno_name()) } else { Ok(0) };
    // SAFETY: sock is ours.
    unsafe { libc::close(sock) };
    result
}

fn ethtool_cmd(cmd: u32, len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    data[..4].copy_from_slice(&cmd.to_ne_bytes());
    data
}

/// What the kernel allows this process (run under setpriv by the parent test).
fn child_probe() -> BTreeMap<&'static str, String> {
    let mut out = BTreeMap::new();
    // No memlock allowance at all: BPF memory must be charged to the memory cgroup
    // (Linux >= 5.11), or map creation fails with EPERM without CAP_SYS_RESOURCE.
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: lowering our own limit.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &zero) };

    // A per-CPU hash map like the drop map: BPF_MAP_CREATE (0), BPF_MAP_TYPE_PERCPU_HASH (5).
    let mut attr = BpfAttr::new();
    attr.u32_at(0, 5)
        .u32_at(4, 16)
        .u32_at(8, 16)
        .u32_at(12, 16384);
    out.insert("bpf_map_create", outcome(bpf(0, &mut attr)));

    // A raw tracepoint program (BPF_PROG_TYPE_RAW_TRACEPOINT = 17): r0 = 0; exit.
    let insns: [u64; 2] = [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];
    let license = b"GPL\0";
    let mut attr = BpfAttr::new();
    attr.u32_at(0, 17)
        .u32_at(4, 2)
        .u64_at(8, insns.as_ptr() as u64)
        .u64_at(16, license.as_ptr() as u64);
    let prog = bpf(5, &mut attr); // BPF_PROG_LOAD
    out.insert(
        "bpf_prog_load_raw_tracepoint",
        match &prog {
            Ok(_) => "ok".into(),
            Err(e) => e.clone(),
        },
    );
    if let Ok(prog_fd) = prog {
        // BPF_RAW_TRACEPOINT_OPEN (17): { u64 name; u32 prog_fd; }
        let name = b"kfree_skb\0";
        let mut attr = BpfAttr::new();
        attr.u64_at(0, name.as_ptr() as u64)
            .u32_at(8, prog_fd as u32);
        out.insert("bpf_raw_tracepoint_open", outcome(bpf(17, &mut attr)));
        // SAFETY: ours.
        unsafe { libc::close(prog_fd) };
    }

    // ethtool driver statistics (ETHTOOL_GDRVINFO, GSSET_INFO, GSTRINGS, GSTATS): what the
    // ethtool collector does. ETHTOOL_GREGS (register dump) for contrast: privileged.
    let veth = std::env::var(CHILD_VETH).expect("veth name");
    let mut drvinfo = ethtool_cmd(0x03, 196);
    out.insert("ethtool_gdrvinfo", outcome(ethtool(&veth, &mut drvinfo)));
    let n_stats = u32::from_ne_bytes(drvinfo[180..184].try_into().unwrap());
    // struct ethtool_sset_info { cmd, reserved, u64 sset_mask = ETH_SS_STATS; u32 data[] }
    let mut sset = ethtool_cmd(0x37, 16 + 4);
    sset[8..16].copy_from_slice(&(1u64 << 1).to_ne_bytes());
    out.insert("ethtool_gsset_info", outcome(ethtool(&veth, &mut sset)));
    // struct ethtool_gstrings { cmd, string_set = ETH_SS_STATS (1), len; u8 data[] }
    let mut strings = ethtool_cmd(0x1b, 12 + 32 * n_stats as usize);
    strings[4..8].copy_from_slice(&1u32.to_ne_bytes());
    strings[8..12].copy_from_slice(&n_stats.to_ne_bytes());
    out.insert("ethtool_gstrings", outcome(ethtool(&veth, &mut strings)));
    // struct ethtool_stats { cmd, n_stats; u64 data[] }
    let mut stats = ethtool_cmd(0x1d, 8 + 8 * n_stats as usize);
    stats[4..8].copy_from_slice(&n_stats.to_ne_bytes());
    out.insert("ethtool_gstats", outcome(ethtool(&veth, &mut stats)));
    out.insert("ethtool_n_stats", n_stats.to_string());
    let mut regs = ethtool_cmd(0x04, 12);
    out.insert("ethtool_gregs", outcome(ethtool(&veth, &mut regs)));

    // An rtnetlink link dump (with the link notification subscription), a counters-only
    // RTM_GETSTATS dump, and /proc/net (the netdev and netstat collectors).
    let links = retina_agent::kernel::links::Links::new().and_then(|mut l| l.refresh().map(|_| l));
    out.insert(
        "rtnetlink_link_dump",
        match &links {
            Ok(_) => "ok".into(),
            Err(e) => e.to_string(),
        },
    );
    let stats = match links {
        Err(_) => "no link table".to_string(),
        // A few tries: interfaces created meanwhile (by other tests) make a refresh a full
        // dump.
        Ok(mut l) => (0..5)
            .map(|_| {
                let full = l.full_dumps();
                match l.refresh() {
                    Ok(()) if l.full_dumps() == full => "ok".to_string(),
                    Ok(()) => "fell back to RTM_GETLINK".to_string(),
                    Err(e) => e.to_string(),
                }
            })
            .find(|r| r == "ok")
            .unwrap_or_else(|| "every refresh was a full RTM_GETLINK dump".to_string()),
    };
    out.insert("rtnetlink_stats_dump", stats);
    out.insert(
        "read_proc_net_netstat",
        match fs::read("/proc/net/netstat") {
            Ok(_) => "ok".into(),
            Err(e) => e.to_string(),
        },
    );

    // setns() into a named network namespace (naming interfaces inside it), in a thread
    // so this process stays where it is.
    let netns = std::env::var(CHILD_NETNS).expect("netns path");
    let setns = std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        let file = fs::File::open(&netns).map_err(|e| e.to_string())?;
        // SAFETY: file is an open namespace file; setns only affects this thread.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(errno_name());
        }
        Ok(())
    })
    .join()
    .expect("setns thread");
    out.insert("setns_netns", setns.map_or_else(|e| e, |_| "ok".into()));
    out
}

#[test]
fn kernel_needs_exactly_the_unit_capabilities() -> Result<()> {
    if std::env::var_os(CHILD_ENV).is_some() {
        let result = child_probe();
        println!("{RESULT_PREFIX}{}", serde_json::to_string(&result)?);
        return Ok(());
    }
    require_root();
    let caps = unit_capabilities();
    let veth = Veth::new("rpc")?;
    let ns = NetNs::new("rpcn")?;
    let exe = std::env::current_exe()?;
    let probe = |caps: &[String]| -> Result<BTreeMap<String, String>> {
        let out = setpriv(caps)
            .arg(&exe)
            .args([
                "--exact",
                "packaging::kernel::kernel_needs_exactly_the_unit_capabilities",
                "--nocapture",
            ])
            .args(["--test-threads", "1"])
            .env(CHILD_ENV, "1")
            .env(CHILD_VETH, &veth.host)
            .env(CHILD_NETNS, format!("/run/netns/{}", ns.name))
            .stdin(Stdio::null())
            .output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout
            .lines()
            .find_map(|l| l.split_once(RESULT_PREFIX).map(|(_, json)| json))
            .with_context(|| {
                format!(
                    "child printed no result: {stdout}{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            })?;
        Ok(serde_json::from_str(line)?)
    };
    let with_unit = probe(&caps)?;
    eprintln!("with {caps:?}: {with_unit:#?}");
    let expect_ok = [
        "bpf_map_create",
        "bpf_prog_load_raw_tracepoint",
        "bpf_raw_tracepoint_open",
        "ethtool_gdrvinfo",
        "ethtool_gsset_info",
        "ethtool_gstrings",
        "ethtool_gstats",
        "rtnetlink_link_dump",
        "rtnetlink_stats_dump",
        "read_proc_net_netstat",
    ];
    for op in expect_ok {
        assert_eq!(
            with_unit.get(op).map(String::as_str),
            Some("ok"),
            "{op} with {caps:?}"
        );
    }
    assert_ne!(
        with_unit["ethtool_n_stats"], "0",
        "a veth has driver statistics"
    );
    // What the unit does not grant, and what it costs (documented in docs/operations.md).
    assert_eq!(
        with_unit["ethtool_gregs"], "EPERM",
        "register dumps need CAP_NET_ADMIN"
    );
    assert_eq!(
        with_unit["setns_netns"], "EPERM",
        "setns needs CAP_SYS_ADMIN"
    );

    // Each capability is needed: without it the kernel refuses the program.
    for cap in &caps {
        let fewer: Vec<String> = caps.iter().filter(|c| *c != cap).cloned().collect();
        let got = probe(&fewer)?;
        eprintln!("without {cap}: {got:#?}");
        assert_eq!(
            got["bpf_prog_load_raw_tracepoint"], "EPERM",
            "without {cap} the kernel still loads a raw tracepoint program"
        );
        // Everything else the agent does stays allowed.
        for op in &expect_ok[3..] {
            assert_eq!(
                got.get(*op).map(String::as_str),
                Some("ok"),
                "{op} without {cap}"
            );
        }
    }
    Ok(())
}
