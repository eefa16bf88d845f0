//! The mesh certificate authority: a long-lived trust anchor (root) and an
//! issuer (intermediate) that signs workload leaves.
//!
//! `nodemesh ca init --dir <dir>` writes these files (see [`CaFiles`]):
//!
//! | file | content | mode |
//! |---|---|---|
//! | `root-cert.pem` | trust anchor certificate | 0644 |
//! | `root-key.pem` | trust anchor private key (PKCS#8) | 0600 |
//! | `issuer-cert.pem` | issuer certificate, signed by the root | 0644 |
//! | `issuer-key.pem` | issuer private key (PKCS#8) | 0600 |
//! | `trust-bundle.pem` | every trust anchor peers are checked against | 0644 |
//!
//! In kube mode the same files live in a Secret, see [`kubernetes_secret_manifest`].

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use time::OffsetDateTime;
use tracing::info;

use super::TrustBundle;

/// File name of the trust anchor certificate.
pub const ROOT_CERT_FILE: &str = "root-cert.pem";
/// File name of the trust anchor private key.
pub const ROOT_KEY_FILE: &str = "root-key.pem";
/// File name of the issuer (intermediate) certificate.
pub const ISSUER_CERT_FILE: &str = "issuer-cert.pem";
/// File name of the issuer private key.
pub const ISSUER_KEY_FILE: &str = "issuer-key.pem";
/// File name of the trust bundle (all anchors, concatenated PEM).
pub const TRUST_BUNDLE_FILE: &str = "trust-bundle.pem";

/// Default validity of a trust anchor: 10 years.
pub const DEFAULT_ROOT_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Default validity of an issuer: 1 year, as Linkerd recommends.
pub const DEFAULT_ISSUER_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// Allowed clock skew: certificates are valid from this long before issuance.
pub(crate) const BACKDATE: Duration = Duration::from_secs(60);

/// Errors creating, saving or loading CA material.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Key generation or signing failed.
    #[error("failed to generate {what}: {source}")]
    Generate {
        /// What was being generated.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: rcgen::Error,
    },
    /// A PEM file could not be parsed as a certificate or key.
    #[error("failed to parse {what}: {reason}")]
    Parse {
        /// What was being parsed (file name or role).
        what: String,
        /// Why it failed.
        reason: String,
    },
    /// A file already exists and `force` was not given.
    #[error("{} already exists; refusing to overwrite CA material without --force", .0.display())]
    AlreadyExists(PathBuf),
    /// Reading or writing a file failed.
    #[error("failed to {action} {}: {source}", path.display())]
    Io {
        /// `read`, `write` or `create directory`.
        action: &'static str,
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The trust domain is not valid for a SPIFFE id.
    #[error("invalid trust domain: {0}")]
    TrustDomain(#[from] super::Error),
}

/// A certificate with its private key, able to sign other certificates.
///
/// Used both for the trust anchor and for the issuer.
pub struct Authority {
    cert: CertificateDer<'static>,
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
    not_after: SystemTime,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

fn ca_params(
    common_name: &str,
    trust_domain: &str,
    path_len: u8,
    validity: Duration,
) -> CertificateParams {
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, trust_domain);
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - BACKDATE;
    params.not_after = now + validity;
    params
}

impl Authority {
    /// Creates a self-signed trust anchor for `trust_domain`.
    pub fn new_root(trust_domain: &str, validity: Duration) -> Result<Self, Error> {
        super::SpiffeId::new(trust_domain, "x", "x")?;
        let key = generate_key("root key")?;
        let params = ca_params(
            &unique_name("nodemesh root CA", &key),
            trust_domain,
            1,
            validity,
        );
        let cert = params.self_signed(&key).map_err(|source| Error::Generate {
            what: "root certificate",
            source,
        })?;
        Ok(Self::assemble(cert.der().clone(), cert.pem(), key, params))
    }

    /// Creates an issuer (intermediate CA) signed by this authority.
    pub fn new_issuer(&self, trust_domain: &str, validity: Duration) -> Result<Self, Error> {
        super::SpiffeId::new(trust_domain, "x", "x")?;
        let key = generate_key("issuer key")?;
        let mut params = ca_params(
            &unique_name("nodemesh issuer", &key),
            trust_domain,
            0,
            validity,
        );
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|source| Error::Generate {
                what: "issuer certificate",
                source,
            })?;
        Ok(Self::assemble(cert.der().clone(), cert.pem(), key, params))
    }

    fn assemble(
        cert: CertificateDer<'static>,
        cert_pem: String,
        key: KeyPair,
        params: CertificateParams,
    ) -> Self {
        let not_after = SystemTime::from(params.not_after);
        let key_pem = key.serialize_pem();
        Self {
            cert,
            cert_pem,
            key_pem,
            issuer: Issuer::new(params, key),
            not_after,
        }
    }

    /// Loads an authority from its PEM certificate and PEM PKCS#8 key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, Error> {
        let cert =
            CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| Error::Parse {
                what: "CA certificate".into(),
                reason: e.to_string(),
            })?;
        let key = KeyPair::from_pem(key_pem).map_err(|e| Error::Parse {
            what: "CA private key".into(),
            reason: e.to_string(),
        })?;
        let not_after = cert_not_after(&cert).map_err(|reason| Error::Parse {
            what: "CA certificate".into(),
            reason,
        })?;
        let issuer = Issuer::from_ca_cert_der(&cert, key).map_err(|e| Error::Parse {
            what: "CA certificate".into(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            cert,
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
            issuer,
            not_after,
        })
    }

    /// The DER certificate.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The PEM certificate.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The PEM PKCS#8 private key. Secret: write it with mode 0600 only.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// When the certificate expires.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    pub(crate) fn signer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }
}

