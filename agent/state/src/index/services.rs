//! Workloads, endpoints and Services with their weighted backend tables.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use super::validate::{RouteRecord, ServicePortRecord, ServiceRecord, SliceRecord, Target};
use super::{IdentityKey, Index, Key};
use crate::desired::{
    BackendEntry, DesiredState, EndpointEntry, MAX_SLOTS_PER_SERVICE, ServiceEntry, ServiceKey,
    ServiceName, WeightedService, WorkloadEntry,
};
use crate::identity::Identity;
use crate::model::Kind;

/// Fills `workloads`, `endpoints` and `identities` from Pods, then adds the
/// EndpointSlice addresses of Pods the index does not know (in Kubernetes
/// mode only this node's Pods are watched): those get their Service's
/// identity number and their Namespace's mesh membership.
pub(super) fn workloads_and_endpoints(ix: &mut Index, state: &mut DesiredState) {
    let td = state.mesh.trust_domain.clone();
    let Index {
        pods,
        namespaces,
        identity_numbers,
        mesh_configs,
        config,
        slices,
        ..
    } = ix;
    let overrides = mesh_configs.get(crate::model::crds::MESH_CONFIG_NAME);
    for ((ns, name), pod) in pods.iter() {
        let id = Identity::new(&td, ns, &pod.service_account);
        let number = identity_numbers.get_or_assign(&IdentityKey::Workload(id.clone()));
        let meshed = pod.labelled_meshed || namespaces.get(ns).is_some_and(|n| n.meshed);
        state.identities.entry(number).or_insert(id);
        let mtls = overrides
            .and_then(|c| {
                c.spec
                    .mtls
                    .workloads
                    .iter()
                    .zip(&c.mtls_selectors)
                    .find(|(o, sel)| o.namespace == *ns && sel.matches(&pod.labels))
                    .map(|(o, _)| o.mode)
            })
            .unwrap_or(state.mesh.mtls);
        for ip in &pod.ips {
            state.endpoints.insert(
                *ip,
                EndpointEntry {
                    identity: number,
                    meshed,
                    host_ip: pod.host_ip,
                    strict: meshed && mtls == crate::model::crds::MtlsMode::Strict,
                },
            );
        }
        let local =
            !config.node_name.is_empty() && pod.node.as_deref() == Some(config.node_name.as_str());
        if let (true, Some(cgroup)) = (local, &pod.cgroup) {
            state.workloads.insert(
                cgroup.clone(),
                WorkloadEntry {
                    namespace: ns.clone(),
                    name: name.clone(),
                    ip: pod.ips.first().copied(),
                    identity: number,
                    meshed,
                    mtls,
                },
            );
        }
    }
    for ((ns, _), slice) in slices.iter() {
        let meshed = namespaces.get(ns).is_some_and(|n| n.meshed);
        let mut identity = None;
        for ep in &slice.endpoints {
            for ip in &ep.ips {
                if !state.endpoints.contains_key(ip) {
                    let identity = *identity.get_or_insert_with(|| {
                        let svc = ServiceName::new(ns.clone(), slice.service.clone());
                        identity_numbers.get_or_assign(&IdentityKey::Service(svc))
                    });
                    state.endpoints.insert(
                        *ip,
                        EndpointEntry {
                            identity,
                            meshed,
                            host_ip: None,
                            strict: false,
                        },
                    );
                }
            }
        }
    }
}

/// Weighted backend Services of a Service's catch-all rules, by optional port.
type Splits = HashMap<ServiceName, Vec<(Option<u16>, Vec<WeightedService>)>>;

/// A candidate backend before weighting: address, port, identity, meshed.
type Candidate = (IpAddr, u16, u32, bool);

