//! Where formatted log lines go.
//!
//! A short-lived command writes every line straight to its file or stderr.
//! A server hands its lines to a writer thread instead, which writes what
//! has gathered in one system call: a busy coordinator logs two lines per
//! compile from every runtime thread, and a locked `write(2)` per line cost
//! it about a tenth of its CPU. The writer, woken by the first line, lets
//! lines gather for up to 20 ms and writes them in one go (waking a thread
//! for every line would cost as much as the writes). The order of lines is
//! kept. Warnings and
//! errors are written before the call that logs them returns (with every
//! line before them), so nothing a server says about a failure is lost if
//! it exits or crashes right after; [`Sink::flush`] writes the rest (the
//! servers call it before they exit). Lines waiting for the writer are
//! bounded ([`MAX_WAITING`] bytes): beyond that a logging thread waits for
//! the writer, so a stalled stderr slows the server but never loses lines
//! or grows its memory.

use std::io::Write as _;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The most bytes of lines waiting for the writer thread.
pub(super) const MAX_WAITING: usize = 4 << 20;

/// How long the woken writer lets lines gather before it writes them:
/// waking it costs about as much as the write it saves, so it is woken
/// once for a batch, not for every line.
const GATHER: Duration = Duration::from_millis(20);

/// Bytes waiting that end the gathering early.
const GATHER_BYTES: usize = 64 << 10;

/// The file or stream lines are written to.
pub(super) enum Target {
    /// The process's standard error.
    Stderr,
    /// An open file (appending).
    File(std::fs::File),
}

impl Target {
    fn write_all(&mut self, bytes: &[u8]) {
        // A log line that cannot be written has nowhere else to go.
        let _ = match self {
            Target::Stderr => std::io::stderr().lock().write_all(bytes),
            Target::File(f) => f.write_all(bytes),
        };
    }
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("threaded", &self.threaded)
            .finish()
    }
}

/// Lines on their way to a [`Target`] (see the module docs).
pub(super) struct Sink {
    inner: Arc<Inner>,
    /// A writer thread runs: lines wait for it in `inner.state`.
    threaded: bool,
}

struct Inner {
    target: Mutex<Target>,
    state: Mutex<State>,
    /// Wakes the writer thread.
    work: Condvar,
    /// Wakes threads waiting for the writer to finish a batch.
    progress: Condvar,
}

