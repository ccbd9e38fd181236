//! Garbage collection and the disk quota, decided. Pure: from what the
//! index holds, the list shapes and who the components are, which objects
//! and components leave the cache, and in which order the quota removes
//! objects. The writer thread applies the decisions (`upkeep.rs`), so the
//! index, the list shapes and the disk never disagree.
//!
//! What a kubelet needs to start its pods offline is decided by who asked
//! for it, not by reading pod specs: a kubelet reads only what its node and
//! its pods need (its Node, the pods bound to it, their ConfigMaps, Secrets,
//! volumes' claims, the Services for their environment, its tokens). So
//! everything a kubelet cached is needed, except other nodes' Node objects
//! and events. A component is a kubelet when it is `kubelet`, or when it
//! listed the pods bound to this node (`fieldSelector=spec.nodeName=<node>`,
//! the node's name in any case), as a renamed kubelet (kubemark) does. Which
//! node is its own is what it listed: the `spec.nodeName=X` of its own pod
//! list (kubelet registers under a lowercased host name or its
//! `--hostname-override`, which need not be the hub's `--node-name`), and
//! the hub's node name besides; names compare case-insensitively. Garbage
//! collection never removes a kubelet whole, removes its pods only when a
//! complete list of their shape showed them gone, and the quota never
//! removes a kubelet's own Node or the pods bound to it (it counts and logs
//! the overrun instead) and removes the rest of what a kubelet needs last.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::index::Indexed;

/// How long an event lives after it was last written: kube-apiserver's
/// `--event-ttl` default; the cloud has removed it by then.
pub const EVENT_TTL_SECONDS: i64 = 3600;
/// The quota, once passed, removes objects until the cache is back under
/// this share of it, so that it does not run on every write.
pub const QUOTA_LOW_WATER_PERCENT: u64 = 90;
/// The disk block a file's size is rounded up to in the quota's accounting:
/// a file of 300 bytes takes 4 KiB on ext4 and xfs.
pub const DISK_BLOCK_BYTES: u64 = 4096;

/// The bytes a file of `len` bytes takes on disk, in whole blocks.
pub fn disk_size(len: u64) -> u64 {
    len.div_ceil(DISK_BLOCK_BYTES)
        .saturating_mul(DISK_BLOCK_BYTES)
}

/// What an object is to garbage collection and the quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// An event (core or `events.k8s.io`): never needed offline.
    Event,
    /// A kubelet's pod bound to a node that is not its own.
    OtherNodePod,
    /// A kubelet's copy of another node's Node.
    OtherNode,
    /// An object of a component not named as a cache agent (cached for
    /// `Edge-Cache: true`, or only through `*`).
    Unnamed,
    /// An object of a named cache agent.
    Agent,
    /// What a kubelet needs to start its pods offline.
    KubeletNeeds,
    /// A kubelet's own Node and the pods bound to it: the quota never
    /// removes them.
    KubeletOwn,
}

impl Class {
    /// The quota's order: lower ranks go first; `None`: never by the quota.
    pub fn quota_rank(self) -> Option<u8> {
        match self {
            Class::Event | Class::OtherNodePod | Class::OtherNode => Some(0),
            Class::Unnamed => Some(1),
            Class::Agent => Some(2),
            Class::KubeletNeeds => Some(3),
            Class::KubeletOwn => None,
        }
    }
}

/// What the hub knows of one component.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Component {
    /// Named by the defaults, `--cache-agents` or the ConfigMap (`*` names
    /// nobody).
    pub named_agent: bool,
    /// `Some` when it acts as a kubelet: the names of its own node,
    /// lowercased (`kubelet_nodes`).
    pub kubelet: Option<BTreeSet<String>>,
    /// The last request the hub saw from it or the newest of its files,
    /// Unix seconds.
    pub last_seen: i64,
}

impl Component {
    pub fn is_kubelet(&self) -> bool {
        self.kubelet.is_some()
    }
}

