//! Certificate rotation and trust-anchor rotation under continuous traffic.

#[path = "support/harness.rs"]
mod harness;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use harness::{Fixture, FixtureOptions, Node, STEP_TIMEOUT, pattern};
use nodemesh_proxy::identity::{Authority, TrustBundle};
use nodemesh_proxy::tunnel::{Outbound, OutboundConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaf_rotation_during_continuous_requests() {
    let fx = Fixture::new(FixtureOptions {
        lifetime: Duration::from_secs(5),
        ..FixtureOptions::default()
    })
    .await;
    // A stream opened before any rotation, kept open throughout.
    let (mut long_lived, long_task) = fx.app_connection(fx.route()).await;
    long_lived.write_all(b"before").await.unwrap();
    let mut buf = [0u8; 6];
    long_lived.read_exact(&mut buf).await.unwrap();

    let first_server_serial = fx
        .server
        .manager
        .current(&fx.destination)
        .unwrap()
        .serial()
        .to_owned();
    let started = tokio::time::Instant::now();
    let (mut ok, mut failed) = (0u32, Vec::new());
    for i in 0..4000u32 {
        if started.elapsed() >= Duration::from_secs(20) {
            break;
        }
        let payload = pattern(2048, i);
        match fx.round_trip(&payload).await {
            Ok(echoed) if echoed == payload => ok += 1,
            Ok(_) => failed.push(format!("request {i}: corrupted echo")),
            Err(e) => failed.push(format!("request {i}: {e}")),
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(failed.is_empty(), "{} failed: {failed:?}", failed.len());
    assert!(ok > 100, "only {ok} requests in 20 s");

    let serials: HashSet<String> = fx
        .recording
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter_map(|r| r.source_cert_serial.clone())
        .collect();
    assert!(serials.len() > 1, "client leaves used: {serials:?}");
    assert_ne!(
        fx.server.manager.current(&fx.destination).unwrap().serial(),
        first_server_serial,
        "server leaf never rotated"
    );

    // The connection made before the rotations still carries its stream,
    // although the certificates it was authenticated with have expired.
    long_lived.write_all(b"after").await.unwrap();
    long_lived.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(STEP_TIMEOUT, long_lived.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rest, b"after");
    long_task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_anchor_rotation_without_failed_requests() {
    let fx = Arc::new(Fixture::new(FixtureOptions::default()).await);
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let traffic = {
        let (fx, stop, ok) = (fx.clone(), stop.clone(), ok.clone());
        tokio::spawn(async move {
            let mut failures = Vec::new();
            for i in 0..20_000u32 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let payload = pattern(1024, i);
                match fx.round_trip(&payload).await {
                    Ok(echoed) if echoed == payload => {
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(_) => failures.push(format!("request {i}: corrupted")),
                    Err(e) => failures.push(format!("request {i}: {e}")),
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            failures
        })
    };
    let nodes = [&fx.client, &fx.server];
    let pause = || tokio::time::sleep(Duration::from_millis(1500));
    let old_root = fx.ca.root.cert_der().clone();
    pause().await;
    let before = ok.load(Ordering::SeqCst);

    // 1. Add the new root to every bundle.
    let new_root = Authority::new_root("cluster.local", Duration::from_secs(3600)).unwrap();
    let mut both = TrustBundle::new();
    both.add(old_root.clone());
    both.add(new_root.cert_der().clone());
    for node in nodes {
        node.manager.set_trust_bundle(both.clone()).unwrap();
    }
    pause().await;
    let after_add = ok.load(Ordering::SeqCst);

    // 2. Switch every node to an issuer signed by the new root.
    for node in nodes {
        let issuer = new_root
            .new_issuer("cluster.local", Duration::from_secs(3600))
            .unwrap();
        node.manager.set_issuer(issuer).unwrap();
    }
    pause().await;
    let after_issuer = ok.load(Ordering::SeqCst);

    // 3. Remove the old root.
    let mut only_new = TrustBundle::new();
    only_new.add(new_root.cert_der().clone());
    for node in nodes {
        node.manager.set_trust_bundle(only_new.clone()).unwrap();
    }
    // Removing the new root while its issuer is in use is refused.
    for node in nodes {
        assert!(node.manager.set_trust_bundle(fx.ca.bundle.clone()).is_err());
    }
    pause().await;
    stop.store(true, Ordering::SeqCst);
    let failures = traffic.await.unwrap();
    let total = ok.load(Ordering::SeqCst);
    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );
    assert!(
        before > 0 && after_add > before && after_issuer > after_add && total > after_issuer,
        "traffic stalled: {before} {after_add} {after_issuer} {total}"
    );
    // Every leaf now chains to the new root; each bundle change forced new tunnels.
    let leaf = fx.client.manager.current(&fx.source).unwrap();
    assert_ne!(&leaf.chain()[1], fx.ca.issuer.cert_der());
    assert!(fx.server.metrics.handshake_count("inbound", "ok") >= 4);

    // A node still on the old issuer (trusting both roots) is now refused.
    let stale = Node::new(
        Authority::from_pem(fx.ca.issuer.cert_pem(), fx.ca.issuer.key_pem()).unwrap(),
        both,
        Duration::from_secs(3600),
    );
    stale.manager.add_identity(&fx.source).unwrap();
    let stale_outbound = Outbound::new(
        stale.manager.clone(),
        stale.registry.clone(),
        stale.metrics.clone(),
        OutboundConfig::default(),
    );
    let (client_end, _app_end) = tokio::io::duplex(1024);
    let err = tokio::time::timeout(STEP_TIMEOUT, stale_outbound.proxy(client_end, fx.route()))
        .await
        .unwrap();
    assert!(err.is_err(), "old-root leaf accepted after removal");
    assert_eq!(
        fx.server
            .metrics
            .handshake_count("inbound", "untrusted_issuer"),
        1
    );
}
