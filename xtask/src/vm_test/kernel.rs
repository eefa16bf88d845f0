//! Kernels for the matrix: Debian kernel packages fetched with `apt-get
//! download`, unpacked once into the cache, and the modules the tests load.
//!
//! A kernel is named on the command line either by an alias (`6.1`, `6.12`,
//! `5.10`: the newest `linux-image-<alias>.*-cloud-amd64` on offer), by a
//! package name, or by several packages joined with `,` for kernels split
//! across packages (sid's `linux-binary-*` and `linux-modules-*`). The
//! system's apt sources are asked first; kernels they lack come from the
//! extra Debian suites of [`crate::vm_test::apt`].

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::cmd;
use crate::vm_test::apt::Sources;

/// The kernels tested when none is named: the two kernel lines of Debian 12.
pub const DEFAULT_KERNELS: &[&str] = &["6.1", "6.12"];

/// The kernel options the datapath depends on, shown per kernel so a
/// difference between kernels is visible next to its result.
pub const FEATURE_OPTIONS: &[&str] = &[
    "CONFIG_DEBUG_INFO_BTF",
    "CONFIG_BPF_JIT",
    "CONFIG_CGROUP_BPF",
    "CONFIG_BPF_STREAM_PARSER",
    "CONFIG_NET_SOCK_MSG",
    "CONFIG_BPF_LSM",
    "CONFIG_NET_CLS_BPF",
    "CONFIG_NET_SCH_INGRESS",
    "CONFIG_VETH",
    "CONFIG_NETFILTER_XT_TARGET_TPROXY",
    "CONFIG_TLS",
    "CONFIG_KPROBES",
];

/// A kernel unpacked in the cache.
pub struct Kernel {
    /// The Debian packages it came from.
    pub packages: Vec<String>,
    /// `uname -r` of the kernel.
    pub release: String,
    /// The bootable image.
    pub vmlinuz: PathBuf,
    /// The kernel's build configuration, if the package ships it.
    pub config: Option<PathBuf>,
    /// `lib/modules/<release>` in the unpacked packages.
    pub modules_dir: PathBuf,
}

impl Kernel {
    /// The value of each of [`FEATURE_OPTIONS`] in the kernel's config (`y`, `m` or `n`).
    pub fn features(&self) -> Vec<(&'static str, String)> {
        let config = self
            .config
            .as_ref()
            .and_then(|c| std::fs::read_to_string(c).ok())
            .unwrap_or_default();
        FEATURE_OPTIONS
            .iter()
            .map(|opt| {
                let value = config
                    .lines()
                    .find_map(|l| l.strip_prefix(opt).and_then(|rest| rest.strip_prefix('=')))
                    .unwrap_or(if config.is_empty() { "?" } else { "n" });
                (*opt, value.to_owned())
            })
            .collect()
    }
}

/// Resolves, downloads (unless cached) and unpacks the kernel named by `spec`.
pub fn prepare(spec: &str, cache: &Path) -> anyhow::Result<Kernel> {
    let (packages, sources) = find(spec, cache)?;
    let debs_dir = cache.join("debs");
    std::fs::create_dir_all(&debs_dir)
        .with_context(|| format!("creating {}", debs_dir.display()))?;
    let unpacked = cache.join(packages.join(","));
    let stamp = unpacked.join(".unpacked");
    if !stamp.exists() {
        let _ = std::fs::remove_dir_all(&unpacked);
        std::fs::create_dir_all(&unpacked)?;
        for package in &packages {
            let deb = download(&sources, package, &debs_dir)?;
            cmd::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
        }
        std::fs::write(&stamp, packages.join("\n"))?;
    }
    locate(packages, &unpacked)
}

/// The packages `spec` stands for and the sources that have them. Lists
/// already on disk are asked first (the system's, then the extra suites'),
/// so a cached kernel costs no `apt-get update`; then each set of lists is
/// refreshed once and asked again.
fn find(spec: &str, cache: &Path) -> anyhow::Result<(Vec<String>, Sources)> {
    let system = Sources::System;
    let extra = Sources::extra(cache);
    if let Ok(packages) = resolve(&system, spec) {
        return Ok((packages, system));
    }
    if extra.has_lists()
        && let Ok(packages) = resolve(&extra, spec)
    {
        return Ok((packages, extra));
    }
    if system.update()?
        && let Ok(packages) = resolve(&system, spec)
    {
        return Ok((packages, system));
    }
    extra.update()?;
    resolve(&extra, spec)
        .map(|packages| (packages, extra))
        .with_context(|| {
            format!(
                "kernel {spec} is in neither {} nor {}",
                Sources::System.describe(),
                Sources::extra(cache).describe()
            )
        })
}

