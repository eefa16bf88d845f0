//! The demo's report: every number printed here was measured in this run,
//! by `loadgen` or by the agents (`/debug/connections`, `/debug/datapath`,
//! `/metrics`).

use std::collections::BTreeMap;

use crate::cluster::{Demo, NODES};
use crate::observe::{Metric, Observed};

/// Prints the whole report to stdout.
pub fn print(demo: &Demo, obs: &Observed) {
    layout(demo);
    mtls(obs);
    split(obs);
    policy(obs);
    golden(obs);
    pairs(obs);
    flows(obs);
}

fn heading(title: &str) {
    println!("\n== {title}");
}

fn layout(demo: &Demo) {
    heading(
        "Cluster: two nodes, one nodemesh agent each (file mode, examples/cluster + real pod IPs)",
    );
    for (i, node) in NODES.iter().enumerate() {
        let pods: Vec<String> = Demo::pod_names()
            .filter(|p| demo.node_of(p) == i)
            .map(|p| format!("{p} {}", demo.pod(p).ip))
            .collect();
        println!(
            "  {node} ({}): {}",
            demo.cluster.nodes[i].link_ip,
            pods.join(", ")
        );
    }
}

fn mtls(obs: &Observed) {
    heading("mTLS between the nodes (/debug/connections, tunnels seen while traffic ran)");
    let mut any = false;
    for (i, tunnels) in obs.tunnels.iter().enumerate() {
        for t in tunnels.values() {
            any = true;
            println!(
                "  {:<7} {:<8} {} -> {}",
                NODES[i],
                t["direction"].as_str().unwrap_or("?"),
                t["source"].as_str().unwrap_or("?"),
                t["destination"].as_str().unwrap_or("?"),
            );
            println!(
                "  {:<7} {:<8} {} {}, {} streams, {} B to / {} B from the destination",
                "",
                "",
                t["tls_version"].as_str().unwrap_or("?"),
                t["cipher_suite"].as_str().unwrap_or("?"),
                t["streams_total"],
                t["bytes_to_destination"],
                t["bytes_from_destination"],
            );
        }
    }
    if !any {
        println!("  no mTLS tunnel seen");
    }
    println!(
        "  Same-node connections (frontend -> reviews-v1, reviews-v2 -> ratings) are authorized and delivered by their node's agent; their bytes never leave the node."
    );
}

fn split(obs: &Observed) {
    heading("Canary: HTTPRoute reviews-canary sends 90% of reviews traffic to v1, 10% to v2");
    let versions = &obs.loadgen["versions"];
    let count = |v: &str| versions[v].as_u64().unwrap_or(0);
    let (v1, v2) = (count("v1"), count("v2"));
    let total = v1 + v2;
    let pct = |n: u64| {
        if total == 0 {
            0.0
        } else {
            100.0 * n as f64 / total as f64
        }
    };
    println!(
        "  observed by loadgen: reviews-v1 {v1} ({:.1}%), reviews-v2 {v2} ({:.1}%) of {total} answered requests",
        pct(v1),
        pct(v2)
    );
    if let Some(other) = versions["unknown"].as_u64() {
        println!("  requests without a version in the answer: {other}");
    }
    println!(
        "  (applied per connection: the route's weights become backend weights in the kernel and the agent; L7 routing is not implemented yet)"
    );
}

fn policy(obs: &Observed) {
    heading("Policy: AuthorizationPolicy ratings-deny-loadgen (loadgen -> ratings directly)");
    let probe = &obs.loadgen["deny_probe"];
    match probe["allowed"].as_bool() {
        Some(false) => println!(
            "  DENIED  loadgen -> {}: {}",
            probe["target"].as_str().unwrap_or("?"),
            probe["error"].as_str().unwrap_or("?")
        ),
        Some(true) => println!(
            "  NOT DENIED  loadgen -> {} answered ({} stars)",
            probe["target"].as_str().unwrap_or("?"),
            probe["stars"]
        ),
        None => println!("  the probe did not run"),
    }
    for (i, m) in obs.metrics.iter().enumerate() {
        println!(
            "  {}: in-kernel policy denials {}, agent (proxy) deny decisions {}",
            NODES[i],
            sum(
                m,
                "nodemesh_datapath_events_total",
                &[("event", "policy_denied")]
            ) as u64,
            sum(m, "nodemesh_authz_decisions_total", &[("action", "deny")]) as u64,
        );
    }
}

fn golden(obs: &Observed) {
    heading("Golden metrics per workload (measured by each workload's caller)");
    println!(
        "  {:<11} {:>8} {:>8} {:>9} {:>9} {:>9}  measured by",
        "workload", "requests", "success", "p50 ms", "p90 ms", "p99 ms"
    );
    let empty = serde_json::Map::new();
    let workloads = obs.loadgen["workloads"].as_object().unwrap_or(&empty);
    for name in ["frontend", "reviews-v1", "reviews-v2", "ratings"] {
        let Some(w) = workloads.get(name) else {
            println!("  {name:<11} no requests");
            continue;
        };
        let requests = w["requests"].as_u64().unwrap_or(0);
        let ok = w["ok"].as_u64().unwrap_or(0);
        let ms = |k: &str| {
            w[k].as_u64()
                .map_or("-".to_string(), |us| format!("{:.2}", us as f64 / 1000.0))
        };
        println!(
            "  {name:<11} {requests:>8} {:>7.1}% {:>9} {:>9} {:>9}  {}",
            if requests == 0 {
                0.0
            } else {
                100.0 * ok as f64 / requests as f64
            },
            ms("p50_us"),
            ms("p90_us"),
            ms("p99_us"),
            w["measured_by"].as_str().unwrap_or("?")
        );
    }
    println!(
        "  loadgen: {} requests, {} ok, {} failed in {} ms",
        obs.loadgen["requests"],
        obs.loadgen["ok"],
        obs.loadgen["failed"],
        obs.loadgen["duration_ms"]
    );
    for e in obs.loadgen["error_samples"]
        .as_array()
        .into_iter()
        .flatten()
    {
        println!("  error: {}", e.as_str().unwrap_or("?"));
    }
}

