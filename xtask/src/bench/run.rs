//! Building the binaries and running `nm-load bench` with a time limit.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::{build_ebpf, cmd};

/// `cargo build --release` of the agent and the benchmark binaries.
fn release_build() -> Command {
    let mut build = Command::new("cargo");
    // `cargo run` gives xtask its own package's variables; build scripts that
    // track them (ring's) would rebuild whenever a plain `cargo build` and
    // this one alternate.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
            "CARGO_PRIMARY_",
        ]
        .iter()
        .any(|p| key.starts_with(p))
        {
            build.env_remove(key.as_ref());
        }
    }
    build.current_dir(cmd::workspace_root()).args([
        "build",
        "--release",
        "-p",
        "nodemesh-agent",
        "--bin",
        "nodemesh",
        "-p",
        "nodemesh-tests",
        "--bin",
        "nm-load",
        "--bin",
        "nm-pod",
    ]);
    build
}

/// Builds everything with the release profile, runs the benchmark, and
/// returns the path of its raw results.
pub fn measure(quick: bool, dir: &Path) -> anyhow::Result<PathBuf> {
    if !cmd::output(Command::new("id").arg("-u")).is_ok_and(|uid| uid.trim() == "0") {
        bail!(
            "the benchmark needs root (network namespaces, cgroups, BPF): run `sudo -E cargo xtask bench`"
        );
    }
    // The agent's build script refuses a missing or stale kernel object;
    // only then are the kernel programs rebuilt (rebuilding them every time
    // would rewrite the object and make cargo rebuild the agent).
    if cmd::run(&mut release_build()).is_err() {
        eprintln!("building the kernel programs (release), then the binaries again");
        build_ebpf::run(&build_ebpf::Options {
            release: true,
            ..build_ebpf::Options::default()
        })?;
        cmd::run(&mut release_build())?;
    }
    let bin = cmd::target_dir().join("release");
    let raw = dir.join("raw.json");
    let _ = std::fs::remove_file(&raw);
    let mut bench = Command::new(bin.join("nm-load"));
    bench.arg("bench").arg("--out").arg(&raw);
    if quick {
        bench.arg("--quick");
    }
    bench.env("NODEMESH_BIN", bin.join("nodemesh"));
    // Whole-run bound: the scenarios take about 8 minutes (full) or 1 (quick).
    let limit = Duration::from_secs(if quick { 240 } else { 900 });
    eprintln!("+ {}", cmd::display(&bench));
    let mut child = bench
        .spawn()
        .with_context(|| format!("failed to start {}", cmd::display(&bench)))?;
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for nm-load")? {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            cleanup(&bin.join("nm-load"));
            bail!(
                "nm-load bench did not finish within {limit:?}; its namespaces and cgroups were removed"
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if !status.success() {
        bail!("nm-load bench failed: {status}");
    }
    Ok(raw)
}

/// Removes what a killed `nm-load bench` left (its namespaces and cgroup
/// tree) with `nm-load sweep`, the test library's own clean-up.
fn cleanup(nm_load: &Path) {
    let _ = Command::new(nm_load).arg("sweep").status();
}
