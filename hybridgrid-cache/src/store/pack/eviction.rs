//! Eviction: which segments are in the oldest quarter, and deleting the oldest
//! down to the low-water mark.

use std::fs;
use std::io;
use std::sync::MutexGuard;

use crate::store::disk::LOW_WATER;

use super::*;

impl State {
    /// Recomputes which segments are in the oldest quarter of the bytes.
    pub(super) fn mark_old(&mut self) {
        let quarter = self.total / 4;
        let mut before = 0;
        self.old_below = 0;
        for (&id, s) in &self.segments {
            if Some(id) == self.current || before >= quarter {
                break;
            }
            self.old_below = id + 1;
            before += s.len;
        }
    }

    pub(super) fn remove_key(&mut self, prefix: u64) {
        self.index.remove(&prefix);
        if let Load::Unloaded(removed) | Load::Loading(removed) = &mut self.load {
            removed.insert(prefix);
        }
    }
}

impl Inner {
    /// Deletes the oldest segments (never the current one) down to 90% of
    /// the limit; returns the entries that went with them.
    pub(super) fn evict(&self, mut st: MutexGuard<'_, State>) -> u64 {
        let target = (self.max_bytes as f64 * LOW_WATER) as u64;
        let mut gone = Vec::new();
        while st.total > target {
            let Some((&id, _)) = st.segments.iter().next() else {
                break;
            };
            if Some(id) == st.current {
                break;
            }
            if let Some(s) = st.segments.remove(&id) {
                st.total -= s.len;
                gone.push((id, s.len));
            }
        }
        let Some(&(last, _)) = gone.last() else {
            return 0;
        };
        let before = st.index.len();
        st.index.retain(|_, loc| loc.segment > last);
        let evicted = (before - st.index.len()) as u64;
        st.mark_old();
        let size = st.total;
        drop(st);
        let mut freed = 0;
        for (id, len) in &gone {
            let path = self.segment_path(*id);
            if let Err(e) = fs::remove_file(&path)
                && e.kind() != io::ErrorKind::NotFound
            {
                self.io_failure("evict", &path, &e);
            }
            freed += len;
        }
        tracing::debug!(
            segments = gone.len(),
            evicted,
            freed_bytes = freed,
            size_bytes = size,
            "cache evicted"
        );
        evicted
    }
}
