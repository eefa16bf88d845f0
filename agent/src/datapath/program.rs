//! Loading the object, attaching its programs, and the [`Datapath`] handle.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use aya::maps::{Array, HashMap, Map, PerCpuArray, PerCpuHashMap, SockHash};
use aya::programs::{CgroupAttachMode, CgroupSockAddr, SkMsg, SockOps};
use aya::{Ebpf, EbpfLoader};
use aya_log::EbpfLogger;
use nodemesh_common::{
    config::{
        DatapathConfig, FEATURE_METRICS, FEATURE_POLICY, FEATURE_REDIRECT, FEATURE_SERVICES,
        FEATURE_SOCKMAP,
    },
    flow::{FlowKey, FlowStats},
    net::Addr,
    policy::{PolicyKey, PolicyValue},
    service::ServiceValue,
    sock::{OrigDst, SockKey},
    workload::{EndpointInfo, WorkloadInfo},
};
use serde::Serialize;

use super::{
    Cgroup2, Error, Features, KernelReport, ObjectSource, ServiceSpec, cgroup_id,
    error::is_permission, maps::Maps, object::Flavour, probe_kernel,
};

/// Where the kernel sends meshed connections: the agent's outbound listener.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct RedirectTarget {
    /// Listener address for IPv4 clients.
    pub addr4: Option<Ipv4Addr>,
    /// Listener address for IPv6 clients.
    pub addr6: Option<Ipv6Addr>,
    /// Listener port.
    pub port: u16,
}

/// How to set the datapath up.
#[derive(Clone, Debug, Serialize)]
pub struct DatapathOptions {
    /// The cgroup v2 directory to attach to (absolute, or relative to the
    /// cgroup2 mount; empty means the mount itself: the whole node).
    pub cgroup: PathBuf,
    /// Redirect meshed connections here; `None` disables redirection.
    pub redirect: Option<RedirectTarget>,
    /// Same-node socket acceleration.
    pub sockmap: bool,
    /// In-kernel L4 policy.
    pub policy: bool,
    /// L4 flow metrics.
    pub metrics: bool,
    /// The agent's own cgroup, whose sockets are never redirected
    /// (default: the cgroup this process runs in).
    pub agent_cgroup: Option<PathBuf>,
    /// Which object to load.
    #[serde(skip)]
    pub object: ObjectSource,
}

impl Default for DatapathOptions {
    fn default() -> Self {
        Self {
            cgroup: PathBuf::new(),
            redirect: None,
            sockmap: true,
            policy: true,
            metrics: true,
            agent_cgroup: None,
            object: ObjectSource::Embedded,
        }
    }
}

/// A kernel program a [`Datapath`] loaded.
#[derive(Clone, Debug, Serialize)]
pub struct LoadedProgram {
    /// Its name in the object (`connect4`, `track_socket`, ...).
    pub name: String,
    /// Its kernel id.
    pub id: u32,
}

/// The loaded and attached kernel programs. Dropping it detaches them.
pub struct Datapath {
    maps: Mutex<Maps>,
    logger: Mutex<Option<EbpfLogger<&'static dyn log::Log>>>,
    features: Features,
    report: KernelReport,
    cgroup: PathBuf,
    config: DatapathConfig,
    programs: Vec<LoadedProgram>,
    degraded: Vec<String>,
    // Declared last: programs (and their links) are detached after the map
    // handles are closed.
    _ebpf: Ebpf,
}

