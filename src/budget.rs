//! One memory budget for what the hub holds whole while requests are in
//! flight: cache copies of responses, request bodies read before sending,
//! offline answers, relay buffers. Each holder reserves its bytes before (or
//! as) it grows; past the budget a cache copy is given up (the client still
//! gets every byte), a relay uses a small buffer, and a request that needs
//! memory is answered 429 with `Retry-After`. So many clients at once can
//! slow the hub down, never make it grow past its container's limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Reservations grow in steps of this size, so a copy growing piece by piece
/// touches the shared counter rarely.
const STEP: usize = 64 * 1024;

pub struct MemoryBudget {
    limit: usize,
    used: AtomicUsize,
    /// Reservations refused because the budget was spent.
    pub refused: AtomicU64,
}

impl MemoryBudget {
    pub fn new(limit: usize) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget {
            limit,
            used: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
        })
    }

    /// Bytes reserved now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// An empty reservation, to grow later.
    pub fn empty(self: &Arc<Self>) -> Reservation {
        Reservation {
            budget: self.clone(),
            bytes: 0,
        }
    }

    /// Exactly `bytes` reserved, or `None` (counted) when they do not fit.
    pub fn reserve(self: &Arc<Self>, bytes: usize) -> Option<Reservation> {
        if !self.take(bytes) {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(Reservation {
            budget: self.clone(),
            bytes,
        })
    }

    fn take(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }
}

/// Bytes held against the budget, given back when dropped.
pub struct Reservation {
    budget: Arc<MemoryBudget>,
    bytes: usize,
}

impl Reservation {
    /// Makes the reservation cover at least `total` bytes; false (and
    /// unchanged) when the budget cannot give them.
    pub fn grow_to(&mut self, total: usize) -> bool {
        if total <= self.bytes {
            return true;
        }
        let target = total.div_ceil(STEP).saturating_mul(STEP).max(total);
        let more = target - self.bytes;
        if self.budget.take(more) {
            self.bytes = target;
            return true;
        }
        // A last step may not fit where the exact amount does.
        let exact = total - self.bytes;
        if exact < more && self.budget.take(exact) {
            self.bytes = total;
            return true;
        }
        self.budget.refused.fetch_add(1, Ordering::Relaxed);
        false
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_stay_within_the_limit_and_give_back_on_drop() {
        let budget = MemoryBudget::new(200 * 1024);
        let a = budget.reserve(100 * 1024).unwrap();
        let mut b = budget.empty();
        assert!(b.grow_to(1));
        assert!(b.grow_to(64 * 1024));
        assert!(!b.grow_to(101 * 1024), "would pass the limit");
        assert!(b.grow_to(100 * 1024), "exactly the rest fits");
        assert!(budget.reserve(1).is_none());
        assert_eq!(budget.refused.load(Ordering::Relaxed), 2);
        drop(a);
        assert_eq!(budget.used(), 100 * 1024);
        drop(b);
        assert_eq!(budget.used(), 0);
        assert!(budget.reserve(usize::MAX).is_none(), "no overflow");
    }

    #[test]
    fn concurrent_holders_never_exceed_the_limit() {
        let budget = MemoryBudget::new(1024 * 1024);
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let budget = budget.clone();
                std::thread::spawn(move || {
                    for i in 0..2000 {
                        if let Some(r) = budget.reserve(1 + i * 97 % 300_000) {
                            assert!(budget.used() <= budget.limit());
                            drop(r);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(budget.used(), 0);
    }
}
