//! `nm-load`: nodemesh's benchmark load generator and the orchestration
//! behind `cargo xtask bench`.
//!
//! `nm-load bench` builds a two-node test cluster (network namespaces, veth
//! pairs, cgroups; see the `nodemesh-tests` library), starts servers in two
//! pods, and runs every workload against every scenario, interleaved round
//! by round: direct pod-to-pod without agents, same-node mesh with and
//! without the sockmap fast path, and cross-node mesh with mTLS. It writes
//! one JSON document of raw results; `cargo xtask bench` turns it into the
//! report. The other subcommands run inside pods and print one JSON line.
//!
//! ```text
//! nm-load bench [--quick] --out <file>
//! nm-load serve <ip>                                      # echo :8080, sink :8081, HTTP/1.1 :8082
//! nm-load rr <addr> <bytes> <ms>                          # TCP request/response latency
//! nm-load http <addr> <rate> <ms> <bytes> <conns>         # open-loop HTTP/1.1, corrected latency
//! nm-load bulk <addr> <streams> <ms>                      # bulk throughput into the sink
//! nm-load connrate <addr> <ms>                            # sequential new connections
//! nm-load hold <addr> <conns> <max-ms>                    # open idle connections until stdin closes
//! ```
//!
//! Reads treat `EAGAIN` the way event loops do (see
//! [`nodemesh_tests::read_ready`]): sockets in a sockmap can return it from a
//! blocking read.

use std::net::SocketAddr;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// Echo port of `nm-load serve`: request/response, new connections, idle connections.
const ECHO_PORT: u16 = 8080;
/// Sink port: reads to EOF, then answers with the byte count.
const SINK_PORT: u16 = 8081;
/// HTTP/1.1 port: echoes the request body.
const HTTP_PORT: u16 = 8082;
/// Upper bound of every subcommand's work, whatever its arguments say.
const HARD_LIMIT: Duration = Duration::from_secs(120);

fn main() {
    raise_nofile();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or_else(|| usage());
    let num = |i: usize| arg(i).parse::<u64>().unwrap_or_else(|_| usage());
    let addr = |i: usize| arg(i).parse::<SocketAddr>().unwrap_or_else(|_| usage());
    let out = match arg(0) {
        "sweep" => {
            nodemesh_tests::sweep_stale();
            return;
        }
        "bench" => {
            if let Err(e) = orchestrate::run(&args[1..]) {
                eprintln!("nm-load bench: {e:#}");
                std::process::exit(1);
            }
            return;
        }
        "serve" => server::run(arg(1).parse().unwrap_or_else(|_| usage())),
        "rr" => clients::rr(addr(1), num(2) as usize, ms(num(3))),
        "http" => http::run(
            addr(1),
            num(2),
            ms(num(3)),
            num(4) as usize,
            num(5) as usize,
        ),
        "bulk" => clients::bulk(addr(1), num(2) as usize, ms(num(3))),
        "connrate" => clients::connrate(addr(1), ms(num(2))),
        "hold" => clients::hold(addr(1), num(2) as usize, ms(num(3))),
        _ => usage(),
    };
    println!("{out}");
}

fn usage() -> ! {
    eprintln!("usage: see the module documentation of nm-load");
    std::process::exit(64)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n).min(HARD_LIMIT)
}

/// Raises the soft open-file limit to the hard limit (servers and `hold`
/// keep thousands of sockets; children, agents included, inherit it).
fn raise_nofile() {
    // SAFETY: plain system calls on a local struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// A latency histogram in nanoseconds, 1 ns to 100 s, three significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
}

/// The histogram as `[[value_ns, count], ...]`, so runs can be merged exactly.
fn export(h: &Histogram<u64>) -> Value {
    let buckets: Vec<Value> = h
        .iter_recorded()
        .map(|v| json!([v.value_iterated_to(), v.count_at_value()]))
        .collect();
    json!({
        "count": h.len(),
        "p50_us": h.value_at_quantile(0.50) as f64 / 1e3,
        "p99_us": h.value_at_quantile(0.99) as f64 / 1e3,
        "p999_us": h.value_at_quantile(0.999) as f64 / 1e3,
        "buckets": buckets,
    })
}

