//! A live resource collection for the fake apiserver, and a recorder of the
//! watches that read it.
//!
//! `LiveCollection` holds the objects of one resource (Services,
//! EndpointSlices, ...) that a test creates, changes and deletes while
//! clients list and watch them, and serves them as kube-apiserver serves
//! them from its watch cache: lists of the current state, watches from any
//! resourceVersion still in the history (an `ERROR` event with a 410
//! `Expired` Status for older ones), label and field selectors applied to
//! each event, bookmarks and streaming lists.
//!
//! `WatchRecorder` is the test side: it records every event a watch
//! delivers, through the hub or directly from the fake, so that the two can
//! be compared; `apply` and `list_state` give the state an informer would
//! hold.
//!
//! The selectors are parsed here, apart from the hub's, so that the tests
//! and the hub are not wrong the same way.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::client::{RawStream, rustls_client_config};
use super::fake_apiserver::{Behaviour, FakeApiserver, LivePoll, RecordedRequest, StreamEnd};
use super::k8s_wire::{self, Encoding};

/// How often open watches that allow bookmarks get one, unless changed with
/// `set_bookmark_interval`.
pub const DEFAULT_BOOKMARK_INTERVAL: Duration = Duration::from_secs(1);
/// The resourceVersion of a new, empty collection; its first change is the
/// next one.
pub const INITIAL_RESOURCE_VERSION: u64 = 100;

/// `(namespace, name)`; the namespace is empty for cluster-scoped objects.
pub type ObjectKey = (String, String);
type Labels = BTreeMap<String, String>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test thread must not cascade into every later call.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChangeType {
    Added,
    Modified,
    Deleted,
}

/// One change in the collection's history.
struct Change {
    rv: u64,
    change: ChangeType,
    namespace: String,
    name: String,
    /// The labels before the change; `None` for a creation.
    before: Option<Labels>,
    /// The labels after the change; for a deletion, those it was deleted with.
    after: Labels,
}

/// An open watch: what it selects and the encoded events it has still to send.
struct OpenWatch {
    filter: Filter,
    queue: VecDeque<Vec<u8>>,
    /// `end_watches` was called: finish once the queue is sent.
    ending: bool,
    bookmarks: bool,
    last_bookmark: Instant,
    /// From `timeoutSeconds`.
    deadline: Option<Instant>,
}

struct State {
    rv: u64,
    /// Current objects: their resourceVersion and labels.
    objects: BTreeMap<ObjectKey, (u64, Labels)>,
    /// Changes after `compacted_at`, oldest first.
    history: Vec<Change>,
    /// Watches resuming from before this resourceVersion get 410 Expired.
    compacted_at: u64,
    watches: HashMap<u64, OpenWatch>,
    next_watch: u64,
    bookmark_interval: Option<Duration>,
}

/// A stateful fake of one resource collection in one encoding, served by a
/// `FakeApiserver` as a kube-apiserver watch cache serves it. Share it as
/// `Arc<LiveCollection>`; route it with `route_on` (or `behaviour`).
///
/// The resourceVersion counter is the collection's own (starting after
/// `INITIAL_RESOURCE_VERSION`), not shared with other collections.
/// Objects carry metadata only (name, namespace, uid, resourceVersion,
/// labels). Every answer is in the collection's encoding, errors included,
/// whatever the request's `Accept`.
pub struct LiveCollection {
    encoding: Encoding,
    kind: String,
    api_version: String,
    /// The resource as it appears in paths, e.g. `services`.
    resource: String,
    /// `/api/v1` or `/apis/{group}/{version}`.
    base: String,
    state: Mutex<State>,
    /// Wakes the open watches: a change, `end_watches`, a new interval.
    wake: Condvar,
    lists: AtomicU64,
    watches: AtomicU64,
    bytes_sent: AtomicU64,
}

/// Where a request points in the collection.
enum Target {
    /// The collection, in one namespace or in all of them.
    Collection(Option<String>),
    /// One object: namespace (empty when cluster-scoped) and name.
    Object(String, String),
}

impl LiveCollection {
    /// An empty collection of `kind` (e.g. `Service`, `v1`, or
    /// `EndpointSlice`, `discovery.k8s.io/v1`) at `INITIAL_RESOURCE_VERSION`.
    /// The resource in its paths is the kind's lowercase plural
    /// (`services`, `endpointslices`).
    pub fn new(encoding: Encoding, kind: &str, api_version: &str) -> Arc<LiveCollection> {
        let base = if api_version == "v1" {
            "/api/v1".to_string()
        } else {
            format!("/apis/{api_version}")
        };
        Arc::new(LiveCollection {
            encoding,
            kind: kind.to_string(),
            api_version: api_version.to_string(),
            resource: plural(kind),
            base,
            state: Mutex::new(State {
                rv: INITIAL_RESOURCE_VERSION,
                objects: BTreeMap::new(),
                history: Vec::new(),
                compacted_at: 0,
                watches: HashMap::new(),
                next_watch: 1,
                bookmark_interval: Some(DEFAULT_BOOKMARK_INTERVAL),
            }),
            wake: Condvar::new(),
            lists: AtomicU64::new(0),
            watches: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
        })
    }

    /// The collection's path: all namespaces (`None`, e.g.
    /// `/api/v1/services`) or one (`/api/v1/namespaces/NS/services`).
    pub fn path(&self, namespace: Option<&str>) -> String {
        match namespace {
            None => format!("{}/{}", self.base, self.resource),
            Some(ns) => format!("{}/namespaces/{ns}/{}", self.base, self.resource),
        }
    }

