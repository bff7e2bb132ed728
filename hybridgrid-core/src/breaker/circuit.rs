//! The circuit state machine of one worker.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::CircuitOpenError;
use crate::config::CircuitBreakerConfig;
use crate::worker::WorkerId;

/// The state of a circuit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CircuitState {
    /// Calls flow; outcomes are counted.
    Closed,
    /// One probe call is allowed; its outcome closes or reopens the circuit.
    HalfOpen,
    /// Calls are refused until the open timeout passes.
    Open,
}

impl CircuitState {
    /// The value of the `hybridgrid_circuit_state` gauge (0, 1, 2).
    pub fn gauge(self) -> f64 {
        match self {
            CircuitState::Closed => 0.0,
            CircuitState::HalfOpen => 1.0,
            CircuitState::Open => 2.0,
        }
    }

    /// `closed`, `half-open` or `open`.
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::HalfOpen => "half-open",
            CircuitState::Open => "open",
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            1 => CircuitState::HalfOpen,
            2 => CircuitState::Open,
            _ => CircuitState::Closed,
        }
    }
}

/// How a call ended, as the circuit counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The worker did its job (whatever the compiler's exit code).
    Success,
    /// The worker failed (unreachable, timed out, internal error).
    Failure,
    /// Not the worker's doing (a bad task, say): not counted.
    Ignored,
}

struct Machine {
    /// Outcomes of the last `request_threshold` counted calls (true = failure).
    window: VecDeque<bool>,
    failures: u32,
    open_until: Instant,
}

struct Circuit {
    worker: WorkerId,
    config: CircuitBreakerConfig,
    base: Instant,
    machine: Mutex<Machine>,
    state: AtomicU8,
    /// Nanoseconds after `base` at which an open circuit may probe.
    open_until_ns: AtomicU64,
    probe_out: AtomicBool,
}

/// One worker's circuit, shared by its [`Breaker`](super::Breaker)s and read
/// by the scheduler. Cheap to clone.
#[derive(Clone)]
pub struct CircuitHandle(Arc<Circuit>);

impl std::fmt::Debug for CircuitHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitHandle")
            .field("worker", &self.0.worker)
            .field("state", &self.state())
            .finish()
    }
}

/// The right to make one call through a circuit. Dropping it without
/// [`Ticket::record`] (a cancelled call) counts nothing and frees the probe.
#[derive(Debug)]
pub struct Ticket {
    circuit: CircuitHandle,
    probe: bool,
    done: bool,
}

impl Ticket {
    /// Counts the call's outcome.
    pub fn record(mut self, outcome: Outcome) {
        self.done = true;
        self.circuit.record(self.probe, outcome);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.done {
            self.circuit.record(self.probe, Outcome::Ignored);
        }
    }
}

impl CircuitHandle {
    /// A closed circuit for `worker`.
    pub fn new(worker: WorkerId, config: CircuitBreakerConfig) -> Self {
        let base = Instant::now();
        let cap = config.request_threshold.max(1) as usize;
        let h = CircuitHandle(Arc::new(Circuit {
            worker,
            config,
            base,
            machine: Mutex::new(Machine {
                window: VecDeque::with_capacity(cap),
                failures: 0,
                open_until: base,
            }),
            state: AtomicU8::new(0),
            open_until_ns: AtomicU64::new(0),
            probe_out: AtomicBool::new(false),
        }));
        h.publish(CircuitState::Closed);
        h
    }

    /// The worker this circuit guards.
    pub fn worker(&self) -> &WorkerId {
        &self.0.worker
    }

    fn lock(&self) -> MutexGuard<'_, Machine> {
        self.0.machine.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn raw_state(&self) -> CircuitState {
        CircuitState::from_u8(self.0.state.load(Ordering::Acquire))
    }

    fn publish(&self, s: CircuitState) {
        self.0.state.store(
            match s {
                CircuitState::Closed => 0,
                CircuitState::HalfOpen => 1,
                CircuitState::Open => 2,
            },
            Ordering::Release,
        );
        metrics::gauge!("hybridgrid_circuit_state", "worker" => self.0.worker.0.clone())
            .set(s.gauge());
    }

