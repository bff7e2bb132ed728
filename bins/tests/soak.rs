//! Soak: 8 concurrent clients compile zlib's sources through a real grid
//! over and over while workers are killed (SIGKILL) or stopped (SIGTERM)
//! at random and restarted. Every object must equal a plain compile and
//! every compile must come back: zero incorrect objects, zero lost tasks.
//!
//! `HG_SOAK_SECS` sets the length (default 60 s, so CI stays quick);
//! `HG_SOAK_REPORT=FILE` writes the figures as markdown (used for
//! docs/reliability.md by `scripts/soak.sh`).

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::*;

const CLIENTS: usize = 8;
const WORKERS: usize = 3;
/// A compile that takes longer than this counts as lost.
const LOST_AFTER: Duration = Duration::from_secs(120);

#[derive(Default)]
struct Figures {
    compiles: AtomicU64,
    remote: AtomicU64,
    fallbacks: AtomicU64,
    failures: AtomicU64,
    wrong: AtomicU64,
    lost: AtomicU64,
    kills: AtomicU64,
    terms: AtomicU64,
    slowest_ms: AtomicU64,
}

/// A small xorshift generator: reproducible chaos from a printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// zlib's C sources and the plain compile of each.
fn reference(src: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut names: Vec<String> = std::fs::read_dir(src)
        .expect("read zlib dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".c"))
        .collect();
    names.sort();
    for n in names {
        let o = run_in(src, "cc", &["-O2", "-I.", "-c", &n, "-o", "ref.o"], &[]);
        if o.code == 0 {
            out.insert(n, read(src, "ref.o"));
        }
    }
    out
}

#[test]
fn soak_with_workers_restarted_at_random() {
    let Some(tarball) = require("zlib_") else {
        return;
    };
    let secs: u64 = std::env::var("HG_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let seed: u64 = std::env::var("HG_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64 | 1)
                .unwrap_or(88172645463325252)
        });
    eprintln!("soak: {secs} s, seed {seed}");
    let tmp = tempdir();
    let src = extract(&tarball, tmp.path());
    let refs = Arc::new(reference(&src));
    assert!(
        refs.len() >= 10,
        "only {} zlib sources compiled",
        refs.len()
    );

    // The shared tier would answer repeats without a worker: off, so every
    // compile goes through the scheduler to a worker.
    let c = start_coordinator_env(
        &[],
        &[
            ("HG_CACHE__ENABLED", "false"),
            ("HG_COORDINATOR__HEARTBEAT_TTL", "6s"),
        ],
    );
    let coord = c.grpc.clone();
    let coord_pid = c.proc.child.id();
    let workers: Arc<Mutex<Vec<Option<Worker>>>> = Arc::new(Mutex::new(
        (0..WORKERS)
            .map(|i| Some(start_worker(&coord, &format!("w{i}"), &[])))
            .collect(),
    ));
    let figures = Arc::new(Figures::default());
    let stop = Arc::new(AtomicBool::new(false));
    let max_worker_rss = Arc::new(AtomicU64::new(0));
    let mut coord_peak = 0u64;

    // Chaos: every 2-6 s a random worker is killed or stopped, and
    // restarted a moment later under the same id.
    let chaos = {
        let workers = workers.clone();
        let figures = figures.clone();
        let stop = stop.clone();
        let coord = coord.clone();
        let max_worker_rss = max_worker_rss.clone();
        std::thread::spawn(move || {
            let mut rng = Rng(seed);
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(2000 + rng.below(4000)));
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let i = rng.below(WORKERS as u64) as usize;
                let victim = workers.lock().ok().and_then(|mut w| w[i].take());
                if let Some(mut w) = victim {
                    max_worker_rss
                        .fetch_max(rss_kb(w.proc.child.id(), "VmHWM:"), Ordering::Relaxed);
                    if rng.below(2) == 0 {
                        w.proc.kill();
                        figures.kills.fetch_add(1, Ordering::Relaxed);
                    } else {
                        let _ = w.proc.terminate(Duration::from_secs(30));
                        figures.terms.fetch_add(1, Ordering::Relaxed);
                    }
                    drop(w);
                    std::thread::sleep(Duration::from_millis(500 + rng.below(1500)));
                    let fresh = start_worker(&coord, &format!("w{i}"), &[]);
                    if let Ok(mut ws) = workers.lock() {
                        ws[i] = Some(fresh);
                    }
                }
            }
        })
    };

    let deadline = Instant::now() + Duration::from_secs(secs);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let refs = refs.clone();
            let figures = figures.clone();
            let src = src.clone();
            let coord = coord.clone();
            std::thread::spawn(move || {
                let out_dir = src.join(format!("out{c}"));
                std::fs::create_dir_all(&out_dir).expect("mkdir");
                let names: Vec<&String> = refs.keys().collect();
                let mut k = c;
                while Instant::now() < deadline {
                    let name = names[k % names.len()];
                    k += 1;
                    let obj: PathBuf = out_dir.join(name.replace(".c", ".o"));
                    let _ = std::fs::remove_file(&obj);
                    let obj_s = obj.display().to_string();
                    let t0 = Instant::now();
                    let o = run_in(
                        &src,
                        HGBUILD,
                        &[
                            "--coordinator",
                            &coord,
                            "-v",
                            "cc",
                            "-O2",
                            "-I.",
                            "-c",
                            name,
                            "-o",
                            &obj_s,
                        ],
                        &[("HG_CACHE__ENABLED", "false")],
                    );
                    let took = t0.elapsed();
                    figures.compiles.fetch_add(1, Ordering::Relaxed);
                    figures
                        .slowest_ms
                        .fetch_max(took.as_millis() as u64, Ordering::Relaxed);
                    if took > LOST_AFTER || o.code == 124 {
                        figures.lost.fetch_add(1, Ordering::Relaxed);
                        eprintln!("LOST: {name} took {took:?}\n{}", o.stderr);
                        continue;
                    }
                    if o.code != 0 {
                        figures.failures.fetch_add(1, Ordering::Relaxed);
                        eprintln!("FAILED: {name} exit {}\n{}", o.code, o.stderr);
                        continue;
                    }
                    if o.stderr.contains("[remote ") {
                        figures.remote.fetch_add(1, Ordering::Relaxed);
                    }
                    if o.stderr.contains("compiling locally") {
                        figures.fallbacks.fetch_add(1, Ordering::Relaxed);
                    }
                    match std::fs::read(&obj) {
                        Ok(bytes) if Some(&bytes) == refs.get(name.as_str()) => {}
                        _ => {
                            figures.wrong.fetch_add(1, Ordering::Relaxed);
                            eprintln!("WRONG OBJECT: {name}\n{}", o.stderr);
                        }
                    }
                }
            })
        })
        .collect();
    while Instant::now() < deadline {
        coord_peak = coord_peak.max(rss_kb(coord_pid, "VmRSS:"));
        std::thread::sleep(Duration::from_millis(500));
    }
    for c in clients {
        c.join().expect("client thread");
    }
    stop.store(true, Ordering::Relaxed);
    chaos.join().expect("chaos thread");
    coord_peak = coord_peak.max(rss_kb(coord_pid, "VmHWM:"));
    if let Ok(ws) = workers.lock() {
        for w in ws.iter().flatten() {
            max_worker_rss.fetch_max(rss_kb(w.proc.child.id(), "VmHWM:"), Ordering::Relaxed);
        }
    }

    let f = &figures;
    let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let report = format!(
        "| duration | clients | workers | compiles | remote | local fallbacks | failures | wrong objects | lost | SIGKILLs | SIGTERMs | slowest compile | coordinator peak RSS | worker peak RSS |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n\
         | {secs} s | {CLIENTS} | {WORKERS} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} s | {:.1} MB | {:.1} MB |\n",
        g(&f.compiles),
        g(&f.remote),
        g(&f.fallbacks),
        g(&f.failures),
        g(&f.wrong),
        g(&f.lost),
        g(&f.kills),
        g(&f.terms),
        g(&f.slowest_ms) as f64 / 1000.0,
        coord_peak as f64 / 1024.0,
        g(&max_worker_rss) as f64 / 1024.0,
    );
    eprintln!("soak (seed {seed}):\n{report}");
    if let Some(path) = std::env::var_os("HG_SOAK_REPORT") {
        std::fs::write(&path, format!("seed {seed}\n\n{report}")).expect("write report");
    }
    assert!(g(&f.compiles) > 0);
    assert_eq!(g(&f.failures), 0, "compiles failed");
    assert_eq!(g(&f.wrong), 0, "incorrect objects");
    assert_eq!(g(&f.lost), 0, "lost compiles");
    assert!(
        g(&f.kills) + g(&f.terms) > 0,
        "no fault was injected in {secs} s"
    );
    assert!(
        g(&f.remote) * 2 > g(&f.compiles),
        "most compiles should still run remotely: {} of {}",
        g(&f.remote),
        g(&f.compiles)
    );
    drop(c);
}
