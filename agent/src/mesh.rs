//! The agent's mesh: what happens to connections the kernel hands over.
//!
//! - Outbound (`--redirect-addr`:15001): a meshed pod's connection arrives
//!   here with its original destination in the kernel's maps. The agent
//!   resolves the destination workload (picking a backend by weight when a
//!   Service was dialled), then either delivers it on this node (identity
//!   and authorization, no encryption: the bytes never leave the node) or
//!   tunnels it to the destination node's agent over mTLS, presenting the
//!   source workload's certificate.
//! - Inbound (`--node-addr`:15008): tunnels from other agents, verified
//!   against the trust bundle, authorized, and spliced to the local pod.
//! - Identity: a leaf certificate for every meshed workload on this node,
//!   rotated before it expires.

mod outbound;
mod view;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use nodemesh_proxy::authz::{Authorizer, DefaultAction};
use nodemesh_proxy::identity::ca::{CaFiles, ISSUER_CERT_FILE, TRUST_BUNDLE_FILE};
use nodemesh_proxy::identity::{CertManager, CertManagerConfig, SpiffeId};
use nodemesh_proxy::metrics::Metrics;
use nodemesh_proxy::tunnel::{
    ConnectionRegistry, Inbound, InboundConfig, LocalDelivery, Outbound, OutboundConfig,
};
use nodemesh_state::DesiredState;

use crate::datapath::Datapath;
pub use view::View;

/// Port other agents reach this one's tunnel server on.
pub const TUNNEL_PORT: u16 = nodemesh_proxy::tunnel::DEFAULT_TUNNEL_PORT;

/// Concurrent connections one tunnel (one source identity, destination
/// identity and node pair) carries.
pub const MAX_STREAMS_PER_TUNNEL: u32 = 16_384;

/// How the mesh is set up.
#[derive(Clone, Debug)]
pub struct MeshOptions {
    /// This node's address: the tunnel server listens on it, peers dial it.
    pub node_addr: IpAddr,
    /// The outbound listener's address and port (where the kernel redirects).
    pub redirect: SocketAddr,
    /// Directory holding the mesh CA (`nodemesh ca init`).
    pub ca_dir: PathBuf,
    /// Lifetime of workload certificates.
    pub leaf_lifetime: Duration,
    /// Time a peer has to finish the TLS handshake.
    pub handshake_timeout: Duration,
}

/// The mesh's bound sockets.
pub struct Listeners {
    outbound: tokio::net::TcpListener,
    tunnel: tokio::net::TcpListener,
}

/// The running mesh: certificates, authorization, tunnels.
pub struct Mesh {
    view: ArcSwap<View>,
    certs: CertManager,
    authz: Arc<Authorizer>,
    outbound: Outbound,
    local: LocalDelivery,
    registry: ConnectionRegistry,
    metrics: Arc<Metrics>,
    datapath: Arc<Datapath>,
    options: MeshOptions,
}

impl Mesh {
    /// Loads the CA and builds the proxy parts; nothing listens yet.
    pub fn new(
        options: MeshOptions,
        datapath: Arc<Datapath>,
        registry_metrics: &prometheus::Registry,
        trust_domain: &str,
    ) -> anyhow::Result<Arc<Self>> {
        let ca = CaFiles::load(&options.ca_dir).with_context(|| {
            format!(
                "loading the mesh CA from {}: create one with `nodemesh ca init --dir {}`",
                options.ca_dir.display(),
                options.ca_dir.display()
            )
        })?;
        let certs = CertManager::new(
            ca.issuer,
            ca.bundle,
            CertManagerConfig {
                trust_domain: trust_domain.to_owned(),
                leaf_lifetime: options.leaf_lifetime,
                ..CertManagerConfig::default()
            },
        )
        .context("setting up workload certificates")?;
        let metrics =
            Arc::new(Metrics::new(registry_metrics).context("registering proxy metrics")?);
        let authz = Arc::new(Authorizer::new(DefaultAction::Allow, metrics.clone()));
        let registry = ConnectionRegistry::default();
        let outbound = Outbound::new(
            certs.clone(),
            registry.clone(),
            metrics.clone(),
            OutboundConfig::default(),
        );
        let local = LocalDelivery::new(
            authz.clone(),
            registry.clone(),
            metrics.clone(),
            Duration::from_secs(5),
        );
        Ok(Arc::new(Self {
            view: ArcSwap::from_pointee(View::default()),
            certs,
            authz,
            outbound,
            local,
            registry,
            metrics,
            datapath,
            options,
        }))
    }

