//! An in-test HTTP server speaking the Kubernetes list/watch protocol for
//! the collections the agent watches: initial lists, ADDED/MODIFIED/DELETED
//! events, streams that end, `410 Gone` forcing a relist, bookmarks, and the
//! Pods' `spec.nodeName` field selector, all with the real `kube::Client` on
//! the other side.
//!
//! Shared by the Kubernetes-mode tests of `nodemesh-state` (which include
//! this file by path) and the end-to-end tests of this crate.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// The collection paths the agent watches, with their API versions and list kinds.
pub const RESOURCES: [(&str, &str, &str); 9] = [
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

/// The collection an object of `kind` belongs to.
pub fn path_of(kind: &str) -> Option<&'static str> {
    let list = format!("{kind}List");
    RESOURCES
        .iter()
        .find(|(_, _, l)| *l == list)
        .map(|(p, _, _)| *p)
}

/// An open watch: its `spec.nodeName` filter and where its events go.
type Watcher = (Option<String>, mpsc::UnboundedSender<Value>);

#[derive(Default)]
struct Collection {
    objects: BTreeMap<String, Value>,
    watchers: Vec<Watcher>,
    /// Query strings of list and watch requests, in order.
    requests: Vec<String>,
    /// Answer the next watch with an expired-resourceVersion error.
    expire_next_watch: bool,
}

/// The server's state, shared with the test.
#[derive(Clone, Default)]
pub struct ApiServer {
    inner: Arc<Mutex<(u64, HashMap<&'static str, Collection>)>>,
}

fn key(o: &Value) -> String {
    format!(
        "{}/{}",
        o["metadata"]["namespace"].as_str().unwrap_or(""),
        o["metadata"]["name"].as_str().unwrap_or("")
    )
}

/// The node a `fieldSelector=spec.nodeName=<node>` query selects.
fn node_selector(query: &str) -> Option<String> {
    query.split('&').find_map(|p| {
        p.strip_prefix("fieldSelector=").and_then(|v| {
            v.replace("%3D", "=")
                .strip_prefix("spec.nodeName=")
                .map(str::to_owned)
        })
    })
}

/// Whether `o` passes a watch's or list's node filter.
fn selected(filter: Option<&str>, o: &Value) -> bool {
    filter.is_none_or(|node| o["spec"]["nodeName"].as_str() == Some(node))
}

impl ApiServer {
    /// An empty server with every collection of [`RESOURCES`].
    pub fn new() -> Self {
        let s = Self::default();
        s.inner.lock().unwrap().1 = RESOURCES
            .iter()
            .map(|(p, _, _)| (*p, Collection::default()))
            .collect();
        s
    }

    /// Stores an object and sends ADDED or MODIFIED to open watches (if `notify`).
    pub fn put(&self, path: &'static str, mut o: Value, notify: bool) {
        let mut g = self.inner.lock().unwrap();
        g.0 += 1;
        o["metadata"]["resourceVersion"] = json!(g.0.to_string());
        let c = g.1.get_mut(path).expect("a known collection");
        let kind = if c.objects.insert(key(&o), o.clone()).is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        if notify {
            let event = json!({"type": kind, "object": o});
            c.watchers
                .retain(|(f, w)| !selected(f.as_deref(), &o) || w.send(event.clone()).is_ok());
        }
    }

    /// Stores each object of a multi-document YAML stream in its collection.
    pub fn put_yaml(&self, yaml: &str) {
        use serde::Deserialize as _;
        for doc in serde_yaml_ng::Deserializer::from_str(yaml) {
            let o = Value::deserialize(doc).expect("a YAML object");
            if o.is_null() {
                continue;
            }
            let kind = o["kind"].as_str().unwrap_or_default();
            let path = path_of(kind).unwrap_or_else(|| panic!("no collection for kind {kind}"));
            self.put(path, o, false);
        }
    }

    /// Removes an object and sends DELETED to open watches (if `notify`).
    pub fn remove(&self, path: &'static str, k: &str, notify: bool) {
        let mut g = self.inner.lock().unwrap();
        g.0 += 1;
        let rv = g.0.to_string();
        let c = g.1.get_mut(path).expect("a known collection");
        let mut o = c.objects.remove(k).expect("object exists");
        o["metadata"]["resourceVersion"] = json!(rv);
        if notify {
            let event = json!({"type": "DELETED", "object": o});
            c.watchers
                .retain(|(f, w)| !selected(f.as_deref(), &o) || w.send(event.clone()).is_ok());
        }
    }

