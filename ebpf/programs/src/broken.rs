//! `verifier_reject_test`: a program the verifier must refuse, built only with
//! the `verifier-reject-test` feature (`cargo xtask vm-test --broken`), to show
//! that the kernel matrix reports a verifier rejection as a failure and prints
//! the verifier's log.
//!
//! It reads 4 bytes at offset 4096 of its context, far past the end of
//! `struct bpf_sock_addr`; the verifier answers "invalid bpf_context access".

use aya_ebpf::{macros::cgroup_sock_addr, programs::SockAddrContext};

/// Attached nowhere; exists only to be loaded and refused.
#[cgroup_sock_addr(connect4)]
pub fn verifier_reject_test(ctx: SockAddrContext) -> i32 {
    let base = ctx.sock_addr.cast::<u8>();
    // SAFETY: never sound at run time, and never run: the verifier rejects the
    // out-of-bounds context access at load time, which is this program's purpose.
    unsafe { core::ptr::read_volatile(base.wrapping_add(4096).cast::<u32>()) as i32 }
}
