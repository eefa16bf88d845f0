//! `nm-pod`: the workload the end-to-end tests run inside pods.
//!
//! Servers print `READY` once listening; clients print one JSON line with
//! what they observed. Payloads come from a seeded generator so the other
//! end can verify every byte.
//!
//! Reads treat `EAGAIN` the way event-loop applications (epoll, tokio, Go,
//! nginx) do: wait for readability and read again. Sockets in a sockmap can
//! return `EAGAIN` from a blocking read when woken without sockmap data;
//! see the README's notes on same-node acceleration.
//!
//! ```text
//! nm-pod serve <addr> echo|hello:<name>|sink-reply:<bytes>
//! nm-pod echo-client <addr> <bytes> <chunk> <conns>
//! nm-pod hello-client <addr> <count>
//! nm-pod send <addr> <bytes>
//! nm-pod connect <addr>
//! nm-pod marker-client <addr> <marker> <count> <hold-ms>
//! nm-pod repeat-client <addr> <seconds>
//! nm-pod watch-client <addr> <seconds>
//! ```

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use nodemesh_tests::read_ready;
use serde_json::json;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).unwrap_or_else(|| usage()).as_str();
    let num = |i: usize| arg(i).parse::<usize>().unwrap_or_else(|_| usage());
    match arg(0) {
        "serve" => serve(addr(arg(1)), arg(2)),
        "echo-client" => echo_client(addr(arg(1)), num(2), num(3), num(4)),
        "hello-client" => hello_client(addr(arg(1)), num(2)),
        "send" => send(addr(arg(1)), num(2)),
        "connect" => connect(addr(arg(1))),
        "marker-client" => marker_client(addr(arg(1)), arg(2), num(3), num(4)),
        "repeat-client" => repeat_client(addr(arg(1)), num(2)),
        "watch-client" => watch_client(addr(arg(1)), num(2)),
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!("usage: see the module documentation of nm-pod");
    std::process::exit(64)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap_or_else(|_| usage())
}

/// A deterministic byte stream: stream `seed`, byte `i`.
struct Pattern {
    state: u64,
}

impl Pattern {
    fn new(seed: u64) -> Self {
        Pattern {
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
        }
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            *b = self.state as u8;
        }
    }
}

fn serve(addr: SocketAddr, mode: &str) {
    let listener = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    println!("READY");
    std::io::stdout().flush().ok();
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let mode = mode.to_string();
        std::thread::spawn(move || {
            if let Some(name) = mode.strip_prefix("hello:") {
                let _ = conn.write_all(format!("{name}\n").as_bytes());
                echo(conn);
            } else if let Some(n) = mode.strip_prefix("sink-reply:") {
                let n: usize = n.parse().expect("sink-reply byte count");
                let mut sink = [0u8; 65536];
                while matches!(read_ready(&mut conn, &mut sink), Ok(k) if k > 0) {}
                let mut reply = vec![0u8; n];
                Pattern::new(7).fill(&mut reply);
                let _ = conn.write_all(&reply);
                let _ = conn.shutdown(Shutdown::Write);
            } else {
                echo(conn);
            }
        });
    }
}

