//! One memory budget for what the hub holds whole while requests are in
//! flight: cache copies of responses, request bodies read before sending,
//! offline answers, relay buffers. Each holder reserves its bytes before (or
//! as) it grows; past the budget a cache copy is given up (the client still
//! gets every byte), a relay uses a small buffer, and a request that needs
//! memory is answered 429 with `Retry-After`. So many clients at once can
//! slow the hub down, never make it grow past its container's limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// Reservations grow in steps of this size, so a copy growing piece by piece
/// touches the shared counter rarely.
const STEP: usize = 64 * 1024;

pub struct MemoryBudget {
    limit: usize,
    used: AtomicUsize,
    /// What cache copies hold, within half the limit: a slow reader of big
    /// responses never leaves kubelet's writes without room.
    copies: AtomicUsize,
    /// Whether the one holder allowed past the limit exists (see `Lane`).
    oversize_taken: AtomicBool,
    /// Reservations refused because the budget was spent.
    pub refused: AtomicU64,
    /// Times the one-at-a-time lane past the limit was used.
    pub oversize: AtomicU64,
}

/// What a reservation is for, and so which limit it is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    /// Bodies, offline answers, relay buffers: the whole budget.
    General,
    /// Cache copies: at most half the budget.
    Copy,
    /// One holder at a time past the limit: an offline list that can never
    /// fit, answered one at a time rather than refused forever.
    Oversize,
}

impl MemoryBudget {
    pub fn new(limit: usize) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget {
            limit,
            used: AtomicUsize::new(0),
            copies: AtomicUsize::new(0),
            oversize_taken: AtomicBool::new(false),
            refused: AtomicU64::new(0),
            oversize: AtomicU64::new(0),
        })
    }

    /// Bytes reserved now (the oversize lane not included).
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// An empty reservation, to grow later.
    pub fn empty(self: &Arc<Self>) -> Reservation {
        self.reservation(Lane::General)
    }

    /// An empty reservation for a cache copy (held to half the budget).
    pub fn empty_copy(self: &Arc<Self>) -> Reservation {
        self.reservation(Lane::Copy)
    }

    fn reservation(self: &Arc<Self>, lane: Lane) -> Reservation {
        Reservation {
            budget: self.clone(),
            bytes: 0,
            lane,
        }
    }

    /// Exactly `bytes` reserved, or `None` (counted) when they do not fit.
    pub fn reserve(self: &Arc<Self>, bytes: usize) -> Option<Reservation> {
        let mut reservation = self.empty();
        if !self.take(bytes, Lane::General) {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        reservation.bytes = bytes;
        Some(reservation)
    }

    fn take(&self, bytes: usize, lane: Lane) -> bool {
        let fits = |counter: &AtomicUsize, limit: usize| {
            counter
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                    used.checked_add(bytes).filter(|&total| total <= limit)
                })
                .is_ok()
        };
        match lane {
            Lane::Oversize => true,
            Lane::General => fits(&self.used, self.limit),
            Lane::Copy => {
                if !fits(&self.copies, self.limit / 2) {
                    return false;
                }
                if fits(&self.used, self.limit) {
                    return true;
                }
                self.copies.fetch_sub(bytes, Ordering::AcqRel);
                false
            }
        }
    }

    fn give_back(&self, bytes: usize, lane: Lane) {
        match lane {
            Lane::Oversize => self.oversize_taken.store(false, Ordering::Release),
            Lane::General => {
                self.used.fetch_sub(bytes, Ordering::AcqRel);
            }
            Lane::Copy => {
                self.copies.fetch_sub(bytes, Ordering::AcqRel);
                self.used.fetch_sub(bytes, Ordering::AcqRel);
            }
        }
    }
}

/// Bytes held against the budget, given back when dropped.
pub struct Reservation {
    budget: Arc<MemoryBudget>,
    bytes: usize,
    lane: Lane,
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
        if self.budget.take(more, self.lane) {
            self.bytes = target;
            return true;
        }
        // A last step may not fit where the exact amount does.
        let exact = total - self.bytes;
        if exact < more && self.budget.take(exact, self.lane) {
            self.bytes = total;
            return true;
        }
        self.budget.refused.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// As `grow_to`; when the budget cannot give the bytes, moves this
    /// reservation to the lane past the limit, if no one else holds it.
    /// So memory stays within the budget plus one such holder, and a list
    /// too large for the budget is still answered, one at a time.
    pub fn grow_or_oversize(&mut self, total: usize) -> bool {
        if self.grow_to(total) {
            return true;
        }
        if self.lane == Lane::Oversize
            || self
                .budget
                .oversize_taken
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return false;
        }
        self.budget.give_back(self.bytes, self.lane);
        self.lane = Lane::Oversize;
        self.bytes = total;
        self.budget.oversize.fetch_add(1, Ordering::Relaxed);
        true
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes > 0 || self.lane == Lane::Oversize {
            self.budget.give_back(self.bytes, self.lane);
        }
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
    fn cache_copies_take_at_most_half_so_bodies_keep_room() {
        let budget = MemoryBudget::new(1024 * 1024);
        let mut copy = budget.empty_copy();
        assert!(copy.grow_to(512 * 1024));
        assert!(!copy.grow_to(512 * 1024 + 1), "copies are held to half");
        let mut other = budget.empty_copy();
        assert!(!other.grow_to(1));
        assert!(budget.reserve(512 * 1024).is_some(), "a body still fits");
        drop(copy);
        assert!(other.grow_to(1));
    }

    #[test]
    fn one_holder_at_a_time_may_pass_the_limit() {
        let budget = MemoryBudget::new(1024 * 1024);
        let mut big = budget.empty();
        assert!(big.grow_to(100));
        assert!(big.grow_or_oversize(10 * 1024 * 1024), "the lane was free");
        assert_eq!(budget.used(), 0, "its earlier bytes were given back");
        let mut second = budget.empty();
        assert!(!second.grow_or_oversize(2 * 1024 * 1024), "one at a time");
        assert!(second.grow_or_oversize(1024), "within the budget as usual");
        drop(big);
        let mut third = budget.empty();
        assert!(third.grow_or_oversize(2 * 1024 * 1024), "free again");
        assert_eq!(budget.oversize.load(Ordering::Relaxed), 2);
        drop((second, third));
        assert_eq!(budget.used(), 0);
        assert!(!budget.oversize_taken.load(Ordering::Relaxed));
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
