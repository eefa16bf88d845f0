//! The datapath changes that turn one desired state into the next.
//!
//! Changes come in an order that keeps every intermediate state valid for
//! the kernel programs: first everything that is written (endpoints,
//! workloads, backend slots, then the Service entries that point at those
//! slots, then policy rules), then everything that is removed (policy rules,
//! Service entries, then the slots past a table's new end, workloads,
//! endpoints). A Service therefore never points at an empty or missing slot
//! while it changes, and only entries that differ are written.

use std::net::IpAddr;

use crate::desired::{
    BackendEntry, DesiredState, EndpointEntry, PolicyRule, PolicyRuleKey, ServiceKey, WorkloadEntry,
};

/// One datapath write or removal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Write `ENDPOINTS[ip]`.
    UpsertEndpoint {
        /// The workload IP.
        ip: IpAddr,
        /// Its identity and flags.
        entry: EndpointEntry,
    },
    /// Write `WORKLOADS[cgroup id of cgroup]`.
    UpsertWorkload {
        /// Cgroup path relative to the cgroup2 mount.
        cgroup: String,
        /// The workload.
        entry: WorkloadEntry,
    },
    /// Write `BACKENDS[(service_id, slot)]`.
    UpsertBackendSlot {
        /// `ServiceValue::id`.
        service_id: u32,
        /// Slot index.
        slot: u32,
        /// The backend.
        backend: BackendEntry,
    },
    /// Write `SERVICES[key]`.
    UpsertService {
        /// VIP, port and protocol.
        key: ServiceKey,
        /// `ServiceValue::id`.
        id: u32,
        /// `ServiceValue::slots`.
        slots: u32,
        /// `ServiceValue::identity`.
        identity: u32,
        /// `SERVICE_MESHED`.
        meshed: bool,
    },
    /// Write `POLICY[key]`.
    UpsertPolicy {
        /// The match.
        key: PolicyRuleKey,
        /// The verdict.
        rule: PolicyRule,
    },
    /// Remove `POLICY[key]`.
    RemovePolicy {
        /// The match.
        key: PolicyRuleKey,
    },
    /// Remove `SERVICES[key]`.
    RemoveService {
        /// VIP, port and protocol.
        key: ServiceKey,
    },
    /// Remove `BACKENDS[(service_id, slot)]`.
    RemoveBackendSlot {
        /// `ServiceValue::id`.
        service_id: u32,
        /// Slot index.
        slot: u32,
    },
    /// Remove `WORKLOADS[cgroup id of cgroup]`.
    RemoveWorkload {
        /// Cgroup path relative to the cgroup2 mount.
        cgroup: String,
    },
    /// Remove `ENDPOINTS[ip]`.
    RemoveEndpoint {
        /// The workload IP.
        ip: IpAddr,
    },
}

/// Backend tables by service id: several VIPs may share one table.
fn tables(s: &DesiredState) -> std::collections::BTreeMap<u32, Vec<BackendEntry>> {
    s.services
        .values()
        .map(|e| (e.id, e.slots().copied().collect()))
        .collect()
}

/// The ordered changes from `old` to `new` (see the module docs).
pub fn diff(old: &DesiredState, new: &DesiredState) -> Vec<Change> {
    let mut upserts = Vec::new();
    let mut removals = Vec::new();

    for (ip, entry) in &new.endpoints {
        if old.endpoints.get(ip) != Some(entry) {
            upserts.push(Change::UpsertEndpoint {
                ip: *ip,
                entry: *entry,
            });
        }
    }
    for (cgroup, entry) in &new.workloads {
        if old.workloads.get(cgroup) != Some(entry) {
            upserts.push(Change::UpsertWorkload {
                cgroup: cgroup.clone(),
                entry: entry.clone(),
            });
        }
    }
    let (old_tables, new_tables) = (tables(old), tables(new));
    for (id, slots) in &new_tables {
        let before = old_tables.get(id).map(Vec::as_slice).unwrap_or_default();
        for (slot, backend) in slots.iter().enumerate() {
            if before.get(slot) != Some(backend) {
                upserts.push(Change::UpsertBackendSlot {
                    service_id: *id,
                    slot: slot as u32,
                    backend: *backend,
                });
            }
        }
    }
    for (key, entry) in &new.services {
        let value = (entry.id, entry.slot_count(), entry.identity, entry.meshed);
        let before = old
            .services
            .get(key)
            .map(|e| (e.id, e.slot_count(), e.identity, e.meshed));
        if before != Some(value) {
            upserts.push(Change::UpsertService {
                key: *key,
                id: value.0,
                slots: value.1,
                identity: value.2,
                meshed: value.3,
            });
        }
    }
    for (key, rule) in &new.policy {
        if old.policy.get(key) != Some(rule) {
            upserts.push(Change::UpsertPolicy {
                key: *key,
                rule: *rule,
            });
        }
    }

    for key in old.policy.keys().filter(|k| !new.policy.contains_key(k)) {
        removals.push(Change::RemovePolicy { key: *key });
    }
    for key in old
        .services
        .keys()
        .filter(|k| !new.services.contains_key(k))
    {
        removals.push(Change::RemoveService { key: *key });
    }
    for (id, slots) in &old_tables {
        let keep = new_tables.get(id).map_or(0, Vec::len);
        for slot in keep..slots.len() {
            removals.push(Change::RemoveBackendSlot {
                service_id: *id,
                slot: slot as u32,
            });
        }
    }
    for cgroup in old
        .workloads
        .keys()
        .filter(|k| !new.workloads.contains_key(*k))
    {
        removals.push(Change::RemoveWorkload {
            cgroup: cgroup.clone(),
        });
    }
    for ip in old
        .endpoints
        .keys()
        .filter(|k| !new.endpoints.contains_key(k))
    {
        removals.push(Change::RemoveEndpoint { ip: *ip });
    }
    upserts.extend(removals);
    upserts
}

#[cfg(test)]
mod tests;
