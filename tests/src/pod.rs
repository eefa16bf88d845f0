//! Processes running inside a pod: the `nm-pod` helper binary, placed in
//! the pod's cgroup and network namespace before it execs.

use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::fd::{AsRawFd as _, BorrowedFd};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

/// The `nm-pod` helper binary: `$NODEMESH_TEST_BIN_DIR/nm-pod` if set (VM
/// runs), else beside the `deps/` directory holding the running test binary,
/// where cargo puts the crate's binaries.
pub fn pod_binary() -> PathBuf {
    if let Some(dir) = std::env::var_os("NODEMESH_TEST_BIN_DIR") {
        return PathBuf::from(dir).join("nm-pod");
    }
    let exe = std::env::current_exe().expect("path of the test binary");
    let deps = exe.parent().expect("test binary has a directory");
    let profile = if deps.ends_with("deps") {
        deps.parent().unwrap_or(deps)
    } else {
        deps
    };
    let bin = profile.join("nm-pod");
    assert!(
        bin.exists(),
        "{} is missing: build the tests with cargo (it builds nm-pod too)",
        bin.display()
    );
    bin
}

/// Builds a command that runs `nm-pod <args>` in a cgroup and network namespace.
pub fn command(cgroup: &Path, netns: File, args: &[&str]) -> Command {
    command_for(&pod_binary(), cgroup, netns, args)
}

/// Builds a command that runs `program <args>` in a cgroup and network
/// namespace: the process joins both before it execs.
pub fn command_for(program: &Path, cgroup: &Path, netns: File, args: &[&str]) -> Command {
    let procs = OpenOptions::new()
        .write(true)
        .open(cgroup.join("cgroup.procs"))
        .unwrap_or_else(|e| panic!("opening {}/cgroup.procs: {e}", cgroup.display()));
    let mut cmd = Command::new(program);
    cmd.args(args);
    // SAFETY: the closure only makes async-signal-safe system calls on
    // descriptors opened before fork.
    unsafe {
        cmd.pre_exec(move || {
            let mut f = &procs;
            f.write_all(b"0")?;
            let ns = BorrowedFd::borrow_raw(netns.as_raw_fd());
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    cmd
}

/// A running pod process, killed on drop.
pub struct PodProcess {
    child: Child,
    stdout: BufReader<ChildStdout>,
}

impl PodProcess {
    /// Starts a long-running server and waits until it prints `READY`.
    pub fn start_server(mut cmd: Command) -> Self {
        cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawning nm-pod");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("reading nm-pod output");
        assert_eq!(line.trim(), "READY", "nm-pod server did not start");
        PodProcess { child, stdout }
    }

    /// Reads the next line the process prints.
    pub fn read_line(&mut self) -> String {
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .expect("reading nm-pod output");
        line
    }
}

impl Drop for PodProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a pod command to completion (bounded by `timeout`) and parses the
/// JSON it prints on its last line.
pub fn run_json(cmd: Command, timeout: Duration) -> serde_json::Value {
    let out = output_within(cmd, timeout);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| {
        panic!(
            "nm-pod printed no JSON ({e}); status {}; stdout: {stdout}; stderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Runs `cmd` to completion with its output captured; kills it and panics
/// if it has not exited within `timeout`.
pub fn output_within(mut cmd: Command, timeout: Duration) -> std::process::Output {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let program = cmd.get_program().to_string_lossy().into_owned();
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {program}: {e}"));
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => out.unwrap_or_else(|e| panic!("waiting for {program}: {e}")),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("{program} did not finish within {timeout:?}");
        }
    }
}
