//! OpenYurt's response filters: in such a cluster the hub rewrites part of
//! what node components read, so pods with in-cluster configuration reach
//! the cluster through the hub, kube-proxy routes only to endpoints of this
//! node's pool and cloud-only Services stay off the node. This module is
//! the pure part: which filters a request gets (`Filters::for_request`) and
//! what each does to one object (`apply`), the same code for JSON and
//! protobuf (`codec::edit`).

mod body;
mod follow;
mod rules;
mod state;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::codec::CodecError;
use crate::codec::edit::Object;
use crate::request_info::{RequestInfo, Verb};

pub use body::{BodyFilter, ContextSource, Counts, Session};
pub use follow::follow_context;
pub use rules::{Context, apply};
pub use state::FilterState;

/// The filters, in the original's registration (and application) order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Filter {
    ServiceTopology,
    MasterService,
    DiscardCloudService,
    InClusterConfig,
    NodePortIsolation,
    ForwardKubeSvcTraffic,
    ServiceEnvUpdater,
}

/// What a filter applies to by default: components, and resources with verbs.
struct Defaults {
    filter: Filter,
    components: &'static [&'static str],
    resources: &'static [(&'static str, &'static [Verb])],
}

const LIST_WATCH: &[Verb] = &[Verb::List, Verb::Watch];

/// The original's `FilterToComponentsResourcesAndVerbs`.
const DEFAULTS: [Defaults; 7] = [
    Defaults {
        filter: Filter::ServiceTopology,
        components: &["kube-proxy", "coredns", "nginx-ingress-controller"],
        resources: &[("endpoints", LIST_WATCH), ("endpointslices", LIST_WATCH)],
    },
    Defaults {
        filter: Filter::MasterService,
        components: &["kubelet"],
        resources: &[("services", LIST_WATCH)],
    },
    Defaults {
        filter: Filter::DiscardCloudService,
        components: &["kube-proxy"],
        resources: &[("services", LIST_WATCH)],
    },
    Defaults {
        filter: Filter::InClusterConfig,
        components: &["kubelet"],
        resources: &[("configmaps", &[Verb::Get, Verb::List, Verb::Watch])],
    },
    Defaults {
        filter: Filter::NodePortIsolation,
        components: &["kube-proxy"],
        resources: &[("services", LIST_WATCH)],
    },
    Defaults {
        filter: Filter::ForwardKubeSvcTraffic,
        components: &["kube-proxy"],
        resources: &[("endpointslices", LIST_WATCH)],
    },
    Defaults {
        filter: Filter::ServiceEnvUpdater,
        components: &["kubelet"],
        resources: &[("pods", &[Verb::List, Verb::Watch, Verb::Get, Verb::Patch])],
    },
];

impl Filter {
    pub const ALL: [Filter; 7] = [
        Filter::ServiceTopology,
        Filter::MasterService,
        Filter::DiscardCloudService,
        Filter::InClusterConfig,
        Filter::NodePortIsolation,
        Filter::ForwardKubeSvcTraffic,
        Filter::ServiceEnvUpdater,
    ];

    /// The name used in flags, `yurt-hub-cfg` keys and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Filter::ServiceTopology => "servicetopology",
            Filter::MasterService => "masterservice",
            Filter::DiscardCloudService => "discardcloudservice",
            Filter::InClusterConfig => "inclusterconfig",
            Filter::NodePortIsolation => "nodeportisolation",
            Filter::ForwardKubeSvcTraffic => "forwardkubesvctraffic",
            Filter::ServiceEnvUpdater => "serviceenvupdater",
        }
    }

    pub fn from_name(name: &str) -> Option<Filter> {
        Filter::ALL.into_iter().find(|f| f.name() == name)
    }

    fn defaults(self) -> &'static Defaults {
        DEFAULTS
            .iter()
            .find(|d| d.filter == self)
            .expect("every filter has defaults")
    }

    /// Off in cloud mode, as in the original (a cloud node reaches the
    /// apiserver directly).
    pub fn off_in_cloud_mode(self) -> bool {
        matches!(
            self,
            Filter::DiscardCloudService | Filter::ForwardKubeSvcTraffic | Filter::ServiceEnvUpdater
        )
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which filters are on and for whom.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    disabled: BTreeSet<Filter>,
    /// Components added per filter by `kube-system/yurt-hub-cfg`.
    extra: BTreeMap<Filter, BTreeSet<String>>,
}

