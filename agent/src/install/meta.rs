//! Names, labels and ports shared by the installed objects.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Name of the agent's DaemonSet, ServiceAccount, ClusterRole and ClusterRoleBinding.
pub const AGENT_NAME: &str = "nodemesh-agent";
/// Name of the ConfigMap holding the mesh settings.
pub const CONFIG_MAP_NAME: &str = "nodemesh-config";
/// Name of the CA Secret `nodemesh ca init --secret` creates.
pub const CA_SECRET_NAME: &str = "nodemesh-ca";
/// Where the CA Secret is mounted in the agent (its `--ca-dir`).
pub const CA_MOUNT_PATH: &str = "/var/lib/nodemesh/ca";
/// The agent's container name.
pub const CONTAINER_NAME: &str = "agent";

/// Port of the agent's outbound listener (its `--redirect-port`).
pub const REDIRECT_PORT: u16 = 15001;
/// Port of the agent's mTLS tunnel server.
pub const TUNNEL_PORT: u16 = crate::mesh::TUNNEL_PORT;

/// Label naming the application every object belongs to.
pub const NAME_LABEL: &str = "app.kubernetes.io/name";
/// Label naming the part of the application.
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
/// Label grouping everything nodemesh installs.
pub const PART_OF_LABEL: &str = "app.kubernetes.io/part-of";
/// Label naming the tool that made the objects.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Label holding the version that made the objects.
pub const VERSION_LABEL: &str = "app.kubernetes.io/version";

/// The labels that select the agent's pods (immutable in a DaemonSet).
pub fn selector_labels() -> BTreeMap<String, String> {
    [(NAME_LABEL, "nodemesh"), (COMPONENT_LABEL, "agent")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The labels every installed object carries.
pub fn common_labels() -> BTreeMap<String, String> {
    [
        (NAME_LABEL, "nodemesh"),
        (PART_OF_LABEL, "nodemesh"),
        (MANAGED_BY_LABEL, "nodemesh-install"),
        (VERSION_LABEL, env!("CARGO_PKG_VERSION")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// The labels of the agent's objects: the common ones and the selector.
pub fn agent_labels() -> BTreeMap<String, String> {
    let mut labels = common_labels();
    labels.extend(selector_labels());
    labels
}

/// Metadata of a cluster-scoped object.
pub fn cluster_meta(name: &str, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        labels: Some(labels),
        ..ObjectMeta::default()
    }
}

/// Metadata of an object in `namespace`.
pub fn namespaced_meta(
    name: &str,
    namespace: &str,
    labels: BTreeMap<String, String>,
) -> ObjectMeta {
    ObjectMeta {
        namespace: Some(namespace.to_owned()),
        ..cluster_meta(name, labels)
    }
}
