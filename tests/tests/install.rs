//! `nodemesh install` and `nodemesh uninstall` as an operator runs them:
//! the real binary, its stdout (for kubectl), its stderr and exit code.
//! Needs no privileges; the typed checks of every object are the unit tests
//! in `agent/src/install/tests.rs`.

use std::process::{Command, Output};

use nodemesh_agent::install::{InstallOptions, install_manifests, render, uninstall_manifests};
use nodemesh_tests::nodemesh_binary;

fn nodemesh(args: &[&str]) -> Output {
    Command::new(nodemesh_binary())
        .args(args)
        .env_remove("NODEMESH_LOG")
        .output()
        .expect("running nodemesh")
}

fn options(namespace: &str) -> InstallOptions {
    InstallOptions::new(
        namespace,
        &format!("ghcr.io/example/nodemesh:{}", env!("CARGO_PKG_VERSION")),
        "cluster.local",
        "0.0.0.0:15000".parse().unwrap(),
    )
    .unwrap()
}

/// Compares the binary's output with the library's rendering, naming the
/// first differing line instead of printing both streams.
fn assert_same(printed: &str, expected: &str) {
    if let Some((n, (p, e))) = printed
        .lines()
        .zip(expected.lines())
        .enumerate()
        .find(|(_, (p, e))| p != e)
    {
        panic!(
            "line {}: printed {p:?}, expected {e:?} (is {} stale? run `cargo build -p nodemesh-agent`)",
            n + 1,
            nodemesh_binary().display()
        );
    }
    assert_eq!(printed.lines().count(), expected.lines().count());
    assert_eq!(printed, expected);
}

#[test]
fn install_prints_the_manifests_and_what_to_do_next() {
    let out = nodemesh(&["install", "--namespace", "mesh-e2e"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let expected = render(&install_manifests(&options("mesh-e2e"))).unwrap();
    assert_same(&String::from_utf8(out.stdout).unwrap(), &expected);
    assert!(
        stderr.contains("nodemesh ca init --secret --namespace mesh-e2e | kubectl apply -f -"),
        "{stderr}"
    );
}

#[test]
fn uninstall_prints_the_same_objects_in_reverse() {
    let out = nodemesh(&["uninstall"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = render(&uninstall_manifests(&options("nodemesh-system"))).unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_same(&stdout, &expected);
    assert!(stdout.starts_with("---\napiVersion: apps/v1\nkind: DaemonSet\n"));
}

#[test]
fn bad_flags_exit_2_with_what_to_pass() {
    for (args, hint) in [
        (
            &["install", "--namespace", "Mesh"][..],
            "--namespace nodemesh-system",
        ),
        (&["install", "--image", ""][..], "pass --image"),
        (
            &["uninstall", "--namespace", "a.b"][..],
            "invalid namespace",
        ),
    ] {
        let out = nodemesh(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(hint), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "nothing for kubectl on a bad flag");
    }
}
