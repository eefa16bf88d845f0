//! The three servers: `frontend`, `reviews` (v1, v2) and `ratings`.
//!
//! Bodies are one line of `key=value` words that `loadgen` parses:
//! `version=v2 stars=4 ratings_us=310 reviews_us=1250`.

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Instant;

use anyhow::Context as _;
use tokio::net::{TcpListener, TcpStream};

use crate::{grpc, http};

/// Binds `addr`, prints `READY`, and runs `handle` on every connection.
async fn serve<F, Fut>(addr: SocketAddr, handle: F) -> anyhow::Result<()>
where
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    println!("READY");
    std::io::stdout().flush()?;
    loop {
        let (conn, _) = listener.accept().await.context("accepting")?;
        let task = handle(conn);
        tokio::spawn(async move {
            if let Err(e) = task.await {
                eprintln!("bookinfo: {e:#}");
            }
        });
    }
}

/// `frontend`: answers every request with what `reviews` said, plus how long it took.
pub async fn frontend(listen: SocketAddr, reviews: SocketAddr) -> anyhow::Result<()> {
    serve(listen, move |mut conn| async move {
        let _path = http::read_request(&mut conn).await?;
        let start = Instant::now();
        let result = http::get(reviews, "/reviews/0451").await;
        let us = start.elapsed().as_micros();
        match result {
            Ok(r) if r.status == 200 => {
                let body = format!("{} reviews_us={us}\n", r.body.trim_end());
                http::respond(&mut conn, 200, &body).await
            }
            Ok(r) => {
                let body = format!(
                    "reviews_status={} reviews_us={us} {}\n",
                    r.status,
                    r.body.trim_end()
                );
                http::respond(&mut conn, 502, &body).await
            }
            Err(e) => {
                let body = format!("error=reviews-unreachable detail=\"{e:#}\"\n");
                http::respond(&mut conn, 502, &body).await
            }
        }
    })
    .await
}

/// `reviews`: reports its version; v2 also asks `ratings` for the stars.
pub async fn reviews(
    listen: SocketAddr,
    version: String,
    ratings: Option<SocketAddr>,
) -> anyhow::Result<()> {
    serve(listen, move |mut conn| {
        let version = version.clone();
        async move {
            let _path = http::read_request(&mut conn).await?;
            let Some(ratings) = ratings else {
                let body = format!("version={version} stars=-\n");
                return http::respond(&mut conn, 200, &body).await;
            };
            let start = Instant::now();
            let result = grpc::get_rating(ratings, "0451").await;
            let us = start.elapsed().as_micros();
            match result {
                Ok(stars) => {
                    let body = format!("version={version} stars={stars} ratings_us={us}\n");
                    http::respond(&mut conn, 200, &body).await
                }
                Err(e) => {
                    let body = format!("version={version} error=ratings-failed detail=\"{e:#}\"\n");
                    http::respond(&mut conn, 502, &body).await
                }
            }
        }
    })
    .await
}

/// `ratings`: the gRPC server.
pub async fn ratings(listen: SocketAddr) -> anyhow::Result<()> {
    serve(listen, |conn| grpc::serve_connection(conn, stars)).await
}

/// A product's rating: 1 to 5 stars, fixed per product.
fn stars(product: &str) -> u8 {
    let sum: u32 = product.bytes().map(u32::from).sum();
    (sum % 5) as u8 + 1
}
