//! The node's durable copy of what its components read: what to cache
//! (`agents`, `plan`), where (`key`), how durably (`store`), which list shapes
//! were seen (`lists`), and the writer thread that keeps disk I/O off every
//! client's path (`Tee` hands it complete objects; it never blocks a client).

pub mod agents;
pub mod discovery;
pub mod key;
pub mod lists;
pub mod store;
pub mod tokens;

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::codec::time::now_unix;
use crate::codec::token::{self, TokenSpec};
use crate::codec::{Encoding, EventType, WatchDecoder};
use crate::request_info::{Query, RequestInfo, Verb};
use crate::selector::{FieldSelector, LabelSelector};
use agents::Agents;
use discovery::DocumentType;
use key::Collection;
use lists::{ListShape, ListType, PagedLists, ShapeIndex};
use store::Store;
use tokens::{TokenOwner, TokenRecord};

/// Largest response body copied aside for the cache; past it the response is
/// still relayed whole, just not cached.
const MAX_TEE_BYTES: usize = 32 * 1024 * 1024;
/// Bytes waiting for the writer; past it new work is dropped (and counted).
/// Also the hub's worst extra memory under a flood of cacheable reads.
const MAX_QUEUED_BYTES: usize = 32 * 1024 * 1024;
const MAX_QUEUED_OPS: usize = 4096;

/// Counters for the metrics.
#[derive(Default)]
pub struct CacheStats {
    pub objects_written: AtomicU64,
    pub objects_removed: AtomicU64,
    pub stale_skipped: AtomicU64,
    pub write_errors: AtomicU64,
    pub dropped: AtomicU64,
    pub decode_errors: AtomicU64,
    pub tokens_stored: AtomicU64,
    pub tokens_expired: AtomicU64,
    /// Streaming lists whose initial events were stored and reconciled as a
    /// complete list.
    pub streamed_lists: AtomicU64,
}

/// The files of one streaming list's initial events, filled in by the writer
/// as it stores them (so the list is complete once the writer reaches its end).
type Members = Arc<Mutex<BTreeSet<PathBuf>>>;

/// An object's file and what it holds now.
struct ObjectFile {
    path: PathBuf,
    stored: Option<Vec<u8>>,
    stored_is_newer: bool,
}

/// Work for the writer thread.
enum Op {
    Upsert {
        collection: Collection,
        encoding: Encoding,
        object: Vec<u8>,
        /// The streaming list this object is an initial event of.
        member_of: Option<Members>,
    },
    Delete {
        collection: Collection,
        encoding: Encoding,
        object: Vec<u8>,
    },
    List {
        collection: Collection,
        encoding: Encoding,
        shape: ListShape,
        request_continue: String,
        body: Vec<u8>,
    },
    /// The bookmark that ends a streaming list's initial events.
    StreamedListEnd {
        collection: Collection,
        encoding: Encoding,
        shape: ListShape,
        members: Members,
        list_kind: String,
        api_version: String,
    },
    Discovery {
        path: PathBuf,
        body: Vec<u8>,
    },
    Token {
        owner: TokenOwner,
        spec: TokenSpec,
        encoding: Encoding,
        body: Vec<u8>,
    },
}

impl Op {
    fn len(&self) -> usize {
        match self {
            Op::Upsert { object, .. } | Op::Delete { object, .. } => object.len(),
            Op::List { body, .. } | Op::Discovery { body, .. } | Op::Token { body, .. } => {
                body.len()
            }
            Op::StreamedListEnd { .. } => 0,
        }
    }
}

pub struct Cache {
    pub store: Store,
    pub agents: Agents,
    paged: PagedLists,
    queue: SyncSender<Op>,
    queued_bytes: AtomicUsize,
    pub stats: CacheStats,
    scan_done: AtomicBool,
    last_drop_log: Mutex<Option<Instant>>,
}

/// What one request would put in the cache, decided from the request alone.
pub struct Plan {
    target: PlanTarget,
}

