//! `cargo xtask build-ebpf`: compiles the kernel programs into one BPF object.
//!
//! The object lands in `target/bpf/<profile>/nodemesh.bpf.o`, beside a digest
//! of the sources it was built from; the agent's build script embeds it only
//! if that digest still matches.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Context as _;

use crate::{cmd, toolchain};

#[path = "../../ebpf/source_digest.rs"]
mod source_digest;

/// Options of `cargo xtask build-ebpf`.
#[derive(clap::Args, Default)]
pub struct Options {
    /// Build with the release profile (what `cargo build --release` of the agent embeds).
    #[arg(long)]
    pub release: bool,
    /// Cargo features of the kernel programs to enable (test-only variants); needs `--variant`.
    #[arg(long, value_delimiter = ',', requires = "variant")]
    pub features: Vec<String>,
    /// Build into `target/bpf/<variant>/` instead of `target/bpf/<profile>/`, leaving the
    /// object the agent embeds untouched.
    #[arg(long)]
    pub variant: Option<String>,
}

/// Builds the object and returns its path.
pub fn run(opts: &Options) -> anyhow::Result<PathBuf> {
    toolchain::ensure_nightly()?;
    let linker = toolchain::ensure_bpf_linker()?;
    let root = cmd::workspace_root();
    let target = cmd::target_dir();
    let profile = if opts.release { "release" } else { "dev" };
    let programs = root.join("ebpf").join("programs");
    if !opts.features.is_empty() && opts.variant.is_none() {
        anyhow::bail!("kernel programs built with features need a variant name of their own");
    }
    let build_dir = match &opts.variant {
        Some(variant) => target.join(format!("ebpf-{variant}")),
        None => target.join("ebpf"),
    };

    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![linker.parent().expect("linker has a parent").to_path_buf()];
    paths.extend(std::env::split_paths(&path));
    let mut build = Command::new("cargo");
    build
        .current_dir(&programs)
        .arg(format!("+{}", toolchain::NIGHTLY))
        .args(["build", "--profile", profile, "--target-dir"])
        .arg(&build_dir)
        .env("PATH", std::env::join_paths(paths)?)
        // The host toolchain's settings must not leak into the nightly build.
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_TARGET_DIR");
    if !opts.features.is_empty() {
        build.arg("--features").arg(opts.features.join(","));
    }
    cmd::run(&mut build)?;

    let profile_dir = if opts.release { "release" } else { "debug" };
    let built = build_dir
        .join("bpfel-unknown-none")
        .join(profile_dir)
        .join("nodemesh-ebpf");
    let out_dir = target
        .join("bpf")
        .join(opts.variant.as_deref().unwrap_or(profile));
    std::fs::create_dir_all(&out_dir)?;
    let object = out_dir.join("nodemesh.bpf.o");
    std::fs::copy(&built, &object)
        .with_context(|| format!("copying {} to {}", built.display(), object.display()))?;
    if opts.variant.is_none() {
        // Only the regular object is eligible for embedding in the agent.
        let digest = source_digest::source_digest(&root)?;
        std::fs::write(out_dir.join("nodemesh.bpf.o.digest"), digest)?;
    }
    eprintln!("built {}", object.display());
    Ok(object)
}
