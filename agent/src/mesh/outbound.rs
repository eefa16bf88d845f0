//! The outbound listener: connections the kernel redirected from meshed pods.

use std::sync::Arc;

use nodemesh_proxy::tunnel::OutboundRoute;
use tokio::net::{TcpListener, TcpStream};
use tracing::Instrument as _;

use super::{Mesh, TUNNEL_PORT};

/// Accepts redirected connections until the task is dropped.
pub async fn serve(mesh: Arc<Mesh>, listener: TcpListener) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(error) => {
                tracing::warn!(%error, "outbound accept failed");
                continue;
            }
        };
        let mesh = mesh.clone();
        let span = tracing::info_span!("outbound", client = %peer);
        tokio::spawn(
            async move {
                if let Err(error) = handle(&mesh, stream).await {
                    tracing::warn!(%error, "outbound connection failed");
                }
            }
            .instrument(span),
        );
    }
}

async fn handle(mesh: &Mesh, stream: TcpStream) -> anyhow::Result<()> {
    let peer = stream.peer_addr()?;
    let local = stream.local_addr()?;
    let Some(orig) = mesh.datapath.take_orig_dst(peer, local)? else {
        anyhow::bail!("no original destination recorded for {peer}: not a redirected connection");
    };
    let dialled = std::net::SocketAddr::new(orig.addr.into(), orig.port);
    let source = mesh
        .source(orig.src_identity)
        .ok_or_else(|| anyhow::anyhow!("unknown source identity number {}", orig.src_identity))?;
    let view = mesh.view.load();
    let target = view
        .resolve(dialled, mesh.options.node_addr)
        .ok_or_else(|| anyhow::anyhow!("no meshed workload behind {dialled}"))?;
    drop(view);
    tracing::debug!(%source, destination = %target.identity, %dialled, to = %target.addr, remote = ?target.remote_node, "routing");
    match target.remote_node {
        None => {
            mesh.local
                .deliver(stream, Some(source), target.identity, target.addr)
                .await?;
        }
        Some(node) => {
            let route = OutboundRoute {
                source,
                destination: target.identity,
                peer: std::net::SocketAddr::new(node, TUNNEL_PORT),
                original_dst: target.addr,
            };
            mesh.outbound.proxy(stream, route).await?;
        }
    }
    Ok(())
}