/// The package names a kernel spec stands for, if `sources` offer them all.
fn resolve(sources: &Sources, spec: &str) -> anyhow::Result<Vec<String>> {
    if spec.contains(',') || !is_alias(spec) {
        let packages: Vec<String> = spec.split(',').map(str::to_owned).collect();
        for package in &packages {
            let shown = cmd::output(sources.command("apt-cache").args([
                "show",
                "--no-all-versions",
                package,
            ]))
            .unwrap_or_default();
            if shown.trim().is_empty() {
                bail!("no package {package} in {}", sources.describe());
            }
        }
        return Ok(packages);
    }
    let pattern = format!(
        "^linux-image-{}\\.[0-9].*-cloud-amd64$",
        spec.replace('.', "\\.")
    );
    let found =
        cmd::output(
            sources
                .command("apt-cache")
                .args(["search", "--names-only", &pattern]),
        )?;
    let mut names: Vec<String> = found
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    names.sort_by(|a, b| natural_cmp(a, b));
    match names.pop() {
        Some(name) => Ok(vec![name]),
        None => bail!(
            "no package matching {pattern} in {}; name a kernel package with --kernel instead (see `apt-cache search linux-image`)",
            sources.describe()
        ),
    }
}

/// `6.1`, `6.12`: a major.minor version rather than a package name.
fn is_alias(spec: &str) -> bool {
    let mut parts = spec.split('.');
    let ok =
        |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

/// Compares names by their embedded numbers (`6.1.0-9` before `6.1.0-48`).
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(s: &str) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        let mut rest = s;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits > 0 {
                out.push((rest[..digits].parse().unwrap_or(u64::MAX), String::new()));
                rest = &rest[digits..];
            } else {
                let text = rest.bytes().take_while(|b| !b.is_ascii_digit()).count();
                out.push((0, rest[..text].to_owned()));
                rest = &rest[text..];
            }
        }
        out
    }
    chunks(a).cmp(&chunks(b))
}

/// Downloads `package` into `dir` unless a `.deb` of it is already there; returns its path.
fn download(sources: &Sources, package: &str, dir: &Path) -> anyhow::Result<PathBuf> {
    if let Some(deb) = cached_deb(package, dir)? {
        return Ok(deb);
    }
    let mut get = sources.command("apt-get");
    get.current_dir(dir).args(["download", package]);
    if cmd::run(&mut get).is_err() {
        // Stale package lists name versions the mirror has already dropped.
        sources.update()?;
        cmd::run(&mut get)?;
    }
    cached_deb(package, dir)?.with_context(|| {
        format!(
            "apt-get download {package} left no .deb in {}",
            dir.display()
        )
    })
}

/// The `.deb` of `package` in `dir`, if one was downloaded before.
fn cached_deb(package: &str, dir: &Path) -> anyhow::Result<Option<PathBuf>> {
    // apt-get writes `+` in versions as `%2b`; the name part before `_` is literal.
    let prefix = format!("{package}_");
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if name.starts_with(&prefix) && name.ends_with(".deb") {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

/// Finds the image, config and module tree in unpacked packages.
fn locate(packages: Vec<String>, root: &Path) -> anyhow::Result<Kernel> {
    let mut releases = BTreeSet::new();
    for base in ["lib/modules", "usr/lib/modules"] {
        if let Ok(entries) = std::fs::read_dir(root.join(base)) {
            for entry in entries {
                let entry = entry?;
                if entry.file_type()?.is_dir() {
                    releases.insert((base, entry.file_name().to_string_lossy().into_owned()));
                }
            }
        }
    }
    let Some((base, release)) = releases.into_iter().next() else {
        bail!(
            "{} holds no lib/modules/<release>: not a kernel package?",
            root.display()
        );
    };
    let modules_dir = root.join(base).join(&release);
    let vmlinuz = [
        root.join("boot").join(format!("vmlinuz-{release}")),
        modules_dir.join("vmlinuz"),
    ]
    .into_iter()
    .find(|p| p.exists())
    .with_context(|| format!("no vmlinuz for {release} in {}", root.display()))?;
    let config = [
        root.join("boot").join(format!("config-{release}")),
        modules_dir.join("config"),
    ]
    .into_iter()
    .find(|p| p.exists());
    Ok(Kernel {
        packages,
        release,
        vmlinuz,
        config,
        modules_dir,
    })
}

/// A module to load in the guest: where it goes and the host file it comes from.
pub struct Module {
    /// The module's name (`veth`).
    pub name: String,
    /// The module file in the unpacked package (possibly compressed).
    pub src: PathBuf,
}

/// Resolves `names` and their dependencies to module files, dependencies
/// first. Modules built into the kernel are left out; a module the kernel has
/// neither built in nor as a file is an error.
pub fn modules(kernel: &Kernel, names: &[String]) -> anyhow::Result<Vec<Module>> {
    let builtin =
        std::fs::read_to_string(kernel.modules_dir.join("modules.builtin")).unwrap_or_default();
    let builtin: BTreeSet<String> = builtin.lines().filter_map(module_name).collect();
    let mut files = std::collections::BTreeMap::new();
    index(&kernel.modules_dir.join("kernel"), &mut files)?;

    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    for name in names {
        visit(
            &canonical(name),
            &files,
            &builtin,
            &mut seen,
            &mut order,
            kernel,
        )?;
    }
    Ok(order)
}

/// Depth-first: dependencies are pushed before the module that needs them.
fn visit(
    name: &str,
    files: &std::collections::BTreeMap<String, PathBuf>,
    builtin: &BTreeSet<String>,
    seen: &mut BTreeSet<String>,
    order: &mut Vec<Module>,
    kernel: &Kernel,
) -> anyhow::Result<()> {
    if !seen.insert(name.to_owned()) {
        return Ok(());
    }
    let Some(src) = files.get(name) else {
        if builtin.contains(name) {
            return Ok(());
        }
        bail!(
            "kernel {} has no module {name}, neither built in nor as a file",
            kernel.release
        );
    };
    let bytes = read_module(src)?;
    for dep in depends(&bytes) {
        visit(&dep, files, builtin, seen, order, kernel)?;
    }
    order.push(Module {
        name: name.to_owned(),
        src: src.clone(),
    });
    Ok(())
}

/// Maps every module name under `dir` to its file.
fn index(dir: &Path, out: &mut std::collections::BTreeMap<String, PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            index(&path, out)?;
        } else if let Some(name) = path.to_str().and_then(module_name) {
            out.insert(name, path);
        }
    }
    Ok(())
}

