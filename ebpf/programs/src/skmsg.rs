//! `sk_msg`: same-node socket-to-socket acceleration.
//!
//! Runs on every send of a socket in the sockhash. When the peer socket is
//! in the sockhash too (both ends on this node), the payload is queued
//! straight onto the peer's receive queue (`BPF_F_INGRESS`), skipping the
//! TCP/IP stack.
//!
//! The decision is taken at the connection's first send and kept for its
//! whole life, for both directions: bytes that took the stack could still
//! be in flight when a later send is redirected, and would then arrive after
//! it. A connection whose first send happens before its peer socket is
//! established (the peer is on another node, or not yet accepted) stays on
//! the stack. A redirect the kernel
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
    let key = msg_key(ctx.msg);
    let Some(state) = SOCK_STATE.get_ptr_mut(&key) else {
        return Ok(SK_PASS);
    };
    // SAFETY: entry of a live map; a socket sends from one context at a time
    // (the socket lock is held around sendmsg).
    let state = unsafe { &mut *state };
    let mut peer = key.peer();
    if state.mode == SOCK_UNDECIDED {
        // Both directions of a connection take the same path: redirect only
        // if the peer is local and has not settled on the stack already, and
        // then settle the peer too.
        state.mode = SOCK_PASS;
        if let Some(p) = SOCK_STATE.get_ptr_mut(&peer) {
            // SAFETY: entry of a live map; concurrent first sends of both ends
            // can only both write SOCK_REDIRECT here.
            let p = unsafe { &mut *p };
            if p.mode != SOCK_PASS {
                p.mode = SOCK_REDIRECT;
                state.mode = SOCK_REDIRECT;
            }
        }
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
fn msg_key(md: *mut sk_msg_md) -> SockKey {
    let mut key = SockKey::default();
    // SAFETY: `md` is the program's context.
    if unsafe { core::ptr::read_volatile(&raw const (*md).family) } == AF_INET {
        key4(md, &mut key);
    } else {
        key6(md, &mut key);
    }
    key
}

// Out-of-line readers per family: see `sockops::key4`.

#[inline(never)]
fn key4(md: *mut sk_msg_md, key: &mut SockKey) {
    // SAFETY: `md` is the program's context; the fields are in bounds.
    unsafe {
        key.local_addr = Addr::from_v4_be(core::ptr::read_volatile(&raw const (*md).local_ip4));
        key.remote_addr = Addr::from_v4_be(core::ptr::read_volatile(&raw const (*md).remote_ip4));
        key.local_port = core::ptr::read_volatile(&raw const (*md).local_port);
        key.remote_port = remote_port(core::ptr::read_volatile(&raw const (*md).remote_port));
    }
}

#[inline(never)]
fn key6(md: *mut sk_msg_md, key: &mut SockKey) {
    // SAFETY: as in `key4`.
    unsafe {
        let mut i = 0;
        while i < 4 {
            key.local_addr.words[i] = core::ptr::read_volatile(&raw const (*md).local_ip6[i]);
            key.remote_addr.words[i] = core::ptr::read_volatile(&raw const (*md).remote_ip6[i]);
            i += 1;
        }
        key.local_port = core::ptr::read_volatile(&raw const (*md).local_port);
        key.remote_port = remote_port(core::ptr::read_volatile(&raw const (*md).remote_port));
    }
}
