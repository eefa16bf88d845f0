//! Authorization: per-workload policies for the proxy, and the L4 rules
//! that can be derived for the kernel.
//!
//! Kernel rules are keyed by identity numbers, so a policy yields L4 rules
//! only for destination identities all of whose Pods (in the policy's
//! namespace) it selects. DENY wins over ALLOW; a workload selected by any
//! ALLOW policy (or every meshed workload under a mesh-wide DENY default)
//! gets a fallback deny that ALLOW rules override. Because the kernel takes
//! the most specific key first, an ALLOW rule that is broader than a DENY
//! rule on some field gets an explicit DENY key at their intersection.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{IdentityKey, Index};
use crate::desired::{
    AuthorizationEntry, AuthorizationMatch, DesiredState, PolicyRule, PolicyRuleKey, ServiceName,
    Verdict,
};
use crate::identity::Identity;
use crate::model::crds::{AuthorizationAction, DefaultAction, MESH_CONFIG_NAME};
use crate::model::{Kind, ObjectRef};

/// Fills `policy` and `authorization`.
pub(super) fn policy(ix: &mut Index, state: &mut DesiredState) {
    let td = state.mesh.trust_domain.clone();
    let Index {
        pods,
        policies,
        identity_numbers,
        rule_ids,
        namespaces,
        ..
    } = ix;
    // Identity number of every Pod, and which identities each namespace has.
    let mut pod_ids: BTreeMap<(&str, &str), u32> = BTreeMap::new();
    let mut by_namespace: BTreeMap<&str, BTreeSet<u32>> = BTreeMap::new();
    let mut meshed_ids = BTreeSet::new();
    for ((ns, name), pod) in pods.iter() {
        let n = identity_numbers.get_or_assign(&IdentityKey::Workload(Identity::new(
            &td,
            ns,
            &pod.service_account,
        )));
        pod_ids.insert((ns, name), n);
        by_namespace.entry(ns).or_default().insert(n);
        if pod.labelled_meshed || namespaces.get(ns).is_some_and(|n| n.meshed) {
            meshed_ids.insert(n);
        }
    }
    let mut deny: BTreeMap<PolicyRuleKey, u32> = BTreeMap::new();
    let mut allow: BTreeMap<PolicyRuleKey, u32> = BTreeMap::new();
    let mut fallback: BTreeMap<PolicyRuleKey, u32> = BTreeMap::new();
    for ((ns, name), p) in policies.iter() {
        let rule_id = rule_ids.get_or_assign(&ObjectRef::new(
            Kind::AuthorizationPolicy,
            ns.clone(),
            name.clone(),
        ));
        let mut selected = BTreeSet::new();
        let mut unselected = BTreeSet::new();
        for ((pns, pname), pod) in pods
            .range((ns.clone(), String::new())..)
            .take_while(|((pns, _), _)| pns == ns)
        {
            let n = pod_ids[&(pns.as_str(), pname.as_str())];
            if p.selector.matches(&pod.labels) {
                selected.insert(n)
            } else {
                unselected.insert(n)
            };
        }
        let entry = AuthorizationEntry {
            policy: ServiceName::new(ns.clone(), name.clone()),
            action: p.action,
            rules: p
                .rules
                .iter()
                .map(|r| AuthorizationMatch {
                    identities: r.identities.clone(),
                    namespaces: r.namespaces.clone(),
                    ports: r.ports.clone(),
                })
                .collect(),
        };
        for n in &selected {
            state
                .authorization
                .entry(*n)
                .or_default()
                .push(entry.clone());
        }
        let dsts: Vec<u32> = selected.difference(&unselected).copied().collect();
        if dsts.is_empty() {
            continue;
        }
        let target = match p.action {
            AuthorizationAction::Deny => &mut deny,
            AuthorizationAction::Allow => &mut allow,
            AuthorizationAction::Audit => continue,
        };
        if p.action == AuthorizationAction::Allow {
            for d in &dsts {
                fallback.insert(
                    PolicyRuleKey {
                        src_identity: 0,
                        dst_identity: *d,
                        port: 0,
                    },
                    rule_id,
                );
            }
        }
        let any_rule = [super::validate::PolicyRuleRecord {
            any_source: true,
            ..Default::default()
        }];
        let rules = if p.rules.is_empty() && p.action == AuthorizationAction::Deny {
            &any_rule[..]
        } else {
            &p.rules[..]
        };
        for rule in rules {
            let mut srcs = BTreeSet::new();
            if rule.any_source {
                srcs.insert(0);
            }
            for id in &rule.identities {
                let n = identity_numbers.get_or_assign(&IdentityKey::Workload(id.clone()));
                state.identities.entry(n).or_insert_with(|| id.clone());
                srcs.insert(n);
            }
            for rns in &rule.namespaces {
                srcs.extend(
                    by_namespace
                        .get(rns.as_str())
                        .into_iter()
                        .flatten()
                        .copied(),
                );
            }
            let ports: Vec<u16> = if rule.ports.is_empty() {
                vec![0]
            } else {
                rule.ports.clone()
            };
            for s in &srcs {
                for port in &ports {
                    for d in &dsts {
                        target.insert(
                            PolicyRuleKey {
                                src_identity: *s,
                                dst_identity: *d,
                                port: *port,
                            },
                            rule_id,
                        );
                    }
                }
            }
        }
    }
    if state.mesh.default_action == DefaultAction::Deny {
        let rule_id =
            rule_ids.get_or_assign(&ObjectRef::new(Kind::MeshConfig, "", MESH_CONFIG_NAME));
        for d in meshed_ids {
            fallback
                .entry(PolicyRuleKey {
                    src_identity: 0,
                    dst_identity: d,
                    port: 0,
                })
                .or_insert(rule_id);
        }
    }
    resolve(&deny, &allow, &fallback, &mut state.policy);
}

