//! What the benchmark ran on: kernel, CPUs, load, toolchain, commit.

use std::process::Command;

use serde_json::{Value, json};

use crate::cmd;

fn read(path: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn output(program: &str, args: &[&str]) -> String {
    cmd::output(
        Command::new(program)
            .args(args)
            .current_dir(cmd::workspace_root()),
    )
    .unwrap_or_default()
    .trim()
    .to_string()
}

/// Machine information as JSON.
pub fn collect() -> Value {
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_default();
    let mem_kib: u64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    json!({
        "timestamp": output("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
        "kernel": read("/proc/sys/kernel/osrelease"),
        "cpus": std::thread::available_parallelism().map_or(0, usize::from),
        "cpu_model": model,
        "mem_mib": mem_kib / 1024,
        "loadavg_start": read("/proc/loadavg"),
        "os": read("/etc/os-release").lines().find_map(|l| l.strip_prefix("PRETTY_NAME=")).unwrap_or("").trim_matches('"'),
        "rustc": output("rustc", &["--version"]),
        "commit": output("git", &["rev-parse", "--short", "HEAD"]),
    })
}

/// The one-line summary printed under the report.
pub fn summary(m: &Value) -> String {
    format!(
        "kernel {}, {} CPUs ({}), {} MiB RAM, {}, {}, commit {}, load average at start {}",
        m["kernel"].as_str().unwrap_or("?"),
        m["cpus"],
        m["cpu_model"].as_str().unwrap_or("?"),
        m["mem_mib"],
        m["os"].as_str().unwrap_or("?"),
        m["rustc"].as_str().unwrap_or("?"),
        m["commit"].as_str().unwrap_or("?"),
        m["loadavg_start"].as_str().unwrap_or("?"),
    )
}
