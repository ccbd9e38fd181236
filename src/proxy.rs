//! The proxy port's handler: classify, bound, pick an apiserver, forward, and
//! stream the answer back as it arrives.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::cache::{Cache, Tee};
use crate::http::{Exchange, Handler, Stream};
use crate::local::Local;
use crate::metrics::Metrics;
use crate::request_info::{self, Query, RequestInfo, Verb};
use crate::status::status_body;
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
    pub local: Option<Local>,
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
                respond_status(exchange, 400, &e.to_string());
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
                let body = status_body(429, "too many requests in flight at the hub, retry later");
                let mut headers = json_headers();
                headers.push(("Retry-After".into(), "1".into()));
                let _ = exchange.respond(429, &headers, &body);
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
            respond_status(
                exchange,
                501,
                "the hub does not relay protocol upgrades (exec, attach, port-forward); reach the apiserver directly",
            );
            return;
        }
        let edge_cache = exchange
            .head
            .header("edge-cache")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        // Before the first probe has answered, a read the cache can answer is
        // answered from it at once: the apiserver may be unreachable, and a
        // connect attempt could take seconds.
        if let Some(local) = &self.local
            && !self.upstream.health.any_healthy()
            && local.has_answer(
                info,
                query,
                component,
                edge_cache,
                exchange.head.header("accept"),
            )
        {
            self.metrics.offline_answers.fetch_add(1, Ordering::Relaxed);
            return local.answer(exchange, info, query, component);
        }
        let Some(mut server) = self.upstream.pick() else {
            if let Some(local) = &self.local {
                self.metrics.offline_answers.fetch_add(1, Ordering::Relaxed);
                return local.answer(exchange, info, query, component);
            }
            respond_status(exchange, 503, &self.upstream.unavailable_reason());
            return;
        };
        let edge_cache = exchange
            .head
            .header("edge-cache")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let plan = self
            .cache
            .as_ref()
            .and_then(|cache| cache.plan(info, query, component, edge_cache));
        let headers = forwarded_headers(&exchange.head.headers);
        let with_client_cert = exchange.head.header("authorization").is_none();
        let deadline = Deadline::for_request(
            info.is_long_running(),
            query.timeout(),
            query.timeout_seconds(),
        );
        let target = exchange.head.target();
        let method = exchange.head.method.clone();
        let retryable = matches!(method.as_str(), "GET" | "HEAD") && !exchange.has_body();
        let mut retried = false;
        let response = loop {
            let has_body = exchange.has_body();
            let mut body_reader = exchange.body();
            let outgoing = Outgoing {
                method: &method,
                target: &target,
                headers: &headers,
                body: if has_body {
                    Some(&mut body_reader as &mut dyn Read)
                } else {
                    None
                },
                deadline,
                with_client_cert,
            };
            match self.upstream.send(server, outgoing) {
                Ok(response) => break response,
                Err(e) => {
                    self.metrics.upstream_errors.fetch_add(1, Ordering::Relaxed);
                    let url = &self.upstream.servers[server].url;
                    let retry_on = (retryable && !retried && upstream::is_connect_failure(&e))
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
                    // A read the cache can answer is answered from it.
                    let reads_cached =
                        plan.is_some() && matches!(info.verb, Verb::Get | Verb::List) && retryable;
                    if let (Some(local), true) = (&self.local, reads_cached) {
                        self.metrics.offline_answers.fetch_add(1, Ordering::Relaxed);
                        return local.answer(exchange, info, query, component);
                    }
                    let (code, what) = if upstream::is_timeout(&e) {
                        (504, "timed out")
                    } else {
                        (502, "failed")
                    };
                    respond_status(
                        exchange,
                        code,
                        &format!("request to apiserver {url} {what}: {e}"),
                    );
                    return;
                }
            }
        };
        let tee = |status: u16, content_type: Option<&str>| {
            let cache = self.cache.as_ref()?;
            cache.tee(plan?, status, content_type)
        };
        relay(exchange, response, &target, tee);
    }
}

/// Streams an upstream response to the client, flushing every piece as it arrives.
/// `tee` may copy the body aside for the cache, given the status and Content-Type.
fn relay<S: Stream>(
    exchange: &mut Exchange<'_, S>,
    response: ureq::http::Response<upstream::Body>,
    target: &str,
    tee: impl FnOnce(u16, Option<&str>) -> Option<Tee>,
) {
    let (parts, body) = response.into_parts();
    let length = parts
        .headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .filter(|(name, _)| !NOT_RETURNED.contains(&name.as_str()))
        .filter_map(|(name, value)| Some((name.to_string(), value.to_str().ok()?.to_string())))
        .collect();
    if exchange
        .start_response(parts.status.as_u16(), &headers, length)
        .is_err()
    {
        return;
    }
    let content_type = parts
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok());
    let mut tee = tee(parts.status.as_u16(), content_type);
    let mut reader = body.into_reader();
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
            // A quiet stream: keep it while the client is there; once the client
            // has gone, dropping the reader closes the upstream connection.
            Err(e) if upstream::is_quiet_stream(&e) => {
                if exchange.client_gone() {
                    log::debug!("{target}: client went away during a quiet stream");
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

pub fn json_headers() -> Vec<(String, String)> {
    vec![("Content-Type".into(), "application/json".into())]
}

/// Answers with a Kubernetes `Status` body, unless a response already started.
pub fn respond_status<S: Stream>(exchange: &mut Exchange<'_, S>, code: u16, message: &str) {
    if exchange.response_started() {
        exchange.abort();
        return;
    }
    let _ = exchange.respond(code, &json_headers(), &status_body(code, message));
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