    /// Routes `GET` of the collection's paths on `fake` to it: all
    /// namespaces, one namespace, and single objects (later routes of `fake`
    /// still win over these).
    pub fn route_on(self: &Arc<Self>, fake: &FakeApiserver) {
        let all = self.path(None);
        let one_namespace = self.path(Some("*"));
        fake.route("GET", &all, self.behaviour());
        fake.route("GET", &format!("{all}/*"), self.behaviour());
        fake.route("GET", &one_namespace, self.behaviour());
        fake.route("GET", &format!("{one_namespace}/*"), self.behaviour());
    }

    /// The behaviour that serves the collection, for routes of one's own:
    /// it answers lists, watches and single-object GETs of the paths it
    /// recognises, and a 404 `Status` for any other path.
    pub fn behaviour(self: &Arc<Self>) -> Behaviour {
        let collection = self.clone();
        Behaviour::func(move |req| collection.answer(req))
    }

    /// Creates or updates the object with `labels` (replacing the old ones)
    /// at the next resourceVersion, which it returns; open watches get the
    /// event (ADDED or MODIFIED, as their selectors see it).
    pub fn put(&self, namespace: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
        let labels: Labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut st = lock(&self.state);
        st.rv += 1;
        let rv = st.rv;
        let key = (namespace.to_string(), name.to_string());
        let before = st.objects.insert(key, (rv, labels.clone())).map(|(_, l)| l);
        let change = Change {
            rv,
            change: if before.is_some() {
                ChangeType::Modified
            } else {
                ChangeType::Added
            },
            namespace: namespace.to_string(),
            name: name.to_string(),
            before,
            after: labels,
        };
        self.record(&mut st, change);
        rv
    }

    /// Deletes the object at the next resourceVersion, which it returns
    /// (`None` when there is no such object); open watches that selected it
    /// get DELETED with the object at that resourceVersion.
    pub fn delete(&self, namespace: &str, name: &str) -> Option<u64> {
        let mut st = lock(&self.state);
        let key = (namespace.to_string(), name.to_string());
        let (_, labels) = st.objects.remove(&key)?;
        st.rv += 1;
        let rv = st.rv;
        let change = Change {
            rv,
            change: ChangeType::Deleted,
            namespace: namespace.to_string(),
            name: name.to_string(),
            before: Some(labels.clone()),
            after: labels,
        };
        self.record(&mut st, change);
        Some(rv)
    }

    /// Forgets the history up to the current resourceVersion: from now on a
    /// watch resuming from an older one gets an `ERROR` event with a 410
    /// `Expired` Status, then the end of the stream. Open watches go on.
    pub fn compact(&self) {
        let mut st = lock(&self.state);
        st.compacted_at = st.rv;
        st.history.clear();
    }

    /// Ends every open watch cleanly (terminating chunk) once it has sent
    /// the events recorded before this call, as an apiserver ending its
    /// streams. Watches opened later are not affected.
    pub fn end_watches(&self) {
        let mut st = lock(&self.state);
        for watch in st.watches.values_mut() {
            watch.ending = true;
        }
        self.wake.notify_all();
    }

    /// How often open watches with `allowWatchBookmarks=true` get a
    /// BOOKMARK at the current resourceVersion (`None`: never). Counted from
    /// the watch's start or its last bookmark; applies to open watches too.
    pub fn set_bookmark_interval(&self, interval: Option<Duration>) {
        lock(&self.state).bookmark_interval = interval;
        self.wake.notify_all();
    }

    /// List requests served (watch requests are counted by `watches`).
    pub fn lists(&self) -> u64 {
        self.lists.load(Ordering::SeqCst)
    }
    /// Watch requests served, refused ones (bad selector, expired
    /// resourceVersion) included.
    pub fn watches(&self) -> u64 {
        self.watches.load(Ordering::SeqCst)
    }
    /// Body bytes handed to clients: lists, objects, errors and watch events.
    pub fn bytes_sent(&self) -> u64 {
        self.bytes_sent.load(Ordering::SeqCst)
    }
    /// Watches currently open.
    pub fn open_watches(&self) -> usize {
        lock(&self.state).watches.len()
    }
    /// The resourceVersion of the last change (`INITIAL_RESOURCE_VERSION`
    /// before any).
    pub fn current_rv(&self) -> u64 {
        lock(&self.state).rv
    }
    /// The current objects and their resourceVersions.
    pub fn objects(&self) -> BTreeMap<ObjectKey, u64> {
        lock(&self.state)
            .objects
            .iter()
            .map(|(k, (rv, _))| (k.clone(), *rv))
            .collect()
    }

    // ------------------------------------------------------------ internals

    fn sent(&self, n: usize) {
        self.bytes_sent.fetch_add(n as u64, Ordering::SeqCst);
    }

    /// The object as the collection encodes it.
    fn object(&self, namespace: &str, name: &str, rv: u64, labels: &Labels) -> Vec<u8> {
        let labels: Vec<(&str, &str)> = labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let (kind, api_version) = (self.kind.as_str(), self.api_version.as_str());
        match self.encoding {
            Encoding::Json => {
                k8s_wire::json_object(kind, api_version, namespace, name, rv, &labels).into_bytes()
            }
            Encoding::Protobuf => {
                k8s_wire::pb_object(kind, api_version, namespace, name, rv, &labels)
            }
        }
    }

    /// Appends `change` to the history and queues it, as each open watch's
    /// selectors see it.
    fn record(&self, st: &mut State, change: Change) {
        for watch in st.watches.values_mut() {
            if let Some(event) = self.event_for(&watch.filter, &change) {
                watch.queue.push_back(event);
            }
        }
        st.history.push(change);
        self.wake.notify_all();
    }

