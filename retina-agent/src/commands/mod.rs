//! The subcommands, each behind one entry point that `main` calls once the configuration is
//! loaded: [`run`] (the daemon and its terminal summary), [`snapshot`], [`check`],
//! [`reasons`] and the hidden [`generate`] (man pages, completions).

pub(crate) mod check;
pub(crate) mod child;
pub(crate) mod generate;
pub(crate) mod reasons;
pub(crate) mod reload;
pub(crate) mod run;
pub(crate) mod snapshot;

use std::io::{self, Write as _};

/// Writes command output to stdout; a closed pipe (`| head`) ends output quietly.
pub(crate) fn emit(text: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e),
        _ => Ok(()),
    }
}
