//! The performance targets, evaluated against one run.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::report::{baseline, mean, pct};

/// Agent resource figures of one mesh scenario.
pub struct Resources {
    /// Agent CPU seconds per 1,000 HTTP requests, all agents summed.
    pub cpu_s_per_1k: Option<f64>,
    /// The busiest agent's CPU in vCPU, per 1,000 req/s achieved.
    pub busiest_vcpu_per_1k_rps: Option<f64>,
    /// Idle RSS of each agent, in MiB (largest over rounds).
    pub idle_rss_mib: Vec<f64>,
    /// RSS growth per 1,000 held connections, all agents summed, in KiB.
    pub rss_per_1k_conns_kib: Option<f64>,
}

fn per_round<'a>(raw: &'a Value, id: &str, w: &str, key: &str) -> Vec<&'a Value> {
    raw["results"][id][w][key]
        .as_array()
        .map(|v| v.iter().collect())
        .unwrap_or_default()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default()
}

/// Agent CPU and memory of scenario `id`.
pub fn resources(raw: &Value, id: &str) -> Resources {
    let cpu = per_round(raw, id, "http_1kib", "agent_cpu_s");
    let ok = per_round(raw, id, "http_1kib", "ok");
    let secs = per_round(raw, id, "http_1kib", "secs");
    let (mut cpu_total, mut ok_total, mut busiest) = (0.0, 0.0, Vec::new());
    for ((c, o), s) in cpu.iter().zip(&ok).zip(&secs) {
        let c = floats(c);
        let (o, s) = (o.as_f64().unwrap_or(0.0), s.as_f64().unwrap_or(0.0));
        cpu_total += c.iter().sum::<f64>();
        ok_total += o;
        if o > 0.0 && s > 0.0 {
            let max = c.iter().copied().fold(0.0, f64::max);
            busiest.push(max / s / (o / s / 1000.0));
        }
    }
    let idle = raw["results"][id]["agent_rss_idle_kib"]
        .as_array()
        .map(|rounds| {
            let per: Vec<Vec<f64>> = rounds.iter().map(floats).collect();
            let n = per.iter().map(Vec::len).max().unwrap_or(0);
            (0..n)
                .map(|i| {
                    per.iter()
                        .filter_map(|r| r.get(i))
                        .copied()
                        .fold(0.0, f64::max)
                        / 1024.0
                })
                .collect()
        })
        .unwrap_or_default();
    let held = per_round(raw, id, "hold", "held");
    let before = per_round(raw, id, "hold", "rss_before_kib");
    let during = per_round(raw, id, "hold", "rss_held_kib");
    let mut per_1k = Vec::new();
    for ((h, b), d) in held.iter().zip(&before).zip(&during) {
        let h = h.as_f64().unwrap_or(0.0);
        if h > 0.0 {
            let delta: f64 = floats(d).iter().sum::<f64>() - floats(b).iter().sum::<f64>();
            per_1k.push(delta / h * 1000.0);
        }
    }
    Resources {
        cpu_s_per_1k: (ok_total > 0.0).then(|| cpu_total / ok_total * 1000.0),
        busiest_vcpu_per_1k_rps: (!busiest.is_empty())
            .then(|| busiest.iter().sum::<f64>() / busiest.len() as f64),
        idle_rss_mib: idle,
        rss_per_1k_conns_kib: (!per_1k.is_empty())
            .then(|| per_1k.iter().sum::<f64>() / per_1k.len() as f64),
    }
}

/// One target: what, the measured value, the bound, and which side is good.
struct Target {
    name: &'static str,
    unit: &'static str,
    measured: Option<f64>,
    bound: f64,
    /// `true` when measured must be at most the bound, `false` at least.
    at_most: bool,
}

fn added(raw: &Value, id: &str, w: &str, p: &str) -> Option<f64> {
    Some(pct(raw, id, w, p)? - pct(raw, baseline(id), w, p)?)
}

