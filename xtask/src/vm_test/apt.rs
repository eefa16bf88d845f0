//! Where kernel packages come from: the system's apt sources first, then a
//! private apt configuration in the cache that adds other Debian suites
//! (bullseye for 5.10, trixie, bookworm-backports) without touching the
//! system's configuration.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;

use crate::cmd;
use crate::vm_test::host;

/// The suites of the private configuration, all signed by the Debian archive keys.
const EXTRA_SOURCES: &str = "\
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bullseye main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bullseye-security main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-backports main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security trixie-security main
";

/// Whether the private configuration's lists were refreshed in this invocation.
static EXTRA_UPDATED: AtomicBool = AtomicBool::new(false);

/// A set of apt sources.
pub enum Sources {
    /// The system's own configuration.
    System,
    /// The private configuration rooted at this directory.
    Extra(PathBuf),
}

impl Sources {
    /// The private configuration under `cache`.
    pub fn extra(cache: &Path) -> Self {
        Sources::Extra(cache.join("apt"))
    }

    /// `apt-get` or `apt-cache` reading these sources.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        if let Sources::Extra(root) = self {
            let opt = |key: &str, value: &Path| format!("{key}={}", value.display());
            command
                .arg("-o")
                .arg(opt("Dir::Etc::SourceList", &root.join("sources.list")))
                .args(["-o", "Dir::Etc::SourceParts=/nonexistent"])
                .arg("-o")
                .arg(opt("Dir::State::Lists", &root.join("lists")))
                .arg("-o")
                .arg(opt("Dir::Cache", &root.join("cache")));
        }
        command
    }

    /// Refreshes the package lists, at most once per invocation; returns whether it ran now.
    pub fn update(&self) -> anyhow::Result<bool> {
        match self {
            Sources::System => host::apt_update(),
            Sources::Extra(root) => {
                if EXTRA_UPDATED.swap(true, Ordering::Relaxed) {
                    return Ok(false);
                }
                for dir in [
                    root.join("lists").join("partial"),
                    root.join("cache").join("archives").join("partial"),
                ] {
                    std::fs::create_dir_all(&dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                }
                std::fs::write(root.join("sources.list"), EXTRA_SOURCES)?;
                cmd::run(self.command("apt-get").arg("update"))
                    .context("refreshing the package lists of the extra Debian suites")?;
                Ok(true)
            }
        }
    }

    /// Whether package lists are on disk (always true for the system's sources).
    pub fn has_lists(&self) -> bool {
        match self {
            Sources::System => true,
            Sources::Extra(root) => std::fs::read_dir(root.join("lists"))
                .map(|entries| {
                    entries
                        .flatten()
                        .any(|e| e.file_name().to_string_lossy().contains("_Packages"))
                })
                .unwrap_or(false),
        }
    }

    /// A short name for messages.
    pub fn describe(&self) -> &'static str {
        match self {
            Sources::System => "the system's apt sources",
            Sources::Extra(_) => "the extra Debian suites (bullseye, bookworm-backports, trixie)",
        }
    }
}
