//! `cargo xtask bench`: the mesh's data path measured against direct
//! pod-to-pod traffic on this machine.
//!
//! Builds the agent and the load generator with the release profile, runs
//! `nm-load bench` (which builds a two-node test cluster from network
//! namespaces and cgroups, and runs every workload against every scenario,
//! interleaved), then prints a markdown report of ratios to the direct
//! baseline and the targets, and writes it with the raw results and
//! machine information under `target/bench/`.

mod machine;
mod report;
mod run;
mod targets;

use anyhow::Context as _;

use crate::cmd;

/// Options of `cargo xtask bench`.
#[derive(clap::Args)]
pub struct Options {
    /// Short durations and one round (under two minutes once built).
    #[arg(long)]
    pub quick: bool,
    /// Render the report from an existing raw results file instead of running
    /// (the machine information is then collected at render time).
    #[arg(long, value_name = "RAW_JSON")]
    pub report_only: Option<std::path::PathBuf>,
}

/// Builds, runs and reports.
pub fn run(opts: &Options) -> anyhow::Result<()> {
    let dir = cmd::target_dir().join("bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let machine = machine::collect();
    let raw_path = match &opts.report_only {
        Some(p) => p.clone(),
        None => run::measure(opts.quick, &dir)?,
    };
    let text = std::fs::read_to_string(&raw_path)
        .with_context(|| format!("reading {}", raw_path.display()))?;
    let raw: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", raw_path.display()))?;
    let command = if opts.quick {
        "cargo xtask bench --quick"
    } else {
        "cargo xtask bench"
    };
    let (markdown, evaluated) = report::render(&raw, &machine, command);
    println!("{markdown}");
    let stamp = machine["timestamp"]
        .as_str()
        .unwrap_or("run")
        .replace(':', "");
    let doc = serde_json::json!({
        "command": command,
        "machine": machine,
        "targets": evaluated,
        "raw": raw,
    });
    for name in [format!("bench-{stamp}"), "latest".to_string()] {
        let json = dir.join(format!("{name}.json"));
        std::fs::write(&json, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("writing {}", json.display()))?;
        let md = dir.join(format!("{name}.md"));
        std::fs::write(&md, &markdown).with_context(|| format!("writing {}", md.display()))?;
    }
    eprintln!(
        "report: {}/latest.md, results: {}/latest.json",
        dir.display(),
        dir.display()
    );
    Ok(())
}
