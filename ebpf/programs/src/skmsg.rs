//! `sk_msg`: same-node socket-to-socket acceleration.
//!
//! Runs on every send of a socket in the sockhash. When the peer socket is
//! in the sockhash too (both ends on this node), the payload is queued
//! straight onto the peer's receive queue (`BPF_F_INGRESS`), skipping the
//! TCP/IP stack.
//!
//! The decision is taken at a socket's first send and kept for its whole
//! life: bytes that took the stack could still be in flight when a later
//! send is redirected, and would then arrive after it. A redirect the kernel
//! refuses fails the send with an error rather than losing data silently:
//! <https://elixir.bootlin.com/linux/v6.1/source/net/ipv4/tcp_bpf.c#L433>.

use aya_ebpf::{
    bindings::{BPF_F_INGRESS, sk_action::SK_PASS, sk_msg_md},
    macros::sk_msg,
    programs::SkMsgContext,
};
use nodemesh_common::{
    net::Addr,
    sock::{SOCK_PASS, SOCK_REDIRECT, SOCK_UNDECIDED, SockKey},
    stats::{SOCKMAP_REDIRECT_ERRORS, SOCKMAP_REDIRECTED_BYTES, SOCKMAP_REDIRECTED_MSGS},
};

use crate::{
    flows,
    maps::{SOCK_FLOWS, SOCK_HASH, SOCK_STATE},
    sockops::remote_port,
    stats,
};

const AF_INET: u32 = 2;

#[sk_msg]
pub fn redirect_msg(ctx: SkMsgContext) -> u32 {
    try_redirect(&ctx).unwrap_or(SK_PASS)
}

fn try_redirect(ctx: &SkMsgContext) -> Result<u32, i64> {
    // SAFETY: the context pointer is valid for the program's run.
    let md: &sk_msg_md = unsafe { &*ctx.msg };
    let key = msg_key(md);
    let Some(state) = SOCK_STATE.get_ptr_mut(&key) else {
        return Ok(SK_PASS);
    };
    // SAFETY: entry of a live map; a socket sends from one context at a time
    // (the socket lock is held around sendmsg).
    let state = unsafe { &mut *state };
    let mut peer = key.peer();
    if state.mode == SOCK_UNDECIDED {
        // SAFETY: presence check only.
        let peer_local = unsafe { SOCK_STATE.get(&peer) }.is_some();
        state.mode = if peer_local { SOCK_REDIRECT } else { SOCK_PASS };
    }
    if state.mode != SOCK_REDIRECT {
        return Ok(SK_PASS);
    }
    let size = u64::from(ctx.size());
    let verdict = SOCK_HASH.redirect_msg(ctx, &mut peer, u64::from(BPF_F_INGRESS));
    if verdict as u32 == SK_PASS {
        stats::inc(SOCKMAP_REDIRECTED_MSGS);
        stats::add(SOCKMAP_REDIRECTED_BYTES, size);
        // SAFETY: values are copied out at once.
        if let Some(sf) = unsafe { SOCK_FLOWS.get(&key) }.copied()
            && let Some(c) = flows::counters(&sf.flow)
        {
            c.bytes_sent += size;
        }
        // SAFETY: as above.
        if let Some(sf) = unsafe { SOCK_FLOWS.get(&peer) }.copied()
            && let Some(c) = flows::counters(&sf.flow)
        {
            c.bytes_received += size;
        }
    } else {
        stats::inc(SOCKMAP_REDIRECT_ERRORS);
    }
    Ok(verdict as u32)
}

/// The connection as seen from the sending socket.
#[inline(always)]
fn msg_key(md: &sk_msg_md) -> SockKey {
    let (local_addr, remote_addr) = if md.family == AF_INET {
        (Addr::from_v4_be(md.local_ip4), Addr::from_v4_be(md.remote_ip4))
    } else {
        (Addr { words: md.local_ip6 }, Addr { words: md.remote_ip6 })
    };
    SockKey {
        local_addr,
        remote_addr,
        local_port: md.local_port,
        remote_port: remote_port(md.remote_port),
    }
}
