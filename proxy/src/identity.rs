//! Workload identities: SPIFFE ids, the certificate authority that signs
//! them, the trust bundle peers are checked against, and the manager that
//! keeps one fresh leaf certificate per workload identity on this node.
//!
//! An identity is `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`,
//! carried as the single URI SAN of an X.509-SVID (ECDSA P-256).

pub mod bundle;
pub mod ca;
pub mod leaf;
pub mod manager;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use bundle::TrustBundle;
pub use ca::{Authority, CaFiles, CaInitOptions};
pub use leaf::WorkloadCert;
pub use manager::{CertManager, CertManagerConfig};

/// The trust domain used when none is configured, as in Istio.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

const SCHEME: &str = "spiffe://";

/// Why a SPIFFE id or the identity in a certificate was refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Error {
    /// The id does not start with `spiffe://`.
    #[error("SPIFFE id {0:?} does not start with spiffe://")]
    MissingScheme(String),
    /// The trust domain is empty or has characters outside `[a-z0-9._-]`.
    #[error("invalid SPIFFE trust domain {0:?}: must be non-empty [a-z0-9._-]")]
    InvalidTrustDomain(String),
    /// The path is not `/ns/<namespace>/sa/<service-account>`.
    #[error("SPIFFE id path {0:?} is not /ns/<namespace>/sa/<service-account>")]
    InvalidPath(String),
    /// A namespace or service-account segment is empty or has bad characters.
    #[error("invalid SPIFFE {what} {value:?}: must be non-empty [a-zA-Z0-9._-]")]
    InvalidSegment {
        /// Which segment: `namespace` or `service account`.
        what: &'static str,
        /// The refused value.
        value: String,
    },
    /// The certificate could not be parsed as X.509.
    #[error("certificate is not valid X.509: {0}")]
    CertificateParse(String),
    /// The certificate has no URI SAN.
    #[error("certificate has no URI SAN carrying a SPIFFE id")]
    NoUriSan,
    /// The certificate has more than one URI SAN, which the X.509-SVID spec forbids.
    #[error("certificate has {0} URI SANs; an X.509-SVID must have exactly one")]
    MultipleUriSans(usize),
}

/// A workload identity `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
///
/// Cheap to clone and hash; used as the key for certificates, pooled
/// connections and authorization decisions.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    trust_domain: String,
    namespace: String,
    service_account: String,
}

impl SpiffeId {
    /// Builds an id from its parts, validating each one.
    pub fn new(trust_domain: &str, namespace: &str, service_account: &str) -> Result<Self, Error> {
        validate_trust_domain(trust_domain)?;
        validate_segment("namespace", namespace)?;
        validate_segment("service account", service_account)?;
        Ok(Self {
            trust_domain: trust_domain.to_owned(),
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
        })
    }

    /// The trust domain, e.g. `cluster.local`.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The Kubernetes namespace of the workload.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The Kubernetes service account of the workload.
    pub fn service_account(&self) -> &str {
        &self.service_account
    }

    /// Reads the SPIFFE id from the single URI SAN of a DER certificate.
    ///
    /// Refuses certificates with no URI SAN or several, as X.509-SVID requires.
    pub fn from_cert_der(der: &[u8]) -> Result<Self, Error> {
        use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|e| Error::CertificateParse(e.to_string()))?;
        let san = cert
            .subject_alternative_name()
            .map_err(|e| Error::CertificateParse(e.to_string()))?;
        let uris: Vec<&str> = san
            .map(|ext| {
                ext.value
                    .general_names
                    .iter()
                    .filter_map(|n| match n {
                        GeneralName::URI(u) => Some(*u),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        match uris.as_slice() {
            [] => Err(Error::NoUriSan),
            [one] => one.parse(),
            many => Err(Error::MultipleUriSans(many.len())),
        }
    }
}

fn validate_trust_domain(td: &str) -> Result<(), Error> {
    let ok = !td.is_empty()
        && td.len() <= 255
        && td
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidTrustDomain(td.to_owned()))
    }
}

fn validate_segment(what: &'static str, value: &str) -> Result<(), Error> {
    let ok = !value.is_empty()
        && value != "."
        && value != ".."
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidSegment {
            what,
            value: value.to_owned(),
        })
    }
}

