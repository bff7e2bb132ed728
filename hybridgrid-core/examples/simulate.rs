//! Replays the recorded zstd compile trace on simulated pools with each
//! scheduling algorithm and prints a Markdown table.
//!
//! `cargo run --release -p hybridgrid-core --features sim --example simulate`
//! (`-- --small` skips the 1,000-worker pool, `-- --big-jobs N` runs it
//! with N jobs instead of 100,000, `-- --seeds` prints instead cost-aware's
//! makespan over P2C's on the 5-worker pools for ten stretchings of the
//! trace).

use std::time::Instant;

use hybridgrid_core::config::Algorithm;
use hybridgrid_core::sim::{self, SimConfig, SimReport, SimWorker};

fn row(pool: &str, jobs: usize, alg: Algorithm, r: &SimReport, wall: f64) {
    println!(
        "| {pool} | {jobs} | {alg:?} | {:.1} | {:.2} | {:.2} | {:.0}% | {} | {wall:.1} |",
        r.makespan.as_secs_f64(),
        r.p50.as_secs_f64(),
        r.p99.as_secs_f64(),
        r.utilisation * 100.0,
        r.failed,
    );
}

fn main() {
    let base = match sim::parse_trace(sim::ZSTD_TRACE) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    if std::env::args().any(|a| a == "--seeds") {
        seeds(&base);
        return;
    }
    let algs = [Algorithm::P2c, Algorithm::LeastLoaded, Algorithm::CostAware];
    println!(
        "| pool | jobs | algorithm | makespan (s) | p50 (s) | p99 (s) | utilisation | failed | wall (s) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mixed: Vec<SimWorker> = [1.0, 1.2, 1.6, 2.0, 4.0]
        .map(SimWorker::with_speed)
        .to_vec();
    let same = vec![SimWorker::with_speed(1.0); 5];
    let mut churn = mixed.clone();
    churn[0].failure_rate = 0.5;
    churn[1].leave_at = Some(std::time::Duration::from_secs(20));
    churn[2].join_at = std::time::Duration::from_secs(10);
    let jobs = sim::stretch(&base, 400, 7);
    for (name, pool) in [
        ("5 mixed 1:1.2:1.6:2:4", &mixed),
        ("5 equal", &same),
        ("5 mixed, failing/leaving/joining", &churn),
    ] {
        for alg in algs {
            let t = Instant::now();
            let r = sim::simulate(&SimConfig::new(alg, pool.clone(), jobs.clone()));
            row(name, jobs.len(), alg, &r, t.elapsed().as_secs_f64());
        }
    }
    if std::env::args().any(|a| a == "--small") {
        return;
    }
    let big: Vec<SimWorker> = (0..1000)
        .map(|i| SimWorker::with_speed([1.0, 1.2, 1.6, 2.0, 4.0][i % 5]))
        .collect();
    let n: usize = std::env::args()
        .skip_while(|a| a != "--big-jobs")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let jobs = sim::stretch(&base, n, 11);
    for alg in algs {
        let t = Instant::now();
        let r = sim::simulate(&SimConfig::new(alg, big.clone(), jobs.clone()));
        row("1000 mixed", jobs.len(), alg, &r, t.elapsed().as_secs_f64());
    }
}

/// Cost-aware's makespan over P2C's for trace seeds 1 to 10.
fn seeds(base: &[sim::TraceJob]) {
    let mixed: Vec<SimWorker> = [1.0, 1.2, 1.6, 2.0, 4.0]
        .map(SimWorker::with_speed)
        .to_vec();
    let same = vec![SimWorker::with_speed(1.0); 5];
    println!("| pool | trace seed | P2c (s) | CostAware (s) | ratio |");
    println!("|---|---|---|---|---|");
    for (name, pool) in [("5 mixed", &mixed), ("5 equal", &same)] {
        let mut ratios = Vec::new();
        for seed in 1..=10 {
            let jobs = sim::stretch(base, 400, seed);
            let run = |alg| {
                sim::simulate(&SimConfig::new(alg, pool.clone(), jobs.clone()))
                    .makespan
                    .as_secs_f64()
            };
            let (p, c) = (run(Algorithm::P2c), run(Algorithm::CostAware));
            ratios.push(c / p);
            println!("| {name} | {seed} | {p:.2} | {c:.2} | {:.3} |", c / p);
        }
        let mean = ratios.iter().sum::<f64>() / ratios.len() as f64;
        let max = ratios.iter().copied().fold(0.0, f64::max);
        println!("| {name} | mean (max) | | | {mean:.3} ({max:.3}) |");
    }
}
