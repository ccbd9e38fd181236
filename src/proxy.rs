//! The proxy port's handler: classify, bound, pick an apiserver, forward, and
//! stream the answer back as it arrives.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::cache::{Cache, Tee};
use crate::health::{Health, HealthState};
use crate::http::{Exchange, Handler, Stream};
use crate::metrics::Metrics;
use crate::offline::{self, Offline, OfflineRequest};
use crate::request_info::{self, Query, RequestInfo, Verb};
use crate::status::{Refusal, refuse};
use crate::upstream::{self, Deadline, Outgoing, Upstream};

/// Request header fields that belong to one connection and are never forwarded
/// (RFC 9110 section 7.6.1), plus those the hub sets or consumes itself.
const NOT_FORWARDED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "expect",
    "edge-cache",
];

/// Response header fields not copied back (the hub frames the body itself).
const NOT_RETURNED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// Size of the relay buffer: one read from upstream becomes one flushed chunk.
const RELAY_BUFFER: usize = 32 * 1024;

pub struct Proxy {
    pub upstream: Arc<Upstream>,
    pub metrics: Arc<Metrics>,
    pub max_in_flight: i64,
    /// The cache and its offline answers (edge mode only).
    pub cache: Option<Arc<Cache>>,
    pub offline: Option<Offline>,
    /// Longest wait for the first health verdict before a watch is sent.
    pub first_probe_wait: Duration,
}

/// Holds one slot of a gauge for as long as it lives.
struct GaugeSlot<'a>(&'a std::sync::atomic::AtomicI64);

impl Drop for GaugeSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<S: Stream> Handler<S> for Proxy {
    fn handle(&self, exchange: &mut Exchange<'_, S>) {
        let query = Query::parse(&exchange.head.query);
        let info = match request_info::classify(&exchange.head.method, &exchange.head.path, &query)
        {
            Ok(info) => info,
            Err(e) => {
                refuse(exchange, &Refusal::BadRequest(e.to_string()));
                self.metrics
                    .record_request(&component_of(exchange), "other", "", 400);
                return;
            }
        };
        let component = component_of(exchange);
        let _slot = if info.is_long_running() {
            self.metrics.long_running.fetch_add(1, Ordering::SeqCst);
            GaugeSlot(&self.metrics.long_running)
        } else {
            let previous = self.metrics.in_flight.fetch_add(1, Ordering::SeqCst);
            let slot = GaugeSlot(&self.metrics.in_flight);
            if previous >= self.max_in_flight {
                drop(slot);
                self.metrics
                    .rejected_in_flight
                    .fetch_add(1, Ordering::Relaxed);
                refuse(exchange, &Refusal::TooManyInFlight);
                self.metrics
                    .record_request(&component, info.verb.as_str(), &info.resource, 429);
                return;
            }
            slot
        };
        self.forward(exchange, &info, &query, &component);
        self.metrics.record_request(
            &component,
            info.verb.as_str(),
            &info.resource,
            exchange.status(),
        );
    }
}

