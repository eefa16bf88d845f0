//! `refuse_bpf`: a BPF-LSM program that makes the kernel refuse chosen BPF
//! map and program types, built only with the `kernel-refusal-test` feature
//! (`cargo xtask vm-test --degraded`).
//!
//! Every kernel nodemesh supports builds sockhash, `sk_msg` and `sock_ops`
//! whenever it builds cgroup BPF at all, so the only kernels without them are
//! kernels whose security policy refuses them. This program is such a policy:
//! loaded inside a test guest, it turns the guest into a kernel missing a
//! feature, and the agent's degraded modes can be shown for real.
//!
//! The loader sets [`REFUSE`]; what is refused answers like this:
//! - [`REFUSE_SOCKMAP`]: `BPF_MAP_CREATE` of a sockmap or sockhash and
//!   `BPF_PROG_LOAD` of `sk_msg` fail with `EINVAL`, the answer of a kernel
//!   that does not know the type;
//! - [`REFUSE_SOCK_OPS`]: `BPF_PROG_LOAD` of `sock_ops` fails with `EPERM`,
//!   the answer of a security policy.

use aya_ebpf::{
    bindings::{bpf_cmd, bpf_map_type, bpf_prog_type},
    helpers::bpf_probe_read_kernel,
    macros::lsm,
    programs::LsmContext,
};

/// Refuse sockmap and sockhash maps and `sk_msg` programs.
pub const REFUSE_SOCKMAP: u32 = 1;
/// Refuse `sock_ops` programs.
pub const REFUSE_SOCK_OPS: u32 = 2;

/// What to refuse, a mask of `REFUSE_*` set by the loader.
#[unsafe(no_mangle)]
static REFUSE: u32 = 0;

const EINVAL: i32 = 22;
const EPERM: i32 = 1;

/// Runs on every `bpf()` system call: `security_bpf(cmd, attr, size)`.
#[lsm(hook = "bpf")]
pub fn refuse_bpf(ctx: LsmContext) -> i32 {
    let cmd: u32 = ctx.arg(0);
    let attr: *const u32 = ctx.arg(1);
    // The verdict of the LSM programs before this one comes last.
    let earlier: i32 = ctx.arg(3);
    if earlier != 0 {
        return earlier;
    }
    // SAFETY: a read of a global the loader initialised; volatile so the
    // compiler does not fold the default value in.
    let refuse = unsafe { core::ptr::read_volatile(&REFUSE) };
    // `map_type` (for BPF_MAP_CREATE) and `prog_type` (for BPF_PROG_LOAD) are
    // both the first field of `union bpf_attr`.
    // SAFETY: `attr` is the kernel's copy of the system call's attributes;
    // the helper checks the read.
    let Ok(kind) = (unsafe { bpf_probe_read_kernel(attr) }) else {
        return 0;
    };
    verdict(refuse, cmd, kind)
}

/// 0 to let the call through, or the negative errno that refuses it.
#[inline(always)]
fn verdict(refuse: u32, cmd: u32, kind: u32) -> i32 {
    let sockmap = refuse & REFUSE_SOCKMAP != 0;
    let sock_ops = refuse & REFUSE_SOCK_OPS != 0;
    match cmd {
        bpf_cmd::BPF_MAP_CREATE
            if sockmap
                && (kind == bpf_map_type::BPF_MAP_TYPE_SOCKMAP
                    || kind == bpf_map_type::BPF_MAP_TYPE_SOCKHASH) =>
        {
            -EINVAL
        }
        bpf_cmd::BPF_PROG_LOAD if sockmap && kind == bpf_prog_type::BPF_PROG_TYPE_SK_MSG => -EINVAL,
        bpf_cmd::BPF_PROG_LOAD if sock_ops && kind == bpf_prog_type::BPF_PROG_TYPE_SOCK_OPS => {
            -EPERM
        }
        _ => 0,
    }
}
