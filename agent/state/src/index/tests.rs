//! Index behaviour, driven by objects decoded from YAML as a user writes them.

use std::net::IpAddr;

use prometheus::Registry;

use super::*;
use crate::desired::{
    BackendEntry, EndpointEntry, MAX_SLOTS_PER_SERVICE, PROTO_TCP, PolicyRule, PolicyRuleKey,
    ServiceKey, StringMatch, Verdict,
};
use crate::model::crds::MtlsMode;
use crate::model::decode::decode_yaml;

const BASE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: demo, labels: {nodemesh.io/mesh: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: plain}
---
apiVersion: v1
kind: Pod
metadata: {name: frontend-1, namespace: demo, labels: {app: frontend}, annotations: {nodemesh.io/cgroup: demo/frontend-1}}
spec: {nodeName: node-a, serviceAccountName: frontend, containers: [{name: app, image: x}]}
status: {podIP: 10.244.1.10}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v1-1, namespace: demo, labels: {app: reviews, version: v1}, annotations: {nodemesh.io/cgroup: demo/reviews-v1-1}}
spec: {nodeName: node-a, serviceAccountName: reviews, containers: [{name: app, image: x}]}
status: {podIP: 10.244.1.11}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v2-1, namespace: demo, labels: {app: reviews, version: v2}, annotations: {nodemesh.io/cgroup: demo/reviews-v2-1}}
spec: {nodeName: node-b, serviceAccountName: reviews, containers: [{name: app, image: x}]}
status: {podIP: 10.244.2.11}
---
apiVersion: v1
kind: Pod
metadata: {name: ratings-1, namespace: demo, labels: {app: ratings}}
spec: {nodeName: node-b, serviceAccountName: ratings, containers: [{name: app, image: x}]}
status: {podIP: 10.244.2.12}
---
apiVersion: v1
kind: Pod
metadata: {name: legacy-1, namespace: plain, labels: {app: legacy}, annotations: {nodemesh.io/cgroup: plain/legacy-1}}
spec: {nodeName: node-a, containers: [{name: app, image: x}]}
status: {podIP: 10.244.1.50}
"#;

fn service(name: &str, vip: &str, port: u16) -> String {
    format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: demo}}\n\
         spec: {{clusterIP: {vip}, ports: [{{name: http, port: {port}, targetPort: {port}}}]}}\n"
    )
}

fn slice(service: &str, port: u16, endpoints: &[(&str, &str)]) -> String {
    let eps: Vec<String> = endpoints
        .iter()
        .map(|(ip, pod)| format!("{{addresses: [{ip}], conditions: {{ready: true}}, targetRef: {{kind: Pod, name: {pod}}}}}"))
        .collect();
    format!(
        "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {service}-abc, namespace: demo, \
         labels: {{kubernetes.io/service-name: {service}}}}}\naddressType: IPv4\n\
         ports: [{{name: http, port: {port}, protocol: TCP}}]\nendpoints: [{}]\n",
        eps.join(", ")
    )
}

fn bookinfo() -> String {
    let mut y = BASE.to_owned();
    y += &service("frontend", "10.96.0.10", 8080);
    y += &slice("frontend", 8080, &[("10.244.1.10", "frontend-1")]);
    y += &service("reviews", "10.96.0.20", 9080);
    y += &slice(
        "reviews",
        9080,
        &[
            ("10.244.1.11", "reviews-v1-1"),
            ("10.244.2.11", "reviews-v2-1"),
        ],
    );
    y += &service("reviews-v1", "10.96.0.21", 9080);
    y += &slice("reviews-v1", 9080, &[("10.244.1.11", "reviews-v1-1")]);
    y += &service("reviews-v2", "10.96.0.22", 9080);
    y += &slice("reviews-v2", 9080, &[("10.244.2.11", "reviews-v2-1")]);
    y += &service("ratings", "10.96.0.30", 50051);
    y += &slice("ratings", 50051, &[("10.244.2.12", "ratings-1")]);
    y
}

fn objects(yaml: &str) -> Vec<Object> {
    decode_yaml(yaml)
        .expect("valid YAML")
        .into_iter()
        .map(|o| o.expect("valid object"))
        .collect()
}

fn one(yaml: &str) -> Object {
    objects(yaml).into_iter().next().expect("one object")
}

