//! The datapath changes that turn one desired state into the next.
//!
//! Changes come in an order that keeps every intermediate state valid for
//! the kernel programs: first everything that is written (endpoints,
//! workloads, backend slots, then the Service entries that point at those
//! slots, then policy rules), then everything that is removed (policy rules,
//! Service entries, then the slots past a table's new end, workloads,
//! endpoints). A Service therefore never points at an empty or missing slot
//! while it changes, and only entries that differ are written.
//!
//! [`Datapath`] remembers which backend sits in which slot, so a changed
//! backend table keeps every slot whose backend is still wanted: adding or
//! removing one endpoint writes about one slot, not the whole table.

use std::collections::{BTreeMap, HashMap};
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
        backend: SlotBackend,
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

/// What one backend slot holds (`Backend` in host types).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SlotBackend {
    /// The backend's IP.
    pub ip: IpAddr,
    /// The backend's port.
    pub port: u16,
    /// Identity number of the workload behind it.
    pub identity: u32,
}

impl From<&BackendEntry> for SlotBackend {
    fn from(b: &BackendEntry) -> Self {
        Self {
            ip: b.ip,
            port: b.port,
            identity: b.identity,
        }
    }
}

/// Backend tables by service id, in slot order.
pub type Tables = BTreeMap<u32, Vec<SlotBackend>>;

/// The slot tables of a desired state in [`crate::desired::ServiceEntry::slots`] order.
fn tables(s: &DesiredState) -> Tables {
    s.services
        .values()
        .map(|e| (e.id, e.slots().map(SlotBackend::from).collect()))
        .collect()
}

/// Lays out a new table keeping every old slot whose backend is still
/// wanted (as many times as it is wanted); the freed and added slots take
/// the remaining backends.
fn arrange(old: &[SlotBackend], entry: &crate::desired::ServiceEntry) -> Vec<SlotBackend> {
    let len = entry.slot_count() as usize;
    let mut wanted: HashMap<SlotBackend, u32> = HashMap::new();
    for b in &entry.backends {
        *wanted.entry(SlotBackend::from(b)).or_default() += b.weight;
    }
    let mut table: Vec<Option<SlotBackend>> = vec![None; len];
    for (slot, b) in old.iter().take(len).enumerate() {
        if let Some(n) = wanted.get_mut(b).filter(|n| **n > 0) {
            *n -= 1;
            table[slot] = Some(*b);
        }
    }
    let mut rest = entry.backends.iter().flat_map(|b| {
        let s = SlotBackend::from(b);
        std::iter::repeat_n(s, wanted.remove(&s).unwrap_or(0) as usize)
    });
    table
        .into_iter()
        .map(|slot| slot.or_else(|| rest.next()))
        .map(|s| s.expect("slot count equals the sum of weights"))
        .collect()
}

/// The datapath as last written: the desired state and its slot layout.
#[derive(Clone, Debug, Default)]
pub struct Datapath {
    state: DesiredState,
    tables: Tables,
}

impl Datapath {
    /// A datapath holding `state`, laid out in [`crate::desired::ServiceEntry::slots`] order.
    pub fn with_state(state: DesiredState) -> Self {
        let tables = tables(&state);
        Self { state, tables }
    }

    /// The desired state last written.
    pub fn state(&self) -> &DesiredState {
        &self.state
    }

    /// The backend tables as written, by service id.
    pub fn tables(&self) -> &Tables {
        &self.tables
    }

    /// The ordered changes that turn the datapath into `new`, which it
    /// then records as written.
    pub fn update(&mut self, new: &DesiredState) -> Vec<Change> {
        let mut new_tables = Tables::new();
        for e in new.services.values() {
            new_tables.entry(e.id).or_insert_with(|| {
                arrange(
                    self.tables
                        .get(&e.id)
                        .map(Vec::as_slice)
                        .unwrap_or_default(),
                    e,
                )
            });
        }
        let changes = changes(&self.state, &self.tables, new, &new_tables);
        self.state = new.clone();
        self.tables = new_tables;
        changes
    }
}

/// The ordered changes from `old` to `new` (see the module docs), for a
/// datapath laid out as [`Datapath::with_state`] lays out `old`.
pub fn diff(old: &DesiredState, new: &DesiredState) -> Vec<Change> {
    Datapath::with_state(old.clone()).update(new)
}

fn changes(
    old: &DesiredState,
    old_tables: &Tables,
    new: &DesiredState,
    new_tables: &Tables,
) -> Vec<Change> {
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
    for (id, slots) in new_tables {
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
    for (id, slots) in old_tables {
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
