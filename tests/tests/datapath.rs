//! The kernel datapath end to end: service translation, redirect to the
//! agent, same-node acceleration, L4 policy and L4 metrics, on this kernel,
//! in network namespaces and cgroups these tests create.
//!
//! Run as root, one test at a time (`cargo xtask test` does both).

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nodemesh_agent::datapath::{
    BackendSpec, Datapath, DatapathOptions, RedirectTarget, ServiceSpec,
};
use nodemesh_common::{
    flow::{DIR_OUTBOUND, FlowKey, FlowStats},
    policy::{ACTION_DENY, PolicyKey, PolicyValue},
    service::PROTO_TCP,
    sock::ORIG_REDIRECTED,
    workload::{EndpointInfo, WORKLOAD_MESHED, WorkloadInfo},
};
use nodemesh_tests::{Cluster, NetNs, PodProcess, cgroup, netns, pod::run_json};
use serde_json::Value;

const AGENT_PORT: u16 = 15001;
const CLIENT_ID: u32 = 1;
const SERVER_ID: u32 = 2;
const TIMEOUT: Duration = Duration::from_secs(120);

fn options(cluster: &Cluster, node: usize, redirect: bool, sockmap: bool) -> DatapathOptions {
    let n = &cluster.nodes[node];
    DatapathOptions {
        cgroup: n.cgroup.clone(),
        agent_cgroup: Some(n.agent_cgroup.clone()),
        redirect: redirect.then_some(RedirectTarget {
            addr4: Some(n.bridge_ip),
            addr6: None,
            port: AGENT_PORT,
        }),
        sockmap,
        ..DatapathOptions::default()
    }
}

fn load(opts: &DatapathOptions) -> Datapath {
    let dp = Datapath::load(opts).unwrap_or_else(|e| panic!("loading the datapath: {e}"));
    assert!(
        dp.degraded().is_empty(),
        "this kernel runs every feature: {:?}",
        dp.degraded()
    );
    dp
}

fn register(
    dp: &Datapath,
    cluster: &Cluster,
    node: usize,
    pod: usize,
    identity: u32,
    meshed: bool,
) {
    let p = cluster.pod(node, pod);
    let flags = if meshed { WORKLOAD_MESHED } else { 0 };
    let id = nodemesh_agent::datapath::cgroup_id(&p.cgroup).unwrap();
    dp.upsert_workload(id, WorkloadInfo { identity, flags })
        .unwrap();
    dp.upsert_endpoint(p.ip.into(), EndpointInfo { identity, flags })
        .unwrap();
}

fn serve(cluster: &Cluster, node: usize, pod: usize, port: u16, mode: &str) -> PodProcess {
    let p = cluster.pod(node, pod);
    PodProcess::start_server(p.command(&["serve", &format!("{}:{port}", p.ip), mode]))
}

fn client(cluster: &Cluster, node: usize, pod: usize, args: &[&str]) -> Value {
    run_json(cluster.pod(node, pod).command(args), TIMEOUT)
}

fn flow(dp: &Datapath, key: FlowKey) -> FlowStats {
    dp.flows()
        .unwrap()
        .into_iter()
        .find(|(k, _)| *k == key)
        .map(|(_, s)| s)
        .unwrap_or_default()
}

fn outbound(src: u32, dst: u32, port: u16) -> FlowKey {
    FlowKey {
        src_identity: src,
        dst_identity: dst,
        dst_port: port,
        direction: DIR_OUTBOUND,
        _pad: 0,
    }
}

