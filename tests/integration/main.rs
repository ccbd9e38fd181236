//! Integration tests: the real `yurthub` binary against a scriptable TLS fake
//! apiserver, on loopback. One test binary, so the support library is compiled
//! once; the end-to-end tests against a real kube-apiserver are `tests/e2e/`.
//!
//! Contents (each module opens with its own list):
//! - `proxy`: the online path: forwarding, streaming, errors and timeouts,
//!   balancing and health, the hub's own endpoints, bounds, flags and SIGTERM
//! - `cache`: the offline cache: what fills it, what it answers offline,
//!   offline starts and restarts, damaged files, kill -9 mid-watch
//! - `cache_load`: the cache under a storm of reads of the same changing
//!   objects: nothing dropped, the newest version kept and served offline
//! - `cache_integrity`: what the cache must never hold or serve: dry runs,
//!   names too long for a file, bad list items, misplaced files, symlinks
//! - `filters`: OpenYurt's response filters on what kubelet and kube-proxy
//!   read, JSON and protobuf, online and offline, watches included
//! - `protobuf`: kubelet's protobuf cached as the apiserver encoded it and
//!   served back offline in the encoding the client asks for
//! - `certs`: the client certificate followed as kubelet rotates it, a bad or
//!   missing one reported, and the secure port for pods
//! - `modern`: what current nodes (1.30+) ask: streaming lists, service-account
//!   tokens offline, streams from a silent apiserver, aggregated discovery
//! - `faults`: never fake a write the cloud could take: writes while `/readyz`
//!   fails, writes answered locally and marked when no apiserver is reachable,
//!   health decided per server by consecutive probes, reads during a blip
//! - `hostile`: what hostile or careless clients cannot do: borrow the node's
//!   identity, hold a port with trickled bytes, spend the hub's memory, blow
//!   up `/metrics`
//! - `bounds`: numbers in a request URL the apiserver would refuse are
//!   refused with a `Status`; huge valid ones are served, bounded
//! - `upkeep`: the cache over months: garbage collection's rules, the disk
//!   quota's order, the autonomy report
//! - `shared`: one upstream list+watch per resource for every local client,
//!   compared with direct watches, across breaks, relists and restarts
//! - `support_selftest`: the fake apiserver and the wire helpers checked on
//!   their own, without the hub
//!
//! Run one module with `cargo test --test integration proxy::`.

#[path = "../support/mod.rs"]
mod support;

mod bounds;
mod cache;
mod cache_integrity;
mod cache_load;
mod certs;
mod faults;
mod filters;
mod hostile;
mod modern;
mod protobuf;
mod proxy;
mod shared;
mod support_selftest;
mod upkeep;
