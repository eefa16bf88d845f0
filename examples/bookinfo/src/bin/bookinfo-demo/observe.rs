//! What the demo reads from the agents' admin endpoints and from `loadgen`:
//! `/debug/connections` sampled while traffic runs, `/debug/datapath` flows,
//! `/metrics` and the identity numbers in `/debug/state` at the end.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::cluster::{Demo, NODES};
use crate::config::{FRONTEND_VIP, RATINGS_VIP};
use crate::signals;

/// How often the admin endpoints are sampled while traffic runs.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// How long `loadgen` may run.
const LOADGEN_TIMEOUT: Duration = Duration::from_secs(60);

/// One Prometheus sample.
#[derive(Debug, Clone)]
pub struct Metric {
    /// The family name.
    pub name: String,
    /// The labels.
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
}

/// A kernel flow (`/debug/datapath`) with its peak number of open connections.
#[derive(Debug, Clone, Default)]
pub struct LiveFlow {
    /// The flow as last seen.
    pub flow: Value,
    /// Most connections seen open at once (opened minus closed) while sampling.
    pub peak_open: u64,
    /// Samples in which the flow had open connections.
    pub samples_open: u64,
}

/// Everything the report shows, per node where the agents report it.
#[derive(Default)]
pub struct Observed {
    /// `loadgen`'s JSON line.
    pub loadgen: Value,
    /// mTLS tunnels seen in `/debug/connections`, by node and tunnel id (last sighting).
    pub tunnels: [BTreeMap<u64, Value>; 2],
    /// Kernel flows by node and key (src, dst, port, direction).
    pub flows: [BTreeMap<(u64, u64, u64, String), LiveFlow>; 2],
    /// `/metrics` at the end, per node.
    pub metrics: [Vec<Metric>; 2],
    /// Identity numbers to service accounts, per node (`/debug/state`).
    pub identities: [BTreeMap<u64, String>; 2],
    /// Admin samples taken while traffic ran.
    pub samples: u64,
}

/// Runs `loadgen` in its pod while sampling the agents, then reads the final counters.
pub fn run(demo: &Demo, requests: usize, concurrency: usize) -> anyhow::Result<Observed> {
    let args = [
        "loadgen".to_string(),
        FRONTEND_VIP.into(),
        requests.to_string(),
        concurrency.to_string(),
        RATINGS_VIP.into(),
    ];
    let mut cmd = demo.command("loadgen", &args);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().context("starting loadgen")?;
    let pid = child.id();
    let waiter = std::thread::spawn(move || child.wait_with_output());
    let mut obs = Observed::default();
    let deadline = Instant::now() + LOADGEN_TIMEOUT;
    while !waiter.is_finished() {
        if signals::cancelled() || Instant::now() > deadline {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = waiter.join();
            signals::check()?;
            bail!("loadgen did not finish within {LOADGEN_TIMEOUT:?}");
        }
        sample(demo, &mut obs);
        std::thread::sleep(SAMPLE_EVERY);
    }
    let out = waiter
        .join()
        .map_err(|_| anyhow::anyhow!("loadgen waiter panicked"))?
        .context("waiting for loadgen")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    obs.loadgen = serde_json::from_str(last).with_context(|| {
        format!(
            "loadgen printed no JSON ({}): {stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    sample(demo, &mut obs);
    for (i, agent) in demo.agents.iter().enumerate() {
        let metrics = agent
            .get("/metrics")
            .with_context(|| format!("reading /metrics of {}", NODES[i]))?;
        obs.metrics[i] = parse_metrics(body(&metrics));
        let state = agent
            .get("/debug/state")
            .with_context(|| format!("reading /debug/state of {}", NODES[i]))?;
        obs.identities[i] = identities(body(&state));
    }
    Ok(obs)
}

/// Takes one sample of `/debug/connections` and `/debug/datapath` on every node.
fn sample(demo: &Demo, obs: &mut Observed) {
    obs.samples += 1;
    for (i, agent) in demo.agents.iter().enumerate() {
        let conns = agent.get("/debug/connections").unwrap_or_default();
        if let Ok(v) = serde_json::from_str::<Value>(body(&conns)) {
            for t in v["tunnels"].as_array().into_iter().flatten() {
                if let Some(id) = t["id"].as_u64() {
                    obs.tunnels[i].insert(id, t.clone());
                }
            }
        }
        let dp = agent.get("/debug/datapath").unwrap_or_default();
        if let Ok(v) = serde_json::from_str::<Value>(body(&dp)) {
            for f in v["flows"].as_array().into_iter().flatten() {
                let n = |k: &str| f[k].as_u64().unwrap_or(0);
                let key = (
                    n("src_identity"),
                    n("dst_identity"),
                    n("dst_port"),
                    f["direction"].as_str().unwrap_or("?").to_string(),
                );
                let open = n("opened").saturating_sub(n("closed"));
                let e = obs.flows[i].entry(key).or_default();
                e.flow = f.clone();
                e.peak_open = e.peak_open.max(open);
                if open > 0 {
                    e.samples_open += 1;
                }
            }
        }
    }
}

/// The body of an HTTP/1.1 response.
pub fn body(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, body)| body)
}

/// Parses the Prometheus text format (no escapes in label values needed here).
pub fn parse_metrics(text: &str) -> Vec<Metric> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let value = value.parse().ok()?;
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    Some((k.to_string(), v.trim_matches('"').to_string()))
                })
                .collect();
            Some(Metric {
                name: name.to_string(),
                labels,
                value,
            })
        })
        .collect()
}

/// Identity numbers to service accounts, from the `identities` map of the
/// agent's `/debug/state` (the desired state's `Debug` rendering).
pub fn identities(state: &str) -> BTreeMap<u64, String> {
    let mut out = BTreeMap::new();
    let mut inside = false;
    let mut number = None;
    for line in state.lines() {
        let t = line.trim();
        if line.starts_with("    identities: {") {
            inside = true;
            continue;
        }
        if !inside {
            continue;
        }
        if line.starts_with("    }") {
            break;
        }
        if let Some(n) = t.strip_suffix(": Identity {") {
            number = n.parse().ok();
        } else if let (Some(sa), Some(n)) = (t.strip_prefix("service_account: "), number) {
            out.insert(n, sa.trim_end_matches(',').trim_matches('"').to_string());
            number = None;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_come_from_the_state_dump() {
        let state = "DesiredState {\n    identities: {\n        1: Identity {\n            trust_domain: \"cluster.local\",\n            namespace: \"demo\",\n            service_account: \"frontend\",\n        },\n    },\n    routes: {\n";
        assert_eq!(identities(state)[&1], "frontend");
    }

    #[test]
    fn metrics_parse() {
        let m = parse_metrics(
            "# HELP x y\nnodemesh_tcp_connections_opened_total{direction=\"outbound\",dst_identity=\"1\"} 300\n",
        );
        assert_eq!(m[0].labels["dst_identity"], "1");
        assert_eq!(m[0].value, 300.0);
    }
}
