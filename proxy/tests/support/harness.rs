//! Shared setup for the integration tests: a CA, a client node and a server
//! node (each with its own certificate manager), an inbound tunnel server
//! and an echo workload, all on 127.0.0.1.

#![allow(dead_code, reason = "each test file uses a different subset")]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nodemesh_proxy::authz::{Authorize, Authorizer, AuthzRequest, Decision, DefaultAction};
use nodemesh_proxy::identity::{
    Authority, CaFiles, CaInitOptions, CertManager, CertManagerConfig, SpiffeId, TrustBundle,
};
use nodemesh_proxy::metrics::Metrics;
use nodemesh_proxy::tunnel::{
    ConnectionRegistry, Inbound, InboundConfig, Outbound, OutboundConfig, OutboundRoute,
    SpliceStats,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Upper bound on any single exchange in the tests.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(15);

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "nodemesh_proxy=info".into()),
        )
        .with_test_writer()
        .try_init();
}

pub fn id(s: &str) -> SpiffeId {
    format!("spiffe://cluster.local/{s}").parse().unwrap()
}

/// One node agent's state.
pub struct Node {
    pub manager: CertManager,
    pub registry: ConnectionRegistry,
    pub prometheus: prometheus::Registry,
    pub metrics: Arc<Metrics>,
}

impl Node {
    pub fn new(issuer: Authority, bundle: TrustBundle, lifetime: Duration) -> Self {
        let prometheus = prometheus::Registry::new();
        let metrics = Arc::new(Metrics::new(&prometheus).unwrap());
        let manager = CertManager::new(
            issuer,
            bundle,
            CertManagerConfig {
                leaf_lifetime: lifetime,
                ..CertManagerConfig::default()
            },
        )
        .unwrap();
        Self {
            manager,
            registry: ConnectionRegistry::default(),
            prometheus,
            metrics,
        }
    }
}

/// Wraps the real authorizer and remembers what it was asked.
pub struct Recording {
    pub inner: Arc<Authorizer>,
    pub seen: Mutex<Vec<AuthzRequest>>,
}

impl Authorize for Recording {
    fn authorize(&self, req: &AuthzRequest) -> Decision {
        self.seen.lock().unwrap().push(req.clone());
        self.inner.authorize(req)
    }
}

pub struct Fixture {
    pub ca: CaFiles,
    pub client: Node,
    pub server: Node,
    pub source: SpiffeId,
    pub destination: SpiffeId,
    pub authz: Arc<Authorizer>,
    pub recording: Arc<Recording>,
    pub outbound: Outbound,
    pub tunnel_addr: SocketAddr,
    pub echo_addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Echoes every byte back; closes its write side after the client's EOF.
pub async fn spawn_echo() -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = tcp.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    (addr, task)
}

pub struct FixtureOptions {
    pub lifetime: Duration,
    pub default_action: DefaultAction,
    pub handshake_timeout: Duration,
    pub max_pending_handshakes: usize,
}

impl Default for FixtureOptions {
    fn default() -> Self {
        Self {
            lifetime: Duration::from_secs(3600),
            default_action: DefaultAction::Allow,
            handshake_timeout: Duration::from_secs(10),
            max_pending_handshakes: 64,
        }
    }
}

impl Fixture {
    pub async fn new(options: FixtureOptions) -> Self {
        init_tracing();
        let ca = CaFiles::generate(&CaInitOptions::default()).unwrap();
        let issuer_pem = |a: &Authority| Authority::from_pem(a.cert_pem(), a.key_pem()).unwrap();
        let client = Node::new(issuer_pem(&ca.issuer), ca.bundle.clone(), options.lifetime);
        let server = Node::new(issuer_pem(&ca.issuer), ca.bundle.clone(), options.lifetime);
        let source = id("ns/client/sa/app");
        let destination = id("ns/server/sa/echo");
        client.manager.add_identity(&source).unwrap();
        server.manager.add_identity(&destination).unwrap();

        let authz = Arc::new(Authorizer::new(
            options.default_action,
            server.metrics.clone(),
        ));
        // The echo workload (and any other test server) lives on 127.0.0.1.
        authz.set_workload(
            "127.0.0.1".parse().unwrap(),
            destination.clone(),
            Vec::new(),
        );
        let recording = Arc::new(Recording {
            inner: authz.clone(),
            seen: Mutex::new(Vec::new()),
        });
        let inbound = Inbound::new(
            server.manager.clone(),
            recording.clone(),
            server.registry.clone(),
            server.metrics.clone(),
            InboundConfig {
                handshake_timeout: options.handshake_timeout,
                max_pending_handshakes: options.max_pending_handshakes,
                ..InboundConfig::default()
            },
        )
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tunnel_addr = listener.local_addr().unwrap();
        let serve = tokio::spawn(async move { inbound.serve(listener).await });
        let (echo_addr, echo) = spawn_echo().await;
        let outbound = Outbound::new(
            client.manager.clone(),
            client.registry.clone(),
            client.metrics.clone(),
            OutboundConfig::default(),
        );
        Self {
            ca,
            client,
            server,
            source,
            destination,
            authz,
            recording,
            outbound,
            tunnel_addr,
            echo_addr,
            tasks: vec![serve, echo],
        }
    }

    pub fn route(&self) -> OutboundRoute {
        self.route_from(&self.source)
    }

    pub fn route_from(&self, source: &SpiffeId) -> OutboundRoute {
        OutboundRoute {
            source: source.clone(),
            destination: self.destination.clone(),
            peer: self.tunnel_addr,
            original_dst: self.echo_addr,
        }
    }

    /// Opens an application connection (real loopback socket pair) whose
    /// accepted end is handed to the outbound proxy, as the agent does.
    pub async fn app_connection(
        &self,
        route: OutboundRoute,
    ) -> (
        TcpStream,
        JoinHandle<Result<SpliceStats, nodemesh_proxy::tunnel::Error>>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let app = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let outbound = self.outbound.clone();
        let task = tokio::spawn(async move { outbound.proxy(accepted, route).await });
        (app, task)
    }

    /// Sends `payload`, half-closes, reads the echo to EOF.
    pub async fn round_trip_as(
        &self,
        route: OutboundRoute,
        payload: &[u8],
    ) -> Result<Vec<u8>, String> {
        let (mut app, task) = self.app_connection(route).await;
        let exchange = async {
            app.write_all(payload).await.map_err(|e| e.to_string())?;
            app.shutdown().await.map_err(|e| e.to_string())?;
            let mut echoed = Vec::new();
            app.read_to_end(&mut echoed)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(echoed)
        };
        let echoed = tokio::time::timeout(STEP_TIMEOUT, exchange)
            .await
            .map_err(|_| "exchange timed out".to_owned())??;
        let stats = tokio::time::timeout(STEP_TIMEOUT, task)
            .await
            .map_err(|_| "proxy task timed out".to_owned())?
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        if stats.to_destination != payload.len() as u64 {
            return Err(format!("proxy counted {stats:?}"));
        }
        Ok(echoed)
    }

    pub async fn round_trip(&self, payload: &[u8]) -> Result<Vec<u8>, String> {
        self.round_trip_as(self.route(), payload).await
    }
}

/// Polls `cond` every 20 ms for up to `limit`.
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

pub fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 24) as u8)
        .collect()
}
