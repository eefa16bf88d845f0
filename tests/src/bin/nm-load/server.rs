//! Servers: echo, sink and HTTP/1.1 echo on one tokio runtime.

use std::net::{Ipv4Addr, SocketAddr};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Request, Response};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use super::{ECHO_PORT, HTTP_PORT, SINK_PORT};

/// Serves until killed; prints `READY` once every port listens.
pub fn run(ip: Ipv4Addr) -> Value {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let bind = |port| async move {
            TcpListener::bind(SocketAddr::from((ip, port)))
                .await
                .unwrap_or_else(|e| panic!("bind {ip}:{port}: {e}"))
        };
        let (echo, sink, http) = (
            bind(ECHO_PORT).await,
            bind(SINK_PORT).await,
            bind(HTTP_PORT).await,
        );
        println!("READY");
        std::io::Write::flush(&mut std::io::stdout()).ok();
        tokio::spawn(accept(echo, echo_conn));
        tokio::spawn(accept(sink, sink_conn));
        accept(http, http_conn).await;
    });
    unreachable!("the HTTP accept loop never returns")
}

async fn accept<F, Fut>(l: TcpListener, handle: F)
where
    F: Fn(TcpStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        if let Ok((s, _)) = l.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(handle(s));
        }
    }
}

async fn echo_conn(mut s: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if s.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn sink_conn(mut s: TcpStream) {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        match s.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            Err(_) => return,
        }
    }
    let _ = s.write_all(&total.to_le_bytes()).await;
    let _ = s.shutdown().await;
}

async fn http_conn(s: TcpStream) {
    let svc = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
        let body = req.into_body().collect().await?.to_bytes();
        Ok::<_, hyper::Error>(Response::new(Full::<Bytes>::new(body)))
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
        .await;
}