/// Echoes until EOF, then half-closes.
fn echo(mut conn: TcpStream) {
    let mut buf = vec![0u8; 65536];
    loop {
        match read_ready(&mut conn, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if conn.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
    let _ = conn.shutdown(Shutdown::Write);
}

fn echo_client(addr: SocketAddr, bytes: usize, chunk: usize, conns: usize) {
    let handles: Vec<_> = (0..conns)
        .map(|i| std::thread::spawn(move || echo_one(addr, bytes, chunk, i as u64)))
        .collect();
    let mut errors = Vec::new();
    let mut total = 0usize;
    let mut peer = String::new();
    for h in handles {
        match h.join().expect("client thread") {
            Ok((n, p)) => {
                total += n;
                peer = p;
            }
            Err(e) => errors.push(e),
        }
    }
    println!(
        "{}",
        json!({"ok": errors.is_empty(), "bytes": total, "errors": errors, "peer": peer})
    );
}

/// Sends `bytes` in `chunk`-sized writes while verifying the echo; half-closes
/// after the last write and expects the echo to finish and EOF to follow.
fn echo_one(
    addr: SocketAddr,
    bytes: usize,
    chunk: usize,
    seed: u64,
) -> Result<(usize, String), String> {
    let conn = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    conn.set_read_timeout(Some(Duration::from_secs(60))).ok();
    let peer = conn.peer_addr().map(|p| p.to_string()).unwrap_or_default();
    let mut writer = conn.try_clone().map_err(|e| e.to_string())?;
    let w = std::thread::spawn(move || -> Result<(), String> {
        let mut pat = Pattern::new(seed);
        let mut buf = vec![0u8; chunk];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk);
            pat.fill(&mut buf[..n]);
            writer
                .write_all(&buf[..n])
                .map_err(|e| format!("write: {e}"))?;
            left -= n;
        }
        writer
            .shutdown(Shutdown::Write)
            .map_err(|e| format!("shutdown: {e}"))
    });
    let mut reader = conn;
    let mut pat = Pattern::new(seed);
    let mut got = vec![0u8; 65536];
    let mut want = vec![0u8; 65536];
    let mut seen = 0usize;
    loop {
        let n = read_ready(&mut reader, &mut got)
            .map_err(|e| format!("read after {seen} bytes: {e}"))?;
        if n == 0 {
            break;
        }
        if seen + n > bytes {
            return Err(format!("received {} bytes, sent {bytes}", seen + n));
        }
        pat.fill(&mut want[..n]);
        if got[..n] != want[..n] {
            let at = got[..n]
                .iter()
                .zip(&want[..n])
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            return Err(format!("corrupted byte at offset {}", seen + at));
        }
        seen += n;
    }
    w.join().map_err(|_| "writer panicked".to_string())??;
    if seen != bytes {
        return Err(format!("echo ended after {seen} of {bytes} bytes"));
    }
    Ok((seen, peer))
}

