//! The guest's initramfs: busybox, `/init`, the kernel's modules, `ip`, the
//! test binaries, the BPF object and the environment the tests run with.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;

use crate::cmd;
use crate::vm_test::cpio::Archive;
use crate::vm_test::kernel::{self, Kernel};
use crate::vm_test::payload::{self, TestBinaries};

/// Where the guest finds the test binaries it runs.
const TESTS_DIR: &str = "/nodemesh/tests";
/// Where the guest finds the crate's helper binaries (also exported as `NODEMESH_TEST_BIN_DIR`).
pub const BIN_DIR: &str = "/nodemesh/bin";
/// Where the guest finds the BPF object (also exported as `NODEMESH_BPF_OBJECT`).
pub const BPF_OBJECT: &str = "/nodemesh/nodemesh.bpf.o";
/// Where the guest finds the BPF-LSM refusal object of `--degraded` (also
/// exported as `NODEMESH_REFUSAL_OBJECT`).
pub const REFUSAL_OBJECT: &str = "/nodemesh/refusal.bpf.o";
/// The statically linked busybox that provides the guest's shell and tools.
const BUSYBOX: &str = "/bin/busybox";

/// Everything the initramfs carries apart from the kernel's modules.
pub struct Payload<'a> {
    /// The tests and their helpers.
    pub binaries: &'a TestBinaries,
    /// The BPF object the tests load; its companion without sockmap, if
    /// built beside it, goes beside it in the guest too.
    pub bpf_object: &'a Path,
    /// The object with `refuse_bpf`, for `--degraded`.
    pub refusal_object: Option<&'a Path>,
    /// Environment variables exported to the tests, in order.
    pub env: &'a [(String, String)],
    /// Host executables copied in with their shared libraries (`ip`, `tc`, ...).
    pub host_tools: &'a [PathBuf],
}

/// Writes the initramfs for `kernel` to `out`; returns its size in bytes.
pub fn build(
    kernel: &Kernel,
    modules: &[String],
    payload: &Payload<'_>,
    out: &Path,
) -> anyhow::Result<u64> {
    let mut archive = Archive::default();
    for dir in [
        "/dev",
        "/proc",
        "/sys",
        "/run",
        "/tmp",
        "/root",
        "/etc",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
    ] {
        archive.dir(dir);
    }
    archive.char_dev("/dev/console", 5, 1);
    archive.char_dev("/dev/null", 1, 3);
    archive.symlink_if_absent("/var/run", "../run");
    archive.bytes("/init", include_str!("init.sh"), 0o755);

    // Host tools first, so busybox's applets of the same name (`ip`) do not shadow them.
    for tool in payload.host_tools {
        for file in payload::with_shared_libraries(tool)? {
            add_host_file(&mut archive, &file)?;
        }
        let name = file_name(tool)?;
        for dir in ["/sbin", "/bin", "/usr/bin", "/usr/sbin"] {
            archive.symlink_if_absent(&format!("{dir}/{name}"), &tool.to_string_lossy());
        }
    }
    if Path::new("/etc/iproute2").is_dir() {
        add_host_tree(&mut archive, Path::new("/etc/iproute2"))?;
    }

    archive.file(BUSYBOX, Path::new(BUSYBOX), 0o755);
    let applets = cmd::output(Command::new(BUSYBOX).arg("--list-full"))
        .context("listing busybox applets (is busybox-static installed?)")?;
    for applet in applets.lines().map(str::trim).filter(|a| !a.is_empty()) {
        archive.symlink_if_absent(&format!("/{applet}"), BUSYBOX);
    }

    let mut module_list = String::new();
    for module in kernel::modules(kernel, modules)? {
        let path = format!("/lib/modules/{}/{}.ko", kernel.release, module.name);
        archive.bytes(&path, kernel::read_module(&module.src)?, 0o644);
        module_list.push_str(&path);
        module_list.push('\n');
    }
    archive.bytes("/etc/nodemesh-vm.modules", module_list, 0o644);

    for test in &payload.binaries.tests {
        add_binary(
            &mut archive,
            test,
            &format!("{TESTS_DIR}/{}", file_name(test)?),
        )?;
    }
    archive.dir(BIN_DIR);
    for helper in &payload.binaries.helpers {
        // In BIN_DIR (what `NODEMESH_TEST_BIN_DIR` names), and linked from the
        // path cargo compiled into the tests (`CARGO_BIN_EXE_*`). The file
        // itself must not live under the build path: the guest mounts tmpfs
        // over /tmp and /run, which would hide a checkout there.
        let in_bin_dir = format!("{BIN_DIR}/{}", file_name(helper)?);
        add_binary(&mut archive, helper, &in_bin_dir)?;
        archive.symlink_if_absent(&helper.to_string_lossy(), &in_bin_dir);
    }
    archive.file(BPF_OBJECT, payload.bpf_object, 0o644);
    let companion = payload
        .bpf_object
        .with_file_name(crate::build_ebpf::OBJECT_WITHOUT_SOCKMAP);
    if companion.exists() {
        let in_guest =
            Path::new(BPF_OBJECT).with_file_name(crate::build_ebpf::OBJECT_WITHOUT_SOCKMAP);
        archive.file(&in_guest.to_string_lossy(), &companion, 0o644);
    }
    if let Some(refusal) = payload.refusal_object {
        archive.file(REFUSAL_OBJECT, refusal, 0o644);
    }

    let mut env = String::new();
    for (key, value) in payload.env {
        env.push_str(&format!(
            "export {key}='{}'\n",
            value.replace('\'', r"'\''")
        ));
    }
    archive.bytes("/etc/nodemesh-vm.env", env, 0o644);
    archive.write(out)
}

/// Adds a binary and, if it is dynamic, the libraries it loads.
fn add_binary(archive: &mut Archive, src: &Path, dest: &str) -> anyhow::Result<()> {
    let mut files = payload::with_shared_libraries(src)?.into_iter();
    files.next();
    archive.file(dest, src, 0o755);
    for lib in files {
        add_host_file(archive, &lib)?;
    }
    Ok(())
}

/// Adds a host file at the same path (symlinks followed, contents copied).
fn add_host_file(archive: &mut Archive, path: &Path) -> anyhow::Result<()> {
    let dest = path.to_string_lossy().into_owned();
    if !archive.contains(&dest) {
        let real =
            std::fs::canonicalize(path).with_context(|| format!("resolving {}", path.display()))?;
        archive.file(&dest, &real, 0o755);
    }
    Ok(())
}

/// Adds the regular files below a host directory at the same paths.
fn add_host_tree(archive: &mut Archive, dir: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path: PathBuf = entry?.path();
        if path.is_dir() {
            add_host_tree(archive, &path)?;
        } else if path.is_file() {
            archive.file(&path.to_string_lossy(), &path, 0o644);
        }
    }
    Ok(())
}

/// The last component of a path, as text.
fn file_name(path: &Path) -> anyhow::Result<String> {
    Ok(path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?
        .to_string_lossy()
        .into_owned())
}
