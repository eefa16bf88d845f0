//! The object kinds nodemesh reads, as typed Rust values.
//!
//! Core kinds come from `k8s-openapi`. Gateway API routes and SMI
//! `TrafficSplit` are declared here with the fields nodemesh uses (unknown
//! fields of those upstream kinds are ignored, since upstream adds fields
//! over time). nodemesh's own CRDs reject unknown fields.

pub mod crds;
pub mod decode;
pub mod gateway;
pub mod object;
pub mod smi;

pub use object::{Kind, Object, ObjectRef};

/// Label that puts a Pod, or every Pod of a Namespace, into the mesh.
pub const MESH_LABEL: &str = "nodemesh.io/mesh";
/// Value of [`MESH_LABEL`] that enables the mesh.
pub const MESH_ENABLED: &str = "enabled";
/// Pod annotation naming the pod's cgroup, relative to the cgroup2 mount.
pub const CGROUP_ANNOTATION: &str = "nodemesh.io/cgroup";
