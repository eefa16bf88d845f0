//! The digest of the kernel programs' sources.
//!
//! `cargo xtask build-ebpf` stores it beside the object it builds, and the
//! agent's build script recomputes it, so a stale object is never embedded.
//! Both include this file with `#[path]`, so they cannot disagree on what is
//! hashed.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The files and folders, relative to the workspace root, whose contents make the object.
pub const INPUTS: &[&str] = &[
    "ebpf/common/Cargo.toml",
    "ebpf/common/src",
    "ebpf/programs/Cargo.toml",
    "ebpf/programs/Cargo.lock",
    "ebpf/programs/rust-toolchain.toml",
    "ebpf/programs/.cargo/config.toml",
    "ebpf/programs/src",
];

/// Hex SHA-256 over the path and contents of every input file, in path order.
pub fn source_digest(root: &Path) -> std::io::Result<String> {
    let mut files = Vec::new();
    for input in INPUTS {
        collect(&root.join(input), &mut files)?;
    }
    files.sort();
    let mut hasher = Sha256::new();
    for file in files {
        let rel = file.strip_prefix(root).unwrap_or(&file);
        hasher.update(rel.to_string_lossy().as_bytes());
        hasher.update([0]);
        let bytes = std::fs::read(&file)?;
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(&bytes);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn collect(path: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            collect(&entry?.path(), out)?;
        }
    } else {
        out.push(path.to_path_buf());
    }
    Ok(())
}
