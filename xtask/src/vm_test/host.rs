//! The host tools the kernel matrix needs, installed on first use.
//!
//! Debian packages come from the configured apt sources (`apt-get update`
//! runs at most once per invocation, and only when something is missing);
//! the musl target comes from rustup. A second run finds everything and
//! installs nothing.

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::cmd;

/// The target of the test binaries: static, so they run in a bare initramfs.
pub const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";

/// A Debian package and a file whose presence shows it is installed.
struct Tool {
    package: &'static str,
    probe: &'static str,
}

/// qemu for booting, busybox for the guest's userland, iproute2 for the tests' `ip`,
/// xz for 6.12+ compressed modules, musl-gcc for the C parts of crates (ring)
/// in the static test binaries. (dpkg, for unpacking kernel packages, is part of Debian.)
const TOOLS: &[Tool] = &[
    Tool {
        package: "qemu-system-x86",
        probe: "/usr/bin/qemu-system-x86_64",
    },
    Tool {
        package: "busybox-static",
        probe: "/bin/busybox",
    },
    Tool {
        package: "xz-utils",
        probe: "/usr/bin/xz",
    },
    Tool {
        package: "iproute2",
        probe: "/usr/sbin/ip",
    },
    Tool {
        package: "musl-tools",
        probe: "/usr/bin/x86_64-linux-musl-gcc",
    },
];

/// Whether `apt-get update` already ran during this invocation.
static APT_UPDATED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Installs the missing host packages and the musl target.
pub fn ensure_tools() -> anyhow::Result<()> {
    let missing: Vec<&str> = TOOLS
        .iter()
        .filter(|t| !Path::new(t.probe).exists() || !busybox_is_static(t))
        .map(|t| t.package)
        .collect();
    if !missing.is_empty() {
        apt_install(&missing)?;
    }
    ensure_musl_target()
}

/// busybox from the `busybox` package is dynamic; only `busybox-static` runs in the guest.
fn busybox_is_static(tool: &Tool) -> bool {
    if tool.package != "busybox-static" {
        return true;
    }
    cmd::output(Command::new("dpkg-query").args(["-W", "-f=${Status}", "busybox-static"]))
        .is_ok_and(|s| s.contains("ok installed"))
}

/// `apt-get install` of `packages`, refreshing the package lists first if a
/// package is unknown to them.
fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    require_root()?;
    let known = packages.iter().all(|p| {
        cmd::output(Command::new("apt-cache").args(["show", "--no-all-versions", p]))
            .is_ok_and(|s| !s.trim().is_empty())
    });
    if !known {
        apt_update()?;
    }
    let mut install = Command::new("apt-get");
    install
        .args(["install", "-y", "--no-install-recommends"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive");
    if cmd::run(&mut install).is_err() && !APT_UPDATED.load(std::sync::atomic::Ordering::Relaxed) {
        // Stale lists name package versions the mirror no longer has.
        apt_update()?;
        cmd::run(&mut install)?;
    }
    Ok(())
}

/// Runs `apt-get update` unless it already ran in this invocation; returns whether it ran now.
pub fn apt_update() -> anyhow::Result<bool> {
    if APT_UPDATED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        return Ok(false);
    }
    require_root()?;
    cmd::run(Command::new("apt-get").arg("update")).context(
        "refreshing the apt package lists (the kernel matrix takes qemu, busybox and kernels from apt)",
    )?;
    Ok(true)
}

/// Adds the musl target to the pinned host toolchain unless it is there.
fn ensure_musl_target() -> anyhow::Result<()> {
    let toolchain = host_toolchain()?;
    let installed = cmd::output(Command::new("rustup").args([
        "target",
        "list",
        "--installed",
        "--toolchain",
        &toolchain,
    ]))
    .context("rustup is needed to add the musl target for the test binaries")?;
    if installed.lines().any(|l| l.trim() == MUSL_TARGET) {
        return Ok(());
    }
    cmd::run(Command::new("rustup").args(["target", "add", MUSL_TARGET, "--toolchain", &toolchain]))
}

/// The host toolchain the test binaries are built with: the `channel` of the
/// workspace's `rust-toolchain.toml`.
fn host_toolchain() -> anyhow::Result<String> {
    let path = cmd::workspace_root().join("rust-toolchain.toml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("channel"))
        .filter_map(|rest| rest.trim().strip_prefix('='))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .next()
        .with_context(|| format!("no channel in {}", path.display()))
}

/// Fails with a clear message unless running as root (apt-get and dpkg need it).
fn require_root() -> anyhow::Result<()> {
    let uid = cmd::output(Command::new("id").arg("-u"))?;
    if uid.trim() != "0" {
        bail!(
            "`cargo xtask vm-test` installs packages with apt-get: run it as root (`sudo -E cargo xtask vm-test`)"
        );
    }
    Ok(())
}
