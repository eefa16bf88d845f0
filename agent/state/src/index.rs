//! The pure state index: typed objects in, [`DesiredState`] out.
//!
//! [`Index::apply`] and [`Index::delete`] keep a checked record of every
//! object; [`Index::snapshot`] computes the desired state from the records.
//! No I/O happens here, so every rule is unit-tested without a server.
//!
//! An object that fails its checks is refused: the error names the object,
//! the field and the reason, the refusal is counted, and the last good
//! version of that object stays in force. A route or split that names a
//! Service the index does not know yet is held back and applied as soon as
//! that Service arrives.

mod policy;
mod routes;
pub mod selector;
mod services;
#[cfg(test)]
mod tests;
pub mod validate;

use std::collections::{BTreeMap, BTreeSet};

use crate::desired::{DesiredState, MeshSettings, ServiceName};
use crate::identity::{DEFAULT_TRUST_DOMAIN, Identity, Numbers};
use crate::metrics::RejectionMetrics;
use crate::model::crds::MESH_CONFIG_NAME;
use crate::model::{Kind, Object, ObjectRef};
use crate::rejection::{Reason, Rejection};
use validate::{
    MeshConfigRecord, NamespaceRecord, PodRecord, PolicyRecord, RouteRecord, ServiceRecord,
    SliceRecord,
};

/// What the index needs to know about where it runs.
#[derive(Clone, Debug)]
pub struct IndexConfig {
    /// This node's name: its Pods become local workloads.
    pub node_name: String,
    /// SPIFFE trust domain, unless the MeshConfig names one.
    pub trust_domain: String,
}

impl Default for IndexConfig {
    fn default() -> Self {
        Self {
            node_name: String::new(),
            trust_domain: DEFAULT_TRUST_DOMAIN.to_owned(),
        }
    }
}

/// Namespace and name of a namespaced object.
pub(crate) type Key = (String, String);

/// Keys of the identity-number space: workload identities and Services
/// whose backends do not share one identity.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum IdentityKey {
    Workload(Identity),
    Service(ServiceName),
}

/// The index of cluster objects.
#[derive(Debug)]
pub struct Index {
    config: IndexConfig,
    metrics: Option<RejectionMetrics>,
    namespaces: BTreeMap<String, NamespaceRecord>,
    mesh_configs: BTreeMap<String, MeshConfigRecord>,
    pods: BTreeMap<Key, PodRecord>,
    services: BTreeMap<Key, ServiceRecord>,
    slices: BTreeMap<Key, SliceRecord>,
    routes: BTreeMap<ObjectRef, RouteRecord>,
    policies: BTreeMap<Key, PolicyRecord>,
    /// Objects refused only because a Service they name is missing, with that Service.
    held: BTreeMap<ObjectRef, (Object, ServiceName)>,
    identity_numbers: Numbers<IdentityKey>,
    service_ids: Numbers<(ServiceName, u16, u8)>,
    rule_ids: Numbers<ObjectRef>,
    generation: u64,
}

impl Index {
    /// An empty index; refusals are counted on `metrics` when given.
    pub fn new(config: IndexConfig, metrics: Option<RejectionMetrics>) -> Self {
        Self {
            config,
            metrics,
            namespaces: BTreeMap::new(),
            mesh_configs: BTreeMap::new(),
            pods: BTreeMap::new(),
            services: BTreeMap::new(),
            slices: BTreeMap::new(),
            routes: BTreeMap::new(),
            policies: BTreeMap::new(),
            held: BTreeMap::new(),
            identity_numbers: Numbers::default(),
            service_ids: Numbers::default(),
            rule_ids: Numbers::default(),
            generation: 0,
        }
    }

    /// The configuration the index was built with.
    pub fn config(&self) -> &IndexConfig {
        &self.config
    }

    /// Adds or replaces an object. A refused object leaves the index as it
    /// was (the previous version, if any, stays in force); the refusal is
    /// logged and counted.
    pub fn apply(&mut self, object: Object) -> Result<(), Rejection> {
        let r = object.object_ref();
        match self.try_apply(&r, &object) {
            Ok(()) => {
                self.held.remove(&r);
                if r.kind == Kind::Service && !self.held.is_empty() {
                    self.retry_held(&ServiceName::new(r.namespace, r.name));
                }
                Ok(())
            }
            Err(rejection) => {
                if let Reason::MissingService(missing) = &rejection.reason {
                    self.held.insert(r, (object, (**missing).clone()));
                }
                self.record_rejection(&rejection);
                Err(rejection)
            }
        }
    }

