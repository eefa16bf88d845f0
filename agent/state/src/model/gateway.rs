//! Gateway API routes in GAMMA (mesh) mode: `HTTPRoute` and `GRPCRoute`
//! (`gateway.networking.k8s.io/v1`) whose `parentRefs` name a Service.
//!
//! Only the fields nodemesh acts on are declared; other fields are ignored.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group of Gateway API kinds.
pub const GROUP: &str = "gateway.networking.k8s.io";

/// Routing rules for HTTP requests to the parent Services.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "HTTPRoute",
    namespaced
)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteSpec {
    /// The Services (kind Service, group "" or "core") the route attaches to.
    #[serde(default)]
    pub parent_refs: Vec<ParentRef>,
    /// Host names the route matches (informational in mesh mode).
    #[serde(default)]
    pub hostnames: Vec<String>,
    /// The rules, in order of precedence.
    #[serde(default)]
    pub rules: Vec<HttpRouteRule>,
}

/// A reference to a route's parent.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParentRef {
    /// API group of the parent; "" or "core" for a Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Kind of the parent; `Gateway` when absent (routes attached to gateways are ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Namespace of the parent; the route's own when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name of the parent.
    pub name: String,
    /// A port of the Service the route is limited to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
}

impl ParentRef {
    /// Whether the parent is a Service (GAMMA), as opposed to a Gateway.
    pub fn is_service(&self) -> bool {
        matches!(self.group.as_deref(), None | Some("") | Some("core"))
            && self.kind.as_deref() == Some("Service")
    }
}

/// One HTTP routing rule.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteRule {
    /// Optional rule name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Requests matching any of these use the rule; none means "all requests".
    #[serde(default)]
    pub matches: Vec<HttpRouteMatch>,
    /// Where matching requests go, weighted.
    #[serde(default)]
    pub backend_refs: Vec<BackendRef>,
    /// Request timeouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<HttpRouteTimeouts>,
    /// Retries (Gateway API experimental channel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<HttpRouteRetry>,
}

/// An HTTP request match; all given conditions must hold.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteMatch {
    /// Path condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<HttpPathMatch>,
    /// Header conditions.
    #[serde(default)]
    pub headers: Vec<HeaderMatch>,
    /// Query parameter conditions.
    #[serde(default)]
    pub query_params: Vec<HeaderMatch>,
    /// HTTP method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

/// A path condition.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpPathMatch {
    /// `Exact`, `PathPrefix` (default) or `RegularExpression`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// The path or pattern; `/` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// A header (or query parameter) condition.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeaderMatch {
    /// `Exact` (default) or `RegularExpression`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Header or parameter name.
    pub name: String,
    /// The value or pattern.
    pub value: String,
}

/// A weighted reference to a backend Service.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendRef {
    /// API group; "" or "core" for a Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Kind; `Service` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Service name.
    pub name: String,
    /// Service namespace; the route's own when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Service port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// Relative weight; 1 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
}

/// Timeouts in Gateway API duration format (`10s`, `500ms`, `1h30m`).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteTimeouts {
    /// Whole request, including retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// Each try to a backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_request: Option<String>,
}

/// Retry settings.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteRetry {
    /// HTTP status codes that are retried.
    #[serde(default)]
    pub codes: Vec<u16>,
    /// Most retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<i32>,
    /// Wait between tries, Gateway API duration format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<String>,
}

/// Routing rules for gRPC requests to the parent Services.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "GRPCRoute",
    namespaced
)]
#[serde(rename_all = "camelCase")]
pub struct GrpcRouteSpec {
    /// The Services the route attaches to.
    #[serde(default)]
    pub parent_refs: Vec<ParentRef>,
    /// Host names the route matches (informational in mesh mode).
    #[serde(default)]
    pub hostnames: Vec<String>,
    /// The rules, in order of precedence.
    #[serde(default)]
    pub rules: Vec<GrpcRouteRule>,
}

/// One gRPC routing rule.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GrpcRouteRule {
    /// Optional rule name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Requests matching any of these use the rule; none means "all requests".
    #[serde(default)]
    pub matches: Vec<GrpcRouteMatch>,
    /// Where matching requests go, weighted.
    #[serde(default)]
    pub backend_refs: Vec<BackendRef>,
}

/// A gRPC request match.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GrpcRouteMatch {
    /// gRPC service and method condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<GrpcMethodMatch>,
    /// Header (metadata) conditions.
    #[serde(default)]
    pub headers: Vec<HeaderMatch>,
}

/// A gRPC method condition.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GrpcMethodMatch {
    /// `Exact` (default) or `RegularExpression`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Fully qualified service name, e.g. `demo.Ratings`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Method name, e.g. `Get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}
