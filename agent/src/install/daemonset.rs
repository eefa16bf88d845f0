//! The agent DaemonSet: one agent per node, in the node's network
//! namespace, with the kernel capabilities and host mounts the datapath
//! needs and nothing more.
//!
//! - Capabilities: all dropped but `BPF`, `PERFMON` (loading programs and
//!   maps, the kernel log ring), `NET_ADMIN` (attaching cgroup socket
//!   programs) and `SYS_ADMIN` (kernels and program types that still require
//!   it). Not privileged; no host PID namespace (cgroups are found through
//!   the cgroup2 mount, not `/proc/<pid>`).
//! - Host mounts: the cgroup2 hierarchy at `/sys/fs/cgroup`, read-only
//!   (attaching needs only a descriptor of the directory; pod cgroups are
//!   looked up there), and the BPF filesystem at `/sys/fs/bpf`, read-only.
//! - The CA Secret at the agent's `--ca-dir`.
//! - `NODE_NAME` from `spec.nodeName`; the node address (tunnel server and
//!   redirect target) from `status.hostIP`; the trust domain and log filter
//!   from the ConfigMap; with `--api-server`, the API server address the
//!   in-cluster client dials.
//! - Probes on the admin endpoint: startup and liveness on `/healthz`,
//!   readiness on `/ready`.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy, RollingUpdateDaemonSet,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapKeySelector, Container, ContainerPort, EnvVar, EnvVarSource,
    HTTPGetAction, HostPathVolumeSource, ObjectFieldSelector, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SecretVolumeSource, SecurityContext, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::config::{LOG_KEY, TRUST_DOMAIN_KEY, config_data, config_digest};
use super::meta::{
    AGENT_NAME, CA_MOUNT_PATH, CA_SECRET_NAME, CONFIG_MAP_NAME, CONTAINER_NAME, REDIRECT_PORT,
    TUNNEL_PORT, agent_labels, namespaced_meta, selector_labels,
};
use super::options::InstallOptions;

/// The capabilities the agent keeps (Kubernetes spelling, without `CAP_`).
pub const CAPABILITIES: [&str; 4] = ["BPF", "NET_ADMIN", "PERFMON", "SYS_ADMIN"];
/// Where the host's cgroup2 hierarchy is mounted in the agent.
pub const CGROUP_PATH: &str = "/sys/fs/cgroup";
/// Where the host's BPF filesystem is mounted in the agent.
pub const BPFFS_PATH: &str = "/sys/fs/bpf";
/// The priority class that keeps the agent scheduled and last to be evicted.
pub const PRIORITY_CLASS: &str = "system-node-critical";
/// Pod template annotation holding the digest of the ConfigMap's data.
pub const CONFIG_DIGEST_ANNOTATION: &str = "nodemesh.io/config-digest";

/// Liveness probe path on the admin endpoint.
pub const LIVENESS_PATH: &str = "/healthz";
/// Readiness probe path on the admin endpoint.
pub const READINESS_PATH: &str = "/ready";

/// The agent DaemonSet.
pub fn daemon_set(options: &InstallOptions) -> DaemonSet {
    let annotations = BTreeMap::from([
        (
            CONFIG_DIGEST_ANNOTATION.to_owned(),
            config_digest(&config_data(options)),
        ),
        (
            "kubectl.kubernetes.io/default-container".to_owned(),
            CONTAINER_NAME.to_owned(),
        ),
    ]);
    DaemonSet {
        metadata: namespaced_meta(AGENT_NAME, options.namespace(), agent_labels()),
        spec: DaemonSetSpec {
            selector: LabelSelector {
                match_labels: Some(selector_labels()),
                ..LabelSelector::default()
            },
            update_strategy: Some(DaemonSetUpdateStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateDaemonSet {
                    max_unavailable: Some(IntOrString::Int(1)),
                    // Two agents cannot hold the same node's ports.
                    max_surge: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(agent_labels()),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec(options)),
            },
            ..DaemonSetSpec::default()
        },
        ..DaemonSet::default()
    }
}

fn pod_spec(options: &InstallOptions) -> PodSpec {
    PodSpec {
        service_account_name: Some(AGENT_NAME.to_owned()),
        host_network: Some(true),
        host_pid: Some(false),
        // Cluster DNS from the node's network namespace.
        dns_policy: Some("ClusterFirstWithHostNet".to_owned()),
        enable_service_links: Some(false),
        priority_class_name: Some(PRIORITY_CLASS.to_owned()),
        // Every node, whatever its taints: a node without an agent has no mesh.
        tolerations: Some(vec![Toleration {
            operator: Some("Exists".to_owned()),
            ..Toleration::default()
        }]),
        node_selector: Some(BTreeMap::from([(
            "kubernetes.io/os".to_owned(),
            "linux".to_owned(),
        )])),
        // The agent detaches its programs on SIGTERM.
        termination_grace_period_seconds: Some(30),
        containers: vec![container(options)],
        volumes: Some(volumes()),
        ..PodSpec::default()
    }
}

