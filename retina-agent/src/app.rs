//! The program: parse the command line, load the configuration, set up logging, dispatch
//! to a command. `main.rs` only calls [`main`].

use std::{io::IsTerminal, process::ExitCode};

use crate::{
    agent::Agent,
    cli::{Cli, Command},
    commands::{self, generate},
    config::{self, Config, ConfigError, LogConfig, LogFormat, Overrides},
};
use anyhow::{Context, Result};
use clap::{CommandFactory, FromArgMatches};

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
        .with(crate::export::partial_success_layer());
    if let Err(e) = tracing::subscriber::set_global_default(subscriber) {
        eprintln!("warning: logging already set up: {e}");
    }
}

/// Runs retina-agent with the process's arguments and environment; the exit status.
pub fn main() -> ExitCode {
    crate::memory::configure();
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
            eprintln!("error: {}", crate::kernel::sys::error_chain(e.as_ref()));
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
        (Command::Check(args), loaded) => {
            let input = commands::check::Input {
                config: loaded.as_ref(),
                btf_path: cli.btf.as_deref(),
                hook: cli.drop_hook,
            };
            return Ok(commands::check::command(&input, args.format));
        }
        (_, Ok(l)) => l,
        (_, Err(e)) => return Err(e.into()),
    };
    let config = &loaded.config;
    if matches!(cli.command, Command::Run(_)) {
        tracing::info!(config = %loaded.origin, "configuration");
    }
    match &cli.command {
        Command::Reasons { format } => commands::reasons::command(cli.btf.as_deref(), *format),
        Command::Snapshot(args) => commands::snapshot::command(config, args).await,
        Command::Run(args) => {
            let summary = args
                .summary()
                .unwrap_or_else(|| std::io::stdout().is_terminal());
            // Before the probe loads: from here on SIGHUP reloads, never kills.
            let hup = commands::run::hangup()?;
            let reloader = commands::reload::Reloader::new(cli.config.clone(), cli.overrides());
            let agent = Agent::new(config).context("starting the agent")?;
            commands::run::run(agent, config, summary, hup, &reloader).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check(_) => unreachable!("handled above"),
    }
}
