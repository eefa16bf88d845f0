//! ALLOW, DENY and AUDIT policies observed end to end through the tunnel.

#[path = "support/harness.rs"]
mod harness;

use harness::{Fixture, FixtureOptions, id, pattern};
use nodemesh_proxy::authz::{Action, DefaultAction, Policy, Rule, SourceMatch};
use nodemesh_proxy::tunnel::Error;

fn policy(name: &str, action: Action, rule: Rule) -> Policy {
    Policy {
        name: name.into(),
        action,
        rules: vec![rule],
    }
}

async fn refused_status(fx: &Fixture, source: &nodemesh_proxy::identity::SpiffeId) -> u16 {
    let (client_end, _app_end) = tokio::io::duplex(1024);
    match fx.outbound.proxy(client_end, fx.route_from(source)).await {
        Err(Error::Refused { status, .. }) => status.as_u16(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_policy_admits_only_matching_sources() {
    let fx = Fixture::new(FixtureOptions {
        default_action: DefaultAction::Deny,
        ..FixtureOptions::default()
    })
    .await;
    let intruder = id("ns/client/sa/intruder");
    fx.client.manager.add_identity(&intruder).unwrap();
    fx.authz.set_workload(
        fx.echo_addr.ip(),
        fx.destination.clone(),
        vec![policy(
            "server/allow-app",
            Action::Allow,
            Rule {
                sources: vec![SourceMatch::Exact(fx.source.clone())],
                ports: vec![fx.echo_addr.port()],
                ..Rule::default()
            },
        )],
    );
    let payload = pattern(4096, 1);
    assert_eq!(fx.round_trip(&payload).await.unwrap(), payload);
    assert_eq!(refused_status(&fx, &intruder).await, 403);
    let m = &fx.server.metrics;
    assert_eq!(m.authz_count("allow", "allow_policy"), 1);
    assert_eq!(m.authz_count("deny", "no_allow_matched"), 1);
    // Both sources went through TLS: only authorization told them apart.
    assert_eq!(m.handshake_count("inbound", "ok"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_policy_wins_over_allow() {
    let fx = Fixture::new(FixtureOptions::default()).await;
    fx.authz.set_workload(
        fx.echo_addr.ip(),
        fx.destination.clone(),
        vec![
            policy(
                "server/allow-all",
                Action::Allow,
                Rule {
                    sources: vec![SourceMatch::Any],
                    ..Rule::default()
                },
            ),
            policy(
                "server/deny-client-ns",
                Action::Deny,
                Rule {
                    namespaces: vec!["client".into()],
                    ..Rule::default()
                },
            ),
        ],
    );
    assert_eq!(refused_status(&fx, &fx.source).await, 403);
    assert_eq!(fx.server.metrics.authz_count("deny", "deny_policy"), 1);
    assert_eq!(fx.server.metrics.authz_count("allow", "allow_policy"), 0);
    // Lifting the DENY lets the same source through on the same tunnel.
    fx.authz
        .set_workload(fx.echo_addr.ip(), fx.destination.clone(), vec![]);
    assert_eq!(fx.round_trip(b"now allowed").await.unwrap(), b"now allowed");
    assert_eq!(fx.server.metrics.handshake_count("inbound", "ok"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_policy_counts_but_never_blocks() {
    let fx = Fixture::new(FixtureOptions::default()).await;
    fx.authz.set_workload(
        fx.echo_addr.ip(),
        fx.destination.clone(),
        vec![policy(
            "server/audit-app",
            Action::Audit,
            Rule {
                sources: vec![SourceMatch::Exact(fx.source.clone())],
                ..Rule::default()
            },
        )],
    );
    for i in 0..3 {
        let payload = pattern(512, i);
        assert_eq!(fx.round_trip(&payload).await.unwrap(), payload);
    }
    let m = &fx.server.metrics;
    assert_eq!(m.authz_count("audit", "audit_policy"), 3);
    assert_eq!(m.authz_count("allow", "default_allow"), 3);
    assert_eq!(m.authz_count("deny", "deny_policy"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_another_workload_than_the_authenticated_one_is_denied() {
    let fx = Fixture::new(FixtureOptions::default()).await;
    // 127.0.0.1 now belongs to another workload than the one whose
    // certificate the tunnel was authenticated with.
    fx.authz
        .set_workload(fx.echo_addr.ip(), id("ns/server/sa/someone-else"), vec![]);
    assert_eq!(refused_status(&fx, &fx.source).await, 403);
    assert_eq!(
        fx.server
            .metrics
            .authz_count("deny", "destination_mismatch"),
        1
    );
    fx.authz.remove_workload(fx.echo_addr.ip());
    assert_eq!(refused_status(&fx, &fx.source).await, 403);
    assert_eq!(
        fx.server.metrics.authz_count("deny", "unknown_destination"),
        1
    );
}
