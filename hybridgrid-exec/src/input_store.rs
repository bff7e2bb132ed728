//! A worker's store of the files compiles from source read, by content.
//!
//! A compile with debug info ships every project header it includes
//! ([`crate::source_tree`]). The worker keeps each file it receives here,
//! named by its digest (BLAKE3), so that a later compile can send the same
//! header by digest only; the task tree gets it by hard link, not by writing
//! it again.
//!
//! - Size-bounded: past `max_bytes` the least recently used files go.
//! - Checked on read: a file's content is hashed before it is linked into a
//!   task, and one that no longer matches its name is removed (a compile
//!   could have written through its own link) and reported as missing.
//! - Kept across restarts: the directory (`hg-inputs-N` beside the task
//!   directories) stays when the worker stops; the next worker to claim it
//!   indexes what is there, the oldest modification time first to go.
//! - One worker at a time: a lock file, held while the store is open.
//!
//! ```
//! use hybridgrid_exec::input_store::InputStore;
//!
//! let parent = tempfile::tempdir().unwrap();
//! let store = InputStore::claim(parent.path(), 1 << 20).unwrap();
//! let digest = hybridgrid_core::task::SourceFile::digest_of(b"int x;");
//! store.insert(digest, b"int x;").unwrap();
//! let dest = parent.path().join("x.h");
//! assert!(store.link_to(&digest, &dest).unwrap());
//! assert_eq!(std::fs::read(&dest).unwrap(), b"int x;");
//! ```

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use nix::fcntl::Flock;

/// The prefix of a store directory's name.
pub const PREFIX: &str = "hg-inputs-";
/// The file that holds a store's lock.
const LOCK_FILE: &str = ".lock";
/// How many store directories one parent may hold (one per worker).
const MAX_STORES: usize = 64;

/// A digest: the BLAKE3 hash of a file's content.
pub type Digest = [u8; 32];

/// A worker's input store (see the module docs).
#[derive(Debug)]
pub struct InputStore {
    dir: PathBuf,
    max_bytes: u64,
    state: Mutex<State>,
    /// Whether a failure to store was logged (once per store).
    warned: std::sync::atomic::AtomicBool,
    _lock: Flock<File>,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<Digest, Entry>,
    total: u64,
    clock: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    size: u64,
    used: u64,
}

/// The digest of `content`: the one a compile's files carry.
fn digest_of(content: &[u8]) -> Digest {
    hybridgrid_core::task::SourceFile::digest_of(content)
}

impl InputStore {
    /// Claims the first store directory in `parent` that no running worker
    /// holds (`hg-inputs-0`, `hg-inputs-1`...), creating it if needed, and
    /// indexes the files already in it. Holds at most `max_bytes`.
    pub fn claim(parent: &Path, max_bytes: u64) -> std::io::Result<InputStore> {
        std::fs::create_dir_all(parent)?;
        let mut last = None;
        for n in 0..MAX_STORES {
            let dir = parent.join(format!("{PREFIX}{n}"));
            match Self::open(&dir, max_bytes) {
                Ok(s) => return Ok(s),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no store directory is free")))
    }

    /// Opens the store in `dir` (created if missing). Fails with
    /// `WouldBlock` when another process holds it.
    pub fn open(dir: &Path, max_bytes: u64) -> std::io::Result<InputStore> {
        std::fs::create_dir_all(dir)?;
        let lock = crate::work_dir::lock(File::create(dir.join(LOCK_FILE))?)?;
        let store = InputStore {
            dir: dir.to_path_buf(),
            max_bytes,
            state: Mutex::new(State::default()),
            warned: Default::default(),
            _lock: lock,
        };
        store.index()?;
        Ok(store)
    }

    /// Reads what the directory holds: oldest modification first, so the
    /// least recently used before the restart go first after it.
    fn index(&self) -> std::io::Result<()> {
        let mut found: Vec<(SystemTime, Digest, u64)> = Vec::new();
        for shard in std::fs::read_dir(&self.dir)?.flatten() {
            if !shard.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            for f in std::fs::read_dir(shard.path())?.flatten() {
                let name = f.file_name();
                let Some(d) = name.to_str().and_then(hybridgrid_core::hex::decode) else {
                    // A temporary file of a write that was cut short.
                    let _ = std::fs::remove_file(f.path());
                    continue;
                };
                if let Ok(m) = f.metadata() {
                    found.push((m.modified().unwrap_or(SystemTime::UNIX_EPOCH), d, m.len()));
                }
            }
        }
        found.sort();
        let mut st = self.lock_state();
        for (_, d, size) in found {
            st.clock += 1;
            let used = st.clock;
            st.total += size;
            st.entries.insert(d, Entry { size, used });
        }
        drop(st);
        self.evict();
        Ok(())
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn path_of(&self, d: &Digest) -> PathBuf {
        let h = hybridgrid_core::hex::encode(d);
        self.dir.join(&h[..2]).join(h)
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How many files it holds, and their bytes.
    pub fn usage(&self) -> (usize, u64) {
        let st = self.lock_state();
        (st.entries.len(), st.total)
    }

    /// Whether it holds the file with digest `d` (not checked).
    pub fn contains(&self, d: &Digest) -> bool {
        self.lock_state().entries.contains_key(d)
    }

    /// Stores `content` under `digest`. Content that does not hash to
    /// `digest` is refused (`InvalidData`) and nothing is stored. A file
    /// larger than the whole store is not kept.
    pub fn insert(&self, digest: Digest, content: &[u8]) -> std::io::Result<()> {
        if digest_of(content) != digest {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the content does not match its digest",
            ));
        }
        let size = content.len() as u64;
        if self.contains(&digest) || size > self.max_bytes {
            return Ok(());
        }
        let path = self.path_of(&digest);
        let shard = path.parent().unwrap_or(&self.dir);
        std::fs::create_dir_all(shard)?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(shard)?;
        tmp.write_all(content)?;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o444))?;
        tmp.persist(&path).map_err(|e| e.error)?;
        {
            let mut st = self.lock_state();
            st.clock += 1;
            let used = st.clock;
            if st.entries.insert(digest, Entry { size, used }).is_none() {
                st.total += size;
            }
        }
        self.evict();
        Ok(())
    }

