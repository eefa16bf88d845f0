//! The inbound side: accepts mTLS tunnels from peer node agents, serves
//! HTTP/2 CONNECT streams, authorizes each one and splices it to the local
//! destination workload.
//!
//! Handshakes that fail (certificate from another CA, expired, wrong
//! identity, no client certificate, not TLS at all, or too slow) are logged
//! at `warn` with a reason, counted in `nodemesh_tls_handshakes_total`
//! with that reason, and the listener keeps serving.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::CertificateError;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::{Instrument, debug, info, info_span, warn};

use super::Error;
use super::registry::{ConnectionRegistry, Direction, StreamMeta, TunnelMeta, TunnelRecord};
use super::splice::splice;
use crate::authz::{Authorize, AuthzRequest};
use crate::identity::{CertManager, SpiffeId};
use crate::metrics::{ConnKind, Metrics};
use crate::tls::{self, PeerInfo};

/// Settings of the inbound side.
#[derive(Debug, Clone)]
pub struct InboundConfig {
    /// A client must finish the TLS handshake within this time.
    pub handshake_timeout: Duration,
    /// Limit on connecting to the local destination.
    pub connect_timeout: Duration,
    /// HTTP/2 streams a single tunnel may have open at once.
    pub max_concurrent_streams: u32,
    /// HTTP/2 per-stream flow-control window.
    pub stream_window: u32,
    /// HTTP/2 per-connection flow-control window.
    pub connection_window: u32,
    /// Interval of HTTP/2 PINGs that detect a dead peer on an idle tunnel;
    /// a PING unanswered for this long again closes the tunnel.
    pub keepalive: Option<Duration>,
    /// How long open streams may go on after [`Inbound::serve_until`]'s
    /// shutdown signal.
    pub drain_timeout: Duration,
    /// TLS handshakes in progress at once; connections beyond are closed
    /// at once and counted with reason `overloaded`.
    pub max_pending_handshakes: usize,
}

impl Default for InboundConfig {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            max_concurrent_streams: 200,
            stream_window: 1024 * 1024,
            connection_window: 4 * 1024 * 1024,
            keepalive: Some(Duration::from_secs(30)),
            max_pending_handshakes: 1024,
            drain_timeout: Duration::from_secs(30),
        }
    }
}

struct Inner {
    manager: CertManager,
    authz: Arc<dyn Authorize>,
    registry: ConnectionRegistry,
    metrics: Arc<Metrics>,
    config: InboundConfig,
    acceptor: TlsAcceptor,
    handshakes: Arc<Semaphore>,
}

/// The inbound tunnel server. Cheap to clone.
#[derive(Clone)]
pub struct Inbound {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Inbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbound")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// The failure-reason label of a TLS handshake error.
pub fn classify_handshake_error(error: &io::Error) -> &'static str {
    let Some(tls) = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    else {
        return match error.kind() {
            io::ErrorKind::UnexpectedEof => "eof",
            _ => "io",
        };
    };
    match tls {
        rustls::Error::NoCertificatesPresented => "no_client_cert",
        rustls::Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => "expired",
        rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        ) => "untrusted_issuer",
        e if tls::verifier::is_identity_error(e) => "bad_identity",
        rustls::Error::InvalidCertificate(_) => "bad_certificate",
        rustls::Error::AlertReceived(_) => "alert_received",
        rustls::Error::InvalidMessage(_)
        | rustls::Error::InappropriateMessage { .. }
        | rustls::Error::InappropriateHandshakeMessage { .. }
        | rustls::Error::PeerIncompatible(_)
        | rustls::Error::PeerMisbehaved(_) => "protocol",
        _ => "tls_other",
    }
}

impl Inbound {
    /// A server presenting certificates from `manager` and asking `authz`
    /// about every stream.
    pub fn new(
        manager: CertManager,
        authz: Arc<dyn Authorize>,
        registry: ConnectionRegistry,
        metrics: Arc<Metrics>,
        config: InboundConfig,
    ) -> Result<Self, Error> {
        let acceptor = TlsAcceptor::from(tls::server_config(&manager)?);
        let handshakes = Arc::new(Semaphore::new(config.max_pending_handshakes));
        Ok(Self {
            inner: Arc::new(Inner {
                handshakes,
                manager,
                authz,
                registry,
                metrics,
                config,
                acceptor,
            }),
        })
    }

