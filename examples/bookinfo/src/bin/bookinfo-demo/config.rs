//! The demo's file-mode configuration: `examples/cluster/` for everything
//! that does not depend on where the pods landed (namespace, MeshConfig,
//! Services, routes, policy), plus Pods and EndpointSlices generated with
//! the real pod IPs, node addresses and cgroups.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use nodemesh_tests::mesh::{PodSpec, pod_yaml};

/// The example cluster's files used verbatim.
const STATIC_FILES: [(&str, &str); 5] = [
    (
        "00-namespace.yaml",
        include_str!("../../../../cluster/00-namespace.yaml"),
    ),
    (
        "01-meshconfig.yaml",
        include_str!("../../../../cluster/01-meshconfig.yaml"),
    ),
    (
        "20-services.yaml",
        include_str!("../../../../cluster/20-services.yaml"),
    ),
    (
        "30-routes.yaml",
        include_str!("../../../../cluster/30-routes.yaml"),
    ),
    (
        "40-authorization.yaml",
        include_str!("../../../../cluster/40-authorization.yaml"),
    ),
];

/// The frontend Service (`examples/cluster/20-services.yaml`).
pub const FRONTEND_VIP: &str = "10.96.0.10:8080";
/// The reviews Service, split 90/10 by the HTTPRoute `reviews-canary`.
pub const REVIEWS_VIP: &str = "10.96.0.20:9080";
/// The ratings Service (gRPC).
pub const RATINGS_VIP: &str = "10.96.0.30:50051";

/// A pod as the configuration describes it.
pub struct PodConfig {
    /// Pod name.
    pub name: &'static str,
    /// `app` label and container name.
    pub app: &'static str,
    /// `version` label, if any.
    pub version: Option<&'static str>,
    /// Service account (the SPIFFE id's last segment).
    pub service_account: &'static str,
    /// The node's name.
    pub node: &'static str,
    /// The pod's IP.
    pub ip: String,
    /// The node's address (`status.hostIP`).
    pub host_ip: String,
    /// The pod's cgroup, relative to the cgroup2 mount.
    pub cgroup: String,
}

/// Writes the whole configuration into `dir`.
pub fn write(dir: &Path, pods: &[PodConfig]) -> anyhow::Result<()> {
    for (name, text) in STATIC_FILES {
        std::fs::write(dir.join(name), text).with_context(|| format!("writing {name}"))?;
    }
    std::fs::write(dir.join("10-pods.yaml"), pods_yaml(pods)).context("writing 10-pods.yaml")?;
    std::fs::write(dir.join("21-endpointslices.yaml"), slices_yaml(pods))
        .context("writing 21-endpointslices.yaml")?;
    Ok(())
}

fn pods_yaml(pods: &[PodConfig]) -> String {
    pods.iter()
        .map(|p| {
            pod_yaml(&PodSpec {
                name: p.name,
                sa: p.service_account,
                app: p.app,
                version: p.version,
                ip: p.ip.clone(),
                host_ip: p.host_ip.clone(),
                node: p.node,
                cgroup: p.cgroup.clone(),
            })
        })
        .collect()
}

/// A Service's name, port name, port, and which pods back it.
type SliceSpec = (&'static str, &'static str, u16, fn(&PodConfig) -> bool);

/// One EndpointSlice per Service of `examples/cluster/20-services.yaml`.
fn slices_yaml(pods: &[PodConfig]) -> String {
    let services: [SliceSpec; 5] = [
        ("frontend", "http", 8080, |p| p.app == "frontend"),
        ("reviews", "http", 9080, |p| p.app == "reviews"),
        ("reviews-v1", "http", 9080, |p| {
            p.app == "reviews" && p.version == Some("v1")
        }),
        ("reviews-v2", "http", 9080, |p| {
            p.app == "reviews" && p.version == Some("v2")
        }),
        ("ratings", "grpc", 50051, |p| p.app == "ratings"),
    ];
    let mut y = String::new();
    for (service, port_name, port, selects) in services {
        let _ = write!(
            y,
            "---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {service}-demo
  namespace: demo
  labels: {{kubernetes.io/service-name: {service}}}
addressType: IPv4
ports: [{{name: {port_name}, port: {port}, protocol: TCP}}]
endpoints:
"
        );
        for p in pods.iter().filter(|p| selects(p)) {
            let _ = write!(
                y,
                "- addresses: [{ip}]
  conditions: {{ready: true, serving: true, terminating: false}}
  nodeName: {node}
  targetRef: {{kind: Pod, name: {name}, namespace: demo}}
",
                ip = p.ip,
                node = p.node,
                name = p.name,
            );
        }
    }
    y
}
