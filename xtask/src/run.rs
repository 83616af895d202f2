//! `cargo xtask run`: build, then replace this process with the agent (as root).

use std::{os::unix::process::CommandExt as _, process::Command};

use anyhow::{Result, anyhow};

use crate::{
    build::{self, Profile},
    util::{self, Privilege, Workspace},
};

#[derive(clap::Args)]
pub struct Args {
    /// Build and run the release profile.
    #[arg(long)]
    release: bool,
    /// Arguments for the agent, after `--` (default: `run`).
    #[arg(last = true, value_name = "AGENT ARGS")]
    args: Vec<String>,
}

pub fn run(args: &Args) -> Result<()> {
    // Fail before a long build if the agent could not be started anyway.
    let privilege = util::privilege("running the agent (it loads eBPF programs)")?;
    let ws = Workspace::locate()?;
    let built = build::build(&ws, Profile::from_release(args.release))?;

    let agent_args = if args.args.is_empty() {
        vec!["run".to_owned()]
    } else {
        args.args.clone()
    };
    let mut cmd = match privilege {
        Privilege::Direct => Command::new(&built.agent),
        Privilege::Sudo => {
            let mut cmd = Command::new("sudo");
            cmd.arg("-E").arg(&built.agent);
            cmd
        }
    };
    cmd.args(&agent_args);
    util::banner(&format!("running {}", util::display(&cmd)));
    // exec: the agent gets this process's pid, terminal and signals (Ctrl-C, SIGTERM).
    let err = cmd.exec();
    Err(anyhow!(err).context(format!("cannot execute {}", util::display(&cmd))))
}