impl Filters {
    /// From `--disabled-resource-filters` (`*` disables all) and the
    /// working mode. Names of filters this hub does not have are returned
    /// to be logged (manifests name filters the original has removed, such
    /// as `endpoints` or `hostnetworkpropagation`; it ignores them too).
    pub fn new(disabled: &[String], cloud_mode: bool) -> (Filters, Vec<String>) {
        let mut off = BTreeSet::new();
        let mut unknown = Vec::new();
        for name in disabled.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
            if name == "*" {
                off.extend(Filter::ALL);
                continue;
            }
            match Filter::from_name(name) {
                Some(filter) => {
                    off.insert(filter);
                }
                None => unknown.push(name.to_string()),
            }
        }
        if cloud_mode {
            off.extend(Filter::ALL.into_iter().filter(|f| f.off_in_cloud_mode()));
        }
        let filters = Filters {
            disabled: off,
            extra: BTreeMap::new(),
        };
        (filters, unknown)
    }

    /// The components `yurt-hub-cfg` adds (keys named after filters, values
    /// comma-separated components; other keys are not the filters' concern).
    pub fn with_configmap_data(&self, data: &BTreeMap<String, String>) -> Filters {
        let extra = data
            .iter()
            .filter_map(|(key, value)| {
                let components: BTreeSet<String> = value
                    .split(',')
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map(str::to_string)
                    .collect();
                Some((Filter::from_name(key)?, components))
            })
            .collect();
        Filters {
            disabled: self.disabled.clone(),
            extra,
        }
    }

    /// `filter: a,b; ...` for the components `yurt-hub-cfg` added.
    pub fn describe_extra(&self) -> String {
        if self.extra.is_empty() {
            return "none".into();
        }
        self.extra
            .iter()
            .map(|(filter, components)| {
                let components: Vec<&str> = components.iter().map(String::as_str).collect();
                format!("{filter}: {}", components.join(","))
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub fn is_on(&self, filter: Filter) -> bool {
        !self.disabled.contains(&filter)
    }

    /// The filters a request's answer goes through, in order. Requests of
    /// the hub's own are never filtered (they carry no component of these).
    pub fn for_request(&self, component: &str, info: &RequestInfo) -> Vec<Filter> {
        if !info.is_resource_request || !info.subresource.is_empty() {
            return Vec::new();
        }
        Filter::ALL
            .into_iter()
            .filter(|f| !self.disabled.contains(f))
            .filter(|&f| {
                let defaults = f.defaults();
                let component_matches = defaults.components.contains(&component)
                    || self.extra.get(&f).is_some_and(|c| c.contains(component));
                component_matches
                    && defaults.resources.iter().any(|(resource, verbs)| {
                        *resource == info.resource && verbs.contains(&info.verb)
                    })
            })
            .collect()
    }
}

/// What `filters` still need to know and do not (`None`: nothing):
/// `servicetopology` needs the Services' topology keys, this node's pool
/// and, for a pool, its nodes; `nodeportisolation` the pool.
pub fn lacking_context(filters: &[Filter], context: &Context) -> Option<String> {
    let mut lacking = Vec::new();
    if filters.contains(&Filter::ServiceTopology) {
        if context.topology.is_none() {
            lacking.push("servicetopology: the Services' topology keys are not known yet");
        }
        match &context.pool {
            None => lacking.push("servicetopology: this node's pool is not known yet"),
            Some(pool) if !pool.is_empty() && context.pool_nodes.is_none() => {
                lacking.push("servicetopology: the nodes of this node's pool are not known yet")
            }
            Some(_) => {}
        }
    }
    if filters.contains(&Filter::NodePortIsolation) && context.pool.is_none() {
        lacking.push("nodeportisolation: this node's pool is not known yet");
    }
    (!lacking.is_empty()).then(|| lacking.join("; "))
}

/// What the filters made of one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Passed unchanged: the original bytes go out.
    Unchanged,
    /// Changed: the object is written back.
    Rewritten,
    /// Removed from the client's view.
    Dropped,
}

/// The hub's address as pods reach it (the original's dummy interface and
/// secure port), put in place of the cloud's `kubernetes` Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubAddress {
    pub host: String,
    pub port: u16,
}

impl HubAddress {
    pub fn is_ipv6(&self) -> bool {
        self.host.contains(':')
    }
}

/// A filter failed on an object it should apply to (malformed bytes).
pub type FilterError = CodecError;

