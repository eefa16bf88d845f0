//! Listing and reading the files of a tree.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::model::decode::{SyntaxError, yaml_values};

/// A file or directory that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Reading failed.
    #[error("cannot read {path}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The content is not YAML.
    #[error("{path} is not valid YAML")]
    Syntax {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: SyntaxError,
    },
}

fn is_manifest(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'));
    !hidden
        && matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        )
}

/// The manifest files of `root` (itself, if it is a file), sorted.
pub(super) fn list(root: &Path) -> Result<Vec<PathBuf>, FileError> {
    let io = |source| FileError::Io {
        path: root.to_owned(),
        source,
    };
    let meta = std::fs::metadata(root).map_err(io)?;
    if !meta.is_dir() {
        return Ok(vec![root.to_owned()]);
    }
    let mut out = Vec::new();
    let mut dirs = vec![root.to_owned()];
    while let Some(dir) = dirs.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|source| FileError::Io {
            path: dir.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| FileError::Io {
                path: dir.clone(),
                source,
            })?;
            let path = entry.path();
            let hidden = entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with('.'));
            if path.is_dir() {
                if !hidden {
                    dirs.push(path);
                }
            } else if is_manifest(&path) {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The raw objects of one file.
pub(super) fn read(path: &Path) -> Result<Vec<Value>, FileError> {
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Io {
        path: path.to_owned(),
        source,
    })?;
    yaml_values(&text).map_err(|source| FileError::Syntax {
        path: path.to_owned(),
        source,
    })
}
