//! Diff order and minimality, checked by replaying changes on a model of the maps.

use std::collections::{BTreeMap, HashMap};

use super::*;
use crate::desired::PROTO_TCP;
use crate::index::{Index, IndexConfig};
use crate::model::decode::decode_yaml;

const BASE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: demo, labels: {nodemesh.io/mesh: enabled}}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec: {clusterIP: 10.96.0.10, ports: [{name: http, port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: web-v2, namespace: demo}
spec: {clusterIP: 10.96.0.11, ports: [{name: http, port: 80, targetPort: 8080}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: demo, labels: {kubernetes.io/service-name: web}}
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [10.244.1.1]}, {addresses: [10.244.1.2]}, {addresses: [10.244.1.3]}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-v2-1, namespace: demo, labels: {kubernetes.io/service-name: web-v2}}
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [10.244.2.1]}]
"#;

const CANARY: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: demo}
spec:
  parentRefs: [{kind: Service, name: web}]
  rules: [{backendRefs: [{name: web, weight: 80}, {name: web-v2, weight: 20}]}]
"#;

fn state(yaml: &str) -> DesiredState {
    let mut ix = Index::new(IndexConfig::default(), None);
    let objects = decode_yaml(yaml).unwrap().into_iter().map(Result::unwrap);
    assert!(ix.apply_all(objects).is_empty());
    ix.snapshot()
}

/// The SERVICES and BACKENDS maps, as the kernel would see them.
#[derive(Default)]
struct Maps {
    services: HashMap<ServiceKey, (u32, u32)>,
    backends: BTreeMap<(u32, u32), SlotBackend>,
    endpoints: HashMap<IpAddr, EndpointEntry>,
}

impl Maps {
    fn apply(&mut self, c: &Change) {
        match c {
            Change::UpsertBackendSlot {
                service_id,
                slot,
                backend,
            } => {
                self.backends.insert((*service_id, *slot), *backend);
            }
            Change::RemoveBackendSlot { service_id, slot } => {
                self.backends
                    .remove(&(*service_id, *slot))
                    .expect("removed slot existed");
            }
            Change::UpsertService { key, id, slots, .. } => {
                self.services.insert(*key, (*id, *slots));
            }
            Change::RemoveService { key } => {
                self.services.remove(key).expect("removed service existed");
            }
            Change::UpsertEndpoint { ip, entry } => {
                self.endpoints.insert(*ip, *entry);
            }
            Change::RemoveEndpoint { ip } => {
                self.endpoints.remove(ip);
            }
            _ => {}
        }
    }

    /// Every slot a Service entry points at is filled.
    fn consistent(&self) -> bool {
        self.services
            .values()
            .all(|(id, slots)| (0..*slots).all(|s| self.backends.contains_key(&(*id, s))))
    }

    fn replay(&mut self, changes: &[Change]) {
        for c in changes {
            self.apply(c);
            assert!(self.consistent(), "inconsistent after {c:?}");
        }
    }

    /// The maps hold `s`: every Service entry, each backend in as many
    /// slots as its weight, and every endpoint.
    fn matches(&self, s: &DesiredState) -> bool {
        let services: HashMap<ServiceKey, (u32, u32)> = s
            .services
            .iter()
            .map(|(k, e)| (*k, (e.id, e.slot_count())))
            .collect();
        let tables_ok = s.services.values().all(|e| {
            let mut counts: HashMap<SlotBackend, u32> = HashMap::new();
            for ((id, _), b) in &self.backends {
                if *id == e.id {
                    *counts.entry(*b).or_default() += 1;
                }
            }
            let want: HashMap<SlotBackend, u32> = e
                .backends
                .iter()
                .map(|b| (SlotBackend::from(b), b.weight))
                .collect();
            counts == want
        });
        let ids: std::collections::BTreeSet<u32> = s.services.values().map(|e| e.id).collect();
        let no_stray_slots = self.backends.keys().all(|(id, _)| ids.contains(id));
        services == self.services
            && tables_ok
            && no_stray_slots
            && s.endpoints
                .iter()
                .map(|(k, v)| (*k, *v))
                .collect::<HashMap<_, _>>()
                == self.endpoints
    }
}

#[test]
fn no_change_means_no_writes() {
    let a = state(BASE);
    assert_eq!(diff(&a, &a), vec![]);
}

