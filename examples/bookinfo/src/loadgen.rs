//! `loadgen`: drives a bounded number of requests at the frontend and prints,
//! as one JSON line, what it measured: the v1/v2 split, success counts,
//! latency percentiles per workload, errors, and whether a direct call to
//! `ratings` (which policy forbids) got through.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::{grpc, http};

/// Most requests one run may make.
const MAX_REQUESTS: usize = 100_000;
/// Most error messages kept as samples.
const MAX_ERROR_SAMPLES: usize = 5;

/// What one request to the frontend gave.
struct Outcome {
    status: Option<u16>,
    latency_us: u64,
    fields: BTreeMap<String, String>,
    error: Option<String>,
}

/// Requests and latencies of one workload, as its caller saw them.
#[derive(Default)]
struct Golden {
    requests: u64,
    ok: u64,
    latencies_us: Vec<u64>,
}

impl Golden {
    fn record(&mut self, ok: bool, latency_us: Option<u64>) {
        self.requests += 1;
        if ok {
            self.ok += 1;
        }
        if let Some(l) = latency_us {
            self.latencies_us.push(l);
        }
    }

    fn summarize(&mut self, measured_by: &str) -> Value {
        self.latencies_us.sort_unstable();
        let pct = |p: f64| -> Value {
            if self.latencies_us.is_empty() {
                return Value::Null;
            }
            let i = ((self.latencies_us.len() as f64 * p).ceil() as usize).saturating_sub(1);
            json!(self.latencies_us[i.min(self.latencies_us.len() - 1)])
        };
        json!({
            "requests": self.requests,
            "ok": self.ok,
            "p50_us": pct(0.50),
            "p90_us": pct(0.90),
            "p99_us": pct(0.99),
            "max_us": self.latencies_us.last(),
            "measured_by": measured_by,
        })
    }
}

/// Runs `requests` requests, `concurrency` at a time, then the policy probe.
pub async fn run(
    frontend: SocketAddr,
    requests: usize,
    concurrency: usize,
    ratings_probe: Option<SocketAddr>,
) -> anyhow::Result<()> {
    let requests = requests.min(MAX_REQUESTS);
    let next = Arc::new(AtomicUsize::new(0));
    let outcomes = Arc::new(Mutex::new(Vec::with_capacity(requests)));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency.clamp(1, 64))
        .map(|_| {
            let (next, outcomes) = (next.clone(), outcomes.clone());
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < requests {
                    let o = one(frontend).await;
                    outcomes.lock().await.push(o);
                }
            })
        })
        .collect();
    for w in workers {
        w.await?;
    }
    let duration_ms = started.elapsed().as_millis();
    let outcomes = std::mem::take(&mut *outcomes.lock().await);

    let mut versions: BTreeMap<String, u64> = BTreeMap::new();
    let mut golden: BTreeMap<&str, Golden> = BTreeMap::new();
    let mut errors: Vec<String> = Vec::new();
    let mut failed = 0u64;
    for o in &outcomes {
        let ok = o.status == Some(200);
        if !ok {
            failed += 1;
            if errors.len() < MAX_ERROR_SAMPLES {
                errors.push(o.error.clone().unwrap_or_else(|| {
                    format!(
                        "HTTP {}: {}",
                        o.status.unwrap_or(0),
                        o.fields.get("error").map_or("", String::as_str)
                    )
                }));
            }
        }
        golden
            .entry("frontend")
            .or_default()
            .record(ok, Some(o.latency_us));
        let num = |k: &str| o.fields.get(k).and_then(|v| v.parse::<u64>().ok());
        if let Some(v) = o.fields.get("version") {
            *versions.entry(v.clone()).or_default() += 1;
            let reviews_ok = ok || o.fields.contains_key("reviews_status");
            let name = if v == "v1" {
                "reviews-v1"
            } else {
                "reviews-v2"
            };
            golden.entry(name).or_default().record(
                reviews_ok && !o.fields.contains_key("error"),
                num("reviews_us"),
            );
        } else if o.status.is_some() || o.error.is_some() {
            *versions.entry("unknown".into()).or_default() += 1;
        }
        if let Some(us) = num("ratings_us") {
            golden.entry("ratings").or_default().record(true, Some(us));
        } else if o.fields.get("error").is_some_and(|e| e == "ratings-failed") {
            golden.entry("ratings").or_default().record(false, None);
        }
    }
    let by = |w: &str| match w {
        "frontend" => "loadgen",
        "ratings" => "reviews-v2",
        _ => "frontend",
    };
    let workloads: BTreeMap<&str, Value> = golden
        .iter_mut()
        .map(|(w, g)| (*w, g.summarize(by(w))))
        .collect();

    let deny_probe = match ratings_probe {
        Some(addr) => match grpc::get_rating(addr, "0451").await {
            Ok(stars) => json!({"target": addr.to_string(), "allowed": true, "stars": stars}),
            Err(e) => {
                json!({"target": addr.to_string(), "allowed": false, "error": format!("{e:#}")})
            }
        },
        None => Value::Null,
    };
    println!(
        "{}",
        json!({
            "requests": outcomes.len(),
            "ok": outcomes.len() as u64 - failed,
            "failed": failed,
            "duration_ms": duration_ms,
            "versions": versions,
            "workloads": workloads,
            "error_samples": errors,
            "deny_probe": deny_probe,
        })
    );
    Ok(())
}

async fn one(frontend: SocketAddr) -> Outcome {
    let start = Instant::now();
    let result = http::get(frontend, "/productpage").await;
    let latency_us = start.elapsed().as_micros() as u64;
    match result {
        Ok(r) => Outcome {
            status: Some(r.status),
            latency_us,
            fields: parse_fields(&r.body),
            error: None,
        },
        Err(e) => Outcome {
            status: None,
            latency_us,
            fields: BTreeMap::new(),
            error: Some(format!("{e:#}")),
        },
    }
}

/// The `key=value` words of a body (a quoted `detail="..."` ends the line).
fn parse_fields(body: &str) -> BTreeMap<String, String> {
    let line = body.lines().next().unwrap_or_default();
    let line = line.split(" detail=").next().unwrap_or_default();
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_parse() {
        let f = parse_fields("version=v2 stars=4 ratings_us=12 reviews_us=40\n");
        assert_eq!(f["version"], "v2");
        assert_eq!(f["ratings_us"], "12");
        let e = parse_fields("version=v2 error=ratings-failed detail=\"a b=c\"\n");
        assert_eq!(e["error"], "ratings-failed");
        assert!(!e.contains_key("b"));
    }
}
