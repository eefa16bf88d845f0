//! `bookinfo-demo`: the program behind `cargo xtask demo`.
//!
//! Builds a two-node cluster of network namespaces on this machine, runs
//! the Bookinfo-like sample app in it (frontend and reviews-v1 on node-a;
//! reviews-v2, ratings and loadgen on node-b) with one `nodemesh agent` per
//! node in file mode, drives traffic with `loadgen`, and prints what the
//! mesh did: mTLS identities, the canary split, a policy denial, golden
//! metrics, per-pair L4 counters and live flows. Everything it made is
//! removed on exit, on Ctrl-C and on SIGTERM; `--keep` leaves the cluster
//! up until then.
//!
//! Needs root. Finds `nodemesh` in `$NODEMESH_BIN` or beside itself, and the
//! sample app (`bookinfo`) beside itself.

mod cluster;
mod config;
mod keep;
mod observe;
mod report;
mod signals;
mod summary;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;

/// How long a run without `--keep` may take once built.
const RUN_DEADLINE: Duration = Duration::from_secs(110);

/// Command-line options.
#[derive(Parser, Clone)]
#[command(
    name = "bookinfo-demo",
    about = "nodemesh demo: Bookinfo on a two-node mesh"
)]
struct Options {
    /// Leave the cluster and agents running after the report, until Ctrl-C.
    #[arg(long)]
    keep: bool,
    /// Requests loadgen sends to the frontend (at most 100,000).
    #[arg(long, default_value_t = 600)]
    requests: usize,
    /// Requests loadgen keeps in flight (1 to 64).
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Also write the measured claims as JSON to this file.
    #[arg(long)]
    summary: Option<PathBuf>,
}

fn main() -> ExitCode {
    let opts = Options::parse();
    set_defaults();
    if let Err(e) = signals::install((!opts.keep).then_some(RUN_DEADLINE)) {
        eprintln!("bookinfo-demo: installing signal handlers: {e}");
        return ExitCode::FAILURE;
    }
    // The cluster lives on a worker thread so a panic in the topology
    // library unwinds through its guards and is reported here.
    let worker = std::thread::spawn(move || run(&opts));
    match worker.join() {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(_)) if signals::cancelled() => {
            eprintln!("bookinfo-demo: stopped; everything it made is removed");
            ExitCode::from(130)
        }
        Ok(Err(e)) => {
            eprintln!("bookinfo-demo failed: {e:#}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("bookinfo-demo failed (see the panic above); everything it made is removed");
            ExitCode::FAILURE
        }
    }
}

fn run(opts: &Options) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "the demo needs root (network namespaces, cgroups, BPF): run `sudo -E cargo xtask demo`"
        );
    }
    let exe = std::env::current_exe().context("finding the demo's own path")?;
    let app = exe.with_file_name("bookinfo");
    if !app.exists() {
        bail!(
            "{} is missing: build it with `cargo build -p nodemesh-bookinfo` (`cargo xtask demo` does)",
            app.display()
        );
    }
    if std::env::var_os("NODEMESH_BIN").is_none() && !exe.with_file_name("nodemesh").exists() {
        bail!(
            "nodemesh is missing beside {}: build it with `cargo build -p nodemesh-agent --bin nodemesh`, or set NODEMESH_BIN",
            exe.display()
        );
    }
    let started = Instant::now();
    println!("nodemesh demo: Bookinfo on a two-node mesh (network namespaces on this machine)");
    println!("  starting the cluster, the app and one agent per node ...");
    let demo = cluster::Demo::start(app)?;
    signals::check()?;
    println!(
        "  ready in {:.1}s; loadgen sends {} requests to the frontend ({} at a time) ...",
        started.elapsed().as_secs_f64(),
        opts.requests,
        opts.concurrency
    );
    let obs = observe::run(&demo, opts.requests, opts.concurrency)?;
    report::print(&demo, &obs);
    if let Some(path) = &opts.summary {
        let doc = serde_json::to_string_pretty(&summary::build(&demo, &obs))?;
        std::fs::write(path, doc).with_context(|| format!("writing {}", path.display()))?;
    }
    println!("\nfinished in {:.1}s", started.elapsed().as_secs_f64());
    if opts.keep {
        keep::wait(&demo);
    }
    println!("removing the cluster ...");
    Ok(())
}

/// `NODEMESH_BIN` (the topology library's way to find the agent) defaults
/// to the `nodemesh` beside this binary, and the agents log warnings only
/// unless `NODEMESH_LOG` says otherwise.
fn set_defaults() {
    let beside = std::env::current_exe()
        .ok()
        .map(|exe| exe.with_file_name("nodemesh"));
    // SAFETY: called first thing in `main`, before any other thread exists.
    unsafe {
        if std::env::var_os("NODEMESH_BIN").is_none()
            && let Some(bin) = beside
        {
            std::env::set_var("NODEMESH_BIN", bin);
        }
        if std::env::var_os("NODEMESH_LOG").is_none() {
            std::env::set_var("NODEMESH_LOG", "warn");
        }
    }
}
