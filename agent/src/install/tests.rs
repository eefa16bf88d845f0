//! `nodemesh install` and `uninstall` run through the real command line;
//! every document they print parses back into its typed Kubernetes object.

use std::collections::BTreeMap;

use clap::{CommandFactory as _, Parser as _};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use nodemesh_state::k8s::rbac::policy_rules;
use nodemesh_state::model::crds::crds;
use nodemesh_state::model::{MESH_ENABLED, MESH_LABEL};
use serde::Deserialize as _;

use super::*;
use crate::cli::{Cli, Command};

/// One printed document, parsed into its typed object.
#[derive(Debug, PartialEq)]
enum Doc {
    Namespace(Namespace),
    ServiceAccount(ServiceAccount),
    ClusterRole(ClusterRole),
    ClusterRoleBinding(ClusterRoleBinding),
    Crd(Box<CustomResourceDefinition>),
    ConfigMap(ConfigMap),
    DaemonSet(Box<DaemonSet>),
}

impl Doc {
    fn kind(&self) -> &'static str {
        match self {
            Doc::Namespace(_) => "Namespace",
            Doc::ServiceAccount(_) => "ServiceAccount",
            Doc::ClusterRole(_) => "ClusterRole",
            Doc::ClusterRoleBinding(_) => "ClusterRoleBinding",
            Doc::Crd(_) => "CustomResourceDefinition",
            Doc::ConfigMap(_) => "ConfigMap",
            Doc::DaemonSet(_) => "DaemonSet",
        }
    }
}

/// Runs `nodemesh <argv...>` (install or uninstall) and returns its output.
fn run(argv: &[&str]) -> String {
    let cli = Cli::try_parse_from(std::iter::once("nodemesh").chain(argv.iter().copied()))
        .unwrap_or_else(|e| panic!("{argv:?} parses: {e}"));
    let mut out = Vec::new();
    let count = match &cli.command {
        Command::Install(args) => write_install(args, &mut out),
        Command::Uninstall(args) => write_uninstall(args, &mut out),
        other => panic!("not install or uninstall: {other:?}"),
    }
    .expect("manifests are written");
    let yaml = String::from_utf8(out).expect("UTF-8");
    assert_eq!(yaml.matches("---\n").count(), count, "{yaml}");
    yaml
}

/// Parses every document of a stream into its typed object, by `kind`.
fn parse(yaml: &str) -> Vec<Doc> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|document| {
            let value = serde_yaml_ng::Value::deserialize(document).expect("a YAML document");
            let kind = value["kind"].as_str().expect("every document has a kind");
            let api_version = value["apiVersion"].as_str().expect("an apiVersion");
            let doc = match kind {
                "Namespace" => Doc::Namespace(typed(value.clone())),
                "ServiceAccount" => Doc::ServiceAccount(typed(value.clone())),
                "ClusterRole" => Doc::ClusterRole(typed(value.clone())),
                "ClusterRoleBinding" => Doc::ClusterRoleBinding(typed(value.clone())),
                "CustomResourceDefinition" => Doc::Crd(Box::new(typed(value.clone()))),
                "ConfigMap" => Doc::ConfigMap(typed(value.clone())),
                "DaemonSet" => Doc::DaemonSet(Box::new(typed(value.clone()))),
                other => panic!("unexpected kind {other}"),
            };
            let expected_api = match kind {
                "Namespace" | "ServiceAccount" | "ConfigMap" => "v1",
                "ClusterRole" | "ClusterRoleBinding" => "rbac.authorization.k8s.io/v1",
                "CustomResourceDefinition" => "apiextensions.k8s.io/v1",
                _ => "apps/v1",
            };
            assert_eq!(api_version, expected_api, "{kind}");
            doc
        })
        .collect()
}

fn typed<T: serde::de::DeserializeOwned>(value: serde_yaml_ng::Value) -> T {
    serde_yaml_ng::from_value(value).unwrap_or_else(|e| {
        panic!(
            "{} does not parse: {e}",
            std::any::type_name::<T>().rsplit("::").next().unwrap()
        )
    })
}

