//! The agent's ServiceAccount, ClusterRole and ClusterRoleBinding. The
//! ClusterRole grants exactly [`policy_rules`]: get, list and watch on the
//! kinds the agent reads, nothing more.

use k8s_openapi::Resource as _;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleRef, Subject};
use nodemesh_state::k8s::rbac::policy_rules;

use super::meta::{AGENT_NAME, agent_labels, cluster_meta, namespaced_meta};
use super::options::InstallOptions;

/// The account the agent's pods run as.
pub fn service_account(options: &InstallOptions) -> ServiceAccount {
    ServiceAccount {
        metadata: namespaced_meta(AGENT_NAME, options.namespace(), agent_labels()),
        ..ServiceAccount::default()
    }
}

/// Read-only access to every kind the agent watches.
pub fn cluster_role() -> ClusterRole {
    ClusterRole {
        metadata: cluster_meta(AGENT_NAME, agent_labels()),
        rules: Some(policy_rules()),
        ..ClusterRole::default()
    }
}

/// Grants [`cluster_role`] to [`service_account`].
pub fn cluster_role_binding(options: &InstallOptions) -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: cluster_meta(AGENT_NAME, agent_labels()),
        role_ref: RoleRef {
            api_group: Some(ClusterRole::GROUP.to_owned()),
            kind: ClusterRole::KIND.to_owned(),
            name: AGENT_NAME.to_owned(),
        },
        subjects: Some(vec![Subject {
            kind: ServiceAccount::KIND.to_owned(),
            name: AGENT_NAME.to_owned(),
            namespace: Some(options.namespace().to_owned()),
            ..Subject::default()
        }]),
    }
}
