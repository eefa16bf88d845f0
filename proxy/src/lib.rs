//! The data path the node agent runs: mTLS tunnels between node agents with
//! SPIFFE identities, TCP pass-through, L7 routing and authorization.
#![forbid(unsafe_code)]

pub mod authz;
pub mod identity;
pub mod metrics;
pub mod tls;
pub mod tunnel;