/// Fills `services`: one entry per VIP, port and protocol.
pub(super) fn services(ix: &mut Index, state: &mut DesiredState) {
    let mut slices_by_service: HashMap<(&str, &str), Vec<&SliceRecord>> = HashMap::new();
    for ((ns, _), s) in &ix.slices {
        slices_by_service
            .entry((ns.as_str(), s.service.as_str()))
            .or_default()
            .push(s);
    }
    let splits = weighted_backends(&ix.routes);
    let mut out = Vec::new();
    {
        let ctx = Ctx {
            ix: &*ix,
            slices_by_service: &slices_by_service,
            state: &*state,
        };
        for ((ns, name), svc) in &ix.services {
            if svc.vips.is_empty() {
                continue;
            }
            let svc_name = ServiceName::new(ns.clone(), name.clone());
            for port in &svc.ports {
                let weighted = splits
                    .get(&svc_name)
                    .and_then(|v| v.iter().find(|(p, _)| p.is_none() || *p == Some(port.port)))
                    .map(|(_, b)| b);
                let groups: Vec<(u32, Vec<Candidate>)> = match weighted {
                    Some(backends) => backends
                        .iter()
                        .filter(|b| b.weight > 0)
                        .map(|b| (b.weight, ctx.backends_via(b, port)))
                        .collect(),
                    None => vec![(1, ctx.endpoints_of((ns, name), svc, port))],
                };
                for v4 in [true, false] {
                    let vips: Vec<IpAddr> = svc
                        .vips
                        .iter()
                        .copied()
                        .filter(|v| v.is_ipv4() == v4)
                        .collect();
                    if vips.is_empty() {
                        continue;
                    }
                    let fam_groups: Vec<(u32, Vec<Candidate>)> = groups
                        .iter()
                        .map(|(w, c)| {
                            (
                                *w,
                                c.iter().copied().filter(|c| c.0.is_ipv4() == v4).collect(),
                            )
                        })
                        .collect();
                    let all_meshed = fam_groups.iter().flat_map(|(_, c)| c).all(|c| c.3);
                    let backends = distribute(&svc_name, fam_groups);
                    // Dual-stack Services get a second table for IPv6.
                    let table_name = if v4 || !svc.vips.iter().any(IpAddr::is_ipv4) {
                        svc_name.clone()
                    } else {
                        ServiceName::new(ns.clone(), format!("{name}#v6"))
                    };
                    out.push((
                        svc_name.clone(),
                        table_name,
                        vips,
                        port.clone(),
                        backends,
                        all_meshed,
                    ));
                }
            }
        }
    }
    for (svc_name, table_name, vips, port, backends, all_meshed) in out {
        let id = ix
            .service_ids
            .get_or_assign(&(table_name, port.port, port.proto));
        let first = backends.first().map(|b| b.identity);
        let identity = match first {
            Some(f) if backends.iter().all(|b| b.identity == f) => f,
            _ => ix
                .identity_numbers
                .get_or_assign(&IdentityKey::Service(svc_name.clone())),
        };
        let meshed = ix
            .namespaces
            .get(&svc_name.namespace)
            .is_some_and(|n| n.meshed)
            || (!backends.is_empty() && all_meshed);
        let entry = ServiceEntry {
            service: svc_name,
            port_name: port.name.clone(),
            id,
            identity,
            meshed,
            backends,
        };
        for vip in vips {
            state.services.insert(
                ServiceKey {
                    vip,
                    port: port.port,
                    proto: port.proto,
                },
                entry.clone(),
            );
        }
    }
}

struct Ctx<'a> {
    ix: &'a Index,
    slices_by_service: &'a HashMap<(&'a str, &'a str), Vec<&'a SliceRecord>>,
    state: &'a DesiredState,
}

impl Ctx<'_> {
    /// Endpoints of a weighted backend Service for a parent Service port.
    fn backends_via(&self, b: &WeightedService, parent: &ServicePortRecord) -> Vec<Candidate> {
        let key = (b.service.namespace.clone(), b.service.name.clone());
        let Some(svc) = self.ix.services.get(&key) else {
            return vec![];
        };
        let port = svc
            .ports
            .iter()
            .find(|p| Some(p.port) == b.port)
            .or_else(|| {
                b.port
                    .is_none()
                    .then(|| {
                        svc.ports
                            .iter()
                            .find(|p| p.name.is_some() && p.name == parent.name)
                    })
                    .flatten()
            })
            .or_else(|| {
                b.port
                    .is_none()
                    .then(|| svc.ports.iter().find(|p| p.port == parent.port))
                    .flatten()
            })
            .or_else(|| {
                if b.port.is_none() && svc.ports.len() == 1 {
                    svc.ports.first()
                } else {
                    None
                }
            });
        match port {
            Some(p) => self.endpoints_of((&key.0, &key.1), svc, p),
            None => vec![],
        }
    }

    /// Ready endpoints of one Service port: from its EndpointSlices, or, for
    /// a Service with a selector and no slices, from the selected Pods.
    fn endpoints_of(
        &self,
        (ns, name): (&str, &str),
        svc: &ServiceRecord,
        port: &ServicePortRecord,
    ) -> Vec<Candidate> {
        let own = || {
            self.ix
                .identity_numbers
                .get(&IdentityKey::Service(ServiceName::new(ns, name)))
                .unwrap_or(0)
        };
        let resolve = |ip: &IpAddr| match self.state.endpoints.get(ip) {
            Some(e) => (e.identity, e.meshed),
            None => (own(), false),
        };
        let mut out = Vec::new();
        match self.slices_by_service.get(&(ns, name)) {
            Some(slices) => {
                for slice in slices {
                    let Some((_, target, _)) = slice
                        .ports
                        .iter()
                        .find(|(n, _, proto)| *n == port.name && *proto == port.proto)
                    else {
                        continue;
                    };
                    for ep in &slice.endpoints {
                        for ip in &ep.ips {
                            let (identity, meshed) = resolve(ip);
                            out.push((*ip, *target, identity, meshed));
                        }
                    }
                }
            }
            None => {
                let Some(selector) = &svc.selector else {
                    return out;
                };
                let pods = self
                    .ix
                    .pods
                    .range::<Key, _>((ns.to_owned(), String::new())..);
                for (_, pod) in pods.take_while(|((pns, _), _)| pns == ns) {
                    if !selector.matches(&pod.labels) {
                        continue;
                    }
                    let target = match &port.target {
                        Target::Number(n) => Some(*n),
                        Target::Name(n) => pod.named_ports.get(n).copied(),
                    };
                    let Some(target) = target else { continue };
                    for ip in &pod.ips {
                        let (identity, meshed) = resolve(ip);
                        out.push((*ip, target, identity, meshed));
                    }
                }
            }
        }
        out.sort_unstable();
        out.dedup_by_key(|c| (c.0, c.1));
        out
    }
}

