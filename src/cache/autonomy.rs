//! The autonomy report: before a link is cut or a node reboots, will each
//! component come back offline with what it needs? Per component and
//! resource: the objects held, whether a complete list of each shape is
//! held and how old it is, the last write error; and a verdict per
//! component. Gathered from the index and the list shapes in memory (never
//! by reading the disk), then decided and rendered by pure functions: JSON,
//! one screen of text for `curl`, and the gauges of `/metrics`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::codec::Encoding;
use crate::codec::time::now_unix;

use super::gc::{self, Component};
use super::index::Indexed;
use super::key::stored_segment;
use super::lists::{ListShape, ShapeBook};
use super::{Cache, CollectionSummary, WriteError};

/// Resource lines of the text form, so that it fits a screen (the JSON
/// form has every one).
pub const TEXT_MAX_RESOURCE_LINES: usize = 30;
/// How long a report is reused (`Cache::autonomy`).
pub const REPORT_REUSE: Duration = Duration::from_secs(1);

/// What the report is made of, gathered from memory.
pub(super) struct Facts {
    pub node_name: String,
    pub now: i64,
    pub online: bool,
    /// `None` while the index is being built, or once it was given up.
    pub objects: Option<Vec<Indexed>>,
    pub index_given_up: bool,
    pub disk_bytes: u64,
    pub quota_bytes: u64,
    /// Bytes over the quota its last pass could not free.
    pub quota_overrun_bytes: u64,
    pub book: ShapeBook,
    /// How many objects a list of each shape returns now.
    pub shape_objects: BTreeMap<(PathBuf, ListShape), usize>,
    pub components: BTreeMap<String, Component>,
    /// Valid service-account tokens kept, by component.
    pub tokens: BTreeMap<String, usize>,
    pub write_errors: BTreeMap<PathBuf, WriteError>,
    pub last_collection: Option<CollectionSummary>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub node: String,
    /// Whether an apiserver is healthy now.
    pub online: bool,
    /// Whether the cache index is built (until then nothing is known).
    pub index_ready: bool,
    /// Whether the cache index was given up (too many objects): nothing is
    /// known, and neither garbage collection nor the quota runs, until the
    /// hub restarts with fewer objects cached.
    pub index_given_up: bool,
    pub disk: Disk,
    pub last_collection: Option<CollectionSummary>,
    pub components: Vec<ComponentReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Disk {
    /// Bytes of the cached object files.
    pub used_bytes: u64,
    /// `--disk-cache-max-bytes` (0: no bound).
    pub quota_bytes: u64,
    /// Bytes over the quota kept because they are a kubelet's own Node and
    /// pods, which the quota never removes.
    pub over_quota_kept_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentReport {
    pub name: String,
    /// Named as a cache agent (never collected as idle).
    pub agent: bool,
    /// Acts as this node's kubelet.
    pub kubelet: bool,
    pub last_seen_seconds_ago: Option<i64>,
    pub objects: usize,
    pub bytes: u64,
    pub service_account_tokens: usize,
    pub ready: bool,
    pub verdict: String,
    pub resources: Vec<ResourceReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceReport {
    /// The resource directory (`pods`, `leases.v1.coordination.k8s.io`).
    pub resource: String,
    pub objects: usize,
    pub bytes: u64,
    pub lists: Vec<ListReport>,
    pub last_write_error: Option<ErrorReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListReport {
    pub namespace: String,
    pub label_selector: String,
    pub field_selector: String,
    /// Whether the cache holds a complete list of this shape.
    pub complete: bool,
    /// Seconds since the last complete list was stored (`None`: unknown).
    pub age_seconds: Option<i64>,
    /// Objects a list of this shape returns now.
    pub objects: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorReport {
    pub seconds_ago: i64,
    pub message: String,
}

/// What a component holds, as its verdict needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holding<'a> {
    pub node_name: &'a str,
    pub kubelet: bool,
    /// A kubelet's own Node is cached.
    pub node_held: bool,
    /// A kubelet's list of the pods bound to this node: `Some(complete)`.
    pub pod_list: Option<bool>,
    pub pods: usize,
    pub configmaps: usize,
    pub secrets: usize,
    pub tokens: usize,
    /// Resources with a shape whose list is not complete.
    pub incomplete: Vec<String>,
    pub complete_lists: usize,
    pub objects: usize,
    /// Seconds since the newest complete list (`None`: none, or unknown).
    pub newest_list_age: Option<i64>,
}

/// The verdict on one component: whether it can restart offline, and why.
pub fn verdict(holding: &Holding<'_>) -> (bool, String) {
    let last_list = match holding.newest_list_age {
        Some(age) => format!("; last complete list {} ago", ago(age)),
        None if holding.complete_lists > 0 => "; last complete list of unknown age".into(),
        None => String::new(),
    };
    let incomplete = || {
        format!(
            "not ready to restart offline: incomplete lists of {}",
            holding.incomplete.join(", ")
        )
    };
    if holding.kubelet {
        if !holding.node_held {
            return (
                false,
                format!(
                    "not ready to restart offline: its Node {} is not cached",
                    holding.node_name
                ),
            );
        }
        if holding.pod_list != Some(true) {
            return (
                false,
                format!(
                    "not ready to restart offline: no complete list of its pods (spec.nodeName={})",
                    holding.node_name
                ),
            );
        }
        if !holding.incomplete.is_empty() {
            return (false, incomplete());
        }
        return (
            true,
            format!(
                "ready to restart offline: node, {} held{last_list}",
                [
                    plural(holding.pods, "pod"),
                    plural(holding.configmaps, "configmap"),
                    plural(holding.secrets, "secret"),
                    plural(holding.tokens, "service-account token"),
                ]
                .join(", ")
            ),
        );
    }
    if holding.objects == 0 && holding.complete_lists == 0 {
        return (false, "nothing cached".into());
    }
    if !holding.incomplete.is_empty() {
        return (false, incomplete());
    }
    let lists = match holding.complete_lists {
        0 => "no list (single objects only)".to_string(),
        n => plural(n, "complete list"),
    };
    (
        true,
        format!(
            "ready to restart offline: {lists}, {} held{last_list}",
            plural(holding.objects, "object")
        ),
    )
}

/// `1 pod`, `2 pods`.
fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// A duration an operator reads at a glance: `14 s`, `3 min`, `5 h`, `2 d`.
pub fn ago(seconds: i64) -> String {
    let seconds = seconds.max(0);
    match seconds {
        0..120 => format!("{seconds} s"),
        120..7200 => format!("{} min", seconds / 60),
        7200..172_800 => format!("{} h", seconds / 3600),
        _ => format!("{} d", seconds / 86_400),
    }
}

/// The node a kubelet's list of the pods bound to one of its nodes asks
/// for, if the shape is one.
fn node_pod_list<'a>(shape: &'a ListShape, nodes: &BTreeSet<String>) -> Option<&'a str> {
    if !shape.namespace.is_empty() {
        return None;
    }
    gc::selected_node(&shape.field_selector)
        .filter(|node| nodes.iter().any(|n| n.eq_ignore_ascii_case(node)))
}

/// Whether a name (or a Node's file name) is one of a kubelet's nodes.
fn is_own(name: &str, nodes: &BTreeSet<String>) -> bool {
    nodes
        .iter()
        .any(|n| n.eq_ignore_ascii_case(name) || stored_segment(n).eq_ignore_ascii_case(name))
}

/// Objects of one collection: distinct names (an object cached in JSON and
/// protobuf counts once) and their files' bytes.
#[derive(Default)]
struct Held {
    names: BTreeSet<(Option<String>, String)>,
    bytes: u64,
    /// Distinct names bound to its kubelet's own node (pods).
    bound: BTreeSet<(Option<String>, String)>,
}

/// The report, decided from the facts.
pub(super) fn report(facts: &Facts) -> Report {
    let node = facts.node_name.as_str();
    let no_nodes = BTreeSet::new();
    let mut held: BTreeMap<&Path, Held> = BTreeMap::new();
    for object in facts.objects.iter().flatten() {
        let entry = held.entry(object.dir.as_path()).or_default();
        let stem = object
            .file
            .rsplit_once('.')
            .map_or(object.file.as_str(), |(stem, _)| stem);
        let key = (object.namespace.clone(), stem.to_string());
        let (component, _) = gc::component_and_resource(&object.dir);
        let nodes = facts
            .components
            .get(component)
            .and_then(|c| c.kubelet.as_ref())
            .unwrap_or(&no_nodes);
        if is_own(&object.node_name, nodes) {
            entry.bound.insert(key.clone());
        }
        entry.names.insert(key);
        entry.bytes += object.size;
    }
    let mut dirs: BTreeMap<&str, BTreeSet<&Path>> = BTreeMap::new();
    let all_dirs = held
        .keys()
        .copied()
        .chain(facts.book.keys().map(PathBuf::as_path))
        .chain(facts.write_errors.keys().map(PathBuf::as_path));
    for dir in all_dirs {
        dirs.entry(gc::component_and_resource(dir).0)
            .or_default()
            .insert(dir);
    }
    for name in facts.components.keys() {
        dirs.entry(name.as_str()).or_default();
    }
    let index_ready = facts.objects.is_some();
    let unknown = Component::default();
    let components = dirs
        .into_iter()
        .map(|(name, dirs)| {
            let facts_of = facts.components.get(name).unwrap_or(&unknown);
            let nodes = facts_of.kubelet.as_ref().unwrap_or(&no_nodes);
            // The node it listed the pods of, else the hub's.
            let own_node = facts
                .book
                .get(Path::new(name).join("pods").as_path())
                .into_iter()
                .flat_map(|shapes| shapes.keys())
                .find_map(|shape| node_pod_list(shape, nodes))
                .unwrap_or(node)
                .to_string();
            let mut holding = Holding {
                node_name: &own_node,
                kubelet: facts_of.is_kubelet(),
                tokens: facts.tokens.get(name).copied().unwrap_or(0),
                ..Holding::default()
            };
            let mut newest_list = None;
            let mut resources = Vec::new();
            let (mut objects, mut bytes) = (0, 0);
            for dir in dirs {
                let (_, resource) = gc::component_and_resource(dir);
                let here = held.get(dir);
                let count = here.map_or(0, |h| h.names.len());
                let resource_bytes = here.map_or(0, |h| h.bytes);
                objects += count;
                bytes += resource_bytes;
                match resource {
                    "pods" => holding.pods = here.map_or(0, |h| h.bound.len()),
                    "configmaps" => holding.configmaps = count,
                    "secrets" => holding.secrets = count,
                    "nodes" => {
                        holding.node_held = here.is_some_and(|h| {
                            h.names
                                .iter()
                                .any(|(ns, name)| ns.is_none() && is_own(name, nodes))
                        })
                    }
                    _ => {}
                }
                let mut lists = Vec::new();
                for (shape, record) in facts.book.get(dir).into_iter().flatten() {
                    if record.complete {
                        holding.complete_lists += 1;
                        if record.listed_at > 0 {
                            newest_list = newest_list.max(Some(record.listed_at));
                        }
                    } else if !holding.incomplete.iter().any(|r| r == resource) {
                        holding.incomplete.push(resource.to_string());
                    }
                    if resource == "pods" && node_pod_list(shape, nodes).is_some() {
                        holding.pod_list =
                            Some(holding.pod_list.unwrap_or(false) || record.complete);
                    }
                    lists.push(ListReport {
                        namespace: shape.namespace.clone(),
                        label_selector: shape.label_selector.clone(),
                        field_selector: shape.field_selector.clone(),
                        complete: record.complete,
                        age_seconds: (record.listed_at > 0).then(|| facts.now - record.listed_at),
                        objects: facts
                            .shape_objects
                            .get(&(dir.to_path_buf(), shape.clone()))
                            .copied()
                            .unwrap_or(0),
                    });
                }
                resources.push(ResourceReport {
                    resource: resource.to_string(),
                    objects: count,
                    bytes: resource_bytes,
                    lists,
                    last_write_error: facts.write_errors.get(dir).map(|e| ErrorReport {
                        seconds_ago: facts.now - e.at,
                        message: e.message.clone(),
                    }),
                });
            }
            holding.objects = objects;
            holding.newest_list_age = newest_list.map(|at| facts.now - at);
            let (ready, verdict) = if index_ready {
                verdict(&holding)
            } else if facts.index_given_up {
                (
                    false,
                    "not known: the cache index was given up (too many objects cached)".into(),
                )
            } else {
                (
                    false,
                    "not known yet: the cache index is being built".into(),
                )
            };
            ComponentReport {
                name: name.to_string(),
                agent: facts_of.named_agent,
                kubelet: facts_of.is_kubelet(),
                last_seen_seconds_ago: (facts_of.last_seen > 0)
                    .then(|| facts.now - facts_of.last_seen),
                objects,
                bytes,
                service_account_tokens: holding.tokens,
                ready,
                verdict,
                resources,
            }
        })
        .collect();
    Report {
        node: facts.node_name.clone(),
        online: facts.online,
        index_ready,
        index_given_up: facts.index_given_up,
        disk: Disk {
            used_bytes: facts.disk_bytes,
            quota_bytes: facts.quota_bytes,
            over_quota_kept_bytes: facts.quota_overrun_bytes,
        },
        last_collection: facts.last_collection.clone(),
        components,
    }
}

/// Bytes an operator reads at a glance.
fn size(bytes: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    match bytes {
        0..10_240 => format!("{bytes} B"),
        10_240..10_485_760 => format!("{} KiB", bytes / 1024),
        _ => format!("{} MiB", bytes / MIB),
    }
}

/// One screen of text: the verdicts first, then a line per resource.
pub fn text(report: &Report, now: i64) -> String {
    let mut out = String::new();
    let link = if report.online {
        "an apiserver is healthy"
    } else {
        "no apiserver is healthy, the cache answers"
    };
    let quota = match report.disk.quota_bytes {
        0 => "no quota".to_string(),
        limit => format!("quota {}", size(limit)),
    };
    let _ = write!(
        out,
        "node {}: {link}; cache {} ({quota})",
        report.node,
        size(report.disk.used_bytes)
    );
    match &report.last_collection {
        Some(last) => {
            let removed: u64 = last.removed.values().sum();
            let _ = writeln!(
                out,
                "; last garbage collection {} ago removed {}",
                ago(now - last.at),
                plural(removed as usize + last.components.len(), "item")
            );
        }
        None => out.push('\n'),
    }
    if report.index_given_up {
        out.push_str("the cache index was given up (too many objects cached): nothing is known, garbage collection and the quota do not run until the hub restarts with fewer\n");
    } else if !report.index_ready {
        out.push_str("the cache index is being built: nothing is known yet\n");
    }
    if report.disk.over_quota_kept_bytes > 0 {
        let _ = writeln!(
            out,
            "{} over the quota kept: a kubelet's own Node and pods are never removed",
            size(report.disk.over_quota_kept_bytes)
        );
    }
    let width = report
        .components
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(0);
    for component in &report.components {
        let _ = writeln!(out, "{:width$}  {}", component.name, component.verdict);
    }
    let rows: Vec<(String, &ResourceReport)> = report
        .components
        .iter()
        .flat_map(|c| {
            c.resources
                .iter()
                .map(move |r| (format!("{}/{}", c.name, r.resource), r))
        })
        .collect();
    if rows.is_empty() {
        return out;
    }
    let width = rows.iter().map(|(n, _)| n.len()).max().unwrap_or(0).max(18);
    let _ = writeln!(
        out,
        "\n{:width$}  {:>7}  {:>9}  {:>11}  last write error",
        "component/resource", "objects", "complete", "newest list"
    );
    for (name, resource) in rows.iter().take(TEXT_MAX_RESOURCE_LINES) {
        let complete = resource.lists.iter().filter(|l| l.complete).count();
        let newest = resource
            .lists
            .iter()
            .filter(|l| l.complete)
            .filter_map(|l| l.age_seconds)
            .min()
            .map_or_else(|| "-".to_string(), ago);
        let error = resource
            .last_write_error
            .as_ref()
            .map_or(String::new(), |e| {
                format!("{} ago: {}", ago(e.seconds_ago), e.message)
            });
        let line = format!(
            "{name:width$}  {:>7}  {:>9}  {newest:>11}  {error}",
            resource.objects,
            format!("{complete}/{}", resource.lists.len()),
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
    if rows.len() > TEXT_MAX_RESOURCE_LINES {
        let _ = writeln!(
            out,
            "... {} more (the JSON form, ?format=json, has every one)",
            rows.len() - TEXT_MAX_RESOURCE_LINES
        );
    }
    out
}

impl Cache {
    /// The autonomy report, from memory only. One made within the last
    /// `REPORT_REUSE` with the same link state is reused, so that polling
    /// `/v1/autonomy` and `/metrics` does not copy the index each time.
    pub fn autonomy(&self, online: bool) -> Report {
        let mut last = self.last_report.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, was_online, report)) = &*last
            && *was_online == online
            && at.elapsed() < REPORT_REUSE
        {
            return report.clone();
        }
        let fresh = report(&self.autonomy_facts(online));
        *last = Some((Instant::now(), online, fresh.clone()));
        fresh
    }

    /// The autonomy report made now.
    #[cfg(test)]
    pub fn autonomy_now(&self, online: bool) -> Report {
        report(&self.autonomy_facts(online))
    }

    fn autonomy_facts(&self, online: bool) -> Facts {
        let now = now_unix();
        let book = self.listings.snapshot();
        let (objects, disk_bytes) = match self.index.objects() {
            Some((objects, bytes)) => (Some(objects), bytes),
            None => (None, 0),
        };
        let components = self.component_facts(objects.as_deref().unwrap_or_default(), &book);
        let mut shape_objects = BTreeMap::new();
        for (dir, shapes) in &book {
            for (shape, record) in shapes {
                let count = [Encoding::Json, Encoding::Protobuf]
                    .into_iter()
                    .filter(|e| record.encodings.contains(e.extension()))
                    .filter_map(|e| self.files_of_shape(dir, e, shape))
                    .map(|found| found.files.len() + found.undecided)
                    .max()
                    .unwrap_or(0);
                shape_objects.insert((dir.clone(), shape.clone()), count);
            }
        }
        Facts {
            node_name: self.upkeep.node_name.clone(),
            now,
            online,
            objects,
            index_given_up: self.index.given_up(),
            disk_bytes,
            quota_bytes: self.upkeep.quota_bytes,
            quota_overrun_bytes: self
                .stats
                .quota_overrun_bytes
                .load(std::sync::atomic::Ordering::Relaxed),
            book,
            shape_objects,
            components,
            tokens: self.tokens_kept.valid_by_component(now),
            write_errors: self
                .write_errors
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            last_collection: self.last_collection(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::lists::ListRecord;

    fn holding() -> Holding<'static> {
        Holding {
            node_name: "edge-1",
            kubelet: true,
            node_held: true,
            pod_list: Some(true),
            pods: 12,
            configmaps: 9,
            secrets: 4,
            tokens: 2,
            incomplete: vec![],
            complete_lists: 15,
            objects: 27,
            newest_list_age: Some(14),
        }
    }

    #[test]
    fn verdicts_say_what_is_held_and_what_is_missing() {
        let other = Holding {
            kubelet: false,
            ..holding()
        };
        #[rustfmt::skip]
        let rows: Vec<(Holding, bool, &str)> = vec![
            (holding(), true, "ready to restart offline: node, 12 pods, 9 configmaps, 4 secrets, 2 service-account tokens held; last complete list 14 s ago"),
            (Holding { node_held: false, ..holding() }, false, "not ready to restart offline: its Node edge-1 is not cached"),
            (Holding { pod_list: None, ..holding() }, false, "not ready to restart offline: no complete list of its pods (spec.nodeName=edge-1)"),
            (Holding { pod_list: Some(false), ..holding() }, false, "not ready to restart offline: no complete list of its pods (spec.nodeName=edge-1)"),
            (Holding { incomplete: vec!["secrets".into()], ..holding() }, false, "not ready to restart offline: incomplete lists of secrets"),
            (Holding { pods: 1, configmaps: 0, secrets: 0, tokens: 0, newest_list_age: None, ..holding() }, true, "ready to restart offline: node, 1 pod, 0 configmaps, 0 secrets, 0 service-account tokens held; last complete list of unknown age"),
            (other.clone(), true, "ready to restart offline: 15 complete lists, 27 objects held; last complete list 14 s ago"),
            (Holding { complete_lists: 0, newest_list_age: None, ..other.clone() }, true, "ready to restart offline: no list (single objects only), 27 objects held"),
            (Holding { complete_lists: 0, objects: 0, newest_list_age: None, ..other.clone() }, false, "nothing cached"),
            (Holding { incomplete: vec!["services".into(), "endpoints".into()], ..other }, false, "not ready to restart offline: incomplete lists of services, endpoints"),
        ];
        for (holding, ready, text) in rows {
            assert_eq!(verdict(&holding), (ready, text.to_string()), "{holding:?}");
        }
    }

    #[test]
    fn ages_read_at_a_glance() {
        for (seconds, text) in [
            (-3, "0 s"),
            (14, "14 s"),
            (119, "119 s"),
            (120, "2 min"),
            (7199, "119 min"),
            (7200, "2 h"),
            (172_800, "2 d"),
        ] {
            assert_eq!(ago(seconds), text);
        }
    }

    fn object(path: &str, node_name: &str, size: u64) -> Indexed {
        let parts: Vec<&str> = path.split('/').collect();
        let (dir, namespace, file) = match parts.as_slice() {
            [c, r, file] => (format!("{c}/{r}"), None, *file),
            [c, r, ns, file] => (format!("{c}/{r}"), Some(ns.to_string()), *file),
            _ => panic!("{path}"),
        };
        Indexed {
            dir: dir.into(),
            encoding: Encoding::Json,
            namespace,
            name: file.split('.').next().unwrap().into(),
            file: file.into(),
            node_name: node_name.into(),
            resource_version: 1,
            size,
            written_at: 0,
        }
    }

    fn shape(namespace: &str, fields: &str) -> ListShape {
        ListShape {
            namespace: namespace.into(),
            label_selector: String::new(),
            field_selector: fields.into(),
        }
    }

    fn record(complete: bool, listed_at: i64) -> ListRecord {
        ListRecord {
            complete,
            listed_at,
            resource_version: 1,
            encodings: ["json".to_string()].into(),
            members: None,
        }
    }

    #[test]
    fn the_report_counts_objects_once_and_judges_each_component() {
        let now = 1000;
        let objects = vec![
            object("kubemark/nodes/edge-1.pb", "", 10),
            object("kubemark/pods/a/p1.pb", "edge-1", 10),
            object("kubemark/pods/a/p1.json", "edge-1", 10),
            object("kubemark/pods/a/p2.pb", "edge-2", 10),
            object("kubemark/configmaps/a/c1.pb", "", 10),
            object("kube-proxy/services/a/s1.json", "", 10),
        ];
        let mut book = ShapeBook::new();
        book.entry("kubemark/pods".into())
            .or_default()
            .insert(shape("", "spec.nodeName=edge-1"), record(true, 986));
        book.entry("kubemark/configmaps".into())
            .or_default()
            .insert(shape("a", "metadata.name=c1"), record(true, 900));
        book.entry("kube-proxy/services".into())
            .or_default()
            .insert(shape("", ""), record(false, 0));
        let components: BTreeMap<String, Component> = [
            (
                "kubemark".to_string(),
                Component {
                    named_agent: true,
                    kubelet: Some(["edge-1".to_string()].into()),
                    last_seen: 990,
                },
            ),
            (
                "kube-proxy".to_string(),
                Component {
                    named_agent: true,
                    kubelet: None,
                    last_seen: 0,
                },
            ),
        ]
        .into();
        let facts = Facts {
            node_name: "edge-1".into(),
            now,
            online: false,
            objects: Some(objects),
            index_given_up: false,
            disk_bytes: 60,
            quota_bytes: 0,
            quota_overrun_bytes: 0,
            book,
            shape_objects: [(
                ("kubemark/pods".into(), shape("", "spec.nodeName=edge-1")),
                1,
            )]
            .into(),
            components,
            tokens: [("kubemark".to_string(), 2)].into(),
            write_errors: [(
                PathBuf::from("kube-proxy/services"),
                WriteError {
                    at: 990,
                    message: "disk full".into(),
                },
            )]
            .into(),
            last_collection: None,
        };
        let report = report(&facts);
        let kubemark = &report.components[1];
        assert_eq!(kubemark.name, "kubemark");
        assert_eq!(
            (kubemark.ready, kubemark.verdict.as_str()),
            (
                true,
                "ready to restart offline: node, 1 pod, 1 configmap, 0 secrets, 2 service-account tokens held; last complete list 14 s ago"
            )
        );
        assert_eq!(kubemark.objects, 4, "p1 counts once, p2 too");
        assert_eq!(kubemark.bytes, 50);
        assert_eq!(kubemark.last_seen_seconds_ago, Some(10));
        let pods = &kubemark.resources[2];
        assert_eq!((pods.resource.as_str(), pods.lists[0].objects), ("pods", 1));
        assert_eq!(pods.lists[0].age_seconds, Some(14));
        let proxy = &report.components[0];
        assert_eq!(
            (proxy.ready, proxy.verdict.as_str()),
            (
                false,
                "not ready to restart offline: incomplete lists of services"
            )
        );
        assert_eq!(
            proxy.resources[0].last_write_error,
            Some(ErrorReport {
                seconds_ago: 10,
                message: "disk full".into()
            })
        );
        let text = text(&report, now);
        assert!(
            text.starts_with("node edge-1: no apiserver is healthy"),
            "{text}"
        );
        assert!(
            text.contains("\nkubemark    ready to restart offline: node, 1 pod"),
            "{text}"
        );
        assert!(text.contains("kube-proxy/services"), "{text}");
        assert!(text.contains("10 s ago: disk full"), "{text}");
        assert!(text.lines().count() < 25, "{text}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(
            json["components"][1]["resources"][2]["lists"][0]["complete"],
            true
        );
        assert_eq!(json["components"][1]["serviceAccountTokens"], 2);

        let building = Facts {
            objects: None,
            ..facts
        };
        let report = super::report(&building);
        assert!(!report.index_ready);
        assert!(report.components.iter().all(|c| !c.ready));
    }
}
