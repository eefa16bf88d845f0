//! Kubernetes mode of `nodemesh-state`: the real `kube::Client` and
//! watchers against the in-test API server of `nodemesh_tests::kube_api` on
//! 127.0.0.1 (initial list, ADDED/MODIFIED/DELETED, streams that end,
//! `410 Gone` forcing a relist, and bookmarks).

use std::time::Duration;

use nodemesh_state::desired::{DesiredState, PROTO_TCP, ServiceKey, Verdict};
use nodemesh_state::k8s::{KubeSource, KubeSourceConfig};
use nodemesh_state::metrics::RejectionMetrics;
use nodemesh_state::model::Kind;
use nodemesh_state::publish::StateReceiver;
use nodemesh_state::{Index, IndexConfig};
use nodemesh_tests::kube_api::{ApiServer, RESOURCES};
use serde_json::{Value, json};

const SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";
const SERVICES: &str = "/api/v1/services";
const PODS: &str = "/api/v1/pods";
const POLICIES: &str = "/apis/nodemesh.io/v1alpha1/authorizationpolicies";

fn namespace() -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo", "labels": {"nodemesh.io/mesh": "enabled"}}})
}

fn pod(name: &str, ip: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "demo", "uid": format!("uid-{name}"), "labels": {"app": name},
                     "annotations": {"nodemesh.io/cgroup": format!("demo/{name}")}},
        "spec": {"nodeName": "node-a", "serviceAccountName": name, "containers": [{"name": "app", "image": "x"}]},
        "status": {"podIP": ip}})
}

fn service(vip: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "reviews", "namespace": "demo"},
        "spec": {"clusterIP": vip, "ports": [{"name": "http", "port": 9080}]}})
}

fn slice(name: &str, ips: &[&str]) -> Value {
    let eps: Vec<Value> = ips
        .iter()
        .map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}}))
        .collect();
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "demo", "labels": {"kubernetes.io/service-name": "reviews"}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": 9080}], "endpoints": eps})
}

fn backends(s: &DesiredState, vip: &str) -> Vec<String> {
    let key = ServiceKey {
        vip: vip.parse().unwrap(),
        port: 9080,
        proto: PROTO_TCP,
    };
    s.services
        .get(&key)
        .map(|e| e.backends.iter().map(|b| b.ip.to_string()).collect())
        .unwrap_or_default()
}

async fn wait_for(rx: &mut StateReceiver, what: &str, pred: impl Fn(&DesiredState) -> bool) {
    let ok = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            if pred(&rx.borrow_and_update()) {
                return;
            }
            rx.changed().await.expect("source alive");
        }
    })
    .await;
    assert!(
        ok.is_ok(),
        "timed out waiting for: {what}; last state: {:#?}",
        rx.borrow().services
    );
}