/// Why an object or a component leaves the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rule {
    ExpiredEvent,
    NotInLastList,
    IdleComponent,
}

impl Rule {
    pub const ALL: [Rule; 3] = [Rule::ExpiredEvent, Rule::NotInLastList, Rule::IdleComponent];

    pub const fn name(self) -> &'static str {
        match self {
            Rule::ExpiredEvent => "expired_event",
            Rule::NotInLastList => "not_in_last_list",
            Rule::IdleComponent => "idle_component",
        }
    }
}

/// What a collection removes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Objects (by their position in the input) and why.
    pub objects: Vec<(usize, Rule)>,
    /// Components removed whole (their directory name).
    pub components: Vec<String>,
}

/// A collection's settings.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub now: i64,
    /// A component not named as an agent and not seen for this long leaves.
    pub component_idle_seconds: i64,
}

/// A collection directory's component and resource directory.
pub fn component_and_resource(collection_dir: &Path) -> (&str, &str) {
    let mut parts = collection_dir
        .components()
        .map(|c| c.as_os_str().to_str().unwrap_or_default());
    (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    )
}

/// Whether a resource directory holds events.
pub fn is_event_resource(resource_dir: &str) -> bool {
    resource_dir == "events"
        || (resource_dir.starts_with("events.") && resource_dir.ends_with(".events.k8s.io"))
}

/// Whether a component's directory name may be remembered as seen and
/// collected when idle: a component's cache directory, never one of the
/// cache's own (`_tokens`, `_discovery`, `_quarantine`, anything starting
/// with `_`) nor anything that is not one path segment.
pub fn is_component_dir_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.starts_with('_')
        && !name
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control())
}

/// The node a pod list's field selector asks for the pods of
/// (`spec.nodeName=X` or `==`), if it does.
pub fn selected_node(field_selector: &str) -> Option<&str> {
    field_selector.split(',').find_map(|term| {
        term.strip_prefix("spec.nodeName")
            .and_then(|rest| rest.strip_prefix("==").or_else(|| rest.strip_prefix('=')))
            .filter(|node| !node.is_empty())
    })
}

/// Whether a component acts as a kubelet and, if so, the names of its own
/// node (lowercased). `node_pod_selectors` are the field selectors of its
/// pod lists of every namespace. `kubelet` is one whatever it listed: its
/// nodes are the ones it listed the pods of, and the hub's. Another
/// component is one when it listed the pods of the hub's node (any case).
pub fn kubelet_nodes<'a>(
    component: &str,
    node_pod_selectors: impl Iterator<Item = &'a str>,
    node_name: &str,
) -> Option<BTreeSet<String>> {
    let is_named_kubelet = component == "kubelet";
    let mut nodes: BTreeSet<String> = node_pod_selectors
        .filter_map(selected_node)
        .filter(|node| is_named_kubelet || node.eq_ignore_ascii_case(node_name))
        .map(str::to_ascii_lowercase)
        .collect();
    if !is_named_kubelet && nodes.is_empty() {
        return None;
    }
    if !node_name.is_empty() {
        nodes.insert(node_name.to_ascii_lowercase());
    }
    Some(nodes)
}

/// Whether `name` is one of a kubelet's own nodes (lowercased names).
fn is_own_node(name: &str, nodes: &BTreeSet<String>) -> bool {
    nodes.iter().any(|node| node.eq_ignore_ascii_case(name))
}

/// What one object is, for its component.
pub fn classify(object: &Indexed, component: &Component) -> Class {
    let (_, resource) = component_and_resource(&object.dir);
    if is_event_resource(resource) {
        return Class::Event;
    }
    if let Some(nodes) = &component.kubelet {
        return match resource {
            // A pod whose node the index could not read: kept as needed.
            "pods" if object.node_name.is_empty() => Class::KubeletNeeds,
            "pods" if is_own_node(&object.node_name, nodes) => Class::KubeletOwn,
            "pods" => Class::OtherNodePod,
            "nodes" if is_own_node(&object.name, nodes) => Class::KubeletOwn,
            "nodes" => Class::OtherNode,
            _ => Class::KubeletNeeds,
        };
    }
    if component.named_agent {
        Class::Agent
    } else {
        Class::Unnamed
    }
}

