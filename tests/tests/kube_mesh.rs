//! Kubernetes mode with the mesh on two real nodes: the agents read Pods,
//! Services and EndpointSlices from an in-test API server (the real
//! `kube::Client` and watchers) instead of files, and a meshed connection
//! crosses from node 1 to node 2 in mTLS. Each agent must know the remote
//! server Pod's identity and node, which EndpointSlices do not carry, so with
//! the mesh on the agents watch the Pods of every node.

use nodemesh_tests::mesh::{Layout, TwoNodes};

const PODS: &str = "/api/v1/pods";

#[test]
fn kube_mode_meshes_across_nodes() {
    let t = TwoNodes::with(Layout {
        kube: true,
        ..Layout::default()
    });
    let out = t.meshed_request(1, "TLSv1_3");
    assert_eq!(out["ok"], true, "{out}");

    let api = t.kube_api.as_ref().expect("kube mode has an API server");
    let pod_requests = api.requests(PODS);
    assert!(
        !pod_requests.is_empty() && pod_requests.iter().all(|q| !q.contains("fieldSelector")),
        "with the mesh, every node's Pods are listed and watched: {pod_requests:?}"
    );
    let services = api.requests("/api/v1/services");
    assert!(
        services.iter().any(|q| q.contains("watch=true")),
        "the agents watch: {services:?}"
    );
}