/// Servers: echo, sink and HTTP/1.1 echo on one tokio runtime.
mod server {
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
}

/// Blocking clients: request/response, bulk, new connections, idle connections.
mod clients {
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
}

/// Open-loop HTTP/1.1 at a constant rate; latency counts from each
/// request's intended send time (coordinated omission corrected).
mod http {
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
}

/// The `bench` subcommand: cluster, agents, scenarios, rounds.
mod orchestrate {
    use std::collections::BTreeMap;
    use std::io::{BufRead as _, BufReader};
    use std::net::{Ipv4Addr, SocketAddr};
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use anyhow::{Context as _, bail};
    use hdrhistogram::Histogram;
    use nodemesh_tests::agent::{AgentProcess, ca_init};
    use nodemesh_tests::mesh::{PodSpec, TempDir, mesh_args, pod_yaml};
    use nodemesh_tests::{Cluster, Pod, PodProcess, pod::run_json};
    use serde_json::{Value, json};

    use super::{ECHO_PORT, HTTP_PORT, SINK_PORT, histogram};

    /// How long each workload runs, and how many rounds.
    struct Plan {
        rounds: usize,
        rr_ms: u64,
        http_ms: u64,
        http_rate: u64,
        http_conns: u64,
        bulk_ms: u64,
        connrate_ms: u64,
        hold_conns: usize,
    }

    impl Plan {
        fn new(quick: bool) -> Self {
            if quick {
                Plan {
                    rounds: 1,
                    rr_ms: 1500,
                    http_ms: 3000,
                    http_rate: 1000,
                    http_conns: 8,
                    bulk_ms: 1500,
                    connrate_ms: 1000,
                    hold_conns: 500,
                }
            } else {
                Plan {
                    rounds: 2,
                    rr_ms: 4000,
                    http_ms: 10_000,
                    http_rate: 1000,
                    http_conns: 8,
                    bulk_ms: 3000,
                    connrate_ms: 3000,
                    hold_conns: 1000,
                }
            }
        }
    }

    /// The scenarios, in the order each round runs them.
    const SCENARIOS: [(&str, &str); 5] = [
        ("a-same", "direct, same node (no agent)"),
        ("a-cross", "direct, cross node (no agent)"),
        ("b-sockmap", "mesh same node, --sockmap fast path"),
        ("c-same", "mesh same node, fast path off"),
        ("d-cross-mtls", "mesh cross node, mTLS (L4)"),
    ];

    /// A scratch directory removed on drop.
    /// Runs `f` with the calling thread pinned to `cpu`, then restores the
    /// previous mask. Children spawned inside inherit the pin.
    fn on_cpu<T>(cpu: usize, f: impl FnOnce() -> T) -> T {
        use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
        use nix::unistd::Pid;
        let before = sched_getaffinity(Pid::from_raw(0)).expect("sched_getaffinity");
        let mut set = CpuSet::new();
        set.set(cpu).expect("cpu index");
        sched_setaffinity(Pid::from_raw(0), &set).expect("sched_setaffinity");
        let out = f();
        let _ = sched_setaffinity(Pid::from_raw(0), &before);
        out
    }

    /// `nm-load <args>` inside a pod's cgroup and network namespace.
    fn pod_cmd(pod: &Pod, args: &[String]) -> Command {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        nodemesh_tests::pod::command_for(
            &std::env::current_exe().expect("own path"),
            &pod.cgroup,
            pod.netns.file(),
            &args,
        )
    }

    fn cluster_yaml(cluster: &Cluster) -> String {
        let mut y = String::from(
            "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n  labels: {nodemesh.io/mesh: enabled}\n",
        );
        for (n, node) in cluster.nodes.iter().enumerate() {
            for p in &node.pods {
                let node_name = format!("node-{}", n + 1);
                y.push_str(&pod_yaml(&PodSpec {
                    version: None,
                    name: &p.name,
                    sa: &p.name,
                    app: &p.name,
                    ip: p.ip.to_string(),
                    host_ip: node.link_ip.to_string(),
                    node: &node_name,
                    cgroup: nodemesh_tests::rel_cgroup(&p.cgroup),
                }));
            }
        }
        y
    }