fn index() -> Index {
    let mut ix = Index::new(
        IndexConfig {
            node_name: "node-a".into(),
            ..Default::default()
        },
        None,
    );
    assert_eq!(ix.apply_all(objects(&bookinfo())), vec![]);
    ix
}

fn key(vip: &str, port: u16) -> ServiceKey {
    ServiceKey {
        vip: vip.parse().unwrap(),
        port,
        proto: PROTO_TCP,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn weights(state: &DesiredState, vip: &str, port: u16) -> Vec<(IpAddr, u32)> {
    state.services[&key(vip, port)]
        .backends
        .iter()
        .map(|b| (b.ip, b.weight))
        .collect()
}

fn identity_of(state: &DesiredState, spiffe: &str) -> u32 {
    *state
        .identities
        .iter()
        .find(|(_, id)| id.to_string() == spiffe)
        .expect("identity known")
        .0
}

const REVIEWS_SPLIT: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reviews-canary, namespace: demo}
spec:
  parentRefs: [{group: "", kind: Service, name: reviews, port: 9080}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /}}]
    backendRefs: [{name: reviews-v1, port: 9080, weight: 90}, {name: reviews-v2, port: 9080, weight: 10}]
    timeouts: {request: 10s, backendRequest: 2s}
    retry: {attempts: 2, codes: [503], backoff: 100ms}
"#;

#[test]
fn services_get_equal_weights_backend_identities_and_stable_ids() {
    let mut ix = index();
    let s = ix.snapshot();
    let reviews = &s.services[&key("10.96.0.20", 9080)];
    assert_eq!(
        weights(&s, "10.96.0.20", 9080),
        [(ip("10.244.1.11"), 1), (ip("10.244.2.11"), 1)]
    );
    let reviews_id = identity_of(&s, "spiffe://cluster.local/ns/demo/sa/reviews");
    assert_eq!(
        reviews.identity, reviews_id,
        "backends share one identity, so the Service uses it"
    );
    assert!(
        reviews
            .backends
            .iter()
            .all(|b| b.identity == reviews_id && b.port == 9080)
    );
    assert!(reviews.meshed);
    assert_ne!(reviews.id, 0);
    assert_eq!(reviews.port_name.as_deref(), Some("http"));
    let ids: std::collections::BTreeSet<u32> = s.services.values().map(|e| e.id).collect();
    assert_eq!(ids.len(), 5, "each Service port has its own table");
    let again = ix.snapshot();
    assert_eq!(again.generation, s.generation + 1);
    assert_eq!(
        again.services, s.services,
        "numbers are stable across snapshots"
    );
}

#[test]
fn endpoints_and_local_workloads_follow_mesh_membership() {
    let mut ix = index();
    let s = ix.snapshot();
    let frontend = identity_of(&s, "spiffe://cluster.local/ns/demo/sa/frontend");
    assert_eq!(
        s.endpoints[&ip("10.244.1.10")],
        EndpointEntry {
            identity: frontend,
            meshed: true,
            host_ip: None,
            strict: false
        }
    );
    assert!(
        !s.endpoints[&ip("10.244.1.50")].meshed,
        "namespace plain is not meshed"
    );
    assert_ne!(s.endpoints[&ip("10.244.1.50")].identity, 0);
    let cgroups: Vec<&str> = s.workloads.keys().map(String::as_str).collect();
    assert_eq!(
        cgroups,
        ["demo/frontend-1", "demo/reviews-v1-1", "plain/legacy-1"],
        "only node-a Pods"
    );
    let w = &s.workloads["demo/frontend-1"];
    assert_eq!(
        (w.identity, w.meshed, w.ip, w.mtls),
        (
            frontend,
            true,
            Some(ip("10.244.1.10")),
            MtlsMode::Permissive
        )
    );

    // A Pod label alone meshes a Pod of an unmeshed namespace.
    ix.apply(one(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: legacy-1, namespace: plain, labels: {app: legacy, nodemesh.io/mesh: enabled}, annotations: {nodemesh.io/cgroup: plain/legacy-1}}
spec: {nodeName: node-a, containers: [{name: app, image: x}]}
status: {podIP: 10.244.1.50}
"#,
    ))
    .unwrap();
    let s = ix.snapshot();
    assert!(s.endpoints[&ip("10.244.1.50")].meshed);
    assert!(s.workloads["plain/legacy-1"].meshed);
}