    /// The event a watch with `filter` gets for `change`, as kube-apiserver's
    /// cacheWatcher decides it: selected before and after: the event as is;
    /// only after: ADDED; only before: DELETED carrying the object as it was
    /// before, at the change's resourceVersion; neither: none.
    fn event_for(&self, filter: &Filter, change: &Change) -> Option<Vec<u8>> {
        let (namespace, name) = (change.namespace.as_str(), change.name.as_str());
        let now =
            change.change != ChangeType::Deleted && filter.matches(namespace, name, &change.after);
        let before = change
            .before
            .as_ref()
            .is_some_and(|labels| filter.matches(namespace, name, labels));
        let (event_type, labels) = match (before, now) {
            (false, true) => ("ADDED", &change.after),
            (true, true) => ("MODIFIED", &change.after),
            (true, false) => ("DELETED", change.before.as_ref()?),
            (false, false) => return None,
        };
        let object = self.object(namespace, name, change.rv, labels);
        Some(self.encoding.event(event_type, &object))
    }

    fn bookmark(&self, rv: u64) -> Vec<u8> {
        let object = match self.encoding {
            Encoding::Json => {
                k8s_wire::json_bookmark(&self.kind, &self.api_version, rv).into_bytes()
            }
            Encoding::Protobuf => k8s_wire::pb_bookmark(&self.kind, &self.api_version, rv),
        };
        self.encoding.event("BOOKMARK", &object)
    }

    /// A complete answer in the collection's encoding, counted as sent.
    fn respond(&self, status: u16, body: Vec<u8>) -> Behaviour {
        self.sent(body.len());
        let content_type = [("Content-Type", self.encoding.content_type())];
        Behaviour::respond(status, &content_type, body)
    }

    fn failure(&self, code: u16, reason: &str, message: &str) -> Behaviour {
        self.respond(code, self.encoding.status(code, reason, message))
    }

    fn target(&self, path: &str) -> Option<Target> {
        let rest = path.strip_prefix(&self.base)?.strip_prefix('/')?;
        let segments: Vec<&str> = rest.split('/').collect();
        let resource = self.resource.as_str();
        match segments.as_slice() {
            [r] if *r == resource => Some(Target::Collection(None)),
            [r, name] if *r == resource && !name.is_empty() => {
                Some(Target::Object(String::new(), name.to_string()))
            }
            ["namespaces", ns, r] if *r == resource && !ns.is_empty() => {
                Some(Target::Collection(Some(ns.to_string())))
            }
            ["namespaces", ns, r, name] if *r == resource && !ns.is_empty() && !name.is_empty() => {
                Some(Target::Object(ns.to_string(), name.to_string()))
            }
            _ => None,
        }
    }

    fn answer(self: &Arc<Self>, req: &RecordedRequest) -> Behaviour {
        if req.method != "GET" {
            return self.failure(
                405,
                "MethodNotAllowed",
                &format!("{} is not supported by the fake collection", req.method),
            );
        }
        let namespace = match self.target(&req.path) {
            None => {
                return self.failure(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                );
            }
            Some(Target::Object(namespace, name)) => return self.get_one(&namespace, &name),
            Some(Target::Collection(namespace)) => namespace,
        };
        let is_watch = query_bool(req, "watch") == Some(true);
        if is_watch {
            self.watches.fetch_add(1, Ordering::SeqCst);
        } else {
            self.lists.fetch_add(1, Ordering::SeqCst);
        }
        let filter = match Filter::from_request(namespace, req) {
            Ok(filter) => filter,
            Err(message) => return self.failure(400, "BadRequest", &message),
        };
        if is_watch {
            self.watch(req, filter)
        } else {
            self.list(&filter)
        }
    }

    fn get_one(&self, namespace: &str, name: &str) -> Behaviour {
        let st = lock(&self.state);
        let key = (namespace.to_string(), name.to_string());
        match st.objects.get(&key) {
            Some((rv, labels)) => {
                let body = self.object(namespace, name, *rv, labels);
                drop(st);
                self.respond(200, body)
            }
            None => {
                drop(st);
                self.failure(
                    404,
                    "NotFound",
                    &format!("{} \"{name}\" not found", self.resource),
                )
            }
        }
    }

    /// The `{Kind}List` of the selected objects at the current
    /// resourceVersion, all of them (`limit` is ignored, as kube-apiserver
    /// does for lists served from its watch cache).
    fn list(&self, filter: &Filter) -> Behaviour {
        let st = lock(&self.state);
        let items: Vec<Vec<u8>> = st
            .objects
            .iter()
            .filter(|((ns, name), (_, labels))| filter.matches(ns, name, labels))
            .map(|((ns, name), (rv, labels))| self.object(ns, name, *rv, labels))
            .collect();
        let body = self
            .encoding
            .list(&self.kind, &self.api_version, st.rv, &items);
        drop(st);
        self.respond(200, body)
    }

