//! Datapath-wide counters, one per-CPU array slot each.

/// Map name: per-CPU array of `u64`, indexed by the constants below.
pub const STATS: &str = "STATS";

/// Connects to a Service address rewritten to a backend.
pub const SERVICE_TRANSLATED: u32 = 0;
/// Connects to a Service that had no backend (left untouched).
pub const SERVICE_NO_BACKEND: u32 = 1;
/// Meshed connects redirected to the node agent.
pub const MESH_REDIRECTED: u32 = 2;
/// Connects the in-kernel policy denied with `EPERM`.
pub const POLICY_DENIED: u32 = 3;
/// `sk_msg` payloads redirected straight to the peer socket.
pub const SOCKMAP_REDIRECTED_MSGS: u32 = 4;
/// Bytes in those payloads.
pub const SOCKMAP_REDIRECTED_BYTES: u32 = 5;
/// Redirects the kernel refused (the payload took the TCP path or was dropped by the kernel).
pub const SOCKMAP_REDIRECT_ERRORS: u32 = 6;
/// Sockets added to the sockhash.
pub const SOCKMAP_INSERTED: u32 = 7;
/// Sockets that could not be added to the sockhash (map full, unsupported state).
pub const SOCKMAP_INSERT_ERRORS: u32 = 8;
/// `getpeername` results rewritten to the address the application dialled.
pub const PEERNAME_REWRITTEN: u32 = 9;
/// Internal map updates that failed (a map is full).
pub const MAP_UPDATE_ERRORS: u32 = 10;
/// Plaintext connects from workloads outside the mesh to STRICT workloads, refused.
pub const STRICT_REFUSED: u32 = 11;
/// Number of slots.
pub const NUM_STATS: u32 = 12;

/// Names of the slots, for metrics and the CLI, indexed like the constants.
pub const NAMES: [&str; NUM_STATS as usize] = [
    "service_translated",
    "service_no_backend",
    "mesh_redirected",
    "policy_denied",
    "sockmap_redirected_msgs",
    "sockmap_redirected_bytes",
    "sockmap_redirect_errors",
    "sockmap_inserted",
    "sockmap_insert_errors",
    "peername_rewritten",
    "map_update_errors",
    "strict_refused",
];
