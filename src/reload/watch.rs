//! The config file watch: the file's *directory* (non-recursive) is watched, so rename-saves,
//! `mv` and Kubernetes `..data` swaps are all seen (a watch on the file itself is lost at the
//! first rename-save, and a ConfigMap never touches the file's own name). Any change there
//! re-reads the file once it has been unchanged for `reload.settle`; new bytes are reloaded.
//! `reload.watch: false` ignores the events (SIGHUP and `POST /reload` still reload). Both
//! settings are read from the running config at each event, so a reload changes them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use notify::event::{AccessKind, AccessMode};
use notify::EventKind;
use tracing::info;

use super::{reload_file, Wait};
use crate::shared::Shared;

/// Watches the config file's directory until shutdown; see the module docs.
pub fn watch(shared: &Arc<Shared>) -> Result<(), notify::Error> {
    use notify::{RecursiveMode, Watcher};
    let path = shared.config_path.clone();
    let dir = watched_dir(&path);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        // Reads are not changes, and every re-read of ours opens the file: waking on them
        // would re-read it forever. An error (a lost event, say) wakes: a re-read is cheap.
        if res.as_ref().is_ok_and(|ev| is_read(&ev.kind)) {
            return;
        }
        // A full channel already holds a wake-up: nothing is lost by dropping this one.
        let _ = tx.try_send(());
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    let shared2 = shared.clone();
    let mut last = file_hash(&path);
    shared.tasks.spawn(async move {
        let _watcher = watcher; // dropped (and unwatched) when this task ends
        loop {
            tokio::select! {
                _ = shared2.stop_accepting.cancelled() => break,
                got = rx.recv() => if got.is_none() { break },
            }
            let settings = shared2.snapshot.load().config.reload.clone();
            if !settings.watch {
                continue;
            }
            if !settled(&shared2, &path, &mut rx, settings.settle).await {
                break;
            }
            // Unreadable mid-swap: a later event re-reads it.
            let Some(now) = file_hash(&path) else {
                continue;
            };
            if Some(now) == last {
                continue;
            }
            last = Some(now);
            let _ = reload_file(&shared2, "file", Wait::Queue).await;
        }
    });
    info!(dir = %dir.display(), "watching the config directory");
    Ok(())
}

/// Waits until the file has been unchanged for `settle`: no event in its directory, and the
/// same size, modification time and inode before and after (a writer that pauses between
/// two halves for less than `settle` is waited for). `false` at shutdown.
async fn settled(
    shared: &Shared,
    path: &Path,
    rx: &mut tokio::sync::mpsc::Receiver<()>,
    settle: Duration,
) -> bool {
    loop {
        let before = stat(path);
        // Every event restarts the wait: `sleep` is made anew at each turn.
        loop {
            tokio::select! {
                _ = shared.stop_accepting.cancelled() => return false,
                _ = tokio::time::sleep(settle) => break,
                got = rx.recv() => if got.is_none() { return false },
            }
        }
        if stat(path) == before {
            return true;
        }
    }
}

/// What tells a changed file apart without reading it (a `stat` makes no watch event).
fn stat(path: &Path) -> Option<(u64, Option<SystemTime>, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok(), m.ino()))
}

/// Opens, reads and read-only closes: what our own re-reads (and anyone's) produce.
fn is_read(kind: &EventKind) -> bool {
    matches!(kind, EventKind::Access(a) if *a != AccessKind::Close(AccessMode::Write))
}

fn watched_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// FNV-1a of the file's bytes; `None` when unreadable (mid-swap): a later event re-reads it.
fn file_hash(path: &Path) -> Option<u64> {
    std::fs::read(path)
        .ok()
        .map(|b| crate::balance::key::hash_key(&b))
}
