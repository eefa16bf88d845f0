//! The cluster model the agent acts on: Kubernetes-shaped objects in, desired
//! datapath and routing state out.
//!
//! - [`model`]: the object kinds nodemesh reads (core, Gateway API GAMMA
//!   routes, SMI `TrafficSplit`, and nodemesh's own CRDs), and decoding them
//!   from YAML or JSON.
//! - [`index`]: a pure, synchronous index. [`index::Index::apply`] and
//!   [`index::Index::delete`] take typed objects; [`index::Index::snapshot`]
//!   computes a [`desired::DesiredState`].
//! - [`diff`]: the ordered datapath changes from one desired state to the next.
//! - [`file`] (the default) and [`k8s`]: sources that feed the index and
//!   publish each new desired state on a `tokio::sync::watch` channel.
//! - [`cgroup`]: finding a pod's cgroup under a kubelet cgroup2 hierarchy.

pub mod cgroup;
pub mod desired;
pub mod diff;
pub mod file;
pub mod identity;
pub mod index;
pub mod k8s;
pub mod metrics;
pub mod model;
pub mod publish;
pub mod rejection;

pub use desired::DesiredState;
pub use index::{Index, IndexConfig};
pub use model::{Object, ObjectRef};
