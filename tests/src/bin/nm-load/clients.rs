//! Blocking clients: request/response, bulk, new connections, idle connections.

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{export, histogram};

/// Reads like [`nodemesh_tests::read_ready`] (an `EAGAIN` means "wait and read again"),
/// but gives up with `TimedOut` at `deadline`.
fn read_until(s: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> std::io::Result<usize> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd as _;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        let mut fds = [PollFd::new(s.as_fd(), PollFlags::POLLIN)];
        let ms = left.as_millis().clamp(1, 60_000) as u16;
        if poll(&mut fds, PollTimeout::from(ms)).map_err(std::io::Error::from)? == 0 {
            continue;
        }
        match s.read(buf) {
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) => {}
            r => return r,
        }
    }
}

/// Fills `buf`, failing at EOF or after `timeout`.
fn read_exact(s: &mut TcpStream, buf: &mut [u8], timeout: Duration) -> std::io::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut got = 0;
    while got < buf.len() {
        match read_until(s, &mut buf[got..], deadline)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => got += n,
        }
    }
    Ok(())
}

/// How long a client waits for an answer before counting an error.
const ANSWER: Duration = Duration::from_secs(10);

fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// One connection, `bytes` out and the echo back, as often as fits in `dur`.
pub fn rr(addr: SocketAddr, bytes: usize, dur: Duration) -> Value {
    let mut h = histogram();
    let mut s = connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let out = vec![0x5au8; bytes];
    let mut back = vec![0u8; bytes];
    let end = Instant::now() + dur;
    let mut errors = 0u64;
    while Instant::now() < end {
        let t = Instant::now();
        if s.write_all(&out)
            .and_then(|_| read_exact(&mut s, &mut back, ANSWER))
            .is_err()
        {
            errors += 1;
            break;
        }
        h.saturating_record(t.elapsed().as_nanos() as u64);
    }
    json!({"latency": export(&h), "errors": errors})
}

/// `streams` connections writing into the sink for `dur`; each waits for
/// the server's byte count, so throughput counts delivered bytes only.
pub fn bulk(addr: SocketAddr, streams: usize, dur: Duration) -> Value {
    let start = Instant::now();
    let handles: Vec<_> = (0..streams)
        .map(|_| {
            std::thread::spawn(move || -> std::io::Result<(u64, Duration)> {
                let mut s = connect(addr)?;
                s.set_write_timeout(Some(ANSWER))?;
                let buf = vec![0xa5u8; 128 * 1024];
                let end = Instant::now() + dur;
                while Instant::now() < end {
                    s.write_all(&buf)?;
                }
                s.shutdown(Shutdown::Write)?;
                let mut n = [0u8; 8];
                read_exact(&mut s, &mut n, ANSWER)?;
                Ok((u64::from_le_bytes(n), start.elapsed()))
            })
        })
        .collect();
    let (mut bytes, mut secs, mut errors) = (0u64, 0f64, 0u64);
    for h in handles {
        match h.join() {
            Ok(Ok((b, t))) => {
                bytes += b;
                secs = secs.max(t.as_secs_f64());
            }
            _ => errors += 1,
        }
    }
    json!({"bytes": bytes, "secs": secs, "gbit_s": bytes as f64 * 8.0 / secs.max(1e-9) / 1e9, "errors": errors})
}

/// New connections one after another: connect, 1 byte each way, close.
pub fn connrate(addr: SocketAddr, dur: Duration) -> Value {
    let start = Instant::now();
    let (mut ok, mut errors) = (0u64, 0u64);
    let mut b = [0u8; 1];
    while start.elapsed() < dur && ok < 200_000 && errors < 100 {
        let r = connect(addr).and_then(|mut s| {
            s.write_all(b"x")?;
            read_exact(&mut s, &mut b, ANSWER)
        });
        match r {
            Ok(()) => ok += 1,
            Err(_) => errors += 1,
        }
    }
    let secs = start.elapsed().as_secs_f64();
    json!({"conns": ok, "errors": errors, "secs": secs, "per_s": ok as f64 / secs})
}

/// Opens `n` connections (1 byte echoed on each), prints `HELD <n>`, and
/// keeps them until stdin closes or `max` passes.
pub fn hold(addr: SocketAddr, n: usize, max: Duration) -> Value {
    let start = Instant::now();
    let mut conns = Vec::with_capacity(n);
    let mut b = [0u8; 1];
    let mut errors = 0u64;
    // A connection the mesh does not carry within 2 s counts as an
    // error; three errors end the opening phase (the held count says so).
    while conns.len() < n && errors < 3 && start.elapsed() < max {
        match connect(addr).and_then(|mut s| {
            s.write_all(b"x")?;
            read_exact(&mut s, &mut b, Duration::from_secs(2))?;
            Ok(s)
        }) {
            Ok(s) => conns.push(s),
            Err(_) => errors += 1,
        }
    }
    println!("HELD {}", conns.len());
    std::io::stdout().flush().ok();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = std::io::stdin().read(&mut [0u8; 1]);
        let _ = tx.send(());
    });
    let _ = rx.recv_timeout(max.saturating_sub(start.elapsed()));
    json!({"held": conns.len(), "errors": errors})
}
