//! rustls configuration for the tunnels: TLS 1.3 only, AES-GCM suites
//! first, mutual authentication with SPIFFE identities.
//!
//! * The client presents the *source* workload's certificate and accepts
//!   only a server certificate for the expected *destination* identity.
//! * The server requires a client certificate chaining to the trust bundle
//!   and reads the client's SPIFFE id from it.
//! * The server picks which destination certificate to present from the
//!   SNI, see [`server_name_for`].
//!
//! Session resumption is disabled so that every connection is verified
//! against the certificates and anchors in force when it is made.

pub mod resolver;
pub mod verifier;

use std::sync::{Arc, OnceLock};

use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::server::NoServerSessionStorage;
use rustls::{ClientConfig, CommonState, ServerConfig};
use rustls_pki_types::ServerName;

use crate::identity::{CertManager, SpiffeId};

/// ALPN protocol spoken inside the tunnel.
pub const ALPN_H2: &[u8] = b"h2";

/// Errors building TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// rustls refused the configuration.
    #[error("failed to build TLS {side} config: {source}")]
    Config {
        /// `client` or `server`.
        side: &'static str,
        /// The rustls error.
        #[source]
        source: rustls::Error,
    },
    /// The destination identity cannot be expressed as a TLS server name.
    #[error("identity {0} cannot be carried in SNI")]
    ServerName(SpiffeId),
}

/// The crypto provider used by every config: rustls' `ring` backend with
/// TLS 1.3 AES-GCM suites preferred, ChaCha20-Poly1305 last.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            use rustls::crypto::ring::cipher_suite as cs;
            let mut provider = rustls::crypto::ring::default_provider();
            provider.cipher_suites = vec![
                cs::TLS13_AES_128_GCM_SHA256,
                cs::TLS13_AES_256_GCM_SHA384,
                cs::TLS13_CHACHA20_POLY1305_SHA256,
            ];
            Arc::new(provider)
        })
        .clone()
}

/// Installs [`provider`] as the process-wide rustls default. Call once from
/// `main`; calling again is harmless. The configs built here do not depend
/// on it, other rustls users in the process do.
pub fn install_default_provider() {
    // Err means a provider is already installed, which is what we want.
    let _ = CryptoProvider::install_default(provider().as_ref().clone());
}

/// The SNI a client sends to ask a node agent for `destination`'s
/// certificate: `<sa>.<ns>.<trust-domain>`, lowercased.
pub fn server_name_for(destination: &SpiffeId) -> Result<ServerName<'static>, Error> {
    let name = format!(
        "{}.{}.{}",
        destination.service_account(),
        destination.namespace(),
        destination.trust_domain()
    )
    .to_ascii_lowercase();
    ServerName::try_from(name).map_err(|_| Error::ServerName(destination.clone()))
}

/// The managed identity whose SNI is `sni`, if any.
pub fn identity_for_server_name(manager: &CertManager, sni: &str) -> Option<SpiffeId> {
    manager.identities().into_iter().find(|id| {
        server_name_for(id)
            .map(|name| name.to_str() == sni)
            .unwrap_or(false)
    })
}

/// Client config for one tunnel: presents `source`'s current certificate,
/// accepts only a server proving `destination`.
pub fn client_config(
    manager: &CertManager,
    source: &SpiffeId,
    destination: &SpiffeId,
) -> Result<Arc<ClientConfig>, Error> {
    client_config_presenting(
        manager,
        destination,
        Arc::new(resolver::ClientCertResolver::new(
            manager.clone(),
            source.clone(),
        )),
    )
}

/// Client config presenting exactly `cert` rather than the current
/// certificate of an identity, e.g. to pin one leaf for a diagnostic probe.
pub fn client_config_with_cert(
    manager: &CertManager,
    cert: &crate::identity::WorkloadCert,
    destination: &SpiffeId,
) -> Result<Arc<ClientConfig>, Error> {
    client_config_presenting(
        manager,
        destination,
        Arc::new(resolver::FixedClientCert::new(cert)),
    )
}

/// TLS 1.3 with ALPN `h2`, no resumption, a server proving `destination`,
/// and the client certificate `certificate` resolves.
fn client_config_presenting(
    manager: &CertManager,
    destination: &SpiffeId,
    certificate: Arc<dyn rustls::client::ResolvesClientCert>,
) -> Result<Arc<ClientConfig>, Error> {
    let provider = provider();
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|source| Error::Config {
            side: "client",
            source,
        })?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier::SpiffeServerVerifier::new(
            manager.clone(),
            destination.clone(),
            provider,
        )))
        .with_client_cert_resolver(certificate);
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// Server config for the node's tunnel listener: presents the certificate
/// of the workload named in SNI, requires a client certificate.
pub fn server_config(manager: &CertManager) -> Result<Arc<ServerConfig>, Error> {
    let provider = provider();
    let mut config = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|source| Error::Config {
            side: "server",
            source,
        })?
        .with_client_cert_verifier(Arc::new(verifier::SpiffeClientVerifier::new(
            manager.clone(),
            provider,
        )))
        .with_cert_resolver(Arc::new(resolver::ServerCertResolver::new(manager.clone())));
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// What a finished handshake established, for logs and the admin registry.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// The peer's SPIFFE id.
    pub identity: SpiffeId,
    /// Serial (hex) of the peer's leaf.
    pub cert_serial: String,
    /// Negotiated protocol, e.g. `TLSv1_3`.
    pub protocol: String,
    /// Negotiated cipher suite, e.g. `TLS13_AES_128_GCM_SHA256`.
    pub cipher_suite: String,
}

/// Reads the peer's identity and the negotiated parameters from a finished
/// handshake. `None` if the peer sent no certificate.
pub fn peer_info(conn: &CommonState) -> Option<PeerInfo> {
    let leaf = conn.peer_certificates()?.first()?;
    let identity = SpiffeId::from_cert_der(leaf).ok()?;
    Some(PeerInfo {
        identity,
        cert_serial: crate::identity::leaf::serial_hex(leaf).unwrap_or_default(),
        protocol: conn
            .protocol_version()
            .map(|v| format!("{v:?}"))
            .unwrap_or_default(),
        cipher_suite: conn
            .negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()))
            .unwrap_or_default(),
    })
}
