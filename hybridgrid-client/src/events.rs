//! A build's event stream: one [`CompileEvent`] per compiler invocation,
//! from which the progress line, the summary and the Chrome/Perfetto trace
//! ([`crate::trace`]) are all derived.
//!
//! In one process (an embedding tool) the events are kept by the
//! [`crate::Client`]. Under `hgbuild make -jN` every compile is its own
//! hgbuild process: the wrapping hgbuild names a file in
//! [`ENV_EVENTS`], and each compile appends its event as one JSON line with
//! a single `write` on an `O_APPEND` descriptor, so lines of concurrent
//! compiles never interleave. The wrapper follows the file while the build
//! runs.

use std::io::Write as _;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::{Outcome, Route};

/// The environment variable naming the file a wrapped build's compiles
/// append their events to.
pub const ENV_EVENTS: &str = "HG_EVENTS_FILE";

/// One compiler invocation and where it ran.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompileEvent {
    /// The source file, or the command for non-compiles.
    pub name: String,
    /// `cache`, `remote`, `local` or `passthrough`.
    pub route: String,
    /// The worker, for remote compiles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// Why it ran locally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Whether it fell back to local after the grid failed.
    #[serde(default)]
    pub fallback: bool,
    /// Start, in microseconds since the Unix epoch.
    pub start_us: u64,
    /// Duration, in microseconds.
    pub dur_us: u64,
    /// Time waiting for a slot on the worker, in microseconds.
    #[serde(default)]
    pub queue_us: u64,
    /// Time the compiler ran on the worker, in microseconds.
    #[serde(default)]
    pub compile_us: u64,
    /// The exit code.
    pub exit_code: i32,
    /// The id of the process that ran it.
    pub pid: u32,
}

/// Microseconds since the Unix epoch.
pub(crate) fn micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl CompileEvent {
    /// The event of an invocation that started at `started` and ended as
    /// `outcome`; `fallback_name` names non-compiles.
    pub fn from_outcome(outcome: &Outcome, started: SystemTime, fallback_name: &str) -> Self {
        let (route, worker, reason) = match &outcome.route {
            Route::Cache | Route::DirectCache => ("cache", None, None),
            Route::Remote(w) => ("remote", Some(w.clone()), None),
            Route::Local(r) => ("local", None, Some(r.clone())),
            Route::Passthrough => ("passthrough", None, Some("not a compile".to_owned())),
        };
        CompileEvent {
            name: outcome
                .source
                .as_ref()
                .map(|s| s.display().to_string())
                .unwrap_or_else(|| fallback_name.to_owned()),
            route: route.to_owned(),
            worker,
            reason,
            fallback: outcome.fallback_reason.is_some(),
            start_us: micros(started),
            dur_us: outcome.elapsed.as_micros() as u64,
            queue_us: outcome.timings.queue.as_micros() as u64,
            compile_us: outcome.timings.compile.as_micros() as u64,
            exit_code: outcome.exit_code,
            pid: std::process::id(),
        }
    }
}

/// Appends `ev` to the stream file `path` as one JSON line, with a single
/// write on an `O_APPEND` descriptor (atomic with respect to other
/// appenders).
pub fn append(path: &Path, ev: &CompileEvent) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(ev).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(&line)
}

/// The events of whole lines of `text`, skipping lines that do not parse.
pub fn parse(text: &str) -> impl Iterator<Item = CompileEvent> + '_ {
    text.lines().filter_map(|l| serde_json::from_str(l).ok())
}

/// Counts of a build's compiler invocations.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BuildSummary {
    /// Compiles (and other compiler calls) seen.
    pub total: usize,
    /// Compiled by a worker.
    pub remote: usize,
    /// Served from a cache.
    pub cached: usize,
    /// Compiled or linked here.
    pub local: usize,
    /// Compiler calls that exited non-zero.
    pub failed: usize,
}

impl BuildSummary {
    /// Counts one event.
    pub fn add(&mut self, ev: &CompileEvent) {
        self.total += 1;
        match ev.route.as_str() {
            "remote" => self.remote += 1,
            "cache" => self.cached += 1,
            _ => self.local += 1,
        }
        if ev.exit_code != 0 {
            self.failed += 1;
        }
    }

    /// The summary of `events`.
    pub fn of<'a>(events: impl IntoIterator<Item = &'a CompileEvent>) -> Self {
        let mut s = BuildSummary::default();
        for ev in events {
            s.add(ev);
        }
        s
    }

    /// `34 compiler calls: 30 remote, 2 cached, 2 local, 0 failed`.
    pub fn line(&self) -> String {
        format!(
            "{} compiler calls: {} remote, {} cached, {} local, {} failed",
            self.total, self.remote, self.cached, self.local, self.failed
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An event for tests: worker `w1` when remote, exit 0.
    pub(crate) fn ev(name: &str, start: u64, dur: u64, route: &str) -> CompileEvent {
        CompileEvent {
            name: name.into(),
            route: route.into(),
            worker: (route == "remote").then(|| "w1".to_owned()),
            reason: None,
            fallback: false,
            start_us: start,
            dur_us: dur,
            queue_us: 5,
            compile_us: 50,
            exit_code: 0,
            pid: 1,
        }
    }

    #[test]
    fn stream_file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let sink = dir.path().join("events.jsonl");
        append(&sink, &ev("a.c", 1, 2, "remote")).unwrap();
        append(&sink, &ev("b.c", 3, 4, "local")).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&sink)
            .unwrap()
            .write_all(b"garbage\n")
            .unwrap();
        let got: Vec<_> = parse(&std::fs::read_to_string(&sink).unwrap()).collect();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].name, "b.c");
    }

    #[test]
    fn summary_counts_routes_and_failures() {
        let mut failed = ev("c.c", 5, 1, "local");
        failed.exit_code = 1;
        let evs = [
            ev("a.c", 1, 2, "remote"),
            ev("b.c", 3, 4, "cache"),
            failed,
            ev("demo", 6, 1, "passthrough"),
        ];
        let s = BuildSummary::of(&evs);
        assert_eq!(
            s,
            BuildSummary {
                total: 4,
                remote: 1,
                cached: 1,
                local: 2,
                failed: 1
            }
        );
        assert_eq!(
            s.line(),
            "4 compiler calls: 1 remote, 1 cached, 2 local, 1 failed"
        );
    }
}
