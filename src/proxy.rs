//! The proxy port's handler: classify, bound, pick an apiserver, forward, and
//! stream the answer back as it arrives.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::budget::MemoryBudget;
use crate::cache::{Cache, Tee};
use crate::codec::gzip::Gunzip;
use crate::filter::{BodyFilter, FilterState};
use crate::health::{Health, HealthState};
use crate::http::{Exchange, Handler, ServerStats, Stream, header_value};
use crate::metrics::Metrics;
use crate::offline::{self, Offline, OfflineRequest};
use crate::request_info::{self, Query, RequestInfo, Verb};
use crate::shared::{SharedRequest, SharedWatches};
use crate::status::{Refusal, refuse};
use crate::upstream::{self, Deadline, Outgoing, Unreachable, Upstream};

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

/// Connect deadline for an apiserver the health checker calls unhealthy, when
/// a write tries it anyway.
const SHORT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Time a client has to take a whole answer, past the request's own timeout.
const RESPONSE_GRACE: Duration = Duration::from_secs(60);

/// Size of the relay buffer: one read from upstream becomes one flushed chunk.
const RELAY_BUFFER: usize = 32 * 1024;
/// The relay buffer when the memory budget is spent (not counted in it).
const SMALL_RELAY_BUFFER: usize = 4 * 1024;

pub struct Proxy {
    pub upstream: Arc<Upstream>,
    pub metrics: Arc<Metrics>,
    pub max_in_flight: i64,
    /// The cache and its offline answers (edge mode only).
    pub cache: Option<Arc<Cache>>,
    pub offline: Option<Offline>,
    /// Longest wait for the first health verdict before a watch is sent.
    pub first_probe_wait: Duration,
    /// What requests in flight may hold in memory, all together.
    pub budget: Arc<MemoryBudget>,
    /// OpenYurt's response filters.
    pub filters: Arc<FilterState>,
    /// One upstream watch per shared resource (`--shared-watch-resources`).
    pub shared: Option<Arc<SharedWatches>>,
}

/// Holds one slot of a gauge for as long as it lives.
struct GaugeSlot<'a>(&'a std::sync::atomic::AtomicI64);

impl Drop for GaugeSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Which proxy port a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// The plain port, on loopback: node components, with their own
    /// kubeconfig or the hub's client certificate.
    Plain,
    /// The HTTPS port pods reach: every request carries its own bearer token.
    Secure,
}

/// One proxy listener: its own in-flight bound (slow clients of one port
/// never make the other answer 429) and, on the secure port, the rule that a
/// request without a bearer token is refused, never sent under the node's
/// identity.
pub struct ProxyPort {
    pub proxy: Arc<Proxy>,
    pub port: Port,
    /// The listener's counters (its in-flight gauge among them).
    pub stats: Arc<ServerStats>,
}

impl<S: Stream> Handler<S> for ProxyPort {
    fn handle(&self, exchange: &mut Exchange<'_, S>) {
        let metrics = &self.proxy.metrics;
        let query = Query::parse(&exchange.head.query);
        let info = match request_info::classify(&exchange.head.method, &exchange.head.path, &query)
        {
            Ok(info) => info,
            Err(e) => {
                refuse(exchange, &Refusal::BadRequest(e.to_string()));
                metrics.record_request(&component_of(exchange), "other", "", 400);
                return;
            }
        };
        let component = component_of(exchange);
        if self.port == Port::Secure && !has_bearer_token(exchange.head.header("authorization")) {
            refuse(exchange, &Refusal::NoBearerToken);
            metrics.record_request(&component, info.verb.as_str(), &info.resource, 401);
            return;
        }
        let _slots = if info.is_long_running() {
            metrics.long_running.fetch_add(1, Ordering::SeqCst);
            (GaugeSlot(&metrics.long_running), None)
        } else {
            let previous = self.stats.in_flight.fetch_add(1, Ordering::SeqCst);
            let port_slot = GaugeSlot(&self.stats.in_flight);
            if previous >= self.proxy.max_in_flight {
                drop(port_slot);
                metrics.rejected_in_flight.fetch_add(1, Ordering::Relaxed);
                refuse(exchange, &Refusal::TooManyInFlight);
                metrics.record_request(&component, info.verb.as_str(), &info.resource, 429);
                return;
            }
            metrics.in_flight.fetch_add(1, Ordering::SeqCst);
            (GaugeSlot(&metrics.in_flight), Some(port_slot))
        };
        // A request that is not a stream has the time it asks for (or the
        // default) to send its body, and that plus a grace to take its
        // answer: a slow client cannot hold the hub's memory for longer.
        let deadline = Deadline::for_request(
            info.is_long_running(),
            query.timeout(),
            query.timeout_seconds(),
        );
        if let Deadline::Within(within) = deadline {
            let now = std::time::Instant::now();
            if exchange.has_body() {
                exchange.set_body_deadline(now + within);
            }
            exchange.set_response_deadline(now + within + RESPONSE_GRACE);
        }
        let asked = Asked {
            info: &info,
            query: &query,
            component: &component,
            port: self.port,
            deadline,
        };
        self.proxy.forward(exchange, &asked);
        metrics.record_request(
            &component,
            info.verb.as_str(),
            &info.resource,
            exchange.status(),
        );
    }
}

