//! Coordinator benchmarks: throughput (in-process and over loopback gRPC),
//! memory with many workers and tasks in flight, and the payload path.
//!
//! Run by `bench/coordinator.sh`, which builds it and writes the results
//! into `docs/benchmarks.md`. Subcommands:
//!
//! - `inproc`: the coordinator as `hg-coord` composes it (admission, cache
//!   tier on disk, retry, hedging, scheduler, breakers) in this process;
//!   the worker calls go to in-process no-op services.
//! - `loopback`: a real `hg-coord` process, no-op worker processes (this
//!   program's `worker` subcommand) and gRPC clients in this process.
//! - `memory`: a real `hg-coord` with simulated workers registered over
//!   gRPC and compiles held in flight by slow no-op workers.
//! - `payload`: a large preprocessed source through a real `hg-coord` to a
//!   worker and back.
//! - `worker`: a no-op worker process (used by the others).
//!
//! Every measuring subcommand prints one JSON object on stdout.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use hybridgrid_core::BoxError;
use hybridgrid_core::config::{Config, LoggingConfig};
use hybridgrid_core::payload::Payload;
use hybridgrid_core::task::{
    CompileOutput, CompileTask, CompilerFamily, CompilerIdentity, DriverKind, Language, OutputFile,
    OutputKind,
};
use hybridgrid_core::worker::{
    Arch, Capabilities, CompilerInfo, WorkerId, WorkerInfo, WorkerSource,
};
use hybridgrid_net::client::{ChannelOptions, CoordinatorClient};
use hybridgrid_net::coordinator::{BoxCompile, Connector, WorkerPool};
use hybridgrid_net::worker::{WorkerServer, run_registration};
use serde_json::json;
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;

#[derive(Parser, Debug)]
#[command(name = "coordbench", about = "hybridgrid coordinator benchmarks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Throughput of the coordinator stack in this process.
    Inproc {
        /// Concurrent clients.
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Tasks per run.
        #[arg(long, default_value_t = 50_000)]
        tasks: usize,
        /// Bytes of preprocessed input per task (unique per task).
        #[arg(long, default_value_t = 1024)]
        input_bytes: usize,
        /// Workers in the pool.
        #[arg(long, default_value_t = 4)]
        workers: usize,
        /// `miss` (unique inputs, the cold-build case), `hit` (every task
        /// cached before the timed run) or `off` (no cache tier).
        #[arg(long, default_value = "miss")]
        cache: String,
        /// Where to put the cache directory (default: the temp dir).
        #[arg(long)]
        tmp: Option<PathBuf>,
    },
    /// Throughput through a real hg-coord over loopback gRPC.
    Loopback {
        /// The hg-coord binary.
        #[arg(long)]
        hg_coord: PathBuf,
        /// Client counts to run, e.g. `1,64`.
        #[arg(long, default_value = "1,64", value_delimiter = ',')]
        clients: Vec<usize>,
        /// Tasks per run.
        #[arg(long, default_value_t = 20_000)]
        tasks: usize,
        /// Bytes of preprocessed input per task.
        #[arg(long, default_value_t = 1024)]
        input_bytes: usize,
        /// No-op worker processes.
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Where to put hg-coord's cache directory (default: the temp dir).
        #[arg(long)]
        tmp: Option<PathBuf>,
        /// `miss` (unique inputs, hg-coord's cache tier on) or `off`
        /// (`cache.enabled: false`: the gRPC path alone).
        #[arg(long, default_value = "miss")]
        cache: String,
    },
    /// hg-coord's memory with simulated workers and tasks in flight.
    Memory {
        /// The hg-coord binary.
        #[arg(long)]
        hg_coord: PathBuf,
        /// Simulated workers to register.
        #[arg(long, default_value_t = 10_000)]
        sim_workers: usize,
        /// Compiles to hold in flight.
        #[arg(long, default_value_t = 1_000)]
        in_flight: usize,
        /// Bytes of preprocessed input per compile.
        #[arg(long, default_value_t = 128 * 1024)]
        input_bytes: usize,
        /// A file of preprocessed text to cut inputs from.
        #[arg(long)]
        corpus: PathBuf,
        /// How long the workers hold each compile, in seconds.
        #[arg(long, default_value_t = 20)]
        hold_s: u64,
    },
    /// A large preprocessed source through hg-coord to a worker and back.
    Payload {
        /// The hg-coord binary.
        #[arg(long)]
        hg_coord: PathBuf,
        /// The preprocessed source.
        #[arg(long)]
        file: PathBuf,
        /// Round trips to time.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// A no-op worker: registers with a coordinator and answers every
    /// compile at once (or after `--delay-ms`).
    Worker {
        /// The coordinator's gRPC address.
        #[arg(long)]
        coordinator: String,
        /// The worker id.
        #[arg(long)]
        id: String,
        /// Compiles at once.
        #[arg(long, default_value_t = 64)]
        slots: usize,
        /// Hold every compile this long.
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
        /// Return the input as the object (payload benchmark).
        #[arg(long)]
        echo: bool,
    },
}