impl FromStr for SpiffeId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let rest = s
            .strip_prefix(SCHEME)
            .ok_or_else(|| Error::MissingScheme(s.to_owned()))?;
        let (td, path) = rest.split_once('/').unwrap_or((rest, ""));
        validate_trust_domain(td)?;
        let parts: Vec<&str> = path.split('/').collect();
        match parts.as_slice() {
            ["ns", ns, "sa", sa] => Self::new(td, ns, sa),
            _ => Err(Error::InvalidPath(format!("/{path}"))),
        }
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME}{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl Serialize for SpiffeId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SpiffeId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays_round_trip() {
        let id: SpiffeId = "spiffe://cluster.local/ns/default/sa/web".parse().unwrap();
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.namespace(), "default");
        assert_eq!(id.service_account(), "web");
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/default/sa/web");
        assert_eq!(
            id,
            SpiffeId::new("cluster.local", "default", "web").unwrap()
        );
    }

    #[test]
    fn refuses_malformed_ids() {
        type Check = fn(&Error) -> bool;
        let cases: &[(&str, Check)] = &[
            ("http://cluster.local/ns/a/sa/b", |e| {
                matches!(e, Error::MissingScheme(_))
            }),
            ("spiffe:///ns/a/sa/b", |e| {
                matches!(e, Error::InvalidTrustDomain(_))
            }),
            ("spiffe://Cluster.Local/ns/a/sa/b", |e| {
                matches!(e, Error::InvalidTrustDomain(_))
            }),
            ("spiffe://td/ns/a/sa", |e| {
                matches!(e, Error::InvalidPath(_))
            }),
            ("spiffe://td/ns/a/sa/b/extra", |e| {
                matches!(e, Error::InvalidPath(_))
            }),
            ("spiffe://td/sa/b/ns/a", |e| {
                matches!(e, Error::InvalidPath(_))
            }),
            ("spiffe://td", |e| matches!(e, Error::InvalidPath(_))),
            ("spiffe://td/ns//sa/b", |e| {
                matches!(
                    e,
                    Error::InvalidSegment {
                        what: "namespace",
                        ..
                    }
                )
            }),
            ("spiffe://td/ns/a/sa/b c", |e| {
                matches!(
                    e,
                    Error::InvalidSegment {
                        what: "service account",
                        ..
                    }
                )
            }),
            ("spiffe://td/ns/../sa/b", |e| {
                matches!(e, Error::InvalidSegment { .. })
            }),
        ];
        for (input, check) in cases {
            let err = input.parse::<SpiffeId>().unwrap_err();
            assert!(check(&err), "{input}: unexpected error {err:?}");
        }
    }

    fn issued_with_sans(sans: Vec<rcgen::SanType>) -> Vec<u8> {
        let ca = ca::CaFiles::generate(&Default::default()).unwrap();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = sans;
        params
            .signed_by(&key, ca.issuer.signer())
            .unwrap()
            .der()
            .to_vec()
    }

    #[test]
    fn reads_exactly_one_uri_san_from_certificates() {
        let uri = |s: &str| rcgen::SanType::URI(s.try_into().unwrap());
        let one = issued_with_sans(vec![
            rcgen::SanType::DnsName("web.example".try_into().unwrap()),
            uri("spiffe://cluster.local/ns/a/sa/b"),
        ]);
        assert_eq!(
            SpiffeId::from_cert_der(&one).unwrap().to_string(),
            "spiffe://cluster.local/ns/a/sa/b"
        );
        let two = issued_with_sans(vec![
            uri("spiffe://cluster.local/ns/a/sa/b"),
            uri("spiffe://cluster.local/ns/a/sa/c"),
        ]);
        assert_eq!(
            SpiffeId::from_cert_der(&two),
            Err(Error::MultipleUriSans(2))
        );
        let none = issued_with_sans(vec![rcgen::SanType::DnsName(
            "web.example".try_into().unwrap(),
        )]);
        assert_eq!(SpiffeId::from_cert_der(&none), Err(Error::NoUriSan));
        let bad = issued_with_sans(vec![uri("https://cluster.local/ns/a/sa/b")]);
        assert!(matches!(
            SpiffeId::from_cert_der(&bad),
            Err(Error::MissingScheme(_))
        ));
        assert!(matches!(
            SpiffeId::from_cert_der(b"not a certificate"),
            Err(Error::CertificateParse(_))
        ));
    }

    #[test]
    fn serializes_as_uri_string() {
        let id = SpiffeId::new("example.org", "ns1", "sa1").unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"spiffe://example.org/ns/ns1/sa/sa1\"");
        let back: SpiffeId = serde_json::from_str(&json).unwrap();
        assert_eq!(back, id);
    }
}
