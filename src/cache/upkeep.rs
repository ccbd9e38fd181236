//! Garbage collection and the disk quota, applied on the writer thread (the
//! only writer of the cache) from `gc.rs`'s decisions: each file removed
//! durably, the index and the list shapes told at once, so they never
//! disagree with the disk. Before the quota removes an object of a shape's
//! complete list, that shape is recorded as incomplete in `_lists.json`
//! (one rewrite per collection and pass), so that offline a list of it is
//! refused rather than answered without the object, while who listed it
//! is still known after a restart (a kubelet stays a kubelet, reported not
//! ready); and in memory, so that the report says so.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::codec::Encoding;
use crate::codec::time::now_unix;

use super::Cache;
use super::gc::{self, Class, Component, Rule};
use super::index::{Indexed, ShapeFiles};
use super::key::{lists_path_in, stored_segment};
use super::lists::{ListShape, ShapeBook, ShapeIndex};
use super::tokens::TOKENS_DIR;

/// The quota's log line is written at most this often (each removal is
/// counted in `node_yurthub_cache_quota_evicted_total`).
const QUOTA_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// `POST /v1/gc` within this long of the last collection answers with its
/// summary instead of collecting again.
pub const GC_ON_DEMAND_INTERVAL: Duration = Duration::from_secs(60);

/// What one garbage collection removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CollectionSummary {
    /// When it ran (Unix seconds) and how long it took.
    pub at: i64,
    pub millis: u64,
    /// Objects removed, by rule.
    pub removed: BTreeMap<&'static str, u64>,
    /// Components removed whole.
    pub components: Vec<String>,
    /// Files that could not be removed (logged).
    pub failed: u64,
}

