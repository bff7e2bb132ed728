//! `scheduler:` settings: the placement algorithm, its weights and hedging.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Scheduling algorithms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Algorithm {
    /// Power of two choices over a weighted score.
    #[default]
    P2c,
    /// The worker with the fewest active tasks per slot.
    LeastLoaded,
    /// Learns worker speeds and minimises the build's makespan.
    CostAware,
}

/// `scheduler:` settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct SchedulerConfig {
    /// Which algorithm places tasks.
    pub algorithm: Algorithm,
    /// Weights of the P2C score.
    pub weights: ScoreWeights,
    /// Hedging of slow tasks on a second worker.
    pub hedge: HedgeConfig,
}

/// `scheduler.weights:` how much each worker property counts in the P2C
/// score (higher score wins). Each property is normalised to about 0..1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ScoreWeights {
    /// Bonus for a worker whose native architecture is the task's target.
    pub native_arch: f64,
    /// Bonus for a worker that cross-compiles to the task's target.
    pub cross_compile: f64,
    /// Bonus per core (up to 64 cores).
    pub cores: f64,
    /// Bonus per GiB of RAM (up to 128 GiB).
    pub memory: f64,
    /// Penalty per active task per slot.
    pub load: f64,
    /// Penalty for latency (EWMA `l` seconds counts `l / (l + 1)`).
    pub latency: f64,
    /// Bonus for a worker on the local network (found by mDNS).
    pub lan: f64,
}

impl Default for ScoreWeights {
    fn default() -> Self {
        ScoreWeights {
            native_arch: 1.0,
            cross_compile: 0.5,
            cores: 0.5,
            memory: 0.25,
            load: 4.0,
            latency: 1.0,
            lan: 0.25,
        }
    }
}

/// `scheduler.hedge:` running a slow task a second time on an idle worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct HedgeConfig {
    /// Whether to hedge at all.
    pub enabled: bool,
    /// Hedge when a task runs longer than this many times the p90 duration
    /// learned for its compiler.
    pub p90_multiplier: f64,
    /// Never hedge a task before it has run this long.
    #[serde(with = "humantime_serde")]
    pub min_delay: Duration,
    /// Durations to learn for a compiler before hedging its tasks.
    pub min_samples: u32,
}

impl Default for HedgeConfig {
    fn default() -> Self {
        HedgeConfig {
            enabled: true,
            p90_multiplier: 3.0,
            min_delay: Duration::from_secs(2),
            min_samples: 20,
        }
    }
}