fn find<'a, T>(docs: &'a [Doc], pick: impl Fn(&'a Doc) -> Option<&'a T>) -> &'a T {
    let found: Vec<_> = docs.iter().filter_map(pick).collect();
    assert_eq!(found.len(), 1, "exactly one of a kind expected");
    found[0]
}

fn daemon_set(docs: &[Doc]) -> &DaemonSet {
    find(docs, |d| match d {
        Doc::DaemonSet(ds) => Some(&**ds),
        _ => None,
    })
}

fn agent(ds: &DaemonSet) -> &Container {
    let pod = ds.spec.template.spec.as_ref().expect("pod spec");
    assert_eq!(pod.containers.len(), 1);
    &pod.containers[0]
}

fn kinds(docs: &[Doc]) -> Vec<&'static str> {
    docs.iter().map(Doc::kind).collect()
}

#[test]
fn install_prints_every_object_in_apply_order() {
    let docs = parse(&run(&["install"]));
    assert_eq!(
        kinds(&docs),
        [
            "Namespace",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "DaemonSet",
        ]
    );
    // Every namespaced object is in the default namespace, which is created first.
    let Doc::Namespace(ns) = &docs[0] else {
        unreachable!()
    };
    assert_eq!(ns.metadata.name.as_deref(), Some("nodemesh-system"));
    let labels = ns.metadata.labels.as_ref().unwrap();
    assert_ne!(
        labels.get(MESH_LABEL).map(String::as_str),
        Some(MESH_ENABLED)
    );
    assert_eq!(labels["pod-security.kubernetes.io/enforce"], "privileged");
    for doc in &docs {
        let meta = match doc {
            Doc::ServiceAccount(o) => &o.metadata,
            Doc::ConfigMap(o) => &o.metadata,
            Doc::DaemonSet(o) => &o.metadata,
            _ => continue,
        };
        assert_eq!(meta.namespace.as_deref(), Some("nodemesh-system"));
    }
}

#[test]
fn printed_objects_are_exactly_the_built_ones() {
    // Serializing loses nothing: what kubectl receives is what the code built.
    let options = InstallOptions::default();
    let docs = parse(&run(&["install"]));
    let built = install_manifests(&options);
    assert_eq!(docs.len(), built.len());
    for (doc, manifest) in docs.iter().zip(&built) {
        let same = match (doc, manifest) {
            (Doc::Namespace(a), Manifest::Namespace(b)) => a == b,
            (Doc::ServiceAccount(a), Manifest::ServiceAccount(b)) => a == b,
            (Doc::ClusterRole(a), Manifest::ClusterRole(b)) => a == b,
            (Doc::ClusterRoleBinding(a), Manifest::ClusterRoleBinding(b)) => a == b,
            (Doc::Crd(a), Manifest::CustomResourceDefinition(b)) => a == b,
            (Doc::ConfigMap(a), Manifest::ConfigMap(b)) => a == b,
            (Doc::DaemonSet(a), Manifest::DaemonSet(b)) => a == b,
            _ => false,
        };
        assert!(
            same,
            "{} {} changed in YAML",
            manifest.kind(),
            manifest.name()
        );
    }
}

#[test]
fn crds_are_the_generated_ones() {
    let docs = parse(&run(&["install"]));
    let printed: Vec<_> = docs
        .iter()
        .filter_map(|d| match d {
            Doc::Crd(c) => Some(c),
            _ => None,
        })
        .collect();
    let generated = crds();
    assert_eq!(printed.len(), generated.len());
    for (p, g) in printed.iter().zip(&generated) {
        assert_eq!(p.metadata.name, g.metadata.name);
        assert_eq!(p.spec, g.spec);
        assert_eq!(
            p.metadata.labels.as_ref().unwrap()["app.kubernetes.io/part-of"],
            "nodemesh"
        );
    }
}

