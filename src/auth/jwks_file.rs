//! `jwks_file` rotation while sessions run: the file's *parent directory* is watched
//! (non-recursive), as routes.yaml and certificates are — a watch on the file itself is lost
//! after the first rename-save, and a Kubernetes ConfigMap only ever changes its `..data` link.
//! Any event there re-reads the file; unchanged bytes cost a read, new bytes that parse replace
//! the route's key set, bytes that do not parse leave the last good set serving (logged once
//! per content). Live sessions are never touched: a new set only changes what new upgrades
//! are checked against.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use notify::{EventKind, RecursiveMode, Watcher};
use tracing::{info, warn};

use super::jwks::KeySet;

/// The watch; dropping it (with the generation's route auth) ends it.
pub struct FileWatch {
    _watcher: notify::RecommendedWatcher,
}

/// The content hash a watch compares (of the bytes a set was parsed from).
pub fn hash(bytes: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// Watches `path` and stores each new good set into `keys`. `loaded` is the [`hash`] of the
/// content the current set came from (so an event for it does not reload it again).
pub fn watch(
    route: String,
    path: PathBuf,
    keys: Arc<ArcSwap<KeySet>>,
    loaded: u64,
) -> Result<FileWatch, notify::Error> {
    let mut last = loaded;
    let origin = path.display().to_string();
    let file = path.clone();
    let handler = move |res: notify::Result<notify::Event>| {
        // Our own reads show up as opens and read-closes: ignore them or we would loop.
        if let Ok(ev) = &res {
            if matches!(ev.kind, EventKind::Access(a) if a != notify::event::AccessKind::Close(notify::event::AccessMode::Write))
            {
                return;
            }
        }
        let Ok(bytes) = std::fs::read(&file) else {
            return; // Mid-rename, or removed: the last good set keeps serving.
        };
        apply(&route, &origin, &bytes, &mut last, &keys);
    };
    let mut watcher = notify::recommended_watcher(handler)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(FileWatch { _watcher: watcher })
}

/// What a re-read did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Unchanged,
    Swapped,
    /// Did not parse: the last good set stays.
    Kept,
}

/// One re-read: new bytes that parse replace the set; others leave it.
pub fn apply(
    route: &str,
    origin: &str,
    bytes: &[u8],
    last: &mut u64,
    keys: &ArcSwap<KeySet>,
) -> Applied {
    let h = hash(bytes);
    if h == *last {
        return Applied::Unchanged;
    }
    *last = h;
    match KeySet::parse(origin, bytes) {
        Ok((set, skipped)) => {
            info!(
                route,
                file = origin,
                keys = set.keys.len(),
                skipped = skipped.len(),
                "JWKS file reloaded"
            );
            keys.store(Arc::new(set));
            Applied::Swapped
        }
        Err(e) => {
            warn!(route, error = %e, "JWKS file unusable: the last good key set keeps serving");
            Applied::Kept
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_file_keeps_the_last_good_set() {
        let keys = ArcSwap::from_pointee(KeySet::default());
        let mut last = 0;
        let good = br#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"a","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;
        assert_eq!(apply("r", "f", good, &mut last, &keys), Applied::Swapped);
        assert_eq!(keys.load().keys.len(), 1);
        assert_eq!(apply("r", "f", good, &mut last, &keys), Applied::Unchanged);
        assert_eq!(
            apply("r", "f", b"{\"keys\": [", &mut last, &keys),
            Applied::Kept
        );
        assert_eq!(keys.load().keys.len(), 1);
        assert_eq!(
            apply("r", "f", br#"{"keys":[]}"#, &mut last, &keys),
            Applied::Swapped
        );
        assert_eq!(keys.load().keys.len(), 0);
    }
}