impl Cache {
    /// One garbage collection (the writer thread's); `None` while the
    /// index is still being built, or once it was given up.
    pub(super) fn collect_garbage(&self) -> Option<CollectionSummary> {
        let started = Instant::now();
        let Some((objects, _)) = self.index.objects() else {
            self.index_not_there("garbage collection");
            return None;
        };
        let now = now_unix();
        let book = self.listings.snapshot();
        let components = self.component_facts(&objects, &book);
        let stale = self.not_in_last_lists(&book);
        let settings = gc::Settings {
            now,
            component_idle_seconds: i64::try_from(self.upkeep.component_idle.as_secs())
                .unwrap_or(i64::MAX),
        };
        let decision = gc::collect(&objects, &components, &stale, settings);
        let mut summary = CollectionSummary {
            at: now,
            ..CollectionSummary::default()
        };
        // No rule of a collection leaves a shape without an object its last
        // complete list held: an expired event and what a list no longer
        // held are not members, so no shape is forgotten.
        for (i, rule) in decision.objects {
            let object = &objects[i];
            match self.remove_indexed(object) {
                Ok(true) => {
                    *summary.removed.entry(rule.name()).or_default() += 1;
                    let position = Rule::ALL.iter().position(|r| *r == rule).unwrap_or(0);
                    self.stats.collected[position].fetch_add(1, Ordering::Relaxed);
                }
                Ok(false) => {}
                Err(e) => {
                    summary.failed += 1;
                    log::warn!(
                        "garbage collection: cannot remove {}: {e}",
                        object.path().display()
                    );
                }
            }
        }
        for component in decision.components {
            match self.remove_component(&component) {
                Ok(()) => {
                    let position = Rule::ALL.iter().position(|r| *r == Rule::IdleComponent);
                    self.stats.collected[position.unwrap_or(0)].fetch_add(1, Ordering::Relaxed);
                    summary.components.push(component);
                }
                Err(e) => {
                    summary.failed += 1;
                    log::warn!("garbage collection: cannot remove component {component}: {e}");
                }
            }
        }
        summary.millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.stats.collections.fetch_add(1, Ordering::Relaxed);
        let removed: u64 = summary.removed.values().sum();
        if removed > 0 || !summary.components.is_empty() {
            log::info!(
                "garbage collection: removed {removed} objects ({:?}) and components {:?} of {} objects in {} ms",
                summary.removed,
                summary.components,
                objects.len(),
                summary.millis
            );
        } else {
            log::debug!(
                "garbage collection: nothing to remove among {} objects ({} ms)",
                objects.len(),
                summary.millis
            );
        }
        *self
            .last_collection
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), summary.clone()));
        Some(summary)
    }

    /// Says (once per quota log interval) that upkeep cannot run without
    /// the index, and why, when it was given up.
    fn index_not_there(&self, what: &str) {
        if self.index.given_up() {
            let mut last = self
                .last_quota_log
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if last.is_none_or(|t| t.elapsed() > QUOTA_LOG_INTERVAL) {
                log::warn!(
                    "{what} skipped: the cache index was given up (more objects than it holds); neither garbage collection nor --disk-cache-max-bytes works until the hub restarts with fewer objects cached"
                );
                *last = Some(Instant::now());
            }
        } else {
            log::info!("{what} skipped: the cache index is being built");
        }
    }

    /// The last garbage collection's summary.
    pub fn last_collection(&self) -> Option<CollectionSummary> {
        self.last_collection
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(_, summary)| summary.clone())
    }

    /// Runs a garbage collection now, on the writer thread, and waits for it
    /// (at most `timeout`); `None` when it did not run (the index is not
    /// there, the writer is behind). One at a time: while one runs, or
    /// within `GC_ON_DEMAND_INTERVAL` of the last one, the last summary is
    /// the answer, so a client cannot keep the writer collecting.
    pub fn collect_now(&self, timeout: Duration) -> Option<CollectionSummary> {
        let Ok(_one) = self.collect_on_demand.try_lock() else {
            return self.last_collection();
        };
        if let Some((at, summary)) = &*self
            .last_collection
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            && at.elapsed() < GC_ON_DEMAND_INTERVAL
        {
            return Some(summary.clone());
        }
        let (done, result) = std::sync::mpsc::channel();
        let queued = self.enqueue(super::writer::Op::Upkeep {
            collect: true,
            done: Some(done),
        });
        if !queued {
            return None;
        }
        result.recv_timeout(timeout).ok().flatten()
    }

    /// Removes objects, least needed first (`gc::evictions`), while the
    /// cache's object files are over the quota. Never fails a client: what
    /// it could not keep is counted, logged and shown in the report. A
    /// kubelet's own Node and pods are never removed: the bytes the quota
    /// could not free are counted and logged instead.
    pub(super) fn enforce_quota(&self) {
        let limit = self.upkeep.quota_bytes;
        if limit == 0 {
            return;
        }
        match self.index.disk_bytes() {
            Some(used) if used <= limit => return,
            Some(_) => {}
            None => {
                if self.index.given_up() {
                    self.index_not_there("the disk quota");
                }
                return;
            }
        }
        let Some((objects, used)) = self.index.objects() else {
            return;
        };
        let book = self.listings.snapshot();
        let components = self.component_facts(&objects, &book);
        let classes: Vec<Class> = objects
            .iter()
            .map(|object| self.class_of(object, &components))
            .collect();
        let (victims, over) = gc::evictions(&objects, &classes, used, limit);
        // The shapes the removals leave without an object are forgotten
        // first, one rewrite of each collection's `_lists.json`; a
        // collection whose shapes cannot be forgotten keeps its objects.
        let mut by_dir: BTreeMap<&Path, Vec<&Indexed>> = BTreeMap::new();
        for &i in &victims {
            by_dir.entry(&objects[i].dir).or_default().push(&objects[i]);
        }
        let (mut removed, mut bytes) = (0u64, 0u64);
        let mut first = None;
        for (dir, victims) in by_dir {
            if let Err(e) = self.break_shapes_of(dir, &victims) {
                log::warn!(
                    "disk quota: cannot record the lists of {} as incomplete, its objects are kept: {e}",
                    dir.display()
                );
                continue;
            }
            for object in victims {
                match self.remove_indexed(object) {
                    Ok(_) => {
                        removed += 1;
                        bytes += object.size;
                        first.get_or_insert_with(|| {
                            (object.path(), self.class_of(object, &components))
                        });
                    }
                    Err(e) => {
                        log::warn!("disk quota: cannot remove {}: {e}", object.path().display())
                    }
                }
            }
            self.note_write_error(
                dir,
                format!("objects removed to stay under --disk-cache-max-bytes {limit}"),
            );
        }
        self.stats
            .quota_evicted
            .fetch_add(removed, Ordering::Relaxed);
        self.stats
            .quota_evicted_bytes
            .fetch_add(bytes, Ordering::Relaxed);
        self.stats
            .quota_overrun_bytes
            .store(over, Ordering::Relaxed);
        let mut last = self
            .last_quota_log
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|t| t.elapsed() > QUOTA_LOG_INTERVAL) {
            if let Some((path, class)) = &first {
                log::warn!(
                    "disk quota: {used} bytes of objects past --disk-cache-max-bytes {limit}: removed {removed} objects ({bytes} bytes), the first {} ({class:?})",
                    path.display()
                );
            }
            if over > 0 {
                log::warn!(
                    "disk quota: {over} bytes over --disk-cache-max-bytes {limit} are kept: a kubelet's own Node and pods are never removed"
                );
            }
            *last = Some(Instant::now());
        }
    }

    /// What an object is to the collector and the quota.
    fn class_of(&self, object: &Indexed, components: &BTreeMap<String, Component>) -> Class {
        let (component, _) = gc::component_and_resource(&object.dir);
        match components.get(component) {
            Some(facts) => gc::classify(object, facts),
            None => gc::classify(object, &Component::default()),
        }
    }

    /// Who each component is: named agent, kubelet (and its node), when
    /// last seen.
    pub(super) fn component_facts(
        &self,
        objects: &[Indexed],
        book: &ShapeBook,
    ) -> BTreeMap<String, Component> {
        let kubelets = self.kubelets(book);
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
        gc::components(objects, |c| self.agents.is_named(c), &kubelets, &seen)
    }

    /// The components that act as a kubelet, with the names of their own
    /// node: from the pod lists of every namespace each listed (complete
    /// or not, kept in `_lists.json` across restarts).
    pub(super) fn kubelets(&self, book: &ShapeBook) -> BTreeMap<String, BTreeSet<String>> {
        let mut selectors: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        selectors.insert("kubelet", Vec::new());
        for (dir, shapes) in book {
            let (component, resource) = gc::component_and_resource(dir);
            if resource == "pods" {
                let of_all = shapes.keys().filter(|s| s.namespace.is_empty());
                selectors
                    .entry(component)
                    .or_default()
                    .extend(of_all.map(|s| s.field_selector.as_str()));
            }
        }
        selectors
            .into_iter()
            .filter_map(|(component, selectors)| {
                let nodes =
                    gc::kubelet_nodes(component, selectors.into_iter(), &self.upkeep.node_name)?;
                Some((component.to_string(), nodes))
            })
            .collect()
    }

    /// The files the last complete list of their shape (stored since the
    /// start) no longer held.
    fn not_in_last_lists(&self, book: &ShapeBook) -> BTreeSet<PathBuf> {
        let mut stale = BTreeSet::new();
        for (dir, shapes) in book {
            for (shape, record) in shapes {
                let Some((encoding, members)) = record.members.as_ref().filter(|_| record.complete)
                else {
                    continue;
                };
                if let Some(found) = self.files_of_shape(dir, *encoding, shape) {
                    stale.extend(gc::not_in_last_list(
                        &found.files,
                        record.resource_version,
                        members,
                    ));
                }
            }
        }
        stale
    }

    /// The files a list of `shape` returns now, from the index; `None`
    /// while it is being built, or when the shape's selectors do not parse.
    pub(super) fn files_of_shape(
        &self,
        collection_dir: &Path,
        encoding: Encoding,
        shape: &ListShape,
    ) -> Option<ShapeFiles> {
        let (labels, fields) = shape.selectors()?;
        let namespace = stored_segment(&shape.namespace);
        let namespace = (!namespace.is_empty()).then_some(namespace.as_ref());
        self.index
            .shape_files(collection_dir, encoding, namespace, &labels, &fields)
    }

    /// Removes one indexed object's file, then its index entry.
    fn remove_indexed(&self, object: &Indexed) -> io::Result<bool> {
        let path = object.path();
        let removed = self.store.remove(&path)?;
        self.index.remove(&object.dir, object.encoding, &path);
        if removed {
            self.stats.objects_removed.fetch_add(1, Ordering::Relaxed);
        }
        Ok(removed)
    }

    /// Records as incomplete the complete shapes of a collection a list of
    /// which returns one of `objects` (about to be removed): in
    /// `_lists.json` (one durable rewrite), so that offline a list of them
    /// is refused rather than answered without the objects, while who
    /// listed them is remembered; and in memory, for the report.
    fn break_shapes_of(&self, dir: &Path, objects: &[&Indexed]) -> io::Result<()> {
        let affected: Vec<ListShape> = self
            .listings
            .of(dir)
            .into_iter()
            .filter(|(_, record)| record.complete)
            .map(|(shape, _)| shape)
            .filter(|shape| {
                let selectors = shape.selectors();
                objects.iter().any(|object| {
                    let in_namespace = shape.namespace.is_empty()
                        || object.namespace.as_deref()
                            == Some(stored_segment(&shape.namespace).as_ref());
                    let selected = selectors.as_ref().is_none_or(|(labels, fields)| {
                        self.index.file_matches(
                            &object.dir,
                            object.encoding,
                            &object.path(),
                            labels,
                            fields,
                        ) != Some(false)
                    });
                    in_namespace && selected
                })
            })
            .collect();
        if affected.is_empty() {
            return Ok(());
        }
        let lists_path = lists_path_in(dir);
        if let Some(mut index) = self
            .store
            .read(&lists_path)?
            .and_then(|bytes| ShapeIndex::parse(&bytes))
            && index.break_shapes(affected.iter())
        {
            self.store.write(&lists_path, &index.encode())?;
        }
        for shape in &affected {
            self.listings.incomplete(dir, shape);
        }
        Ok(())
    }

    /// Removes a component's whole cache: its list shapes first (so that no
    /// list answers from a half-removed collection), then its objects and
    /// tokens, then what the index and memory knew of it. Never one of the
    /// cache's own directories.
    fn remove_component(&self, component: &str) -> io::Result<()> {
        if !gc::is_component_dir_name(component) {
            return Err(io::Error::other(format!(
                "{component:?} is not a component's directory"
            )));
        }
        let dir = PathBuf::from(component);
        for resource in self.store.subdirs(&dir) {
            self.store.remove(&lists_path_in(&dir.join(resource)))?;
        }
        self.listings.forget_under(&dir);
        self.store.remove_tree(&dir)?;
        let tokens = Path::new(TOKENS_DIR).join(component);
        self.store.remove_tree(&tokens)?;
        self.index.remove_under(&dir);
        self.tokens_kept.forget_under(&tokens);
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(component);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Upkeep;
    use crate::cache::agents::Agents;
    use crate::cache::key::Collection;
    use crate::cache::writer::Op;
    use std::sync::Arc;

    fn cache(quota_bytes: u64) -> (tempfile::TempDir, Arc<Cache>) {
        let dir = tempfile::tempdir().unwrap();
        let upkeep = Upkeep {
            node_name: "edge-1".into(),
            quota_bytes,
            ..Upkeep::default()
        };
        let cache = Cache::start(dir.path(), Agents::new(""), upkeep).unwrap();
        assert!(cache.index.wait_ready(Duration::from_secs(10)));
        (dir, cache)
    }

    fn pod(name: &str, node: &str, rv: u64) -> Vec<u8> {
        format!(
            r#"{{"kind":"Pod","apiVersion":"v1","metadata":{{"name":"{name}","namespace":"a","resourceVersion":"{rv}"}},"spec":{{"nodeName":"{node}"}}}}"#
        )
        .into_bytes()
    }

    fn pods(component: &str) -> Collection {
        Collection {
            component: component.into(),
            resource_dir: "pods".into(),
        }
    }

    fn all_pods() -> ListShape {
        ListShape {
            namespace: String::new(),
            label_selector: String::new(),
            field_selector: String::new(),
        }
    }

    fn list(component: &str, shape: ListShape, items: &[Vec<u8>]) -> Op {
        let items: Vec<String> = items
            .iter()
            .map(|i| String::from_utf8_lossy(i).into_owned())
            .collect();
        Op::List {
            collection: pods(component),
            encoding: Encoding::Json,
            shape,
            request_continue: String::new(),
            body: format!(
                r#"{{"kind":"PodList","apiVersion":"v1","metadata":{{"resourceVersion":"20"}},"items":[{}]}}"#,
                items.join(",")
            )
            .into_bytes(),
        }
    }

    fn upsert(component: &str, object: Vec<u8>) -> Op {
        Op::Upsert {
            collection: pods(component),
            encoding: Encoding::Json,
            object,
            member_of: None,
        }
    }

    fn node(name: &str) -> Vec<u8> {
        format!(
            r#"{{"kind":"Node","apiVersion":"v1","metadata":{{"name":"{name}","resourceVersion":"3"}}}}"#
        )
        .into_bytes()
    }

    fn nodes(component: &str) -> Collection {
        Collection {
            component: component.into(),
            resource_dir: "nodes".into(),
        }
    }

    fn node_pods(node: &str) -> ListShape {
        ListShape {
            field_selector: format!("spec.nodeName={node}"),
            ..all_pods()
        }
    }

    fn with_node(cache: &Cache, component: &str, name: &str) {
        cache
            .apply(Op::Upsert {
                collection: nodes(component),
                encoding: Encoding::Json,
                object: node(name),
                member_of: None,
            })
            .unwrap();
    }

    fn start(dir: &Path, node_name: &str, quota_bytes: u64) -> Arc<Cache> {
        let upkeep = Upkeep {
            node_name: node_name.into(),
            quota_bytes,
            ..Upkeep::default()
        };
        let cache = Cache::start(dir, Agents::new(""), upkeep).unwrap();
        assert!(cache.index.wait_ready(Duration::from_secs(10)));
        cache
    }

    fn verdict_of(cache: &Cache, component: &str) -> (bool, String) {
        let report = cache.autonomy_now(false);
        let c = report
            .components
            .iter()
            .find(|c| c.name == component)
            .unwrap_or_else(|| panic!("{component}: {report:?}"));
        (c.ready, c.verdict.clone())
    }

    #[test]
    fn a_collection_removes_what_the_last_list_no_longer_held_and_keeps_pods_bound_elsewhere() {
        let (dir, cache) = cache(0);
        cache
            .apply(list("kubelet", all_pods(), &[pod("p1", "edge-1", 10)]))
            .unwrap();
        // Came back later with a version older than the list: gone upstream.
        cache
            .apply(upsert("kubelet", pod("old", "edge-1", 5)))
            .unwrap();
        // Newer than the list: from a watch, kept.
        cache
            .apply(upsert("kubelet", pod("new", "edge-1", 30)))
            .unwrap();
        // Bound elsewhere, but in the cloud: not the collection's to remove.
        cache
            .apply(upsert("kubelet", pod("moved", "edge-2", 40)))
            .unwrap();
        let summary = cache.collect_garbage().unwrap();
        assert_eq!(summary.removed["not_in_last_list"], 1, "{summary:?}");
        assert_eq!(summary.removed.len(), 1, "{summary:?}");
        let file = |name: &str| dir.path().join(format!("kubelet/pods/a/{name}.json"));
        assert!(file("p1").exists() && file("new").exists() && file("moved").exists());
        assert!(!file("old").exists());
        assert!(cache.listings.of(Path::new("kubelet/pods"))[&all_pods()].complete);
        assert!(cache.listed_shape(&pods("kubelet"), &all_pods()).is_some());
    }

    /// The hub runs with `--node-name Edge-1` (`%H` keeps the host name's
    /// case); kubelet registered as `edge-1` and lists its pods so.
    #[test]
    fn a_kubelet_registered_under_another_case_keeps_everything_it_needs() {
        let dir = tempfile::tempdir().unwrap();
        let cache = start(dir.path(), "Edge-1", 8 * gc::DISK_BLOCK_BYTES);
        let mine: Vec<Vec<u8>> = (0..3)
            .map(|i| pod(&format!("p{i}"), "edge-1", 10))
            .collect();
        cache
            .apply(list("kubelet", node_pods("edge-1"), &mine))
            .unwrap();
        with_node(&cache, "kubelet", "edge-1");
        let (ready, verdict) = verdict_of(&cache, "kubelet");
        assert!(ready, "{verdict}");
        let summary = cache.collect_garbage().unwrap();
        assert!(summary.removed.is_empty(), "{summary:?}");
        // Past the quota: what kubectl cached goes, never kubelet's.
        for i in 0..6 {
            cache
                .apply(upsert("kubectl", pod(&format!("x{i}"), "edge-1", 1)))
                .unwrap();
            cache.enforce_quota();
        }
        assert_kubelet_kept(dir.path());
        assert!(!dir.path().join("kubectl/pods/a/x0.json").exists());
        assert!(
            cache
                .listed_shape(&pods("kubelet"), &node_pods("edge-1"))
                .is_some()
        );
        let (ready, verdict) = verdict_of(&cache, "kubelet");
        assert!(ready, "{verdict}");
        assert!(verdict.contains("3 pods"), "{verdict}");
    }

    /// kubelet's three pods and its Node are still on disk.
    fn assert_kubelet_kept(root: &Path) {
        for i in 0..3 {
            assert!(
                root.join(format!("kubelet/pods/a/p{i}.json")).exists(),
                "pod p{i}"
            );
        }
        assert!(root.join("kubelet/nodes/edge-1.json").exists());
    }

    #[test]
    fn the_quota_keeps_a_kubelets_node_and_pods_and_counts_the_overrun() {
        let dir = tempfile::tempdir().unwrap();
        let cache = start(dir.path(), "edge-1", 2 * gc::DISK_BLOCK_BYTES);
        let mine: Vec<Vec<u8>> = (0..3)
            .map(|i| pod(&format!("p{i}"), "edge-1", 10))
            .collect();
        cache
            .apply(list("kubelet", node_pods("edge-1"), &mine))
            .unwrap();
        with_node(&cache, "kubelet", "edge-1");
        // Another client listing this node's pods takes nothing from kubelet.
        cache
            .apply(list("intruder", node_pods("EDGE-1"), &mine))
            .unwrap();
        with_node(&cache, "intruder", "edge-2");
        cache.enforce_quota();
        assert_kubelet_kept(dir.path());
        assert!(!dir.path().join("intruder/nodes/edge-2.json").exists());
        assert_eq!(
            cache.stats.quota_overrun_bytes.load(Ordering::Relaxed),
            5 * gc::DISK_BLOCK_BYTES,
            "kubelet's 4 files and intruder's 3 pods kept, 2 blocks allowed"
        );
        assert_eq!(
            cache.autonomy_now(false).disk.over_quota_kept_bytes,
            5 * gc::DISK_BLOCK_BYTES
        );
    }

    #[test]
    fn a_client_calling_itself_tokens_never_removes_the_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let upkeep = Upkeep {
            node_name: "edge-1".into(),
            component_idle: Duration::from_secs(1),
            ..Upkeep::default()
        };
        let cache = Cache::start(dir.path(), Agents::new(""), upkeep).unwrap();
        assert!(cache.index.wait_ready(Duration::from_secs(10)));
        let token = Path::new(TOKENS_DIR).join("kubelet/a/sa/0123.json");
        cache.store.write(&token, b"{}").unwrap();
        for name in ["_tokens", "_discovery", "_quarantine", "..", "a/b", "idle"] {
            cache.saw_component(name);
        }
        let seen: Vec<String> = cache.seen.lock().unwrap().keys().cloned().collect();
        assert_eq!(seen, ["idle"]);
        // Unseen since long ago: only the component goes.
        cache.seen.lock().unwrap().insert("_tokens".into(), 1);
        cache.seen.lock().unwrap().insert("idle".into(), 1);
        let summary = cache.collect_garbage().unwrap();
        assert_eq!(summary.components, ["idle"], "{summary:?}");
        assert!(dir.path().join(&token).exists());
        assert!(cache.remove_component("_tokens").is_err());
        assert!(dir.path().join(&token).exists());
    }

    /// A renamed kubelet (kubemark) whose pod list broke: after a restart it
    /// is still a kubelet, and the report says it is not ready.
    #[test]
    fn a_kubelet_whose_list_broke_stays_a_kubelet_and_not_ready_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let cache = start(dir.path(), "edge-1", 0);
            let mine = [pod("p1", "edge-1", 10), pod("p2", "edge-1", 10)];
            cache
                .apply(list("kubemark", node_pods("edge-1"), &mine))
                .unwrap();
            with_node(&cache, "kubemark", "edge-1");
            assert!(verdict_of(&cache, "kubemark").0);
            // What the quota does to a shape's member, here to a pod.
            let (objects, _) = cache.index.objects().unwrap();
            let p1 = objects.iter().find(|o| o.file == "p1.json").unwrap();
            cache.break_shapes_of(&p1.dir, &[p1]).unwrap();
            cache.remove_indexed(p1).unwrap();
            assert!(!verdict_of(&cache, "kubemark").0);
        }
        let cache = start(dir.path(), "edge-1", 0);
        assert!(
            cache
                .listed_shape(&pods("kubemark"), &node_pods("edge-1"))
                .is_none(),
            "offline, never listed"
        );
        let (ready, verdict) = verdict_of(&cache, "kubemark");
        assert!(!ready, "{verdict}");
        assert!(
            verdict.contains("no complete list of its pods"),
            "{verdict}"
        );
        let (objects, _) = cache.index.objects().unwrap();
        let book = cache.listings.snapshot();
        let facts = cache.component_facts(&objects, &book);
        assert!(facts["kubemark"].is_kubelet());
        let p2 = objects.iter().find(|o| o.file == "p2.json").unwrap();
        assert_eq!(cache.class_of(p2, &facts), Class::KubeletOwn);
        // A complete list again: complete on disk, no longer incomplete.
        cache
            .apply(list(
                "kubemark",
                node_pods("edge-1"),
                &[pod("p2", "edge-1", 10)],
            ))
            .unwrap();
        let on_disk = ShapeIndex::parse(
            &std::fs::read(dir.path().join("kubemark/pods/_lists.json")).unwrap(),
        )
        .unwrap();
        assert!(on_disk.shapes.contains_key(&node_pods("edge-1").key()));
        assert!(on_disk.incomplete.is_empty());
        assert!(verdict_of(&cache, "kubemark").0);
    }

    /// The quota removes an object of a paged list's first page before its
    /// last page arrives: the list is not recorded as complete.
    #[test]
    fn a_list_whose_object_the_quota_removed_while_it_arrived_is_not_complete() {
        let dir = tempfile::tempdir().unwrap();
        let cache = start(dir.path(), "edge-1", 4 * gc::DISK_BLOCK_BYTES);
        let page = |request_continue: &str, next: &str, items: &[Vec<u8>]| {
            let items: Vec<String> = items
                .iter()
                .map(|i| String::from_utf8_lossy(i).into_owned())
                .collect();
            Op::List {
                collection: pods("kubectl"),
                encoding: Encoding::Json,
                shape: all_pods(),
                request_continue: request_continue.into(),
                body: format!(
                    r#"{{"kind":"PodList","apiVersion":"v1","metadata":{{"resourceVersion":"20","continue":"{next}"}},"items":[{}]}}"#,
                    items.join(",")
                )
                .into_bytes(),
            }
        };
        cache
            .apply(page("", "c1", &[pod("a1", "x", 1), pod("a2", "x", 1)]))
            .unwrap();
        for i in 0..4 {
            cache
                .apply(upsert("other", pod(&format!("o{i}"), "x", 1)))
                .unwrap();
        }
        cache.enforce_quota();
        assert!(!dir.path().join("kubectl/pods/a/a1.json").exists());
        cache.apply(page("c1", "", &[pod("a3", "x", 1)])).unwrap();
        assert!(cache.listed_shape(&pods("kubectl"), &all_pods()).is_none());
        assert!(!cache.listings.of(Path::new("kubectl/pods"))[&all_pods()].complete);
    }

    #[test]
    fn the_quota_evicts_the_least_needed_and_forgets_the_shapes_it_breaks() {
        let one = gc::DISK_BLOCK_BYTES;
        let (dir, cache) = cache(10 * one);
        let kubelet_pods = node_pods("edge-1");
        let mine: Vec<Vec<u8>> = (0..5)
            .map(|i| pod(&format!("p{i:02}"), "edge-1", 1))
            .collect();
        cache
            .apply(list("kubelet", kubelet_pods.clone(), &mine))
            .unwrap();
        let theirs: Vec<Vec<u8>> = (0..3)
            .map(|i| pod(&format!("x{i:02}"), "edge-1", 1))
            .collect();
        cache.apply(list("kubectl", all_pods(), &theirs)).unwrap();
        for i in 3..8 {
            let name = format!("x{i:02}");
            cache
                .apply(upsert("kubectl", pod(&name, "edge-1", 1)))
                .unwrap();
            cache.enforce_quota();
        }
        let used = cache.index.disk_bytes().unwrap();
        assert!(used <= 10 * one, "{used}");
        for i in 0..5 {
            assert!(
                dir.path()
                    .join(format!("kubelet/pods/a/p{i:02}.json"))
                    .exists()
            );
        }
        assert!(
            dir.path().join("kubectl/pods/a/x07.json").exists(),
            "the newest stays"
        );
        assert!(
            !dir.path().join("kubectl/pods/a/x00.json").exists(),
            "the oldest goes"
        );
        assert!(cache.stats.quota_evicted.load(Ordering::Relaxed) >= 3);
        assert!(
            cache
                .listed_shape(&pods("kubelet"), &kubelet_pods)
                .is_some()
        );
        assert!(
            cache.listed_shape(&pods("kubectl"), &all_pods()).is_none(),
            "its list lost an object"
        );
        let on_disk =
            ShapeIndex::parse(&std::fs::read(dir.path().join("kubectl/pods/_lists.json")).unwrap())
                .unwrap();
        assert!(on_disk.incomplete.contains_key(&all_pods().key()));
        assert!(
            cache.write_errors.lock().unwrap()[Path::new("kubectl/pods")]
                .message
                .contains("--disk-cache-max-bytes")
        );
    }

    /// The report and a collection over a node-sized cache: 10,000 pods in
    /// 40 namespaces and 2,000 ConfigMaps each listed by name (as kubelet
    /// lists what its pods use), timed and printed.
    #[test]
    fn the_report_and_a_collection_of_twelve_thousand_objects_are_quick() {
        let (_dir, cache) = cache(0);
        let kubelet_pods = Path::new("kubelet/pods");
        let configmaps = Path::new("kubelet/configmaps");
        for i in 0..10_000 {
            let namespace = format!("team-{:02}", i % 40);
            let name = format!("workload-{i:05}");
            let object = format!(
                r#"{{"kind":"Pod","apiVersion":"v1","metadata":{{"name":"{name}","namespace":"{namespace}","resourceVersion":"{i}"}},"spec":{{"nodeName":"edge-1"}}}}"#
            );
            let path = kubelet_pods.join(&namespace).join(format!("{name}.json"));
            cache
                .index
                .put(kubelet_pods, Encoding::Json, &path, object.as_bytes());
        }
        for i in 0..2_000 {
            let name = format!("config-{i:04}");
            let object = configmap_json(&name);
            let path = configmaps.join("a").join(format!("{name}.json"));
            cache
                .index
                .put(configmaps, Encoding::Json, &path, object.as_bytes());
            let shape = ListShape {
                namespace: "a".into(),
                label_selector: String::new(),
                field_selector: format!("metadata.name={name}"),
            };
            let list_type = crate::cache::lists::ListType {
                kind: "ConfigMapList".into(),
                api_version: "v1".into(),
                encodings: ["json".to_string()].into(),
                listed_at: now_unix(),
                resource_version: 5_000,
            };
            let members = (Encoding::Json, Arc::new([path].into()));
            cache
                .listings
                .stored(configmaps, &shape, &list_type, members);
        }
        let started = Instant::now();
        let report = cache.autonomy(true);
        let report_took = started.elapsed();
        let started = Instant::now();
        let summary = cache.collect_garbage().unwrap();
        let collection_took = started.elapsed();
        println!(
            "12,000 objects, 2,000 shapes: report {report_took:?}, collection {collection_took:?}"
        );
        assert_eq!(report.components[0].objects, 12_000);
        assert!(summary.removed.is_empty(), "{summary:?}");
        assert!(report_took < Duration::from_secs(5), "{report_took:?}");
        assert!(
            collection_took < Duration::from_secs(5),
            "{collection_took:?}"
        );
    }

    fn configmap_json(name: &str) -> String {
        format!(
            r#"{{"kind":"ConfigMap","apiVersion":"v1","metadata":{{"name":"{name}","namespace":"a","resourceVersion":"7"}}}}"#
        )
    }
}