    /// Stores `content` (which must hash to `digest`) and puts it at
    /// `dest`, linked to the stored file. When the store cannot take it
    /// (full disk, unwritable), the file is written to `dest` directly and
    /// the first such failure is logged.
    pub fn put(&self, digest: Digest, content: &[u8], dest: &Path) -> std::io::Result<()> {
        match self.insert(digest, content) {
            Ok(()) if std::fs::hard_link(self.path_of(&digest), dest).is_ok() => return Ok(()),
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => return Err(e),
            Err(e) => {
                if !self.warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    tracing::warn!(
                        dir = %self.dir.display(),
                        error = %e,
                        "input store: cannot store a compile's file; such files are written \
                         per compile instead (said once)"
                    );
                }
            }
        }
        std::fs::write(dest, content)
    }

    /// Puts the file with digest `d` at `dest` (a hard link, or a copy
    /// across file systems) after checking that its content still hashes
    /// to `d`. `Ok(false)`: the store does not have it (any more).
    pub fn link_to(&self, d: &Digest, dest: &Path) -> std::io::Result<bool> {
        {
            let mut st = self.lock_state();
            st.clock += 1;
            let now = st.clock;
            match st.entries.get_mut(d) {
                Some(e) => e.used = now,
                None => return Ok(false),
            }
        }
        let path = self.path_of(d);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.forget(d);
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        let mut content = Vec::new();
        file.read_to_end(&mut content)?;
        if digest_of(&content) != *d {
            tracing::warn!(
                file = %path.display(),
                "input store: a file no longer matches its digest; removed"
            );
            let _ = std::fs::remove_file(&path);
            self.forget(d);
            return Ok(false);
        }
        if std::fs::hard_link(&path, dest).is_err() {
            std::fs::write(dest, &content)?;
        }
        // The order survives a restart: the newest use is the newest time.
        let _ = file.set_modified(SystemTime::now());
        Ok(true)
    }

    fn forget(&self, d: &Digest) {
        let mut st = self.lock_state();
        if let Some(e) = st.entries.remove(d) {
            st.total -= e.size;
        }
    }

    /// Removes the least recently used files until the store fits.
    fn evict(&self) {
        loop {
            let victim = {
                let mut st = self.lock_state();
                if st.total <= self.max_bytes {
                    return;
                }
                let Some((d, e)) = st
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.used)
                    .map(|(d, e)| (*d, *e))
                else {
                    return;
                };
                st.entries.remove(&d);
                st.total -= e.size;
                d
            };
            let _ = std::fs::remove_file(self.path_of(&victim));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(b: &[u8]) -> Digest {
        digest_of(b)
    }

    #[test]
    fn stores_links_and_refuses_content_that_does_not_match() {
        let parent = tempfile::tempdir().expect("tempdir");
        let s = InputStore::claim(parent.path(), 1 << 20).expect("claim");
        let d = digest(b"int a;");
        let e = s.insert(d, b"int b;").expect_err("mismatch");
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        assert_eq!(s.usage(), (0, 0), "nothing stored");
        s.insert(d, b"int a;").expect("insert");
        s.insert(d, b"int a;").expect("again");
        assert_eq!(s.usage(), (1, 6));
        let dest = parent.path().join("a.h");
        assert!(s.link_to(&d, &dest).expect("link"));
        assert_eq!(std::fs::read(&dest).expect("read"), b"int a;");
        assert!(
            !s.link_to(&digest(b"other"), &parent.path().join("b.h"))
                .expect("link")
        );
    }

    #[test]
    fn least_recently_used_files_go_first() {
        let parent = tempfile::tempdir().expect("tempdir");
        let s = InputStore::claim(parent.path(), 20).expect("claim");
        let (a, b, c) = (b"aaaaaaaaaa", b"bbbbbbbbbb", b"cccccccccc");
        s.insert(digest(a), a).expect("a");
        s.insert(digest(b), b).expect("b");
        // Using `a` makes `b` the oldest.
        assert!(
            s.link_to(&digest(a), &parent.path().join("a"))
                .expect("link")
        );
        s.insert(digest(c), c).expect("c");
        assert!(s.contains(&digest(a)) && s.contains(&digest(c)));
        assert!(!s.contains(&digest(b)));
        assert_eq!(s.usage(), (2, 20));
        // Larger than the whole store: not kept, and nothing evicted.
        let big = [7u8; 21];
        s.insert(digest(&big), &big).expect("big");
        assert_eq!(s.usage(), (2, 20));
    }

    #[test]
    fn a_changed_file_is_removed_not_served() {
        let parent = tempfile::tempdir().expect("tempdir");
        let s = InputStore::claim(parent.path(), 1 << 20).expect("claim");
        let d = digest(b"int a;");
        s.insert(d, b"int a;").expect("insert");
        // A compile wrote through its link.
        let dest = parent.path().join("a.h");
        assert!(s.link_to(&d, &dest).expect("link"));
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        std::fs::write(&dest, b"int evil;").expect("write");
        assert!(!s.link_to(&d, &parent.path().join("b.h")).expect("link"));
        assert!(!parent.path().join("b.h").exists());
        assert_eq!(s.usage(), (0, 0));
    }

    #[test]
    fn the_store_survives_a_restart_and_is_one_workers_at_a_time() {
        let parent = tempfile::tempdir().expect("tempdir");
        let d = digest(b"int a;");
        let dir = {
            let s = InputStore::claim(parent.path(), 1 << 20).expect("claim");
            s.insert(d, b"int a;").expect("insert");
            // A second worker in the same parent gets a store of its own.
            let other = InputStore::claim(parent.path(), 1 << 20).expect("claim");
            assert_ne!(other.dir(), s.dir());
            let e = InputStore::open(s.dir(), 1 << 20).expect_err("held");
            assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
            s.dir().to_path_buf()
        };
        // A write cut short leaves a temporary file: dropped on restart.
        std::fs::write(dir.join(".tmp-cut"), b"x").expect("write");
        let again = InputStore::claim(parent.path(), 1 << 20).expect("claim");
        assert_eq!(again.dir(), dir);
        assert_eq!(again.usage(), (1, 6));
        assert!(again.link_to(&d, &parent.path().join("a.h")).expect("link"));
    }

    #[test]
    fn a_store_that_cannot_write_still_places_the_file_and_says_so_once() {
        let parent = tempfile::tempdir().expect("tempdir");
        let s = InputStore::claim(parent.path(), 1 << 20).expect("claim");
        let d = digest(b"int a;");
        // The shard directory cannot be made: a file is in its place.
        std::fs::write(s.dir().join(&hybridgrid_core::hex::encode(&d)[..2]), b"").expect("write");
        let dest = parent.path().join("a.h");
        s.put(d, b"int a;", &dest).expect("put");
        assert_eq!(std::fs::read(&dest).expect("read"), b"int a;");
        assert_eq!(s.usage(), (0, 0));
        assert!(s.warned.load(std::sync::atomic::Ordering::Relaxed));
        // Content that does not match is still refused.
        let e = s
            .put(d, b"int b;", &parent.path().join("b.h"))
            .expect_err("mismatch");
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    }

    #[test]
    fn concurrent_inserts_and_links_of_one_file_agree() {
        let parent = tempfile::tempdir().expect("tempdir");
        let s = std::sync::Arc::new(InputStore::claim(parent.path(), 1 << 20).expect("claim"));
        let content = vec![b'x'; 100_000];
        let d = digest(&content);
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let (s, content) = (s.clone(), content.clone());
                let dest = parent.path().join(format!("t{i}"));
                std::thread::spawn(move || {
                    s.insert(d, &content).expect("insert");
                    assert!(s.link_to(&d, &dest).expect("link"));
                    assert_eq!(std::fs::read(&dest).expect("read"), content);
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(s.usage(), (1, 100_000));
    }
}
