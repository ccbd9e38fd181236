//! The node's durable copy of what its components read, split by job: what a
//! request would cache (`plan`, pure), the copy taken while a response is
//! relayed (`tee`), the queue that holds it for the writer and keeps only
//! the newest copy of an object or list (`queue`), the writer thread that
//! keeps disk I/O off every client's path and applies resourceVersion order,
//! list reconciliation and watch events (`writer`), the reads offline
//! answers are made of (here), and the in-memory index of the directory
//! lists are selected from (`index`).
//! `agents` is who is cached, `key` where things live, `lists` the list
//! shapes seen, `discovery` and `tokens` the hub's own records; the durable
//! file operations are `crate::store`. Over time: `gc` decides what garbage
//! collection and the disk quota remove (pure), `upkeep` applies it on the
//! writer thread, `autonomy` reports what the cache holds for each
//! component and whether it can restart offline.

pub mod agents;
pub mod autonomy;
pub mod discovery;
mod gc;
mod index;
pub mod key;
pub mod lists;
mod plan;
mod queue;
mod tee;
pub mod tokens;
mod upkeep;
mod writer;

use crate::budget::Reservation;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::codec::Encoding;
use crate::codec::time::now_unix;
use crate::codec::token::TokenSpec;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::Store;
use agents::Agents;
use discovery::DocumentType;
use index::Index;
use key::Collection;
use lists::{ListShape, ListType, Listings, PagedLists, ShapeIndex};
use queue::WriteQueue;
use tokens::{TokenBook, TokenOwner, TokenRecord};
use writer::{MAX_QUEUED_BYTES, MAX_QUEUED_OPS};

pub use plan::{Plan, shape_of};
pub use tee::Tee;
pub use upkeep::CollectionSummary;

/// Garbage collection's rules as metric labels, in `CacheStats::collected`'s order.
pub const COLLECTION_RULES: [&str; 3] = [
    gc::Rule::ALL[0].name(),
    gc::Rule::ALL[1].name(),
    gc::Rule::ALL[2].name(),
];

/// Components whose last request is remembered (the rest are judged by
/// their newest file), and collections whose last write error is.
const MAX_REMEMBERED: usize = 4096;

/// How the cache is kept over months: the node it serves, its disk quota,
/// when a component nobody named is idle, how often garbage is collected.
#[derive(Debug, Clone)]
pub struct Upkeep {
    pub node_name: String,
    /// Bytes of object files the cache may hold; 0: no bound.
    pub quota_bytes: u64,
    /// A component neither named as an agent nor a kubelet, unseen this
    /// long, leaves the cache.
    pub component_idle: Duration,
    /// `None`: garbage is collected only when asked (`POST /v1/gc`).
    pub gc_period: Option<Duration>,
}

impl Default for Upkeep {
    fn default() -> Upkeep {
        Upkeep {
            node_name: String::new(),
            quota_bytes: 0,
            component_idle: Duration::from_secs(30 * 24 * 3600),
            gc_period: None,
        }
    }
}

/// The last failed write of a collection: when (Unix seconds) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteError {
    pub at: i64,
    pub message: String,
}

/// Counters for the metrics.
#[derive(Default)]
pub struct CacheStats {
    pub objects_written: AtomicU64,
    pub objects_removed: AtomicU64,
    pub stale_skipped: AtomicU64,
    pub write_errors: AtomicU64,
    pub dropped: AtomicU64,
    /// Copies that never reached the writer because a newer copy of the
    /// same object (or whole list of the same shape) took their place.
    pub coalesced: AtomicU64,
    pub decode_errors: AtomicU64,
    pub tokens_stored: AtomicU64,
    pub tokens_expired: AtomicU64,
    /// Streaming lists whose initial events were stored and reconciled as a
    /// complete list.
    pub streamed_lists: AtomicU64,
    /// Objects garbage collection removed, by `gc::Rule::ALL`'s order.
    pub collected: [AtomicU64; 3],
    pub collections: AtomicU64,
    /// Objects (and their bytes) removed to stay under the disk quota.
    pub quota_evicted: AtomicU64,
    pub quota_evicted_bytes: AtomicU64,
    /// Bytes over the quota its last pass could not free (a kubelet's own
    /// Node and pods are never removed).
    pub quota_overrun_bytes: AtomicU64,
}