#[test]
fn canary_rollout_and_rollback_stay_consistent_and_minimal() {
    let empty = DesiredState::default();
    let plain = state(BASE);
    let canary = state(&format!("{BASE}---{CANARY}"));

    let mut maps = Maps::default();
    let initial = diff(&empty, &plain);
    assert!(initial.iter().all(|c| !matches!(
        c,
        Change::RemoveService { .. } | Change::RemoveBackendSlot { .. }
    )));
    maps.replay(&initial);
    assert!(maps.matches(&plain));

    // 80/20 over 3 + 1 endpoints: 4 slots each for v1 endpoints... grows the web table.
    let rollout = diff(&plain, &canary);
    maps.replay(&rollout);
    assert!(maps.matches(&canary));
    let web = &canary.services[&ServiceKey {
        vip: "10.96.0.10".parse().unwrap(),
        port: 80,
        proto: PROTO_TCP,
    }];
    assert_eq!(
        web.backends.iter().map(|b| b.weight).collect::<Vec<_>>(),
        [4, 4, 4, 3]
    );
    assert!(
        !rollout
            .iter()
            .any(|c| matches!(c, Change::UpsertEndpoint { .. })),
        "endpoints unchanged: not rewritten"
    );
    assert!(!rollout.iter().any(|c| matches!(c, Change::UpsertService { key, .. } if key.vip.to_string() == "10.96.0.11")),
        "web-v2's own entry is unchanged");

    let rollback = diff(&canary, &plain);
    let last_upsert = rollback
        .iter()
        .rposition(|c| {
            matches!(
                c,
                Change::UpsertService { .. } | Change::UpsertBackendSlot { .. }
            )
        })
        .unwrap();
    let first_removal = rollback
        .iter()
        .position(|c| matches!(c, Change::RemoveBackendSlot { .. }))
        .unwrap();
    assert!(last_upsert < first_removal, "upserts before removals");
    maps.replay(&rollback);
    assert!(maps.matches(&plain));
}

#[test]
fn removed_services_go_before_their_slots() {
    let plain = state(BASE);
    let without = state(&BASE.replace("clusterIP: 10.96.0.11", "clusterIP: None"));
    let changes = diff(&plain, &without);
    let mut maps = Maps::default();
    maps.replay(&diff(&DesiredState::default(), &plain));
    maps.replay(&changes);
    assert!(maps.matches(&without));
    let svc = changes
        .iter()
        .position(|c| matches!(c, Change::RemoveService { .. }))
        .unwrap();
    let slot = changes
        .iter()
        .position(|c| matches!(c, Change::RemoveBackendSlot { .. }))
        .unwrap();
    assert!(svc < slot);
}

#[test]
fn one_more_endpoint_writes_one_slot() {
    let with = |ips: &[&str]| {
        let eps: Vec<String> = ips
            .iter()
            .map(|ip| format!("{{addresses: [{ip}]}}"))
            .collect();
        state(&BASE.replace(
            "endpoints: [{addresses: [10.244.1.1]}, {addresses: [10.244.1.2]}, {addresses: [10.244.1.3]}]",
            &format!("endpoints: [{}]", eps.join(", ")),
        ))
    };
    let three = with(&["10.244.1.1", "10.244.1.5", "10.244.1.9"]);
    let four = with(&["10.244.1.1", "10.244.1.3", "10.244.1.5", "10.244.1.9"]);
    let two = with(&["10.244.1.1", "10.244.1.9"]);
    let mut dp = Datapath::default();
    let mut maps = Maps::default();
    maps.replay(&dp.update(&three));

    let grow = dp.update(&four);
    maps.replay(&grow);
    assert!(maps.matches(&four));
    let slots: Vec<_> = grow
        .iter()
        .filter(|c| matches!(c, Change::UpsertBackendSlot { .. }))
        .collect();
    assert_eq!(
        slots.len(),
        1,
        "the new endpoint takes the new slot; nothing moves: {grow:?}"
    );

    let shrink = dp.update(&two);
    maps.replay(&shrink);
    assert!(maps.matches(&two));
    let writes = shrink
        .iter()
        .filter(|c| matches!(c, Change::UpsertBackendSlot { .. }))
        .count();
    let removals = shrink
        .iter()
        .filter(|c| matches!(c, Change::RemoveBackendSlot { .. }))
        .count();
    assert!(writes <= 1 && removals == 2, "{shrink:?}");
    assert_eq!(dp.state(), &two);
}
