//! Forwards log records of the eBPF program (aya-log) into the agent's tracing output.

use aya::Ebpf;
use tokio::io::unix::AsyncFd;

/// Starts a task that drains the program's log ring buffer whenever it has records. Needs
/// a tokio runtime; without one (or without the log map) eBPF logs are not shown.
pub(crate) fn spawn(ebpf: &mut Ebpf) {
    let logger = match aya_log::EbpfLogger::init(ebpf) {
        Ok(logger) => logger,
        Err(e) => {
            tracing::debug!("eBPF logs unavailable: {e}");
            return;
        }
    };
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    handle.spawn(async move {
        // SAFETY: the logger owns its ring buffer's fd for its whole life and never
        // replaces it; the AsyncFd owns the logger.
        let registered =
            unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) };
        let Ok(mut fd) = registered else {
            tracing::debug!("eBPF logs unavailable: cannot register the log ring buffer");
            return;
        };
        loop {
            let Ok(mut guard) = fd.readable_mut().await else {
                return;
            };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    });
}
