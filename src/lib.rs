//! yurthub: a node-local proxy in front of the Kubernetes apiservers that keeps
//! an edge node working when the cloud is unreachable. See ARCHITECTURE.md.
//!
//! Only what `main.rs` needs is public, so the compiler reports dead code.

mod admin;
pub mod app;
mod balancer;
mod bootstrap;
mod budget;
mod cache;
mod certs;
pub mod cli;
mod codec;
// Not wired into the proxy yet.
pub mod config;
#[allow(dead_code)]
mod filter;
#[cfg(test)]
mod fuzz;
mod health;
mod http;
mod metrics;
mod offline;
mod proxy;
mod request_info;
mod selector;
mod shared;
mod status;
mod store;
mod upstream;

/// The invariants of ARCHITECTURE.md that the compiler cannot check, checked
/// on the source tree.
#[cfg(test)]
mod architecture {
    use std::path::{Path, PathBuf};

    /// Every source file but this one (which names what it looks for).
    fn sources() -> Vec<(PathBuf, String)> {
        let mut out = Vec::new();
        let mut pending = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    pending.push(path);
                } else if path.extension().is_some_and(|e| e == "rs")
                    && !path.ends_with("src/lib.rs")
                {
                    let text = std::fs::read_to_string(&path).unwrap();
                    out.push((path, text));
                }
            }
        }
        assert!(out.len() > 20, "the source tree was not found");
        out
    }

    /// The code of a file without its unit tests.
    fn without_tests(text: &str) -> &str {
        text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text)
    }

    /// The apiservers are reached through `upstream/` only: its client
    /// keeps the pool, the deadlines and the rule on what may be sent twice.
    #[test]
    fn only_upstream_is_an_http_client() {
        for (path, text) in sources() {
            if path.components().any(|c| c.as_os_str() == "upstream") {
                continue;
            }
            assert!(
                !without_tests(&text).contains("ClientConnection"),
                "{} opens TLS client connections",
                path.display()
            );
        }
    }

    #[test]
    fn every_thread_is_named() {
        for (path, text) in sources() {
            let code = without_tests(&text);
            assert!(
                !code.contains("thread::spawn("),
                "{} spawns an unnamed thread",
                path.display()
            );
            for (at, _) in code.match_indices("thread::Builder::new()") {
                let next = &code[at..(at + 120).min(code.len())];
                assert!(
                    next.contains(".name("),
                    "{}: a thread without a name",
                    path.display()
                );
            }
        }
    }

    /// A panic in one connection's handler must unwind to its listener,
    /// which ends that connection only; `panic = "abort"` would end the hub.
    #[test]
    fn release_builds_unwind_panics() {
        let manifest =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
                .unwrap();
        let release = manifest
            .split("[profile.release]")
            .nth(1)
            .expect("a release profile");
        let release = release.split("\n[").next().unwrap_or(release);
        assert!(release.contains("panic = \"unwind\""), "{release}");
    }
}