/// Polls `f` until it returns true or `timeout` passes.
fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn service_vip_reaches_every_backend_and_getpeername_shows_the_vip() {
    let mut cluster = Cluster::new(1);
    let c = cluster.add_pod(0, "client");
    let backends: Vec<usize> = (1..=3)
        .map(|i| cluster.add_pod(0, &format!("backend-{i}")))
        .collect();
    let dp = load(&options(&cluster, 0, false, true));
    let _servers: Vec<PodProcess> = backends
        .iter()
        .enumerate()
        .map(|(i, &b)| serve(&cluster, 0, b, 8080, &format!("hello:backend-{}", i + 1)))
        .collect();
    let vip: SocketAddr = "10.96.0.10:80".parse().unwrap();
    dp.upsert_service(&ServiceSpec {
        id: 1,
        vip,
        proto: PROTO_TCP,
        identity: 100,
        meshed: false,
        backends: backends
            .iter()
            .map(|&b| BackendSpec {
                addr: SocketAddr::new(cluster.pod(0, b).ip.into(), 8080),
                weight: 1,
                identity: 0,
            })
            .collect(),
    })
    .unwrap();

    let out = client(&cluster, 0, c, &["hello-client", &vip.to_string(), "90"]);
    assert_eq!(out["errors"], serde_json::json!([]), "{out}");
    let names: BTreeMap<String, u64> = serde_json::from_value(out["names"].clone()).unwrap();
    assert_eq!(names.len(), 3, "every backend gets traffic: {names:?}");
    assert!(
        names.values().all(|n| *n >= 10),
        "roughly even spread over 90 connections: {names:?}"
    );
    let peers: BTreeMap<String, u64> = serde_json::from_value(out["peers"].clone()).unwrap();
    assert_eq!(
        peers,
        BTreeMap::from([(vip.to_string(), 90)]),
        "getpeername shows the VIP"
    );
    assert!(dp.stat("service_translated").unwrap() >= 90);
    assert!(dp.stat("peername_rewritten").unwrap() >= 90);

    // Weighted backends: 9:1 between the first two.
    dp.upsert_service(&ServiceSpec {
        id: 1,
        vip,
        proto: PROTO_TCP,
        identity: 100,
        meshed: false,
        backends: backends[..2]
            .iter()
            .zip([9, 1])
            .map(|(&b, w)| BackendSpec {
                addr: SocketAddr::new(cluster.pod(0, b).ip.into(), 8080),
                weight: w,
                identity: 0,
            })
            .collect(),
    })
    .unwrap();
    let out = client(&cluster, 0, c, &["hello-client", &vip.to_string(), "300"]);
    let names: BTreeMap<String, u64> = serde_json::from_value(out["names"].clone()).unwrap();
    let heavy = names.get("backend-1").copied().unwrap_or(0);
    let light = names.get("backend-2").copied().unwrap_or(0);
    assert_eq!(
        heavy + light,
        300,
        "only the two weighted backends: {names:?}"
    );
    assert!(
        (240..=294).contains(&heavy),
        "about 90% to the weight-9 backend: {names:?}"
    );
}

/// The test's stand-in for the agent's outbound proxy: accepts redirected
/// connections on the node, recovers their original destination from the
/// kernel, and relays them there. Runs on a thread inside the node's
/// network namespace, so its own connections originate there.
struct MiniAgent {
    seen: Arc<Mutex<Vec<(SocketAddr, u32)>>>,
    local: SocketAddr,
}

impl MiniAgent {
    fn start(node_ns: &NetNs, listen: SocketAddr, dp: Arc<Datapath>) -> Self {
        let listener = node_ns.enter(move || TcpListener::bind(listen).expect("agent listener"));
        let local = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        let ns = node_ns.file();
        std::thread::spawn(move || {
            use std::os::fd::AsFd as _;
            nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            for conn in listener.incoming() {
                let Ok(inbound) = conn else { return };
                let peer = inbound.peer_addr().unwrap();
                let orig = dp.take_orig_dst(peer, local).unwrap();
                let Some(orig) = orig else {
                    eprintln!("agent: no original destination for {peer}");
                    continue;
                };
                let dst = SocketAddr::new(std::net::IpAddr::from(orig.addr), orig.port);
                seen2.lock().unwrap().push((dst, orig.flags));
                // The relay threads inherit this thread's network namespace.
                std::thread::spawn(move || {
                    let Ok(upstream) = TcpStream::connect(dst) else {
                        return;
                    };
                    relay(inbound, upstream);
                });
            }
        });
        MiniAgent { seen, local }
    }
}

