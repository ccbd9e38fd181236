//! The cloud side: the apiservers, the HTTP clients that reach them, and the
//! balancer that picks one. The only module that knows ureq.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use ureq::config::AutoHeaderValue;
use ureq::http;
use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig, TlsProvider};
use ureq::{Agent, AsSendBody, SendBody};

use crate::balancer::{self, LbMode};
use crate::certs;
use crate::health::HealthState;

use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};
use ureq::{Body, Error};

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
const IO_BUFFER: usize = 16 * 1024;
/// The largest request head the upstream client can write (its output
/// buffer, less room for the Host field and framing it adds).
pub const MAX_HEAD_BYTES: usize = IO_BUFFER - 512;

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
    body: Body,
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
        self.body.into_reader()
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

impl From<Error> for SendError {
    fn from(error: Error) -> SendError {
        SendError {
            unreachable: unreachable(&error),
            timed_out: is_timeout(&error),
            message: error.to_string(),
        }
    }
}

impl From<http::Error> for SendError {
    fn from(error: http::Error) -> SendError {
        SendError::from(Error::from(error))
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
    /// Presents the hub's client certificate; replaced when it rotates.
    agent_with_cert: RwLock<Agent>,
    /// Presents none: for requests carrying their own credentials.
    agent_anonymous: Agent,
    roots: Arc<Vec<ureq::tls::Certificate<'static>>>,
    /// Why the TLS material cannot be used, if it cannot.
    credential_problem: RwLock<Option<String>>,
    /// How often a quiet stream's read wakes up: at most one heartbeat, so a
    /// stream from an apiserver marked unhealthy ends within one heartbeat.
    stream_poll: Duration,
    /// Per server: when it last failed to connect (`None` once it answered).
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
        let roots = certs::load_ca(ca_file).map(|ders| {
            Arc::new(
                ders.iter()
                    .map(|der| Certificate::from_der(der.as_ref()).to_owned())
                    .collect(),
            )
        });
        let roots = roots.unwrap_or_else(|e| {
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
        for problem in &problems {
            log::error!("{problem}");
        }
        Upstream {
            mode,
            turn: AtomicUsize::new(0),
            health,
            agent_with_cert: RwLock::new(new_agent(roots.clone(), identity)),
            agent_anonymous: new_agent(roots.clone(), None),
            roots,
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
        let agent = new_agent(self.roots.clone(), Some(identity));
        *self
            .agent_with_cert
            .write()
            .unwrap_or_else(|e| e.into_inner()) = agent;
    }

    fn cert_agent(&self) -> Agent {
        self.agent_with_cert
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
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
        let url = format!("{}{}", self.servers[server].url, outgoing.target);
        let mut builder = http::Request::builder().method(outgoing.method).uri(url);
        for (name, value) in outgoing.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let agent = if outgoing.with_client_cert {
            self.cert_agent()
        } else {
            self.agent_anonymous.clone()
        };
        let agent = &agent;
        let poll = self.stream_poll;
        let connect = outgoing.connect_timeout;
        let sent = match outgoing.body {
            Some(reader) => run(
                agent,
                builder.body(SendBody::from_reader(reader))?,
                outgoing.deadline,
                poll,
                connect,
            ),
            None => run(agent, builder.body(())?, outgoing.deadline, poll, connect),
        };
        let response = self.note_reachability(server, sent, false)?;
        let (parts, body) = response.into_parts();
        Ok(Response {
            status: parts.status.as_u16(),
            headers: parts
                .headers
                .iter()
                .filter_map(|(name, value)| {
                    Some((name.to_string(), value.to_str().ok()?.to_string()))
                })
                .collect(),
            body,
        })
    }

    /// A small request of the hub's own, read whole (at most 1 MiB): with the
    /// hub's client certificate, or with `bearer` as its only credential.
    pub fn call(
        &self,
        server: usize,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        json_body: Option<&[u8]>,
    ) -> Result<(u16, Vec<u8>), SendError> {
        let url = format!("{}{path}", self.servers[server].url);
        let mut builder = http::Request::builder()
            .method(method)
            .uri(url)
            .header("Accept", "application/json")
            .header("User-Agent", "yurthub");
        if let Some(token) = bearer {
            builder = builder.header("Authorization", format!("Bearer {token}"));
        }
        let agent = if bearer.is_some() {
            self.agent_anonymous.clone()
        } else {
            self.cert_agent()
        };
        let deadline = Deadline::Within(Duration::from_secs(30));
        let response = match json_body {
            Some(body) => run(
                &agent,
                builder
                    .header("Content-Type", "application/json")
                    .body(body)?,
                deadline,
                self.stream_poll,
                None,
            )?,
            None => run(&agent, builder.body(())?, deadline, self.stream_poll, None)?,
        };
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .with_config()
            .limit(1024 * 1024)
            .read_to_vec()?;
        Ok((status, body))
    }

    /// One health probe: `GET /readyz` with the hub's credentials.
    pub fn probe(&self, server: usize, timeout: Duration) -> Result<(), String> {
        let url = format!("{}/readyz", self.servers[server].url);
        let request = self
            .cert_agent()
            .get(&url)
            .config()
            .timeout_global(Some(timeout))
            .build();
        match self.note_reachability(server, request.call(), true) {
            Ok(response) if response.status() == 200 => Ok(()),
            Ok(response) => Err(format!("/readyz answered {}", response.status())),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Remembers whether a server could be reached: any answer clears it, a
    /// connect failure records when and how.
    fn note_reachability<T>(
        &self,
        server: usize,
        result: Result<T, Error>,
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
                let error = SendError::from(error);
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

fn run<B: AsSendBody>(
    agent: &Agent,
    request: http::Request<B>,
    deadline: Deadline,
    stream_poll: Duration,
    connect_timeout: Option<Duration>,
) -> Result<http::Response<Body>, Error> {
    let configured = agent
        .configure_request(request)
        .timeout_connect(Some(connect_timeout.unwrap_or(CONNECT_TIMEOUT)));
    let request = match deadline {
        Deadline::Stream => configured
            .timeout_global(None)
            .timeout_per_read(Some(stream_poll))
            .timeout_recv_response(Some(WATCH_HEAD_TIMEOUT))
            .build(),
        Deadline::Within(limit) => configured.timeout_global(Some(limit)).build(),
    };
    agent.run(request)
}

/// How a failed send never reached the server's request handling (the
/// connection or handshake failed), so that a GET can be retried elsewhere
/// and a write answered offline; `None` when it may have reached it.
fn unreachable(error: &Error) -> Option<Unreachable> {
    use std::io::ErrorKind;
    Some(match error {
        Error::ConnectionFailed => Unreachable::Refused,
        Error::HostNotFound => Unreachable::NoRoute,
        Error::Timeout(ureq::Timeout::Connect | ureq::Timeout::Resolve) => Unreachable::Timeout,
        // A reset or abort can come after the request was sent, and a TLS
        // error means something answered (a wrong CA is not an outage):
        // neither proves the request never reached an apiserver.
        Error::Io(e) => match e.kind() {
            ErrorKind::ConnectionRefused => Unreachable::Refused,
            ErrorKind::AddrNotAvailable
            | ErrorKind::HostUnreachable
            | ErrorKind::NetworkUnreachable => Unreachable::NoRoute,
            _ => return None,
        },
        _ => return None,
    })
}

/// Whether a body read failed only because the stream was quiet for
/// the stream poll interval; reading again continues the stream.
pub fn is_quiet_stream(error: &std::io::Error) -> bool {
    error.kind() == std::io::ErrorKind::TimedOut
        || error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<Error>())
            .is_some_and(|e| matches!(e, Error::Timeout(ureq::Timeout::PerRead)))
}

/// Whether the upstream ran out of time (the client gets 504, not 502).
fn is_timeout(error: &Error) -> bool {
    matches!(error, Error::Timeout(_))
        || matches!(error, Error::Io(e) if e.kind() == std::io::ErrorKind::TimedOut)
}

/// The client's form of a checked identity (`None` only if the key, already
/// checked against the certificate, cannot be read again).
fn client_cert(identity: &certs::ClientIdentity) -> Option<ClientCert> {
    let chain: Vec<Certificate<'static>> = identity
        .chain
        .iter()
        .map(|der| Certificate::from_der(der.as_ref()).to_owned())
        .collect();
    let key = PrivateKey::from_pem(&identity.key_pem).ok()?;
    Some(ClientCert::new_with_certs(&chain, key))
}

/// How long an apiserver's host name, once looked up, is used as it is.
const NAME_TTL: Duration = Duration::from_secs(30);

/// Finds an apiserver's addresses without a thread per request: ureq's own
/// resolver starts one for every request that has a timeout (all of the
/// hub's do), even when the host is an IP address. Addresses are parsed
/// here; a host name is looked up as ureq would (bounded by the request's
/// timeout) and kept for `NAME_TTL`.
#[derive(Debug, Default)]
struct ApiserverResolver {
    names: Mutex<std::collections::HashMap<String, (Instant, ResolvedSocketAddrs)>>,
    lookup: DefaultResolver,
}

impl Resolver for ApiserverResolver {
    fn resolve(
        &self,
        uri: &http::Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, Error> {
        let authority = uri.authority().ok_or(Error::HostNotFound)?;
        let port = authority
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("http") {
                80
            } else {
                443
            });
        let host = authority.host();
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = literal.parse::<std::net::IpAddr>() {
            let mut addrs = self.empty();
            addrs.push(std::net::SocketAddr::new(ip, port));
            return Ok(addrs);
        }
        let key = format!("{host}:{port}");
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, addrs)) = names.get(&key)
            && at.elapsed() < NAME_TTL
        {
            return Ok(addrs.clone());
        }
        drop(names);
        let addrs = self.lookup.resolve(uri, config, timeout)?;
        names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        names.retain(|_, (at, _)| at.elapsed() < NAME_TTL);
        names.insert(key, (Instant::now(), addrs.clone()));
        Ok(addrs)
    }
}

fn new_agent(
    roots: Arc<Vec<ureq::tls::Certificate<'static>>>,
    identity: Option<certs::ClientIdentity>,
) -> Agent {
    let tls = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .root_certs(RootCerts::Specific(roots))
        .client_cert(identity.and_then(|id| client_cert(&id)))
        .build();
    let config = Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(None)
        .user_agent(AutoHeaderValue::None)
        .accept(AutoHeaderValue::None)
        .accept_encoding(AutoHeaderValue::None)
        .input_buffer_size(IO_BUFFER)
        .output_buffer_size(IO_BUFFER)
        .max_idle_connections(64)
        .max_idle_connections_per_host(32)
        .max_idle_age(Duration::from_secs(60))
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .tls_config(tls)
        .build();
    Agent::with_parts(
        config,
        DefaultConnector::default(),
        ApiserverResolver::default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apiserver_addresses_are_found_without_a_thread_per_request() {
        let resolver = ApiserverResolver::default();
        let config = ureq::config::Config::default();
        let resolve = |uri: &str| {
            let uri: http::Uri = uri.parse().unwrap();
            resolver
                .resolve(&uri, &config, NextTimeout::default())
                .map(|addrs| addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>())
        };
        assert_eq!(
            resolve("https://10.0.0.1:6443/api").unwrap(),
            ["10.0.0.1:6443"]
        );
        assert_eq!(resolve("https://10.0.0.1/api").unwrap(), ["10.0.0.1:443"]);
        assert_eq!(
            resolve("https://[fd00::1]:6443/").unwrap(),
            ["[fd00::1]:6443"]
        );
        assert!(
            resolver.names.lock().unwrap().is_empty(),
            "no lookup for addresses"
        );
        let first = resolve("https://localhost:6443/").unwrap();
        assert!(!first.is_empty());
        assert_eq!(resolver.names.lock().unwrap().len(), 1, "a name is kept");
        assert_eq!(resolve("https://localhost:6443/").unwrap(), first);
    }

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