    /// Counts and logs a refusal found outside the index (e.g. an object
    /// that did not decode).
    pub fn record_rejection(&self, rejection: &Rejection) {
        tracing::warn!(
            kind = rejection.object.kind.as_str(),
            namespace = %rejection.object.namespace,
            name = %rejection.object.name,
            field = %rejection.field,
            reason = %rejection.reason,
            "object rejected; its last good version stays in force"
        );
        if let Some(m) = &self.metrics {
            m.record(rejection.object.kind);
        }
    }

    /// Applies a batch in dependency order (Namespaces and Services before
    /// the routes that name them), returning the refusals.
    pub fn apply_all(&mut self, objects: impl IntoIterator<Item = Object>) -> Vec<Rejection> {
        let mut objects: Vec<Object> = objects.into_iter().collect();
        objects.sort_by_key(Object::kind);
        objects
            .into_iter()
            .filter_map(|o| self.apply(o).err())
            .collect()
    }

    /// Removes an object; removing an unknown object does nothing.
    pub fn delete(&mut self, r: &ObjectRef) {
        self.held.remove(r);
        let key = (r.namespace.clone(), r.name.clone());
        match r.kind {
            Kind::Namespace => {
                self.namespaces.remove(&r.name);
            }
            Kind::MeshConfig => {
                self.mesh_configs.remove(&r.name);
            }
            Kind::Pod => {
                self.pods.remove(&key);
            }
            Kind::Service => {
                self.services.remove(&key);
            }
            Kind::EndpointSlice => {
                self.slices.remove(&key);
            }
            Kind::TrafficSplit | Kind::HttpRoute | Kind::GrpcRoute => {
                self.routes.remove(r);
            }
            Kind::AuthorizationPolicy => {
                self.policies.remove(&key);
            }
        }
    }

    /// Replaces every object of `kind` with `objects` (a full relist):
    /// objects of that kind not in the list are deleted.
    pub fn replace_kind(&mut self, kind: Kind, objects: Vec<Object>) -> Vec<Rejection> {
        let listed: BTreeSet<ObjectRef> = objects.iter().map(Object::object_ref).collect();
        self.retain_kind(kind, &listed);
        self.apply_all(objects.into_iter().filter(|o| o.kind() == kind))
    }

    /// Deletes every object of `kind` not in `keep`.
    pub fn retain_kind(&mut self, kind: Kind, keep: &BTreeSet<ObjectRef>) {
        for stale in self.refs(kind).into_iter().filter(|r| !keep.contains(r)) {
            self.delete(&stale);
        }
    }

    /// References of every object of `kind` the index holds (held-back ones included).
    pub fn refs(&self, kind: Kind) -> Vec<ObjectRef> {
        let ns_keys = |m: &mut dyn Iterator<Item = &Key>| -> Vec<ObjectRef> {
            m.map(|(ns, n)| ObjectRef::new(kind, ns.clone(), n.clone()))
                .collect()
        };
        let mut out = match kind {
            Kind::Namespace => self
                .namespaces
                .keys()
                .map(|n| ObjectRef::new(kind, "", n.clone()))
                .collect(),
            Kind::MeshConfig => self
                .mesh_configs
                .keys()
                .map(|n| ObjectRef::new(kind, "", n.clone()))
                .collect(),
            Kind::Pod => ns_keys(&mut self.pods.keys()),
            Kind::Service => ns_keys(&mut self.services.keys()),
            Kind::EndpointSlice => ns_keys(&mut self.slices.keys()),
            Kind::TrafficSplit | Kind::HttpRoute | Kind::GrpcRoute => self
                .routes
                .keys()
                .filter(|r| r.kind == kind)
                .cloned()
                .collect(),
            Kind::AuthorizationPolicy => ns_keys(&mut self.policies.keys()),
        };
        let held: Vec<ObjectRef> = self
            .held
            .keys()
            .filter(|r| r.kind == kind && !out.contains(r))
            .cloned()
            .collect();
        out.extend(held);
        out
    }

    /// Objects held back because a Service they name is missing.
    pub fn held_back(&self) -> impl Iterator<Item = &ObjectRef> {
        self.held.keys()
    }

