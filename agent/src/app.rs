//! The `nodemesh agent` process: loads the datapath, serves the admin
//! endpoint, and detaches everything cleanly on SIGTERM or SIGINT.
//!
//! Threads: the admin endpoint and kernel-log forwarding run on a small
//! control runtime, apart from the data path.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};

use crate::admin::{self, AdminState};
use crate::cli::AgentArgs;
use crate::datapath::{Datapath, DatapathOptions, RedirectTarget, forward_kernel_logs};

/// Runs the agent until it is told to stop.
pub fn run(args: AgentArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("nodemesh-agent")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run_async(args))
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
    let opts = datapath_options(&args);
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
