//! What runs in the guest: the end-to-end test binaries of `nodemesh-tests`,
//! the helper binaries they spawn, and iproute2's `ip` with the shared
//! libraries it needs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

use crate::cmd;
use crate::vm_test::host::MUSL_TARGET;

/// The crate whose tests run in the guest.
pub const TEST_PACKAGE: &str = "nodemesh-tests";

/// The binaries built from [`TEST_PACKAGE`].
pub struct TestBinaries {
    /// Test harness executables (integration tests and the library's unit tests).
    pub tests: Vec<PathBuf>,
    /// The crate's `[[bin]]` targets, which tests find through `CARGO_BIN_EXE_<name>`.
    pub helpers: Vec<PathBuf>,
}

/// The test targets that exercise the kernel: the datapath (load, attach,
/// service translation, redirect, sockmap, policy, metrics), the agent
/// binary (probing, attach, detach) and the kernel smoke checks. The mesh
/// tests above them are user space and run on the host only.
pub const KERNEL_TESTS: &[&str] = &["datapath", "agent", "vm_smoke"];

/// The test target of `cargo xtask vm-test --degraded`: the agent on kernels
/// missing a feature. Its tests are `#[ignore]`d on the host (they install a
/// system-wide LSM policy, or need a kernel booted without IPv6).
pub const DEGRADED_TESTS: &[&str] = &["degraded"];

/// Builds the test targets `targets` as static musl binaries, with the
/// crate's helpers and the agent, and returns what cargo produced. Debug info
/// is left out: the binaries go into a RAM-backed initramfs.
pub fn build_tests(targets: &[&str]) -> anyhow::Result<TestBinaries> {
    let root = cmd::workspace_root();
    let manifest = root.join("tests").join("Cargo.toml");
    let mut build = Command::new("cargo");
    build
        .current_dir(&root)
        .args([
            "test",
            "-p",
            TEST_PACKAGE,
            "--no-run",
            "--message-format=json-render-diagnostics",
        ])
        .args(targets.iter().flat_map(|t| ["--test", t]))
        .args(["--bins", "--target"])
        .arg(MUSL_TARGET)
        .env("CARGO_PROFILE_DEV_DEBUG", "0")
        .env("CARGO_PROFILE_TEST_DEBUG", "0")
        .env("CARGO_PROFILE_DEV_STRIP", "debuginfo")
        .env("CARGO_PROFILE_TEST_STRIP", "debuginfo")
        .stderr(Stdio::inherit());
    let out = cmd::output(&mut build)?;
    let mut tests = Vec::new();
    let mut helpers = Vec::new();
    for line in out.lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let Some(executable) = msg["executable"].as_str() else {
            continue;
        };
        if msg["manifest_path"].as_str().map(Path::new) != Some(manifest.as_path()) {
            continue;
        }
        let kinds = msg["target"]["kind"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if msg["profile"]["test"] == true {
            tests.push(PathBuf::from(executable));
        } else if kinds.iter().any(|k| k == "bin") {
            helpers.push(PathBuf::from(executable));
        }
    }
    if tests.is_empty() {
        bail!("cargo test -p {TEST_PACKAGE} --no-run built no test executables");
    }
    // The tests also run the `nodemesh` binary itself.
    let mut agent = Command::new("cargo");
    agent
        .current_dir(&root)
        .args([
            "build",
            "-p",
            "nodemesh-agent",
            "--bin",
            "nodemesh",
            "--message-format=json-render-diagnostics",
            "--target",
        ])
        .arg(MUSL_TARGET)
        .stderr(Stdio::inherit());
    for line in cmd::output(&mut agent)?.lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact"
            && let Some(executable) = msg["executable"].as_str()
        {
            helpers.push(PathBuf::from(executable));
        }
    }
    tests.sort();
    tests.dedup();
    helpers.sort();
    helpers.dedup();
    Ok(TestBinaries { tests, helpers })
}

/// A host executable and every shared object it loads, as absolute paths.
pub fn with_shared_libraries(exe: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = vec![exe.to_path_buf()];
    let out = Command::new("ldd")
        .arg(exe)
        .output()
        .with_context(|| format!("running ldd {}", exe.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // A static executable: ldd says so and fails; it needs nothing else.
        if String::from_utf8_lossy(&out.stderr).contains("not a dynamic executable")
            || text.contains("not a dynamic executable")
            || text.contains("statically linked")
        {
            return Ok(files);
        }
        bail!(
            "ldd {} failed: {}",
            exe.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut libs = BTreeSet::new();
    for line in text.lines() {
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` or `/lib64/ld-linux-x86-64.so.2 (0x...)`.
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            libs.insert(PathBuf::from(path));
        }
        if line.contains("not found") {
            bail!(
                "{} needs a library the host lacks: {}",
                exe.display(),
                line.trim()
            );
        }
    }
    files.extend(libs);
    Ok(files)
}

/// The directories a host tool is looked up in.
const TOOL_DIRS: &[&str] = &["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// A host executable by path, or by name in the usual system directories.
pub fn find_tool(name: &str) -> anyhow::Result<PathBuf> {
    if name.contains('/') {
        let path = PathBuf::from(name);
        anyhow::ensure!(path.is_file(), "{name} does not exist");
        return Ok(path);
    }
    TOOL_DIRS
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("{name} is not installed in {}", TOOL_DIRS.join(", ")))
}

/// The host tools every guest gets: iproute2's `ip` (required; the tests
/// build topologies with it) and `tc` (if installed), plus `extra`.
pub fn host_tools(extra: &[String]) -> anyhow::Result<Vec<PathBuf>> {
    let mut tools = vec![
        find_tool("ip")
            .context("iproute2's ip is needed in the guest (apt-get install iproute2)")?,
    ];
    tools.extend(find_tool("tc").ok());
    for name in extra {
        tools.push(find_tool(name)?);
    }
    Ok(tools)
}
