//! The certificate manager: one current leaf per workload identity on this
//! node, re-minted at 80% of its lifetime by a tokio task per identity.
//!
//! Certificates are swapped atomically: new handshakes pick up the new leaf,
//! connections already open keep the one they were established with. The
//! issuer and the trust bundle can be swapped at runtime, which is how a
//! trust-anchor rotation is carried out:
//!
//! 1. [`CertManager::set_trust_bundle`] with old + new root, on every node;
//! 2. [`CertManager::set_issuer`] with an issuer signed by the new root (all
//!    leaves are re-minted at once);
//! 3. [`CertManager::set_trust_bundle`] with the new root only.
//!
//! A step that would leave the local issuer outside the local bundle (an
//! issuer from an unknown root, or removing the root still in use) is
//! refused with [`Error::IssuerNotTrusted`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::RootCertStore;
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tracing::{debug, info, warn};

use super::leaf::{self, DEFAULT_LEAF_LIFETIME, WorkloadCert};
use super::{Authority, SpiffeId, TrustBundle, bundle};

/// Errors from the certificate manager.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Minting a leaf failed.
    #[error(transparent)]
    Mint(#[from] leaf::Error),
    /// The trust bundle could not be turned into a root store.
    #[error("trust bundle refused: {0}")]
    Bundle(#[from] bundle::Error),
    /// The identity belongs to another trust domain than this mesh's.
    #[error("identity {id} is outside trust domain {trust_domain}")]
    ForeignTrustDomain {
        /// The refused identity.
        id: SpiffeId,
        /// This mesh's trust domain.
        trust_domain: String,
    },
    /// The issuer does not chain to the trust bundle, so peers holding the
    /// same bundle would refuse every leaf it signs. Refused to avoid an
    /// outage from running the anchor-rotation steps out of order.
    #[error("issuer does not chain to the trust bundle: {0}")]
    IssuerNotTrusted(String),
    /// Rotation tasks need a tokio runtime.
    #[error("the certificate manager must be used inside a tokio runtime")]
    NoRuntime,
}

/// Settings of the certificate manager.
#[derive(Debug, Clone)]
pub struct CertManagerConfig {
    /// This mesh's trust domain; identities and peers must belong to it.
    pub trust_domain: String,
    /// Lifetime of each leaf; default 24 h. Tests use seconds.
    pub leaf_lifetime: Duration,
    /// Wait before retrying a failed re-mint.
    pub retry_delay: Duration,
}

impl Default for CertManagerConfig {
    fn default() -> Self {
        Self {
            trust_domain: super::DEFAULT_TRUST_DOMAIN.to_owned(),
            leaf_lifetime: DEFAULT_LEAF_LIFETIME,
            retry_delay: Duration::from_secs(1),
        }
    }
}

/// The anchors in force, in the two forms the verifiers need.
#[derive(Debug)]
pub struct TrustAnchors {
    /// The bundle as configured.
    pub bundle: TrustBundle,
    /// The same anchors as a rustls root store.
    pub roots: Arc<RootCertStore>,
    /// Incremented on every bundle change; pooled connections made under an
    /// older epoch are not reused.
    pub epoch: u64,
}

struct Slot {
    cert: ArcSwap<WorkloadCert>,
    wake: Notify,
    task: std::sync::Mutex<Option<AbortHandle>>,
}

struct Inner {
    config: CertManagerConfig,
    issuer: ArcSwap<Authority>,
    trust: ArcSwap<TrustAnchors>,
    epoch: AtomicU64,
    slots: RwLock<HashMap<SpiffeId, Arc<Slot>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let slots = self.slots.get_mut().unwrap_or_else(|e| e.into_inner());
        for slot in slots.values() {
            slot.abort();
        }
    }
}

impl Slot {
    fn abort(&self) {
        if let Some(task) = self.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
            task.abort();
        }
    }
}

/// Holds the node's workload certificates and the trust bundle. Cheap to clone.
#[derive(Clone)]
pub struct CertManager {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for CertManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertManager")
            .field("trust_domain", &self.inner.config.trust_domain)
            .field("identities", &self.identities().len())
            .finish_non_exhaustive()
    }
}

