//! `cargo xtask test`: everything the tests need on a fresh Debian machine, then the unit
//! tests and the privileged integration tests (`retina-tests`, one test at a time).

use std::{ffi::OsString, path::Path};

use anyhow::{Result, bail};

use crate::{
    build::{self, Profile},
    fuzz, provision, test_kernel,
    util::{self, Privilege, Workspace},
};

const TESTS_PACKAGE: &str = "retina-tests";

#[derive(clap::Args)]
pub struct Args {
    /// Build the agent and the tests with the release profile.
    #[arg(long)]
    release: bool,
    /// Skip the other kernels' runs under QEMU (`cargo xtask test-kernel`: the integration
    /// tests on Debian's 6.1 and 6.12), which otherwise follow when no test filter is given.
    #[arg(long)]
    skip_kernel: bool,
    /// Seconds each fuzz target runs (`cargo xtask fuzz`) after the unit tests; 0 skips
    /// them, as does a test filter.
    #[arg(long, default_value_t = 20, value_name = "SECONDS")]
    fuzz_seconds: u64,
    /// Extra arguments for the integration test harness, after `--` (e.g. a test name filter).
    #[arg(last = true, value_name = "EXTRA ARGS")]
    extra: Vec<String>,
}

pub fn run(args: &Args) -> Result<()> {
    let privilege = util::privilege("`cargo xtask test` (the tests load eBPF programs)")?;
    if privilege == Privilege::Sudo {
        eprintln!("not root: Debian packages and the integration tests will run through sudo");
    }
    let ws = Workspace::locate()?;
    let profile = Profile::from_release(args.release);
    crate::test_kernel::suite::check_test_modules(&ws.root)?;

    util::banner("provisioning: Debian packages, Python venv");
    provision::apt_packages(&provision::test_apt_packages(), privilege)?;
    let venv_bin = provision::python_venv(&ws)?;

    let built = build::build(&ws, profile)?;
    let mut failed = Vec::new();

    util::banner("unit tests");
    let mut unit = util::cargo();
    unit.current_dir(&ws.root)
        .env("RETINA_EBPF_OBJECT", &built.ebpf_object)
        .args(["test", "--no-fail-fast", "--workspace"])
        .args(["--exclude", TESTS_PACKAGE, "--exclude", "retina-ebpf"])
        .args(profile.flags())
        // The few unit tests that need root are `#[ignore]`d so that a plain `cargo test`
        // passes unprivileged; here they run, and fail loudly without root.
        .args(["--", "--include-ignored"]);
    if let Err(err) = util::run(&mut unit) {
        eprintln!("{err:#}");
        failed.push("unit tests");
    }

    if args.fuzz_seconds > 0 && args.extra.is_empty() {
        util::banner("fuzz targets, briefly (cargo xtask fuzz)");
        if let Err(err) = fuzz::run_targets(&ws, fuzz::TARGETS, args.fuzz_seconds) {
            eprintln!("{err:#}");
            failed.push("fuzz targets");
        }
    }

    util::banner("privileged integration tests");
    let mut dirs: Vec<&Path> = Vec::new();
    if let Some(bin) = &venv_bin {
        dirs.push(bin);
    }
    let path = util::path_with(&dirs)?;
    let mut integration = util::cargo();
    integration
        .current_dir(&ws.root)
        .env("RETINA_EBPF_OBJECT", &built.ebpf_object)
        .env("RETINA_AGENT_BIN", &built.agent)
        .env("PATH", &path)
        .args([
            "test",
            "--no-fail-fast",
            "--package",
            TESTS_PACKAGE,
            "--tests",
        ])
        .args(profile.flags());
    if let Some(bin) = &venv_bin {
        integration.env("RETINA_TOOLS_VENV_BIN", bin);
    }
    if privilege == Privilege::Sudo {
        // Only the test binaries run as root; cargo and the build stay unprivileged. `env
        // PATH=...` because sudo's secure_path would drop the venv from PATH.
        integration.arg("--config").arg(sudo_runner(&path)?);
    }
    integration
        .arg("--")
        .arg("--test-threads=1")
        .args(&args.extra);
    if let Err(err) = util::run(&mut integration) {
        eprintln!("{err:#}");
        failed.push("integration tests");
    }

    if !args.skip_kernel && args.extra.is_empty() {
        util::banner("other kernels: Debian 6.1 and 6.12 under QEMU (cargo xtask test-kernel)");
        if let Err(err) = test_kernel::run(&test_kernel::Args::default()) {
            eprintln!("{err:#}");
            failed.push("other-kernel tests");
        }
    }

    if !failed.is_empty() {
        bail!("failed: {}", failed.join(", "));
    }
    eprintln!("\nall tests passed");
    Ok(())
}

/// `target.'cfg(all())'.runner = ["sudo", "-E", "env", "PATH=<path>"]` for `--config`.
fn sudo_runner(path: &OsString) -> Result<String> {
    let Some(path) = path.to_str() else {
        bail!("PATH is not valid UTF-8");
    };
    // JSON string syntax is valid TOML basic-string syntax.
    let path = serde_json::to_string(&format!("PATH={path}"))?;
    Ok(format!(
        r#"target.'cfg(all())'.runner = ["sudo", "-E", "env", {path}]"#
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sudo_runner_is_a_toml_assignment() {
        let config = sudo_runner(&OsString::from("/a b/bin:/usr/bin")).unwrap();
        assert_eq!(
            config,
            r#"target.'cfg(all())'.runner = ["sudo", "-E", "env", "PATH=/a b/bin:/usr/bin"]"#
        );
    }
}