    /// Accepts tunnels on `listener` forever. Each connection runs in its
    /// own task, which outlives this future if it is dropped; use
    /// [`Inbound::serve_until`] for an orderly drain.
    pub async fn serve(&self, listener: TcpListener) {
        self.serve_until(listener, std::future::pending()).await;
    }

    /// Accepts tunnels on `listener` until `shutdown` completes, then drains:
    /// the listener is closed, every tunnel is sent an HTTP/2 GOAWAY so no
    /// new stream starts, and open streams may finish for up to
    /// `InboundConfig::drain_timeout`, after which the rest are closed.
    /// Returns when every tunnel has ended.
    pub async fn serve_until(&self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let local = listener.local_addr().ok();
        info!(address = ?local, component = "inbound", "tunnel listener established");
        let (drain_tx, drain_rx) = watch::channel(false);
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        let this = self.clone();
                        let drain = drain_rx.clone();
                        connections.spawn(
                            async move { this.serve_connection(tcp, peer, drain).await }
                                .instrument(info_span!("inbound", %peer)),
                        );
                    }
                    Err(error) => {
                        warn!(%error, "accepting tunnel connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                // Reap finished connection tasks as we go.
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        drop(listener);
        let live = connections.len();
        info!(address = ?local, live, "tunnel listener closed, draining");
        let _ = drain_tx.send(true);
        let drained = tokio::time::timeout(self.inner.config.drain_timeout, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!(
                remaining = connections.len(),
                "drain timeout reached, closing remaining tunnels"
            );
            connections.shutdown().await;
        }
        info!(address = ?local, "tunnel listener drained");
    }

    async fn serve_connection(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
        mut drain: watch::Receiver<bool>,
    ) {
        let inner = &self.inner;
        let Ok(permit) = inner.handshakes.clone().try_acquire_owned() else {
            inner.metrics.handshake("inbound", "overloaded");
            warn!(%peer, reason = "overloaded", "inbound TLS handshake rejected");
            return;
        };
        let _ = tcp.set_nodelay(true);
        let accepted =
            tokio::time::timeout(inner.config.handshake_timeout, inner.acceptor.accept(tcp)).await;
        drop(permit);
        let tls = match accepted {
            Ok(Ok(tls)) => tls,
            Ok(Err(error)) => {
                let reason = classify_handshake_error(&error);
                inner.metrics.handshake("inbound", reason);
                warn!(%peer, reason, %error, "inbound TLS handshake rejected");
                return;
            }
            Err(_) => {
                inner.metrics.handshake("inbound", "timeout");
                warn!(
                    %peer,
                    reason = "timeout",
                    timeout = ?inner.config.handshake_timeout,
                    "inbound TLS handshake rejected"
                );
                return;
            }
        };
        let (_, conn) = tls.get_ref();
        let destination = conn
            .server_name()
            .and_then(|sni| tls::identity_for_server_name(&inner.manager, sni));
        let (Some(client), Some(destination)) = (tls::peer_info(conn), destination) else {
            inner.metrics.handshake("inbound", "bad_identity");
            warn!(%peer, reason = "bad_identity", "inbound tunnel without usable identities");
            return;
        };
        inner.metrics.handshake("inbound", "ok");
        inner.metrics.opened(ConnKind::TunnelInbound);
        debug!(
            %peer,
            source = %client.identity,
            %destination,
            cipher = client.cipher_suite,
            "inbound tunnel established"
        );
        let guard = inner.registry.open_tunnel(TunnelMeta {
            direction: Direction::Inbound,
            source: client.identity.clone(),
            destination: destination.clone(),
            peer_addr: peer,
            tls_version: client.protocol.clone(),
            cipher_suite: client.cipher_suite.clone(),
            peer_cert_serial: client.cert_serial.clone(),
        });
        let ctx = Arc::new(StreamContext {
            server: self.clone(),
            client,
            destination,
            tunnel: guard.record().clone(),
        });
        let service = service_fn(move |req| {
            let ctx = ctx.clone();
            async move { Ok::<_, Infallible>(ctx.handle(req).await) }
        });
        let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .max_concurrent_streams(inner.config.max_concurrent_streams)
            .initial_stream_window_size(inner.config.stream_window)
            .initial_connection_window_size(inner.config.connection_window)
            .keep_alive_interval(inner.config.keepalive);
        if let Some(timeout) = inner.config.keepalive {
            builder.keep_alive_timeout(timeout);
        }
        let connection = builder.serve_connection(TokioIo::new(tls), service);
        tokio::pin!(connection);
        let served = tokio::select! {
            served = connection.as_mut() => served,
            () = draining(&mut drain) => {
                debug!(%peer, "draining inbound tunnel");
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        if let Err(error) = served {
            debug!(%peer, %error, "inbound tunnel ended with error");
        }
        inner.metrics.closed(ConnKind::TunnelInbound);
        drop(guard);
    }
}

/// Completes once the listener starts draining; never if it went away
/// without draining.
async fn draining(drain: &mut watch::Receiver<bool>) {
    while !*drain.borrow_and_update() {
        if drain.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

struct StreamContext {
    server: Inbound,
    client: PeerInfo,
    destination: SpiffeId,
    tunnel: Arc<TunnelRecord>,
}

fn status(code: StatusCode) -> Response<Empty<Bytes>> {
    let mut response = Response::new(Empty::new());
    *response.status_mut() = code;
    response
}

impl StreamContext {
    async fn handle(&self, mut req: Request<Incoming>) -> Response<Empty<Bytes>> {
        let inner = &self.server.inner;
        if req.method() != Method::CONNECT {
            return status(StatusCode::METHOD_NOT_ALLOWED);
        }
        let Some(target) = req
            .uri()
            .authority()
            .and_then(|a| a.as_str().parse::<SocketAddr>().ok())
        else {
            warn!(uri = %req.uri(), "CONNECT without a socket address authority");
            return status(StatusCode::BAD_REQUEST);
        };
        let decision = inner.authz.authorize(&AuthzRequest {
            source: Some(self.client.identity.clone()),
            destination: self.destination.clone(),
            destination_addr: target,
            source_cert_serial: Some(self.client.cert_serial.clone()),
        });
        if !decision.allowed {
            return status(StatusCode::FORBIDDEN);
        }
        let connected =
            tokio::time::timeout(inner.config.connect_timeout, TcpStream::connect(target)).await;
        let upstream = match connected {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(error)) => {
                warn!(%target, %error, "local destination unreachable");
                return status(StatusCode::SERVICE_UNAVAILABLE);
            }
            Err(_) => {
                warn!(%target, "connecting to local destination timed out");
                return status(StatusCode::SERVICE_UNAVAILABLE);
            }
        };
        let _ = upstream.set_nodelay(true);
        let on_upgrade = hyper::upgrade::on(&mut req);
        let registry = inner.registry.clone();
        let metrics = inner.metrics.clone();
        let meta = StreamMeta {
            direction: Direction::Inbound,
            tunnel: Some(self.tunnel.clone()),
            source: Some(self.client.identity.clone()),
            destination: self.destination.clone(),
            target,
        };
        tokio::spawn(
            async move {
                let upgraded = match on_upgrade.await {
                    Ok(upgraded) => upgraded,
                    Err(error) => {
                        debug!(%error, "CONNECT stream was not established");
                        return;
                    }
                };
                let guard = registry.open_stream(meta);
                metrics.opened(ConnKind::StreamInbound);
                let result = splice(
                    TokioIo::new(upgraded),
                    upstream,
                    guard.record(),
                    &metrics,
                    ConnKind::StreamInbound,
                )
                .await;
                metrics.closed(ConnKind::StreamInbound);
                match result {
                    Ok(stats) => debug!(
                        to_destination = stats.to_destination,
                        from_destination = stats.from_destination,
                        "inbound stream closed"
                    ),
                    Err(error) => debug!(%error, "inbound stream failed"),
                }
            }
            .instrument(info_span!("stream", %target)),
        );
        status(StatusCode::OK)
    }
}
