//! The kernel half of nodemesh: loads the eBPF object, attaches its programs
//! to a cgroup v2 subtree, and exposes typed operations on its maps.
//!
//! This is the only module that touches aya. Everything the kernel programs
//! do is driven through [`Datapath`]: services and their backends, workloads
//! on this node, endpoints anywhere, L4 policy rules, and reading back
//! counters and original destinations.

mod cgroup;
mod error;
mod logs;
mod maps;
mod object;
mod probe;
mod program;
pub mod slots;

pub use cgroup::{Cgroup2, cgroup_id};
pub use error::Error;
pub use logs::forward_kernel_logs;
pub use maps::{BackendSpec, ServiceSpec};
pub use object::ObjectSource;
pub use probe::{Check, Features, KernelReport, probe_kernel};
pub use program::{Datapath, DatapathOptions, LoadedProgram, RedirectTarget};
