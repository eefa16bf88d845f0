//! File mode, the default: cluster objects from a YAML file or a directory
//! of YAML files, exactly as `kubectl get -o yaml` prints them, watched
//! and applied live.
//!
//! Each reload reads every file. A file that cannot be read or is not YAML
//! keeps its last good content; an object that is refused keeps its last
//! good version; objects that disappear from the files are deleted. Only
//! objects whose text changed are decoded and applied again.

#[cfg(test)]
mod tests;
mod tree;
mod watch;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tokio::task::JoinHandle;

use crate::index::Index;
use crate::model::ObjectRef;
use crate::model::decode::{decode_object, object_ref_of};
use crate::publish::{Publisher, StateReceiver};
use crate::rejection::Reason;

pub use tree::FileError;

/// Where to read objects and how to notice changes.
#[derive(Clone, Debug)]
pub struct FileSourceConfig {
    /// A YAML/JSON file, or a directory searched recursively for `*.yaml`,
    /// `*.yml` and `*.json` files.
    pub path: PathBuf,
    /// Quiet time after a change before reloading, so an editor's
    /// multi-step save is read once.
    pub debounce: Duration,
    /// Poll interval when file-system notifications are unavailable (or
    /// `force_poll` is set).
    pub poll_interval: Duration,
    /// Poll even when notifications are available.
    pub force_poll: bool,
}

impl FileSourceConfig {
    /// Defaults for `path`: 100 ms debounce, 500 ms polling fallback.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            debounce: Duration::from_millis(100),
            poll_interval: Duration::from_millis(500),
            force_poll: false,
        }
    }
}

/// Errors that stop file mode from starting.
#[derive(Debug, thiserror::Error)]
pub enum FileSourceError {
    /// The configured path cannot be read.
    #[error("cannot read {path}")]
    Path {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Neither notifications nor polling could be set up.
    #[error("cannot watch {path}")]
    Watch {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: notify::Error,
    },
}

/// The objects of a file tree, fed into an index.
#[derive(Debug)]
pub struct FileSource {
    root: PathBuf,
    /// Last good raw objects of each file.
    files: BTreeMap<PathBuf, Vec<Value>>,
    /// Raw objects in force in the index.
    applied: BTreeMap<ObjectRef, Value>,
    /// Raw objects last refused, so an unchanged bad object is not counted again.
    refused: BTreeMap<ObjectRef, Value>,
}

/// What one reload did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Objects applied.
    pub applied: usize,
    /// Objects deleted.
    pub deleted: usize,
    /// Objects refused.
    pub refused: usize,
    /// Files that could not be used (their last good content stays).
    pub bad_files: usize,
}

impl FileSource {
    /// A source for the tree at `root`; nothing is read yet.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            files: BTreeMap::new(),
            applied: BTreeMap::new(),
            refused: BTreeMap::new(),
        }
    }

    /// The tree's root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Reads every file and brings `index` in line with them.
    pub fn reload(&mut self, index: &mut Index) -> Result<ReloadSummary, FileError> {
        let mut summary = ReloadSummary::default();
        let paths = tree::list(&self.root)?;
        let mut desired: BTreeMap<ObjectRef, Value> = BTreeMap::new();
        let mut files = BTreeMap::new();
        for path in paths {
            let values = match tree::read(&path) {
                Ok(v) => v,
                Err(e) => {
                    summary.bad_files += 1;
                    tracing::warn!(error = %e, path = %path.display(), "keeping the last good content of the file");
                    self.files.get(&path).cloned().unwrap_or_default()
                }
            };
            for v in &values {
                if let Some(r) = object_ref_of(v)
                    && let Some(_dup) = desired.insert(r.clone(), v.clone())
                {
                    tracing::warn!(object = %r, path = %path.display(), "object defined more than once; the last definition wins");
                }
            }
            files.insert(path, values);
        }
        self.files = files;

        let gone: Vec<ObjectRef> = self
            .applied
            .keys()
            .filter(|r| !desired.contains_key(*r))
            .cloned()
            .collect();
        for r in gone {
            index.delete(&r);
            self.applied.remove(&r);
            summary.deleted += 1;
        }
        self.refused.retain(|r, _| desired.contains_key(r));
        // ObjectRef orders by kind first, so this applies in dependency order.
        for (r, v) in desired {
            if self.applied.get(&r) == Some(&v) || self.refused.get(&r) == Some(&v) {
                continue;
            }
            let outcome = match decode_object(v.clone()) {
                Some(Ok(object)) => index.apply(object),
                Some(Err(rejection)) => {
                    index.record_rejection(&rejection);
                    Err(rejection)
                }
                None => continue,
            };
            match outcome {
                Ok(()) => {
                    summary.applied += 1;
                    self.refused.remove(&r);
                    self.applied.insert(r, v);
                }
                // The index holds the object and applies it when the Service appears.
                Err(rej) if matches!(rej.reason, Reason::MissingService(_)) => {
                    summary.refused += 1;
                    self.applied.insert(r, v);
                }
                Err(_) => {
                    summary.refused += 1;
                    self.refused.insert(r, v);
                }
            }
        }
        Ok(summary)
    }

    /// Loads the tree into `index`, publishes the first state, and keeps
    /// watching: every change is applied and published within about
    /// `debounce` (notifications) or `poll_interval` (polling). Must be
    /// called within a Tokio runtime.
    pub fn start(
        config: FileSourceConfig,
        index: Index,
    ) -> Result<(StateReceiver, JoinHandle<()>), FileSourceError> {
        std::fs::metadata(&config.path).map_err(|source| FileSourceError::Path {
            path: config.path.clone(),
            source,
        })?;
        let mut source = FileSource::new(&config.path);
        let (mut publisher, rx) = Publisher::new(index);
        match source.reload(publisher.index()) {
            Ok(s) => {
                tracing::info!(path = %config.path.display(), applied = s.applied, refused = s.refused, "loaded cluster objects")
            }
            Err(e) => tracing::warn!(error = %e, "initial load failed; waiting for changes"),
        }
        publisher.publish();
        let events = watch::Events::new(&config)?;
        let task = tokio::spawn(watch::run(config, source, publisher, events));
        Ok((rx, task))
    }
}