pub struct Cache {
    pub store: Store,
    pub agents: Agents,
    paged: PagedLists,
    queue: WriteQueue,
    index: Index,
    pub stats: CacheStats,
    last_drop_log: Mutex<Option<Instant>>,
    pub upkeep: Upkeep,
    /// Every collection's list shapes, in memory.
    listings: Listings,
    /// The token records kept, in memory.
    tokens_kept: TokenBook,
    /// When each component's last cached request arrived (Unix seconds).
    seen: Mutex<BTreeMap<String, i64>>,
    /// Each collection's last failed write.
    write_errors: Mutex<BTreeMap<PathBuf, WriteError>>,
    /// The last garbage collection: when it ended, and what it removed.
    last_collection: Mutex<Option<(Instant, CollectionSummary)>>,
    /// Held while a collection asked for by `POST /v1/gc` runs.
    collect_on_demand: Mutex<()>,
    last_quota_log: Mutex<Option<Instant>>,
    /// The last autonomy report, reused for `AUTONOMY_REUSE`.
    last_report: Mutex<Option<(Instant, bool, autonomy::Report)>>,
}

/// One object of a list answer: shared with the index when it holds the
/// object's bytes, so a list is built without copying each object first.
pub type Item = std::sync::Arc<[u8]>;

impl Cache {
    /// Objects the index holds, the bytes of objects it keeps in memory,
    /// and an estimate of its entries' memory besides them.
    pub fn index_sizes(&self) -> (usize, usize, usize) {
        self.index.sizes()
    }

    /// Opens the cache root and starts the writer, the start-up scan and
    /// (with a period) garbage collection. The cache can be read at once;
    /// the scan cleans up in the background.
    pub fn start(root: &Path, agents: Agents, upkeep: Upkeep) -> io::Result<Arc<Cache>> {
        let store = Store::open(root)?;
        let gc_period = upkeep.gc_period;
        let cache = Arc::new(Cache {
            store,
            agents,
            paged: PagedLists::default(),
            queue: WriteQueue::new(MAX_QUEUED_OPS, MAX_QUEUED_BYTES),
            index: Index::default(),
            stats: CacheStats::default(),
            last_drop_log: Mutex::new(None),
            upkeep,
            listings: Listings::default(),
            tokens_kept: TokenBook::default(),
            seen: Mutex::new(BTreeMap::new()),
            write_errors: Mutex::new(BTreeMap::new()),
            last_collection: Mutex::new(None),
            collect_on_demand: Mutex::new(()),
            last_quota_log: Mutex::new(None),
            last_report: Mutex::new(None),
        });
        let writer = cache.clone();
        thread::Builder::new()
            .name("yh-cache-writer".into())
            .spawn(move || writer.write_loop())?;
        let scanner = cache.clone();
        thread::Builder::new().name("yh-cache-scan".into()).spawn(move || {
            let started = Instant::now();
            let report = scanner.store.scan(is_intact);
            scanner.remove_expired_tokens(Path::new(tokens::TOKENS_DIR));
            log::info!(
                "cache scan: {} files checked, {} damaged moved aside, {} temp files removed in {:?}",
                report.files,
                report.quarantined,
                report.temp_files_removed,
                started.elapsed()
            );
            let started = Instant::now();
            let indexed = scanner.build_index();
            log::info!(
                "cache index: {indexed} objects in {:?}",
                started.elapsed()
            );
            // A cache over its quota (a smaller one was set) shrinks now.
            scanner.enqueue(writer::Op::Upkeep {
                collect: false,
                done: None,
            });
        })?;
        if let Some(period) = gc_period {
            let collector = cache.clone();
            thread::Builder::new()
                .name("yh-cache-gc".into())
                .spawn(move || {
                    loop {
                        thread::sleep(period);
                        collector.enqueue(writer::Op::Upkeep {
                            collect: true,
                            done: None,
                        });
                    }
                })?;
        }
        Ok(cache)
    }

