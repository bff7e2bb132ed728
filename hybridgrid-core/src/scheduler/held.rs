//! Tasks the cost-aware algorithm holds until a worker slot frees, and their
//! order: the largest aged estimate first.

use std::cmp::Reverse;
use std::task::Waker;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::GridError;

use super::response::InFlight;
use super::*;

/// A held task's place in line: the largest estimated cost (aged, see
/// [`AGING`]) first, then the order of arrival.
pub(super) type HeldKey = (Reverse<u64>, u64);

/// A task the cost-aware scheduler holds until a slot frees.
pub(super) struct HeldEntry<S> {
    pub(super) attempt: Attempt,
    /// When it was first held.
    since: Instant,
    pub(super) waker: Option<Waker>,
    /// Set when it is placed (or cannot be): the worker's service and the
    /// in-flight guard, already counted in the worker's load.
    pub(super) placed: Option<Result<(S, InFlight), GridError>>,
}

/// A held task's place in line: its estimated cost (seconds at speed 1)
/// plus this much per second it has waited, so small tasks are not passed
/// over for ever by larger ones (the p99 latency) while the largest still
/// go first.
const AGING: f64 = 0.1;

/// Lines of held tasks up to this long are re-ordered on every pass.
const REKEY_ALWAYS: usize = 256;
/// Longer lines are re-ordered at most this often.
const REKEY_EVERY: Duration = Duration::from_millis(100);

/// At most this many held tasks decline a free slot (waiting for a busy
/// faster worker) in one placement pass; the rest wait for the next event.
pub(super) const MAX_DECLINES: usize = 16;

impl<D, S> Shared<D, S> {
    /// Puts the held tasks in order of their current estimates (which
    /// change as compiles complete and run) and of how long they have
    /// waited ([`AGING`]): every pass for a short line,
    /// at most every [`REKEY_EVERY`] for a long one.
    pub(super) fn rekey(&mut self) {
        let now = Instant::now();
        if self.held.len() > REKEY_ALWAYS && self.rekeyed.is_some_and(|t| now < t + REKEY_EVERY) {
            return;
        }
        self.rekeyed = Some(now);
        let old = std::mem::take(&mut self.held);
        for ((_, seq), e) in old {
            let waited = now.saturating_duration_since(e.since).as_secs_f64();
            let aged = (AGING * waited * 1e6) as u64;
            let key = (
                Reverse(self.pool.held_cost(&e.attempt.task).saturating_add(aged)),
                seq,
            );
            self.keys.insert(seq, key);
            self.held.insert(key, e);
        }
    }

    /// Holds `attempt` under `key`.
    pub(super) fn hold(&mut self, key: HeldKey, attempt: Attempt) {
        self.keys.insert(key.1, key);
        let group = (
            attempt.task.compiler.clone(),
            attempt.task.target_arch.clone(),
        );
        *self.groups.entry(group).or_default() += 1;
        self.held.insert(
            key,
            HeldEntry {
                attempt,
                since: Instant::now(),
                waker: None,
                placed: None,
            },
        );
    }

    /// The held task number `seq`.
    pub(super) fn held_mut(&mut self, seq: u64) -> Option<&mut HeldEntry<S>> {
        let key = self.keys.get(&seq)?;
        self.held.get_mut(key)
    }

    /// Stops holding the task number `seq`.
    pub(super) fn unhold(&mut self, seq: u64) -> Option<HeldEntry<S>> {
        let key = self.keys.remove(&seq)?;
        let e = self.held.remove(&key)?;
        let group = (
            e.attempt.task.compiler.clone(),
            e.attempt.task.target_arch.clone(),
        );
        if let Some(n) = self.groups.get_mut(&group) {
            *n -= 1;
            if *n == 0 {
                self.groups.remove(&group);
            }
        }
        Some(e)
    }

    /// The waker of the first task still held.
    pub(super) fn first_held_waker(&self) -> Option<Waker> {
        self.held
            .values()
            .find(|e| e.placed.is_none())
            .and_then(|e| e.waker.clone())
    }
}