#[test]
fn cluster_role_is_read_only_and_bound_to_the_agent() {
    let docs = parse(&run(&["install", "--namespace", "mesh"]));
    let role = find(&docs, |d| match d {
        Doc::ClusterRole(r) => Some(r),
        _ => None,
    });
    let rules = role.rules.as_ref().expect("rules");
    assert_eq!(rules, &policy_rules());
    for rule in rules {
        assert!(!rule.verbs.is_empty());
        for verb in &rule.verbs {
            assert!(["get", "list", "watch"].contains(&verb.as_str()), "{verb}");
        }
        for list in [&rule.api_groups, &rule.resources] {
            assert!(!list.as_ref().unwrap().iter().any(|s| s.contains('*')));
        }
        assert!(rule.non_resource_urls.is_none() && rule.resource_names.is_none());
    }
    assert!(role.aggregation_rule.is_none());

    let binding = find(&docs, |d| match d {
        Doc::ClusterRoleBinding(b) => Some(b),
        _ => None,
    });
    assert_eq!(binding.role_ref.kind, "ClusterRole");
    assert_eq!(&binding.role_ref.name, role.metadata.name.as_ref().unwrap());
    let account = find(&docs, |d| match d {
        Doc::ServiceAccount(a) => Some(a),
        _ => None,
    });
    let subjects = binding.subjects.as_ref().unwrap();
    assert_eq!(subjects.len(), 1);
    assert_eq!(subjects[0].kind, "ServiceAccount");
    assert_eq!(Some(&subjects[0].name), account.metadata.name.as_ref());
    assert_eq!(subjects[0].namespace.as_deref(), Some("mesh"));
    let pod = daemon_set(&docs).spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.service_account_name, account.metadata.name);
}

#[test]
fn daemon_set_runs_on_every_node_with_exact_privileges() {
    let docs = parse(&run(&["install"]));
    let ds = daemon_set(&docs);
    let pod = ds.spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.host_network, Some(true));
    assert_ne!(pod.host_pid, Some(true));
    assert_ne!(pod.host_ipc, Some(true));
    assert_eq!(pod.dns_policy.as_deref(), Some("ClusterFirstWithHostNet"));
    assert_eq!(
        pod.priority_class_name.as_deref(),
        Some("system-node-critical")
    );
    // A single toleration without key or effect tolerates every taint.
    let tolerations = pod.tolerations.as_ref().unwrap();
    assert_eq!(tolerations.len(), 1);
    assert_eq!(tolerations[0].operator.as_deref(), Some("Exists"));
    assert!(tolerations[0].key.is_none() && tolerations[0].effect.is_none());

    let strategy = ds.spec.update_strategy.as_ref().unwrap();
    assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
    let rolling = strategy.rolling_update.as_ref().unwrap();
    assert_eq!(rolling.max_unavailable, Some(IntOrString::Int(1)));

    // The selector matches the template, which kubectl apply checks.
    let selector = ds.spec.selector.match_labels.as_ref().unwrap();
    let labels = ds
        .spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .as_ref()
        .unwrap();
    assert!(selector.iter().all(|(k, v)| labels.get(k) == Some(v)));

    let c = agent(ds);
    assert_eq!(c.image.as_deref(), Some(options::DEFAULT_IMAGE));
    assert!(
        options::DEFAULT_IMAGE.ends_with(&format!(":{}", env!("CARGO_PKG_VERSION"))),
        "{}",
        options::DEFAULT_IMAGE
    );
    let security = c.security_context.as_ref().unwrap();
    assert_ne!(security.privileged, Some(true));
    assert_eq!(security.run_as_user, Some(0));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    let caps = security.capabilities.as_ref().unwrap();
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_owned()][..]));
    let mut added = caps.add.clone().unwrap();
    added.sort();
    assert_eq!(added, ["BPF", "NET_ADMIN", "PERFMON", "SYS_ADMIN"]);
    // Kubernetes refuses allowPrivilegeEscalation=false together with SYS_ADMIN.
    assert_ne!(security.allow_privilege_escalation, Some(false));

    let resources = c.resources.as_ref().unwrap();
    for set in [&resources.requests, &resources.limits] {
        let set = set.as_ref().unwrap();
        assert!(
            set.contains_key("cpu") && set.contains_key("memory"),
            "{set:?}"
        );
    }
}

