//! A two-node mesh for end-to-end tests: a client pod on node 1, a server
//! pod (an echo server on port 8080 behind Service `server`, VIP [`VIP`]:80)
//! on node 2 or node 1, the cluster's objects in a directory both agents read
//! in file mode, a fresh CA, and one real agent per node.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::agent::{AgentProcess, ca_init};
use crate::{Cluster, PodProcess, pod::run_json};

/// The ClusterIP of Service `server`.
pub const VIP: &str = "10.96.0.30";
/// A payload prefix that must never cross a node link in clear.
pub const MARKER: &str = "NODEMESH-PLAINTEXT-MARKER-";
/// How long any one step of a mesh test may take.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A new empty directory under the system temporary directory.
    pub fn new() -> Self {
        let p = std::env::temp_dir().join(crate::unique("nodemesh-test-"));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Default for TempDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A Pod of namespace `demo` as file and Kubernetes modes read it.
pub struct PodSpec<'a> {
    /// `metadata.name`.
    pub name: &'a str,
    /// `spec.serviceAccountName`: the identity.
    pub sa: &'a str,
    /// The `app` label and container name.
    pub app: &'a str,
    /// The `version` label, if any.
    pub version: Option<&'a str>,
    /// `status.podIP`.
    pub ip: String,
    /// `status.hostIP`: the node's address.
    pub host_ip: String,
    /// `spec.nodeName`.
    pub node: &'a str,
    /// The `nodemesh.io/cgroup` annotation, relative to the cgroup2 mount.
    pub cgroup: String,
}

/// The Pod's YAML document.
pub fn pod_yaml(p: &PodSpec<'_>) -> String {
    let version = p
        .version
        .map(|v| format!(", version: {v}"))
        .unwrap_or_default();
    format!(
        "---
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: demo
  labels: {{app: {app}{version}}}
  annotations: {{nodemesh.io/cgroup: {cgroup}}}
spec:
  nodeName: {node}
  serviceAccountName: {sa}
  containers: [{{name: {app}, image: example.invalid/{app}}}]
status:
  phase: Running
  hostIP: {host}
  podIP: {ip}
  podIPs: [{{ip: {ip}}}]
",
        name = p.name,
        app = p.app,
        cgroup = p.cgroup,
        node = p.node,
        sa = p.sa,
        host = p.host_ip,
        ip = p.ip
    )
}

