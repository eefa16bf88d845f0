//! nodemesh's own custom resources, group `nodemesh.io`, version `v1alpha1`.
//!
//! The CRD manifests are generated from these types by [`crd_yaml`], never
//! written by hand.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Who may talk to the workloads a [`AuthorizationPolicy`] selects.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "nodemesh.io",
    version = "v1alpha1",
    kind = "AuthorizationPolicy",
    namespaced,
    shortname = "nmauthz"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationPolicySpec {
    /// The Pods of the policy's namespace it applies to; empty selects all of them.
    #[serde(default)]
    pub target_selector: LabelSelector,
    /// What happens to a connection the rules match.
    pub action: AuthorizationAction,
    /// The connections the policy matches; no rule matches nothing for
    /// `ALLOW` (so only the implicit deny remains) and everything for `DENY`.
    #[serde(default)]
    pub rules: Vec<AuthorizationRule>,
}

/// The verdict of an [`AuthorizationPolicy`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum AuthorizationAction {
    /// Matching connections are allowed; once any ALLOW policy selects a
    /// workload, connections no ALLOW rule matches are denied.
    #[default]
    Allow,
    /// Matching connections are denied; DENY wins over ALLOW.
    Deny,
    /// Matching connections are logged by the proxy; no effect on the verdict.
    Audit,
}

/// One rule: all of its `from` and `to` clauses must match (an empty list matches anything).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationRule {
    /// The sources; any one of them matching is enough.
    #[serde(default)]
    pub from: Vec<AuthorizationSource>,
    /// The destinations; any one of them matching is enough.
    #[serde(default)]
    pub to: Vec<AuthorizationDestination>,
}

/// Clients, by SPIFFE identity or namespace.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationSource {
    /// SPIFFE IDs (`spiffe://<trust-domain>/ns/<ns>/sa/<sa>`).
    #[serde(default)]
    pub identities: Vec<String>,
    /// Namespaces whose workloads match.
    #[serde(default)]
    pub namespaces: Vec<String>,
}

/// Destination ports of the selected workloads.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationDestination {
    /// Ports (the Pod's container ports, not Service ports); empty is any port.
    #[serde(default)]
    pub ports: Vec<u16>,
}

/// Mesh-wide settings; the agent honours the one named [`MESH_CONFIG_NAME`].
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "nodemesh.io",
    version = "v1alpha1",
    kind = "MeshConfig",
    shortname = "nmconfig"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshConfigSpec {
    /// Verdict for meshed workloads no ALLOW policy selects.
    #[serde(default)]
    pub default_action: DefaultAction,
    /// Mutual TLS for inbound connections of meshed workloads.
    #[serde(default)]
    pub mtls: MtlsSettings,
    /// The SPIFFE trust domain; the agent's configured one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_domain: Option<String>,
}

/// The name of the [`MeshConfig`] the agent reads.
pub const MESH_CONFIG_NAME: &str = "default";

/// Mesh-wide default verdict.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum DefaultAction {
    /// Connections between meshed workloads are allowed unless a policy says otherwise.
    #[default]
    Allow,
    /// Connections to meshed workloads are denied unless an ALLOW policy matches.
    Deny,
}

/// Mutual TLS settings: a mesh-wide mode and per-workload overrides.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MtlsSettings {
    /// Mode of workloads no override selects.
    #[serde(default)]
    pub mode: MtlsMode,
    /// Overrides; the first one that selects a workload wins.
    #[serde(default)]
    pub workloads: Vec<MtlsOverride>,
}

/// Whether a meshed workload also accepts plaintext.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum MtlsMode {
    /// Accepts mTLS and plaintext.
    #[default]
    Permissive,
    /// Accepts mTLS only.
    Strict,
}

/// The mTLS mode of some workloads.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MtlsOverride {
    /// Namespace of the workloads.
    pub namespace: String,
    /// Pods of that namespace; empty selects all of them.
    #[serde(default)]
    pub selector: LabelSelector,
    /// Their mode.
    pub mode: MtlsMode,
}

/// The definitions of nodemesh's CRDs, generated from the Rust types.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![AuthorizationPolicy::crd(), MeshConfig::crd()]
}

/// The CRD manifests as one multi-document YAML stream, for `nodemesh install`.
pub fn crd_yaml() -> Result<String, serde_yaml_ng::Error> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&crd)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crd_yaml_parses_back_into_definitions() {
        let yaml = crd_yaml().expect("CRDs serialize");
        let parsed: Vec<CustomResourceDefinition> = serde_yaml_ng::Deserializer::from_str(&yaml)
            .map(|doc| CustomResourceDefinition::deserialize(doc).expect("valid CRD"))
            .collect();
        let names: Vec<_> = parsed
            .iter()
            .map(|c| c.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "authorizationpolicies.nodemesh.io",
                "meshconfigs.nodemesh.io"
            ]
        );
        let authz = &parsed[0];
        assert_eq!(authz.spec.scope, "Namespaced");
        assert_eq!(parsed[1].spec.scope, "Cluster");
        let schema = authz.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .expect("schema present");
        let spec = &schema.properties.as_ref().unwrap()["spec"];
        let props = spec.properties.as_ref().unwrap();
        assert!(props.contains_key("targetSelector"));
        assert!(props.contains_key("rules"));
        let action = &props["action"];
        let allowed: Vec<_> = action
            .enum_
            .as_ref()
            .unwrap()
            .iter()
            .map(|v| v.0.clone())
            .collect();
        assert_eq!(
            allowed,
            [
                serde_json::json!("ALLOW"),
                serde_json::json!("DENY"),
                serde_json::json!("AUDIT")
            ]
        );
    }

    #[test]
    fn unknown_spec_fields_are_refused() {
        let bad = serde_json::json!({"action": "DENY", "rulez": []});
        let err = serde_json::from_value::<AuthorizationPolicySpec>(bad).unwrap_err();
        assert!(err.to_string().contains("unknown field `rulez`"), "{err}");
    }
}