impl Proxy {
    fn forward<S: Stream>(
        &self,
        exchange: &mut Exchange<'_, S>,
        info: &RequestInfo,
        query: &Query,
        component: &str,
    ) {
        if exchange.head.header("upgrade").is_some() {
            return refuse(exchange, &Refusal::UpgradeNotRelayed);
        }
        let edge_cache = offline::is_edge_cache(exchange);
        let health = &self.upstream.health;
        // The offline answer, decided once, when no apiserver is known healthy.
        let mut decided = None;
        if let Some(offline) = &self.offline
            && !health.any_healthy()
        {
            // Before the first probe has answered, what the cache holds is
            // answered from it at once: the apiserver may be unreachable, and a
            // connect attempt could take seconds.
            if !offline::needs_body(info) {
                let answer = offline.decide(&OfflineRequest {
                    info,
                    query,
                    component,
                    edge_cache,
                    accept: exchange.head.header("accept"),
                    content_type: exchange.head.header("content-type"),
                    body: None,
                });
                if answer.is_from_cache() {
                    self.metrics.offline_answers.fetch_add(1, Ordering::Relaxed);
                    return offline.write(exchange, answer, query);
                }
                decided = Some(answer);
            }
            // A watch of a cached component waits (bounded) for the first
            // verdict instead of hanging on an apiserver nobody has reached yet.
            if info.verb == Verb::Watch
                && health.nothing_known()
                && offline.cache.is_cached_component(component, edge_cache)
            {
                health.wait_first_verdict(self.first_probe_wait);
            }
        }
        // A TokenRequest the cache keeps is read first: its spec decides where
        // the answer goes, and offline the same body finds it again.
        let mut body = None;
        let mut plan = None;
        if let Some(cache) = &self.cache
            && cache.wants_token(info, component, edge_cache)
        {
            match offline::read_body(exchange) {
                Ok(bytes) => {
                    plan = cache.plan_token(
                        info,
                        component,
                        exchange.head.header("content-type"),
                        &bytes,
                    );
                    body = Some(bytes);
                }
                Err(refused) => return offline::write_refusal(exchange, refused),
            }
        }
        let Some(mut server) = self.upstream.pick() else {
            if let Some(offline) = &self.offline {
                self.metrics.offline_answers.fetch_add(1, Ordering::Relaxed);
                return match decided {
                    Some(answer) => offline.write(exchange, answer, query),
                    None => offline.answer(exchange, info, query, component, body.as_deref()),
                };
            }
            return refuse(
                exchange,
                &Refusal::NoHealthyApiserver(self.upstream.unavailable_reason()),
            );
        };
        if plan.is_none() {
            plan = self
                .cache
                .as_ref()
                .and_then(|cache| cache.plan(info, query, component, edge_cache));
        }
        let headers = forwarded_headers(&exchange.head.headers);
        let with_client_cert = exchange.head.header("authorization").is_none();
        let long_running = info.is_long_running();
        let deadline =
            Deadline::for_request(long_running, query.timeout(), query.timeout_seconds());
        let target = exchange.head.target();
        let method = exchange.head.method.clone();
        let retryable = matches!(method.as_str(), "GET" | "HEAD") && !exchange.has_body();
        let mut retried = false;
        let response = loop {
            let has_body = exchange.has_body();
            let mut buffered = body.as_deref().map(std::io::Cursor::new);
            let mut body_reader = exchange.body();
            let outgoing = Outgoing {
                method: &method,
                target: &target,
                headers: &headers,
                body: match buffered.as_mut() {
                    Some(buffered) => Some(buffered as &mut dyn Read),
                    None if has_body => Some(&mut body_reader as &mut dyn Read),
                    None => None,
                },
                deadline,
                with_client_cert,
            };
            match self.upstream.send(server, outgoing) {
                Ok(response) => break response,
                Err(e) => {
                    self.metrics.upstream_errors.fetch_add(1, Ordering::Relaxed);
                    let url = &self.upstream.servers[server].url;
                    let retry_on = (retryable && !retried && e.is_connect_failure())
                        .then(|| self.upstream.next_after(server))
                        .flatten();
                    if let Some(next) = retry_on {
                        log::warn!(
                            "{method} {target}: {url} failed ({e}); retrying on {}",
                            self.upstream.servers[next].url
                        );
                        server = next;
                        retried = true;
                        continue;
                    }
                    log::warn!("{method} {target}: {url} failed: {e}");
                    // A read the cache can answer is answered from it; so is a
                    // TokenRequest that never reached an apiserver.
                    let reads_cached =
                        plan.is_some() && matches!(info.verb, Verb::Get | Verb::List) && retryable;
                    let token_unsent = body.is_some() && e.is_connect_failure();
                    if let (Some(offline), true) = (&self.offline, reads_cached || token_unsent) {
                        self.metrics.offline_answers.fetch_add(1, Ordering::Relaxed);
                        return offline.answer(exchange, info, query, component, body.as_deref());
                    }
                    return refuse(
                        exchange,
                        &Refusal::Upstream {
                            url: url.clone(),
                            error: e.to_string(),
                            timed_out: e.is_timeout(),
                        },
                    );
                }
            }
        };
        let tee = |status: u16, content_type: Option<&str>| {
            let cache = self.cache.as_ref()?;
            cache.tee(plan?, status, content_type)
        };
        // A stream ends when its apiserver is marked unhealthy (a silent link
        // would otherwise hold it open forever with no events and no error).
        let source = long_running.then_some(StreamSource {
            health,
            server,
            url: &self.upstream.servers[server].url,
            ended: &self.metrics.streams_ended_unhealthy,
        });
        relay(exchange, response, &target, tee, source);
    }
}