    /// Process ids in a cgroup (the agents: one process each).
    fn pids(cgroup: &Path) -> Vec<i32> {
        std::fs::read_to_string(cgroup.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// utime + stime of a process, in seconds.
    fn cpu_secs(pid: i32) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        // After the command name: state is field 3, utime 14, stime 15.
        let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        ticks as f64 / hz
    }

    /// VmRSS of a process, in KiB.
    fn rss_kib(pid: i32) -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    /// The running agents of a scenario.
    struct Agents {
        procs: Vec<AgentProcess>,
        cgroups: Vec<PathBuf>,
    }

    impl Agents {
        fn pids(&self) -> Vec<i32> {
            self.cgroups.iter().flat_map(|c| pids(c)).collect()
        }

        fn cpu(&self) -> Vec<f64> {
            self.pids().into_iter().map(cpu_secs).collect()
        }

        fn rss(&self) -> Vec<u64> {
            self.pids().into_iter().map(rss_kib).collect()
        }

        /// The kernel ids and names of the programs the agents loaded.
        fn programs(&self) -> BTreeMap<u32, String> {
            let mut out = BTreeMap::new();
            for agent in &self.procs {
                let response = agent.get("/debug/datapath").unwrap_or_default();
                let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
                let doc: Value = serde_json::from_str(body).unwrap_or(Value::Null);
                for p in doc["programs"].as_array().into_iter().flatten() {
                    if let (Some(id), Some(name)) = (p["id"].as_u64(), p["name"].as_str()) {
                        out.insert(id as u32, name.to_owned());
                    }
                }
            }
            out
        }

        /// SIGTERM (the agent detaches its programs), then wait for the exit.
        fn stop(self) {
            for pid in self.pids() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while !self.pids().is_empty() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            drop(self.procs);
        }
    }

    /// Run time of the agents' kernel programs over one workload: the
    /// kernel's BPF run-time statistics are on while this lives.
    struct KernelStats {
        _enabled: std::os::fd::OwnedFd,
        programs: BTreeMap<u32, String>,
        before: BTreeMap<u32, (u64, u64)>,
    }

    impl KernelStats {
        fn start(agents: &Agents) -> anyhow::Result<Self> {
            let enabled = aya::sys::enable_stats(aya::sys::Stats::RunTime)
                .context("enabling BPF run-time statistics")?;
            let programs = agents.programs();
            let before = Self::read(&programs);
            Ok(KernelStats {
                _enabled: enabled,
                programs,
                before,
            })
        }

        /// (run time in ns, runs) of each program in `programs`.
        fn read(programs: &BTreeMap<u32, String>) -> BTreeMap<u32, (u64, u64)> {
            aya::programs::loaded_programs()
                .filter_map(Result::ok)
                .filter(|p| programs.contains_key(&p.id()))
                .map(|p| (p.id(), (p.run_time().as_nanos() as u64, p.run_count())))
                .collect()
        }

        /// Run time and runs since `start`, summed per program name over the agents.
        fn finish(self) -> Value {
            let after = Self::read(&self.programs);
            let mut by_name: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
            for (id, (ns, runs)) in &after {
                let (ns0, runs0) = self.before.get(id).copied().unwrap_or_default();
                let entry = by_name.entry(&self.programs[id]).or_default();
                entry.0 += ns.saturating_sub(ns0);
                entry.1 += runs.saturating_sub(runs0);
            }
            by_name
                .into_iter()
                .map(|(name, (ns, runs))| (name.to_owned(), json!({"run_ns": ns, "runs": runs})))
                .collect::<serde_json::Map<_, _>>()
                .into()
        }
    }

    struct Bench {
        cluster: Cluster,
        config: TempDir,
        ca: TempDir,
        cpus: [usize; 2],
        _servers: Vec<PodProcess>,
    }

    impl Bench {
        fn new(cpus: [usize; 2]) -> anyhow::Result<Self> {
            let mut cluster = Cluster::new(2);
            cluster.add_pod(0, "client");
            cluster.add_pod(0, "local");
            cluster.add_pod(1, "remote");
            // New-connection runs leave thousands of sockets in TIME_WAIT:
            // widen the port range and allow reuse in the client pod and the
            // node namespace (where agent 1 connects from).
            let sysctl =
                "sysctl -qw net.ipv4.ip_local_port_range='1024 65000' net.ipv4.tcp_tw_reuse=1";
            cluster.pod(0, 0).netns.sh(sysctl);
            cluster.nodes[0].netns.sh(sysctl);
            cluster.nodes[1].netns.sh(sysctl);
            let ca = TempDir::new();
            ca_init(&ca.0.join("ca"));
            let config = TempDir::new();
            std::fs::write(config.0.join("cluster.yaml"), cluster_yaml(&cluster))
                .context("writing cluster.yaml")?;
            let servers = [(0, 1), (1, 0)]
                .into_iter()
                .map(|(n, p)| {
                    let pod = cluster.pod(n, p);
                    on_cpu(cpus[n], || {
                        PodProcess::start_server(pod_cmd(
                            pod,
                            &["serve".into(), pod.ip.to_string()],
                        ))
                    })
                })
                .collect();
            Ok(Bench {
                cluster,
                config,
                ca,
                cpus,
                _servers: servers,
            })
        }

        fn start_agents(&self, sockmap: bool) -> Agents {
            let procs: Vec<AgentProcess> = (0..2)
                .map(|i| {
                    let n = &self.cluster.nodes[i];
                    let mut args: Vec<String> = [
                        "--config",
                        self.config.0.to_str().expect("utf-8 path"),
                        "--node-name",
                        &format!("node-{}", i + 1),
                        "--log",
                        "warn",
                    ]
                    .map(String::from)
                    .to_vec();
                    args.extend(mesh_args(n, &self.ca.0.join("ca")));
                    if sockmap {
                        args.push("--sockmap".into());
                    }
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    on_cpu(self.cpus[i], || AgentProcess::start(n, &args))
                })
                .collect();
            for a in &procs {
                a.wait_for("/debug/state", Duration::from_secs(60), |b| {
                    b.contains("generation: 1") || b.contains("generation: 2")
                });
            }
            Agents {
                procs,
                cgroups: self
                    .cluster
                    .nodes
                    .iter()
                    .map(|n| n.agent_cgroup.clone())
                    .collect(),
            }
        }

        fn client(&self, args: Vec<String>, timeout: Duration) -> Value {
            let t = Instant::now();
            let v = run_json(pod_cmd(self.cluster.pod(0, 0), &args), timeout);
            let brief = match (&v["latency"], &v["gbit_s"], &v["per_s"]) {
                (Value::Object(l), _, _) => {
                    format!("p50 {} us, p99 {} us", l["p50_us"], l["p99_us"])
                }
                (_, Value::Number(g), _) => format!("{g:.3} Gbit/s"),
                (_, _, Value::Number(c)) => format!("{c:.0} conn/s"),
                _ => String::new(),
            };
            eprintln!(
                "    {} {brief} ({:.1} s)",
                args.join(" "),
                t.elapsed().as_secs_f64()
            );
            v
        }

        fn target(&self, cross: bool) -> Ipv4Addr {
            if cross {
                self.cluster.pod(1, 0).ip
            } else {
                self.cluster.pod(0, 1).ip
            }
        }
    }

    fn addr(ip: Ipv4Addr, port: u16) -> String {
        SocketAddr::from((ip, port)).to_string()
    }

    fn s<T: ToString>(v: T) -> String {
        v.to_string()
    }

    /// Runs every workload of one scenario; `agents` is `None` for direct.
    fn scenario(
        b: &Bench,
        p: &Plan,
        cross: bool,
        agents: Option<&Agents>,
    ) -> anyhow::Result<Value> {
        let ip = b.target(cross);
        let pad = Duration::from_secs(30);
        let mut out = serde_json::Map::new();
        // Warm-up (the first mesh connection sets up the tunnel), and a check
        // that traffic passes at all.
        let warm = b.client(vec![s("rr"), addr(ip, ECHO_PORT), s(1), s(500)], pad);
        if warm["latency"]["count"].as_u64().unwrap_or(0) == 0 {
            bail!("no request/response got through to {ip}: {warm}");
        }
        for (name, bytes) in [("rr_1b", 1u64), ("rr_1kib", 1024)] {
            let v = b.client(
                vec![s("rr"), addr(ip, ECHO_PORT), s(bytes), s(p.rr_ms)],
                pad,
            );
            out.insert(name.into(), v);
        }
        let cpu0 = agents.map(Agents::cpu);
        let kernel = agents.map(KernelStats::start).transpose()?;
        let http = b.client(
            vec![
                s("http"),
                addr(ip, HTTP_PORT),
                s(p.http_rate),
                s(p.http_ms),
                s(1024),
                s(p.http_conns),
            ],
            pad,
        );
        let mut http = http;
        if let (Some(a), Some(before)) = (agents, cpu0) {
            let after = a.cpu();
            let deltas: Vec<f64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
            http["agent_cpu_s"] = json!(deltas);
        }
        if let Some(k) = kernel {
            http["kernel_programs"] = k.finish();
        }
        out.insert("http_1kib".into(), http);
        for (name, streams) in [("bulk_1", 1u64), ("bulk_4", 4)] {
            let v = b.client(
                vec![s("bulk"), addr(ip, SINK_PORT), s(streams), s(p.bulk_ms)],
                pad,
            );
            out.insert(name.into(), v);
        }
        let v = b.client(
            vec![s("connrate"), addr(ip, ECHO_PORT), s(p.connrate_ms)],
            pad,
        );
        out.insert("connrate".into(), v);
        if let Some(a) = agents {
            out.insert("hold".into(), hold(b, a, ip, p.hold_conns)?);
        }
        Ok(Value::Object(out))
    }

    /// Agent RSS before and while the client holds `n` idle connections.
    fn hold(b: &Bench, a: &Agents, ip: Ipv4Addr, n: usize) -> anyhow::Result<Value> {
        std::thread::sleep(Duration::from_millis(500));
        let before = a.rss();
        let mut cmd = pod_cmd(
            b.cluster.pod(0, 0),
            &[s("hold"), addr(ip, ECHO_PORT), s(n), s(30_000)],
        );
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().context("spawning nm-load hold")?;
        let mut stdout = BufReader::new(child.stdout.take().context("piped stdout")?);
        let mut line = String::new();
        stdout.read_line(&mut line).context("reading HELD")?;
        let held: u64 = line
            .trim()
            .strip_prefix("HELD ")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        std::thread::sleep(Duration::from_millis(1000));
        let during = a.rss();
        eprintln!("    hold {n}: {held} held; agent RSS {before:?} -> {during:?} KiB");
        drop(child.stdin.take());
        let _ = child.wait();
        Ok(json!({"held": held, "rss_before_kib": before, "rss_held_kib": during}))
    }

    /// Merges the rounds of one (scenario, workload): histograms are merged
    /// exactly, numbers are listed per round.
    fn merge(rounds: &[Value]) -> Value {
        let mut merged = serde_json::Map::new();
        let Some(first) = rounds.first().and_then(Value::as_object) else {
            return Value::Null;
        };
        for key in first.keys() {
            let vals: Vec<&Value> = rounds.iter().filter_map(|r| r.get(key)).collect();
            if key == "latency" {
                let mut h: Histogram<u64> = histogram();
                for v in &vals {
                    for pair in v["buckets"].as_array().into_iter().flatten() {
                        let (val, count) =
                            (pair[0].as_u64().unwrap_or(1), pair[1].as_u64().unwrap_or(0));
                        let _ = h.record_n(val.max(1), count);
                    }
                }
                merged.insert(
                    key.clone(),
                    json!({
                        "count": h.len(),
                        "p50_us": h.value_at_quantile(0.50) as f64 / 1e3,
                        "p99_us": h.value_at_quantile(0.99) as f64 / 1e3,
                        "p999_us": h.value_at_quantile(0.999) as f64 / 1e3,
                        "max_us": h.max() as f64 / 1e3,
                    }),
                );
            } else {
                merged.insert(key.clone(), json!(vals));
            }
        }
        Value::Object(merged)
    }

    /// The 1-minute load average (other work on the machine skews results).
    fn read_loadavg() -> String {
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .unwrap_or("?")
            .to_string()
    }

    /// `nm-load bench [--quick] --out <file>`.
    pub fn run(args: &[String]) -> anyhow::Result<()> {
        nodemesh_tests::require_root();
        let quick = args.iter().any(|a| a == "--quick");
        let out = args
            .iter()
            .position(|a| a == "--out")
            .and_then(|i| args.get(i + 1))
            .context("--out <file> is required")?;
        let plan = Plan::new(quick);
        let ncpu = std::thread::available_parallelism().map_or(1, usize::from);
        let cpus = if ncpu >= 2 { [0, 1] } else { [0, 0] };
        // Every process of the run inherits nice -10, so other work on the
        // machine disturbs the measurement less (the same in every scenario).
        // SAFETY: setpriority on this process with integer arguments.
        let niced = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, -10) } == 0;
        let placement = format!(
            "node 1 (client pod, same-node server pod, agent 1) pinned to CPU {}; node 2 (remote server pod, agent 2) pinned to CPU {}; nice {}",
            cpus[0],
            cpus[1],
            if niced {
                "-10"
            } else {
                "0 (setpriority failed)"
            }
        );
        eprintln!("placement: {placement}");
        let started = Instant::now();
        let mut raw: BTreeMap<&str, BTreeMap<String, Vec<Value>>> = BTreeMap::new();
        let mut idle_rss: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
        let mut loadavg = Vec::new();
        on_cpu(cpus[0], || -> anyhow::Result<()> {
            let bench = Bench::new(cpus)?;
            let mut record = |id: &'static str, v: Value| {
                if let Value::Object(m) = v {
                    for (k, v) in m {
                        raw.entry(id).or_default().entry(k).or_default().push(v);
                    }
                }
            };
            for round in 0..plan.rounds {
                loadavg.push(read_loadavg());
                eprintln!(
                    "round {}/{} ({:.0} s so far)",
                    round + 1,
                    plan.rounds,
                    started.elapsed().as_secs_f64()
                );
                for (id, cross) in [("a-same", false), ("a-cross", true)] {
                    eprintln!("  {id}");
                    record(
                        id,
                        scenario(&bench, &plan, cross, None).with_context(|| id.to_string())?,
                    );
                }
                for sockmap in [true, false] {
                    let agents = bench.start_agents(sockmap);
                    std::thread::sleep(Duration::from_millis(1000));
                    let rss = agents.rss();
                    let ids: &[(&'static str, bool)] = if sockmap {
                        &[("b-sockmap", false)]
                    } else {
                        &[("c-same", false), ("d-cross-mtls", true)]
                    };
                    for &(id, cross) in ids {
                        eprintln!("  {id}");
                        idle_rss.entry(id).or_default().push(json!(rss));
                        let v = scenario(&bench, &plan, cross, Some(&agents));
                        let v = match v {
                            Ok(v) => v,
                            Err(e) => {
                                agents.stop();
                                return Err(e.context(id));
                            }
                        };
                        record(id, v);
                    }
                    agents.stop();
                }
            }
            Ok(())
        })?;
        loadavg.push(read_loadavg());
        let mut results = serde_json::Map::new();
        for (id, workloads) in &raw {
            let mut m = serde_json::Map::new();
            for (w, rounds) in workloads {
                m.insert(w.clone(), merge(rounds));
            }
            if let Some(r) = idle_rss.get(id) {
                m.insert("agent_rss_idle_kib".into(), json!(r));
            }
            results.insert((*id).into(), Value::Object(m));
        }
        let doc = json!({
            "quick": quick,
            "rounds": plan.rounds,
            "placement": placement,
            "http": {"rate": plan.http_rate, "conns": plan.http_conns, "bytes": 1024, "ms": plan.http_ms},
            "durations_ms": {"rr": plan.rr_ms, "http": plan.http_ms, "bulk": plan.bulk_ms, "connrate": plan.connrate_ms},
            "hold_conns": plan.hold_conns,
            "scenarios": SCENARIOS.iter().map(|(id, label)| json!({"id": id, "label": label})).collect::<Vec<_>>(),
            "results": results,
            "loadavg": loadavg,
            "elapsed_s": started.elapsed().as_secs_f64(),
        });
        std::fs::write(out, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("writing {out}"))?;
        eprintln!(
            "raw results in {out} ({:.0} s)",
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }
}
