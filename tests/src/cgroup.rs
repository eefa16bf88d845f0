//! cgroup v2 directories owned by a test.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nodemesh_agent::datapath::{Cgroup2, cgroup_id};

/// A cgroup directory made by the test, removed on drop with everything in
/// it: processes are killed, child cgroups removed depth first.
pub struct TestCgroup {
    path: PathBuf,
}

impl TestCgroup {
    /// Creates `<cgroup2 mount>/<name>`.
    pub fn new_root(name: &str) -> Self {
        let cg = Cgroup2::detect().expect("cgroup v2 must be mounted for the end-to-end tests");
        Self::create(cg.mount.join(name))
    }

    /// Creates a child cgroup; it is removed with its parent.
    pub fn child(&self, name: &str) -> PathBuf {
        let p = self.path.join(name);
        std::fs::create_dir_all(&p)
            .unwrap_or_else(|e| panic!("creating cgroup {}: {e}", p.display()));
        p
    }

    fn create(path: PathBuf) -> Self {
        std::fs::create_dir(&path)
            .unwrap_or_else(|e| panic!("creating cgroup {}: {e}", path.display()));
        TestCgroup { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The kernel's id for it.
    pub fn id(&self) -> u64 {
        cgroup_id(&self.path).expect("cgroup id")
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        remove_tree(&self.path);
    }
}

/// Kills every process in `dir` and its children, then removes them.
pub fn remove_tree(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&e.path());
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        let pids: Vec<i32> = procs
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        if pids.is_empty() || Instant::now() > deadline {
            break;
        }
        for pid in pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = std::fs::remove_dir(dir);
}

/// Moves the calling process into `dir`.
pub fn enter(dir: &Path) {
    std::fs::write(dir.join("cgroup.procs"), "0")
        .unwrap_or_else(|e| panic!("joining cgroup {}: {e}", dir.display()));
}

/// Puts the calling process into a cgroup for the guard's life and moves it
/// back where it was on drop (before the cgroup is removed).
pub struct Joined {
    previous: PathBuf,
}

impl Joined {
    /// Joins `dir`.
    pub fn new(dir: &Path) -> Self {
        let cg = Cgroup2::detect().expect("cgroup v2");
        let previous = cg.own_cgroup().expect("own cgroup");
        enter(dir);
        Joined { previous }
    }
}

impl Drop for Joined {
    fn drop(&mut self) {
        let _ = std::fs::write(self.previous.join("cgroup.procs"), "0");
    }
}
