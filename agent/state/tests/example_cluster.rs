//! The example cluster in `examples/cluster` loads without a single refusal
//! and yields the routing, canary weights and policy it describes.

use std::net::IpAddr;
use std::path::PathBuf;

use nodemesh_state::desired::{PROTO_TCP, ServiceKey, ServiceName, Verdict};
use nodemesh_state::file::{FileSource, ReloadSummary};
use nodemesh_state::model::crds::MtlsMode;
use nodemesh_state::{Index, IndexConfig};

fn example_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/cluster")
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn example_cluster_loads_for_node_a() {
    let mut index = Index::new(
        IndexConfig {
            node_name: "node-a".into(),
            ..Default::default()
        },
        None,
    );
    let mut source = FileSource::new(example_dir());
    let summary = source.reload(&mut index).expect("example readable");
    assert_eq!(
        summary,
        ReloadSummary {
            applied: 21,
            ..Default::default()
        }
    );
    assert_eq!(index.held_back().count(), 0);
    let s = index.snapshot();

    let id = |sa: &str| {
        *s.identities
            .iter()
            .find(|(_, i)| i.to_string() == format!("spiffe://cluster.local/ns/demo/sa/{sa}"))
            .expect("identity")
            .0
    };

    // Local workloads: node-a's Pods, by cgroup.
    let cgroups: Vec<&str> = s.workloads.keys().map(String::as_str).collect();
    assert_eq!(
        cgroups,
        [
            "nodemesh-demo/node-a/frontend",
            "nodemesh-demo/node-a/loadgen",
            "nodemesh-demo/node-a/reviews-v1"
        ]
    );
    assert_eq!(
        s.workloads["nodemesh-demo/node-a/frontend"].mtls,
        MtlsMode::Permissive
    );
    assert_eq!(
        s.workloads["nodemesh-demo/node-a/reviews-v1"].mtls,
        MtlsMode::Strict
    );
    assert!(s.workloads.values().all(|w| w.meshed));
    assert_eq!(s.endpoints.len(), 6);

    // reviews: 90/10 between v1 (two Pods) and v2 (one Pod).
    let reviews = &s.services[&ServiceKey {
        vip: ip("10.96.0.20"),
        port: 9080,
        proto: PROTO_TCP,
    }];
    let weights: Vec<(IpAddr, u32)> = reviews.backends.iter().map(|b| (b.ip, b.weight)).collect();
    assert_eq!(
        weights,
        [
            (ip("10.244.1.11"), 9),
            (ip("10.244.2.11"), 2),
            (ip("10.244.2.13"), 9)
        ]
    );
    assert_eq!(reviews.identity, id("reviews"));
    let table = &s.routes[&ServiceName::new("demo", "reviews")];
    assert_eq!(
        table.http[0]
            .backends
            .iter()
            .map(|b| b.weight)
            .collect::<Vec<_>>(),
        [90, 10]
    );

    // ratings: gRPC routing and the loadgen deny rule in the kernel.
    assert_eq!(s.routes[&ServiceName::new("demo", "ratings")].grpc.len(), 1);
    let denied: Vec<_> = s
        .policy
        .iter()
        .filter(|(_, r)| r.verdict == Verdict::Deny)
        .map(|(k, _)| *k)
        .collect();
    assert_eq!(denied.len(), 1);
    assert_eq!(
        (
            denied[0].src_identity,
            denied[0].dst_identity,
            denied[0].port
        ),
        (id("loadgen"), id("ratings"), 50051)
    );
}
