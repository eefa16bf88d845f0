//! The desired state the index computes: what the kernel maps, the proxy's
//! routing tables and its authorization checks should hold.
//!
//! Field names follow the BPF map ABI in `nodemesh-common`; addresses are
//! `std::net::IpAddr` here and converted by the agent.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use crate::identity::Identity;
use crate::model::crds::{AuthorizationAction, DefaultAction, MtlsMode};

pub use nodemesh_common::service::{MAX_SLOTS_PER_SERVICE, PROTO_TCP, PROTO_UDP};

/// Everything the agent should enforce, computed from the cluster model.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DesiredState {
    /// Counts published states; 0 is the empty state before the first sync.
    pub generation: u64,
    /// `SERVICES`/`BACKENDS`: one entry per Service VIP, port and protocol.
    pub services: BTreeMap<ServiceKey, ServiceEntry>,
    /// `ENDPOINTS`: every known workload IP.
    pub endpoints: BTreeMap<IpAddr, EndpointEntry>,
    /// `WORKLOADS`: meshed or not, the Pods of this node that have a cgroup,
    /// keyed by cgroup path relative to the cgroup2 mount.
    pub workloads: BTreeMap<String, WorkloadEntry>,
    /// `POLICY`: in-kernel L4 rules.
    pub policy: BTreeMap<PolicyRuleKey, PolicyRule>,
    /// Identity numbers and the SPIFFE IDs they stand for.
    pub identities: BTreeMap<u32, Identity>,
    /// L7 routing per Service (only Services with routes or splits).
    pub routes: BTreeMap<ServiceName, ServiceRoutes>,
    /// Authorization policies per identity number of the selected workloads.
    pub authorization: BTreeMap<u32, Vec<AuthorizationEntry>>,
    /// Mesh-wide settings.
    pub mesh: MeshSettings,
}

/// A Service's namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceName {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ServiceName {
    /// A Service name.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for ServiceName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// `ServiceKey`: a virtual IP, port and protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    /// The Service's cluster IP (one of them, for dual-stack Services).
    pub vip: IpAddr,
    /// The Service port.
    pub port: u16,
    /// [`PROTO_TCP`] or [`PROTO_UDP`].
    pub proto: u8,
}

/// `ServiceValue` plus the backend table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceEntry {
    /// The Service.
    pub service: ServiceName,
    /// The Service port's name, if it has one.
    pub port_name: Option<String>,
    /// `ServiceValue::id`: stable, non-zero, unique per (Service, port, protocol).
    pub id: u32,
    /// `ServiceValue::identity`: the number used as destination identity for
    /// policy and metrics; the backends' identity when they all share one,
    /// otherwise a number of the Service's own.
    pub identity: u32,
    /// `SERVICE_MESHED`: connections go through the node agent.
    pub meshed: bool,
    /// The backends, sorted; each `weight` is its number of slots.
    pub backends: Vec<BackendEntry>,
}

impl ServiceEntry {
    /// The backend table as the datapath holds it: each backend repeated
    /// `weight` times, so a uniformly random slot is a weighted choice.
    pub fn slots(&self) -> impl Iterator<Item = &BackendEntry> {
        self.backends
            .iter()
            .flat_map(|b| std::iter::repeat_n(b, b.weight as usize))
    }

    /// Number of slots ([`ServiceEntry::slots`]), at most [`MAX_SLOTS_PER_SERVICE`].
    pub fn slot_count(&self) -> u32 {
        self.backends.iter().map(|b| b.weight).sum()
    }
}

/// `Backend`: one endpoint of a Service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackendEntry {
    /// The endpoint's IP.
    pub ip: IpAddr,
    /// The endpoint's (target) port.
    pub port: u16,
    /// Identity number of the workload behind it (never 0).
    pub identity: u32,
    /// Slots this backend occupies; weights are relative to the Service's total.
    pub weight: u32,
}

/// `EndpointInfo`: who is behind an IP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointEntry {
    /// Identity number (never 0).
    pub identity: u32,
    /// `WORKLOAD_MESHED`.
    pub meshed: bool,
    /// The address of the node the workload runs on (the Pod's
    /// `status.hostIP`): where its node agent accepts tunnels. `None` when
    /// unknown (an endpoint of a slice without a Pod).
    pub host_ip: Option<IpAddr>,
    /// STRICT mTLS: plaintext from workloads outside the mesh is refused.
    pub strict: bool,
}

/// `WorkloadInfo` plus what the proxy needs to serve the workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadEntry {
    /// The Pod's namespace.
    pub namespace: String,
    /// The Pod's name.
    pub name: String,
    /// The Pod's IP, once it has one.
    pub ip: Option<IpAddr>,
    /// Identity number (never 0).
    pub identity: u32,
    /// `WORKLOAD_MESHED`.
    pub meshed: bool,
    /// Inbound mTLS mode.
    pub mtls: MtlsMode,
}

