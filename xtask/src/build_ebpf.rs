//! `cargo xtask build-ebpf`: compiles the kernel programs into one BPF object.
//!
//! The object lands in `target/bpf/<profile>/nodemesh.bpf.o`, with its
//! companion built without the sockhash and `sk_msg`
//! (`nodemesh-nosockmap.bpf.o`) and a digest of the sources both were built
//! from; the agent's build script embeds them only if that digest still
//! matches.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Context as _;

use crate::{cmd, toolchain};

#[path = "../../ebpf/source_digest.rs"]
mod source_digest;

/// The object's file name.
pub const OBJECT: &str = "nodemesh.bpf.o";
/// The companion object built without the `sockmap` feature, beside [`OBJECT`].
pub const OBJECT_WITHOUT_SOCKMAP: &str = "nodemesh-nosockmap.bpf.o";

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
    let path = std::env::join_paths(paths)?;
    let out_dir = target
        .join("bpf")
        .join(opts.variant.as_deref().unwrap_or(profile));
    std::fs::create_dir_all(&out_dir)?;
    let object = out_dir.join(OBJECT);

    // The regular object, then its companion without the sockhash and
    // `sk_msg`, for kernels that refuse them (see `agent/src/datapath/object.rs`).
    // Test variants are loaded as they are and need no companion.
    let flavours: &[(&str, bool)] = if opts.variant.is_none() {
        &[(OBJECT, true), (OBJECT_WITHOUT_SOCKMAP, false)]
    } else {
        &[(OBJECT, true)]
    };
    for &(file, sockmap) in flavours {
        let mut features = opts.features.clone();
        if sockmap {
            features.push("sockmap".to_owned());
        }
        let flavour_dir = if sockmap {
            build_dir.clone()
        } else {
            build_dir.with_file_name(format!(
                "{}-nosockmap",
                build_dir.file_name().unwrap_or_default().to_string_lossy()
            ))
        };
        let mut build = Command::new("cargo");
        build
            .current_dir(&programs)
            .arg(format!("+{}", toolchain::NIGHTLY))
            .args(["build", "--profile", profile, "--no-default-features"])
            .arg("--target-dir")
            .arg(&flavour_dir)
            .env("PATH", &path)
            // The host toolchain's settings must not leak into the nightly build.
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("RUSTC")
            .env_remove("RUSTC_WRAPPER")
            .env_remove("RUSTC_WORKSPACE_WRAPPER")
            .env_remove("CARGO_TARGET_DIR");
        if !features.is_empty() {
            build.arg("--features").arg(features.join(","));
        }
        cmd::run(&mut build)?;
        let profile_dir = if opts.release { "release" } else { "debug" };
        let built = flavour_dir
            .join("bpfel-unknown-none")
            .join(profile_dir)
            .join("nodemesh-ebpf");
        let dest = out_dir.join(file);
        std::fs::copy(&built, &dest)
            .with_context(|| format!("copying {} to {}", built.display(), dest.display()))?;
    }
    if opts.variant.is_none() {
        // Only the regular objects are eligible for embedding in the agent.
        let digest = source_digest::source_digest(&root)?;
        std::fs::write(out_dir.join(format!("{OBJECT}.digest")), digest)?;
    }
    eprintln!("built {}", object.display());
    Ok(object)
}
