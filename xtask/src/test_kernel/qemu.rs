//! Booting a guest under `qemu-system-x86_64`: KVM when it works, TCG otherwise; the serial
//! console streamed line by line to the caller, to stderr (`guest RELEASE|`) and to a log file.

use std::{
    fs::{self, File},
    io::{BufRead as _, BufReader, BufWriter, Read as _, Write as _},
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::packages::Kernel;
use crate::util;

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Accel {
    /// KVM when /dev/kvm is usable and the CPU advertises vmx/svm, else TCG.
    Auto,
    Kvm,
    Tcg,
}

impl Accel {
    /// `Auto` decided for this machine.
    pub fn resolve(self) -> Accel {
        match self {
            Accel::Auto if kvm_usable() => Accel::Kvm,
            Accel::Auto => Accel::Tcg,
            other => other,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "KVM",
            Accel::Tcg => "TCG",
            Accel::Auto => "auto",
        }
    }
}

/// Guest memory: the initramfs (test binaries included) lives in it, unpacked.
const MEMORY_MIB: u32 = 2048;

/// KVM works only when /dev/kvm opens read-write and the CPU advertises hardware
/// virtualisation: inside a VM without nested virtualisation /dev/kvm may exist while
/// guests hang.
fn kvm_usable() -> bool {
    let opens = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    let flags = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let hw = flags
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    opens && hw
}

/// Removes terminal escape sequences (SeaBIOS clears the screen) and carriage returns.
fn clean(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    // Parameters, then one final byte in @..~.
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\r' | '\n' => {}
            c => out.push(c),
        }
    }
    out
}

/// How a boot ended.
pub struct Ending {
    /// Boot to QEMU's exit (or to the timeout).
    pub guest_time: Duration,
    /// `None` when QEMU exited by itself; otherwise why it was stopped.
    pub killed: Option<String>,
    /// QEMU's exit status and whether the guest kernel panicked, for error messages.
    pub description: String,
}

/// Boots `kernel` with `initramfs` and hands every console line to `on_line` (also written
/// to `log_path` and, unless empty, to stderr after `guest RELEASE|`); stops QEMU after
/// `timeout`.
pub fn boot(
    kernel: &Kernel,
    initramfs: &Path,
    accel: Accel,
    append: Option<&str>,
    timeout: Duration,
    log_path: &Path,
    mut on_line: impl FnMut(&str),
) -> Result<Ending> {
    let mut cmdline = String::from("console=ttyS0 panic=-1 quiet");
    if let Some(extra) = append {
        cmdline.push(' ');
        cmdline.push_str(extra);
    }
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ])
    .args([
        "-serial",
        "stdio",
        "-smp",
        "2",
        "-m",
        &MEMORY_MIB.to_string(),
    ]);
    match accel {
        Accel::Kvm => cmd.args(["-accel", "kvm", "-cpu", "host"]),
        _ => cmd.args(["-accel", "tcg", "-cpu", "max"]),
    };
    cmd.arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", &cmdline])
        // A virtio NIC for the driver statistics, on an isolated user-mode network, without
        // its boot ROM.
        .args(["-netdev", "user,id=n0,restrict=on"])
        .args(["-device", "virtio-net-pci,netdev=n0,romfile="])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    eprintln!("$ {}", util::display(&cmd));
    let started = Instant::now();
    let mut child = cmd.spawn().context("cannot start qemu-system-x86_64")?;

    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().context("no qemu stdout")?;
    let reader = thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        let mut buf = Vec::new();
        while matches!(stdout.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
            if tx.send(clean(&buf)).is_err() {
                break;
            }
            buf.clear();
        }
    });
    let mut stderr = child.stderr.take().context("no qemu stderr")?;
    let stderr_reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    let mut log = BufWriter::new(
        File::create(log_path).with_context(|| format!("cannot create {}", log_path.display()))?,
    );
    let mut panicked = false;
    let mut killed = None;
    let deadline = started + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                writeln!(log, "{line}")?;
                if line.trim().is_empty() {
                    continue;
                }
                eprintln!("guest {}| {line}", kernel.release);
                panicked |= line.contains("Kernel panic");
                on_line(&line);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                killed = Some(format!(
                    "the guest did not finish within {} s (raise --timeout)",
                    timeout.as_secs()
                ));
                break;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    log.flush()?;
    let status = child.wait()?;
    let guest_time = started.elapsed();
    let _ = reader.join();
    let stderr = stderr_reader.join().unwrap_or_default();
    if !stderr.trim().is_empty() {
        eprintln!("qemu stderr:\n{}", stderr.trim());
    }
    if status.code() == Some(127)
        || (killed.is_none() && !status.success() && stderr.contains("failed to initialize"))
    {
        bail!(
            "qemu-system-x86_64 could not start ({status}): {}",
            stderr.trim()
        );
    }
    let description = format!(
        "QEMU exited with {status}{} after {:.0} s",
        if panicked {
            ", the guest kernel panicked"
        } else {
            ""
        },
        guest_time.as_secs_f64()
    );
    Ok(Ending {
        guest_time,
        killed,
        description,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_lines_are_cleaned() {
        assert_eq!(clean(b"\x1b[2J\x1bcRETINA\r\n"), "RETINA");
    }
}
