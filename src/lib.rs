//! yurthub: a node-local proxy in front of the Kubernetes apiservers that keeps
//! an edge node working when the cloud is unreachable. See ARCHITECTURE.md.
//!
//! Only what `main.rs` needs is public, so the compiler reports dead code.

mod admin;
pub mod app;
mod balancer;
mod bootstrap;
mod cache;
mod certs;
pub mod cli;
mod codec;
pub mod config;
mod health;
mod http;
mod metrics;
mod offline;
mod proxy;
mod request_info;
mod selector;
mod status;
mod store;
mod upstream;
