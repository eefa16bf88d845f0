//! `cargo xtask vm-test`: the kernel matrix.
//!
//! For every kernel (by default the Debian 12 6.1 and 6.12 cloud kernels),
//! boots a qemu guest from an initramfs that runs the `nodemesh-tests`
//! end-to-end tests, and reports PASS or FAIL per kernel. A kernel passes only
//! if its guest printed this run's PASS marker and every test binary's own
//! summary shows success; a panic, a verifier rejection, a failing test or a
//! hang (the guest is killed at the deadline) is a FAIL.
//!
//! `--broken` runs the same matrix against a deliberately broken BPF object
//! (feature `verifier-reject-test` of the kernel programs) and succeeds only
//! if the verifier rejected it on every kernel, showing the verifier's log.
//!
//! `--degraded` boots every kernel as kernels missing a feature and runs the
//! `degraded` tests there, which show the agent degrading as documented: once
//! with a BPF-LSM policy (feature `kernel-refusal-test`) that the tests
//! install to refuse sockmap, then `sock_ops`, and once booted with
//! `ipv6.disable=1`. Each boot passes only if every test it names passed.

mod apt;
mod cpio;
mod host;
mod initramfs;
mod kernel;
mod payload;
mod qemu;
mod verdict;

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::{build_ebpf, toolchain};

/// The kernel programs' feature that adds a program the verifier must reject.
const BROKEN_FEATURE: &str = "verifier-reject-test";
/// The program that feature adds; a rejection counts only if the console names it.
const BROKEN_PROGRAM: &str = "verifier_reject_test";
/// The kernel programs' feature that adds `refuse_bpf`, the BPF-LSM policy of `--degraded`.
const REFUSAL_FEATURE: &str = "kernel-refusal-test";
/// Modules every guest loads (with their dependencies) unless built in.
const MODULES: &[&str] = &["veth", "bridge", "sch_ingress", "cls_bpf"];

/// Options of `cargo xtask vm-test`.
#[derive(clap::Args)]
pub struct Options {
    /// A kernel to test: an alias (`6.1`, `6.12`, `5.10`: the newest Debian cloud kernel of that
    /// line, from the system's apt sources or else from bullseye/bookworm-backports/trixie), a
    /// Debian package name, or packages joined by `,`. Repeatable. Default: 6.1 and 6.12.
    #[arg(long = "kernel", value_name = "PACKAGE_OR_ALIAS")]
    pub kernels: Vec<String>,
    /// Seconds a guest may run before it is killed and its kernel FAILs.
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    pub timeout: u64,
    /// Test against a BPF object the verifier must reject; succeed only if every kernel FAILs so.
    #[arg(long)]
    pub broken: bool,
    /// Boot every kernel as kernels missing a feature (a BPF-LSM policy refusing sockmap or
    /// sock_ops; ipv6.disable=1) and run the agent's degraded-mode tests there.
    #[arg(long, conflicts_with_all = ["broken", "filter", "skip"])]
    pub degraded: bool,
    /// An extra kernel module to load in the guest (dependencies follow). Repeatable.
    #[arg(long = "module", value_name = "NAME")]
    pub modules: Vec<String>,
    /// A default module NOT to load, so the guest behaves like a kernel built without it
    /// (for testing the agent's degraded modes). Repeatable.
    #[arg(long = "without-module", value_name = "NAME")]
    pub without_modules: Vec<String>,
    /// A host executable (name or path) to copy into the guest with its shared libraries, in
    /// addition to `ip` and `tc`. Repeatable.
    #[arg(long = "with-binary", value_name = "NAME_OR_PATH")]
    pub host_binaries: Vec<String>,
    /// Only run tests whose name contains this filter.
    #[arg(long)]
    pub filter: Option<String>,
    /// An extra kernel command-line parameter for every guest (e.g. `lsm=landlock,yama`
    /// to boot without the BPF LSM). Repeatable.
    #[arg(long = "append", value_name = "PARAM")]
    pub kernel_args: Vec<String>,
    /// Skip tests whose name contains this pattern (libtest `--skip`). Repeatable.
    #[arg(long, value_name = "PATTERN")]
    pub skip: Vec<String>,
}

