//! Where a worker writes its task directories.
//!
//! Every compile gets a fresh directory for its inputs and outputs; a compile
//! with debug info (compiled from source) writes every header it read into
//! it, dozens of small files created and removed per compile. On a disk file
//! system, allocating and freeing their inodes was the largest cost a `-g`
//! build paid on the worker, so by default the task directories go to a
//! tmpfs (`/dev/shm`) when it has room, else to the system's temporary
//! directory (`TMPDIR`, when set, is always honoured).
//!
//! A worker claims a directory of its own, `hg-worker-XXXXXX`, in that
//! parent and holds a lock on it while it runs. At start it removes the
//! directories that earlier workers left behind when they were killed
//! (those whose lock nobody holds); a live worker's directory is never
//! touched. The directory is removed when the [`WorkDir`] is dropped.

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// Least free space on a tmpfs for task directories to go there.
pub const MIN_TMPFS_FREE: u64 = 1 << 30;

/// The file that holds a worker directory's lock.
const LOCK_FILE: &str = ".lock";
/// The prefix of a worker directory's name.
const PREFIX: &str = "hg-worker-";

/// A worker's claimed directory for task directories (removed on drop).
#[derive(Debug)]
pub struct WorkDir {
    path: PathBuf,
    why: String,
    // Held for the worker's life: an unlocked directory is a dead worker's.
    _lock: Flock<File>,
}

/// Why a work directory could not be claimed.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot use {dir} for task directories: {source} (set worker.work_dir to a writable directory, or leave it empty for the default)"
)]
pub struct WorkDirError {
    /// The parent directory that was tried.
    pub dir: PathBuf,
    /// What failed.
    #[source]
    pub source: std::io::Error,
}

impl WorkDir {
    /// Claims a new directory in `configured` (created if missing), or in
    /// the default parent (see [`default_parent`]) when it is `None`, after
    /// removing dead workers' directories there.
    pub fn claim(configured: Option<&Path>) -> Result<WorkDir, WorkDirError> {
        let (parent, why) = match configured {
            Some(p) => (p.to_path_buf(), "worker.work_dir".to_owned()),
            None => default_parent(),
        };
        let err = |source| WorkDirError {
            dir: parent.clone(),
            source,
        };
        std::fs::create_dir_all(&parent).map_err(err)?;
        let swept = sweep(&parent);
        if swept > 0 {
            tracing::info!(
                dir = %parent.display(),
                "removed {swept} task director{} left by workers that were stopped",
                if swept == 1 { "y" } else { "ies" }
            );
        }
        let dir = tempfile::Builder::new()
            .prefix(PREFIX)
            .tempdir_in(&parent)
            .map_err(err)?
            .keep();
        let lock = File::create(dir.join(LOCK_FILE))
            .and_then(lock)
            .map_err(|e| {
                let _ = std::fs::remove_dir_all(&dir);
                err(e)
            })?;
        Ok(WorkDir {
            path: dir,
            why,
            _lock: lock,
        })
    }

    /// The directory task directories are created in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Why it is where it is (for the start-up log).
    pub fn why(&self) -> &str {
        &self.why
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The default parent of work directories, and why: `TMPDIR` when it is
/// set; else `/dev/shm` when it is a tmpfs with at least
/// [`MIN_TMPFS_FREE`] bytes free and writable; else the system temp dir.
pub fn default_parent() -> (PathBuf, String) {
    if std::env::var_os("TMPDIR").is_some_and(|v| !v.is_empty()) {
        return (std::env::temp_dir(), "TMPDIR".into());
    }
    let shm = Path::new("/dev/shm");
    match tmpfs_free(shm) {
        Some(free) if free >= MIN_TMPFS_FREE && writable(shm) => {
            (shm.to_path_buf(), format!("tmpfs, {} MiB free", free >> 20))
        }
        Some(free) if free < MIN_TMPFS_FREE => (
            std::env::temp_dir(),
            format!(
                "/dev/shm has only {} MiB free (at least {} MiB needed)",
                free >> 20,
                MIN_TMPFS_FREE >> 20
            ),
        ),
        _ => (
            std::env::temp_dir(),
            "the system temporary directory".into(),
        ),
    }
}

/// An exclusive `flock` on `f`, without waiting (`WouldBlock` when another
/// process holds it).
pub(crate) fn lock(f: File) -> std::io::Result<Flock<File>> {
    Flock::lock(f, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| std::io::Error::from(e))
}

/// Free bytes of the file system at `p` if it is a tmpfs.
fn tmpfs_free(p: &Path) -> Option<u64> {
    let st = nix::sys::statfs::statfs(p).ok()?;
    if st.filesystem_type() != nix::sys::statfs::TMPFS_MAGIC {
        return None;
    }
    Some((st.blocks_available() as u64).saturating_mul(st.block_size() as u64))
}

fn writable(p: &Path) -> bool {
    tempfile::Builder::new()
        .prefix(".hg-probe-")
        .tempfile_in(p)
        .is_ok()
}

/// Removes the worker directories in `parent` whose lock no process
/// holds; returns how many.
fn sweep(parent: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().starts_with(PREFIX) || !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let dir = e.path();
        // A directory without a lock file is not one this code made whole
        // (or is being made right now): left alone.
        let Ok(lock_file) = File::open(dir.join(LOCK_FILE)) else {
            continue;
        };
        if lock(lock_file).is_ok() && std::fs::remove_dir_all(&dir).is_ok() {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claimed_directory_is_locked_kept_from_others_and_removed_on_drop() {
        let parent = tempfile::tempdir().expect("tempdir");
        let a = WorkDir::claim(Some(parent.path())).expect("claim");
        std::fs::write(a.path().join("hg-task-1"), b"x").expect("write");
        // A second worker in the same parent leaves the live one alone.
        let b = WorkDir::claim(Some(parent.path())).expect("claim");
        assert_ne!(a.path(), b.path());
        assert!(a.path().join("hg-task-1").exists());
        let kept = a.path().to_path_buf();
        drop(a);
        assert!(!kept.exists());
        drop(b);
        assert_eq!(std::fs::read_dir(parent.path()).expect("read").count(), 0);
    }

    #[test]
    fn a_dead_workers_directory_is_swept_and_foreign_ones_are_not() {
        let parent = tempfile::tempdir().expect("tempdir");
        // Left by a worker that was killed: its lock file, nobody holding it.
        let dead = parent.path().join("hg-worker-dead01");
        std::fs::create_dir_all(dead.join("hg-task-x/root")).expect("mkdir");
        std::fs::write(dead.join(LOCK_FILE), b"").expect("write");
        // Not ours: no lock file, or another name.
        let partial = parent.path().join("hg-worker-nolock");
        std::fs::create_dir(&partial).expect("mkdir");
        let other = parent.path().join("something-else");
        std::fs::create_dir(&other).expect("mkdir");
        let w = WorkDir::claim(Some(parent.path())).expect("claim");
        assert!(!dead.exists());
        assert!(partial.exists() && other.exists());
        assert!(w.path().starts_with(parent.path()));
    }

    #[test]
    fn an_unusable_directory_says_what_to_do() {
        let parent = tempfile::tempdir().expect("tempdir");
        let file = parent.path().join("a-file");
        std::fs::write(&file, b"").expect("write");
        let e = WorkDir::claim(Some(&file.join("sub"))).expect_err("a file is no parent");
        let msg = e.to_string();
        assert!(msg.contains("a-file/sub"), "{msg}");
        assert!(msg.contains("worker.work_dir"), "{msg}");
    }
}