fn covers(d: &PolicyRuleKey, a: &PolicyRuleKey) -> bool {
    d.dst_identity == a.dst_identity
        && (d.src_identity == 0 || d.src_identity == a.src_identity)
        && (d.port == 0 || d.port == a.port)
}

fn overlaps(d: &PolicyRuleKey, a: &PolicyRuleKey) -> bool {
    d.dst_identity == a.dst_identity
        && (d.src_identity == 0 || a.src_identity == 0 || d.src_identity == a.src_identity)
        && (d.port == 0 || a.port == 0 || d.port == a.port)
}

/// Combines the three tiers into kernel rules (see the module docs).
fn resolve(
    deny: &BTreeMap<PolicyRuleKey, u32>,
    allow: &BTreeMap<PolicyRuleKey, u32>,
    fallback: &BTreeMap<PolicyRuleKey, u32>,
    out: &mut BTreeMap<PolicyRuleKey, PolicyRule>,
) {
    let mut deny_by_dst: HashMap<u32, Vec<(&PolicyRuleKey, u32)>> = HashMap::new();
    for (k, id) in deny {
        out.insert(
            *k,
            PolicyRule {
                verdict: Verdict::Deny,
                rule_id: *id,
            },
        );
        deny_by_dst
            .entry(k.dst_identity)
            .or_default()
            .push((k, *id));
    }
    for (a, id) in allow {
        let denies = deny_by_dst
            .get(&a.dst_identity)
            .map(Vec::as_slice)
            .unwrap_or_default();
        if denies.iter().any(|(d, _)| covers(d, a)) {
            continue;
        }
        for (d, did) in denies.iter().filter(|(d, _)| overlaps(d, a)) {
            let meet = PolicyRuleKey {
                src_identity: d.src_identity.max(a.src_identity),
                dst_identity: a.dst_identity,
                port: d.port.max(a.port),
            };
            out.insert(
                meet,
                PolicyRule {
                    verdict: Verdict::Deny,
                    rule_id: *did,
                },
            );
        }
        out.entry(*a).or_insert(PolicyRule {
            verdict: Verdict::Allow,
            rule_id: *id,
        });
    }
    for (f, id) in fallback {
        out.entry(*f).or_insert(PolicyRule {
            verdict: Verdict::Deny,
            rule_id: *id,
        });
    }
}
