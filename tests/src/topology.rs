//! Nodes and pods made of network namespaces, veth pairs and cgroups.
//!
//! Addressing (all inside namespaces the test made): node *i* has bridge
//! `10.201.i.1/24` and pods `10.201.i.10` upwards; nodes are linked pairwise
//! by a veth on `10.201.0.0/24` and route each other's pod ranges.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;

use crate::{NetNs, TestCgroup, pod, unique};

/// A test cluster: a cgroup subtree and the nodes in it. Dropping it removes
/// every pod, node, namespace and cgroup it made.
pub struct Cluster {
    /// The nodes, in creation order. Declared before the cgroup so pods and
    /// namespaces go first.
    pub nodes: Vec<Node>,
    /// The cluster's cgroup (a child of the cgroup2 mount, never the root).
    pub cgroup: TestCgroup,
}

/// A node: a network namespace with a bridge, and a cgroup the datapath attaches to.
pub struct Node {
    /// The node's pods.
    pub pods: Vec<Pod>,
    /// The node's network namespace.
    pub netns: NetNs,
    /// The node's cgroup: the attach point of its datapath.
    pub cgroup: PathBuf,
    /// The agent's cgroup, a child of the node's.
    pub agent_cgroup: PathBuf,
    /// The node's address on its pod bridge (the pods' gateway).
    pub bridge_ip: Ipv4Addr,
    /// The node's address on the inter-node link.
    pub link_ip: Ipv4Addr,
    index: u8,
}

/// A pod: a network namespace on a node, and a cgroup under the node's.
pub struct Pod {
    /// The pod's name.
    pub name: String,
    /// The pod's network namespace.
    pub netns: NetNs,
    /// The pod's cgroup.
    pub cgroup: PathBuf,
    /// The pod's IP.
    pub ip: Ipv4Addr,
}

impl Cluster {
    /// A cluster of `nodes` nodes, linked to each other through node 1.
    pub fn new(nodes: usize) -> Self {
        crate::require_root();
        crate::sweep_stale();
        assert!((1..=2).contains(&nodes), "1 or 2 nodes");
        let cgroup = TestCgroup::new_root(&unique("nodemesh-test-"));
        let mut cluster = Cluster {
            nodes: Vec::new(),
            cgroup,
        };
        for i in 1..=nodes as u8 {
            let node = cluster.make_node(i);
            cluster.nodes.push(node);
        }
        if nodes == 2 {
            cluster.link(0, 1);
        }
        cluster
    }

    fn make_node(&self, i: u8) -> Node {
        let netns = NetNs::new(&unique("nmn"));
        let cgroup = self.cgroup.child(&format!("node-{i}"));
        let agent_cgroup = self.cgroup.child(&format!("node-{i}/agent"));
        let bridge_ip = Ipv4Addr::new(10, 201, i, 1);
        netns.ip(&["link", "add", "nmbr0", "type", "bridge"]);
        netns.ip(&["addr", "add", &format!("{bridge_ip}/24"), "dev", "nmbr0"]);
        netns.ip(&["link", "set", "nmbr0", "up"]);
        netns.sh("echo 1 > /proc/sys/net/ipv4/ip_forward");
        Node {
            pods: Vec::new(),
            netns,
            cgroup,
            agent_cgroup,
            bridge_ip,
            link_ip: Ipv4Addr::new(10, 201, 0, i),
            index: i,
        }
    }

    fn link(&mut self, a: usize, b: usize) {
        let (na, nb) = (&self.nodes[a], &self.nodes[b]);
        na.netns.ip(&[
            "link",
            "add",
            "nml0",
            "type",
            "veth",
            "peer",
            "name",
            "nml0",
            "netns",
            nb.netns.name(),
        ]);
        for (n, other) in [(na, nb), (nb, na)] {
            n.netns
                .ip(&["addr", "add", &format!("{}/24", n.link_ip), "dev", "nml0"]);
            n.netns.ip(&["link", "set", "nml0", "up"]);
            n.netns.ip(&[
                "route",
                "add",
                &format!("10.201.{}.0/24", other.index),
                "via",
                &other.link_ip.to_string(),
            ]);
        }
    }

    /// Adds a pod to node `node` (0-based) and returns its index on that node.
    pub fn add_pod(&mut self, node: usize, name: &str) -> usize {
        let n = &mut self.nodes[node];
        let index = n.pods.len();
        let ip = Ipv4Addr::new(10, 201, n.index, 10 + index as u8);
        let netns = NetNs::new(&unique("nmp"));
        let veth = format!("nmv{index}");
        n.netns.ip(&[
            "link",
            "add",
            &veth,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            netns.name(),
        ]);
        n.netns.ip(&["link", "set", &veth, "master", "nmbr0", "up"]);
        netns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        netns.ip(&["link", "set", "eth0", "up"]);
        netns.ip(&["route", "add", "default", "via", &n.bridge_ip.to_string()]);
        let cgroup = n.cgroup.join(name);
        std::fs::create_dir(&cgroup)
            .unwrap_or_else(|e| panic!("creating pod cgroup {}: {e}", cgroup.display()));
        n.pods.push(Pod {
            name: name.to_string(),
            netns,
            cgroup,
            ip,
        });
        index
    }

    /// A pod by node and index.
    pub fn pod(&self, node: usize, index: usize) -> &Pod {
        &self.nodes[node].pods[index]
    }
}

impl Pod {
    /// A command running `nm-pod <args>` inside this pod.
    pub fn command(&self, args: &[&str]) -> Command {
        pod::command(&self.cgroup, self.netns.file(), args)
    }
}