fn service_yaml(server_ip: &str) -> String {
    format!(
        "---
apiVersion: v1
kind: Namespace
metadata:
  name: demo
  labels: {{nodemesh.io/mesh: enabled}}
---
apiVersion: v1
kind: Service
metadata: {{name: server, namespace: demo}}
spec:
  clusterIP: {VIP}
  clusterIPs: [{VIP}]
  selector: {{app: server}}
  ports: [{{name: tcp, port: 80, targetPort: 8080, protocol: TCP}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: server-abc
  namespace: demo
  labels: {{kubernetes.io/service-name: server}}
addressType: IPv4
ports: [{{name: tcp, port: 8080, protocol: TCP}}]
endpoints:
- addresses: [{server_ip}]
  conditions: {{ready: true}}
  targetRef: {{kind: Pod, name: server, namespace: demo}}
"
    )
}

/// Two nodes, a client pod on node 1 and a server pod on node 2, one agent
/// per node in file mode.
pub struct TwoNodes {
    /// One agent per node, in node order.
    pub agents: Vec<AgentProcess>,
    _server: PodProcess,
    /// The API server of [`Layout::kube`] (stopped after the agents).
    _api: Option<crate::kube_api::Served>,
    /// The objects and requests of that API server.
    pub kube_api: Option<crate::kube_api::ApiServer>,
    /// The directory the agents read the cluster's objects from.
    pub config: TempDir,
    /// The directory holding the mesh CA (`ca/`).
    pub ca: TempDir,
    /// The nodes and pods.
    pub cluster: Cluster,
}

/// How a [`TwoNodes`] cluster is laid out.
#[derive(Default)]
pub struct Layout {
    /// A second pod, `other`, on node 1.
    pub other_pod: bool,
    /// The server on node 1 too (same-node mesh traffic).
    pub server_on_node1: bool,
    /// Extra agent arguments.
    pub agent_args: Vec<&'static str>,
    /// A pod `plain` on node 1 in namespace `plain`, outside the mesh.
    pub plain_pod: bool,
    /// Agents without the mesh (no `--redirect-addr`, `--node-addr`,
    /// `--ca-dir`): Service translation and policy only.
    pub no_mesh: bool,
    /// Agents in Kubernetes mode (`--kube`), reading the same objects from
    /// an in-test API server in node 1's namespace, instead of file mode.
    pub kube: bool,
}

impl TwoNodes {
    /// Client and server on different nodes; `extra_pod_on_node1` adds `other`.
    pub fn new(extra_pod_on_node1: bool) -> Self {
        Self::with(Layout {
            other_pod: extra_pod_on_node1,
            ..Layout::default()
        })
    }

    /// The cluster `layout` describes, with both agents ready.
    pub fn with(layout: Layout) -> Self {
        let extra_pod_on_node1 = layout.other_pod;
        let server_node = if layout.server_on_node1 { 0 } else { 1 };
        let mut cluster = Cluster::new(2);
        let c = cluster.add_pod(0, "client");
        let s = cluster.add_pod(server_node, "server");
        if extra_pod_on_node1 {
            cluster.add_pod(0, "other");
        }
        if layout.plain_pod {
            cluster.add_pod(0, "plain");
        }
        let ca = TempDir::new();
        ca_init(&ca.0.join("ca"));
        let config = TempDir::new();
        let mut yaml = service_yaml(&cluster.pod(server_node, s).ip.to_string());
        let mut pods = vec![
            PodSpec {
                version: None,
                name: "client",
                sa: "client",
                app: "client",
                ip: cluster.pod(0, c).ip.to_string(),
                host_ip: cluster.nodes[0].link_ip.to_string(),
                node: "node-1",
                cgroup: crate::rel_cgroup(&cluster.pod(0, c).cgroup),
            },
            PodSpec {
                version: None,
                name: "server",
                sa: "server",
                app: "server",
                ip: cluster.pod(server_node, s).ip.to_string(),
                host_ip: cluster.nodes[server_node].link_ip.to_string(),
                node: if server_node == 0 { "node-1" } else { "node-2" },
                cgroup: crate::rel_cgroup(&cluster.pod(server_node, s).cgroup),
            },
        ];
        if extra_pod_on_node1 {
            pods.push(PodSpec {
                version: None,
                name: "other",
                sa: "other",
                app: "other",
                ip: cluster
                    .pod(0, cluster.nodes[0].pods.len() - 1)
                    .ip
                    .to_string(),
                host_ip: cluster.nodes[0].link_ip.to_string(),
                node: "node-1",
                cgroup: crate::rel_cgroup(&cluster.pod(0, cluster.nodes[0].pods.len() - 1).cgroup),
            });
        }
        for p in &pods {
            yaml.push_str(&pod_yaml(p));
        }
        if layout.plain_pod {
            let p = cluster.pod(0, cluster.nodes[0].pods.len() - 1);
            yaml.push_str("---\napiVersion: v1\nkind: Namespace\nmetadata: {name: plain}\n");
            yaml.push_str(
                &pod_yaml(&PodSpec {
                    version: None,
                    name: "plain",
                    sa: "default",
                    app: "plain",
                    ip: p.ip.to_string(),
                    host_ip: cluster.nodes[0].link_ip.to_string(),
                    node: "node-1",
                    cgroup: crate::rel_cgroup(&p.cgroup),
                })
                .replace("namespace: demo", "namespace: plain"),
            );
        }
        let kube_api = layout.kube.then(crate::kube_api::ApiServer::new);
        let api = kube_api.clone().map(|api| {
            api.put_yaml(&yaml);
            let served = api.serve_in(
                cluster.nodes[0].netns.file(),
                cluster.nodes[0].link_ip.into(),
            );
            std::fs::write(config.0.join("kubeconfig"), served.kubeconfig()).unwrap();
            served
        });
        if !layout.kube {
            std::fs::write(config.0.join("cluster.yaml"), yaml).unwrap();
        }
        let kubeconfig = config.0.join("kubeconfig");
        let kubeconfig = kubeconfig.to_str().unwrap();
        let server = PodProcess::start_server(cluster.pod(server_node, s).command(&[
            "serve",
            &format!("{}:8080", cluster.pod(server_node, s).ip),
            "echo",
        ]));
        let agents = (0..2)
            .map(|i| {
                let n = &cluster.nodes[i];
                let mut args: Vec<String> =
                    layout.agent_args.iter().map(|a| a.to_string()).collect();
                let source = if layout.kube { "--kube" } else { "--config" };
                args.push(source.into());
                if !layout.kube {
                    args.push(config.0.to_string_lossy().into_owned());
                }
                args.extend(["--node-name".into(), format!("node-{}", i + 1)]);
                if !layout.no_mesh {
                    args.extend(mesh_args(n, &ca.0.join("ca")));
                }
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let env: &[(&str, &str)] = if layout.kube {
                    &[("KUBECONFIG", kubeconfig)]
                } else {
                    &[]
                };
                AgentProcess::start_with_env(n, &args, env)
            })
            .collect::<Vec<_>>();
        for a in &agents {
            a.wait_for("/debug/state", TIMEOUT, |b| {
                b.contains("generation: 1") || b.contains("generation: 2")
            });
        }
        TwoNodes {
            agents,
            _server: server,
            _api: api,
            kube_api,
            config,
            ca,
            cluster,
        }
    }

    /// Runs `nm-pod args` in pod `pod` of node 1 and returns its JSON report.
    pub fn client(&self, pod: usize, args: &[&str]) -> Value {
        run_json(self.cluster.pod(0, pod).command(args), TIMEOUT)
    }

    /// Runs the marker client from node 1's client pod to the Service and
    /// returns its report, asserting while the connection is live that
    /// agent `agent` serves it between the client's and the server's
    /// identities, with `detail` (e.g. `TLSv1_3`) in its listing.
    pub fn meshed_request(&self, agent: usize, detail: &str) -> Value {
        std::thread::scope(|s| {
            let client = s.spawn(|| {
                self.client(
                    0,
                    &["marker-client", &format!("{VIP}:80"), MARKER, "200", "1500"],
                )
            });
            let live = self.agents[agent].wait_for("/debug/connections", TIMEOUT, |b| {
                b.contains("spiffe://cluster.local/ns/demo/sa/client")
            });
            assert!(
                live.contains("spiffe://cluster.local/ns/demo/sa/server"),
                "{live}"
            );
            assert!(live.contains(detail), "{live}");
            client.join().unwrap()
        })
    }
}

/// The arguments that turn the mesh on for an agent on `node`.
pub fn mesh_args(node: &crate::Node, ca_dir: &std::path::Path) -> Vec<String> {
    vec![
        "--redirect-addr".into(),
        node.bridge_ip.to_string(),
        "--node-addr".into(),
        node.link_ip.to_string(),
        "--ca-dir".into(),
        ca_dir.to_string_lossy().into_owned(),
    ]
}

/// Writes AuthorizationPolicy `server-policy` with `action` (ALLOW, DENY,
/// AUDIT) for traffic from the client's identity to the server.
pub fn write_policy(t: &TwoNodes, action: &str) {
    let yaml = format!(
        "apiVersion: nodemesh.io/v1alpha1
kind: AuthorizationPolicy
metadata: {{name: server-policy, namespace: demo}}
spec:
  targetSelector: {{matchLabels: {{app: server}}}}
  action: {action}
  rules:
  - from:
    - identities: [spiffe://cluster.local/ns/demo/sa/client]
"
    );
    std::fs::write(t.config.0.join("policy.yaml"), yaml).unwrap();
}

/// The sum of the samples of metric `name` whose line contains `label`.
pub fn metric(body: &str, name: &str, label: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
