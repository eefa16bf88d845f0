//! The Namespace and the ConfigMap of mesh settings.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use nodemesh_state::model::MESH_LABEL;

use super::meta::{CONFIG_MAP_NAME, cluster_meta, common_labels, namespaced_meta};
use super::options::InstallOptions;

/// ConfigMap key of the SPIFFE trust domain (the agent's `NODEMESH_TRUST_DOMAIN`).
pub const TRUST_DOMAIN_KEY: &str = "trust-domain";
/// ConfigMap key of the agent's log filter (its `NODEMESH_LOG`).
pub const LOG_KEY: &str = "log";
/// The log filter the ConfigMap starts with.
pub const DEFAULT_LOG: &str = "info";

/// Pod Security Admission labels: the agent needs host networking, host
/// paths and kernel capabilities, which the `baseline` level forbids.
const POD_SECURITY_LABELS: [&str; 3] = [
    "pod-security.kubernetes.io/enforce",
    "pod-security.kubernetes.io/audit",
    "pod-security.kubernetes.io/warn",
];

/// The agent's namespace. Its own pods are never meshed.
pub fn namespace(options: &InstallOptions) -> Namespace {
    let mut labels = common_labels();
    labels.insert(MESH_LABEL.to_owned(), "disabled".to_owned());
    for key in POD_SECURITY_LABELS {
        labels.insert(key.to_owned(), "privileged".to_owned());
    }
    Namespace {
        metadata: cluster_meta(options.namespace(), labels),
        ..Namespace::default()
    }
}

/// The mesh settings the agents read through their environment.
pub fn config_map(options: &InstallOptions) -> ConfigMap {
    ConfigMap {
        metadata: namespaced_meta(CONFIG_MAP_NAME, options.namespace(), common_labels()),
        data: Some(config_data(options)),
        ..ConfigMap::default()
    }
}

/// The ConfigMap's data.
pub fn config_data(options: &InstallOptions) -> BTreeMap<String, String> {
    [
        (TRUST_DOMAIN_KEY, options.trust_domain()),
        (LOG_KEY, DEFAULT_LOG),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// A stable 64-bit FNV-1a digest of the ConfigMap's data, as hex: the pod
/// template carries it so that installing changed settings rolls the agents.
pub fn config_digest(data: &BTreeMap<String, String>) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (key, value) in data {
        for byte in key.bytes().chain([0]).chain(value.bytes()).chain([0]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}