    /// A cached component made a request now: it is not idle.
    pub fn saw_component(&self, component: &str) {
        // Only a name that can be a component's directory: never one of
        // the cache's own (`_tokens`), which a collection would remove.
        if !key::is_safe_segment(component) {
            return;
        }
        let now = now_unix();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let name = key::stored_segment(component);
        if let Some(at) = seen.get_mut(name.as_ref()) {
            *at = now;
        } else if seen.len() < MAX_REMEMBERED {
            seen.insert(name.into_owned(), now);
        }
    }

    /// Remembers a collection's failed write (for the autonomy report).
    fn note_write_error(&self, collection_dir: &Path, message: String) {
        let mut errors = self.write_errors.lock().unwrap_or_else(|e| e.into_inner());
        if errors.len() < MAX_REMEMBERED || errors.contains_key(collection_dir) {
            errors.insert(
                collection_dir.to_path_buf(),
                WriteError {
                    at: now_unix(),
                    message,
                },
            );
        }
    }

    /// Whether a component's requests are cached (an agent, or `Edge-Cache: true`).
    pub fn is_cached_component(&self, component: &str, edge_cache_header: bool) -> bool {
        !component.is_empty() && (edge_cache_header || self.agents.is_agent(component))
    }

    /// A cached object, if present, intact and really the one asked for.
    pub fn read_object(
        &self,
        collection: &Collection,
        namespace: &str,
        name: &str,
        encoding: Encoding,
    ) -> Option<Vec<u8>> {
        let path = collection.object_path(namespace, name, encoding)?;
        if let Some(bytes) = self.index.get(&collection.dir(), encoding, &path) {
            return Some(bytes.to_vec());
        }
        self.read_intact(collection, &path, encoding)
    }

    /// An object file of a collection, if it parses and is the object its
    /// path says (name, namespace, kind); otherwise it is set aside, like a
    /// torn file, and never served: a file copied or restored to the wrong
    /// place would otherwise answer for another object.
    fn read_intact(
        &self,
        collection: &Collection,
        path: &Path,
        encoding: Encoding,
    ) -> Option<Vec<u8>> {
        let Ok(Some(bytes)) = self.store.read(path) else {
            // Gone, or refused (a link set aside by the store): not an
            // object the index may list any more.
            self.index.remove(&collection.dir(), encoding, path);
            return None;
        };
        let set_aside = |why: &str| {
            self.store.quarantine(path, why);
            self.index.remove(&collection.dir(), encoding, path);
        };
        let Ok(meta) = encoding.decode_meta(&bytes) else {
            set_aside("does not parse");
            return None;
        };
        if collection
            .object_path(&meta.namespace, &meta.name, encoding)
            .as_deref()
            != Some(path)
        {
            set_aside(&format!(
                "holds {:?} in namespace {:?}, not the object of its path",
                meta.name, meta.namespace
            ));
            return None;
        }
        if key::kind_is_foreign(&collection.resource_dir, &meta.kind)
            && !self.listed_item_kind(collection, &meta.kind)
        {
            set_aside(&format!("holds a {}, not one of its resource", meta.kind));
            return None;
        }
        Some(bytes)
    }

