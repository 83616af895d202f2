//! Man pages and shell completions, generated from the clap definitions of [`crate::cli`],
//! for the Debian package: `retina-agent generate --out-dir DIR`, a hidden subcommand that
//! `main` adds to the parser (so it is in neither the help, the man pages nor the
//! completions it writes). The binary that is packaged documents itself: the pages can
//! never describe other flags than the ones it parses.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use clap::{Arg, ArgMatches, CommandFactory, value_parser};
use clap_complete::aot::{Bash, Fish, Generator, Zsh};
use clap_mangen::{
    Man,
    roff::{Roff, bold, italic, roman},
};

use crate::cli::Cli;

/// The name of the hidden subcommand.
pub(crate) const SUBCOMMAND: &str = "generate";
const BIN: &str = "retina-agent";

#[derive(Debug, thiserror::Error)]
pub(crate) enum GenerateError {
    #[error("{path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("`{SUBCOMMAND}` needs --out-dir")]
    NoOutDir,
}

/// The hidden subcommand, for `main` to add to [`Cli::command`].
pub(crate) fn subcommand() -> clap::Command {
    clap::Command::new(SUBCOMMAND)
        .hide(true)
        .about("Write the man pages (man/) and shell completions (completions/) into DIR")
        .arg(
            Arg::new("out-dir")
                .long("out-dir")
                .value_name("DIR")
                .required(true)
                .value_parser(value_parser!(PathBuf)),
        )
}

/// Runs the subcommand; returns the files written.
pub(crate) fn run(matches: &ArgMatches) -> Result<Vec<PathBuf>, GenerateError> {
    let dir = matches
        .get_one::<PathBuf>("out-dir")
        .ok_or(GenerateError::NoOutDir)?;
    write_all(dir)
}

/// Writes `dir/man/retina-agent.1`, one `dir/man/retina-agent-<command>.1` per subcommand,
/// and `dir/completions/{retina-agent.bash,_retina-agent,retina-agent.fish}`.
pub(crate) fn write_all(dir: &Path) -> Result<Vec<PathBuf>, GenerateError> {
    let mut written = Vec::new();
    let man = dir.join("man");
    create_dir(&man)?;
    let mut cmd = with_all_help(Cli::command()).disable_help_subcommand(true);
    cmd.build();
    written.push(write(&man.join(format!("{BIN}.1")), &main_page(&cmd)?)?);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let page = page_of(sub);
        let mut text = Vec::new();
        page.render(&mut text).map_err(|e| write_error(&man, e))?;
        if sub.get_name() == "run" {
            signals().to_writer(&mut text).map_err(|e| write_error(&man, e))?;
        }
        see_also(&[BIN])
            .to_writer(&mut text)
            .map_err(|e| write_error(&man, e))?;
        written.push(write(&man.join(page.get_filename()), &text)?);
    }

    let completions = dir.join("completions");
    create_dir(&completions)?;
    written.push(completion(&completions, Bash)?);
    written.push(completion(&completions, Zsh)?);
    written.push(completion(&completions, Fish)?);
    Ok(written)
}

/// retina-agent(1): what clap_mangen renders, plus FILES and SEE ALSO.
fn main_page(cmd: &clap::Command) -> Result<Vec<u8>, GenerateError> {
    let mut text = Vec::new();
    let err = |e| write_error(Path::new("retina-agent.1"), e);
    page_of(cmd).render(&mut text).map_err(err)?;
    signals().to_writer(&mut text).map_err(err)?;
    let mut roff = Roff::new();
    roff.control("SH", ["FILES"]);
    for (path, what) in [
        (
            "/etc/retina-agent/config.toml",
            "The configuration (every key is documented in the file itself). Flags override it.",
        ),
        (
            "/etc/retina-agent/environment",
            "Optional environment for the systemd unit (for example OTEL_EXPORTER_OTLP_HEADERS); \
             read by systemd as root, so it may be mode 0600.",
        ),
        (
            "/usr/lib/systemd/system/retina-agent.service",
            "The systemd unit: runs the daemon as a dynamic user with only CAP_BPF and CAP_PERFMON.",
        ),
        (
            "/usr/share/doc/retina-agent/",
            "operations.md (installation, the unit, upgrades, logs) and metrics.md (every metric).",
        ),
    ] {
        roff.control("TP", [])
            .text([bold(path)])
            .text([roman(what)]);
    }
    roff.to_writer(&mut text).map_err(err)?;
    see_also(&["systemctl", "journalctl"])
        .to_writer(&mut text)
        .map_err(err)?;
    Ok(text)
}