#[test]
fn daemon_set_mounts_host_cgroups_bpffs_and_the_ca_secret() {
    let docs = parse(&run(&["install"]));
    let ds = daemon_set(&docs);
    let pod = ds.spec.template.spec.as_ref().unwrap();
    let volumes: BTreeMap<_, _> = pod
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .map(|v| (v.name.as_str(), v))
        .collect();
    let mounts: BTreeMap<_, _> = agent(ds)
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| (m.mount_path.as_str(), m))
        .collect();
    assert_eq!(mounts.len(), volumes.len(), "every volume is mounted");
    for (host_path, mount_path) in [
        ("/sys/fs/cgroup", "/sys/fs/cgroup"),
        ("/sys/fs/bpf", "/sys/fs/bpf"),
    ] {
        let mount = mounts[mount_path];
        let source = volumes[mount.name.as_str()].host_path.as_ref().unwrap();
        assert_eq!(source.path, host_path);
        assert_eq!(source.type_.as_deref(), Some("Directory"));
    }
    let ca = mounts[meta::CA_MOUNT_PATH];
    assert_eq!(ca.read_only, Some(true));
    let secret = volumes[ca.name.as_str()].secret.as_ref().unwrap();
    assert_eq!(secret.secret_name.as_deref(), Some("nodemesh-ca"));
    assert_eq!(secret.default_mode, Some(0o400));
    // The Secret's keys are the file names the agent loads from --ca-dir.
    assert!(secret.items.is_none());
    assert!(
        agent(ds)
            .args
            .as_ref()
            .unwrap()
            .contains(&format!("--ca-dir={}", meta::CA_MOUNT_PATH))
    );
}

#[test]
fn daemon_set_probes_the_admin_endpoint_the_agent_serves() {
    let docs = parse(&run(&["install", "--admin-addr", "[::]:15100"]));
    let c = agent(daemon_set(&docs));
    let path_and_port = |probe: &Option<k8s_openapi::api::core::v1::Probe>| {
        let get = probe.as_ref().unwrap().http_get.as_ref().unwrap();
        (
            get.path.clone().unwrap(),
            get.port.clone(),
            get.host.clone(),
        )
    };
    assert_eq!(
        path_and_port(&c.liveness_probe),
        ("/healthz".into(), IntOrString::Int(15100), None)
    );
    assert_eq!(
        path_and_port(&c.readiness_probe),
        ("/ready".into(), IntOrString::Int(15100), None)
    );
    assert_eq!(
        path_and_port(&c.startup_probe),
        ("/healthz".into(), IntOrString::Int(15100), None)
    );
    let ports: Vec<_> = c
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .map(|p| (p.container_port, p.host_port))
        .collect();
    assert_eq!(
        ports,
        [
            (15100, Some(15100)),
            (15001, Some(15001)),
            (15008, Some(15008))
        ]
    );

    // The agent's real command line accepts the arguments, in kube mode,
    // with the admin endpoint where the probes look.
    let args = c.args.as_ref().unwrap();
    let cli =
        Cli::try_parse_from(std::iter::once("nodemesh").chain(args.iter().map(String::as_str)))
            .expect("the DaemonSet's arguments parse");
    let Command::Agent(agent_args) = cli.command else {
        panic!("not `nodemesh agent`: {args:?}")
    };
    assert!(agent_args.kube);
    assert_eq!(agent_args.admin_addr, "[::]:15100".parse().unwrap());
    assert_eq!(agent_args.redirect_port, 15001);
    assert_eq!(agent_args.ca_dir, std::path::Path::new(meta::CA_MOUNT_PATH));
}

