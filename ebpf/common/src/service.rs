//! Service translation: a Service's virtual address and its backends.
//!
//! `cgroup/connect4` and `connect6` look the dialled address up in
//! [`SERVICES`]; a hit names the service and how many backend slots it has.
//! The agent spreads the backends over the slots in proportion to their
//! weights, so a uniformly random slot is a weighted choice of backend.

use crate::net::Addr;

/// Map name: [`ServiceKey`] -> [`ServiceValue`].
pub const SERVICES: &str = "SERVICES";
/// Map name: [`BackendKey`] -> [`Backend`].
pub const BACKENDS: &str = "BACKENDS";
/// Capacity of [`SERVICES`].
pub const MAX_SERVICES: u32 = 65_536;
/// Capacity of [`BACKENDS`].
pub const MAX_BACKEND_SLOTS: u32 = 1_048_576;
/// Most slots one service may use.
pub const MAX_SLOTS_PER_SERVICE: u32 = 1_024;

/// IP protocol number of TCP, as stored in [`ServiceKey::proto`].
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of UDP, as stored in [`ServiceKey::proto`].
pub const PROTO_UDP: u8 = 17;

/// [`ServiceValue::flags`]: connections to this service are meshed (sent through the node agent).
pub const SERVICE_MESHED: u32 = 1;

/// A Service's virtual address, port and protocol.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    /// The virtual IP.
    pub addr: Addr,
    /// The service port, host byte order.
    pub port: u16,
    /// [`PROTO_TCP`] or [`PROTO_UDP`].
    pub proto: u8,
    /// Explicit padding, always zero.
    pub _pad: u8,
}

/// What the datapath knows about a service.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceValue {
    /// The agent's number for the service, the first half of [`BackendKey`].
    pub id: u32,
    /// Number of filled backend slots; zero means "no backend".
    pub slots: u32,
    /// [`SERVICE_MESHED`] and future flags.
    pub flags: u32,
    /// The identity number used for policy and metrics when the service is the destination.
    pub identity: u32,
}

/// One slot of a service's backend table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BackendKey {
    /// [`ServiceValue::id`].
    pub service_id: u32,
    /// Slot index, below [`ServiceValue::slots`].
    pub slot: u32,
}

/// A backend address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backend {
    /// The backend's IP.
    pub addr: Addr,
    /// The backend's port, host byte order.
    pub port: u16,
    /// Explicit padding, always zero.
    pub _pad: u16,
    /// Identity number of the workload behind this backend (0: unknown).
    pub identity: u32,
}

crate::impl_pod!(ServiceKey, ServiceValue, BackendKey, Backend);
