//! A custom executor written outside the library: it wraps the native
//! executor and appends one JSON line per task (id, compiler, arguments,
//! exit code, duration) to a log file. Any `tower::Service<CompileTask>`
//! with hybridgrid's response and error types is an executor; this one is
//! composed in a few lines and could be handed to a worker
//! (`WorkerServer::new(info, BoxCloneSyncService::new(exec), limit)`).
//!
//! Run it (needs gcc): `cargo run -p hybridgrid-examples --example record_executor`

use std::future::Future;
use std::io::Write as _;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use hybridgrid_core::BoxError;
use hybridgrid_core::payload::Payload;
use hybridgrid_core::task::{CompileOutput, CompileTask, Language, OutputKind};
use hybridgrid_exec::Executor;
use hybridgrid_exec::detect::{DetectOptions, find_and_identify};
use hybridgrid_exec::native::{NativeExecutor, NativeOptions};
use tower::{Service, ServiceExt};

/// Wraps any executor and records every task it runs as a JSON line.
#[derive(Clone)]
struct RecordExecutor<E> {
    inner: E,
    log: Arc<Mutex<std::fs::File>>,
}

impl<E> RecordExecutor<E> {
    fn new(inner: E, path: &PathBuf) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(RecordExecutor {
            inner,
            log: Arc::new(Mutex::new(file)),
        })
    }
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl<E: Executor> Service<CompileTask> for RecordExecutor<E> {
    type Response = CompileOutput;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<CompileOutput, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, task: CompileTask) -> Self::Future {
        let log = self.log.clone();
        let head = format!(
            "{{\"task\":{},\"compiler\":{},\"source\":{},\"args\":[{}]",
            json_str(&task.id.0),
            json_str(&task.compiler.to_string()),
            json_str(&task.source_name),
            task.args
                .iter()
                .map(|a| json_str(a))
                .collect::<Vec<_>>()
                .join(",")
        );
        let fut = self.inner.call(task);
        Box::pin(async move {
            let t0 = Instant::now();
            let result = fut.await;
            let tail = match &result {
                Ok(out) => format!("\"exit_code\":{}", out.exit_code),
                Err(e) => format!("\"error\":{}", json_str(&e.to_string())),
            };
            let line = format!("{head},{tail},\"ms\":{}}}\n", t0.elapsed().as_millis());
            if let Ok(mut f) = log.lock() {
                // Recording is best effort: a full disk must not fail compiles.
                let _ = f.write_all(line.as_bytes());
            }
            result
        })
    }
}

fn takes_executor<E: Executor>(e: E) -> E {
    e
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let gcc = find_and_identify("gcc", &DetectOptions::default().path_dirs).await?;
    let dir = tempfile::tempdir()?;
    let log_path = dir.path().join("tasks.jsonl");

    // The composition: the library's native executor inside our recorder.
    let native = NativeExecutor::new(vec![gcc.clone()], NativeOptions::default());
    let exec = takes_executor(RecordExecutor::new(native, &log_path)?);

    let task = CompileTask::new(
        gcc.identity.clone(),
        Language::C,
        vec!["-O2".into()],
        "hello.c",
        Payload::compress(b"int answer(void) { return 42; }\n".to_vec()),
    );
    let out = exec
        .clone()
        .oneshot(task)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    let obj = out
        .output(OutputKind::Object)
        .ok_or_else(|| anyhow::anyhow!("no object"))?
        .data
        .decode()?;
    anyhow::ensure!(out.exit_code == 0 && obj.starts_with(b"\x7fELF"));
    println!("compiled hello.c: {} byte object", obj.len());
    print!("recorded: {}", std::fs::read_to_string(&log_path)?);
    Ok(())
}
