//! The `bench` subcommand: cluster, agents, scenarios, rounds.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hdrhistogram::Histogram;
use nodemesh_tests::agent::{AgentProcess, ca_init};
use nodemesh_tests::mesh::{PodSpec, TempDir, mesh_args, pod_yaml};
use nodemesh_tests::{Cluster, Pod, PodProcess, pod::run_json};
use serde_json::{Value, json};

use super::{ECHO_PORT, HTTP_PORT, SINK_PORT, histogram};

/// How long each workload runs, and how many rounds.
struct Plan {
    rounds: usize,
    rr_ms: u64,
    http_ms: u64,
    http_rate: u64,
    http_conns: u64,
    bulk_ms: u64,
    connrate_ms: u64,
    hold_conns: usize,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Plan {
                rounds: 1,
                rr_ms: 1500,
                http_ms: 3000,
                http_rate: 1000,
                http_conns: 8,
                bulk_ms: 1500,
                connrate_ms: 1000,
                hold_conns: 500,
            }
        } else {
            Plan {
                rounds: 2,
                rr_ms: 4000,
                http_ms: 10_000,
                http_rate: 1000,
                http_conns: 8,
                bulk_ms: 3000,
                connrate_ms: 3000,
                hold_conns: 1000,
            }
        }
    }
}

/// The scenarios, in the order each round runs them.
const SCENARIOS: [(&str, &str); 5] = [
    ("a-same", "direct, same node (no agent)"),
    ("a-cross", "direct, cross node (no agent)"),
    ("b-sockmap", "mesh same node, --sockmap fast path"),
    ("c-same", "mesh same node, fast path off"),
    ("d-cross-mtls", "mesh cross node, mTLS (L4)"),
];

/// A scratch directory removed on drop.
/// Runs `f` with the calling thread pinned to `cpu`, then restores the
/// previous mask. Children spawned inside inherit the pin.
fn on_cpu<T>(cpu: usize, f: impl FnOnce() -> T) -> T {
    use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
    use nix::unistd::Pid;
    let before = sched_getaffinity(Pid::from_raw(0)).expect("sched_getaffinity");
    let mut set = CpuSet::new();
    set.set(cpu).expect("cpu index");
    sched_setaffinity(Pid::from_raw(0), &set).expect("sched_setaffinity");
    let out = f();
    let _ = sched_setaffinity(Pid::from_raw(0), &before);
    out
}

/// `nm-load <args>` inside a pod's cgroup and network namespace.
fn pod_cmd(pod: &Pod, args: &[String]) -> Command {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    nodemesh_tests::pod::command_for(
        &std::env::current_exe().expect("own path"),
        &pod.cgroup,
        pod.netns.file(),
        &args,
    )
}

fn cluster_yaml(cluster: &Cluster) -> String {
    let mut y = String::from(
        "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n  labels: {nodemesh.io/mesh: enabled}\n",
    );
    for (n, node) in cluster.nodes.iter().enumerate() {
        for p in &node.pods {
            let node_name = format!("node-{}", n + 1);
            y.push_str(&pod_yaml(&PodSpec {
                version: None,
                name: &p.name,
                sa: &p.name,
                app: &p.name,
                ip: p.ip.to_string(),
                host_ip: node.link_ip.to_string(),
                node: &node_name,
                cgroup: nodemesh_tests::rel_cgroup(&p.cgroup),
            }));
        }
    }
    y
}

