//! The cluster model the agent acts on: Kubernetes-shaped objects in, desired
//! datapath and routing state out.
//!
//! - [`model`]: the object kinds nodemesh reads (core, Gateway API GAMMA
//!   routes, SMI `TrafficSplit`, and nodemesh's own CRDs), and decoding them
//!   from YAML or JSON.
//! - [`index`]: a pure, synchronous index. [`index::Index::apply`] and
//!   [`index::Index::delete`] take typed objects; [`index::Index::snapshot`]
//!   computes a [`desired::DesiredState`].
//! - [`diff`]: the ordered datapath changes from one desired state to the
//!   next; [`diff::Datapath`] also keeps backend slots in place.
//! - [`file`] (the default) and [`k8s`]: sources that feed the index and
//!   publish each new desired state through [`publish::Publisher`] on a
//!   `tokio::sync::watch` channel.
//! - [`rejection`] and [`metrics`]: why an object was refused, and the
//!   refusal counter.
//! - [`cgroup`]: finding a pod's cgroup under a kubelet cgroup2 hierarchy.
//!
//! A node agent in file mode:
//!
//! ```no_run
//! # async fn agent() -> Result<(), Box<dyn std::error::Error>> {
//! use nodemesh_state::diff::Datapath;
//! use nodemesh_state::file::{FileSource, FileSourceConfig};
//! use nodemesh_state::metrics::RejectionMetrics;
//! use nodemesh_state::{Index, IndexConfig};
//!
//! let registry = prometheus::Registry::new();
//! let metrics = RejectionMetrics::new(&registry)?;
//! let index = Index::new(IndexConfig { node_name: "node-a".into(), ..Default::default() }, Some(metrics));
//! let (mut states, _task) = FileSource::start(FileSourceConfig::new("examples/cluster"), index)?;
//! let mut datapath = Datapath::default();
//! loop {
//!     let state = states.borrow_and_update().clone();
//!     for change in datapath.update(&state) {
//!         // write `change` to the BPF maps
//!         # let _ = change;
//!     }
//!     states.changed().await?;
//! }
//! # }
//! ```

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
