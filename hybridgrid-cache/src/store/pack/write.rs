//! Appends: entries and tombstones, and starting a new segment when the current
//! one is full.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use crate::entry::CacheEntry;
use crate::key::CacheKey;
use crate::store::PutOutcome;
use crate::store::disk::key_prefix;
use crate::store::stats::Delta;

use super::record::record;
use super::*;

impl PackStore {
    /// Stores an already encoded entry ([`CacheEntry::encode`]) under
    /// `key`, blocking the thread on file I/O.
    pub fn put_encoded(&self, key: &CacheKey, data: &[u8]) -> PutOutcome {
        let inner = &self.inner;
        if self.is_off() || data.len() as u64 > inner.max_bytes {
            return PutOutcome::default();
        }
        let Some(rec) = record(key, KIND_ENTRY, data) else {
            return PutOutcome::default();
        };
        let appended = {
            let _append = lock(&inner.append);
            inner.append_locked(key_prefix(key), &rec, true)
        };
        match appended {
            Ok(evicted) => {
                let (size_bytes, _) = inner.update(
                    Delta {
                        evictions: evicted,
                        ..Delta::default()
                    },
                    false,
                );
                PutOutcome {
                    stored: true,
                    evicted,
                    size_bytes,
                }
            }
            Err(e) => {
                inner.write_failed(&e);
                PutOutcome::default()
            }
        }
    }

    /// Stores `entry` under `key`, blocking the thread on file I/O.
    pub fn put_blocking(&self, key: &CacheKey, entry: &CacheEntry) -> PutOutcome {
        self.put_encoded(key, &entry.encode())
    }

    /// Removes the entry for `key` (appends a tombstone), blocking; true if
    /// the index had it.
    pub fn remove_blocking(&self, key: &CacheKey) -> bool {
        if self.is_off() {
            return false;
        }
        let _append = lock(&self.inner.append);
        let (had, ready) = {
            let st = lock(&self.inner.state);
            (
                st.index.contains_key(&key_prefix(key)),
                matches!(st.load, Load::Ready),
            )
        };
        // Before the index is loaded the key may be in an older segment.
        if had || !ready {
            self.append_tombstone(key);
        }
        had
    }

    /// Appends a tombstone for `key` (taking it out of the index); the
    /// caller holds the append lock.
    pub(super) fn append_tombstone(&self, key: &CacheKey) {
        let Some(rec) = record(key, KIND_TOMBSTONE, &[]) else {
            return;
        };
        if let Err(e) = self.inner.append_locked(key_prefix(key), &rec, false) {
            // At least out of this run's index.
            self.inner.state_remove(key_prefix(key));
            self.inner.write_failed(&e);
        }
    }
}

impl Inner {
    /// Appends `rec` (a whole record) for the key `prefix`: an entry goes
    /// into the index, a tombstone takes the key out. The caller holds
    /// the append lock. Returns the entries evicted.
    pub(super) fn append_locked(&self, prefix: u64, rec: &[u8], entry: bool) -> io::Result<u64> {
        let rec_len = rec.len() as u64;
        let current = {
            let st = lock(&self.state);
            st.current
                .and_then(|id| st.segments.get(&id).map(|s| (id, s.file.clone(), s.len)))
                .filter(|(_, _, len)| *len == 0 || len + rec_len <= self.segment_max)
        };
        let (id, file, offset) = match current {
            Some(c) => c,
            None => self.new_segment()?,
        };
        let at = u32::try_from(offset)
            .map_err(|_| io::Error::other("pack segment offset out of range"))?;
        let len = u32::try_from(rec_len - HEADER_LEN as u64)
            .map_err(|_| io::Error::other("cache entry too large"))?;
        if let Err(e) = file.write_all_at(rec, offset) {
            // Best effort: no partial record left behind.
            let _ = file.set_len(offset);
            return Err(e);
        }
        let mut st = lock(&self.state);
        if let Some(s) = st.segments.get_mut(&id) {
            s.len = offset + rec_len;
        }
        st.total += rec_len;
        if entry {
            st.index.insert(
                prefix,
                Loc {
                    segment: id,
                    offset: at,
                    len,
                },
            );
        } else {
            st.remove_key(prefix);
        }
        if st.total <= self.max_bytes {
            return Ok(0);
        }
        Ok(self.evict(st))
    }

    /// Starts a new segment and makes it the current one.
    fn new_segment(&self) -> io::Result<(u32, Arc<File>, u64)> {
        let id = lock(&self.state).next_id;
        let path = self.segment_path(id);
        let file = Arc::new(
            File::options()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)?,
        );
        let mut st = lock(&self.state);
        st.next_id = id + 1;
        st.segments.insert(
            id,
            Segment {
                file: file.clone(),
                len: 0,
            },
        );
        st.current = Some(id);
        st.mark_old();
        Ok((id, file, 0))
    }
}
