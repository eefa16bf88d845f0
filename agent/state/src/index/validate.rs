//! Checks each object and turns it into the record the index keeps.
//! Everything that can be wrong with an object on its own is found here;
//! references to other objects are checked by the index.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

mod routes;

pub(super) use routes::{grpc_route, http_route, traffic_split};

use super::selector::Selector;
use crate::desired::{
    GrpcMatch, HttpMatch, PROTO_TCP, PROTO_UDP, Retry, RuleSource, ServiceName, StringMatch,
    WeightedService,
};
use crate::identity::Identity;
use crate::model::crds::{AuthorizationAction, AuthorizationPolicy, MeshConfig};
use crate::model::{CGROUP_ANNOTATION, MESH_ENABLED, MESH_LABEL, ObjectRef};
use crate::rejection::{Reason, Rejection};

/// What the index keeps of a Namespace.
#[derive(Clone, Debug, PartialEq)]
pub struct NamespaceRecord {
    /// Whether the namespace carries the mesh label.
    pub meshed: bool,
}

/// What the index keeps of a Pod.
#[derive(Clone, Debug, PartialEq)]
pub struct PodRecord {
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Service account (`default` when unset).
    pub service_account: String,
    /// Pod IPs (empty while pending, and for host-network Pods).
    pub ips: Vec<IpAddr>,
    /// The node it runs on.
    pub node: Option<String>,
    /// The node's address (`status.hostIP`).
    pub host_ip: Option<IpAddr>,
    /// Its cgroup relative to the cgroup2 mount, when known.
    pub cgroup: Option<String>,
    /// `Some(true)` when the Pod itself carries the mesh label.
    pub labelled_meshed: bool,
    /// Named container ports, for Services with named target ports.
    pub named_ports: BTreeMap<String, u16>,
}

/// A Service port.
#[derive(Clone, Debug, PartialEq)]
pub struct ServicePortRecord {
    /// Port name.
    pub name: Option<String>,
    /// Service port.
    pub port: u16,
    /// IP protocol number.
    pub proto: u8,
    /// Target port: a number or a container port name.
    pub target: Target,
}

/// A Service port's target.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    /// A port number.
    Number(u16),
    /// A named container port.
    Name(String),
}

/// What the index keeps of a Service.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceRecord {
    /// Cluster IPs (empty for headless and ExternalName Services).
    pub vips: Vec<IpAddr>,
    /// Ports.
    pub ports: Vec<ServicePortRecord>,
    /// Pod selector, if any.
    pub selector: Option<Selector>,
}

/// One endpoint of an EndpointSlice.
#[derive(Clone, Debug, PartialEq)]
pub struct SliceEndpoint {
    /// Addresses.
    pub ips: Vec<IpAddr>,
    /// Name of the Pod behind it (same namespace), if the slice says.
    pub pod: Option<String>,
}

/// What the index keeps of an EndpointSlice.
#[derive(Clone, Debug, PartialEq)]
pub struct SliceRecord {
    /// The Service it belongs to (`kubernetes.io/service-name`).
    pub service: String,
    /// Ports: name, number, protocol.
    pub ports: Vec<(Option<String>, u16, u8)>,
    /// Ready endpoints.
    pub endpoints: Vec<SliceEndpoint>,
}

/// A route attached to a Service, from an HTTPRoute, GRPCRoute or TrafficSplit.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteRecord {
    /// For ordering: creation timestamp (RFC 3339, empty when absent).
    pub created: String,
    /// Parents: the Service and an optional port.
    pub parents: Vec<(ServiceName, Option<u16>)>,
    /// The rules.
    pub rules: Vec<RouteRuleRecord>,
}

/// One rule of a [`RouteRecord`].
#[derive(Clone, Debug, PartialEq)]
pub struct RouteRuleRecord {
    /// Where it comes from.
    pub source: RuleSource,
    /// Conditions.
    pub matches: RuleMatches,
    /// Weighted backends.
    pub backends: Vec<WeightedService>,
    /// Whole-request timeout.
    pub request_timeout: Option<Duration>,
    /// Per-try timeout.
    pub backend_request_timeout: Option<Duration>,
    /// Retries.
    pub retry: Option<Retry>,
}

