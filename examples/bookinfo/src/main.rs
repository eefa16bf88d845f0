//! `bookinfo`: a small Bookinfo-like sample app, one binary per pod role.
//!
//! ```text
//! bookinfo frontend <listen> <reviews-addr>         HTTP/1.1; calls reviews per request
//! bookinfo reviews <listen> v1|v2 [<ratings-addr>]  HTTP/1.1; v2 calls ratings over gRPC
//! bookinfo ratings <listen>                         gRPC (bookinfo.Ratings/GetRating)
//! bookinfo loadgen <frontend-addr> <requests> <concurrency> [<ratings-addr>]
//! bookinfo get <addr> [<path>]                      one HTTP GET, prints status and body
//! bookinfo rate <ratings-addr>                      one gRPC call, prints the rating
//! ```
//!
//! Servers print `READY` once listening. Every outgoing call opens a new TCP
//! connection, so the mesh balances (and counts) each request on its own.
//! `loadgen` prints one JSON line with what it measured.

mod grpc;
mod http;
mod loadgen;
mod services;

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::{Context as _, bail};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bookinfo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let arg = |i: usize| -> anyhow::Result<&str> {
        args.get(i)
            .map(String::as_str)
            .with_context(|| format!("missing argument {i}; see the module documentation"))
    };
    let addr = |i: usize| -> anyhow::Result<SocketAddr> {
        arg(i)?
            .parse()
            .with_context(|| format!("argument {i} is not an address"))
    };
    let num = |i: usize| -> anyhow::Result<usize> {
        arg(i)?
            .parse()
            .with_context(|| format!("argument {i} is not a number"))
    };
    match arg(0)? {
        "frontend" => rt.block_on(services::frontend(addr(1)?, addr(2)?)),
        "reviews" => {
            let ratings = if args.len() > 3 { Some(addr(3)?) } else { None };
            rt.block_on(services::reviews(addr(1)?, arg(2)?.to_string(), ratings))
        }
        "ratings" => rt.block_on(services::ratings(addr(1)?)),
        "loadgen" => {
            let probe = if args.len() > 4 { Some(addr(4)?) } else { None };
            rt.block_on(loadgen::run(addr(1)?, num(2)?, num(3)?, probe))
        }
        "get" => {
            let path = args.get(2).map(String::as_str).unwrap_or("/");
            let r = rt.block_on(http::get(addr(1)?, path))?;
            println!("{} {}", r.status, r.body.trim_end());
            Ok(())
        }
        "rate" => {
            let stars = rt.block_on(grpc::get_rating(addr(1)?, "0451"))?;
            println!("stars={stars}");
            Ok(())
        }
        other => bail!("unknown command {other:?}; see the module documentation"),
    }
}
