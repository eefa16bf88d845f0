//! Kubernetes mode end to end: the real `kube::Client` and watchers against
//! an in-test HTTP server on 127.0.0.1 that speaks the Kubernetes list/watch
//! protocol (initial list, ADDED/MODIFIED/DELETED, streams that end,
//! `410 Gone` forcing a relist, and bookmarks).

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use nodemesh_state::desired::{DesiredState, PROTO_TCP, ServiceKey, Verdict};
use nodemesh_state::k8s::{KubeSource, KubeSourceConfig};
use nodemesh_state::metrics::RejectionMetrics;
use nodemesh_state::model::Kind;
use nodemesh_state::publish::StateReceiver;
use nodemesh_state::{Index, IndexConfig};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// The collection paths the agent watches, with their list kinds.
const RESOURCES: [(&str, &str, &str); 9] = [
    ("/api/v1/namespaces", "v1", "NamespaceList"),
    ("/api/v1/pods", "v1", "PodList"),
    ("/api/v1/services", "v1", "ServiceList"),
    (
        "/apis/discovery.k8s.io/v1/endpointslices",
        "discovery.k8s.io/v1",
        "EndpointSliceList",
    ),
    (
        "/apis/gateway.networking.k8s.io/v1/httproutes",
        "gateway.networking.k8s.io/v1",
        "HTTPRouteList",
    ),
    (
        "/apis/gateway.networking.k8s.io/v1/grpcroutes",
        "gateway.networking.k8s.io/v1",
        "GRPCRouteList",
    ),
    (
        "/apis/split.smi-spec.io/v1alpha4/trafficsplits",
        "split.smi-spec.io/v1alpha4",
        "TrafficSplitList",
    ),
    (
        "/apis/nodemesh.io/v1alpha1/authorizationpolicies",
        "nodemesh.io/v1alpha1",
        "AuthorizationPolicyList",
    ),
    (
        "/apis/nodemesh.io/v1alpha1/meshconfigs",
        "nodemesh.io/v1alpha1",
        "MeshConfigList",
    ),
];

const SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";
const SERVICES: &str = "/api/v1/services";
const PODS: &str = "/api/v1/pods";
const POLICIES: &str = "/apis/nodemesh.io/v1alpha1/authorizationpolicies";

#[derive(Default)]
struct Collection {
    objects: BTreeMap<String, Value>,
    watchers: Vec<mpsc::UnboundedSender<Value>>,
    /// Query strings of list and watch requests, in order.
    requests: Vec<String>,
    /// Answer the next watch with an expired-resourceVersion error.
    expire_next_watch: bool,
}

/// The fake API server's state, shared with the test.
#[derive(Clone, Default)]
struct ApiServer {
    inner: Arc<Mutex<(u64, HashMap<&'static str, Collection>)>>,
}

fn key(o: &Value) -> String {
    format!(
        "{}/{}",
        o["metadata"]["namespace"].as_str().unwrap_or(""),
        o["metadata"]["name"].as_str().unwrap()
    )
}

impl ApiServer {
    fn new() -> Self {
        let s = Self::default();
        s.inner.lock().unwrap().1 = RESOURCES
            .iter()
            .map(|(p, _, _)| (*p, Collection::default()))
            .collect();
        s
    }

    /// Stores an object and sends ADDED or MODIFIED to open watches (if `notify`).
    fn put(&self, path: &'static str, mut o: Value, notify: bool) {
        let mut g = self.inner.lock().unwrap();
        g.0 += 1;
        o["metadata"]["resourceVersion"] = json!(g.0.to_string());
        let c = g.1.get_mut(path).unwrap();
        let kind = if c.objects.insert(key(&o), o.clone()).is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        if notify {
            c.watchers
                .retain(|w| w.send(json!({"type": kind, "object": o})).is_ok());
        }
    }

    /// Removes an object and sends DELETED to open watches (if `notify`).
    fn remove(&self, path: &'static str, k: &str, notify: bool) {
        let mut g = self.inner.lock().unwrap();
        g.0 += 1;
        let rv = g.0.to_string();
        let c = g.1.get_mut(path).unwrap();
        let mut o = c.objects.remove(k).expect("object exists");
        o["metadata"]["resourceVersion"] = json!(rv);
        if notify {
            c.watchers
                .retain(|w| w.send(json!({"type": "DELETED", "object": o})).is_ok());
        }
    }

    /// Sends a BOOKMARK carrying a new resourceVersion; returns it.
    fn bookmark(&self, path: &'static str, api_version: &str, kind: &str) -> String {
        let mut g = self.inner.lock().unwrap();
        g.0 += 1;
        let rv = g.0.to_string();
        let c = g.1.get_mut(path).unwrap();
        let event = json!({"type": "BOOKMARK", "object": {"apiVersion": api_version, "kind": kind, "metadata": {"resourceVersion": rv}}});
        c.watchers.retain(|w| w.send(event.clone()).is_ok());
        rv
    }

    /// Ends every open watch stream of a collection.
    fn end_watches(&self, path: &'static str) {
        self.inner
            .lock()
            .unwrap()
            .1
            .get_mut(path)
            .unwrap()
            .watchers
            .clear();
    }

    /// Makes the next watch fail with 410 Gone, and ends the current ones.
    fn expire(&self, path: &'static str) {
        let mut g = self.inner.lock().unwrap();
        let c = g.1.get_mut(path).unwrap();
        c.expire_next_watch = true;
        c.watchers.clear();
    }

    fn requests(&self, path: &'static str) -> Vec<String> {
        self.inner.lock().unwrap().1[path].requests.clone()
    }

    fn open_watches(&self, path: &'static str) -> usize {
        self.inner.lock().unwrap().1[path].watchers.len()
    }

    fn respond(&self, req: &Request<Incoming>) -> Response<BoxBody<Bytes, Infallible>> {
        let path = req.uri().path();
        let query = req.uri().query().unwrap_or("").to_owned();
        let Some((path, api_version, list_kind)) =
            RESOURCES.iter().find(|(p, _, _)| *p == path).copied()
        else {
            return json_response(
                StatusCode::NOT_FOUND,
                &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
            );
        };
        let mut g = self.inner.lock().unwrap();
        let rv = g.0;
        let c = g.1.get_mut(path).unwrap();
        c.requests.push(query.clone());
        if !query
            .split('&')
            .any(|p| p == "watch=true" || p == "watch=1")
        {
            let items: Vec<&Value> = c.objects.values().collect();
            let list = json!({"apiVersion": api_version, "kind": list_kind, "metadata": {"resourceVersion": rv.to_string()}, "items": items});
            return json_response(StatusCode::OK, &list);
        }
        let (tx, mut rx) = mpsc::unbounded_channel::<Value>();
        if std::mem::take(&mut c.expire_next_watch) {
            let gone = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "too old resource version", "reason": "Expired", "code": 410}});
            tx.send(gone).unwrap();
            drop(tx);
        } else {
            c.watchers.push(tx);
        }
        let body = futures::stream::poll_fn(move |cx| {
            rx.poll_recv(cx)
                .map(|e| e.map(|e| Ok::<_, Infallible>(Frame::data(Bytes::from(format!("{e}\n"))))))
        });
        Response::builder()
            .header("content-type", "application/json")
            .body(StreamBody::new(body).boxed())
            .unwrap()
    }

    async fn serve(self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let server = self.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let r = server.respond(&req);
                        async move { Ok::<_, Infallible>(r) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        addr
    }
}

fn json_response(status: StatusCode, v: &Value) -> Response<BoxBody<Bytes, Infallible>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())).boxed())
        .unwrap()
}

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
