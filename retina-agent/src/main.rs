use std::{io::IsTerminal, os::fd::AsFd, process::ExitCode};

use anyhow::{Context, Result};
use clap::{CommandFactory, FromArgMatches};
use retina_agent::{
    agent::Agent,
    btf::Btf,
    check,
    cli::{CheckArgs, CheckFormat, Cli, Command, SnapshotArgs},
    config::{self, Config, ConfigError, LogConfig, LogFormat, Overrides},
    daemon,
    drops::reasons::DropReasons,
    generate, losses,
    snapshot::{self, Format},
};

/// Exit status for a configuration that cannot be used (like a usage error), so a service
/// manager can tell it from a runtime failure (`RestartPreventExitStatus=2`).
const EXIT_CONFIG: u8 = 2;

/// Logs to stderr, as text or JSON lines, filtered by `log.level` (or `RUST_LOG`, already
/// folded into it by the configuration).
///
/// Beside the log output, a layer counts the OTLP exporter's partial-success reports
/// (which it only logs) for `retina.agent.export.rejected`.
fn init_logging(log: &LogConfig) {
    use tracing_subscriber::{EnvFilter, Layer as _, fmt, layer::SubscriberExt as _};
    let directives = config::log_filter(&log.level);
    let filter = EnvFilter::try_new(&directives).unwrap_or_else(|e| {
        // Validated with the configuration; only reachable through a bug.
        eprintln!("warning: log filter {directives:?}: {e}; logging at info");
        EnvFilter::new(config::log_filter("info"))
    });
    let output = fmt::layer().with_writer(std::io::stderr);
    let output = match log.format {
        LogFormat::Json => output.json().with_filter(filter).boxed(),
        LogFormat::Text => output
            .with_ansi(std::io::stderr().is_terminal())
            .with_filter(filter)
            .boxed(),
    };
    let subscriber = tracing_subscriber::registry()
        .with(output)
        .with(retina_agent::export::partial_success_layer());
    if let Err(e) = tracing::subscriber::set_global_default(subscriber) {
        eprintln!("warning: logging already set up: {e}");
    }
}

/// Writes command output to stdout; a closed pipe (`| head`) ends output quietly.
fn emit(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout"),
        _ => Ok(()),
    }
}

/// An error and its causes, each said once: our error types already print their source in
/// their own message, so a cause is only added when the text so far does not contain it.
fn chain(e: &anyhow::Error) -> String {
    retina_agent::sys::error_chain(e.as_ref())
}