/// A CA name made unique by a short fingerprint of its public key, so that
/// two generations of anchors or issuers are never confused by name.
fn unique_name(role: &str, key: &KeyPair) -> String {
    let tail: String = key
        .public_key_raw()
        .iter()
        .rev()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{role} {tail}")
}

fn generate_key(what: &'static str) -> Result<KeyPair, Error> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|source| Error::Generate { what, source })
}

fn cert_not_after(cert: &CertificateDer<'_>) -> Result<SystemTime, String> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, parsed) = X509Certificate::from_der(cert).map_err(|e| e.to_string())?;
    let secs = parsed.validity().not_after.timestamp();
    Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0)))
}

/// Options for [`init_ca_dir`], the `nodemesh ca init` command.
#[derive(Debug, Clone)]
pub struct CaInitOptions {
    /// Trust domain written into the CA names; default `cluster.local`.
    pub trust_domain: String,
    /// Overwrite existing files instead of refusing.
    pub force: bool,
    /// Validity of the trust anchor.
    pub root_validity: Duration,
    /// Validity of the issuer.
    pub issuer_validity: Duration,
}

impl Default for CaInitOptions {
    fn default() -> Self {
        Self {
            trust_domain: super::DEFAULT_TRUST_DOMAIN.to_owned(),
            force: false,
            root_validity: DEFAULT_ROOT_VALIDITY,
            issuer_validity: DEFAULT_ISSUER_VALIDITY,
        }
    }
}

/// The CA material of a mesh: trust anchor, issuer and trust bundle.
#[derive(Debug)]
pub struct CaFiles {
    /// The trust anchor (root).
    pub root: Authority,
    /// The issuer (intermediate) that signs workload leaves.
    pub issuer: Authority,
    /// All anchors peers are checked against; contains at least `root`.
    pub bundle: TrustBundle,
}

impl CaFiles {
    /// Creates a new root, an issuer signed by it, and a bundle holding the root.
    pub fn generate(options: &CaInitOptions) -> Result<Self, Error> {
        let root = Authority::new_root(&options.trust_domain, options.root_validity)?;
        let issuer = root.new_issuer(&options.trust_domain, options.issuer_validity)?;
        let mut bundle = TrustBundle::new();
        bundle.add(root.cert_der().clone());
        Ok(Self {
            root,
            issuer,
            bundle,
        })
    }

