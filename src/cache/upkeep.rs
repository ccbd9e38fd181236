//! Garbage collection and the disk quota, applied on the writer thread (the
//! only writer of the cache) from `gc.rs`'s decisions: each file removed
//! durably, the index and the list shapes told at once, so they never
//! disagree with the disk. A removal that leaves a list shape without one
//! of its objects (the quota's, a pod bound elsewhere) also forgets that
//! shape on disk, so that offline a list of it is refused rather than
//! answered without the object, and marks it incomplete in memory, so that
//! the report says so.

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
    /// index is still being built.
    pub(super) fn collect_garbage(&self) -> Option<CollectionSummary> {
        let started = Instant::now();
        let Some((objects, _)) = self.index.objects() else {
            log::info!(
                "garbage collection skipped: the cache index is being built, or was given up"
            );
            return None;
        };
        let now = now_unix();
        let book = self.listings.snapshot();
        let components = self.component_facts(&objects, &book);
        let stale = self.not_in_last_lists(&book);
        let settings = gc::Settings {
            node_name: &self.upkeep.node_name,
            now,
            component_idle_seconds: i64::try_from(self.upkeep.component_idle.as_secs())
                .unwrap_or(i64::MAX),
        };
        let decision = gc::collect(&objects, &components, &stale, settings);
        let mut summary = CollectionSummary {
            at: now,
            ..CollectionSummary::default()
        };
        for (i, rule) in decision.objects {
            let object = &objects[i];
            // A pod bound elsewhere is still in the cloud: a shape that
            // returned it is no longer whole without it.
            match self.remove_indexed(object, rule == Rule::UnboundPod) {
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
            .unwrap_or_else(|e| e.into_inner()) = Some(summary.clone());
        Some(summary)
    }

    /// The last garbage collection's summary.
    pub fn last_collection(&self) -> Option<CollectionSummary> {
        self.last_collection
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Runs a garbage collection now, on the writer thread, and waits for it
    /// (at most `timeout`); `None` when it did not run (the index is being
    /// built, the writer is behind).
    pub fn collect_now(&self, timeout: Duration) -> Option<CollectionSummary> {
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
    /// it could not keep is counted, logged and shown in the report.
    pub(super) fn enforce_quota(&self) {
        let limit = self.upkeep.quota_bytes;
        if limit == 0 || self.index.disk_bytes().is_none_or(|used| used <= limit) {
            return;
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
        let victims = gc::evictions(&objects, &classes, used, limit);
        let (mut removed, mut bytes) = (0u64, 0u64);
        let mut first = None;
        for i in victims {
            let object = &objects[i];
            match self.remove_indexed(object, true) {
                Ok(_) => {
                    removed += 1;
                    bytes += object.size;
                    first.get_or_insert_with(|| (object.path(), classes[i]));
                    self.note_write_error(
                        &object.dir,
                        format!(
                            "{} removed to stay under --disk-cache-max-bytes {limit}",
                            object.path().display()
                        ),
                    );
                }
                Err(e) => log::warn!("disk quota: cannot remove {}: {e}", object.path().display()),
            }
        }
        self.stats
            .quota_evicted
            .fetch_add(removed, Ordering::Relaxed);
        self.stats
            .quota_evicted_bytes
            .fetch_add(bytes, Ordering::Relaxed);
        let mut last = self
            .last_quota_log
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some((path, class)) = first
            && last.is_none_or(|t| t.elapsed() > QUOTA_LOG_INTERVAL)
        {
            log::warn!(
                "disk quota: {used} bytes of objects past --disk-cache-max-bytes {limit}: removed {removed} objects ({bytes} bytes), the first {} ({class:?})",
                path.display()
            );
            *last = Some(Instant::now());
        }
    }

    /// What an object is to the collector and the quota.
    fn class_of(&self, object: &Indexed, components: &BTreeMap<String, Component>) -> Class {
        let (component, _) = gc::component_and_resource(&object.dir);
        let facts = components.get(component).copied().unwrap_or_default();
        gc::classify(object, &facts, &self.upkeep.node_name)
    }

    /// Who each component is: named agent, kubelet, when last seen.
    pub(super) fn component_facts(
        &self,
        objects: &[Indexed],
        book: &ShapeBook,
    ) -> BTreeMap<String, Component> {
        let kubelets = self.kubelets(book);
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
        gc::components(objects, |c| self.agents.is_named(c), &kubelets, &seen)
    }

    /// The components that act as this node's kubelet.
    pub(super) fn kubelets(&self, book: &ShapeBook) -> BTreeSet<String> {
        let mut kubelets: BTreeSet<String> = ["kubelet".to_string()].into();
        for (dir, shapes) in book {
            let (component, resource) = gc::component_and_resource(dir);
            let selectors = shapes.keys().map(|s| s.field_selector.as_str());
            if resource == "pods" && gc::is_kubelet(component, selectors, &self.upkeep.node_name) {
                kubelets.insert(component.to_string());
            }
        }
        kubelets
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

    /// Removes one indexed object's file; with `forget_shapes`, the list
    /// shapes that returned it are forgotten first (no longer complete).
    fn remove_indexed(&self, object: &Indexed, forget_shapes: bool) -> io::Result<bool> {
        let path = object.path();
        if forget_shapes {
            self.forget_shapes_of(object, &path)?;
        }
        let removed = self.store.remove(&path)?;
        self.index.remove(&object.dir, object.encoding, &path);
        if removed {
            self.stats.objects_removed.fetch_add(1, Ordering::Relaxed);
        }
        Ok(removed)
    }

    /// Forgets the shapes of an object's collection a list of which returns
    /// it in `_lists.json`, and marks them incomplete in memory.
    fn forget_shapes_of(&self, object: &Indexed, path: &Path) -> io::Result<()> {
        let affected: Vec<ListShape> = self
            .listings
            .of(&object.dir)
            .into_iter()
            .filter(|(_, record)| record.complete)
            .map(|(shape, _)| shape)
            .filter(|shape| {
                let in_namespace = shape.namespace.is_empty()
                    || object.namespace.as_deref()
                        == Some(stored_segment(&shape.namespace).as_ref());
                let selected = shape.selectors().is_none_or(|(labels, fields)| {
                    self.index
                        .file_matches(&object.dir, object.encoding, path, &labels, &fields)
                        != Some(false)
                });
                in_namespace && selected
            })
            .collect();
        if affected.is_empty() {
            return Ok(());
        }
        for shape in &affected {
            self.listings.incomplete(&object.dir, shape);
        }
        let lists_path = lists_path_in(&object.dir);
        if let Some(mut index) = self
            .store
            .read(&lists_path)?
            .and_then(|bytes| ShapeIndex::parse(&bytes))
        {
            for shape in &affected {
                index.shapes.remove(&shape.key());
            }
            self.store.write(&lists_path, &index.encode())?;
        }
        Ok(())
    }

    /// Removes a component's whole cache: its objects, list shapes and tokens.
    fn remove_component(&self, component: &str) -> io::Result<()> {
        let dir = PathBuf::from(component);
        // The index first: nothing is answered from files about to go.
        self.index.remove_under(&dir);
        self.listings.forget_under(&dir);
        self.store.remove_tree(&dir)?;
        let tokens = Path::new(TOKENS_DIR).join(component);
        self.store.remove_tree(&tokens)?;
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

    #[test]
    fn a_collection_removes_what_the_last_list_no_longer_held_and_pods_bound_elsewhere() {
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
        cache
            .apply(upsert("kubelet", pod("moved", "edge-2", 40)))
            .unwrap();
        let summary = cache.collect_garbage().unwrap();
        assert_eq!(summary.removed["not_in_last_list"], 1, "{summary:?}");
        assert_eq!(summary.removed["unbound_pod"], 1, "{summary:?}");
        let file = |name: &str| dir.path().join(format!("kubelet/pods/a/{name}.json"));
        assert!(file("p1").exists() && file("new").exists());
        assert!(!file("old").exists() && !file("moved").exists());
        assert!(
            !cache.listings.of(Path::new("kubelet/pods"))[&all_pods()].complete,
            "the list of every pod returned `moved`: no longer whole"
        );
        assert!(cache.listed_shape(&pods("kubelet"), &all_pods()).is_none());
    }

    #[test]
    fn the_quota_evicts_the_least_needed_and_forgets_the_shapes_it_breaks() {
        let one = pod("p00", "edge-1", 1).len() as u64;
        let (dir, cache) = cache(10 * one);
        let kubelet_pods = ListShape {
            field_selector: "spec.nodeName=edge-1".into(),
            ..all_pods()
        };
        let mine: Vec<Vec<u8>> = (0..5)
            .map(|i| pod(&format!("p{i:02}"), "edge-1", 1))
            .collect();
        cache
            .apply(list("kubelet", kubelet_pods.clone(), &mine))
            .unwrap();
        for i in 0..8 {
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
