//! `nodemesh ca init` and `nodemesh ca rotate`: the mesh's trust anchor and
//! issuer, and replacing the anchor without a failed connection.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use nodemesh_proxy::identity::TrustBundle;
use nodemesh_proxy::identity::ca::{
    Authority, CaFiles, CaInitOptions, DEFAULT_ISSUER_VALIDITY, DEFAULT_ROOT_VALIDITY,
    ISSUER_CERT_FILE, ISSUER_KEY_FILE, ROOT_CERT_FILE, ROOT_KEY_FILE, TRUST_BUNDLE_FILE,
    init_ca_dir, kubernetes_secret_manifest,
};

use crate::cli::{CaInitArgs, CaRotateArgs, RotateStep};

/// The next root, between `rotate begin` and `rotate finish`.
pub const NEXT_ROOT_CERT_FILE: &str = "next-root-cert.pem";
/// The next root's key.
pub const NEXT_ROOT_KEY_FILE: &str = "next-root-key.pem";

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

/// Performs one step of trust-anchor rotation on the CA directory.
pub fn rotate(args: &CaRotateArgs) -> anyhow::Result<ExitCode> {
    let dir = &args.dir;
    let ca = CaFiles::load(dir)
        .with_context(|| format!("loading the mesh CA from {}", dir.display()))?;
    match args.step {
        RotateStep::Begin => {
            anyhow::ensure!(
                !dir.join(NEXT_ROOT_CERT_FILE).exists(),
                "a rotation is already under way in {}: run `nodemesh ca rotate issuer`, then `finish`",
                dir.display()
            );
            let next = Authority::new_root(&args.trust_domain, DEFAULT_ROOT_VALIDITY)?;
            write(dir, NEXT_ROOT_KEY_FILE, next.key_pem(), true)?;
            write(dir, NEXT_ROOT_CERT_FILE, next.cert_pem(), false)?;
            let mut bundle = ca.bundle.clone();
            bundle.add(next.cert_der().clone());
            write(dir, TRUST_BUNDLE_FILE, &bundle.to_pem(), false)?;
            eprintln!(
                "step 1 of 3: the bundle trusts the old and the new root; once every agent has it, run `nodemesh ca rotate issuer`"
            );
        }
        RotateStep::Issuer => {
            let next = next_root(dir)?;
            anyhow::ensure!(
                ca.bundle.anchors().contains(next.cert_der()),
                "the bundle does not trust the next root yet: run `nodemesh ca rotate begin` first"
            );
            let issuer = next.new_issuer(&args.trust_domain, DEFAULT_ISSUER_VALIDITY)?;
            write(dir, ISSUER_KEY_FILE, issuer.key_pem(), true)?;
            write(dir, ISSUER_CERT_FILE, issuer.cert_pem(), false)?;
            eprintln!(
                "step 2 of 3: workload certificates now chain to the new root; once every agent has re-issued, run `nodemesh ca rotate finish`"
            );
        }
        RotateStep::Finish => {
            let next = next_root(dir)?;
            anyhow::ensure!(
                issued_by(&ca, &next, &args.trust_domain),
                "the issuer is not signed by the next root yet: run `nodemesh ca rotate issuer` first"
            );
            let mut bundle = TrustBundle::new();
            bundle.add(next.cert_der().clone());
            write(dir, TRUST_BUNDLE_FILE, &bundle.to_pem(), false)?;
            write(dir, ROOT_KEY_FILE, next.key_pem(), true)?;
            write(dir, ROOT_CERT_FILE, next.cert_pem(), false)?;
            std::fs::remove_file(dir.join(NEXT_ROOT_CERT_FILE))?;
            std::fs::remove_file(dir.join(NEXT_ROOT_KEY_FILE))?;
            eprintln!("step 3 of 3: the old root is no longer trusted; rotation complete");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn next_root(dir: &Path) -> anyhow::Result<Authority> {
    let cert = std::fs::read_to_string(dir.join(NEXT_ROOT_CERT_FILE)).with_context(|| {
        format!(
            "no rotation under way in {}: run `nodemesh ca rotate begin`",
            dir.display()
        )
    })?;
    let key = std::fs::read_to_string(dir.join(NEXT_ROOT_KEY_FILE))?;
    Ok(Authority::from_pem(&cert, &key)?)
}

/// Whether the CA's issuer is signed by `root`: a bundle holding only
/// `root` accepts the issuer's chain.
fn issued_by(ca: &CaFiles, root: &Authority, trust_domain: &str) -> bool {
    let mut only = TrustBundle::new();
    only.add(root.cert_der().clone());
    let config = nodemesh_proxy::identity::CertManagerConfig {
        trust_domain: trust_domain.to_owned(),
        ..Default::default()
    };
    let Ok(issuer) = Authority::from_pem(ca.issuer.cert_pem(), ca.issuer.key_pem()) else {
        return false;
    };
    nodemesh_proxy::identity::CertManager::new(issuer, only, config).is_ok()
}

/// Writes a CA file atomically (a temporary file renamed over it); keys get mode 0600.
fn write(dir: &Path, name: &str, contents: &str, secret: bool) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))
        .with_context(|| format!("replacing {}", dir.join(name).display()))?;
    Ok(())
}