/// The files a shape's last complete list no longer held: of those a list
/// of the shape selects now (each with its resourceVersion), the ones not
/// among its members and not newer than it (a newer one came after the
/// list, from a watch). Nothing when the list's resourceVersion is unknown.
pub fn not_in_last_list(
    selected: &[(PathBuf, u64)],
    list_resource_version: u64,
    members: &BTreeSet<PathBuf>,
) -> Vec<PathBuf> {
    if list_resource_version == 0 {
        return Vec::new();
    }
    selected
        .iter()
        .filter(|(path, resource_version)| {
            *resource_version != 0
                && *resource_version <= list_resource_version
                && !members.contains(path)
        })
        .map(|(path, _)| path.clone())
        .collect()
}

/// Each component's facts, from who the agents are, which components are
/// kubelets (with their nodes), when each was last seen (requests) and its
/// newest file. The cache's own directories are never components.
pub fn components(
    objects: &[Indexed],
    named_agent: impl Fn(&str) -> bool,
    kubelets: &BTreeMap<String, BTreeSet<String>>,
    seen: &BTreeMap<String, i64>,
) -> BTreeMap<String, Component> {
    let mut out: BTreeMap<String, Component> = BTreeMap::new();
    let mut note = |name: &str, at: i64| {
        if !is_component_dir_name(name) {
            return;
        }
        let component = out.entry(name.to_string()).or_insert_with(|| Component {
            named_agent: named_agent(name),
            kubelet: kubelets.get(name).cloned(),
            last_seen: 0,
        });
        component.last_seen = component.last_seen.max(at);
    };
    for object in objects {
        note(component_and_resource(&object.dir).0, object.written_at);
    }
    for (name, at) in seen {
        note(name, *at);
    }
    for name in kubelets.keys() {
        note(name, 0);
    }
    out
}

/// What a collection removes: events past their time, what the last
/// complete list of a shape no longer held (`not_in_last_list`, the files),
/// and components neither named as agents nor kubelets and not seen for the
/// idle time (whole). A kubelet's pods leave only by the second rule: the
/// pods bound to a node are what a complete list of its pods returns.
pub fn collect(
    objects: &[Indexed],
    components: &BTreeMap<String, Component>,
    not_in_last_list: &BTreeSet<PathBuf>,
    settings: Settings,
) -> Decision {
    let idle: BTreeSet<&str> = components
        .iter()
        .filter(|(name, c)| {
            is_component_dir_name(name)
                && !c.named_agent
                && !c.is_kubelet()
                && settings.now - c.last_seen > settings.component_idle_seconds
        })
        .map(|(name, _)| name.as_str())
        .collect();
    let mut decision = Decision {
        components: idle.iter().map(|name| name.to_string()).collect(),
        ..Decision::default()
    };
    for (i, object) in objects.iter().enumerate() {
        let (name, resource) = component_and_resource(&object.dir);
        if idle.contains(name) {
            continue;
        }
        let rule = if is_event_resource(resource) {
            (settings.now - object.written_at > EVENT_TTL_SECONDS).then_some(Rule::ExpiredEvent)
        } else {
            None
        }
        .or_else(|| {
            not_in_last_list
                .contains(&object.path())
                .then_some(Rule::NotInLastList)
        });
        if let Some(rule) = rule {
            decision.objects.push((i, rule));
        }
    }
    decision
}