#[test]
fn daemon_set_env_is_read_by_the_agent() {
    let docs = parse(&run(&["install", "--trust-domain", "mesh.example"]));
    let c = agent(daemon_set(&docs));
    let env: BTreeMap<_, _> = c
        .env
        .as_ref()
        .unwrap()
        .iter()
        .map(|e| (e.name.as_str(), e.value_from.as_ref().unwrap()))
        .collect();
    assert!(!env.contains_key("KUBERNETES_SERVICE_HOST"));
    let field = |name: &str| env[name].field_ref.as_ref().unwrap().field_path.as_str();
    assert_eq!(field("NODE_NAME"), "spec.nodeName");
    assert_eq!(field("POD_UID"), "metadata.uid");
    assert_eq!(field("NODEMESH_NODE_ADDR"), "status.hostIP");
    assert_eq!(field("NODEMESH_REDIRECT_ADDR"), "status.hostIP");

    // Every variable is one `nodemesh agent` reads.
    let command = Cli::command();
    let agent_command = command.find_subcommand("agent").unwrap();
    let known: Vec<String> = agent_command
        .get_arguments()
        .chain(command.get_arguments())
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect();
    for name in env.keys() {
        assert!(
            known.iter().any(|k| k == name),
            "{name} is not read by the agent"
        );
    }

    // Settings come from the ConfigMap, which has every key referenced.
    let config = find(&docs, |d| match d {
        Doc::ConfigMap(c) => Some(c),
        _ => None,
    });
    let data = config.data.as_ref().unwrap();
    assert_eq!(data[config::TRUST_DOMAIN_KEY], "mesh.example");
    for source in env.values() {
        if let Some(key_ref) = &source.config_map_key_ref {
            assert_eq!(Some(&key_ref.name), config.metadata.name.as_ref());
            assert!(data.contains_key(&key_ref.key), "{}", key_ref.key);
        }
    }
    let trust = env["NODEMESH_TRUST_DOMAIN"]
        .config_map_key_ref
        .as_ref()
        .unwrap();
    assert_eq!(trust.key, config::TRUST_DOMAIN_KEY);
}

#[test]
fn changed_settings_change_the_pod_template() {
    let digest = |argv: &[&str]| {
        let docs = parse(&run(argv));
        let ds = daemon_set(&docs);
        ds.spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()[daemonset::CONFIG_DIGEST_ANNOTATION]
            .clone()
    };
    let default = digest(&["install"]);
    assert_eq!(default, digest(&["install"]));
    assert_ne!(
        default,
        digest(&["install", "--trust-domain", "other.example"])
    );
}

