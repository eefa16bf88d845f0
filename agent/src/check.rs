//! `nodemesh check`: can this node run nodemesh, and is the agent healthy?
//!
//! One line per check: `✔`, `✘` for a missing requirement with what to do,
//! or `!` for a missing optional capability with what the agent runs without.
//! Every kernel capability is probed for real (see
//! [`crate::datapath::probe_kernel`]).

use std::process::ExitCode;
use std::time::Duration;

use crate::cli::{CheckArgs, EXIT_CHECK_FAILED};
use crate::datapath::{Cgroup2, Check, probe_kernel};

/// Capability bits (include/uapi/linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// Runs every check and prints the report; exits 3 if a required one failed.
pub fn run(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let checks = collect(args);
    let mut failed = 0;
    let mut degraded = 0;
    for c in &checks {
        if c.ok {
            println!("✔ {}", c.name);
        } else if c.required {
            failed += 1;
            println!("✘ {}\n    fix: {}", c.name, c.fix);
        } else {
            degraded += 1;
            println!("! {} (optional)\n    {}", c.name, c.fix);
        }
    }
    if failed == 0 {
        if degraded == 0 {
            println!("all {} checks passed", checks.len());
        } else {
            println!(
                "{} checks passed; {degraded} optional capabilities missing: the agent runs without them",
                checks.len() - degraded
            );
        }
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{failed} of {} checks failed", checks.len());
        Ok(ExitCode::from(EXIT_CHECK_FAILED))
    }
}

/// The checks, in the order they are printed.
pub fn collect(args: &CheckArgs) -> Vec<Check> {
    let mut checks = Vec::new();
    let caps = effective_caps();
    for (name, bit) in [
        ("CAP_BPF", CAP_BPF),
        ("CAP_NET_ADMIN", CAP_NET_ADMIN),
        ("CAP_SYS_ADMIN", CAP_SYS_ADMIN),
    ] {
        checks.push(Check {
            name: format!("capability {name}"),
            ok: caps.is_some_and(|c| c & (1 << bit) != 0),
            required: true,
            fix: "run as root, or give the DaemonSet `privileged: true` (or these capabilities)"
                .into(),
        });
    }
    match Cgroup2::detect() {
        Ok(cg) => {
            checks.push(Check {
                name: format!("cgroup v2 mounted at {}", cg.mount.display()),
                ok: true,
                required: true,
                fix: String::new(),
            });
            let wanted = args.cgroup.clone().unwrap_or_default();
            let resolved = cg.resolve(&wanted);
            checks.push(Check {
                name: format!(
                    "attach cgroup {} exists",
                    resolved
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|_| wanted.display().to_string())
                ),
                ok: resolved.is_ok(),
                required: true,
                fix: resolved.err().map(|e| e.to_string()).unwrap_or_default(),
            });
        }
        Err(e) => checks.push(Check {
            name: "cgroup v2 mounted".into(),
            ok: false,
            required: true,
            fix: e.to_string(),
        }),
    }
    checks.extend(probe_kernel().checks);
    if !args.pre {
        checks.push(agent_ready(args));
    }
    checks
}

/// The effective capability set of this process.
fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    u64::from_str_radix(hex, 16).ok()
}

fn agent_ready(args: &CheckArgs) -> Check {
    let name = format!("agent ready at http://{}/ready", args.admin_addr);
    let fix = "start the agent (`nodemesh agent`, or the DaemonSet from `nodemesh install`), or pass its address with --admin-addr".to_string();
    let ok = (|| -> Option<bool> {
        use std::io::{Read as _, Write as _};
        let mut s =
            std::net::TcpStream::connect_timeout(&args.admin_addr, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(b"GET /ready HTTP/1.1\r\nHost: nodemesh\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut resp = String::new();
        s.read_to_string(&mut resp).ok()?;
        Some(resp.starts_with("HTTP/1.1 200"))
    })()
    .unwrap_or(false);
    Check {
        name,
        ok,
        required: true,
        fix,
    }
}
