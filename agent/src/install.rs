//! `nodemesh install` and `nodemesh uninstall`: every Kubernetes object a
//! cluster needs to run nodemesh, as one multi-document YAML stream for
//! `kubectl apply -f -` (install) or `kubectl delete -f -` (uninstall, the
//! same objects in reverse order).
//!
//! Every object is a typed k8s-openapi struct serialized with
//! `serde_yaml_ng`; the CRDs come from [`nodemesh_state::model::crds::crds`]
//! and the ClusterRole's rules from
//! [`nodemesh_state::k8s::rbac::policy_rules`], so the manifests follow the
//! code they deploy.
//!
//! - [`options`]: the validated settings (namespace, image, trust domain,
//!   admin address) and the command-line value parsers.
//! - [`meta`]: object names and labels shared by every object.
//! - [`config`]: the Namespace and the mesh settings ConfigMap.
//! - [`rbac`]: the agent's ServiceAccount, ClusterRole and binding.
//! - [`daemonset`]: the agent DaemonSet.
//! - [`manifest`]: the object set, its order, and its YAML rendering.
//!
//! The CA Secret is not part of the output: `nodemesh ca init --secret`
//! creates it (the keys never pass through `nodemesh install`), and the
//! DaemonSet mounts it as the agent's `--ca-dir`.

pub mod config;
pub mod daemonset;
pub mod manifest;
pub mod meta;
pub mod options;
pub mod rbac;

#[cfg(test)]
mod tests;

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;

pub use manifest::{Manifest, install_manifests, render, uninstall_manifests};
pub use options::{Error, InstallOptions};

use crate::cli::InstallArgs;

/// `nodemesh install`: prints the manifests for `kubectl apply -f -`.
pub fn install(args: &InstallArgs) -> anyhow::Result<ExitCode> {
    let options = InstallOptions::from_args(args)?;
    let manifests = install_manifests(&options);
    print_yaml(&manifests)?;
    eprintln!(
        "nodemesh install: {} objects in namespace {}; the agents start once the CA Secret {} exists \
         (`nodemesh ca init --secret --namespace {} | kubectl apply -f -`)",
        manifests.len(),
        options.namespace(),
        meta::CA_SECRET_NAME,
        options.namespace(),
    );
    Ok(ExitCode::SUCCESS)
}

/// `nodemesh uninstall`: prints the same manifests in reverse order for
/// `kubectl delete -f -`.
pub fn uninstall(args: &InstallArgs) -> anyhow::Result<ExitCode> {
    let options = InstallOptions::from_args(args)?;
    let manifests = uninstall_manifests(&options);
    print_yaml(&manifests)?;
    eprintln!(
        "nodemesh uninstall: {} objects; deleting namespace {} also deletes the CA Secret {}, \
         and deleting the CRDs deletes every AuthorizationPolicy and MeshConfig",
        manifests.len(),
        options.namespace(),
        meta::CA_SECRET_NAME,
    );
    Ok(ExitCode::SUCCESS)
}

fn print_yaml(manifests: &[Manifest]) -> anyhow::Result<()> {
    let yaml = render(manifests).context("serializing the manifests")?;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(yaml.as_bytes())
        .and_then(|()| stdout.flush())
        .context("writing the manifests to stdout")
}