fn relay(a: TcpStream, b: TcpStream) {
    let pipe = |mut from: TcpStream, mut to: TcpStream| {
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                match nodemesh_tests::read_ready(&mut from, &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = to.shutdown(Shutdown::Write);
        })
    };
    let t1 = pipe(a.try_clone().unwrap(), b.try_clone().unwrap());
    let t2 = pipe(b, a);
    let _ = t1.join();
    let _ = t2.join();
}

#[test]
fn meshed_connection_reaches_the_agent_with_its_original_destination() {
    let mut cluster = Cluster::new(1);
    let c = cluster.add_pod(0, "client");
    let s = cluster.add_pod(0, "server");
    // The agent (this process) lives in the node's agent cgroup, under the
    // attach point, so its sockets meet the programs too.
    let _joined = cgroup::Joined::new(&cluster.nodes[0].agent_cgroup);
    let dp = Arc::new(load(&options(&cluster, 0, true, true)));
    register(&dp, &cluster, 0, c, CLIENT_ID, true);
    register(&dp, &cluster, 0, s, SERVER_ID, true);
    let _server = serve(&cluster, 0, s, 8080, "echo");
    let vip: SocketAddr = "10.96.0.20:80".parse().unwrap();
    dp.upsert_service(&ServiceSpec {
        id: 7,
        vip,
        proto: PROTO_TCP,
        identity: 200,
        meshed: true,
        backends: vec![BackendSpec {
            addr: SocketAddr::new(cluster.pod(0, s).ip.into(), 8080),
            weight: 1,
            identity: SERVER_ID,
        }],
    })
    .unwrap();
    let agent = MiniAgent::start(
        &cluster.nodes[0].netns,
        SocketAddr::new(cluster.nodes[0].bridge_ip.into(), AGENT_PORT),
        dp.clone(),
    );

    let out = client(
        &cluster,
        0,
        c,
        &[
            "echo-client",
            &vip.to_string(),
            &(1 << 20).to_string(),
            "65536",
            "4",
        ],
    );
    assert_eq!(out["ok"], true, "{out}");
    assert_eq!(
        out["peer"],
        vip.to_string(),
        "the application sees the VIP it dialled: {out}"
    );
    let seen = agent.seen.lock().unwrap().clone();
    assert_eq!(
        seen.len(),
        4,
        "each connection reached the agent at {}: {seen:?}",
        agent.local
    );
    for (dst, flags) in &seen {
        assert_eq!(*dst, vip, "the agent recovered the original destination");
        assert!(flags & ORIG_REDIRECTED != 0);
    }
    // The agent's own connections to the VIP were translated, never redirected
    // back to itself.
    assert_eq!(dp.stat("mesh_redirected").unwrap(), 4);
    assert_eq!(dp.stat("service_translated").unwrap(), 4);
    // The legs (app <-> agent, agent <-> app) ran over the sockmap, each
    // connection whole or not at all (see `sockmap_case`).
    let moved = dp.stat("sockmap_redirected_bytes").unwrap();
    assert!(
        moved > 0 && moved.is_multiple_of(2 << 20),
        "moved {moved} bytes"
    );
    assert_eq!(dp.stat("sockmap_redirect_errors").unwrap(), 0);
}

fn sockmap_case(
    cluster: &Cluster,
    dp: &Datapath,
    dst: &str,
    bytes: usize,
    chunk: usize,
    conns: usize,
) -> usize {
    let before = dp.stat("sockmap_redirected_bytes").unwrap();
    let out = client(
        cluster,
        0,
        0,
        &[
            "echo-client",
            dst,
            &bytes.to_string(),
            &chunk.to_string(),
            &conns.to_string(),
        ],
    );
    assert_eq!(
        out["ok"], true,
        "bytes={bytes} chunk={chunk} conns={conns}: {out}"
    );
    assert_eq!(out["bytes"], bytes * conns);
    let moved = dp.stat("sockmap_redirected_bytes").unwrap() as usize - before as usize;
    // A connection is accelerated whole (both directions, every byte) or
    // not at all: one whose first send beats its peer's establishment stays
    // on the stack.
    assert_eq!(
        moved % (2 * bytes),
        0,
        "no connection mixed the two paths (bytes={bytes} chunk={chunk} conns={conns}, moved {moved})"
    );
    moved / (2 * bytes)
}

