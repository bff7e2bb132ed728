//! Per-build traces: `hgbuild --trace FILE make ...` (or `HG_TRACE=FILE`)
//! writes a Chrome/Perfetto trace (JSON, open it in `ui.perfetto.dev` or
//! `chrome://tracing`) with one slice per compiler invocation: where it
//! ran (cache, remote worker, or local and why), and the queue and compile
//! time the grid reported.
//!
//! Under `make -jN` every compile is its own hgbuild process. The wrapping
//! `hgbuild make` gives them a side file (`HG_TRACE_SINK`); each appends one
//! JSON line with a single `write` on an `O_APPEND` descriptor, so lines of
//! concurrent compiles never interleave. When the build ends the wrapper
//! turns the lines into the trace. A lone `hgbuild --trace FILE cc ...`
//! writes a trace with its one slice.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{Outcome, Route};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The environment variable naming the trace file to write (as `--trace`).
pub const ENV_TRACE: &str = "HG_TRACE";
/// Set by a wrapping `hgbuild make`: the side file compiles append to.
pub const ENV_TRACE_SINK: &str = "HG_TRACE_SINK";

/// One compiler invocation, as a compile process reports it.
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
    /// The compile process's id.
    pub pid: u32,
}

fn micros(t: SystemTime) -> u64 {
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

/// Appends `ev` as one JSON line to `sink` with a single write on an
/// `O_APPEND` descriptor (atomic with respect to other appenders).
pub fn append(sink: &Path, ev: &CompileEvent) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(ev).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(sink)?;
    f.write_all(&line)
}

/// Reads the events of a side file, skipping lines that do not parse.
pub fn read_events(sink: &Path) -> std::io::Result<Vec<CompileEvent>> {
    let text = std::fs::read_to_string(sink)?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// The Chrome trace of a build: `events` as complete (`X`) slices on as
/// few lanes as never overlap, plus a slice for the whole build when
/// `build` (its name, start and duration) is given.
pub fn chrome_trace(events: &[CompileEvent], build: Option<(&str, SystemTime, Duration)>) -> Value {
    let mut evs: Vec<&CompileEvent> = events.iter().collect();
    evs.sort_by_key(|e| (e.start_us, e.pid));
    let t0 = build
        .map(|(_, s, _)| micros(s))
        .into_iter()
        .chain(evs.iter().map(|e| e.start_us))
        .min()
        .unwrap_or(0);
    let mut lanes: Vec<u64> = Vec::new();
    let mut out = vec![json!({
        "name": "process_name", "ph": "M", "pid": 1, "tid": 0,
        "args": { "name": "hgbuild" },
    })];
    if let Some((name, start, dur)) = build {
        out.push(json!({
            "name": name, "cat": "build", "ph": "X", "pid": 1, "tid": 0,
            "ts": micros(start).saturating_sub(t0), "dur": dur.as_micros() as u64,
        }));
        out.push(json!({
            "name": "thread_name", "ph": "M", "pid": 1, "tid": 0,
            "args": { "name": "build" },
        }));
    }
    for e in evs {
        let lane = match lanes.iter().position(|end| *end <= e.start_us) {
            Some(i) => i,
            None => {
                lanes.push(0);
                out.push(json!({
                    "name": "thread_name", "ph": "M", "pid": 1, "tid": lanes.len(),
                    "args": { "name": format!("job {}", lanes.len()) },
                }));
                lanes.len() - 1
            }
        };
        lanes[lane] = e.start_us + e.dur_us;
        let place = match (&e.worker, &e.reason) {
            (Some(w), _) => format!("remote {w}"),
            (None, Some(r)) => format!("{} ({r})", e.route),
            _ => e.route.clone(),
        };
        let mut args = json!({
            "where": place,
            "exit_code": e.exit_code,
            "pid": e.pid,
        });
        if e.route == "remote" {
            args["queue_ms"] = json!(e.queue_us as f64 / 1000.0);
            args["compile_ms"] = json!(e.compile_us as f64 / 1000.0);
        }
        if e.fallback {
            args["fallback"] = json!(true);
        }
        out.push(json!({
            "name": e.name,
            "cat": if e.fallback { "fallback" } else { e.route.as_str() },
            "ph": "X", "pid": 1, "tid": lane + 1,
            "ts": e.start_us.saturating_sub(t0), "dur": e.dur_us,
            "args": args,
        }));
    }
    json!({ "traceEvents": out, "displayTimeUnit": "ms" })
}

/// Writes the trace to `path` (via a temporary file and a rename).
pub fn write_trace(path: &Path, trace: &Value) -> std::io::Result<()> {
    let data = serde_json::to_vec_pretty(trace).map_err(std::io::Error::other)?;
    crate::write_atomic(path, &data)
}

/// Records one finished invocation of a compile process: into the side
/// file of a wrapping build when there is one, else into `trace` (the
/// `--trace` file or `HG_TRACE`) as a trace of its own. Failures only
/// warn: a trace never fails a build.
pub fn record(trace: Option<&Path>, outcome: &Outcome, started: SystemTime, name: &str) {
    let ev = CompileEvent::from_outcome(outcome, started, name);
    let res = if let Some(sink) = std::env::var_os(ENV_TRACE_SINK).filter(|s| !s.is_empty()) {
        append(Path::new(&sink), &ev)
    } else if let Some(path) = trace {
        write_trace(path, &chrome_trace(&[ev], None))
    } else {
        return;
    };
    if let Err(e) = res {
        eprintln!("hgbuild: warning: cannot write the trace: {e}");
    }
}

/// The trace file asked for: the flag, else `HG_TRACE`.
pub fn requested(flag: Option<PathBuf>) -> Option<PathBuf> {
    flag.or_else(|| {
        std::env::var_os(ENV_TRACE)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn ev(name: &str, start: u64, dur: u64, route: &str) -> CompileEvent {
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
    fn lanes_never_overlap() {
        let evs = [
            ev("a.c", 1000, 100, "remote"),
            ev("b.c", 1050, 100, "cache"),
            ev("c.c", 1100, 10, "local"),
            ev("d.c", 1200, 10, "remote"),
        ];
        let t = chrome_trace(&evs, None);
        let slices: Vec<&Value> = t["traceEvents"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["ph"] == "X")
            .collect();
        assert_eq!(slices.len(), 4);
        let tid = |n: &str| slices.iter().find(|e| e["name"] == n).unwrap()["tid"].clone();
        assert_eq!(tid("a.c"), 1);
        assert_eq!(tid("b.c"), 2);
        assert_eq!(tid("c.c"), 1);
        assert_eq!(tid("d.c"), 1);
        let a = slices.iter().find(|e| e["name"] == "a.c").unwrap();
        assert_eq!(a["ts"], 0);
        assert_eq!(a["args"]["where"], "remote w1");
        assert_eq!(a["args"]["compile_ms"], 0.05);
    }

    #[test]
    fn side_file_round_trip() {
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
        let got = read_events(&sink).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].name, "b.c");
    }
}