/// `PolicyKey` in host types; 0 in any field is a wildcard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyRuleKey {
    /// Source identity number, 0 for any.
    pub src_identity: u32,
    /// Destination identity number, 0 for any.
    pub dst_identity: u32,
    /// Destination port, 0 for any.
    pub port: u16,
}

/// `PolicyValue` in host types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyRule {
    /// Deny or allow.
    pub verdict: Verdict,
    /// A number for logs: the same for every key derived from one policy.
    pub rule_id: u32,
}

/// An in-kernel verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// `ACTION_DENY`.
    Deny,
    /// `ACTION_ALLOW`.
    Allow,
}

/// Mesh-wide settings from the MeshConfig.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MeshSettings {
    /// Verdict for meshed workloads no ALLOW policy selects.
    pub default_action: DefaultAction,
    /// mTLS mode of workloads no override selects.
    pub mtls: MtlsMode,
    /// The SPIFFE trust domain in force.
    pub trust_domain: String,
}

/// The L7 routing of one Service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceRoutes {
    /// HTTP rules, in precedence order (producer routes first, then by
    /// creation order of the route objects).
    pub http: Vec<HttpRule>,
    /// gRPC rules, in precedence order.
    pub grpc: Vec<GrpcRule>,
}

/// Where a rule comes from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleSource {
    /// `HTTPRoute`, `GRPCRoute` or `TrafficSplit`.
    pub kind: &'static str,
    /// The object's namespace.
    pub namespace: String,
    /// The object's name.
    pub name: String,
    /// Index of the rule in the object.
    pub rule: usize,
}

/// One HTTP routing rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRule {
    /// Where it comes from.
    pub source: RuleSource,
    /// `Some(ns)` for a consumer route: only clients in `ns` use it.
    pub consumer_namespace: Option<String>,
    /// Only for this Service port, if set.
    pub port: Option<u16>,
    /// Requests matching any of these use the rule; empty matches all.
    pub matches: Vec<HttpMatch>,
    /// Weighted backend Services.
    pub backends: Vec<WeightedService>,
    /// Timeout of the whole request.
    pub request_timeout: Option<Duration>,
    /// Timeout of each try.
    pub backend_request_timeout: Option<Duration>,
    /// Retries.
    pub retry: Option<Retry>,
}

/// One gRPC routing rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrpcRule {
    /// Where it comes from.
    pub source: RuleSource,
    /// `Some(ns)` for a consumer route.
    pub consumer_namespace: Option<String>,
    /// Only for this Service port, if set.
    pub port: Option<u16>,
    /// Requests matching any of these use the rule; empty matches all.
    pub matches: Vec<GrpcMatch>,
    /// Weighted backend Services.
    pub backends: Vec<WeightedService>,
}

/// An HTTP request condition; all given parts must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpMatch {
    /// Path condition.
    pub path: Option<StringMatch>,
    /// Header conditions (names lower-cased).
    pub headers: Vec<(String, StringMatch)>,
    /// Query parameter conditions.
    pub query_params: Vec<(String, StringMatch)>,
    /// Method, upper case.
    pub method: Option<String>,
}

/// A gRPC request condition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GrpcMatch {
    /// gRPC service name condition.
    pub service: Option<StringMatch>,
    /// gRPC method name condition.
    pub method: Option<StringMatch>,
    /// Metadata conditions (names lower-cased).
    pub headers: Vec<(String, StringMatch)>,
}

/// How a string is matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StringMatch {
    /// Equal.
    Exact(String),
    /// Path prefix on `/` boundaries.
    Prefix(String),
    /// RE2-style regular expression, as written.
    Regex(String),
}

/// A backend Service and its weight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightedService {
    /// The Service.
    pub service: ServiceName,
    /// Its port, when the route names one.
    pub port: Option<u16>,
    /// Relative weight; 0 sends it nothing.
    pub weight: u32,
}

/// Retry settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retry {
    /// Most retries.
    pub attempts: u32,
    /// Status codes that are retried (empty: connection errors only).
    pub codes: Vec<u16>,
    /// Wait between tries.
    pub backoff: Option<Duration>,
}

/// An authorization policy as it applies to one workload identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthorizationEntry {
    /// The policy's namespace and name.
    pub policy: ServiceName,
    /// Its action.
    pub action: AuthorizationAction,
    /// Its rules: a connection matches when any rule matches.
    pub rules: Vec<AuthorizationMatch>,
}

/// One rule of an [`AuthorizationEntry`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthorizationMatch {
    /// Client identities (empty with empty `namespaces`: any client).
    pub identities: Vec<Identity>,
    /// Client namespaces.
    pub namespaces: Vec<String>,
    /// Destination ports (empty: any).
    pub ports: Vec<u16>,
}