/// `kernel/net/sched/cls_bpf.ko.xz` -> `cls_bpf`; names use `_`, as the kernel does.
fn module_name(path: &str) -> Option<String> {
    let file = path.rsplit('/').next()?;
    let stem = file
        .strip_suffix(".ko")
        .or_else(|| file.strip_suffix(".ko.xz"))
        .or_else(|| file.strip_suffix(".ko.zst"))
        .or_else(|| file.strip_suffix(".ko.gz"))?;
    Some(canonical(stem))
}

/// Module names treat `-` and `_` alike.
fn canonical(name: &str) -> String {
    name.replace('-', "_")
}

/// The uncompressed ELF of a module file (6.12+ ships `.ko.xz`, which busybox
/// `insmod` would hand to the kernel as is and the kernel would reject).
pub fn read_module(src: &Path) -> anyhow::Result<Vec<u8>> {
    let name = src.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        Some("xz")
    } else if name.ends_with(".zst") {
        Some("zstd")
    } else if name.ends_with(".gz") {
        Some("gzip")
    } else {
        None
    };
    let bytes = match tool {
        None => std::fs::read(src).with_context(|| format!("reading {}", src.display()))?,
        Some(tool) => {
            let out = Command::new(tool)
                .arg("-dc")
                .arg(src)
                .output()
                .with_context(|| format!("running {tool} to decompress {}", src.display()))?;
            if !out.status.success() {
                bail!(
                    "{tool} -dc {} failed: {}",
                    src.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            out.stdout
        }
    };
    if !bytes.starts_with(b"\x7fELF") {
        bail!("{} is not an ELF module after decompression", src.display());
    }
    Ok(bytes)
}

/// The `depends=` entry of a module's `.modinfo` section.
fn depends(elf: &[u8]) -> Vec<String> {
    const KEY: &[u8] = b"\0depends=";
    let Some(at) = elf.windows(KEY.len()).position(|w| w == KEY) else {
        return Vec::new();
    };
    let value = &elf[at + KEY.len()..];
    let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end])
        .split(',')
        .filter(|d| !d.is_empty())
        .map(canonical)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_are_major_minor_only() {
        assert!(is_alias("6.1"));
        assert!(is_alias("6.12"));
        assert!(!is_alias("6"));
        assert!(!is_alias("linux-image-6.1.0-48-cloud-amd64"));
        assert!(!is_alias("6.1.0"));
    }

    #[test]
    fn newest_abi_sorts_last() {
        let mut names = [
            "linux-image-6.1.0-48-cloud-amd64",
            "linux-image-6.1.0-9-cloud-amd64",
            "linux-image-6.1.0-56-cloud-amd64",
        ];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(names.last(), Some(&"linux-image-6.1.0-56-cloud-amd64"));
    }

    #[test]
    fn module_names_from_paths() {
        assert_eq!(
            module_name("kernel/net/sched/cls_bpf.ko.xz").as_deref(),
            Some("cls_bpf")
        );
        assert_eq!(
            module_name("kernel/drivers/net/veth.ko").as_deref(),
            Some("veth")
        );
        assert_eq!(
            module_name("kernel/net/foo-bar.ko.zst").as_deref(),
            Some("foo_bar")
        );
        assert_eq!(module_name("modules.dep"), None);
    }

    #[test]
    fn depends_reads_modinfo() {
        let elf = b"\x7fELF....\0license=GPL\0depends=nf_tproxy_ipv4,x-tables\0intree=Y\0";
        assert_eq!(depends(elf), vec!["nf_tproxy_ipv4", "x_tables"]);
        assert!(depends(b"\x7fELF\0depends=\0").is_empty());
    }
}
