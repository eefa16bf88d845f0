//! What the agent computes for every map update: `Addr` from and to std
//! addresses, a `ServiceKey`, and a service's weighted slot layout (the
//! agent's `datapath::slots::layout`, compiled here from its source so the
//! benchmark needs neither the agent nor the kernel programs).
//!
//! Run with `cargo bench -p nodemesh-common --features user`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use criterion::{Criterion, criterion_group, criterion_main};
use nodemesh_common::net::Addr;
use nodemesh_common::service::{PROTO_TCP, ServiceKey};

#[allow(
    unused_imports,
    dead_code,
    reason = "the module's unit tests are compiled here without the test harness"
)]
#[path = "../../../agent/src/datapath/slots.rs"]
mod slots;

use slots::layout;

fn addr(c: &mut Criterion) {
    let v4 = IpAddr::V4(Ipv4Addr::new(10, 96, 0, 30));
    let v6 = IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0x96, 0x30));
    let mapped = IpAddr::V6(Ipv4Addr::new(10, 201, 1, 10).to_ipv6_mapped());
    let mut g = c.benchmark_group("addr");
    for (name, ip) in [("from_v4", v4), ("from_v6", v6), ("from_v4_mapped", mapped)] {
        g.bench_function(name, |b| b.iter(|| Addr::from(black_box(ip))));
    }
    let a = Addr::from(v6);
    g.bench_function("to_ipaddr_v6", |b| b.iter(|| IpAddr::from(black_box(a))));
    g.bench_function("service_key_v4", |b| {
        b.iter(|| ServiceKey {
            addr: Addr::from(black_box(v4)),
            port: black_box(80u16),
            proto: PROTO_TCP,
            _pad: 0,
        })
    });
    g.finish();
}

fn slots(c: &mut Criterion) {
    let mut g = c.benchmark_group("slot_layout");
    let equal = vec![1u32; 10];
    let canary = vec![90u32, 10];
    let uneven: Vec<u32> = (1..=100).map(|i| i * 7 + 3).collect();
    for (name, w) in [
        ("equal_10", &equal),
        ("canary_90_10", &canary),
        ("uneven_100_apportioned", &uneven),
    ] {
        g.bench_function(name, |b| b.iter(|| layout(black_box(w), 1024)));
    }
    g.finish();
}

criterion_group!(benches, addr, slots);
criterion_main!(benches);
