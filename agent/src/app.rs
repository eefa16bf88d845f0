//! The `nodemesh agent` process: loads the datapath, serves the admin
//! endpoint, and detaches everything cleanly on SIGTERM or SIGINT.
//!
//! Threads: the admin endpoint and kernel-log forwarding run on a small
//! control runtime, apart from the data path.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};

use std::net::SocketAddr;
use std::time::Duration;

use nodemesh_state::file::{FileSource, FileSourceConfig};
use nodemesh_state::k8s::{KubeSource, KubeSourceConfig};
use nodemesh_state::metrics::RejectionMetrics;
use nodemesh_state::publish::StateReceiver;
use nodemesh_state::{Index, IndexConfig};

use crate::admin::{self, AdminState};
use crate::cli::AgentArgs;
use crate::datapath::{Cgroup2, Datapath, DatapathOptions, RedirectTarget, forward_kernel_logs};
use crate::mesh::{Mesh, MeshOptions};
use crate::reconcile::Reconciler;

/// Runs the agent until it is told to stop.
pub fn run(args: AgentArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(usize::from(args.worker_threads))
        .enable_all()
        .thread_name("nodemesh-agent")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run_async(args))
}

/// The agent's own cgroup: given, found from the pod UID, or (outside a
/// pod) the process's own.
fn agent_cgroup(args: &AgentArgs) -> anyhow::Result<Option<std::path::PathBuf>> {
    if let Some(p) = &args.agent_cgroup {
        return Ok(Some(p.clone()));
    }
    let Some(uid) = &args.pod_uid else {
        return Ok(None);
    };
    let mount = Cgroup2::detect()?.mount;
    match nodemesh_state::cgroup::find_pod_cgroup(&mount, uid)? {
        Some(rel) => Ok(Some(mount.join(rel))),
        None => anyhow::bail!(
            "no cgroup of pod {uid} under {}: mount the host's cgroup2 hierarchy into the agent pod, or pass --agent-cgroup",
            mount.display()
        ),
    }
}

/// The datapath options the command line asks for.
pub fn datapath_options(args: &AgentArgs) -> DatapathOptions {
    let redirect = args.redirect_addr.map(|ip| RedirectTarget {
        addr4: match ip {
            std::net::IpAddr::V4(v4) => Some(v4),
            std::net::IpAddr::V6(_) => None,
        },
        addr6: match ip {
            std::net::IpAddr::V6(v6) => Some(v6),
            std::net::IpAddr::V4(_) => None,
        },
        port: args.redirect_port,
    });
    DatapathOptions {
        cgroup: args.cgroup.clone().unwrap_or_default(),
        redirect,
        sockmap: args.sockmap,
        policy: !args.no_policy,
        metrics: !args.no_metrics,
        ..DatapathOptions::default()
    }
}

async fn run_async(args: AgentArgs) -> anyhow::Result<ExitCode> {
    let mut opts = datapath_options(&args);
    opts.agent_cgroup = agent_cgroup(&args)?;
    tracing::info!(config = %serde_json::to_string(&opts).unwrap_or_default(), "starting nodemesh agent");
    // Signals are registered before loading so a SIGTERM during start-up
    // still detaches cleanly.
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;

    let datapath = Arc::new(Datapath::load(&opts)?);
    if let Some(logger) = datapath.take_logger() {
        tokio::spawn(forward_kernel_logs(logger));
    }
    let state = AdminState::new(datapath.clone())?;
    let mesh = match (args.redirect_addr, args.node_addr) {
        (Some(redirect), Some(node_addr)) => {
            let mesh = Mesh::new(
                MeshOptions {
                    node_addr,
                    redirect: SocketAddr::new(redirect, args.redirect_port),
                    ca_dir: args.ca_dir.clone(),
                    leaf_lifetime: Duration::from_secs(args.cert_lifetime_secs),
                    handshake_timeout: Duration::from_secs(args.handshake_timeout_secs),
                },
                datapath.clone(),
                state.registry(),
                &args.trust_domain,
            )?;
            state.set_mesh(mesh.clone());
            let listeners = mesh.bind().await?;
            tokio::spawn(mesh.clone().watch_ca());
            let serving = mesh.clone();
            tokio::spawn(async move {
                if let Err(error) = serving.serve(listeners).await {
                    tracing::error!(error = %format!("{error:#}"), "mesh stopped");
                }
            });
            Some(mesh)
        }
        (Some(_), None) => anyhow::bail!(
            "--redirect-addr needs --node-addr (the address other agents reach this node on)"
        ),
        _ => None,
    };
    if let Some(states) = start_source(&args, &state).await? {
        let cgroup2 = Cgroup2::detect()?;
        let reconciler = Reconciler::new(datapath.clone(), cgroup2);
        tokio::spawn(follow(states, reconciler, mesh, state.clone()));
    }
    let listener = tokio::net::TcpListener::bind(args.admin_addr)
        .await
        .with_context(|| {
            format!(
                "binding the admin endpoint on {}: pass a free address with --admin-addr",
                args.admin_addr
            )
        })?;
    tracing::info!(addr = %args.admin_addr, "admin endpoint listening");
    let admin = tokio::spawn(admin::serve(listener, state));
    tracing::info!("agent ready");

    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
    admin.abort();
    let _ = admin.await;
    // Dropping the last handle detaches every program and closes the maps.
    drop(datapath);
    tracing::info!("kernel programs detached; bye");
    Ok(ExitCode::SUCCESS)
}

