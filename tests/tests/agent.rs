//! The `nodemesh` binary end to end: the agent attaches, serves health and
//! metrics, detaches on SIGTERM; `nodemesh check` reports a healthy node and
//! names the fix for a broken one; bad input fails with a clear message.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nodemesh_tests::{Cluster, nodemesh_binary};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn get(addr: SocketAddr, path: &str) -> Option<String> {
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
}

/// Starts `nodemesh agent` inside `cgroup` (so its own sockets meet the programs).
fn spawn_agent(cgroup: &Path, attach: &Path, admin: SocketAddr) -> Child {
    let procs = cgroup.join("cgroup.procs");
    let mut cmd = Command::new(nodemesh_binary());
    cmd.args(["agent", "--cgroup"])
        .arg(attach)
        .args(["--admin-addr", &admin.to_string()]);
    cmd.stdout(Stdio::null()).stderr(Stdio::inherit());
    // SAFETY: only a file write happens between fork and exec.
    unsafe {
        cmd.pre_exec(move || std::fs::write(&procs, "0"));
    }
    cmd.spawn().expect("spawning nodemesh agent")
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn count_programs(name: &str) -> usize {
    aya::programs::loaded_programs()
        .filter_map(|p| p.ok())
        .filter(|p| p.name_as_str() == Some(name))
        .count()
}

#[test]
fn agent_attaches_serves_health_and_metrics_and_detaches_on_sigterm() {
    let cluster = Cluster::new(1);
    let node = &cluster.nodes[0];
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let before = count_programs("connect4");
    let mut agent = Killed(spawn_agent(&node.agent_cgroup, &node.cgroup, admin));

    let deadline = Instant::now() + Duration::from_secs(20);
    while get(admin, "/ready").is_none_or(|r| !r.starts_with("HTTP/1.1 200")) {
        assert!(Instant::now() < deadline, "agent never became ready");
        assert!(agent.0.try_wait().unwrap().is_none(), "agent exited early");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        count_programs("connect4"),
        before + 1,
        "the agent's connect4 is loaded"
    );
    let metrics = get(admin, "/metrics").unwrap();
    assert!(
        metrics.contains("nodemesh_datapath_events_total{event=\"service_translated\"}"),
        "{metrics}"
    );
    let debug = get(admin, "/debug/datapath").unwrap();
    assert!(debug.contains("\"connect\": true"), "{debug}");

    let out = Command::new(nodemesh_binary())
        .args(["check", "--cgroup"])
        .arg(&node.cgroup)
        .args(["--admin-addr", &admin.to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "check is all green on this machine:\n{text}"
    );
    assert!(!text.contains('✘'), "{text}");
    assert!(
        text.contains("✔ program type sk_msg") && text.contains("✔ agent ready"),
        "{text}"
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = agent.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "agent did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "clean exit on SIGTERM: {status}");
    assert_eq!(
        count_programs("connect4"),
        before,
        "programs detached and unloaded"
    );
}

#[test]
fn check_names_the_fix_for_a_wrong_cgroup() {
    let out = Command::new(nodemesh_binary())
        .args([
            "check",
            "--pre",
            "--cgroup",
            "/sys/fs/cgroup/definitely/not/here",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("✘ attach cgroup"), "{text}");
    assert!(text.contains("fix:") && text.contains("--cgroup"), "{text}");
}

#[test]
fn agent_refuses_a_missing_cgroup_with_a_clear_error() {
    let out = Command::new(nodemesh_binary())
        .args([
            "agent",
            "--cgroup",
            "/sys/fs/cgroup/definitely/not/here",
            "--admin-addr",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("definitely/not/here") && err.contains("--cgroup"),
        "{err}"
    );
}

#[test]
fn agent_without_privileges_says_which_and_how_to_fix() {
    let mut cmd = Command::new(nodemesh_binary());
    cmd.args(["agent", "--admin-addr", "127.0.0.1:0"]);
    // SAFETY: only setgid/setuid happen between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setgid(nix::unistd::Gid::from_raw(65534)).map_err(std::io::Error::from)?;
            nix::unistd::setuid(nix::unistd::Uid::from_raw(65534)).map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("operation not permitted") && err.contains("CAP_BPF"),
        "{err}"
    );
}