#[test]
fn http_route_weights_become_l4_slot_weights_and_l7_rules() {
    let mut ix = index();
    ix.apply(one(REVIEWS_SPLIT)).unwrap();
    let s = ix.snapshot();
    assert_eq!(
        weights(&s, "10.96.0.20", 9080),
        [(ip("10.244.1.11"), 9), (ip("10.244.2.11"), 1)]
    );
    assert_eq!(s.services[&key("10.96.0.20", 9080)].slot_count(), 10);
    let rules = &s.routes[&ServiceName::new("demo", "reviews")].http;
    assert_eq!(rules.len(), 1);
    let r = &rules[0];
    assert_eq!(r.source.kind, "HTTPRoute");
    assert_eq!(r.port, Some(9080));
    assert_eq!(r.consumer_namespace, None);
    assert_eq!(r.matches[0].path, Some(StringMatch::Prefix("/".into())));
    assert_eq!(
        r.backends.iter().map(|b| b.weight).collect::<Vec<_>>(),
        [90, 10]
    );
    assert_eq!(r.request_timeout, Some(std::time::Duration::from_secs(10)));
    assert_eq!(
        r.backend_request_timeout,
        Some(std::time::Duration::from_secs(2))
    );
    let retry = r.retry.as_ref().unwrap();
    assert_eq!(
        (retry.attempts, retry.codes.as_slice(), retry.backoff),
        (
            2,
            &[503u16][..],
            Some(std::time::Duration::from_millis(100))
        )
    );
}

