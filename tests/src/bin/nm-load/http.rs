//! Open-loop HTTP/1.1 at a constant rate; latency counts from each
//! request's intended send time (coordinated omission corrected).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{export, histogram};

type Sender = SendRequest<Full<Bytes>>;

async fn open(addr: SocketAddr) -> Option<Sender> {
    let s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.set_nodelay(true).ok()?;
    let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
        .await
        .ok()?;
    tokio::spawn(conn);
    Some(send)
}

/// Sends `rate` requests per second for `dur` over `conns` keep-alive connections.
pub fn run(addr: SocketAddr, rate: u64, dur: Duration, bytes: usize, conns: usize) -> Value {
    let total = (rate as f64 * dur.as_secs_f64()) as u64;
    let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let hist = Arc::new(Mutex::new(histogram()));
    let errors = Arc::new(Mutex::new(0u64));
    let body = Bytes::from(vec![0x42u8; bytes]);
    let (secs, unfinished) = rt.block_on(async {
        let (free_tx, mut free_rx) = mpsc::channel::<Sender>(conns);
        for _ in 0..conns {
            let s = open(addr)
                .await
                .unwrap_or_else(|| panic!("HTTP connect {addr}"));
            free_tx.send(s).await.expect("pool open");
        }
        // A pacing thread with a 1 ns timer slack stamps the intended send times.
        let (tick_tx, mut tick_rx) = mpsc::unbounded_channel::<Instant>();
        let start = Instant::now() + Duration::from_millis(5);
        std::thread::spawn(move || {
            // SAFETY: prctl on the calling thread with integer arguments.
            unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1u64, 0u64, 0u64, 0u64) };
            for i in 0..total {
                let at = start + interval * i as u32;
                let now = Instant::now();
                if at > now {
                    std::thread::sleep(at - now);
                }
                if tick_tx.send(at).is_err() {
                    return;
                }
            }
        });
        let mut tasks = tokio::task::JoinSet::new();
        while let Some(intended) = tick_rx.recv().await {
            let Some(mut send) = free_rx.recv().await else {
                break;
            };
            let (hist, errors, free_tx, body) =
                (hist.clone(), errors.clone(), free_tx.clone(), body.clone());
            tasks.spawn(async move {
                let req = hyper::Request::post("/echo")
                    .header("host", "server")
                    .body(Full::new(body))
                    .expect("valid request");
                let ok = match send.send_request(req).await {
                    Ok(resp) if resp.status().is_success() => resp
                        .into_body()
                        .collect()
                        .await
                        .map(|b| b.to_bytes().len())
                        .is_ok(),
                    _ => false,
                };
                if ok {
                    let ns = intended.elapsed().as_nanos() as u64;
                    hist.lock().expect("histogram").saturating_record(ns);
                } else {
                    *errors.lock().expect("errors") += 1;
                    match open(addr).await {
                        Some(s) => send = s,
                        None => return,
                    }
                }
                let _ = free_tx.send(send).await;
            });
            while tasks.try_join_next().is_some() {}
        }
        let drained = tokio::time::timeout(Duration::from_secs(10), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        let unfinished = if drained.is_err() {
            tasks.len() as u64
        } else {
            0
        };
        (start.elapsed().as_secs_f64(), unfinished)
    });
    let h = hist.lock().expect("histogram");
    let errors = *errors.lock().expect("errors") + unfinished;
    json!({
        "latency": export(&h),
        "ok": h.len(),
        "errors": errors,
        "secs": secs,
        "achieved_rps": h.len() as f64 / secs,
        "rate": rate,
    })
}