    /// Whether a list of the collection was answered with items of `kind`
    /// (`{kind}List`): how kinds with an irregular plural are known.
    fn listed_item_kind(&self, collection: &Collection, kind: &str) -> bool {
        let list_kind = format!("{kind}List");
        self.store
            .read(&collection.lists_path())
            .ok()
            .flatten()
            .and_then(|bytes| ShapeIndex::parse(&bytes))
            .is_some_and(|index| index.shapes.values().any(|t| t.kind == list_kind))
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
    /// with the highest resourceVersion among them: from the index once it
    /// is complete, otherwise (and when it was given up) from the directory.
    pub fn select(
        &self,
        collection: &Collection,
        namespace: &str,
        labels: &LabelSelector,
        fields: &FieldSelector,
        encoding: Encoding,
        held: &mut Reservation,
    ) -> Option<(Vec<Item>, u64)> {
        let namespace = (!namespace.is_empty()).then_some(namespace);
        let dir = collection.dir();
        match self
            .index
            .lookup_all(&dir, encoding, namespace, labels, fields)
        {
            Some(found) => self.select_indexed(collection, found, labels, fields, encoding, held),
            None => {
                self.select_from_directory(collection, namespace, labels, fields, encoding, held)
            }
        }
    }

    /// What the index selected: bytes from memory where it holds them (and
    /// the selector on them decided by the index when it could), the rest
    /// read from their files and matched as a directory read would.
    fn select_indexed(
        &self,
        collection: &Collection,
        found: Vec<index::Candidate>,
        labels: &LabelSelector,
        fields: &FieldSelector,
        encoding: Encoding,
        held: &mut Reservation,
    ) -> Option<(Vec<Item>, u64)> {
        let matching = found.into_iter().filter_map(|found| match found.bytes {
            Some(bytes) => (found.decided || matches_shape(encoding, &bytes, labels, fields))
                .then_some((bytes, found.resource_version)),
            None => self.read_matching(collection, &found.path, labels, fields, encoding),
        });
        gather(matching, held)
    }

    /// The same, reading and parsing every file of the collection.
    fn select_from_directory(
        &self,
        collection: &Collection,
        namespace: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
        encoding: Encoding,
        held: &mut Reservation,
    ) -> Option<(Vec<Item>, u64)> {
        let paths = self
            .store
            .list_objects(&collection.dir(), namespace, encoding.extension());
        let matching = paths
            .iter()
            .filter_map(|path| self.read_matching(collection, path, labels, fields, encoding));
        gather(matching, held)
    }

    /// An object file, if it is intact and matches the selectors, with its
    /// resourceVersion.
    fn read_matching(
        &self,
        collection: &Collection,
        path: &Path,
        labels: &LabelSelector,
        fields: &FieldSelector,
        encoding: Encoding,
    ) -> Option<(Item, u64)> {
        let bytes = self.read_intact(collection, path, encoding)?;
        if !matches_shape(encoding, &bytes, labels, fields) {
            return None;
        }
        let resource_version = encoding
            .decode_meta(&bytes)
            .map(|m| m.resource_version)
            .unwrap_or(0);
        Some((Item::from(bytes), resource_version))
    }

    /// Indexes every object file of the cache (the start-up scan's second
    /// half); returns how many. Files are read as a list would read them
    /// (one that is not the object of its path is set aside).
    fn build_index(&self) -> usize {
        /// Files read before they are handed to the index, to bound what
        /// the build holds.
        const BATCH: usize = 256;
        self.index.begin_build();
        let mut indexed = 0;
        for component in self.store.subdirs(Path::new("")) {
            for resource_dir in self.store.subdirs(Path::new(&component)) {
                let collection = Collection {
                    component: component.clone(),
                    resource_dir,
                };
                let dir = collection.dir();
                if let Some(shapes) = self
                    .store
                    .read(&collection.lists_path())
                    .ok()
                    .flatten()
                    .and_then(|bytes| ShapeIndex::parse(&bytes))
                {
                    self.listings.load(&dir, &shapes);
                }
                for encoding in [Encoding::Json, Encoding::Protobuf] {
                    let paths = self.store.list_objects(&dir, None, encoding.extension());
                    for batch in paths.chunks(BATCH) {
                        let read: Vec<(PathBuf, Vec<u8>, i64)> = batch
                            .iter()
                            .filter_map(|path| {
                                let bytes = self.read_intact(&collection, path, encoding)?;
                                // A clock set back since: not newer than now.
                                let written_at =
                                    self.store.modified(path).map_or(0, |at| at.min(now_unix()));
                                Some((path.clone(), bytes, written_at))
                            })
                            .collect();
                        indexed += read.len();
                        self.index.add_built(&dir, encoding, read);
                    }
                }
            }
        }
        self.index.finish_build();
        indexed
    }

    /// For tests that put files in place themselves (as a restart would
    /// find them): waits for the start-up build, then indexes the cache again.
    #[cfg(test)]
    pub fn reindex(&self) {
        assert!(self.index.wait_ready(std::time::Duration::from_secs(10)));
        self.build_index();
    }

    /// Tells the index the writer wrote an object file. An object a list
    /// would set aside (a kind certainly of another resource) is left out,
    /// as a list would leave it.
    fn index_written(
        &self,
        collection: &Collection,
        encoding: Encoding,
        path: &Path,
        bytes: &[u8],
    ) {
        let foreign = encoding.decode_meta(bytes).is_ok_and(|meta| {
            key::kind_is_foreign(&collection.resource_dir, &meta.kind)
                && !self.listed_item_kind(collection, &meta.kind)
        });
        if foreign {
            self.index.remove(&collection.dir(), encoding, path);
        } else {
            self.index.put(&collection.dir(), encoding, path, bytes);
        }
    }

    /// Tells the index the writer removed an object file.
    /// Whether an object file is in the cache: the index says so, or else
    /// the disk.
    fn holds_file(&self, collection_dir: &Path, encoding: Encoding, path: &Path) -> bool {
        self.index.holds(collection_dir, encoding, path) == Some(true)
            || self.store.modified(path).is_some()
    }

    fn index_removed(&self, collection: &Collection, encoding: Encoding, path: &Path) {
        self.index.remove(&collection.dir(), encoding, path);
    }

    /// A cached discovery document of one type.
    pub fn read_discovery(&self, path: &str, document_type: DocumentType) -> Option<Vec<u8>> {
        self.store.read(&document_type.file(path)?).ok()?
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
            self.tokens_kept.gone(&path);
            return None;
        }
        record.answer_for(spec, now, accepted)
    }
}

