//! SPIFFE-aware certificate verifiers.
//!
//! Both wrap rustls' webpki path validation against the manager's current
//! trust bundle, then check the identity in the leaf's single URI SAN:
//! the server verifier wants exactly the expected destination identity, the
//! client verifier wants any identity of this mesh's trust domain. Names in
//! the certificate other than the SPIFFE id are not looked at.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::identity::{self, CertManager, SpiffeId};

/// The handshake-signature methods both verifiers share: checked with the
/// algorithms of their `provider` field, as webpki checks them.
macro_rules! signatures_by_provider {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    };
}

/// The peer's certificate chains to the bundle but does not carry an
/// acceptable identity.
#[derive(thiserror::Error)]
pub enum IdentityError {
    /// No readable SPIFFE id in the leaf.
    #[error("peer certificate has no valid SPIFFE id: {0}")]
    Invalid(#[from] identity::Error),
    /// The server is not the destination the client asked for.
    #[error("peer is {actual}, expected {expected}")]
    Mismatch {
        /// The identity the client wanted.
        expected: SpiffeId,
        /// The identity the server proved.
        actual: SpiffeId,
    },
    /// The client belongs to another trust domain.
    #[error("peer {actual} is outside trust domain {trust_domain}")]
    ForeignTrustDomain {
        /// The identity the client proved.
        actual: SpiffeId,
        /// This mesh's trust domain.
        trust_domain: String,
    },
}

// rustls prints wrapped errors with `Debug`; make that the readable message.
impl std::fmt::Debug for IdentityError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl From<IdentityError> for rustls::Error {
    fn from(e: IdentityError) -> Self {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
    }
}

/// Whether a rustls error is an identity refusal from these verifiers.
pub fn is_identity_error(error: &rustls::Error) -> bool {
    matches!(
        error,
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner)))
            if inner.downcast_ref::<IdentityError>().is_some()
    )
}

/// Client side: the server must chain to the bundle and be `expected`.
#[derive(Debug)]
pub struct SpiffeServerVerifier {
    manager: CertManager,
    expected: SpiffeId,
    provider: Arc<CryptoProvider>,
}

impl SpiffeServerVerifier {
    /// A verifier accepting only `expected`, against `manager`'s bundle.
    pub fn new(manager: CertManager, expected: SpiffeId, provider: Arc<CryptoProvider>) -> Self {
        Self {
            manager,
            expected,
            provider,
        }
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let anchors = self.manager.trust_anchors();
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &anchors.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        let actual = SpiffeId::from_cert_der(end_entity).map_err(IdentityError::from)?;
        if actual != self.expected {
            return Err(IdentityError::Mismatch {
                expected: self.expected.clone(),
                actual,
            }
            .into());
        }
        Ok(ServerCertVerified::assertion())
    }

    signatures_by_provider!();
}

/// Server side: a client certificate is mandatory, must chain to the bundle
/// and carry an identity of this mesh's trust domain.
#[derive(Debug)]
pub struct SpiffeClientVerifier {
    manager: CertManager,
    provider: Arc<CryptoProvider>,
}

impl SpiffeClientVerifier {
    /// A verifier against `manager`'s current bundle.
    pub fn new(manager: CertManager, provider: Arc<CryptoProvider>) -> Self {
        Self { manager, provider }
    }

    fn webpki(&self) -> Result<Arc<dyn ClientCertVerifier>, rustls::Error> {
        let anchors = self.manager.trust_anchors();
        WebPkiClientVerifier::builder_with_provider(anchors.roots.clone(), self.provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(format!("client verifier: {e}")))
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.webpki()?
            .verify_client_cert(end_entity, intermediates, now)?;
        let actual = SpiffeId::from_cert_der(end_entity).map_err(IdentityError::from)?;
        if actual.trust_domain() != self.manager.trust_domain() {
            return Err(IdentityError::ForeignTrustDomain {
                actual,
                trust_domain: self.manager.trust_domain().to_owned(),
            }
            .into());
        }
        Ok(ClientCertVerified::assertion())
    }

    signatures_by_provider!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{CaFiles, CertManagerConfig, WorkloadCert};
    use std::time::Duration;

    #[tokio::test]
    async fn server_verifier_checks_chain_and_identity() {
        let ca = CaFiles::generate(&Default::default()).unwrap();
        let other = CaFiles::generate(&Default::default()).unwrap();
        let web: SpiffeId = "spiffe://cluster.local/ns/a/sa/web".parse().unwrap();
        let db: SpiffeId = "spiffe://cluster.local/ns/a/sa/db".parse().unwrap();
        let good = WorkloadCert::mint(&ca.issuer, &web, Duration::from_secs(60)).unwrap();
        let wrong_id = WorkloadCert::mint(&ca.issuer, &db, Duration::from_secs(60)).unwrap();
        let foreign = WorkloadCert::mint(&other.issuer, &web, Duration::from_secs(60)).unwrap();
        let manager = CertManager::new(ca.issuer, ca.bundle, CertManagerConfig::default()).unwrap();
        let verifier = SpiffeServerVerifier::new(manager, web, crate::tls::provider());
        let name = ServerName::try_from("ignored.example").unwrap();
        let check = |cert: &WorkloadCert| {
            verifier.verify_server_cert(
                &cert.chain()[0],
                &cert.chain()[1..],
                &name,
                &[],
                UnixTime::now(),
            )
        };
        assert!(check(&good).is_ok());
        let err = check(&wrong_id).unwrap_err();
        assert!(is_identity_error(&err), "{err}");
        let rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) = &err
        else {
            panic!("unexpected error {err:?}");
        };
        assert_eq!(
            inner.to_string(),
            "peer is spiffe://cluster.local/ns/a/sa/db, expected spiffe://cluster.local/ns/a/sa/web"
        );
        let err = check(&foreign).unwrap_err();
        assert_eq!(
            err,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
        );
    }
}