fn container(options: &InstallOptions) -> Container {
    let admin_port = i32::from(options.admin_addr().port());
    Container {
        name: CONTAINER_NAME.to_owned(),
        image: Some(options.image().to_owned()),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        args: Some(args(options)),
        env: Some(env(options)),
        ports: Some(vec![
            host_port("admin", admin_port),
            host_port("outbound", i32::from(REDIRECT_PORT)),
            host_port("tunnel", i32::from(TUNNEL_PORT)),
        ]),
        startup_probe: Some(Probe {
            period_seconds: Some(2),
            failure_threshold: Some(30),
            ..http_probe(LIVENESS_PATH, admin_port)
        }),
        liveness_probe: Some(Probe {
            period_seconds: Some(10),
            failure_threshold: Some(3),
            ..http_probe(LIVENESS_PATH, admin_port)
        }),
        readiness_probe: Some(Probe {
            period_seconds: Some(5),
            failure_threshold: Some(3),
            ..http_probe(READINESS_PATH, admin_port)
        }),
        resources: Some(resources()),
        security_context: Some(security_context()),
        volume_mounts: Some(volume_mounts()),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..Container::default()
    }
}

/// The agent's command line (the image's entrypoint is `nodemesh`).
pub fn args(options: &InstallOptions) -> Vec<String> {
    vec![
        "agent".to_owned(),
        "--kube".to_owned(),
        format!("--admin-addr={}", options.admin_addr()),
        format!("--redirect-port={REDIRECT_PORT}"),
        format!("--ca-dir={CA_MOUNT_PATH}"),
    ]
}

fn env(options: &InstallOptions) -> Vec<EnvVar> {
    let field = |name: &str, path: &str| EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_owned(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    };
    let setting = |name: &str, key: &str| EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            config_map_key_ref: Some(ConfigMapKeySelector {
                name: CONFIG_MAP_NAME.to_owned(),
                key: key.to_owned(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    };
    let mut env = vec![
        field("NODE_NAME", "spec.nodeName"),
        // The agent finds its own pod cgroup by this UID, and exempts it.
        field("POD_UID", "metadata.uid"),
        // Other agents dial this node's tunnel server here, and meshed pods
        // are redirected to the outbound listener here.
        field("NODEMESH_NODE_ADDR", "status.hostIP"),
        field("NODEMESH_REDIRECT_ADDR", "status.hostIP"),
        setting("NODEMESH_TRUST_DOMAIN", TRUST_DOMAIN_KEY),
        setting("NODEMESH_LOG", LOG_KEY),
    ];
    // The in-cluster client reads these; set here, they win over the
    // `kubernetes` Service address kubelet injects.
    if let Some(api) = options.api_server() {
        env.extend([
            EnvVar {
                name: "KUBERNETES_SERVICE_HOST".to_owned(),
                value: Some(api.host.clone()),
                ..EnvVar::default()
            },
            EnvVar {
                name: "KUBERNETES_SERVICE_PORT".to_owned(),
                value: Some(api.port.to_string()),
                ..EnvVar::default()
            },
        ]);
    }
    env
}

fn host_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: port,
        host_port: Some(port),
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    }
}

fn http_probe(path: &str, port: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::Int(port),
            scheme: Some("HTTP".to_owned()),
            ..HTTPGetAction::default()
        }),
        timeout_seconds: Some(2),
        ..Probe::default()
    }
}

fn resources() -> ResourceRequirements {
    let quantities = |cpu: &str, memory: &str| {
        BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu.to_owned())),
            ("memory".to_owned(), Quantity(memory.to_owned())),
        ])
    };
    ResourceRequirements {
        requests: Some(quantities("100m", "128Mi")),
        limits: Some(quantities("1", "512Mi")),
        ..ResourceRequirements::default()
    }
}

fn security_context() -> SecurityContext {
    SecurityContext {
        privileged: Some(false),
        run_as_user: Some(0),
        run_as_group: Some(0),
        run_as_non_root: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            add: Some(CAPABILITIES.iter().map(|c| (*c).to_owned()).collect()),
            drop: Some(vec!["ALL".to_owned()]),
        }),
        ..SecurityContext::default()
    }
}

fn volumes() -> Vec<Volume> {
    let host = |name: &str, path: &str| Volume {
        name: name.to_owned(),
        host_path: Some(HostPathVolumeSource {
            path: path.to_owned(),
            type_: Some("Directory".to_owned()),
        }),
        ..Volume::default()
    };
    vec![
        host("cgroup", CGROUP_PATH),
        host("bpffs", BPFFS_PATH),
        Volume {
            name: "ca".to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(CA_SECRET_NAME.to_owned()),
                default_mode: Some(0o400),
                optional: Some(false),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        },
    ]
}

fn volume_mounts() -> Vec<VolumeMount> {
    let mount = |name: &str, path: &str| VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: Some(true),
        ..VolumeMount::default()
    };
    vec![
        mount("cgroup", CGROUP_PATH),
        mount("bpffs", BPFFS_PATH),
        mount("ca", CA_MOUNT_PATH),
    ]
}
