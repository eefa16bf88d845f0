//! One enum over every kind nodemesh reads, and references to objects.

use std::fmt;

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;

use super::crds::{AuthorizationPolicy, MeshConfig};
use super::gateway::{GRPCRoute, HTTPRoute};
use super::smi::TrafficSplit;

/// The kinds nodemesh reads, in the order a batch of objects is applied
/// (objects are applied after the objects they refer to).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `v1/Namespace`.
    Namespace,
    /// `nodemesh.io/v1alpha1/MeshConfig`.
    MeshConfig,
    /// `v1/Pod`.
    Pod,
    /// `v1/Service`.
    Service,
    /// `discovery.k8s.io/v1/EndpointSlice`.
    EndpointSlice,
    /// `split.smi-spec.io/v1alpha4/TrafficSplit`.
    TrafficSplit,
    /// `gateway.networking.k8s.io/v1/HTTPRoute`.
    HttpRoute,
    /// `gateway.networking.k8s.io/v1/GRPCRoute`.
    GrpcRoute,
    /// `nodemesh.io/v1alpha1/AuthorizationPolicy`.
    AuthorizationPolicy,
}

impl Kind {
    /// Every kind, in apply order.
    pub const ALL: [Kind; 9] = [
        Kind::Namespace,
        Kind::MeshConfig,
        Kind::Pod,
        Kind::Service,
        Kind::EndpointSlice,
        Kind::TrafficSplit,
        Kind::HttpRoute,
        Kind::GrpcRoute,
        Kind::AuthorizationPolicy,
    ];

    /// The Kubernetes `kind` string.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::MeshConfig => "MeshConfig",
            Kind::Pod => "Pod",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::TrafficSplit => "TrafficSplit",
            Kind::HttpRoute => "HTTPRoute",
            Kind::GrpcRoute => "GRPCRoute",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
        }
    }

    /// The API group (`""` for core).
    pub const fn group(self) -> &'static str {
        match self {
            Kind::Namespace | Kind::Pod | Kind::Service => "",
            Kind::EndpointSlice => "discovery.k8s.io",
            Kind::TrafficSplit => "split.smi-spec.io",
            Kind::HttpRoute | Kind::GrpcRoute => "gateway.networking.k8s.io",
            Kind::MeshConfig | Kind::AuthorizationPolicy => "nodemesh.io",
        }
    }

    /// The lower-case plural resource name, as used in API paths and RBAC rules.
    pub const fn plural(self) -> &'static str {
        match self {
            Kind::Namespace => "namespaces",
            Kind::MeshConfig => "meshconfigs",
            Kind::Pod => "pods",
            Kind::Service => "services",
            Kind::EndpointSlice => "endpointslices",
            Kind::TrafficSplit => "trafficsplits",
            Kind::HttpRoute => "httproutes",
            Kind::GrpcRoute => "grpcroutes",
            Kind::AuthorizationPolicy => "authorizationpolicies",
        }
    }

    /// The kind named by an `apiVersion` and `kind` pair, if nodemesh reads it.
    pub fn from_type(api_version: &str, kind: &str) -> Option<Kind> {
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == kind && k.group() == group)
    }

    /// Whether objects of this kind live in a namespace.
    pub const fn namespaced(self) -> bool {
        !matches!(self, Kind::Namespace | Kind::MeshConfig)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Names one object: kind, namespace (empty for cluster-scoped kinds) and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    /// The object's kind.
    pub kind: Kind,
    /// The object's namespace; empty for cluster-scoped kinds.
    pub namespace: String,
    /// The object's name.
    pub name: String,
}

impl ObjectRef {
    /// A reference to a namespaced object.
    pub fn new(kind: Kind, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// An object of a kind nodemesh reads.
#[derive(Clone, Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "objects are transient on their way into the index; only the largest kind (Pod) is boxed"
)]
pub enum Object {
    /// A Namespace.
    Namespace(Namespace),
    /// The mesh-wide settings.
    MeshConfig(MeshConfig),
    /// A Pod.
    Pod(Box<Pod>),
    /// A Service.
    Service(Service),
    /// An EndpointSlice.
    EndpointSlice(EndpointSlice),
    /// An SMI TrafficSplit.
    TrafficSplit(TrafficSplit),
    /// A Gateway API HTTPRoute.
    HttpRoute(HTTPRoute),
    /// A Gateway API GRPCRoute.
    GrpcRoute(GRPCRoute),
    /// A nodemesh AuthorizationPolicy.
    AuthorizationPolicy(AuthorizationPolicy),
}

impl Object {
    /// The object's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Object::Namespace(_) => Kind::Namespace,
            Object::MeshConfig(_) => Kind::MeshConfig,
            Object::Pod(_) => Kind::Pod,
            Object::Service(_) => Kind::Service,
            Object::EndpointSlice(_) => Kind::EndpointSlice,
            Object::TrafficSplit(_) => Kind::TrafficSplit,
            Object::HttpRoute(_) => Kind::HttpRoute,
            Object::GrpcRoute(_) => Kind::GrpcRoute,
            Object::AuthorizationPolicy(_) => Kind::AuthorizationPolicy,
        }
    }

    /// The object's reference (cluster-scoped kinds get an empty namespace).
    pub fn object_ref(&self) -> ObjectRef {
        let (ns, name) = match self {
            Object::Namespace(o) => (None, o.name_any()),
            Object::MeshConfig(o) => (None, o.name_any()),
            Object::Pod(o) => (o.namespace(), o.name_any()),
            Object::Service(o) => (o.namespace(), o.name_any()),
            Object::EndpointSlice(o) => (o.namespace(), o.name_any()),
            Object::TrafficSplit(o) => (o.namespace(), o.name_any()),
            Object::HttpRoute(o) => (o.namespace(), o.name_any()),
            Object::GrpcRoute(o) => (o.namespace(), o.name_any()),
            Object::AuthorizationPolicy(o) => (o.namespace(), o.name_any()),
        };
        let kind = self.kind();
        let namespace = if kind.namespaced() {
            ns.unwrap_or_else(|| "default".to_owned())
        } else {
            String::new()
        };
        ObjectRef {
            kind,
            namespace,
            name,
        }
    }
}