/// For each Service, the weighted backends of its catch-all routing rules
/// (which therefore also apply at L4), by optional port, in precedence
/// order: HTTPRoutes and GRPCRoutes of the Service's own namespace by age,
/// then TrafficSplits.
fn weighted_backends(routes: &BTreeMap<crate::model::ObjectRef, RouteRecord>) -> Splits {
    let mut ordered: Vec<_> = routes.iter().collect();
    ordered.sort_by_key(|(r, rec)| {
        (
            r.kind == Kind::TrafficSplit,
            rec.created.clone(),
            (*r).clone(),
        )
    });
    let mut out = Splits::new();
    for (r, rec) in ordered {
        for (parent, port) in &rec.parents {
            if parent.namespace != r.namespace {
                continue; // consumer routes affect only their namespace's clients: L7 only
            }
            if let Some(rule) = rec
                .rules
                .iter()
                .find(|rule| rule.is_catch_all() && !rule.backends.is_empty())
            {
                out.entry(parent.clone())
                    .or_default()
                    .push((*port, rule.backends.clone()));
            }
        }
    }
    out
}

fn gcd(a: u128, b: u128) -> u128 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Spreads backend groups (a weight and the endpoints sharing it) over
/// slots: each group gets its share of the slots, split equally among its
/// endpoints. Groups without endpoints drop out and the others share their
/// traffic. Exact when the exact table fits in [`MAX_SLOTS_PER_SERVICE`];
/// otherwise rounded by largest remainder.
pub(crate) fn distribute(
    service: &ServiceName,
    groups: Vec<(u32, Vec<Candidate>)>,
) -> Vec<BackendEntry> {
    let groups: Vec<(u128, Vec<Candidate>)> = groups
        .into_iter()
        .filter(|(w, c)| *w > 0 && !c.is_empty())
        .map(|(w, c)| (u128::from(w), c))
        .collect();
    // Exact per-endpoint weights: w_i * L / n_i with L the lcm of the n_i.
    let lcm = groups.iter().fold(1u128, |l, (_, c)| {
        let n = c.len() as u128;
        (l / gcd(l, n)).saturating_mul(n)
    });
    let mut weighted: BTreeMap<(IpAddr, u16, u32), u128> = BTreeMap::new();
    for (w, c) in &groups {
        let per = w.saturating_mul(lcm) / c.len() as u128;
        for (ip, port, identity, _) in c {
            *weighted.entry((*ip, *port, *identity)).or_default() += per;
        }
    }
    let g = weighted.values().fold(0u128, |g, w| gcd(g, *w));
    let mut weights: Vec<((IpAddr, u16, u32), u128)> = weighted
        .into_iter()
        .map(|(k, w)| (k, w / g.max(1)))
        .collect();
    let total: u128 = weights.iter().map(|(_, w)| w).sum();
    let max = u128::from(MAX_SLOTS_PER_SERVICE);
    if total > max {
        if weights.iter().all(|(_, w)| *w == 1) {
            tracing::warn!(service = %service, backends = weights.len(), max, "too many backends; keeping the first slots' worth");
            weights.truncate(MAX_SLOTS_PER_SERVICE as usize);
        } else {
            let mut shares: Vec<(usize, u128, u128)> = weights
                .iter()
                .enumerate()
                .map(|(i, (_, w))| (i, max * w / total, max * w % total))
                .collect();
            let assigned: u128 = shares.iter().map(|s| s.1).sum();
            let mut by_remainder: Vec<usize> = (0..shares.len()).collect();
            by_remainder.sort_by(|a, b| shares[*b].2.cmp(&shares[*a].2).then(a.cmp(b)));
            for i in by_remainder.into_iter().take((max - assigned) as usize) {
                shares[i].1 += 1;
            }
            for (i, s, _) in shares {
                weights[i].1 = s;
            }
            weights.retain(|(_, w)| *w > 0);
        }
    }
    weights
        .into_iter()
        .map(|((ip, port, identity), w)| BackendEntry {
            ip,
            port,
            identity,
            weight: w as u32,
        })
        .collect()
}
