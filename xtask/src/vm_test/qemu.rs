//! Booting a kernel and its initramfs in qemu, with the serial console
//! streamed to the terminal and to a log file, under a deadline.

use std::fs::File;
use std::io::{BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::cmd;

/// What a boot produced.
pub struct Boot {
    /// The whole serial console output.
    pub serial: String,
    /// Whether the deadline passed and qemu was killed.
    pub timed_out: bool,
    /// Wall time from qemu's start to its exit (or kill).
    pub elapsed: Duration,
}

/// How to boot one guest.
pub struct Guest<'a> {
    /// The kernel image.
    pub vmlinuz: &'a Path,
    /// The initramfs.
    pub initrd: &'a Path,
    /// Where the serial console is written.
    pub log: &'a Path,
    /// Prefix of console lines echoed to the terminal.
    pub label: &'a str,
    /// How long the guest may run.
    pub timeout: Duration,
    /// Extra kernel command-line parameters (after the defaults, so they win).
    pub kernel_args: &'a [String],
}

/// The accelerator to use: KVM only where it can run a stock kernel.
///
/// `/dev/kvm` alone proves nothing: on hosts whose KVM is a paravirtual
/// variant (`kvm_pvm`) it opens fine but stock kernels hang or abort, and
/// qemu never falls back to TCG. KVM is used only if `/dev/kvm` is writable
/// and a hardware KVM module (`kvm_intel`, `kvm_amd`) is loaded.
pub fn accelerator() -> &'static str {
    let writable = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    let hardware =
        Path::new("/sys/module/kvm_intel").exists() || Path::new("/sys/module/kvm_amd").exists();
    if writable && hardware { "kvm" } else { "tcg" }
}

/// The kernel command line: serial console, and a panic ends the VM at once
/// (`panic=-1` reboots, which `-no-reboot` turns into qemu exiting).
fn command_line(extra: &[String]) -> String {
    let mut line = String::from("console=ttyS0 panic=-1 oops=panic quiet loglevel=4 rdinit=/init");
    for arg in extra {
        line.push(' ');
        line.push_str(arg);
    }
    line
}

/// Boots the guest and waits for it to power off or for the deadline.
pub fn boot(guest: &Guest<'_>) -> anyhow::Result<Boot> {
    let accel = accelerator();
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(["-accel", accel]);
    if accel == "kvm" {
        qemu.args(["-cpu", "host"]);
    }
    qemu.args([
        "-m",
        "2G",
        "-smp",
        "2",
        "-nographic",
        "-no-reboot",
        "-nodefaults",
        "-serial",
        "stdio",
    ])
    .args(["-monitor", "none"])
    .arg("-kernel")
    .arg(guest.vmlinuz)
    .arg("-initrd")
    .arg(guest.initrd)
    .arg("-append")
    .arg(command_line(guest.kernel_args))
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    eprintln!("+ {}", cmd::display(&qemu));
    let start = Instant::now();
    let mut child = qemu
        .spawn()
        .with_context(|| format!("starting {}", cmd::display(&qemu)))?;

    let mut log =
        File::create(guest.log).with_context(|| format!("creating {}", guest.log.display()))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let tx_err = tx.clone();
    std::thread::spawn(move || forward_lines(BufReader::new(stdout), &tx));
    std::thread::spawn(move || forward_lines(BufReader::new(stderr), &tx_err));

    let mut serial = String::new();
    let mut timed_out = false;
    loop {
        let left = guest.timeout.saturating_sub(start.elapsed());
        match rx.recv_timeout(left.min(Duration::from_millis(200))) {
            Ok(line) => {
                eprintln!("[{}] {line}", guest.label);
                writeln!(log, "{line}")?;
                serial.push_str(&line);
                serial.push('\n');
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        if start.elapsed() >= guest.timeout {
            timed_out = true;
            let _ = child.kill();
            let line = format!(
                "NODEMESH-VM-HOST: timed out after {} s, qemu killed",
                guest.timeout.as_secs()
            );
            eprintln!("[{}] {line}", guest.label);
            writeln!(log, "{line}")?;
            serial.push_str(&line);
            serial.push('\n');
            break;
        }
    }
    child.wait().context("waiting for qemu")?;
    // Lines that arrived between the kill and the pipes closing.
    for line in rx.try_iter() {
        writeln!(log, "{line}")?;
        serial.push_str(&line);
        serial.push('\n');
    }
    Ok(Boot {
        serial,
        timed_out,
        elapsed: start.elapsed(),
    })
}

/// Sends each line (without `\r`, invalid UTF-8 replaced) until end of input.
fn forward_lines(mut reader: impl std::io::BufRead, tx: &std::sync::mpsc::Sender<String>) {
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let line = strip_escapes(&String::from_utf8_lossy(&buf));
                if tx.send(line).is_err() {
                    return;
                }
            }
        }
    }
}

/// A console line without its line ending, carriage returns and terminal
/// escape sequences (SeaBIOS clears the screen with them).
fn strip_escapes(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                // CSI: ESC [ parameters final-byte; other escapes: ESC and one character.
                if chars.peek() == Some(&'[') {
                    chars.next();
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

/// `target/vm-test`, where logs and initramfs images go.
pub fn output_dir() -> PathBuf {
    cmd::target_dir().join("vm-test")
}

#[cfg(test)]
mod tests {
    use super::strip_escapes;

    #[test]
    fn escapes_and_line_endings_are_removed() {
        assert_eq!(
            strip_escapes("\u{1b}c\u{1b}[?7l\u{1b}[2JSeaBIOS\r\n"),
            "SeaBIOS"
        );
        assert_eq!(strip_escapes("plain line\n"), "plain line");
    }
}
