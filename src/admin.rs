//! The hub's own endpoints on `--serve-port`: liveness, readiness, metrics,
//! the autonomy report, and garbage collection on demand.

use std::sync::Arc;
use std::time::Duration;

use crate::budget::MemoryBudget;

use crate::cache::Cache;
use crate::filter::FilterState;
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
    pub filters: Arc<FilterState>,
    /// The shared watches, for their metrics.
    pub shared: Option<Arc<crate::shared::SharedWatches>>,
    /// Listener statistics, filled in once the listeners run.
    pub listeners: std::sync::OnceLock<Vec<(&'static str, Arc<ServerStats>)>>,
}

/// How long `POST /v1/gc` waits for the writer to collect.
const COLLECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether the autonomy report is wanted as JSON: `?format=json` or
/// `?format=text` decide; otherwise an `Accept` naming `application/json`
/// gets JSON and anything else (curl's `*/*`, a browser) the text.
pub fn wants_json(query: &str, accept: Option<&str>) -> Result<bool, String> {
    let format = query
        .split('&')
        .filter_map(|pair| pair.strip_prefix("format="))
        .next_back();
    match format {
        Some("json") => Ok(true),
        Some("text") => Ok(false),
        Some(other) => Err(format!("format {other:?}: expected json or text")),
        None => Ok(accept.is_some_and(|accept| {
            accept
                .split(',')
                .any(|range| range.split(';').next().unwrap_or("").trim() == "application/json")
        })),
    }
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
                    if let Some(missing) = self.filters.missing_context() {
                        body.push_str(&format!("; filters without context (answers they need are left unfiltered): {missing}"));
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
                let mut body = self.metrics.render(
                    &names,
                    &self.upstream.health,
                    &listeners,
                    self.cache.as_deref(),
                    Some(&self.budget),
                );
                self.filters.render_metrics(&mut body);
                if let Some(shared) = &self.shared {
                    shared.render_metrics(&mut body);
                }
                let headers = vec![(
                    "Content-Type".to_string(),
                    "text/plain; version=0.0.4".to_string(),
                )];
                let _ = exchange.respond(200, &headers, body.as_bytes());
            }
            ("GET" | "HEAD", "/v1/autonomy") => self.autonomy(exchange),
            ("POST", "/v1/gc") => self.collect(exchange),
            (_, "/v1/gc") => refuse(exchange, &Refusal::MethodNotAllowed("POST".into())),
            (
                _,
                "/v1/healthz" | "/healthz" | "/v1/readyz" | "/readyz" | "/metrics" | "/v1/autonomy",
            ) => {
                refuse(exchange, &Refusal::MethodNotAllowed("GET".into()));
            }
            _ => {
                let path = exchange.head.path.clone();
                refuse(exchange, &Refusal::NoSuchEndpoint(path));
            }
        }
    }
}

impl Admin {
    /// `GET /v1/autonomy`: the report as JSON or as one screen of text.
    fn autonomy<S: Stream>(&self, exchange: &mut Exchange<'_, S>) {
        let Some(cache) = &self.cache else {
            return refuse(exchange, &no_cache());
        };
        let json = match wants_json(&exchange.head.query, exchange.head.header("Accept")) {
            Ok(json) => json,
            Err(problem) => return refuse(exchange, &Refusal::BadRequest(problem)),
        };
        let report = cache.autonomy(self.upstream.health.any_healthy());
        let (content_type, body) = if json {
            let mut body = serde_json::to_vec_pretty(&report).unwrap_or_default();
            body.push(b'\n');
            ("application/json", body)
        } else {
            let now = crate::codec::time::now_unix();
            let text = crate::cache::autonomy::text(&report, now);
            ("text/plain; charset=utf-8", text.into_bytes())
        };
        let headers = vec![("Content-Type".to_string(), content_type.to_string())];
        let _ = exchange.respond(200, &headers, &body);
    }

    /// `POST /v1/gc`: one garbage collection now; what it removed, as JSON.
    fn collect<S: Stream>(&self, exchange: &mut Exchange<'_, S>) {
        let Some(cache) = &self.cache else {
            return refuse(exchange, &no_cache());
        };
        let Some(summary) = cache.collect_now(COLLECT_TIMEOUT) else {
            let why = "garbage collection did not run: the cache index is being built or was given up, the cache writer is behind, or another collection is running; retry later";
            return refuse(exchange, &Refusal::CacheUnavailable(why.into()));
        };
        let mut body = serde_json::to_vec_pretty(&summary).unwrap_or_default();
        body.push(b'\n');
        let headers = vec![("Content-Type".to_string(), "application/json".to_string())];
        let _ = exchange.respond(200, &headers, &body);
    }
}

fn no_cache() -> Refusal {
    Refusal::CacheUnavailable("the hub keeps no cache in --working-mode cloud".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_is_text_unless_json_is_asked_for() {
        #[rustfmt::skip]
        let rows: &[(&str, Option<&str>, Result<bool, ()>)] = &[
            ("", None, Ok(false)),
            ("", Some("*/*"), Ok(false)),
            ("", Some("text/html,application/xhtml+xml,*/*;q=0.8"), Ok(false)),
            ("", Some("application/json"), Ok(true)),
            ("", Some("text/plain, application/json;q=0.5"), Ok(true)),
            ("", Some("application/jsonx"), Ok(false)),
            ("format=json", None, Ok(true)),
            ("format=text", Some("application/json"), Ok(false)),
            ("x=1&format=json", Some("*/*"), Ok(true)),
            ("format=yaml", None, Err(())),
        ];
        for &(query, accept, expected) in rows {
            assert_eq!(
                wants_json(query, accept).map_err(|_| ()),
                expected,
                "{query:?} {accept:?}"
            );
        }
    }
}
