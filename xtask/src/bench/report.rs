//! The markdown report: latency, throughput and agent resources as ratios
//! to the direct baseline, then the targets.

use std::fmt::Write as _;

use serde_json::Value;

use super::{machine, targets};

/// The direct baseline each scenario is compared with: same-node mesh
/// against same-node direct, cross-node mesh against cross-node direct.
pub fn baseline(id: &str) -> &'static str {
    if id.contains("cross") {
        "a-cross"
    } else {
        "a-same"
    }
}

/// Mean of a per-round list of numbers (`results[id][workload][key]`).
pub fn mean(raw: &Value, id: &str, workload: &str, key: &str) -> Option<f64> {
    let v = raw["results"][id][workload][key].as_array()?;
    let xs: Vec<f64> = v.iter().filter_map(Value::as_f64).collect();
    (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
}

/// A merged latency percentile in microseconds.
pub fn pct(raw: &Value, id: &str, workload: &str, p: &str) -> Option<f64> {
    raw["results"][id][workload]["latency"][format!("{p}_us")].as_f64()
}

/// Sum over rounds of a per-round count (errors).
fn total(raw: &Value, id: &str, workload: &str, key: &str) -> u64 {
    raw["results"][id][workload][key]
        .as_array()
        .map_or(0, |v| v.iter().filter_map(Value::as_u64).sum())
}

fn num(v: Option<f64>, digits: usize) -> String {
    v.map_or("n/a".into(), |x| format!("{x:.digits$}"))
}

fn ratio(v: Option<f64>, base: Option<f64>) -> String {
    match (v, base) {
        (Some(v), Some(b)) if b > 0.0 => format!("{:.2}×", v / b),
        _ => "n/a".into(),
    }
}

fn added(v: Option<f64>, base: Option<f64>) -> String {
    match (v, base) {
        (Some(v), Some(b)) => format!("{:+.0}", v - b),
        _ => "n/a".into(),
    }
}

fn scenarios(raw: &Value) -> Vec<(String, String)> {
    raw["scenarios"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            (
                s["id"].as_str().unwrap_or("?").to_string(),
                s["label"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect()
}

fn latency_table(out: &mut String, raw: &Value) {
    let rate = raw["http"]["rate"].as_u64().unwrap_or(0);
    let conns = raw["http"]["conns"].as_u64().unwrap_or(0);
    let _ = writeln!(
        out,
        "### Latency (µs; ratio and added latency against the direct baseline of the same placement)\n"
    );
    let _ = writeln!(
        out,
        "| workload | scenario | p50 | p99 | p99.9 | p50 ratio | p99 ratio | added p50 | added p99 | added p99.9 | samples | errors |"
    );
    let _ = writeln!(
        out,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let workloads = [
        ("rr_1b", "TCP RR 1 B".to_string()),
        ("rr_1kib", "TCP RR 1 KiB".to_string()),
        (
            "http_1kib",
            format!("HTTP/1.1 1 KiB, {rate} req/s open loop, {conns} conns"),
        ),
    ];
    for (w, label) in &workloads {
        for (id, _) in scenarios(raw) {
            let b = baseline(&id);
            let (p50, p99, p999) = (
                pct(raw, &id, w, "p50"),
                pct(raw, &id, w, "p99"),
                pct(raw, &id, w, "p999"),
            );
            let (b50, b99, b999) = (
                pct(raw, b, w, "p50"),
                pct(raw, b, w, "p99"),
                pct(raw, b, w, "p999"),
            );
            let direct = id == b;
            let dash = |s: String| if direct { "—".to_string() } else { s };
            let _ = writeln!(
                out,
                "| {label} | {id} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                num(p50, 0),
                num(p99, 0),
                num(p999, 0),
                dash(ratio(p50, b50)),
                dash(ratio(p99, b99)),
                dash(added(p50, b50)),
                dash(added(p99, b99)),
                dash(added(p999, b999)),
                raw["results"][&id][w]["latency"]["count"],
                total(raw, &id, w, "errors"),
            );
        }
    }
}

fn throughput_table(out: &mut String, raw: &Value) {
    let _ = writeln!(out, "\n### Throughput (fraction of the direct baseline)\n");
    let _ = writeln!(
        out,
        "| scenario | bulk, 1 stream (Gbit/s) | of direct | bulk, 4 streams (Gbit/s) | of direct | new connections/s | of direct | failed streams / connections |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for (id, _) in scenarios(raw) {
        let b = baseline(&id);
        let cell = |w: &str, key: &str, digits: usize| {
            let v = mean(raw, &id, w, key);
            let base = mean(raw, b, w, key);
            let frac = match (v, base) {
                (Some(v), Some(b)) if b > 0.0 && id != baseline(&id) => {
                    format!("{:.0}%", 100.0 * v / b)
                }
                _ => "—".into(),
            };
            (num(v, digits), frac)
        };
        let (b1, f1) = cell("bulk_1", "gbit_s", 2);
        let (b4, f4) = cell("bulk_4", "gbit_s", 2);
        let (cr, fc) = cell("connrate", "per_s", 0);
        let errors = ["bulk_1", "bulk_4", "connrate"]
            .iter()
            .map(|w| total(raw, &id, w, "errors"))
            .sum::<u64>();
        let _ = writeln!(
            out,
            "| {id} | {b1} | {f1} | {b4} | {f4} | {cr} | {fc} | {errors} |"
        );
    }
}

fn resources_table(out: &mut String, raw: &Value) {
    let hold = raw["hold_conns"].as_u64().unwrap_or(0);
    let _ = writeln!(
        out,
        "\n### Agent resources (agents on the path: node 1's, and node 2's for cross-node)\n"
    );
    let _ = writeln!(
        out,
        "| scenario | agent CPU s per 1,000 HTTP req (all agents) | busiest agent, vCPU per 1,000 req/s | idle RSS per agent (MiB) | connections held open | RSS per 1,000 open conns (MiB, all agents) | per idle conn (KiB) |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
    for (id, _) in scenarios(raw) {
        if id.starts_with("a-") {
            continue;
        }
        let r = targets::resources(raw, &id);
        let idle = r
            .idle_rss_mib
            .iter()
            .map(|m| format!("{m:.1}"))
            .collect::<Vec<_>>()
            .join(" / ");
        let held: Vec<String> = raw["results"][&id]["hold"]["held"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|h| format!("{h} of {hold}"))
            .collect();
        let _ = writeln!(
            out,
            "| {id} | {} | {} | {idle} | {} | {} | {} |",
            num(r.cpu_s_per_1k, 3),
            num(r.busiest_vcpu_per_1k_rps, 3),
            held.join(", "),
            num(r.rss_per_1k_conns_kib.map(|k| k / 1024.0), 2),
            num(r.rss_per_1k_conns_kib.map(|k| k / 1000.0), 2),
        );
    }
    let _ = writeln!(
        out,
        "\nCPU: utime+stime deltas of the agent processes (`/proc/<pid>/stat`) over the HTTP run. RSS: `VmRSS`, idle one second after start, then with up to {hold} idle connections held open through the mesh (delta over the same agents just before, divided by the connections actually held)."
    );
}

/// Run time of the agents' kernel programs during the HTTP run of each mesh
/// scenario, from the kernel's BPF statistics (`BPF_ENABLE_STATS`).
fn kernel_table(out: &mut String, raw: &Value) {
    let _ = writeln!(
        out,
        "\n### Kernel programs (HTTP/1.1 1 KiB run, both agents' programs)\n"
    );
    let _ = writeln!(
        out,
        "| scenario | program | runs per request | ns per run | kernel CPU per request (µs) |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|");
    for (id, _) in scenarios(raw) {
        let rounds = raw["results"][&id]["http_1kib"]["kernel_programs"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if rounds.is_empty() {
            continue;
        }
        let ok: f64 = raw["results"][&id]["http_1kib"]["ok"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_f64)
            .sum();
        let mut totals: std::collections::BTreeMap<String, (f64, f64)> = Default::default();
        for round in &rounds {
            for (name, v) in round.as_object().into_iter().flatten() {
                let t = totals.entry(name.clone()).or_default();
                t.0 += v["run_ns"].as_f64().unwrap_or(0.0);
                t.1 += v["runs"].as_f64().unwrap_or(0.0);
            }
        }
        let all_ns: f64 = totals.values().map(|t| t.0).sum();
        for (name, (ns, runs)) in &totals {
            if *runs == 0.0 {
                continue;
            }
            let _ = writeln!(
                out,
                "| {id} | {name} | {} | {} | {} |",
                num((ok > 0.0).then(|| runs / ok), 2),
                num(Some(ns / runs), 0),
                num((ok > 0.0).then(|| ns / ok / 1000.0), 2)
            );
        }
        let _ = writeln!(
            out,
            "| {id} | all | | | {} |",
            num((ok > 0.0).then(|| all_ns / ok / 1000.0), 2)
        );
    }
    let _ = writeln!(
        out,
        "\nThe kernel counts each program's run time only while statistics are enabled, which the bench does for the HTTP run alone (each run then also pays for two clock reads). This CPU is spent in the applications' and the agents' system calls and softirqs, on top of the agents' own CPU above."
    );
}

/// Renders the report; returns it with the evaluated targets.
pub fn render(raw: &Value, machine: &Value, command: &str) -> (String, Value) {
    let mut out = String::new();
    let _ = writeln!(out, "## nodemesh benchmark\n");
    let _ = writeln!(out, "Command: `{command}`  ");
    let _ = writeln!(out, "Machine: {}  ", machine::summary(machine));
    let _ = writeln!(
        out,
        "Placement: {}  ",
        raw["placement"].as_str().unwrap_or("?")
    );
    let _ = writeln!(
        out,
        "Rounds: {} (scenarios interleaved within each round; histograms merged across rounds, other figures averaged), run time {:.0} s\n",
        raw["rounds"],
        raw["elapsed_s"].as_f64().unwrap_or(0.0)
    );
    let load: Vec<&str> = raw["loadavg"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let _ = writeln!(
        out,
        "1-minute load average at each round start and at the end: {} (on {} CPUs; above the CPU count, other work competed with the run)\n",
        load.join(", "),
        machine["cpus"]
    );
    let _ = writeln!(out, "Scenarios:\n");
    for (id, label) in scenarios(raw) {
        let _ = writeln!(out, "- `{id}`: {label} (baseline `{}`)", baseline(&id));
    }
    let _ = writeln!(
        out,
        "- `e-l7`: L7 (HTTP routing in the agent) does not exist yet: not measured\n"
    );
    latency_table(&mut out, raw);
    throughput_table(&mut out, raw);
    resources_table(&mut out, raw);
    kernel_table(&mut out, raw);
    let (table, evaluated) = targets::evaluate(raw);
    let _ = writeln!(out, "\n### Targets (reported, not asserted)\n");
    out.push_str(&table);
    (out, evaluated)
}
