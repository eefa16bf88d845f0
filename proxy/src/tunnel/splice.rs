//! Bidirectional byte splicing with half-close, backpressure and adaptive
//! buffers.
//!
//! Each direction reads into a buffer that starts at 1 KiB and grows to
//! 16 KiB, then 256 KiB, whenever a read fills it (as ztunnel does), so idle
//! or chatty connections stay small and bulk transfers get large writes.
//! A direction writes everything it read before reading again, which is the
//! backpressure. EOF on one side shuts down the write half of the other;
//! the other direction keeps flowing until its own EOF.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::registry::StreamRecord;
use crate::metrics::{ConnKind, Metrics};

/// Buffer sizes one direction grows through.
pub const BUFFER_SIZES: [usize; 3] = [1024, 16 * 1024, 256 * 1024];

/// Bytes carried by a finished splice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SpliceStats {
    /// From the client side to the destination.
    pub to_destination: u64,
    /// From the destination back to the client side.
    pub from_destination: u64,
}

/// Copies `client` <-> `destination` until both directions reach EOF or
/// either fails; counts bytes into `record` and `metrics`.
pub async fn splice<C, D>(
    client: C,
    destination: D,
    record: &StreamRecord,
    metrics: &Metrics,
    kind: ConnKind,
) -> io::Result<SpliceStats>
where
    C: AsyncRead + AsyncWrite + Unpin,
    D: AsyncRead + AsyncWrite + Unpin,
{
    let (client_read, client_write) = tokio::io::split(client);
    let (dest_read, dest_write) = tokio::io::split(destination);
    let to_dst = metrics
        .bytes
        .with_label_values(&[kind.as_str(), "to_destination"]);
    let from_dst = metrics
        .bytes
        .with_label_values(&[kind.as_str(), "from_destination"]);
    let upstream = copy_half(client_read, dest_write, |n| {
        record.add_to_destination(n);
        to_dst.inc_by(n);
    });
    let downstream = copy_half(dest_read, client_write, |n| {
        record.add_from_destination(n);
        from_dst.inc_by(n);
    });
    let (to_destination, from_destination) = tokio::try_join!(upstream, downstream)?;
    Ok(SpliceStats {
        to_destination,
        from_destination,
    })
}

async fn copy_half<R, W>(mut reader: R, mut writer: W, on_bytes: impl Fn(u64)) -> io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut size = 0;
    let mut buf = vec![0u8; BUFFER_SIZES[size]];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            match writer.shutdown().await {
                Ok(()) => {}
                // The other side is already gone: nothing left to close.
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
                Err(e) => return Err(e),
            }
            return Ok(total);
        }
        writer.write_all(&buf[..n]).await?;
        writer.flush().await?;
        let n64 = n as u64;
        total += n64;
        on_bytes(n64);
        if n == buf.len() && size + 1 < BUFFER_SIZES.len() {
            size += 1;
            buf.resize(BUFFER_SIZES[size], 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tunnel::registry::{ConnectionRegistry, Direction, StreamMeta};

    #[tokio::test]
    async fn copies_both_ways_with_half_close_and_counts() {
        let registry = ConnectionRegistry::default();
        let metrics = Metrics::new(&prometheus::Registry::new()).unwrap();
        let (client_app, client_proxy) = tokio::io::duplex(4096);
        let (dest_proxy, dest_app) = tokio::io::duplex(4096);
        let stream = registry.open_stream(StreamMeta {
            direction: Direction::Local,
            tunnel: None,
            source: None,
            destination: "spiffe://cluster.local/ns/a/sa/b".parse().unwrap(),
            target: "127.0.0.1:1".parse().unwrap(),
        });
        let record = stream.record().clone();
        let task = tokio::spawn(async move {
            let _stream = stream;
            splice(client_proxy, dest_proxy, &record, &metrics, ConnKind::Local).await
        });
        let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let (mut c_read, mut c_write) = tokio::io::split(client_app);
        let (mut d_read, mut d_write) = tokio::io::split(dest_app);
        let sent = payload.clone();
        let writer = tokio::spawn(async move {
            c_write.write_all(&sent).await.unwrap();
            c_write.shutdown().await.unwrap();
        });
        let mut got = Vec::new();
        d_read.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, payload);
        writer.await.unwrap();
        // The reverse direction still works after the client's half-close.
        d_write.write_all(b"reply").await.unwrap();
        d_write.shutdown().await.unwrap();
        let mut reply = Vec::new();
        c_read.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply, b"reply");
        let stats = task.await.unwrap().unwrap();
        assert_eq!(
            stats,
            SpliceStats {
                to_destination: 300_000,
                from_destination: 5
            }
        );
        assert!(registry.snapshot().streams.is_empty());
    }
}
