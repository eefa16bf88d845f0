//! Smoke tests of the kernel facilities the datapath relies on: BTF, BPF
//! maps, the kernel programs passing the verifier, network namespaces with a
//! veth pair carrying TCP and a clsact qdisc, and cgroup v2. They run on the
//! host (`cargo xtask test`) and in every guest of the kernel matrix
//! (`cargo xtask vm-test`), so a kernel lacking one of these fails here with a
//! message naming it.
//!
//! Needs root. Every test cleans up what it creates, also when it fails.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Runs a command and panics with its output unless it succeeds.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("starting {program} {}: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "{program} {} failed: {}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A name unique to this process, so parallel runs on one host do not collide.
fn unique(prefix: &str) -> String {
    format!("{prefix}{}", std::process::id() % 100_000)
}

#[test]
fn kernel_exposes_btf() {
    let btf = Path::new("/sys/kernel/btf/vmlinux");
    let len = std::fs::metadata(btf)
        .unwrap_or_else(|e| {
            panic!(
                "{} is missing (kernel without CONFIG_DEBUG_INFO_BTF?): {e}",
                btf.display()
            )
        })
        .len();
    // sysfs reports the real size of the BTF blob; a kernel's BTF is megabytes.
    assert!(len > 100_000, "{} is only {len} bytes", btf.display());
}

/// `union bpf_attr` for `BPF_MAP_CREATE`, as far as this test uses it.
#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}

/// `union bpf_attr` for the `BPF_MAP_*_ELEM` commands.
#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// The `bpf(2)` system call; returns the result or the OS error.
fn bpf<T>(cmd: libc::c_int, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, correctly laid out prefix of `union bpf_attr`
    // and its size is passed along, as bpf(2) requires.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            size_of::<T>() as libc::c_uint,
        )
    };
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

#[test]
fn bpf_hash_map_stores_and_returns_values() {
    const BPF_MAP_CREATE: libc::c_int = 0;
    const BPF_MAP_LOOKUP_ELEM: libc::c_int = 1;
    const BPF_MAP_UPDATE_ELEM: libc::c_int = 2;
    const BPF_MAP_TYPE_HASH: u32 = 1;
    let mut create = MapCreateAttr {
        map_type: BPF_MAP_TYPE_HASH,
        key_size: 4,
        value_size: 8,
        max_entries: 1024,
        ..Default::default()
    };
    let fd = bpf(BPF_MAP_CREATE, &mut create).expect("BPF_MAP_CREATE of a hash map");
    // SAFETY: the kernel just returned this descriptor and nothing else owns it.
    let map = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };

    for key in 0u32..1000 {
        let value = u64::from(key) * 7 + 1;
        let mut update = MapElemAttr {
            map_fd: map.as_raw_fd() as u32,
            key: &key as *const u32 as u64,
            value: &value as *const u64 as u64,
            ..Default::default()
        };
        bpf(BPF_MAP_UPDATE_ELEM, &mut update)
            .unwrap_or_else(|e| panic!("update of key {key}: {e}"));
    }
    for key in [0u32, 1, 500, 999] {
        let mut value = 0u64;
        let mut lookup = MapElemAttr {
            map_fd: map.as_raw_fd() as u32,
            key: &key as *const u32 as u64,
            value: &mut value as *mut u64 as u64,
            ..Default::default()
        };
        bpf(BPF_MAP_LOOKUP_ELEM, &mut lookup)
            .unwrap_or_else(|e| panic!("lookup of key {key}: {e}"));
        assert_eq!(value, u64::from(key) * 7 + 1);
    }
    let missing = 5000u32;
    let mut value = 0u64;
    let mut lookup = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: &missing as *const u32 as u64,
        value: &mut value as *mut u64 as u64,
        ..Default::default()
    };
    let err = bpf(BPF_MAP_LOOKUP_ELEM, &mut lookup).expect_err("a key never inserted");
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
}

/// The BPF object the agent loads: `$NODEMESH_BPF_OBJECT` (set by the kernel
/// matrix), else the one `cargo xtask build-ebpf` builds.
fn bpf_object() -> PathBuf {
    std::env::var_os("NODEMESH_BPF_OBJECT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bpf/dev/nodemesh.bpf.o")
        })
}

