//! `cargo xtask fuzz`: builds the fuzz targets of `fuzz/` (cargo-fuzz, libFuzzer, nightly
//! with AddressSanitizer) and runs each for a while from its seed corpus. `cargo xtask test`
//! runs every target briefly the same way. A crash fails the run; libFuzzer leaves the
//! input under `target/fuzz/artifacts/<target>/`.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::{
    build, provision,
    util::{self, Workspace},
};

/// Every target of `fuzz/Cargo.toml`, in the order they run.
pub const TARGETS: &[&str] = &["config", "rtnetlink", "btf", "procfs", "ethtool", "otlp"];

/// Seconds each target runs by default (`cargo xtask fuzz`).
const DEFAULT_SECONDS: u64 = 60;

#[derive(clap::Args)]
pub struct Args {
    /// How long each target runs, in seconds.
    #[arg(long, default_value_t = DEFAULT_SECONDS)]
    seconds: u64,
    /// Targets to run (default: all of them).
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(TARGETS))]
    targets: Vec<String>,
}

pub fn run(args: &Args) -> Result<()> {
    let ws = Workspace::locate()?;
    let targets: Vec<&str> = if args.targets.is_empty() {
        TARGETS.to_vec()
    } else {
        args.targets.iter().map(String::as_str).collect()
    };
    run_targets(&ws, &targets, args.seconds)
}

/// One target's outcome, from libFuzzer's final statistics.
struct Outcome {
    target: &'static str,
    runs: Option<u64>,
    execs_per_sec: Option<u64>,
    coverage: Option<String>,
}

