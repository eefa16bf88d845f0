//! `--keep`: how to explore the running cluster, then wait for Ctrl-C.

use std::time::Duration;

use crate::cluster::{Demo, NODES};
use crate::config::{FRONTEND_VIP, RATINGS_VIP};
use crate::signals;

/// Prints the instructions and returns once the demo is told to stop.
pub fn wait(demo: &Demo) {
    let app = demo.app.display();
    let curl = has_curl();
    println!("\n== The cluster keeps running until Ctrl-C. Explore it as root:");
    println!("  agents' admin endpoints (127.0.0.1:15000 inside each node's network namespace):");
    for (i, node) in NODES.iter().enumerate() {
        let ns = demo.cluster.nodes[i].netns.name();
        for path in [
            "/debug/connections",
            "/debug/datapath",
            "/metrics",
            "/debug/state",
        ] {
            if curl {
                println!("    ip netns exec {ns} curl -s 127.0.0.1:15000{path}    # {node}");
            } else {
                println!("    ip netns exec {ns} {app} get 127.0.0.1:15000 {path}    # {node}");
            }
        }
    }
    println!(
        "  calls from a pod: join its cgroup (the agents attach to the nodes' cgroups), then enter its network namespace:"
    );
    let lg = demo.pod("loadgen");
    let enter = format!(
        "sh -c 'echo $$ > {}/cgroup.procs && exec ip netns exec {}",
        lg.cgroup.display(),
        lg.netns.name()
    );
    if curl {
        println!("    {enter} curl -s http://{FRONTEND_VIP}/'");
    }
    println!("    {enter} {app} get {FRONTEND_VIP} /'");
    println!("    {enter} {app} loadgen {FRONTEND_VIP} 200 4'");
    println!("    {enter} {app} rate {RATINGS_VIP}'    # denied by policy");
    println!(
        "  configuration (file mode; edits apply live): {}",
        demo.config.0.display()
    );
    println!("  Ctrl-C removes everything.");
    while !signals::cancelled() {
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn has_curl() -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("curl").is_file()))
}