/// Whether an `Authorization` value is a bearer token with a token after it.
fn has_bearer_token(authorization: Option<&str>) -> bool {
    authorization.and_then(request_info::bearer_token).is_some()
}

impl Proxy {
    fn forward<S: Stream>(&self, exchange: &mut Exchange<'_, S>, asked: &Asked<'_>) {
        let Asked {
            info,
            query,
            component,
            deadline,
            ..
        } = *asked;
        if exchange.head.header("upgrade").is_some() {
            return refuse(exchange, &Refusal::UpgradeNotRelayed);
        }
        let edge_cache = offline::is_edge_cache(exchange);
        if let Some(cache) = &self.cache
            && cache.is_cached_component(component, edge_cache)
        {
            cache.saw_component(component);
        }
        let health = &self.upstream.health;
        // The offline answer, decided once, when no apiserver is known healthy.
        let mut decided = None;
        if let Some(offline) = &self.offline
            && !health.any_healthy()
        {
            // Before any probe, or while every apiserver fails to connect, a
            // read of what the cache holds is answered from it at once: a
            // connect attempt could take seconds. Writes always try the cloud.
            let recently_unreachable = self.upstream.recently_unreachable();
            let may_be_unreachable = health.nothing_known() || recently_unreachable;
            if !info.verb.is_write() && !offline::needs_body(info) && may_be_unreachable {
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
                    let why = recently_unreachable.then_some("recent");
                    return self.answer_offline(exchange, asked, None, Some(answer), why);
                }
                decided = Some(answer);
            }
            // A watch of a cached component waits (bounded) for the first
            // probe instead of hanging on an apiserver nobody has reached yet.
            if info.verb == Verb::Watch
                && health.nothing_known()
                && offline.cache.is_cached_component(component, edge_cache)
            {
                health.wait_first_probe(self.first_probe_wait);
            }
        }
        // No apiserver is healthy and every one failed to connect (or to
        // answer a probe at all) moments ago: no new attempt. For a write,
        // only once the health checker confirmed every one down: a starting
        // apiserver fails to connect for a moment too.
        let down_enough = if info.verb.is_write() {
            health.all_unhealthy()
        } else {
            !health.any_healthy()
        };
        if self.offline.is_some() && down_enough && self.upstream.recently_unreachable() {
            return self.answer_offline(exchange, asked, None, decided, Some("recent"));
        }
        // Lists and watches of a shared resource, from the one upstream watch
        // of the whole node, unless every apiserver is down (offline, the cache
        // answers as it answers everything).
        if let Some(shared) = &self.shared
            && exchange.head.method == "GET"
            && !health.all_unhealthy()
            && let Some(answer) = shared.answer(&SharedRequest {
                info,
                query,
                headers: &exchange.head.headers,
            })
        {
            let plan = self
                .cache
                .as_ref()
                .and_then(|cache| cache.plan(info, query, component, edge_cache));
            let target = exchange.head.target();
            let answer = RelayedAnswer {
                status: 200,
                headers: answer.headers,
                body: answer.body,
            };
            return self.relay_answer(exchange, asked, &target, answer, plan, None);
        }
        // A body is read first when its request may have to be sent twice or
        // answered offline: a TokenRequest the cache keeps (its spec decides
        // where the answer goes), a write in edge mode (it goes to whichever
        // apiserver accepts the connection, and offline only if none does).
        let token = self
            .cache
            .as_ref()
            .is_some_and(|cache| cache.wants_token(info, component, edge_cache));
        let write_in_doubt = info.verb.is_write() && self.offline.is_some();
        let mut body = None;
        let mut plan = None;
        let mut _body_held = None;
        if token || write_in_doubt {
            match offline::read_body(exchange, &self.budget) {
                Ok((bytes, reservation)) => {
                    _body_held = Some(reservation);
                    if let Some(cache) = self.cache.as_ref().filter(|_| token) {
                        plan = cache.plan_token(
                            info,
                            component,
                            exchange.head.header("content-type"),
                            &bytes,
                        );
                    }
                    body = Some(bytes);
                }
                Err(refused) => return offline::write_refusal(exchange, refused),
            }
        }
        // Where to send it: the balancer's choice; a GET whose connection
        // fails goes once to the next usable server, a read body (a write,
        // a TokenRequest) to every other server, quickly, before it is
        // answered offline. With no usable apiserver, a write or a read still
        // asks each one quickly (a /readyz blip says nothing of whether it
        // answers); a watch is held offline (relayed from an apiserver marked
        // unhealthy, it would end at once).
        let is_read = matches!(exchange.head.method.as_str(), "GET" | "HEAD");
        let retryable = body.is_some() || (is_read && !exchange.has_body());
        let every_server = |first: Option<usize>| -> Vec<(usize, Option<Duration>)> {
            first
                .map(|s| (s, None))
                .into_iter()
                .chain(
                    (0..self.upstream.servers.len())
                        .filter(|s| Some(*s) != first)
                        .map(|s| (s, Some(SHORT_CONNECT_TIMEOUT))),
                )
                .collect()
        };
        let mut candidates: Vec<(usize, Option<Duration>)> = match self.upstream.pick() {
            Some(server) if body.is_some() => every_server(Some(server)),
            Some(server) => vec![(server, None)],
            None if self.offline.is_some() && !info.is_long_running() => every_server(None),
            None if self.offline.is_some() => {
                return self.answer_offline(exchange, asked, body.as_deref(), decided, None);
            }
            None => {
                return refuse(
                    exchange,
                    &Refusal::NoHealthyApiserver(self.upstream.unavailable_reason()),
                );
            }
        };
        if plan.is_none() {
            plan = self
                .cache
                .as_ref()
                .and_then(|cache| cache.plan(info, query, component, edge_cache));
        }
        let with_client_cert = exchange.head.header("authorization").is_none();
        let headers = forwarded_headers(&exchange.head.headers, with_client_cert);
        let long_running = info.is_long_running();
        let target = exchange.head.target();
        let method = exchange.head.method.clone();
        let head_size = method.len()
            + target.len()
            + headers
                .iter()
                .map(|(n, v)| n.len() + v.len() + 4)
                .sum::<usize>();
        if head_size > upstream::MAX_HEAD_BYTES {
            return refuse(
                exchange,
                &Refusal::HeadTooLargeToForward(head_size, upstream::MAX_HEAD_BYTES),
            );
        }
        let mut last_error = None;
        let mut sent = None;
        let mut attempt = 0;
        while let Some(&(server, connect_timeout)) = candidates.get(attempt) {
            attempt += 1;
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
                connect_timeout,
            };
            let url = &self.upstream.servers[server].url;
            match self.upstream.send(server, outgoing) {
                Ok(response) => {
                    sent = Some((server, response));
                    break;
                }
                Err(e) => {
                    self.metrics.upstream_errors.fetch_add(1, Ordering::Relaxed);
                    log::warn!("{method} {target}: {url} failed: {e}");
                    let unreachable = e.is_connect_failure();
                    last_error = Some((url.clone(), e));
                    if !unreachable {
                        break;
                    }
                    // A GET that never reached its server goes once to the next.
                    if retryable
                        && body.is_none()
                        && candidates.len() == 1
                        && let Some(next) = self.upstream.next_after(server)
                    {
                        candidates.push((next, None));
                    }
                }
            }
        }
        let Some((server, mut response)) = sent else {
            let Some((url, e)) = last_error else {
                return;
            };
            // Not one apiserver could be reached: a read the cache can answer,
            // a write or TokenRequest that reached none, a watch of a cached
            // component are answered offline. A write whose connections only
            // timed out is answered offline only once the health checker
            // confirmed every apiserver down: an apiserver that is starting
            // accepts connections before it answers them, and a write faked
            // then (kubelet registering its node) would never be made again.
            let confirmed_down = health.all_unhealthy();
            let write_may_be_faked =
                e.unreachable() != Some(Unreachable::Timeout) || confirmed_down;
            let offline_fits = e.is_connect_failure()
                && (body.is_some() && write_may_be_faked
                    || (info.verb == Verb::Watch
                        && self
                            .cache
                            .as_ref()
                            .is_some_and(|c| c.is_cached_component(component, edge_cache))))
                || (plan.is_some() && matches!(info.verb, Verb::Get | Verb::List) && retryable);
            if self.offline.is_some() && offline_fits {
                let how = e.unreachable().map(Unreachable::as_str);
                return self.answer_offline(exchange, asked, body.as_deref(), None, how);
            }
            return refuse(
                exchange,
                &Refusal::Upstream {
                    url,
                    error: e.to_string(),
                    timed_out: e.is_timeout(),
                },
            );
        };
        // A stream ends when its apiserver is marked unhealthy (a silent link
        // would otherwise hold it open forever with no events and no error).
        let source = long_running.then_some(StreamSource {
            health,
            server,
            url: &self.upstream.servers[server].url,
            ended: &self.metrics.streams_ended_unhealthy,
        });
        let answer = RelayedAnswer {
            status: response.status,
            headers: std::mem::take(&mut response.headers),
            body: response.into_reader(),
        };
        self.relay_answer(exchange, asked, &target, answer, plan, source);
    }

    /// Relays an answer (an apiserver's or the shared watch's): the
    /// filters see what the client gets; the cache keeps what was sent.
    fn relay_answer<S: Stream>(
        &self,
        exchange: &mut Exchange<'_, S>,
        asked: &Asked<'_>,
        target: &str,
        answer: RelayedAnswer<impl Read>,
        plan: Option<crate::cache::Plan>,
        source: Option<StreamSource<'_>>,
    ) {
        let Asked {
            info, component, ..
        } = *asked;
        let tee = |status: u16, content_type: Option<&str>| {
            let cache = self.cache.as_ref()?;
            cache.tee(plan?, status, content_type, self.budget.empty_copy())
        };
        let filters = self.filters.for_request(component, info);
        let head_request = exchange.head.method == "HEAD";
        let body_filter = |status: u16, content_type: Option<&str>| {
            let filters = filters.as_slice();
            (status == 200 && !head_request)
                .then(|| self.filters.body_filter(filters, info, content_type))
                .flatten()
        };
        let relayed = Relayed {
            target,
            budget: &self.budget,
            filters: &self.filters,
        };
        relay(exchange, answer, relayed, tee, body_filter, source);
    }

    /// Answers from the cache (edge mode), counted: every offline answer,
    /// writes per component and verb, and why no apiserver could be reached.
    fn answer_offline<S: Stream>(
        &self,
        exchange: &mut Exchange<'_, S>,
        asked: &Asked<'_>,
        body: Option<&[u8]>,
        decided: Option<offline::Answer>,
        unreachable: Option<&'static str>,
    ) {
        let Asked {
            info,
            query,
            component,
            port,
            ..
        } = *asked;
        let Some(offline) = &self.offline else {
            return;
        };
        // Offline no token can be checked: the secure port, which pods
        // reach, never hands out credentials the cache holds.
        if port == Port::Secure && offline::is_credential(info) {
            return refuse(
                exchange,
                &Refusal::NoHealthyApiserver(
                    "no apiserver is reachable to check the token, and the hub's secure port \
                     never answers Secrets or service-account tokens from its cache"
                        .into(),
                ),
            );
        }
        self.metrics.offline_answers.fetch_add(1, Ordering::Relaxed);
        if let Some(how) = unreachable {
            self.metrics.count_unreachable(how);
        }
        if info.verb.is_write() {
            self.metrics
                .count_offline_write(component, info.verb.as_str());
        }
        match decided {
            Some(answer) => offline.write(exchange, answer, query),
            None => offline.answer(exchange, info, query, component, body),
        }
    }
}