/// Workload names for identity numbers on node `i`; `reviews` is v1 on
/// node-a and v2 on node-b when it is the source.
fn name(obs: &Observed, node: usize, identity: &str, source: bool) -> String {
    let n: u64 = identity.parse().unwrap_or(0);
    match obs.identities[node].get(&n) {
        Some(sa) if sa == "reviews" && source => {
            format!("reviews-{}", if node == 0 { "v1" } else { "v2" })
        }
        Some(sa) => sa.clone(),
        None if n == 0 => "agent".into(),
        None => format!("#{n}"),
    }
}

fn pairs(obs: &Observed) {
    heading(
        "L4 per workload pair (kernel counters from /metrics, the caller's side of each connection)",
    );
    println!(
        "  {:<7} {:<30} {:>6} {:>6} {:>6} {:>10} {:>10} {:>9}",
        "node",
        "source -> destination:port",
        "conns",
        "denied",
        "closed",
        "bytes out",
        "bytes in",
        "srtt us"
    );
    for (i, m) in obs.metrics.iter().enumerate() {
        let mut rows: BTreeMap<(String, String, String), BTreeMap<&str, f64>> = BTreeMap::new();
        for s in m.iter().filter(|s| s.name.starts_with("nodemesh_tcp_")) {
            let l = |k: &str| s.labels.get(k).cloned().unwrap_or_default();
            if l("direction") != "outbound" || l("src_identity") == "0" || l("dst_identity") == "0"
            {
                continue;
            }
            let row = rows
                .entry((l("src_identity"), l("dst_identity"), l("dst_port")))
                .or_default();
            *row.entry(short(&s.name)).or_default() += s.value;
        }
        for ((src, dst, port), v) in rows {
            let g = |k: &str| v.get(k).copied().unwrap_or(0.0) as u64;
            let srtt = if g("srtt_samples") > 0 {
                format!("{}", g("srtt_sum") / g("srtt_samples"))
            } else {
                "-".into()
            };
            println!(
                "  {:<7} {:<30} {:>6} {:>6} {:>6} {:>10} {:>10} {:>9}",
                NODES[i],
                format!(
                    "{} -> {}:{port}",
                    name(obs, i, &src, true),
                    name(obs, i, &dst, false)
                ),
                g("opened"),
                g("denied"),
                g("closed"),
                g("sent"),
                g("received"),
                srtt
            );
        }
    }
}

fn short(family: &str) -> &'static str {
    match family {
        "nodemesh_tcp_connections_opened_total" => "opened",
        "nodemesh_tcp_connections_closed_total" => "closed",
        "nodemesh_tcp_connections_denied_total" => "denied",
        "nodemesh_tcp_sent_bytes_total" => "sent",
        "nodemesh_tcp_received_bytes_total" => "received",
        "nodemesh_tcp_srtt_microseconds_sum" => "srtt_sum",
        "nodemesh_tcp_srtt_samples_total" => "srtt_samples",
        _ => "other",
    }
}

fn flows(obs: &Observed) {
    heading(&format!(
        "Live flows (/debug/datapath, sampled {} times while traffic ran; port 15001 = agent outbound, 15008 = mTLS tunnel)",
        obs.samples
    ));
    println!(
        "  agent = the node agent's own sockets; peak open = most connections open at once in a sample; srtt = average smoothed RTT of closed connections"
    );
    println!(
        "  {:<7} {:<9} {:<34} {:>6} {:>6} {:>9} {:>9}",
        "node",
        "direction",
        "source -> destination:port",
        "opened",
        "closed",
        "peak open",
        "srtt us"
    );
    for (i, flows) in obs.flows.iter().enumerate() {
        for ((src, dst, port, dir), f) in flows {
            if *port == 15000 {
                // The demo's own admin requests.
                continue;
            }
            println!(
                "  {:<7} {:<9} {:<34} {:>6} {:>6} {:>9} {:>9}",
                NODES[i],
                dir,
                format!(
                    "{} -> {}:{port}",
                    name(obs, i, &src.to_string(), true),
                    name(obs, i, &dst.to_string(), false)
                ),
                n(&f.flow["opened"]),
                n(&f.flow["closed"]),
                f.peak_open,
                n(&f.flow["srtt_us_avg"]),
            );
        }
    }
}

/// Sums a family's samples whose labels include all of `labels`.
pub fn sum(metrics: &[Metric], name: &str, labels: &[(&str, &str)]) -> f64 {
    metrics
        .iter()
        .filter(|m| m.name == name)
        .filter(|m| {
            labels
                .iter()
                .all(|(k, v)| m.labels.get(*k).is_some_and(|x| x == v))
        })
        .map(|m| m.value)
        .fold(0.0, |a, b| a + b)
}

fn n(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or(0)
}
