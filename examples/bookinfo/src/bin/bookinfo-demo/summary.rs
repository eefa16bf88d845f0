//! The demo's claims as one JSON document (`--summary <file>`), for tests
//! and scripts: the same measurements the report prints.

use serde_json::{Value, json};

use crate::cluster::Demo;
use crate::observe::Observed;
use crate::report::sum;

/// The summary of a run.
pub fn build(demo: &Demo, obs: &Observed) -> Value {
    let mut namespaces = Vec::new();
    for node in &demo.cluster.nodes {
        namespaces.push(node.netns.name().to_string());
        namespaces.extend(node.pods.iter().map(|p| p.netns.name().to_string()));
    }
    let tunnels: Vec<Value> = obs
        .tunnels
        .iter()
        .flat_map(|t| t.values().cloned())
        .collect();
    let mut denied_kernel = 0.0;
    let mut denied_proxy = 0.0;
    let mut opened = 0.0;
    let mut bytes = 0.0;
    for m in &obs.metrics {
        denied_kernel += sum(
            m,
            "nodemesh_datapath_events_total",
            &[("event", "policy_denied")],
        );
        denied_proxy += sum(m, "nodemesh_authz_decisions_total", &[("action", "deny")]);
        opened += sum(m, "nodemesh_tcp_connections_opened_total", &[]);
        bytes += sum(m, "nodemesh_tcp_sent_bytes_total", &[]);
    }
    json!({
        "tunnels": tunnels,
        "loadgen": obs.loadgen,
        "policy_denied_kernel": denied_kernel,
        "authz_denied_proxy": denied_proxy,
        "connections_opened": opened,
        "bytes_sent": bytes,
        "cluster": {
            "namespaces": namespaces,
            "cgroup": demo.cluster.cgroup.path(),
        },
    })
}
