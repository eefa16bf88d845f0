//! The admin endpoint: `/healthz` (the process is alive), `/ready` (the
//! kernel programs are attached), `/metrics` (Prometheus text) and
//! `/debug/datapath` (features, counters and flows as JSON),
//! `/debug/connections` (live mTLS tunnels and streams with both SPIFFE ids,
//! TLS version and cipher) and `/debug/state` (the desired state in force).

use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus::{Encoder as _, Registry, TextEncoder};

use nodemesh_state::DesiredState;

use crate::datapath::Datapath;
use crate::mesh::Mesh;
use crate::metrics::DatapathCollector;

/// What the admin endpoint serves from.
#[derive(Clone)]
pub struct AdminState {
    datapath: Arc<Datapath>,
    registry: Registry,
    mesh: Arc<std::sync::OnceLock<Arc<Mesh>>>,
    desired: Arc<arc_swap::ArcSwap<DesiredState>>,
}

impl AdminState {
    /// Registers the datapath's metrics on a fresh registry.
    pub fn new(datapath: Arc<Datapath>) -> anyhow::Result<Self> {
        let registry = Registry::new();
        registry.register(Box::new(DatapathCollector::new(datapath.clone())))?;
        Ok(Self {
            datapath,
            registry,
            mesh: Arc::default(),
            desired: Arc::default(),
        })
    }

    /// Makes the mesh's live connections visible at `/debug/connections`.
    pub fn set_mesh(&self, mesh: Arc<Mesh>) {
        let _ = self.mesh.set(mesh);
    }

    /// Records the desired state in force, shown at `/debug/state`.
    pub fn set_state(&self, state: Arc<DesiredState>) {
        self.desired.store(state);
    }

    /// The registry other modules add their metrics to.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

/// Serves HTTP/1.1 on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, state: AdminState) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&state, req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn route(state: &AdminState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/ready" => text(StatusCode::OK, "ready\n"),
        "/metrics" => {
            let mut buf = Vec::new();
            match TextEncoder::new().encode(&state.registry.gather(), &mut buf) {
                Ok(()) => Response::builder()
                    .header("content-type", "text/plain; version=0.0.4")
                    .body(Full::new(Bytes::from(buf)))
                    .unwrap_or_else(|_| {
                        text(StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n")
                    }),
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
            }
        }
        "/debug/connections" => {
            let snapshot = state.mesh.get().map(|m| m.connections().snapshot());
            json(serde_json::to_string_pretty(&snapshot).map_err(anyhow::Error::from))
        }
        "/debug/state" => json(Ok(format!("{:#?}\n", state.desired.load()))),
        "/debug/datapath" => match debug_json(&state.datapath) {
            Ok(body) => Response::builder()
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))
                .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n")),
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /healthz, /ready, /metrics, /debug/datapath, /debug/connections, /debug/state\n",
        ),
    }
}

fn debug_json(dp: &Datapath) -> anyhow::Result<String> {
    let stats: serde_json::Map<String, serde_json::Value> = dp
        .stats()?
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.into()))
        .collect();
    let flows: Vec<serde_json::Value> = dp
        .flows()?
        .into_iter()
        .map(|(k, s)| {
            serde_json::json!({
                "src_identity": k.src_identity, "dst_identity": k.dst_identity,
                "dst_port": k.dst_port, "direction": crate::metrics::direction(k.direction),
                "opened": s.opened, "closed": s.closed, "refused": s.refused, "denied": s.denied,
                "bytes_sent": s.bytes_sent, "bytes_received": s.bytes_received,
                "packets_sent": s.packets_sent, "packets_received": s.packets_received,
                "retransmits": s.retransmits,
                "srtt_us_avg": s.srtt_us_sum.checked_div(s.srtt_samples).unwrap_or(0),
            })
        })
        .collect();
    Ok(serde_json::to_string_pretty(&serde_json::json!({
        "cgroup": dp.cgroup(),
        "features": dp.features(),
        "degraded": dp.degraded(),
        "programs": dp.programs(),
        "kernel": dp.kernel_report(),
        "stats": stats,
        "flows": flows,
    }))?)
}

fn json(body: anyhow::Result<String>) -> Response<Full<Bytes>> {
    match body {
        Ok(body) => Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n")),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r
}
