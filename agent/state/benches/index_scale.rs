//! Scale benchmark: 10,000 Services with 100,000 endpoints through the index.
//!
//! Criterion times loading every object and computing the desired state; a
//! counting global allocator reports the bytes the index and one desired
//! state keep alive (printed, not asserted).

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicIsize, Ordering};

use criterion::{Criterion, criterion_group, criterion_main};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use nodemesh_state::{Index, IndexConfig, Object};

/// Counts live heap bytes.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only
// the byte count is tracked on the side.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const SERVICES: u32 = 10_000;
const ENDPOINTS_PER_SERVICE: u32 = 10;

fn objects() -> Vec<Object> {
    let mut out = Vec::with_capacity(2 * SERVICES as usize);
    for i in 0..SERVICES {
        let ns = format!("ns-{}", i % 100);
        let name = format!("svc-{i}");
        let vip = Ipv4Addr::from(0x0a60_0000 + i);
        out.push(Object::Service(Service {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some(vip.to_string()),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }));
        let endpoints = (0..ENDPOINTS_PER_SERVICE)
            .map(|j| Endpoint {
                addresses: vec![
                    Ipv4Addr::from(0x0a80_0000 + i * ENDPOINTS_PER_SERVICE + j).to_string(),
                ],
                conditions: Some(EndpointConditions {
                    ready: Some(true),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect();
        out.push(Object::EndpointSlice(EndpointSlice {
            metadata: ObjectMeta {
                name: Some(format!("{name}-1")),
                namespace: Some(ns),
                labels: Some(BTreeMap::from([(
                    "kubernetes.io/service-name".to_owned(),
                    name,
                )])),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: Some(endpoints),
            ports: Some(vec![EndpointPort {
                name: Some("http".into()),
                port: Some(8080),
                ..Default::default()
            }]),
        }));
    }
    out
}

fn load(objects: Vec<Object>) -> (Index, nodemesh_state::DesiredState) {
    let mut index = Index::new(IndexConfig::default(), None);
    let rejected = index.apply_all(objects);
    assert!(rejected.is_empty(), "{rejected:?}");
    let state = index.snapshot();
    (index, state)
}

fn report_memory() {
    let mib = |bytes: isize| bytes as f64 / (1024.0 * 1024.0);
    let start = LIVE.load(Ordering::Relaxed);
    let objs = objects();
    let with_objects = LIVE.load(Ordering::Relaxed);
    let (index, state) = load(objs);
    let loaded = LIVE.load(Ordering::Relaxed);
    assert_eq!(state.services.len(), SERVICES as usize);
    assert_eq!(
        state.endpoints.len(),
        (SERVICES * ENDPOINTS_PER_SERVICE) as usize
    );
    drop(state);
    let index_only = LIVE.load(Ordering::Relaxed);
    println!(
        "index_scale: {SERVICES} services, {} endpoints: decoded objects {:.1} MiB; \
         index {:.1} MiB; one desired state {:.1} MiB",
        SERVICES * ENDPOINTS_PER_SERVICE,
        mib(with_objects - start),
        mib(index_only - start),
        mib(loaded - index_only),
    );
    drop(index);
}

fn bench(c: &mut Criterion) {
    report_memory();
    let mut group = c.benchmark_group("index_scale");
    group.sample_size(10);
    group.bench_function("load_10k_services_100k_endpoints_and_snapshot", |b| {
        b.iter_batched(
            objects,
            |objs| black_box(load(objs)),
            criterion::BatchSize::LargeInput,
        )
    });
    let (mut index, _) = load(objects());
    group.bench_function("snapshot_10k_services", |b| {
        b.iter(|| black_box(index.snapshot()))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
