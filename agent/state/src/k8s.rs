//! Kubernetes mode: kube-rs watchers on every kind nodemesh reads, feeding
//! the same index and the same channel as file mode.
//!
//! Pods are watched on this node only (`spec.nodeName=<node>`); Pods
//! elsewhere are known through EndpointSlices. Watchers request bookmarks,
//! reconnect with exponential backoff, and relist after `410 Gone`; a relist
//! replaces every object of its kind, so deletions missed while
//! disconnected are applied too. The first state is published once every
//! kind has listed (a kind whose CRD is not installed counts as listed), or
//! after `initial_sync_timeout`, whichever is first.

pub mod rbac;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::path::PathBuf;
use std::time::Duration;

use futures::stream::{BoxStream, SelectAll};
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;

use crate::index::Index;
use crate::model::crds::{AuthorizationPolicy, MeshConfig};
use crate::model::decode::decode_object;
use crate::model::gateway::{GRPCRoute, HTTPRoute};
use crate::model::smi::TrafficSplit;
use crate::model::{CGROUP_ANNOTATION, Kind, Object, ObjectRef};
use crate::publish::{Publisher, StateReceiver};
use crate::rejection::{Reason, Rejection};

pub use rbac::policy_rules;

/// What Kubernetes mode needs besides a client.
#[derive(Clone, Debug)]
pub struct KubeSourceConfig {
    /// This node's name: only its Pods are watched unless `watch_all_pods`.
    pub node_name: String,
    /// The cgroup2 mount: when set, Pods of this node without a
    /// `nodemesh.io/cgroup` annotation get their kubelet pod cgroup.
    pub cgroup_root: Option<PathBuf>,
    /// Publish the first state after this long even if some kinds have
    /// not listed yet.
    pub initial_sync_timeout: Duration,
    /// Least time between two published states: changes arriving faster
    /// are applied together.
    pub min_publish_interval: Duration,
    /// Watch the Pods of every node instead of this node's only. The index
    /// then knows the identity, node and mesh membership of remote Pods
    /// (without it, remote endpoints carry their Service's identity number
    /// and no node, which is enough for Service translation and policy but
    /// not for the mesh), at the cost of every agent watching every Pod.
    pub watch_all_pods: bool,
}

impl KubeSourceConfig {
    /// Defaults for `node_name`: no cgroup lookup, 30 s initial sync
    /// timeout, at most one state per 50 ms, this node's Pods only.
    pub fn new(node_name: impl Into<String>) -> Self {
        Self {
            node_name: node_name.into(),
            cgroup_root: None,
            initial_sync_timeout: Duration::from_secs(30),
            min_publish_interval: Duration::from_millis(50),
            watch_all_pods: false,
        }
    }
}

/// A decoded object, or why it was refused.
type Decoded = Result<Object, Rejection>;
type Update = (Kind, Result<Event<Decoded>, watcher::Error>);

fn watch<K, F>(
    api: Api<K>,
    config: watcher::Config,
    kind: Kind,
    decode: F,
) -> BoxStream<'static, Update>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    F: Fn(K) -> Decoded + Send + Sync + 'static,
{
    watcher::watcher(api, config)
        .default_backoff()
        .map(move |r| {
            let event = r.map(|e| match e {
                Event::Apply(o) => Event::Apply(decode(o)),
                Event::Delete(o) => Event::Delete(decode(o)),
                Event::Init => Event::Init,
                Event::InitApply(o) => Event::InitApply(decode(o)),
                Event::InitDone => Event::InitDone,
            });
            (kind, event)
        })
        .boxed()
}

