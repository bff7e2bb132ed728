//! Per-build traces: `hgbuild --trace FILE make ...` (or `HG_TRACE=FILE`)
//! writes a Chrome/Perfetto trace (JSON, open it in `ui.perfetto.dev` or
//! `chrome://tracing`) with one slice per compiler invocation: where it
//! ran (cache, remote worker, or local and why), and the queue and compile
//! time the grid reported.
//!
//! The trace is drawn from the build's event stream ([`crate::events`]),
//! the same events the progress line and the summary count. A lone
//! `hgbuild --trace FILE cc ...` writes a trace with its one slice.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::events::{CompileEvent, micros};
use serde_json::{Value, json};

/// The environment variable naming the trace file to write (as `--trace`).
pub const ENV_TRACE: &str = "HG_TRACE";

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

/// Writes the trace of `events` (with a slice for the whole build, when
/// given) to `path`.
pub fn write_build_trace(
    path: &Path,
    events: &[CompileEvent],
    build: Option<(&str, SystemTime, Duration)>,
) -> std::io::Result<()> {
    write_trace(path, &chrome_trace(events, build))
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
    use crate::events::tests::ev;

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
}
