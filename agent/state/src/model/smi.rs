//! SMI `TrafficSplit` (`split.smi-spec.io/v1alpha4`), accepted for
//! compatibility and converted into the same routing model as an HTTPRoute
//! with weighted backends.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Splits traffic for a root Service among backend Services.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "split.smi-spec.io",
    version = "v1alpha4",
    kind = "TrafficSplit",
    namespaced
)]
#[serde(rename_all = "camelCase")]
pub struct TrafficSplitSpec {
    /// The root Service clients address (a name, or an FQDN of the split's namespace).
    pub service: String,
    /// The Services traffic goes to, weighted.
    #[serde(default)]
    pub backends: Vec<TrafficSplitBackend>,
    /// References to `HTTPRouteGroup`s limiting the split (A/B tests); not
    /// supported, so a split that sets them is refused rather than applied
    /// to all traffic.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<serde_json::Value>,
}

/// One weighted backend Service.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrafficSplitBackend {
    /// Service name in the split's namespace.
    pub service: String,
    /// Relative weight.
    pub weight: i64,
}
