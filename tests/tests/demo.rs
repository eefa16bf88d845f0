//! `cargo xtask demo` end to end: the demo builds what it needs, runs the
//! sample app on a two-node mesh, and its report's claims hold (mTLS with
//! both identities, the 90/10 canary split, the policy denial, non-zero
//! metrics); then `--keep` stays up until SIGINT and removes everything.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Whether a network namespace of that name exists.
fn netns_exists(name: &str) -> bool {
    Path::new("/var/run/netns").join(name).exists()
}

/// Namespaces and cgroups named for process `pid` by `nodemesh_tests::unique`
/// (`nmn<pid>x<n>`, `nmp<pid>x<n>`, `nodemesh-test-<pid>x<n>`).
fn leftovers_of(pid: u32) -> Vec<String> {
    let tag = format!("{}x", pid % 100_000);
    let mount = nodemesh_agent::datapath::Cgroup2::detect()
        .expect("cgroup v2")
        .mount;
    let mut left = Vec::new();
    for (dir, prefixes) in [
        (PathBuf::from("/var/run/netns"), &["nmn", "nmp"][..]),
        (mount, &["nodemesh-test-"][..]),
    ] {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if prefixes.iter().any(|p| {
                name.strip_prefix(p)
                    .is_some_and(|rest| rest.starts_with(&tag))
            }) {
                left.push(dir.join(name).display().to_string());
            }
        }
    }
    left
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

/// Runs `cmd` to completion within `timeout`, returning status and stdout.
fn run_bounded(mut cmd: Command, timeout: Duration) -> (std::process::ExitStatus, String) {
    cmd.stdout(Stdio::piped());
    let child = cmd.spawn().expect("spawning the demo");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => {
            let out = out.expect("waiting for the demo");
            (
                out.status,
                String::from_utf8_lossy(&out.stdout).into_owned(),
            )
        }
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            panic!("the demo did not finish within {timeout:?}");
        }
    }
}

#[test]
fn the_demo_shows_mtls_the_canary_split_a_denial_and_metrics_then_cleans_up() {
    nodemesh_tests::require_root();
    let summary_path = std::env::temp_dir().join(nodemesh_tests::unique("nodemesh-demo-summary-"));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root())
        .args(["xtask", "demo", "--requests", "400", "--summary"])
        .arg(&summary_path);
    // Builds may take a while on a cold cache; the run itself is bounded by the demo.
    let (status, out) = run_bounded(cmd, Duration::from_secs(900));
    assert!(status.success(), "demo failed: {status}\n{out}");
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(&summary_path).expect("demo summary"))
            .expect("summary is JSON");
    let _ = std::fs::remove_file(&summary_path);

    // mTLS between the nodes, with both SPIFFE ids, in the report and the summary.
    for needle in [
        "TLSv1_3",
        "spiffe://cluster.local/ns/demo/sa/loadgen -> spiffe://cluster.local/ns/demo/sa/frontend",
        "spiffe://cluster.local/ns/demo/sa/frontend -> spiffe://cluster.local/ns/demo/sa/reviews",
        "DENIED  loadgen -> 10.96.0.30:50051",
    ] {
        assert!(out.contains(needle), "report lacks {needle:?}:\n{out}");
    }
    let tunnels = summary["tunnels"].as_array().expect("tunnels");
    assert!(
        tunnels.iter().any(|t| t["tls_version"] == "TLSv1_3"
            && t["source"] == "spiffe://cluster.local/ns/demo/sa/loadgen"
            && t["destination"] == "spiffe://cluster.local/ns/demo/sa/frontend"
            && t["streams_total"].as_u64().unwrap_or(0) > 0),
        "{summary:#}"
    );

    // Traffic succeeded and the canary split is about 90/10.
    let lg = &summary["loadgen"];
    let requests = lg["requests"].as_u64().unwrap();
    assert!(requests >= 200, "{lg}");
    assert!(
        lg["ok"].as_u64().unwrap() * 100 >= requests * 99,
        "at least 99% of requests succeed: {lg}"
    );
    let v1 = lg["versions"]["v1"].as_u64().unwrap_or(0) as f64;
    let v2 = lg["versions"]["v2"].as_u64().unwrap_or(0) as f64;
    let share = v1 / (v1 + v2);
    assert!(
        (0.80..=0.97).contains(&share),
        "v1 share {share:.3} outside 80-97%: {lg}"
    );
    assert!(
        lg["workloads"]["ratings"]["ok"].as_u64().unwrap_or(0) > 0,
        "reviews-v2 reached ratings over gRPC: {lg}"
    );

    // The direct call to ratings was refused and counted.
    assert_eq!(lg["deny_probe"]["allowed"], false, "{lg}");
    let denials = summary["policy_denied_kernel"].as_f64().unwrap()
        + summary["authz_denied_proxy"].as_f64().unwrap();
    assert!(denials >= 1.0, "{summary:#}");

    // Metrics are non-zero.
    assert!(summary["connections_opened"].as_f64().unwrap() > 0.0);
    assert!(summary["bytes_sent"].as_f64().unwrap() > 0.0);
    assert!(
        lg["workloads"]["frontend"]["p50_us"].as_u64().unwrap_or(0) > 0,
        "{lg}"
    );

    // Nothing left behind.
    let cluster = &summary["cluster"];
    let namespaces: Vec<&str> = cluster["namespaces"]
        .as_array()
        .expect("the demo's namespaces")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(namespaces.len(), 7, "two nodes and five pods: {cluster}");
    for ns in namespaces {
        assert!(!netns_exists(ns), "namespace {ns} removed");
    }
    let cgroup = cluster["cgroup"].as_str().expect("the demo's cgroup");
    assert!(!Path::new(cgroup).exists(), "cgroup {cgroup} removed");
}

#[test]
fn the_demo_with_keep_stays_up_until_sigint_then_removes_everything() {
    nodemesh_tests::require_root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(workspace_root())
        .args(["build", "-p", "nodemesh-bookinfo", "--bins"]);
    let (status, _) = run_bounded(build, Duration::from_secs(900));
    assert!(status.success(), "building the demo");
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().unwrap().parent().unwrap();
    let mut child = Command::new(profile.join("bookinfo-demo"))
        .env("NODEMESH_BIN", nodemesh_tests::nodemesh_binary())
        .args(["--keep", "--requests", "50"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting bookinfo-demo --keep");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        if stdout.read_line(&mut line).unwrap_or(0) == 0 {
            let _ = child.kill();
            panic!("the demo exited before waiting for Ctrl-C:\n{seen}");
        }
        seen.push_str(&line);
        if line.contains("Ctrl-C removes everything") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no instructions printed:\n{seen}"
        );
    }
    assert!(seen.contains("ip netns exec"), "{seen}");
    // Still up: the cluster's namespaces and cgroup exist.
    assert!(leftovers_of(child.id()).len() >= 8, "cluster kept");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the demo did not stop within 30 s of SIGINT");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status}");
    assert_eq!(
        leftovers_of(child.id()),
        Vec::<String>::new(),
        "SIGINT removed everything"
    );
}