/// The objects the quota removes, in order (positions in the input), so
/// that `used` bytes fall to `QUOTA_LOW_WATER_PERCENT` of `limit`: by class
/// (`Class::quota_rank`), then the least recently written first, then by
/// file; never a kubelet's own Node or pods. With them, the bytes still
/// over the limit once they are gone (what the quota could not free).
/// Nothing while `used` is within `limit`; `limit` 0 is no quota.
pub fn evictions(
    objects: &[Indexed],
    classes: &[Class],
    used: u64,
    limit: u64,
) -> (Vec<usize>, u64) {
    if limit == 0 || used <= limit {
        return (Vec::new(), 0);
    }
    let target = limit / 100 * QUOTA_LOW_WATER_PERCENT;
    let mut order: Vec<(u8, usize)> = (0..objects.len())
        .filter_map(|i| Some((classes[i].quota_rank()?, i)))
        .collect();
    order.sort_by_cached_key(|&(rank, i)| (rank, objects[i].written_at, objects[i].path()));
    let mut left = used;
    let victims: Vec<usize> = order
        .into_iter()
        .map(|(_, i)| i)
        .take_while(|&i| {
            let over = left > target;
            if over {
                left = left.saturating_sub(objects[i].size);
            }
            over
        })
        .collect();
    (victims, left.saturating_sub(limit))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Encoding;

    const NODE: &str = "edge-1";
    const NOW: i64 = 1_000_000;
    const DAY: i64 = 86_400;

    fn object(path: &str, node_name: &str, written_at: i64, size: u64) -> Indexed {
        let parts: Vec<&str> = path.split('/').collect();
        let (dir, namespace, file) = match parts.as_slice() {
            [c, r, file] => (format!("{c}/{r}"), None, *file),
            [c, r, ns, file] => (format!("{c}/{r}"), Some(ns.to_string()), *file),
            _ => panic!("{path}"),
        };
        let name = file.split('.').next().unwrap();
        Indexed {
            dir: dir.into(),
            encoding: Encoding::Json,
            namespace,
            file: file.into(),
            name: name.into(),
            node_name: node_name.into(),
            resource_version: 5,
            size,
            written_at,
        }
    }

    fn nodes(names: &[&str]) -> Option<BTreeSet<String>> {
        Some(names.iter().map(|n| n.to_string()).collect())
    }

    fn facts(named_agent: bool, kubelet: bool, last_seen: i64) -> Component {
        Component {
            named_agent,
            kubelet: if kubelet { nodes(&[NODE]) } else { None },
            last_seen,
        }
    }

    fn settings() -> Settings {
        Settings {
            now: NOW,
            component_idle_seconds: 30 * DAY,
        }
    }

    #[test]
    fn a_kubelet_is_kubelet_or_whoever_lists_this_nodes_pods_and_its_node_is_what_it_listed() {
        type Row<'a> = (&'a str, &'a [&'a str], &'a str, Option<&'a [&'a str]>);
        #[rustfmt::skip]
        let rows: &[Row] = &[
            ("kubelet", &[], NODE, Some(&[NODE])),
            // kubelet registered under a lowercased name or --hostname-override.
            ("kubelet", &["spec.nodeName=edge-1"], "Edge-1", Some(&[NODE])),
            ("kubelet", &["spec.nodeName=worker-7"], NODE, Some(&["worker-7", NODE])),
            ("kubelet", &["spec.nodeName=Worker-7"], "", Some(&["worker-7"])),
            ("kubemark", &["spec.nodeName=edge-1"], NODE, Some(&[NODE])),
            ("kubemark", &["spec.nodeName==edge-1"], NODE, Some(&[NODE])),
            ("kubemark", &["spec.nodeName=edge-1"], "EDGE-1", Some(&[NODE])),
            ("agent", &["", "status.phase=Running,spec.nodeName=edge-1"], NODE, Some(&[NODE])),
            // Listing another node's pods makes nobody a kubelet of this node.
            ("agent", &["spec.nodeName=edge-10"], NODE, None),
            ("agent", &["spec.nodeName!=edge-1"], NODE, None),
            ("agent", &["spec.nodeName="], NODE, None),
            ("agent", &[""], NODE, None),
        ];
        for &(component, selectors, node, expected) in rows {
            assert_eq!(
                kubelet_nodes(component, selectors.iter().copied(), node),
                expected.and_then(nodes),
                "{component} {selectors:?} {node}"
            );
        }
    }

    #[test]
    fn only_component_directories_are_components() {
        #[rustfmt::skip]
        let rows: &[(&str, bool)] = &[
            ("kubelet", true),
            ("kube-proxy", true),
            ("long%0123456789abcdef", true),
            ("_tokens", false),
            ("_discovery", false),
            ("_quarantine", false),
            ("_anything", false),
            ("", false),
            (".", false),
            ("..", false),
            ("a/b", false),
            ("a\\b", false),
            ("a\nb", false),
        ];
        for &(name, expected) in rows {
            assert_eq!(is_component_dir_name(name), expected, "{name:?}");
        }
    }

    #[test]
    fn objects_are_classed_by_who_cached_them_and_what_they_are() {
        let kubelet = facts(true, true, NOW);
        // The hub's --node-name is Edge-1; kubelet listed spec.nodeName=edge-1.
        let mismatched = Component {
            kubelet: kubelet_nodes("kubelet", ["spec.nodeName=edge-1"].into_iter(), "Edge-1"),
            ..kubelet.clone()
        };
        let agent = facts(true, false, NOW);
        let unnamed = facts(false, false, NOW);
        #[rustfmt::skip]
        let rows: &[(&str, &str, &Component, Class)] = &[
            ("kubelet/pods/a/p1.pb", NODE, &kubelet, Class::KubeletOwn),
            ("kubelet/pods/a/p1.pb", "Edge-1", &kubelet, Class::KubeletOwn),
            ("kubelet/pods/a/p2.pb", "edge-2", &kubelet, Class::OtherNodePod),
            ("kubelet/pods/a/p3.pb", "", &kubelet, Class::KubeletNeeds),
            ("kubelet/nodes/edge-1.pb", "", &kubelet, Class::KubeletOwn),
            ("kubelet/nodes/edge-2.pb", "", &kubelet, Class::OtherNode),
            ("kubelet/configmaps/a/c1.json", "", &kubelet, Class::KubeletNeeds),
            ("kubelet/secrets/a/s1.json", "", &kubelet, Class::KubeletNeeds),
            ("kubelet/services/default/kubernetes.json", "", &kubelet, Class::KubeletNeeds),
            ("kubelet/events/a/e1.json", "", &kubelet, Class::Event),
            ("kubelet/events.v1.events.k8s.io/a/e1.json", "", &kubelet, Class::Event),
            ("kubelet/pods/a/p1.pb", NODE, &mismatched, Class::KubeletOwn),
            ("kubelet/nodes/edge-1.pb", "", &mismatched, Class::KubeletOwn),
            ("kube-proxy/pods/a/p2.json", "edge-2", &agent, Class::Agent),
            ("kube-proxy/services/a/s.json", "", &agent, Class::Agent),
            ("kubectl/configmaps/a/c1.json", "", &unnamed, Class::Unnamed),
            ("kubectl/events/a/e1.json", "", &unnamed, Class::Event),
            ("kubectl/eventsources.v1.example.com/a/e1.json", "", &unnamed, Class::Unnamed),
        ];
        for (path, node_name, component, class) in rows {
            let object = object(path, node_name, NOW, 1);
            assert_eq!(classify(&object, component), *class, "{path} {component:?}");
        }
    }

    #[test]
    fn collection_removes_only_what_its_rules_name_and_never_what_a_kubelet_needs() {
        let objects = [
            object("kubelet/pods/a/p1.pb", NODE, NOW - 90 * DAY, 1),
            // Bound elsewhere: still in the cloud, left to its list's rule.
            object("kubelet/pods/a/elsewhere.pb", "edge-2", NOW, 1),
            object("kubelet/nodes/edge-1.pb", "", NOW - 90 * DAY, 1),
            object("kubelet/configmaps/a/c1.pb", "", NOW - 90 * DAY, 1),
            object(
                "kubelet/events/a/old.pb",
                "",
                NOW - EVENT_TTL_SECONDS - 1,
                1,
            ),
            object("kubelet/events/a/new.pb", "", NOW - EVENT_TTL_SECONDS, 1),
            object("kubelet/pods/a/deleted.pb", NODE, NOW, 1),
            object("kube-proxy/services/a/deleted.json", "", NOW, 1),
            object("kube-proxy/services/a/kept.json", "", NOW - 90 * DAY, 1),
            object("kubectl/configmaps/a/c1.json", "", NOW - 31 * DAY, 1),
            object("fresh/configmaps/a/c1.json", "", NOW - 29 * DAY, 1),
            object("kubemark/pods/a/p1.pb", NODE, NOW - 90 * DAY, 1),
            object("_tokens/kubelet/a/t.json", "", NOW - 90 * DAY, 1),
        ];
        let components: BTreeMap<String, Component> = [
            ("kubelet", facts(true, true, NOW)),
            ("kube-proxy", facts(true, false, NOW - 90 * DAY)),
            ("kubectl", facts(false, false, NOW - 31 * DAY)),
            ("fresh", facts(false, false, NOW - 29 * DAY)),
            // Not an agent, not seen for long, but this node's kubelet.
            ("kubemark", facts(false, true, NOW - 90 * DAY)),
            // Never a component, whatever a client called itself.
            ("_tokens", facts(false, false, NOW - 90 * DAY)),
            ("_discovery", facts(false, false, NOW - 90 * DAY)),
        ]
        .into_iter()
        .map(|(n, c)| (n.to_string(), c))
        .collect();
        let stale: BTreeSet<PathBuf> = [
            "kubelet/pods/a/deleted.pb".into(),
            "kube-proxy/services/a/deleted.json".into(),
            "kubectl/configmaps/a/c1.json".into(),
        ]
        .into();
        let decision = collect(&objects, &components, &stale, settings());
        let removed: Vec<(&str, Rule)> = decision
            .objects
            .iter()
            .map(|&(i, rule)| (objects[i].file.as_str(), rule))
            .collect();
        assert_eq!(
            removed,
            [
                ("old.pb", Rule::ExpiredEvent),
                ("deleted.pb", Rule::NotInLastList),
                ("deleted.json", Rule::NotInLastList),
            ]
        );
        assert_eq!(decision.components, ["kubectl"]);
    }

    #[test]
    fn a_shapes_stale_members_are_older_than_its_list_and_not_in_it() {
        let selected = [
            (PathBuf::from("c/r/a/in.json"), 5),
            (PathBuf::from("c/r/a/gone.json"), 5),
            (PathBuf::from("c/r/a/newer.json"), 11),
            (PathBuf::from("c/r/a/unknown.json"), 0),
        ];
        let members: BTreeSet<PathBuf> = [PathBuf::from("c/r/a/in.json")].into();
        assert_eq!(
            not_in_last_list(&selected, 10, &members),
            [PathBuf::from("c/r/a/gone.json")]
        );
        assert!(not_in_last_list(&selected, 0, &members).is_empty());
    }

    #[test]
    fn files_take_whole_disk_blocks() {
        for (len, on_disk) in [(0, 0), (1, 4096), (4096, 4096), (4097, 8192)] {
            assert_eq!(disk_size(len), on_disk, "{len}");
        }
    }

    #[test]
    fn the_quota_removes_by_class_then_oldest_until_under_its_low_water() {
        let objects = [
            object("kubelet/pods/a/p1.pb", NODE, 10, 100),
            object("kubelet/configmaps/a/c1.pb", "", 1, 100),
            object("kube-proxy/services/a/s1.json", "", 5, 100),
            object("kube-proxy/services/a/s2.json", "", 2, 100),
            object("kubectl/configmaps/a/c1.json", "", 50, 100),
            object("kubelet/events/a/e1.pb", "", 60, 100),
        ];
        let components: BTreeMap<&str, Component> = [
            ("kubelet", facts(true, true, NOW)),
            ("kube-proxy", facts(true, false, NOW)),
            ("kubectl", facts(false, false, NOW)),
        ]
        .into();
        let classes: Vec<Class> = objects
            .iter()
            .map(|o| classify(o, &components[component_and_resource(&o.dir).0]))
            .collect();
        let files = |limit: u64| -> (Vec<String>, u64) {
            let (victims, over) = evictions(&objects, &classes, 600, limit);
            let files = victims
                .into_iter()
                .map(|i| objects[i].path().display().to_string())
                .collect();
            (files, over)
        };
        assert_eq!(files(0), (vec![], 0), "no quota");
        assert_eq!(files(600), (vec![], 0), "within it");
        // 600 used, limit 500: down to 450, two objects go.
        assert_eq!(
            files(500).0,
            ["kubelet/events/a/e1.pb", "kubectl/configmaps/a/c1.json"]
        );
        assert_eq!(
            files(300).0,
            [
                "kubelet/events/a/e1.pb",
                "kubectl/configmaps/a/c1.json",
                "kube-proxy/services/a/s2.json",
                "kube-proxy/services/a/s1.json",
            ]
        );
        // Last of all what the kubelet needs; never its pod: 100 bytes over.
        let (last, over) = files(50);
        assert_eq!(last.len(), 5);
        assert_eq!(last[4], "kubelet/configmaps/a/c1.pb");
        assert_eq!(over, 50);
    }

    #[test]
    fn a_kubelet_whose_node_is_not_the_hubs_node_name_keeps_its_node_and_pods() {
        // The hub runs with --node-name Edge-1; kubelet registered edge-1.
        let kubelet = Component {
            named_agent: true,
            kubelet: kubelet_nodes("kubelet", ["spec.nodeName=edge-1"].into_iter(), "Edge-1"),
            last_seen: NOW,
        };
        let objects = [
            object("kubelet/pods/a/p1.pb", "edge-1", 1, 100),
            object("kubelet/nodes/edge-1.pb", "", 1, 100),
            object("kubelet/configmaps/a/c1.pb", "", 1, 100),
            object("kubectl/configmaps/a/c1.json", "", 50, 100),
        ];
        let classes: Vec<Class> = objects
            .iter()
            .map(|o| {
                let (name, _) = component_and_resource(&o.dir);
                let unnamed = facts(false, false, NOW);
                classify(
                    o,
                    if name == "kubelet" {
                        &kubelet
                    } else {
                        &unnamed
                    },
                )
            })
            .collect();
        let (victims, _) = evictions(&objects, &classes, 400, 300);
        assert_eq!(victims, [3, 2], "the unnamed first, then the configmap");
        let (victims, over) = evictions(&objects, &classes, 400, 100);
        assert_eq!(victims, [3, 2]);
        assert_eq!(over, 100, "node and pod kept: the overrun is counted");
    }

    #[test]
    fn components_are_seen_by_their_requests_and_their_newest_file() {
        let objects = [
            object("kubectl/configmaps/a/c1.json", "", 40, 1),
            object("kubectl/configmaps/a/c2.json", "", 70, 1),
            object("kubelet/pods/a/p1.json", NODE, 10, 1),
            object("_tokens/x/a/t.json", "", 10, 1),
        ];
        let kubelets: BTreeMap<String, BTreeSet<String>> = [
            ("kubelet".to_string(), nodes(&[NODE]).unwrap()),
            ("kubemark".to_string(), nodes(&[NODE]).unwrap()),
        ]
        .into();
        let seen: BTreeMap<String, i64> = [
            ("kubelet".to_string(), 90),
            ("curl".to_string(), 5),
            ("_tokens".to_string(), 5),
        ]
        .into();
        let found = components(&objects, |c| c == "kubelet", &kubelets, &seen);
        assert_eq!(found["kubectl"], facts(false, false, 70));
        assert_eq!(found["kubelet"], facts(true, true, 90));
        assert_eq!(found["curl"], facts(false, false, 5));
        assert_eq!(found["kubemark"], facts(false, true, 0), "known, no files");
        assert!(!found.contains_key("_tokens"));
    }
}
