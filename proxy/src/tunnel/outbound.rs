//! The outbound side: carries an accepted application connection to a peer
//! node agent over a pooled mTLS HTTP/2 connection, as one CONNECT stream.
//!
//! The pool keeps one connection per (source identity, destination
//! identity, peer node). A connection is not reused for new streams once
//! the source certificate it was made with has been rotated or the trust
//! bundle changed; it then drains on its own while a new one is made.
//! Connections are never shared across source identities. A connection
//! without streams for `OutboundConfig::idle_timeout` leaves the pool and
//! closes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, Version};
use http_body_util::Empty;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tracing::{Instrument, debug, info_span, warn};

use super::registry::{ConnectionRegistry, Direction, StreamMeta, TunnelMeta, TunnelRecord};
use super::splice::{SpliceStats, splice};
use super::{Error, inbound::classify_handshake_error};
use crate::identity::{CertManager, SpiffeId};
use crate::metrics::{ConnKind, Metrics};
use crate::tls;

/// Settings of the outbound side.
#[derive(Debug, Clone)]
pub struct OutboundConfig {
    /// Limit on the TCP connect to the peer node.
    pub connect_timeout: Duration,
    /// Limit on the TLS + HTTP/2 handshake.
    pub handshake_timeout: Duration,
    /// HTTP/2 per-stream flow-control window.
    pub stream_window: u32,
    /// HTTP/2 per-connection flow-control window.
    pub connection_window: u32,
    /// A pooled connection without streams for this long is closed.
    pub idle_timeout: Option<Duration>,
    /// Interval of HTTP/2 PINGs that detect a dead peer on an idle tunnel;
    /// a PING unanswered for this long again closes the tunnel.
    pub keepalive: Option<Duration>,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(10),
            stream_window: 1024 * 1024,
            connection_window: 4 * 1024 * 1024,
            keepalive: Some(Duration::from_secs(30)),
            idle_timeout: Some(Duration::from_secs(300)),
        }
    }
}

/// Where an outbound application connection goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OutboundRoute {
    /// The workload that opened the connection (learnt by the agent).
    pub source: SpiffeId,
    /// The identity the destination workload must prove.
    pub destination: SpiffeId,
    /// The destination node agent's tunnel address (port 15008).
    pub peer: SocketAddr,
    /// The address the application connected to (pod IP and port).
    pub original_dst: SocketAddr,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    source: SpiffeId,
    destination: SpiffeId,
    peer: SocketAddr,
}

#[derive(Clone)]
struct Pooled {
    sender: SendRequest<Empty<Bytes>>,
    cert_serial: String,
    trust_epoch: u64,
    tunnel: Arc<TunnelRecord>,
    usage: Arc<Usage>,
}

/// Streams handed out on a pooled connection, for idle eviction.
#[derive(Debug)]
struct Usage {
    active: AtomicUsize,
    last_used: Mutex<tokio::time::Instant>,
}

impl Usage {
    fn begin(self: &Arc<Self>) -> InUse {
        self.active.fetch_add(1, Ordering::SeqCst);
        InUse(self.clone())
    }

    fn idle_for(&self, limit: Duration) -> bool {
        self.active.load(Ordering::SeqCst) == 0
            && self
                .last_used
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .elapsed()
                >= limit
    }
}

/// One stream's hold on a pooled connection.
struct InUse(Arc<Usage>);