/// Builds the targets, then runs each for `seconds`; fails if any crashed.
pub fn run_targets(ws: &Workspace, targets: &[&str], seconds: u64) -> Result<()> {
    util::banner("provisioning: nightly rust-src, bpf-linker, cargo-fuzz");
    let toolchain = provision::ebpf_toolchain(ws, &[])?;
    let object = build::ebpf(ws, &toolchain)?;
    let cargo_fuzz = provision::cargo_fuzz(ws)?;
    let fuzz_dir = ws.root.join("fuzz");
    let work = ws.target_dir.join("fuzz");

    util::banner("building the fuzz targets (nightly, AddressSanitizer)");
    let mut cmd = fuzz_cargo(ws, &cargo_fuzz, &object, &work, "build")?;
    util::run(&mut cmd).context("could not build the fuzz targets")?;

    let mut outcomes = Vec::new();
    let mut crashed = Vec::new();
    for target in targets {
        let Some(&target) = TARGETS.iter().find(|t| *t == target) else {
            bail!(
                "no fuzz target {target:?} (targets: {})",
                TARGETS.join(", ")
            );
        };
        util::banner(&format!("fuzzing {target} for {seconds} s"));
        let seeds = fuzz_dir.join("corpus").join(target);
        ensure!(
            seeds.is_dir(),
            "the seed corpus {} is missing",
            seeds.display()
        );
        // libFuzzer adds what it finds to the first directory: a working copy, so the seed
        // corpus in the repository stays as checked in.
        let corpus = work.join("corpus").join(target);
        let artifacts = work.join("artifacts").join(target);
        for dir in [&corpus, &artifacts] {
            fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let log = work.join(format!("{target}.log"));
        let mut cmd = fuzz_cargo(ws, &cargo_fuzz, &object, &work, "run")?;
        cmd.arg(target)
            .arg(&corpus)
            .arg(&seeds)
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .arg("-print_final_stats=1")
            .arg("-timeout=10")
            .arg("-rss_limit_mb=2048");
        let status = run_logged(&mut cmd, &log)?;
        let text = fs::read_to_string(&log).unwrap_or_default();
        let outcome = parse_stats(target, &text);
        if !status {
            eprintln!(
                "fuzz target {target} failed: see {} and the input in {}",
                log.display(),
                artifacts.display()
            );
            crashed.push(target);
        }
        outcomes.push(outcome);
    }

    eprintln!(
        "\n{:<10} {:>12} {:>10}  coverage",
        "target", "runs", "exec/s"
    );
    for o in &outcomes {
        let show = |v: Option<u64>| v.map_or_else(|| "?".to_string(), |v| v.to_string());
        eprintln!(
            "{:<10} {:>12} {:>10}  {}",
            o.target,
            show(o.runs),
            show(o.execs_per_sec),
            o.coverage.as_deref().unwrap_or("?")
        );
    }
    if !crashed.is_empty() {
        bail!("fuzz targets crashed: {}", crashed.join(", "));
    }
    Ok(())
}

/// `cargo fuzz SUBCOMMAND` on the nightly toolchain for `fuzz/`, building into `work`.
fn fuzz_cargo(
    ws: &Workspace,
    cargo_fuzz: &Path,
    object: &Path,
    work: &Path,
    subcommand: &str,
) -> Result<Command> {
    let mut cmd = util::rustup_run("nightly", "cargo");
    let bin_dir = cargo_fuzz
        .parent()
        .context("cargo-fuzz has no directory")?
        .to_path_buf();
    cmd.current_dir(&ws.root)
        .env("PATH", util::path_with(&[&bin_dir])?)
        .env("RETINA_EBPF_OBJECT", object)
        .args(["fuzz", subcommand])
        .arg("--fuzz-dir")
        .arg(ws.root.join("fuzz"))
        .arg("--target-dir")
        .arg(work.join("build"));
    Ok(cmd)
}

/// Runs `cmd` with its output copied to `log` and the terminal; whether it succeeded.
fn run_logged(cmd: &mut Command, log: &PathBuf) -> Result<bool> {
    eprintln!("$ {} (output: {})", util::display(cmd), log.display());
    let file = fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let status = cmd
        .stdout(file.try_clone()?)
        .stderr(file)
        .status()
        .context("could not start cargo fuzz")?;
    let text = fs::read_to_string(log).unwrap_or_default();
    // The interesting part: the last status lines and any crash report.
    let lines: Vec<&str> = text.lines().collect();
    for line in &lines[lines.len().saturating_sub(25)..] {
        eprintln!("  {line}");
    }
    Ok(status.success())
}

/// libFuzzer's `stat::number_of_executed_units`, `stat::average_exec_per_sec` and the
/// last `cov:`/`ft:` figures.
fn parse_stats(target: &'static str, log: &str) -> Outcome {
    let stat = |key: &str| {
        log.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_start_matches(':').trim().parse().ok())
    };
    let coverage = log
        .lines()
        .rev()
        .find(|l| l.contains(" cov: ") && l.contains(" ft: "))
        .map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let get = |k: &str| {
                words
                    .iter()
                    .position(|w| *w == k)
                    .and_then(|i| words.get(i + 1))
                    .copied()
                    .unwrap_or("?")
            };
            format!(
                "cov {} ft {} corpus {}",
                get("cov:"),
                get("ft:"),
                get("corp:")
            )
        });
    Outcome {
        target,
        runs: stat("stat::number_of_executed_units"),
        execs_per_sec: stat("stat::average_exec_per_sec"),
        coverage,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzer_final_stats() {
        let log = "#1024\tpulse  cov: 10 ft: 12 corp: 3/40b exec/s: 512 rss: 40Mb\n\
                   #2048\tDONE   cov: 1641 ft: 5170 corp: 282/52Kb lim: 4096 exec/s: 1190 rss: 478Mb\n\
                   Done 2048 runs in 2 second(s)\n\
                   stat::number_of_executed_units: 2048\n\
                   stat::average_exec_per_sec:     1190\n";
        let o = parse_stats("config", log);
        assert_eq!(o.runs, Some(2048));
        assert_eq!(o.execs_per_sec, Some(1190));
        assert_eq!(
            o.coverage.as_deref(),
            Some("cov 1641 ft 5170 corpus 282/52Kb")
        );
    }
}
