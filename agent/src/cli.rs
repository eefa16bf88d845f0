//! The `nodemesh` command line.
//!
//! Exit codes: 0 success; 1 a runtime failure (the message says what and
//! what to do); 2 bad command-line usage (clap); 3 `nodemesh check` found a
//! failing check.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::install::options as install;

/// Exit code of a runtime failure.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code of `nodemesh check` when a check fails.
pub const EXIT_CHECK_FAILED: u8 = 3;

/// nodemesh: a sidecar-less service mesh accelerated by eBPF.
#[derive(Parser, Debug)]
#[command(name = "nodemesh", version, about)]
pub struct Cli {
    /// Log filter (RUST_LOG syntax), e.g. `info` or `nodemesh_agent=debug`.
    #[arg(long, global = true, env = "NODEMESH_LOG", default_value = "info")]
    pub log: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the node agent (as root, or as a privileged DaemonSet).
    Agent(AgentArgs),
    /// Check that this node can run nodemesh, and that the agent is healthy.
    Check(CheckArgs),
    /// Manage the mesh's certificate authority.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Print the Kubernetes manifests that deploy nodemesh, for `kubectl apply -f -`.
    Install(InstallArgs),
    /// Print the same manifests in reverse order, for `kubectl delete -f -`.
    Uninstall(InstallArgs),
}

/// `nodemesh ca ...`
#[derive(Subcommand, Debug)]
pub enum CaCommand {
    /// Create a trust anchor (root) and an issuer (intermediate) for the mesh.
    Init(CaInitArgs),
    /// Rotate the trust anchor, one step at a time (see the README): `begin`
    /// adds a new root to the bundle, `issuer` switches to an issuer signed
    /// by it, `finish` removes the old root. Agents pick each step up within
    /// seconds; wait for every node between steps.
    Rotate(CaRotateArgs),
}

/// A step of trust-anchor rotation.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RotateStep {
    /// Create the next root and trust both roots.
    Begin,
    /// Issue from a new issuer signed by the next root.
    Issuer,
    /// Make the next root the only root.
    Finish,
}

/// Options of `nodemesh ca rotate`.
#[derive(Args, Debug, Clone)]
pub struct CaRotateArgs {
    /// Which step.
    #[arg(value_enum)]
    pub step: RotateStep,
    /// The CA directory (as for `nodemesh ca init`).
    #[arg(long, default_value = "/var/lib/nodemesh/ca")]
    pub dir: PathBuf,
    /// SPIFFE trust domain.
    #[arg(long, default_value = "cluster.local")]
    pub trust_domain: String,
}

/// Options of `nodemesh ca init`.
#[derive(Args, Debug, Clone)]
pub struct CaInitArgs {
    /// Directory to write the CA files to (file mode: what `nodemesh agent --ca-dir` reads).
    #[arg(long, default_value = "/var/lib/nodemesh/ca")]
    pub dir: PathBuf,
    /// SPIFFE trust domain.
    #[arg(long, default_value = "cluster.local")]
    pub trust_domain: String,
    /// Overwrite existing CA files (this breaks trust with agents using the old ones).
    #[arg(long)]
    pub force: bool,
    /// Also print a Kubernetes Secret manifest holding the files (kube mode),
    /// for `kubectl apply -f -`.
    #[arg(long)]
    pub secret: bool,
    /// Namespace of the Secret.
    #[arg(long, default_value = "nodemesh-system")]
    pub namespace: String,
}

/// Options of `nodemesh install` and `nodemesh uninstall`.
#[derive(Args, Debug, Clone)]
pub struct InstallArgs {
    /// Namespace of the agent; the CA Secret (`nodemesh ca init --secret
    /// --namespace ...`) must be in the same one.
    #[arg(
        long,
        default_value = install::DEFAULT_NAMESPACE,
        value_parser = install::parse_namespace
    )]
    pub namespace: String,
    /// The agent's container image.
    #[arg(long, default_value = install::DEFAULT_IMAGE, value_parser = install::parse_image)]
    pub image: String,
    /// SPIFFE trust domain (the one given to `nodemesh ca init`).
    #[arg(
        long,
        default_value = install::DEFAULT_TRUST_DOMAIN,
        value_parser = install::parse_trust_domain
    )]
    pub trust_domain: String,
    /// Address of the agent's admin endpoint on each node: all addresses
    /// (`0.0.0.0` or `[::]`) so that kubelet can probe it; the port is probed.
    #[arg(
        long,
        default_value = install::DEFAULT_ADMIN_ADDR,
        value_parser = install::parse_admin_addr
    )]
    pub admin_addr: SocketAddr,
    /// The Kubernetes API server as the nodes reach it (`<host>:<port>`),
    /// for clusters without kube-proxy, where the `kubernetes` Service is
    /// translated only once the agent runs. Default: that Service.
    #[arg(long, value_parser = install::parse_api_server)]
    pub api_server: Option<String>,
}

