//! `cargo xtask demo`: builds what the demo needs (the kernel programs, the
//! agent, the sample app) and runs `bookinfo-demo`, which creates a
//! two-node mesh of network namespaces on this machine, drives the
//! Bookinfo-like sample app through it and prints what the mesh did.
//!
//! The demo removes everything it made on exit, on Ctrl-C and on SIGTERM;
//! `--keep` leaves it running until Ctrl-C.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::{build_ebpf, cmd};

/// Options of `cargo xtask demo`.
#[derive(clap::Args)]
pub struct Options {
    /// Leave the cluster and agents running after the report, until Ctrl-C.
    #[arg(long)]
    pub keep: bool,
    /// Requests the load generator sends to the frontend.
    #[arg(long, default_value_t = 600)]
    pub requests: usize,
    /// Also write the measured claims as JSON to this file.
    #[arg(long)]
    pub summary: Option<PathBuf>,
    /// Skip the builds (use the binaries already in the target directory).
    #[arg(long)]
    pub no_build: bool,
}

/// The last signal xtask received while the demo ran, forwarded to it.
static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    SIGNAL.store(sig, Ordering::SeqCst);
}

/// Builds, then runs the demo and waits for it, passing signals on.
pub fn run(opts: &Options) -> anyhow::Result<()> {
    if !cmd::is_root() {
        bail!(
            "the demo needs root (network namespaces, cgroups, BPF): run `sudo -E cargo xtask demo`"
        );
    }
    if !opts.no_build {
        build_ebpf::run(&build_ebpf::Options::default())?;
        cmd::cargo(&["build", "-p", "nodemesh-agent", "--bin", "nodemesh"])?;
        cmd::cargo(&["build", "-p", "nodemesh-bookinfo", "--bins"])?;
    }
    let bin_dir = cmd::target_dir().join("debug");
    let mut demo = Command::new(bin_dir.join("bookinfo-demo"));
    demo.env("NODEMESH_BIN", bin_dir.join("nodemesh"))
        .args(["--requests", &opts.requests.to_string()]);
    if opts.keep {
        demo.arg("--keep");
    }
    if let Some(summary) = &opts.summary {
        demo.arg("--summary").arg(summary);
    }
    // Ctrl-C reaches the demo directly (same process group); xtask stays
    // alive until the demo has cleaned up, and forwards SIGTERM and SIGHUP.
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic.
        unsafe {
            libc::signal(
                sig,
                on_signal as extern "C" fn(libc::c_int) as *const () as libc::sighandler_t,
            )
        };
    }
    let mut child = demo
        .spawn()
        .with_context(|| format!("starting {}", cmd::display(&demo)))?;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        let sig = SIGNAL.swap(0, Ordering::SeqCst);
        if sig != 0 && sig != libc::SIGINT {
            // SAFETY: plain kill(2) on the child this process started.
            unsafe { libc::kill(child.id() as libc::pid_t, sig) };
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if status.code() == Some(130) {
        // Stopped by a signal; the demo has said so and cleaned up.
        std::process::exit(130);
    }
    if !status.success() {
        bail!("the demo failed: {status}");
    }
    Ok(())
}
