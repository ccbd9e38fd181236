//! The hub's own endpoints on `--serve-port`: liveness, readiness and metrics.

use std::sync::Arc;

use crate::budget::MemoryBudget;

use crate::cache::Cache;
use crate::http::{Exchange, Handler, ServerStats, Stream};
use crate::metrics::Metrics;
use crate::status::{Refusal, refuse};
use crate::upstream::Upstream;

pub struct Admin {
    pub upstream: Arc<Upstream>,
    pub metrics: Arc<Metrics>,
    /// The cache, in edge mode: the hub can serve from it while offline.
    pub cache: Option<Arc<Cache>>,
    pub budget: Arc<MemoryBudget>,
    /// Listener statistics, filled in once the listeners run.
    pub listeners: std::sync::OnceLock<Vec<(&'static str, Arc<ServerStats>)>>,
}

impl Admin {
    /// Why the hub cannot serve, or `None` when it can.
    pub fn not_ready_reason(&self) -> Option<String> {
        if self.upstream.health.any_healthy() || self.cache.is_some() {
            return None;
        }
        Some(self.upstream.unavailable_reason())
    }
}

impl<S: Stream> Handler<S> for Admin {
    fn handle(&self, exchange: &mut Exchange<'_, S>) {
        let text = vec![(
            "Content-Type".to_string(),
            "text/plain; charset=utf-8".to_string(),
        )];
        match (exchange.head.method.as_str(), exchange.head.path.as_str()) {
            ("GET" | "HEAD", "/v1/healthz" | "/healthz") => {
                let _ = exchange.respond(200, &text, b"OK");
            }
            ("GET" | "HEAD", "/v1/readyz" | "/readyz") => match self.not_ready_reason() {
                None => {
                    let mut body = String::from("OK");
                    if !self.upstream.health.any_healthy() {
                        body.push_str(": no healthy apiserver, answering from the cache");
                    }
                    if let Some(problem) = self.upstream.credential_problem() {
                        body.push_str(&format!("; {problem}"));
                    }
                    let _ = exchange.respond(200, &text, body.as_bytes());
                }
                Some(reason) => {
                    let _ = exchange.respond(503, &text, reason.as_bytes());
                }
            },
            ("GET" | "HEAD", "/metrics") => {
                let names: Vec<String> = self
                    .upstream
                    .servers
                    .iter()
                    .map(|s| s.url.clone())
                    .collect();
                let listeners = self.listeners.get().map(Vec::as_slice).unwrap_or_default();
                let listeners: Vec<(&str, &ServerStats)> =
                    listeners.iter().map(|(n, s)| (*n, &**s)).collect();
                let body = self.metrics.render(
                    &names,
                    &self.upstream.health,
                    &listeners,
                    self.cache.as_deref(),
                    Some(&self.budget),
                );
                let headers = vec![(
                    "Content-Type".to_string(),
                    "text/plain; version=0.0.4".to_string(),
                )];
                let _ = exchange.respond(200, &headers, body.as_bytes());
            }
            (_, "/v1/healthz" | "/healthz" | "/v1/readyz" | "/readyz" | "/metrics") => {
                refuse(exchange, &Refusal::MethodNotAllowed("GET".into()));
            }
            _ => {
                let path = exchange.head.path.clone();
                refuse(exchange, &Refusal::NoSuchEndpoint(path));
            }
        }
    }
}
