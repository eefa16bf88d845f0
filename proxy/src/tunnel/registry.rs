//! The live-connection registry behind the admin endpoint: every open
//! tunnel (TLS connection) and stream, with identities, TLS parameters,
//! peer address and bytes each way. Entries disappear when their guard drops.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::identity::SpiffeId;

/// Which way a tunnel or stream goes, seen from this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Opened by this node towards a peer node.
    Outbound,
    /// Opened by a peer node towards this node.
    Inbound,
    /// Same-node plaintext delivery.
    Local,
}

/// A TLS connection between two node agents.
#[derive(Debug, Clone, Serialize)]
pub struct TunnelMeta {
    /// Outbound or inbound.
    pub direction: Direction,
    /// Client workload identity.
    pub source: SpiffeId,
    /// Server workload identity.
    pub destination: SpiffeId,
    /// The remote node agent's address.
    pub peer_addr: SocketAddr,
    /// Negotiated protocol, e.g. `TLSv1_3`.
    pub tls_version: String,
    /// Negotiated cipher suite, e.g. `TLS13_AES_128_GCM_SHA256`.
    pub cipher_suite: String,
    /// Serial (hex) of the peer's leaf certificate.
    pub peer_cert_serial: String,
}

/// The registry's record of a tunnel.
#[derive(Debug)]
pub struct TunnelRecord {
    id: u64,
    meta: TunnelMeta,
    opened_unix_ms: u64,
    streams: AtomicU64,
    bytes_to_destination: AtomicU64,
    bytes_from_destination: AtomicU64,
}

impl TunnelRecord {
    /// The registry id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// What the tunnel is.
    pub fn meta(&self) -> &TunnelMeta {
        &self.meta
    }
}

/// What a stream is, given when opening it.
#[derive(Debug, Clone)]
pub struct StreamMeta {
    /// Outbound, inbound or local.
    pub direction: Direction,
    /// The tunnel carrying it; `None` for local delivery.
    pub tunnel: Option<Arc<TunnelRecord>>,
    /// Source identity, `None` for unauthenticated plaintext.
    pub source: Option<SpiffeId>,
    /// Destination identity.
    pub destination: SpiffeId,
    /// The original destination address.
    pub target: SocketAddr,
}

/// The registry's record of a stream; counts bytes as they flow.
#[derive(Debug)]
pub struct StreamRecord {
    id: u64,
    meta: StreamMeta,
    opened_unix_ms: u64,
    bytes_to_destination: AtomicU64,
    bytes_from_destination: AtomicU64,
}

