//! Pins every ABI type's size and alignment: a change here changes the
//! kernel/userspace contract and must be deliberate.

use core::mem::{align_of, size_of};

use crate::{config::*, flow::*, net::*, policy::*, service::*, sock::*, workload::*};

macro_rules! pin {
    ($($ty:ty => ($size:expr, $align:expr)),* $(,)?) => {
        $(
            assert_eq!(size_of::<$ty>(), $size, concat!("size of ", stringify!($ty)));
            assert_eq!(align_of::<$ty>(), $align, concat!("align of ", stringify!($ty)));
        )*
    };
}

#[test]
fn sizes_and_alignments_are_pinned() {
    pin! {
        Addr => (16, 4),
        ServiceKey => (20, 4),
        ServiceValue => (16, 4),
        BackendKey => (8, 4),
        Backend => (24, 4),
        WorkloadInfo => (8, 4),
        EndpointInfo => (8, 4),
        PolicyKey => (12, 4),
        PolicyValue => (8, 4),
        SockKey => (40, 4),
        OrigDst => (32, 4),
        SockState => (8, 4),
        FlowKey => (12, 4),
        FlowStats => (88, 8),
        SockFlow => (32, 8),
        DatapathConfig => (48, 8),
    }
}

#[test]
fn stat_names_cover_every_slot() {
    assert_eq!(crate::stats::NAMES.len(), crate::stats::NUM_STATS as usize);
}

#[test]
fn peer_of_peer_is_identity() {
    let k = SockKey {
        local_addr: Addr::from_v4_be(1),
        remote_addr: Addr::from_v4_be(2),
        local_port: 3,
        remote_port: 4,
    };
    assert_eq!(k.peer().peer(), k);
    assert_eq!(k.peer().local_port, 4);
}