/// The compiler every benchmark task asks for (no real compiler runs).
fn identity() -> CompilerIdentity {
    CompilerIdentity {
        family: CompilerFamily::Gcc,
        driver: DriverKind::C,
        version: "12.2.0".into(),
        target: "x86_64-linux-gnu".into(),
    }
}

fn capabilities(identity: CompilerIdentity, slots: usize) -> Capabilities {
    let mut caps = Capabilities::new(Arch::Amd64);
    caps.cores = 8;
    caps.memory_bytes = 16 << 30;
    caps.max_parallel_tasks = slots as u32;
    caps.compilers.push(CompilerInfo {
        name: "gcc".into(),
        path: "/usr/bin/gcc".into(),
        identity,
    });
    caps
}

/// What a no-op executor returns: success and an empty object.
fn noop_output() -> CompileOutput {
    let mut out = CompileOutput::default();
    out.outputs.push(OutputFile {
        kind: OutputKind::Object,
        data: Payload::raw(Bytes::new()),
    });
    out
}

fn noop_service() -> BoxCompile {
    BoxCloneSyncService::new(tower::service_fn(|_t: CompileTask| async {
        Ok::<_, BoxError>(noop_output())
    }))
}

/// Unique preprocessed-looking text of `len` bytes for task `n`: a line
/// naming the task, then C declarations.
fn input_text(n: u64, len: usize, corpus: Option<&[u8]>) -> Vec<u8> {
    let mut v =
        format!("# 1 \"bench_{n}.c\"\nint bench_task_{n}(void) {{ return {n}; }}\n").into_bytes();
    let filler: &[u8] = corpus.unwrap_or(
        b"extern int printf(const char *__restrict __format, ...);\n\
          typedef struct { int quot; int rem; } div_t;\n\
          static inline unsigned long f_hash(const char *s) { unsigned long h = 5381; \
          while (*s) h = h * 33 + (unsigned char)*s++; return h; }\n",
    );
    let header = v.len();
    if filler.is_empty() {
        return v;
    }
    // Start at a task-dependent offset so inputs differ throughout.
    let mut off = (n as usize).wrapping_mul(7919) % filler.len();
    while v.len() < len {
        let take = (len - v.len()).min(filler.len() - off);
        v.extend_from_slice(&filler[off..off + take]);
        off = 0;
    }
    v.truncate(len.max(header));
    v
}

fn task(n: u64, len: usize, corpus: Option<&[u8]>) -> CompileTask {
    CompileTask::new(
        identity(),
        Language::PreprocessedC,
        vec!["-O2".into(), "-Wall".into()],
        format!("src/bench_{n}.c"),
        Payload::compress(input_text(n, len, corpus)),
    )
}

/// CPU time (user + system) a process has used, from `/proc/<pid>/stat`.
fn cpu_time(pid: &str) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces).
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime 15.
    let ticks: u64 =
        f.get(11).context("utime")?.parse::<u64>()? + f.get(12).context("stime")?.parse::<u64>()?;
    // USER_HZ is 100 on Linux.
    Ok(Duration::from_millis(ticks * 10))
}

/// VmRSS and VmHWM of a process, in bytes.
fn memory(pid: u32) -> anyhow::Result<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = s
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("{name} missing"))?;
        let kb: u64 = line.split_whitespace().nth(1).context("value")?.parse()?;
        Ok(kb * 1024)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

struct Run {
    tasks: usize,
    wall: Duration,
    cpu: Duration,
    failed: u64,
}

impl Run {
    fn per_sec(&self) -> f64 {
        self.tasks as f64 / self.wall.as_secs_f64()
    }
    fn cpu_us_per_task(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.tasks as f64
    }
}