impl StreamRecord {
    /// Adds bytes carried towards the destination.
    pub fn add_to_destination(&self, n: u64) {
        self.bytes_to_destination.fetch_add(n, Ordering::Relaxed);
        if let Some(t) = &self.meta.tunnel {
            t.bytes_to_destination.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Adds bytes carried back from the destination.
    pub fn add_from_destination(&self, n: u64) {
        self.bytes_from_destination.fetch_add(n, Ordering::Relaxed);
        if let Some(t) = &self.meta.tunnel {
            t.bytes_from_destination.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// One tunnel in a [`Snapshot`].
#[derive(Debug, Clone, Serialize)]
pub struct TunnelInfo {
    /// Registry id.
    pub id: u64,
    /// Identities, TLS parameters and peer.
    #[serde(flatten)]
    pub meta: TunnelMeta,
    /// When it was opened (Unix ms).
    pub opened_unix_ms: u64,
    /// Streams carried so far.
    pub streams_total: u64,
    /// Bytes towards the destination.
    pub bytes_to_destination: u64,
    /// Bytes back from the destination.
    pub bytes_from_destination: u64,
}

/// One stream in a [`Snapshot`].
#[derive(Debug, Clone, Serialize)]
pub struct StreamInfo {
    /// Registry id.
    pub id: u64,
    /// Outbound, inbound or local.
    pub direction: Direction,
    /// Id of the carrying tunnel, if any.
    pub tunnel_id: Option<u64>,
    /// Source identity (absent for unauthenticated plaintext).
    pub source: Option<SpiffeId>,
    /// Destination identity.
    pub destination: SpiffeId,
    /// Original destination address.
    pub target: SocketAddr,
    /// Peer node address, for streams in a tunnel.
    pub peer_addr: Option<SocketAddr>,
    /// TLS version of the carrying tunnel, or `none` for local delivery.
    pub tls_version: String,
    /// Cipher suite of the carrying tunnel, or `none`.
    pub cipher_suite: String,
    /// When it was opened (Unix ms).
    pub opened_unix_ms: u64,
    /// Bytes towards the destination.
    pub bytes_to_destination: u64,
    /// Bytes back from the destination.
    pub bytes_from_destination: u64,
}

/// A point-in-time view of the registry, for the admin endpoint (JSON).
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// Live TLS tunnels.
    pub tunnels: Vec<TunnelInfo>,
    /// Live streams.
    pub streams: Vec<StreamInfo>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: AtomicU64,
    tunnels: Mutex<BTreeMap<u64, Arc<TunnelRecord>>>,
    streams: Mutex<BTreeMap<u64, Arc<StreamRecord>>>,
}

/// Shared registry of live tunnels and streams. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct ConnectionRegistry {
    inner: Arc<Inner>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

impl ConnectionRegistry {
    /// Records a new tunnel; it stays listed until the guard drops.
    pub fn open_tunnel(&self, meta: TunnelMeta) -> TunnelGuard {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let record = Arc::new(TunnelRecord {
            id,
            meta,
            opened_unix_ms: now_ms(),
            streams: AtomicU64::new(0),
            bytes_to_destination: AtomicU64::new(0),
            bytes_from_destination: AtomicU64::new(0),
        });
        self.inner
            .tunnels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, record.clone());
        TunnelGuard {
            registry: self.clone(),
            record,
        }
    }

    /// Records a new stream; it stays listed until the guard drops.
    pub fn open_stream(&self, meta: StreamMeta) -> StreamGuard {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(t) = &meta.tunnel {
            t.streams.fetch_add(1, Ordering::Relaxed);
        }
        let record = Arc::new(StreamRecord {
            id,
            meta,
            opened_unix_ms: now_ms(),
            bytes_to_destination: AtomicU64::new(0),
            bytes_from_destination: AtomicU64::new(0),
        });
        self.inner
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, record.clone());
        StreamGuard {
            registry: self.clone(),
            record,
        }
    }

    /// Everything live now.
    pub fn snapshot(&self) -> Snapshot {
        let tunnels = self
            .inner
            .tunnels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|t| TunnelInfo {
                id: t.id,
                meta: t.meta.clone(),
                opened_unix_ms: t.opened_unix_ms,
                streams_total: t.streams.load(Ordering::Relaxed),
                bytes_to_destination: t.bytes_to_destination.load(Ordering::Relaxed),
                bytes_from_destination: t.bytes_from_destination.load(Ordering::Relaxed),
            })
            .collect();
        let streams = self
            .inner
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|s| {
                let tunnel = s.meta.tunnel.as_ref();
                StreamInfo {
                    id: s.id,
                    direction: s.meta.direction,
                    tunnel_id: tunnel.map(|t| t.id),
                    source: s.meta.source.clone(),
                    destination: s.meta.destination.clone(),
                    target: s.meta.target,
                    peer_addr: tunnel.map(|t| t.meta.peer_addr),
                    tls_version: tunnel
                        .map(|t| t.meta.tls_version.clone())
                        .unwrap_or_else(|| "none".into()),
                    cipher_suite: tunnel
                        .map(|t| t.meta.cipher_suite.clone())
                        .unwrap_or_else(|| "none".into()),
                    opened_unix_ms: s.opened_unix_ms,
                    bytes_to_destination: s.bytes_to_destination.load(Ordering::Relaxed),
                    bytes_from_destination: s.bytes_from_destination.load(Ordering::Relaxed),
                }
            })
            .collect();
        Snapshot { tunnels, streams }
    }
}

/// Keeps a tunnel listed; removes it on drop.
#[derive(Debug)]
pub struct TunnelGuard {
    registry: ConnectionRegistry,
    record: Arc<TunnelRecord>,
}

impl TunnelGuard {
    /// The record, to attach streams to.
    pub fn record(&self) -> &Arc<TunnelRecord> {
        &self.record
    }
}

impl Drop for TunnelGuard {
    fn drop(&mut self) {
        self.registry
            .inner
            .tunnels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.record.id);
    }
}

/// Keeps a stream listed; removes it on drop.
#[derive(Debug)]
pub struct StreamGuard {
    registry: ConnectionRegistry,
    record: Arc<StreamRecord>,
}

impl StreamGuard {
    /// The record, to count bytes into.
    pub fn record(&self) -> &Arc<StreamRecord> {
        &self.record
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.registry
            .inner
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.record.id);
    }
}
