//! End-to-end tunnel tests over real loopback sockets and real TLS:
//! app -> outbound -> mTLS HTTP/2 CONNECT -> inbound -> echo workload.

#[path = "support/harness.rs"]
mod harness;

use std::collections::HashSet;
use std::time::Duration;

use harness::{Fixture, FixtureOptions, STEP_TIMEOUT, eventually, pattern};
use nodemesh_proxy::metrics::ConnKind;
use nodemesh_proxy::tunnel::LocalDelivery;
use nodemesh_proxy::tunnel::registry::Direction;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mebibyte_round_trip_and_identity_seen_by_server() {
    let fx = Fixture::new(FixtureOptions::default()).await;
    let payload = pattern(1024 * 1024, 7);
    let echoed = fx.round_trip(&payload).await.unwrap();
    assert_eq!(echoed.len(), payload.len());
    assert!(echoed == payload, "payload corrupted");

    let seen = fx.recording.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].source.as_ref(), Some(&fx.source));
    assert_eq!(seen[0].destination, fx.destination);
    assert_eq!(seen[0].destination_addr, fx.echo_addr);
    let client_serial = fx.client.manager.current(&fx.source).unwrap();
    assert_eq!(
        seen[0].source_cert_serial.as_deref(),
        Some(client_serial.serial())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_small_writes_and_half_close() {
    let fx = Fixture::new(FixtureOptions::default()).await;
    let (app, task) = fx.app_connection(fx.route()).await;
    let (mut read, mut write) = app.into_split();
    let writer = tokio::spawn(async move {
        let mut sent = Vec::new();
        for i in 0..2000u32 {
            let chunk = format!("msg-{i};");
            write.write_all(chunk.as_bytes()).await.unwrap();
            sent.extend_from_slice(chunk.as_bytes());
        }
        // Half-close: the echo side sees EOF, and its replies still arrive.
        write.shutdown().await.unwrap();
        sent
    });
    let mut echoed = Vec::new();
    tokio::time::timeout(STEP_TIMEOUT, read.read_to_end(&mut echoed))
        .await
        .expect("echo timed out")
        .unwrap();
    let sent = writer.await.unwrap();
    assert_eq!(echoed, sent);
    let stats = task.await.unwrap().unwrap();
    assert_eq!(stats.to_destination, sent.len() as u64);
    assert_eq!(stats.from_destination, sent.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_from_the_destination_side() {
    // A server that answers and closes without waiting for the client's EOF.
    let fx = Fixture::new(FixtureOptions::default()).await;
    let greeter = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let greeter_addr = greeter.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut tcp, _) = greeter.accept().await.unwrap();
        tcp.write_all(b"hello").await.unwrap();
        tcp.shutdown().await.unwrap();
        // Keep reading after our half-close: the client still sends.
        let mut got = Vec::new();
        tcp.read_to_end(&mut got).await.unwrap();
        got
    });
    let mut route = fx.route();
    route.original_dst = greeter_addr;
    let (mut app, task) = fx.app_connection(route).await;
    let mut hello = [0u8; 5];
    app.read_exact(&mut hello).await.unwrap();
    assert_eq!(&hello, b"hello");
    let mut rest = Vec::new();
    assert_eq!(
        app.read_to_end(&mut rest).await.unwrap(),
        0,
        "EOF after reply"
    );
    app.write_all(b"late data").await.unwrap();
    app.shutdown().await.unwrap();
    let got = tokio::time::timeout(STEP_TIMEOUT, server)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, b"late data");
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_share_one_tls_connection_and_registry_shows_tls() {
    let fx = Fixture::new(FixtureOptions::default()).await;
    const STREAMS: usize = 20;
    let mut apps = Vec::new();
    for _ in 0..STREAMS {
        apps.push(fx.app_connection(fx.route()).await);
    }
    // All streams live at once: send a first chunk on each, see it echoed.
    for (app, _) in apps.iter_mut() {
        app.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        tokio::time::timeout(STEP_TIMEOUT, app.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf, b"ping");
    }
    let client_view = fx.client.registry.snapshot();
    let outbound_streams: Vec<_> = client_view
        .streams
        .iter()
        .filter(|s| s.direction == Direction::Outbound)
        .collect();
    assert_eq!(outbound_streams.len(), STREAMS);
    let tunnel_ids: HashSet<_> = outbound_streams.iter().map(|s| s.tunnel_id).collect();
    assert_eq!(tunnel_ids.len(), 1, "streams spread over {tunnel_ids:?}");
    assert_eq!(client_view.tunnels.len(), 1);
    let tunnel = &client_view.tunnels[0];
    assert_eq!(tunnel.meta.tls_version, "TLSv1_3");
    assert_eq!(tunnel.meta.cipher_suite, "TLS13_AES_128_GCM_SHA256");
    assert_eq!(tunnel.meta.destination, fx.destination);
    assert_eq!(tunnel.meta.peer_addr, fx.tunnel_addr);

    let server_view = fx.server.registry.snapshot();
    assert_eq!(server_view.tunnels.len(), 1);
    assert_eq!(server_view.tunnels[0].meta.source, fx.source);
    assert!(
        eventually(Duration::from_secs(5), || {
            fx.server.registry.snapshot().streams.len() == STREAMS
        })
        .await
    );
    for s in &fx.server.registry.snapshot().streams {
        assert_eq!(s.source.as_ref(), Some(&fx.source));
        assert_eq!(s.tls_version, "TLSv1_3");
        assert_eq!(s.cipher_suite, "TLS13_AES_128_GCM_SHA256");
        assert_eq!(s.bytes_to_destination, 4);
        assert_eq!(s.bytes_from_destination, 4);
    }
    // The admin endpoint serves this as JSON.
    let json = serde_json::to_value(&client_view).unwrap();
    assert_eq!(json["tunnels"][0]["tls_version"], "TLSv1_3");
    assert_eq!(json["tunnels"][0]["source"], fx.source.to_string());

    for (mut app, task) in apps {
        app.shutdown().await.unwrap();
        let mut rest = Vec::new();
        app.read_to_end(&mut rest).await.unwrap();
        task.await.unwrap().unwrap();
    }
    assert_eq!(fx.client.metrics.opened_count(ConnKind::TunnelOutbound), 1);
    assert_eq!(
        fx.client.metrics.opened_count(ConnKind::StreamOutbound),
        STREAMS as u64
    );
    assert_eq!(fx.server.metrics.handshake_count("inbound", "ok"), 1);
    assert!(
        eventually(Duration::from_secs(5), || fx
            .client
            .registry
            .snapshot()
            .streams
            .is_empty())
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_delivery_authorizes_and_splices_in_plaintext() {
    let fx = Fixture::new(FixtureOptions::default()).await;
    let local = LocalDelivery::new(
        fx.recording.clone(),
        fx.server.registry.clone(),
        fx.server.metrics.clone(),
        Duration::from_secs(5),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut app = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (accepted, _) = listener.accept().await.unwrap();
    let delivery = {
        let local = local.clone();
        let (src, dst, target) = (fx.source.clone(), fx.destination.clone(), fx.echo_addr);
        tokio::spawn(async move { local.deliver(accepted, Some(src), dst, target).await })
    };
    app.write_all(b"same node").await.unwrap();
    app.shutdown().await.unwrap();
    let mut echoed = Vec::new();
    app.read_to_end(&mut echoed).await.unwrap();
    assert_eq!(echoed, b"same node");
    let stats = delivery.await.unwrap().unwrap();
    assert_eq!(stats.to_destination, 9);
    let seen = fx.recording.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].source.as_ref(), Some(&fx.source));
    assert_eq!(seen[0].source_cert_serial, None);
    assert_eq!(fx.server.metrics.opened_count(ConnKind::Local), 1);

    // The same path refuses what authorization refuses.
    fx.authz
        .set_default(nodemesh_proxy::authz::DefaultAction::Deny);
    let (client_end, _server_end) = tokio::io::duplex(64);
    let err = local
        .deliver(
            client_end,
            Some(fx.source.clone()),
            fx.destination.clone(),
            fx.echo_addr,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            nodemesh_proxy::tunnel::Error::Denied {
                reason: "default_deny",
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_identities_never_share_a_tls_connection() {
    let fx = Fixture::new(FixtureOptions::default()).await;
    let other = harness::id("ns/client/sa/other");
    fx.client.manager.add_identity(&other).unwrap();
    for round in 0..3u32 {
        for source in [&fx.source, &other] {
            let payload = pattern(100, round);
            assert_eq!(
                fx.round_trip_as(fx.route_from(source), &payload)
                    .await
                    .unwrap(),
                payload
            );
        }
    }
    assert_eq!(fx.client.metrics.opened_count(ConnKind::TunnelOutbound), 2);
    let seen: Vec<_> = fx
        .recording
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.source.clone().unwrap())
        .collect();
    assert_eq!(seen.len(), 6);
    assert_eq!(seen.iter().filter(|s| **s == other).count(), 3);
    assert_eq!(seen.iter().filter(|s| **s == fx.source).count(), 3);
    // A departed source's pooled connection is dropped with it.
    fx.outbound.forget_source(&other);
    assert!(
        eventually(Duration::from_secs(5), || {
            fx.client
                .registry
                .snapshot()
                .tunnels
                .iter()
                .all(|t| t.meta.source != other)
        })
        .await
    );
}

/// A second inbound listener on the fixture's server node, stoppable.
async fn drainable_inbound(
    fx: &Fixture,
    drain_timeout: Duration,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    use nodemesh_proxy::tunnel::{Inbound, InboundConfig};
    let inbound = Inbound::new(
        fx.server.manager.clone(),
        fx.recording.clone(),
        fx.server.registry.clone(),
        fx.server.metrics.clone(),
        InboundConfig {
            drain_timeout,
            ..InboundConfig::default()
        },
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        inbound
            .serve_until(listener, async {
                let _ = stopped.await;
            })
            .await
    });
    (addr, stop, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_open_streams_and_refuses_new_connections() {
    let fx = Fixture::new(FixtureOptions::default()).await;
    let (addr, stop, serving) = drainable_inbound(&fx, Duration::from_secs(60)).await;
    let mut route = fx.route();
    route.peer = addr;
    let (mut app, task) = fx.app_connection(route).await;
    app.write_all(b"before").await.unwrap();
    let mut buf = [0u8; 6];
    app.read_exact(&mut buf).await.unwrap();

    stop.send(()).unwrap();
    assert!(
        eventually_async(Duration::from_secs(5), || async {
            TcpStream::connect(addr).await.is_err()
        })
        .await,
        "listener still accepting after shutdown"
    );
    // The stream opened before the shutdown keeps working during the drain.
    app.write_all(b"during").await.unwrap();
    app.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"during");
    assert!(
        !serving.is_finished(),
        "drain ended with a stream still open"
    );
    app.shutdown().await.unwrap();
    let mut rest = Vec::new();
    app.read_to_end(&mut rest).await.unwrap();
    task.await.unwrap().unwrap();
    // With its last stream done, the drain completes well before its limit.
    tokio::time::timeout(Duration::from_secs(10), serving)
        .await
        .expect("drain did not complete after the last stream closed")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_timeout_closes_streams_that_do_not_finish() {
    let fx = Fixture::new(FixtureOptions::default()).await;
    let (addr, stop, serving) = drainable_inbound(&fx, Duration::from_secs(1)).await;
    let mut route = fx.route();
    route.peer = addr;
    let (mut app, task) = fx.app_connection(route).await;
    app.write_all(b"x").await.unwrap();
    let mut buf = [0u8; 1];
    app.read_exact(&mut buf).await.unwrap();
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), serving)
        .await
        .expect("drain timeout not enforced")
        .unwrap();
    // The application sees its connection end.
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(STEP_TIMEOUT, app.read_to_end(&mut rest)).await;
    assert!(ended.is_ok(), "application connection left hanging");
    let _ = tokio::time::timeout(STEP_TIMEOUT, task).await.unwrap();
}

async fn eventually_async<F, Fut>(limit: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_pooled_connections_are_closed_and_replaced() {
    use nodemesh_proxy::tunnel::{Outbound, OutboundConfig};
    let fx = Fixture::new(FixtureOptions::default()).await;
    let outbound = Outbound::new(
        fx.client.manager.clone(),
        fx.client.registry.clone(),
        fx.client.metrics.clone(),
        OutboundConfig {
            idle_timeout: Some(Duration::from_millis(300)),
            ..OutboundConfig::default()
        },
    );
    let round_trip = |payload: &'static [u8], hold: Duration| {
        let outbound = outbound.clone();
        let route = fx.route();
        async move {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let mut app = TcpStream::connect(listener.local_addr().unwrap())
                .await
                .unwrap();
            let (accepted, _) = listener.accept().await.unwrap();
            let task = tokio::spawn(async move { outbound.proxy(accepted, route).await });
            app.write_all(payload).await.unwrap();
            tokio::time::sleep(hold).await;
            app.shutdown().await.unwrap();
            let mut echoed = Vec::new();
            app.read_to_end(&mut echoed).await.unwrap();
            task.await.unwrap().unwrap();
            echoed
        }
    };
    // A stream held open past the idle timeout keeps its connection pooled:
    // the next stream, right after, reuses it.
    let hold = Duration::from_millis(700);
    assert_eq!(round_trip(b"first", hold).await, b"first");
    assert_eq!(round_trip(b"again", Duration::ZERO).await, b"again");
    assert_eq!(fx.client.metrics.opened_count(ConnKind::TunnelOutbound), 1);
    assert!(
        eventually(Duration::from_secs(5), || {
            fx.client.registry.snapshot().tunnels.is_empty()
                && fx.server.registry.snapshot().tunnels.is_empty()
        })
        .await,
        "idle tunnel not closed on both sides"
    );
    assert_eq!(round_trip(b"second", Duration::ZERO).await, b"second");
    assert_eq!(fx.client.metrics.opened_count(ConnKind::TunnelOutbound), 2);
}
