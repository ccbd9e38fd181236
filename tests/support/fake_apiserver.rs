//! A scriptable fake Kubernetes apiserver: HTTPS (rustls) on 127.0.0.1, its
//! own minimal HTTP/1.1 server (keep-alive, Content-Length and chunked request
//! bodies, pipelining), one thread per connection, with fault injection:
//! refused (`stop`) and silent (`freeze`) outages, and the answers of a
//! current apiserver that the test bed's 1.20 cannot give (streaming lists,
//! TokenRequest).

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustls::{ServerConnection, StreamOwned};
use serde_json::{Value, json};

use super::k8s_wire::{self, Encoding};
use super::pki::{TestPki, cert_cn};

/// How long `stop()` / drop wait for the server threads to finish.
const JOIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Read timeout on accepted sockets: the period at which idle connections
/// notice `stop()` and `StreamEnd::UntilClientGone` notices a closed client.
const READ_POLL: Duration = Duration::from_millis(50);
/// Write timeout on accepted sockets (a client that stops reading).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for the TLS handshake and for reading one request once its
/// first byte arrived.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a `Behaviour::Live` source may wait for data before the
/// connection checks for its client and the server's stop again.
const LIVE_WAIT: Duration = Duration::from_millis(30);
/// Read timeout while a `Behaviour::Live` stream looks for its client.
const LIVE_READ_POLL: Duration = Duration::from_millis(10);
/// Longest a `Behaviour::Live` stream goes without looking for its client,
/// even while it has data to write.
const LIVE_CHECK: Duration = Duration::from_millis(50);
/// Longest a frozen connection thread sleeps before re-checking (it is also
/// woken by `thaw()` and `stop()`).
const FROZEN_POLL: Duration = Duration::from_millis(200);
/// How long `freeze()` waits for socket operations already under way.
const FREEZE_SETTLE: Duration = Duration::from_secs(1);
const MAX_HEAD: usize = 1 << 20;
const MAX_BODY: usize = 64 << 20;

/// What a route does with a request.
#[derive(Clone)]
pub enum Behaviour {
    /// A complete response; `Content-Length` is added unless given in `headers`.
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Waits `delay` (interrupted by `stop()`), then behaves as `then`.
    Slow {
        delay: Duration,
        then: Box<Behaviour>,
    },
    /// Closes the connection without answering (after reading the request).
    Drop,
    /// Headers promise `Content-Length: declared_len`, a shorter `body`
    /// follows, then the connection is closed.
    Truncated {
        status: u16,
        declared_len: usize,
        body: Vec<u8>,
    },
    /// Chunked response; each chunk is written and flushed after its delay.
    /// Empty chunks are skipped (an empty chunk would end the body).
    Stream {
        status: u16,
        content_type: String,
        chunks: Vec<(Duration, Vec<u8>)>,
        end: StreamEnd,
    },
    /// Decides per request.
    Func(Arc<dyn Fn(&RecordedRequest) -> Behaviour + Send + Sync>),
    /// A whole response as raw bytes (head and body), written piece by
    /// piece, each flushed on its own (one TLS record each): framing split
    /// at odd points. The connection stays open.
    Pieces(Vec<Vec<u8>>),
    /// Chunked response whose chunks come from `source` as they become
    /// available (a watch fed by a `LiveCollection`). Between calls, and at
    /// least every 50 ms, the connection checks whether its client left or
    /// the server stopped; either ends the stream without a terminating
    /// chunk. `LivePoll::Finish` ends it cleanly.
    Live {
        status: u16,
        content_type: String,
        source: LiveSource,
    },
}

/// What the source of a `Behaviour::Live` stream has for its connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LivePoll {
    /// One chunk to write now (an empty one is skipped).
    Data(Vec<u8>),
    /// Nothing within the wait: the connection looks for its client and
    /// the server's stop, then asks again.
    Idle,
    /// The body ends here (terminating chunk); the connection stays usable.
    Finish,
}

/// The source of a `Behaviour::Live` stream: called with the longest time it
/// may block waiting for data. Dropped when the stream ends, however it ends.
pub type LiveSource = Arc<dyn Fn(Duration) -> LivePoll + Send + Sync>;

/// How a `Behaviour::Stream` ends after its last chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEnd {
    /// Terminating zero-length chunk; the connection stays usable.
    Finish,
    /// Keeps the connection open without writing for the duration, then
    /// closes it (no terminating chunk).
    Stall(Duration),
    /// Closes the connection abruptly, no terminating chunk.
    Drop,
    /// Keeps the connection open until the client closes it or the server
    /// stops (checked every 50 ms), then closes it.
    UntilClientGone,
}