#[test]
fn sockmap_moves_same_node_traffic_intact() {
    let mut cluster = Cluster::new(1);
    cluster.add_pod(0, "client");
    let s = cluster.add_pod(0, "server");
    let dp = load(&options(&cluster, 0, false, true));
    assert!(dp.features().sockmap, "this kernel supports sockmap");
    let _server = serve(&cluster, 0, s, 8080, "echo");
    let dst = format!("{}:8080", cluster.pod(0, s).ip);

    // One 16 MiB stream in 64 KiB writes.
    let mut accelerated = sockmap_case(&cluster, &dp, &dst, 16 << 20, 65536, 1);
    // 10,000 small writes of 16 bytes.
    accelerated += sockmap_case(&cluster, &dp, &dst, 160_000, 16, 1);
    // 200 concurrent connections of 64 KiB each.
    accelerated += sockmap_case(&cluster, &dp, &dst, 65536, 4096, 200);
    assert!(
        accelerated >= 150,
        "most of the 202 connections went socket to socket: {accelerated}"
    );
    // Half-close is part of every case: the client shuts down its write side
    // and still reads the rest of the echo before EOF.
    assert_eq!(dp.stat("sockmap_redirect_errors").unwrap(), 0);
    assert!(dp.stat("sockmap_redirected_msgs").unwrap() > 0);
}

#[test]
fn sockmap_can_be_switched_off() {
    let mut cluster = Cluster::new(1);
    cluster.add_pod(0, "client");
    let s = cluster.add_pod(0, "server");
    let dp = load(&options(&cluster, 0, false, false));
    assert!(!dp.features().sockmap);
    let _server = serve(&cluster, 0, s, 8080, "echo");
    let dst = format!("{}:8080", cluster.pod(0, s).ip);
    let out = client(
        &cluster,
        0,
        0,
        &["echo-client", &dst, "1048576", "65536", "2"],
    );
    assert_eq!(out["ok"], true, "{out}");
    assert_eq!(dp.stat("sockmap_inserted").unwrap(), 0);
    assert_eq!(dp.stat("sockmap_redirected_bytes").unwrap(), 0);
}

/// Collects the kernel programs' log records (bridged through the `log` facade).
struct KernelLogs(Mutex<Vec<String>>);

impl log::Log for KernelLogs {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        self.0.lock().unwrap().push(record.args().to_string());
    }
    fn flush(&self) {}
}

static KERNEL_LOGS: KernelLogs = KernelLogs(Mutex::new(Vec::new()));