    fn watch(self: &Arc<Self>, req: &RecordedRequest, filter: Filter) -> Behaviour {
        let send_initial_events = query_bool(req, "sendInitialEvents");
        let bookmarks = query_bool(req, "allowWatchBookmarks") == Some(true);
        let from = match req.query_param("resourceVersion").as_deref() {
            None | Some("" | "0") => None,
            Some(v) => match v.parse::<u64>() {
                Ok(n) => Some(n),
                Err(_) => {
                    let message = format!("invalid resource version: {v:?}");
                    return self.failure(400, "BadRequest", &message);
                }
            },
        };
        // 0 or none: the apiserver's own default, far beyond any test.
        let timeout = match req.query_param("timeoutSeconds") {
            None => None,
            Some(v) => match v.parse::<u64>() {
                Ok(0) => None,
                Ok(secs) => Some(Duration::from_secs(secs)),
                Err(_) => {
                    let message = format!("invalid timeoutSeconds: {v:?}");
                    return self.failure(400, "BadRequest", &message);
                }
            },
        };

        let mut st = lock(&self.state);
        let mut queue = VecDeque::new();
        let initial = match (send_initial_events, from) {
            (Some(true), _) => true,
            (Some(false), _) => false,
            (None, from) => from.is_none(),
        };
        if send_initial_events != Some(true)
            && let Some(from) = from
        {
            if from < st.compacted_at {
                let message = format!("too old resource version: {from} ({})", st.compacted_at);
                drop(st);
                return self.expired(&message);
            }
            if from > st.rv {
                let message = format!("Too large resource version: {from}, current: {}", st.rv);
                drop(st);
                return self.failure(504, "Timeout", &message);
            }
            for change in st.history.iter().filter(|c| c.rv > from) {
                queue.extend(self.event_for(&filter, change));
            }
        }
        if initial {
            for ((ns, name), (rv, labels)) in &st.objects {
                if filter.matches(ns, name, labels) {
                    let object = self.object(ns, name, *rv, labels);
                    queue.push_back(self.encoding.event("ADDED", &object));
                }
            }
        }
        if send_initial_events == Some(true) {
            let object =
                self.encoding
                    .initial_events_end_bookmark(&self.kind, &self.api_version, st.rv);
            queue.push_back(self.encoding.event("BOOKMARK", &object));
        }
        let id = st.next_watch;
        st.next_watch += 1;
        let now = Instant::now();
        st.watches.insert(
            id,
            OpenWatch {
                filter,
                queue,
                ending: false,
                bookmarks,
                last_bookmark: now,
                deadline: timeout.map(|t| now + t),
            },
        );
        drop(st);
        let handle = WatchHandle {
            collection: self.clone(),
            id,
        };
        Behaviour::live(200, self.encoding.watch_content_type(), move |wait| {
            handle.poll(wait)
        })
    }

    /// 200, one `ERROR` event with a 410 `Expired` Status, then the end of
    /// the stream: what kube-apiserver answers a watch resuming from a
    /// resourceVersion its history no longer holds.
    fn expired(&self, message: &str) -> Behaviour {
        let status = self.encoding.status(410, "Expired", message);
        let event = self.encoding.event("ERROR", &status);
        self.sent(event.len());
        Behaviour::watch_encoded(
            self.encoding,
            vec![(Duration::ZERO, event)],
            StreamEnd::Finish,
        )
    }

