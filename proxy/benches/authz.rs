//! Authorization on the connection hot path: `authz::evaluate` against a
//! realistic policy set (an AUDIT, a DENY and an ALLOW listing several
//! identities), for an allowed, a denied and an unauthenticated request.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use nodemesh_proxy::authz::{Action, DefaultAction, Policy, Request, Rule, SourceMatch, evaluate};
use nodemesh_proxy::identity::SpiffeId;

fn id(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::new("cluster.local", ns, sa).expect("valid id")
}

fn policies() -> Vec<Policy> {
    let allowed: Vec<SourceMatch> = (0..8)
        .map(|i| SourceMatch::Exact(id("demo", &format!("client-{i}"))))
        .collect();
    vec![
        Policy {
            name: "demo/audit-all".into(),
            action: Action::Audit,
            rules: vec![Rule {
                ports: vec![9090],
                ..Rule::default()
            }],
        },
        Policy {
            name: "demo/deny-legacy".into(),
            action: Action::Deny,
            rules: vec![Rule {
                namespaces: vec!["legacy".into()],
                ..Rule::default()
            }],
        },
        Policy {
            name: "demo/allow-clients".into(),
            action: Action::Allow,
            rules: vec![Rule {
                sources: allowed,
                ports: vec![8080, 8443],
                ..Rule::default()
            }],
        },
    ]
}

fn bench(c: &mut Criterion) {
    let policies = policies();
    let allowed = id("demo", "client-7");
    let denied = id("legacy", "old");
    let mut g = c.benchmark_group("authz_evaluate");
    for (name, source) in [
        ("allowed", Some(&allowed)),
        ("denied", Some(&denied)),
        ("plaintext", None),
    ] {
        let req = Request { source, port: 8080 };
        g.bench_function(name, |b| {
            b.iter(|| evaluate(black_box(&policies), DefaultAction::Allow, black_box(&req)))
        });
    }
    g.bench_function("no_policies", |b| {
        let req = Request {
            source: Some(&allowed),
            port: 8080,
        };
        b.iter(|| evaluate(black_box(&[]), DefaultAction::Allow, black_box(&req)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