#[test]
fn deny_rule_fails_connect_with_eperm_and_is_counted() {
    // The logger must be in place before the datapath binds aya-log to it.
    let _ = log::set_logger(&KERNEL_LOGS);
    log::set_max_level(log::LevelFilter::Info);
    let mut cluster = Cluster::new(1);
    let c = cluster.add_pod(0, "client");
    let s = cluster.add_pod(0, "server");
    let dp = load(&options(&cluster, 0, false, true));
    register(&dp, &cluster, 0, c, CLIENT_ID, false);
    register(&dp, &cluster, 0, s, SERVER_ID, false);
    let _server = serve(&cluster, 0, s, 8080, "echo");
    let dst = format!("{}:8080", cluster.pod(0, s).ip);

    let out = client(&cluster, 0, c, &["connect", &dst]);
    assert_eq!(out["ok"], true, "allowed before the rule: {out}");

    let rule = PolicyKey {
        src_identity: CLIENT_ID,
        dst_identity: SERVER_ID,
        port: 8080,
        _pad: 0,
    };
    dp.upsert_policy(
        rule,
        PolicyValue {
            action: ACTION_DENY,
            rule_id: 1,
        },
    )
    .unwrap();
    let out = client(&cluster, 0, c, &["connect", &dst]);
    assert_eq!(out["ok"], false, "{out}");
    assert_eq!(
        out["errno"],
        libc::EPERM,
        "denied in the kernel with EPERM: {out}"
    );
    assert_eq!(dp.stat("policy_denied").unwrap(), 1);
    assert_eq!(flow(&dp, outbound(CLIENT_ID, SERVER_ID, 8080)).denied, 1);
    // The kernel program logged the denial through aya-log.
    let mut logger = dp
        .take_logger()
        .expect("the object carries a log ring buffer");
    logger.flush();
    let logs = KERNEL_LOGS.0.lock().unwrap().clone();
    assert!(
        logs.iter()
            .any(|l| l.contains("policy denied connect: identity 1 -> identity 2 port 8080")),
        "{logs:?}"
    );

    // A rule for another port does not match.
    let other = format!("{}:8081", cluster.pod(0, s).ip);
    let out = client(&cluster, 0, c, &["connect", &other]);
    assert_ne!(out["errno"], libc::EPERM, "port 8081 is not denied: {out}");

    dp.remove_policy(rule).unwrap();
    let out = client(&cluster, 0, c, &["connect", &dst]);
    assert_eq!(
        out["ok"], true,
        "allowed again once the rule is gone: {out}"
    );
}

fn byte_counters_case(sockmap: bool) {
    let mut cluster = Cluster::new(1);
    let c = cluster.add_pod(0, "client");
    let s = cluster.add_pod(0, "server");
    let dp = load(&options(&cluster, 0, false, sockmap));
    register(&dp, &cluster, 0, c, CLIENT_ID, false);
    register(&dp, &cluster, 0, s, SERVER_ID, false);
    let _server = serve(&cluster, 0, s, 8080, "sink-reply:5000");
    let dst = format!("{}:8080", cluster.pod(0, s).ip);
    let out = client(&cluster, 0, c, &["send", &dst, "100000"]);
    assert_eq!(out["received"], 5000, "{out}");
    let key = outbound(CLIENT_ID, SERVER_ID, 8080);
    assert!(
        eventually(Duration::from_secs(5), || flow(&dp, key).closed == 1),
        "the close was accounted: {:?}",
        flow(&dp, key)
    );
    let f = flow(&dp, key);
    assert_eq!(f.opened, 1, "{f:?}");
    assert_eq!(f.bytes_sent, 100_000, "sockmap={sockmap}: {f:?}");
    assert_eq!(f.bytes_received, 5000, "sockmap={sockmap}: {f:?}");
    if !sockmap {
        assert!(f.packets_sent > 0 && f.packets_received > 0, "{f:?}");
        assert!(f.srtt_samples == 1 && f.srtt_us_sum > 0, "{f:?}");
    }
}

#[test]
fn l4_byte_counters_equal_the_bytes_sent_through_the_stack() {
    byte_counters_case(false);
}

#[test]
fn l4_byte_counters_equal_the_bytes_sent_through_the_sockmap() {
    byte_counters_case(true);
}

#[test]
fn refused_connections_are_counted() {
    let mut cluster = Cluster::new(1);
    let c = cluster.add_pod(0, "client");
    let s = cluster.add_pod(0, "server");
    let dp = load(&options(&cluster, 0, false, true));
    register(&dp, &cluster, 0, c, CLIENT_ID, false);
    register(&dp, &cluster, 0, s, SERVER_ID, false);
    // Nothing listens on 9999: the server's kernel answers with a reset.
    let out = client(
        &cluster,
        0,
        c,
        &["connect", &format!("{}:9999", cluster.pod(0, s).ip)],
    );
    assert_eq!(out["errno"], libc::ECONNREFUSED, "{out}");
    let key = outbound(CLIENT_ID, SERVER_ID, 9999);
    assert!(
        eventually(Duration::from_secs(5), || flow(&dp, key).refused == 1),
        "{:?}",
        flow(&dp, key)
    );
}

