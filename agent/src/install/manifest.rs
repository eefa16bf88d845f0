//! The set of installed objects, in the order `kubectl apply` needs them,
//! and their rendering as one multi-document YAML stream.

use k8s_openapi::Resource;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use nodemesh_state::model::crds::crds;
use serde::Serialize;

use super::meta::common_labels;
use super::options::InstallOptions;
use super::{config, daemonset, rbac};

/// One installed object (the large ones boxed). Serializes as the object itself (with its
/// `apiVersion` and `kind`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Manifest {
    /// The agent's namespace.
    Namespace(Namespace),
    /// One of nodemesh's CRDs.
    CustomResourceDefinition(Box<CustomResourceDefinition>),
    /// The agent's service account.
    ServiceAccount(ServiceAccount),
    /// The agent's read-only cluster role.
    ClusterRole(ClusterRole),
    /// The binding of the role to the service account.
    ClusterRoleBinding(ClusterRoleBinding),
    /// The mesh settings.
    ConfigMap(ConfigMap),
    /// The agent.
    DaemonSet(Box<DaemonSet>),
}

impl Manifest {
    /// The object's kind, e.g. `DaemonSet`.
    pub fn kind(&self) -> &'static str {
        match self {
            Manifest::Namespace(_) => Namespace::KIND,
            Manifest::CustomResourceDefinition(_) => CustomResourceDefinition::KIND,
            Manifest::ServiceAccount(_) => ServiceAccount::KIND,
            Manifest::ClusterRole(_) => ClusterRole::KIND,
            Manifest::ClusterRoleBinding(_) => ClusterRoleBinding::KIND,
            Manifest::ConfigMap(_) => ConfigMap::KIND,
            Manifest::DaemonSet(_) => DaemonSet::KIND,
        }
    }

    /// The object's metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Manifest::Namespace(o) => &o.metadata,
            Manifest::CustomResourceDefinition(o) => &o.metadata,
            Manifest::ServiceAccount(o) => &o.metadata,
            Manifest::ClusterRole(o) => &o.metadata,
            Manifest::ClusterRoleBinding(o) => &o.metadata,
            Manifest::ConfigMap(o) => &o.metadata,
            Manifest::DaemonSet(o) => &o.metadata,
        }
    }

    /// The object's name.
    pub fn name(&self) -> &str {
        self.metadata().name.as_deref().unwrap_or_default()
    }
}

/// Everything `nodemesh install` applies, each object after the ones it
/// needs: the namespace, the CRDs, the identity and its permissions, the
/// settings, then the agent.
pub fn install_manifests(options: &InstallOptions) -> Vec<Manifest> {
    let mut out = vec![Manifest::Namespace(config::namespace(options))];
    out.extend(crds().into_iter().map(|mut crd| {
        crd.metadata
            .labels
            .get_or_insert_default()
            .extend(common_labels());
        Manifest::CustomResourceDefinition(Box::new(crd))
    }));
    out.extend([
        Manifest::ServiceAccount(rbac::service_account(options)),
        Manifest::ClusterRole(rbac::cluster_role()),
        Manifest::ClusterRoleBinding(rbac::cluster_role_binding(options)),
        Manifest::ConfigMap(config::config_map(options)),
        Manifest::DaemonSet(Box::new(daemonset::daemon_set(options))),
    ]);
    out
}

/// What `nodemesh uninstall` deletes: the same objects, the agent first
/// and the namespace last.
pub fn uninstall_manifests(options: &InstallOptions) -> Vec<Manifest> {
    let mut out = install_manifests(options);
    out.reverse();
    out
}

/// Renders objects as one YAML stream, each document starting with `---`.
pub fn render(manifests: &[Manifest]) -> Result<String, serde_yaml_ng::Error> {
    let mut out = String::new();
    for manifest in manifests {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(manifest)?);
    }
    Ok(out)
}
