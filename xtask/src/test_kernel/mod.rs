//! `cargo xtask test-kernel`: the privileged integration tests on other kernels. Boots each
//! Debian kernel package of a list (default: the newest 6.1 and 6.12 cloud kernels apt
//! knows) under `qemu-system-x86_64`, one after the other, and runs inside the very test
//! binaries `cargo xtask test` runs on the host.
//!
//! - [`packages`]: which kernels, fetched with `apt-get download` + `dpkg-deb -x` into
//!   `.tools/kernels/PKG/`;
//! - [`suite`]: the test binaries (cargo's JSON messages) and the one table of what a guest
//!   cannot run, and why;
//! - [`modules`], [`initramfs`]: the guest's initramfs (busybox, the agent, the tests, their
//!   tools and libraries, `rotel-agent` from the venv's `rotel` wheel, the kernel modules),
//!   `xtask/guest/init.sh` as `/init`;
//! - [`qemu`]: booting, KVM when it works, TCG otherwise;
//! - [`report`]: the guest's console protocol, the verdicts, the kernel matrix
//!   (`target/test-kernel/matrix.md`; `--write-docs` puts it into docs/kernels.md).
//!
//! Fails when any test file fails on any kernel, a guest does not report to the end
//! (crash, panic, timeout), or a planned test has no result. Installed on first use,
//! idempotently: the Debian packages in [`APT_PACKAGES`].

mod initramfs;
mod modules;
mod packages;
mod qemu;
mod report;
pub mod suite;

use std::{fs, process::Command, time::Duration, time::Instant};

use anyhow::{Context as _, Result, bail};

use crate::{
    build::{self, Profile},
    provision,
    util::{self, Privilege, Workspace},
};
use qemu::Accel;
use report::{Console, KernelRun};

/// Debian packages this command needs on the host (the guest's programs are copied from
/// here: [`initramfs::GUEST_TOOLS`]; `python3-venv` for the venv whose `rotel` wheel gives
/// the guest its OTLP collector).
pub const APT_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "busybox-static",
    "jq",
    "ethtool",
    "nftables",
    "iproute2",
    "bpftool",
    "util-linux",
    "strace",
    "binutils",
    "dash",
    "xz-utils",
    "iputils-arping",
    "prometheus",
    "ca-certificates",
    "python3",
    "python3-venv",
];

#[derive(clap::Args)]
pub struct Args {
    /// Debian kernel package to boot; repeat for several [default: the newest
    /// linux-image-6.1.0-N-cloud-amd64-unsigned and linux-image-6.12.N+deb12-cloud-amd64-unsigned
    /// that `apt-cache` lists].
    #[arg(long, value_name = "PKG")]
    kernel: Vec<String>,
    /// Virtualisation: `kvm`, `tcg` (software emulation) or `auto`.
    #[arg(long, value_enum, default_value = "auto")]
    accel: Accel,
    /// Give up on a guest after this many seconds.
    #[arg(long, default_value_t = 3600, value_name = "SECONDS")]
    timeout: u64,
    /// Inside the guest, kill a test binary after this many seconds.
    #[arg(long, default_value_t = 900, value_name = "SECONDS")]
    test_timeout: u64,
    /// Build the agent and the tests with the release profile.
    #[arg(long)]
    release: bool,
    /// Extra kernel command line for the guest (e.g. `loglevel=7`).
    #[arg(long, value_name = "ARGS")]
    append: Option<String>,
    /// Also write the kernel matrix into docs/kernels.md (between its markers).
    #[arg(long)]
    write_docs: bool,
    /// Run only these modules of the test binary (e.g. `--only drops,zero_alloc`), for a
    /// quick look at a few; the others are reported as not run.
    #[arg(long, value_delimiter = ',', value_name = "MODULE")]
    only: Vec<String>,
}