async fn wait_until(what: &str, pred: impl Fn() -> bool) {
    let ok = tokio::time::timeout(Duration::from_secs(15), async {
        while !pred() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(ok.is_ok(), "timed out waiting for: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_mode_follows_list_watch_relist_and_bookmarks() {
    let api = ApiServer::new();
    api.put("/api/v1/namespaces", namespace(), false);
    api.put(PODS, pod("frontend", "10.244.1.10"), false);
    api.put(SERVICES, service("10.96.0.20"), false);
    api.put(SLICES, slice("reviews-1", &["10.244.1.11"]), false);
    // A Pod without a cgroup annotation: its kubelet cgroup is looked up.
    let mut unannotated = pod("reviews", "10.244.1.11");
    unannotated["metadata"]["annotations"] = json!({});
    api.put(PODS, unannotated, false);
    let cgroup_root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(
        cgroup_root
            .path()
            .join("kubepods/burstable/poduid-reviews/container-1"),
    )
    .unwrap();
    let addr = api.clone().serve().await;

    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    let registry = prometheus::Registry::new();
    let metrics = RejectionMetrics::new(&registry).unwrap();
    let index = Index::new(
        IndexConfig {
            node_name: "node-a".into(),
            ..Default::default()
        },
        Some(metrics.clone()),
    );
    let source_config = KubeSourceConfig {
        cgroup_root: Some(cgroup_root.path().to_owned()),
        ..KubeSourceConfig::new("node-a")
    };
    let (mut rx, task) = KubeSource::start(client, source_config, index);

    // Initial list of every kind.
    wait_for(&mut rx, "initial list", |s| {
        backends(s, "10.96.0.20") == ["10.244.1.11"] && s.workloads.contains_key("demo/frontend")
    })
    .await;
    assert_eq!(rx.borrow().generation, 1);
    let reviews = rx
        .borrow()
        .workloads
        .get("kubepods/burstable/poduid-reviews")
        .cloned()
        .expect("kubelet cgroup found");
    assert_eq!((reviews.name.as_str(), reviews.meshed), ("reviews", true));
    let pod_list = &api.requests(PODS)[0];
    assert!(
        pod_list.contains("fieldSelector=spec.nodeName%3Dnode-a"),
        "{pod_list}"
    );
    wait_until("watches open", || {
        RESOURCES.iter().all(|(p, _, _)| api.open_watches(p) == 1)
    })
    .await;
    let pod_watch = api
        .requests(PODS)
        .into_iter()
        .find(|q| q.contains("watch=true"))
        .unwrap();
    assert!(
        pod_watch.contains("allowWatchBookmarks=true") && pod_watch.contains("fieldSelector="),
        "{pod_watch}"
    );

    // ADDED, MODIFIED, DELETED.
    api.put(SLICES, slice("reviews-2", &["10.244.2.11"]), true);
    wait_for(&mut rx, "ADDED slice", |s| {
        backends(s, "10.96.0.20") == ["10.244.1.11", "10.244.2.11"]
    })
    .await;
    api.put(SERVICES, service("10.96.0.21"), true);
    wait_for(&mut rx, "MODIFIED service", |s| {
        backends(s, "10.96.0.21").len() == 2 && backends(s, "10.96.0.20").is_empty()
    })
    .await;
    api.remove(SLICES, "demo/reviews-2", true);
    wait_for(&mut rx, "DELETED slice", |s| {
        backends(s, "10.96.0.21") == ["10.244.1.11"]
    })
    .await;

    // Custom resources arrive the same way; an invalid one is refused and counted.
    let policy = json!({"apiVersion": "nodemesh.io/v1alpha1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "lockdown", "namespace": "demo"},
        "spec": {"targetSelector": {"matchLabels": {"app": "frontend"}}, "action": "DENY"}});
    api.put(POLICIES, policy.clone(), true);
    wait_for(&mut rx, "policy", |s| {
        s.policy.values().any(|r| r.verdict == Verdict::Deny)
    })
    .await;
    let mut bad = policy.clone();
    bad["metadata"]["name"] = json!("broken");
    bad["spec"]["actoin"] = json!("DENY");
    api.put(POLICIES, bad, true);
    wait_until("refusal counted", || {
        metrics.count(Kind::AuthorizationPolicy) == 1
    })
    .await;

    // A watch stream that ends is reopened from the last resourceVersion.
    let watches_before = api.requests(SERVICES).len();
    api.end_watches(SERVICES);
    wait_until("services re-watched", || {
        api.requests(SERVICES).len() > watches_before && api.open_watches(SERVICES) == 1
    })
    .await;
    assert!(
        api.requests(SERVICES)[watches_before].contains("watch=true"),
        "no relist after a clean end"
    );
    api.put(SERVICES, service("10.96.0.22"), true);
    wait_for(&mut rx, "MODIFIED after reconnect", |s| {
        backends(s, "10.96.0.22") == ["10.244.1.11"]
    })
    .await;

    // A bookmark moves the resourceVersion the next watch starts from.
    let rv = api.bookmark(SERVICES, "v1", "Service");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = api.requests(SERVICES).len();
    api.end_watches(SERVICES);
    wait_until("re-watch after bookmark", || {
        api.requests(SERVICES).len() > before
    })
    .await;
    let q = &api.requests(SERVICES)[before];
    assert!(
        q.contains(&format!("resourceVersion={rv}")),
        "watch after bookmark: {q}"
    );

    // 410 Gone forces a relist, which also catches a deletion missed meanwhile.
    let lists_before = api
        .requests(SLICES)
        .iter()
        .filter(|q| !q.contains("watch=true"))
        .count();
    api.remove(SLICES, "demo/reviews-1", false);
    api.put(SLICES, slice("reviews-3", &["10.244.2.30"]), false);
    api.expire(SLICES);
    wait_for(&mut rx, "relist after 410", |s| {
        backends(s, "10.96.0.22") == ["10.244.2.30"]
    })
    .await;
    let lists_after = api
        .requests(SLICES)
        .iter()
        .filter(|q| !q.contains("watch=true"))
        .count();
    assert_eq!(lists_after, lists_before + 1, "exactly one relist");

    task.abort();
}
