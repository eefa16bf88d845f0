//! The agent on kernels missing a feature: it degrades as documented
//! (README, "Kernel requirements") instead of dying, and says what it lost.
//!
//! - A kernel refusing sockhash maps and `sk_msg` (as a kernel without them
//!   answers: `EINVAL`): the mesh runs, same-node traffic goes through the
//!   agent unaccelerated, L4 metrics stay on.
//! - A kernel refusing `sock_ops` (as a security policy answers: `EPERM`):
//!   Service translation and in-kernel policy run; L4 metrics are off; the
//!   mesh, which needs `sock_ops` to learn original destinations, is refused
//!   at start with an error naming the missing feature.
//! - A kernel without IPv6 (`ipv6.disable=1`): the mesh runs over IPv4 and
//!   the IPv6 hooks are not attached.
//!
//! The first two install a system-wide BPF-LSM policy and the third needs a
//! kernel booted without IPv6, so all three run only inside kernel-matrix
//! guests: `cargo xtask vm-test --degraded` boots them (and `cargo xtask
//! test` runs that), and fails unless each test ran and passed.

use std::process::{Command, Output};
use std::time::Duration;

use aya::maps::MapType;
use aya::programs::ProgramType;
use aya::sys::{is_map_supported, is_program_supported};
use nodemesh_tests::agent::AgentProcess;
use nodemesh_tests::mesh::{Layout, TIMEOUT, TwoNodes, VIP, mesh_args, write_policy};
use nodemesh_tests::refusal::{KernelRefusal, REFUSE_SOCK_OPS, REFUSE_SOCKMAP};
use nodemesh_tests::{nodemesh_binary, pod};
use serde_json::Value;

/// The JSON body of an admin endpoint.
fn json(agent: &AgentProcess, path: &str) -> Value {
    let doc = agent.get_json(path);
    assert!(doc.is_object(), "{path} answered no JSON object");
    doc
}

/// The probe named `name` in the agent's kernel report.
fn probe<'a>(datapath: &'a Value, name: &str) -> &'a Value {
    datapath["kernel"]["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no probe {name} in {datapath:#}"))
}

/// `nodemesh check --pre` for the first node: exits 0 with every missing
/// optional capability marked `!`.
fn check(t: &TwoNodes) -> String {
    let out = Command::new(nodemesh_binary())
        .args(["check", "--pre", "--cgroup"])
        .arg(&t.cluster.nodes[0].cgroup)
        .output()
        .expect("running nodemesh check");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "a missing optional capability fails no check:\n{text}"
    );
    assert!(!text.contains('✘'), "{text}");
    text
}

/// Names of the loaded BPF programs.
fn loaded(name: &str) -> usize {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| p.name_as_str() == Some(name))
        .count()
}

#[test]
#[ignore = "installs a system-wide BPF-LSM policy: runs only in a kernel-matrix guest (cargo xtask vm-test --degraded)"]
fn without_sockmap_the_agent_meshes_without_same_node_acceleration() {
    let _refusal = KernelRefusal::install(REFUSE_SOCKMAP);
    // The kernel now answers as one without sockmap support does.
    assert_eq!(is_map_supported(MapType::SockHash).ok(), Some(false));
    assert_eq!(is_program_supported(ProgramType::SkMsg).ok(), Some(false));

    let t = TwoNodes::with(Layout {
        server_on_node1: true,
        agent_args: vec!["--sockmap"],
        ..Layout::default()
    });
    let datapath = json(&t.agents[0], "/debug/datapath");
    let features = &datapath["features"];
    assert_eq!(features["sockmap"], false, "{datapath:#}");
    assert_eq!(features["sockops"], true, "{datapath:#}");
    assert_eq!(features["connect"], true, "{datapath:#}");
    assert_eq!(probe(&datapath, "map type sockhash")["ok"], false);
    assert_eq!(loaded("redirect_msg"), 0, "no sk_msg program was loaded");

    // Same-node meshed traffic still flows, through the agent.
    let out = t.meshed_request(0, "\"direction\": \"local\"");
    assert_eq!(out["ok"], true, "{out}");

    let datapath = json(&t.agents[0], "/debug/datapath");
    assert_eq!(
        datapath["stats"]["sockmap_inserted"], 0,
        "no socket went into a sockhash: {datapath:#}"
    );
    assert!(
        datapath["stats"]["mesh_redirected"].as_u64() >= Some(1),
        "{datapath:#}"
    );
    // L4 metrics stay on: the client's flow was counted with its bytes.
    let flows = datapath["flows"].as_array().cloned().unwrap_or_default();
    assert!(
        flows
            .iter()
            .any(|f| f["opened"].as_u64() >= Some(1) && f["bytes_sent"].as_u64() > Some(0)),
        "{datapath:#}"
    );

    let report = check(&t);
    assert!(
        report.contains("! map type sockhash (optional)")
            && report.contains("! program type sk_msg (optional)"),
        "{report}"
    );
}

