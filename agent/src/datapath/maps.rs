//! Typed handles on the kernel programs' maps.
//!
//! Every update is written so that the kernel never sees a half-applied
//! change: a service's new backend slots are written before its slot count
//! grows, and stale slots are removed only after it shrinks.

use std::net::{IpAddr, SocketAddr};

use aya::maps::{Array, HashMap, MapData, MapError, PerCpuArray, PerCpuHashMap};
use nodemesh_common::{
    config::DatapathConfig,
    flow::{FlowKey, FlowStats},
    net::Addr,
    policy::{MAX_POLICY_RULES, PolicyKey, PolicyValue},
    service::{
        Backend, BackendKey, MAX_BACKEND_SLOTS, MAX_SERVICES, MAX_SLOTS_PER_SERVICE,
        SERVICE_MESHED, ServiceKey, ServiceValue,
    },
    sock::{OrigDst, SockKey},
    stats::{NAMES, NUM_STATS},
    workload::{EndpointInfo, MAX_ENDPOINTS, MAX_WORKLOADS, WorkloadInfo},
};

use super::{Error, slots};

/// One backend of a service, as the control plane describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendSpec {
    /// Where connections go.
    pub addr: SocketAddr,
    /// Relative share of new connections.
    pub weight: u32,
    /// Identity number of the workload behind it (0: unknown).
    pub identity: u32,
}

/// A service, as the control plane describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    /// The agent's number for the service (unique on this node, non-zero).
    pub id: u32,
    /// The virtual address and port clients dial.
    pub vip: SocketAddr,
    /// IP protocol ([`nodemesh_common::service::PROTO_TCP`] or UDP).
    pub proto: u8,
    /// Identity number reported for the service as a destination.
    pub identity: u32,
    /// Whether connections to it go through the node agent.
    pub meshed: bool,
    /// Its backends; may be empty (connects then go to the VIP untouched).
    pub backends: Vec<BackendSpec>,
}

/// The maps the agent writes and reads, taken out of the loaded object.
pub(crate) struct Maps {
    pub config: Array<MapData, DatapathConfig>,
    pub services: HashMap<MapData, ServiceKey, ServiceValue>,
    pub backends: HashMap<MapData, BackendKey, Backend>,
    pub workloads: HashMap<MapData, u64, WorkloadInfo>,
    pub endpoints: HashMap<MapData, Addr, EndpointInfo>,
    pub policy: HashMap<MapData, PolicyKey, PolicyValue>,
    pub orig_by_tuple: HashMap<MapData, SockKey, OrigDst>,
    pub flow_stats: PerCpuHashMap<MapData, FlowKey, FlowStats>,
    pub stats: PerCpuArray<MapData, u64>,
}

fn full_or(map: &'static str, capacity: u32, what: &'static str, e: MapError) -> Error {
    let full = match &e {
        MapError::SyscallError(s) => matches!(
            s.io_error.raw_os_error(),
            Some(libc::E2BIG) | Some(libc::ENOMEM)
        ),
        _ => false,
    };
    if full {
        Error::MapFull {
            map,
            capacity,
            what,
        }
    } else {
        Error::Map { map, source: e }
    }
}

fn is_not_found(e: &MapError) -> bool {
    matches!(e, MapError::KeyNotFound | MapError::ElementNotFound)
        || matches!(e, MapError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::ENOENT))
}

fn ignore_missing(map: &'static str, r: Result<(), MapError>) -> Result<(), Error> {
    match r {
        Ok(()) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(source) => Err(Error::Map { map, source }),
    }
}

fn service_key(vip: SocketAddr, proto: u8) -> ServiceKey {
    ServiceKey {
        addr: Addr::from(vip.ip()),
        port: vip.port(),
        proto,
        _pad: 0,
    }
}

impl Maps {
    pub fn write_config(&mut self, cfg: &DatapathConfig) -> Result<(), Error> {
        self.config.set(0, cfg, 0).map_err(|source| Error::Map {
            map: "CONFIG",
            source,
        })
    }

    /// Adds or replaces a service and its backends.
    pub fn upsert_service(&mut self, spec: &ServiceSpec) -> Result<(), Error> {
        let key = service_key(spec.vip, spec.proto);
        let weights: Vec<u32> = spec.backends.iter().map(|b| b.weight).collect();
        let layout = if spec.backends.is_empty() {
            Vec::new()
        } else {
            slots::layout(&weights, MAX_SLOTS_PER_SERVICE).map_err(|e| Error::InvalidService {
                service: spec.vip.to_string(),
                reason: e.to_string(),
            })?
        };
        let old_slots = self.services.get(&key, 0).map(|v| v.slots).unwrap_or(0);
        for (slot, &b) in layout.iter().enumerate() {
            let be = &spec.backends[b];
            let value = Backend {
                addr: Addr::from(be.addr.ip()),
                port: be.addr.port(),
                _pad: 0,
                identity: be.identity,
            };
            let bkey = BackendKey {
                service_id: spec.id,
                slot: slot as u32,
            };
            self.backends
                .insert(&bkey, &value, 0)
                .map_err(|e| full_or("BACKENDS", MAX_BACKEND_SLOTS, "service backends", e))?;
        }
        let value = ServiceValue {
            id: spec.id,
            slots: layout.len() as u32,
            flags: if spec.meshed { SERVICE_MESHED } else { 0 },
            identity: spec.identity,
        };
        self.services
            .insert(&key, &value, 0)
            .map_err(|e| full_or("SERVICES", MAX_SERVICES, "services", e))?;
        for slot in layout.len() as u32..old_slots {
            let bkey = BackendKey {
                service_id: spec.id,
                slot,
            };
            ignore_missing("BACKENDS", self.backends.remove(&bkey))?;
        }
        Ok(())
    }