impl Behaviour {
    pub fn respond(status: u16, headers: &[(&str, &str)], body: impl Into<Vec<u8>>) -> Behaviour {
        Behaviour::Respond {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.into(),
        }
    }
    /// `status` with a JSON body (`Content-Type: application/json`).
    pub fn json(status: u16, body: &str) -> Behaviour {
        Behaviour::respond(status, &[("Content-Type", "application/json")], body)
    }
    /// 200 with a JSON body.
    pub fn ok_json(body: &str) -> Behaviour {
        Behaviour::json(200, body)
    }
    /// `status` with a text/plain body.
    pub fn text(status: u16, body: &str) -> Behaviour {
        Behaviour::respond(
            status,
            &[("Content-Type", "text/plain; charset=utf-8")],
            body,
        )
    }
    /// A Kubernetes `Status` object (failure) with the given code.
    pub fn k8s_status(code: u16, reason: &str, message: &str) -> Behaviour {
        Behaviour::json(code, &status_json(code, reason, message))
    }
    pub fn slow(delay: Duration, then: Behaviour) -> Behaviour {
        Behaviour::Slow {
            delay,
            then: Box::new(then),
        }
    }
    pub fn func(f: impl Fn(&RecordedRequest) -> Behaviour + Send + Sync + 'static) -> Behaviour {
        Behaviour::Func(Arc::new(f))
    }
    /// The n-th matching request gets `list[n]`; the last entry repeats.
    pub fn sequence(list: Vec<Behaviour>) -> Behaviour {
        assert!(
            !list.is_empty(),
            "Behaviour::sequence needs at least one entry"
        );
        let next = AtomicUsize::new(0);
        Behaviour::func(move |_| {
            let i = next.fetch_add(1, Ordering::SeqCst).min(list.len() - 1);
            list[i].clone()
        })
    }
    /// A watch-like stream: `application/json`, each event string is one chunk
    /// (a `\n` is appended when missing), written after its delay.
    pub fn watch(events: Vec<(Duration, String)>, end: StreamEnd) -> Behaviour {
        Behaviour::Stream {
            status: 200,
            content_type: "application/json".to_string(),
            chunks: events
                .into_iter()
                .map(|(d, mut e)| {
                    if !e.ends_with('\n') {
                        e.push('\n');
                    }
                    (d, e.into_bytes())
                })
                .collect(),
            end,
        }
    }
    /// A watch stream in `encoding` with kube-apiserver's Content-Type: each
    /// event (`k8s_wire::json_event` line or `pb_event` frame) is one chunk,
    /// written after its delay.
    pub fn watch_encoded(
        encoding: Encoding,
        events: Vec<(Duration, Vec<u8>)>,
        end: StreamEnd,
    ) -> Behaviour {
        Behaviour::Stream {
            status: 200,
            content_type: encoding.watch_content_type().to_string(),
            chunks: events,
            end,
        }
    }
    /// A 1.27+ apiserver serving one resource collection whose current state
    /// is `objects` (from `k8s_wire`'s builders, in `encoding`) at `list_rv`:
    /// - `watch=true&sendInitialEvents=true` (a streaming list): every object
    ///   as ADDED, then a BOOKMARK of `kind` with `list_rv` and the
    ///   `k8s.io/initial-events-end` annotation, then `after`, then `end`;
    /// - another watch: ADDED for every object when `resourceVersion` is
    ///   absent, empty or `0`, then `after` (other RVs: `after` only);
    /// - no `watch`: the `{kind}List` at `list_rv`.
    ///
    /// `after` holds encoded events (`Encoding::event`), delays relative to
    /// the previous event.
    pub fn streaming_list(
        encoding: Encoding,
        kind: &str,
        api_version: &str,
        objects: Vec<Vec<u8>>,
        list_rv: u64,
        after: Vec<(Duration, Vec<u8>)>,
        end: StreamEnd,
    ) -> Behaviour {
        ListWorld::new(encoding, kind, api_version, &objects, list_rv, after, end).behaviour(true)
    }
    /// As `streaming_list`, for an apiserver before 1.27 (the test bed's
    /// 1.20), which ignores `sendInitialEvents`: a streaming list gets a
    /// plain watch, so the client never sees the annotated bookmark.
    pub fn streaming_list_unsupported(
        encoding: Encoding,
        kind: &str,
        api_version: &str,
        objects: Vec<Vec<u8>>,
        list_rv: u64,
        after: Vec<(Duration, Vec<u8>)>,
        end: StreamEnd,
    ) -> Behaviour {
        ListWorld::new(encoding, kind, api_version, &objects, list_rv, after, end).behaviour(false)
    }
    /// A live chunked stream: see `Behaviour::Live`.
    pub fn live(
        status: u16,
        content_type: &str,
        source: impl Fn(Duration) -> LivePoll + Send + Sync + 'static,
    ) -> Behaviour {
        Behaviour::Live {
            status,
            content_type: content_type.to_string(),
            source: Arc::new(source),
        }
    }
    /// Answers TokenRequests with tokens valid for `lifetime`; use a
    /// `TokenIssuer` to see what was issued or to issue expired tokens.
    pub fn token_request(lifetime: Duration) -> Behaviour {
        TokenIssuer::new(lifetime).behaviour()
    }
}

/// The answers behind `Behaviour::streaming_list`, encoded up front so that
/// a malformed object fails the test that scripted it, not a server thread.
struct ListWorld {
    encoding: Encoding,
    list: Vec<u8>,
    added: Vec<Vec<u8>>,
    initial_events_end: Vec<u8>,
    after: Vec<(Duration, Vec<u8>)>,
    end: StreamEnd,
}

impl ListWorld {
    fn new(
        encoding: Encoding,
        kind: &str,
        api_version: &str,
        objects: &[Vec<u8>],
        list_rv: u64,
        after: Vec<(Duration, Vec<u8>)>,
        end: StreamEnd,
    ) -> ListWorld {
        let bookmark = encoding.initial_events_end_bookmark(kind, api_version, list_rv);
        ListWorld {
            encoding,
            list: encoding.list(kind, api_version, list_rv, objects),
            added: objects.iter().map(|o| encoding.event("ADDED", o)).collect(),
            initial_events_end: encoding.event("BOOKMARK", &bookmark),
            after,
            end,
        }
    }

    fn behaviour(self, honours_send_initial_events: bool) -> Behaviour {
        let world = Arc::new(self);
        Behaviour::func(move |req| world.answer(req, honours_send_initial_events))
    }

    fn answer(&self, req: &RecordedRequest, honours_send_initial_events: bool) -> Behaviour {
        let encoding = self.encoding;
        let is_watch = matches!(req.query_param("watch").as_deref(), Some("true" | "1"));
        if !is_watch {
            let content_type = [("Content-Type", encoding.content_type())];
            return Behaviour::respond(200, &content_type, self.list.clone());
        }
        let initial_events = honours_send_initial_events
            && req.query_param("sendInitialEvents").as_deref() == Some("true");
        let from_now = matches!(
            req.query_param("resourceVersion").as_deref(),
            None | Some("" | "0")
        );
        let mut events = Vec::new();
        if initial_events || from_now {
            events.extend(self.added.iter().map(|e| (Duration::ZERO, e.clone())));
        }
        if initial_events {
            events.push((Duration::ZERO, self.initial_events_end.clone()));
        }
        events.extend(self.after.iter().cloned());
        Behaviour::watch_encoded(encoding, events, self.end.clone())
    }
}

/// Audience kube-apiserver puts in a TokenRequest that names none.
pub const DEFAULT_TOKEN_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

