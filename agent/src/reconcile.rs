//! Keeping the kernel maps in line with the desired state.
//!
//! Each new [`DesiredState`] is compared with the one last applied and only
//! the difference is written, in the order `nodemesh_state::diff` gives:
//! a Service never points at a missing backend while it changes, and
//! established connections are untouched.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use nodemesh_common::{
    policy::{ACTION_ALLOW, ACTION_DENY, PolicyKey, PolicyValue},
    service::{SERVICE_MESHED, ServiceValue},
    workload::{EndpointInfo, WORKLOAD_MESHED, WORKLOAD_STRICT, WorkloadInfo},
};
use nodemesh_state::desired::{DesiredState, Verdict};
use nodemesh_state::diff::{Change, diff};

use crate::datapath::{Cgroup2, Datapath, cgroup_id};

/// What one [`Reconciler::apply`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Map writes and removals that succeeded.
    pub applied: usize,
    /// Changes that failed (logged); they are retried with the next state.
    pub failed: usize,
}

/// Applies desired states to the datapath, one diff at a time.
pub struct Reconciler {
    datapath: Arc<Datapath>,
    cgroup2: Cgroup2,
    /// Cgroup ids of the workloads written, so they can be removed after
    /// their directory is gone.
    workload_ids: HashMap<String, u64>,
    applied: DesiredState,
}

fn flags(meshed: bool, bit: u32) -> u32 {
    if meshed { bit } else { 0 }
}

impl Reconciler {
    /// A reconciler starting from empty maps.
    pub fn new(datapath: Arc<Datapath>, cgroup2: Cgroup2) -> Self {
        Self {
            datapath,
            cgroup2,
            workload_ids: HashMap::new(),
            applied: DesiredState::default(),
        }
    }

    /// The state last applied.
    pub fn applied(&self) -> &DesiredState {
        &self.applied
    }

    /// Writes the difference between the applied state and `desired`.
    pub fn apply(&mut self, desired: &DesiredState) -> ApplyReport {
        let mut report = ApplyReport::default();
        let mut next = desired.clone();
        for change in diff(&self.applied, desired) {
            match self.write(&change) {
                Ok(()) => report.applied += 1,
                Err(error) => {
                    report.failed += 1;
                    tracing::warn!(?change, %error, "datapath change failed; will retry with the next state");
                    // Forget the failed entry so the next diff tries again.
                    if let Change::UpsertWorkload { cgroup, .. } = &change {
                        next.workloads.remove(cgroup);
                    }
                }
            }
        }
        self.applied = next;
        report
    }

    fn write(&mut self, change: &Change) -> anyhow::Result<()> {
        let dp = &self.datapath;
        match change {
            Change::UpsertEndpoint { ip, entry } => dp.upsert_endpoint(
                *ip,
                EndpointInfo {
                    identity: entry.identity,
                    flags: flags(entry.meshed, WORKLOAD_MESHED)
                        | flags(entry.strict, WORKLOAD_STRICT),
                },
            )?,
            Change::RemoveEndpoint { ip } => dp.remove_endpoint(*ip)?,
            Change::UpsertWorkload { cgroup, entry } => {
                let path = self.cgroup2.resolve(std::path::Path::new(cgroup))?;
                let id = cgroup_id(&path)?;
                dp.upsert_workload(
                    id,
                    WorkloadInfo {
                        identity: entry.identity,
                        flags: flags(entry.meshed, WORKLOAD_MESHED),
                    },
                )?;
                self.workload_ids.insert(cgroup.clone(), id);
            }
            Change::RemoveWorkload { cgroup } => {
                if let Some(id) = self.workload_ids.remove(cgroup) {
                    dp.remove_workload(id)?;
                }
            }
            Change::UpsertBackendSlot {
                service_id,
                slot,
                backend,
            } => dp.upsert_backend_slot(
                *service_id,
                *slot,
                SocketAddr::new(backend.ip, backend.port),
                backend.identity,
            )?,
            Change::RemoveBackendSlot { service_id, slot } => {
                dp.remove_backend_slot(*service_id, *slot)?
            }
            Change::UpsertService {
                key,
                id,
                slots,
                identity,
                meshed,
            } => dp.upsert_service_entry(
                SocketAddr::new(key.vip, key.port),
                key.proto,
                ServiceValue {
                    id: *id,
                    slots: *slots,
                    flags: flags(*meshed, SERVICE_MESHED),
                    identity: *identity,
                },
            )?,
            Change::RemoveService { key } => {
                dp.remove_service_entry(SocketAddr::new(key.vip, key.port), key.proto)?
            }
            Change::UpsertPolicy { key, rule } => dp.upsert_policy(
                policy_key(key),
                PolicyValue {
                    action: match rule.verdict {
                        Verdict::Deny => ACTION_DENY,
                        Verdict::Allow => ACTION_ALLOW,
                    },
                    rule_id: rule.rule_id,
                },
            )?,
            Change::RemovePolicy { key } => dp.remove_policy(policy_key(key))?,
        }
        Ok(())
    }
}

fn policy_key(k: &nodemesh_state::desired::PolicyRuleKey) -> PolicyKey {
    PolicyKey {
        src_identity: k.src_identity,
        dst_identity: k.dst_identity,
        port: k.port,
        _pad: 0,
    }
}
