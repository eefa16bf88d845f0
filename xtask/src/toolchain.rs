//! The kernel programs' toolchain: a pinned nightly with rust-src, and
//! bpf-linker linked against that nightly's own LLVM.
//!
//! Everything is installed on first use and found again afterwards: the
//! second run does no install work.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::cmd;

/// The nightly that compiles the kernel programs (also in `ebpf/programs/rust-toolchain.toml`).
pub const NIGHTLY: &str = "nightly-2026-10-29";
/// The bpf-linker release, built against [`NIGHTLY`]'s LLVM.
pub const BPF_LINKER_VERSION: &str = "0.13.0";

/// Where xtask keeps what it installs: `$NODEMESH_CACHE_DIR`, else `$XDG_CACHE_HOME/nodemesh`,
/// else `~/.cache/nodemesh`.
pub fn cache_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("NODEMESH_CACHE_DIR") {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return Ok(PathBuf::from(dir).join("nodemesh"));
    }
    let home = std::env::var_os("HOME").context("neither NODEMESH_CACHE_DIR nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cache").join("nodemesh"))
}

/// Installs the pinned nightly with rust-src unless rustup already has it.
pub fn ensure_nightly() -> anyhow::Result<()> {
    let installed = cmd::output(Command::new("rustup").args(["toolchain", "list"]))
        .context("rustup is needed to install the kernel programs' toolchain")?;
    let has_nightly = installed.lines().any(|l| l.starts_with(NIGHTLY));
    if has_nightly {
        let components = cmd::output(Command::new("rustup").args([
            "component",
            "list",
            "--installed",
            "--toolchain",
            NIGHTLY,
        ]))?;
        if components.lines().any(|l| l.starts_with("rust-src")) {
            return Ok(());
        }
    }
    cmd::run(Command::new("rustup").args([
        "toolchain",
        "install",
        NIGHTLY,
        "--profile",
        "minimal",
        "--component",
        "rust-src",
    ]))
}

/// Returns the path of a bpf-linker built against the nightly's LLVM, building it if needed.
pub fn ensure_bpf_linker() -> anyhow::Result<PathBuf> {
    let cache = cache_dir()?;
    let sysroot = PathBuf::from(
        cmd::output(Command::new("rustc").args([&format!("+{NIGHTLY}"), "--print", "sysroot"]))?
            .trim(),
    );
    let libllvm = find_libllvm(&sysroot.join("lib"))?;
    let root = cache.join("bpf-linker");
    let linker = root.join("bin").join("bpf-linker");
    let stamp = root.join("built-for");
    let want = format!("{BPF_LINKER_VERSION} {}", libllvm.display());
    if linker.exists() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(want.as_str()) {
        return Ok(linker);
    }

    // bpf-linker's build looks for `$LLVM_PREFIX/lib/libLLVM.so`; the nightly
    // ships its LLVM under a versioned name, so give it both names.
    let llvm = cache.join("llvm");
    let llvm_lib = llvm.join("lib");
    std::fs::create_dir_all(&llvm_lib)
        .with_context(|| format!("creating {}", llvm_lib.display()))?;
    let file_name = libllvm
        .file_name()
        .context("libLLVM path has no file name")?;
    for link in [llvm_lib.join("libLLVM.so"), llvm_lib.join(file_name)] {
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&libllvm, &link)
            .with_context(|| format!("linking {} to {}", link.display(), libllvm.display()))?;
    }
    eprintln!(
        "building bpf-linker {BPF_LINKER_VERSION} against {} (about a minute)",
        libllvm.display()
    );
    cmd::run(
        Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--locked",
                "--force",
                "--version",
                BPF_LINKER_VERSION,
                "--root",
            ])
            .arg(&root)
            .env("LLVM_PREFIX", &llvm)
            .env_remove("CARGO_TARGET_DIR"),
    )?;
    std::fs::write(&stamp, want)?;
    Ok(linker)
}

/// The real (not linker-script) `libLLVM.so.*` in the nightly's `lib` directory.
fn find_libllvm(lib: &Path) -> anyhow::Result<PathBuf> {
    let entries = std::fs::read_dir(lib).with_context(|| format!("reading {}", lib.display()))?;
    for entry in entries {
        let path = entry?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if name.starts_with("libLLVM.so.") {
            return Ok(path);
        }
    }
    bail!(
        "no libLLVM.so.* in {}: the {NIGHTLY} toolchain looks incomplete; reinstall it with `rustup toolchain install {NIGHTLY} --component rust-src`",
        lib.display()
    )
}