/// The conditions of a rule.
#[derive(Clone, Debug, PartialEq)]
pub enum RuleMatches {
    /// HTTP conditions (empty: all requests).
    Http(Vec<HttpMatch>),
    /// gRPC conditions (empty: all requests).
    Grpc(Vec<GrpcMatch>),
}

impl RouteRuleRecord {
    /// Whether the rule takes every request, so its weights apply at L4 too.
    pub fn is_catch_all(&self) -> bool {
        match &self.matches {
            RuleMatches::Http(m) => {
                m.is_empty()
                    || m.iter().any(|m| {
                        m.headers.is_empty()
                            && m.query_params.is_empty()
                            && m.method.is_none()
                            && m.path
                                .as_ref()
                                .is_none_or(|p| *p == StringMatch::Prefix("/".to_owned()))
                    })
            }
            RuleMatches::Grpc(m) => {
                m.is_empty()
                    || m.iter()
                        .any(|m| m.headers.is_empty() && m.service.is_none() && m.method.is_none())
            }
        }
    }
}

/// What the index keeps of an AuthorizationPolicy.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyRecord {
    /// Target Pods in the policy's namespace.
    pub selector: Selector,
    /// Action.
    pub action: AuthorizationAction,
    /// Rules.
    pub rules: Vec<PolicyRuleRecord>,
}

/// One rule of a [`PolicyRecord`].
#[derive(Clone, Debug, PartialEq, Default)]
pub struct PolicyRuleRecord {
    /// Whether the rule has `from` clauses (if not, any client matches).
    pub any_source: bool,
    /// Client identities.
    pub identities: Vec<Identity>,
    /// Client namespaces.
    pub namespaces: Vec<String>,
    /// Ports (empty: any).
    pub ports: Vec<u16>,
}

/// What the index keeps of the MeshConfig: its spec, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct MeshConfigRecord {
    /// The spec.
    pub spec: crate::model::crds::MeshConfigSpec,
    /// The mTLS overrides' parsed selectors, in order.
    pub mtls_selectors: Vec<Selector>,
}

/// Whether a label map enables the mesh.
pub fn mesh_label(labels: &BTreeMap<String, String>) -> bool {
    labels.get(MESH_LABEL).is_some_and(|v| v == MESH_ENABLED)
}

pub(super) fn namespace(ns: &Namespace) -> NamespaceRecord {
    NamespaceRecord {
        meshed: mesh_label(ns.labels()),
    }
}

fn ip(object: &ObjectRef, field: impl Into<String>, s: &str) -> Result<IpAddr, Rejection> {
    s.parse()
        .map_err(|_| Rejection::new(object, field, Reason::Ip(s.to_owned())))
}

fn port(object: &ObjectRef, field: impl Into<String>, p: i64) -> Result<u16, Rejection> {
    u16::try_from(p)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| Rejection::new(object, field, Reason::Port(p)))
}

fn proto(object: &ObjectRef, field: impl Into<String>, p: Option<&str>) -> Result<u8, Rejection> {
    match p.unwrap_or("TCP") {
        "TCP" => Ok(PROTO_TCP),
        "UDP" => Ok(PROTO_UDP),
        other => Err(Rejection::new(
            object,
            field,
            Reason::Unsupported(other.to_owned()),
        )),
    }
}

