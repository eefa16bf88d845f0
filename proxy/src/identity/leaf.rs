//! Workload leaf certificates (X.509-SVIDs): ECDSA P-256 keys with the
//! SPIFFE id as the only URI SAN, signed by the issuer, kept in memory only.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rcgen::{
    CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, SanType,
};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;

use super::SpiffeId;
use super::ca::{Authority, BACKDATE};

/// Default leaf lifetime, as Istio and Linkerd use.
pub const DEFAULT_LEAF_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Errors minting a leaf certificate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Key generation, encoding or signing failed.
    #[error("failed to mint certificate for {id}: {reason}")]
    Mint {
        /// The identity being minted.
        id: SpiffeId,
        /// Why it failed.
        reason: String,
    },
}

/// One workload's current certificate: chain, key and bookkeeping.
pub struct WorkloadCert {
    id: SpiffeId,
    certified: Arc<CertifiedKey>,
    serial: String,
    issued: Instant,
    lifetime: Duration,
    not_after: SystemTime,
}

impl std::fmt::Debug for WorkloadCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkloadCert")
            .field("id", &self.id.to_string())
            .field("serial", &self.serial)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl WorkloadCert {
    /// Mints a leaf for `id`, valid for `lifetime`, signed by `issuer`. The
    /// chain holds the leaf then the issuer; the root stays out (peers have it).
    pub fn mint(issuer: &Authority, id: &SpiffeId, lifetime: Duration) -> Result<Self, Error> {
        let fail = |reason: String| Error::Mint {
            id: id.clone(),
            reason,
        };
        let key =
            KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| fail(e.to_string()))?;
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, id.trust_domain());
        params.subject_alt_names = vec![SanType::URI(
            id.to_string()
                .try_into()
                .map_err(|e: rcgen::Error| fail(e.to_string()))?,
        )];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = now - BACKDATE;
        params.not_after = now + lifetime;
        let cert = params
            .signed_by(&key, issuer.signer())
            .map_err(|e| fail(e.to_string()))?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing_key = rustls::crypto::ring::sign::any_supported_type(&key_der)
            .map_err(|e| fail(e.to_string()))?;
        let chain: Vec<CertificateDer<'static>> =
            vec![cert.der().clone(), issuer.cert_der().clone()];
        let serial = serial_hex(cert.der()).map_err(fail)?;
        Ok(Self {
            id: id.clone(),
            certified: Arc::new(CertifiedKey::new(chain, signing_key)),
            serial,
            issued: Instant::now(),
            lifetime,
            not_after: SystemTime::from(params.not_after),
        })
    }

    /// The identity in the certificate.
    pub fn id(&self) -> &SpiffeId {
        &self.id
    }

    /// Serial number, lowercase hex; distinct for every minted leaf.
    pub fn serial(&self) -> &str {
        &self.serial
    }

    /// The chain (leaf first, then the issuer).
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.certified.cert
    }

    /// When the certificate expires.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// When this certificate should be replaced: at 80% of its lifetime.
    pub fn refresh_at(&self) -> Instant {
        self.issued + self.lifetime.mul_f64(0.8)
    }

    /// The rustls form, handed to resolvers.
    pub(crate) fn certified_key(&self) -> Arc<CertifiedKey> {
        self.certified.clone()
    }
}

/// Lowercase hex serial of a DER certificate.
pub(crate) fn serial_hex(der: &[u8]) -> Result<String, String> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
    Ok(cert
        .raw_serial()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_leaf_carries_identity_and_lifetime() {
        let root = Authority::new_root("cluster.local", Duration::from_secs(3600)).unwrap();
        let issuer = root
            .new_issuer("cluster.local", Duration::from_secs(3600))
            .unwrap();
        let id: SpiffeId = "spiffe://cluster.local/ns/shop/sa/cart".parse().unwrap();
        let a = WorkloadCert::mint(&issuer, &id, Duration::from_secs(10)).unwrap();
        let b = WorkloadCert::mint(&issuer, &id, Duration::from_secs(10)).unwrap();
        assert_eq!(SpiffeId::from_cert_der(&a.chain()[0]).unwrap(), id);
        assert_eq!(&a.chain()[1], issuer.cert_der());
        assert_ne!(a.serial(), b.serial());
        let left = a
            .not_after()
            .duration_since(SystemTime::now())
            .unwrap()
            .as_secs();
        assert!((8..=10).contains(&left), "expires in {left}s");
        assert!(a.refresh_at() <= Instant::now() + Duration::from_secs(8));
    }
}
