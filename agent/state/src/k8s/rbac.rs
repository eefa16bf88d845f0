//! The Kubernetes permissions Kubernetes mode needs: read-only access to
//! every kind it watches.

use std::collections::BTreeMap;

use k8s_openapi::api::rbac::v1::PolicyRule;

use crate::model::Kind;

/// The verbs a watcher uses.
pub const VERBS: [&str; 3] = ["get", "list", "watch"];

/// RBAC rules (get/list/watch only) for a ClusterRole bound to the agent's
/// service account, one rule per API group.
pub fn policy_rules() -> Vec<PolicyRule> {
    let mut by_group: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for kind in Kind::ALL {
        by_group
            .entry(kind.group())
            .or_default()
            .push(kind.plural().to_owned());
    }
    by_group
        .into_iter()
        .map(|(group, mut resources)| {
            resources.sort();
            PolicyRule {
                api_groups: Some(vec![group.to_owned()]),
                resources: Some(resources),
                verbs: VERBS.iter().map(|v| (*v).to_owned()).collect(),
                ..Default::default()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_watched_kind_is_readable_and_nothing_more() {
        let rules = policy_rules();
        for kind in Kind::ALL {
            assert!(
                rules.iter().any(|r| r.api_groups.as_deref()
                    == Some(&[kind.group().to_owned()][..])
                    && r.resources
                        .as_ref()
                        .unwrap()
                        .iter()
                        .any(|res| res == kind.plural())),
                "{kind} not covered"
            );
        }
        assert!(rules.iter().all(|r| r.verbs == ["get", "list", "watch"]));
        let core = rules
            .iter()
            .find(|r| r.api_groups.as_deref() == Some(&["".to_owned()][..]))
            .unwrap();
        assert_eq!(
            core.resources.as_deref().unwrap(),
            ["namespaces", "pods", "services"]
        );
        assert_eq!(rules.len(), 5);
    }
}