#[test]
fn routes_with_conditions_only_are_l7() {
    let mut ix = index();
    ix.apply(one(r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reviews-header, namespace: demo}
spec:
  parentRefs: [{kind: Service, name: reviews}]
  rules:
  - matches: [{headers: [{name: X-Canary, value: "true"}], method: get}]
    backendRefs: [{name: reviews-v2, port: 9080}]
"#))
        .unwrap();
    let s = ix.snapshot();
    assert_eq!(
        weights(&s, "10.96.0.20", 9080),
        [(ip("10.244.1.11"), 1), (ip("10.244.2.11"), 1)]
    );
    let m = &s.routes[&ServiceName::new("demo", "reviews")].http[0].matches[0];
    assert_eq!(
        m.headers,
        [("x-canary".to_owned(), StringMatch::Exact("true".into()))]
    );
    assert_eq!(m.method.as_deref(), Some("GET"));
}

#[test]
fn traffic_split_uses_the_same_routing_model() {
    let mut ix = index();
    ix.apply(one(r#"
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {name: reviews-split, namespace: demo}
spec:
  service: reviews.demo.svc.cluster.local
  backends: [{service: reviews-v1, weight: 50}, {service: reviews-v2, weight: 150}]
"#))
        .unwrap();
    let s = ix.snapshot();
    assert_eq!(
        weights(&s, "10.96.0.20", 9080),
        [(ip("10.244.1.11"), 1), (ip("10.244.2.11"), 3)]
    );
    let r = &s.routes[&ServiceName::new("demo", "reviews")].http[0];
    assert_eq!(r.source.kind, "TrafficSplit");
    assert!(r.matches.is_empty());
    assert_eq!(
        r.backends
            .iter()
            .map(|b| (b.service.name.as_str(), b.weight))
            .collect::<Vec<_>>(),
        [("reviews-v1", 50), ("reviews-v2", 150)]
    );
}

#[test]
fn grpc_routes_and_consumer_routes() {
    let mut ix = index();
    ix.apply(one(r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: ratings, namespace: demo}
spec:
  parentRefs: [{kind: Service, name: ratings, port: 50051}]
  rules:
  - matches: [{method: {service: demo.Ratings, method: Get}}]
    backendRefs: [{name: ratings, port: 50051}]
"#))
        .unwrap();
    ix.apply(one(BASE.split("---").next().unwrap_or_default()).clone())
        .unwrap();
    ix.apply(one(r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: plain-view, namespace: plain}
spec:
  parentRefs: [{kind: Service, name: reviews, namespace: demo}]
  rules: [{backendRefs: [{name: reviews-v1, namespace: demo, port: 9080}]}]
"#))
        .unwrap();
    let s = ix.snapshot();
    let g = &s.routes[&ServiceName::new("demo", "ratings")].grpc[0];
    assert_eq!(
        g.matches[0].service,
        Some(StringMatch::Exact("demo.Ratings".into()))
    );
    assert_eq!(g.matches[0].method, Some(StringMatch::Exact("Get".into())));
    let h = &s.routes[&ServiceName::new("demo", "reviews")].http[0];
    assert_eq!(h.consumer_namespace.as_deref(), Some("plain"));
    assert_eq!(
        weights(&s, "10.96.0.20", 9080).len(),
        2,
        "consumer routes do not change L4 weights"
    );
}

#[test]
fn invalid_objects_are_rejected_counted_and_the_last_good_version_stays() {
    let registry = Registry::new();
    let metrics = RejectionMetrics::new(&registry).unwrap();
    let mut ix = Index::new(
        IndexConfig {
            node_name: "node-a".into(),
            ..Default::default()
        },
        Some(metrics.clone()),
    );
    assert!(ix.apply_all(objects(&bookinfo())).is_empty());
    ix.apply(one(REVIEWS_SPLIT)).unwrap();

    let zero = REVIEWS_SPLIT
        .replace("weight: 90", "weight: 0")
        .replace("weight: 10", "weight: 0");
    let err = ix.apply(one(&zero)).unwrap_err();
    assert_eq!(
        err.object,
        ObjectRef::new(Kind::HttpRoute, "demo", "reviews-canary")
    );
    assert_eq!(err.field, "spec.rules[0].backendRefs");
    assert_eq!(err.reason, Reason::ZeroWeights);
    assert_eq!(
        err.to_string(),
        "rejected HTTPRoute demo/reviews-canary: spec.rules[0].backendRefs: backend weights sum to zero"
    );
    let s = ix.snapshot();
    assert_eq!(
        weights(&s, "10.96.0.20", 9080),
        [(ip("10.244.1.11"), 9), (ip("10.244.2.11"), 1)],
        "last good route in force"
    );

    let bad_ip = service("reviews", "10.96.0.300", 9080);
    let err = ix.apply(one(&bad_ip)).unwrap_err();
    assert_eq!(
        (err.field.as_str(), &err.reason),
        ("spec.clusterIP", &Reason::Ip("10.96.0.300".into()))
    );
    assert!(
        ix.snapshot()
            .services
            .contains_key(&key("10.96.0.20", 9080))
    );

    let bad_selector = r#"
apiVersion: nodemesh.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: p, namespace: demo}
spec:
  targetSelector: {matchExpressions: [{key: app, operator: Near, values: [x]}]}
  action: DENY
"#;
    let err = ix.apply(one(bad_selector)).unwrap_err();
    assert_eq!(err.field, "spec.targetSelector");
    assert!(matches!(err.reason, Reason::Selector(_)));

    let negative = REVIEWS_SPLIT.replace("weight: 10", "weight: -1");
    let err = ix.apply(one(&negative)).unwrap_err();
    assert_eq!(
        (err.field.as_str(), &err.reason),
        (
            "spec.rules[0].backendRefs[1].weight",
            &Reason::NegativeWeight(-1)
        )
    );

    assert_eq!(metrics.count(Kind::HttpRoute), 2);
    assert_eq!(metrics.count(Kind::Service), 1);
    assert_eq!(metrics.count(Kind::AuthorizationPolicy), 1);
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap();
    assert!(
        text.contains(r#"nodemesh_state_rejected_objects_total{kind="HTTPRoute"} 2"#),
        "{text}"
    );
}

#[test]
fn routes_to_missing_services_wait_for_them() {
    let mut ix = Index::new(IndexConfig::default(), None);
    let mut objs = objects(&bookinfo());
    objs.retain(|o| !o.object_ref().name.starts_with("reviews-v2"));
    assert!(ix.apply_all(objs).is_empty());
    let err = ix.apply(one(REVIEWS_SPLIT)).unwrap_err();
    assert_eq!(err.field, "spec.rules[0].backendRefs");
    assert_eq!(
        err.reason,
        Reason::MissingService(Box::new(ServiceName::new("demo", "reviews-v2")))
    );
    assert_eq!(
        ix.held_back().collect::<Vec<_>>(),
        [&ObjectRef::new(Kind::HttpRoute, "demo", "reviews-canary")]
    );
    assert!(ix.snapshot().routes.is_empty());

    ix.apply(one(&service("reviews-v2", "10.96.0.22", 9080)))
        .unwrap();
    assert_eq!(ix.held_back().count(), 0);
    let s = ix.snapshot();
    assert_eq!(s.routes[&ServiceName::new("demo", "reviews")].http.len(), 1);
    // reviews-v2 has no endpoints yet: reviews-v1 takes all traffic.
    assert_eq!(weights(&s, "10.96.0.20", 9080), [(ip("10.244.1.11"), 1)]);
}

#[test]
fn deletes_and_relists_remove_state() {
    let mut ix = index();
    ix.delete(&ObjectRef::new(Kind::Service, "demo", "ratings"));
    ix.delete(&ObjectRef::new(Kind::Pod, "demo", "frontend-1"));
    let s = ix.snapshot();
    assert!(!s.services.contains_key(&key("10.96.0.30", 50051)));
    assert!(!s.workloads.contains_key("demo/frontend-1"));
    // The frontend slice still names the address; it is known through the Service now.
    assert!(s.endpoints.contains_key(&ip("10.244.1.10")));

    let keep: Vec<Object> = objects(&bookinfo())
        .into_iter()
        .filter(|o| o.kind() == Kind::Pod && o.object_ref().name == "ratings-1")
        .collect();
    assert!(ix.replace_kind(Kind::Pod, keep).is_empty());
    assert_eq!(
        ix.refs(Kind::Pod),
        [ObjectRef::new(Kind::Pod, "demo", "ratings-1")]
    );
    assert!(ix.snapshot().workloads.is_empty());
}

#[test]
fn services_without_slices_use_selected_pods() {
    let mut ix = Index::new(IndexConfig::default(), None);
    let mut y = BASE.to_owned();
    y += "---\napiVersion: v1\nkind: Service\nmetadata: {name: reviews, namespace: demo}\n\
          spec: {clusterIP: 10.96.0.20, selector: {app: reviews}, ports: [{port: 80, targetPort: 9080}]}\n";
    assert!(ix.apply_all(objects(&y)).is_empty());
    let s = ix.snapshot();
    let b: Vec<(IpAddr, u16)> = s.services[&key("10.96.0.20", 80)]
        .backends
        .iter()
        .map(|b| (b.ip, b.port))
        .collect();
    assert_eq!(b, [(ip("10.244.1.11"), 9080), (ip("10.244.2.11"), 9080)]);
}

fn policy_yaml(name: &str, action: &str, selector: &str, rules: &str) -> String {
    format!(
        "apiVersion: nodemesh.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: demo}}\n\
         spec:\n  targetSelector: {selector}\n  action: {action}\n  rules: {rules}\n"
    )
}

#[test]
fn deny_policies_become_kernel_rules_and_authorization_entries() {
    let mut ix = index();
    ix.apply(one(&policy_yaml(
        "no-frontend",
        "DENY",
        "{matchLabels: {app: ratings}}",
        "[{from: [{identities: ['spiffe://cluster.local/ns/demo/sa/frontend', 'spiffe://cluster.local/ns/other/sa/outsider']}], to: [{ports: [50051]}]}]",
    )))
    .unwrap();
    let s = ix.snapshot();
    let frontend = identity_of(&s, "spiffe://cluster.local/ns/demo/sa/frontend");
    let ratings = identity_of(&s, "spiffe://cluster.local/ns/demo/sa/ratings");
    let outsider = identity_of(&s, "spiffe://cluster.local/ns/other/sa/outsider");
    let rules: Vec<_> = s.policy.iter().map(|(k, r)| (*k, r.verdict)).collect();
    let deny = |src| {
        (
            PolicyRuleKey {
                src_identity: src,
                dst_identity: ratings,
                port: 50051,
            },
            Verdict::Deny,
        )
    };
    let mut expected = vec![deny(frontend), deny(outsider)];
    expected.sort_by_key(|(k, _)| *k);
    assert_eq!(rules, expected, "identities without Pods get numbers too");
    let entries = &s.authorization[&ratings];
    assert_eq!(entries[0].policy, ServiceName::new("demo", "no-frontend"));
    assert_eq!(entries[0].rules[0].ports, [50051]);
}

#[test]
fn allow_policies_deny_the_rest_and_deny_wins() {
    let mut ix = index();
    ix.apply(one(&policy_yaml(
        "ratings-allow",
        "ALLOW",
        "{matchLabels: {app: ratings}}",
        "[{from: [{namespaces: [demo]}]}]",
    )))
    .unwrap();
    ix.apply(one(&policy_yaml(
        "ratings-deny",
        "DENY",
        "{matchLabels: {app: ratings}}",
        "[{from: [{identities: ['spiffe://cluster.local/ns/demo/sa/frontend']}], to: [{ports: [50051]}]}]",
    )))
    .unwrap();
    let s = ix.snapshot();
    let id = |sa: &str| identity_of(&s, &format!("spiffe://cluster.local/ns/demo/sa/{sa}"));
    let k = |src, port| PolicyRuleKey {
        src_identity: src,
        dst_identity: id("ratings"),
        port,
    };
    let verdict = |key: PolicyRuleKey| s.policy.get(&key).map(|r: &PolicyRule| r.verdict);
    assert_eq!(
        verdict(k(0, 0)),
        Some(Verdict::Deny),
        "fallback deny for the ALLOW target"
    );
    assert_eq!(verdict(k(id("reviews"), 0)), Some(Verdict::Allow));
    assert_eq!(
        verdict(k(id("frontend"), 0)),
        Some(Verdict::Allow),
        "allowed on other ports"
    );
    assert_eq!(
        verdict(k(id("frontend"), 50051)),
        Some(Verdict::Deny),
        "explicit deny at the intersection"
    );
    assert_eq!(s.authorization[&id("ratings")].len(), 2);
    // Policies only reach identities whose Pods they all select: reviews has v1 and v2.
    ix.apply(one(&policy_yaml(
        "v1-only",
        "DENY",
        "{matchLabels: {version: v1}}",
        "[]",
    )))
    .unwrap();
    let s2 = ix.snapshot();
    assert!(s2.policy.keys().all(|k| k.dst_identity != id("reviews")));
    assert_eq!(s2.authorization[&id("reviews")][0].policy.name, "v1-only");
}

#[test]
fn mesh_config_sets_default_deny_and_mtls_modes() {
    let mut ix = index();
    ix.apply(one(r#"
apiVersion: nodemesh.io/v1alpha1
kind: MeshConfig
metadata: {name: default}
spec:
  defaultAction: DENY
  trustDomain: example.org
  mtls:
    mode: STRICT
    workloads: [{namespace: demo, selector: {matchLabels: {app: frontend}}, mode: PERMISSIVE}]
"#))
        .unwrap();
    let s = ix.snapshot();
    assert_eq!(s.mesh.trust_domain, "example.org");
    let frontend = identity_of(&s, "spiffe://example.org/ns/demo/sa/frontend");
    assert_eq!(
        s.policy[&PolicyRuleKey {
            src_identity: 0,
            dst_identity: frontend,
            port: 0
        }]
            .verdict,
        Verdict::Deny
    );
    let legacy = s.endpoints[&ip("10.244.1.50")].identity;
    assert!(
        !s.policy.keys().any(|k| k.dst_identity == legacy),
        "unmeshed workloads keep working"
    );
    assert_eq!(s.workloads["demo/frontend-1"].mtls, MtlsMode::Permissive);
    assert_eq!(s.workloads["demo/reviews-v1-1"].mtls, MtlsMode::Strict);
}

fn cands(prefix: &str, n: u8, identity: u32) -> Vec<(IpAddr, u16, u32, bool)> {
    (1..=n)
        .map(|i| (format!("{prefix}.{i}").parse().unwrap(), 80, identity, true))
        .collect()
}

#[test]
fn distribution_is_exact_when_it_fits() {
    let svc = ServiceName::new("demo", "reviews");
    let b = services::distribute(
        &svc,
        vec![(90, cands("10.0.1", 2, 1)), (10, cands("10.0.2", 3, 2))],
    );
    assert_eq!(
        b.iter().map(|b| b.weight).collect::<Vec<_>>(),
        [27, 27, 2, 2, 2]
    );
    let b = services::distribute(&svc, vec![(90, cands("10.0.1", 2, 1)), (10, vec![])]);
    assert_eq!(
        b.iter().map(|b| b.weight).collect::<Vec<_>>(),
        [1, 1],
        "empty groups drop out"
    );
    assert!(services::distribute(&svc, vec![(0, cands("10.0.1", 2, 1))]).is_empty());
}

#[test]
fn distribution_is_capped_at_the_slot_limit() {
    let svc = ServiceName::new("demo", "big");
    let many: Vec<_> = (0..1500u32)
        .map(|i| {
            (
                IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i)),
                80,
                1,
                true,
            )
        })
        .collect();
    let b = services::distribute(&svc, vec![(1, many.clone())]);
    assert_eq!(b.len(), MAX_SLOTS_PER_SERVICE as usize);
    let b = services::distribute(
        &svc,
        vec![(999, cands("10.0.1", 7, 1)), (1, cands("10.0.2", 11, 2))],
    );
    let total: u32 = b.iter().map(|b| b.weight).sum();
    assert_eq!(total, MAX_SLOTS_PER_SERVICE);
    let heavy: u32 = b
        .iter()
        .filter(|b: &&BackendEntry| b.identity == 1)
        .map(|b| b.weight)
        .sum();
    assert!(heavy >= 1010, "the 99.9% group keeps its share: {heavy}");
}

#[test]
fn a_route_waiting_for_two_services_applies_after_both() {
    let mut ix = Index::new(IndexConfig::default(), None);
    let mut objs = objects(&bookinfo());
    objs.retain(|o| o.kind() != Kind::Service || !o.object_ref().name.starts_with("reviews-"));
    assert!(ix.apply_all(objs).is_empty());
    assert!(ix.apply(one(REVIEWS_SPLIT)).is_err());
    ix.apply(one(&service("reviews-v1", "10.96.0.21", 9080)))
        .unwrap();
    assert_eq!(ix.held_back().count(), 1, "still waiting for reviews-v2");
    ix.apply(one(&service("reviews-v2", "10.96.0.22", 9080)))
        .unwrap();
    assert_eq!(ix.held_back().count(), 0);
    let s = ix.snapshot();
    assert_eq!(
        weights(&s, "10.96.0.20", 9080),
        [(ip("10.244.1.11"), 9), (ip("10.244.2.11"), 1)]
    );
}

#[test]
fn each_invalid_field_is_named() {
    let cases: [(&str, &str, &str); 8] = [
        (
            "apiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\nmetadata: {name: s, namespace: demo}\n\
             spec: {service: reviews, backends: [{service: reviews-v1, weight: 1}], matches: [{kind: HTTPRouteGroup, name: ab}]}",
            "spec.matches",
            "unsupported value \"HTTPRouteGroup matches\"",
        ),
        (
            "apiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\nmetadata: {name: s, namespace: demo}\n\
             spec: {service: reviews, backends: [{service: reviews-v1, weight: 0}]}",
            "spec.backends",
            "backend weights sum to zero",
        ),
        (
            "apiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\nmetadata: {name: s, namespace: demo}\n\
             spec: {service: nowhere, backends: [{service: reviews-v1, weight: 1}]}",
            "spec.service",
            "Service demo/nowhere does not exist",
        ),
        (
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {name: g, namespace: demo}\n\
             spec: {parentRefs: [{kind: Service, name: ratings}], rules: [{matches: [{method: {type: Glob, service: x}}]}]}",
            "spec.rules[0].matches[0].method.type",
            "unsupported value \"Glob\"",
        ),
        (
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: h, namespace: demo}\n\
             spec: {parentRefs: [{kind: Service, name: reviews}], rules: [{timeouts: {request: 10 seconds}}]}",
            "spec.rules[0].timeouts.request",
            "invalid duration \"10 seconds\"",
        ),
        (
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: h, namespace: demo}\n\
             spec: {parentRefs: [{kind: Service, name: reviews}], rules: [{backendRefs: [{name: reviews-v1, port: 70000}]}]}",
            "spec.rules[0].backendRefs[0].port",
            "invalid port 70000",
        ),
        (
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: e, namespace: demo, labels: {kubernetes.io/service-name: reviews}}\n\
             addressType: IPv4\nendpoints: [{addresses: [10.0.0.1], conditions: {ready: true}}, {addresses: [not-an-ip]}]",
            "endpoints[1].addresses[0]",
            "invalid IP address \"not-an-ip\"",
        ),
        (
            "apiVersion: nodemesh.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: demo}\n\
             spec: {action: ALLOW, rules: [{from: [{identities: [frontend]}]}]}",
            "spec.rules[0].from[0].identities[0]",
            "invalid SPIFFE ID \"frontend\"",
        ),
    ];
    let mut ix = index();
    let before = ix.snapshot();
    for (yaml, field, reason) in cases {
        let err = ix.apply(one(yaml)).unwrap_err();
        assert_eq!(
            (err.field.as_str(), err.reason.to_string().as_str()),
            (field, reason),
            "{yaml}"
        );
    }
    let mut after = ix.snapshot();
    after.generation = before.generation;
    assert_eq!(after, before, "refused objects change nothing");
}