/// A page whose footer names the package version (the commit is in VERSION).
fn page_of(cmd: &clap::Command) -> Man {
    Man::new(cmd.clone()).source(format!("{BIN} {}", env!("CARGO_PKG_VERSION")))
}

/// The man page has room for what `-h` leaves out: an option with only a short help that
/// is hidden from `-h` would otherwise show no text at all (clap_mangen prints the long
/// help, or the short one unless it is hidden).
fn with_all_help(cmd: clap::Command) -> clap::Command {
    cmd.mut_args(|arg| {
        if arg.is_hide_short_help_set() && arg.get_long_help().is_none() {
            arg.hide_short_help(false)
        } else {
            arg
        }
    })
    .mut_subcommands(with_all_help)
}

/// SIGNALS: what `run` does on SIGTERM, SIGINT and SIGHUP (`systemctl reload`), and what
/// a reload applies and what needs a restart (src/commands/reload.rs).
fn signals() -> Roff {
    let mut roff = Roff::new();
    roff.control("SH", ["SIGNALS"]);
    for (signal, what) in [
        (
            "SIGTERM, SIGINT",
            "Stop: one last collection and export (within 3 s), the eBPF program detached, exit 0.",
        ),
        (
            "SIGHUP",
            "Read the configuration again (the same file, environment and flags) and apply it \
             (systemctl reload retina-agent). Applied: interval; the collector sections \
             (ethtool, netdev, netstat, softnet, qdisc, conntrack: enabled, filters, \
             settings); export and prometheus (the exporters restart, after a final export). \
             The eBPF program and its maps stay attached: drop counts go on exactly. Kept \
             until a restart, with a warning naming the key: the drops section \
             (map_entries, locations, enabled), --drop-hook, --btf and the log section. A \
             configuration that does not load is refused and logged with its file, key and \
             reason; the daemon goes on with the previous one.",
        ),
    ] {
        roff.control("TP", [])
            .text([bold(signal)])
            .text([roman(what)]);
    }
    roff
}

fn see_also(pages: &[&str]) -> Roff {
    let mut roff = Roff::new();
    roff.control("SH", ["SEE ALSO"]);
    let mut inlines = Vec::new();
    for (i, page) in pages.iter().enumerate() {
        if i > 0 {
            inlines.push(roman(", "));
        }
        inlines.push(italic(*page));
        inlines.push(roman("(1)"));
    }
    roff.text(inlines);
    roff
}

fn completion<G: Generator + Copy>(dir: &Path, shell: G) -> Result<PathBuf, GenerateError> {
    let mut cmd = Cli::command();
    let mut text = Vec::new();
    clap_complete::aot::generate(shell, &mut cmd, BIN, &mut text);
    write(&dir.join(shell.file_name(BIN)), &text)
}

fn create_dir(dir: &Path) -> Result<(), GenerateError> {
    fs::create_dir_all(dir).map_err(|e| write_error(dir, e))
}

fn write(path: &Path, text: &[u8]) -> Result<PathBuf, GenerateError> {
    fs::write(path, text).map_err(|e| write_error(path, e))?;
    Ok(path.to_path_buf())
}

fn write_error(path: &Path, source: io::Error) -> GenerateError {
    GenerateError::Write {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests;
