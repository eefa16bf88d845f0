//! File mode: reload bookkeeping and live watching of a real directory.

use std::time::{Duration, Instant};

use prometheus::Registry;

use super::*;
use crate::desired::{DesiredState, PROTO_TCP, ServiceKey};
use crate::index::IndexConfig;
use crate::metrics::RejectionMetrics;
use crate::model::Kind;

const NAMESPACE_LIST: &str = r#"
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Namespace
  metadata: {name: demo, labels: {nodemesh.io/mesh: enabled}}
"#;

fn web(vip: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: demo}}
spec: {{clusterIP: {vip}, ports: [{{port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: web-1, namespace: demo, labels: {{kubernetes.io/service-name: web}}}}
ports: [{{port: 80}}]
endpoints: [{{addresses: [10.244.1.5]}}]
"#
    )
}

fn has_vip(s: &DesiredState, vip: &str) -> bool {
    s.services.contains_key(&ServiceKey {
        vip: vip.parse().unwrap(),
        port: 80,
        proto: PROTO_TCP,
    })
}

#[test]
fn reload_tracks_files_and_keeps_last_good_versions() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("00-ns.yaml"), NAMESPACE_LIST).unwrap();
    std::fs::write(dir.path().join("web.yml"), web("10.96.0.10")).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a manifest").unwrap();
    let registry = Registry::new();
    let metrics = RejectionMetrics::new(&registry).unwrap();
    let mut index = Index::new(IndexConfig::default(), Some(metrics.clone()));
    let mut source = FileSource::new(dir.path());

    let s = source.reload(&mut index).unwrap();
    assert_eq!(
        s,
        ReloadSummary {
            applied: 3,
            ..Default::default()
        }
    );
    assert!(has_vip(&index.snapshot(), "10.96.0.10"));
    assert_eq!(
        source.reload(&mut index).unwrap(),
        ReloadSummary::default(),
        "unchanged objects are not applied again"
    );

    // An invalid version is refused once; the last good one stays.
    std::fs::write(dir.path().join("web.yml"), web("10.96.0.999")).unwrap();
    assert_eq!(source.reload(&mut index).unwrap().refused, 1);
    assert_eq!(source.reload(&mut index).unwrap().refused, 0);
    assert_eq!(metrics.count(Kind::Service), 1);
    assert!(has_vip(&index.snapshot(), "10.96.0.10"));

    // A file that is not YAML keeps its last good content.
    std::fs::write(dir.path().join("web.yml"), "spec: [unclosed\n").unwrap();
    let s = source.reload(&mut index).unwrap();
    assert_eq!((s.bad_files, s.deleted), (1, 0));
    assert!(has_vip(&index.snapshot(), "10.96.0.10"));

    // A fixed version applies; a removed file deletes its objects.
    std::fs::write(dir.path().join("web.yml"), web("10.96.0.11")).unwrap();
    source.reload(&mut index).unwrap();
    assert!(has_vip(&index.snapshot(), "10.96.0.11"));
    std::fs::remove_file(dir.path().join("web.yml")).unwrap();
    assert_eq!(source.reload(&mut index).unwrap().deleted, 2);
    assert!(index.snapshot().services.is_empty());
}

async fn wait_for(
    rx: &mut crate::publish::StateReceiver,
    what: impl Fn(&DesiredState) -> bool,
) -> Duration {
    let start = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if what(&rx.borrow_and_update()) {
                return;
            }
            rx.changed().await.expect("source alive");
        }
    })
    .await
    .expect("state reached in time");
    start.elapsed()
}

async fn live_changes(force_poll: bool) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ns.yaml"), NAMESPACE_LIST).unwrap();
    std::fs::write(dir.path().join("web.yaml"), web("10.96.0.10")).unwrap();
    let config = FileSourceConfig {
        force_poll,
        poll_interval: Duration::from_millis(200),
        ..FileSourceConfig::new(dir.path())
    };
    let (mut rx, task) =
        FileSource::start(config, Index::new(IndexConfig::default(), None)).unwrap();
    assert_eq!(
        rx.borrow().generation,
        1,
        "the initial load is published before start returns"
    );
    assert!(has_vip(&rx.borrow(), "10.96.0.10"));

    std::fs::write(dir.path().join("web.yaml"), web("10.96.0.20")).unwrap();
    let took = wait_for(&mut rx, |s| {
        has_vip(s, "10.96.0.20") && !has_vip(s, "10.96.0.10")
    })
    .await;
    assert!(took < Duration::from_secs(1), "applied in {took:?}");

    std::fs::create_dir(dir.path().join("more")).unwrap();
    std::fs::write(
        dir.path().join("more/web2.yaml"),
        web("10.96.0.30").replace("name: web", "name: web2"),
    )
    .unwrap();
    wait_for(&mut rx, |s| has_vip(s, "10.96.0.30")).await;
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_changes_with_notifications() {
    live_changes(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_changes_with_polling() {
    live_changes(true).await;
}

#[tokio::test]
async fn a_single_file_is_watched_too() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cluster.yaml");
    std::fs::write(&file, format!("{NAMESPACE_LIST}---{}", web("10.96.0.10"))).unwrap();
    let (mut rx, task) = FileSource::start(
        FileSourceConfig::new(&file),
        Index::new(IndexConfig::default(), None),
    )
    .unwrap();
    // Replace the file the way editors do: write elsewhere, then rename.
    let tmp = dir.path().join(".cluster.yaml.swp");
    std::fs::write(&tmp, format!("{NAMESPACE_LIST}---{}", web("10.96.0.40"))).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    wait_for(&mut rx, |s| has_vip(s, "10.96.0.40")).await;
    task.abort();
}

#[test]
fn missing_paths_fail_to_start() {
    let err = FileSource::start(
        FileSourceConfig::new("/nonexistent/nodemesh"),
        Index::new(IndexConfig::default(), None),
    )
    .unwrap_err();
    assert!(matches!(err, FileSourceError::Path { .. }), "{err}");
}