fn hello_client(addr: SocketAddr, count: usize) {
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    let mut peers: BTreeMap<String, usize> = BTreeMap::new();
    let mut errors = Vec::new();
    for _ in 0..count {
        match TcpStream::connect(addr) {
            Ok(mut conn) => {
                conn.set_read_timeout(Some(Duration::from_secs(10))).ok();
                let peer = conn.peer_addr().map(|p| p.to_string()).unwrap_or_default();
                *peers.entry(peer).or_default() += 1;
                let mut line = Vec::new();
                let mut byte = [0u8; 1];
                loop {
                    match read_ready(&mut conn, &mut byte) {
                        Ok(1) if byte[0] != b'\n' => line.push(byte[0]),
                        Ok(_) => break,
                        Err(e) => {
                            errors.push(e.to_string());
                            break;
                        }
                    }
                }
                *names
                    .entry(String::from_utf8_lossy(&line).into_owned())
                    .or_default() += 1;
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    println!(
        "{}",
        json!({"names": names, "peers": peers, "errors": errors})
    );
}

fn send(addr: SocketAddr, bytes: usize) {
    let mut conn = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    conn.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let mut buf = vec![0u8; bytes];
    Pattern::new(3).fill(&mut buf);
    conn.write_all(&buf).expect("write");
    conn.shutdown(Shutdown::Write).expect("shutdown");
    let mut received = 0usize;
    let mut chunk = vec![0u8; 65536];
    loop {
        match read_ready(&mut conn, &mut chunk).expect("read reply") {
            0 => break,
            n => received += n,
        }
    }
    drop(conn);
    println!("{}", json!({"sent": bytes, "received": received}));
}

fn connect(addr: SocketAddr) {
    match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
        Ok(conn) => {
            let peer = conn.peer_addr().map(|p| p.to_string()).unwrap_or_default();
            println!("{}", json!({"ok": true, "peer": peer}));
        }
        Err(e) => println!(
            "{}",
            json!({"ok": false, "errno": e.raw_os_error(), "error": e.to_string()})
        ),
    }
}

/// Connects to a `hello:` server every 20 ms for `seconds` and records, for
/// each attempt, when it started (Unix ms) and which backend answered or
/// what failed: a timeline of what the datapath did.
fn watch_client(addr: SocketAddr, seconds: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(seconds as u64);
    let mut samples = Vec::new();
    while std::time::Instant::now() < deadline && samples.len() < 100_000 {
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let outcome = (|| -> Result<String, String> {
            let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                .map_err(|e| format!("connect: {e}"))?;
            conn.set_read_timeout(Some(Duration::from_secs(5))).ok();
            let mut line = Vec::new();
            let mut byte = [0u8; 1];
            loop {
                match read_ready(&mut conn, &mut byte).map_err(|e| format!("read: {e}"))? {
                    1 if byte[0] != b'\n' => line.push(byte[0]),
                    _ => break,
                }
            }
            if line.is_empty() {
                return Err("closed without a greeting".into());
            }
            Ok(String::from_utf8_lossy(&line).into_owned())
        })();
        match outcome {
            Ok(name) => samples.push(json!({"at": at, "backend": name})),
            Err(e) => samples.push(json!({"at": at, "error": e})),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("{}", json!({"samples": samples}));
}

/// Makes one short request after another for `seconds` (at most 100,000),
/// each a new connection sending 64 bytes and checking the echo.
fn repeat_client(addr: SocketAddr, seconds: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(seconds as u64);
    let (mut ok, mut failed) = (0u64, 0u64);
    let mut errors = Vec::new();
    while std::time::Instant::now() < deadline && ok + failed < 100_000 {
        let one = || -> Result<(), String> {
            let mut conn = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
            conn.set_read_timeout(Some(Duration::from_secs(10))).ok();
            let msg = [0x5au8; 64];
            conn.write_all(&msg).map_err(|e| format!("write: {e}"))?;
            conn.shutdown(Shutdown::Write)
                .map_err(|e| format!("shutdown: {e}"))?;
            let mut got = Vec::new();
            let mut buf = [0u8; 256];
            loop {
                match read_ready(&mut conn, &mut buf).map_err(|e| format!("read: {e}"))? {
                    0 => break,
                    n => got.extend_from_slice(&buf[..n]),
                }
            }
            if got != msg {
                return Err(format!("echo of {} bytes", got.len()));
            }
            Ok(())
        };
        match one() {
            Ok(()) => ok += 1,
            Err(e) => {
                failed += 1;
                if errors.len() < 10 {
                    errors.push(e);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("{}", json!({"ok": ok, "failed": failed, "errors": errors}));
}

/// Sends `marker` `count` times, holds the connection open for `hold_ms`
/// (so observers can see it live), then half-closes and checks the echo.
fn marker_client(addr: SocketAddr, marker: &str, count: usize, hold_ms: usize) {
    let result = (|| -> Result<usize, String> {
        let mut conn = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
        conn.set_read_timeout(Some(Duration::from_secs(30))).ok();
        let payload = marker.repeat(count);
        conn.write_all(payload.as_bytes())
            .map_err(|e| format!("write: {e}"))?;
        std::thread::sleep(Duration::from_millis(hold_ms as u64));
        conn.shutdown(Shutdown::Write)
            .map_err(|e| format!("shutdown: {e}"))?;
        let mut echoed = Vec::new();
        let mut buf = vec![0u8; 65536];
        loop {
            match read_ready(&mut conn, &mut buf).map_err(|e| format!("read: {e}"))? {
                0 => break,
                n => echoed.extend_from_slice(&buf[..n]),
            }
        }
        if echoed != payload.as_bytes() {
            return Err(format!(
                "echo differs: {} bytes back of {}",
                echoed.len(),
                payload.len()
            ));
        }
        Ok(echoed.len())
    })();
    match result {
        Ok(n) => println!("{}", json!({"ok": true, "bytes": n})),
        Err(e) => println!("{}", json!({"ok": false, "error": e})),
    }
}
