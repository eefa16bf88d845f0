//! The mesh end to end on two nodes: real agents in file mode, real mTLS
//! between them, the kernel redirecting meshed connections, policy applied.

use std::time::Duration;

use nodemesh_tests::capture::{Capture, contains};
use nodemesh_tests::mesh::{Layout, MARKER, TIMEOUT, TwoNodes, VIP, metric, write_policy};
#[test]
fn cross_node_traffic_is_mtls_and_the_server_side_sees_the_client_identity() {
    let t = TwoNodes::new(false);
    let capture = Capture::start(&t.cluster.nodes[0].netns, "nml0");
    let client = std::thread::scope(|s| {
        let h = s.spawn(|| {
            t.client(
                0,
                &["marker-client", &format!("{VIP}:80"), MARKER, "200", "1500"],
            )
        });
        // While the connection is open, node 2's agent lists it with both identities.
        let live = t.agents[1].wait_for("/debug/connections", TIMEOUT, |b| {
            b.contains("spiffe://cluster.local/ns/demo/sa/client")
        });
        assert!(
            live.contains("spiffe://cluster.local/ns/demo/sa/server"),
            "{live}"
        );
        assert!(live.contains("TLSv1_3"), "{live}");
        assert!(live.contains("TLS13_AES"), "{live}");
        h.join().unwrap()
    });
    assert_eq!(client["ok"], true, "{client}");
    let wire = capture.stop();
    assert!(
        !wire.is_empty(),
        "traffic crossed the link between the nodes"
    );
    assert!(
        !contains(&wire, MARKER.as_bytes()),
        "the payload never crosses the node link in clear"
    );
    // ServerHello's supported_versions extension selecting TLS 1.3 (0x0304).
    assert!(
        contains(&wire, &[0x00, 0x2b, 0x00, 0x02, 0x03, 0x04]),
        "TLS 1.3 negotiated on the wire"
    );
}

/// Denials so far: connects the source node's kernel refused (identity
/// policy compiled to L4 rules) plus streams the destination agent refused.
fn denials(t: &TwoNodes) -> u64 {
    let kernel = metric(
        &t.agents[0].get("/metrics").unwrap(),
        "nodemesh_datapath_events_total",
        "event=\"policy_denied\"",
    );
    let proxy = metric(
        &t.agents[1].get("/metrics").unwrap(),
        "nodemesh_authz_decisions_total",
        "action=\"deny\"",
    );
    (kernel + proxy) as u64
}

#[test]
fn authorization_allow_deny_and_audit_end_to_end() {
    let t = TwoNodes::new(true);
    let dst = format!("{VIP}:80");
    // ALLOW for the client only: the client passes, the other pod is refused.
    write_policy(&t, "ALLOW");
    t.agents[1].wait_for("/debug/state", TIMEOUT, |b| b.contains("server-policy"));
    let ok = t.client(0, &["marker-client", &dst, "x", "10", "0"]);
    assert_eq!(ok["ok"], true, "allowed: {ok}");
    let refused = t.client(1, &["marker-client", &dst, "x", "10", "0"]);
    assert_eq!(refused["ok"], false, "not in the ALLOW list: {refused}");
    assert_eq!(
        denials(&t),
        1,
        "refused once, in the source node's kernel or by the destination agent"
    );

    // DENY for the client: refused.
    write_policy(&t, "DENY");
    t.agents[1].wait_for("/debug/state", TIMEOUT, |b| b.contains("action: Deny"));
    let denied = t.client(0, &["marker-client", &dst, "x", "10", "0"]);
    assert_eq!(denied["ok"], false, "denied: {denied}");
    assert_eq!(denials(&t), 2);

    // AUDIT: logged and counted, never blocks.
    write_policy(&t, "AUDIT");
    t.agents[1].wait_for("/debug/state", TIMEOUT, |b| b.contains("action: Audit"));
    let audited = t.client(0, &["marker-client", &dst, "x", "10", "0"]);
    assert_eq!(audited["ok"], true, "audit never blocks: {audited}");
    let m = t.agents[1].get("/metrics").unwrap();
    assert!(
        metric(&m, "nodemesh_authz_decisions_total", "action=\"audit\"") >= 1.0,
        "{m}"
    );
}

