//! Test support library shared by the integration tests and the end-to-end
//! tests: `tests/integration/main.rs` and `tests/e2e/main.rs` both include it
//! with `#[path = "../support/mod.rs"] mod support;`.
//!
//! Independent of the hub's own code on purpose: the fake apiserver has its
//! own minimal HTTP/1.1 implementation so the tests do not share bugs with
//! the code under test.
//!
//! Rules kept by every helper here: loopback only, everything bounded in
//! time, background threads stop by themselves (on drop or after a bounded
//! timeout), and waiting is done by polling a condition against a deadline.

pub mod client;
pub mod fake_apiserver;
pub mod hub;
pub mod k8s_wire;
pub mod live_collection;
pub mod pki;

pub use fake_apiserver::{Behaviour, FakeApiserver, LivePoll, StreamEnd, TokenIssuer};
pub use hub::Hub;
pub use k8s_wire::{
    Encoding, json_event, json_initial_events_end_bookmark, pb_event,
    pb_initial_events_end_bookmark,
};
pub use live_collection::{LiveCollection, RecordedEvent, WatchRecorder};
pub use pki::TestPki;

use std::time::{Duration, Instant};

/// Interval used by the polling helpers.
pub const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// Polls `cond` until it returns true or `timeout` elapses. Returns whether
/// the condition became true. `cond` is always evaluated at least once, and
/// once more at the deadline.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return cond();
        }
        std::thread::sleep(POLL_INTERVAL.min(deadline - now));
    }
}

/// Polls `f` until it returns `Some` or `timeout` elapses.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let mut out = None;
    wait_until(timeout, || {
        out = f();
        out.is_some()
    });
    out
}

/// A free loopback TCP port (bound to port 0, then released).
pub fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// `N` distinct free loopback TCP ports (all bound at once, then released).
pub fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<std::net::TcpListener> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().expect("local_addr").port())
}
