//! Just enough HTTP/1.1 for the sample app: one request per connection.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Longest request or response head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Longest response body accepted.
const MAX_BODY: usize = 64 * 1024;
/// How long one call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A response as the client saw it.
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The body, as text.
    pub body: String,
}

/// Reads a request head and returns its path.
pub async fn read_request(conn: &mut TcpStream) -> anyhow::Result<String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut chunk).await.context("reading the request")?;
        if n == 0 {
            bail!("connection closed before the request head ended");
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_HEAD {
            bail!("request head over {MAX_HEAD} bytes");
        }
    }
    let head = String::from_utf8_lossy(&buf);
    let line = head.lines().next().unwrap_or_default();
    let path = line.split(' ').nth(1).unwrap_or("/");
    Ok(path.to_string())
}

/// Writes a complete response and closes the connection.
pub async fn respond(conn: &mut TcpStream, status: u16, body: &str) -> anyhow::Result<()> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        502 => "Bad Gateway",
        _ => "Error",
    };
    let msg = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(msg.as_bytes()).await?;
    conn.shutdown().await?;
    Ok(())
}

/// GETs `path` from `addr` on a new connection, within [`CALL_TIMEOUT`].
pub async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<Response> {
    tokio::time::timeout(CALL_TIMEOUT, get_inner(addr, path))
        .await
        .with_context(|| format!("GET http://{addr}{path}: no answer within {CALL_TIMEOUT:?}"))?
}

async fn get_inner(addr: SocketAddr, path: &str) -> anyhow::Result<Response> {
    let mut conn = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let req = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    conn.write_all(req.as_bytes())
        .await
        .with_context(|| format!("sending to {addr}"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = conn
            .read(&mut chunk)
            .await
            .with_context(|| format!("reading from {addr}"))?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_HEAD + MAX_BODY {
            bail!("response from {addr} over {} bytes", MAX_HEAD + MAX_BODY);
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("{addr} closed the connection without a complete response");
    };
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line from {addr}"))?;
    Ok(Response {
        status,
        body: body.to_string(),
    })
}
