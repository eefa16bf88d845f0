//! The ABI between nodemesh's kernel programs and its agent.
//!
//! Every type here is a key or a value of a BPF map. Kernel and userspace see
//! the same bytes, so each type is `#[repr(C)]`, uses explicit-width fields
//! only, spells out its padding and never holds a `bool`. The `user` feature
//! implements `aya::Pod` for them so the agent can read and write the maps.
//!
//! Addresses are stored as four 32-bit words in network byte order, exactly as
//! the kernel hands them to `cgroup/connect6` (`user_ip6`); an IPv4 address is
//! stored IPv4-mapped (`::ffff:a.b.c.d`) so one map serves both families.
//! Ports are stored in host byte order.
#![no_std]

pub mod config;
pub mod flow;
pub mod net;
pub mod policy;
pub mod service;
pub mod sock;
pub mod stats;
pub mod workload;

/// Implements `aya::Pod` for ABI types when built for userspace.
macro_rules! impl_pod {
    ($($ty:ty),* $(,)?) => {
        $(
            #[cfg(feature = "user")]
            // SAFETY: the type is `#[repr(C)]`, `Copy`, made only of integers
            // with explicit padding, so every bit pattern is valid.
            unsafe impl aya::Pod for $ty {}
        )*
    };
}
pub(crate) use impl_pod;

#[cfg(test)]
mod layout_tests;