/// One boot of each kernel under `--degraded`: how the kernel is made to
/// miss a feature, and the `degraded` tests that must pass there.
struct DegradedBoot {
    /// Shown beside the kernel in the result table.
    label: &'static str,
    /// Extra kernel command-line parameters.
    kernel_args: &'static [&'static str],
    /// The tests run, by exact name; all must pass.
    tests: &'static [&'static str],
}

/// The boots of `--degraded`. The BPF-LSM policy is installed by the tests
/// themselves (`nodemesh_tests::refusal`); `lsm=` makes the BPF LSM active,
/// which Debian's 5.10 builds but leaves out of its default list.
const DEGRADED_BOOTS: &[DegradedBoot] = &[
    DegradedBoot {
        label: "refusing sockmap, then sock_ops",
        kernel_args: &["lsm=lockdown,yama,bpf"],
        tests: &[
            "without_sockmap_the_agent_meshes_without_same_node_acceleration",
            "without_sock_ops_the_agent_translates_and_enforces_policy_but_refuses_the_mesh",
        ],
    },
    DegradedBoot {
        label: "ipv6.disable=1",
        kernel_args: &["ipv6.disable=1"],
        tests: &["without_ipv6_the_agent_meshes_over_ipv4"],
    },
];

/// One boot of one kernel: its command line, the tests' arguments, and how
/// many tests must pass (`None`: whatever the binaries hold).
struct Boot {
    /// Shown beside the kernel in the result table and in file names.
    label: Option<&'static str>,
    /// Kernel command-line parameters beyond the defaults.
    kernel_args: Vec<String>,
    /// `NODEMESH_VM_TEST_ARGS`.
    test_args: String,
    /// The number of tests that must pass.
    expect_passed: Option<u64>,
}

impl Boot {
    /// The kernel column of this boot's row: `6.1`, or `6.1 [ipv6.disable=1]`.
    fn row_label(&self, spec: &str) -> String {
        match self.label {
            Some(label) => format!("{spec} [{label}]"),
            None => spec.to_owned(),
        }
    }
}

/// One kernel's row of the result table.
struct Row {
    /// The kernel as named on the command line (with its boot's label).
    kernel: String,
    /// Its `uname -r`, or `-` if it could not be prepared.
    release: String,
    /// PASS or FAIL with the reason.
    verdict: verdict::Verdict,
    /// Passed and failed test counts from the tests' own summaries.
    tests: String,
    /// Download, unpacking and initramfs time.
    prepare: Duration,
    /// qemu's wall time, boot to power-off.
    boot: Duration,
    /// Whether the verifier refused [`BROKEN_PROGRAM`] (what `--broken` expects).
    broken_program_rejected: bool,
}

