//! `sockops`: per-connection bookkeeping at TCP state changes.
//!
//! - `TCP_CONNECT_CB` (the client picked its source port, before the SYN):
//!   hand a redirected connection's original destination to the agent under
//!   the 4-tuple, and bind the socket to its flow.
//! - `ACTIVE_/PASSIVE_ESTABLISHED_CB`: count the connection, and put the
//!   socket in the sockhash for same-node acceleration.
//! - `STATE_CB` into `TCP_CLOSE`: add the stack's byte, segment, retransmit
//!   and RTT counters to the flow, and forget the socket.
//!
//! Callback numbers and the `STATE_CB` opt-in flag:
//! <https://elixir.bootlin.com/linux/v6.1/source/include/uapi/linux/bpf.h#L6370>.

use aya_ebpf::{
    bindings::{
        BPF_ANY, BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB,
        BPF_SOCK_OPS_STATE_CB, BPF_SOCK_OPS_STATE_CB_FLAG, BPF_SOCK_OPS_TCP_CONNECT_CB,
        bpf_sock_ops,
    },
    helpers::bpf_get_socket_cookie,
    macros::sock_ops,
    programs::SockOpsContext,
};
use nodemesh_common::{
    config::{FEATURE_METRICS, FEATURE_SOCKMAP},
    flow::{DIR_INBOUND, FlowKey, SockFlow},
    net::Addr,
    sock::{ORIG_REDIRECTED, SockKey},
    stats::MAP_UPDATE_ERRORS,
};

use crate::{
    flows,
    maps::{self, COOKIE_FLOWS, ENDPOINTS, ORIG_BY_COOKIE, ORIG_BY_TUPLE, SOCK_FLOWS, SOCK_STATE},
    stats,
};

const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;

// TCP states, from include/net/tcp_states.h:
// <https://elixir.bootlin.com/linux/v6.1/source/include/net/tcp_states.h#L12>.
const TCP_SYN_SENT: u32 = 2;
const TCP_SYN_RECV: u32 = 3;
const TCP_FIN_WAIT2: u32 = 5;
const TCP_TIME_WAIT: u32 = 6;
const TCP_CLOSE: u32 = 7;
const TCP_LAST_ACK: u32 = 9;
const TCP_CLOSING: u32 = 11;

#[sock_ops]
pub fn track_socket(ctx: SockOpsContext) -> u32 {
    let _ = try_sockops(&ctx);
    // The return value of sockops is only read by callbacks that ask for a
    // reply (none here): 1 is the conventional "ok".
    1
}

fn try_sockops(ctx: &SockOpsContext) -> Result<(), i64> {
    let family = ctx.family();
    if family != AF_INET && family != AF_INET6 {
        return Ok(());
    }
    let cfg = maps::config();
    match ctx.op() {
        BPF_SOCK_OPS_TCP_CONNECT_CB => on_connect(ctx, &cfg),
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB => on_established(ctx, &cfg, false),
        BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB => on_established(ctx, &cfg, true),
        BPF_SOCK_OPS_STATE_CB => on_state(ctx),
        _ => Ok(()),
    }
}

/// The connection as seen from this socket.
#[inline(always)]
fn sock_key(ctx: &SockOpsContext) -> SockKey {
    let mut key = SockKey::default();
    if ctx.family() == AF_INET {
        key4(ctx.ops, &mut key);
    } else {
        key6(ctx.ops, &mut key);
    }
    key
}

// One out-of-line reader per family, so that every context load is
// `ctx + constant offset`: the verifier refuses loads through a context
// pointer the compiler has offset by a value chosen at run time.

#[inline(never)]
fn key4(ops: *mut bpf_sock_ops, key: &mut SockKey) {
    // SAFETY: `ops` is the program's context; the fields are in bounds.
    unsafe {
        key.local_addr = Addr::from_v4_be(core::ptr::read_volatile(&raw const (*ops).local_ip4));
        key.remote_addr = Addr::from_v4_be(core::ptr::read_volatile(&raw const (*ops).remote_ip4));
        key.local_port = core::ptr::read_volatile(&raw const (*ops).local_port);
        key.remote_port = remote_port(core::ptr::read_volatile(&raw const (*ops).remote_port));
    }
}

