//! Noticing changes: file-system notifications, or polling when those are
//! unavailable.

use std::path::Path;

use notify::{PollWatcher, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::{FileSource, FileSourceConfig, FileSourceError};
use crate::publish::Publisher;

/// A running watcher and the channel it signals changes on.
pub(super) struct Events {
    _watcher: Box<dyn Watcher + Send>,
    rx: mpsc::UnboundedReceiver<()>,
}

impl Events {
    pub(super) fn new(config: &FileSourceConfig) -> Result<Self, FileSourceError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let handler = move |res: notify::Result<notify::Event>| match res {
            Ok(event) if event.kind.is_access() => {}
            Ok(_) => {
                let _ = tx.send(());
            }
            Err(error) => tracing::warn!(%error, "file watch error"),
        };
        // A single file is watched through its directory: editors replace
        // files by renaming, which a watch on the file itself would miss.
        let (target, mode) = if config.path.is_dir() {
            (config.path.clone(), RecursiveMode::Recursive)
        } else {
            (
                config
                    .path
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("."))
                    .to_owned(),
                RecursiveMode::NonRecursive,
            )
        };
        let watch_err = |source| FileSourceError::Watch {
            path: config.path.clone(),
            source,
        };
        let notifying = if config.force_poll {
            None
        } else {
            match RecommendedWatcher::new(handler.clone(), notify::Config::default()) {
                Ok(mut w) => match w.watch(&target, mode) {
                    Ok(()) => Some(Box::new(w) as Box<dyn Watcher + Send>),
                    Err(error) => {
                        tracing::warn!(%error, "file notifications unavailable; polling instead");
                        None
                    }
                },
                Err(error) => {
                    tracing::warn!(%error, "file notifications unavailable; polling instead");
                    None
                }
            }
        };
        let watcher = match notifying {
            Some(w) => w,
            None => {
                let mut w = PollWatcher::new(
                    handler,
                    notify::Config::default()
                        .with_poll_interval(config.poll_interval)
                        .with_compare_contents(true),
                )
                .map_err(watch_err)?;
                w.watch(&target, mode).map_err(watch_err)?;
                Box::new(w)
            }
        };
        Ok(Self {
            _watcher: watcher,
            rx,
        })
    }
}

/// Reloads and publishes after each burst of changes, until the watcher stops.
pub(super) async fn run(
    config: FileSourceConfig,
    mut source: FileSource,
    mut publisher: Publisher,
    mut events: Events,
) {
    while events.rx.recv().await.is_some() {
        tokio::time::sleep(config.debounce).await;
        while events.rx.try_recv().is_ok() {}
        match source.reload(publisher.index()) {
            Ok(summary) => {
                let published = publisher.publish();
                tracing::info!(
                    path = %config.path.display(),
                    applied = summary.applied,
                    deleted = summary.deleted,
                    refused = summary.refused,
                    bad_files = summary.bad_files,
                    published,
                    "reloaded cluster objects"
                );
            }
            Err(error) => {
                tracing::warn!(%error, "reload failed; the last good state stays in force")
            }
        }
    }
}
