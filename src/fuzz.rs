//! Generated inputs for the "no input is fatal" tests of every parser a client
//! or an apiserver can feed: seeds mutated by a small deterministic generator
//! (random bytes, truncation, byte flips, insertions of the tokens parsers
//! split on, huge numbers, invalid UTF-8), so a failure replays exactly.
//!
//! A few thousand inputs per test keep the unit tests fast in debug builds
//! (which check arithmetic overflow); `YURTHUB_FUZZ_ITERATIONS=2000000` runs
//! longer on demand, `YURTHUB_FUZZ_SEED` explores another sequence.

use std::panic::{AssertUnwindSafe, catch_unwind};

/// Byte strings parsers treat specially, inserted whole.
const TOKENS: &[&[u8]] = &[
    b"%",
    b"%2",
    b"%2F",
    b"%2E%2E",
    b"%00",
    b"%ZZ",
    b"+",
    b"\r\n",
    b"\r\n\r\n",
    b"\n",
    b"\r",
    b":",
    b";",
    b"=",
    b"==",
    b"!=",
    b",",
    b"!",
    b"(",
    b")",
    b"<",
    b">",
    b"&",
    b"?",
    b"#",
    b"/",
    b"\\",
    b"..",
    b".",
    b" ",
    b"\t",
    b"\0",
    b"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b"-",
    b"0",
    b"9",
    b"ms",
    b"h",
    b"\xc2\xb5s",
    b"in",
    b"notin",
    b"chunked",
    b"Content-Length: ",
    b"Transfer-Encoding: chunked\r\n",
    b"watch=1&",
    b"timeoutSeconds=",
    b"limit=",
    b"timeout=",
    b"fieldSelector=metadata.name%3D",
    b"/api/v1/namespaces/",
    b"9223372036854775807",
    b"9223372036854775808",
    b"-9223372036854775808",
    b"18446744073709551615",
    b"18446744073709551616",
    b"99999999999999999999999999",
    b"ffffffffffffffff",
    b"fffffffffffffff",
    b"1e18",
    b"\xff",
    b"\xfe\xff",
    b"\xc3",
    b"\xe2\x82",
    b"\xf0\x9f\x98\x80",
    b"\xed\xa0\x80",
];

/// The xorshift64 generator: deterministic, no crate.
pub(crate) struct Rng(u64);

impl Rng {
    /// Seeded from `YURTHUB_FUZZ_SEED` when set, else from `seed`.
    pub(crate) fn new(seed: u64) -> Rng {
        let seed = std::env::var("YURTHUB_FUZZ_SEED")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(seed, |s| s ^ seed);
        Rng(seed | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// How many inputs a test tries: `YURTHUB_FUZZ_ITERATIONS`, else `default`.
pub(crate) fn iterations(default: u64) -> u64 {
    std::env::var("YURTHUB_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One input: a seed changed by one to four mutations, or random bytes.
pub(crate) fn mutate(rng: &mut Rng, seeds: &[&[u8]]) -> Vec<u8> {
    let mut input = seeds[rng.below(seeds.len())].to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(input.len() + 1);
        match rng.below(8) {
            0 => input = (0..rng.below(64)).map(|_| rng.next() as u8).collect(),
            1 => input.truncate(at),
            2 | 3 => {
                for _ in 0..=rng.below(8) {
                    if !input.is_empty() {
                        let i = rng.below(input.len());
                        input[i] = rng.next() as u8;
                    }
                }
            }
            4 | 5 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                input.splice(at..at, token.iter().copied());
            }
            6 => {
                // A stretch repeated: long lines, many fields, deep nesting.
                let end = (at + rng.below(16)).min(input.len());
                let piece = input[at..end].to_vec();
                for _ in 0..rng.below(64) {
                    input.splice(at..at, piece.iter().copied());
                }
            }
            _ => {
                let other = seeds[rng.below(seeds.len())];
                let from = rng.below(other.len() + 1);
                input.truncate(at);
                input.extend_from_slice(&other[from..]);
            }
        }
    }
    input
}

/// Runs `check` on `default` (or `YURTHUB_FUZZ_ITERATIONS`) inputs made from
/// `seeds`; a panic is reported with the input that caused it.
pub(crate) fn run(seed: u64, seeds: &[&[u8]], default: u64, mut check: impl FnMut(&[u8])) {
    let mut rng = Rng::new(seed);
    for _ in 0..iterations(default) {
        let input = mutate(&mut rng, seeds);
        if catch_unwind(AssertUnwindSafe(|| check(&input))).is_err() {
            panic!("failing input: b\"{}\"", input.escape_ascii());
        }
    }
}

/// Like `run`, for parsers of text: invalid UTF-8 is replaced first.
pub(crate) fn run_text(seed: u64, seeds: &[&str], default: u64, mut check: impl FnMut(&str)) {
    let seeds: Vec<&[u8]> = seeds.iter().map(|s| s.as_bytes()).collect();
    run(seed, &seeds, default, |input| {
        check(&String::from_utf8_lossy(input))
    });
}

/// The generated-input tests find an overflow only as a panic: the test
/// profile must keep arithmetic overflow checks on (Cargo's default for
/// `dev` and `test`; a profile override that turns them off fails here).
#[test]
fn overflow_checks_are_on() {
    let max = std::hint::black_box(u64::MAX);
    assert!(catch_unwind(|| max + std::hint::black_box(1)).is_err());
}
