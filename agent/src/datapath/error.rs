//! Errors of the kernel datapath, each naming what failed and what to do.

use std::path::PathBuf;

/// What can go wrong loading, attaching or programming the kernel programs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No cgroup v2 hierarchy is mounted.
    #[error(
        "no cgroup v2 hierarchy is mounted (looked in /proc/self/mountinfo): mount one with `mount -t cgroup2 none /sys/fs/cgroup`, or boot with systemd.unified_cgroup_hierarchy=1"
    )]
    NoCgroup2,
    /// The cgroup path given does not exist or is not in the cgroup v2 hierarchy.
    #[error(
        "cgroup {path} is not a directory of the cgroup v2 hierarchy mounted at {mount}: pass an existing cgroup v2 directory with --cgroup"
    )]
    BadCgroup {
        /// The path given.
        path: PathBuf,
        /// Where cgroup v2 is mounted.
        mount: PathBuf,
    },
    /// The process lacks the privileges BPF needs.
    #[error(
        "{what}: operation not permitted: the agent needs CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN (run as root, or as a privileged DaemonSet)"
    )]
    NotPermitted {
        /// What was being done.
        what: String,
    },
    /// The agent was built without the kernel programs.
    #[error(
        "this binary was built without the kernel programs (a clippy/check build): run `cargo xtask build-ebpf` and rebuild, or set NODEMESH_BPF_OBJECT to a built object"
    )]
    NoObject,
    /// Reading an alternate object file failed.
    #[error("reading the BPF object {path}: {source}")]
    ReadObject {
        /// The file named by NODEMESH_BPF_OBJECT.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The kernel lacks a feature something asked for needs.
    #[error("kernel {release} lacks {feature}, which {needed_by}: {instead}; see `nodemesh check`")]
    Unsupported {
        /// `uname -r`.
        release: String,
        /// What the kernel lacks.
        feature: &'static str,
        /// What needs it, and why.
        needed_by: &'static str,
        /// What can run instead.
        instead: &'static str,
    },
    /// The kernel refused the object or one of its programs.
    #[error("loading the kernel programs: {}", chain(source.as_ref()))]
    Load {
        /// aya's error (includes the verifier log when the verifier refused).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A program could not be attached.
    #[error("attaching {program} to {target}: {}", chain(source.as_ref()))]
    Attach {
        /// The program name.
        program: &'static str,
        /// Where it was attached.
        target: String,
        /// aya's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A map is missing from the object (object and agent disagree).
    #[error(
        "map {0} is missing from the BPF object: the object does not match this agent; rebuild both"
    )]
    MissingMap(&'static str),
    /// A program is missing from the object (object and agent disagree).
    #[error(
        "program {0} is missing from the BPF object: the object does not match this agent; rebuild both"
    )]
    MissingProgram(&'static str),
    /// A map is full.
    #[error(
        "map {map} is full ({capacity} entries): reduce the number of {what} on this node, or raise the limit"
    )]
    MapFull {
        /// The map name.
        map: &'static str,
        /// Its capacity.
        capacity: u32,
        /// What the entries stand for.
        what: &'static str,
    },
    /// Any other map operation failure.
    #[error("updating map {map}: {}", chain(source))]
    Map {
        /// The map name.
        map: &'static str,
        /// aya's error.
        #[source]
        source: aya::maps::MapError,
    },
    /// A service was given an invalid backend set.
    #[error("service {service}: {reason}")]
    InvalidService {
        /// The service's address.
        service: String,
        /// Why it was refused.
        reason: String,
    },
    /// A file system operation on cgroups or /proc failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl Error {
    /// Wraps an I/O error with what was being done.
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}

/// Whether an error chain bottoms out in EPERM (missing privileges).
///
/// A verifier rejection is never a permission problem, even though the
/// kernel reports some of them as EACCES: those carry the verifier log.
pub(crate) fn is_permission(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(aya::programs::ProgramError::LoadError { .. }) =
            e.downcast_ref::<aya::programs::ProgramError>()
        {
            return false;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.raw_os_error() == Some(libc::EPERM)
        {
            return true;
        }
        cur = e.source();
    }
    false
}

/// An error and its causes, joined with ": ".
pub(crate) fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let msg = e.to_string();
        if !s.contains(&msg) {
            s.push_str(": ");
            s.push_str(&msg);
        }
        cur = e.source();
    }
    s
}