    /// Writes one backend slot of a service's table.
    pub fn upsert_backend_slot(
        &mut self,
        service_id: u32,
        slot: u32,
        addr: SocketAddr,
        identity: u32,
    ) -> Result<(), Error> {
        let value = Backend {
            addr: Addr::from(addr.ip()),
            port: addr.port(),
            _pad: 0,
            identity,
        };
        self.backends
            .insert(&BackendKey { service_id, slot }, &value, 0)
            .map_err(|e| full_or("BACKENDS", MAX_BACKEND_SLOTS, "service backends", e))
    }

    /// Removes one backend slot.
    pub fn remove_backend_slot(&mut self, service_id: u32, slot: u32) -> Result<(), Error> {
        ignore_missing(
            "BACKENDS",
            self.backends.remove(&BackendKey { service_id, slot }),
        )
    }

    /// Writes a service entry pointing at `slots` already-written slots.
    pub fn upsert_service_entry(
        &mut self,
        vip: SocketAddr,
        proto: u8,
        value: ServiceValue,
    ) -> Result<(), Error> {
        self.services
            .insert(&service_key(vip, proto), &value, 0)
            .map_err(|e| full_or("SERVICES", MAX_SERVICES, "services", e))
    }

    /// Removes a service entry only (its slots are removed separately).
    pub fn remove_service_entry(&mut self, vip: SocketAddr, proto: u8) -> Result<(), Error> {
        ignore_missing("SERVICES", self.services.remove(&service_key(vip, proto)))
    }

    /// Removes a service: connects to its address are no longer translated.
    pub fn remove_service(&mut self, vip: SocketAddr, proto: u8) -> Result<(), Error> {
        let key = service_key(vip, proto);
        let Ok(old) = self.services.get(&key, 0) else {
            return Ok(());
        };
        ignore_missing("SERVICES", self.services.remove(&key))?;
        for slot in 0..old.slots {
            let bkey = BackendKey {
                service_id: old.id,
                slot,
            };
            ignore_missing("BACKENDS", self.backends.remove(&bkey))?;
        }
        Ok(())
    }

    /// Registers a workload's cgroup on this node.
    pub fn upsert_workload(&mut self, cgroup_id: u64, info: WorkloadInfo) -> Result<(), Error> {
        self.workloads
            .insert(&cgroup_id, &info, 0)
            .map_err(|e| full_or("WORKLOADS", MAX_WORKLOADS, "workloads on this node", e))
    }

    /// Forgets a workload's cgroup.
    pub fn remove_workload(&mut self, cgroup_id: u64) -> Result<(), Error> {
        ignore_missing("WORKLOADS", self.workloads.remove(&cgroup_id))
    }

    /// Records who is behind an IP.
    pub fn upsert_endpoint(&mut self, ip: IpAddr, info: EndpointInfo) -> Result<(), Error> {
        self.endpoints
            .insert(&Addr::from(ip), &info, 0)
            .map_err(|e| full_or("ENDPOINTS", MAX_ENDPOINTS, "endpoints", e))
    }

    /// Forgets an IP.
    pub fn remove_endpoint(&mut self, ip: IpAddr) -> Result<(), Error> {
        ignore_missing("ENDPOINTS", self.endpoints.remove(&Addr::from(ip)))
    }

    /// Adds or replaces an L4 policy rule.
    pub fn upsert_policy(&mut self, key: PolicyKey, value: PolicyValue) -> Result<(), Error> {
        self.policy
            .insert(&key, &value, 0)
            .map_err(|e| full_or("POLICY", MAX_POLICY_RULES, "L4 policy rules", e))
    }

    /// Removes an L4 policy rule.
    pub fn remove_policy(&mut self, key: PolicyKey) -> Result<(), Error> {
        ignore_missing("POLICY", self.policy.remove(&key))
    }

    /// Takes the original destination of a connection the agent accepted.
    pub fn take_orig_dst(
        &mut self,
        client: SocketAddr,
        local: SocketAddr,
    ) -> Result<Option<OrigDst>, Error> {
        let key = SockKey {
            local_addr: Addr::from(client.ip()),
            remote_addr: Addr::from(local.ip()),
            local_port: u32::from(client.port()),
            remote_port: u32::from(local.port()),
        };
        match self.orig_by_tuple.get(&key, 0) {
            Ok(v) => {
                ignore_missing("ORIG_BY_TUPLE", self.orig_by_tuple.remove(&key))?;
                Ok(Some(v))
            }
            Err(e) if is_not_found(&e) => Ok(None),
            Err(source) => Err(Error::Map {
                map: "ORIG_BY_TUPLE",
                source,
            }),
        }
    }

    /// The datapath-wide counters, summed over CPUs, with their names.
    pub fn stats(&self) -> Result<Vec<(&'static str, u64)>, Error> {
        let mut out = Vec::with_capacity(NUM_STATS as usize);
        for (i, name) in NAMES.iter().enumerate() {
            let per_cpu = self
                .stats
                .get(&(i as u32), 0)
                .map_err(|source| Error::Map {
                    map: "STATS",
                    source,
                })?;
            out.push((*name, per_cpu.iter().sum()));
        }
        Ok(out)
    }

    /// Every flow's counters, summed over CPUs.
    pub fn flows(&self) -> Result<Vec<(FlowKey, FlowStats)>, Error> {
        let mut out = Vec::new();
        for item in self.flow_stats.iter() {
            let (key, per_cpu) = item.map_err(|source| Error::Map {
                map: "FLOW_STATS",
                source,
            })?;
            let mut total = FlowStats::default();
            for s in per_cpu.iter() {
                total.merge(s);
            }
            out.push((key, total));
        }
        Ok(out)
    }
}
