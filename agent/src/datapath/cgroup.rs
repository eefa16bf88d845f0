//! Finding the cgroup v2 hierarchy and the cgroups in it.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use super::Error;

/// The cgroup v2 hierarchy of this machine.
#[derive(Clone, Debug)]
pub struct Cgroup2 {
    /// Where it is mounted (`/sys/fs/cgroup` on most nodes, `/sys/fs/cgroup/unified` in hybrid layouts).
    pub mount: PathBuf,
}

impl Cgroup2 {
    /// Finds the cgroup v2 mount in `/proc/self/mountinfo`.
    pub fn detect() -> Result<Self, Error> {
        let info = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| Error::io("reading /proc/self/mountinfo", e))?;
        Self::from_mountinfo(&info).ok_or(Error::NoCgroup2)
    }

    /// Parses mountinfo text; the first cgroup2 mount wins.
    pub fn from_mountinfo(info: &str) -> Option<Self> {
        info.lines().find_map(|line| {
            // Fields: id parent major:minor root mount-point options... - fstype source super-options
            let (pre, post) = line.split_once(" - ")?;
            let fstype = post.split_whitespace().next()?;
            if fstype != "cgroup2" {
                return None;
            }
            let mount = pre.split_whitespace().nth(4)?;
            Some(Cgroup2 {
                mount: PathBuf::from(unescape(mount)),
            })
        })
    }

    /// Resolves a cgroup given as an absolute path or relative to the mount,
    /// checking it exists inside the hierarchy.
    pub fn resolve(&self, path: &Path) -> Result<PathBuf, Error> {
        let full = if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.mount.join(path)
        };
        let bad = || Error::BadCgroup {
            path: full.clone(),
            mount: self.mount.clone(),
        };
        if !full.starts_with(&self.mount) || !full.join("cgroup.procs").exists() {
            return Err(bad());
        }
        Ok(full)
    }

    /// The cgroup of the calling process (from `/proc/self/cgroup`).
    pub fn own_cgroup(&self) -> Result<PathBuf, Error> {
        let text = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| Error::io("reading /proc/self/cgroup", e))?;
        let rel = text
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .ok_or(Error::NoCgroup2)?;
        Ok(self.mount.join(rel.trim_start_matches('/')))
    }
}

/// The id the kernel gives a cgroup: the inode number of its directory
/// (what `bpf_get_current_cgroup_id()` returns).
pub fn cgroup_id(path: &Path) -> Result<u64, Error> {
    std::fs::metadata(path)
        .map(|m| m.ino())
        .map_err(|e| Error::io(format!("reading cgroup {}", path.display()), e))
}

/// mountinfo escapes spaces and a few other bytes as `\ooo`.
fn unescape(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_unified_mount_in_hybrid_layout() {
        let info = "\
25 1 0:23 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
26 25 0:24 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
30 25 0:28 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
        let cg = Cgroup2::from_mountinfo(info).unwrap();
        assert_eq!(cg.mount, PathBuf::from("/sys/fs/cgroup/unified"));
    }

    #[test]
    fn no_cgroup2_is_none() {
        let info = "26 25 0:24 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
        assert!(Cgroup2::from_mountinfo(info).is_none());
    }

    #[test]
    fn unescapes_spaces() {
        assert_eq!(unescape("/mnt/with\\040space"), "/mnt/with space");
    }

    #[test]
    fn resolve_rejects_paths_outside_the_mount() {
        let cg = Cgroup2 {
            mount: PathBuf::from("/nonexistent-cgroup-root"),
        };
        let err = cg.resolve(Path::new("/tmp")).unwrap_err();
        assert!(err.to_string().contains("--cgroup"), "{err}");
    }
}