#[test]
fn every_kernel_program_passes_the_verifier() {
    let path = bpf_object();
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask build-ebpf`",
        path.display()
    );
    let mut ebpf =
        aya::Ebpf::load_file(&path).unwrap_or_else(|e| panic!("loading {}: {e:#}", path.display()));
    let mut loaded = Vec::new();
    let mut rejected = Vec::new();
    for (name, program) in ebpf.programs_mut() {
        let result = match program {
            aya::programs::Program::CgroupSockAddr(p) => p.load(),
            aya::programs::Program::SockOps(p) => p.load(),
            aya::programs::Program::SkMsg(p) => p.load(),
            aya::programs::Program::SchedClassifier(p) => p.load(),
            aya::programs::Program::CgroupSkb(p) => p.load(),
            aya::programs::Program::CgroupSock(p) => p.load(),
            aya::programs::Program::Xdp(p) => p.load(),
            other => panic!(
                "program {name} has a type this test cannot load: {:?}",
                other.prog_type()
            ),
        };
        match result {
            Ok(()) => loaded.push(name.to_owned()),
            Err(e) => {
                // aya's error carries the verifier's log after "Verifier output:".
                eprintln!("program {name} was rejected: {e}");
                rejected.push(name.to_owned());
            }
        }
    }
    eprintln!("loaded {} programs: {}", loaded.len(), loaded.join(", "));
    assert!(
        rejected.is_empty(),
        "rejected by this kernel: {}",
        rejected.join(", ")
    );
    assert!(!loaded.is_empty(), "{} holds no programs", path.display());
}

/// A network namespace and a veth pair with one end in it, removed on drop.
struct VethNetns {
    netns: String,
    host_if: String,
}

impl Drop for VethNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

#[test]
fn veth_pair_carries_tcp_into_a_network_namespace() {
    let topo = VethNetns {
        netns: unique("nmsmoke"),
        host_if: unique("nmh"),
    };
    let peer_if = unique("nmp");
    // A /30 from the benchmarking range, reachable only over this veth pair.
    let (host_ip, pod_ip) = ("198.18.77.1", "198.18.77.2");
    run("ip", &["netns", "add", &topo.netns]);
    run(
        "ip",
        &[
            "link",
            "add",
            &topo.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &peer_if,
        ],
    );
    run("ip", &["link", "set", &peer_if, "netns", &topo.netns]);
    run(
        "ip",
        &[
            "addr",
            "add",
            &format!("{host_ip}/30"),
            "dev",
            &topo.host_if,
        ],
    );
    run("ip", &["link", "set", &topo.host_if, "up"]);
    run(
        "ip",
        &[
            "-n",
            &topo.netns,
            "addr",
            "add",
            &format!("{pod_ip}/30"),
            "dev",
            &peer_if,
        ],
    );
    run("ip", &["-n", &topo.netns, "link", "set", &peer_if, "up"]);
    run("ip", &["-n", &topo.netns, "link", "set", "lo", "up"]);
    let shown = run(
        "ip",
        &["-n", &topo.netns, "-o", "addr", "show", "dev", &peer_if],
    );
    assert!(shown.contains(pod_ip), "peer address missing: {shown}");
    // `ip netns exec` (a private mount namespace with the netns' own /sys) works.
    let inside = run(
        "ip",
        &["netns", "exec", &topo.netns, "ip", "-o", "link", "show"],
    );
    assert!(
        inside.contains(&peer_if),
        "netns exec sees no {peer_if}: {inside}"
    );
    assert!(
        !inside.contains(&topo.host_if),
        "netns exec sees the host side: {inside}"
    );
    // The clsact qdisc (module sch_ingress) is where tc BPF programs attach.
    run("tc", &["qdisc", "add", "dev", &topo.host_if, "clsact"]);
    let qdiscs = run("tc", &["qdisc", "show", "dev", &topo.host_if]);
    assert!(qdiscs.contains("clsact"), "clsact qdisc missing: {qdiscs}");

    // A listener inside the namespace: a thread that switched its network namespace.
    let netns_file =
        std::fs::File::open(format!("/run/netns/{}", topo.netns)).expect("netns handle");
    let (tx, rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        // SAFETY: setns on a valid namespace fd; it only affects this thread.
        let rc = unsafe { libc::setns(netns_file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        let listener = TcpListener::bind(SocketAddrV4::new(pod_ip.parse().unwrap(), 0))
            .expect("bind in netns");
        tx.send(listener.local_addr().unwrap().port()).unwrap();
        let (mut conn, peer) = listener.accept().expect("accept");
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf).expect("read");
        conn.write_all(&buf.map(|b| b.to_ascii_uppercase()))
            .expect("write");
        peer
    });
    let port = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("listener port");
    let addr = SocketAddrV4::new(pod_ip.parse::<Ipv4Addr>().unwrap(), port);
    let mut conn = TcpStream::connect_timeout(&addr.into(), Duration::from_secs(10))
        .expect("connect over veth");
    conn.write_all(b"ping").unwrap();
    let mut reply = [0u8; 4];
    conn.read_exact(&mut reply).expect("reply over veth");
    assert_eq!(&reply, b"PING");
    let peer = server.join().expect("server thread");
    assert_eq!(
        peer.ip().to_string(),
        host_ip,
        "the connection came over the veth pair"
    );
}

/// The cgroup v2 mount point, from `/proc/self/mountinfo`.
fn cgroup2_root() -> PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    info.lines()
        .find_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let fstype = post.split_whitespace().next()?;
            let mount_point = pre.split_whitespace().nth(4)?;
            (fstype == "cgroup2").then(|| PathBuf::from(mount_point))
        })
        .expect("no cgroup2 mount")
}

/// A cgroup created for the test, removed on drop.
struct TestCgroup(PathBuf);

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn cgroup_holds_a_process_and_is_removed() {
    let name = unique("nodemesh-smoke-");
    let cgroup = TestCgroup(cgroup2_root().join(&name));
    std::fs::create_dir(&cgroup.0).unwrap_or_else(|e| panic!("mkdir {}: {e}", cgroup.0.display()));
    let mut child = Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("spawn sleep");
    let moved = std::fs::write(cgroup.0.join("cgroup.procs"), child.id().to_string());
    let membership =
        std::fs::read_to_string(format!("/proc/{}/cgroup", child.id())).unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    moved.expect("moving a process into the cgroup");
    assert!(
        membership.contains(&format!("/{name}")),
        "membership: {membership}"
    );
    let procs = std::fs::read_to_string(cgroup.0.join("cgroup.procs")).expect("cgroup.procs");
    assert!(
        procs.trim().is_empty(),
        "cgroup still has processes: {procs}"
    );
    std::fs::remove_dir(&cgroup.0).unwrap_or_else(|e| panic!("rmdir {}: {e}", cgroup.0.display()));
    assert!(!cgroup.0.exists());
}