    /// The state, moving an open circuit whose timeout passed to half-open.
    pub fn state(&self) -> CircuitState {
        let s = self.raw_state();
        if s == CircuitState::Open {
            let mut m = self.lock();
            self.maybe_half_open(&mut m);
        }
        self.raw_state()
    }

    fn maybe_half_open(&self, m: &mut Machine) {
        if self.raw_state() == CircuitState::Open && Instant::now() >= m.open_until {
            self.0.probe_out.store(false, Ordering::Release);
            self.publish(CircuitState::HalfOpen);
            tracing::info!(worker = %self.0.worker, "circuit half-open");
        }
    }

    /// True if a call would be admitted now. Cheap (no lock); used by the
    /// scheduler to route around open workers.
    pub fn admits(&self) -> bool {
        match self.raw_state() {
            CircuitState::Closed => true,
            CircuitState::HalfOpen => !self.0.probe_out.load(Ordering::Acquire),
            CircuitState::Open => {
                let until = self.0.open_until_ns.load(Ordering::Acquire);
                Instant::now().saturating_duration_since(self.0.base) >= Duration::from_nanos(until)
            }
        }
    }

    /// Takes the right to make one call, or refuses if the circuit is open
    /// (or half-open with its probe already out).
    pub fn try_acquire(&self) -> Result<Ticket, CircuitOpenError> {
        let refuse = || CircuitOpenError {
            worker: self.0.worker.clone(),
        };
        if self.raw_state() == CircuitState::Closed {
            return Ok(self.ticket(false));
        }
        let mut m = self.lock();
        self.maybe_half_open(&mut m);
        match self.raw_state() {
            CircuitState::Closed => Ok(self.ticket(false)),
            CircuitState::Open => Err(refuse()),
            CircuitState::HalfOpen => {
                if self.0.probe_out.swap(true, Ordering::AcqRel) {
                    Err(refuse())
                } else {
                    Ok(self.ticket(true))
                }
            }
        }
    }

    fn ticket(&self, probe: bool) -> Ticket {
        Ticket {
            circuit: self.clone(),
            probe,
            done: false,
        }
    }

    fn open(&self, m: &mut Machine, failure_rate: f64) {
        m.window.clear();
        m.failures = 0;
        m.open_until = Instant::now() + self.0.config.open_timeout;
        let ns = m
            .open_until
            .saturating_duration_since(self.0.base)
            .as_nanos();
        self.0
            .open_until_ns
            .store(u64::try_from(ns).unwrap_or(u64::MAX), Ordering::Release);
        self.publish(CircuitState::Open);
        tracing::warn!(worker = %self.0.worker, failure_rate, "circuit opened");
    }

    fn record(&self, probe: bool, outcome: Outcome) {
        let mut m = self.lock();
        if probe {
            match outcome {
                Outcome::Ignored => self.0.probe_out.store(false, Ordering::Release),
                Outcome::Success => {
                    m.window.clear();
                    m.failures = 0;
                    self.0.probe_out.store(false, Ordering::Release);
                    self.publish(CircuitState::Closed);
                    tracing::info!(worker = %self.0.worker, "circuit closed");
                }
                Outcome::Failure => self.open(&mut m, 1.0),
            }
            return;
        }
        // Late results of calls admitted before the circuit opened do not
        // move an open or half-open circuit.
        if outcome == Outcome::Ignored || self.raw_state() != CircuitState::Closed {
            return;
        }
        let cap = self.0.config.request_threshold.max(1) as usize;
        if m.window.len() == cap && m.window.pop_front() == Some(true) {
            m.failures -= 1;
        }
        let failed = outcome == Outcome::Failure;
        m.window.push_back(failed);
        m.failures += u32::from(failed);
        if m.window.len() >= cap {
            let rate = f64::from(m.failures) / m.window.len() as f64;
            if rate >= self.0.config.failure_rate_threshold {
                self.open(&mut m, rate);
            }
        }
    }
}