/// Runs the matrix and fails if any kernel failed (or, with `--broken`, if any passed).
pub fn run(opts: &Options) -> anyhow::Result<()> {
    let started = Instant::now();
    host::ensure_tools()?;
    let cache = toolchain::cache_dir()?.join("kernels");
    std::fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    let out_dir = qemu::output_dir();
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;

    // The tests link the agent, whose build embeds the regular object: build it in any case.
    let mut bpf_object = build_ebpf::run(&build_ebpf::Options::default())?;
    if opts.broken {
        bpf_object = build_ebpf::run(&build_ebpf::Options {
            features: vec![BROKEN_FEATURE.to_owned()],
            variant: Some("broken".to_owned()),
            ..Default::default()
        })?;
    }
    let refusal_object = if opts.degraded {
        Some(build_ebpf::run(&build_ebpf::Options {
            features: vec![REFUSAL_FEATURE.to_owned()],
            variant: Some("refusal".to_owned()),
            ..Default::default()
        })?)
    } else {
        None
    };
    let binaries = payload::build_tests(if opts.degraded {
        payload::DEGRADED_TESTS
    } else {
        payload::KERNEL_TESTS
    })?;
    for test in &binaries.tests {
        eprintln!("test binary: {}", test.display());
    }
    for helper in &binaries.helpers {
        eprintln!("helper binary: {}", helper.display());
    }

    let host_tools = payload::host_tools(&opts.host_binaries)?;
    let nonce = nonce();
    let mut env = vec![
        ("NODEMESH_VM_NONCE".to_owned(), nonce.clone()),
        ("NODEMESH_IN_VM".to_owned(), "1".to_owned()),
        (
            "NODEMESH_BPF_OBJECT".to_owned(),
            initramfs::BPF_OBJECT.to_owned(),
        ),
        (
            "NODEMESH_TEST_BIN_DIR".to_owned(),
            initramfs::BIN_DIR.to_owned(),
        ),
        ("RUST_BACKTRACE".to_owned(), "1".to_owned()),
    ];
    if refusal_object.is_some() {
        env.push((
            "NODEMESH_REFUSAL_OBJECT".to_owned(),
            initramfs::REFUSAL_OBJECT.to_owned(),
        ));
    }
    if let Ok(log) = std::env::var("RUST_LOG") {
        env.push(("RUST_LOG".to_owned(), log));
    }
    let mut modules: Vec<String> = MODULES.iter().map(|m| (*m).to_owned()).collect();
    modules.extend(opts.modules.iter().cloned());
    modules.retain(|m| !opts.without_modules.contains(m));

    let boots: Vec<Boot> = if opts.degraded {
        DEGRADED_BOOTS
            .iter()
            .map(|b| Boot {
                label: Some(b.label),
                kernel_args: opts
                    .kernel_args
                    .iter()
                    .cloned()
                    .chain(b.kernel_args.iter().map(|a| (*a).to_owned()))
                    .collect(),
                test_args: format!("--ignored --exact {}", b.tests.join(" ")),
                expect_passed: Some(b.tests.len() as u64),
            })
            .collect()
    } else {
        vec![Boot {
            label: None,
            kernel_args: opts.kernel_args.clone(),
            test_args: test_args(opts)?,
            expect_passed: None,
        }]
    };
    let specs: Vec<String> = if opts.kernels.is_empty() {
        kernel::DEFAULT_KERNELS
            .iter()
            .map(|k| (*k).to_owned())
            .collect()
    } else {
        opts.kernels.clone()
    };
    let mut rows = Vec::new();
    for spec in &specs {
        for boot in &boots {
            let mut env = env.clone();
            env.push(("NODEMESH_VM_TEST_ARGS".to_owned(), boot.test_args.clone()));
            let payload = initramfs::Payload {
                binaries: &binaries,
                bpf_object: &bpf_object,
                refusal_object: refusal_object.as_deref(),
                env: &env,
                host_tools: &host_tools,
            };
            let row = match run_kernel(spec, &cache, &modules, &payload, &nonce, boot, opts) {
                Ok(row) => row,
                Err(e) => Row {
                    kernel: boot.row_label(spec),
                    release: "-".into(),
                    verdict: verdict::Verdict::Fail(format!("{e:#}")),
                    tests: "-".into(),
                    prepare: Duration::ZERO,
                    boot: Duration::ZERO,
                    broken_program_rejected: false,
                },
            };
            rows.push(row);
        }
    }

    print_table(&rows, &out_dir);
    let passed = rows
        .iter()
        .filter(|r| matches!(r.verdict, verdict::Verdict::Pass))
        .count();
    let failed = rows.len() - passed;
    eprintln!("total wall time {:.1} s", started.elapsed().as_secs_f64());
    println!("{passed} passed, {failed} failed");
    if opts.broken {
        let rejected = rows.iter().filter(|r| r.broken_program_rejected).count();
        println!(
            "broken object: {BROKEN_PROGRAM} rejected by the verifier on {rejected} of {} kernels",
            rows.len()
        );
        if rejected != rows.len() || passed > 0 {
            bail!("the {BROKEN_PROGRAM} program was not rejected by the verifier on every kernel");
        }
        return Ok(());
    }
    if failed > 0 {
        bail!("{failed} of {} kernels failed", rows.len());
    }
    Ok(())
}

