//! Which apiserver gets the next request: round robin or priority order over
//! the servers the health checker lets us use. Pure.

/// `--lb-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LbMode {
    /// Rotate over usable servers.
    RoundRobin,
    /// The first usable server in flag order.
    Priority,
}

/// Picks a server among `usable` (one flag per server). `turn` is a counter
/// the caller increments on every pick (round robin uses it, priority not).
pub fn choose(mode: LbMode, usable: &[bool], turn: usize) -> Option<usize> {
    let n = usable.len();
    if n == 0 {
        return None;
    }
    let start = match mode {
        LbMode::RoundRobin => turn % n,
        LbMode::Priority => 0,
    };
    (0..n)
        .map(|offset| (start + offset) % n)
        .find(|&i| usable[i])
}

/// The server to retry on after `failed`: the next usable one after it (round
/// robin) or the first usable one other than it (priority).
pub fn next_after(mode: LbMode, usable: &[bool], failed: usize) -> Option<usize> {
    let n = usable.len();
    match mode {
        LbMode::RoundRobin => (1..n)
            .map(|offset| (failed + offset) % n)
            .find(|&i| usable[i]),
        LbMode::Priority => (0..n).find(|&i| i != failed && usable[i]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_rotates_over_usable_servers() {
        let usable = [true, false, true];
        let picks: Vec<_> = (0..6)
            .map(|turn| choose(LbMode::RoundRobin, &usable, turn))
            .collect();
        assert_eq!(
            picks,
            [Some(0), Some(2), Some(2), Some(0), Some(2), Some(2)]
        );
    }

    #[test]
    fn priority_takes_the_first_usable_server() {
        assert_eq!(choose(LbMode::Priority, &[false, true, true], 7), Some(1));
        assert_eq!(choose(LbMode::Priority, &[true, true], 3), Some(0));
    }

    #[test]
    fn nothing_usable_means_no_choice() {
        assert_eq!(choose(LbMode::RoundRobin, &[false, false], 0), None);
        assert_eq!(choose(LbMode::Priority, &[], 0), None);
    }

    #[test]
    fn retry_goes_to_another_server() {
        assert_eq!(
            next_after(LbMode::RoundRobin, &[true, true, true], 2),
            Some(0)
        );
        assert_eq!(
            next_after(LbMode::RoundRobin, &[true, false, true], 0),
            Some(2)
        );
        assert_eq!(
            next_after(LbMode::Priority, &[true, true, true], 0),
            Some(1)
        );
        assert_eq!(next_after(LbMode::Priority, &[true, false, false], 0), None);
        assert_eq!(next_after(LbMode::RoundRobin, &[true], 0), None);
    }
}
