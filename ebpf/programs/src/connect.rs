//! `cgroup/connect4` and `cgroup/connect6`: what happens before a SYN is sent.
//!
//! In order: find the connecting workload, translate a Service address to a
//! backend, apply the L4 policy (a deny fails `connect()` with `EPERM`), and
//! redirect meshed connections to the node agent's outbound listener,
//! remembering what the application dialled.
//!
//! Returning 0 from a cgroup sock_addr program makes the syscall fail with
//! `EPERM`; 1 lets it proceed with the (possibly rewritten) address:
//! <https://elixir.bootlin.com/linux/v6.1/source/include/linux/bpf-cgroup.h#L82>.

use aya_ebpf::{
    bindings::BPF_ANY,
    helpers::{
        bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_get_prandom_u32,
        bpf_get_socket_cookie,
    },
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use nodemesh_common::{
    config::{FEATURE_METRICS, FEATURE_POLICY, FEATURE_REDIRECT, FEATURE_SERVICES},
    flow::{DIR_OUTBOUND, FlowKey},
    net::Addr,
    policy::{ACTION_DENY, LOOKUP_ORDER, PolicyKey},
    service::{BackendKey, PROTO_TCP, SERVICE_MESHED, ServiceKey},
    sock::{ORIG_REDIRECTED, ORIG_SERVICE, OrigDst},
    stats::{
        MAP_UPDATE_ERRORS, MESH_REDIRECTED, POLICY_DENIED, SERVICE_NO_BACKEND, SERVICE_TRANSLATED,
        STRICT_REFUSED,
    },
    workload::{MAX_CGROUP_DEPTH, WORKLOAD_MESHED, WORKLOAD_STRICT, WorkloadInfo},
};

use crate::{
    flows,
    maps::{self, BACKENDS, COOKIE_FLOWS, ENDPOINTS, ORIG_BY_COOKIE, POLICY, SERVICES, WORKLOADS},
    stats,
};

const ALLOW: i32 = 1;
const DENY: i32 = 0;

#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    try_connect(&ctx, Family::V4).unwrap_or(ALLOW)
}

#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    try_connect(&ctx, Family::V6).unwrap_or(ALLOW)
}

/// The address family of the hook.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `connect4`, `getpeername4`.
    V4,
    /// `connect6`, `getpeername6`.
    V6,
}

/// Where a connect goes, after translation.
struct Target {
    addr: Addr,
    port: u16,
    /// Identity of the destination workload (policy is about workloads).
    workload_identity: u32,
    /// Identity reported in metrics: the service if one was dialled, else the workload.
    reported_identity: u32,
    meshed: bool,
    /// STRICT mTLS destination.
    strict: bool,
    translated: bool,
}

