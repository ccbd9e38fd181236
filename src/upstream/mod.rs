//! The cloud side: the apiservers, the HTTP client that reaches them, and
//! the balancer that picks one. The only module that speaks HTTP to an
//! apiserver: `client.rs` (pool, connect, exchange), `connection.rs` (one
//! connection's reads and writes), `response.rs` (response heads and body
//! framing, pure).

mod client;
mod connection;
mod response;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::balancer::{self, LbMode};
use crate::certs;
use crate::health::HealthState;
use client::{Client, Request, Target, Timing};

/// Time to open a TCP connection and finish the TLS handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time for a watch's response head to arrive.
const WATCH_HEAD_TIMEOUT: Duration = Duration::from_secs(60);
/// A quiet stream's read returns `TimedOut` at least this often, so the relay
/// can check whether its client is still there and its apiserver still
/// considered healthy (the read can then simply be retried).
const MAX_STREAM_POLL: Duration = Duration::from_secs(2);
/// Whole-request time when the client set none (kube-apiserver's own default is 60 s).
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest whole-request time a client can ask for (kube-apiserver itself
/// caps it at its `--request-timeout`, one minute by default); also keeps
/// any deadline arithmetic far from overflowing.
const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(3600);
/// Added to a client's own timeout so the apiserver's answer wins the race.
const TIMEOUT_GRACE: Duration = Duration::from_secs(5);
/// The largest request head forwarded upstream: 16 KiB less room for the
/// Host field and framing the client adds (what the hub has always
/// forwarded; kube-apiserver itself takes up to 1 MiB).
pub const MAX_HEAD_BYTES: usize = 16 * 1024 - 512;
/// The largest answer to one of the hub's own requests (`Upstream::call`).
const MAX_CALL_BODY: usize = 1024 * 1024;
/// What a probe reads of a `/readyz` answer (the body is dropped; read to
/// its end, the connection serves the next probe).
const MAX_PROBE_BODY: u64 = 64 * 1024;

/// How long the hub waits on the upstream for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// Watches and other streams: no limit once the head has arrived (reads
    /// wake every `Upstream::stream_poll` to notice a departed client or an
    /// apiserver marked unhealthy).
    Stream,
    /// Everything else: the whole exchange within this time.
    Within(Duration),
}

impl Deadline {
    /// From the request: `timeout` (a Go duration), else `timeoutSeconds`, else the default.
    pub fn for_request(
        long_running: bool,
        timeout: Option<Duration>,
        timeout_seconds: Option<u64>,
    ) -> Deadline {
        if long_running {
            return Deadline::Stream;
        }
        let own = timeout.or(timeout_seconds.map(Duration::from_secs));
        Deadline::Within(
            own.filter(|d| !d.is_zero())
                .unwrap_or(DEFAULT_REQUEST_TIMEOUT)
                .min(MAX_REQUEST_TIMEOUT)
                + TIMEOUT_GRACE,
        )
    }
}

/// One request to send upstream.
pub struct Outgoing<'a> {
    pub method: &'a str,
    /// Path and query as the client sent them (still encoded).
    pub target: &'a str,
    pub headers: &'a [(String, String)],
    pub body: Option<&'a mut dyn Read>,
    pub deadline: Deadline,
    /// Present the hub's client certificate (false when the client brings its own token).
    pub with_client_cert: bool,
    /// A shorter connect deadline than the default (an apiserver the health
    /// checker calls unhealthy is tried quickly).
    pub connect_timeout: Option<Duration>,
}

/// An apiserver's answer as it is relayed: status, header fields (those whose
/// value is text) and the body, read as it arrives.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    body: client::Body,
}

impl Response {
    /// The first value of a header field (names compared without case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body; a quiet stream's read fails with `is_quiet_stream`.
    pub fn into_reader(self) -> impl Read + Send + 'static {
        self.body
    }
}

/// Why a request to an apiserver failed before its answer's head arrived.
#[derive(Debug)]
pub struct SendError {
    message: String,
    unreachable: Option<Unreachable>,
    timed_out: bool,
}

/// Why an apiserver could not be reached at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreachable {
    Refused,
    Timeout,
    NoRoute,
}

impl Unreachable {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Unreachable::Refused => "refused",
            Unreachable::Timeout => "timeout",
            Unreachable::NoRoute => "unreachable",
        }
    }
}

impl SendError {
    /// A failure after the answer began: never a connect failure.
    fn answer(message: String, timed_out: bool) -> SendError {
        SendError {
            message,
            unreachable: None,
            timed_out,
        }
    }

