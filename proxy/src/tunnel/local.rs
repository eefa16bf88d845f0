//! Same-node delivery: meshed traffic between two workloads on this node
//! skips TLS but not identity or authorization. The agent learns the
//! source identity from the kernel (the socket's owning pod) and passes it
//! in; plaintext from outside the mesh passes `None` (see
//! [`crate::authz::peer_auth`] for whether to accept it at all).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tracing::{Instrument, debug, info_span};

use super::Error;
use super::registry::{ConnectionRegistry, Direction, StreamMeta};
use super::splice::{SpliceStats, splice};
use crate::authz::{Authorize, AuthzRequest};
use crate::identity::SpiffeId;
use crate::metrics::{ConnKind, Metrics};

/// Authorizes and splices same-node connections. Cheap to clone.
#[derive(Clone)]
pub struct LocalDelivery {
    authz: Arc<dyn Authorize>,
    registry: ConnectionRegistry,
    metrics: Arc<Metrics>,
    connect_timeout: Duration,
}

impl std::fmt::Debug for LocalDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalDelivery").finish_non_exhaustive()
    }
}

impl LocalDelivery {
    /// A local delivery path asking `authz` about every connection.
    pub fn new(
        authz: Arc<dyn Authorize>,
        registry: ConnectionRegistry,
        metrics: Arc<Metrics>,
        connect_timeout: Duration,
    ) -> Self {
        Self {
            authz,
            registry,
            metrics,
            connect_timeout,
        }
    }

    /// Authorizes `source` -> `destination` at `target`, connects to
    /// `target` and splices `app` with it until both sides close.
    pub async fn deliver<S>(
        &self,
        app: S,
        source: Option<SpiffeId>,
        destination: SpiffeId,
        target: SocketAddr,
    ) -> Result<SpliceStats, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let span = info_span!(
            "local",
            source = source.as_ref().map(ToString::to_string).unwrap_or_default(),
            %destination,
            %target
        );
        async move {
            let decision = self.authz.authorize(&AuthzRequest {
                source: source.clone(),
                destination: destination.clone(),
                destination_addr: target,
                source_cert_serial: None,
            });
            if !decision.allowed {
                return Err(Error::Denied {
                    target,
                    reason: decision.reason.as_str(),
                });
            }
            let upstream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(target))
                .await
                .map_err(|_| Error::Timeout {
                    what: "connecting to",
                    addr: target,
                })?
                .map_err(|source| Error::Connect {
                    addr: target,
                    source,
                })?;
            let _ = upstream.set_nodelay(true);
            let guard = self.registry.open_stream(StreamMeta {
                direction: Direction::Local,
                tunnel: None,
                source,
                destination,
                target,
            });
            self.metrics.opened(ConnKind::Local);
            let result = splice(
                app,
                upstream,
                guard.record(),
                &self.metrics,
                ConnKind::Local,
            )
            .await;
            self.metrics.closed(ConnKind::Local);
            let stats = result.map_err(|source| Error::Splice { target, source })?;
            debug!(
                to_destination = stats.to_destination,
                from_destination = stats.from_destination,
                "local stream closed"
            );
            Ok(stats)
        }
        .instrument(span)
        .await
    }
}
