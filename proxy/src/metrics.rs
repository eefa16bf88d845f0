//! Prometheus metrics of the data path, registered by the caller on its
//! registry under the `nodemesh_` prefix.
//!
//! | metric | labels |
//! |---|---|
//! | `nodemesh_tls_handshakes_total` | `direction` (inbound/outbound), `result` (ok/failed), `reason` |
//! | `nodemesh_connections_opened_total` | `kind` |
//! | `nodemesh_connections_closed_total` | `kind` |
//! | `nodemesh_bytes_total` | `kind`, `direction` (to_destination/from_destination) |
//! | `nodemesh_authz_decisions_total` | `action` (allow/deny/audit), `reason` |
//!
//! `kind` is one of [`ConnKind`]: a TLS tunnel (inbound/outbound), a stream
//! inside a tunnel (inbound/outbound) or a same-node plaintext delivery.

use prometheus::{IntCounterVec, Opts, Registry};

/// Errors registering metrics.
#[derive(Debug, thiserror::Error)]
#[error("failed to register metric {name}: {source}")]
pub struct Error {
    name: &'static str,
    #[source]
    source: prometheus::Error,
}

/// What a connection counter or byte counter is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnKind {
    /// A TLS connection this node opened to a peer node.
    TunnelOutbound,
    /// A TLS connection a peer node opened to this node.
    TunnelInbound,
    /// A CONNECT stream this node opened inside a tunnel.
    StreamOutbound,
    /// A CONNECT stream served by this node.
    StreamInbound,
    /// Same-node plaintext delivery.
    Local,
}

impl ConnKind {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TunnelOutbound => "tunnel_outbound",
            Self::TunnelInbound => "tunnel_inbound",
            Self::StreamOutbound => "stream_outbound",
            Self::StreamInbound => "stream_inbound",
            Self::Local => "local",
        }
    }
}

/// The data path's counters. Cheap to share behind an `Arc`.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// TLS handshakes by direction, result and failure reason.
    pub tls_handshakes: IntCounterVec,
    /// Connections opened, by kind.
    pub connections_opened: IntCounterVec,
    /// Connections closed, by kind.
    pub connections_closed: IntCounterVec,
    /// Payload bytes spliced, by kind and direction.
    pub bytes: IntCounterVec,
    /// Authorization decisions by action and reason.
    pub authz_decisions: IntCounterVec,
}

fn counter(
    registry: &Registry,
    name: &'static str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, Error> {
    let vec = IntCounterVec::new(Opts::new(name, help).namespace("nodemesh"), labels)
        .map_err(|source| Error { name, source })?;
    registry
        .register(Box::new(vec.clone()))
        .map_err(|source| Error { name, source })?;
    Ok(vec)
}

impl Metrics {
    /// Registers every counter on `registry`.
    pub fn new(registry: &Registry) -> Result<Self, Error> {
        Ok(Self {
            tls_handshakes: counter(
                registry,
                "tls_handshakes_total",
                "TLS handshakes of mesh tunnels",
                &["direction", "result", "reason"],
            )?,
            connections_opened: counter(
                registry,
                "connections_opened_total",
                "Mesh connections and streams opened",
                &["kind"],
            )?,
            connections_closed: counter(
                registry,
                "connections_closed_total",
                "Mesh connections and streams closed",
                &["kind"],
            )?,
            bytes: counter(
                registry,
                "bytes_total",
                "Payload bytes carried",
                &["kind", "direction"],
            )?,
            authz_decisions: counter(
                registry,
                "authz_decisions_total",
                "Authorization decisions",
                &["action", "reason"],
            )?,
        })
    }

    /// Counts a handshake; `reason` is `"ok"` for successes.
    pub fn handshake(&self, direction: &str, reason: &str) {
        let result = if reason == "ok" { "ok" } else { "failed" };
        self.tls_handshakes
            .with_label_values(&[direction, result, reason])
            .inc();
    }

    /// Current value of a handshake counter, for tests and debug pages.
    pub fn handshake_count(&self, direction: &str, reason: &str) -> u64 {
        let result = if reason == "ok" { "ok" } else { "failed" };
        self.tls_handshakes
            .with_label_values(&[direction, result, reason])
            .get()
    }

    /// Counts an opened connection.
    pub fn opened(&self, kind: ConnKind) {
        self.connections_opened
            .with_label_values(&[kind.as_str()])
            .inc();
    }

    /// Counts a closed connection.
    pub fn closed(&self, kind: ConnKind) {
        self.connections_closed
            .with_label_values(&[kind.as_str()])
            .inc();
    }

    /// Opened connections of `kind` so far.
    pub fn opened_count(&self, kind: ConnKind) -> u64 {
        self.connections_opened
            .with_label_values(&[kind.as_str()])
            .get()
    }

    /// Authorization decisions with this action and reason so far.
    pub fn authz_count(&self, action: &str, reason: &str) -> u64 {
        self.authz_decisions
            .with_label_values(&[action, reason])
            .get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_with_prefix_and_refuses_duplicates() {
        let registry = Registry::new();
        let metrics = Metrics::new(&registry).unwrap();
        metrics.handshake("inbound", "timeout");
        metrics.opened(ConnKind::Local);
        let names: Vec<String> = registry
            .gather()
            .iter()
            .map(|f| f.name().to_owned())
            .collect();
        assert!(names.contains(&"nodemesh_tls_handshakes_total".to_owned()));
        assert!(names.contains(&"nodemesh_connections_opened_total".to_owned()));
        assert_eq!(metrics.handshake_count("inbound", "timeout"), 1);
        assert!(Metrics::new(&registry).is_err());
    }
}