impl CertManager {
    /// Creates a manager that signs with `issuer` and trusts `bundle`.
    pub fn new(
        issuer: Authority,
        bundle: TrustBundle,
        config: CertManagerConfig,
    ) -> Result<Self, Error> {
        let roots = bundle.root_store()?;
        check_issuer(&issuer, &roots, &config.trust_domain)?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                issuer: ArcSwap::from_pointee(issuer),
                trust: ArcSwap::from_pointee(TrustAnchors {
                    bundle,
                    roots,
                    epoch: 0,
                }),
                epoch: AtomicU64::new(0),
                slots: RwLock::new(HashMap::new()),
            }),
        })
    }

    /// This mesh's trust domain.
    pub fn trust_domain(&self) -> &str {
        &self.inner.config.trust_domain
    }

    /// Starts managing `id`: mints its first leaf now and spawns its rotation
    /// task. Idempotent: an identity already managed keeps its certificate.
    pub fn add_identity(&self, id: &SpiffeId) -> Result<Arc<WorkloadCert>, Error> {
        if id.trust_domain() != self.trust_domain() {
            return Err(Error::ForeignTrustDomain {
                id: id.clone(),
                trust_domain: self.trust_domain().to_owned(),
            });
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let mut slots = self.inner.slots.write().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = slots.get(id) {
            return Ok(slot.cert.load_full());
        }
        let cert = Arc::new(self.inner.mint(id)?);
        let slot = Arc::new(Slot {
            cert: ArcSwap::new(cert.clone()),
            wake: Notify::new(),
            task: std::sync::Mutex::new(None),
        });
        let task = runtime.spawn(rotate(
            Arc::downgrade(&self.inner),
            id.clone(),
            slot.clone(),
        ));
        *slot.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task.abort_handle());
        slots.insert(id.clone(), slot);
        info!(identity = %id, serial = cert.serial(), "workload certificate minted");
        Ok(cert)
    }

    /// Stops managing `id` (its workload left the node); returns whether it was managed.
    pub fn remove_identity(&self, id: &SpiffeId) -> bool {
        let removed = self
            .inner
            .slots
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        if let Some(slot) = &removed {
            slot.abort();
            info!(identity = %id, "workload identity removed");
        }
        removed.is_some()
    }

    /// The current certificate of `id`, if managed.
    pub fn current(&self, id: &SpiffeId) -> Option<Arc<WorkloadCert>> {
        self.inner
            .slots
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .map(|slot| slot.cert.load_full())
    }

    /// Every managed identity.
    pub fn identities(&self) -> Vec<SpiffeId> {
        self.inner
            .slots
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// The anchors peers are verified against now.
    pub fn trust_anchors(&self) -> Arc<TrustAnchors> {
        self.inner.trust.load_full()
    }

    /// Replaces the trust bundle. New handshakes verify against it at once.
    /// Refused if the current issuer does not chain to it.
    pub fn set_trust_bundle(&self, bundle: TrustBundle) -> Result<(), Error> {
        let roots = bundle.root_store()?;
        check_issuer(&self.inner.issuer.load(), &roots, self.trust_domain())?;
        let epoch = self.inner.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        info!(anchors = bundle.len(), epoch, "trust bundle replaced");
        self.inner.trust.store(Arc::new(TrustAnchors {
            bundle,
            roots,
            epoch,
        }));
        Ok(())
    }

    /// Replaces the issuer and re-mints every leaf with it right away.
    /// Refused if `issuer` does not chain to the current trust bundle.
    pub fn set_issuer(&self, issuer: Authority) -> Result<(), Error> {
        check_issuer(&issuer, &self.trust_anchors().roots, self.trust_domain())?;
        self.inner.issuer.store(Arc::new(issuer));
        let slots: Vec<(SpiffeId, Arc<Slot>)> = self
            .inner
            .slots
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(id, slot)| (id.clone(), slot.clone()))
            .collect();
        for (id, slot) in slots {
            let cert = self.inner.mint(&id)?;
            info!(identity = %id, serial = cert.serial(), "workload certificate re-minted for new issuer");
            slot.cert.store(Arc::new(cert));
            slot.wake.notify_one();
        }
        Ok(())
    }
}

