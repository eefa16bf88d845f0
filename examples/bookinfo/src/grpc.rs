//! gRPC over HTTP/2 (the `h2` crate) for `bookinfo.Ratings/GetRating`, with
//! the two tiny protobuf messages encoded by hand:
//!
//! ```proto
//! service Ratings { rpc GetRating(RatingRequest) returns (RatingReply); }
//! message RatingRequest { string product_id = 1; }
//! message RatingReply { int32 stars = 1; }
//! ```

use std::net::SocketAddr;

use anyhow::{Context as _, bail};
use bytes::{BufMut as _, Bytes, BytesMut};
use tokio::net::TcpStream;

use crate::http::CALL_TIMEOUT;

/// The method's path.
pub const METHOD: &str = "/bookinfo.Ratings/GetRating";
/// Largest message accepted.
const MAX_MESSAGE: usize = 4096;

/// A gRPC length-prefixed message (uncompressed).
fn frame(message: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + message.len());
    b.put_u8(0);
    b.put_u32(message.len() as u32);
    b.put_slice(message);
    b.freeze()
}

/// The message inside one length-prefixed frame.
fn unframe(data: &[u8]) -> anyhow::Result<&[u8]> {
    if data.len() < 5 || data[0] != 0 {
        bail!("malformed gRPC frame ({} bytes)", data.len());
    }
    let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
    data.get(5..5 + len).context("truncated gRPC frame")
}

/// Protobuf: field 1, wire type 2 (length-delimited string).
fn encode_request(product_id: &str) -> Vec<u8> {
    let mut m = vec![0x0a, product_id.len() as u8];
    m.extend_from_slice(product_id.as_bytes());
    m
}

fn decode_request(m: &[u8]) -> anyhow::Result<String> {
    match m {
        [] => Ok(String::new()),
        [0x0a, len, rest @ ..] if rest.len() >= *len as usize => {
            Ok(String::from_utf8_lossy(&rest[..*len as usize]).into_owned())
        }
        _ => bail!("unexpected RatingRequest encoding"),
    }
}

/// Protobuf: field 1, wire type 0 (varint); stars are 1..=5.
fn encode_reply(stars: u8) -> Vec<u8> {
    vec![0x08, stars]
}

fn decode_reply(m: &[u8]) -> anyhow::Result<u8> {
    match m {
        [] => Ok(0),
        [0x08, stars] if *stars < 0x80 => Ok(*stars),
        _ => bail!("unexpected RatingReply encoding"),
    }
}

/// Reads a whole request or response body, bounded by [`MAX_MESSAGE`].
async fn read_body(body: &mut h2::RecvStream) -> anyhow::Result<BytesMut> {
    let mut data = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.context("reading an HTTP/2 DATA frame")?;
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
        if data.len() > MAX_MESSAGE + 5 {
            bail!("gRPC message over {MAX_MESSAGE} bytes");
        }
    }
    Ok(data)
}

/// Calls `GetRating` on a new HTTP/2 connection to `addr`.
pub async fn get_rating(addr: SocketAddr, product_id: &str) -> anyhow::Result<u8> {
    tokio::time::timeout(CALL_TIMEOUT, call(addr, product_id))
        .await
        .with_context(|| format!("gRPC {METHOD} to {addr}: no answer within {CALL_TIMEOUT:?}"))?
}

async fn call(addr: SocketAddr, product_id: &str) -> anyhow::Result<u8> {
    let tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let (client, conn) = h2::client::handshake(tcp)
        .await
        .with_context(|| format!("HTTP/2 handshake with {addr}"))?;
    let driver = tokio::spawn(conn);
    let mut client = client
        .ready()
        .await
        .context("HTTP/2 connection not ready")?;
    let req = ::http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{METHOD}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())?;
    let (resp, mut send) = client.send_request(req, false)?;
    send.send_data(frame(&encode_request(product_id)), true)?;
    let resp = resp.await.context("waiting for the gRPC response")?;
    let status = resp.status();
    let mut body = resp.into_body();
    let data = read_body(&mut body).await?;
    let trailers = body.trailers().await.context("reading gRPC trailers")?;
    drop(client);
    driver.abort();
    let grpc_status = trailers
        .as_ref()
        .and_then(|t| t.get("grpc-status"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("missing");
    if status != 200 || grpc_status != "0" {
        bail!("gRPC call failed: HTTP {status}, grpc-status {grpc_status}");
    }
    decode_reply(unframe(&data)?)
}

/// Serves `GetRating` on one accepted connection until the client closes it.
pub async fn serve_connection(tcp: TcpStream, stars: fn(&str) -> u8) -> anyhow::Result<()> {
    let mut conn = h2::server::handshake(tcp)
        .await
        .context("HTTP/2 handshake")?;
    while let Some(request) = conn.accept().await {
        let (req, mut respond) = request.context("accepting an HTTP/2 stream")?;
        tokio::spawn(async move {
            let ok = req.uri().path() == METHOD;
            let mut body = req.into_body();
            let product = match read_body(&mut body).await {
                Ok(data) => unframe(&data).and_then(decode_request).ok(),
                Err(_) => None,
            };
            let resp = ::http::Response::builder()
                .status(200)
                .header("content-type", "application/grpc")
                .body(())
                .expect("static response head");
            let Ok(mut send) = respond.send_response(resp, false) else {
                return;
            };
            let mut trailers = ::http::HeaderMap::new();
            match (ok, product) {
                (true, Some(product)) => {
                    let _ = send.send_data(frame(&encode_reply(stars(&product))), false);
                    trailers.insert("grpc-status", ::http::HeaderValue::from_static("0"));
                }
                (false, _) => {
                    // UNIMPLEMENTED
                    trailers.insert("grpc-status", ::http::HeaderValue::from_static("12"));
                }
                (true, None) => {
                    // INVALID_ARGUMENT
                    trailers.insert("grpc-status", ::http::HeaderValue::from_static("3"));
                }
            }
            let _ = send.send_trailers(trailers);
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let req = frame(&encode_request("0451"));
        assert_eq!(decode_request(unframe(&req).unwrap()).unwrap(), "0451");
        let reply = frame(&encode_reply(4));
        assert_eq!(decode_reply(unframe(&reply).unwrap()).unwrap(), 4);
    }
}