/// Makes every issued token distinct, across fakes too.
static TOKEN_SERIAL: AtomicU64 = AtomicU64::new(1);

/// A token the fake issued.
#[derive(Clone, Debug)]
pub struct IssuedToken {
    pub service_account: String,
    /// `spec.boundObjectRef.name` of the request.
    pub bound_object_name: Option<String>,
    pub token: String,
    /// `status.expirationTimestamp` as sent (RFC 3339, whole seconds).
    pub expiration_timestamp: String,
    /// The same instant.
    pub expires_at: SystemTime,
}

#[derive(Clone, Copy, Debug)]
enum TokenExpiry {
    In(Duration),
    Ago(Duration),
}

/// Answers `POST /api/v1/namespaces/{ns}/serviceaccounts/{name}/token` as
/// kube-apiserver does (201, the request's spec with audiences and
/// expirationSeconds defaulted, `status.token` a distinct JWT-shaped string,
/// `status.expirationTimestamp` = now + lifetime) and records each token.
/// The lifetime is the fake's, not the requested expirationSeconds, so a test
/// can issue short-lived or expired tokens. Other paths get 404, other
/// methods 405, a body that is not JSON 400, so it can be routed on
/// `/api/v1/namespaces/*` before the routes it should not shadow (later
/// routes win).
#[derive(Clone)]
pub struct TokenIssuer {
    expiry: Arc<Mutex<TokenExpiry>>,
    issued: Arc<Mutex<Vec<IssuedToken>>>,
}

impl TokenIssuer {
    /// Tokens expire `lifetime` after they are issued.
    pub fn new(lifetime: Duration) -> TokenIssuer {
        TokenIssuer {
            expiry: Arc::new(Mutex::new(TokenExpiry::In(lifetime))),
            issued: Arc::new(Mutex::new(Vec::new())),
        }
    }
    /// Later tokens expire `lifetime` after they are issued.
    pub fn set_lifetime(&self, lifetime: Duration) {
        *lock(&self.expiry) = TokenExpiry::In(lifetime);
    }
    /// Later tokens are already expired by `ago`.
    pub fn set_expired(&self, ago: Duration) {
        *lock(&self.expiry) = TokenExpiry::Ago(ago);
    }
    /// The route's behaviour; it shares this issuer's records.
    pub fn behaviour(&self) -> Behaviour {
        let issuer = self.clone();
        Behaviour::func(move |req| issuer.answer(req))
    }
    /// Every token issued so far, in order.
    pub fn issued(&self) -> Vec<IssuedToken> {
        lock(&self.issued).clone()
    }

    fn answer(&self, req: &RecordedRequest) -> Behaviour {
        let parts: Vec<&str> = req.path.split('/').collect();
        let [
            "",
            "api",
            "v1",
            "namespaces",
            namespace,
            "serviceaccounts",
            sa,
            "token",
        ] = parts.as_slice()
        else {
            return Behaviour::k8s_status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            );
        };
        if req.method != "POST" {
            return Behaviour::k8s_status(
                405,
                "MethodNotAllowed",
                &format!(
                    "the server does not allow this method on the requested resource ({})",
                    req.method
                ),
            );
        }
        let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
            return Behaviour::k8s_status(400, "BadRequest", "the request body is not JSON");
        };
        let spec = &body["spec"];
        let mut audiences: Vec<String> = spec["audiences"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        if audiences.is_empty() {
            audiences.push(DEFAULT_TOKEN_AUDIENCE.to_string());
        }
        let expiration_seconds = spec["expirationSeconds"].as_i64().unwrap_or(3600);
        let bound = spec.get("boundObjectRef").filter(|b| b.is_object());

        let now = SystemTime::now();
        let expires = match *lock(&self.expiry) {
            TokenExpiry::In(d) => now + d,
            TokenExpiry::Ago(d) => now.checked_sub(d).unwrap_or(UNIX_EPOCH),
        };
        let unix = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let expires_at = UNIX_EPOCH + Duration::from_secs(unix(expires));
        let serial = TOKEN_SERIAL.fetch_add(1, Ordering::SeqCst);

        let mut identity = json!({
            "namespace": namespace,
            "serviceaccount": {"name": sa, "uid": k8s_wire::fake_uid(namespace, sa)},
        });
        if let Some(b) = bound {
            identity[b["kind"].as_str().unwrap_or("pod").to_ascii_lowercase()] =
                json!({"name": b["name"], "uid": b["uid"]});
        }
        let claims = json!({
            "aud": audiences,
            "exp": unix(expires_at),
            "iat": unix(now),
            "nbf": unix(now),
            "iss": DEFAULT_TOKEN_AUDIENCE,
            "jti": format!("fake-{serial}"),
            "kubernetes.io": identity,
            "sub": format!("system:serviceaccount:{namespace}:{sa}"),
        });
        let token = format!(
            "{}.{}.{}",
            k8s_wire::base64url(br#"{"alg":"RS256","kid":"fake-apiserver"}"#),
            k8s_wire::base64url(claims.to_string().as_bytes()),
            k8s_wire::base64url(format!("fake-signature-{serial}").as_bytes()),
        );
        let expiration_timestamp = k8s_wire::rfc3339(expires_at);
        lock(&self.issued).push(IssuedToken {
            service_account: sa.to_string(),
            bound_object_name: bound.and_then(|b| b["name"].as_str()).map(String::from),
            token: token.clone(),
            expiration_timestamp: expiration_timestamp.clone(),
            expires_at,
        });
        let answer = json!({
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": sa, "namespace": namespace, "creationTimestamp": null},
            "spec": {
                "audiences": audiences,
                "expirationSeconds": expiration_seconds,
                "boundObjectRef": bound.cloned().unwrap_or(Value::Null),
            },
            "status": {"token": token, "expirationTimestamp": expiration_timestamp},
        });
        Behaviour::json(201, &answer.to_string())
    }
}

