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

mod clients;
mod http;
mod orchestrate;
mod server;

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