enum PlanTarget {
    Object(Collection),
    List {
        collection: Collection,
        shape: ListShape,
        request_continue: String,
    },
    /// A watch; with the shape of the list its initial events make up when
    /// it is a streaming list (`sendInitialEvents=true`).
    Watch {
        collection: Collection,
        initial_list: Option<ListShape>,
    },
    /// A discovery document at this request path.
    Discovery(String),
    Token {
        owner: TokenOwner,
        spec: TokenSpec,
    },
}

/// What a whole response body (not a stream) is stored as.
enum Whole {
    Object(Collection),
    List {
        collection: Collection,
        shape: ListShape,
        request_continue: String,
    },
    Discovery(PathBuf),
    Token {
        owner: TokenOwner,
        spec: TokenSpec,
    },
}

impl Cache {
    /// Opens the cache root and starts the writer and the start-up scan. The
    /// cache can be read at once; the scan cleans up in the background.
    pub fn start(root: &Path, agents: Agents) -> io::Result<Arc<Cache>> {
        let store = Store::open(root)?;
        let (queue, ops) = sync_channel(MAX_QUEUED_OPS);
        let cache = Arc::new(Cache {
            store,
            agents,
            paged: PagedLists::default(),
            queue,
            queued_bytes: AtomicUsize::new(0),
            stats: CacheStats::default(),
            scan_done: AtomicBool::new(false),
            last_drop_log: Mutex::new(None),
        });
        let writer = cache.clone();
        thread::Builder::new()
            .name("yh-cache-writer".into())
            .spawn(move || writer.write_loop(ops))?;
        let scanner = cache.clone();
        thread::Builder::new().name("yh-cache-scan".into()).spawn(move || {
            let started = Instant::now();
            let report = scanner.store.scan(is_intact);
            scanner.remove_expired_tokens(Path::new(tokens::TOKENS_DIR));
            scanner.scan_done.store(true, Ordering::SeqCst);
            log::info!(
                "cache scan: {} files checked, {} damaged moved aside, {} temp files removed in {:?}",
                report.files,
                report.quarantined,
                report.temp_files_removed,
                started.elapsed()
            );
        })?;
        Ok(cache)
    }

    pub fn scan_done(&self) -> bool {
        self.scan_done.load(Ordering::SeqCst)
    }

    /// Whether a component's requests are cached (an agent, or `Edge-Cache: true`).
    pub fn is_cached_component(&self, component: &str, edge_cache_header: bool) -> bool {
        !component.is_empty() && (edge_cache_header || self.agents.is_agent(component))
    }

    /// Decides from the request whether its answer is worth caching.
    pub fn plan(
        &self,
        info: &RequestInfo,
        query: &Query,
        component: &str,
        edge_cache_header: bool,
    ) -> Option<Plan> {
        if !info.is_resource_request {
            if info.verb != Verb::Get {
                return None;
            }
            return key::discovery_path(&info.path).map(|_| Plan {
                target: PlanTarget::Discovery(info.path.clone()),
            });
        }
        if !self.is_cached_component(component, edge_cache_header) || !is_cacheable_resource(info) {
            return None;
        }
        let collection = Collection::for_request(component, info)?;
        let target = match info.verb {
            Verb::Get | Verb::Create | Verb::Update | Verb::Patch => PlanTarget::Object(collection),
            Verb::List => PlanTarget::List {
                collection,
                shape: shape_of(info, query),
                request_continue: query.get("continue").unwrap_or_default().to_string(),
            },
            Verb::Watch => PlanTarget::Watch {
                collection,
                initial_list: query.sends_initial_events().then(|| shape_of(info, query)),
            },
            _ => return None,
        };
        Some(Plan { target })
    }

    /// Whether a request is a TokenRequest whose answer the cache would keep
    /// (its body must then be read first: the spec decides where it goes).
    pub fn wants_token(
        &self,
        info: &RequestInfo,
        component: &str,
        edge_cache_header: bool,
    ) -> bool {
        tokens::is_token_request(info) && self.is_cached_component(component, edge_cache_header)
    }

