//! Loading the index from the segments (in the background), and importing the
//! entries of the one-file-per-entry layout.

use std::fs::{self, File};
use std::sync::Arc;

use bytes::Bytes;

use crate::entry::CacheEntry;
use crate::key::CacheKey;
use crate::store::disk::{DiskStore, is_lower_hex, key_of_name, key_prefix};
use crate::store::stats::{Delta, TMP_PREFIX};

use super::record::scan_segment;
use super::*;

impl PackStore {
    /// Loads the index from the segments on a thread of its own (then
    /// imports old-layout entries); see [`Self::load_index`].
    pub fn load_in_background(&self) {
        if self.is_off() {
            return;
        }
        let this = self.clone();
        let spawned = std::thread::Builder::new()
            .name("hg-cache-index".into())
            .spawn(move || this.load_index());
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the cache index thread; loading it here");
            self.load_index();
        }
    }

    /// Scans the headers of the segments that existed when the store was
    /// opened and merges them into the index (entries written since win),
    /// truncating torn tails; then imports entries of the one-file-per-
    /// entry layout. Blocking; returns the entries indexed. Does nothing if
    /// the index is loaded or loading.
    pub fn load_index(&self) -> usize {
        let inner = &self.inner;
        if self.is_off() {
            return 0;
        }
        let todo: Vec<(u32, Arc<File>, u64)> = {
            let mut st = lock(&inner.state);
            match &mut st.load {
                Load::Unloaded(removed) => {
                    let removed = std::mem::take(removed);
                    st.load = Load::Loading(removed);
                }
                Load::Loading(_) => return 0,
                Load::Ready => return st.index.len(),
            }
            st.segments
                .range(..inner.first_new)
                .map(|(&id, s)| (id, s.file.clone(), s.len))
                .collect()
        };
        let mut found = Index::default();
        for (id, file, len) in todo {
            let scan = scan_segment(&file, len);
            for (h, off) in &scan.records {
                let prefix = key_prefix(&CacheKey::from_bytes(h.key));
                match (h.kind, u32::try_from(*off)) {
                    (KIND_ENTRY, Ok(offset)) => {
                        found.insert(
                            prefix,
                            Loc {
                                segment: id,
                                offset,
                                len: h.len,
                            },
                        );
                    }
                    _ => {
                        found.remove(&prefix);
                    }
                }
            }
            let path = inner.segment_path(id);
            if scan.skipped > 0 {
                tracing::warn!(segment = %path.display(), skipped_bytes = scan.skipped,
                    "corrupt records skipped in a cache pack");
            }
            if scan.good_end < len {
                tracing::warn!(segment = %path.display(), kept_bytes = scan.good_end,
                    dropped_bytes = len - scan.good_end,
                    "cache pack truncated after its last whole record (an interrupted write)");
                if let Err(e) = file.set_len(scan.good_end) {
                    inner.io_failure("truncate", &path, &e);
                }
                let mut guard = lock(&inner.state);
                let st = &mut *guard;
                if let Some(s) = st.segments.get_mut(&id) {
                    st.total -= s.len - scan.good_end;
                    s.len = scan.good_end;
                }
            }
        }
        {
            let mut st = lock(&inner.state);
            let removed = match std::mem::replace(&mut st.load, Load::Ready) {
                Load::Loading(r) | Load::Unloaded(r) => r,
                Load::Ready => Removed::default(),
            };
            let live = std::mem::take(&mut st.index);
            let segments = &st.segments;
            found.retain(|k, loc| segments.contains_key(&loc.segment) && !removed.contains(k));
            // Written since the start: newer.
            found.extend(live);
            st.index = found;
            st.mark_old();
        }
        let imported = self.import_old_layout();
        let (n, total) = {
            let st = lock(&inner.state);
            (st.index.len(), st.total)
        };
        inner.update(Delta::default(), true);
        tracing::debug!(dir = %inner.dir.display(), entries = n, size_bytes = total, imported,
            "cache index loaded");
        n
    }

    /// Imports the entries of the one-file-per-entry layout in the
    /// directory, oldest first, and removes their files; returns how many.
    fn import_old_layout(&self) -> usize {
        let inner = &self.inner;
        let old = DiskStore::new(&inner.dir, u64::MAX);
        let mut files = old.scan();
        if files.is_empty() {
            return 0;
        }
        files.sort_by_key(|f| f.mtime);
        let mut imported = 0;
        for f in &files {
            let Some(name) = f.path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            // Direct-mode manifests (`.m`) have no place here: dropped.
            if let Some(key) = key_of_name(name) {
                let data = match fs::read(&f.path) {
                    Ok(d) => Bytes::from(d),
                    Err(e) => {
                        inner.io_failure("import", &f.path, &e);
                        continue;
                    }
                };
                let known = lock(&inner.state).index.contains_key(&key_prefix(&key));
                if !known && CacheEntry::decode_bytes(data.clone()).is_ok() {
                    if !self.put_encoded(&key, &data).stored {
                        // Full disk or similar: keep the rest for the
                        // next start.
                        break;
                    }
                    imported += 1;
                }
            }
            let _ = fs::remove_file(&f.path);
        }
        // Temporary files of the old layout, then its empty directories.
        if let Ok(shards) = fs::read_dir(&inner.dir) {
            for shard in shards.flatten() {
                let name = shard.file_name();
                let Some(name) = name.to_str() else { continue };
                if name.len() != 2 || !name.bytes().all(is_lower_hex) {
                    continue;
                }
                if let Ok(files) = fs::read_dir(shard.path()) {
                    for f in files.flatten() {
                        if f.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                            let _ = fs::remove_file(f.path());
                        }
                    }
                }
                let _ = fs::remove_dir(shard.path());
            }
        }
        for name in ["evict.lock", "stats.lock"] {
            let _ = fs::remove_file(inner.dir.join(name));
        }
        tracing::info!(dir = %inner.dir.display(), imported, files = files.len(),
            "cache entries of the one-file-per-entry layout moved into packs");
        imported
    }
}