/// `nodemesh agent` with the mesh on node 1, run to completion.
fn agent_with_mesh(t: &TwoNodes) -> Output {
    let node = &t.cluster.nodes[0];
    let mut args = vec![
        "agent".to_owned(),
        "--cgroup".to_owned(),
        node.cgroup.to_string_lossy().into_owned(),
        "--admin-addr".to_owned(),
        "127.0.0.1:15099".to_owned(),
    ];
    args.extend(mesh_args(node, &t.ca.0.join("ca")));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let cmd = pod::command_for(
        &nodemesh_binary(),
        &node.agent_cgroup,
        node.netns.file(),
        &args,
    );
    // It refuses to start, so it exits well within this.
    pod::output_within(cmd, Duration::from_secs(30))
}

#[test]
#[ignore = "installs a system-wide BPF-LSM policy: runs only in a kernel-matrix guest (cargo xtask vm-test --degraded)"]
fn without_sock_ops_the_agent_translates_and_enforces_policy_but_refuses_the_mesh() {
    let _refusal = KernelRefusal::install(REFUSE_SOCK_OPS);
    assert_ne!(
        is_program_supported(ProgramType::SockOps).ok(),
        Some(true),
        "the kernel refuses sock_ops"
    );

    let t = TwoNodes::with(Layout {
        no_mesh: true,
        ..Layout::default()
    });
    let datapath = json(&t.agents[0], "/debug/datapath");
    assert_eq!(datapath["features"]["connect"], true, "{datapath:#}");
    assert_eq!(datapath["features"]["sockops"], false, "{datapath:#}");
    let sock_ops = probe(&datapath, "program type sock_ops");
    assert_eq!(sock_ops["ok"], false);
    assert!(
        sock_ops["fix"].as_str().unwrap_or("").contains("EPERM"),
        "a refusal is reported as one: {sock_ops}"
    );
    assert_eq!(loaded("track_socket"), 0, "no sock_ops program was loaded");

    // Service translation: the client reaches the server on node 2 through its VIP.
    let out = t.client(
        0,
        &["echo-client", &format!("{VIP}:80"), "8192", "512", "2"],
    );
    assert_eq!(out["ok"], true, "{out}");
    assert_eq!(out["bytes"], 16384, "{out}");
    let datapath = json(&t.agents[0], "/debug/datapath");
    assert!(
        datapath["stats"]["service_translated"].as_u64() >= Some(2),
        "{datapath:#}"
    );
    assert_eq!(
        datapath["flows"],
        serde_json::json!([]),
        "L4 metrics are off without sock_ops"
    );

    // In-kernel policy: a DENY fails the client's connect with EPERM.
    write_policy(&t, "DENY");
    t.agents[0].wait_for("/debug/state", TIMEOUT, |b| b.contains("action: Deny"));
    let denied = t.client(0, &["connect", &format!("{VIP}:80")]);
    assert_eq!(denied["ok"], false, "{denied}");
    assert_eq!(denied["errno"], libc::EPERM, "{denied}");

    // The mesh cannot run without sock_ops: the agent refuses to start and says why.
    let refused = agent_with_mesh(&t);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains("lacks sock_ops programs") && stderr.contains("--redirect-addr"),
        "{stderr}"
    );

    let report = check(&t);
    assert!(
        report.contains("! program type sock_ops (optional)"),
        "{report}"
    );
}

#[test]
#[ignore = "needs a kernel booted with ipv6.disable=1: runs only in a kernel-matrix guest (cargo xtask vm-test --degraded)"]
fn without_ipv6_the_agent_meshes_over_ipv4() {
    let error = std::net::UdpSocket::bind("[::]:0")
        .expect_err("this test needs a kernel without IPv6 (ipv6.disable=1)");
    assert_eq!(error.raw_os_error(), Some(libc::EAFNOSUPPORT), "{error}");

    let t = TwoNodes::new(false);
    let datapath = json(&t.agents[0], "/debug/datapath");
    assert_eq!(datapath["features"]["ipv6"], false, "{datapath:#}");
    assert_eq!(probe(&datapath, "IPv6 sockets")["ok"], false);
    assert_eq!(loaded("connect6"), 0, "no IPv6 hook is attached");
    assert_eq!(loaded("connect4"), 2, "one connect4 per agent");

    // Cross-node traffic is mTLS over IPv4.
    let out = t.meshed_request(1, "TLSv1_3");
    assert_eq!(out["ok"], true, "{out}");

    let report = check(&t);
    assert!(report.contains("! IPv6 sockets (optional)"), "{report}");
}