/// Where a relayed stream comes from, to end it once that apiserver is
/// marked unhealthy.
struct StreamSource<'a> {
    health: &'a HealthState,
    server: usize,
    url: &'a str,
    ended: &'a AtomicU64,
}

/// Streams an upstream response to the client, flushing every piece as it arrives.
/// `tee` may copy the body aside for the cache, given the status and Content-Type.
fn relay<S: Stream>(
    exchange: &mut Exchange<'_, S>,
    response: upstream::Response,
    target: &str,
    tee: impl FnOnce(u16, Option<&str>) -> Option<Tee>,
    source: Option<StreamSource<'_>>,
) {
    let length = response
        .header("content-length")
        .and_then(|v| v.trim().parse::<u64>().ok());
    let headers: Vec<(String, String)> = response
        .headers
        .iter()
        .filter(|(name, _)| !NOT_RETURNED.contains(&name.to_ascii_lowercase().as_str()))
        .cloned()
        .collect();
    if exchange
        .start_response(response.status, &headers, length)
        .is_err()
    {
        return;
    }
    let mut tee = tee(response.status, response.header("content-type"));
    let mut reader = response.into_reader();
    let mut buffer = vec![0u8; RELAY_BUFFER];
    loop {
        match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                // The client first: decoding for the cache must not delay it.
                if exchange.write_body(&buffer[..n]).is_err() {
                    log::debug!("{target}: client went away");
                    return;
                }
                if let Some(tee) = tee.as_mut() {
                    tee.push(&buffer[..n]);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // A quiet stream: keep it while the client is there and its
            // apiserver is trusted; once the client has gone, dropping the
            // reader closes the upstream connection.
            Err(e) if upstream::is_quiet_stream(&e) => {
                if exchange.client_gone() {
                    log::debug!("{target}: client went away during a quiet stream");
                    return;
                }
                if let Some(source) = &source
                    && source.health.get(source.server) == Health::Unhealthy
                {
                    log::info!(
                        "{target}: ending the stream from {}, which is marked unhealthy",
                        source.url
                    );
                    source.ended.fetch_add(1, Ordering::Relaxed);
                    // A clean end between events: the client comes back at once.
                    let _ = exchange.finish();
                    return;
                }
            }
            Err(e) => {
                log::warn!("{target}: upstream response broke off: {e}");
                exchange.abort();
                return;
            }
        }
    }
    if exchange.finish().is_ok()
        && let Some(tee) = tee
    {
        tee.finish(true);
    }
}

fn component_of<S: Stream>(exchange: &Exchange<'_, S>) -> String {
    request_info::component(exchange.head.header("user-agent"))
}

fn forwarded_headers(headers: &[(String, String)]) -> Vec<(String, String)> {
    // Also drop fields the client named in its Connection header.
    let listed: Vec<String> = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    headers
        .iter()
        .filter(|(name, _)| {
            let name = name.to_ascii_lowercase();
            !NOT_FORWARDED.contains(&name.as_str()) && !listed.contains(&name)
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_hub_headers_are_not_forwarded() {
        let headers = vec![
            ("Host".to_string(), "127.0.0.1:10261".to_string()),
            (
                "Connection".to_string(),
                "keep-alive, X-Private".to_string(),
            ),
            ("X-Private".to_string(), "1".to_string()),
            ("Edge-Cache".to_string(), "true".to_string()),
            ("Transfer-Encoding".to_string(), "chunked".to_string()),
            ("Accept".to_string(), "application/json".to_string()),
            ("Authorization".to_string(), "Bearer abc".to_string()),
            ("Content-Length".to_string(), "3".to_string()),
        ];
        let names: Vec<String> = forwarded_headers(&headers)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["Accept", "Authorization", "Content-Length"]);
    }
}
