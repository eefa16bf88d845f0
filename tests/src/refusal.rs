//! A kernel missing a BPF feature, made from a kernel-matrix guest.
//!
//! Every kernel nodemesh supports builds sockhash, `sk_msg` and `sock_ops`
//! whenever it builds cgroup BPF, so a kernel without them is one whose
//! security policy refuses them. [`KernelRefusal`] installs such a policy: the
//! `refuse_bpf` BPF-LSM program (`ebpf/programs/src/refusal.rs`), from the
//! object `cargo xtask vm-test --degraded` builds and names in
//! `NODEMESH_REFUSAL_OBJECT`. An LSM program acts on the whole kernel, so it
//! is only ever installed inside a guest, never on the host.

use aya::programs::Lsm;
use aya::{Btf, Ebpf, EbpfLoader};

/// Refuse sockmap and sockhash maps and `sk_msg` programs (with `EINVAL`).
pub const REFUSE_SOCKMAP: u32 = 1;
/// Refuse `sock_ops` programs (with `EPERM`).
pub const REFUSE_SOCK_OPS: u32 = 2;

/// The environment variable naming the object holding `refuse_bpf`.
pub const OBJECT_ENV: &str = "NODEMESH_REFUSAL_OBJECT";

/// The installed policy; dropping it detaches the program and the kernel
/// offers everything again.
pub struct KernelRefusal {
    _ebpf: Ebpf,
}

impl KernelRefusal {
    /// Makes the kernel refuse what `refuse` (a mask of `REFUSE_*`) names.
    /// Panics outside a kernel-matrix guest.
    pub fn install(refuse: u32) -> Self {
        assert_eq!(
            std::env::var("NODEMESH_IN_VM").as_deref(),
            Ok("1"),
            "refuse_bpf is a system-wide LSM program: it is installed only inside a kernel-matrix guest (`cargo xtask vm-test --degraded`)"
        );
        let active = std::fs::read_to_string("/sys/kernel/security/lsm").unwrap_or_default();
        assert!(
            active.split(',').any(|lsm| lsm.trim() == "bpf"),
            "the BPF LSM is not active in this kernel (active: {active:?}): boot it with `bpf` in lsm="
        );
        let object = std::env::var_os(OBJECT_ENV).unwrap_or_else(|| {
            panic!("{OBJECT_ENV} is not set: run through `cargo xtask vm-test --degraded`")
        });
        let btf = Btf::from_sys_fs().expect("the guest kernel's BTF (BPF-LSM programs need it)");
        let mut ebpf = EbpfLoader::new()
            .override_global("REFUSE", &refuse, true)
            .load_file(&object)
            .unwrap_or_else(|e| panic!("loading {}: {e}", object.to_string_lossy()));
        let program: &mut Lsm = ebpf
            .program_mut("refuse_bpf")
            .expect("the refusal object has refuse_bpf")
            .try_into()
            .expect("refuse_bpf is an LSM program");
        program
            .load("bpf", &btf)
            .unwrap_or_else(|e| panic!("loading refuse_bpf: {e:#?}"));
        program
            .attach()
            .expect("attaching refuse_bpf (is the BPF LSM active? it needs `bpf` in lsm=)");
        KernelRefusal { _ebpf: ebpf }
    }
}