/// Custom resources are watched untyped and decoded by nodemesh, so an
/// object that does not fit the schema is refused on its own instead of
/// failing the whole watch.
fn watch_custom<K>(client: &Client, kind: Kind) -> BoxStream<'static, Update>
where
    K: Resource<DynamicType = ()>,
{
    let resource = ApiResource::erase::<K>(&());
    let api = Api::<DynamicObject>::all_with(client.clone(), &resource);
    watch(
        api,
        watcher::Config::default(),
        kind,
        move |o: DynamicObject| {
            let fallback = ObjectRef::new(
                kind,
                o.metadata.namespace.clone().unwrap_or_default(),
                o.metadata.name.clone().unwrap_or_default(),
            );
            let mut value = serde_json::to_value(&o).unwrap_or_default();
            value["apiVersion"] = resource.api_version.clone().into();
            value["kind"] = resource.kind.clone().into();
            decode_object(value).unwrap_or_else(|| {
                Err(Rejection::new(
                    &fallback,
                    "kind",
                    Reason::Unsupported(resource.kind.clone()),
                ))
            })
        },
    )
}

fn streams(client: &Client, config: &KubeSourceConfig) -> SelectAll<BoxStream<'static, Update>> {
    let cfg = watcher::Config::default;
    let pods = if config.watch_all_pods {
        cfg()
    } else {
        cfg().fields(&format!("spec.nodeName={}", config.node_name))
    };
    futures::stream::select_all([
        watch(
            Api::<Namespace>::all(client.clone()),
            cfg(),
            Kind::Namespace,
            |o| Ok(Object::Namespace(o)),
        ),
        watch_custom::<MeshConfig>(client, Kind::MeshConfig),
        watch(Api::<Pod>::all(client.clone()), pods, Kind::Pod, |p| {
            Ok(Object::Pod(Box::new(p)))
        }),
        watch(
            Api::<Service>::all(client.clone()),
            cfg(),
            Kind::Service,
            |o| Ok(Object::Service(o)),
        ),
        watch(
            Api::<EndpointSlice>::all(client.clone()),
            cfg(),
            Kind::EndpointSlice,
            |o| Ok(Object::EndpointSlice(o)),
        ),
        watch_custom::<TrafficSplit>(client, Kind::TrafficSplit),
        watch_custom::<HTTPRoute>(client, Kind::HttpRoute),
        watch_custom::<GRPCRoute>(client, Kind::GrpcRoute),
        watch_custom::<AuthorizationPolicy>(client, Kind::AuthorizationPolicy),
    ])
}

/// Turns watch events into index changes.
struct Feeder {
    config: KubeSourceConfig,
    publisher: Publisher,
    /// Objects of a relist in progress, by kind, and the refused ones' references.
    relists: BTreeMap<Kind, (Vec<Object>, BTreeSet<ObjectRef>)>,
    /// Kinds that completed their first list.
    listed: BTreeSet<Kind>,
}

impl Feeder {
    fn handle(&mut self, kind: Kind, update: Result<Event<Decoded>, watcher::Error>) {
        match update {
            Ok(Event::Init) => {
                self.relists.insert(kind, Default::default());
            }
            Ok(Event::InitApply(Ok(o))) => {
                let o = self.with_cgroup(o);
                self.relists.entry(kind).or_default().0.push(o);
            }
            Ok(Event::InitApply(Err(rejection))) => {
                self.publisher.index().record_rejection(&rejection);
                self.relists
                    .entry(kind)
                    .or_default()
                    .1
                    .insert(rejection.object);
            }
            Ok(Event::InitDone) => {
                let (objects, refused) = self.relists.remove(&kind).unwrap_or_default();
                tracing::debug!(
                    kind = kind.as_str(),
                    objects = objects.len(),
                    refused = refused.len(),
                    "listed"
                );
                // Refused objects keep their last good version.
                let listed: BTreeSet<ObjectRef> = objects
                    .iter()
                    .map(Object::object_ref)
                    .chain(refused)
                    .collect();
                let index = self.publisher.index();
                index.retain_kind(kind, &listed);
                index.apply_all(objects);
                self.listed.insert(kind);
            }
            Ok(Event::Apply(Ok(o))) => {
                let o = self.with_cgroup(o);
                // Refusals are logged and counted by the index.
                let _ = self.publisher.index().apply(o);
            }
            Ok(Event::Apply(Err(rejection))) => self.publisher.index().record_rejection(&rejection),
            Ok(Event::Delete(Ok(o))) => self.publisher.index().delete(&o.object_ref()),
            Ok(Event::Delete(Err(rejection))) => self.publisher.index().delete(&rejection.object),
            Err(error) => {
                if let watcher::Error::InitialListFailed(kube::Error::Api(status)) = &error
                    && status.is_not_found()
                {
                    if self.listed.insert(kind) {
                        tracing::warn!(
                            kind = kind.as_str(),
                            "resource not served (CRD not installed?); treating it as empty"
                        );
                    }
                    return;
                }
                tracing::warn!(kind = kind.as_str(), %error, "watch failed; retrying with backoff");
            }
        }
    }

