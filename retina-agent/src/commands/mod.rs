//! The subcommands, each behind one entry point that `main` calls once the configuration is
//! loaded: [`run`] (the daemon and its terminal summary), [`snapshot`], [`check`],
//! [`reasons`] and the hidden [`generate`] (man pages, completions).

pub mod check;
pub mod child;
pub mod flows;
pub mod generate;
pub mod losses;
pub mod pcap;
pub mod reasons;
pub mod reload;
pub mod run;
pub mod snapshot;

use std::io::{self, Write as _};

/// Writes command output to stdout; a closed pipe (`| head`) ends output quietly.
pub fn emit(text: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e),
        _ => Ok(()),
    }
}