/// The items of a list and its highest resourceVersion, each item held
/// against the memory budget as it is taken (`None` once it cannot be).
fn gather(
    matching: impl Iterator<Item = (Item, u64)>,
    held: &mut Reservation,
) -> Option<(Vec<Item>, u64)> {
    let mut items = Vec::new();
    let mut max_rv = 0;
    let mut total = 0usize;
    for (item, resource_version) in matching {
        total = total.saturating_add(item.len());
        if !held.grow_or_oversize(total) {
            return None;
        }
        max_rv = max_rv.max(resource_version);
        items.push(item);
    }
    Some((items, max_rv))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cache() -> (tempfile::TempDir, Arc<Cache>) {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::start(dir.path(), Agents::new(""), Upkeep::default()).unwrap();
        (dir, cache)
    }

    fn collection(resource_dir: &str) -> Collection {
        Collection {
            component: "kubelet".into(),
            resource_dir: resource_dir.into(),
        }
    }

    fn object(kind: &str, namespace: &str, name: &str) -> Vec<u8> {
        format!(
            r#"{{"kind":"{kind}","apiVersion":"v1","metadata":{{"name":"{name}","namespace":"{namespace}","resourceVersion":"1"}}}}"#
        )
        .into_bytes()
    }

    #[test]
    fn a_file_holding_another_object_than_its_path_says_is_set_aside_never_served() {
        let (dir, cache) = cache();
        #[rustfmt::skip]
        let rows: &[(&str, &str, &str, &str, &str, bool)] = &[
            // resource dir, file, kind, namespace, name, served
            ("pods", "pods/a/p1.json", "Pod", "a", "p1", true),
            ("pods", "pods/a/p2.json", "", "a", "p2", true),
            ("pods", "pods/a/p3.json", "Pod", "a", "other", false),
            ("pods", "pods/a/p4.json", "Pod", "b", "p4", false),
            ("pods", "pods/a/p5.json", "ConfigMap", "a", "p5", false),
            ("pods", "pods/a/p6.json", "Status", "a", "p6", false),
            ("nodes", "nodes/n1.json", "Node", "", "n1", true),
            ("nodes", "nodes/n2.json", "Node", "a", "n2", false),
            ("ingresses.v1.networking.k8s.io", "ingresses.v1.networking.k8s.io/a/i1.json", "Ingress", "a", "i1", true),
        ];
        for &(_, file, kind, namespace, name, _) in rows {
            let bytes = object(kind, namespace, name);
            cache
                .store
                .write(&Path::new("kubelet").join(file), &bytes)
                .unwrap();
        }
        for &(resource_dir, file, _, _, _, served) in rows {
            let stem = Path::new(file).file_stem().unwrap().to_str().unwrap();
            let namespace = if resource_dir == "nodes" { "" } else { "a" };
            let got = cache.read_object(&collection(resource_dir), namespace, stem, Encoding::Json);
            assert_eq!(got.is_some(), served, "{file}");
            assert_eq!(
                dir.path().join("kubelet").join(file).exists(),
                served,
                "{file}"
            );
        }
        let set_aside = rows.iter().filter(|r| !r.5).count() as u64;
        assert_eq!(
            cache.store.stats.quarantined.load(Ordering::Relaxed),
            set_aside
        );
        // A list skips (and sets aside) such a file too.
        cache
            .store
            .write(
                Path::new("kubelet/pods/a/p7.json"),
                &object("Pod", "a", "p1"),
            )
            .unwrap();
        cache.reindex();
        let labels = LabelSelector::parse("").unwrap();
        let fields = FieldSelector::parse("").unwrap();
        let mut held = crate::budget::MemoryBudget::new(1 << 30).empty();
        let (items, _) = cache
            .select(
                &collection("pods"),
                "a",
                &labels,
                &fields,
                Encoding::Json,
                &mut held,
            )
            .unwrap();
        assert_eq!(items.len(), 2, "p1 and p2");
        assert!(!dir.path().join("kubelet/pods/a/p7.json").exists());
    }

    fn pod(namespace: &str, name: &str, rv: u64, node: &str, app: &str, phase: &str) -> Vec<u8> {
        format!(
            r#"{{"kind":"Pod","apiVersion":"v1","metadata":{{"name":"{name}","namespace":"{namespace}","resourceVersion":"{rv}","labels":{{"app":"{app}"}}}},"spec":{{"nodeName":"{node}"}},"status":{{"phase":"{phase}"}}}}"#
        )
        .into_bytes()
    }

    fn pod_list(rv: u64, items: &[Vec<u8>]) -> Vec<u8> {
        let items: Vec<String> = items
            .iter()
            .map(|i| String::from_utf8_lossy(i).into_owned())
            .collect();
        format!(
            r#"{{"kind":"PodList","apiVersion":"v1","metadata":{{"resourceVersion":"{rv}"}},"items":[{}]}}"#,
            items.join(",")
        )
        .into_bytes()
    }

    /// Every (namespace, labels, fields) a table of lists asks, answered
    /// through `select` (the index, once complete) and by a directory read.
    fn both_ways(cache: &Cache) -> Vec<(Vec<Item>, u64)> {
        #[rustfmt::skip]
        let shapes: &[(&str, &str, &str)] = &[
            ("", "", ""),
            ("a", "", ""),
            ("b", "", ""),
            ("", "app=web", ""),
            ("a", "app!=web", ""),
            ("", "", "spec.nodeName=edge-1"),
            ("", "app=web", "spec.nodeName=edge-1,metadata.namespace=a"),
            ("", "", "metadata.name=p3"),
            ("", "", "status.phase=Running"),
            ("a", "app", "status.phase!=Running,spec.nodeName!=edge-2"),
        ];
        let pods = collection("pods");
        let mut answers = Vec::new();
        for &(namespace, labels, fields) in shapes {
            let labels = LabelSelector::parse(labels).unwrap();
            let fields = FieldSelector::parse(fields).unwrap();
            let budgets = [0, 1].map(|_| crate::budget::MemoryBudget::new(1 << 30));
            let (mut held, mut direct) = (budgets[0].empty(), budgets[1].empty());
            let indexed = cache
                .select(
                    &pods,
                    namespace,
                    &labels,
                    &fields,
                    Encoding::Json,
                    &mut held,
                )
                .unwrap();
            let namespace = (!namespace.is_empty()).then_some(namespace);
            let read = cache
                .select_from_directory(
                    &pods,
                    namespace,
                    &labels,
                    &fields,
                    Encoding::Json,
                    &mut direct,
                )
                .unwrap();
            assert_eq!(indexed, read, "{namespace:?} {labels:?} {fields:?}");
            assert_eq!(
                budgets[0].used(),
                budgets[1].used(),
                "the same budget is held"
            );
            answers.push(indexed);
        }
        answers
    }

    #[test]
    fn lists_answered_from_the_index_are_byte_for_byte_a_directory_read() {
        let dir = tempfile::tempdir().unwrap();
        let upsert = |object: Vec<u8>| writer::Op::Upsert {
            collection: collection("pods"),
            encoding: Encoding::Json,
            object,
            member_of: None,
        };
        // Files of an earlier run, found by the build; then the writer's work.
        {
            let cache = Cache::start(dir.path(), Agents::new(""), Upkeep::default()).unwrap();
            assert!(cache.index.wait_ready(Duration::from_secs(10)));
            for (ns, name, node, app, phase) in [
                ("a", "p1", "edge-1", "web", "Running"),
                ("a", "p2", "edge-2", "db", "Pending"),
                ("b", "p3", "edge-1", "web", "Running"),
                ("b", "p4", "edge-1", "db", "Failed"),
            ] {
                cache
                    .apply(upsert(pod(ns, name, 5, node, app, phase)))
                    .unwrap();
            }
        }
        let cache = Cache::start(dir.path(), Agents::new(""), Upkeep::default()).unwrap();
        assert!(cache.index.wait_ready(Duration::from_secs(10)));
        assert_eq!(
            cache.index.sizes().0,
            4,
            "the build found the earlier files"
        );
        both_ways(&cache);
        let ops = [
            upsert(pod("a", "p1", 9, "edge-2", "web", "Running")),
            upsert(pod("a", "p1", 7, "edge-1", "db", "Failed")),
            upsert(pod("a", "p5", 14, "edge-1", "web", "Pending")),
            writer::Op::Delete {
                collection: collection("pods"),
                encoding: Encoding::Json,
                object: pod("b", "p4", 10, "edge-1", "db", "Failed"),
            },
            // A whole list of namespace b: p3 changes, p4 stays gone, p6 arrives.
            writer::Op::List {
                collection: collection("pods"),
                encoding: Encoding::Json,
                shape: ListShape {
                    namespace: "b".into(),
                    label_selector: String::new(),
                    field_selector: String::new(),
                },
                request_continue: String::new(),
                body: pod_list(
                    12,
                    &[
                        pod("b", "p3", 11, "edge-2", "web", "Running"),
                        pod("b", "p6", 12, "edge-1", "db", "Running"),
                    ],
                ),
            },
            // Namespace a's list without p2: reconciliation removes it.
            writer::Op::List {
                collection: collection("pods"),
                encoding: Encoding::Json,
                shape: ListShape {
                    namespace: "a".into(),
                    label_selector: String::new(),
                    field_selector: String::new(),
                },
                request_continue: String::new(),
                body: pod_list(13, &[pod("a", "p1", 9, "edge-2", "web", "Running")]),
            },
        ];
        for op in ops {
            cache.apply(op).unwrap();
            both_ways(&cache);
        }
        assert_eq!(
            cache.index.sizes().0,
            4,
            "p1, p3, p5 (newer than a's list), p6"
        );
        // Objects whose bytes are not kept are read from their files.
        cache.index.set_bytes_cap(0);
        cache
            .apply(upsert(pod("a", "p7", 15, "edge-1", "web", "Running")))
            .unwrap();
        let before = both_ways(&cache);
        drop(cache);
        let restarted = Cache::start(dir.path(), Agents::new(""), Upkeep::default()).unwrap();
        assert!(restarted.index.wait_ready(Duration::from_secs(10)));
        assert_eq!(both_ways(&restarted), before, "the same after a restart");
    }

    #[test]
    fn a_kind_with_an_irregular_plural_is_served_once_listed_as_such() {
        let (_dir, cache) = cache();
        let people = collection("people.v1.example.com");
        let bytes = object("Person", "a", "p1");
        cache
            .store
            .write(Path::new("kubelet/people.v1.example.com/a/p1.json"), &bytes)
            .unwrap();
        let mut index = ShapeIndex {
            version: ShapeIndex::VERSION,
            ..Default::default()
        };
        index.shapes.insert(
            String::from("[\"a\",\"\",\"\"]"),
            ListType {
                kind: "PersonList".into(),
                api_version: "example.com/v1".into(),
                ..Default::default()
            },
        );
        cache
            .store
            .write(&people.lists_path(), &index.encode())
            .unwrap();
        assert!(
            cache
                .read_object(&people, "a", "p1", Encoding::Json)
                .is_some()
        );
    }
}
