//! `cargo xtask test`: the project's one test command (what `.ci/run` calls).
//!
//! Order: formatting, clippy with warnings denied, the kernel programs, unit
//! tests, the privileged end-to-end tests (serially, on this kernel), then the
//! same tests on the kernel matrix (`cargo xtask vm-test`), the matrix with a
//! program the verifier must refuse (`--broken`) and as kernels missing a
//! feature (`--degraded`), then the quick benchmark (printed, not asserted). The privileged tests need root; they
//! fail rather than skip without it.

use std::process::Command;

use anyhow::bail;

use crate::{build_ebpf, cmd};

/// Options of `cargo xtask test`.
#[derive(clap::Args)]
pub struct Options {
    /// Skip the privileged end-to-end tests (they are never skipped in CI).
    #[arg(long)]
    pub unprivileged: bool,
    /// Only run end-to-end tests whose name contains this filter.
    #[arg(long)]
    pub filter: Option<String>,
    /// Skip the kernel matrix (`cargo xtask vm-test`); never skipped in CI.
    #[arg(long)]
    pub no_vm: bool,
}

/// Runs the suite, stopping at the first failing step.
pub fn run(opts: &Options) -> anyhow::Result<()> {
    cmd::cargo(&["fmt", "--all", "--", "--check"])?;
    cmd::run(
        Command::new("rustfmt")
            .current_dir(cmd::workspace_root())
            .args(["--check", "--edition", "2024", "ebpf/programs/src/main.rs"]),
    )?;
    cmd::cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    build_ebpf::run(&build_ebpf::Options::default())?;
    cmd::cargo(&["test", "--workspace", "--exclude", "nodemesh-tests"])?;
    if opts.unprivileged {
        if std::env::var_os("CI").is_some() {
            bail!("--unprivileged is not allowed in CI: the end-to-end tests must run");
        }
        eprintln!("skipping the privileged end-to-end tests (--unprivileged)");
        return Ok(());
    }
    if !cmd::is_root() {
        bail!(
            "the end-to-end tests need root (network namespaces, cgroups, BPF): run `sudo -E cargo xtask test`, or pass --unprivileged to skip them locally"
        );
    }
    cmd::cargo(&["build", "-p", "nodemesh-agent", "--bin", "nodemesh"])?;
    let mut e2e = vec!["test", "-p", "nodemesh-tests", "--"];
    if let Some(filter) = &opts.filter {
        e2e.push(filter);
    }
    e2e.push("--test-threads=1");
    cmd::cargo(&e2e)?;
    if opts.no_vm {
        if std::env::var_os("CI").is_some() {
            bail!("--no-vm is not allowed in CI: the kernel matrix must run");
        }
        eprintln!("skipping the kernel matrix (--no-vm)");
        return Ok(());
    }
    // The same end-to-end tests on the other kernels nodemesh supports, then
    // proof that the matrix catches a program the verifier refuses, then the
    // agent on the same kernels made to miss a feature.
    cmd::cargo(&["xtask", "vm-test"])?;
    cmd::cargo(&["xtask", "vm-test", "--broken"])?;
    cmd::cargo(&["xtask", "vm-test", "--degraded"])?;
    // The quick benchmark: its figures are printed, never asserted.
    cmd::cargo(&["xtask", "bench", "--quick"])
}
