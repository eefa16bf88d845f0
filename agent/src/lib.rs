//! The nodemesh node agent: loads the kernel programs, keeps their maps in
//! line with the cluster, runs the proxy, and serves metrics and health.

pub mod datapath;