/// Starts the configured source of cluster state, if any.
async fn start_source(
    args: &AgentArgs,
    admin: &AdminState,
) -> anyhow::Result<Option<StateReceiver>> {
    let index_config = IndexConfig {
        node_name: args.node_name.clone(),
        trust_domain: args.trust_domain.clone(),
    };
    let metrics =
        RejectionMetrics::new(admin.registry()).context("registering the rejection metric")?;
    let index = Index::new(index_config, Some(metrics));
    if let Some(path) = &args.config {
        let (rx, _task) = FileSource::start(FileSourceConfig::new(path), index)
            .with_context(|| format!("starting file mode on {}", path.display()))?;
        return Ok(Some(rx));
    }
    if args.kube {
        anyhow::ensure!(
            !args.node_name.is_empty(),
            "kube mode needs this node's name: pass --node-name or set NODE_NAME (the DaemonSet sets it from spec.nodeName)"
        );
        let client = kube::Client::try_default()
            .await
            .context("connecting to the Kubernetes API (in-cluster credentials or KUBECONFIG)")?;
        let (rx, _task) = KubeSource::start(client, kube_config(args), index);
        return Ok(Some(rx));
    }
    Ok(None)
}

/// What kube mode watches. With the mesh on, the Pods of every node: the
/// agent must know each remote endpoint's identity and node to open the
/// tunnel, and EndpointSlices carry neither.
fn kube_config(args: &AgentArgs) -> KubeSourceConfig {
    let mut config = KubeSourceConfig::new(&args.node_name);
    config.cgroup_root = Cgroup2::detect().ok().map(|c| c.mount);
    config.watch_all_pods = args.redirect_addr.is_some();
    config
}

/// Applies every new desired state to the kernel maps and the mesh.
async fn follow(
    mut states: StateReceiver,
    mut reconciler: Reconciler,
    mesh: Option<Arc<Mesh>>,
    admin: AdminState,
) {
    loop {
        let desired = states.borrow_and_update().clone();
        let report = reconciler.apply(&desired);
        if let Some(mesh) = &mesh {
            mesh.update(&desired).await;
        }
        admin.set_state(desired.clone());
        tracing::info!(
            generation = desired.generation,
            applied = report.applied,
            failed = report.failed,
            "cluster state applied"
        );
        if states.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::kube_config;
    use crate::cli::{Cli, Command};

    fn agent(argv: &[&str]) -> crate::cli::AgentArgs {
        let cli = Cli::try_parse_from(["nodemesh", "agent"].iter().chain(argv)).unwrap();
        match cli.command {
            Command::Agent(args) => args,
            other => panic!("not the agent command: {other:?}"),
        }
    }

    #[test]
    fn worker_threads_default_to_two_and_refuse_zero() {
        assert_eq!(agent(&[]).worker_threads, 2);
        assert_eq!(agent(&["--worker-threads", "4"]).worker_threads, 4);
        let error = Cli::try_parse_from(["nodemesh", "agent", "--worker-threads", "0"])
            .expect_err("zero threads is refused");
        assert!(error.to_string().contains("1..=256"), "{error}");
    }

    #[test]
    fn kube_mode_with_the_mesh_watches_every_nodes_pods() {
        let l4 = agent(&["--kube", "--node-name", "n1"]);
        assert!(!kube_config(&l4).watch_all_pods);
        let meshed = agent(&[
            "--kube",
            "--node-name",
            "n1",
            "--redirect-addr",
            "10.0.0.1",
            "--node-addr",
            "192.168.0.1",
        ]);
        let config = kube_config(&meshed);
        assert!(config.watch_all_pods);
        assert_eq!(config.node_name, "n1");
    }
}
