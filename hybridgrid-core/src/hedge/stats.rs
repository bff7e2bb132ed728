//! Durations learned per compiler.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::task::CompilerIdentity;

const WINDOW: usize = 128;

#[derive(Default)]
struct Samples {
    ring: Vec<Duration>,
    next: usize,
    p90: Duration,
}

impl Samples {
    fn add(&mut self, d: Duration) {
        if self.ring.len() < WINDOW {
            self.ring.push(d);
        } else {
            self.ring[self.next] = d;
            self.next = (self.next + 1) % WINDOW;
        }
        let mut v = self.ring.clone();
        let k = (v.len() * 9).div_ceil(10).saturating_sub(1);
        let (_, p, _) = v.select_nth_unstable(k);
        self.p90 = *p;
    }
}

/// The p90 duration of recent successful tasks, per compiler.
#[derive(Clone, Default)]
pub struct Latencies(Arc<Mutex<HashMap<CompilerIdentity, Samples>>>);

impl std::fmt::Debug for Latencies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Latencies")
    }
}

impl Latencies {
    /// Records a successful task's duration.
    pub fn record(&self, compiler: &CompilerIdentity, d: Duration) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match m.get_mut(compiler) {
            Some(s) => s.add(d),
            None => {
                let mut s = Samples::default();
                s.add(d);
                m.insert(compiler.clone(), s);
            }
        }
    }

    /// The p90 and the number of samples (up to the window) for `compiler`.
    pub fn p90(&self, compiler: &CompilerIdentity) -> Option<(Duration, usize)> {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.get(compiler).map(|s| (s.p90, s.ring.len()))
    }
}
