//! The writer thread: applies cache work in order, off every client's path.
//! An object is never replaced by an older resourceVersion; a complete list
//! (a LIST's last page, or a streaming list's initial events) removes what its
//! shape no longer returns and records the shape; DELETED removes; issued
//! tokens are kept until they expire.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::codec::Encoding;
use crate::codec::time::now_unix;
use crate::codec::token::{self, TokenSpec};
use crate::selector::{FieldSelector, LabelSelector};

use super::key::Collection;
use super::lists::{ListShape, ListType, ShapeIndex};
use super::tokens::{TokenOwner, TokenRecord};
use super::{Cache, matches_shape};

/// Bytes waiting for the writer; past it new work is dropped (and counted).
/// Also the hub's worst extra memory under a flood of cacheable reads.
const MAX_QUEUED_BYTES: usize = 32 * 1024 * 1024;
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
pub(super) type Members = Arc<Mutex<BTreeSet<PathBuf>>>;

/// An object's file and what it holds now.
struct ObjectFile {
    path: PathBuf,
    stored: Option<Vec<u8>>,
    stored_is_newer: bool,
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

impl Cache {
    /// Hands work to the writer; false when it was dropped (and counted).
    pub(super) fn enqueue(&self, op: Op) -> bool {
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

    pub(super) fn dropped(&self, why: &str) {
        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        let mut last = self.last_drop_log.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
            log::warn!("not caching a response: {why}");
            *last = Some(Instant::now());
        }
    }

    pub(super) fn write_loop(&self, ops: Receiver<Op>) {
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
    pub(super) fn remove_expired_tokens(&self, dir: &Path) {
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
        let list = ListHead {
            kind: parts.kind,
            api_version: parts.api_version,
            resource_version: parts.resource_version.parse().unwrap_or(0),
        };
        self.complete_list(collection, encoding, shape, &complete, list)
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
        list: ListHead,
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
            // Changed upstream after the list was taken (a watch event got
            // here first): not the list's to remove.
            let stored_rv = encoding
                .decode_meta(&bytes)
                .map_or(0, |meta| meta.resource_version);
            if list.resource_version != 0 && stored_rv > list.resource_version {
                continue;
            }
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
            kind: list.kind,
            api_version: list.api_version,
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::agents::Agents;
    use crate::codec::token::BoundObject;

    fn cache() -> (tempfile::TempDir, Arc<Cache>) {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::start(dir.path(), Agents::new("")).unwrap();
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
}