impl Inner {
    fn mint(&self, id: &SpiffeId) -> Result<WorkloadCert, leaf::Error> {
        let issuer = self.issuer.load();
        WorkloadCert::mint(&issuer, id, self.config.leaf_lifetime)
    }
}

/// Mints a throwaway leaf with `issuer` and verifies it against `roots`.
fn check_issuer(
    issuer: &Authority,
    roots: &RootCertStore,
    trust_domain: &str,
) -> Result<(), Error> {
    let probe = SpiffeId::new(trust_domain, "nodemesh-system", "issuer-probe")
        .map_err(|e| Error::IssuerNotTrusted(e.to_string()))?;
    let leaf = WorkloadCert::mint(issuer, &probe, Duration::from_secs(60))?;
    let parsed = rustls::server::ParsedCertificate::try_from(&leaf.chain()[0])
        .map_err(|e| Error::IssuerNotTrusted(e.to_string()))?;
    rustls::client::verify_server_cert_signed_by_trust_anchor(
        &parsed,
        roots,
        &leaf.chain()[1..],
        rustls_pki_types::UnixTime::now(),
        crate::tls::provider().signature_verification_algorithms.all,
    )
    .map_err(|e| Error::IssuerNotTrusted(e.to_string()))
}

async fn rotate(inner: std::sync::Weak<Inner>, id: SpiffeId, slot: Arc<Slot>) {
    loop {
        let at = slot.cert.load().refresh_at();
        tokio::select! {
            () = tokio::time::sleep_until(at.into()) => {}
            () = slot.wake.notified() => continue,
        }
        let Some(manager) = inner.upgrade() else {
            return;
        };
        let minted = manager.mint(&id);
        let retry = manager.config.retry_delay;
        drop(manager);
        match minted {
            Ok(cert) => {
                debug!(identity = %id, serial = cert.serial(), "workload certificate rotated");
                slot.cert.store(Arc::new(cert));
            }
            Err(error) => {
                warn!(identity = %id, %error, retry_in = ?retry, "workload certificate rotation failed");
                tokio::time::sleep(retry).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::CaFiles;

    #[tokio::test]
    async fn rotates_before_expiry_and_reissues_on_new_issuer() {
        let ca = CaFiles::generate(&Default::default()).unwrap();
        let manager = CertManager::new(
            ca.issuer,
            ca.bundle.clone(),
            CertManagerConfig {
                leaf_lifetime: Duration::from_secs(1),
                ..Default::default()
            },
        )
        .unwrap();
        let id: SpiffeId = "spiffe://cluster.local/ns/a/sa/b".parse().unwrap();
        let first = manager.add_identity(&id).unwrap();
        assert_eq!(manager.add_identity(&id).unwrap().serial(), first.serial());
        tokio::time::sleep(Duration::from_millis(1300)).await;
        let second = manager.current(&id).unwrap();
        assert_ne!(second.serial(), first.serial());

        let issuer2 = ca
            .root
            .new_issuer("cluster.local", Duration::from_secs(60))
            .unwrap();
        let issuer2_der = issuer2.cert_der().clone();
        manager.set_issuer(issuer2).unwrap();
        let third = manager.current(&id).unwrap();
        assert_eq!(third.chain()[1], issuer2_der);

        // Steps out of order are refused and change nothing.
        let unrelated = CaFiles::generate(&Default::default()).unwrap();
        assert!(matches!(
            manager.set_issuer(unrelated.issuer),
            Err(Error::IssuerNotTrusted(_))
        ));
        assert!(matches!(
            manager.set_trust_bundle(unrelated.bundle.clone()),
            Err(Error::IssuerNotTrusted(_))
        ));
        assert!(matches!(
            CertManager::new(
                unrelated.root,
                ca.bundle.clone(),
                CertManagerConfig::default()
            ),
            Err(Error::IssuerNotTrusted(_))
        ));
        assert_eq!(manager.current(&id).unwrap().serial(), third.serial());

        let foreign: SpiffeId = "spiffe://other.org/ns/a/sa/b".parse().unwrap();
        assert!(matches!(
            manager.add_identity(&foreign),
            Err(Error::ForeignTrustDomain { .. })
        ));
        assert!(manager.remove_identity(&id));
        assert!(manager.current(&id).is_none());
    }
}
