//! Helpers shared by the unit tests of the scheduling modules.

use std::sync::{Arc, Mutex};

use tracing_subscriber::fmt::MakeWriter;

use crate::config::LogFormat;
use crate::logging::LineFormat;
use crate::payload::Payload;
use crate::task::{CompileTask, CompilerFamily, CompilerIdentity, DriverKind, Language};
use crate::worker::{Arch, Capabilities, CompilerInfo, WorkerId, WorkerInfo, WorkerSource};

/// Log lines captured while the returned guard lives (this thread only).
#[derive(Clone, Default)]
pub(crate) struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

pub(crate) struct LogsWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogsWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Logs {
    type Writer = LogsWriter;
    fn make_writer(&'a self) -> LogsWriter {
        LogsWriter(self.0.clone())
    }
}

pub(crate) fn capture_logs() -> (Logs, tracing::subscriber::DefaultGuard) {
    // A global subscriber that is interested in everything, so no test
    // thread caches a callsite as disabled while another test captures.
    static GLOBAL: std::sync::Once = std::sync::Once::new();
    GLOBAL.call_once(|| {
        let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry());
    });
    let logs = Logs::default();
    let sub = tracing_subscriber::fmt()
        .event_format(LineFormat {
            format: LogFormat::Console,
        })
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(logs.clone())
        .finish();
    (logs, tracing::subscriber::set_default(sub))
}

pub(crate) fn gcc(target: &str) -> CompilerIdentity {
    CompilerIdentity {
        family: CompilerFamily::Gcc,
        driver: DriverKind::C,
        version: "12.2.0".into(),
        target: target.into(),
    }
}

pub(crate) fn gcc_amd64() -> CompilerIdentity {
    gcc("x86_64-linux-gnu")
}

pub(crate) fn task_of(size: usize) -> CompileTask {
    CompileTask::new(
        gcc_amd64(),
        Language::PreprocessedC,
        vec![],
        "x.c",
        Payload::raw(vec![b' '; size]),
    )
}

pub(crate) fn worker_info(id: &str, arch: Arch, compilers: &[CompilerIdentity]) -> WorkerInfo {
    let mut caps = Capabilities::new(arch);
    caps.cores = 8;
    caps.memory_bytes = 16 << 30;
    caps.max_parallel_tasks = 4;
    caps.compilers = compilers
        .iter()
        .map(|c| CompilerInfo {
            name: "gcc".into(),
            path: "/usr/bin/gcc".into(),
            identity: c.clone(),
        })
        .collect();
    WorkerInfo::new(
        WorkerId::from(id),
        format!("{id}:50052"),
        WorkerSource::Handshake,
        caps,
    )
}

/// A recorder for metrics set on this thread while the guard lives.
pub(crate) fn capture_metrics() -> (
    metrics_util::debugging::Snapshotter,
    metrics::LocalRecorderGuard<'static>,
) {
    let rec: &'static metrics_util::debugging::DebuggingRecorder =
        Box::leak(Box::new(metrics_util::debugging::DebuggingRecorder::new()));
    (rec.snapshotter(), metrics::set_default_local_recorder(rec))
}

/// The value of a gauge or counter with the given name and (optional)
/// `worker` label in a snapshot.
pub(crate) fn metric(
    snap: &metrics_util::debugging::Snapshotter,
    name: &str,
    worker: Option<&str>,
) -> Option<f64> {
    use metrics_util::debugging::DebugValue;
    snap.snapshot()
        .into_vec()
        .into_iter()
        .find(|(k, _, _, _)| {
            k.key().name() == name
                && worker.is_none_or(|w| {
                    k.key()
                        .labels()
                        .any(|l| l.key() == "worker" && l.value() == w)
                })
        })
        .map(|(_, _, _, v)| match v {
            DebugValue::Gauge(g) => g.into_inner(),
            DebugValue::Counter(c) => c as f64,
            DebugValue::Histogram(h) => h.len() as f64,
        })
}

/// Every metric in one snapshot, by name (labels ignored).
pub(crate) fn metrics_of(
    snap: &metrics_util::debugging::Snapshotter,
) -> std::collections::HashMap<String, f64> {
    use metrics_util::debugging::DebugValue;
    snap.snapshot()
        .into_vec()
        .into_iter()
        .map(|(k, _, _, v)| {
            let v = match v {
                DebugValue::Gauge(g) => g.into_inner(),
                DebugValue::Counter(c) => c as f64,
                DebugValue::Histogram(h) => h.len() as f64,
            };
            (k.key().name().to_owned(), v)
        })
        .collect()
}
