//! The nodemesh node agent: loads the kernel programs, keeps their maps in
//! line with the cluster, runs the proxy, and serves metrics and health.
//!
//! - [`datapath`]: the kernel programs and their maps (the only aya user).
//! - [`app`]: the `nodemesh agent` process: wiring, signals, shutdown.
//! - [`admin`]: the admin HTTP endpoint (health, readiness, metrics, debug).
//! - [`metrics`]: Prometheus families fed from the kernel counters.
//! - [`check`]: `nodemesh check`, the preflight.
//! - [`cli`]: the command line.

pub mod admin;
pub mod app;
pub mod ca;
pub mod check;
pub mod cli;
pub mod datapath;
pub mod install;
pub mod logging;
pub mod mesh;
pub mod metrics;
pub mod reconcile;
