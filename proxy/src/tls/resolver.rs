//! Certificate resolvers reading the manager's current leaves, so that a
//! rotated certificate is used from the next handshake on.

use std::sync::Arc;

use rustls::SignatureScheme;
use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tracing::debug;

use super::identity_for_server_name;
use crate::identity::{CertManager, SpiffeId, WorkloadCert};

/// Presents the source workload's current certificate.
#[derive(Debug)]
pub struct ClientCertResolver {
    manager: CertManager,
    source: SpiffeId,
}

impl ClientCertResolver {
    /// A resolver for connections made on behalf of `source`.
    pub fn new(manager: CertManager, source: SpiffeId) -> Self {
        Self { manager, source }
    }
}

impl ResolvesClientCert for ClientCertResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        let cert = self.manager.current(&self.source);
        if cert.is_none() {
            debug!(identity = %self.source, "no certificate for source identity");
        }
        cert.map(|c| c.certified_key())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Presents one fixed certificate, whatever the manager holds now.
#[derive(Debug)]
pub struct FixedClientCert {
    certified: Arc<CertifiedKey>,
}

impl FixedClientCert {
    /// A resolver always presenting `cert`.
    pub fn new(cert: &WorkloadCert) -> Self {
        Self {
            certified: cert.certified_key(),
        }
    }
}

impl ResolvesClientCert for FixedClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.certified.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Presents the certificate of the destination workload named in SNI.
#[derive(Debug)]
pub struct ServerCertResolver {
    manager: CertManager,
}

impl ServerCertResolver {
    /// A resolver over every identity the manager holds.
    pub fn new(manager: CertManager) -> Self {
        Self { manager }
    }
}

impl ResolvesServerCert for ServerCertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let sni = hello.server_name()?;
        match identity_for_server_name(&self.manager, sni) {
            Some(id) => self.manager.current(&id).map(|c| c.certified_key()),
            None => {
                debug!(sni, "no local workload for requested server name");
                None
            }
        }
    }
}
