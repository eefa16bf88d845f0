//! Workloads: which sockets belong to meshed pods, and who is behind an IP.
//!
//! A pod's processes live in the pod's cgroup (or in child cgroups of it, one
//! per container). `connect4/6` walk up from the caller's cgroup and use the
//! first ancestor found in [`WORKLOADS`], so the agent registers the pod
//! cgroup once whatever the container layout.

/// Map name: cgroup id (`u64`) -> [`WorkloadInfo`].
pub const WORKLOADS: &str = "WORKLOADS";
/// Map name: [`crate::net::Addr`] -> [`EndpointInfo`].
pub const ENDPOINTS: &str = "ENDPOINTS";
/// Capacity of [`WORKLOADS`].
pub const MAX_WORKLOADS: u32 = 16_384;
/// Capacity of [`ENDPOINTS`].
pub const MAX_ENDPOINTS: u32 = 262_144;
/// How many cgroup levels `connect4/6` climb looking for a workload.
pub const MAX_CGROUP_DEPTH: u32 = 16;

/// [`WorkloadInfo::flags`] / [`EndpointInfo::flags`]: the workload is in the mesh.
pub const WORKLOAD_MESHED: u32 = 1;
/// [`EndpointInfo::flags`]: STRICT mTLS: connects from registered workloads
/// outside the mesh fail with `EPERM`. Processes outside any workload (the
/// node's own, such as the kubelet's probes) are not affected.
pub const WORKLOAD_STRICT: u32 = 2;

/// A workload on this node, keyed by its cgroup id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkloadInfo {
    /// The workload's identity number (for policy and metrics); never 0.
    pub identity: u32,
    /// [`WORKLOAD_MESHED`] and future flags.
    pub flags: u32,
}

/// A workload anywhere in the cluster, keyed by its IP.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointInfo {
    /// The workload's identity number; never 0.
    pub identity: u32,
    /// [`WORKLOAD_MESHED`] and future flags.
    pub flags: u32,
}

crate::impl_pod!(WorkloadInfo, EndpointInfo);