/// Process ids in a cgroup (the agents: one process each).
fn pids(cgroup: &Path) -> Vec<i32> {
    std::fs::read_to_string(cgroup.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// utime + stime of a process, in seconds.
fn cpu_secs(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // After the command name: state is field 3, utime 14, stime 15.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks as f64 / hz
}

/// VmRSS of a process, in KiB.
fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The running agents of a scenario.
struct Agents {
    procs: Vec<AgentProcess>,
    cgroups: Vec<PathBuf>,
}

impl Agents {
    fn pids(&self) -> Vec<i32> {
        self.cgroups.iter().flat_map(|c| pids(c)).collect()
    }

    fn cpu(&self) -> Vec<f64> {
        self.pids().into_iter().map(cpu_secs).collect()
    }

    fn rss(&self) -> Vec<u64> {
        self.pids().into_iter().map(rss_kib).collect()
    }

    /// The kernel ids and names of the programs the agents loaded.
    fn programs(&self) -> BTreeMap<u32, String> {
        let mut out = BTreeMap::new();
        for agent in &self.procs {
            let doc = agent.get_json("/debug/datapath");
            for p in doc["programs"].as_array().into_iter().flatten() {
                if let (Some(id), Some(name)) = (p["id"].as_u64(), p["name"].as_str()) {
                    out.insert(id as u32, name.to_owned());
                }
            }
        }
        out
    }

    /// SIGTERM (the agent detaches its programs), then wait for the exit.
    fn stop(self) {
        for pid in self.pids() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.pids().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(self.procs);
    }
}

/// Run time of the agents' kernel programs over one workload: the
/// kernel's BPF run-time statistics are on while this lives.
struct KernelStats {
    _enabled: std::os::fd::OwnedFd,
    programs: BTreeMap<u32, String>,
    before: BTreeMap<u32, (u64, u64)>,
}

impl KernelStats {
    fn start(agents: &Agents) -> anyhow::Result<Self> {
        let enabled = aya::sys::enable_stats(aya::sys::Stats::RunTime)
            .context("enabling BPF run-time statistics")?;
        let programs = agents.programs();
        let before = Self::read(&programs);
        Ok(KernelStats {
            _enabled: enabled,
            programs,
            before,
        })
    }

    /// (run time in ns, runs) of each program in `programs`.
    fn read(programs: &BTreeMap<u32, String>) -> BTreeMap<u32, (u64, u64)> {
        aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .filter(|p| programs.contains_key(&p.id()))
            .map(|p| (p.id(), (p.run_time().as_nanos() as u64, p.run_count())))
            .collect()
    }

    /// Run time and runs since `start`, summed per program name over the agents.
    fn finish(self) -> Value {
        let after = Self::read(&self.programs);
        let mut by_name: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for (id, (ns, runs)) in &after {
            let (ns0, runs0) = self.before.get(id).copied().unwrap_or_default();
            let entry = by_name.entry(&self.programs[id]).or_default();
            entry.0 += ns.saturating_sub(ns0);
            entry.1 += runs.saturating_sub(runs0);
        }
        by_name
            .into_iter()
            .map(|(name, (ns, runs))| (name.to_owned(), json!({"run_ns": ns, "runs": runs})))
            .collect::<serde_json::Map<_, _>>()
            .into()
    }
}

struct Bench {
    cluster: Cluster,
    config: TempDir,
    ca: TempDir,
    cpus: [usize; 2],
    _servers: Vec<PodProcess>,
}

impl Bench {
    fn new(cpus: [usize; 2]) -> anyhow::Result<Self> {
        let mut cluster = Cluster::new(2);
        cluster.add_pod(0, "client");
        cluster.add_pod(0, "local");
        cluster.add_pod(1, "remote");
        // New-connection runs leave thousands of sockets in TIME_WAIT:
        // widen the port range and allow reuse in the client pod and the
        // node namespace (where agent 1 connects from).
        let sysctl = "sysctl -qw net.ipv4.ip_local_port_range='1024 65000' net.ipv4.tcp_tw_reuse=1";
        cluster.pod(0, 0).netns.sh(sysctl);
        cluster.nodes[0].netns.sh(sysctl);
        cluster.nodes[1].netns.sh(sysctl);
        let ca = TempDir::new();
        ca_init(&ca.0.join("ca"));
        let config = TempDir::new();
        std::fs::write(config.0.join("cluster.yaml"), cluster_yaml(&cluster))
            .context("writing cluster.yaml")?;
        let servers = [(0, 1), (1, 0)]
            .into_iter()
            .map(|(n, p)| {
                let pod = cluster.pod(n, p);
                on_cpu(cpus[n], || {
                    PodProcess::start_server(pod_cmd(pod, &["serve".into(), pod.ip.to_string()]))
                })
            })
            .collect();
        Ok(Bench {
            cluster,
            config,
            ca,
            cpus,
            _servers: servers,
        })
    }

    fn start_agents(&self, sockmap: bool) -> Agents {
        let procs: Vec<AgentProcess> = (0..2)
            .map(|i| {
                let n = &self.cluster.nodes[i];
                let mut args: Vec<String> = [
                    "--config",
                    self.config.0.to_str().expect("utf-8 path"),
                    "--node-name",
                    &format!("node-{}", i + 1),
                    "--log",
                    "warn",
                ]
                .map(String::from)
                .to_vec();
                args.extend(mesh_args(n, &self.ca.0.join("ca")));
                if sockmap {
                    args.push("--sockmap".into());
                }
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                on_cpu(self.cpus[i], || AgentProcess::start(n, &args))
            })
            .collect();
        for a in &procs {
            a.wait_for("/debug/state", Duration::from_secs(60), |b| {
                b.contains("generation: 1") || b.contains("generation: 2")
            });
        }
        Agents {
            procs,
            cgroups: self
                .cluster
                .nodes
                .iter()
                .map(|n| n.agent_cgroup.clone())
                .collect(),
        }
    }

    fn client(&self, args: Vec<String>, timeout: Duration) -> Value {
        let t = Instant::now();
        let v = run_json(pod_cmd(self.cluster.pod(0, 0), &args), timeout);
        let brief = match (&v["latency"], &v["gbit_s"], &v["per_s"]) {
            (Value::Object(l), _, _) => {
                format!("p50 {} us, p99 {} us", l["p50_us"], l["p99_us"])
            }
            (_, Value::Number(g), _) => format!("{g:.3} Gbit/s"),
            (_, _, Value::Number(c)) => format!("{c:.0} conn/s"),
            _ => String::new(),
        };
        eprintln!(
            "    {} {brief} ({:.1} s)",
            args.join(" "),
            t.elapsed().as_secs_f64()
        );
        v
    }

    fn target(&self, cross: bool) -> Ipv4Addr {
        if cross {
            self.cluster.pod(1, 0).ip
        } else {
            self.cluster.pod(0, 1).ip
        }
    }
}

fn addr(ip: Ipv4Addr, port: u16) -> String {
    SocketAddr::from((ip, port)).to_string()
}

fn s<T: ToString>(v: T) -> String {
    v.to_string()
}

/// Runs every workload of one scenario; `agents` is `None` for direct.
fn scenario(b: &Bench, p: &Plan, cross: bool, agents: Option<&Agents>) -> anyhow::Result<Value> {
    let ip = b.target(cross);
    let pad = Duration::from_secs(30);
    let mut out = serde_json::Map::new();
    // Warm-up (the first mesh connection sets up the tunnel), and a check
    // that traffic passes at all.
    let warm = b.client(vec![s("rr"), addr(ip, ECHO_PORT), s(1), s(500)], pad);
    if warm["latency"]["count"].as_u64().unwrap_or(0) == 0 {
        bail!("no request/response got through to {ip}: {warm}");
    }
    for (name, bytes) in [("rr_1b", 1u64), ("rr_1kib", 1024)] {
        let v = b.client(
            vec![s("rr"), addr(ip, ECHO_PORT), s(bytes), s(p.rr_ms)],
            pad,
        );
        out.insert(name.into(), v);
    }
    let cpu0 = agents.map(Agents::cpu);
    let kernel = agents.map(KernelStats::start).transpose()?;
    let http = b.client(
        vec![
            s("http"),
            addr(ip, HTTP_PORT),
            s(p.http_rate),
            s(p.http_ms),
            s(1024),
            s(p.http_conns),
        ],
        pad,
    );
    let mut http = http;
    if let (Some(a), Some(before)) = (agents, cpu0) {
        let after = a.cpu();
        let deltas: Vec<f64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        http["agent_cpu_s"] = json!(deltas);
    }
    if let Some(k) = kernel {
        http["kernel_programs"] = k.finish();
    }
    out.insert("http_1kib".into(), http);
    for (name, streams) in [("bulk_1", 1u64), ("bulk_4", 4)] {
        let v = b.client(
            vec![s("bulk"), addr(ip, SINK_PORT), s(streams), s(p.bulk_ms)],
            pad,
        );
        out.insert(name.into(), v);
    }
    let v = b.client(
        vec![s("connrate"), addr(ip, ECHO_PORT), s(p.connrate_ms)],
        pad,
    );
    out.insert("connrate".into(), v);
    if let Some(a) = agents {
        out.insert("hold".into(), hold(b, a, ip, p.hold_conns)?);
    }
    Ok(Value::Object(out))
}

/// Agent RSS before and while the client holds `n` idle connections.
fn hold(b: &Bench, a: &Agents, ip: Ipv4Addr, n: usize) -> anyhow::Result<Value> {
    std::thread::sleep(Duration::from_millis(500));
    let before = a.rss();
    let mut cmd = pod_cmd(
        b.cluster.pod(0, 0),
        &[s("hold"), addr(ip, ECHO_PORT), s(n), s(30_000)],
    );
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn().context("spawning nm-load hold")?;
    let mut stdout = BufReader::new(child.stdout.take().context("piped stdout")?);
    let mut line = String::new();
    stdout.read_line(&mut line).context("reading HELD")?;
    let held: u64 = line
        .trim()
        .strip_prefix("HELD ")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    std::thread::sleep(Duration::from_millis(1000));
    let during = a.rss();
    eprintln!("    hold {n}: {held} held; agent RSS {before:?} -> {during:?} KiB");
    drop(child.stdin.take());
    let _ = child.wait();
    Ok(json!({"held": held, "rss_before_kib": before, "rss_held_kib": during}))
}

/// Merges the rounds of one (scenario, workload): histograms are merged
/// exactly, numbers are listed per round.
fn merge(rounds: &[Value]) -> Value {
    let mut merged = serde_json::Map::new();
    let Some(first) = rounds.first().and_then(Value::as_object) else {
        return Value::Null;
    };
    for key in first.keys() {
        let vals: Vec<&Value> = rounds.iter().filter_map(|r| r.get(key)).collect();
        if key == "latency" {
            let mut h: Histogram<u64> = histogram();
            for v in &vals {
                for pair in v["buckets"].as_array().into_iter().flatten() {
                    let (val, count) =
                        (pair[0].as_u64().unwrap_or(1), pair[1].as_u64().unwrap_or(0));
                    let _ = h.record_n(val.max(1), count);
                }
            }
            merged.insert(
                key.clone(),
                json!({
                    "count": h.len(),
                    "p50_us": h.value_at_quantile(0.50) as f64 / 1e3,
                    "p99_us": h.value_at_quantile(0.99) as f64 / 1e3,
                    "p999_us": h.value_at_quantile(0.999) as f64 / 1e3,
                    "max_us": h.max() as f64 / 1e3,
                }),
            );
        } else {
            merged.insert(key.clone(), json!(vals));
        }
    }
    Value::Object(merged)
}

/// The 1-minute load average (other work on the machine skews results).
fn read_loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_string()
}

/// `nm-load bench [--quick] --out <file>`.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    nodemesh_tests::require_root();
    let quick = args.iter().any(|a| a == "--quick");
    let out = args
        .iter()
        .position(|a| a == "--out")
        .and_then(|i| args.get(i + 1))
        .context("--out <file> is required")?;
    let plan = Plan::new(quick);
    let ncpu = std::thread::available_parallelism().map_or(1, usize::from);
    let cpus = if ncpu >= 2 { [0, 1] } else { [0, 0] };
    // Every process of the run inherits nice -10, so other work on the
    // machine disturbs the measurement less (the same in every scenario).
    // SAFETY: setpriority on this process with integer arguments.
    let niced = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, -10) } == 0;
    let placement = format!(
        "node 1 (client pod, same-node server pod, agent 1) pinned to CPU {}; node 2 (remote server pod, agent 2) pinned to CPU {}; nice {}",
        cpus[0],
        cpus[1],
        if niced {
            "-10"
        } else {
            "0 (setpriority failed)"
        }
    );
    eprintln!("placement: {placement}");
    let started = Instant::now();
    let mut raw: BTreeMap<&str, BTreeMap<String, Vec<Value>>> = BTreeMap::new();
    let mut idle_rss: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    let mut loadavg = Vec::new();
    on_cpu(cpus[0], || -> anyhow::Result<()> {
        let bench = Bench::new(cpus)?;
        let mut record = |id: &'static str, v: Value| {
            if let Value::Object(m) = v {
                for (k, v) in m {
                    raw.entry(id).or_default().entry(k).or_default().push(v);
                }
            }
        };
        for round in 0..plan.rounds {
            loadavg.push(read_loadavg());
            eprintln!(
                "round {}/{} ({:.0} s so far)",
                round + 1,
                plan.rounds,
                started.elapsed().as_secs_f64()
            );
            for (id, cross) in [("a-same", false), ("a-cross", true)] {
                eprintln!("  {id}");
                record(
                    id,
                    scenario(&bench, &plan, cross, None).with_context(|| id.to_string())?,
                );
            }
            for sockmap in [true, false] {
                let agents = bench.start_agents(sockmap);
                std::thread::sleep(Duration::from_millis(1000));
                let rss = agents.rss();
                let ids: &[(&'static str, bool)] = if sockmap {
                    &[("b-sockmap", false)]
                } else {
                    &[("c-same", false), ("d-cross-mtls", true)]
                };
                for &(id, cross) in ids {
                    eprintln!("  {id}");
                    idle_rss.entry(id).or_default().push(json!(rss));
                    let v = scenario(&bench, &plan, cross, Some(&agents));
                    let v = match v {
                        Ok(v) => v,
                        Err(e) => {
                            agents.stop();
                            return Err(e.context(id));
                        }
                    };
                    record(id, v);
                }
                agents.stop();
            }
        }
        Ok(())
    })?;
    loadavg.push(read_loadavg());
    let mut results = serde_json::Map::new();
    for (id, workloads) in &raw {
        let mut m = serde_json::Map::new();
        for (w, rounds) in workloads {
            m.insert(w.clone(), merge(rounds));
        }
        if let Some(r) = idle_rss.get(id) {
            m.insert("agent_rss_idle_kib".into(), json!(r));
        }
        results.insert((*id).into(), Value::Object(m));
    }
    let doc = json!({
        "quick": quick,
        "rounds": plan.rounds,
        "placement": placement,
        "http": {"rate": plan.http_rate, "conns": plan.http_conns, "bytes": 1024, "ms": plan.http_ms},
        "durations_ms": {"rr": plan.rr_ms, "http": plan.http_ms, "bulk": plan.bulk_ms, "connrate": plan.connrate_ms},
        "hold_conns": plan.hold_conns,
        "scenarios": SCENARIOS.iter().map(|(id, label)| json!({"id": id, "label": label})).collect::<Vec<_>>(),
        "results": results,
        "loadavg": loadavg,
        "elapsed_s": started.elapsed().as_secs_f64(),
    });
    std::fs::write(out, serde_json::to_string_pretty(&doc)?)
        .with_context(|| format!("writing {out}"))?;
    eprintln!(
        "raw results in {out} ({:.0} s)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