#[inline(never)]
fn key6(ops: *mut bpf_sock_ops, key: &mut SockKey) {
    // SAFETY: as in `key4`.
    unsafe {
        let mut i = 0;
        while i < 4 {
            key.local_addr.words[i] = core::ptr::read_volatile(&raw const (*ops).local_ip6[i]);
            key.remote_addr.words[i] = core::ptr::read_volatile(&raw const (*ops).remote_ip6[i]);
            i += 1;
        }
        key.local_port = core::ptr::read_volatile(&raw const (*ops).local_port);
        key.remote_port = remote_port(core::ptr::read_volatile(&raw const (*ops).remote_port));
    }
}

/// `remote_port` is in network byte order; on little-endian kernels it sits
/// in the upper 16 bits of the field:
/// <https://elixir.bootlin.com/linux/v6.1/source/net/core/filter.c#L10144>.
#[inline(always)]
pub fn remote_port(raw: u32) -> u32 {
    let be = if raw > 0xffff { raw >> 16 } else { raw };
    u32::from(u16::from_be(be as u16))
}

#[inline(always)]
fn cookie(ctx: &SockOpsContext) -> u64 {
    // SAFETY: the context is a socket-carrying program context.
    unsafe { bpf_get_socket_cookie(ctx.ops.cast()) }
}

#[inline(always)]
fn want_state_cb(ctx: &SockOpsContext) {
    let flags = ctx.cb_flags() | BPF_SOCK_OPS_STATE_CB_FLAG;
    let _ = ctx.set_cb_flags(flags as i32);
}

fn on_connect(
    ctx: &SockOpsContext,
    cfg: &nodemesh_common::config::DatapathConfig,
) -> Result<(), i64> {
    let key = sock_key(ctx);
    let cookie = cookie(ctx);
    // SAFETY: the value is copied out at once.
    if let Some(orig) = unsafe { ORIG_BY_COOKIE.get(&cookie) }.copied()
        && orig.flags & ORIG_REDIRECTED != 0
        && ORIG_BY_TUPLE.insert(&key, &orig, BPF_ANY as u64).is_err()
    {
        stats::inc(MAP_UPDATE_ERRORS);
    }
    if cfg.features & FEATURE_METRICS != 0 {
        // SAFETY: the value is copied out at once.
        if let Some(flow) = unsafe { COOKIE_FLOWS.get(&cookie) }.copied() {
            let _ = COOKIE_FLOWS.remove(&cookie);
            let sf = SockFlow {
                flow,
                ..SockFlow::default()
            };
            if SOCK_FLOWS.insert(&key, &sf, BPF_ANY as u64).is_err() {
                stats::inc(MAP_UPDATE_ERRORS);
            }
        }
    }
    // Needed to see SYN_SENT -> CLOSE (refused) and the final close.
    want_state_cb(ctx);
    Ok(())
}

fn on_established(
    ctx: &SockOpsContext,
    cfg: &nodemesh_common::config::DatapathConfig,
    passive: bool,
) -> Result<(), i64> {
    let key = sock_key(ctx);
    if cfg.features & FEATURE_METRICS != 0 {
        if passive {
            // SAFETY: values are copied out at once.
            let src = unsafe { ENDPOINTS.get(&key.remote_addr) }
                .map(|e| e.identity)
                .unwrap_or(0);
            // SAFETY: as above.
            let dst = unsafe { ENDPOINTS.get(&key.local_addr) }
                .map(|e| e.identity)
                .unwrap_or(0);
            let flow = FlowKey {
                src_identity: src,
                dst_identity: dst,
                dst_port: key.local_port as u16,
                direction: DIR_INBOUND,
                _pad: 0,
            };
            let sf = SockFlow {
                flow,
                ..SockFlow::default()
            };
            if SOCK_FLOWS.insert(&key, &sf, BPF_ANY as u64).is_err() {
                stats::inc(MAP_UPDATE_ERRORS);
            }
        }
        if let Some(sf) = SOCK_FLOWS.get_ptr_mut(&key) {
            // SAFETY: entry of a live map, written only by this socket's callbacks.
            let sf = unsafe { &mut *sf };
            // SAFETY: the context pointer is valid for the program's run.
            let ops = unsafe { &*ctx.ops };
            sf.base_acked = ops.bytes_acked;
            sf.base_received = ops.bytes_received;
            if let Some(c) = flows::counters(&sf.flow) {
                c.opened += 1;
            }
        }
        want_state_cb(ctx);
    }
    if cfg.features & FEATURE_SOCKMAP != 0
        && !key.local_addr.is_loopback()
        && !key.remote_addr.is_loopback()
    {
        accelerate(ctx, key);
        want_state_cb(ctx);
    }
    Ok(())
}

