//! The demo cluster: two nodes of network namespaces (the end-to-end tests'
//! topology), the sample app's pods, a mesh CA and one agent per node in
//! file mode. Everything is owned by guards and removed on drop.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use nodemesh_agent::datapath::Cgroup2;
use nodemesh_tests::agent::{AgentProcess, ca_init};
use nodemesh_tests::{Cluster, Pod, PodProcess};

use crate::config::{self, PodConfig, RATINGS_VIP, REVIEWS_VIP};
use crate::signals;

/// Node names, as the configuration and the agents use them.
pub const NODES: [&str; 2] = ["node-a", "node-b"];

/// Where each pod runs: name, node index, `app`, `version`, service account.
const LAYOUT: [(&str, usize, &str, Option<&str>, &str); 5] = [
    ("frontend", 0, "frontend", None, "frontend"),
    ("reviews-v1", 0, "reviews", Some("v1"), "reviews"),
    ("reviews-v2", 1, "reviews", Some("v2"), "reviews"),
    ("ratings", 1, "ratings", None, "ratings"),
    ("loadgen", 1, "loadgen", None, "loadgen"),
];

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    fn new(prefix: &str) -> anyhow::Result<Self> {
        let p = std::env::temp_dir().join(nodemesh_tests::unique(prefix));
        std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The running demo. Fields drop in order: agents, app servers, files, then
/// the cluster (pods, nodes, namespaces, cgroups).
pub struct Demo {
    /// One agent per node, in [`NODES`] order.
    pub agents: Vec<AgentProcess>,
    /// The app's servers.
    pub servers: Vec<PodProcess>,
    /// The agents' configuration directory.
    pub config: TempDir,
    /// The mesh CA.
    pub ca: TempDir,
    /// Nodes and pods.
    pub cluster: Cluster,
    /// The sample app's binary.
    pub app: PathBuf,
}

impl Demo {
    /// Builds the cluster, starts the app and the agents, and waits until
    /// both agents run the configuration.
    pub fn start(app: PathBuf) -> anyhow::Result<Self> {
        let mut cluster = Cluster::new(2);
        signals::watch_cgroup(cluster.cgroup.path());
        for (name, node, ..) in LAYOUT {
            cluster.add_pod(node, name);
        }
        let ca = TempDir::new("nodemesh-demo-ca-")?;
        ca_init(&ca.0.join("ca"));
        let config = TempDir::new("nodemesh-demo-config-")?;
        let mut demo = Demo {
            agents: Vec::new(),
            servers: Vec::new(),
            config,
            ca,
            cluster,
            app,
        };
        config::write(&demo.config.0, &demo.pod_configs()?)?;
        signals::check()?;
        demo.start_servers()?;
        signals::check()?;
        demo.start_agents()?;
        Ok(demo)
    }

    fn pod_configs(&self) -> anyhow::Result<Vec<PodConfig>> {
        let mount = Cgroup2::detect()
            .context("finding the cgroup2 mount")?
            .mount;
        LAYOUT
            .iter()
            .map(|&(name, node, app, version, sa)| {
                let pod = self.pod(name);
                Ok(PodConfig {
                    name,
                    app,
                    version,
                    service_account: sa,
                    node: NODES[node],
                    ip: pod.ip.to_string(),
                    host_ip: self.cluster.nodes[node].link_ip.to_string(),
                    cgroup: pod
                        .cgroup
                        .strip_prefix(&mount)
                        .context("pod cgroup outside the cgroup2 mount")?
                        .display()
                        .to_string(),
                })
            })
            .collect()
    }

    fn start_servers(&mut self) -> anyhow::Result<()> {
        let ip = |name: &str| self.pod(name).ip.to_string();
        let servers = [
            ("ratings", vec![format!("{}:50051", ip("ratings"))]),
            (
                "reviews-v1",
                vec![format!("{}:9080", ip("reviews-v1")), "v1".into()],
            ),
            (
                "reviews-v2",
                vec![
                    format!("{}:9080", ip("reviews-v2")),
                    "v2".into(),
                    RATINGS_VIP.into(),
                ],
            ),
            (
                "frontend",
                vec![format!("{}:8080", ip("frontend")), REVIEWS_VIP.into()],
            ),
        ];
        for (name, args) in servers {
            let role = name.split('-').next().unwrap_or(name);
            let mut all = vec![role.to_string()];
            all.extend(args);
            let cmd = self.command(name, &all);
            self.servers.push(PodProcess::start_server(cmd));
        }
        Ok(())
    }

    fn start_agents(&mut self) -> anyhow::Result<()> {
        let ca_dir = self.ca.0.join("ca");
        for (i, node_name) in NODES.iter().enumerate() {
            let n = &self.cluster.nodes[i];
            let args = [
                "--config".to_string(),
                self.config.0.display().to_string(),
                "--node-name".into(),
                node_name.to_string(),
                "--redirect-addr".into(),
                n.bridge_ip.to_string(),
                "--node-addr".into(),
                n.link_ip.to_string(),
                "--ca-dir".into(),
                ca_dir.display().to_string(),
            ];
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            self.agents.push(AgentProcess::start(n, &args));
            signals::check()?;
        }
        for a in &self.agents {
            a.wait_for("/debug/state", Duration::from_secs(30), |b| {
                b.contains("generation: ") && b.contains("loadgen") && b.contains("reviews-canary")
            });
        }
        Ok(())
    }

    /// A pod by name.
    pub fn pod(&self, name: &str) -> &Pod {
        let (_, node, ..) = LAYOUT
            .iter()
            .find(|l| l.0 == name)
            .expect("a pod of the layout");
        self.cluster.nodes[*node]
            .pods
            .iter()
            .find(|p| p.name == name)
            .expect("pods are added at start")
    }

    /// The node a pod runs on (an index into [`NODES`]).
    pub fn node_of(&self, name: &str) -> usize {
        LAYOUT.iter().find(|l| l.0 == name).map_or(0, |l| l.1)
    }

    /// A command running the app binary with `args` inside pod `name`.
    pub fn command(&self, name: &str, args: &[String]) -> Command {
        let pod = self.pod(name);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        nodemesh_tests::pod::command_for(&self.app, &pod.cgroup, pod.netns.file(), &args)
    }

    /// The pod names, in layout order.
    pub fn pod_names() -> impl Iterator<Item = &'static str> {
        LAYOUT.iter().map(|l| l.0)
    }
}