#[test]
fn flags_reach_every_object() {
    let docs = parse(&run(&[
        "install",
        "--namespace",
        "mesh-prod",
        "--image",
        "registry.example:5000/team/nodemesh:v2@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    ]));
    let c = agent(daemon_set(&docs));
    assert!(
        c.image
            .as_deref()
            .unwrap()
            .starts_with("registry.example:5000/team/nodemesh:v2@")
    );
    for doc in &docs {
        let meta = match doc {
            Doc::Namespace(o) => {
                assert_eq!(o.metadata.name.as_deref(), Some("mesh-prod"));
                continue;
            }
            Doc::ServiceAccount(o) => &o.metadata,
            Doc::ConfigMap(o) => &o.metadata,
            Doc::DaemonSet(o) => &o.metadata,
            _ => continue,
        };
        assert_eq!(meta.namespace.as_deref(), Some("mesh-prod"));
    }
}

#[test]
fn uninstall_prints_the_same_objects_in_reverse() {
    let argv = ["--namespace", "mesh", "--trust-domain", "t.example"];
    let installed = parse(&run(&[&["install"][..], &argv].concat()));
    let mut uninstalled = parse(&run(&[&["uninstall"][..], &argv].concat()));
    assert_eq!(uninstalled.first().map(Doc::kind), Some("DaemonSet"));
    assert_eq!(uninstalled.last().map(Doc::kind), Some("Namespace"));
    uninstalled.reverse();
    assert_eq!(installed, uninstalled);
    // The same checks hold for what is deleted.
    let role = find(&uninstalled, |d| match d {
        Doc::ClusterRole(r) => Some(r),
        _ => None,
    });
    assert!(
        role.rules
            .as_ref()
            .unwrap()
            .iter()
            .all(|r| r.verbs == ["get", "list", "watch"])
    );
    let pod = daemon_set(&uninstalled)
        .spec
        .template
        .spec
        .as_ref()
        .unwrap();
    assert_eq!(pod.host_network, Some(true));
}

/// The usage error clap reports for `nodemesh <argv...>`.
fn usage_error(argv: &[&str]) -> String {
    let error = Cli::try_parse_from(std::iter::once("nodemesh").chain(argv.iter().copied()))
        .expect_err("refused");
    assert_eq!(error.kind(), clap::error::ErrorKind::ValueValidation);
    assert_eq!(error.exit_code(), 2);
    error.to_string()
}

#[test]
fn bad_flags_are_refused_with_what_to_pass() {
    let message = usage_error(&["install", "--namespace", "Nodemesh_System"]);
    assert!(message.contains("--namespace nodemesh-system"), "{message}");
    let message = usage_error(&["uninstall", "--namespace=-mesh"]);
    assert!(message.contains("invalid namespace"), "{message}");
    let message = usage_error(&["install", "--image", ""]);
    assert!(
        message.contains("the image is empty: pass --image"),
        "{message}"
    );
    let message = usage_error(&["install", "--image", "ghcr.io/Example/nodemesh:1"]);
    assert!(message.contains("lowercase"), "{message}");
    let message = usage_error(&["install", "--trust-domain", "Cluster Local"]);
    assert!(
        message.contains("--trust-domain cluster.local"),
        "{message}"
    );
    let message = usage_error(&["install", "--admin-addr", "127.0.0.1:15000"]);
    assert!(message.contains("--admin-addr 0.0.0.0:15000"), "{message}");
    let message = usage_error(&["install", "--admin-addr", "10.0.0.1:15000"]);
    assert!(message.contains("0.0.0.0 or [::]"), "{message}");
    let message = usage_error(&["install", "--admin-addr", "0.0.0.0:15008"]);
    assert!(message.contains("tunnel server"), "{message}");
}

#[test]
fn options_are_checked_outside_the_command_line_too() {
    let any = "0.0.0.0:15000".parse().unwrap();
    assert_eq!(
        InstallOptions::new(
            "a".repeat(64).as_str(),
            options::DEFAULT_IMAGE,
            "cluster.local",
            any
        ),
        Err(Error::InvalidNamespace("a".repeat(64)))
    );
    assert_eq!(
        InstallOptions::new("nodemesh-system", "  ", "cluster.local", any),
        Err(Error::EmptyImage)
    );
    let args = crate::cli::InstallArgs {
        namespace: "nodemesh-system".into(),
        image: String::new(),
        trust_domain: "cluster.local".into(),
        admin_addr: any,
        api_server: None,
    };
    let error = write_install(&args, &mut Vec::new()).unwrap_err();
    assert!(error.to_string().contains("pass --image"), "{error}");
}

#[test]
fn image_references() {
    for good in [
        "nodemesh",
        "nodemesh:0.1.0",
        "ghcr.io/example/nodemesh:0.1.0",
        "localhost:5000/nodemesh",
        "Registry.Example:5000/a/b-c/d_e.f:Tag_1.0-rc1",
        "ghcr.io/example/nodemesh@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    ] {
        assert_eq!(options::parse_image(good).as_deref(), Ok(good));
    }
    for bad in [
        "",
        " ",
        "nodemesh:",
        "nodemesh:-x",
        "nodemesh@sha256:zz",
        "nodemesh@",
        "ghcr.io//nodemesh",
        "/nodemesh",
        "Nodemesh",
        "ghcr.io/example/nodemesh:0.1 0",
        ":tag",
    ] {
        assert!(options::parse_image(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn api_server_overrides_the_kubernetes_service() {
    let value = |argv: &[&str], name: &str| {
        let docs = parse(&run(argv));
        agent(daemon_set(&docs))
            .env
            .as_ref()
            .unwrap()
            .iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    };
    let argv = ["install", "--api-server", "192.0.2.10:6443"];
    assert_eq!(
        value(&argv, "KUBERNETES_SERVICE_HOST").as_deref(),
        Some("192.0.2.10")
    );
    assert_eq!(
        value(&argv, "KUBERNETES_SERVICE_PORT").as_deref(),
        Some("6443")
    );
    let argv = ["install", "--api-server", "[2001:db8::1]:443"];
    assert_eq!(
        value(&argv, "KUBERNETES_SERVICE_HOST").as_deref(),
        Some("2001:db8::1")
    );
    let argv = ["install", "--api-server", "api.example.internal:6443"];
    assert_eq!(
        value(&argv, "KUBERNETES_SERVICE_HOST").as_deref(),
        Some("api.example.internal")
    );
    for bad in [
        "https://192.0.2.10:6443",
        "192.0.2.10",
        "host:0",
        ":6443",
        "[::1:6443",
    ] {
        let message = usage_error(&["install", "--api-server", bad]);
        assert!(message.contains("<host>:<port>"), "{bad}: {message}");
    }
}
