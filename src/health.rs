//! Health of each apiserver: a pure hysteresis (`Hysteresis`), the state shared
//! with the balancer and the metrics (`HealthState`), and one prober thread per
//! server.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

/// What is known about one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Not probed yet.
    Unknown,
    Healthy,
    Unhealthy,
}

impl Health {
    fn to_u8(self) -> u8 {
        match self {
            Health::Unknown => 0,
            Health::Healthy => 1,
            Health::Unhealthy => 2,
        }
    }

    fn from_u8(v: u8) -> Health {
        match v {
            1 => Health::Healthy,
            2 => Health::Unhealthy,
            _ => Health::Unknown,
        }
    }
}

/// Consecutive-result hysteresis for one server: unhealthy after
/// `failed_retry` failures in a row, healthy after `healthy_threshold` successes
/// in a row, from the start too (a server is unknown, and used, until the
/// thresholds decide: one bad or good answer at start decides nothing).
#[derive(Debug, Clone)]
pub struct Hysteresis {
    state: Health,
    successes: u32,
    failures: u32,
    failed_retry: u32,
    healthy_threshold: u32,
}

impl Hysteresis {
    pub fn new(failed_retry: u32, healthy_threshold: u32) -> Self {
        Hysteresis {
            state: Health::Unknown,
            successes: 0,
            failures: 0,
            failed_retry: failed_retry.max(1),
            healthy_threshold: healthy_threshold.max(1),
        }
    }

    #[cfg(test)]
    pub fn state(&self) -> Health {
        self.state
    }

    /// Records one probe result; returns the new state if it changed.
    pub fn observe(&mut self, ok: bool) -> Option<Health> {
        if ok {
            self.successes += 1;
            self.failures = 0;
        } else {
            self.failures += 1;
            self.successes = 0;
        }
        let next = match (self.state, ok) {
            (Health::Unknown | Health::Healthy, false) if self.failures >= self.failed_retry => {
                Health::Unhealthy
            }
            (Health::Unknown | Health::Unhealthy, true)
                if self.successes >= self.healthy_threshold =>
            {
                Health::Healthy
            }
            (state, _) => state,
        };
        if next == self.state {
            return None;
        }
        self.state = next;
        Some(next)
    }
}

/// Health of every server, shared by the prober (writer) and everyone else.
pub struct HealthState {
    servers: Vec<AtomicU8>,
    last_error: Vec<Mutex<String>>,
    /// Whether each server has been probed at least once.
    probed: Vec<AtomicBool>,
    /// Bumped on every transition and first probe; waiters use it to notice changes.
    generation: AtomicU64,
    changed: (Mutex<()>, Condvar),
}

impl HealthState {
    pub fn new(n_servers: usize) -> Self {
        HealthState {
            servers: (0..n_servers)
                .map(|_| AtomicU8::new(Health::Unknown.to_u8()))
                .collect(),
            last_error: (0..n_servers).map(|_| Mutex::new(String::new())).collect(),
            probed: (0..n_servers).map(|_| AtomicBool::new(false)).collect(),
            generation: AtomicU64::new(0),
            changed: (Mutex::new(()), Condvar::new()),
        }
    }

    pub fn len(&self) -> usize {
        self.servers.len()
    }

    pub fn get(&self, server: usize) -> Health {
        Health::from_u8(self.servers[server].load(Ordering::SeqCst))
    }

    pub fn set(&self, server: usize, health: Health) {
        self.servers[server].store(health.to_u8(), Ordering::SeqCst);
        self.notify();
    }

    /// Records that a server was probed (its state may not change).
    pub fn record_probe(&self, server: usize) {
        if !self.probed[server].swap(true, Ordering::SeqCst) {
            self.notify();
        }
    }

    fn notify(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        let _guard = self.changed.0.lock().unwrap_or_else(|e| e.into_inner());
        self.changed.1.notify_all();
    }

    /// Whether the thresholds hold every server unhealthy (none unknown).
    pub fn all_unhealthy(&self) -> bool {
        (0..self.len()).all(|i| self.get(i) == Health::Unhealthy)
    }

    pub fn any_healthy(&self) -> bool {
        (0..self.len()).any(|i| self.get(i) == Health::Healthy)
    }

    /// Waits (at most `timeout`) until at least one server has been probed,
    /// so a request at start-up is not sent to an apiserver that may be
    /// unreachable before anything is known.
    pub fn wait_first_probe(&self, timeout: Duration) {
        let started = std::time::Instant::now();
        loop {
            let generation = self.generation();
            if !self.nothing_known() {
                return;
            }
            let left = timeout.saturating_sub(started.elapsed());
            if left.is_zero() {
                return;
            }
            self.wait_change(generation, left);
        }
    }

    /// Whether no server has been probed yet.
    pub fn nothing_known(&self) -> bool {
        self.probed.iter().all(|p| !p.load(Ordering::SeqCst))
    }