/// Runs `filters` on one object, in order; stops at the first that drops it.
pub fn run(
    filters: &[Filter],
    resource: &str,
    context: &Context,
    object: &mut Object,
) -> Result<(Verdict, Vec<(Filter, Verdict)>), FilterError> {
    let mut overall = Verdict::Unchanged;
    let mut each = Vec::new();
    for &filter in filters {
        let verdict = apply(filter, resource, context, object)?;
        if verdict != Verdict::Unchanged {
            each.push((filter, verdict));
        }
        match verdict {
            Verdict::Dropped => return Ok((Verdict::Dropped, each)),
            Verdict::Rewritten => overall = Verdict::Rewritten,
            Verdict::Unchanged => {}
        }
    }
    Ok((overall, each))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request_info::{Query, classify};

    fn request(method: &str, path: &str, query: &str) -> RequestInfo {
        classify(method, path, &Query::parse(query)).unwrap()
    }

    #[test]
    fn which_filters_a_request_gets() {
        let filters = Filters::new(&[], false).0;
        let rows: &[(&str, &str, &str, &str, &[Filter])] = &[
            (
                "kubelet",
                "GET",
                "/api/v1/services",
                "",
                &[Filter::MasterService],
            ),
            (
                "kubelet",
                "GET",
                "/api/v1/services",
                "watch=true",
                &[Filter::MasterService],
            ),
            (
                "kubelet",
                "GET",
                "/api/v1/namespaces/default/services/kubernetes",
                "",
                &[],
            ),
            (
                "kube-proxy",
                "GET",
                "/api/v1/services",
                "",
                &[Filter::DiscardCloudService, Filter::NodePortIsolation],
            ),
            (
                "kube-proxy",
                "GET",
                "/apis/discovery.k8s.io/v1/endpointslices",
                "watch=1",
                &[Filter::ServiceTopology, Filter::ForwardKubeSvcTraffic],
            ),
            (
                "coredns",
                "GET",
                "/apis/discovery.k8s.io/v1/endpointslices",
                "",
                &[Filter::ServiceTopology],
            ),
            (
                "kubelet",
                "GET",
                "/api/v1/namespaces/kube-system/configmaps/kube-proxy",
                "",
                &[Filter::InClusterConfig],
            ),
            (
                "kubelet",
                "GET",
                "/api/v1/pods",
                "fieldSelector=spec.nodeName%3Dn",
                &[Filter::ServiceEnvUpdater],
            ),
            (
                "kubelet",
                "PATCH",
                "/api/v1/namespaces/a/pods/p",
                "",
                &[Filter::ServiceEnvUpdater],
            ),
            (
                "kubelet",
                "PATCH",
                "/api/v1/namespaces/a/pods/p/status",
                "",
                &[],
            ),
            ("kubelet", "POST", "/api/v1/namespaces/a/pods", "", &[]),
            ("flannel", "GET", "/api/v1/services", "", &[]),
            ("", "GET", "/api/v1/services", "", &[]),
            ("kubelet", "GET", "/version", "", &[]),
        ];
        for (component, method, path, query, want) in rows {
            let got = filters.for_request(component, &request(method, path, query));
            assert_eq!(&got, want, "{component} {method} {path}?{query}");
        }
    }

    #[test]
    fn configuration_adds_components_and_switches_filters_off() {
        let data = BTreeMap::from([
            ("masterservice".to_string(), "flannel, my-agent".to_string()),
            ("cache_agents".to_string(), "x".to_string()),
        ]);
        let filters = Filters::new(&["discardcloudservice".into()], false)
            .0
            .with_configmap_data(&data);
        let services = request("GET", "/api/v1/services", "");
        assert_eq!(
            filters.for_request("my-agent", &services),
            [Filter::MasterService]
        );
        assert_eq!(
            filters.for_request("kube-proxy", &services),
            [Filter::NodePortIsolation]
        );

        let cloud = Filters::new(&[], true).0;
        let slices = request("GET", "/apis/discovery.k8s.io/v1/endpointslices", "");
        assert_eq!(
            cloud.for_request("kube-proxy", &slices),
            [Filter::ServiceTopology]
        );
        let pods = request("GET", "/api/v1/pods", "");
        assert_eq!(cloud.for_request("kubelet", &pods), []);

        let none = Filters::new(&["*".into()], false).0;
        assert_eq!(none.for_request("kubelet", &services), []);
        let (filters, unknown) = Filters::new(&["endpoints".into(), "masterservice".into()], false);
        assert_eq!(unknown, ["endpoints"]);
        assert!(!filters.is_on(Filter::MasterService));
    }
}