pub(super) fn pod(object: &ObjectRef, pod: &Pod) -> Result<PodRecord, Rejection> {
    let spec = pod.spec.as_ref();
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let mut ips = Vec::new();
    if !host_network {
        let status = pod.status.as_ref();
        for (i, p) in status
            .and_then(|s| s.pod_ips.as_ref())
            .into_iter()
            .flatten()
            .enumerate()
        {
            let parsed = ip(object, format!("status.podIPs[{i}].ip"), &p.ip)?;
            if !ips.contains(&parsed) {
                ips.push(parsed);
            }
        }
        if let Some(p) = status.and_then(|s| s.pod_ip.as_deref()) {
            let parsed = ip(object, "status.podIP", p)?;
            if !ips.contains(&parsed) {
                ips.insert(0, parsed);
            }
        }
    }
    let mut named_ports = BTreeMap::new();
    for c in spec.map(|s| s.containers.as_slice()).unwrap_or_default() {
        for p in c.ports.iter().flatten() {
            if let Some(name) = &p.name {
                named_ports.insert(
                    name.clone(),
                    port(
                        object,
                        "spec.containers[].ports[].containerPort",
                        p.container_port.into(),
                    )?,
                );
            }
        }
    }
    Ok(PodRecord {
        labels: pod.labels().clone(),
        service_account: spec
            .and_then(|s| s.service_account_name.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".to_owned()),
        ips,
        node: spec.and_then(|s| s.node_name.clone()),
        host_ip: match pod.status.as_ref().and_then(|s| s.host_ip.as_deref()) {
            Some(h) if !h.is_empty() => Some(ip(object, "status.hostIP", h)?),
            _ => None,
        },
        cgroup: pod
            .annotations()
            .get(CGROUP_ANNOTATION)
            .map(|c| c.trim_matches('/').to_owned())
            .filter(|c| !c.is_empty()),
        labelled_meshed: mesh_label(pod.labels()),
        named_ports,
    })
}

pub(super) fn service(object: &ObjectRef, svc: &Service) -> Result<ServiceRecord, Rejection> {
    let Some(spec) = &svc.spec else {
        return Ok(ServiceRecord {
            vips: vec![],
            ports: vec![],
            selector: None,
        });
    };
    let mut vips = Vec::new();
    let headless = |s: &str| s.is_empty() || s == "None";
    for (i, s) in spec.cluster_ips.iter().flatten().enumerate() {
        if !headless(s) {
            let v = ip(object, format!("spec.clusterIPs[{i}]"), s)?;
            if !vips.contains(&v) {
                vips.push(v);
            }
        }
    }
    if let Some(s) = spec.cluster_ip.as_deref().filter(|s| !headless(s)) {
        let v = ip(object, "spec.clusterIP", s)?;
        if !vips.contains(&v) {
            vips.insert(0, v);
        }
    }
    if spec.type_.as_deref() == Some("ExternalName") {
        vips.clear();
    }
    let mut ports = Vec::new();
    for (i, p) in spec.ports.iter().flatten().enumerate() {
        let number = port(object, format!("spec.ports[{i}].port"), p.port.into())?;
        let target = match &p.target_port {
            None => Target::Number(number),
            Some(IntOrString::Int(n)) => Target::Number(port(
                object,
                format!("spec.ports[{i}].targetPort"),
                (*n).into(),
            )?),
            Some(IntOrString::String(s)) => match s.parse::<i64>() {
                Ok(n) => Target::Number(port(object, format!("spec.ports[{i}].targetPort"), n)?),
                Err(_) => Target::Name(s.clone()),
            },
        };
        ports.push(ServicePortRecord {
            name: p.name.clone().filter(|n| !n.is_empty()),
            port: number,
            proto: proto(
                object,
                format!("spec.ports[{i}].protocol"),
                p.protocol.as_deref(),
            )?,
            target,
        });
    }
    Ok(ServiceRecord {
        vips,
        ports,
        selector: spec
            .selector
            .as_ref()
            .filter(|s| !s.is_empty())
            .map(Selector::from_labels),
    })
}

/// Label naming an EndpointSlice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

pub(super) fn endpoint_slice(
    object: &ObjectRef,
    slice: &EndpointSlice,
) -> Result<SliceRecord, Rejection> {
    let service = slice
        .labels()
        .get(SERVICE_NAME_LABEL)
        .cloned()
        .ok_or_else(|| {
            Rejection::new(
                object,
                format!("metadata.labels[{SERVICE_NAME_LABEL}]"),
                Reason::Missing,
            )
        })?;
    let mut ports = Vec::new();
    for (i, p) in slice.ports.iter().flatten().enumerate() {
        let Some(n) = p.port else { continue };
        ports.push((
            p.name.clone().filter(|n| !n.is_empty()),
            port(object, format!("ports[{i}].port"), n.into())?,
            proto(
                object,
                format!("ports[{i}].protocol"),
                p.protocol.as_deref(),
            )?,
        ));
    }
    let mut endpoints = Vec::new();
    for (i, ep) in slice.endpoints.iter().flatten().enumerate() {
        if ep.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
            continue;
        }
        let ips = ep
            .addresses
            .iter()
            .enumerate()
            .map(|(j, a)| ip(object, format!("endpoints[{i}].addresses[{j}]"), a))
            .collect::<Result<Vec<_>, _>>()?;
        let pod = ep
            .target_ref
            .as_ref()
            .filter(|t| t.kind.as_deref() == Some("Pod"))
            .and_then(|t| t.name.clone());
        endpoints.push(SliceEndpoint { ips, pod });
    }
    Ok(SliceRecord {
        service,
        ports,
        endpoints,
    })
}