    /// Which servers may take requests: the healthy ones; while none is, the
    /// ones not probed yet (so requests at start-up are not refused early).
    pub fn usable(&self) -> Vec<bool> {
        let states: Vec<Health> = (0..self.len()).map(|i| self.get(i)).collect();
        let wanted = if states.contains(&Health::Healthy) {
            Health::Healthy
        } else {
            Health::Unknown
        };
        states.iter().map(|&s| s == wanted).collect()
    }

    pub fn set_last_error(&self, server: usize, error: String) {
        *self.last_error[server]
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = error;
    }

    pub fn last_error(&self, server: usize) -> String {
        self.last_error[server]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Waits until the generation moves past `seen` or `timeout` passes.
    pub fn wait_change(&self, seen: u64, timeout: Duration) {
        let guard = self.changed.0.lock().unwrap_or_else(|e| e.into_inner());
        let _ = self
            .changed
            .1
            .wait_timeout_while(guard, timeout, |_| self.generation() == seen);
    }
}

/// Prober settings, from the `--heartbeat-*` flags.
#[derive(Debug, Clone)]
pub struct ProbeSettings {
    pub interval: Duration,
    pub failed_retry: u32,
    pub healthy_threshold: u32,
}

/// Starts one prober thread per server (`yh-health-{i}`), each on its own
/// schedule, so a server whose probe hangs to its timeout never delays the
/// decisions about the others. `probe(i)` checks server `i` once (with its own
/// timeout) and says why it failed; `names[i]` is used in logs.
pub fn spawn_probers(
    state: Arc<HealthState>,
    names: Vec<String>,
    settings: ProbeSettings,
    probe: impl Fn(usize) -> Result<(), String> + Send + Sync + 'static,
) -> std::io::Result<()> {
    let probe = Arc::new(probe);
    for (i, name) in names.into_iter().enumerate() {
        let (state, probe, settings) = (state.clone(), probe.clone(), settings.clone());
        thread::Builder::new()
            .name(format!("yh-health-{i}"))
            .spawn(move || {
                let mut hysteresis =
                    Hysteresis::new(settings.failed_retry, settings.healthy_threshold);
                loop {
                    let result = probe(i);
                    match &result {
                        Ok(()) => state.set_last_error(i, String::new()),
                        Err(e) => {
                            log::debug!("probe of {name} failed: {e}");
                            state.set_last_error(i, e.clone());
                        }
                    }
                    state.record_probe(i);
                    if let Some(next) = hysteresis.observe(result.is_ok()) {
                        match next {
                            Health::Healthy => log::info!("apiserver {name} is healthy"),
                            _ => log::info!(
                                "apiserver {name} is unhealthy: {}",
                                result.err().unwrap_or_default()
                            ),
                        }
                        state.set(i, next);
                    }
                    thread::sleep(settings.interval);
                }
            })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(failed_retry: u32, healthy_threshold: u32, results: &str, expected: &str) {
        let mut h = Hysteresis::new(failed_retry, healthy_threshold);
        let states: String = results
            .chars()
            .map(|c| {
                h.observe(c == '+');
                match h.state() {
                    Health::Healthy => 'H',
                    Health::Unhealthy => 'U',
                    Health::Unknown => '?',
                }
            })
            .collect();
        assert_eq!(states, expected, "results {results}");
    }

    #[test]
    fn the_first_probe_decides_nothing_alone() {
        check(3, 2, "+", "?");
        check(3, 2, "++", "?H");
        check(3, 2, "-", "?");
        check(3, 2, "---", "??U");
        check(3, 2, "-+-+-+", "??????");
        check(1, 1, "-", "U");
        check(1, 1, "+", "H");
    }

    #[test]
    fn a_flapping_readyz_does_not_flip_the_state() {
        check(3, 2, "++-+-+--+-", "?HHHHHHHHH");
        check(3, 2, "---+-+-++", "??UUUUUUH");
    }

    #[test]
    fn unhealthy_only_after_failed_retry_failures_in_a_row() {
        check(3, 2, "++--+---", "?HHHHHHU");
        check(1, 2, "++-", "?HU");
    }

    #[test]
    fn healthy_again_only_after_threshold_successes_in_a_row() {
        check(3, 2, "----+-++", "??UUUUUH");
        check(3, 1, "----+", "??UUH");
    }

    #[test]
    fn usable_prefers_healthy_then_unknown() {
        let state = HealthState::new(3);
        assert_eq!(state.usable(), [true, true, true]);
        state.set(1, Health::Unhealthy);
        assert_eq!(state.usable(), [true, false, true]);
        state.set(2, Health::Healthy);
        assert_eq!(state.usable(), [false, false, true]);
        state.set(2, Health::Unhealthy);
        state.set(0, Health::Unhealthy);
        assert_eq!(state.usable(), [false, false, false]);
    }
}
