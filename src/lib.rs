//! yurthub: a node-local proxy in front of the Kubernetes apiservers that keeps
//! an edge node working when the cloud is unreachable. See ARCHITECTURE.md.

pub mod admin;
pub mod app;
pub mod balancer;
pub mod bootstrap;
pub mod cache;
pub mod certs;
pub mod cli;
pub mod codec;
pub mod config;
pub mod health;
pub mod http;
pub mod metrics;
pub mod offline;
pub mod proxy;
pub mod request_info;
pub mod selector;
pub mod status;
pub mod upstream;