    /// The plan for a TokenRequest with this body (see `wants_token`).
    pub fn plan_token(
        &self,
        info: &RequestInfo,
        component: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Option<Plan> {
        let (owner, spec) = tokens::identify(info, component, content_type, body)?;
        Some(Plan {
            target: PlanTarget::Token { owner, spec },
        })
    }

    /// Starts copying a response aside, if its status and encoding allow.
    pub fn tee(
        self: &Arc<Self>,
        plan: Plan,
        status: u16,
        content_type: Option<&str>,
    ) -> Option<Tee> {
        if !(200..300).contains(&status) {
            return None;
        }
        let content_type = content_type.unwrap_or_default();
        let (encoding, sink) = match plan.target {
            PlanTarget::Discovery(path) => {
                let file = DocumentType::from_content_type(content_type)?.file(&path)?;
                (Encoding::Json, Sink::whole(Whole::Discovery(file)))
            }
            target => {
                let encoding = Encoding::from_content_type(content_type)?;
                let sink = match target {
                    PlanTarget::Watch {
                        collection,
                        initial_list,
                    } => Sink::Watch {
                        decoder: encoding.watch_decoder(),
                        collection,
                        initial: initial_list.map(|shape| InitialEvents {
                            shape,
                            members: Members::default(),
                            intact: true,
                        }),
                    },
                    PlanTarget::Object(collection) => Sink::whole(Whole::Object(collection)),
                    PlanTarget::List {
                        collection,
                        shape,
                        request_continue,
                    } => Sink::whole(Whole::List {
                        collection,
                        shape,
                        request_continue,
                    }),
                    PlanTarget::Token { owner, spec } => Sink::whole(Whole::Token { owner, spec }),
                    PlanTarget::Discovery(_) => return None,
                };
                (encoding, sink)
            }
        };
        Some(Tee {
            cache: self.clone(),
            encoding,
            sink,
            abandoned: false,
        })
    }

    /// Hands work to the writer; false when it was dropped (and counted).
    fn enqueue(&self, op: Op) -> bool {
        let len = op.len();
        if self.queued_bytes.fetch_add(len, Ordering::SeqCst) + len > MAX_QUEUED_BYTES {
            self.queued_bytes.fetch_sub(len, Ordering::SeqCst);
            self.dropped("the cache writer is behind");
            return false;
        }
        match self.queue.try_send(op) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.queued_bytes.fetch_sub(len, Ordering::SeqCst);
                self.dropped("the cache writer is behind");
                false
            }
        }
    }

    fn dropped(&self, why: &str) {
        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        let mut last = self.last_drop_log.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
            log::warn!("not caching a response: {why}");
            *last = Some(Instant::now());
        }
    }

    fn write_loop(&self, ops: Receiver<Op>) {
        for op in ops {
            let len = op.len();
            if let Err(e) = self.apply(op) {
                self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                log::warn!("cache write failed: {e}");
            }
            self.queued_bytes.fetch_sub(len, Ordering::SeqCst);
        }
    }

    fn apply(&self, op: Op) -> io::Result<()> {
        match op {
            Op::Upsert {
                collection,
                encoding,
                object,
                member_of,
            } => {
                let path = self.upsert(&collection, encoding, &object)?;
                if let (Some(members), Some(path)) = (member_of, path) {
                    members
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(path);
                }
                Ok(())
            }
            Op::Delete {
                collection,
                encoding,
                object,
            } => self.delete(&collection, encoding, &object),
            Op::List {
                collection,
                encoding,
                shape,
                request_continue,
                body,
            } => self.store_list(&collection, encoding, &shape, &request_continue, &body),
            Op::StreamedListEnd {
                collection,
                encoding,
                shape,
                members,
                list_kind,
                api_version,
            } => {
                let complete =
                    std::mem::take(&mut *members.lock().unwrap_or_else(|e| e.into_inner()));
                self.stats.streamed_lists.fetch_add(1, Ordering::Relaxed);
                self.complete_list(
                    &collection,
                    encoding,
                    &shape,
                    &complete,
                    list_kind,
                    api_version,
                )
            }
            Op::Discovery { path, body } => {
                if serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_err() {
                    return Ok(());
                }
                self.store.write(&path, &body)
            }
            Op::Token {
                owner,
                spec,
                encoding,
                body,
            } => self.store_token(&owner, &spec, encoding, &body),
        }
    }

    /// Keeps an issued token for as long as it is valid.
    fn store_token(
        &self,
        owner: &TokenOwner,
        spec: &TokenSpec,
        encoding: Encoding,
        body: &[u8],
    ) -> io::Result<()> {
        let Ok(expires) = token::issued_expiry(encoding, body) else {
            self.stats.decode_errors.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        };
        let record = TokenRecord::new(spec, expires, encoding, body);
        let (Some(path), Some(dir)) = (owner.record_path(spec), owner.dir()) else {
            return Ok(());
        };
        if !record.is_expired(now_unix()) {
            self.store.write(&path, &record.encode())?;
            self.stats.tokens_stored.fetch_add(1, Ordering::Relaxed);
        }
        self.remove_expired_tokens(&dir);
        Ok(())
    }

    /// Removes every expired token record under `dir` (relative to the root).
    fn remove_expired_tokens(&self, dir: &Path) {
        let now = now_unix();
        for path in self.store.files_under(dir) {
            let expired = match self.store.read(&path) {
                Ok(Some(bytes)) => TokenRecord::parse(&bytes).is_none_or(|r| r.is_expired(now)),
                _ => false,
            };
            if expired && self.store.remove(&path).unwrap_or(false) {
                self.stats.tokens_expired.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// A token the cloud issued earlier for the same owner and spec that is
    /// still valid, in an encoding the client accepts. An expired one is
    /// removed, never served.
    pub fn read_token(
        &self,
        owner: &TokenOwner,
        spec: &TokenSpec,
        accepted: &[Encoding],
    ) -> Option<(Encoding, Vec<u8>)> {
        let path = owner.record_path(spec)?;
        let record = TokenRecord::parse(&self.store.read(&path).ok()??)?;
        let now = now_unix();
        if record.is_expired(now) {
            if self.store.remove(&path).unwrap_or(false) {
                self.stats.tokens_expired.fetch_add(1, Ordering::Relaxed);
            }
            return None;
        }
        record.answer_for(spec, now, accepted)
    }

    /// Stores an object unless the cache already holds a newer version.
    /// Returns its file, or `None` when it could not be stored.
    fn upsert(
        &self,
        collection: &Collection,
        encoding: Encoding,
        object: &[u8],
    ) -> io::Result<Option<PathBuf>> {
        let Some(target) = self.target_of(collection, encoding, object)? else {
            return Ok(None);
        };
        if target.stored.as_deref() != Some(object) && !target.stored_is_newer {
            self.store.write(&target.path, object)?;
            self.stats.objects_written.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Some(target.path))
    }

    /// Removes an object unless the cache holds a newer version of it.
    fn delete(&self, collection: &Collection, encoding: Encoding, object: &[u8]) -> io::Result<()> {
        if let Some(target) = self.target_of(collection, encoding, object)?
            && !target.stored_is_newer
            && self.store.remove(&target.path)?
        {
            self.stats.objects_removed.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Where an incoming object goes and what is stored there now; `None`
    /// when it cannot be read or its name is unsafe as a path.
    fn target_of(
        &self,
        collection: &Collection,
        encoding: Encoding,
        object: &[u8],
    ) -> io::Result<Option<ObjectFile>> {
        let Ok(meta) = encoding.decode_meta(object) else {
            self.stats.decode_errors.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        };
        let Some(path) = collection.object_path(&meta.namespace, &meta.name, encoding) else {
            log::debug!("not caching {}/{}: unsafe name", meta.namespace, meta.name);
            return Ok(None);
        };
        let stored = self.store.read(&path)?;
        let stored_rv = stored
            .as_deref()
            .and_then(|bytes| encoding.decode_meta(bytes).ok())
            .map_or(0, |m| m.resource_version);
        // resourceVersions are compared as integers; 0 means unknown.
        let stored_is_newer = meta.resource_version != 0 && stored_rv > meta.resource_version;
        if stored_is_newer {
            self.stats.stale_skipped.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Some(ObjectFile {
            path,
            stored,
            stored_is_newer,
        }))
    }

    fn store_list(
        &self,
        collection: &Collection,
        encoding: Encoding,
        shape: &ListShape,
        request_continue: &str,
        body: &[u8],
    ) -> io::Result<()> {
        let Ok(parts) = encoding.split_list(body) else {
            self.stats.decode_errors.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        };
        let mut files = Vec::with_capacity(parts.items.len());
        for item in &parts.items {
            if let Some(path) = self.upsert(collection, encoding, item)? {
                files.push(path);
            }
        }
        let Some(complete) = self.paged.page(
            collection,
            shape,
            request_continue,
            &parts.continue_token,
            files,
        ) else {
            return Ok(());
        };
        self.complete_list(
            collection,
            encoding,
            shape,
            &complete,
            parts.kind,
            parts.api_version,
        )
    }

    /// A whole list of `shape` is here (a LIST's last page, or a streaming
    /// list's initial events), its objects stored as `complete`: what this
    /// shape returned before and no longer returns is gone (or no longer
    /// matches) upstream, and the shape is recorded as listed.
    fn complete_list(
        &self,
        collection: &Collection,
        encoding: Encoding,
        shape: &ListShape,
        complete: &BTreeSet<PathBuf>,
        list_kind: String,
        api_version: String,
    ) -> io::Result<()> {
        let (labels, fields) = match (
            LabelSelector::parse(&shape.label_selector),
            FieldSelector::parse(&shape.field_selector),
        ) {
            (Ok(labels), Ok(fields)) => (labels, fields),
            _ => return Ok(()),
        };
        // A field this encoding cannot read would make every object look like
        // a mismatch: then nothing is removed.
        let readable = fields.fields().all(|f| encoding.can_read_field(f));
        let namespace = (!shape.namespace.is_empty()).then_some(shape.namespace.as_str());
        let candidates = if readable {
            self.store
                .list_objects(&collection.dir(), namespace, encoding.extension())
        } else {
            Vec::new()
        };
        for path in candidates {
            if complete.contains(&path) {
                continue;
            }
            let Some(bytes) = self.store.read(&path)? else {
                continue;
            };
            if matches_shape(encoding, &bytes, &labels, &fields) && self.store.remove(&path)? {
                self.stats.objects_removed.fetch_add(1, Ordering::Relaxed);
            }
        }
        let index_path = collection.lists_path();
        let mut index = self
            .store
            .read(&index_path)?
            .and_then(|bytes| ShapeIndex::parse(&bytes))
            .unwrap_or(ShapeIndex {
                version: ShapeIndex::VERSION,
                ..Default::default()
            });
        let mut list_type = ListType {
            kind: list_kind,
            api_version,
            encodings: [encoding.extension().to_string()].into(),
        };
        let known = index.shapes.get(&shape.key());
        if let Some(known) =
            known.filter(|k| k.kind == list_type.kind && k.api_version == list_type.api_version)
        {
            list_type.encodings.extend(known.encodings.iter().cloned());
        }
        if known != Some(&list_type) {
            index.shapes.insert(shape.key(), list_type);
            self.store.write(&index_path, &index.encode())?;
        }
        Ok(())
    }

    /// A cached object, if present and intact.
    pub fn read_object(
        &self,
        collection: &Collection,
        namespace: &str,
        name: &str,
        encoding: Encoding,
    ) -> Option<Vec<u8>> {
        let path = collection.object_path(namespace, name, encoding)?;
        self.read_intact(&path, encoding)
    }

    fn read_intact(&self, path: &Path, encoding: Encoding) -> Option<Vec<u8>> {
        let bytes = self.store.read(path).ok()??;
        if encoding.decode_meta(&bytes).is_err() {
            self.store.quarantine(path, "does not parse");
            return None;
        }
        Some(bytes)
    }

    /// The list type recorded for a shape, if that shape was ever listed.
    pub fn listed_shape(&self, collection: &Collection, shape: &ListShape) -> Option<ListType> {
        let bytes = self.store.read(&collection.lists_path()).ok()??;
        ShapeIndex::parse(&bytes)?.shapes.get(&shape.key()).cloned()
    }

    /// Any list type recorded for a collection (for shapes never listed).
    pub fn any_list_type(&self, collection: &Collection) -> Option<ListType> {
        let bytes = self.store.read(&collection.lists_path()).ok()??;
        ShapeIndex::parse(&bytes)?.shapes.into_values().next()
    }

    /// Cached objects of a collection matching a namespace and selectors,
    /// with the highest resourceVersion among them.
    pub fn select(
        &self,
        collection: &Collection,
        namespace: &str,
        labels: &LabelSelector,
        fields: &FieldSelector,
        encoding: Encoding,
    ) -> (Vec<Vec<u8>>, u64) {
        let namespace = (!namespace.is_empty()).then_some(namespace);
        let mut items = Vec::new();
        let mut max_rv = 0;
        for path in self
            .store
            .list_objects(&collection.dir(), namespace, encoding.extension())
        {
            let Some(bytes) = self.read_intact(&path, encoding) else {
                continue;
            };
            if matches_shape(encoding, &bytes, labels, fields) {
                max_rv = max_rv.max(
                    encoding
                        .decode_meta(&bytes)
                        .map(|m| m.resource_version)
                        .unwrap_or(0),
                );
                items.push(bytes);
            }
        }
        (items, max_rv)
    }

    /// A cached discovery document of one type.
    pub fn read_discovery(&self, path: &str, document_type: DocumentType) -> Option<Vec<u8>> {
        self.store.read(&document_type.file(path)?).ok()?
    }
}

/// The list shape of a list request.
pub fn shape_of(info: &RequestInfo, query: &Query) -> ListShape {
    ListShape {
        namespace: info.namespace.clone(),
        label_selector: query
            .get("labelSelector")
            .unwrap_or_default()
            .trim()
            .to_string(),
        field_selector: query
            .get("fieldSelector")
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

/// Resources and subresources whose answers are objects worth keeping
/// (behaviour.md section 3).
fn is_cacheable_resource(info: &RequestInfo) -> bool {
    matches!(info.subresource.as_str(), "" | "status")
        && !matches!(
            info.resource.as_str(),
            "certificatesigningrequests"
                | "subjectaccessreviews"
                | "tokenreviews"
                | "selfsubjectaccessreviews"
                | "selfsubjectrulesreviews"
                | "localsubjectaccessreviews"
        )
}

fn matches_shape(
    encoding: Encoding,
    bytes: &[u8],
    labels: &LabelSelector,
    fields: &FieldSelector,
) -> bool {
    if !labels.is_empty() {
        match encoding.decode_meta(bytes) {
            Ok(meta) if labels.matches(&meta.labels) => {}
            _ => return false,
        }
    }
    if fields.is_empty() {
        return true;
    }
    encoding
        .to_value(bytes)
        .is_ok_and(|value| fields.matches(&value))
}

/// Start-up integrity check of one file.
fn is_intact(path: &Path, bytes: &[u8]) -> bool {
    match path.extension().and_then(|e| e.to_str()) {
        Some("json") => serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok(),
        Some("pb") => Encoding::Protobuf.decode_meta(bytes).is_ok(),
        _ => true,
    }
}

/// A response being copied aside for the cache as it is relayed.
pub struct Tee {
    cache: Arc<Cache>,
    encoding: Encoding,
    sink: Sink,
    abandoned: bool,
}

enum Sink {
    /// A whole body (object, list, document, token), stored once complete.
    Whole { buffer: Vec<u8>, target: Whole },
    /// A watch stream, stored event by event.
    Watch {
        decoder: Box<dyn WatchDecoder>,
        collection: Collection,
        /// Until its annotated bookmark: the streaming list being received.
        initial: Option<InitialEvents>,
    },
}

impl Sink {
    fn whole(target: Whole) -> Sink {
        Sink::Whole {
            buffer: Vec::new(),
            target,
        }
    }
}

/// A streaming list's initial events, as they are handed to the writer.
struct InitialEvents {
    shape: ListShape,
    members: Members,
    /// False once one of its objects could not be queued: the list is then
    /// not complete and its shape is not recorded.
    intact: bool,
}

impl Tee {
    /// Takes the next piece of the body. Never blocks on disk.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.abandoned {
            return;
        }
        match &mut self.sink {
            Sink::Whole { buffer, .. } => {
                if buffer.len() + bytes.len() > MAX_TEE_BYTES {
                    self.abandoned = true;
                    *buffer = Vec::new();
                    self.cache.dropped("response larger than the cache copies");
                    return;
                }
                buffer.extend_from_slice(bytes);
            }
            Sink::Watch {
                decoder,
                collection,
                initial,
            } => match decoder.push(bytes) {
                Ok(events) => {
                    for event in events {
                        let op = match event.event_type {
                            EventType::Added | EventType::Modified => Op::Upsert {
                                collection: collection.clone(),
                                encoding: self.encoding,
                                object: event.object,
                                member_of: initial.as_ref().map(|i| i.members.clone()),
                            },
                            EventType::Deleted => Op::Delete {
                                collection: collection.clone(),
                                encoding: self.encoding,
                                object: event.object,
                            },
                            EventType::Bookmark
                                if initial.is_some()
                                    && self.encoding.is_initial_events_end(&event.object) =>
                            {
                                let Some(ended) = initial.take().filter(|i| i.intact) else {
                                    continue;
                                };
                                let Ok(meta) = self.encoding.decode_meta(&event.object) else {
                                    continue;
                                };
                                Op::StreamedListEnd {
                                    collection: collection.clone(),
                                    encoding: self.encoding,
                                    shape: ended.shape,
                                    members: ended.members,
                                    list_kind: format!("{}List", meta.kind),
                                    api_version: meta.api_version,
                                }
                            }
                            EventType::Bookmark | EventType::Error => continue,
                        };
                        let is_member = matches!(
                            &op,
                            Op::Upsert {
                                member_of: Some(_),
                                ..
                            }
                        );
                        if !self.cache.enqueue(op)
                            && is_member
                            && let Some(initial) = initial.as_mut()
                        {
                            initial.intact = false;
                        }
                    }
                }
                Err(e) => {
                    self.abandoned = true;
                    self.cache
                        .stats
                        .decode_errors
                        .fetch_add(1, Ordering::Relaxed);
                    log::warn!("not caching the rest of a watch: {e}");
                }
            },
        }
    }

    /// The body ended; `complete` says whether it arrived whole.
    pub fn finish(self, complete: bool) {
        if self.abandoned || !complete {
            return;
        }
        let Sink::Whole { buffer, target } = self.sink else {
            return;
        };
        let op = match target {
            Whole::Object(collection) => Op::Upsert {
                collection,
                encoding: self.encoding,
                object: buffer,
                member_of: None,
            },
            Whole::List {
                collection,
                shape,
                request_continue,
            } => Op::List {
                collection,
                encoding: self.encoding,
                shape,
                request_continue,
                body: buffer,
            },
            Whole::Discovery(path) => Op::Discovery { path, body: buffer },
            Whole::Token { owner, spec } => Op::Token {
                owner,
                spec,
                encoding: self.encoding,
                body: buffer,
            },
        };
        self.cache.enqueue(op);
    }
}