impl Default for Args {
    /// What `cargo xtask test` runs: the default kernels, automatic acceleration.
    fn default() -> Self {
        Args {
            kernel: Vec::new(),
            accel: Accel::Auto,
            timeout: 3600,
            test_timeout: 900,
            release: false,
            append: None,
            write_docs: false,
            only: Vec::new(),
        }
    }
}

pub fn run(args: &Args) -> Result<()> {
    let started = Instant::now();
    let privilege = util::privilege("`cargo xtask test-kernel` (installs Debian packages)")?;
    let ws = Workspace::locate()?;
    let profile = Profile::from_release(args.release);

    util::banner("provisioning: QEMU, busybox, the guest's tools, the Python venv (rotel)");
    provision::apt_packages(APT_PACKAGES, privilege)?;
    let venv_bin = provision::python_venv(&ws)?
        .context("the guests need rotel-agent from the venv, but PYPI_PACKAGES is empty")?;
    let rotel = provision::rotel_agent(&venv_bin)?;
    let packages = if args.kernel.is_empty() {
        packages::default_kernels(privilege)?
    } else {
        args.kernel.clone()
    };
    eprintln!("kernels: {}", packages.join(", "));

    let built = build::build(&ws, profile)?;
    util::banner("building the integration tests (as `cargo xtask test` does)");
    let suite = suite::build(&ws, profile, &built, rotel)?;
    eprintln!(
        "test files: {}",
        suite
            .files
            .iter()
            .map(|f| format!("{} ({})", f.name, f.tests.len()))
            .collect::<Vec<_>>()
            .join(", ")
    );

    let accel = args.accel.resolve();
    // Each guest is prepared in turn (kernel package, initramfs), then all boot side by
    // side: a guest runs one test at a time, so it keeps about one host core busy, and the
    // guests together take about as long as the slowest instead of their sum.
    let mut prepared = Vec::new();
    for package in &packages {
        prepared.push(
            prepare(&ws, args, &built, &suite, package, privilege)
                .with_context(|| format!("cannot prepare the guest of {package}"))?,
        );
    }
    let runs = std::thread::scope(|scope| {
        let handles: Vec<_> = prepared
            .iter()
            .map(|guest| scope.spawn(move || boot_and_judge(args, guest, accel)))
            .collect();
        handles
            .into_iter()
            .zip(&packages)
            .map(|(h, package)| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("the thread of {package}'s guest panicked"))?
                    .with_context(|| format!("cannot run the tests on {package}"))
            })
            .collect::<Result<Vec<_>>>()
    })?;

    let out = ws.target_dir.join("test-kernel");
    let when = util::capture(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))?;
    let command = if args.kernel.is_empty() {
        "cargo xtask test-kernel".to_string()
    } else {
        format!(
            "cargo xtask test-kernel --kernel {}",
            args.kernel.join(" --kernel ")
        )
    };
    let matrix = report::matrix(&runs, when.trim(), &command);
    let matrix_path = out.join("matrix.md");
    fs::write(&matrix_path, &matrix)
        .with_context(|| format!("cannot write {}", matrix_path.display()))?;
    if args.write_docs {
        report::update_doc(&ws.root.join("docs/kernels.md"), &matrix)?;
        eprintln!("wrote the kernel matrix into docs/kernels.md");
    }
    util::banner(&format!(
        "kernel matrix ({}; total {:.0} s)",
        matrix_path.display(),
        started.elapsed().as_secs_f64()
    ));
    eprintln!("{matrix}");

    let mut failed = Vec::new();
    for run in &runs {
        let files = run.failed_files();
        if let Some(error) = &run.error {
            failed.push(format!("{}: {error}", run.release));
        } else if !files.is_empty() {
            failed.push(format!("{}: {}", run.release, files.join(", ")));
        }
    }
    if !failed.is_empty() {
        bail!("failed in the guest: {}", failed.join("; "));
    }
    Ok(())
}

