//! Test topologies for nodemesh's end-to-end tests.
//!
//! A *node* is a network namespace with a bridge and a cgroup; a *pod* is a
//! network namespace wired to its node's bridge by a veth pair, with its own
//! child cgroup of the node's. Pod processes run from the `nm-pod` helper
//! binary, placed in the pod's cgroup and network namespace before they
//! start. Every namespace, cgroup and process is owned by a guard that
//! removes it on drop, so a failing test leaves nothing behind.
//!
//! Nothing here touches the host network namespace: all addresses live in
//! namespaces the test made.

pub mod agent;
pub mod capture;
pub mod cgroup;
pub mod kube_api;
pub mod mesh;
pub mod netns;
pub mod pod;
pub mod refusal;
pub mod topology;

pub use cgroup::TestCgroup;
pub use netns::NetNs;
pub use pod::{PodProcess, pod_binary};
pub use topology::{Cluster, Node, Pod};

/// Panics unless the tests run as root: they must fail, never skip, without privileges.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the end-to-end tests need root (network namespaces, cgroups, BPF); run them through `sudo -E cargo xtask test`"
    );
}

/// A name unique to this process and call, short enough for interface and namespace names.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{}x{}",
        std::process::id() % 100_000,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Reads like an event loop does: `EAGAIN` means "wait until readable and
/// read again". Sockets in a sockmap can return `EAGAIN` from a blocking
/// read when woken without sockmap data, which event-loop applications
/// (epoll, tokio, Go, nginx) absorb and blocking ones do not.
pub fn read_ready(conn: &mut std::net::TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    use std::io::Read as _;
    use std::os::fd::AsFd as _;
    loop {
        match conn.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let mut fds = [nix::poll::PollFd::new(
                    conn.as_fd(),
                    nix::poll::PollFlags::POLLIN,
                )];
                nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(60_000u16))
                    .map_err(std::io::Error::from)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            r => return r,
        }
    }
}

/// The `nodemesh` binary: `$NODEMESH_BIN` if set, else beside the test
/// binary's profile directory (`cargo xtask test` builds it first).
pub fn nodemesh_binary() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("NODEMESH_BIN") {
        return p.into();
    }
    let pod = pod::pod_binary();
    let bin = pod.with_file_name("nodemesh");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p nodemesh-agent` first (`cargo xtask test` does)",
        bin.display()
    );
    bin
}

/// The process id encoded in a name made by [`unique`] (`<prefix><pid>x<n>`).
fn owner_pid(name: &str, prefix: &str) -> Option<i32> {
    name.strip_prefix(prefix)?.split('x').next()?.parse().ok()
}

/// Removes what test processes that died without unwinding (killed by a
/// timeout, SIGKILL) left behind: their cgroup trees and network
/// namespaces. Only names whose owning process no longer exists are touched,
/// so concurrent runs are safe. [`Cluster::new`] calls it.
pub fn sweep_stale() {
    let dead = |pid: i32| !std::path::Path::new(&format!("/proc/{pid}")).exists();
    if let Ok(cg) = nodemesh_agent::datapath::Cgroup2::detect()
        && let Ok(entries) = std::fs::read_dir(&cg.mount)
    {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if owner_pid(&name, "nodemesh-test-").is_some_and(dead) {
                cgroup::remove_tree(&e.path());
            }
        }
    }
    for name in netns::existing() {
        if ["nmn", "nmp"]
            .iter()
            .any(|p| owner_pid(&name, p).is_some_and(dead))
        {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &name])
                .status();
        }
    }
}

/// A cgroup's path relative to the cgroup2 mount, as the
/// `nodemesh.io/cgroup` annotation names it.
pub fn rel_cgroup(path: &std::path::Path) -> String {
    let mount = nodemesh_agent::datapath::Cgroup2::detect()
        .expect("cgroup v2 is mounted")
        .mount;
    path.strip_prefix(&mount)
        .expect("test cgroups live under the cgroup2 mount")
        .display()
        .to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn owner_pid_reads_unique_names() {
        let name = super::unique("nmn");
        assert_eq!(
            super::owner_pid(&name, "nmn"),
            Some(std::process::id() as i32)
        );
        assert_eq!(
            super::owner_pid("nodemesh-test-42x3", "nodemesh-test-"),
            Some(42)
        );
        assert_eq!(super::owner_pid("other", "nmn"), None);
    }
}
