//! Node-wide settings the agent writes once at start.

use crate::net::Addr;

/// Map name: array with one [`DatapathConfig`] at index 0.
pub const CONFIG: &str = "CONFIG";

/// [`DatapathConfig::features`]: translate Service addresses to backends.
pub const FEATURE_SERVICES: u32 = 1;
/// [`DatapathConfig::features`]: redirect meshed connections to the agent.
pub const FEATURE_REDIRECT: u32 = 1 << 1;
/// [`DatapathConfig::features`]: same-node socket acceleration (sockhash + `sk_msg`).
pub const FEATURE_SOCKMAP: u32 = 1 << 2;
/// [`DatapathConfig::features`]: in-kernel L4 policy.
pub const FEATURE_POLICY: u32 = 1 << 3;
/// [`DatapathConfig::features`]: L4 flow metrics.
pub const FEATURE_METRICS: u32 = 1 << 4;

/// Settings shared by every program.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DatapathConfig {
    /// The agent's outbound listener for IPv4 clients.
    pub redirect_addr4: Addr,
    /// The agent's outbound listener for IPv6 clients (all zero: no IPv6 redirect).
    pub redirect_addr6: Addr,
    /// The outbound listener's port, host byte order; 0 disables redirection.
    pub redirect_port: u16,
    /// Explicit padding, always zero.
    pub _pad: u16,
    /// `FEATURE_*` bits.
    pub features: u32,
    /// The agent's own cgroup id: its sockets are never redirected.
    pub agent_cgroup_id: u64,
}

crate::impl_pod!(DatapathConfig);