fn try_connect(ctx: &SockAddrContext, family: Family) -> Result<i32, i64> {
    let cfg = maps::config();
    // SAFETY: the context pointer is valid for the program's run.
    let sa = unsafe { &*ctx.sock_addr };
    let dialled = match family {
        Family::V4 => Addr::from_v4_be(sa.user_ip4),
        Family::V6 => read_ip6(sa),
    };
    // `user_port` holds the port in network byte order in its low 16 bits.
    let dialled_port = u16::from_be(sa.user_port as u16);
    if dialled.is_loopback() {
        return Ok(ALLOW);
    }
    let proto = sa.protocol as u8;

    // SAFETY: helper without arguments, allowed in cgroup sock_addr programs.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    let is_agent = in_agent_cgroup(cgroup_id, cfg.agent_cgroup_id);
    let source = if is_agent {
        WorkloadInfo::default()
    } else {
        find_workload(cgroup_id)
    };

    let target = translate(&cfg, dialled, dialled_port, proto);
    // SAFETY: the context is a socket-carrying program context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };

    let flow = FlowKey {
        src_identity: source.identity,
        dst_identity: target.reported_identity,
        dst_port: dialled_port,
        direction: DIR_OUTBOUND,
        _pad: 0,
    };

    if cfg.features & FEATURE_POLICY != 0
        && source.identity != 0
        && denied(source.identity, target.workload_identity, target.port)
    {
        aya_log_ebpf::info!(
            ctx,
            "policy denied connect: identity {} -> identity {} port {}",
            source.identity,
            target.workload_identity,
            target.port
        );
        stats::inc(POLICY_DENIED);
        if cfg.features & FEATURE_METRICS != 0
            && let Some(c) = flows::counters(&flow)
        {
            c.denied += 1;
        }
        return Ok(DENY);
    }

    // STRICT mTLS: a registered workload outside the mesh may not reach a
    // strict workload in plaintext.
    if cfg.features & FEATURE_POLICY != 0
        && target.strict
        && source.identity != 0
        && source.flags & WORKLOAD_MESHED == 0
    {
        stats::inc(STRICT_REFUSED);
        if cfg.features & FEATURE_METRICS != 0
            && let Some(c) = flows::counters(&flow)
        {
            c.denied += 1;
        }
        return Ok(DENY);
    }

    let redirect = cfg.features & FEATURE_REDIRECT != 0
        && cfg.redirect_port != 0
        && proto == PROTO_TCP
        && target.meshed
        && source.identity != 0
        && source.flags & WORKLOAD_MESHED != 0;

    if redirect {
        let listener = match (family, dialled.is_v4()) {
            (_, true) => cfg.redirect_addr4,
            (Family::V6, false) => cfg.redirect_addr6,
            (Family::V4, false) => return Ok(ALLOW),
        };
        if listener == Addr::default() {
            return Ok(ALLOW);
        }
        let orig = OrigDst {
            addr: dialled,
            port: dialled_port,
            _pad: 0,
            src_identity: flow.src_identity,
            dst_identity: target.reported_identity,
            flags: ORIG_REDIRECTED | if target.translated { ORIG_SERVICE } else { 0 },
        };
        if ORIG_BY_COOKIE
            .insert(&cookie, &orig, BPF_ANY as u64)
            .is_err()
        {
            // Without the record the agent could not route the connection:
            // leave it on its direct path instead.
            stats::inc(MAP_UPDATE_ERRORS);
            return Ok(ALLOW);
        }
        rewrite(ctx.sock_addr, family, listener, cfg.redirect_port);
        stats::inc(MESH_REDIRECTED);
    } else if target.translated && (family == Family::V6 || target.addr.is_v4()) {
        let orig = OrigDst {
            addr: dialled,
            port: dialled_port,
            _pad: 0,
            src_identity: flow.src_identity,
            dst_identity: target.reported_identity,
            flags: ORIG_SERVICE,
        };
        if ORIG_BY_COOKIE
            .insert(&cookie, &orig, BPF_ANY as u64)
            .is_err()
        {
            stats::inc(MAP_UPDATE_ERRORS);
        }
        rewrite(ctx.sock_addr, family, target.addr, target.port);
        stats::inc(SERVICE_TRANSLATED);
    }

    if cfg.features & FEATURE_METRICS != 0
        && proto == PROTO_TCP
        && COOKIE_FLOWS.insert(&cookie, &flow, BPF_ANY as u64).is_err()
    {
        stats::inc(MAP_UPDATE_ERRORS);
    }
    Ok(ALLOW)
}

/// The workload the calling process belongs to: its own cgroup or the
/// nearest registered ancestor (containers live in child cgroups of the pod).
/// Identity 0 means "not a workload".
///
/// Returns a plain value, not an `Option`: the payload of a `None` is left
/// undefined by the compiler, and the verifier refuses to read undefined
/// registers.
#[inline(always)]
fn find_workload(cgroup_id: u64) -> WorkloadInfo {
    let mut found = WorkloadInfo::default();
    // SAFETY: read-only lookup; the value is copied out at once.
    if let Some(w) = unsafe { WORKLOADS.get(&cgroup_id) } {
        found = *w;
        return found;
    }
    let mut level: i32 = 1;
    while level <= MAX_CGROUP_DEPTH as i32 {
        // SAFETY: helper with a scalar argument; returns 0 past the leaf.
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(level) };
        if id == 0 || id == cgroup_id {
            break;
        }
        // SAFETY: as above.
        if let Some(w) = unsafe { WORKLOADS.get(&id) } {
            found = *w;
            break;
        }
        level += 1;
    }
    found
}

/// Whether the caller runs in the agent's cgroup or below it (the agent's
/// container cgroup sits under its pod's).
#[inline(always)]
fn in_agent_cgroup(cgroup_id: u64, agent: u64) -> bool {
    if agent == 0 {
        return false;
    }
    if cgroup_id == agent {
        return true;
    }
    let mut level: i32 = 1;
    while level <= MAX_CGROUP_DEPTH as i32 {
        // SAFETY: helper with a scalar argument; returns 0 past the leaf.
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(level) };
        if id == 0 || id == cgroup_id {
            return false;
        }
        if id == agent {
            return true;
        }
        level += 1;
    }
    false
}