#[test]
fn same_node_meshed_traffic_is_authorized_and_delivered_locally() {
    let t = TwoNodes::with(Layout {
        server_on_node1: true,
        ..Layout::default()
    });
    let out = std::thread::scope(|s| {
        let h = s.spawn(|| {
            t.client(
                0,
                &["marker-client", &format!("{VIP}:80"), MARKER, "100", "1500"],
            )
        });
        let live = t.agents[0].wait_for("/debug/connections", TIMEOUT, |b| {
            b.contains("\"direction\": \"local\"")
        });
        assert!(
            live.contains("spiffe://cluster.local/ns/demo/sa/client"),
            "{live}"
        );
        assert!(
            live.contains("\"tls_version\": \"none\""),
            "no encryption on the node: {live}"
        );
        h.join().unwrap()
    });
    assert_eq!(out["ok"], true, "{out}");
    let m = t.agents[0].get("/metrics").unwrap();
    assert!(
        metric(&m, "nodemesh_authz_decisions_total", "action=\"allow\"") >= 1.0,
        "{m}"
    );
}

#[test]
fn certificates_rotate_every_five_seconds_without_a_failed_request() {
    let t = TwoNodes::with(Layout {
        agent_args: vec!["--cert-lifetime", "5"],
        ..Layout::default()
    });
    let serials = std::thread::scope(|s| {
        let h = s.spawn(|| t.client(0, &["repeat-client", &format!("{VIP}:80"), "30"]));
        let mut serials = std::collections::BTreeSet::new();
        while !h.is_finished() {
            if let Some(body) = t.agents[1].get("/debug/connections") {
                for line in body.lines().filter(|l| l.contains("peer_cert_serial")) {
                    serials.insert(line.trim().to_string());
                }
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let out = h.join().unwrap();
        assert_eq!(
            out["failed"], 0,
            "zero failed requests across rotations: {out}"
        );
        assert!(out["ok"].as_u64().unwrap() > 100, "{out}");
        serials
    });
    assert!(
        serials.len() >= 3,
        "the client's certificate was rotated several times in 30 s: {serials:?}"
    );
}

#[test]
fn trust_anchor_rotation_fails_no_request() {
    let t = TwoNodes::new(false);
    let ca_dir = t.ca.0.join("ca");
    let rotate = |step: &str| {
        let out = std::process::Command::new(nodemesh_tests::nodemesh_binary())
            .args(["ca", "rotate", step, "--dir"])
            .arg(&ca_dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "rotate {step}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let out = std::thread::scope(|s| {
        let h = s.spawn(|| t.client(0, &["repeat-client", &format!("{VIP}:80"), "16"]));
        for step in ["begin", "issuer", "finish"] {
            std::thread::sleep(Duration::from_secs(4));
            rotate(step);
        }
        h.join().unwrap()
    });
    assert_eq!(
        out["failed"], 0,
        "zero failed requests across the three steps: {out}"
    );
    assert!(out["ok"].as_u64().unwrap() > 100, "{out}");
    // After the rotation new connections still work, on the new root only.
    let after = t.client(0, &["marker-client", &format!("{VIP}:80"), "x", "10", "0"]);
    assert_eq!(after["ok"], true, "{after}");
    let bundle = std::fs::read_to_string(ca_dir.join("trust-bundle.pem")).unwrap();
    assert_eq!(
        bundle.matches("BEGIN CERTIFICATE").count(),
        1,
        "only the new root is trusted"
    );
}

/// Bytes a client on node 1 sends to node 2's tunnel port, then reads until
/// the server closes (bounded).
fn poke_tunnel(t: &TwoNodes, payload: Vec<u8>, stall: bool) -> Duration {
    let target = std::net::SocketAddr::new(t.cluster.nodes[1].link_ip.into(), 15008);
    t.cluster.nodes[0].netns.enter(move || {
        use std::io::{Read as _, Write as _};
        let start = std::time::Instant::now();
        let mut s = std::net::TcpStream::connect_timeout(&target, Duration::from_secs(2))
            .expect("tunnel port reachable");
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        if !stall {
            s.write_all(&payload).unwrap();
        } else {
            // The first bytes of a ClientHello record, then nothing.
            s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).unwrap();
        }
        let mut buf = [0u8; 4096];
        while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
        start.elapsed()
    })
}

#[test]
fn the_tunnel_port_rejects_garbage_and_stalled_handshakes_and_keeps_serving() {
    let t = TwoNodes::with(Layout {
        agent_args: vec!["--handshake-timeout", "2"],
        ..Layout::default()
    });
    let garbage: Vec<u8> = (0..512u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    poke_tunnel(&t, garbage, false);
    let waited = poke_tunnel(&t, Vec::new(), true);
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(10),
        "closed by the handshake timeout after {waited:?}"
    );
    let m = t.agents[1].get("/metrics").unwrap();
    let failed = |reason: &str| {
        metric(
            &m,
            "nodemesh_tls_handshakes_total",
            &format!("reason=\"{reason}\""),
        )
    };
    assert!(failed("timeout") >= 1.0, "{m}");
    assert!(
        m.lines()
            .any(|l| l.starts_with("nodemesh_tls_handshakes_total")
                && l.contains("result=\"failed\"")
                && !l.contains("timeout")
                && !l.ends_with(" 0")),
        "the garbage was counted as a failed handshake: {m}"
    );
    // The agent still serves a real client.
    let ok = t.client(0, &["marker-client", &format!("{VIP}:80"), "x", "10", "0"]);
    assert_eq!(ok["ok"], true, "{ok}");
}

fn write_mtls(t: &TwoNodes, mode: &str) {
    let yaml = format!(
        "apiVersion: nodemesh.io/v1alpha1\nkind: MeshConfig\nmetadata: {{name: default}}\nspec:\n  defaultAction: ALLOW\n  mtls: {{mode: {mode}}}\n"
    );
    std::fs::write(t.config.0.join("meshconfig.yaml"), yaml).unwrap();
}

#[test]
fn strict_mtls_refuses_plaintext_from_outside_the_mesh_and_permissive_accepts_it() {
    let t = TwoNodes::with(Layout {
        plain_pod: true,
        ..Layout::default()
    });
    let plain = t.cluster.nodes[0].pods.len() - 1;
    let dst = format!("{VIP}:80");
    write_mtls(&t, "STRICT");
    t.agents[0].wait_for("/debug/state", TIMEOUT, |b| b.contains("mtls: Strict"));
    std::thread::sleep(Duration::from_millis(300));
    let refused = t.client(plain, &["connect", &dst]);
    assert_eq!(
        refused["errno"],
        libc::EPERM,
        "STRICT: plaintext from outside the mesh fails in the kernel: {refused}"
    );
    let m = t.agents[0].get("/metrics").unwrap();
    assert!(
        metric(
            &m,
            "nodemesh_datapath_events_total",
            "event=\"strict_refused\""
        ) >= 1.0,
        "{m}"
    );
    // Meshed clients are unaffected.
    let meshed = t.client(0, &["marker-client", &dst, "x", "10", "0"]);
    assert_eq!(meshed["ok"], true, "{meshed}");

    write_mtls(&t, "PERMISSIVE");
    t.agents[0].wait_for("/debug/state", TIMEOUT, |b| b.contains("mtls: Permissive"));
    std::thread::sleep(Duration::from_millis(300));
    let accepted = t.client(plain, &["marker-client", &dst, "x", "10", "0"]);
    assert_eq!(
        accepted["ok"], true,
        "PERMISSIVE: plaintext accepted: {accepted}"
    );
}