/// Adds the socket to the sockhash; `sk_msg` then decides at its first send
/// whether its peer is local too.
#[cfg(feature = "sockmap")]
#[inline(always)]
fn accelerate(ctx: &SockOpsContext, mut key: SockKey) {
    use crate::maps::SOCK_HASH;
    use aya_ebpf::bindings::BPF_NOEXIST;
    use nodemesh_common::{
        sock::{SOCK_UNDECIDED, SockState},
        stats::{SOCKMAP_INSERT_ERRORS, SOCKMAP_INSERTED},
    };
    // SAFETY: the context pointer is valid for the program's run.
    let ops: &mut bpf_sock_ops = unsafe { &mut *ctx.ops };
    if SOCK_HASH.update(&mut key, ops, BPF_ANY as u64).is_err() {
        stats::inc(SOCKMAP_INSERT_ERRORS);
        return;
    }
    let state = SockState {
        mode: SOCK_UNDECIDED,
        _pad: 0,
    };
    if SOCK_STATE.insert(&key, &state, BPF_NOEXIST as u64).is_err() {
        // A stale entry of an earlier connection with the same 4-tuple.
        let _ = SOCK_STATE.insert(&key, &state, BPF_ANY as u64);
    }
    stats::inc(SOCKMAP_INSERTED);
}

/// The object built without the `sockmap` feature has no sockhash, and the
/// agent never turns `FEATURE_SOCKMAP` on for it.
#[cfg(not(feature = "sockmap"))]
#[inline(always)]
fn accelerate(_ctx: &SockOpsContext, _key: SockKey) {}

fn on_state(ctx: &SockOpsContext) -> Result<(), i64> {
    let old = ctx.arg(0);
    let new = ctx.arg(1);
    if new != TCP_CLOSE {
        return Ok(());
    }
    let key = sock_key(ctx);
    let _ = SOCK_STATE.remove(&key);
    let _ = ORIG_BY_COOKIE.remove(&cookie(ctx));
    // SAFETY: the value is copied out at once.
    let Some(sf) = (unsafe { SOCK_FLOWS.get(&key) }).copied() else {
        return Ok(());
    };
    let _ = SOCK_FLOWS.remove(&key);
    let Some(c) = flows::counters(&sf.flow) else {
        return Ok(());
    };
    if old == TCP_SYN_SENT || old == TCP_SYN_RECV {
        c.refused += 1;
        return Ok(());
    }
    // SAFETY: the context pointer is valid for the program's run.
    let ops = unsafe { &*ctx.ops };
    // The stack counts sequence space: past the values at establishment
    // (which hold the SYN) only the FINs remain to take out. A socket
    // reaches CLOSE from FIN_WAIT2 or TIME_WAIT (its FIN was acked, then the
    // peer's arrived), CLOSING or LAST_ACK (both FINs exchanged and the last
    // ack arrived); from any other state it was reset or aborted.
    let fins = u64::from(
        old == TCP_FIN_WAIT2 || old == TCP_TIME_WAIT || old == TCP_CLOSING || old == TCP_LAST_ACK,
    );
    c.closed += 1;
    c.bytes_sent += ops
        .bytes_acked
        .saturating_sub(sf.base_acked)
        .saturating_sub(fins);
    c.bytes_received += ops
        .bytes_received
        .saturating_sub(sf.base_received)
        .saturating_sub(fins);
    c.packets_sent += u64::from(ops.data_segs_out);
    c.packets_received += u64::from(ops.data_segs_in);
    c.retransmits += u64::from(ops.total_retrans);
    // `srtt_us` is the smoothed RTT scaled by 8 (tcp_sock.srtt_us).
    let srtt = u64::from(ops.srtt_us >> 3);
    if srtt > 0 {
        c.srtt_us_sum += srtt;
        c.srtt_samples += 1;
    }
    Ok(())
}
