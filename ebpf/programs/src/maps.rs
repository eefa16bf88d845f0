//! Every map of the object, in one place. Names match the constants in
//! `nodemesh_common`, which is how the agent finds them.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap},
};
use nodemesh_common::{
    config::DatapathConfig,
    flow::{FlowKey, FlowStats, MAX_FLOWS, SockFlow},
    net::Addr,
    policy::{MAX_POLICY_RULES, PolicyKey, PolicyValue},
    service::{Backend, BackendKey, MAX_BACKEND_SLOTS, MAX_SERVICES, ServiceKey, ServiceValue},
    sock::{MAX_SOCKETS, OrigDst, SockKey, SockState},
    stats::NUM_STATS,
    workload::{EndpointInfo, MAX_ENDPOINTS, MAX_WORKLOADS, WorkloadInfo},
};

#[map]
pub static CONFIG: Array<DatapathConfig> = Array::with_max_entries(1, 0);

#[map]
pub static SERVICES: HashMap<ServiceKey, ServiceValue> = HashMap::with_max_entries(MAX_SERVICES, 0);

#[map]
pub static BACKENDS: HashMap<BackendKey, Backend> = HashMap::with_max_entries(MAX_BACKEND_SLOTS, 0);

#[map]
pub static WORKLOADS: HashMap<u64, WorkloadInfo> = HashMap::with_max_entries(MAX_WORKLOADS, 0);

#[map]
pub static ENDPOINTS: HashMap<Addr, EndpointInfo> = HashMap::with_max_entries(MAX_ENDPOINTS, 0);

#[map]
pub static POLICY: HashMap<PolicyKey, PolicyValue> = HashMap::with_max_entries(MAX_POLICY_RULES, 0);

#[map]
pub static ORIG_BY_COOKIE: LruHashMap<u64, OrigDst> = LruHashMap::with_max_entries(MAX_SOCKETS, 0);

#[map]
pub static ORIG_BY_TUPLE: LruHashMap<SockKey, OrigDst> =
    LruHashMap::with_max_entries(MAX_SOCKETS, 0);

/// Absent from the object built without the `sockmap` feature, which the
/// agent loads on kernels that refuse sockhash maps.
#[cfg(feature = "sockmap")]
#[map]
pub static SOCK_HASH: aya_ebpf::maps::SockHash<SockKey> =
    aya_ebpf::maps::SockHash::with_max_entries(MAX_SOCKETS, 0);

#[map]
pub static SOCK_STATE: LruHashMap<SockKey, SockState> =
    LruHashMap::with_max_entries(MAX_SOCKETS, 0);

#[map]
pub static FLOW_STATS: PerCpuHashMap<FlowKey, FlowStats> =
    PerCpuHashMap::with_max_entries(MAX_FLOWS, 0);

#[map]
pub static SOCK_FLOWS: LruHashMap<SockKey, SockFlow> = LruHashMap::with_max_entries(MAX_SOCKETS, 0);

#[map]
pub static COOKIE_FLOWS: LruHashMap<u64, FlowKey> = LruHashMap::with_max_entries(MAX_SOCKETS, 0);

#[map]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(NUM_STATS, 0);

/// The node settings, or all-zero (every feature off) before the agent wrote them.
#[inline(always)]
pub fn config() -> DatapathConfig {
    match CONFIG.get(0) {
        Some(c) => *c,
        None => DatapathConfig::default(),
    }
}