fn loaded_program_ids() -> Vec<u32> {
    aya::programs::loaded_programs()
        .filter_map(|p| p.ok())
        .map(|p| p.id())
        .collect()
}

#[test]
fn nothing_is_left_behind_when_a_test_fails() {
    let mut names = Vec::new();
    let mut cgroup_dir = None;
    let mut ids = Vec::new();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut cluster = Cluster::new(2);
        let s = cluster.add_pod(1, "server");
        names.extend(cluster.nodes.iter().map(|n| n.netns.name().to_string()));
        names.push(cluster.pod(1, s).netns.name().to_string());
        cgroup_dir = Some(cluster.cgroup.path().to_path_buf());
        let dp = load(&options(&cluster, 0, true, true));
        ids = dp.program_ids();
        assert!(!ids.is_empty());
        let _server = serve(&cluster, 1, s, 8080, "echo");
        panic!("deliberate failure with a cluster, a datapath and a pod process alive");
    }));
    assert!(result.is_err());
    let left = netns::existing();
    for n in &names {
        assert!(!left.contains(n), "network namespace {n} was left behind");
    }
    let dir = cgroup_dir.expect("cluster was built");
    assert!(
        !Path::new(&dir).exists(),
        "cgroup {} was left behind",
        dir.display()
    );
    let loaded = loaded_program_ids();
    for id in ids {
        assert!(!loaded.contains(&id), "program {id} is still loaded");
    }
}

#[test]
fn a_full_map_is_reported_by_name_with_the_fix() {
    let cluster = Cluster::new(1);
    let dp = load(&options(&cluster, 0, false, false));
    let info = WorkloadInfo {
        identity: 9,
        flags: 0,
    };
    let mut err = None;
    for id in 0..=u64::from(nodemesh_common::workload::MAX_WORKLOADS) {
        if let Err(e) = dp.upsert_workload(1_000_000 + id, info) {
            err = Some(e);
            break;
        }
    }
    let err = err.expect("the workloads map is bounded").to_string();
    assert!(
        err.contains("WORKLOADS") && err.contains("is full"),
        "{err}"
    );
    assert!(err.contains("reduce the number of workloads"), "{err}");
}

#[test]
fn processes_under_the_agent_cgroup_are_never_policed() {
    let mut cluster = Cluster::new(1);
    let c = cluster.add_pod(0, "client");
    let s = cluster.add_pod(0, "server");
    let dp = load(&options(&cluster, 0, true, false));
    register(&dp, &cluster, 0, c, CLIENT_ID, false);
    register(&dp, &cluster, 0, s, SERVER_ID, false);
    let _server = serve(&cluster, 0, s, 8080, "echo");
    let dst = format!("{}:8080", cluster.pod(0, s).ip);
    // A container cgroup below the agent's, registered like a workload.
    let container = cluster.nodes[0].agent_cgroup.join("container");
    std::fs::create_dir(&container).unwrap();
    let id = nodemesh_agent::datapath::cgroup_id(&container).unwrap();
    dp.upsert_workload(
        id,
        WorkloadInfo {
            identity: CLIENT_ID,
            flags: 0,
        },
    )
    .unwrap();
    let deny_all = PolicyKey {
        src_identity: CLIENT_ID,
        dst_identity: 0,
        port: 0,
        _pad: 0,
    };
    dp.upsert_policy(
        deny_all,
        PolicyValue {
            action: ACTION_DENY,
            rule_id: 7,
        },
    )
    .unwrap();

    let denied = client(&cluster, 0, c, &["connect", &dst]);
    assert_eq!(
        denied["errno"],
        libc::EPERM,
        "the rule applies to the pod: {denied}"
    );
    let agent_side = run_json(
        nodemesh_tests::pod::command(
            &container,
            cluster.nodes[0].netns.file(),
            &["connect", &dst],
        ),
        TIMEOUT,
    );
    assert_eq!(
        agent_side["ok"], true,
        "the agent's container is exempt: {agent_side}"
    );
}