#[derive(Default)]
struct State {
    /// Lines not yet taken by the writer.
    waiting: Vec<u8>,
    /// The writer is writing a batch.
    busy: bool,
    /// The writer waits for lines (a push must wake it).
    idle: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Sink {
    fn inner(target: Target) -> Arc<Inner> {
        Arc::new(Inner {
            target: Mutex::new(target),
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            progress: Condvar::new(),
        })
    }

    /// Every line written by the thread that logs it.
    pub(super) fn direct(target: Target) -> Self {
        Sink {
            inner: Self::inner(target),
            threaded: false,
        }
    }

    /// Lines written by a writer thread (named `hg-log`); if the thread
    /// cannot be started, by the thread that logs them.
    pub(super) fn background(target: Target) -> Self {
        let inner = Self::inner(target);
        let writer = Arc::clone(&inner);
        let threaded = match std::thread::Builder::new()
            .name("hg-log".into())
            .spawn(move || writer.run())
        {
            Ok(_) => true,
            Err(e) => {
                eprintln!("cannot start the log writer thread ({e}); writing log lines directly");
                false
            }
        };
        Sink { inner, threaded }
    }

    /// Writes `line` now (`urgent`, or no writer thread) or hands it to
    /// the writer thread.
    pub(super) fn push(&self, line: &[u8], urgent: bool) {
        let q = &*self.inner;
        if !self.threaded {
            lock(&q.target).write_all(line);
            return;
        }
        let mut s = lock(&q.state);
        if urgent {
            s.waiting.extend_from_slice(line);
            q.write_waiting(s);
            return;
        }
        while s.waiting.len() >= MAX_WAITING {
            s = q.progress.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        let before = s.waiting.len();
        s.waiting.extend_from_slice(line);
        // Wake the writer for the first line, and cut its gathering short
        // once a batch is big enough.
        let wake = s.idle || (before < GATHER_BYTES && s.waiting.len() >= GATHER_BYTES);
        s.idle = false;
        drop(s);
        if wake {
            q.work.notify_one();
        }
    }

    /// Writes every line handed over so far before returning.
    pub(super) fn flush(&self) {
        if self.threaded {
            let q = &*self.inner;
            q.write_waiting(lock(&q.state));
        }
    }
}

impl Inner {
    /// Writes the waiting lines on this thread, after the batch the
    /// writer may be writing (so the order holds).
    fn write_waiting(&self, mut s: MutexGuard<'_, State>) {
        while s.busy {
            s = self.progress.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        if s.waiting.is_empty() {
            return;
        }
        // The state stays locked: the writer cannot take a later batch
        // and write it first.
        lock(&self.target).write_all(&s.waiting);
        s.waiting.clear();
        self.progress.notify_all();
    }

    /// The writer thread: waits for a line, lets more gather for a moment,
    /// writes them all, and waits again. It lives as long as the process
    /// (the subscriber is global).
    fn run(&self) {
        let mut batch = Vec::new();
        let mut s = lock(&self.state);
        loop {
            while s.waiting.is_empty() {
                s.idle = true;
                s = self.work.wait(s).unwrap_or_else(|p| p.into_inner());
            }
            let until = Instant::now() + GATHER;
            while s.waiting.len() < GATHER_BYTES {
                let now = Instant::now();
                if now >= until {
                    break;
                }
                s = self
                    .work
                    .wait_timeout(s, until - now)
                    .map_or_else(|p| p.into_inner().0, |(g, _)| g);
            }
            if s.waiting.is_empty() {
                // Written meanwhile by a warning or a flush.
                continue;
            }
            std::mem::swap(&mut s.waiting, &mut batch);
            s.busy = true;
            drop(s);
            lock(&self.target).write_all(&batch);
            batch.clear();
            s = lock(&self.state);
            s.busy = false;
            self.progress.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    fn file_sink(background: bool) -> (tempfile::NamedTempFile, Arc<Sink>) {
        let f = tempfile::NamedTempFile::new().unwrap();
        let target = Target::File(f.reopen().unwrap());
        let sink = if background {
            Sink::background(target)
        } else {
            Sink::direct(target)
        };
        (f, Arc::new(sink))
    }

    fn read(f: &tempfile::NamedTempFile) -> String {
        let mut s = String::new();
        f.reopen().unwrap().read_to_string(&mut s).unwrap();
        s
    }

    #[test]
    fn direct_lines_are_written_at_once() {
        let (f, sink) = file_sink(false);
        sink.push(b"one\n", false);
        assert_eq!(read(&f), "one\n");
    }

    #[test]
    fn background_lines_from_many_threads_all_arrive_whole_and_in_order_per_thread() {
        let (f, sink) = file_sink(true);
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let sink = Arc::clone(&sink);
                std::thread::spawn(move || {
                    for i in 0..2_000 {
                        sink.push(format!("t{t} {i:05}\n").as_bytes(), false);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        sink.flush();
        let text = read(&f);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 16_000);
        for t in 0..8 {
            let mine: Vec<&str> = lines
                .iter()
                .copied()
                .filter(|l| l.starts_with(&format!("t{t} ")))
                .collect();
            let want: Vec<String> = (0..2_000).map(|i| format!("t{t} {i:05}")).collect();
            assert_eq!(mine, want, "thread {t}'s lines are missing or out of order");
        }
    }

    #[test]
    fn background_lines_reach_the_file_without_a_flush() {
        let (f, sink) = file_sink(true);
        sink.push(b"first\n", false);
        let deadline = Instant::now() + Duration::from_secs(10);
        while read(&f) != "first\n" {
            assert!(Instant::now() < deadline, "the writer never wrote the line");
            std::thread::sleep(Duration::from_millis(5));
        }
        // And again after it went idle.
        sink.push(b"second\n", false);
        while read(&f) != "first\nsecond\n" {
            assert!(
                Instant::now() < deadline,
                "the writer never wrote the second line"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn an_urgent_line_is_written_before_push_returns_after_the_lines_before_it() {
        let (f, sink) = file_sink(true);
        for i in 0..1_000 {
            sink.push(format!("info {i}\n").as_bytes(), false);
        }
        sink.push(b"warn last\n", true);
        // No flush: the warning and everything before it are in the file.
        let text = read(&f);
        assert_eq!(text.lines().count(), 1_001);
        assert_eq!(text.lines().last(), Some("warn last"));
        assert!(text.starts_with("info 0\ninfo 1\n"));
    }

    #[test]
    fn waiting_lines_are_bounded() {
        let (f, sink) = file_sink(true);
        // Hold the target so the writer cannot write: pushes must stop
        // growing the queue past the bound and wait.
        let held = lock(&sink.inner.target);
        let pusher = {
            let sink = Arc::clone(&sink);
            std::thread::spawn(move || {
                let line = vec![b'x'; 1023];
                for _ in 0..(3 * MAX_WAITING / 1024) {
                    let mut l = line.clone();
                    l.push(b'\n');
                    sink.push(&l, false);
                }
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(300));
        let waiting = lock(&sink.inner.state).waiting.len();
        assert!(
            waiting <= MAX_WAITING + 1024,
            "{waiting} bytes waiting, more than the bound"
        );
        assert!(!pusher.is_finished(), "the pusher should be waiting");
        drop(held);
        pusher.join().unwrap();
        sink.flush();
        assert_eq!(read(&f).len(), 3 * MAX_WAITING);
    }
}
