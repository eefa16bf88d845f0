//! Per-socket state: original destinations and the same-node sockhash.
//!
//! When `connect4/6` redirects a meshed connection to the node agent it
//! records what the application dialled under the socket cookie
//! ([`ORIG_BY_COOKIE`]). Once the kernel has picked the source port,
//! `sockops` copies the record under the connection's 4-tuple
//! ([`ORIG_BY_TUPLE`]), which the agent can compute from the socket it
//! accepted: (peer address, local address).

use crate::net::Addr;

/// Map name: socket cookie (`u64`) -> [`OrigDst`]. Read by `getpeername4/6`.
pub const ORIG_BY_COOKIE: &str = "ORIG_BY_COOKIE";
/// Map name: [`SockKey`] of the client socket -> [`OrigDst`]. Read by the agent.
pub const ORIG_BY_TUPLE: &str = "ORIG_BY_TUPLE";
/// Map name: the sockhash of established same-node sockets, keyed by [`SockKey`].
pub const SOCK_HASH: &str = "SOCK_HASH";
/// Map name: [`SockKey`] -> [`SockState`], the acceleration decision of each socket in [`SOCK_HASH`].
pub const SOCK_STATE: &str = "SOCK_STATE";
/// Capacity of the per-socket maps.
pub const MAX_SOCKETS: u32 = 65_536;

/// [`OrigDst::flags`]: the connection was redirected to the node agent.
pub const ORIG_REDIRECTED: u32 = 1;
/// [`OrigDst::flags`]: the destination was a Service address translated to a backend.
pub const ORIG_SERVICE: u32 = 2;

/// A TCP connection as seen from one of its sockets.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SockKey {
    /// This socket's address.
    pub local_addr: Addr,
    /// The peer's address.
    pub remote_addr: Addr,
    /// This socket's port, host byte order.
    pub local_port: u32,
    /// The peer's port, host byte order.
    pub remote_port: u32,
}

impl SockKey {
    /// The same connection as seen from the other end.
    #[inline(always)]
    pub const fn peer(&self) -> Self {
        Self {
            local_addr: self.remote_addr,
            remote_addr: self.local_addr,
            local_port: self.remote_port,
            remote_port: self.local_port,
        }
    }
}

/// What an application dialled before the datapath rewrote it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OrigDst {
    /// The address the application passed to `connect()`.
    pub addr: Addr,
    /// The port the application passed to `connect()`, host byte order.
    pub port: u16,
    /// Explicit padding, always zero.
    pub _pad: u16,
    /// Identity number of the connecting workload (0: not a workload).
    pub src_identity: u32,
    /// Identity number of the destination service or workload (0: unknown).
    pub dst_identity: u32,
    /// [`ORIG_REDIRECTED`], [`ORIG_SERVICE`].
    pub flags: u32,
}

/// [`SockState::mode`]: not decided yet; decided at the socket's first send.
pub const SOCK_UNDECIDED: u32 = 0;
/// [`SockState::mode`]: payload goes straight to the peer socket.
pub const SOCK_REDIRECT: u32 = 1;
/// [`SockState::mode`]: payload takes the TCP/IP stack, for the socket's whole life.
pub const SOCK_PASS: u32 = 2;

/// The acceleration decision for one direction of a connection.
///
/// The decision is taken once, at the first send, and never changes: switching
/// from the TCP path to redirection could let redirected bytes overtake bytes
/// still queued in the stack.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockState {
    /// [`SOCK_UNDECIDED`], [`SOCK_REDIRECT`] or [`SOCK_PASS`].
    pub mode: u32,
    /// Explicit padding, always zero.
    pub _pad: u32,
}

crate::impl_pod!(SockKey, OrigDst, SockState);