impl fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Behaviour::Respond {
                status,
                headers,
                body,
            } => f
                .debug_struct("Respond")
                .field("status", status)
                .field("headers", headers)
                .field("body", &String::from_utf8_lossy(body))
                .finish(),
            Behaviour::Slow { delay, then } => f
                .debug_struct("Slow")
                .field("delay", delay)
                .field("then", then)
                .finish(),
            Behaviour::Drop => f.write_str("Drop"),
            Behaviour::Truncated {
                status,
                declared_len,
                body,
            } => f
                .debug_struct("Truncated")
                .field("status", status)
                .field("declared_len", declared_len)
                .field("body_len", &body.len())
                .finish(),
            Behaviour::Stream {
                status,
                content_type,
                chunks,
                end,
            } => f
                .debug_struct("Stream")
                .field("status", status)
                .field("content_type", content_type)
                .field("chunks", &chunks.len())
                .field("end", end)
                .finish(),
            Behaviour::Func(_) => f.write_str("Func(..)"),
            Behaviour::Pieces(pieces) => write!(f, "Pieces({})", pieces.len()),
            Behaviour::Live {
                status,
                content_type,
                ..
            } => f
                .debug_struct("Live")
                .field("status", status)
                .field("content_type", content_type)
                .finish_non_exhaustive(),
        }
    }
}

/// A Kubernetes `Status` failure object as JSON text.
pub fn status_json(code: u16, reason: &str, message: &str) -> String {
    serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": {},
        "code": code,
    })
    .to_string()
}

/// One request as the fake apiserver received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Raw query string without the `?` (empty when none).
    pub query: String,
    /// Header names lowercased, values as received, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// CN of the verified client certificate of the TLS connection.
    pub client_cert_cn: Option<String>,
    /// Identifies the TCP connection (to check connection reuse).
    pub conn_id: u64,
}

impl RecordedRequest {
    /// First value of a header (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// Value of a query parameter, percent-decoded (`+` as space).
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k) == name).then(|| percent_decode(v))
        })
    }
}

fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        char::from(b).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 1 < bytes.len() => {
                match (hex(bytes[i + 1]), bytes.get(i + 2).copied().and_then(hex)) {
                    (Some(h), Some(l)) => {
                        out.push(h * 16 + l);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One chunk written by a `Behaviour::Stream` or `Behaviour::Live`.
#[derive(Clone, Debug)]
pub struct ChunkWrite {
    pub data: Vec<u8>,
    /// When the chunk had been written and flushed to the socket.
    pub written_at: Instant,
}

struct Route {
    method: String,
    path: String,
    behaviour: Behaviour,
}

impl Route {
    fn matches(&self, method: &str, path: &str) -> bool {
        (self.method == "*" || self.method.eq_ignore_ascii_case(method))
            && path_matches(&self.path, path)
    }
}

/// Whether `path` matches a route's `pattern`: exactly, or as a prefix when
/// the pattern ends with `*`; a `*` segment inside the pattern (`/a/*/b`)
/// stands for one non-empty path segment.
fn path_matches(pattern: &str, path: &str) -> bool {
    let (pattern, prefix) = match pattern.strip_suffix('*') {
        Some(p) => (p, true),
        None => (pattern, false),
    };
    if !pattern.split('/').any(|s| s == "*") {
        return if prefix {
            path.starts_with(pattern)
        } else {
            pattern == path
        };
    }
    let wanted: Vec<&str> = pattern.split('/').collect();
    let got: Vec<&str> = path.split('/').collect();
    if got.len() < wanted.len() || (!prefix && got.len() != wanted.len()) {
        return false;
    }
    let last = wanted.len() - 1;
    wanted
        .iter()
        .zip(&got)
        .enumerate()
        .all(|(i, (w, g))| match *w {
            "*" => !g.is_empty(),
            w if prefix && i == last => g.starts_with(w),
            w => w == *g,
        })
}

struct RunState {
    running: bool,
    generation: u64,
    next_conn_id: u64,
    /// Clones of the open connections' sockets, to shut them down on stop.
    /// They also keep a socket open (no FIN, no RST) while frozen.
    conns: HashMap<u64, TcpStream>,
    /// Silent outage: no socket is read, written or closed.
    frozen: bool,
    /// Socket operations under way (`freeze` waits for them).
    in_io: usize,
}

struct Shared {
    server_config: Arc<rustls::ServerConfig>,
    routes: Mutex<Vec<Route>>,
    readyz: AtomicU16,
    requests: Mutex<Vec<RecordedRequest>>,
    chunks: Mutex<Vec<ChunkWrite>>,
    client_gone: Mutex<Vec<(String, Instant)>>,
    /// Raised by `close_idle_connections`: connections waiting for a
    /// request that started before it close.
    idle_close: AtomicU64,
    state: Mutex<RunState>,
    /// Notified when the server stops or thaws (wakes `pause` and `gated`).
    state_cv: Condvar,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test thread must not cascade into every later call.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn is_live(&self, generation: u64) -> bool {
        let st = lock(&self.state);
        st.running && st.generation == generation
    }

    /// Sleeps `dur` unless the server stops first; returns false if it stopped.
    fn pause(&self, generation: u64, dur: Duration) -> bool {
        let deadline = Instant::now() + dur;
        let mut st = lock(&self.state);
        loop {
            if !st.running || st.generation != generation {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            st = self
                .state_cv
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Runs one socket operation, first waiting while frozen; `None` if the
    /// server stopped meanwhile. Every read, write and close goes through
    /// here, so a frozen fake stays silent.
    fn gated<T>(&self, generation: u64, op: impl FnOnce() -> T) -> Option<T> {
        {
            let mut st = lock(&self.state);
            loop {
                if !st.running || st.generation != generation {
                    return None;
                }
                if !st.frozen {
                    break;
                }
                st = self
                    .state_cv
                    .wait_timeout(st, FROZEN_POLL)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            st.in_io += 1;
        }
        struct Done<'a>(&'a Shared);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                let mut st = lock(&self.0.state);
                st.in_io -= 1;
                if st.frozen {
                    drop(st);
                    self.0.state_cv.notify_all();
                }
            }
        }
        let _done = Done(self);
        Some(op())
    }

    fn spawn_tracked(&self, name: String, f: impl FnOnce() + Send + 'static) {
        let handle = std::thread::Builder::new()
            .name(name)
            .spawn(f)
            .expect("spawn fake apiserver thread");
        let mut threads = lock(&self.threads);
        threads.retain(|t| !t.is_finished());
        threads.push(handle);
    }
}

/// The fake apiserver. Stops (and joins its threads, bounded) on drop.
pub struct FakeApiserver {
    shared: Arc<Shared>,
    port: u16,
    accept_thread: Mutex<Option<JoinHandle<()>>>,
}

impl FakeApiserver {
    /// Binds `127.0.0.1:0` and starts serving HTTPS.
    pub fn start(pki: &TestPki) -> FakeApiserver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake apiserver");
        let port = listener.local_addr().expect("local_addr").port();
        let shared = Arc::new(Shared {
            server_config: pki.server_config(),
            routes: Mutex::new(Vec::new()),
            readyz: AtomicU16::new(200),
            requests: Mutex::new(Vec::new()),
            chunks: Mutex::new(Vec::new()),
            client_gone: Mutex::new(Vec::new()),
            idle_close: AtomicU64::new(0),
            state: Mutex::new(RunState {
                running: false,
                generation: 0,
                next_conn_id: 1,
                conns: HashMap::new(),
                frozen: false,
                in_io: 0,
            }),
            state_cv: Condvar::new(),
            threads: Mutex::new(Vec::new()),
        });
        let fake = FakeApiserver {
            shared,
            port,
            accept_thread: Mutex::new(None),
        };
        fake.serve(listener);
        fake
    }

    /// `https://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Adds a route. `path` matches the request path (without query) exactly,
    /// or as a prefix when it ends with `*`; a `*` segment inside it
    /// (`/api/v1/namespaces/*/services`) matches any one segment; `method`
    /// `"*"` matches any method. Later routes win over earlier ones.
    pub fn route(&self, method: &str, path: &str, behaviour: Behaviour) {
        lock(&self.shared.routes).push(Route {
            method: method.to_string(),
            path: path.to_string(),
            behaviour,
        });
    }
    /// Status code of the default `GET /readyz` route (200 answers `ok`).
    pub fn set_readyz(&self, status: u16) {
        self.shared.readyz.store(status, Ordering::SeqCst);
    }

    /// All requests received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }
    /// Received requests matching `pred`.
    pub fn requests_matching(
        &self,
        pred: impl Fn(&RecordedRequest) -> bool,
    ) -> Vec<RecordedRequest> {
        lock(&self.shared.requests)
            .iter()
            .filter(|r| pred(r))
            .cloned()
            .collect()
    }
    /// Received requests for `path` (any method, exact path).
    pub fn requests_to(&self, path: &str) -> Vec<RecordedRequest> {
        self.requests_matching(|r| r.path == path)
    }
    pub fn clear_requests(&self) {
        lock(&self.shared.requests).clear();
    }
    /// Waits (bounded) until at least one received request matches `pred`;
    /// returns all matching requests (empty on timeout).
    pub fn wait_for_requests(
        &self,
        pred: impl Fn(&RecordedRequest) -> bool,
        timeout: Duration,
    ) -> Vec<RecordedRequest> {
        self.wait_for_request_count(pred, 1, timeout)
    }
    /// Waits (bounded) until at least `n` received requests match `pred`;
    /// returns all matching requests (possibly fewer than `n` on timeout).
    pub fn wait_for_request_count(
        &self,
        pred: impl Fn(&RecordedRequest) -> bool,
        n: usize,
        timeout: Duration,
    ) -> Vec<RecordedRequest> {
        let mut found = Vec::new();
        super::wait_until(timeout, || {
            found = self.requests_matching(&pred);
            found.len() >= n
        });
        found
    }

    /// Every chunk written by `Behaviour::Stream` and `Behaviour::Live` so far.
    pub fn chunk_writes(&self) -> Vec<ChunkWrite> {
        lock(&self.shared.chunks).clone()
    }
    /// When each streamed chunk was written, in write order.
    pub fn chunk_write_times(&self) -> Vec<Instant> {
        lock(&self.shared.chunks)
            .iter()
            .map(|c| c.written_at)
            .collect()
    }
    /// Waits (bounded) until at least `n` chunks have been written; returns them.
    pub fn wait_for_chunks(&self, n: usize, timeout: Duration) -> Vec<ChunkWrite> {
        let mut found = Vec::new();
        super::wait_until(timeout, || {
            found = self.chunk_writes();
            found.len() >= n
        });
        found
    }
    /// `(path, when)` for each `StreamEnd::UntilClientGone` or
    /// `Behaviour::Live` stream whose client went away (not counting server
    /// stops).
    pub fn streams_closed_by_client(&self) -> Vec<(String, Instant)> {
        lock(&self.shared.client_gone).clone()
    }
    /// Number of currently open client connections.
    pub fn open_connections(&self) -> usize {
        lock(&self.shared.state).conns.len()
    }

    /// Closes every open connection politely (close_notify, then FIN) once
    /// it waits for its next request, as an apiserver or a load balancer
    /// closes idle keep-alive connections; one busy with a request closes
    /// after answering it. Returns whether all had closed within 5 s.
    pub fn close_idle_connections(&self) -> bool {
        let open: Vec<u64> = lock(&self.shared.state).conns.keys().copied().collect();
        self.shared.idle_close.fetch_add(1, Ordering::SeqCst);
        super::wait_until(Duration::from_secs(5), || {
            let st = lock(&self.shared.state);
            open.iter().all(|id| !st.conns.contains_key(id))
        })
    }
    pub fn is_running(&self) -> bool {
        lock(&self.shared.state).running
    }

    /// Silent outage, what `kill -STOP` does to a real apiserver (unlike
    /// `stop`, which refuses): the port stays bound and the kernel still
    /// completes new TCP handshakes, but from the time this returns no socket
    /// is read, written or closed. Requests (and /readyz probes) time out,
    /// requests already read get no answer, open watches stall without
    /// closing, and scripted delays go on elapsing. Waits up to 1 s for
    /// socket operations under way. Idempotent.
    pub fn freeze(&self) {
        let mut st = lock(&self.shared.state);
        st.frozen = true;
        let deadline = Instant::now() + FREEZE_SETTLE;
        while st.in_io > 0 {
            let now = Instant::now();
            if now >= deadline {
                eprintln!("fake apiserver: a socket operation outlived freeze()");
                break;
            }
            st = self
                .shared
                .state_cv
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
    /// Ends a freeze, like `kill -CONT`: everything resumes where it stood.
    /// Stalled streams continue (events whose delay passed meanwhile come at
    /// once), pending requests are answered, waiting connections are served;
    /// those whose client gave up fail on their next socket operation.
    pub fn thaw(&self) {
        lock(&self.shared.state).frozen = false;
        self.shared.state_cv.notify_all();
    }
    pub fn is_frozen(&self) -> bool {
        lock(&self.shared.state).frozen
    }

    /// Outage: closes the listener and every open connection (clients see
    /// resets / refused connections), then joins the threads (bounded).
    /// Ends a freeze. Idempotent.
    pub fn stop(&self) {
        let conns: Vec<TcpStream> = {
            let mut st = lock(&self.shared.state);
            st.running = false;
            st.frozen = false;
            st.conns.drain().map(|(_, s)| s).collect()
        };
        self.shared.state_cv.notify_all();
        for c in &conns {
            let _ = c.shutdown(Shutdown::Both);
        }
        drop(conns);

        // The accept thread blocks in accept(): wake it with a connection,
        // then it sees `running == false` and drops the listener.
        let accept = lock(&self.accept_thread).take();
        if let Some(handle) = accept {
            let deadline = Instant::now() + JOIN_TIMEOUT;
            while !handle.is_finished() && Instant::now() < deadline {
                let _ = TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200));
                super::wait_until(Duration::from_millis(50), || handle.is_finished());
            }
            if handle.is_finished() {
                let _ = handle.join();
            } else {
                eprintln!("fake apiserver: accept thread did not stop in time");
            }
        }

        let threads: Vec<JoinHandle<()>> = lock(&self.shared.threads).drain(..).collect();
        let deadline = Instant::now() + JOIN_TIMEOUT;
        for t in threads {
            let left = deadline.saturating_duration_since(Instant::now());
            if super::wait_until(left, || t.is_finished()) {
                let _ = t.join();
            } else {
                eprintln!("fake apiserver: a connection thread did not stop in time");
            }
        }
    }

    /// Re-binds the same port and serves again with the same routes and
    /// records. Retries the bind for up to 5 s. No-op when running.
    pub fn restart(&self) {
        if self.is_running() {
            return;
        }
        let addr = self.addr();
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(addr) {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("fake apiserver: cannot re-bind {addr}: {e}"),
            }
        };
        self.serve(listener);
    }

    fn serve(&self, listener: TcpListener) {
        let generation = {
            let mut st = lock(&self.shared.state);
            st.running = true;
            st.generation += 1;
            st.generation
        };
        let shared = self.shared.clone();
        let handle = std::thread::Builder::new()
            .name(format!("fake-apiserver-accept-{}", self.port))
            .spawn(move || accept_loop(shared, listener, generation))
            .expect("spawn accept thread");
        *lock(&self.accept_thread) = Some(handle);
    }
}

impl Drop for FakeApiserver {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(shared: Arc<Shared>, listener: TcpListener, generation: u64) {
    loop {
        let accepted = listener.accept();
        if !shared.is_live(generation) {
            return; // drops the listener: the port closes
        }
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(_) => {
                // e.g. EMFILE: back off a little instead of spinning.
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let id = {
            let mut st = lock(&shared.state);
            if !st.running || st.generation != generation {
                return;
            }
            let Ok(clone) = tcp.try_clone() else {
                continue;
            };
            let id = st.next_conn_id;
            st.next_conn_id += 1;
            st.conns.insert(id, clone);
            id
        };
        let sh = shared.clone();
        shared.spawn_tracked(format!("fake-apiserver-conn-{id}"), move || {
            serve_connection(&sh, generation, id, tcp);
            // Dropping the last clone closes the socket: not while frozen.
            let remove = || lock(&sh.state).conns.remove(&id);
            if sh.gated(generation, remove).is_none() {
                remove();
            }
        });
    }
}

type Tls = StreamOwned<ServerConnection, TcpStream>;

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

struct Conn<'a> {
    shared: &'a Shared,
    generation: u64,
    id: u64,
    tls: Tls,
    buf: Vec<u8>,
    cn: Option<String>,
    /// `Shared::idle_close` when the connection opened.
    idle_close_seen: u64,
    /// Closing because `close_idle_connections` asked it to.
    closing_idle: bool,
}

enum Next {
    KeepAlive,
    /// Close politely (TLS close_notify, then FIN).
    Close,
    /// Close abruptly (no close_notify).
    Abort,
}

fn serve_connection(shared: &Shared, generation: u64, id: u64, tcp: TcpStream) {
    let _ = tcp.set_nodelay(true);
    let _ = tcp.set_read_timeout(Some(READ_POLL));
    let _ = tcp.set_write_timeout(Some(WRITE_TIMEOUT));
    let Ok(server_conn) = ServerConnection::new(shared.server_config.clone()) else {
        return;
    };
    let mut tls = StreamOwned::new(server_conn, tcp);

    let deadline = Instant::now() + REQUEST_TIMEOUT;
    while tls.conn.is_handshaking() {
        let Some(io) = shared.gated(generation, || tls.conn.complete_io(&mut tls.sock)) else {
            return;
        };
        match io {
            Ok((0, 0)) => return, // EOF
            Ok(_) => {
                if !shared.is_live(generation) || Instant::now() > deadline {
                    return;
                }
            }
            Err(e) if is_timeout(&e) => {
                if !shared.is_live(generation) || Instant::now() > deadline {
                    return;
                }
            }
            Err(_) => return,
        }
    }
    let cn = tls
        .conn
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(|c| cert_cn(c));

    let mut conn = Conn {
        shared,
        generation,
        id,
        tls,
        buf: Vec::new(),
        cn,
        idle_close_seen: shared.idle_close.load(Ordering::SeqCst),
        closing_idle: false,
    };
    let next = loop {
        match conn.handle_one() {
            Ok(Next::KeepAlive) => continue,
            Ok(other) => break other,
            Err(_) => break Next::Abort,
        }
    };
    let tls = &mut conn.tls;
    let closed = shared.gated(generation, || {
        if let Next::Close = next {
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
        tls.sock.shutdown(Shutdown::Both)
    });
    if closed.is_none() {
        let _ = tls.sock.shutdown(Shutdown::Both);
    }
}

impl Conn<'_> {
    fn live(&self) -> bool {
        self.shared.is_live(self.generation)
    }

    /// Reads more bytes into `buf`. `Ok(false)` on EOF. Waits until data,
    /// EOF, stop, or `deadline`.
    fn fill(&mut self, deadline: Option<Instant>) -> io::Result<bool> {
        let mut tmp = [0u8; 16 * 1024];
        loop {
            let tls = &mut self.tls;
            let Some(read) = self.shared.gated(self.generation, || tls.read(&mut tmp)) else {
                return Err(io::Error::other("server stopped"));
            };
            match read {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.buf.extend_from_slice(&tmp[..n]);
                    return Ok(true);
                }
                Err(e) if is_timeout(&e) => {
                    if !self.live() {
                        return Err(io::Error::other("server stopped"));
                    }
                    let idle = deadline.is_none() && self.buf.is_empty();
                    if idle && self.shared.idle_close.load(Ordering::SeqCst) > self.idle_close_seen
                    {
                        self.closing_idle = true;
                        return Ok(false);
                    }
                    if deadline.is_some_and(|d| Instant::now() > d) {
                        return Err(io::Error::new(io::ErrorKind::TimedOut, "request timeout"));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
                Err(e) => return Err(e),
            }
        }
    }

    fn need(&mut self, n: usize, deadline: Instant) -> io::Result<()> {
        while self.buf.len() < n {
            if !self.fill(Some(deadline))? {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(())
    }

    fn read_line(&mut self, deadline: Instant) -> io::Result<String> {
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..pos + 2).take(pos).collect();
                return Ok(String::from_utf8_lossy(&line).into_owned());
            }
            if self.buf.len() > MAX_HEAD {
                return Err(io::Error::other("line too long"));
            }
            if !self.fill(Some(deadline))? {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    fn handle_one(&mut self) -> io::Result<Next> {
        // Wait for the head (no deadline while idle between requests).
        let mut head_deadline: Option<Instant> = None;
        let head_end = loop {
            if let Some(pos) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break pos;
            }
            if self.buf.len() > MAX_HEAD {
                return Ok(Next::Abort);
            }
            if !self.buf.is_empty() && head_deadline.is_none() {
                head_deadline = Some(Instant::now() + REQUEST_TIMEOUT);
            }
            if !self.fill(head_deadline)? {
                return Ok(if self.closing_idle {
                    Next::Close
                } else {
                    Next::Abort
                });
            }
        };
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let head: Vec<u8> = self.buf.drain(..head_end + 4).collect();
        let head = String::from_utf8_lossy(&head[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or_default();
        let mut parts = request_line.split(' ');
        let (Some(method), Some(target), Some(version)) =
            (parts.next(), parts.next(), parts.next())
        else {
            self.write_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )?;
            return Ok(Next::Close);
        };
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let get = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let target = origin_form(target);
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let wants_close = match version {
            "HTTP/1.0" => !get("connection").is_some_and(|v| v.eq_ignore_ascii_case("keep-alive")),
            _ => get("connection")
                .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close"))),
        };

        if get("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
            self.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        let chunked =
            get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let body = if chunked {
            self.read_chunked_body(deadline)?
        } else {
            let len: usize = match get("content-length").map(|v| v.parse()) {
                None => 0,
                Some(Ok(n)) if n <= MAX_BODY => n,
                Some(_) => return Ok(Next::Abort),
            };
            self.need(len, deadline)?;
            self.buf.drain(..len).collect()
        };

        let request = RecordedRequest {
            method: method.to_string(),
            path: path.to_string(),
            query: query.to_string(),
            headers,
            body,
            client_cert_cn: self.cn.clone(),
            conn_id: self.id,
        };
        lock(&self.shared.requests).push(request.clone());

        let behaviour = self.pick(&request);
        let next = self.execute(&request, behaviour)?;
        Ok(match next {
            Next::KeepAlive if wants_close => Next::Close,
            n => n,
        })
    }

    fn read_chunked_body(&mut self, deadline: Instant) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line = self.read_line(deadline)?;
            let size_text = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| io::Error::other("bad chunk size"))?;
            if size == 0 {
                // trailers until an empty line
                while !self.read_line(deadline)?.is_empty() {}
                return Ok(body);
            }
            if body.len() + size > MAX_BODY {
                return Err(io::Error::other("body too large"));
            }
            self.need(size + 2, deadline)?;
            body.extend(self.buf.drain(..size));
            self.buf.drain(..2);
        }
    }

    fn pick(&self, req: &RecordedRequest) -> Behaviour {
        let routes = lock(&self.shared.routes);
        if let Some(r) = routes
            .iter()
            .rev()
            .find(|r| r.matches(&req.method, &req.path))
        {
            return r.behaviour.clone();
        }
        drop(routes);
        if req.method == "GET" && req.path == "/readyz" {
            let status = self.shared.readyz.load(Ordering::SeqCst);
            return if status == 200 {
                Behaviour::text(200, "ok")
            } else {
                Behaviour::text(
                    status,
                    "[-]etcd failed: reason withheld\nreadyz check failed\n",
                )
            };
        }
        Behaviour::k8s_status(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        let tls = &mut self.tls;
        self.shared
            .gated(self.generation, || {
                tls.write_all(data)?;
                tls.flush()
            })
            .unwrap_or_else(|| Err(io::Error::other("server stopped")))
    }

    fn execute(&mut self, req: &RecordedRequest, behaviour: Behaviour) -> io::Result<Next> {
        match behaviour {
            Behaviour::Respond {
                status,
                headers,
                body,
            } => {
                let no_body = req.method == "HEAD"
                    || (100..200).contains(&status)
                    || status == 204
                    || status == 304;
                let mut out = status_line(status);
                let mut has_len = false;
                let mut closes = false;
                for (k, v) in &headers {
                    has_len |= k.eq_ignore_ascii_case("content-length");
                    closes |=
                        k.eq_ignore_ascii_case("connection") && v.eq_ignore_ascii_case("close");
                    out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
                }
                if !has_len && !(100..200).contains(&status) && status != 204 && status != 304 {
                    out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
                }
                out.extend_from_slice(b"\r\n");
                if !no_body {
                    out.extend_from_slice(&body);
                }
                self.write_all(&out)?;
                // It said so: the connection closes after this answer.
                Ok(if closes { Next::Close } else { Next::KeepAlive })
            }
            Behaviour::Slow { delay, then } => {
                if !self.shared.pause(self.generation, delay) {
                    return Ok(Next::Abort);
                }
                self.execute(req, *then)
            }
            Behaviour::Drop => Ok(Next::Abort),
            Behaviour::Truncated {
                status,
                declared_len,
                body,
            } => {
                let mut out = status_line(status);
                out.extend_from_slice(b"Content-Type: application/json\r\n");
                out.extend_from_slice(format!("Content-Length: {declared_len}\r\n\r\n").as_bytes());
                out.extend_from_slice(&body);
                self.write_all(&out)?;
                Ok(Next::Abort)
            }
            Behaviour::Stream {
                status,
                content_type,
                chunks,
                end,
            } => self.stream(req, status, &content_type, chunks, end),
            Behaviour::Func(f) => {
                let b = f(req);
                self.execute(req, b)
            }
            Behaviour::Pieces(pieces) => {
                for piece in pieces {
                    self.write_all(&piece)?;
                }
                Ok(Next::KeepAlive)
            }
            Behaviour::Live {
                status,
                content_type,
                source,
            } => {
                let mut out = status_line(status);
                out.extend_from_slice(
                    format!("Content-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n")
                        .as_bytes(),
                );
                self.write_all(&out)?;
                let _ = self.tls.sock.set_read_timeout(Some(LIVE_READ_POLL));
                let next = self.live_stream(req, &source);
                let _ = self.tls.sock.set_read_timeout(Some(READ_POLL));
                next
            }
        }
    }

    /// The body of a `Behaviour::Live` stream, until its source finishes,
    /// its client leaves or the server stops.
    fn live_stream(&mut self, req: &RecordedRequest, source: &LiveSource) -> io::Result<Next> {
        let mut looked = Instant::now();
        loop {
            if !self.live() {
                return Ok(Next::Abort);
            }
            let idle = match source(LIVE_WAIT) {
                LivePoll::Data(data) => {
                    if !data.is_empty() {
                        self.write_chunk(data)?;
                    }
                    false
                }
                LivePoll::Idle => true,
                LivePoll::Finish => {
                    self.write_all(b"0\r\n\r\n")?;
                    return Ok(Next::KeepAlive);
                }
            };
            if idle || looked.elapsed() >= LIVE_CHECK {
                looked = Instant::now();
                match self.client_left() {
                    None => return Ok(Next::Abort),
                    Some(true) => {
                        lock(&self.shared.client_gone).push((req.path.clone(), Instant::now()));
                        return Ok(Next::Abort);
                    }
                    Some(false) => {}
                }
            }
        }
    }

    /// One read attempt (bounded by the socket's read timeout): whether the
    /// client closed the connection; `None` when the server stopped.
    fn client_left(&mut self) -> Option<bool> {
        let mut tmp = [0u8; 4096];
        let tls = &mut self.tls;
        let read = self.shared.gated(self.generation, || tls.read(&mut tmp))?;
        Some(match read {
            Ok(0) => true,
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                false
            }
            Err(e) if is_timeout(&e) => false,
            Err(_) => true,
        })
    }

    /// Writes and flushes one chunk of a chunked body, and records it.
    fn write_chunk(&mut self, data: Vec<u8>) -> io::Result<()> {
        let mut frame = format!("{:x}\r\n", data.len()).into_bytes();
        frame.extend_from_slice(&data);
        frame.extend_from_slice(b"\r\n");
        self.write_all(&frame)?;
        let written_at = Instant::now();
        lock(&self.shared.chunks).push(ChunkWrite { data, written_at });
        Ok(())
    }

    fn stream(
        &mut self,
        req: &RecordedRequest,
        status: u16,
        content_type: &str,
        chunks: Vec<(Duration, Vec<u8>)>,
        end: StreamEnd,
    ) -> io::Result<Next> {
        let mut out = status_line(status);
        out.extend_from_slice(
            format!("Content-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n")
                .as_bytes(),
        );
        self.write_all(&out)?;
        for (delay, data) in chunks {
            if !delay.is_zero() && !self.shared.pause(self.generation, delay) {
                return Ok(Next::Abort);
            }
            if data.is_empty() {
                continue;
            }
            self.write_chunk(data)?;
        }
        match end {
            StreamEnd::Finish => {
                self.write_all(b"0\r\n\r\n")?;
                Ok(Next::KeepAlive)
            }
            StreamEnd::Stall(d) => {
                self.shared.pause(self.generation, d);
                Ok(Next::Abort)
            }
            StreamEnd::Drop => Ok(Next::Abort),
            StreamEnd::UntilClientGone => {
                let mut tmp = [0u8; 4096];
                loop {
                    let tls = &mut self.tls;
                    let Some(read) = self.shared.gated(self.generation, || tls.read(&mut tmp))
                    else {
                        return Ok(Next::Abort);
                    };
                    match read {
                        Ok(0) => break,
                        Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                        Err(e) if is_timeout(&e) => {}
                        Err(_) => break,
                    }
                }
                lock(&self.shared.client_gone).push((req.path.clone(), Instant::now()));
                Ok(Next::Abort)
            }
        }
    }
}

/// `https://host:port/p?q` -> `/p?q`; origin-form targets are unchanged.
fn origin_form(target: &str) -> &str {
    match target.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => target,
    }
}

fn status_line(status: u16) -> Vec<u8> {
    format!("HTTP/1.1 {status} {}\r\n", reason(status)).into_bytes()
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        410 => "Gone",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}