/// Runs `tasks` through `call` from `clients` concurrent loops and
/// measures wall time and the CPU time of process `pid`.
async fn drive<F, Fut>(clients: usize, tasks: Vec<CompileTask>, pid: &str, call: F) -> Run
where
    F: Fn(usize, CompileTask) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let n = tasks.len();
    let mut queues: Vec<Vec<CompileTask>> = (0..clients).map(|_| Vec::new()).collect();
    for (i, t) in tasks.into_iter().enumerate() {
        queues[i % clients].push(t);
    }
    let call = Arc::new(call);
    let failed = Arc::new(AtomicU64::new(0));
    let cpu0 = cpu_time(pid).unwrap_or_default();
    let start = Instant::now();
    let mut handles = Vec::new();
    for (c, q) in queues.into_iter().enumerate() {
        let call = call.clone();
        let failed = failed.clone();
        handles.push(tokio::spawn(async move {
            for t in q {
                if !call(c, t).await {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for h in handles {
        let _ = h.await;
    }
    let wall = start.elapsed();
    let cpu = cpu_time(pid).unwrap_or_default().saturating_sub(cpu0);
    Run {
        tasks: n,
        wall,
        cpu,
        failed: failed.load(Ordering::Relaxed),
    }
}

fn tasks(from: u64, count: usize, len: usize, corpus: Option<&[u8]>) -> Vec<CompileTask> {
    (0..count as u64)
        .map(|i| task(from + i, len, corpus))
        .collect()
}

async fn inproc(
    clients: usize,
    count: usize,
    input_bytes: usize,
    workers: usize,
    cache: &str,
    tmp_base: Option<&Path>,
) -> anyhow::Result<serde_json::Value> {
    let tmp = temp_dir(tmp_base)?;
    let mut cfg = Config::default();
    cfg.coordinator.bind_address = "127.0.0.1".into();
    cfg.coordinator.grpc_port = 0;
    cfg.coordinator.http_port = 0;
    cfg.discovery.mdns.enabled = false;
    cfg.cache.dir = tmp.path().join("cache").display().to_string();
    cfg.cache.enabled = cache != "off";
    if cache == "hit" {
        // Every result of the filling run must be stored: a queue that
        // cannot fill up (they are small; the byte limit still holds).
        cfg.cache.max_pending_writes = count + 2000;
    }
    // As hg-coord logs: info level, here to a file.
    let mut log = LoggingConfig::default();
    log.file = tmp.path().join("coord.log").display().to_string();
    let handle = hybridgrid_core::logging::init_for_server(&log)
        .unwrap_or_else(|_| hybridgrid_core::logging::LogHandle::detached());
    let connector: Connector = Arc::new(|_w: &WorkerInfo| Ok(noop_service()));
    let pool = WorkerPool::new(Duration::from_secs(3600), ChannelOptions::default())
        .with_connector(connector);
    let running =
        hybridgrid::coord::start_on(&cfg, hybridgrid::heap::admin_hooks(handle), pool).await?;
    for i in 0..workers {
        running.state.pool.register(WorkerInfo::new(
            WorkerId(format!("noop-{i}")),
            format!("127.0.0.1:{}", 20000 + i),
            WorkerSource::Static,
            capabilities(identity(), 16),
        ))?;
    }
    let pid = "self";
    // Warm up (and fill the cache for `hit`).
    let warm = tasks(0, count.min(2000), input_bytes, None);
    let server = running.server.clone();
    drive(clients, warm, pid, move |_, t| {
        let s = server.clone();
        async move { s.compile(t).await.is_ok() }
    })
    .await;
    let from = if cache == "hit" { 1_000_000 } else { 2_000_000 };
    let timed = tasks(from, count, input_bytes, None);
    if cache == "hit" {
        let server = running.server.clone();
        drive(clients, timed.clone(), pid, move |_, t| {
            let s = server.clone();
            async move { s.compile(t).await.is_ok() }
        })
        .await;
    }
    running.flush_cache(Duration::from_secs(60)).await;
    let writes0 = running.cache_writes().unwrap_or_default();
    let hits0 = running.state.tasks.cache_hits.load(Ordering::Relaxed);
    let server = running.server.clone();
    let run = drive(clients, timed, pid, move |_, t| {
        let s = server.clone();
        async move { s.compile(t).await.is_ok() }
    })
    .await;
    let hits = running.state.tasks.cache_hits.load(Ordering::Relaxed) - hits0;
    // Results still queued for the cache are part of the tasks' cost:
    // write them and count their CPU time too.
    let mut run = run;
    let cpu0 = cpu_time(pid).unwrap_or_default();
    running.flush_cache(Duration::from_secs(60)).await;
    run.cpu += cpu_time(pid).unwrap_or_default().saturating_sub(cpu0);
    let writes = running.cache_writes().unwrap_or_default();
    // The same clients calling a no-op service directly: what the clients
    // and the no-op worker cost, to subtract.
    let noop = noop_service();
    let base = drive(
        clients,
        tasks(3_000_000, count, input_bytes, None),
        pid,
        move |_, t| {
            let s = noop.clone();
            async move { s.oneshot(t).await.is_ok() }
        },
    )
    .await;
    running.shutdown(Duration::from_secs(2)).await;
    Ok(json!({
        "mode": "inproc",
        "clients": clients,
        "tasks": run.tasks,
        "input_bytes": input_bytes,
        "workers": workers,
        "cache": cache,
        "cache_dir": cfg.cache.dir,
        "cache_hits": hits,
        "cache_writes_stored": writes.stored - writes0.stored,
        "cache_writes_dropped": writes.dropped - writes0.dropped,
        "failed": run.failed,
        "wall_s": run.wall.as_secs_f64(),
        "tasks_per_s": run.per_sec(),
        "process_cpu_us_per_task": run.cpu_us_per_task(),
        "baseline_cpu_us_per_task": base.cpu_us_per_task(),
        "coord_cpu_us_per_task": (run.cpu_us_per_task() - base.cpu_us_per_task()).max(0.0),
    }))
}

/// A free port on 127.0.0.1 (released at once; a benchmark tolerates the race).
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Grid {
    coord: Proc,
    addr: String,
    http: u16,
    workers: Vec<Proc>,
    _tmp: tempfile::TempDir,
}

impl Grid {
    fn pid(&self) -> u32 {
        self.coord.0.id()
    }
}

/// A temporary directory in `base`, or in the default place.
fn temp_dir(base: Option<&Path>) -> std::io::Result<tempfile::TempDir> {
    match base {
        Some(b) => tempfile::tempdir_in(b),
        None => tempfile::tempdir(),
    }
}

async fn start_coord(
    hg_coord: &Path,
    env: &[(&str, String)],
    tmp_base: Option<&Path>,
) -> anyhow::Result<Grid> {
    let tmp = temp_dir(tmp_base)?;
    let grpc = free_port()?;
    let http = free_port()?;
    let log = std::fs::File::create(tmp.path().join("coord.log"))?;
    let mut cmd = Command::new(hg_coord);
    cmd.args(["serve", "--bind", "127.0.0.1"])
        .arg("--grpc-port")
        .arg(grpc.to_string())
        .arg("--http-port")
        .arg(http.to_string())
        .env_remove("HG_COORDINATOR")
        .env("HG_DISCOVERY__MDNS__ENABLED", "false")
        .env("HG_CACHE__DIR", tmp.path().join("cache"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let coord = Proc(cmd.spawn().context("starting hg-coord")?);
    let addr = format!("127.0.0.1:{grpc}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut c) = CoordinatorClient::connect(&addr, &ChannelOptions::default()).await
            && c.health().await.is_ok()
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("hg-coord did not start; see its log");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(Grid {
        coord,
        addr,
        http,
        workers: Vec::new(),
        _tmp: tmp,
    })
}

impl Grid {
    fn add_worker(
        &mut self,
        id: &str,
        slots: usize,
        delay_ms: u64,
        echo: bool,
    ) -> anyhow::Result<()> {
        let me = std::env::current_exe()?;
        let mut cmd = Command::new(me);
        cmd.args(["worker", "--coordinator", &self.addr, "--id", id])
            .arg("--slots")
            .arg(slots.to_string())
            .arg("--delay-ms")
            .arg(delay_ms.to_string())
            .env("HG_DISCOVERY__MDNS__ENABLED", "false")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if echo {
            cmd.arg("--echo");
        }
        self.workers.push(Proc(cmd.spawn()?));
        Ok(())
    }

    /// Waits until the coordinator lists `n` workers.
    async fn wait_workers(&self, n: usize) -> anyhow::Result<()> {
        let mut c = CoordinatorClient::connect(&self.addr, &ChannelOptions::default()).await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while c.workers().await?.len() < n {
            if Instant::now() > deadline {
                bail!("workers did not register");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    async fn clients(&self, n: usize) -> anyhow::Result<Vec<CoordinatorClient>> {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(CoordinatorClient::connect(&self.addr, &ChannelOptions::default()).await?);
        }
        Ok(v)
    }
}

async fn grpc_run(grid: &Grid, clients: usize, timed: Vec<CompileTask>) -> anyhow::Result<Run> {
    let conns = Arc::new(grid.clients(clients).await?);
    let pid = grid.pid().to_string();
    let mut run = drive(clients, timed, &pid, move |c, t| {
        let mut client = conns[c].clone();
        async move { client.compile(&t).await.is_ok() }
    })
    .await;
    // hg-coord may still be writing results to its cache: that is part of
    // the tasks' cost. Wait until its CPU time stops growing.
    let end = cpu_time(&pid).unwrap_or_default();
    let mut last = end;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = cpu_time(&pid).unwrap_or_default();
        if now.saturating_sub(last) <= Duration::from_millis(10) || Instant::now() > deadline {
            break;
        }
        last = now;
    }
    run.cpu += last.saturating_sub(end);
    Ok(run)
}

/// hg-coord's `hybridgrid_cache_writes_total{tier="disk"}` by result
/// (empty when it writes its cache before answering).
fn cache_writes(http: u16) -> anyhow::Result<std::collections::HashMap<String, u64>> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", http))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    let mut out = std::collections::HashMap::new();
    for line in body.lines() {
        if !line.starts_with("hybridgrid_cache_writes_total{") || !line.contains("tier=\"disk\"") {
            continue;
        }
        let result = line
            .split("result=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("");
        let value = line
            .rsplit(' ')
            .next()
            .unwrap_or("0")
            .parse::<f64>()
            .unwrap_or(0.0);
        out.insert(result.to_owned(), value as u64);
    }
    Ok(out)
}

async fn loopback(
    hg_coord: &Path,
    client_counts: &[usize],
    count: usize,
    input_bytes: usize,
    workers: usize,
    tmp_base: Option<&Path>,
    cache: &str,
) -> anyhow::Result<serde_json::Value> {
    let env = [("HG_CACHE__ENABLED", (cache != "off").to_string())];
    let mut grid = start_coord(hg_coord, &env, tmp_base).await?;
    let cache_dir = grid._tmp.path().display().to_string();
    for i in 0..workers {
        grid.add_worker(&format!("noop-{i}"), 64, 0, false)?;
    }
    grid.wait_workers(workers).await?;
    let mut runs = Vec::new();
    let mut next = 0u64;
    for &clients in client_counts {
        // Warm-up: connections, the scheduler's index, the cache directory.
        let warm = tasks(next, (count / 10).clamp(100, 2000), input_bytes, None);
        next += 10_000_000;
        grpc_run(&grid, clients, warm).await?;
        let timed = tasks(next, count, input_bytes, None);
        next += 10_000_000;
        let w0 = cache_writes(grid.http)?;
        let run = grpc_run(&grid, clients, timed).await?;
        let w1 = cache_writes(grid.http)?;
        let delta = |k: &str| w1.get(k).unwrap_or(&0) - w0.get(k).unwrap_or(&0);
        runs.push(json!({
            "clients": clients,
            "cache_writes_stored": delta("stored"),
            "cache_writes_dropped": delta("dropped"),
            "tasks": run.tasks,
            "failed": run.failed,
            "wall_s": run.wall.as_secs_f64(),
            "tasks_per_s": run.per_sec(),
            "coord_cpu_us_per_task": run.cpu_us_per_task(),
        }));
    }
    let (rss, hwm) = memory(grid.pid())?;
    Ok(json!({
        "mode": "loopback",
        "input_bytes": input_bytes,
        "workers": workers,
        "cache": cache,
        "cache_dir": cache_dir,
        "runs": runs,
        "coord_rss": rss,
        "coord_hwm": hwm,
    }))
}

async fn memory_bench(
    hg_coord: &Path,
    sim_workers: usize,
    in_flight: usize,
    input_bytes: usize,
    corpus: &Path,
    hold: Duration,
) -> anyhow::Result<serde_json::Value> {
    let corpus = std::fs::read(corpus)?;
    let env = [
        ("HG_COORDINATOR__HEARTBEAT_TTL", "1h".to_owned()),
        (
            "HG_COORDINATOR__MAX_CONCURRENT_TASKS",
            (in_flight * 2).to_string(),
        ),
    ];
    let mut grid = start_coord(hg_coord, &env, None).await?;
    let pid = grid.pid();
    let idle = memory(pid)?;

    // Simulated workers: a compiler no task asks for, so none is called.
    let mut sim_id = identity();
    sim_id.version = "0.0.0-simulated".into();
    let regs = grid.clients(16).await?;
    let start = Instant::now();
    let mut handles = Vec::new();
    for (k, c) in regs.into_iter().enumerate() {
        let sim_id = sim_id.clone();
        handles.push(tokio::spawn(async move {
            let mut c = c;
            let mut i = k;
            while i < sim_workers {
                let mut info = WorkerInfo::new(
                    WorkerId(format!("sim-{i:05}")),
                    format!("10.{}.{}.{}:50052", i >> 16, (i >> 8) & 255, i & 255),
                    WorkerSource::Handshake,
                    capabilities(sim_id.clone(), 8),
                );
                info.version = hybridgrid_net::VERSION.to_owned();
                c.register(&info).await?;
                i += 16;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for h in handles {
        h.await??;
    }
    let reg_time = start.elapsed();
    let with_workers = memory(pid)?;

    // Real no-op workers holding every compile for a while.
    let real = 4;
    for i in 0..real {
        grid.add_worker(
            &format!("slow-{i}"),
            in_flight,
            hold.as_millis() as u64,
            false,
        )?;
    }
    grid.wait_workers(sim_workers + real).await?;
    let conns = Arc::new(grid.clients(64).await?);
    let mut calls = Vec::new();
    for i in 0..in_flight {
        let mut c = conns[i % conns.len()].clone();
        let t = task(5_000_000 + i as u64, input_bytes, Some(&corpus));
        calls.push(tokio::spawn(async move {
            match c.compile(&t).await {
                Ok(_) => true,
                Err(e) => {
                    eprintln!("compile {i} failed: {e}");
                    false
                }
            }
        }));
    }
    let mut stats = CoordinatorClient::connect(&grid.addr, &ChannelOptions::default()).await?;
    // Read when every compile is in flight, or at 3/4 of the hold with
    // however many made it by then (reported).
    let sent = Instant::now();
    let deadline = sent + hold.mul_f64(0.75);
    let (loaded, active_at_read, reached_after) = loop {
        let s = stats.stats().await?;
        let now = Instant::now();
        if s.tasks_active as usize >= in_flight || now >= deadline {
            // Let the last requests settle, then read.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let active = stats.stats().await?.tasks_active;
            break (memory(pid)?, active, now - sent);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    if (active_at_read as usize) < in_flight * 9 / 10 {
        bail!("only {active_at_read} of {in_flight} compiles got in flight");
    }
    let mut ok = 0;
    for c in calls {
        if c.await.unwrap_or(false) {
            ok += 1;
        }
    }
    let after = memory(pid)?;
    Ok(json!({
        "mode": "memory",
        "sim_workers": sim_workers,
        "in_flight": in_flight,
        "hold_s": hold.as_secs(),
        "input_bytes": input_bytes,
        "input_compressed_bytes": task(5_000_000, input_bytes, Some(&corpus)).input.encoded().len(),
        "register_s": reg_time.as_secs_f64(),
        "rss_idle": idle.0,
        "rss_workers": with_workers.0,
        "rss_in_flight": loaded.0,
        "hwm_in_flight": loaded.1,
        "active_at_read": active_at_read,
        "in_flight_after_s": reached_after.as_secs_f64(),
        "rss_after": after.0,
        "hwm_after": after.1,
        "completed": ok,
    }))
}

async fn payload_bench(
    hg_coord: &Path,
    file: &Path,
    runs: usize,
) -> anyhow::Result<serde_json::Value> {
    let raw = std::fs::read(file)?;
    let mut grid = start_coord(hg_coord, &[], None).await?;
    grid.add_worker("echo-0", 4, 0, true)?;
    grid.wait_workers(1).await?;
    let mut client = CoordinatorClient::connect(&grid.addr, &ChannelOptions::default()).await?;
    let mut samples = Vec::new();
    for r in 0..runs + 1 {
        // A different first line each run: a cache miss every time.
        let mut text = format!("# 1 \"payload_{r}.c\"\n").into_bytes();
        text.extend_from_slice(&raw);
        let started = Instant::now();
        let input = Payload::compress(text.clone());
        let compressed = started.elapsed();
        let mut t = CompileTask::new(
            identity(),
            Language::PreprocessedC,
            vec!["-O2".into()],
            "payload.c",
            input.clone(),
        );
        t.id = hybridgrid_core::task::TaskId(format!("payload-{r}"));
        let sent = Instant::now();
        let out = client.compile(&t).await?;
        let rtt = sent.elapsed();
        let obj = out
            .output(OutputKind::Object)
            .context("no object returned")?
            .data
            .decode()?;
        let total = started.elapsed();
        if obj.len() != text.len() {
            bail!("echoed object has {} bytes, sent {}", obj.len(), text.len());
        }
        if r == 0 {
            continue; // warm-up
        }
        samples.push(json!({
            "raw_bytes": text.len(),
            "compressed_bytes": input.encoded().len(),
            "compress_s": compressed.as_secs_f64(),
            "round_trip_s": rtt.as_secs_f64(),
            "total_s": total.as_secs_f64(),
        }));
    }
    let (rss, hwm) = memory(grid.pid())?;
    Ok(json!({
        "mode": "payload",
        "runs": samples,
        "coord_rss": rss,
        "coord_hwm": hwm,
    }))
}

async fn worker(
    coordinator: String,
    id: String,
    slots: usize,
    delay_ms: u64,
    echo: bool,
) -> anyhow::Result<()> {
    let delay = Duration::from_millis(delay_ms);
    let exec: BoxCompile =
        BoxCloneSyncService::new(tower::service_fn(move |t: CompileTask| async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if echo {
                // As a worker returns an object: compressed by the producer.
                let data = t.input.decode()?;
                let mut out = CompileOutput::default();
                out.outputs.push(OutputFile {
                    kind: OutputKind::Object,
                    data: Payload::compress(data),
                });
                return Ok::<_, BoxError>(out);
            }
            Ok(noop_output())
        }));
    let listener = hybridgrid_net::server::bind("127.0.0.1", 0).await?;
    let addr = hybridgrid_net::server::local_addr(&listener);
    let mut info = WorkerInfo::new(
        WorkerId(id),
        addr.to_string(),
        WorkerSource::Handshake,
        capabilities(identity(), slots),
    );
    info.version = hybridgrid_net::VERSION.to_owned();
    let server = WorkerServer::new(info.clone(), exec, slots);
    let counters = server.counters();
    let (_tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(run_registration(
        coordinator,
        info,
        counters,
        Duration::from_secs(5),
        hybridgrid_net::client::ChannelOptions::default(),
        rx,
    ));
    hybridgrid_net::server::serve_worker(listener, server, std::future::pending()).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let out = match cli.cmd {
        Cmd::Inproc {
            clients,
            tasks,
            input_bytes,
            workers,
            cache,
            tmp,
        } => inproc(clients, tasks, input_bytes, workers, &cache, tmp.as_deref()).await?,
        Cmd::Loopback {
            hg_coord,
            clients,
            tasks,
            input_bytes,
            workers,
            tmp,
            cache,
        } => {
            loopback(
                &hg_coord,
                &clients,
                tasks,
                input_bytes,
                workers,
                tmp.as_deref(),
                &cache,
            )
            .await?
        }
        Cmd::Memory {
            hg_coord,
            sim_workers,
            in_flight,
            input_bytes,
            corpus,
            hold_s,
        } => {
            let hold = Duration::from_secs(hold_s);
            memory_bench(
                &hg_coord,
                sim_workers,
                in_flight,
                input_bytes,
                &corpus,
                hold,
            )
            .await?
        }
        Cmd::Payload {
            hg_coord,
            file,
            runs,
        } => payload_bench(&hg_coord, &file, runs).await?,
        Cmd::Worker {
            coordinator,
            id,
            slots,
            delay_ms,
            echo,
        } => {
            worker(coordinator, id, slots, delay_ms, echo).await?;
            return Ok(());
        }
    };
    println!("{out}");
    Ok(())
}