/// A guest ready to boot: its kernel, what runs in it, and its initramfs.
struct Guest<'a> {
    kernel: packages::Kernel,
    plan: Vec<suite::Planned<'a>>,
    work: std::path::PathBuf,
    image: std::path::PathBuf,
}

/// Fetches the kernel package and writes the guest's initramfs.
fn prepare<'a>(
    ws: &Workspace,
    args: &Args,
    built: &build::Built,
    suite: &'a suite::Suite,
    package: &str,
    privilege: Privilege,
) -> Result<Guest<'a>> {
    let kernel = packages::fetch(ws, package, privilege)?;
    eprintln!(
        "kernel: {} {} ({}), BTF: {}",
        kernel.package,
        kernel.version,
        kernel.vmlinuz.display(),
        kernel
            .config_value("CONFIG_DEBUG_INFO_BTF")
            .unwrap_or("not set")
    );
    let mut plan = suite::plan(suite, &kernel.package, &initramfs::guest_programs());
    if !args.only.is_empty() {
        for planned in &mut plan {
            if !args.only.contains(&planned.file.name) {
                planned.not_run = Some("not asked for (--only)".to_string());
            }
        }
    }
    for planned in &plan {
        if let Some(reason) = &planned.not_run {
            eprintln!(
                "not run on {}: {} ({reason})",
                kernel.release, planned.file.name
            );
        }
        for (test, reason) in &planned.skipped {
            eprintln!(
                "not run on {}: {}::{test} ({reason})",
                kernel.release, planned.file.name
            );
        }
    }

    let work = ws.target_dir.join("test-kernel").join(&kernel.package);
    fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    util::banner(&format!("writing the initramfs for {}", kernel.package));
    let image = work.join("initramfs.cpio");
    let payload = initramfs::Payload {
        agent: &built.agent,
        traffic: &suite.traffic,
        rotel: &suite.rotel,
        plan: &plan,
        test_timeout: args.test_timeout,
    };
    let strip_dir = ws.target_dir.join("test-kernel").join("stripped");
    let size = initramfs::assemble(&kernel, &payload, &strip_dir, &image)?;
    eprintln!(
        "{}: {:.1} MiB",
        image.display(),
        size as f64 / (1 << 20) as f64
    );
    Ok(Guest {
        kernel,
        plan,
        work,
        image,
    })
}

/// Boots a prepared guest and judges what its console reported.
fn boot_and_judge(args: &Args, guest: &Guest<'_>, accel: Accel) -> Result<KernelRun> {
    let Guest {
        kernel,
        plan,
        work,
        image,
    } = guest;
    util::banner(&format!(
        "booting {} under QEMU ({}); timeout {} s",
        kernel.package,
        accel.name(),
        args.timeout
    ));
    let log_path = work.join("console.log");
    let mut console = Console::default();
    let ending = qemu::boot(
        kernel,
        image,
        accel,
        args.append.as_deref(),
        Duration::from_secs(args.timeout),
        &log_path,
        |line| console.feed(line),
    )?;
    let error = match (&ending.killed, console.finished) {
        (Some(why), _) => Some(format!("{why}; see {}", log_path.display())),
        (None, false) => Some(format!(
            "the guest did not report to the end ({}); see {}",
            ending.description,
            log_path.display()
        )),
        (None, true) => None,
    };
    let files = report::judge(plan, &console);
    let run = KernelRun {
        package: kernel.package.clone(),
        version: kernel.version.clone(),
        release: kernel.release.clone(),
        accel: accel.name(),
        guest_secs: ending.guest_time.as_secs_f64(),
        facts: console.facts,
        error,
        files,
    };
    eprintln!(
        "\n{} ({}): {} test file(s) failed{}; guest {:.0} s; console log {}",
        run.release,
        run.accel,
        run.failed_files().len(),
        run.error
            .as_deref()
            .map(|e| format!(", {e}"))
            .unwrap_or_default(),
        run.guest_secs,
        log_path.display()
    );
    Ok(run)
}