impl Drop for InUse {
    fn drop(&mut self) {
        *self.0.last_used.lock().unwrap_or_else(|e| e.into_inner()) = tokio::time::Instant::now();
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

type Slot = Arc<tokio::sync::Mutex<Option<Pooled>>>;

struct Inner {
    manager: CertManager,
    registry: ConnectionRegistry,
    metrics: Arc<Metrics>,
    config: OutboundConfig,
    pool: Mutex<HashMap<PoolKey, Slot>>,
}

/// The outbound tunnel client. Cheap to clone.
#[derive(Clone)]
pub struct Outbound {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Outbound {
    /// An outbound client presenting certificates from `manager`.
    pub fn new(
        manager: CertManager,
        registry: ConnectionRegistry,
        metrics: Arc<Metrics>,
        config: OutboundConfig,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                manager,
                registry,
                metrics,
                config,
                pool: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Carries `app` (an accepted application connection, or any byte
    /// stream) to `route.original_dst` through the peer node agent, until
    /// both directions are closed. Returns the bytes carried.
    pub async fn proxy<S>(&self, app: S, route: OutboundRoute) -> Result<SpliceStats, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let span = info_span!(
            "outbound",
            source = %route.source,
            destination = %route.destination,
            peer = %route.peer,
            target = %route.original_dst,
        );
        self.proxy_inner(app, route).instrument(span).await
    }

    async fn proxy_inner<S>(&self, app: S, route: OutboundRoute) -> Result<SpliceStats, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let key = PoolKey {
            source: route.source.clone(),
            destination: route.destination.clone(),
            peer: route.peer,
        };
        let (response, tunnel, _in_use) = self.open_stream(&key, route.original_dst).await?;
        if response.status() != StatusCode::OK {
            warn!(status = %response.status(), "peer refused stream");
            return Err(Error::Refused {
                target: route.original_dst,
                status: response.status(),
            });
        }
        let upgraded = hyper::upgrade::on(response)
            .await
            .map_err(|source| Error::Http2 {
                addr: route.peer,
                source,
            })?;
        let metrics = &self.inner.metrics;
        let guard = self.inner.registry.open_stream(StreamMeta {
            direction: Direction::Outbound,
            tunnel: Some(tunnel),
            source: Some(route.source.clone()),
            destination: route.destination.clone(),
            target: route.original_dst,
        });
        metrics.opened(ConnKind::StreamOutbound);
        let result = splice(
            app,
            TokioIo::new(upgraded),
            guard.record(),
            metrics,
            ConnKind::StreamOutbound,
        )
        .await;
        metrics.closed(ConnKind::StreamOutbound);
        let stats = result.map_err(|source| Error::Splice {
            target: route.original_dst,
            source,
        })?;
        debug!(
            to_destination = stats.to_destination,
            from_destination = stats.from_destination,
            "outbound stream closed"
        );
        Ok(stats)
    }

    /// Sends the CONNECT; retries once on a new connection if a reused
    /// pooled one turned out to be closed.
    async fn open_stream(
        &self,
        key: &PoolKey,
        target: SocketAddr,
    ) -> Result<
        (
            http::Response<hyper::body::Incoming>,
            Arc<TunnelRecord>,
            InUse,
        ),
        Error,
    > {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (mut pooled, in_use, fresh) = self.connection(key, attempt > 1).await?;
            let request = Request::builder()
                .method(Method::CONNECT)
                .version(Version::HTTP_2)
                .uri(target.to_string())
                .body(Empty::<Bytes>::new())
                .map_err(|e| Error::Splice {
                    target,
                    source: std::io::Error::other(e),
                })?;
            let sent = match pooled.sender.ready().await {
                Ok(()) => pooled.sender.send_request(request).await,
                Err(e) => Err(e),
            };
            match sent {
                Ok(response) => return Ok((response, pooled.tunnel, in_use)),
                Err(e) if !fresh && attempt == 1 && (e.is_closed() || e.is_canceled()) => {
                    debug!(error = %e, "pooled connection closed, reconnecting");
                }
                Err(source) => {
                    return Err(Error::Http2 {
                        addr: key.peer,
                        source,
                    });
                }
            }
        }
    }

    /// The pooled connection for `key`, made if missing or stale, marked in
    /// use; `true` if it was made by this call.
    async fn connection(
        &self,
        key: &PoolKey,
        force_new: bool,
    ) -> Result<(Pooled, InUse, bool), Error> {
        let slot = self
            .inner
            .pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.clone())
            .or_default()
            .clone();
        let mut slot = slot.lock().await;
        let manager = &self.inner.manager;
        let serial = manager
            .current(&key.source)
            .ok_or_else(|| Error::NoCertificate(key.source.clone()))?
            .serial()
            .to_owned();
        let epoch = manager.trust_anchors().epoch;
        if let Some(p) = slot.as_ref().filter(|p| {
            !force_new && !p.sender.is_closed() && p.cert_serial == serial && p.trust_epoch == epoch
        }) {
            return Ok((p.clone(), p.usage.begin(), false));
        }
        let pooled = self.connect(key, serial, epoch).await?;
        *slot = Some(pooled.clone());
        let in_use = pooled.usage.begin();
        Ok((pooled, in_use, true))
    }

    async fn connect(&self, key: &PoolKey, serial: String, epoch: u64) -> Result<Pooled, Error> {
        let config = &self.inner.config;
        let metrics = &self.inner.metrics;
        let peer = key.peer;
        let tcp = tokio::time::timeout(config.connect_timeout, TcpStream::connect(peer))
            .await
            .map_err(|_| Error::Timeout {
                what: "connecting to",
                addr: peer,
            })?
            .map_err(|source| Error::Connect { addr: peer, source })?;
        let _ = tcp.set_nodelay(true);
        let tls_config = tls::client_config(&self.inner.manager, &key.source, &key.destination)?;
        let server_name = tls::server_name_for(&key.destination)?;
        let handshake = async {
            let tls = TlsConnector::from(tls_config)
                .connect(server_name, tcp)
                .await
                .map_err(|source| Error::Handshake { addr: peer, source })?;
            let info = tls::peer_info(tls.get_ref().1);
            let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
            builder
                .timer(TokioTimer::new())
                .initial_stream_window_size(config.stream_window)
                .initial_connection_window_size(config.connection_window)
                .keep_alive_interval(config.keepalive)
                .keep_alive_while_idle(true);
            if let Some(timeout) = config.keepalive {
                builder.keep_alive_timeout(timeout);
            }
            let (sender, connection) = builder
                .handshake(TokioIo::new(tls))
                .await
                .map_err(|source| Error::Http2 { addr: peer, source })?;
            Ok::<_, Error>((info, sender, connection))
        };
        let (info, sender, connection) =
            match tokio::time::timeout(config.handshake_timeout, handshake).await {
                Ok(Ok(done)) => done,
                Ok(Err(error)) => {
                    let reason = match &error {
                        Error::Handshake { source, .. } => classify_handshake_error(source),
                        _ => "http2",
                    };
                    metrics.handshake("outbound", reason);
                    warn!(%peer, reason, %error, "outbound tunnel handshake failed");
                    return Err(error);
                }
                Err(_) => {
                    metrics.handshake("outbound", "timeout");
                    warn!(%peer, reason = "timeout", "outbound tunnel handshake timed out");
                    return Err(Error::Timeout {
                        what: "handshaking with",
                        addr: peer,
                    });
                }
            };
        metrics.handshake("outbound", "ok");
        let info = info.ok_or_else(|| Error::Handshake {
            addr: peer,
            source: std::io::Error::other("server presented no usable certificate"),
        })?;
        let guard = self.inner.registry.open_tunnel(TunnelMeta {
            direction: Direction::Outbound,
            source: key.source.clone(),
            destination: key.destination.clone(),
            peer_addr: peer,
            tls_version: info.protocol,
            cipher_suite: info.cipher_suite,
            peer_cert_serial: info.cert_serial,
        });
        let tunnel = guard.record().clone();
        metrics.opened(ConnKind::TunnelOutbound);
        let metrics = metrics.clone();
        let usage = Arc::new(Usage {
            active: AtomicUsize::new(0),
            last_used: Mutex::new(tokio::time::Instant::now()),
        });
        let idle = self.idle_eviction(key.clone(), tunnel.id(), usage.clone());
        tokio::spawn(
            async move {
                let _guard = guard;
                tokio::pin!(connection);
                let ended = tokio::select! {
                    ended = connection.as_mut() => ended,
                    () = idle => {
                        debug!("closing idle outbound tunnel");
                        connection.await
                    }
                };
                if let Err(error) = ended {
                    debug!(%error, "outbound tunnel connection ended with error");
                }
                metrics.closed(ConnKind::TunnelOutbound);
                debug!("outbound tunnel closed");
            }
            .instrument(info_span!("outbound_tunnel", %peer, source = %key.source, destination = %key.destination)),
        );
        debug!(%peer, "outbound tunnel established");
        Ok(Pooled {
            sender,
            cert_serial: serial,
            trust_epoch: epoch,
            tunnel,
            usage,
        })
    }

    /// Completes once the connection `tunnel_id` has been idle for
    /// `idle_timeout` and was taken out of the pool (dropping the pool's
    /// sender, which lets the connection close). Never completes without
    /// an idle timeout.
    fn idle_eviction(
        &self,
        key: PoolKey,
        tunnel_id: u64,
        usage: Arc<Usage>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let inner = Arc::downgrade(&self.inner);
        let limit = self.inner.config.idle_timeout;
        async move {
            let Some(limit) = limit else {
                return std::future::pending().await;
            };
            let tick = (limit / 2).max(Duration::from_millis(10));
            loop {
                tokio::time::sleep(tick).await;
                if !usage.idle_for(limit) {
                    continue;
                }
                let Some(inner) = inner.upgrade() else {
                    return;
                };
                let slot = inner
                    .pool
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&key)
                    .cloned();
                let Some(slot) = slot else {
                    return;
                };
                // Busy slot: someone is connecting or handing out; retry later.
                let Ok(mut slot) = slot.try_lock() else {
                    continue;
                };
                match slot.as_ref() {
                    Some(p) if p.tunnel.id() == tunnel_id => {
                        // Under the slot lock nobody can be handed this
                        // connection, so idleness is final.
                        if usage.idle_for(limit) {
                            *slot = None;
                            return;
                        }
                    }
                    // Already replaced or cleared: the pool no longer holds it.
                    _ => return,
                }
            }
        }
    }

    /// Drops the pooled connections of a source identity that left the
    /// node; open streams finish on their own.
    pub fn forget_source(&self, source: &SpiffeId) {
        self.inner
            .pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|key, _| &key.source != source);
    }

    /// Drops every pooled connection; open streams finish on their own.
    pub fn clear_pool(&self) {
        self.inner
            .pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}