    /// Loads the files written by [`init_ca_dir`] from `dir`.
    pub fn load(dir: &Path) -> Result<Self, Error> {
        let read = |name: &str| {
            let path = dir.join(name);
            fs::read_to_string(&path).map_err(|source| Error::Io {
                action: "read",
                path,
                source,
            })
        };
        let root = Authority::from_pem(&read(ROOT_CERT_FILE)?, &read(ROOT_KEY_FILE)?)?;
        let issuer = Authority::from_pem(&read(ISSUER_CERT_FILE)?, &read(ISSUER_KEY_FILE)?)?;
        let bundle =
            TrustBundle::from_pem(&read(TRUST_BUNDLE_FILE)?).map_err(|e| Error::Parse {
                what: TRUST_BUNDLE_FILE.into(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            root,
            issuer,
            bundle,
        })
    }

    fn files(&self) -> [(&'static str, String, u32); 5] {
        [
            (ROOT_CERT_FILE, self.root.cert_pem().to_owned(), 0o644),
            (ROOT_KEY_FILE, self.root.key_pem().to_owned(), 0o600),
            (ISSUER_CERT_FILE, self.issuer.cert_pem().to_owned(), 0o644),
            (ISSUER_KEY_FILE, self.issuer.key_pem().to_owned(), 0o600),
            (TRUST_BUNDLE_FILE, self.bundle.to_pem(), 0o644),
        ]
    }

    /// Writes the files into `dir` (created if missing). Refuses to replace
    /// any existing file unless `force`; private keys get mode 0600.
    pub fn save(&self, dir: &Path, force: bool) -> Result<(), Error> {
        fs::create_dir_all(dir).map_err(|source| Error::Io {
            action: "create directory",
            path: dir.to_owned(),
            source,
        })?;
        let files = self.files();
        if let Some((name, ..)) = files
            .iter()
            .find(|(name, ..)| !force && dir.join(name).exists())
        {
            return Err(Error::AlreadyExists(dir.join(name)));
        }
        for (name, content, mode) in &files {
            write_file(&dir.join(name), content, *mode, force)?;
        }
        Ok(())
    }
}

fn write_file(path: &Path, content: &str, mode: u32, force: bool) -> Result<(), Error> {
    let io_err = |source| Error::Io {
        action: "write",
        path: path.to_owned(),
        source,
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).mode(mode);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options.open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            Error::AlreadyExists(path.to_owned())
        } else {
            io_err(source)
        }
    })?;
    // `mode` applies only on creation; an overwritten file keeps its old mode.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io_err)?;
    file.write_all(content.as_bytes()).map_err(io_err)?;
    file.sync_all().map_err(io_err)
}

/// `nodemesh ca init --dir <dir> [--trust-domain ..] [--force]`: generates a
/// root and an issuer and writes them into `dir` (see the module docs for the
/// file names). Fails with [`Error::AlreadyExists`] if any file is present
/// and `options.force` is false; nothing is written in that case.
pub fn init_ca_dir(dir: &Path, options: &CaInitOptions) -> Result<CaFiles, Error> {
    if !options.force {
        for name in [
            ROOT_CERT_FILE,
            ROOT_KEY_FILE,
            ISSUER_CERT_FILE,
            ISSUER_KEY_FILE,
            TRUST_BUNDLE_FILE,
        ] {
            let path = dir.join(name);
            if path.exists() {
                return Err(Error::AlreadyExists(path));
            }
        }
    }
    let files = CaFiles::generate(options)?;
    files.save(dir, options.force)?;
    info!(dir = %dir.display(), trust_domain = %options.trust_domain, "wrote mesh CA");
    Ok(files)
}