thread_local! {
    /// The connection thread's relay buffer, kept between its requests:
    /// allocating and clearing 32 KiB for every request showed in profiles.
    static RELAY: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The thread's relay buffer while a response is relayed; handed back to
/// the thread when dropped, however the relay ends.
struct RelayBuffer(Vec<u8>);

impl RelayBuffer {
    fn take(size: usize) -> RelayBuffer {
        let mut buffer = RELAY.with(|cell| std::mem::take(&mut *cell.borrow_mut()));
        if buffer.len() < size {
            buffer.resize(size, 0);
        }
        RelayBuffer(buffer)
    }
}

impl Drop for RelayBuffer {
    fn drop(&mut self) {
        let buffer = std::mem::take(&mut self.0);
        RELAY.with(|cell| *cell.borrow_mut() = buffer);
    }
}

/// What a request asks, as the offline answers need it.
#[derive(Clone, Copy)]
struct Asked<'a> {
    info: &'a RequestInfo,
    query: &'a Query,
    component: &'a str,
    port: Port,
    /// How long the request may take upstream (its own timeout, bounded).
    deadline: Deadline,
}

/// Where a relayed stream comes from, to end it once that apiserver is
/// marked unhealthy.
struct StreamSource<'a> {
    health: &'a HealthState,
    server: usize,
    url: &'a str,
    ended: &'a AtomicU64,
}

