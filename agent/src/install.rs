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

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context as _;

pub use manifest::{Manifest, install_manifests, render, uninstall_manifests};
pub use options::{Error, InstallOptions};

use crate::cli::InstallArgs;

/// `nodemesh install`: prints the manifests for `kubectl apply -f -`.
pub fn install(args: &InstallArgs) -> anyhow::Result<ExitCode> {
    let count = write_install(args, &mut std::io::stdout().lock())?;
    eprintln!(
        "nodemesh install: {count} objects in namespace {ns}; the agents start once the CA Secret {secret} \
         exists (`nodemesh ca init --secret --namespace {ns} | kubectl apply -f -`)",
        ns = args.namespace,
        secret = meta::CA_SECRET_NAME,
    );
    Ok(ExitCode::SUCCESS)
}

/// `nodemesh uninstall`: prints the same manifests in reverse order for
/// `kubectl delete -f -`.
pub fn uninstall(args: &InstallArgs) -> anyhow::Result<ExitCode> {
    let count = write_uninstall(args, &mut std::io::stdout().lock())?;
    eprintln!(
        "nodemesh uninstall: {count} objects; deleting namespace {ns} also deletes the CA Secret \
         {secret}, and deleting the CRDs deletes every AuthorizationPolicy and MeshConfig",
        ns = args.namespace,
        secret = meta::CA_SECRET_NAME,
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes what `nodemesh install` prints to `out`; returns the number of objects.
pub fn write_install(args: &InstallArgs, out: &mut dyn Write) -> anyhow::Result<usize> {
    let options = InstallOptions::from_args(args)?;
    write_yaml(&install_manifests(&options), out)
}

/// Writes what `nodemesh uninstall` prints to `out`; returns the number of objects.
pub fn write_uninstall(args: &InstallArgs, out: &mut dyn Write) -> anyhow::Result<usize> {
    let options = InstallOptions::from_args(args)?;
    write_yaml(&uninstall_manifests(&options), out)
}

fn write_yaml(manifests: &[Manifest], out: &mut dyn Write) -> anyhow::Result<usize> {
    let yaml = render(manifests).context("serializing the manifests")?;
    out.write_all(yaml.as_bytes())
        .and_then(|()| out.flush())
        .context("writing the manifests")?;
    Ok(manifests.len())
}
