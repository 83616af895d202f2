use std::{io::IsTerminal, process::ExitCode};

use anyhow::{Context, Result};
use clap::Parser;
use retina_agent::{
    agent::{Agent, AgentOptions},
    btf::Btf,
    cli::{Cli, Command, LogFormat, SnapshotArgs},
    daemon,
    drops::{probe::ProbeOptions, reasons::DropReasons},
    snapshot::{self, Format},
};

fn init_logging(format: LogFormat) {
    use tracing_subscriber::{EnvFilter, fmt};
    // The exporter's transport crates log every connection attempt; keep them quiet
    // unless asked for by name.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,h2=off,hyper=off,hyper_util=off,tonic=off,tower=off")
    });
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
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
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> Result<ExitCode> {
    let options = AgentOptions {
        btf_path: cli.btf.clone(),
        drops: ProbeOptions {
            max_entries: cli.drop_map_entries,
        },
        ..AgentOptions::default()
    };
    match cli.command {
        Command::Reasons { format } => reasons(&options, format),
        Command::Snapshot(args) => snapshot_command(&options, args).await,
        Command::Run(args) => {
            let summary = if args.no_summary {
                false
            } else {
                args.summary || std::io::stdout().is_terminal()
            };
            let agent = Agent::new(&options).context("starting the agent")?;
            daemon::run(agent, args.interval, summary).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn reasons(options: &AgentOptions, format: Format) -> Result<ExitCode> {
    let btf = match &options.btf_path {
        Some(p) => Btf::from_file(p)?,
        None => Btf::from_sys()?,
    };
    let modules = options
        .btf_path
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

async fn snapshot_command(options: &AgentOptions, args: SnapshotArgs) -> Result<ExitCode> {
    let mut agent = Agent::new(options).context("starting the agent")?;
    for d in agent.degraded() {
        tracing::warn!(collector = d.collector, "not collecting: {}", d.reason);
    }
    agent.cycle();
    let before = snapshot::capture(&agent);
    let started = std::time::Instant::now();
    let mut code = ExitCode::SUCCESS;
    if let Some((program, rest)) = args.command.split_first() {
        let status = tokio::process::Command::new(program)
            .args(rest)
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
        Format::Table => emit(&snapshot::render_table(&points))?,
    }
    Ok(code)
}