/// How an answer's body is coded (`Content-Encoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ContentCoding {
    Identity,
    Gzip,
    /// One the hub cannot read: relayed as it is, never cached or filtered.
    Other,
}

impl ContentCoding {
    fn of(header: Option<&str>) -> ContentCoding {
        match header.map(str::trim) {
            None | Some("") => ContentCoding::Identity,
            Some(v) if v.eq_ignore_ascii_case("identity") => ContentCoding::Identity,
            Some(v) if v.eq_ignore_ascii_case("gzip") || v.eq_ignore_ascii_case("x-gzip") => {
                ContentCoding::Gzip
            }
            Some(_) => ContentCoding::Other,
        }
    }
}

/// An answer as the relay sends it on: an apiserver's, or the shared
/// watch's.
struct RelayedAnswer<R> {
    status: u16,
    headers: Vec<(String, String)>,
    body: R,
}

impl<R> RelayedAnswer<R> {
    fn header(&self, name: &str) -> Option<&str> {
        header_value(&self.headers, name)
    }
}

/// What a relay needs besides the response.
struct Relayed<'a> {
    target: &'a str,
    budget: &'a Arc<MemoryBudget>,
    filters: &'a FilterState,
}

/// Streams an upstream response to the client, flushing every piece as it arrives.
/// `tee` may copy the body aside for the cache, and `body_filter` filter what
/// the client gets, given the status and Content-Type.
fn relay<S: Stream>(
    exchange: &mut Exchange<'_, S>,
    answer: RelayedAnswer<impl Read>,
    relayed: Relayed<'_>,
    tee: impl FnOnce(u16, Option<&str>) -> Option<Tee>,
    body_filter: impl FnOnce(u16, Option<&str>) -> Option<BodyFilter>,
    source: Option<StreamSource<'_>>,
) {
    let Relayed {
        target,
        budget,
        filters,
    } = relayed;
    let response = answer;
    // A gzip body (kube-apiserver compresses lists past 128 KiB for clients
    // that accept it) is read decompressed; one in another coding is not read.
    let coding = ContentCoding::of(response.header("content-encoding"));
    let readable = coding != ContentCoding::Other;
    let mut filter =
        body_filter(response.status, response.header("content-type")).filter(|_| readable);
    // A filtered body's length is known only once filtered: sent chunked,
    // and decompressed.
    let length = response
        .header("content-length")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|_| filter.is_none());
    let headers: Vec<(String, String)> = response
        .headers
        .iter()
        .filter(|(name, _)| {
            let name = name.to_ascii_lowercase();
            let decompressed = filter.is_some() && name == "content-encoding";
            !(NOT_RETURNED.contains(&name.as_str()) || decompressed)
        })
        .cloned()
        .collect();
    if exchange
        .start_response(response.status, &headers, length)
        .is_err()
    {
        return;
    }
    let mut tee = tee(response.status, response.header("content-type")).filter(|_| readable);
    let mut gunzip = (coding == ContentCoding::Gzip && (tee.is_some() || filter.is_some()))
        .then(|| Gunzip::new(budget.limit()));
    let mut reader = response.body;
    // Past the memory budget, a small buffer: slower, never bigger.
    let held = budget.reserve(RELAY_BUFFER);
    let size = if held.is_some() {
        RELAY_BUFFER
    } else {
        SMALL_RELAY_BUFFER
    };
    let mut pooled = RelayBuffer::take(size);
    let buffer = &mut pooled.0[..size];
    // What a filtered object or list holds until its end.
    let mut filter_held = budget.empty();
    loop {
        match reader.read(buffer) {
            Ok(0) => break,
            Ok(n) => {
                let raw = &buffer[..n];
                let plain = match gunzip.as_mut().map(|g| g.push(raw)) {
                    None => None,
                    Some(Ok(plain)) => Some(plain),
                    Some(Err(e)) => {
                        log::warn!("{target}: cannot decompress the answer: {e}");
                        if filter.is_some() {
                            exchange.abort();
                            return;
                        }
                        (tee, gunzip) = (None, None);
                        None
                    }
                };
                let readable = plain.as_deref().unwrap_or(raw);
                let sent = match filter.as_mut() {
                    None => exchange.write_body(raw),
                    Some(filter) => {
                        let (out, error) = filter.push(readable);
                        if let Some(e) = error {
                            log::warn!(
                                "{target}: the rest of the stream goes out unfiltered, the response filters cannot read it: {e}"
                            );
                        }
                        filters.record(&filter.take_counts());
                        if !filter_held.grow_or_oversize(filter.held()) {
                            log::warn!(
                                "{target}: the memory budget cannot hold the answer the filters need whole; cut short"
                            );
                            exchange.abort();
                            return;
                        }
                        let sent = exchange.write_body(&out);
                        if sent.is_ok() && filter.ended() {
                            log::info!(
                                "{target}: watch ended for the client to list again, the filters now know their context"
                            );
                            let _ = exchange.finish();
                            return;
                        }
                        sent
                    }
                };
                // The client first: decoding for the cache must not delay it.
                if sent.is_err() {
                    log::debug!("{target}: client went away");
                    return;
                }
                if let Some(tee) = tee.as_mut() {
                    tee.push(readable);
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
    if let Some(Err(e)) = gunzip.as_ref().map(Gunzip::finish) {
        log::warn!("{target}: the compressed answer is incomplete: {e}");
        if filter.is_some() {
            exchange.abort();
            return;
        }
        tee = None;
    }
    if let Some(filter) = filter.as_mut() {
        let (out, error) = filter.finish();
        if let Some(e) = error {
            log::warn!("{target}: sent unfiltered, the response filters cannot read it: {e}");
        }
        filters.record(&filter.take_counts());
        if exchange.write_body(&out).is_err() {
            return;
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

/// The request's header fields as sent upstream. When the hub presents its
/// own client certificate, fields that would make the apiserver act for
/// someone else (`Impersonate-*`, and `X-Remote-*` of front proxies) are
/// dropped: the node's identity is never lent.
fn forwarded_headers(
    headers: &[(String, String)],
    with_client_cert: bool,
) -> Vec<(String, String)> {
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
            let borrows_identity =
                name.starts_with("impersonate-") || name.starts_with("x-remote-");
            let dropped = NOT_FORWARDED.contains(&name.as_str())
                || listed.contains(&name)
                || (with_client_cert && borrows_identity);
            !dropped
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
        let names: Vec<String> = forwarded_headers(&headers, false)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["Accept", "Authorization", "Content-Length"]);
    }

    #[test]
    fn identity_headers_are_dropped_only_under_the_hubs_certificate() {
        let headers: Vec<(String, String)> = [
            "Impersonate-User",
            "impersonate-group",
            "Impersonate-Extra-Scopes",
            "X-Remote-User",
            "x-remote-group",
            "Accept",
        ]
        .iter()
        .map(|n| (n.to_string(), "x".to_string()))
        .collect();
        let names = |with_client_cert| -> Vec<String> {
            forwarded_headers(&headers, with_client_cert)
                .into_iter()
                .map(|(n, _)| n)
                .collect()
        };
        assert_eq!(names(true), ["Accept"]);
        assert_eq!(names(false).len(), headers.len());
    }

    #[test]
    fn content_codings_the_hub_reads() {
        let rows = [
            (None, ContentCoding::Identity),
            (Some(""), ContentCoding::Identity),
            (Some("identity"), ContentCoding::Identity),
            (Some("gzip"), ContentCoding::Gzip),
            (Some(" GZIP "), ContentCoding::Gzip),
            (Some("x-gzip"), ContentCoding::Gzip),
            (Some("br"), ContentCoding::Other),
            (Some("gzip, br"), ContentCoding::Other),
            (Some("deflate"), ContentCoding::Other),
        ];
        for (header, coding) in rows {
            assert_eq!(ContentCoding::of(header), coding, "{header:?}");
        }
    }

    #[test]
    fn bearer_tokens_are_recognised() {
        let cases = [
            (None, false),
            (Some(""), false),
            (Some("Bearer"), false),
            (Some("Bearer "), false),
            (Some("Basic dXNlcjpwYXNz"), false),
            (Some("Bearer abc"), true),
            (Some("bearer abc"), true),
            (Some("  BEARER   abc "), true),
        ];
        for (value, expected) in cases {
            assert_eq!(has_bearer_token(value), expected, "{value:?}");
        }
    }
}
