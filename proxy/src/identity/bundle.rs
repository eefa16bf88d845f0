//! The trust bundle: every trust anchor a peer certificate may chain to.
//!
//! Holding several anchors at once is what makes root rotation possible
//! without downtime: add the new root everywhere, switch the issuer to one
//! signed by the new root, then remove the old root.

use std::sync::Arc;

use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// Errors reading a trust bundle.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The PEM text could not be parsed.
    #[error("trust bundle PEM is invalid: {0}")]
    Pem(String),
    /// The bundle contains no certificate.
    #[error("trust bundle contains no certificate")]
    Empty,
    /// A certificate was refused as a trust anchor.
    #[error("certificate {index} of the trust bundle is not a usable trust anchor: {source}")]
    Anchor {
        /// Position of the certificate in the bundle.
        index: usize,
        /// Why rustls refused it.
        #[source]
        source: rustls::Error,
    },
}

/// An ordered set of trust anchor certificates (DER).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustBundle {
    anchors: Vec<CertificateDer<'static>>,
}

impl TrustBundle {
    /// An empty bundle.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses concatenated PEM certificates.
    pub fn from_pem(pem: &str) -> Result<Self, Error> {
        let anchors = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Pem(e.to_string()))?;
        if anchors.is_empty() {
            return Err(Error::Empty);
        }
        Ok(Self { anchors })
    }

    /// Adds an anchor; a duplicate is ignored.
    pub fn add(&mut self, anchor: CertificateDer<'static>) {
        if !self.anchors.contains(&anchor) {
            self.anchors.push(anchor);
        }
    }

    /// Removes an anchor; returns whether it was present.
    pub fn remove(&mut self, anchor: &CertificateDer<'_>) -> bool {
        let before = self.anchors.len();
        self.anchors.retain(|a| a.as_ref() != anchor.as_ref());
        before != self.anchors.len()
    }

    /// The anchors, in insertion order.
    pub fn anchors(&self) -> &[CertificateDer<'static>] {
        &self.anchors
    }

    /// Number of anchors.
    pub fn len(&self) -> usize {
        self.anchors.len()
    }

    /// Whether the bundle has no anchor.
    pub fn is_empty(&self) -> bool {
        self.anchors.is_empty()
    }

    /// Concatenated PEM, the format of `trust-bundle.pem`.
    pub fn to_pem(&self) -> String {
        self.anchors.iter().map(|c| pem_cert(c)).collect()
    }

    /// The rustls root store used by the verifiers.
    pub fn root_store(&self) -> Result<Arc<RootCertStore>, Error> {
        if self.anchors.is_empty() {
            return Err(Error::Empty);
        }
        let mut store = RootCertStore::empty();
        for (index, anchor) in self.anchors.iter().enumerate() {
            store
                .add(anchor.clone())
                .map_err(|source| Error::Anchor { index, source })?;
        }
        Ok(Arc::new(store))
    }
}

fn pem_cert(der: &[u8]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new("CERTIFICATE", der.to_vec()), config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::ca::Authority;
    use std::time::Duration;

    #[test]
    fn pem_round_trip_and_rotation_edits() {
        let a = Authority::new_root("cluster.local", Duration::from_secs(3600)).unwrap();
        let b = Authority::new_root("cluster.local", Duration::from_secs(3600)).unwrap();
        let mut bundle = TrustBundle::new();
        bundle.add(a.cert_der().clone());
        bundle.add(b.cert_der().clone());
        bundle.add(a.cert_der().clone());
        assert_eq!(bundle.len(), 2);
        // Our PEM encoder agrees with rcgen's.
        assert_eq!(
            bundle.to_pem(),
            format!("{}{}", a.cert_pem(), b.cert_pem()).replace("\r\n", "\n")
        );
        let parsed = TrustBundle::from_pem(&bundle.to_pem()).unwrap();
        assert_eq!(parsed, bundle);
        assert_eq!(parsed.root_store().unwrap().len(), 2);
        assert!(bundle.remove(a.cert_der()));
        assert!(!bundle.remove(a.cert_der()));
        assert_eq!(bundle.anchors(), &[b.cert_der().clone()]);
        assert!(matches!(TrustBundle::from_pem(""), Err(Error::Empty)));
    }
}
