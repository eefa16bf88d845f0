//! File mode applied live: editing the config while traffic flows takes
//! effect within a second, and changes that keep a serving backend fail no
//! connection.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nodemesh_tests::agent::{AgentProcess, ca_init};
use nodemesh_tests::{Cluster, PodProcess, pod::run_json};
use serde_json::Value;

const VIP: &str = "10.96.0.40";
const SETTLE_MS: u64 = 1000;

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The Service `web` (VIP) routed by an HTTPRoute to `web-a` and `web-b`
/// with the given weights; `web-a` has the endpoints `a_backends`.
fn services(
    a_backends: &[(&str, String)],
    b_backend: (&str, String),
    weights: (u32, u32),
) -> String {
    let slice = |name: &str, eps: &[(&str, String)]| {
        let mut s = format!(
            "---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-x, namespace: demo, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: tcp, port: 8080, protocol: TCP}}]
endpoints:
"
        );
        for (pod, ip) in eps {
            s.push_str(&format!(
                "- addresses: [{ip}]\n  conditions: {{ready: true}}\n  targetRef: {{kind: Pod, name: {pod}, namespace: demo}}\n"
            ));
        }
        s
    };
    let svc = |name: &str, ip: &str| {
        format!(
            "---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: demo}}
spec:
  clusterIP: {ip}
  clusterIPs: [{ip}]
  ports: [{{name: tcp, port: 80, targetPort: 8080, protocol: TCP}}]
"
        )
    };
    format!(
        "{}{}{}{}{}{}---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: web-split, namespace: demo}}
spec:
  parentRefs: [{{group: \"\", kind: Service, name: web, port: 80}}]
  rules:
  - backendRefs:
    - {{name: web-a, port: 80, weight: {}}}
    - {{name: web-b, port: 80, weight: {}}}
",
        svc("web", VIP),
        svc("web-a", "10.96.0.41"),
        svc("web-b", "10.96.0.42"),
        slice("web-a", a_backends),
        slice("web-b", std::slice::from_ref(&b_backend)),
        "",
        weights.0,
        weights.1,
    )
}

fn deny_policy() -> &'static str {
    "apiVersion: nodemesh.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: deny-client, namespace: demo}
spec:
  targetSelector: {matchLabels: {tier: web}}
  action: DENY
  rules:
  - from:
    - identities: [spiffe://cluster.local/ns/demo/sa/client]
"
}

#[test]
fn config_edits_take_effect_within_a_second_without_failed_connections() {
    let mut cluster = Cluster::new(1);
    let c = cluster.add_pod(0, "client");
    let names = ["web-1", "web-2", "web-3"];
    let idx: Vec<usize> = names.iter().map(|n| cluster.add_pod(0, n)).collect();
    let ip = |i: usize| cluster.pod(0, idx[i]).ip.to_string();

    let dir = TempDir(std::env::temp_dir().join(nodemesh_tests::unique("nodemesh-live-")));
    std::fs::create_dir_all(dir.0.join("config")).unwrap();
    ca_init(&dir.0.join("ca"));
    let mut pods = String::from(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: demo, labels: {nodemesh.io/mesh: enabled}}\n",
    );
    for (i, (pod, sa, tier)) in [
        ("client", "client", "client"),
        ("web-1", "web", "web"),
        ("web-2", "web", "web"),
        ("web-3", "web", "web"),
    ]
    .into_iter()
    .enumerate()
    {
        let p = if i == 0 {
            cluster.pod(0, c)
        } else {
            cluster.pod(0, idx[i - 1])
        };
        pods.push_str(&format!(
            "---
apiVersion: v1
kind: Pod
metadata:
  name: {pod}
  namespace: demo
  labels: {{tier: {tier}}}
  annotations: {{nodemesh.io/cgroup: {cg}}}
spec: {{nodeName: node-1, serviceAccountName: {sa}, containers: [{{name: app, image: x}}]}}
status: {{phase: Running, hostIP: {host}, podIP: {ip}, podIPs: [{{ip: {ip}}}]}}
",
            cg = nodemesh_tests::rel_cgroup(&p.cgroup),
            host = cluster.nodes[0].bridge_ip,
            ip = p.ip
        ));
    }
    let config = dir.0.join("config");
    std::fs::write(config.join("pods.yaml"), pods).unwrap();
    let write_services = |a: &[(&str, String)], w: (u32, u32)| {
        let tmp = config.join(".services.tmp");
        std::fs::write(&tmp, services(a, ("web-3", ip(2)), w)).unwrap();
        std::fs::rename(&tmp, config.join("services.yaml")).unwrap();
    };
    write_services(&[("web-1", ip(0))], (100, 0));

    let _servers: Vec<PodProcess> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let p = cluster.pod(0, idx[i]);
            PodProcess::start_server(p.command(&[
                "serve",
                &format!("{}:8080", p.ip),
                &format!("hello:{n}"),
            ]))
        })
        .collect();
    let n = &cluster.nodes[0];
    let agent = AgentProcess::start(
        n,
        &[
            "--config",
            config.to_str().unwrap(),
            "--node-name",
            "node-1",
            "--redirect-addr",
            &n.bridge_ip.to_string(),
            "--node-addr",
            &n.bridge_ip.to_string(),
            "--ca-dir",
            dir.0.join("ca").to_str().unwrap(),
        ],
    );
    agent.wait_for("/debug/state", Duration::from_secs(10), |b| {
        b.contains("web-split")
    });

    let (timeline, edits) = std::thread::scope(|s| {
        let h = s.spawn(|| {
            run_json(
                cluster
                    .pod(0, c)
                    .command(&["watch-client", &format!("{VIP}:80"), "13"]),
                Duration::from_secs(60),
            )
        });
        let mut edits = Vec::new();
        std::thread::sleep(Duration::from_millis(1500));
        // 1. Add a backend to web-a.
        edits.push(now_ms());
        write_services(&[("web-1", ip(0)), ("web-2", ip(1))], (100, 0));
        std::thread::sleep(Duration::from_millis(2500));
        // 2. Remove web-1 (web-2 keeps serving).
        edits.push(now_ms());
        write_services(&[("web-2", ip(1))], (100, 0));
        std::thread::sleep(Duration::from_millis(2500));
        // 3. Move all weight to web-b.
        edits.push(now_ms());
        write_services(&[("web-2", ip(1))], (0, 100));
        std::thread::sleep(Duration::from_millis(2500));
        // 4. Deny the client.
        edits.push(now_ms());
        std::fs::write(config.join("policy.yaml"), deny_policy()).unwrap();
        (h.join().unwrap(), edits)
    });

    let samples: Vec<Value> = timeline["samples"].as_array().unwrap().clone();
    assert!(samples.len() > 200, "enough samples: {}", samples.len());
    let backend = |v: &Value| v["backend"].as_str().map(str::to_owned);
    let window = |from: u64, to: u64| {
        samples
            .iter()
            .filter(move |v| (from..to).contains(&v["at"].as_u64().unwrap()))
    };

    // No failed connection before the deny policy.
    let failures: Vec<&Value> = window(0, edits[3])
        .filter(|v| v.get("error").is_some())
        .collect();
    assert!(
        failures.is_empty(),
        "failed connections while editing: {failures:?}"
    );
    // Before any edit only web-1 serves.
    assert!(window(0, edits[0]).all(|v| backend(v).as_deref() == Some("web-1")));
    // 1. Within a second web-2 shares the traffic.
    assert!(
        window(edits[0] + SETTLE_MS, edits[1]).any(|v| backend(v).as_deref() == Some("web-2")),
        "web-2 added"
    );
    // 2. A second after its removal web-1 gets nothing.
    assert!(
        window(edits[1] + SETTLE_MS, edits[2]).all(|v| backend(v).as_deref() == Some("web-2")),
        "web-1 removed"
    );
    // 3. A second after the weight change only web-b (web-3) serves.
    assert!(
        window(edits[2] + SETTLE_MS, edits[3]).all(|v| backend(v).as_deref() == Some("web-3")),
        "weights moved"
    );
    // 4. A second after the deny policy every connect fails in the kernel.
    let after: Vec<&Value> = window(edits[3] + SETTLE_MS, u64::MAX).collect();
    assert!(!after.is_empty());
    assert!(
        after.iter().all(|v| v["error"]
            .as_str()
            .is_some_and(|e| e.contains("Operation not permitted"))),
        "denied: {after:?}"
    );
}
