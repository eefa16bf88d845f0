//! nodemesh's kernel programs, built into one object so they share maps.
//!
//! - `connect4`/`connect6` (cgroup/connect*): Service translation, in-kernel
//!   L4 policy, and redirect of meshed connections to the node agent.
//! - `getpeername4`/`getpeername6`: show the application the address it dialled.
//! - `sockops`: original-destination hand-off to the agent, the same-node
//!   sockhash, and L4 flow metrics.
//! - `sk_msg`: same-node socket-to-socket acceleration (feature `sockmap`,
//!   on by default; the agent also embeds an object built without it for
//!   kernels that refuse sockhash maps or `sk_msg` programs).
//!
//! Entry points are thin: each calls a `try_*` function returning `Result`,
//! and an error never blocks traffic it was not meant to block.
#![no_std]
#![no_main]

#[cfg(feature = "verifier-reject-test")]
mod broken;
mod connect;
mod flows;
mod maps;
mod peername;
#[cfg(feature = "kernel-refusal-test")]
mod refusal;
#[cfg(feature = "sockmap")]
mod skmsg;
mod sockops;
mod stats;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic, so this is never called.
    loop {}
}

/// The license the kernel checks before allowing GPL-only helpers
/// (`bpf_msg_redirect_hash`, `bpf_sock_hash_update`).
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