    /// Live tunnels and streams, for the admin endpoint.
    pub fn connections(&self) -> &ConnectionRegistry {
        &self.registry
    }

    /// Takes a new desired state: certificates for the meshed workloads on
    /// this node, their authorization policies, and the routing view.
    pub async fn update(&self, desired: &DesiredState) {
        let view = View::build(desired);
        for (ip, w) in &view.local {
            if let Err(error) = self.certs.add_identity(&w.identity) {
                tracing::warn!(identity = %w.identity, %error, "cannot mint a certificate");
                continue;
            }
            self.authz
                .set_workload(*ip, w.identity.clone(), w.policies.clone());
        }
        let old = self.view.load();
        for (ip, w) in &old.local {
            if !view.local.contains_key(ip) {
                self.authz.remove_workload(*ip);
                if !view.local.values().any(|n| n.identity == w.identity) {
                    self.certs.remove_identity(&w.identity);
                }
            }
        }
        self.authz.set_default(view.default_action);
        self.view.store(Arc::new(view));
    }

    /// Binds the outbound listener and the tunnel server: the agent is not
    /// ready until both are bound.
    pub async fn bind(&self) -> anyhow::Result<Listeners> {
        let outbound = tokio::net::TcpListener::bind(self.options.redirect)
            .await
            .with_context(|| {
                format!(
                    "binding the outbound listener on {} (--redirect-addr, --redirect-port)",
                    self.options.redirect
                )
            })?;
        let tunnel_addr = SocketAddr::new(self.options.node_addr, TUNNEL_PORT);
        let tunnel = tokio::net::TcpListener::bind(tunnel_addr)
            .await
            .with_context(|| format!("binding the tunnel server on {tunnel_addr}: --node-addr must be an address of this node"))?;
        Ok(Listeners { outbound, tunnel })
    }

    /// Serves the outbound listener and the tunnel server until the task is dropped.
    pub async fn serve(self: Arc<Self>, listeners: Listeners) -> anyhow::Result<()> {
        let inbound = Inbound::new(
            self.certs.clone(),
            self.authz.clone(),
            self.registry.clone(),
            self.metrics.clone(),
            InboundConfig {
                handshake_timeout: self.options.handshake_timeout,
                // One tunnel carries every connection between two identities
                // on two nodes; a low stream limit would make the next
                // connection wait for one to close.
                max_concurrent_streams: MAX_STREAMS_PER_TUNNEL,
                ..InboundConfig::default()
            },
        )
        .context("setting up the tunnel server")?;
        tracing::info!(
            outbound = %self.options.redirect,
            tunnel = %SocketAddr::new(self.options.node_addr, TUNNEL_PORT),
            "mesh listening"
        );
        let tunnel = listeners.tunnel;
        tokio::spawn(async move { inbound.serve(tunnel).await });
        outbound::serve(self, listeners.outbound).await;
        Ok(())
    }

    /// Follows the CA directory: a changed trust bundle or issuer (the
    /// steps of `nodemesh ca rotate`) is applied within a second, in the
    /// order that keeps this node's own chain trusted.
    pub async fn watch_ca(self: Arc<Self>) {
        let read = |name: &str| std::fs::read(self.options.ca_dir.join(name)).unwrap_or_default();
        let mut seen = (read(TRUST_BUNDLE_FILE), read(ISSUER_CERT_FILE));
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = (read(TRUST_BUNDLE_FILE), read(ISSUER_CERT_FILE));
            if now == seen {
                continue;
            }
            let ca = match CaFiles::load(&self.options.ca_dir) {
                Ok(ca) => ca,
                Err(error) => {
                    tracing::warn!(%error, "the CA directory changed but does not load; keeping the current CA");
                    continue;
                }
            };
            let issuer_changed = now.1 != seen.1;
            let applied = if self.certs.set_trust_bundle(ca.bundle.clone()).is_ok() {
                !issuer_changed || self.certs.set_issuer(ca.issuer).is_ok()
            } else {
                // The new bundle no longer trusts the current issuer: switch
                // the issuer first.
                self.certs.set_issuer(ca.issuer).is_ok()
                    && self.certs.set_trust_bundle(ca.bundle).is_ok()
            };
            if applied {
                tracing::info!(
                    issuer_changed,
                    "applied the CA directory's new trust bundle and issuer"
                );
                seen = now;
            } else {
                tracing::warn!(
                    "the CA directory's bundle and issuer do not chain; keeping the current CA"
                );
            }
        }
    }

    /// The identity of a local source workload by its kernel identity number.
    fn source(&self, number: u32) -> Option<SpiffeId> {
        self.view.load().identities.get(&number).cloned()
    }
}
