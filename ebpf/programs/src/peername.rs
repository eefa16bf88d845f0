//! `cgroup/getpeername4` and `getpeername6`: an application that dialled a
//! Service address (or was redirected to the agent) sees the address it
//! dialled, not the backend's or the agent's.
//!
//! These hooks exist since Linux 5.8:
//! <https://elixir.bootlin.com/linux/v5.8/source/include/uapi/linux/bpf.h#L226>.

use aya_ebpf::{
    helpers::bpf_get_socket_cookie, macros::cgroup_sock_addr, programs::SockAddrContext,
};
use nodemesh_common::stats::PEERNAME_REWRITTEN;

use crate::{
    connect::{Family, rewrite},
    maps::ORIG_BY_COOKIE,
    stats,
};

#[cgroup_sock_addr(getpeername4)]
pub fn getpeername4(ctx: SockAddrContext) -> i32 {
    try_getpeername(&ctx, Family::V4).unwrap_or(1)
}

#[cgroup_sock_addr(getpeername6)]
pub fn getpeername6(ctx: SockAddrContext) -> i32 {
    try_getpeername(&ctx, Family::V6).unwrap_or(1)
}

fn try_getpeername(ctx: &SockAddrContext, family: Family) -> Result<i32, i64> {
    // SAFETY: the context is a socket-carrying program context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
    // SAFETY: the value is copied out at once.
    let Some(orig) = (unsafe { ORIG_BY_COOKIE.get(&cookie) }).copied() else {
        return Ok(1);
    };
    if family == Family::V4 && !orig.addr.is_v4() {
        return Ok(1);
    }
    rewrite(ctx.sock_addr, family, orig.addr, orig.port);
    stats::inc(PEERNAME_REWRITTEN);
    // getpeername hooks must return 1: they cannot fail the syscall.
    Ok(1)
}