impl Datapath {
    /// Probes the kernel, loads the object, writes the node settings and
    /// attaches every program the kernel supports.
    pub fn load(opts: &DatapathOptions) -> Result<Self, Error> {
        let cg = Cgroup2::detect()?;
        let cgroup = cg.resolve(&opts.cgroup)?;
        let report = probe_kernel();
        if report.permission_denied {
            return Err(Error::NotPermitted {
                what: "probing the kernel for BPF support".into(),
            });
        }
        if !report.features.connect {
            return Err(Error::Load {
                source: format!(
                    "kernel {} lacks cgroup sock_addr programs or basic map types; see `nodemesh check`",
                    report.release
                )
                .into(),
            });
        }
        let mut features = report.features;
        if !opts.sockmap {
            features.sockmap = false;
        }
        if !report.features.sockmap && opts.sockmap {
            tracing::warn!("kernel lacks sockmap/sk_msg support: same-node acceleration is off");
        }
        if !report.features.sockops {
            if opts.redirect.is_some() {
                // The mesh learns each redirected connection's original
                // destination from sock_ops; without it every meshed
                // connection would fail, so refuse rather than run broken.
                return Err(Error::Unsupported {
                    release: report.release.clone(),
                    feature: "sock_ops programs",
                    needed_by: "the mesh (--redirect-addr) needs to hand each redirected connection's original destination to the agent",
                    instead: "run without --redirect-addr for Service translation and policy only",
                });
            }
            tracing::warn!("kernel lacks sock_ops support: L4 metrics are off");
        }
        if !report.features.ipv6 {
            tracing::warn!("kernel has no IPv6: the IPv6 hooks are not attached");
        }

        // A kernel that refuses sockhash maps refuses the whole regular
        // object (aya creates every map it declares): load the build without them.
        let flavour = if report.features.sockmap {
            Flavour::Full
        } else {
            Flavour::WithoutSockmap
        };
        let bytes = opts.object.bytes(flavour)?;
        let mut ebpf = EbpfLoader::new().load(&bytes).map_err(|e| {
            if is_permission(&e) {
                Error::NotPermitted {
                    what: "loading the kernel programs".into(),
                }
            } else {
                Error::Load {
                    source: Box::new(e),
                }
            }
        })?;
        let logger = match EbpfLogger::init(&mut ebpf) {
            Ok(l) => Some(l),
            Err(error) => {
                tracing::debug!(%error, "kernel programs carry no log map");
                None
            }
        };

        let agent_cgroup = match &opts.agent_cgroup {
            Some(p) => cg.resolve(p)?,
            None => cg.own_cgroup()?,
        };
        let agent_cgroup_id = cgroup_id(&agent_cgroup)?;
        let mut maps = take_maps(&mut ebpf)?;
        let mut bits = FEATURE_SERVICES;
        if opts.policy {
            bits |= FEATURE_POLICY;
        }
        if opts.metrics && features.sockops {
            bits |= FEATURE_METRICS;
        }
        if features.sockmap {
            bits |= FEATURE_SOCKMAP;
        }
        let mut config = DatapathConfig {
            agent_cgroup_id,
            ..DatapathConfig::default()
        };
        if let Some(r) = opts.redirect {
            bits |= FEATURE_REDIRECT;
            config.redirect_addr4 = r.addr4.map(Addr::from).unwrap_or_default();
            config.redirect_addr6 = r.addr6.map(Addr::from).unwrap_or_default();
            config.redirect_port = r.port;
        }
        config.features = bits;
        maps.write_config(&config)?;

        let cgroup_file = File::open(&cgroup)
            .map_err(|e| Error::io(format!("opening cgroup {}", cgroup.display()), e))?;
        let target = cgroup.display().to_string();
        let families: &[(&str, &str)] = if features.ipv6 {
            &[("connect4", "getpeername4"), ("connect6", "getpeername6")]
        } else {
            &[("connect4", "getpeername4")]
        };
        for (connect, _) in families {
            attach_sock_addr(&mut ebpf, connect, &cgroup_file, &target)?;
        }
        if features.peername {
            for (_, name) in families {
                if let Err(error) = attach_sock_addr(&mut ebpf, name, &cgroup_file, &target) {
                    tracing::warn!(%error, "applications will see backend addresses in getpeername()");
                    features.peername = false;
                }
            }
        }
        let mut degraded = Vec::new();
        if features.sockops
            && let Err(error) = attach_sockops(&mut ebpf, &cgroup_file, &target)
        {
            if matches!(error, Error::NotPermitted { .. }) {
                return Err(error);
            }
            tracing::warn!(%error, "sock_ops unavailable: L4 metrics and acceleration are off");
            degraded.push(format!("sock_ops: {error}"));
            features.sockops = false;
            features.sockmap = false;
        }
        if features.sockmap
            && let Err(error) = attach_sk_msg(&mut ebpf)
        {
            tracing::warn!(%error, "same-node acceleration is off");
            degraded.push(format!("sk_msg: {error}"));
            features.sockmap = false;
        }
        let programs = ebpf
            .programs()
            .filter_map(|(name, p)| {
                p.info().ok().map(|i| LoadedProgram {
                    name: name.to_owned(),
                    id: i.id(),
                })
            })
            .collect();
        tracing::info!(
            cgroup = %cgroup.display(),
            agent_cgroup = %agent_cgroup.display(),
            ?features,
            kernel = %report.release,
            "kernel programs attached"
        );
        Ok(Self {
            maps: Mutex::new(maps),
            logger: Mutex::new(logger),
            features,
            report,
            cgroup,
            config,
            programs,
            degraded,
            _ebpf: ebpf,
        })
    }

