//! Embeds the kernel programs built by `cargo xtask build-ebpf`: the regular
//! object and its companion without the sockhash and `sk_msg`.
//!
//! The objects are embedded only if the digest stored beside them matches the
//! current sources; otherwise the build fails and says which command to run.
//! Under clippy (or with `NODEMESH_EBPF_STUB=1`) an empty stand-in is
//! embedded so lints work without the BPF toolchain; such an agent refuses
//! to start.

use std::path::PathBuf;

#[path = "../ebpf/source_digest.rs"]
mod source_digest;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest
        .parent()
        .expect("agent/ is below the workspace root")
        .to_path_buf();
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));
    println!("cargo::rustc-check-cfg=cfg(nodemesh_ebpf_stub)");
    println!("cargo::rerun-if-env-changed=NODEMESH_EBPF_STUB");
    println!("cargo::rerun-if-env-changed=CARGO_TARGET_DIR");
    for input in source_digest::INPUTS {
        println!("cargo::rerun-if-changed={}", root.join(input).display());
    }

    let under_clippy =
        std::env::var("RUSTC_WORKSPACE_WRAPPER").is_ok_and(|w| w.contains("clippy-driver"));
    if under_clippy || std::env::var_os("NODEMESH_EBPF_STUB").is_some_and(|v| v == "1") {
        let stub = out.join("nodemesh.bpf.o");
        std::fs::write(&stub, b"").expect("writing the stand-in object");
        println!("cargo::rustc-cfg=nodemesh_ebpf_stub");
        println!("cargo::rustc-env=NODEMESH_EBPF_OBJECT={}", stub.display());
        println!(
            "cargo::rustc-env=NODEMESH_EBPF_OBJECT_NOSOCKMAP={}",
            stub.display()
        );
        return;
    }

    let (profile, flag) = match std::env::var("PROFILE").as_deref() {
        Ok("release") => ("release", " --release"),
        _ => ("dev", ""),
    };
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| if p.is_absolute() { p } else { root.join(p) })
        .unwrap_or_else(|| root.join("target"));
    let dir = target.join("bpf").join(profile);
    let object = dir.join("nodemesh.bpf.o");
    let without_sockmap = dir.join("nodemesh-nosockmap.bpf.o");
    let digest_file = dir.join("nodemesh.bpf.o.digest");
    println!("cargo::rerun-if-changed={}", object.display());
    println!("cargo::rerun-if-changed={}", without_sockmap.display());
    println!("cargo::rerun-if-changed={}", digest_file.display());

    for file in [&object, &without_sockmap] {
        if !file.exists() {
            fail(&format!(
                "the kernel programs are not built ({} is missing): run `cargo xtask build-ebpf{flag}` first",
                file.display()
            ));
        }
    }
    let built_from = std::fs::read_to_string(&digest_file).unwrap_or_default();
    let current = source_digest::source_digest(&root).expect("hashing the eBPF sources");
    if built_from.trim() != current {
        fail(&format!(
            "the kernel programs in {} are stale (ebpf/ changed since they were built): run `cargo xtask build-ebpf{flag}`",
            object.display()
        ));
    }
    println!("cargo::rustc-env=NODEMESH_EBPF_OBJECT={}", object.display());
    println!(
        "cargo::rustc-env=NODEMESH_EBPF_OBJECT_NOSOCKMAP={}",
        without_sockmap.display()
    );
}

fn fail(message: &str) -> ! {
    println!("cargo::error={message}");
    std::process::exit(1);
}
