//! Network namespaces owned by a test.

use std::fs::File;
use std::os::fd::AsFd as _;
use std::process::Command;

/// A named network namespace (`ip netns add`), deleted on drop.
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates the namespace and brings its loopback up.
    pub fn new(name: &str) -> Self {
        run("ip", &["netns", "add", name]);
        let ns = NetNs {
            name: name.to_string(),
        };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace file, for setns(2).
    pub fn file(&self) -> File {
        File::open(format!("/var/run/netns/{}", self.name))
            .unwrap_or_else(|e| panic!("opening netns {}: {e}", self.name))
    }

    /// Runs `ip -n <ns> <args>`, panicking on failure.
    pub fn ip(&self, args: &[&str]) {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run("ip", &full);
    }

    /// Runs a shell command inside the namespace.
    pub fn sh(&self, script: &str) {
        run("ip", &["netns", "exec", &self.name, "sh", "-c", script]);
    }

    /// Runs `f` on a thread that has entered this namespace; sockets it
    /// creates stay in the namespace.
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let file = self.file();
        std::thread::spawn(move || {
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("setns into test netns");
            f()
        })
        .join()
        .expect("thread in netns panicked")
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Runs a command, panicking with its output if it fails.
pub fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {cmd}: {e} (is iproute2 installed?)"));
    assert!(
        out.status.success(),
        "{cmd} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Names of the network namespaces that currently exist.
pub fn existing() -> Vec<String> {
    std::fs::read_dir("/var/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}
