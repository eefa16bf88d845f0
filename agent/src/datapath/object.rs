//! Where the BPF object comes from, and which of its two builds to load.
//!
//! Every object is built twice (`cargo xtask build-ebpf`): with the sockhash
//! and the `sk_msg` program, and without them. aya creates every map an
//! object declares, so on a kernel that refuses sockhash maps the regular
//! object cannot load at all; the companion without them loses only the
//! same-node acceleration.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use super::Error;

/// The regular object, embedded at build time (see `agent/build.rs`).
static EMBEDDED: &[u8] = aya::include_bytes_aligned!(env!("NODEMESH_EBPF_OBJECT"));
/// The object built without the sockhash and `sk_msg`.
static EMBEDDED_WITHOUT_SOCKMAP: &[u8] =
    aya::include_bytes_aligned!(env!("NODEMESH_EBPF_OBJECT_NOSOCKMAP"));

/// Environment variable naming an object file to load instead of the embedded one.
pub const OBJECT_ENV: &str = "NODEMESH_BPF_OBJECT";

/// Which build of the object to load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    /// With the sockhash and `sk_msg` (same-node acceleration possible).
    Full,
    /// Without them, for kernels that refuse sockhash maps or `sk_msg`.
    WithoutSockmap,
}

/// Which BPF object to load.
#[derive(Clone, Debug, Default)]
pub enum ObjectSource {
    /// The objects embedded in this binary, unless `NODEMESH_BPF_OBJECT` names another.
    #[default]
    Embedded,
    /// An object file on disk; its companion without sockmap sits beside it,
    /// named as `cargo xtask build-ebpf` names it (`nodemesh-nosockmap.bpf.o`
    /// for `nodemesh.bpf.o`).
    File(PathBuf),
}

impl ObjectSource {
    /// The bytes of the object's `flavour`.
    pub(crate) fn bytes(&self, flavour: Flavour) -> Result<Cow<'static, [u8]>, Error> {
        let path = match self {
            ObjectSource::File(p) => Some(p.clone()),
            ObjectSource::Embedded => std::env::var_os(OBJECT_ENV).map(PathBuf::from),
        };
        if let Some(path) = path {
            let path = match flavour {
                Flavour::Full => path,
                Flavour::WithoutSockmap => without_sockmap(&path),
            };
            return std::fs::read(&path)
                .map(Cow::Owned)
                .map_err(|source| Error::ReadObject { path, source });
        }
        let bytes = match flavour {
            Flavour::Full => EMBEDDED,
            Flavour::WithoutSockmap => EMBEDDED_WITHOUT_SOCKMAP,
        };
        if bytes.is_empty() {
            return Err(Error::NoObject);
        }
        Ok(Cow::Borrowed(bytes))
    }
}

/// `dir/nodemesh.bpf.o` -> `dir/nodemesh-nosockmap.bpf.o`.
fn without_sockmap(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(".bpf.o").unwrap_or(&name);
    path.with_file_name(format!("{stem}-nosockmap.bpf.o"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn companion_sits_beside_the_object() {
        assert_eq!(
            without_sockmap(Path::new("/nodemesh/nodemesh.bpf.o")),
            Path::new("/nodemesh/nodemesh-nosockmap.bpf.o")
        );
        assert_eq!(
            without_sockmap(Path::new("target/bpf/broken/nodemesh.bpf.o")),
            Path::new("target/bpf/broken/nodemesh-nosockmap.bpf.o")
        );
    }
}