fn main() -> ExitCode {
    retina_agent::memory::configure();
    // The hidden `generate` subcommand (man pages, completions) is added here, not in
    // `Cli`, so that what it generates from `Cli` does not mention it.
    let mut matches = Cli::command()
        .subcommand(generate::subcommand())
        .get_matches();
    if let Some((generate::SUBCOMMAND, args)) = matches.subcommand() {
        return match generate::run(args) {
            Ok(files) => {
                for file in files {
                    println!("{}", file.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let cli = match Cli::from_arg_matches_mut(&mut matches) {
        Ok(cli) => cli,
        Err(e) => e.format(&mut Cli::command()).exit(),
    };
    let overrides = cli.overrides();
    let loaded = config::check_process_env()
        .and_then(|()| config::load(cli.config.as_deref(), &config::process_env, &overrides));
    // The configuration decides how to log, so its errors cannot go through the log: they
    // are printed as they are, before anything has started.
    let loaded = match (&cli.command, loaded) {
        (_, Ok(l)) => Ok(l),
        // `check` reports a bad configuration as one of its checks.
        (Command::Check(_), Err(e)) => Err(e),
        // `reasons` only reads BTF; a broken file must not hide the kernel's reason list.
        (Command::Reasons { .. }, Err(e)) => {
            eprintln!("warning: {e} (ignored: `reasons` needs no configuration)");
            Ok(config::Loaded {
                config: Config::default(),
                origin: config::Origin::Defaults {
                    missing: config::DEFAULT_PATH.into(),
                },
            })
        }
        (_, Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match &loaded {
        Ok(l) => init_logging(&l.config.log),
        Err(_) => init_logging(&fallback_log(&overrides)),
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli, loaded)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// Logging for `check` when the configuration is invalid: flags and environment, else
/// the defaults.
fn fallback_log(overrides: &Overrides) -> LogConfig {
    config::resolve(None, &config::process_env, overrides)
        .map(|c| c.log)
        .unwrap_or_else(|_| LogConfig {
            format: overrides.log_format.unwrap_or_default(),
            ..LogConfig::default()
        })
}

async fn dispatch(cli: Cli, loaded: Result<config::Loaded, ConfigError>) -> Result<ExitCode> {
    let loaded = match (&cli.command, loaded) {
        (Command::Check(args), loaded) => return Ok(check_command(&cli, args, loaded.as_ref())),
        (_, Ok(l)) => l,
        (_, Err(e)) => return Err(e.into()),
    };
    let config = &loaded.config;
    if matches!(cli.command, Command::Run(_)) {
        tracing::info!(config = %loaded.origin, "configuration");
    }
    match &cli.command {
        Command::Reasons { format } => reasons(cli.btf.as_deref(), *format),
        Command::Snapshot(args) => snapshot_command(config, args).await,
        Command::Run(args) => {
            let summary = args
                .summary()
                .unwrap_or_else(|| std::io::stdout().is_terminal());
            let agent = Agent::new(config).context("starting the agent")?;
            daemon::run(agent, config, summary).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check(_) => unreachable!("handled above"),
    }
}

fn check_command(
    cli: &Cli,
    args: &CheckArgs,
    loaded: Result<&config::Loaded, &ConfigError>,
) -> ExitCode {
    let checks = check::run(&check::Input {
        config: loaded,
        btf_path: cli.btf.as_deref(),
        hook: cli.drop_hook.into(),
    });
    let text = match args.format {
        CheckFormat::Text => check::render_text(&checks),
        CheckFormat::Json => format!("{}\n", check::render_json(&checks)),
    };
    if let Err(e) = emit(&text) {
        eprintln!("error: {}", chain(&e));
        return ExitCode::FAILURE;
    }
    if loaded.is_err() {
        // The same status as `run` gives this configuration.
        ExitCode::from(EXIT_CONFIG)
    } else if check::passed(&checks) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn reasons(btf_path: Option<&std::path::Path>, format: Format) -> Result<ExitCode> {
    let btf = match btf_path {
        Some(p) => Btf::from_file(p)?,
        None => Btf::from_sys()?,
    };
    let modules = btf_path
        .is_none()
        .then(|| std::path::Path::new("/sys/kernel/btf"));
    let reasons = DropReasons::load(&btf, modules)?;
    match format {
        Format::Json => {
            let list: Vec<serde_json::Value> = reasons
                .iter()
                .map(|(v, n)| serde_json::json!({"value": v, "name": n}))
                .collect();
            emit(&format!("{}\n", serde_json::json!({ "reasons": list })))?;
        }
        Format::Table => {
            let mut text = String::new();
            for (v, n) in reasons.iter() {
                text.push_str(&format!("{v:>8}  {n}\n"));
            }
            emit(&text)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn snapshot_command(config: &Config, args: &SnapshotArgs) -> Result<ExitCode> {
    let mut agent = Agent::new(config).context("starting the agent")?;
    for d in agent.degraded() {
        tracing::warn!(collector = d.collector, "not collecting: {}", d.reason);
    }
    agent.cycle();
    let before = snapshot::capture(&agent);
    let started = std::time::Instant::now();
    let mut code = ExitCode::SUCCESS;
    if let Some((program, rest)) = args.command.split_first() {
        // CMD's stdout goes to our stderr: stdout carries the snapshot alone (JSON stays
        // parsable), and CMD's output is still seen on a terminal.
        let stdout = std::io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .context("duplicating stderr for the command's output")?;
        let status = tokio::process::Command::new(program)
            .args(rest)
            .stdout(std::process::Stdio::from(stdout))
            .status()
            .await
            .with_context(|| format!("running {program}"))?;
        if !status.success() {
            eprintln!("retina-agent: {program} exited with {status}");
            code = ExitCode::from(status.code().map_or(1, |c| c.clamp(1, 255) as u8));
        }
        tokio::time::sleep(args.settle).await;
    } else {
        tokio::time::sleep(args.duration).await;
    }
    let window = started.elapsed();
    agent.cycle();
    let after = snapshot::capture(&agent);
    let mut points = if args.cumulative {
        after
    } else {
        snapshot::deltas(&before, after)
    };
    snapshot::sort(&mut points);
    match args.format {
        Format::Json => emit(&format!(
            "{}\n",
            snapshot::render_json(&points, (!args.cumulative).then_some(window), &agent)
        ))?,
        Format::Table => emit(&format!(
            "{}\n{}",
            snapshot::render_table(&points),
            losses::render(&losses::rows(&points))
        ))?,
    }
    Ok(code)
}
