//! The tunnel port between real nodes refuses every client that cannot
//! prove a mesh identity: a certificate from another CA, an expired one, an
//! identity from another trust domain, no certificate at all; and a client
//! refuses a server proving another identity than the one it asked for. Each
//! refusal is counted by reason on the server's node, and the agent keeps
//! serving real meshed traffic afterwards.
//!
//! The rogue clients run in node 1's network namespace and dial node 2's
//! agent over the link between the nodes, as a compromised workload would.

use std::sync::Arc;
use std::time::Duration;

use nodemesh_proxy::identity::{
    Authority, CaFiles, CaInitOptions, CertManager, CertManagerConfig, SpiffeId, TrustBundle,
    WorkloadCert,
};
use nodemesh_proxy::tls::{self, verifier::SpiffeServerVerifier};
use nodemesh_tests::mesh::{MARKER, TwoNodes, VIP, metric};
use rustls::ClientConfig;

const CLIENT: &str = "spiffe://cluster.local/ns/demo/sa/client";
const SERVER: &str = "spiffe://cluster.local/ns/demo/sa/server";

fn id(s: &str) -> SpiffeId {
    s.parse().expect("a SPIFFE id")
}

/// A certificate manager minting with `issuer` and trusting `bundle`.
fn manager(issuer: Authority, bundle: TrustBundle) -> CertManager {
    CertManager::new(issuer, bundle, CertManagerConfig::default()).expect("a certificate manager")
}

/// A client that trusts the real server but presents no certificate.
fn without_certificate(trusted: &CertManager, server: &SpiffeId) -> Arc<ClientConfig> {
    let provider = tls::provider();
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier::new(
            trusted.clone(),
            server.clone(),
            provider,
        )))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// What a rogue client saw.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// The client itself aborted the handshake.
    ClientRefused,
    /// The handshake finished on the client's side, then the server closed
    /// without sending a byte.
    ServerRefused,
}

/// One TLS attempt from node 1 to node 2's tunnel port with `config`.
fn attempt(t: &TwoNodes, config: Arc<ClientConfig>) -> Outcome {
    let target = std::net::SocketAddr::new(t.cluster.nodes[1].link_ip.into(), 15008);
    t.cluster.nodes[0].netns.enter(move || {
        use tokio::io::AsyncReadExt as _;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async move {
            let tcp = tokio::time::timeout(
                Duration::from_secs(5),
                tokio::net::TcpStream::connect(target),
            )
            .await
            .expect("tunnel port reachable in time")
            .expect("tunnel port reachable");
            let name = tls::server_name_for(&id(SERVER)).expect("a server name");
            let handshake = tokio::time::timeout(
                Duration::from_secs(10),
                tokio_rustls::TlsConnector::from(config).connect(name, tcp),
            )
            .await
            .expect("the handshake neither finished nor failed within 10 s");
            let Ok(mut stream) = handshake else {
                return Outcome::ClientRefused;
            };
            // TLS 1.3: the server's verdict on the client's certificate
            // arrives after the client's side of the handshake is done.
            let mut buf = [0u8; 64];
            let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
                .await
                .expect("the server neither served nor closed within 10 s");
            assert!(
                !matches!(read, Ok(n) if n > 0),
                "the server sent data to a client it should have refused"
            );
            Outcome::ServerRefused
        })
    })
}

/// Inbound handshakes node 2's agent refused with `reason`.
fn refused(t: &TwoNodes, reason: &str) -> f64 {
    let m = t.agents[1].get("/metrics").unwrap_or_default();
    metric(
        &m,
        "nodemesh_tls_handshakes_total",
        &format!("direction=\"inbound\",reason=\"{reason}\""),
    )
}

/// Waits until node 2 counted one refusal with `reason`.
fn assert_counted(t: &TwoNodes, reason: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while refused(t, reason) < 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no inbound refusal counted with reason {reason}: {}",
            t.agents[1].get("/metrics").unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A real meshed request from the client pod still goes through.
fn assert_still_serving(t: &TwoNodes) {
    let out = t.client(
        0,
        &["marker-client", &format!("{VIP}:80"), MARKER, "10", "0"],
    );
    assert_eq!(out["ok"], true, "{out}");
}

#[test]
fn rogue_clients_are_refused_between_nodes_and_the_tunnel_keeps_serving() {
    // Certificate managers renew in tasks of the runtime they are used in.
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let _context = runtime.enter();
    let t = TwoNodes::new(false);
    assert_still_serving(&t);
    let real = CaFiles::load(&t.ca.0.join("ca")).expect("the mesh CA");
    let (client, server) = (id(CLIENT), id(SERVER));

    // A leaf from another CA (the client trusts the real server).
    let rogue = CaFiles::generate(&CaInitOptions::default()).expect("a rogue CA");
    let mut bundle = real.bundle.clone();
    bundle.add(rogue.root.cert_der().clone());
    let rogue_manager = manager(rogue.issuer, bundle);
    rogue_manager.add_identity(&client).unwrap();
    let config = tls::client_config(&rogue_manager, &client, &server).unwrap();
    assert_eq!(attempt(&t, config), Outcome::ServerRefused);
    assert_counted(&t, "untrusted_issuer");

    let trusted = manager(
        CaFiles::load(&t.ca.0.join("ca")).unwrap().issuer,
        real.bundle.clone(),
    );

    // A leaf from the real CA that has expired.
    let expired = WorkloadCert::mint(&real.issuer, &client, Duration::from_secs(1)).unwrap();
    std::thread::sleep(Duration::from_millis(2100));
    let config = tls::client_config_with_cert(&trusted, &expired, &server).unwrap();
    assert_eq!(attempt(&t, config), Outcome::ServerRefused);
    assert_counted(&t, "expired");

    // A real-CA leaf for an identity outside the trust domain.
    let foreign = id("spiffe://evil.example/ns/demo/sa/client");
    let leaf = WorkloadCert::mint(&real.issuer, &foreign, Duration::from_secs(60)).unwrap();
    let config = tls::client_config_with_cert(&trusted, &leaf, &server).unwrap();
    assert_eq!(attempt(&t, config), Outcome::ServerRefused);
    assert_counted(&t, "bad_identity");

    // No client certificate.
    assert_eq!(
        attempt(&t, without_certificate(&trusted, &server)),
        Outcome::ServerRefused
    );
    assert_counted(&t, "no_client_cert");

    // The client asks for the server's name but expects another identity:
    // the server proves `server`, so the client refuses it.
    trusted.add_identity(&client).unwrap();
    let expected = id("spiffe://cluster.local/ns/demo/sa/database");
    let mut config = (*tls::client_config(&trusted, &client, &expected).unwrap()).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    assert_eq!(attempt(&t, Arc::new(config)), Outcome::ClientRefused);
    assert_counted(&t, "alert_received");

    // None of it disturbed the mesh, and nothing was let through.
    assert_still_serving(&t);
    let m = t.agents[1].get("/metrics").unwrap_or_default();
    assert_eq!(
        metric(
            &m,
            "nodemesh_tls_handshakes_total",
            "direction=\"inbound\",reason=\"ok\""
        ),
        metric(
            &t.agents[0].get("/metrics").unwrap_or_default(),
            "nodemesh_tls_handshakes_total",
            "direction=\"outbound\",reason=\"ok\""
        ),
        "every inbound handshake that succeeded was one of node 1's agent's: {m}"
    );
}