/// Renders a Kubernetes `Secret` (type `Opaque`) holding the same files as
/// [`init_ca_dir`], keyed by file name, for kube mode.
pub fn kubernetes_secret_manifest(files: &CaFiles, name: &str, namespace: &str) -> String {
    let mut out = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  labels:\n    app.kubernetes.io/part-of: nodemesh\ntype: Opaque\nstringData:\n"
    );
    for (file, content, _) in files.files() {
        out.push_str(&format!("  {file}: |\n"));
        for line in content.lines() {
            out.push_str("    ");
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "nodemesh-ca-{tag}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn init_writes_files_with_modes_and_loads_back() {
        let dir = temp_dir("init");
        let files = init_ca_dir(&dir, &CaInitOptions::default()).unwrap();
        for (name, mode) in [
            (ROOT_CERT_FILE, 0o644),
            (ROOT_KEY_FILE, 0o600),
            (ISSUER_CERT_FILE, 0o644),
            (ISSUER_KEY_FILE, 0o600),
            (TRUST_BUNDLE_FILE, 0o644),
        ] {
            let meta = fs::metadata(dir.join(name)).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, mode, "{name}");
        }
        let loaded = CaFiles::load(&dir).unwrap();
        assert_eq!(loaded.root.cert_der(), files.root.cert_der());
        assert_eq!(loaded.issuer.cert_der(), files.issuer.cert_der());
        assert_eq!(loaded.bundle.anchors(), &[files.root.cert_der().clone()]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn init_refuses_to_overwrite_unless_forced() {
        let dir = temp_dir("overwrite");
        let first = init_ca_dir(&dir, &CaInitOptions::default()).unwrap();
        let err = init_ca_dir(&dir, &CaInitOptions::default()).unwrap_err();
        assert!(matches!(err, Error::AlreadyExists(ref p) if p.ends_with(ROOT_CERT_FILE)));
        assert!(err.to_string().contains("--force"), "{err}");
        // Untouched by the refused attempt.
        let still = CaFiles::load(&dir).unwrap();
        assert_eq!(still.root.cert_der(), first.root.cert_der());

        // A loose key file alone is enough to refuse.
        let dir2 = temp_dir("partial");
        fs::create_dir_all(&dir2).unwrap();
        fs::write(dir2.join(ISSUER_KEY_FILE), "x").unwrap();
        assert!(matches!(
            init_ca_dir(&dir2, &CaInitOptions::default()),
            Err(Error::AlreadyExists(_))
        ));

        let forced = init_ca_dir(
            &dir,
            &CaInitOptions {
                force: true,
                ..CaInitOptions::default()
            },
        )
        .unwrap();
        assert_ne!(forced.root.cert_der(), first.root.cert_der());
        let meta = fs::metadata(dir.join(ROOT_KEY_FILE)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        fs::remove_dir_all(&dir).unwrap();
        fs::remove_dir_all(&dir2).unwrap();
    }

    #[test]
    fn init_rejects_bad_trust_domain() {
        let dir = temp_dir("td");
        let err = init_ca_dir(
            &dir,
            &CaInitOptions {
                trust_domain: "Bad Domain".into(),
                ..CaInitOptions::default()
            },
        )
        .unwrap_err();
        assert!(matches!(err, Error::TrustDomain(_)), "{err}");
        assert!(!dir.join(ROOT_CERT_FILE).exists());
    }

    #[test]
    fn secret_manifest_holds_every_file() {
        let files = CaFiles::generate(&CaInitOptions::default()).unwrap();
        let yaml = kubernetes_secret_manifest(&files, "nodemesh-ca", "nodemesh-system");
        assert!(yaml.starts_with("apiVersion: v1\nkind: Secret\n"));
        assert!(yaml.contains("  name: nodemesh-ca\n  namespace: nodemesh-system\n"));
        for name in [
            ROOT_CERT_FILE,
            ROOT_KEY_FILE,
            ISSUER_CERT_FILE,
            ISSUER_KEY_FILE,
            TRUST_BUNDLE_FILE,
        ] {
            assert!(
                yaml.contains(&format!("\n  {name}: |\n    -----BEGIN ")),
                "{name}"
            );
        }
        let first_line = files.issuer.key_pem().lines().nth(1).unwrap();
        assert!(yaml.contains(&format!("    {first_line}\n")));
    }
}
