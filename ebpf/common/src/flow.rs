//! L4 metrics per (source workload, destination, port, direction).
//!
//! `sockops` and `sk_msg` add to per-CPU [`FlowStats`]; the agent sums the
//! CPUs and exports the totals as Prometheus counters.

/// Map name: [`FlowKey`] -> per-CPU [`FlowStats`].
pub const FLOW_STATS: &str = "FLOW_STATS";
/// Map name: [`SockKey`] -> [`FlowKey`], the flow each tracked socket adds to.
pub const SOCK_FLOWS: &str = "SOCK_FLOWS";
/// Map name: socket cookie (`u64`) -> [`FlowKey`], set at connect time.
pub const COOKIE_FLOWS: &str = "COOKIE_FLOWS";
/// Capacity of [`FLOW_STATS`].
pub const MAX_FLOWS: u32 = 65_536;

/// [`FlowKey::direction`]: counted at the connecting socket.
pub const DIR_OUTBOUND: u8 = 1;
/// [`FlowKey::direction`]: counted at the accepted socket.
pub const DIR_INBOUND: u8 = 2;

/// Who talks to whom.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Identity number of the client workload (0: outside the mesh's knowledge).
    pub src_identity: u32,
    /// Identity number of the destination workload or service (0: unknown).
    pub dst_identity: u32,
    /// The destination port the client dialled, host byte order.
    pub dst_port: u16,
    /// [`DIR_OUTBOUND`] or [`DIR_INBOUND`].
    pub direction: u8,
    /// Explicit padding, always zero.
    pub _pad: u8,
}

/// Counters of one flow on one CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowStats {
    /// Connections that reached ESTABLISHED.
    pub opened: u64,
    /// Established connections that closed.
    pub closed: u64,
    /// Connections that never got established (refused, reset, timed out).
    pub refused: u64,
    /// Connects the in-kernel policy denied.
    pub denied: u64,
    /// Payload bytes this socket sent (acknowledged by TCP, or redirected).
    pub bytes_sent: u64,
    /// Payload bytes this socket received (through TCP, or redirected to it).
    pub bytes_received: u64,
    /// Data segments sent through TCP.
    pub packets_sent: u64,
    /// Data segments received through TCP.
    pub packets_received: u64,
    /// TCP retransmissions.
    pub retransmits: u64,
    /// Sum of the smoothed RTT (microseconds) of closed connections.
    pub srtt_us_sum: u64,
    /// Number of samples in [`FlowStats::srtt_us_sum`].
    pub srtt_samples: u64,
}

impl FlowStats {
    /// Adds another CPU's counters to these.
    pub fn merge(&mut self, o: &FlowStats) {
        self.opened += o.opened;
        self.closed += o.closed;
        self.refused += o.refused;
        self.denied += o.denied;
        self.bytes_sent += o.bytes_sent;
        self.bytes_received += o.bytes_received;
        self.packets_sent += o.packets_sent;
        self.packets_received += o.packets_received;
        self.retransmits += o.retransmits;
        self.srtt_us_sum += o.srtt_us_sum;
        self.srtt_samples += o.srtt_samples;
    }
}

/// A socket's flow, and the stack's byte counters when it was established.
///
/// The stack counts sequence space, which includes the SYN; subtracting the
/// values at establishment leaves payload (and FIN) bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockFlow {
    /// The flow this socket adds to.
    pub flow: FlowKey,
    /// Explicit padding, always zero.
    pub _pad: u32,
    /// `bytes_acked` at establishment.
    pub base_acked: u64,
    /// `bytes_received` at establishment.
    pub base_received: u64,
}

crate::impl_pod!(FlowKey, FlowStats, SockFlow);
