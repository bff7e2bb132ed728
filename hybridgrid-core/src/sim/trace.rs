//! Compile traces: one line per translation unit.

use std::time::Duration;

/// One compile of a trace.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceJob {
    /// The source file.
    pub name: String,
    /// Its preprocessed size in bytes (what the scheduler sees).
    pub bytes: u64,
    /// How long it took to compile on the reference machine (speed 1).
    pub cost: Duration,
}

/// A malformed trace line.
#[derive(Debug, thiserror::Error)]
#[error("trace line {line}: {reason}")]
pub struct TraceError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// Parses a CSV trace `file,preprocessed_bytes,compile_ms` (with a header).
pub fn parse_trace(csv: &str) -> Result<Vec<TraceJob>, TraceError> {
    let mut jobs = Vec::new();
    for (i, line) in csv.lines().enumerate().skip(1) {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let err = |reason: &str| TraceError {
            line: i + 1,
            reason: reason.to_owned(),
        };
        let mut parts = line.split(',');
        let (Some(name), Some(bytes), Some(ms), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(err("expected file,preprocessed_bytes,compile_ms"));
        };
        let bytes = bytes.parse().map_err(|_| err("bad preprocessed_bytes"))?;
        let ms: u64 = ms.parse().map_err(|_| err("bad compile_ms"))?;
        jobs.push(TraceJob {
            name: name.to_owned(),
            bytes,
            cost: Duration::from_millis(ms),
        });
    }
    Ok(jobs)
}

/// `n` jobs drawn from `base` in order, cycling, each cost and size scaled
/// by a deterministic factor in [0.5, 1.5) so repeats differ.
pub fn stretch(base: &[TraceJob], n: usize, seed: u64) -> Vec<TraceJob> {
    if base.is_empty() {
        return Vec::new();
    }
    let mut rng = super::Rng::new(seed);
    (0..n)
        .map(|i| {
            let j = &base[i % base.len()];
            let f = 0.5 + rng.unit();
            TraceJob {
                name: j.name.clone(),
                bytes: (j.bytes as f64 * f) as u64,
                cost: j.cost.mul_f64(f),
            }
        })
        .collect()
}

/// The trace recorded from zstd 1.5.7's sources (see
/// `benches/data/README.md`).
pub const ZSTD_TRACE: &str = include_str!("../../benches/data/zstd-1.5.7-gcc-O2.csv");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_recorded_trace_and_rejects_garbage() {
        let jobs = parse_trace(ZSTD_TRACE).expect("trace");
        assert!(jobs.len() >= 30, "{}", jobs.len());
        assert!(jobs.iter().all(|j| j.bytes > 0));
        let e = parse_trace("h\na,1\n").expect_err("short line");
        assert_eq!(e.line, 2);
        assert!(parse_trace("h\na,x,1\n").is_err());
        assert_eq!(stretch(&jobs, 100, 1).len(), 100);
        assert_eq!(stretch(&jobs, 100, 1), stretch(&jobs, 100, 1));
    }
}
