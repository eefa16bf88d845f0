//! The inbound listener rejects bad clients, counts each rejection by
//! reason, and keeps serving good clients afterwards.

#[path = "support/harness.rs"]
mod harness;

use std::sync::Arc;
use std::time::Duration;

use harness::{Fixture, FixtureOptions, Node, eventually, id, pattern};
use nodemesh_proxy::identity::{CaFiles, SpiffeId, WorkloadCert};
use nodemesh_proxy::tls::{self, verifier::SpiffeServerVerifier};
use rustls::ClientConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Connects with `config`, then reads until the server closes. Returns
/// whether the handshake itself failed on the client side.
async fn attempt(fx: &Fixture, config: Arc<ClientConfig>) -> bool {
    let tcp = TcpStream::connect(fx.tunnel_addr).await.unwrap();
    let name = tls::server_name_for(&fx.destination).unwrap();
    let connected = tokio::time::timeout(
        Duration::from_secs(10),
        TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .expect("client handshake hung");
    match connected {
        Err(_) => true,
        Ok(mut tls) => {
            // TLS 1.3: the client finishes first; the server's verdict on the
            // client certificate arrives as an alert on the next read.
            let mut buf = [0u8; 16];
            let read = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf))
                .await
                .expect("server neither served nor closed");
            assert!(
                !matches!(read, Ok(n) if n > 0),
                "server sent application data to a rejected client"
            );
            false
        }
    }
}

async fn assert_rejected_then_serves(fx: &Fixture, reason: &str) {
    let metrics = &fx.server.metrics;
    assert!(
        eventually(Duration::from_secs(10), || metrics
            .handshake_count("inbound", reason)
            == 1)
        .await,
        "no inbound rejection counted with reason {reason}"
    );
    assert_eq!(metrics.handshake_count("inbound", "ok"), 0);
    let payload = pattern(10_000, 3);
    assert_eq!(fx.round_trip(&payload).await.unwrap(), payload);
    assert_eq!(metrics.handshake_count("inbound", "ok"), 1);
    assert_eq!(metrics.handshake_count("inbound", reason), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_cert_from_another_ca() {
    let fx = Fixture::new(FixtureOptions::default()).await;
    let rogue = CaFiles::generate(&Default::default()).unwrap();
    // Trusts the real server, but its own leaf comes from a rogue issuer.
    let mut bundle = fx.ca.bundle.clone();
    bundle.add(rogue.root.cert_der().clone());
    let node = Node::new(rogue.issuer, bundle, Duration::from_secs(60));
    node.manager.add_identity(&fx.source).unwrap();
    let config = tls::client_config(&node.manager, &fx.source, &fx.destination).unwrap();
    attempt(&fx, config).await;
    assert_rejected_then_serves(&fx, "untrusted_issuer").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_client_cert() {
    let fx = Fixture::new(FixtureOptions::default()).await;
    let leaf = WorkloadCert::mint(&fx.ca.issuer, &fx.source, Duration::from_secs(1)).unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let config = tls::client_config_with_cert(&fx.client.manager, &leaf, &fx.destination).unwrap();
    attempt(&fx, config).await;
    assert_rejected_then_serves(&fx, "expired").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_identity_from_another_trust_domain() {
    let fx = Fixture::new(FixtureOptions::default()).await;
    let foreign: SpiffeId = "spiffe://evil.example/ns/client/sa/app".parse().unwrap();
    let leaf = WorkloadCert::mint(&fx.ca.issuer, &foreign, Duration::from_secs(60)).unwrap();
    let config = tls::client_config_with_cert(&fx.client.manager, &leaf, &fx.destination).unwrap();
    attempt(&fx, config).await;
    assert_rejected_then_serves(&fx, "bad_identity").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_refuses_server_with_wrong_identity() {
    // The client asks for the echo workload's SNI but expects another
    // identity: the server proves `echo`, so the client must refuse.
    let fx = Fixture::new(FixtureOptions::default()).await;
    let expected = id("ns/server/sa/database");
    let mut config =
        (*tls::client_config(&fx.client.manager, &fx.source, &expected).unwrap()).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let failed_on_client = attempt(&fx, Arc::new(config)).await;
    assert!(
        failed_on_client,
        "client accepted the wrong server identity"
    );
    // The server saw the client abort the handshake.
    assert_rejected_then_serves(&fx, "alert_received").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_client_cert() {
    let fx = Fixture::new(FixtureOptions::default()).await;
    let provider = tls::provider();
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier::new(
            fx.client.manager.clone(),
            fx.destination.clone(),
            provider,
        )))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    attempt(&fx, Arc::new(config)).await;
    assert_rejected_then_serves(&fx, "no_client_cert").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_instead_of_client_hello() {
    let fx = Fixture::new(FixtureOptions::default()).await;
    let mut tcp = TcpStream::connect(fx.tunnel_addr).await.unwrap();
    tcp.write_all(&pattern(2048, 99)).await.unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut sink))
        .await
        .expect("server did not close a garbage connection");
    assert_rejected_then_serves(&fx, "protocol").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_stalling_mid_handshake_times_out() {
    let fx = Fixture::new(FixtureOptions {
        handshake_timeout: Duration::from_secs(1),
        ..FixtureOptions::default()
    })
    .await;
    let mut tcp = TcpStream::connect(fx.tunnel_addr).await.unwrap();
    // The first bytes of a TLS handshake record, then nothing.
    tcp.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut sink))
        .await
        .expect("stalled handshake was never dropped");
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_rejected_then_serves(&fx, "timeout").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_beyond_the_limit_are_shed() {
    let fx = Fixture::new(FixtureOptions {
        handshake_timeout: Duration::from_secs(1),
        max_pending_handshakes: 1,
        ..FixtureOptions::default()
    })
    .await;
    // One client holds the only handshake slot by stalling...
    let mut staller = TcpStream::connect(fx.tunnel_addr).await.unwrap();
    staller.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // ...so the next connection is closed at once.
    let mut shed = TcpStream::connect(fx.tunnel_addr).await.unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), shed.read_to_end(&mut sink))
        .await
        .expect("connection over the limit was not closed");
    let metrics = &fx.server.metrics;
    assert!(
        eventually(Duration::from_secs(5), || metrics
            .handshake_count("inbound", "overloaded")
            == 1)
        .await
    );
    // Once the staller times out, the slot is free for a good client.
    assert!(
        eventually(Duration::from_secs(5), || metrics
            .handshake_count("inbound", "timeout")
            == 1)
        .await
    );
    let payload = pattern(1000, 5);
    assert_eq!(fx.round_trip(&payload).await.unwrap(), payload);
}
