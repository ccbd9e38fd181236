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
//! everything a kubelet cached is needed, except pods bound to another node,
//! other nodes' Node objects and events. A component is a kubelet when it is
//! `kubelet` or it listed the pods bound to this node
//! (`fieldSelector=spec.nodeName=<node>`), as a renamed kubelet (kubemark)
//! does. Garbage collection never removes a kubelet whole, never removes
//! its node or its bound pods unless a complete list showed them gone, and
//! the quota removes what it needs last of all.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::index::Indexed;

/// How long an event lives after it was last written: kube-apiserver's
/// `--event-ttl` default; the cloud has removed it by then.
pub const EVENT_TTL_SECONDS: i64 = 3600;
/// The quota, once passed, removes objects until the cache is back under
/// this share of it, so that it does not run on every write.
pub const QUOTA_LOW_WATER_PERCENT: u64 = 90;

/// What an object is to garbage collection and the quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// An event (core or `events.k8s.io`): never needed offline.
    Event,
    /// A kubelet's pod bound to another node, or to none.
    UnboundPod,
    /// A kubelet's copy of another node's Node.
    OtherNode,
    /// An object of a component not named as a cache agent (cached for
    /// `Edge-Cache: true`, or only through `*`).
    Unnamed,
    /// An object of a named cache agent.
    Agent,
    /// What a kubelet needs to start its pods offline.
    KubeletNeeds,
}

impl Class {
    /// The quota's order: lower ranks go first.
    pub fn quota_rank(self) -> u8 {
        match self {
            Class::Event | Class::UnboundPod | Class::OtherNode => 0,
            Class::Unnamed => 1,
            Class::Agent => 2,
            Class::KubeletNeeds => 3,
        }
    }
}

/// What the hub knows of one component.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Component {
    /// Named by the defaults, `--cache-agents` or the ConfigMap (`*` names
    /// nobody).
    pub named_agent: bool,
    pub kubelet: bool,
    /// The last request the hub saw from it or the newest of its files,
    /// Unix seconds.
    pub last_seen: i64,
}

/// Why an object or a component leaves the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rule {
    UnboundPod,
    ExpiredEvent,
    NotInLastList,
    IdleComponent,
}