    /// Sends a BOOKMARK carrying a new resourceVersion; returns it.
    pub fn bookmark(&self, path: &'static str, api_version: &str, kind: &str) -> String {
        let mut g = self.inner.lock().unwrap();
        g.0 += 1;
        let rv = g.0.to_string();
        let c = g.1.get_mut(path).expect("a known collection");
        let event = json!({"type": "BOOKMARK", "object": {"apiVersion": api_version, "kind": kind, "metadata": {"resourceVersion": rv}}});
        c.watchers.retain(|(_, w)| w.send(event.clone()).is_ok());
        rv
    }

    /// Ends every open watch stream of a collection.
    pub fn end_watches(&self, path: &'static str) {
        let mut g = self.inner.lock().unwrap();
        g.1.get_mut(path)
            .expect("a known collection")
            .watchers
            .clear();
    }

    /// Makes the next watch fail with 410 Gone, and ends the current ones.
    pub fn expire(&self, path: &'static str) {
        let mut g = self.inner.lock().unwrap();
        let c = g.1.get_mut(path).expect("a known collection");
        c.expire_next_watch = true;
        c.watchers.clear();
    }

    /// Query strings of the list and watch requests a collection got, in order.
    pub fn requests(&self, path: &'static str) -> Vec<String> {
        self.inner.lock().unwrap().1[path].requests.clone()
    }

    /// Watch streams open on a collection.
    pub fn open_watches(&self, path: &'static str) -> usize {
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
        let filter = node_selector(&query);
        let mut g = self.inner.lock().unwrap();
        let rv = g.0;
        let c = g.1.get_mut(path).expect("a known collection");
        c.requests.push(query.clone());
        if !query
            .split('&')
            .any(|p| p == "watch=true" || p == "watch=1")
        {
            let items: Vec<&Value> = c
                .objects
                .values()
                .filter(|o| selected(filter.as_deref(), o))
                .collect();
            let list = json!({"apiVersion": api_version, "kind": list_kind, "metadata": {"resourceVersion": rv.to_string()}, "items": items});
            return json_response(StatusCode::OK, &list);
        }
        let (tx, mut rx) = mpsc::unbounded_channel::<Value>();
        if std::mem::take(&mut c.expire_next_watch) {
            let gone = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "too old resource version", "reason": "Expired", "code": 410}});
            let _ = tx.send(gone);
            drop(tx);
        } else {
            c.watchers.push((filter, tx));
        }
        let body = futures::stream::poll_fn(move |cx| {
            rx.poll_recv(cx)
                .map(|e| e.map(|e| Ok::<_, Infallible>(Frame::data(Bytes::from(format!("{e}\n"))))))
        });
        Response::builder()
            .header("content-type", "application/json")
            .body(StreamBody::new(body).boxed())
            .expect("a response")
    }

    /// Serves on `listener` until the runtime ends.
    pub fn spawn(self, listener: tokio::net::TcpListener) {
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
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
    }

    /// Serves on 127.0.0.1 in this runtime; returns the address.
    pub async fn serve(self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        self.spawn(listener);
        addr
    }

    /// Serves on `ip` inside network namespace `netns`, from a thread of its
    /// own, until the returned handle is dropped.
    pub fn serve_in(self, netns: std::fs::File, ip: IpAddr) -> Served {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            use std::os::fd::AsFd as _;
            nix::sched::setns(netns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("entering the network namespace");
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind((ip, 0))
                    .await
                    .expect("binding the API server");
                addr_tx
                    .send(listener.local_addr().expect("bound"))
                    .expect("the caller waits");
                self.spawn(listener);
                let _ = stopped.await;
            });
        });
        let addr = addr_rx.recv().expect("the API server started");
        Served {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

/// A server started by [`ApiServer::serve_in`]; dropping it stops it.
pub struct Served {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Served {
    /// A kubeconfig pointing `kube::Client::try_default` at this server.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1
kind: Config
clusters: [{{name: test, cluster: {{server: 'http://{}'}}}}]
users: [{{name: test, user: {{}}}}]
contexts: [{{name: test, context: {{cluster: test, user: test}}}}]
current-context: test
",
            self.addr
        )
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn json_response(status: StatusCode, v: &Value) -> Response<BoxBody<Bytes, Infallible>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())).boxed())
        .expect("a response")
}