    /// Retries the held objects that waited for `service`.
    fn retry_held(&mut self, service: &ServiceName) {
        let waiting: Vec<(ObjectRef, Object)> = self
            .held
            .iter()
            .filter(|(_, (_, missing))| missing == service)
            .map(|(r, (o, _))| (r.clone(), o.clone()))
            .collect();
        for (r, o) in waiting {
            match self.try_apply(&r, &o) {
                Ok(()) => {
                    tracing::info!(object = %r, "applied object once the Service it names appeared");
                    self.held.remove(&r);
                }
                Err(Rejection {
                    reason: Reason::MissingService(next),
                    ..
                }) => {
                    self.held.insert(r, (o, *next));
                }
                Err(rejection) => {
                    self.held.remove(&r);
                    self.record_rejection(&rejection);
                }
            }
        }
    }

    fn try_apply(&mut self, r: &ObjectRef, object: &Object) -> Result<(), Rejection> {
        let key = (r.namespace.clone(), r.name.clone());
        match object {
            Object::Namespace(ns) => {
                self.namespaces
                    .insert(r.name.clone(), validate::namespace(ns));
            }
            Object::MeshConfig(c) => {
                let rec = validate::mesh_config(r, c)?;
                self.mesh_configs.insert(r.name.clone(), rec);
            }
            Object::Pod(p) => {
                let rec = validate::pod(r, p)?;
                self.pods.insert(key, rec);
            }
            Object::Service(s) => {
                let rec = validate::service(r, s)?;
                self.services.insert(key, rec);
            }
            Object::EndpointSlice(s) => {
                let rec = validate::endpoint_slice(r, s)?;
                self.slices.insert(key, rec);
            }
            Object::TrafficSplit(s) => {
                let rec = validate::traffic_split(r, s)?;
                self.check_services(r, &rec)?;
                self.routes.insert(r.clone(), rec);
            }
            Object::HttpRoute(h) => {
                let rec = validate::http_route(r, h)?;
                self.check_services(r, &rec)?;
                self.routes.insert(r.clone(), rec);
            }
            Object::GrpcRoute(g) => {
                let rec = validate::grpc_route(r, g)?;
                self.check_services(r, &rec)?;
                self.routes.insert(r.clone(), rec);
            }
            Object::AuthorizationPolicy(p) => {
                let rec = validate::authorization_policy(r, p)?;
                self.policies.insert(key, rec);
            }
        }
        Ok(())
    }

    /// Every Service a route names, as parent or backend, must exist.
    fn check_services(&self, r: &ObjectRef, rec: &RouteRecord) -> Result<(), Rejection> {
        let parent_field = if r.kind == Kind::TrafficSplit {
            "spec.service"
        } else {
            "spec.parentRefs"
        };
        let backend_field = |rule: usize| match r.kind {
            Kind::TrafficSplit => "spec.backends".to_owned(),
            _ => format!("spec.rules[{rule}].backendRefs"),
        };
        let missing = |s: &ServiceName| {
            !self
                .services
                .contains_key(&(s.namespace.clone(), s.name.clone()))
        };
        let reason = |s: &ServiceName| Reason::MissingService(Box::new(s.clone()));
        if let Some((s, _)) = rec.parents.iter().find(|(s, _)| missing(s)) {
            return Err(Rejection::new(r, parent_field, reason(s)));
        }
        for (i, rule) in rec.rules.iter().enumerate() {
            if let Some(b) = rule.backends.iter().find(|b| missing(&b.service)) {
                return Err(Rejection::new(r, backend_field(i), reason(&b.service)));
            }
        }
        Ok(())
    }

    /// The mesh settings in force.
    fn mesh_settings(&self) -> MeshSettings {
        let spec = self.mesh_configs.get(MESH_CONFIG_NAME).map(|c| &c.spec);
        MeshSettings {
            default_action: spec.map(|s| s.default_action).unwrap_or_default(),
            mtls: spec.map(|s| s.mtls.mode).unwrap_or_default(),
            trust_domain: spec
                .and_then(|s| s.trust_domain.clone())
                .unwrap_or_else(|| self.config.trust_domain.clone()),
        }
    }

    /// Computes the desired state from the current records.
    pub fn snapshot(&mut self) -> DesiredState {
        self.generation += 1;
        let mesh = self.mesh_settings();
        let mut state = DesiredState {
            generation: self.generation,
            mesh,
            ..Default::default()
        };
        services::workloads_and_endpoints(self, &mut state);
        services::services(self, &mut state);
        routes::routes(self, &mut state);
        policy::policy(self, &mut state);
        state
    }
}