    /// Gives a Pod of this node its kubelet cgroup when it has no annotation.
    fn with_cgroup(&self, o: Object) -> Object {
        let Object::Pod(mut pod) = o else { return o };
        let Some(root) = &self.config.cgroup_root else {
            return Object::Pod(pod);
        };
        let local = pod.spec.as_ref().and_then(|s| s.node_name.as_deref())
            == Some(self.config.node_name.as_str());
        let annotated = pod
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(CGROUP_ANNOTATION));
        let (true, false, Some(uid)) = (local, annotated, pod.metadata.uid.as_deref()) else {
            return Object::Pod(pod);
        };
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        match crate::cgroup::find_pod_cgroup(root, uid) {
            Ok(Some(cgroup)) => {
                pod.metadata
                    .annotations
                    .get_or_insert_default()
                    .insert(CGROUP_ANNOTATION.to_owned(), cgroup);
            }
            Ok(None) => tracing::debug!(pod = name, uid, "pod cgroup not found yet"),
            Err(error) => {
                tracing::warn!(pod = name, uid, %error, "cannot search the cgroup hierarchy")
            }
        }
        Object::Pod(pod)
    }
}

/// Kubernetes mode.
#[derive(Debug)]
pub struct KubeSource;

impl KubeSource {
    /// Starts watching with `client`, feeding `index`; returns the channel
    /// of desired states and the task, which runs until aborted. Must be
    /// called within a Tokio runtime.
    pub fn start(
        client: Client,
        config: KubeSourceConfig,
        index: Index,
    ) -> (StateReceiver, JoinHandle<()>) {
        let (publisher, rx) = Publisher::new(index);
        let task = tokio::spawn(run(client, config, publisher));
        (rx, task)
    }
}

async fn run(client: Client, config: KubeSourceConfig, publisher: Publisher) {
    use tokio::time::{Instant, sleep_until};
    let mut updates = streams(&client, &config);
    let deadline = Instant::now() + config.initial_sync_timeout;
    let interval = config.min_publish_interval;
    let mut feeder = Feeder {
        config,
        publisher,
        relists: BTreeMap::new(),
        listed: BTreeSet::new(),
    };
    let mut synced = false;
    // Changes applied but not yet published, and when publishing is allowed next.
    let mut dirty = false;
    let mut next_publish = Instant::now();
    loop {
        tokio::select! {
            next = updates.next() => {
                let Some((kind, update)) = next else { return };
                feeder.handle(kind, update);
                // Apply everything already waiting before computing a new state.
                while let Some(Some((kind, update))) = updates.next().now_or_never() {
                    feeder.handle(kind, update);
                }
                dirty = true;
                if !synced && feeder.listed.len() == Kind::ALL.len() {
                    synced = true;
                    tracing::info!("initial sync complete");
                }
            }
            () = sleep_until(deadline), if !synced => {
                let missing: Vec<&str> = Kind::ALL.iter().filter(|k| !feeder.listed.contains(k)).map(|k| k.as_str()).collect();
                tracing::warn!(?missing, "initial sync incomplete; publishing what is known");
                synced = true;
            }
            () = sleep_until(next_publish), if synced && dirty => {}
        }
        if synced && dirty && Instant::now() >= next_publish {
            feeder.publisher.publish();
            dirty = false;
            next_publish = Instant::now() + interval;
        }
    }
}