    fn maps(&self) -> MutexGuard<'_, Maps> {
        self.maps.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The features running on this node.
    pub fn features(&self) -> Features {
        self.features
    }

    /// The kernel probe this datapath was set up from.
    pub fn kernel_report(&self) -> &KernelReport {
        &self.report
    }

    /// The cgroup the programs are attached to.
    pub fn cgroup(&self) -> &std::path::Path {
        &self.cgroup
    }

    /// Why features the kernel advertises could not be used, if any.
    pub fn degraded(&self) -> &[String] {
        &self.degraded
    }

    /// Kernel ids of the loaded programs (they disappear when this is dropped).
    pub fn program_ids(&self) -> Vec<u32> {
        self.programs.iter().map(|p| p.id).collect()
    }

    /// The loaded programs, by name and kernel id: what `bpftool prog show
    /// id <id>` and the kernel's run-time statistics are looked up by.
    pub fn programs(&self) -> &[LoadedProgram] {
        &self.programs
    }

    /// The node settings written to the kernel.
    pub fn config(&self) -> DatapathConfig {
        self.config
    }

    /// The aya-log reader, for [`super::forward_kernel_logs`]; `None` once taken.
    pub fn take_logger(&self) -> Option<EbpfLogger<&'static dyn log::Log>> {
        self.logger.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Adds or replaces a service and its backends.
    pub fn upsert_service(&self, spec: &ServiceSpec) -> Result<(), Error> {
        self.maps().upsert_service(spec)
    }

    /// Writes one backend slot (for callers that manage slot tables themselves).
    pub fn upsert_backend_slot(
        &self,
        service_id: u32,
        slot: u32,
        addr: SocketAddr,
        identity: u32,
    ) -> Result<(), Error> {
        self.maps()
            .upsert_backend_slot(service_id, slot, addr, identity)
    }

    /// Removes one backend slot.
    pub fn remove_backend_slot(&self, service_id: u32, slot: u32) -> Result<(), Error> {
        self.maps().remove_backend_slot(service_id, slot)
    }

    /// Writes a service entry whose slots are already written.
    pub fn upsert_service_entry(
        &self,
        vip: SocketAddr,
        proto: u8,
        value: ServiceValue,
    ) -> Result<(), Error> {
        self.maps().upsert_service_entry(vip, proto, value)
    }

    /// Removes a service entry only.
    pub fn remove_service_entry(&self, vip: SocketAddr, proto: u8) -> Result<(), Error> {
        self.maps().remove_service_entry(vip, proto)
    }

    /// Removes a service.
    pub fn remove_service(&self, vip: SocketAddr, proto: u8) -> Result<(), Error> {
        self.maps().remove_service(vip, proto)
    }

    /// Registers a workload (a pod's cgroup) on this node.
    pub fn upsert_workload(&self, cgroup_id: u64, info: WorkloadInfo) -> Result<(), Error> {
        self.maps().upsert_workload(cgroup_id, info)
    }

    /// Forgets a workload.
    pub fn remove_workload(&self, cgroup_id: u64) -> Result<(), Error> {
        self.maps().remove_workload(cgroup_id)
    }

    /// Records who is behind an IP anywhere in the cluster.
    pub fn upsert_endpoint(&self, ip: IpAddr, info: EndpointInfo) -> Result<(), Error> {
        self.maps().upsert_endpoint(ip, info)
    }

    /// Forgets an IP.
    pub fn remove_endpoint(&self, ip: IpAddr) -> Result<(), Error> {
        self.maps().remove_endpoint(ip)
    }

    /// Adds or replaces an L4 policy rule.
    pub fn upsert_policy(&self, key: PolicyKey, value: PolicyValue) -> Result<(), Error> {
        self.maps().upsert_policy(key, value)
    }

    /// Removes an L4 policy rule.
    pub fn remove_policy(&self, key: PolicyKey) -> Result<(), Error> {
        self.maps().remove_policy(key)
    }

    /// What the client of a redirected connection dialled, given the
    /// accepted socket's peer and local addresses. The record is consumed.
    pub fn take_orig_dst(
        &self,
        client: SocketAddr,
        local: SocketAddr,
    ) -> Result<Option<OrigDst>, Error> {
        self.maps().take_orig_dst(client, local)
    }

    /// Datapath-wide counters (name, value).
    pub fn stats(&self) -> Result<Vec<(&'static str, u64)>, Error> {
        self.maps().stats()
    }