fn targets(raw: &Value) -> Vec<Target> {
    let d = resources(raw, "d-cross-mtls");
    let idle_max = ["b-sockmap", "c-same", "d-cross-mtls"]
        .iter()
        .flat_map(|id| resources(raw, id).idle_rss_mib)
        .reduce(f64::max);
    let bulk = mean(raw, "d-cross-mtls", "bulk_1", "gbit_s")
        .zip(mean(raw, "a-cross", "bulk_1", "gbit_s"))
        .map(|(m, b)| 100.0 * m / b);
    let h = "http_1kib";
    vec![
        Target {
            name: "cross-node mTLS HTTP/1.1 1 KiB @1,000 req/s: added p50",
            unit: "µs",
            measured: added(raw, "d-cross-mtls", h, "p50"),
            bound: 100.0,
            at_most: true,
        },
        Target {
            name: "cross-node mTLS HTTP/1.1 1 KiB @1,000 req/s: added p99",
            unit: "µs",
            measured: added(raw, "d-cross-mtls", h, "p99"),
            bound: 250.0,
            at_most: true,
        },
        Target {
            name: "same-node fast path HTTP/1.1: p50 minus direct p50",
            unit: "µs",
            measured: added(raw, "b-sockmap", h, "p50"),
            bound: 0.0,
            at_most: true,
        },
        Target {
            name: "same-node fast path HTTP/1.1: p99 minus direct p99",
            unit: "µs",
            measured: added(raw, "b-sockmap", h, "p99"),
            bound: 0.0,
            at_most: true,
        },
        Target {
            name: "same-node fast path TCP RR 1 B: p50 minus direct p50",
            unit: "µs",
            measured: added(raw, "b-sockmap", "rr_1b", "p50"),
            bound: 0.0,
            at_most: true,
        },
        Target {
            name: "single-stream mTLS throughput, % of direct",
            unit: "%",
            measured: bulk,
            bound: 50.0,
            at_most: false,
        },
        Target {
            name: "agent CPU, busiest cross-node agent, vCPU per 1,000 req/s",
            unit: "vCPU",
            measured: d.busiest_vcpu_per_1k_rps,
            bound: 0.06,
            at_most: true,
        },
        Target {
            name: "agent RSS idle (largest agent)",
            unit: "MB",
            measured: idle_max.map(|m| m * 1024.0 * 1024.0 / 1e6),
            bound: 15.0,
            at_most: true,
        },
        Target {
            name: "agent RSS per idle cross-node connection (both agents)",
            unit: "KiB",
            measured: d.rss_per_1k_conns_kib.map(|k| k / 1000.0),
            bound: 8.0,
            at_most: true,
        },
        Target {
            name: "new mTLS connections per second (cross-node, one client)",
            unit: "/s",
            measured: mean(raw, "d-cross-mtls", "connrate", "per_s"),
            bound: 1500.0,
            at_most: false,
        },
    ]
}

fn fmt(x: f64) -> String {
    if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// The targets table (markdown) and the same as JSON.
pub fn evaluate(raw: &Value) -> (String, Value) {
    let mut out =
        String::from("| target | bound | measured | met | missed by |\n|---|---:|---:|---|---:|\n");
    let mut list = Vec::new();
    for t in targets(raw) {
        let op = if t.at_most { "≤" } else { "≥" };
        let (measured, met, miss) = match t.measured {
            None => (
                "n/a".to_string(),
                "not measured".to_string(),
                "n/a".to_string(),
            ),
            // An added latency below zero means the direct baseline's tail
            // was worse than the mesh's: noise, not a pass.
            Some(m) if t.unit == "µs" && t.bound > 0.0 && m < 0.0 => (
                format!("{} {}", fmt(m), t.unit),
                "inconclusive (baseline tail above the mesh's)".to_string(),
                "—".to_string(),
            ),
            Some(m) => {
                let met = if t.at_most {
                    m <= t.bound
                } else {
                    m >= t.bound
                };
                let by = (m - t.bound).abs();
                let rel = if t.bound != 0.0 {
                    format!(" ({:.0}%)", 100.0 * by / t.bound.abs())
                } else {
                    String::new()
                };
                let miss = if met {
                    "—".to_string()
                } else {
                    format!("{} {}{rel}", fmt(by), t.unit)
                };
                (
                    format!("{} {}", fmt(m), t.unit),
                    if met { "yes" } else { "**no**" }.to_string(),
                    miss,
                )
            }
        };
        let _ = writeln!(
            out,
            "| {} | {op} {} {} | {measured} | {met} | {miss} |",
            t.name,
            fmt(t.bound),
            t.unit
        );
        list.push(json!({"target": t.name, "bound": t.bound, "at_most": t.at_most, "unit": t.unit, "measured": t.measured, "met": t.measured.map(|m| if t.at_most { m <= t.bound } else { m >= t.bound })}));
    }
    out.push_str(
        "| L7 (HTTP routing in the agent) | — | not measured: L7 does not exist yet | — | — |\n",
    );
    (out, Value::Array(list))
}
