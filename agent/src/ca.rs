//! `nodemesh ca init`: the mesh's trust anchor and issuer.

use std::process::ExitCode;

use anyhow::Context as _;
use nodemesh_proxy::identity::ca::{CaInitOptions, init_ca_dir, kubernetes_secret_manifest};

use crate::cli::CaInitArgs;

/// Creates the CA files, and prints the Secret manifest if asked.
pub fn init(args: &CaInitArgs) -> anyhow::Result<ExitCode> {
    let options = CaInitOptions {
        trust_domain: args.trust_domain.clone(),
        force: args.force,
        ..CaInitOptions::default()
    };
    let files = init_ca_dir(&args.dir, &options).with_context(|| {
        format!(
            "creating the mesh CA in {} (pass --force to replace an existing one, which breaks trust with agents using it)",
            args.dir.display()
        )
    })?;
    eprintln!(
        "created the mesh CA for trust domain {} in {}: give it to the agents with --ca-dir {}",
        args.trust_domain,
        args.dir.display(),
        args.dir.display()
    );
    if args.secret {
        print!(
            "{}",
            kubernetes_secret_manifest(&files, "nodemesh-ca", &args.namespace)
        );
    }
    Ok(ExitCode::SUCCESS)
}