/// Service translation: picks a backend slot uniformly at random, which the
/// agent's slot layout turns into a weighted choice.
#[inline(always)]
fn translate(
    cfg: &nodemesh_common::config::DatapathConfig,
    addr: Addr,
    port: u16,
    proto: u8,
) -> Target {
    let mut t = Target {
        addr,
        port,
        workload_identity: 0,
        reported_identity: 0,
        meshed: false,
        strict: false,
        translated: false,
    };
    if cfg.features & FEATURE_SERVICES != 0 {
        let key = ServiceKey {
            addr,
            port,
            proto,
            _pad: 0,
        };
        // SAFETY: the value is copied out at once.
        if let Some(svc) = unsafe { SERVICES.get(&key) }.copied() {
            t.reported_identity = svc.identity;
            t.meshed = svc.flags & SERVICE_MESHED != 0;
            if svc.slots == 0 {
                stats::inc(SERVICE_NO_BACKEND);
                return t;
            }
            // SAFETY: helper without arguments.
            let slot = unsafe { bpf_get_prandom_u32() } % svc.slots;
            let bkey = BackendKey {
                service_id: svc.id,
                slot,
            };
            // SAFETY: the value is copied out at once.
            if let Some(b) = unsafe { BACKENDS.get(&bkey) }.copied() {
                t.addr = b.addr;
                t.port = b.port;
                t.workload_identity = b.identity;
                t.translated = true;
                // SAFETY: the value is copied out at once.
                if let Some(ep) = unsafe { ENDPOINTS.get(&b.addr) }.copied() {
                    t.strict = ep.flags & WORKLOAD_STRICT != 0;
                }
            } else {
                stats::inc(SERVICE_NO_BACKEND);
            }
            return t;
        }
    }
    // SAFETY: the value is copied out at once.
    if let Some(ep) = unsafe { ENDPOINTS.get(&addr) }.copied() {
        t.workload_identity = ep.identity;
        t.reported_identity = ep.identity;
        t.meshed = ep.flags & WORKLOAD_MESHED != 0;
        t.strict = ep.flags & WORKLOAD_STRICT != 0;
    }
    t
}

/// Whether the first policy rule matching (source, destination, port) denies.
#[inline(always)]
fn denied(src: u32, dst: u32, port: u16) -> bool {
    let mut i = 0;
    while i < LOOKUP_ORDER.len() {
        let (s, d, p) = LOOKUP_ORDER[i];
        let key = PolicyKey {
            src_identity: if s { src } else { 0 },
            dst_identity: if d { dst } else { 0 },
            port: if p { port } else { 0 },
            _pad: 0,
        };
        // A rule on an unknown (0) identity would match everything: skip
        // lookups whose kept fields are unknown.
        let usable = (!s || src != 0) && (!d || dst != 0);
        if usable {
            // SAFETY: the value is copied out at once.
            if let Some(v) = unsafe { POLICY.get(&key) }.copied() {
                return v.action == ACTION_DENY;
            }
        }
        i += 1;
    }
    false
}

/// Reads `user_ip6` one word at a time: the verifier accepts only 4-byte
/// accesses to it on older kernels.
#[inline(always)]
pub fn read_ip6(sa: &aya_ebpf::bindings::bpf_sock_addr) -> Addr {
    let mut words = [0u32; 4];
    let mut i = 0;
    while i < 4 {
        // SAFETY: in-bounds field of the context.
        words[i] = unsafe { core::ptr::read_volatile(&sa.user_ip6[i]) };
        i += 1;
    }
    Addr { words }
}

/// Points the socket at `addr:port`.
#[inline(always)]
pub fn rewrite(sa: *mut aya_ebpf::bindings::bpf_sock_addr, family: Family, addr: Addr, port: u16) {
    let port = u32::from(port.to_be());
    match family {
        Family::V4 => rewrite4(sa, addr.words[3], port),
        Family::V6 => rewrite6(sa, &addr, port),
    }
}

// The two writers are kept out of line so that every store is `ctx +
// constant offset`: the verifier refuses stores through a context pointer
// the compiler has offset and kept in a register ("dereference of modified
// ctx ptr").

#[inline(never)]
fn rewrite4(sa: *mut aya_ebpf::bindings::bpf_sock_addr, ip: u32, port_be: u32) {
    // SAFETY: `sa` is the program's context; the fields are in bounds.
    unsafe {
        core::ptr::write_volatile(&raw mut (*sa).user_ip4, ip);
        core::ptr::write_volatile(&raw mut (*sa).user_port, port_be);
    }
}

/// Takes the address by reference: BPF functions have at most five
/// arguments.
#[inline(never)]
fn rewrite6(sa: *mut aya_ebpf::bindings::bpf_sock_addr, addr: &Addr, port_be: u32) {
    // SAFETY: as in `rewrite4`.
    unsafe {
        core::ptr::write_volatile(&raw mut (*sa).user_ip6[0], addr.words[0]);
        core::ptr::write_volatile(&raw mut (*sa).user_ip6[1], addr.words[1]);
        core::ptr::write_volatile(&raw mut (*sa).user_ip6[2], addr.words[2]);
        core::ptr::write_volatile(&raw mut (*sa).user_ip6[3], addr.words[3]);
        core::ptr::write_volatile(&raw mut (*sa).user_port, port_be);
    }
}