/// Parses a Gateway API duration: one or more `<number><unit>` with units
/// `h`, `m`, `s`, `ms` (e.g. `1h30m`, `500ms`).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 2)
        } else if rest.starts_with('h') {
            (Duration::from_secs(3600), 1)
        } else if rest.starts_with('m') {
            (Duration::from_secs(60), 1)
        } else if rest.starts_with('s') {
            (Duration::from_secs(1), 1)
        } else {
            return None;
        };
        total += unit.checked_mul(u32::try_from(n).ok()?)?;
        rest = &rest[len..];
    }
    Some(total)
}

pub(super) fn authorization_policy(
    object: &ObjectRef,
    policy: &AuthorizationPolicy,
) -> Result<PolicyRecord, Rejection> {
    let selector = Selector::parse(&policy.spec.target_selector)
        .map_err(|e| Rejection::new(object, "spec.targetSelector", Reason::Selector(e)))?;
    let mut rules = Vec::new();
    for (r, rule) in policy.spec.rules.iter().enumerate() {
        let mut rec = PolicyRuleRecord {
            any_source: rule.from.is_empty(),
            ..Default::default()
        };
        for (f, from) in rule.from.iter().enumerate() {
            for (i, id) in from.identities.iter().enumerate() {
                let parsed = Identity::parse(id).ok_or_else(|| {
                    Rejection::new(
                        object,
                        format!("spec.rules[{r}].from[{f}].identities[{i}]"),
                        Reason::SpiffeId(id.clone()),
                    )
                })?;
                rec.identities.push(parsed);
            }
            rec.namespaces.extend(from.namespaces.iter().cloned());
            if from.identities.is_empty() && from.namespaces.is_empty() {
                rec.any_source = true;
            }
        }
        for (t, to) in rule.to.iter().enumerate() {
            for (p, n) in to.ports.iter().enumerate() {
                rec.ports.push(port(
                    object,
                    format!("spec.rules[{r}].to[{t}].ports[{p}]"),
                    (*n).into(),
                )?);
            }
        }
        rules.push(rec);
    }
    Ok(PolicyRecord {
        selector,
        action: policy.spec.action,
        rules,
    })
}

pub(super) fn mesh_config(
    object: &ObjectRef,
    config: &MeshConfig,
) -> Result<MeshConfigRecord, Rejection> {
    let mut mtls_selectors = Vec::new();
    for (i, o) in config.spec.mtls.workloads.iter().enumerate() {
        if o.namespace.is_empty() {
            return Err(Rejection::new(
                object,
                format!("spec.mtls.workloads[{i}].namespace"),
                Reason::Missing,
            ));
        }
        mtls_selectors.push(Selector::parse(&o.selector).map_err(|e| {
            Rejection::new(
                object,
                format!("spec.mtls.workloads[{i}].selector"),
                Reason::Selector(e),
            )
        })?);
    }
    if let Some(td) = &config.spec.trust_domain
        && (td.is_empty() || td.contains('/'))
    {
        return Err(Rejection::new(
            object,
            "spec.trustDomain",
            Reason::Unsupported(td.clone()),
        ));
    }
    Ok(MeshConfigRecord {
        spec: config.spec.clone(),
        mtls_selectors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_gateway_api_format() {
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0s"), Some(Duration::ZERO));
        for bad in ["", "10", "s", "1.5s", "-1s", "10x"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
