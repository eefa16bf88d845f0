//! Real `nodemesh agent` processes running on test nodes.

use std::fs::OpenOptions;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd as _, BorrowedFd};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Node, nodemesh_binary};

/// Where every test agent serves its admin endpoint, inside its node's namespace.
pub const ADMIN: &str = "127.0.0.1:15000";

/// A `nodemesh agent` in a node's network namespace and agent cgroup,
/// killed on drop.
pub struct AgentProcess {
    child: Child,
    netns: std::fs::File,
}

impl AgentProcess {
    /// Starts the agent with `args` (after `agent`) and waits until `/ready`.
    pub fn start(node: &Node, args: &[&str]) -> Self {
        Self::start_with_env(node, args, &[])
    }

    /// [`AgentProcess::start`] with extra environment variables.
    pub fn start_with_env(node: &Node, args: &[&str], env: &[(&str, &str)]) -> Self {
        let procs = OpenOptions::new()
            .write(true)
            .open(node.agent_cgroup.join("cgroup.procs"))
            .expect("agent cgroup");
        let netns = node.netns.file();
        let ns_for_child = node.netns.file();
        let mut cmd = Command::new(nodemesh_binary());
        cmd.arg("agent")
            .args(["--cgroup"])
            .arg(&node.cgroup)
            .args(["--admin-addr", ADMIN])
            .args(args);
        cmd.stdout(Stdio::null()).stderr(Stdio::inherit());
        cmd.env(
            "NODEMESH_LOG",
            std::env::var("NODEMESH_LOG").unwrap_or_else(|_| "info".into()),
        );
        cmd.envs(env.iter().copied());
        // SAFETY: only system calls on descriptors opened before fork.
        unsafe {
            cmd.pre_exec(move || {
                let mut f = &procs;
                f.write_all(b"0")?;
                let ns = BorrowedFd::borrow_raw(ns_for_child.as_raw_fd());
                nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(std::io::Error::from)?;
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawning nodemesh agent");
        let mut agent = AgentProcess { child, netns };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !agent
            .get("/ready")
            .is_some_and(|r| r.starts_with("HTTP/1.1 200"))
        {
            assert!(
                agent.child.try_wait().unwrap().is_none(),
                "agent exited during start-up"
            );
            assert!(Instant::now() < deadline, "agent not ready within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        agent
    }

    /// GETs `path` from the agent's admin endpoint (from inside its namespace).
    pub fn get(&self, path: &str) -> Option<String> {
        let ns = self.netns.try_clone().ok()?;
        let path = path.to_string();
        std::thread::spawn(move || {
            use std::os::fd::AsFd as _;
            nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).ok()?;
            let addr: SocketAddr = ADMIN.parse().ok()?;
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            write!(
                s,
                "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
            )
            .ok()?;
            let mut out = String::new();
            s.read_to_string(&mut out).ok()?;
            Some(out)
        })
        .join()
        .ok()
        .flatten()
    }

    /// GETs `path` and parses its JSON body (`Null` if the agent did not
    /// answer or the body is not JSON).
    pub fn get_json(&self, path: &str) -> serde_json::Value {
        let response = self.get(path).unwrap_or_default();
        let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null)
    }

    /// Polls `path` until `pred` holds, or panics after `timeout`.
    pub fn wait_for(&self, path: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let body = self.get(path).unwrap_or_default();
            if pred(&body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "{path} never matched; last: {body}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `nodemesh ca init` into `dir`.
pub fn ca_init(dir: &Path) {
    let out = Command::new(nodemesh_binary())
        .args(["ca", "init", "--dir"])
        .arg(dir)
        .output()
        .expect("running nodemesh ca init");
    assert!(
        out.status.success(),
        "ca init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
