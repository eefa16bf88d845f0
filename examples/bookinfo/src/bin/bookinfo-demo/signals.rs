//! Ctrl-C, SIGTERM and SIGHUP: the handler only sets a flag; a watcher
//! thread then kills the demo's own processes (everything in the demo
//! cluster's cgroup), so whatever the main thread waits on returns, and the
//! guards remove the cluster as the stack unwinds.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

static CANCELLED: AtomicBool = AtomicBool::new(false);
static CLUSTER_CGROUP: Mutex<Option<PathBuf>> = Mutex::new(None);

extern "C" fn on_signal(_: nix::libc::c_int) {
    CANCELLED.store(true, Ordering::SeqCst);
}

/// Installs the handlers and starts the watcher. With `deadline`, the demo
/// cancels itself once that much time has passed.
pub fn install(deadline: Option<Duration>) -> anyhow::Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { sigaction(sig, &action) }?;
    }
    let started = Instant::now();
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_millis(100));
            if deadline.is_some_and(|d| started.elapsed() > d) && !cancelled() {
                eprintln!(
                    "bookinfo-demo: still running after {}s; stopping",
                    started.elapsed().as_secs()
                );
                CANCELLED.store(true, Ordering::SeqCst);
            }
            if cancelled() {
                if let Some(dir) = CLUSTER_CGROUP.lock().ok().and_then(|g| g.clone()) {
                    kill_tree(&dir);
                }
                return;
            }
        }
    });
    Ok(())
}

/// Records the cluster's cgroup: on a signal, its processes are killed.
pub fn watch_cgroup(dir: &Path) {
    if let Ok(mut g) = CLUSTER_CGROUP.lock() {
        *g = Some(dir.to_path_buf());
    }
}

/// Whether a signal (or the deadline) asked the demo to stop.
pub fn cancelled() -> bool {
    CANCELLED.load(Ordering::SeqCst)
}

/// Fails once the demo was asked to stop.
pub fn check() -> anyhow::Result<()> {
    if cancelled() {
        bail!("interrupted");
    }
    Ok(())
}

/// SIGKILLs every process in `dir` and its child cgroups (all started by
/// the demo); the cgroups themselves are removed by the cluster's guard.
fn kill_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                kill_tree(&e.path());
            }
        }
    }
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
    }
}