    /// The next thing watch `id` has to write, waiting up to `wait` for it.
    fn poll(&self, id: u64, wait: Duration) -> LivePoll {
        let until = Instant::now() + wait;
        let mut st = lock(&self.state);
        loop {
            let (rv, interval) = (st.rv, st.bookmark_interval);
            let now = Instant::now();
            let Some(watch) = st.watches.get_mut(&id) else {
                return LivePoll::Finish;
            };
            if let Some(event) = watch.queue.pop_front() {
                self.sent(event.len());
                return LivePoll::Data(event);
            }
            if watch.ending || watch.deadline.is_some_and(|d| now >= d) {
                return LivePoll::Finish;
            }
            let next_bookmark = interval
                .filter(|_| watch.bookmarks)
                .map(|i| watch.last_bookmark + i);
            if next_bookmark.is_some_and(|at| now >= at) {
                watch.last_bookmark = now;
                let event = self.bookmark(rv);
                self.sent(event.len());
                return LivePoll::Data(event);
            }
            if now >= until {
                return LivePoll::Idle;
            }
            let wake_at = [Some(until), watch.deadline, next_bookmark]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(until);
            st = self
                .wake
                .wait_timeout(st, wake_at.saturating_duration_since(now))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// Unregisters its watch when the stream that serves it ends, however it ends.
struct WatchHandle {
    collection: Arc<LiveCollection>,
    id: u64,
}

impl WatchHandle {
    fn poll(&self, wait: Duration) -> LivePoll {
        self.collection.poll(self.id, wait)
    }
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        lock(&self.collection.state).watches.remove(&self.id);
    }
}

/// The lowercase plural of a kind, as in resource paths.
fn plural(kind: &str) -> String {
    let lower = kind.to_ascii_lowercase();
    if lower.ends_with("endpoints") {
        lower
    } else if ["s", "x", "z", "ch", "sh"]
        .iter()
        .any(|e| lower.ends_with(e))
    {
        format!("{lower}es")
    } else if lower.ends_with('y') && !["ay", "ey", "oy", "uy"].iter().any(|e| lower.ends_with(e)) {
        format!("{}ies", &lower[..lower.len() - 1])
    } else {
        format!("{lower}s")
    }
}

/// A boolean query parameter as Go's `strconv.ParseBool` reads it; `None`
/// when absent or not a boolean.
fn query_bool(req: &RecordedRequest, name: &str) -> Option<bool> {
    match req.query_param(name)?.as_str() {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

// ------------------------------------------------------------ selectors

/// What one request selects: a namespace (from the path), a label selector
/// and a field selector.
struct Filter {
    namespace: Option<String>,
    labels: LabelSelector,
    fields: Vec<FieldTerm>,
}

impl Filter {
    fn from_request(namespace: Option<String>, req: &RecordedRequest) -> Result<Filter, String> {
        let labels = LabelSelector::parse(&req.query_param("labelSelector").unwrap_or_default())?;
        let fields = parse_field_selector(&req.query_param("fieldSelector").unwrap_or_default())?;
        Ok(Filter {
            namespace,
            labels,
            fields,
        })
    }

    fn matches(&self, namespace: &str, name: &str, labels: &Labels) -> bool {
        self.namespace.as_deref().is_none_or(|ns| ns == namespace)
            && self.labels.matches(labels)
            && self.fields.iter().all(|t| t.matches(namespace, name))
    }
}

/// Whether `labels` match the label selector `selector`, as kube-apiserver
/// reads it: `k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`,
/// `k notin (a,b)`, `k>n`, `k<n`, comma-separated (all must hold); an empty
/// selector selects everything. `Err` when it does not parse.
pub fn label_selector_matches(selector: &str, labels: &[(&str, &str)]) -> Result<bool, String> {
    let labels: Labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Ok(LabelSelector::parse(selector)?.matches(&labels))
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Word(String),
    Not,
    Equals,
    DoubleEquals,
    NotEquals,
    Open,
    Close,
    Comma,
    Greater,
    Less,
    In,
    NotIn,
}

fn lex(selector: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut chars = selector.chars().peekable();
    while let Some(&c) = chars.peek() {
        chars.next();
        let token = match c {
            c if c.is_whitespace() => continue,
            '!' if chars.peek() == Some(&'=') => {
                chars.next();
                Token::NotEquals
            }
            '!' => Token::Not,
            '=' if chars.peek() == Some(&'=') => {
                chars.next();
                Token::DoubleEquals
            }
            '=' => Token::Equals,
            '(' => Token::Open,
            ')' => Token::Close,
            ',' => Token::Comma,
            '>' => Token::Greater,
            '<' => Token::Less,
            c => {
                let mut word = c.to_string();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || "!=(),<>".contains(c) {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
                match word.as_str() {
                    "in" => Token::In,
                    "notin" => Token::NotIn,
                    _ => Token::Word(word),
                }
            }
        };
        out.push(token);
    }
    out
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum LabelOp {
    Exists,
    DoesNotExist,
    Equals(String),
    NotEquals(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Greater(i64),
    Less(i64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct LabelRequirement {
    key: String,
    op: LabelOp,
}

impl LabelRequirement {
    fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.key);
        let number = || value.and_then(|v| v.parse::<i64>().ok());
        match &self.op {
            LabelOp::Exists => value.is_some(),
            LabelOp::DoesNotExist => value.is_none(),
            LabelOp::Equals(v) => value == Some(v),
            LabelOp::NotEquals(v) => value != Some(v),
            LabelOp::In(set) => value.is_some_and(|v| set.contains(v)),
            LabelOp::NotIn(set) => value.is_none_or(|v| !set.contains(v)),
            LabelOp::Greater(n) => number().is_some_and(|v| v > *n),
            LabelOp::Less(n) => number().is_some_and(|v| v < *n),
        }
    }
}

/// A parsed label selector: every requirement must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct LabelSelector(Vec<LabelRequirement>);

impl LabelSelector {
    fn parse(selector: &str) -> Result<LabelSelector, String> {
        let tokens = lex(selector);
        let fail = |what: &str| format!("unable to parse label selector {selector:?}: {what}");
        if tokens.is_empty() {
            return Ok(LabelSelector::default());
        }
        let mut at = 0;
        let mut requirements = Vec::new();
        loop {
            let requirement = match tokens.get(at) {
                Some(Token::Not) => match tokens.get(at + 1) {
                    Some(Token::Word(key)) => {
                        at += 2;
                        LabelRequirement {
                            key: key.clone(),
                            op: LabelOp::DoesNotExist,
                        }
                    }
                    _ => return Err(fail("a key must follow '!'")),
                },
                Some(Token::Word(key)) => {
                    at += 1;
                    let op = match tokens.get(at) {
                        None | Some(Token::Comma) => LabelOp::Exists,
                        Some(Token::Equals | Token::DoubleEquals) => {
                            at += 1;
                            LabelOp::Equals(single_value(&tokens, &mut at).map_err(|e| fail(&e))?)
                        }
                        Some(Token::NotEquals) => {
                            at += 1;
                            LabelOp::NotEquals(
                                single_value(&tokens, &mut at).map_err(|e| fail(&e))?,
                            )
                        }
                        Some(Token::In) => {
                            at += 1;
                            LabelOp::In(value_set(&tokens, &mut at).map_err(|e| fail(&e))?)
                        }
                        Some(Token::NotIn) => {
                            at += 1;
                            LabelOp::NotIn(value_set(&tokens, &mut at).map_err(|e| fail(&e))?)
                        }
                        Some(t @ (Token::Greater | Token::Less)) => {
                            let greater = *t == Token::Greater;
                            at += 1;
                            let Some(Token::Word(n)) = tokens.get(at) else {
                                return Err(fail("a number must follow '>' or '<'"));
                            };
                            let Ok(n) = n.parse::<i64>() else {
                                return Err(fail("a number must follow '>' or '<'"));
                            };
                            at += 1;
                            if greater {
                                LabelOp::Greater(n)
                            } else {
                                LabelOp::Less(n)
                            }
                        }
                        Some(t) => {
                            return Err(fail(&format!("unexpected {t:?} after key {key:?}")));
                        }
                    };
                    LabelRequirement {
                        key: key.clone(),
                        op,
                    }
                }
                Some(t) => return Err(fail(&format!("a key was expected, found {t:?}"))),
                None => return Err(fail("a key was expected after ','")),
            };
            requirements.push(requirement);
            match tokens.get(at) {
                None => return Ok(LabelSelector(requirements)),
                Some(Token::Comma) => at += 1,
                Some(t) => return Err(fail(&format!("',' was expected, found {t:?}"))),
            }
        }
    }

    fn matches(&self, labels: &Labels) -> bool {
        self.0.iter().all(|r| r.matches(labels))
    }
}

/// The value after `=`, `==` or `!=`: a word, or empty before `,` or the end.
fn single_value(tokens: &[Token], at: &mut usize) -> Result<String, String> {
    match tokens.get(*at) {
        Some(Token::Word(v)) => {
            *at += 1;
            Ok(v.clone())
        }
        None | Some(Token::Comma) => Ok(String::new()),
        Some(t) => Err(format!("a value was expected, found {t:?}")),
    }
}

/// `( v1, v2, ... )`; empty items are empty strings (`()` is `{""}`).
fn value_set(tokens: &[Token], at: &mut usize) -> Result<Vec<String>, String> {
    if tokens.get(*at) != Some(&Token::Open) {
        return Err("'(' was expected".to_string());
    }
    *at += 1;
    let mut values = Vec::new();
    let mut current = String::new();
    loop {
        match tokens.get(*at) {
            Some(Token::Word(v)) if current.is_empty() => current = v.clone(),
            Some(Token::Comma) => values.push(std::mem::take(&mut current)),
            Some(Token::Close) => {
                values.push(current);
                *at += 1;
                return Ok(values);
            }
            Some(t) => return Err(format!("unexpected {t:?} in a set of values")),
            None => return Err("')' was expected".to_string()),
        }
        *at += 1;
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Name,
    Namespace,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct FieldTerm {
    field: Field,
    value: String,
    equal: bool,
}

impl FieldTerm {
    fn matches(&self, namespace: &str, name: &str) -> bool {
        let actual = match self.field {
            Field::Name => name,
            Field::Namespace => namespace,
        };
        (actual == self.value) == self.equal
    }
}

/// `metadata.name` and `metadata.namespace` with `=`, `==` or `!=`,
/// comma-separated (all must hold).
fn parse_field_selector(selector: &str) -> Result<Vec<FieldTerm>, String> {
    let mut terms = Vec::new();
    for term in selector.split(',').filter(|t| !t.is_empty()) {
        // The first operator in the term, the longest at its place, as
        // apimachinery's fields parser finds it.
        let split = (0..term.len()).find_map(|i| {
            let rest = term.get(i..)?;
            ["!=", "==", "="]
                .iter()
                .find(|op| rest.starts_with(*op))
                .map(|op| (&term[..i], *op, &rest[op.len()..]))
        });
        let Some((key, op, value)) = split else {
            return Err(format!(
                "invalid selector: '{selector}'; can't understand '{term}'"
            ));
        };
        let field = match key {
            "metadata.name" => Field::Name,
            "metadata.namespace" => Field::Namespace,
            other => return Err(format!("field label not supported: {other}")),
        };
        terms.push(FieldTerm {
            field,
            value: value.to_string(),
            equal: op != "!=",
        });
    }
    Ok(terms)
}

// ------------------------------------------------------- watch recorder

/// How long a `WatchRecorder` made with `start` records at most.
pub const RECORDER_LIMIT: Duration = Duration::from_secs(60);
/// How long a recorder waits for the answer's head.
const RECORDER_OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the recorder thread looks at `stop` and its limit.
const RECORDER_POLL: Duration = Duration::from_millis(50);
/// How long `stop` waits for the recorder thread.
const RECORDER_STOP_WAIT: Duration = Duration::from_secs(2);

/// The `Status` an `ERROR` event carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventStatus {
    pub code: u16,
    pub reason: String,
    pub message: String,
}

/// One event of a watch as a test compares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedEvent {
    /// `ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK` or `ERROR`.
    pub event_type: String,
    /// Empty for cluster-scoped objects, bookmarks and errors.
    pub namespace: String,
    /// Empty for bookmarks and errors.
    pub name: String,
    /// The object's `metadata.resourceVersion` (0 when absent, as in errors).
    pub resource_version: u64,
    /// The object's labels, sorted by key.
    pub labels: Vec<(String, String)>,
    /// A BOOKMARK annotated `k8s.io/initial-events-end: "true"`.
    pub initial_events_end: bool,
    /// The `Status` of an `ERROR` event.
    pub error: Option<EventStatus>,
}

impl RecordedEvent {
    /// `(namespace, name)` of the object.
    pub fn key(&self) -> ObjectKey {
        (self.namespace.clone(), self.name.clone())
    }
}

#[derive(Default)]
struct RecorderState {
    status: Option<u16>,
    content_type: Option<String>,
    events: Vec<RecordedEvent>,
    /// The server ended the body (or the watch could not be opened).
    ended: bool,
    /// ... as framed (terminating chunk).
    ended_cleanly: bool,
    problem: Option<String>,
    /// The thread returned.
    done: bool,
}

#[derive(Default)]
struct RecorderShared {
    stop: AtomicBool,
    state: Mutex<RecorderState>,
}

/// Opens a watch on a thread of its own and records every event it
/// delivers (JSON lines or protobuf frames, in the encoding asked for). The
/// thread ends when the stream ends, on `stop` or drop, or at the limit given
/// at start, whichever comes first.
pub struct WatchRecorder {
    shared: Arc<RecorderShared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl WatchRecorder {
    /// `GET base_url + path_and_query` with `Accept: encoding.accept()`
    /// (unless `extra_headers` has one) and `extra_headers`; over TLS when
    /// `tls` gives the CA file and an optional client certificate + key PEM
    /// (the fake), plain HTTP otherwise (the hub). Records for at most
    /// `RECORDER_LIMIT`. Returns at once: `wait_open` waits for the head.
    pub fn start(
        base_url: &str,
        path_and_query: &str,
        encoding: Encoding,
        extra_headers: &[(&str, &str)],
        tls: Option<(&Path, Option<&Path>)>,
    ) -> WatchRecorder {
        Self::start_with_limit(
            base_url,
            path_and_query,
            encoding,
            extra_headers,
            tls,
            RECORDER_LIMIT,
        )
    }

    /// Like `start`, recording for at most `limit`.
    pub fn start_with_limit(
        base_url: &str,
        path_and_query: &str,
        encoding: Encoding,
        extra_headers: &[(&str, &str)],
        tls: Option<(&Path, Option<&Path>)>,
        limit: Duration,
    ) -> WatchRecorder {
        let url = format!("{base_url}{path_and_query}");
        let mut headers: Vec<(String, String)> = extra_headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("accept"))
        {
            headers.push(("Accept".to_string(), encoding.accept().to_string()));
        }
        let tls = tls.map(|(ca, client_pem)| rustls_client_config(ca, client_pem));
        let until = Instant::now() + limit;
        let shared = Arc::new(RecorderShared::default());
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name("watch-recorder".to_string())
            .spawn(move || {
                record(&sh, &url, &headers, tls, encoding, until);
                lock(&sh.state).done = true;
            })
            .expect("spawn watch recorder");
        WatchRecorder {
            shared,
            thread: Mutex::new(Some(thread)),
        }
    }

    /// The events recorded so far, in arrival order.
    pub fn events(&self) -> Vec<RecordedEvent> {
        lock(&self.shared.state).events.clone()
    }
    /// Waits (bounded) until `cond` holds for the events recorded so far.
    pub fn wait_for(
        &self,
        mut cond: impl FnMut(&[RecordedEvent]) -> bool,
        timeout: Duration,
    ) -> bool {
        super::wait_until(timeout, || cond(&lock(&self.shared.state).events))
    }
    /// Waits (bounded) for the answer's head; its status.
    pub fn wait_open(&self, timeout: Duration) -> Option<u16> {
        super::wait_for(timeout, || {
            let st = lock(&self.shared.state);
            st.status.or_else(|| st.done.then_some(0))
        })
        .filter(|s| *s != 0)
    }
    /// Whether the server ended the stream (terminating chunk, close or
    /// error), or the watch could not be opened; not set by `stop` or the
    /// recorder's limit.
    pub fn ended(&self) -> bool {
        lock(&self.shared.state).ended
    }
    /// Whether the stream ended with its terminating chunk.
    pub fn ended_cleanly(&self) -> bool {
        lock(&self.shared.state).ended_cleanly
    }
    /// Waits (bounded) until the server ended the stream.
    pub fn wait_ended(&self, timeout: Duration) -> bool {
        super::wait_until(timeout, || self.ended())
    }
    /// The answer's status, once its head arrived.
    pub fn status(&self) -> Option<u16> {
        lock(&self.shared.state).status
    }
    /// The answer's `Content-Type`, once its head arrived.
    pub fn content_type(&self) -> Option<String> {
        lock(&self.shared.state).content_type.clone()
    }
    /// What went wrong, if anything: the request failed, a status other
    /// than 200 (with the body), bytes that are not events, a stream cut
    /// inside an event.
    pub fn problem(&self) -> Option<String> {
        lock(&self.shared.state).problem.clone()
    }
    /// Closes the watch and waits (bounded) for the thread.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let Some(thread) = lock(&self.thread).take() else {
            return;
        };
        if super::wait_until(RECORDER_STOP_WAIT, || thread.is_finished()) {
            let _ = thread.join();
        }
    }
}

impl Drop for WatchRecorder {
    fn drop(&mut self) {
        self.stop();
    }
}

fn record(
    shared: &RecorderShared,
    url: &str,
    headers: &[(String, String)],
    tls: Option<Arc<rustls::ClientConfig>>,
    encoding: Encoding,
    until: Instant,
) {
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let open_timeout = RECORDER_OPEN_TIMEOUT
        .min(until.saturating_duration_since(Instant::now()))
        .max(Duration::from_millis(1));
    let mut stream = match RawStream::try_open("GET", url, &headers, &[], tls, open_timeout) {
        Ok(stream) => stream,
        Err(e) => {
            let mut st = lock(&shared.state);
            st.problem = Some(format!("GET {url}: {e}"));
            st.ended = true;
            return;
        }
    };
    {
        let mut st = lock(&shared.state);
        st.status = Some(stream.status());
        st.content_type = stream.header("content-type").map(String::from);
    }
    if stream.status() != 200 {
        let left = until.saturating_duration_since(Instant::now());
        let body = stream.read_to_end(left.min(Duration::from_secs(5)));
        let mut st = lock(&shared.state);
        st.problem = Some(format!(
            "status {}: {}",
            stream.status(),
            String::from_utf8_lossy(&body)
        ));
        st.ended = stream.is_ended();
        st.ended_cleanly = stream.ended_cleanly();
        drop(st);
        stream.close();
        return;
    }
    let mut buf = Vec::new();
    while !shared.stop.load(Ordering::SeqCst) && Instant::now() < until {
        match stream.next_chunk(RECORDER_POLL) {
            Some((_, data)) => {
                buf.extend_from_slice(&data);
                let decoded = decode_events(encoding, &mut buf);
                let mut st = lock(&shared.state);
                match decoded {
                    Ok(events) => st.events.extend(events),
                    Err(problem) => {
                        st.problem = Some(problem);
                        break;
                    }
                }
            }
            None if stream.is_ended() => {
                let mut st = lock(&shared.state);
                st.ended = true;
                st.ended_cleanly = stream.ended_cleanly();
                if !buf.iter().all(u8::is_ascii_whitespace) {
                    st.problem = Some(format!(
                        "the stream ended inside an event ({} bytes left)",
                        buf.len()
                    ));
                }
                break;
            }
            None => {}
        }
    }
    stream.close();
}

/// Takes the complete events off the front of `buf`.
fn decode_events(encoding: Encoding, buf: &mut Vec<u8>) -> Result<Vec<RecordedEvent>, String> {
    let mut events = Vec::new();
    let mut used = 0;
    match encoding {
        Encoding::Json => {
            let mut values = serde_json::Deserializer::from_slice(buf).into_iter::<Value>();
            loop {
                match values.next() {
                    None => break,
                    Some(Ok(value)) => {
                        used = values.byte_offset();
                        let event = json_recorded(&value)
                            .ok_or_else(|| format!("not a watch event: {value}"))?;
                        events.push(event);
                    }
                    Some(Err(e)) if e.is_eof() => break,
                    Some(Err(e)) => return Err(format!("not JSON in the stream: {e}")),
                }
            }
        }
        Encoding::Protobuf => {
            while let Some(prefix) = buf.get(used..used + 4) {
                let len = u32::from_be_bytes(prefix.try_into().expect("4 bytes")) as usize;
                let Some(frame) = buf.get(used..used + 4 + len) else {
                    break;
                };
                let frames =
                    k8s_wire::pb_frames(frame).ok_or("a malformed protobuf watch frame")?;
                for (event_type, object) in frames {
                    let event = pb_recorded(&event_type, &object)
                        .ok_or_else(|| format!("a {event_type} frame with a malformed object"))?;
                    events.push(event);
                }
                used += 4 + len;
            }
        }
    }
    buf.drain(..used);
    Ok(events)
}

fn sorted(mut labels: Vec<(String, String)>) -> Vec<(String, String)> {
    labels.sort();
    labels
}

fn json_recorded(event: &Value) -> Option<RecordedEvent> {
    let event_type = event["type"].as_str()?.to_string();
    let object = event.get("object")?;
    let meta = &object["metadata"];
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let labels = meta["labels"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), text(v))).collect())
        .unwrap_or_default();
    let error = (event_type == "ERROR").then(|| EventStatus {
        code: object["code"]
            .as_u64()
            .and_then(|c| u16::try_from(c).ok())
            .unwrap_or(0),
        reason: text(&object["reason"]),
        message: text(&object["message"]),
    });
    Some(RecordedEvent {
        initial_events_end: k8s_wire::json_is_initial_events_end(event),
        namespace: text(&meta["namespace"]),
        name: text(&meta["name"]),
        resource_version: meta["resourceVersion"]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        labels: sorted(labels),
        error,
        event_type,
    })
}

fn pb_recorded(event_type: &str, object: &[u8]) -> Option<RecordedEvent> {
    if event_type == "ERROR" {
        let (code, reason, message) = k8s_wire::pb_decode_status(object)?;
        return Some(RecordedEvent {
            event_type: event_type.to_string(),
            namespace: String::new(),
            name: String::new(),
            resource_version: 0,
            labels: Vec::new(),
            initial_events_end: false,
            error: Some(EventStatus {
                code,
                reason,
                message,
            }),
        });
    }
    let decoded = k8s_wire::pb_decode(object)?;
    Some(RecordedEvent {
        event_type: event_type.to_string(),
        initial_events_end: decoded.is_initial_events_end(),
        resource_version: decoded.resource_version.parse().unwrap_or(0),
        labels: sorted(decoded.labels),
        namespace: decoded.namespace,
        name: decoded.name,
        error: None,
    })
}

/// The state an informer holds after `events`, from `state`: ADDED and
/// MODIFIED set the object's resourceVersion, DELETED removes it, BOOKMARK
/// and ERROR change nothing.
pub fn apply(state: &mut BTreeMap<ObjectKey, u64>, events: &[RecordedEvent]) {
    for event in events {
        match event.event_type.as_str() {
            "ADDED" | "MODIFIED" => {
                state.insert(event.key(), event.resource_version);
            }
            "DELETED" => {
                state.remove(&event.key());
            }
            _ => {}
        }
    }
}

/// The objects (with their resourceVersions) and the resourceVersion of a
/// list answer in `encoding`; panics when it is not a list.
pub fn list_state(body: &[u8], encoding: Encoding) -> (BTreeMap<ObjectKey, u64>, u64) {
    let rv = |v: &str| v.parse::<u64>().unwrap_or(0);
    match encoding {
        Encoding::Json => {
            let list: Value = serde_json::from_slice(body).unwrap_or_else(|e| {
                panic!("not a JSON list ({e}): {}", String::from_utf8_lossy(body))
            });
            let items = list["items"]
                .as_array()
                .unwrap_or_else(|| panic!("a list without items: {list}"));
            let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
            let objects = items
                .iter()
                .map(|item| {
                    let meta = &item["metadata"];
                    let key = (text(&meta["namespace"]), text(&meta["name"]));
                    (key, rv(&text(&meta["resourceVersion"])))
                })
                .collect();
            (objects, rv(&text(&list["metadata"]["resourceVersion"])))
        }
        Encoding::Protobuf => {
            let list = k8s_wire::pb_decode_list(body).expect("not a protobuf list");
            let objects = list
                .items
                .into_iter()
                .map(|o| ((o.namespace, o.name), rv(&o.resource_version)))
                .collect();
            (objects, rv(&list.resource_version))
        }
    }
}
