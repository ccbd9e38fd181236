//! The writer thread: applies cache work in order, off every client's path.
//! An object is never replaced by an older resourceVersion; a complete list
//! (a LIST's last page, or a streaming list's initial events) removes what its
//! shape no longer returns and records the shape; DELETED removes; issued
//! tokens are kept until they expire. One object that cannot be stored never
//! stops the rest of its list, nor that list's reconciliation.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::codec::Encoding;
use crate::codec::time::now_unix;
use crate::codec::token::{self, TokenSpec};

use super::key::Collection;
use super::lists::{Gathered, ListShape, ListType, ShapeIndex};
use super::tokens::{TokenOwner, TokenRecord};
use super::{Cache, CollectionSummary, matches_shape};

/// Bytes waiting for the writer (and being written); past it new work is
/// dropped (and counted) unless it replaces a waiting copy of itself. Also
/// the hub's worst extra memory under a flood of cacheable reads.
pub(super) const MAX_QUEUED_BYTES: usize = 32 * 1024 * 1024;
pub(super) const MAX_QUEUED_OPS: usize = 4096;

/// What a complete list says about itself.
pub(super) struct ListHead {
    pub kind: String,
    pub api_version: String,
    /// 0 when unknown.
    pub resource_version: u64,
}

/// The files of one streaming list's initial events, filled in by the writer
/// as it stores them (so the list is complete once the writer reaches its end).
pub(super) type Members = Arc<Mutex<Gathered>>;

/// An object's file and what it holds now.
struct ObjectFile {
    path: PathBuf,
    stored: Option<Vec<u8>>,
    stored_is_newer: bool,
}

/// What became of one object the writer was asked to store.
enum Upserted {
    /// Its file holds it (or a newer version of it).
    Kept(PathBuf),
    /// It has no file: it cannot be read, or its name cannot be a path.
    Unstorable,
    /// Its file could not be written and holds what it held before.
    Failed(PathBuf, io::Error),
}

impl Upserted {
    /// Adds the object to the files of a list.
    fn gather(&self, gathered: &mut Gathered) {
        match self {
            Upserted::Kept(path) => {
                gathered.files.insert(path.clone());
            }
            Upserted::Failed(path, _) => {
                gathered.files.insert(path.clone());
                gathered.failed = true;
            }
            Upserted::Unstorable => {}
        }
    }
}

/// Work for the writer thread.
pub(super) enum Op {
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
        list: ListHead,
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
    /// Keep the cache under its quota and, with `collect`, collect garbage
    /// (the summary goes to `done`; `None` while the index is not built).
    Upkeep {
        collect: bool,
        done: Option<std::sync::mpsc::Sender<Option<CollectionSummary>>>,
    },
}

impl Op {
    pub(super) fn len(&self) -> usize {
        match self {
            Op::Upsert { object, .. } | Op::Delete { object, .. } => object.len(),
            Op::List { body, .. } | Op::Discovery { body, .. } | Op::Token { body, .. } => {
                body.len()
            }
            Op::StreamedListEnd { .. } | Op::Upkeep { .. } => 0,
        }
    }

    /// The collection the op writes to, if one.
    fn collection(&self) -> Option<&Collection> {
        match self {
            Op::Upsert { collection, .. }
            | Op::Delete { collection, .. }
            | Op::List { collection, .. }
            | Op::StreamedListEnd { collection, .. } => Some(collection),
            Op::Discovery { .. } | Op::Token { .. } | Op::Upkeep { .. } => None,
        }
    }
}

impl Cache {
    /// Hands work to the writer; false when it was dropped (and counted).
    /// A copy that replaced a waiting one, or that a newer waiting one made
    /// unnecessary, counts as coalesced: what it says reaches the disk.
    pub(super) fn enqueue(&self, op: Op) -> bool {
        let queued = self.queue.push(op);
        if queued.coalesced() {
            self.stats.coalesced.fetch_add(1, Ordering::Relaxed);
        }
        if !queued.is_kept() {
            self.dropped("the cache writer is behind");
        }
        queued.is_kept()
    }