    /// The connection or the TLS handshake failed: the request never reached
    /// the apiserver's handling, so a GET can be retried elsewhere.
    pub fn is_connect_failure(&self) -> bool {
        self.unreachable.is_some()
    }

    /// How the apiserver could not be reached, when it could not.
    pub fn unreachable(&self) -> Option<Unreachable> {
        self.unreachable
    }

    /// The upstream ran out of time (the client gets 504, not 502).
    pub fn is_timeout(&self) -> bool {
        self.timed_out
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// One apiserver.
#[derive(Debug, Clone)]
pub struct Server {
    /// Base URL without a trailing slash, e.g. `https://10.0.0.1:6443`.
    pub url: String,
}

/// The apiservers and the clients to reach them.
pub struct Upstream {
    pub servers: Vec<Server>,
    mode: LbMode,
    turn: AtomicUsize,
    pub health: Arc<HealthState>,
    /// One identity presents the hub's client certificate (replaced when it
    /// rotates), one presents none: for requests carrying their own
    /// credentials.
    client: Client,
    /// Why the TLS material cannot be used, if it cannot.
    credential_problem: RwLock<Option<String>>,
    /// How often a quiet stream's read wakes up: at most one heartbeat, so a
    /// stream from an apiserver marked unhealthy ends within one heartbeat.
    stream_poll: Duration,
    /// Per server: when it last failed to connect, in milliseconds since
    /// `epoch` (0: it answered since). Atomic: every request notes it.
    unreachable: Vec<AtomicU64>,
    epoch: Instant,
    /// How long a connect failure counts as recent.
    unreachable_window: Duration,
}

impl Upstream {
    pub fn new(
        servers: Vec<Server>,
        mode: LbMode,
        health: Arc<HealthState>,
        ca_file: &Path,
        client_cert_file: &Path,
        heartbeat: Duration,
        probe_timeout: Duration,
    ) -> Upstream {
        let mut problems = Vec::new();
        let roots = certs::load_ca(ca_file).unwrap_or_else(|e| {
            problems.push(e);
            Arc::new(Vec::new())
        });
        let identity = certs::load_client_identity(client_cert_file)
            .map_err(|e| problems.push(e))
            .ok();
        if let Some(identity) = &identity {
            log::info!(
                "client certificate {}: CN {:?}, valid until {}",
                client_cert_file.display(),
                identity.info.subject_cn,
                identity.info.not_after
            );
            if identity.info.expired() {
                problems.push(format!(
                    "client certificate {} has expired",
                    client_cert_file.display()
                ));
            }
        }
        let targets = servers
            .iter()
            .map(|server| Target::parse(&server.url))
            .collect::<Result<Vec<_>, _>>()
            .unwrap_or_else(|e| {
                // config.rs checked every URL: not reached.
                problems.push(e);
                Vec::new()
            });
        for problem in &problems {
            log::error!("{problem}");
        }
        Upstream {
            mode,
            turn: AtomicUsize::new(0),
            health,
            client: Client::new(targets, &roots, identity.as_ref()),
            credential_problem: RwLock::new((!problems.is_empty()).then(|| problems.join("; "))),
            stream_poll: heartbeat.clamp(Duration::from_millis(100), MAX_STREAM_POLL),
            unreachable: servers.iter().map(|_| AtomicU64::new(0)).collect(),
            epoch: Instant::now(),
            unreachable_window: heartbeat + probe_timeout,
            servers,
        }
    }

    /// Why the TLS material cannot be used, if it cannot.
    pub fn credential_problem(&self) -> Option<String> {
        self.credential_problem
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_credential_problem(&self, problem: Option<String>) {
        *self
            .credential_problem
            .write()
            .unwrap_or_else(|e| e.into_inner()) = problem;
    }

    /// Starts presenting a new client identity on new connections. Requests in
    /// flight (watches included) finish on the connections they have.
    pub fn use_client_identity(&self, identity: certs::ClientIdentity) {
        self.client.use_identity(&identity);
    }

    /// The server for the next request, if any is usable.
    pub fn pick(&self) -> Option<usize> {
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        balancer::choose(self.mode, &self.health.usable(), turn)
    }

    /// Another usable server to retry on after `failed`.
    pub fn next_after(&self, failed: usize) -> Option<usize> {
        balancer::next_after(self.mode, &self.health.usable(), failed)
    }

    /// Why no apiserver is usable: each server with its last probe error, and
    /// any problem with the TLS material.
    pub fn unavailable_reason(&self) -> String {
        let mut reasons: Vec<String> = self
            .servers
            .iter()
            .enumerate()
            .map(|(i, server)| match self.health.last_error(i) {
                error if error.is_empty() => format!("{} not healthy yet", server.url),
                error => format!("{}: {error}", server.url),
            })
            .collect();
        reasons.extend(self.credential_problem());
        format!("no healthy apiserver ({})", reasons.join("; "))
    }

    /// Sends a request and returns once the response head has arrived.
    pub fn send(&self, server: usize, outgoing: Outgoing<'_>) -> Result<Response, SendError> {
        let request = Request {
            method: outgoing.method,
            target: outgoing.target,
            headers: outgoing.headers,
            body: outgoing.body,
            with_client_cert: outgoing.with_client_cert,
        };
        let timing = Timing {
            deadline: outgoing.deadline,
            connect_timeout: outgoing.connect_timeout.unwrap_or(CONNECT_TIMEOUT),
            stream_poll: self.stream_poll,
        };
        let sent = self.client.send(server, request, &timing);
        let (head, body) = self.note_reachability(server, sent, false)?;
        Ok(Response {
            status: head.status,
            headers: head.headers,
            body,
        })
    }

    /// A small request of the hub's own, read whole (at most 1 MiB, a
    /// larger answer is an error): with the hub's client certificate, or
    /// with `bearer` as its only credential.
    pub fn call(
        &self,
        server: usize,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        json_body: Option<&[u8]>,
    ) -> Result<(u16, Vec<u8>), SendError> {
        let mut headers = vec![
            ("Accept".to_string(), "application/json".to_string()),
            ("User-Agent".to_string(), "yurthub".to_string()),
        ];
        if let Some(token) = bearer {
            headers.push(("Authorization".into(), format!("Bearer {token}")));
        }
        if let Some(body) = json_body {
            headers.push(("Content-Type".into(), "application/json".into()));
            headers.push(("Content-Length".into(), body.len().to_string()));
        }
        let mut body_reader = json_body;
        let request = Request {
            method,
            target: path,
            headers: &headers,
            body: body_reader.as_mut().map(|b| b as &mut dyn Read),
            with_client_cert: bearer.is_none(),
        };
        let timing = Timing {
            deadline: Deadline::Within(Duration::from_secs(30)),
            connect_timeout: CONNECT_TIMEOUT,
            stream_poll: self.stream_poll,
        };
        let sent = self.client.send(server, request, &timing);
        let (head, body) = self.note_reachability(server, sent, false)?;
        let mut bytes = Vec::new();
        let limit = MAX_CALL_BODY as u64 + 1;
        let read = body.take(limit).read_to_end(&mut bytes);
        let url = &self.servers[server].url;
        match read {
            Err(e) => Err(SendError::answer(
                format!("reading the answer of {url}: {e}"),
                e.kind() == std::io::ErrorKind::TimedOut,
            )),
            Ok(n) if n > MAX_CALL_BODY => Err(SendError::answer(
                format!("the answer of {url} is larger than {MAX_CALL_BODY} bytes"),
                false,
            )),
            Ok(_) => Ok((head.status, bytes)),
        }
    }

    /// One health probe: `GET /readyz` with the hub's credentials, all of
    /// it within `timeout`.
    pub fn probe(&self, server: usize, timeout: Duration) -> Result<(), String> {
        let request = Request {
            method: "GET",
            target: "/readyz",
            headers: &[],
            body: None,
            with_client_cert: true,
        };
        let timing = Timing {
            deadline: Deadline::Within(timeout),
            connect_timeout: CONNECT_TIMEOUT.min(timeout),
            stream_poll: self.stream_poll,
        };
        let sent = self.client.send(server, request, &timing);
        let (head, body) = self
            .note_reachability(server, sent, true)
            .map_err(|e| e.to_string())?;
        // Read to its end, so the connection serves the next probe.
        let _ = std::io::copy(&mut body.take(MAX_PROBE_BODY), &mut std::io::sink());
        match head.status {
            200 => Ok(()),
            status => Err(format!("/readyz answered {status}")),
        }
    }

    /// Remembers whether a server could be reached: any answer clears it, a
    /// connect failure records when and how.
    fn note_reachability<T>(
        &self,
        server: usize,
        result: Result<T, SendError>,
        silence_is_unreachable: bool,
    ) -> Result<T, SendError> {
        let last = &self.unreachable[server];
        match result {
            Ok(value) => {
                // Read first: a store on every request would bounce the line
                // between cores for nothing.
                if last.load(Ordering::Relaxed) != 0 {
                    last.store(0, Ordering::Relaxed);
                }
                Ok(value)
            }
            Err(error) => {
                // A probe that got no answer at all in its time (a stopped
                // process, a link that drops packets) counts as unreachable;
                // a slow answer to a request does not.
                if error.is_connect_failure() || (silence_is_unreachable && error.is_timeout()) {
                    let millis = self.epoch.elapsed().as_millis() as u64;
                    last.store(millis.max(1), Ordering::Relaxed);
                }
                Err(error)
            }
        }
    }

    /// Whether every server failed to connect (or to answer a probe at all)
    /// within the last heartbeat and probe timeout and none answered since:
    /// then a request is answered offline at once instead of paying the
    /// connect deadline again.
    pub fn recently_unreachable(&self) -> bool {
        let now = self.epoch.elapsed().as_millis() as u64;
        let window = self.unreachable_window.as_millis() as u64;
        self.unreachable.iter().all(|last| {
            let at = last.load(Ordering::Relaxed);
            at != 0 && now.saturating_sub(at) <= window
        })
    }
}

/// How often the client certificate file is checked for rotation.
const CERT_CHECK: Duration = Duration::from_secs(5);

/// Follows kubelet's rotation of the client certificate file (usually a
/// symlink to a dated file): a changed file is loaded and used for new
/// upstream connections; a bad or expired one is reported and the last good
/// identity kept.
pub fn follow_client_certificate(upstream: Arc<Upstream>, path: PathBuf) -> std::io::Result<()> {
    let fingerprint = |path: &Path| {
        std::fs::metadata(path)
            .map(|m| {
                (
                    m.modified().ok(),
                    m.len(),
                    std::os::unix::fs::MetadataExt::ino(&m),
                )
            })
            .ok()
    };
    std::thread::Builder::new()
        .name("yh-certs".into())
        .spawn(move || {
            let mut seen = fingerprint(&path);
            let mut expiry = certs::load_client_identity(&path).ok().map(|id| id.info);
            loop {
                std::thread::sleep(CERT_CHECK);
                let now = fingerprint(&path);
                if now != seen {
                    seen = now;
                    match certs::load_client_identity(&path) {
                        Ok(identity) if identity.info.expired() => {
                            let problem =
                                format!("client certificate {} has expired", path.display());
                            log::error!("{problem}; keeping the previous one");
                            upstream.set_credential_problem(Some(problem));
                        }
                        Ok(identity) => {
                            log::info!(
                                "client certificate {} changed: now CN {:?}, valid until {}",
                                path.display(),
                                identity.info.subject_cn,
                                identity.info.not_after
                            );
                            expiry = Some(identity.info.clone());
                            upstream.use_client_identity(identity);
                            upstream.set_credential_problem(None);
                        }
                        Err(e) => {
                            log::error!("{e}; keeping the previous client certificate");
                            upstream.set_credential_problem(Some(e));
                        }
                    }
                }
                if let Some(info) = expiry.as_ref().filter(|info| info.expired()) {
                    let problem = format!("client certificate {} has expired", path.display());
                    if upstream.credential_problem().as_deref() != Some(problem.as_str()) {
                        log::error!("{problem} (CN {:?})", info.subject_cn);
                        upstream.set_credential_problem(Some(problem));
                    }
                }
            }
        })?;
    Ok(())
}

/// Why a read of a stream's body failed: it was quiet for the stream poll
/// interval (the connection is intact; reading again continues the stream).
#[derive(Debug)]
struct QuietStream;

impl std::fmt::Display for QuietStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("no data from the apiserver for a stream poll interval")
    }
}

impl std::error::Error for QuietStream {}

pub fn quiet_stream() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, QuietStream)
}

/// Whether a body read failed only because the stream was quiet for
/// the stream poll interval; reading again continues the stream.
pub fn is_quiet_stream(error: &std::io::Error) -> bool {
    error
        .get_ref()
        .is_some_and(|inner| inner.is::<QuietStream>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_follow_the_request() {
        assert_eq!(
            Deadline::for_request(true, Some(Duration::from_secs(1)), None),
            Deadline::Stream
        );
        assert_eq!(
            Deadline::for_request(false, Some(Duration::from_secs(10)), Some(300)),
            Deadline::Within(Duration::from_secs(15))
        );
        assert_eq!(
            Deadline::for_request(false, None, Some(30)),
            Deadline::Within(Duration::from_secs(35))
        );
        assert_eq!(
            Deadline::for_request(false, None, None),
            Deadline::Within(Duration::from_secs(65))
        );
        // Any number a client sends is bounded: no overflow, no endless wait.
        assert_eq!(
            Deadline::for_request(false, None, Some(u64::MAX)),
            Deadline::Within(Duration::from_secs(3605))
        );
        assert_eq!(
            Deadline::for_request(false, Some(Duration::MAX), None),
            Deadline::Within(Duration::from_secs(3605))
        );
    }
}