    /// One datapath-wide counter by name (see `nodemesh_common::stats::NAMES`).
    pub fn stat(&self, name: &str) -> Result<u64, Error> {
        Ok(self
            .stats()?
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
            .unwrap_or(0))
    }

    /// Per-flow L4 counters.
    pub fn flows(&self) -> Result<Vec<(FlowKey, FlowStats)>, Error> {
        self.maps().flows()
    }
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, Error>
where
    T: TryFrom<Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(Error::MissingMap(name))?;
    T::try_from(map).map_err(|source| Error::Map { map: name, source })
}

fn take_maps(ebpf: &mut Ebpf) -> Result<Maps, Error> {
    Ok(Maps {
        config: take::<Array<_, _>>(ebpf, "CONFIG")?,
        services: take::<HashMap<_, _, _>>(ebpf, "SERVICES")?,
        backends: take::<HashMap<_, _, _>>(ebpf, "BACKENDS")?,
        workloads: take::<HashMap<_, _, _>>(ebpf, "WORKLOADS")?,
        endpoints: take::<HashMap<_, _, _>>(ebpf, "ENDPOINTS")?,
        policy: take::<HashMap<_, _, _>>(ebpf, "POLICY")?,
        orig_by_tuple: take::<HashMap<_, _, _>>(ebpf, "ORIG_BY_TUPLE")?,
        flow_stats: take::<PerCpuHashMap<_, _, _>>(ebpf, "FLOW_STATS")?,
        stats: take::<PerCpuArray<_, _>>(ebpf, "STATS")?,
    })
}

fn attach_error(program: &'static str, target: &str, e: aya::programs::ProgramError) -> Error {
    if is_permission(&e) {
        Error::NotPermitted {
            what: format!("attaching {program} to {target}"),
        }
    } else {
        Error::Attach {
            program,
            target: target.to_string(),
            source: Box::new(e),
        }
    }
}

fn program_name(name: &str) -> &'static str {
    match name {
        "connect4" => "connect4",
        "connect6" => "connect6",
        "getpeername4" => "getpeername4",
        "getpeername6" => "getpeername6",
        _ => "program",
    }
}

// Programs are attached through bpf_link (Linux 5.7+), which always lets
// several programs share a cgroup and takes no attach flags: `Single`
// passes none.

fn attach_sock_addr(ebpf: &mut Ebpf, name: &str, cgroup: &File, target: &str) -> Result<(), Error> {
    let pname = program_name(name);
    let prog: &mut CgroupSockAddr = ebpf
        .program_mut(name)
        .ok_or(Error::MissingProgram(pname))?
        .try_into()
        .map_err(|e| attach_error(pname, target, e))?;
    prog.load().map_err(|e| attach_error(pname, target, e))?;
    prog.attach(cgroup, CgroupAttachMode::Single)
        .map_err(|e| attach_error(pname, target, e))?;
    Ok(())
}

fn attach_sockops(ebpf: &mut Ebpf, cgroup: &File, target: &str) -> Result<(), Error> {
    let prog: &mut SockOps = ebpf
        .program_mut("track_socket")
        .ok_or(Error::MissingProgram("track_socket"))?
        .try_into()
        .map_err(|e| attach_error("track_socket", target, e))?;
    prog.load()
        .map_err(|e| attach_error("track_socket", target, e))?;
    prog.attach(cgroup, CgroupAttachMode::Single)
        .map_err(|e| attach_error("track_socket", target, e))?;
    Ok(())
}

fn attach_sk_msg(ebpf: &mut Ebpf) -> Result<(), Error> {
    let fd = {
        let map = ebpf
            .map("SOCK_HASH")
            .ok_or(Error::MissingMap("SOCK_HASH"))?;
        let hash: SockHash<_, SockKey> = SockHash::try_from(map).map_err(|source| Error::Map {
            map: "SOCK_HASH",
            source,
        })?;
        hash.fd()
            .try_clone()
            .map_err(|e| Error::io("duplicating the sockhash descriptor", e))?
    };
    let prog: &mut SkMsg = ebpf
        .program_mut("redirect_msg")
        .ok_or(Error::MissingProgram("redirect_msg"))?
        .try_into()
        .map_err(|e| attach_error("redirect_msg", "SOCK_HASH", e))?;
    prog.load()
        .map_err(|e| attach_error("redirect_msg", "SOCK_HASH", e))?;
    prog.attach(&fd)
        .map_err(|e| attach_error("redirect_msg", "SOCK_HASH", e))?;
    Ok(())
}