/// Prepares, boots and judges one boot of one kernel.
fn run_kernel(
    spec: &str,
    cache: &std::path::Path,
    modules: &[String],
    payload: &initramfs::Payload<'_>,
    nonce: &str,
    boot: &Boot,
    opts: &Options,
) -> anyhow::Result<Row> {
    let start = Instant::now();
    let kernel =
        kernel::prepare(spec, cache).with_context(|| format!("preparing kernel {spec}"))?;
    let features: Vec<String> = kernel
        .features()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    eprintln!(
        "kernel {spec}: {} from {}",
        kernel.release,
        kernel.packages.join(", ")
    );
    eprintln!("kernel {spec} config: {}", features.join(" "));
    let out_dir = qemu::output_dir();
    // Files of a labelled boot carry its label: `6.1.0-56-cloud-amd64-ipv6.disable=1.log`.
    let name = match boot.label {
        Some(label) => format!(
            "{}-{}",
            kernel.release,
            label
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '=' {
                    c
                } else {
                    '-'
                })
                .collect::<String>()
        ),
        None => kernel.release.clone(),
    };
    let initrd = out_dir.join(format!("{name}.initramfs.cpio"));
    let size = initramfs::build(&kernel, modules, payload, &initrd)
        .with_context(|| format!("building the initramfs for {}", kernel.release))?;
    eprintln!(
        "initramfs {} ({:.1} MB)",
        initrd.display(),
        size as f64 / 1e6
    );
    let prepare = start.elapsed();

    let log = out_dir.join(format!("{name}.log"));
    let booted = qemu::boot(&qemu::Guest {
        vmlinuz: &kernel.vmlinuz,
        initrd: &initrd,
        log: &log,
        label: &name,
        timeout: Duration::from_secs(opts.timeout),
        kernel_args: &boot.kernel_args,
    })?;
    let mut reading = verdict::read(&booted.serial, nonce, booted.timed_out);
    if let Some(expected) = boot.expect_passed
        && matches!(reading.verdict, verdict::Verdict::Pass)
        && reading.passed != expected
    {
        reading.verdict = verdict::Verdict::Fail(format!(
            "{} tests passed where {expected} had to run and pass",
            reading.passed
        ));
    }
    if reading.verifier_rejected {
        eprintln!(
            "verifier log from {} (full console in {}):",
            kernel.release,
            log.display()
        );
        for line in verdict::verifier_excerpt(&booted.serial) {
            eprintln!("    {line}");
        }
    }
    Ok(Row {
        kernel: boot.row_label(spec),
        release: kernel.release.clone(),
        verdict: reading.verdict,
        tests: format!("{} ok, {} failed", reading.passed, reading.failed),
        prepare,
        boot: booted.elapsed,
        broken_program_rejected: verdict::rejected_by_name(&booted.serial, BROKEN_PROGRAM),
    })
}

/// Prints the per-kernel result table.
fn print_table(rows: &[Row], out_dir: &std::path::Path) {
    let width = |f: fn(&Row) -> &str, title: &str| {
        rows.iter()
            .map(|r| f(r).len())
            .chain([title.len()])
            .max()
            .unwrap_or(0)
    };
    let wk = width(|r| &r.kernel, "kernel");
    let wr = width(|r| &r.release, "release");
    let wt = width(|r| &r.tests, "tests");
    println!();
    println!(
        "{:wk$}  {:wr$}  {:wt$}  {:>9}  {:>7}  result",
        "kernel", "release", "tests", "prepare", "boot"
    );
    for r in rows {
        println!(
            "{:wk$}  {:wr$}  {:wt$}  {:>8.1}s  {:>6.1}s  {}",
            r.kernel,
            r.release,
            r.tests,
            r.prepare.as_secs_f64(),
            r.boot.as_secs_f64(),
            r.verdict
        );
    }
    println!("console logs: {}/<release>[-<boot>].log", out_dir.display());
}

/// The arguments every test binary gets after `--test-threads=1`.
fn test_args(opts: &Options) -> anyhow::Result<String> {
    let mut args = Vec::new();
    for skip in &opts.skip {
        args.push("--skip".to_owned());
        args.push(skip.clone());
    }
    args.extend(opts.filter.iter().cloned());
    if args
        .iter()
        .any(|a| a.is_empty() || a.contains(char::is_whitespace))
    {
        bail!("--filter and --skip patterns must be non-empty and without spaces");
    }
    Ok(args.join(" "))
}

/// A value no test output can predict, for the guest's result marker.
fn nonce() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{:x}{:x}", nanos, std::process::id())
}
