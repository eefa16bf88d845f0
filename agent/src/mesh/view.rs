//! The routing view the mesh works from, derived from the desired state.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use nodemesh_proxy::authz::{Action, DefaultAction, Policy, Rule, SourceMatch};
use nodemesh_proxy::identity::SpiffeId;
use nodemesh_state::desired::{
    AuthorizationEntry, BackendEntry, DesiredState, PROTO_TCP, ServiceKey,
};
use nodemesh_state::model::crds::{AuthorizationAction, DefaultAction as CrdDefault};

/// A meshed workload on this node.
#[derive(Clone, Debug)]
pub struct LocalWorkload {
    /// Its SPIFFE identity.
    pub identity: SpiffeId,
    /// The authorization policies that select it.
    pub policies: Vec<Policy>,
}

/// Where a connection should go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The workload's address and port.
    pub addr: SocketAddr,
    /// The workload's identity.
    pub identity: SpiffeId,
    /// The node agent to tunnel to, or `None` when the workload is on this node.
    pub remote_node: Option<IpAddr>,
}

/// Everything the data path looks up, swapped atomically on each update.
#[derive(Debug, Default)]
pub struct View {
    /// Identity numbers (as the kernel reports them) to SPIFFE ids.
    pub identities: HashMap<u32, SpiffeId>,
    /// Meshed workloads on this node, by IP.
    pub local: HashMap<IpAddr, LocalWorkload>,
    /// TCP services by VIP and port: their weighted backends.
    pub services: HashMap<SocketAddr, Vec<BackendEntry>>,
    /// Every workload IP: its identity number and the node it runs on.
    pub endpoints: HashMap<IpAddr, (u32, Option<IpAddr>)>,
    /// The mesh-wide authorization default.
    pub default_action: DefaultAction,
}

impl View {
    /// Derives the view from a desired state.
    pub fn build(d: &DesiredState) -> Self {
        let identities: HashMap<u32, SpiffeId> = d
            .identities
            .iter()
            .filter_map(|(n, id)| {
                SpiffeId::new(&id.trust_domain, &id.namespace, &id.service_account)
                    .ok()
                    .map(|s| (*n, s))
            })
            .collect();
        let mut local = HashMap::new();
        for w in d.workloads.values() {
            let (Some(ip), true) = (w.ip, w.meshed) else {
                continue;
            };
            let Some(identity) = identities.get(&w.identity).cloned() else {
                continue;
            };
            let policies = d
                .authorization
                .get(&w.identity)
                .map(|ps| ps.iter().map(policy).collect())
                .unwrap_or_default();
            local.insert(ip, LocalWorkload { identity, policies });
        }
        let services = d
            .services
            .iter()
            .filter(|(k, _)| k.proto == PROTO_TCP)
            .map(|(ServiceKey { vip, port, .. }, e)| {
                (SocketAddr::new(*vip, *port), e.backends.clone())
            })
            .collect();
        let endpoints = d
            .endpoints
            .iter()
            .map(|(ip, e)| (*ip, (e.identity, e.host_ip)))
            .collect();
        View {
            identities,
            local,
            services,
            endpoints,
            default_action: match d.mesh.default_action {
                CrdDefault::Allow => DefaultAction::Allow,
                CrdDefault::Deny => DefaultAction::Deny,
            },
        }
    }

    /// Resolves what the application dialled to a workload, picking a
    /// backend by weight when it dialled a Service.
    pub fn resolve(&self, dialled: SocketAddr, local_node: IpAddr) -> Option<Target> {
        let addr = match self.services.get(&dialled) {
            Some(backends) => {
                let total: u64 = backends.iter().map(|b| u64::from(b.weight)).sum();
                if total == 0 {
                    return None;
                }
                let mut pick = fastrand::u64(0..total);
                let b = backends.iter().find(|b| {
                    if pick < u64::from(b.weight) {
                        true
                    } else {
                        pick -= u64::from(b.weight);
                        false
                    }
                })?;
                SocketAddr::new(b.ip, b.port)
            }
            None => dialled,
        };
        let (number, host) = self.endpoints.get(&addr.ip())?;
        let identity = self.identities.get(number)?.clone();
        let remote_node = if self.local.contains_key(&addr.ip()) {
            None
        } else {
            Some(host.filter(|h| *h != local_node)?)
        };
        Some(Target {
            addr,
            identity,
            remote_node,
        })
    }
}

fn policy(e: &AuthorizationEntry) -> Policy {
    Policy {
        name: e.policy.to_string(),
        action: match e.action {
            AuthorizationAction::Allow => Action::Allow,
            AuthorizationAction::Deny => Action::Deny,
            AuthorizationAction::Audit => Action::Audit,
        },
        rules: e
            .rules
            .iter()
            .map(|m| Rule {
                sources: m
                    .identities
                    .iter()
                    .filter_map(|i| {
                        SpiffeId::new(&i.trust_domain, &i.namespace, &i.service_account).ok()
                    })
                    .map(SourceMatch::Exact)
                    .collect(),
                namespaces: m.namespaces.clone(),
                ports: m.ports.clone(),
            })
            .collect(),
    }
}
