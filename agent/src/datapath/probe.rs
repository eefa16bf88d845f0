//! Probing the running kernel for what the datapath needs.
//!
//! Each program and map type is probed for real (a minimal load into the
//! kernel), not inferred from the version number. The agent turns the
//! report into the feature set it can offer: without sockmap support it runs
//! without same-node acceleration, without sockops it also loses L4 metrics
//! and the mesh, without IPv6 it serves IPv4 only, and without cgroup
//! sock_addr programs it cannot run at all.
//!
//! A probe the kernel refuses with `EPERM` counts as missing, as a security
//! policy refusing one program type makes it; only when the core probes are
//! refused so does the report say the agent lacks privileges.

use std::path::Path;

use aya::maps::MapType;
use aya::programs::ProgramType;
use aya::sys::{is_map_supported, is_program_supported};
use serde::Serialize;

/// The oldest kernel nodemesh supports: `getpeername` hooks arrived in 5.8,
/// and 5.10 is the oldest long-term kernel with them.
pub const MIN_KERNEL: (u32, u32) = (5, 10);

/// One probed capability.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// What was probed.
    pub name: String,
    /// Whether the kernel has it.
    pub ok: bool,
    /// Whether the agent cannot run without it; a missing optional
    /// capability only turns a feature off.
    pub required: bool,
    /// What is lost, or how to fix it, when it is missing.
    pub fix: String,
}

/// Which datapath features this kernel can run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Features {
    /// Service translation, redirect and policy (cgroup/connect4/6).
    pub connect: bool,
    /// getpeername4/6 rewriting.
    pub peername: bool,
    /// sockops-based L4 metrics and original-destination hand-off.
    pub sockops: bool,
    /// Same-node acceleration (sockhash + sk_msg).
    pub sockmap: bool,
    /// IPv6 sockets (the kernel has IPv6, not disabled at boot): without it
    /// the IPv6 hooks are not attached.
    pub ipv6: bool,
}

/// Everything [`probe_kernel`] found.
#[derive(Clone, Debug, Serialize)]
pub struct KernelReport {
    /// The kernel refused the core probes with `EPERM`: the agent lacks
    /// privileges (so every capability below reads as missing).
    pub permission_denied: bool,
    /// `uname -r`.
    pub release: String,
    /// Every check, in order.
    pub checks: Vec<Check>,
    /// The features the checks allow.
    pub features: Features,
}

/// Probes the kernel.
pub fn probe_kernel() -> KernelReport {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let mut checks = Vec::new();
    let version_ok = parse_release(&release).is_some_and(|v| v >= MIN_KERNEL);
    checks.push(Check {
        name: format!("kernel {release} >= {}.{}", MIN_KERNEL.0, MIN_KERNEL.1),
        ok: version_ok,
        required: true,
        fix: format!(
            "upgrade the node kernel to {}.{} or newer",
            MIN_KERNEL.0, MIN_KERNEL.1
        ),
    });
    checks.push(Check {
        name: "BTF at /sys/kernel/btf/vmlinux".into(),
        ok: Path::new("/sys/kernel/btf/vmlinux").exists(),
        required: false,
        fix: "a kernel built with CONFIG_DEBUG_INFO_BTF=y (optional today; needed for richer verifier logs)".into(),
    });
    const NEED: &str = "required: a kernel with CONFIG_BPF_SYSCALL and CONFIG_CGROUP_BPF";
    let core_denied = std::cell::Cell::new(false);
    // Records one probe. `lost` says what the agent runs without when the
    // capability is missing; `None` marks a requirement.
    let record = |name: String,
                  result: Result<bool, &(dyn std::error::Error + 'static)>,
                  lost: Option<&str>,
                  checks: &mut Vec<Check>| {
        let required = lost.is_none();
        let mut fix = lost.unwrap_or(NEED).to_owned();
        let ok = result.unwrap_or_else(|e| {
            if super::error::is_permission(e) {
                fix =
                    format!("refused with EPERM (a security policy, or missing privileges); {fix}");
                core_denied.set(core_denied.get() || required);
            }
            false
        });
        checks.push(Check {
            name,
            ok,
            required,
            fix,
        });
        ok
    };
    let prog = |name: &str, ty: ProgramType, lost: Option<&str>, checks: &mut Vec<Check>| {
        let r = is_program_supported(ty);
        record(
            format!("program type {name}"),
            r.as_ref().map(|b| *b).map_err(|e| e as _),
            lost,
            checks,
        )
    };
    let map = |name: &str, ty: MapType, lost: Option<&str>, checks: &mut Vec<Check>| {
        let r = is_map_supported(ty);
        record(
            format!("map type {name}"),
            r.as_ref().map(|b| *b).map_err(|e| e as _),
            lost,
            checks,
        )
    };
    let connect = prog(
        "cgroup_sock_addr",
        ProgramType::CgroupSockAddr,
        None,
        &mut checks,
    );
    let sockops = prog(
        "sock_ops",
        ProgramType::SockOps,
        Some(
            "without it L4 metrics and same-node acceleration are off, and the mesh (--redirect-addr) cannot start",
        ),
        &mut checks,
    );
    let sockmap_lost = Some(
        "without it same-node acceleration is off (recent kernels have it with CONFIG_BPF_SYSCALL and CONFIG_INET, older ones only with CONFIG_BPF_STREAM_PARSER; a security policy may refuse it)",
    );
    let sk_msg = prog("sk_msg", ProgramType::SkMsg, sockmap_lost, &mut checks);
    let hash = map("hash", MapType::Hash, None, &mut checks);
    let lru = map("lru_hash", MapType::LruHash, None, &mut checks);
    let array = map("array", MapType::Array, None, &mut checks);
    let percpu_array = map("percpu_array", MapType::PerCpuArray, None, &mut checks);
    let percpu_hash = map(
        "percpu_hash",
        MapType::PerCpuHash,
        Some("without it L4 metrics are off"),
        &mut checks,
    );
    let sockhash = map("sockhash", MapType::SockHash, sockmap_lost, &mut checks);
    let ipv6 = ipv6_sockets();
    checks.push(Check {
        name: "IPv6 sockets".into(),
        ok: ipv6,
        required: false,
        fix: "without IPv6 (CONFIG_IPV6, ipv6.disable=1) the agent serves IPv4 only".into(),
    });
    let core = connect && hash && lru && array && percpu_array;
    let features = Features {
        connect: core,
        peername: core && version_ok,
        sockops: core && sockops && percpu_hash,
        sockmap: core && sockops && sk_msg && sockhash,
        ipv6,
    };
    KernelReport {
        permission_denied: core_denied.get(),
        release,
        checks,
        features,
    }
}

/// Whether the kernel lets this process open an IPv6 socket: it fails with
/// `EAFNOSUPPORT` on a kernel built without IPv6 or booted with `ipv6.disable=1`.
fn ipv6_sockets() -> bool {
    match std::net::UdpSocket::bind((std::net::Ipv6Addr::UNSPECIFIED, 0)) {
        Ok(_) => true,
        Err(e) => e.raw_os_error() != Some(libc::EAFNOSUPPORT),
    }
}

/// `6.1.0-56-cloud-amd64` -> (6, 1).
fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::parse_release;

    #[test]
    fn parses_distribution_releases() {
        assert_eq!(parse_release("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(parse_release("6.1.0-56-cloud-amd64"), Some((6, 1)));
        assert_eq!(parse_release("5.15.0"), Some((5, 15)));
        assert_eq!(parse_release("garbage"), None);
    }
}
