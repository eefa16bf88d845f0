//! HBONE-like tunnels between node agents: one long-lived mTLS HTTP/2
//! connection per (source identity, destination identity, peer node), with
//! one HTTP/2 `CONNECT` stream per proxied TCP connection.
//!
//! # Wire format
//!
//! * **Port**: the node agent listens on TCP [`DEFAULT_TUNNEL_PORT`] (15008,
//!   as Istio's HBONE).
//! * **TLS**: TLS 1.3 only, ALPN `h2`. The client sends SNI
//!   `<sa>.<ns>.<trust-domain>` naming the destination workload (see
//!   [`crate::tls::server_name_for`]); the server presents that workload's
//!   X.509-SVID and requires the client's (the source workload's). Identities
//!   are the single URI SAN `spiffe://<td>/ns/<ns>/sa/<sa>`.
//! * **HTTP/2**: each stream is a classic `CONNECT` request: `:method CONNECT`,
//!   `:authority <original destination ip:port>` (IPv6 in brackets), no
//!   `:scheme`/`:path`, no other header is required or trusted: the source
//!   identity comes from the TLS client certificate only.
//! * **Responses**: `200` then raw bytes both ways in DATA frames;
//!   `END_STREAM` is a TCP half-close. `400` bad authority, `403` denied by
//!   authorization, `405` not CONNECT, `503` destination unreachable.
//!
//! Same-node meshed traffic does not use a tunnel: see [`local`].

pub mod inbound;
pub mod local;
pub mod outbound;
pub mod registry;
pub mod splice;

use std::io;
use std::net::SocketAddr;

use http::StatusCode;

pub use inbound::{Inbound, InboundConfig};
pub use local::LocalDelivery;
pub use outbound::{Outbound, OutboundConfig, OutboundRoute};
pub use registry::ConnectionRegistry;
pub use splice::SpliceStats;

use crate::identity::SpiffeId;

/// The port node agents accept tunnels on.
pub const DEFAULT_TUNNEL_PORT: u16 = 15008;

/// Errors of the tunnel data path.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// This node holds no certificate for the source identity.
    #[error("no certificate for source identity {0}")]
    NoCertificate(SpiffeId),
    /// TLS configuration could not be built.
    #[error(transparent)]
    Tls(#[from] crate::tls::Error),
    /// TCP connect failed.
    #[error("failed to connect to {addr}: {source}")]
    Connect {
        /// Where to.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// TCP connect or TLS handshake did not finish in time.
    #[error("timed out {what} {addr}")]
    Timeout {
        /// `connecting to` or `handshaking with`.
        what: &'static str,
        /// The peer.
        addr: SocketAddr,
    },
    /// The TLS handshake failed.
    #[error("TLS handshake with {addr} failed: {source}")]
    Handshake {
        /// The peer.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// HTTP/2 failed on the tunnel.
    #[error("HTTP/2 error with {addr}: {source}")]
    Http2 {
        /// The peer.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: hyper::Error,
    },
    /// The peer refused the CONNECT.
    #[error("peer refused CONNECT to {target} with status {status}")]
    Refused {
        /// The original destination.
        target: SocketAddr,
        /// The status the peer answered.
        status: StatusCode,
    },
    /// Authorization denied the connection.
    #[error("connection to {target} denied by authorization ({reason})")]
    Denied {
        /// The original destination.
        target: SocketAddr,
        /// The decision's reason label.
        reason: &'static str,
    },
    /// Splicing bytes failed.
    #[error("stream to {target} failed: {source}")]
    Splice {
        /// The original destination.
        target: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
}
