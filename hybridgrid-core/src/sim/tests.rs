use super::*;

fn hetero() -> Vec<SimWorker> {
    [1.0, 1.2, 1.6, 2.0, 4.0]
        .map(SimWorker::with_speed)
        .to_vec()
}

fn trace() -> Vec<TraceJob> {
    let base = parse_trace(ZSTD_TRACE).expect("trace");
    stretch(&base, 400, 7)
}

fn makespan(algorithm: Algorithm, workers: Vec<SimWorker>) -> f64 {
    let r = simulate(&SimConfig::new(algorithm, workers, trace()));
    assert_eq!(r.failed, 0, "{r:?}");
    r.makespan.as_secs_f64()
}

#[test]
fn deterministic() {
    let cfg = SimConfig::new(Algorithm::P2c, hetero(), trace());
    assert_eq!(simulate(&cfg), simulate(&cfg));
}

/// The design goal. Not met yet: with late binding and per-file learned
/// costs cost-aware gains ~9% over P2C on this trace (about -15% in an
/// experiment that gave it the true costs); see `docs/benchmarks.md`. Run
/// with `--ignored` to check.
#[test]
#[ignore = "goal not met yet: cost-aware is ~9% faster than P2C on the zstd trace"]
fn cost_aware_beats_p2c_by_15_percent_on_a_mixed_pool() {
    let p2c = makespan(Algorithm::P2c, hetero());
    let cost = makespan(Algorithm::CostAware, hetero());
    assert!(cost <= p2c * 0.85, "cost-aware {cost:.1}s vs p2c {p2c:.1}s");
}

#[test]
fn cost_aware_is_no_worse_on_a_homogeneous_pool() {
    let same = vec![SimWorker::with_speed(1.0); 5];
    let p2c = makespan(Algorithm::P2c, same.clone());
    let cost = makespan(Algorithm::CostAware, same);
    assert!(cost <= p2c * 1.02, "cost-aware {cost:.1}s vs p2c {p2c:.1}s");
}

#[test]
fn failures_joins_and_leaves_are_survived() {
    let mut workers = hetero();
    workers[0].failure_rate = 1.0;
    workers[1].leave_at = Some(Duration::from_secs(5));
    workers[2].join_at = Duration::from_secs(3);
    let r = simulate(&SimConfig::new(Algorithm::CostAware, workers, trace()));
    assert_eq!(r.completed + r.failed, 400);
    assert_eq!(r.failed, 0, "{r:?}");
}
