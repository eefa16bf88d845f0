//! Where the BPF object comes from.

use std::borrow::Cow;
use std::path::PathBuf;

use super::Error;

/// The object embedded at build time (see `agent/build.rs`).
static EMBEDDED: &[u8] = aya::include_bytes_aligned!(env!("NODEMESH_EBPF_OBJECT"));

/// Environment variable naming an object file to load instead of the embedded one.
pub const OBJECT_ENV: &str = "NODEMESH_BPF_OBJECT";

/// Which BPF object to load.
#[derive(Clone, Debug, Default)]
pub enum ObjectSource {
    /// The object embedded in this binary, unless `NODEMESH_BPF_OBJECT` names another.
    #[default]
    Embedded,
    /// An object file on disk.
    File(PathBuf),
}

impl ObjectSource {
    /// The object's bytes.
    pub(crate) fn bytes(&self) -> Result<Cow<'static, [u8]>, Error> {
        let path = match self {
            ObjectSource::File(p) => Some(p.clone()),
            ObjectSource::Embedded => std::env::var_os(OBJECT_ENV).map(PathBuf::from),
        };
        if let Some(path) = path {
            return std::fs::read(&path)
                .map(Cow::Owned)
                .map_err(|source| Error::ReadObject { path, source });
        }
        if EMBEDDED.is_empty() {
            return Err(Error::NoObject);
        }
        Ok(Cow::Borrowed(EMBEDDED))
    }
}