impl Rule {
    pub const ALL: [Rule; 4] = [
        Rule::UnboundPod,
        Rule::ExpiredEvent,
        Rule::NotInLastList,
        Rule::IdleComponent,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Rule::UnboundPod => "unbound_pod",
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
pub struct Settings<'a> {
    pub node_name: &'a str,
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

/// Whether a component acts as this node's kubelet: it is `kubelet`, or one
/// of its pod list shapes is the one kubelet makes (its field selectors given).
pub fn is_kubelet<'a>(
    component: &str,
    mut pod_field_selectors: impl Iterator<Item = &'a str>,
    node_name: &str,
) -> bool {
    component == "kubelet"
        || pod_field_selectors.any(|selector| selects_node_pods(selector, node_name))
}

/// Whether a pod list's field selector asks for the pods bound to this node.
pub fn selects_node_pods(field_selector: &str, node_name: &str) -> bool {
    field_selector.split(',').any(|term| {
        term.strip_prefix("spec.nodeName")
            .and_then(|rest| rest.strip_prefix("==").or_else(|| rest.strip_prefix('=')))
            == Some(node_name)
    })
}

/// What one object is, for its component.
pub fn classify(object: &Indexed, component: &Component, node_name: &str) -> Class {
    let (_, resource) = component_and_resource(&object.dir);
    if is_event_resource(resource) {
        return Class::Event;
    }
    if component.kubelet {
        return match resource {
            "pods" if &*object.node_name != node_name => Class::UnboundPod,
            "nodes" if &*object.name != node_name => Class::OtherNode,
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
/// kubelets, when each was last seen (requests) and its newest file.
pub fn components(
    objects: &[Indexed],
    named_agent: impl Fn(&str) -> bool,
    kubelets: &BTreeSet<String>,
    seen: &BTreeMap<String, i64>,
) -> BTreeMap<String, Component> {
    let mut out: BTreeMap<String, Component> = BTreeMap::new();
    let mut note = |name: &str, at: i64| {
        let component = out.entry(name.to_string()).or_insert_with(|| Component {
            named_agent: named_agent(name),
            kubelet: kubelets.contains(name),
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
    out
}

/// What a collection removes: kubelets' pods bound elsewhere, events past
/// their time, what the last complete list of a shape no longer held
/// (`not_in_last_list`, the files), and components neither named as agents
/// nor kubelets and not seen for the idle time (whole).
pub fn collect(
    objects: &[Indexed],
    components: &BTreeMap<String, Component>,
    not_in_last_list: &BTreeSet<PathBuf>,
    settings: Settings<'_>,
) -> Decision {
    let idle: BTreeSet<&str> = components
        .iter()
        .filter(|(_, c)| {
            !c.named_agent
                && !c.kubelet
                && settings.now - c.last_seen > settings.component_idle_seconds
        })
        .map(|(name, _)| name.as_str())
        .collect();
    let mut decision = Decision {
        components: idle.iter().map(|name| name.to_string()).collect(),
        ..Decision::default()
    };
    for (i, object) in objects.iter().enumerate() {
        let (name, _) = component_and_resource(&object.dir);
        if idle.contains(name) {
            continue;
        }
        let component = components.get(name).copied().unwrap_or_default();
        let rule = match classify(object, &component, settings.node_name) {
            Class::UnboundPod => Some(Rule::UnboundPod),
            Class::Event if settings.now - object.written_at > EVENT_TTL_SECONDS => {
                Some(Rule::ExpiredEvent)
            }
            _ => None,
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
/// file. Nothing while `used` is within `limit`; `limit` 0 is no quota.
pub fn evictions(objects: &[Indexed], classes: &[Class], used: u64, limit: u64) -> Vec<usize> {
    if limit == 0 || used <= limit {
        return Vec::new();
    }
    let target = limit / 100 * QUOTA_LOW_WATER_PERCENT;
    let mut order: Vec<usize> = (0..objects.len()).collect();
    order.sort_by_key(|&i| {
        (
            classes[i].quota_rank(),
            objects[i].written_at,
            objects[i].path(),
        )
    });
    let mut left = used;
    order
        .into_iter()
        .take_while(|&i| {
            let over = left > target;
            left = left.saturating_sub(objects[i].size);
            over
        })
        .collect()
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

    fn facts(named_agent: bool, kubelet: bool, last_seen: i64) -> Component {
        Component {
            named_agent,
            kubelet,
            last_seen,
        }
    }

    fn settings() -> Settings<'static> {
        Settings {
            node_name: NODE,
            now: NOW,
            component_idle_seconds: 30 * DAY,
        }
    }

    #[test]
    fn a_kubelet_is_kubelet_or_whoever_lists_this_nodes_pods() {
        #[rustfmt::skip]
        let rows: &[(&str, &[&str], bool)] = &[
            ("kubelet", &[], true),
            ("kubemark", &["spec.nodeName=edge-1"], true),
            ("kubemark", &["spec.nodeName==edge-1"], true),
            ("agent", &["", "status.phase=Running,spec.nodeName=edge-1"], true),
            ("agent", &["spec.nodeName=edge-10"], false),
            ("agent", &["spec.nodeName!=edge-1"], false),
            ("agent", &[""], false),
        ];
        for &(component, selectors, expected) in rows {
            assert_eq!(
                is_kubelet(component, selectors.iter().copied(), NODE),
                expected,
                "{component} {selectors:?}"
            );
        }
    }

    #[test]
    fn objects_are_classed_by_who_cached_them_and_what_they_are() {
        let kubelet = facts(true, true, NOW);
        let agent = facts(true, false, NOW);
        let unnamed = facts(false, false, NOW);
        #[rustfmt::skip]
        let rows: &[(&str, &str, Component, Class)] = &[
            ("kubelet/pods/a/p1.pb", NODE, kubelet, Class::KubeletNeeds),
            ("kubelet/pods/a/p2.pb", "edge-2", kubelet, Class::UnboundPod),
            ("kubelet/pods/a/p3.pb", "", kubelet, Class::UnboundPod),
            ("kubelet/nodes/edge-1.pb", "", kubelet, Class::KubeletNeeds),
            ("kubelet/nodes/edge-2.pb", "", kubelet, Class::OtherNode),
            ("kubelet/configmaps/a/c1.json", "", kubelet, Class::KubeletNeeds),
            ("kubelet/secrets/a/s1.json", "", kubelet, Class::KubeletNeeds),
            ("kubelet/services/default/kubernetes.json", "", kubelet, Class::KubeletNeeds),
            ("kubelet/events/a/e1.json", "", kubelet, Class::Event),
            ("kubelet/events.v1.events.k8s.io/a/e1.json", "", kubelet, Class::Event),
            ("kube-proxy/pods/a/p2.json", "edge-2", agent, Class::Agent),
            ("kube-proxy/services/a/s.json", "", agent, Class::Agent),
            ("kubectl/configmaps/a/c1.json", "", unnamed, Class::Unnamed),
            ("kubectl/events/a/e1.json", "", unnamed, Class::Event),
            ("kubectl/eventsources.v1.example.com/a/e1.json", "", unnamed, Class::Unnamed),
        ];
        for (path, node_name, component, class) in rows {
            let object = object(path, node_name, NOW, 1);
            assert_eq!(classify(&object, component, NODE), *class, "{path}");
        }
    }

    #[test]
    fn collection_removes_only_what_its_rules_name_and_never_what_a_kubelet_needs() {
        let objects = [
            object("kubelet/pods/a/p1.pb", NODE, NOW - 90 * DAY, 1),
            object("kubelet/pods/a/gone.pb", "edge-2", NOW, 1),
            object("kubelet/nodes/edge-1.pb", "", NOW - 90 * DAY, 1),
            object("kubelet/configmaps/a/c1.pb", "", NOW - 90 * DAY, 1),
            object(
                "kubelet/events/a/old.pb",
                "",
                NOW - EVENT_TTL_SECONDS - 1,
                1,
            ),
            object("kubelet/events/a/new.pb", "", NOW - EVENT_TTL_SECONDS, 1),
            object("kube-proxy/services/a/deleted.json", "", NOW, 1),
            object("kube-proxy/services/a/kept.json", "", NOW - 90 * DAY, 1),
            object("kubectl/configmaps/a/c1.json", "", NOW - 31 * DAY, 1),
            object("fresh/configmaps/a/c1.json", "", NOW - 29 * DAY, 1),
            object("kubemark/pods/a/p1.pb", NODE, NOW - 90 * DAY, 1),
        ];
        let components: BTreeMap<String, Component> = [
            ("kubelet", facts(true, true, NOW)),
            ("kube-proxy", facts(true, false, NOW - 90 * DAY)),
            ("kubectl", facts(false, false, NOW - 31 * DAY)),
            ("fresh", facts(false, false, NOW - 29 * DAY)),
            // Not an agent, not seen for long, but this node's kubelet.
            ("kubemark", facts(false, true, NOW - 90 * DAY)),
        ]
        .into_iter()
        .map(|(n, c)| (n.to_string(), c))
        .collect();
        let stale: BTreeSet<PathBuf> = [
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
                ("gone.pb", Rule::UnboundPod),
                ("old.pb", Rule::ExpiredEvent),
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
            .map(|o| {
                let component = components[component_and_resource(&o.dir).0];
                classify(o, &component, NODE)
            })
            .collect();
        let files = |limit: u64| -> Vec<String> {
            evictions(&objects, &classes, 600, limit)
                .into_iter()
                .map(|i| objects[i].path().display().to_string())
                .collect()
        };
        assert!(files(0).is_empty(), "no quota");
        assert!(files(600).is_empty(), "within it");
        // 600 used, limit 500: down to 450, two objects go.
        assert_eq!(
            files(500),
            ["kubelet/events/a/e1.pb", "kubectl/configmaps/a/c1.json"]
        );
        assert_eq!(
            files(300),
            [
                "kubelet/events/a/e1.pb",
                "kubectl/configmaps/a/c1.json",
                "kube-proxy/services/a/s2.json",
                "kube-proxy/services/a/s1.json",
            ]
        );
        // Last of all, what the kubelet needs, oldest first.
        assert_eq!(files(100).len(), 6);
        assert_eq!(files(100)[4], "kubelet/configmaps/a/c1.pb");
    }

    #[test]
    fn components_are_seen_by_their_requests_and_their_newest_file() {
        let objects = [
            object("kubectl/configmaps/a/c1.json", "", 40, 1),
            object("kubectl/configmaps/a/c2.json", "", 70, 1),
            object("kubelet/pods/a/p1.json", NODE, 10, 1),
        ];
        let kubelets: BTreeSet<String> = ["kubelet".to_string()].into();
        let seen: BTreeMap<String, i64> =
            [("kubelet".to_string(), 90), ("curl".to_string(), 5)].into();
        let found = components(&objects, |c| c == "kubelet", &kubelets, &seen);
        assert_eq!(found["kubectl"], facts(false, false, 70));
        assert_eq!(found["kubelet"], facts(true, true, 90));
        assert_eq!(found["curl"], facts(false, false, 5));
    }
}