/// Options of `nodemesh agent`.
#[derive(Args, Debug, Clone)]
pub struct AgentArgs {
    /// cgroup v2 directory to attach the kernel programs to (absolute, or
    /// relative to the cgroup2 mount). Default: the mount itself, the whole node.
    #[arg(long, env = "NODEMESH_CGROUP")]
    pub cgroup: Option<PathBuf>,
    /// Address of the admin endpoint (health, readiness, metrics, debug).
    #[arg(long, env = "NODEMESH_ADMIN_ADDR", default_value = "127.0.0.1:15000")]
    pub admin_addr: SocketAddr,
    /// The agent's own cgroup (absolute or relative to the cgroup2 mount):
    /// connections from it and below it are never redirected or policed.
    /// Default: from --pod-uid in a Kubernetes pod, else this process's cgroup.
    #[arg(long, env = "NODEMESH_AGENT_CGROUP")]
    pub agent_cgroup: Option<PathBuf>,
    /// The agent pod's UID (the DaemonSet sets it from metadata.uid): its
    /// pod cgroup is the agent's cgroup. Inside a container the process's
    /// own cgroup path is namespaced and cannot be used.
    #[arg(long, env = "POD_UID")]
    pub pod_uid: Option<String>,
    /// Address pods reach the agent's outbound listener on; enables the
    /// redirect of meshed connections to it.
    #[arg(long, env = "NODEMESH_REDIRECT_ADDR")]
    pub redirect_addr: Option<IpAddr>,
    /// Port of the agent's outbound listener.
    #[arg(long, env = "NODEMESH_REDIRECT_PORT", default_value_t = 15001)]
    pub redirect_port: u16,
    /// Same-node socket acceleration (sockhash + sk_msg). Off by default:
    /// see the README for what blocking applications see with it on.
    #[arg(long, env = "NODEMESH_SOCKMAP", default_value_t = false)]
    pub sockmap: bool,
    /// Turn the in-kernel L4 policy off.
    #[arg(long, env = "NODEMESH_NO_POLICY", default_value_t = false)]
    pub no_policy: bool,
    /// Turn the L4 flow metrics off.
    #[arg(long, env = "NODEMESH_NO_METRICS", default_value_t = false)]
    pub no_metrics: bool,
    /// File mode: a file or directory of Kubernetes-shaped YAML (Services,
    /// EndpointSlices, Pods, HTTPRoutes, GRPCRoutes, AuthorizationPolicies,
    /// TrafficSplits, MeshConfig), watched and applied live.
    #[arg(long, env = "NODEMESH_CONFIG", conflicts_with = "kube")]
    pub config: Option<PathBuf>,
    /// Kubernetes mode: watch the API server (in-cluster or kubeconfig credentials).
    #[arg(long, env = "NODEMESH_KUBE")]
    pub kube: bool,
    /// This node's name: its Pods are the local workloads.
    #[arg(long, env = "NODE_NAME", default_value = "")]
    pub node_name: String,
    /// This node's address: the tunnel server listens on it (port 15008)
    /// and other agents dial it. Enables the mesh together with
    /// --redirect-addr.
    #[arg(long, env = "NODEMESH_NODE_ADDR")]
    pub node_addr: Option<IpAddr>,
    /// Directory of the mesh CA (`nodemesh ca init`).
    #[arg(long, env = "NODEMESH_CA_DIR", default_value = "/var/lib/nodemesh/ca")]
    pub ca_dir: PathBuf,
    /// SPIFFE trust domain (a MeshConfig may override it).
    #[arg(long, env = "NODEMESH_TRUST_DOMAIN", default_value = "cluster.local")]
    pub trust_domain: String,
    /// Seconds a peer agent has to finish the TLS handshake on the tunnel port.
    #[arg(
        long = "handshake-timeout",
        env = "NODEMESH_HANDSHAKE_TIMEOUT",
        default_value_t = 10
    )]
    pub handshake_timeout_secs: u64,
    /// Lifetime of workload certificates, in seconds (rotated at 80%).
    #[arg(
        long = "cert-lifetime",
        env = "NODEMESH_CERT_LIFETIME",
        default_value_t = 86_400
    )]
    pub cert_lifetime_secs: u64,
    /// Threads of the agent's async runtime (at least 1): what the mesh's
    /// proxying, the admin endpoint and the cluster watch share.
    #[arg(
        long,
        env = "NODEMESH_WORKER_THREADS",
        default_value_t = 2,
        value_parser = clap::value_parser!(u16).range(1..=256)
    )]
    pub worker_threads: u16,
}

/// Options of `nodemesh check`.
#[derive(Args, Debug, Clone)]
pub struct CheckArgs {
    /// The cgroup the agent attaches to (as for `nodemesh agent --cgroup`).
    #[arg(long, env = "NODEMESH_CGROUP")]
    pub cgroup: Option<PathBuf>,
    /// The agent's admin endpoint.
    #[arg(long, env = "NODEMESH_ADMIN_ADDR", default_value = "127.0.0.1:15000")]
    pub admin_addr: SocketAddr,
    /// Only check the node (kernel, cgroups, privileges), not a running agent.
    #[arg(long)]
    pub pre: bool,
}