    pub(super) fn dropped(&self, why: &str) {
        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        let mut last = self.last_drop_log.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
            log::warn!("not caching a response: {why}");
            *last = Some(Instant::now());
        }
    }

    pub(super) fn write_loop(&self) {
        loop {
            let op = self.queue.pop();
            let collection_dir = op.collection().map(Collection::dir);
            if let Err(e) = self.apply(op) {
                self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                log::warn!("cache write failed: {e}");
                if let Some(dir) = collection_dir {
                    self.note_write_error(&dir, e.to_string());
                }
            }
            self.enforce_quota();
        }
    }

    pub(super) fn apply(&self, op: Op) -> io::Result<()> {
        match op {
            Op::Upsert {
                collection,
                encoding,
                object,
                member_of,
            } => {
                let upserted = self.upsert(&collection, encoding, &object);
                if let Some(members) = member_of {
                    upserted.gather(&mut members.lock().unwrap_or_else(|e| e.into_inner()));
                }
                match upserted {
                    Upserted::Failed(_, e) => Err(e),
                    Upserted::Kept(_) | Upserted::Unstorable => Ok(()),
                }
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
                list,
            } => {
                let complete =
                    std::mem::take(&mut *members.lock().unwrap_or_else(|e| e.into_inner()));
                self.stats.streamed_lists.fetch_add(1, Ordering::Relaxed);
                self.complete_list(&collection, encoding, &shape, &complete, list)
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
            Op::Upkeep { collect, done } => {
                self.enforce_quota();
                if collect {
                    let summary = self.collect_garbage();
                    if let Some(done) = done {
                        let _ = done.send(summary);
                    }
                }
                Ok(())
            }
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
            self.tokens_kept.kept(&path, expires);
            self.stats.tokens_stored.fetch_add(1, Ordering::Relaxed);
        }
        self.remove_expired_tokens(&dir);
        Ok(())
    }

    /// Removes every expired token record under `dir` (relative to the root).
    pub(super) fn remove_expired_tokens(&self, dir: &Path) {
        let now = now_unix();
        for path in self.store.files_under(dir) {
            let record = match self.store.read(&path) {
                Ok(Some(bytes)) => TokenRecord::parse(&bytes).filter(|r| !r.is_expired(now)),
                _ => continue,
            };
            match record {
                Some(record) => self.tokens_kept.kept(&path, record.expires),
                None => {
                    if self.store.remove(&path).unwrap_or(false) {
                        self.stats.tokens_expired.fetch_add(1, Ordering::Relaxed);
                    }
                    self.tokens_kept.gone(&path);
                }
            }
        }
    }

    /// Stores an object unless the cache already holds a newer version.
    fn upsert(&self, collection: &Collection, encoding: Encoding, object: &[u8]) -> Upserted {
        let Some((path, resource_version)) = self.path_of(collection, encoding, object) else {
            return Upserted::Unstorable;
        };
        let written = self
            .stored_at(path.clone(), encoding, resource_version)
            .and_then(|target| {
                if target.stored.as_deref() != Some(object) && !target.stored_is_newer {
                    self.store.write(&target.path, object)?;
                    self.index_written(collection, encoding, &target.path, object);
                    self.stats.objects_written.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            });
        match written {
            Ok(()) => Upserted::Kept(path),
            Err(e) => Upserted::Failed(path, e),
        }
    }

    /// Removes an object unless the cache holds a newer version of it.
    fn delete(&self, collection: &Collection, encoding: Encoding, object: &[u8]) -> io::Result<()> {
        if let Some(target) = self.target_of(collection, encoding, object)?
            && !target.stored_is_newer
            && self.store.remove(&target.path)?
        {
            self.index_removed(collection, encoding, &target.path);
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
        match self.path_of(collection, encoding, object) {
            Some((path, resource_version)) => {
                self.stored_at(path, encoding, resource_version).map(Some)
            }
            None => Ok(None),
        }
    }

    /// An incoming object's file and resourceVersion; `None` when it cannot
    /// be read or its name is unsafe as a path.
    fn path_of(
        &self,
        collection: &Collection,
        encoding: Encoding,
        object: &[u8],
    ) -> Option<(PathBuf, u64)> {
        let Ok(meta) = encoding.decode_meta(object) else {
            self.stats.decode_errors.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let Some(path) = collection.object_path(&meta.namespace, &meta.name, encoding) else {
            log::debug!("not caching {}/{}: unsafe name", meta.namespace, meta.name);
            return None;
        };
        Some((path, meta.resource_version))
    }

    /// What `path` holds now, compared with an incoming `resource_version`.
    fn stored_at(
        &self,
        path: PathBuf,
        encoding: Encoding,
        resource_version: u64,
    ) -> io::Result<ObjectFile> {
        let stored = self.store.read(&path)?;
        let stored_rv = stored
            .as_deref()
            .and_then(|bytes| encoding.decode_meta(bytes).ok())
            .map_or(0, |m| m.resource_version);
        // resourceVersions are compared as integers; 0 means unknown.
        let stored_is_newer = resource_version != 0 && stored_rv > resource_version;
        if stored_is_newer {
            self.stats.stale_skipped.fetch_add(1, Ordering::Relaxed);
        }
        Ok(ObjectFile {
            path,
            stored,
            stored_is_newer,
        })
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
        let mut page = Gathered::default();
        let mut first_error = None;
        let mut failures = 0;
        for item in &parts.items {
            let upserted = self.upsert(collection, encoding, item);
            upserted.gather(&mut page);
            if let Upserted::Failed(path, e) = upserted {
                failures += 1;
                first_error.get_or_insert_with(|| format!("{}: {e}", path.display()));
            }
        }
        let reconciled = match self.paged.page(
            collection,
            shape,
            request_continue,
            &parts.continue_token,
            page,
        ) {
            Some(complete) => {
                let list = ListHead {
                    kind: parts.kind,
                    api_version: parts.api_version,
                    resource_version: parts.resource_version.parse().unwrap_or(0),
                };
                self.complete_list(collection, encoding, shape, &complete, list)
            }
            None => Ok(()),
        };
        match first_error {
            Some(first) => Err(io::Error::other(format!(
                "{failures} of {} objects of a list not stored, first {first}",
                parts.items.len()
            ))),
            None => reconciled,
        }
    }

    /// A whole list of `shape` is here (a LIST's last page, or a streaming
    /// list's initial events), its objects stored as `complete`: what this
    /// shape returned before and no longer returns is gone (or no longer
    /// matches) upstream, and the shape is recorded as listed. A file that
    /// cannot be read or removed is skipped, never the rest.
    fn complete_list(
        &self,
        collection: &Collection,
        encoding: Encoding,
        shape: &ListShape,
        complete: &Gathered,
        list: ListHead,
    ) -> io::Result<()> {
        let Some((labels, fields)) = shape.selectors() else {
            return Ok(());
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
        let mut first_error = None;
        for path in candidates {
            if complete.files.contains(&path) {
                continue;
            }
            let bytes = match self.store.read(&path) {
                Ok(Some(bytes)) => bytes,
                Ok(None) => continue,
                Err(e) => {
                    first_error.get_or_insert(e);
                    continue;
                }
            };
            // Changed upstream after the list was taken (a watch event got
            // here first): not the list's to remove.
            let stored_rv = encoding
                .decode_meta(&bytes)
                .map_or(0, |meta| meta.resource_version);
            if list.resource_version != 0 && stored_rv > list.resource_version {
                continue;
            }
            if !matches_shape(encoding, &bytes, &labels, &fields) {
                continue;
            }
            match self.store.remove(&path) {
                Ok(true) => {
                    self.index_removed(collection, encoding, &path);
                    self.stats.objects_removed.fetch_add(1, Ordering::Relaxed);
                }
                Ok(false) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        // A failed object write leaves this shape's answer without it (or
        // with an older version): a list made of the cache would then omit
        // an object that exists, and for kubelet's pods that stops a pod that
        // should run. So such a list does not record its shape; the shape
        // answers offline only once a list of it was stored whole (an object
        // whose name can never be a file does not count: no list could).
        // An object left in place because its removal failed is the lesser
        // harm (what any offline answer risks) and does not stop the record.
        // The quota may have removed an object of an earlier page or event
        // of this list while it was arriving: then it is not whole either.
        let evicted = complete
            .files
            .iter()
            .find(|path| !self.holds_file(&collection.dir(), encoding, path));
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
            kind: list.kind,
            api_version: list.api_version,
            encodings: [encoding.extension().to_string()].into(),
            listed_at: now_unix(),
            resource_version: list.resource_version,
        };
        if complete.failed || evicted.is_some() {
            if let Some(path) = evicted {
                log::warn!(
                    "a list of {} is not recorded: {} was removed while it arrived (disk quota)",
                    collection.dir().display(),
                    path.display()
                );
            }
            self.listings.incomplete(&collection.dir(), shape);
            // Who listed it is remembered (a kubelet stays one after a
            // restart), as never listed offline.
            let key = shape.key();
            if !index.shapes.contains_key(&key) && !index.incomplete.contains_key(&key) {
                index.incomplete.insert(key, list_type);
                self.store.write(&index_path, &index.encode())?;
            }
            return first_error.map_or(Ok(()), Err);
        }
        let known = index.shapes.get(&shape.key());
        if let Some(known) =
            known.filter(|k| k.kind == list_type.kind && k.api_version == list_type.api_version)
        {
            list_type.encodings.extend(known.encodings.iter().cloned());
        }
        let was_broken = index.incomplete.remove(&shape.key()).is_some();
        if was_broken || index.shapes.get(&shape.key()) != Some(&list_type) {
            index.shapes.insert(shape.key(), list_type.clone());
            self.store.write(&index_path, &index.encode())?;
        }
        let members = (encoding, Arc::new(complete.files.clone()));
        self.listings
            .stored(&collection.dir(), shape, &list_type, members);
        first_error.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::agents::Agents;
    use crate::codec::token::BoundObject;
    use crate::selector::{FieldSelector, LabelSelector};

    fn cache() -> (tempfile::TempDir, Arc<Cache>) {
        let dir = tempfile::tempdir().unwrap();
        let cache =
            Cache::start(dir.path(), Agents::new(""), crate::cache::Upkeep::default()).unwrap();
        (dir, cache)
    }

    fn configmaps() -> Collection {
        Collection {
            component: "kubelet".into(),
            resource_dir: "configmaps".into(),
        }
    }

    fn cm(name: &str, rv: u64, app: &str) -> Vec<u8> {
        format!(
            r#"{{"kind":"ConfigMap","apiVersion":"v1","metadata":{{"name":"{name}","namespace":"a","resourceVersion":"{rv}","labels":{{"app":"{app}"}}}}}}"#
        )
        .into_bytes()
    }

    fn list(rv: u64, items: &[Vec<u8>], continue_token: &str) -> Vec<u8> {
        let items: Vec<String> = items
            .iter()
            .map(|i| String::from_utf8_lossy(i).into_owned())
            .collect();
        format!(
            r#"{{"kind":"ConfigMapList","apiVersion":"v1","metadata":{{"resourceVersion":"{rv}","continue":"{continue_token}"}},"items":[{}]}}"#,
            items.join(",")
        )
        .into_bytes()
    }

    fn upsert(object: Vec<u8>, member_of: Option<Members>) -> Op {
        Op::Upsert {
            collection: configmaps(),
            encoding: Encoding::Json,
            object,
            member_of,
        }
    }

    fn web() -> ListShape {
        ListShape {
            namespace: "a".into(),
            label_selector: "app=web".into(),
            field_selector: String::new(),
        }
    }

    fn stored_rv(dir: &tempfile::TempDir, name: &str) -> Option<u64> {
        let bytes =
            std::fs::read(dir.path().join(format!("kubelet/configmaps/a/{name}.json"))).ok()?;
        Some(Encoding::Json.decode_meta(&bytes).unwrap().resource_version)
    }

    #[test]
    fn an_object_never_goes_back_to_an_older_resource_version() {
        let (dir, cache) = cache();
        cache.apply(upsert(cm("c1", 20, "web"), None)).unwrap();
        cache.apply(upsert(cm("c1", 10, "web"), None)).unwrap();
        assert_eq!(stored_rv(&dir, "c1"), Some(20));
        assert_eq!(cache.stats.stale_skipped.load(Ordering::Relaxed), 1);
        cache
            .apply(Op::Delete {
                collection: configmaps(),
                encoding: Encoding::Json,
                object: cm("c1", 15, "web"),
            })
            .unwrap();
        assert_eq!(stored_rv(&dir, "c1"), Some(20), "an older DELETED keeps it");
        cache
            .apply(Op::Delete {
                collection: configmaps(),
                encoding: Encoding::Json,
                object: cm("c1", 21, "web"),
            })
            .unwrap();
        assert_eq!(stored_rv(&dir, "c1"), None);
    }

    #[test]
    fn a_complete_list_removes_only_what_its_shape_no_longer_returns() {
        let (dir, cache) = cache();
        for object in [cm("old", 1, "web"), cm("db", 2, "db")] {
            cache.apply(upsert(object, None)).unwrap();
        }
        let first_page = Op::List {
            collection: configmaps(),
            encoding: Encoding::Json,
            shape: web(),
            request_continue: String::new(),
            body: list(9, &[cm("c1", 5, "web")], "next"),
        };
        cache.apply(first_page).unwrap();
        assert_eq!(
            stored_rv(&dir, "old"),
            Some(1),
            "a list is not complete before its last page"
        );
        let last_page = Op::List {
            collection: configmaps(),
            encoding: Encoding::Json,
            shape: web(),
            request_continue: "next".into(),
            body: list(9, &[cm("c2", 6, "web")], ""),
        };
        cache.apply(last_page).unwrap();
        assert_eq!(stored_rv(&dir, "old"), None, "gone from the shape: removed");
        assert_eq!(
            stored_rv(&dir, "db"),
            Some(2),
            "another shape's object stays"
        );
        assert_eq!(
            (stored_rv(&dir, "c1"), stored_rv(&dir, "c2")),
            (Some(5), Some(6))
        );
        let listed = cache.listed_shape(&configmaps(), &web()).unwrap();
        assert_eq!(
            (listed.kind.as_str(), listed.api_version.as_str()),
            ("ConfigMapList", "v1")
        );
        assert!(listed.encodings.contains("json"));
    }

    #[test]
    fn a_list_never_removes_an_object_newer_than_itself() {
        let (dir, cache) = cache();
        cache.apply(upsert(cm("fresh", 100, "web"), None)).unwrap();
        cache.apply(upsert(cm("stale", 40, "web"), None)).unwrap();
        let empty_at_50 = Op::List {
            collection: configmaps(),
            encoding: Encoding::Json,
            shape: web(),
            request_continue: String::new(),
            body: list(50, &[], ""),
        };
        cache.apply(empty_at_50).unwrap();
        assert_eq!(
            stored_rv(&dir, "fresh"),
            Some(100),
            "written after the list was taken"
        );
        assert_eq!(stored_rv(&dir, "stale"), None);
    }

    #[test]
    fn a_streaming_lists_initial_events_are_a_complete_list() {
        let (dir, cache) = cache();
        cache.apply(upsert(cm("old", 1, "web"), None)).unwrap();
        let members = Members::default();
        for object in [cm("c1", 5, "web"), cm("c2", 6, "web")] {
            cache.apply(upsert(object, Some(members.clone()))).unwrap();
        }
        assert!(cache.listed_shape(&configmaps(), &web()).is_none());
        cache
            .apply(Op::StreamedListEnd {
                collection: configmaps(),
                encoding: Encoding::Json,
                shape: web(),
                members,
                list: ListHead {
                    kind: "ConfigMapList".into(),
                    api_version: "v1".into(),
                    resource_version: 7,
                },
            })
            .unwrap();
        assert_eq!(stored_rv(&dir, "old"), None);
        assert_eq!(
            (stored_rv(&dir, "c1"), stored_rv(&dir, "c2")),
            (Some(5), Some(6))
        );
        assert!(cache.listed_shape(&configmaps(), &web()).is_some());
        assert_eq!(cache.stats.streamed_lists.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn tokens_are_kept_only_while_valid() {
        let (dir, cache) = cache();
        let owner = TokenOwner {
            component: "kubelet".into(),
            namespace: "a".into(),
            service_account: "default".into(),
        };
        let spec = |uid: &str| {
            TokenSpec::new(
                vec![],
                Some(BoundObject {
                    kind: "Pod".into(),
                    api_version: "v1".into(),
                    name: "p".into(),
                    uid: uid.into(),
                }),
            )
        };
        let issued = |expiry: &str| {
            format!(r#"{{"status":{{"token":"secret","expirationTimestamp":"{expiry}"}}}}"#)
                .into_bytes()
        };
        let token = |uid: &str, expiry: &str| Op::Token {
            owner: owner.clone(),
            spec: spec(uid),
            encoding: Encoding::Json,
            body: issued(expiry),
        };
        cache.apply(token("valid", "2999-01-01T00:00:00Z")).unwrap();
        cache
            .apply(token("expired", "2000-01-01T00:00:00Z"))
            .unwrap();
        assert_eq!(cache.stats.tokens_stored.load(Ordering::Relaxed), 1);
        let json = [Encoding::Json];
        assert!(cache.read_token(&owner, &spec("valid"), &json).is_some());
        assert!(cache.read_token(&owner, &spec("expired"), &json).is_none());
        // A record that expired while kept is removed on the next write.
        let stale = owner.record_path(&spec("stale")).unwrap();
        let record = TokenRecord::new(&spec("stale"), 946_684_800, Encoding::Json, b"{}");
        cache.store.write(&stale, &record.encode()).unwrap();
        cache.apply(token("valid", "2999-01-01T00:00:00Z")).unwrap();
        assert!(!dir.path().join(&stale).exists());
        assert_eq!(cache.stats.tokens_expired.load(Ordering::Relaxed), 1);
    }

    fn named(name: &str, rv: u64) -> Vec<u8> {
        format!(
            r#"{{"kind":"ConfigMap","apiVersion":"v1","metadata":{{"name":"{name}","namespace":"a","resourceVersion":"{rv}","labels":{{"app":"web"}}}}}}"#
        )
        .into_bytes()
    }

    #[test]
    fn an_item_whose_name_cannot_be_a_file_never_stops_the_rest_of_its_list() {
        let (dir, cache) = cache();
        cache.apply(upsert(cm("gone", 1, "web"), None)).unwrap();
        let items = [
            cm("c1", 5, "web"),
            named("x/y", 6),
            named("..", 6),
            named("_lists", 6),
            cm("c2", 7, "web"),
        ];
        cache
            .apply(Op::List {
                collection: configmaps(),
                encoding: Encoding::Json,
                shape: web(),
                request_continue: String::new(),
                body: list(9, &items, ""),
            })
            .unwrap();
        assert_eq!(
            (stored_rv(&dir, "c1"), stored_rv(&dir, "c2")),
            (Some(5), Some(7))
        );
        assert_eq!(stored_rv(&dir, "gone"), None, "reconciled all the same");
        assert!(
            cache.listed_shape(&configmaps(), &web()).is_some(),
            "no list could ever hold those names: the shape is recorded"
        );
        assert!(!dir.path().join("kubelet/configmaps/a/x").exists());
    }

    #[test]
    fn an_item_that_fails_to_write_never_stops_the_rest_nor_loses_what_was_stored() {
        let (dir, cache) = cache();
        cache.apply(upsert(cm("gone", 1, "web"), None)).unwrap();
        // A directory where c2's file goes: its write fails.
        std::fs::create_dir_all(dir.path().join("kubelet/configmaps/a/c2.json")).unwrap();
        let items = [cm("c1", 5, "web"), cm("c2", 6, "web"), cm("c3", 7, "web")];
        let failed = cache.apply(Op::List {
            collection: configmaps(),
            encoding: Encoding::Json,
            shape: web(),
            request_continue: String::new(),
            body: list(9, &items, ""),
        });
        let error = failed.unwrap_err().to_string();
        assert!(error.contains("1 of 3 objects"), "{error}");
        assert_eq!(
            (stored_rv(&dir, "c1"), stored_rv(&dir, "c3")),
            (Some(5), Some(7))
        );
        assert_eq!(stored_rv(&dir, "gone"), None, "reconciled all the same");
        assert!(
            cache.listed_shape(&configmaps(), &web()).is_none(),
            "a list of this shape made offline would lack c2"
        );
    }

    #[test]
    fn reconciliation_never_removes_an_object_whose_new_write_failed() {
        let (dir, cache) = cache();
        for object in [cm("kept", 1, "web"), cm("gone", 2, "web")] {
            cache.apply(upsert(object, None)).unwrap();
        }
        let kept = configmaps()
            .object_path("a", "kept", Encoding::Json)
            .unwrap();
        // What the writer gathers when `kept`'s newer version failed to write.
        let complete = Gathered {
            files: [kept].into(),
            failed: true,
        };
        let head = ListHead {
            kind: "ConfigMapList".into(),
            api_version: "v1".into(),
            resource_version: 9,
        };
        cache
            .complete_list(&configmaps(), Encoding::Json, &web(), &complete, head)
            .unwrap();
        assert_eq!(stored_rv(&dir, "kept"), Some(1), "the older version stays");
        assert_eq!(stored_rv(&dir, "gone"), None);
        assert!(cache.listed_shape(&configmaps(), &web()).is_none());
    }

    #[test]
    fn a_streaming_list_member_that_fails_to_write_is_kept_and_marks_the_list() {
        let (dir, cache) = cache();
        std::fs::create_dir_all(dir.path().join("kubelet/configmaps/a/c3.json")).unwrap();
        let members = Members::default();
        cache
            .apply(upsert(cm("c1", 5, "web"), Some(members.clone())))
            .unwrap();
        assert!(
            cache
                .apply(upsert(cm("c3", 6, "web"), Some(members.clone())))
                .is_err()
        );
        let gathered = members.lock().unwrap().clone();
        assert!(gathered.failed);
        assert_eq!(gathered.files.len(), 2, "{gathered:?}");
    }

    #[test]
    fn objects_with_names_too_long_for_a_file_are_stored_and_reconciled() {
        let (dir, cache) = cache();
        let long = format!("{}x", "n".repeat(252));
        cache
            .apply(Op::List {
                collection: configmaps(),
                encoding: Encoding::Json,
                shape: web(),
                request_continue: String::new(),
                body: list(9, &[cm(&long, 5, "web")], ""),
            })
            .unwrap();
        let path = configmaps()
            .object_path("a", &long, Encoding::Json)
            .unwrap();
        assert!(dir.path().join(&path).exists());
        let labels = LabelSelector::parse("").unwrap();
        let fields = FieldSelector::parse("").unwrap();
        let mut held = crate::budget::MemoryBudget::new(1 << 30).empty();
        let (items, _) = cache
            .select(
                &configmaps(),
                "a",
                &labels,
                &fields,
                Encoding::Json,
                &mut held,
            )
            .unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(
            Encoding::Json.decode_meta(&items[0]).unwrap().name,
            long,
            "listed with its real name"
        );
        assert!(
            cache
                .read_object(&configmaps(), "a", &long, Encoding::Json)
                .is_some()
        );
        cache
            .apply(Op::List {
                collection: configmaps(),
                encoding: Encoding::Json,
                shape: web(),
                request_continue: String::new(),
                body: list(10, &[], ""),
            })
            .unwrap();
        assert!(
            !dir.path().join(&path).exists(),
            "reconciled like any other"
        );
    }
}
