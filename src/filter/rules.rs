//! What each filter does to one object, as the original does it
//! (`pkg/yurthub/filter/*`), on `codec::edit::Object`s so that JSON and
//! protobuf share every rule. The field paths name the JSON field and the
//! protobuf field number of `k8s.io/api` (`generated.proto`).

use std::collections::{BTreeMap, BTreeSet};

use super::{Filter, FilterError, HubAddress, Verdict};
use crate::codec::edit::{Key, Object, key};

const METADATA: Key = key("metadata", 1);
const NAME: Key = key("name", 1);
const NAMESPACE: Key = key("namespace", 3);
const LABELS: Key = key("labels", 11);
const ANNOTATIONS: Key = key("annotations", 12);

// Service
const SERVICE_SPEC: Key = key("spec", 2);
const SERVICE_PORTS: Key = key("ports", 1);
const CLUSTER_IP: Key = key("clusterIP", 3);
const SERVICE_TYPE: Key = key("type", 4);
const CLUSTER_IPS: Key = key("clusterIPs", 18);
const SERVICE_PORT_NAME: Key = key("name", 1);
const SERVICE_PORT_PORT: Key = key("port", 3);

// discovery.k8s.io/v1 EndpointSlice
const SLICE_ENDPOINTS: Key = key("endpoints", 2);
const SLICE_PORTS: Key = key("ports", 3);
const SLICE_ADDRESS_TYPE: Key = key("addressType", 4);
const ENDPOINT_ADDRESSES: Key = key("addresses", 1);
const ENDPOINT_CONDITIONS: Key = key("conditions", 2);
const CONDITION_READY: Key = key("ready", 1);
const ENDPOINT_NODE_NAME: Key = key("nodeName", 6);
/// v1beta1's `topology` map, v1's `deprecatedTopology` (field 5 in both).
const ENDPOINT_TOPOLOGY: [Key; 2] = [key("topology", 5), key("deprecatedTopology", 5)];
const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";
const SLICE_PORT_NAME: Key = key("name", 1);
const SLICE_PORT_PORT: Key = key("port", 3);

// ConfigMap
const CONFIGMAP_DATA: Key = key("data", 2);

// Pod
const POD_SPEC: Key = key("spec", 2);
const CONTAINERS: Key = key("containers", 2);
const INIT_CONTAINERS: Key = key("initContainers", 20);
const ENV: Key = key("env", 7);
const ENV_NAME: Key = key("name", 1);
const ENV_VALUE: Key = key("value", 2);

pub const TOPOLOGY_ANNOTATION: &str = "openyurt.io/topologyKeys";
pub const NODEPORT_LISTEN_ANNOTATION: &str = "nodeport.openyurt.io/listen";
pub const DISCARD_ANNOTATION: &str = "svc.openyurt.io/discard";
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// What the filters know beyond the object: the hub's address, and for
/// `servicetopology` and `nodeportisolation` this node's pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    pub hub: HubAddress,
    pub node_name: String,
    /// This node's pool (`apps.openyurt.io/nodepool` label): `None` while
    /// unknown, `Some("")` for a node in no pool.
    pub pool: Option<String>,
    /// The nodes of this node's pool, once known.
    pub pool_nodes: Option<BTreeSet<String>>,
    /// `openyurt.io/topologyKeys` of the Services that have it, by
    /// (namespace, name), once the Services are known.
    pub topology: Option<BTreeMap<(String, String), String>>,
}

/// One filter on one object of `resource`.
pub fn apply(
    filter: Filter,
    resource: &str,
    context: &Context,
    object: &mut Object,
) -> Result<Verdict, FilterError> {
    match (filter, resource) {
        (Filter::MasterService, "services") => master_service(context, object),
        (Filter::DiscardCloudService, "services") => discard_cloud_service(object),
        (Filter::NodePortIsolation, "services") => node_port_isolation(context, object),
        (Filter::InClusterConfig, "configmaps") => in_cluster_config(object),
        (Filter::ForwardKubeSvcTraffic, "endpointslices") => {
            forward_kube_svc_traffic(context, object)
        }
        (Filter::ServiceEnvUpdater, "pods") => service_env_updater(context, object),
        (Filter::ServiceTopology, "endpointslices") => service_topology(context, object),
        _ => Ok(Verdict::Unchanged),
    }
}

/// Whether `filter` could change an object of `resource` whose bytes are
/// `bytes` (JSON text or protobuf: strings are their own bytes in both):
/// every object a filter changes holds a string it looks for, so one
/// without it is passed on without being read. Most answers a filter sees
/// (a node's pods, its ConfigMaps) hold none of them.
pub fn may_change(filter: Filter, resource: &str, context: &Context, bytes: &[u8]) -> bool {
    let has = |needle: &str| memchr::memmem::find(bytes, needle.as_bytes()).is_some();
    match (filter, resource) {
        (Filter::MasterService, "services") => has("kubernetes"),
        (Filter::DiscardCloudService, "services") => {
            has(DISCARD_ANNOTATION) || has("x-tunnel-server-internal-svc")
        }
        (Filter::NodePortIsolation, "services") => has(NODEPORT_LISTEN_ANNOTATION),
        (Filter::InClusterConfig, "configmaps") => has("kube-proxy") && has("kubeconfig"),
        (Filter::ForwardKubeSvcTraffic, "endpointslices") => has("kubernetes"),
        (Filter::ServiceEnvUpdater, "pods") => has("KUBERNETES_SERVICE_"),
        (Filter::ServiceTopology, "endpointslices") => {
            context.topology.as_ref().is_some_and(|t| !t.is_empty()) && has(SERVICE_NAME_LABEL)
        }
        _ => false,
    }
}

fn is(object: &Object, namespace: &str, name: &str) -> bool {
    object.str_at(&[METADATA, NAMESPACE]).as_deref() == Some(namespace)
        && object.str_at(&[METADATA, NAME]).as_deref() == Some(name)
}

/// `default/kubernetes` at the hub's address: its cluster IP(s) and its
/// `https` port, so kubelet gives pods `KUBERNETES_SERVICE_HOST/PORT` of
/// the hub.
fn master_service(context: &Context, object: &mut Object) -> Result<Verdict, FilterError> {
    if !is(object, "default", "kubernetes") {
        return Ok(Verdict::Unchanged);
    }
    let hub = &context.hub;
    object.set_str(&[SERVICE_SPEC, CLUSTER_IP], &hub.host)?;
    object.set_strs(&[SERVICE_SPEC, CLUSTER_IPS], &[&hub.host])?;
    let mut done = false;
    object.retain_elements(&[SERVICE_SPEC, SERVICE_PORTS], |port| {
        if !done && port.str_at(&[SERVICE_PORT_NAME]).as_deref() == Some("https") {
            port.set_int(&[SERVICE_PORT_PORT], i64::from(hub.port))?;
            done = true;
        }
        Ok(true)
    })?;
    Ok(Verdict::Rewritten)
}

/// LoadBalancer Services marked `svc.openyurt.io/discard=true`, and the
/// tunnel server's internal Service, are not for edge nodes.
fn discard_cloud_service(object: &mut Object) -> Result<Verdict, FilterError> {
    let load_balancer =
        object.str_at(&[SERVICE_SPEC, SERVICE_TYPE]).as_deref() == Some("LoadBalancer");
    let marked = object
        .map_str_at(&[METADATA, ANNOTATIONS], DISCARD_ANNOTATION)
        .as_deref()
        == Some("true");
    if (load_balancer && marked) || is(object, "kube-system", "x-tunnel-server-internal-svc") {
        return Ok(Verdict::Dropped);
    }
    Ok(Verdict::Unchanged)
}

/// NodePort and LoadBalancer Services annotated
/// `nodeport.openyurt.io/listen=pool1,-pool2,*` are kept only where this
/// node's pool is enabled; a node in no pool keeps them all.
fn node_port_isolation(context: &Context, object: &mut Object) -> Result<Verdict, FilterError> {
    let kind = object.str_at(&[SERVICE_SPEC, SERVICE_TYPE]);
    if !matches!(kind.as_deref(), Some("NodePort" | "LoadBalancer")) {
        return Ok(Verdict::Unchanged);
    }
    let Some(listen) = object.map_str_at(&[METADATA, ANNOTATIONS], NODEPORT_LISTEN_ANNOTATION)
    else {
        return Ok(Verdict::Unchanged);
    };
    match context.pool.as_deref() {
        None | Some("") => Ok(Verdict::Unchanged),
        Some(pool) if pool_enabled(&listen, pool) => Ok(Verdict::Unchanged),
        Some(_) => Ok(Verdict::Dropped),
    }
}

/// The original's reading of `nodeport.openyurt.io/listen`: the pool by
/// name enables, `-pool` disables, `*` enables the rest; the first mention
/// of a pool wins; nothing said means disabled.
pub fn pool_enabled(listen: &str, pool: &str) -> bool {
    let mut seen = BTreeSet::new();
    let mut entries = BTreeSet::new();
    for entry in listen.split(',').map(str::trim) {
        let bare = entry.strip_prefix('-').unwrap_or(entry);
        if !bare.is_empty() && seen.insert(bare.to_string()) {
            entries.insert(entry.to_string());
        }
    }
    if entries.contains(pool) {
        return true;
    }
    if entries.contains(&format!("-{pool}")) {
        return false;
    }
    entries.contains("*")
}

/// kube-proxy's ConfigMap with its `kubeconfig:` line commented out, so
/// kube-proxy uses its in-cluster configuration (the hub's address).
fn in_cluster_config(object: &mut Object) -> Result<Verdict, FilterError> {
    if !is(object, "kube-system", "kube-proxy") {
        return Ok(Verdict::Unchanged);
    }
    let Some(config) = object.map_str_at(&[CONFIGMAP_DATA], "config.conf") else {
        return Ok(Verdict::Unchanged);
    };
    match comment_out_kubeconfig(&config) {
        Some(changed) => {
            object.set_map_str(&[CONFIGMAP_DATA], "config.conf", &changed)?;
            Ok(Verdict::Rewritten)
        }
        None => Ok(Verdict::Unchanged),
    }
}

/// Lines `kubeconfig: <path>` (split on `:` into exactly two parts, the
/// first `kubeconfig` once trimmed) become `#kubeconfig: <path>`.
pub fn comment_out_kubeconfig(config: &str) -> Option<String> {
    let mut changed = false;
    let lines: Vec<String> = config
        .split('\n')
        .map(|line| {
            let parts: Vec<&str> = line.trim_matches(' ').split(':').collect();
            if parts.len() == 2 && parts[0] == "kubeconfig" {
                changed = true;
                line.replacen("kubeconfig", "#kubeconfig", 1)
            } else {
                line.to_string()
            }
        })
        .collect();
    changed.then(|| lines.join("\n"))
}

/// `default/kubernetes`'s EndpointSlice (of the hub's address family) as one
/// ready endpoint at the hub's address, its `https` port the hub's.
fn forward_kube_svc_traffic(
    context: &Context,
    object: &mut Object,
) -> Result<Verdict, FilterError> {
    let hub = &context.hub;
    let family = if hub.is_ipv6() { "IPv6" } else { "IPv4" };
    if !is(object, "default", "kubernetes")
        || object.str_at(&[SLICE_ADDRESS_TYPE]).as_deref() != Some(family)
    {
        return Ok(Verdict::Unchanged);
    }
    let mut done = false;
    object.retain_elements(&[SLICE_PORTS], |port| {
        if !done && port.str_at(&[SLICE_PORT_NAME]).as_deref() == Some("https") {
            port.set_int(&[SLICE_PORT_PORT], i64::from(hub.port))?;
            done = true;
        }
        Ok(true)
    })?;
    let mut endpoint = Object::empty(object.encoding());
    endpoint.set_strs(&[ENDPOINT_ADDRESSES], &[&hub.host])?;
    endpoint.set_bool(&[ENDPOINT_CONDITIONS, CONDITION_READY], true)?;
    object.set_elements(&[SLICE_ENDPOINTS], vec![endpoint])?;
    Ok(Verdict::Rewritten)
}

/// Explicit `KUBERNETES_SERVICE_HOST` and `KUBERNETES_SERVICE_PORT` in a
/// pod's containers (and init containers) point at the hub.
fn service_env_updater(context: &Context, object: &mut Object) -> Result<Verdict, FilterError> {
    let port = context.hub.port.to_string();
    let mut changed = false;
    for containers in [CONTAINERS, INIT_CONTAINERS] {
        object.retain_elements(&[POD_SPEC, containers], |container| {
            container.retain_elements(&[ENV], |env| {
                let value = match env.str_at(&[ENV_NAME]).as_deref() {
                    Some("KUBERNETES_SERVICE_HOST") => &context.hub.host,
                    Some("KUBERNETES_SERVICE_PORT") => &port,
                    _ => return Ok(true),
                };
                if env.str_at(&[ENV_VALUE]).as_deref() != Some(value.as_str()) {
                    env.set_str(&[ENV_VALUE], value)?;
                    changed = true;
                }
                Ok(true)
            })?;
            Ok(true)
        })?;
    }
    Ok(if changed {
        Verdict::Rewritten
    } else {
        Verdict::Unchanged
    })
}

/// Endpoints of a Service annotated `openyurt.io/topologyKeys`: only this
/// node's (`kubernetes.io/hostname`) or only its pool's
/// (`openyurt.io/nodepool`, `kubernetes.io/zone`); endpoints without a node
/// name go. Without the context to decide, the slice is left as it is
/// (`/v1/readyz` says so).
fn service_topology(context: &Context, object: &mut Object) -> Result<Verdict, FilterError> {
    let Some(topology) = &context.topology else {
        return Ok(Verdict::Unchanged);
    };
    let namespace = object.str_at(&[METADATA, NAMESPACE]).unwrap_or_default();
    let Some(service) = object.map_str_at(&[METADATA, LABELS], SERVICE_NAME_LABEL) else {
        return Ok(Verdict::Unchanged);
    };
    let keep: Box<dyn Fn(&str) -> bool + '_> =
        match topology.get(&(namespace, service)).map(String::as_str) {
            Some("kubernetes.io/hostname") => Box::new(|node: &str| node == context.node_name),
            Some("openyurt.io/nodepool" | "kubernetes.io/zone") => {
                match (&context.pool, &context.pool_nodes) {
                    // A node in no pool: its own endpoints, as the original does.
                    (Some(pool), _) if pool.is_empty() => {
                        Box::new(|node: &str| node == context.node_name)
                    }
                    (Some(_), Some(nodes)) => Box::new(|node: &str| nodes.contains(node)),
                    _ => return Ok(Verdict::Unchanged),
                }
            }
            _ => return Ok(Verdict::Unchanged),
        };
    let mut changed = false;
    object.retain_elements(&[SLICE_ENDPOINTS], |endpoint| {
        let kept = endpoint_node(endpoint).is_some_and(|node| keep(&node));
        changed |= !kept;
        Ok(kept)
    })?;
    Ok(if changed {
        Verdict::Rewritten
    } else {
        Verdict::Unchanged
    })
}

/// The node of an endpoint: `nodeName`, else (discovery.k8s.io/v1beta1 of
/// Kubernetes 1.20, where `nodeName` is alpha) the topology's hostname.
fn endpoint_node(endpoint: &Object) -> Option<String> {
    endpoint.str_at(&[ENDPOINT_NODE_NAME]).or_else(|| {
        ENDPOINT_TOPOLOGY
            .iter()
            .find_map(|topology| endpoint.map_str_at(&[*topology], HOSTNAME_LABEL))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn context() -> Context {
        Context {
            hub: HubAddress {
                host: "169.254.2.1".into(),
                port: 10268,
            },
            node_name: "edge-1".into(),
            pool: Some("hangzhou".into()),
            pool_nodes: Some(BTreeSet::from(["edge-1".to_string(), "edge-2".to_string()])),
            topology: Some(BTreeMap::from([
                (
                    ("default".to_string(), "by-node".to_string()),
                    "kubernetes.io/hostname".to_string(),
                ),
                (
                    ("default".to_string(), "by-pool".to_string()),
                    "openyurt.io/nodepool".to_string(),
                ),
            ])),
        }
    }

    /// Each JSON object of a table row, and the same object in protobuf
    /// (converted through the edit interface), give the same verdict and
    /// the same result.
    fn check(
        filter: Filter,
        resource: &str,
        context: &Context,
        input: serde_json::Value,
        verdict: Verdict,
        output: serde_json::Value,
    ) {
        let mut object = Object::Json(input.clone());
        assert_eq!(
            apply(filter, resource, context, &mut object).unwrap(),
            verdict,
            "{filter} {input}"
        );
        if verdict != Verdict::Dropped {
            let Object::Json(got) = &object else {
                unreachable!()
            };
            assert_eq!(got, &output, "{filter} {input}");
        }
    }

    #[test]
    fn master_service_points_default_kubernetes_at_the_hub() {
        let c = context();
        let svc = |ns: &str, name: &str| {
            json!({
                "metadata": {"namespace": ns, "name": name},
                "spec": {"clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1"],
                         "ports": [{"name": "dns", "port": 53}, {"name": "https", "port": 443}]}
            })
        };
        let rewritten = json!({
            "metadata": {"namespace": "default", "name": "kubernetes"},
            "spec": {"clusterIP": "169.254.2.1", "clusterIPs": ["169.254.2.1"],
                     "ports": [{"name": "dns", "port": 53}, {"name": "https", "port": 10268}]}
        });
        check(
            Filter::MasterService,
            "services",
            &c,
            svc("default", "kubernetes"),
            Verdict::Rewritten,
            rewritten,
        );
        check(
            Filter::MasterService,
            "services",
            &c,
            svc("default", "other"),
            Verdict::Unchanged,
            svc("default", "other"),
        );
        check(
            Filter::MasterService,
            "services",
            &c,
            svc("kube-system", "kubernetes"),
            Verdict::Unchanged,
            svc("kube-system", "kubernetes"),
        );
    }

    #[test]
    fn discard_cloud_service_drops_marked_load_balancers_and_the_tunnel_service() {
        let c = context();
        let svc = |ns: &str, name: &str, kind: &str, discard: Option<&str>| {
            let mut v =
                json!({"metadata": {"namespace": ns, "name": name}, "spec": {"type": kind}});
            if let Some(d) = discard {
                v["metadata"]["annotations"] = json!({DISCARD_ANNOTATION: d});
            }
            v
        };
        let rows = [
            (
                svc("a", "lb", "LoadBalancer", Some("true")),
                Verdict::Dropped,
            ),
            (
                svc("a", "lb", "LoadBalancer", Some("false")),
                Verdict::Unchanged,
            ),
            (svc("a", "lb", "LoadBalancer", None), Verdict::Unchanged),
            (svc("a", "np", "NodePort", Some("true")), Verdict::Unchanged),
            (
                svc(
                    "kube-system",
                    "x-tunnel-server-internal-svc",
                    "ClusterIP",
                    None,
                ),
                Verdict::Dropped,
            ),
        ];
        for (input, verdict) in rows {
            check(
                Filter::DiscardCloudService,
                "services",
                &c,
                input.clone(),
                verdict,
                input,
            );
        }
    }

    #[test]
    fn node_port_isolation_reads_the_listen_annotation_as_the_original() {
        let rows = [
            ("hangzhou", true),
            ("-hangzhou", false),
            ("*", true),
            ("-hangzhou,*", false),
            ("*,-hangzhou", false),
            ("shanghai", false),
            ("hangzhou,-hangzhou", true),
            ("-hangzhou,hangzhou", false),
            ("", false),
            (" hangzhou , x", true),
        ];
        for (listen, enabled) in rows {
            assert_eq!(pool_enabled(listen, "hangzhou"), enabled, "{listen:?}");
        }
        let svc = |kind: &str, listen: Option<&str>| {
            let mut v =
                json!({"metadata": {"namespace": "a", "name": "s"}, "spec": {"type": kind}});
            if let Some(l) = listen {
                v["metadata"]["annotations"] = json!({NODEPORT_LISTEN_ANNOTATION: l});
            }
            v
        };
        let c = context();
        let mut no_pool = context();
        no_pool.pool = Some(String::new());
        let rows = [
            (&c, svc("NodePort", Some("shanghai")), Verdict::Dropped),
            (&c, svc("LoadBalancer", Some("-hangzhou")), Verdict::Dropped),
            (&c, svc("NodePort", Some("hangzhou")), Verdict::Unchanged),
            (&c, svc("ClusterIP", Some("shanghai")), Verdict::Unchanged),
            (&c, svc("NodePort", None), Verdict::Unchanged),
            (
                &no_pool,
                svc("NodePort", Some("shanghai")),
                Verdict::Unchanged,
            ),
        ];
        for (context, input, verdict) in rows {
            check(
                Filter::NodePortIsolation,
                "services",
                context,
                input.clone(),
                verdict,
                input,
            );
        }
    }

    #[test]
    fn in_cluster_config_comments_out_the_kubeconfig_line() {
        let rows = [
            (
                "kubeconfig: /var/lib/kube-proxy/kubeconfig.conf",
                Some("#kubeconfig: /var/lib/kube-proxy/kubeconfig.conf"),
            ),
            (
                "a: 1\n  kubeconfig: /k\nb: 2",
                Some("a: 1\n  #kubeconfig: /k\nb: 2"),
            ),
            ("kubeconfig: C:/k", None),
            ("#kubeconfig: /k", None),
            ("kubeconfigs: /k", None),
            ("", None),
        ];
        for (input, output) in rows {
            assert_eq!(
                comment_out_kubeconfig(input).as_deref(),
                output,
                "{input:?}"
            );
        }
        let c = context();
        let cm = |ns: &str, name: &str, conf: &str| json!({"metadata": {"namespace": ns, "name": name}, "data": {"config.conf": conf, "other": "x"}});
        check(
            Filter::InClusterConfig,
            "configmaps",
            &c,
            cm("kube-system", "kube-proxy", "kubeconfig: /k"),
            Verdict::Rewritten,
            cm("kube-system", "kube-proxy", "#kubeconfig: /k"),
        );
        check(
            Filter::InClusterConfig,
            "configmaps",
            &c,
            cm("kube-system", "other", "kubeconfig: /k"),
            Verdict::Unchanged,
            cm("kube-system", "other", "kubeconfig: /k"),
        );
    }

    #[test]
    fn forward_kube_svc_traffic_sends_the_kubernetes_slice_to_the_hub() {
        let c = context();
        let slice = |family: &str| {
            json!({
                "metadata": {"namespace": "default", "name": "kubernetes"},
                "addressType": family,
                "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": true}}, {"addresses": ["10.0.0.2"]}],
                "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]
            })
        };
        let rewritten = json!({
            "metadata": {"namespace": "default", "name": "kubernetes"},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["169.254.2.1"], "conditions": {"ready": true}}],
            "ports": [{"name": "https", "port": 10268, "protocol": "TCP"}]
        });
        check(
            Filter::ForwardKubeSvcTraffic,
            "endpointslices",
            &c,
            slice("IPv4"),
            Verdict::Rewritten,
            rewritten,
        );
        check(
            Filter::ForwardKubeSvcTraffic,
            "endpointslices",
            &c,
            slice("IPv6"),
            Verdict::Unchanged,
            slice("IPv6"),
        );
    }

    #[test]
    fn service_env_updater_points_explicit_variables_at_the_hub() {
        let c = context();
        let pod = |host: &str, port: &str| {
            json!({
                "metadata": {"namespace": "a", "name": "p"},
                "spec": {"containers": [{"name": "c", "env": [
                    {"name": "KUBERNETES_SERVICE_HOST", "value": host},
                    {"name": "OTHER", "value": "x"},
                    {"name": "KUBERNETES_SERVICE_PORT", "value": port}]}],
                  "initContainers": [{"name": "i", "env": [{"name": "KUBERNETES_SERVICE_HOST", "value": host}]}]}
            })
        };
        check(
            Filter::ServiceEnvUpdater,
            "pods",
            &c,
            pod("10.96.0.1", "443"),
            Verdict::Rewritten,
            pod("169.254.2.1", "10268"),
        );
        check(
            Filter::ServiceEnvUpdater,
            "pods",
            &c,
            pod("169.254.2.1", "10268"),
            Verdict::Unchanged,
            pod("169.254.2.1", "10268"),
        );
        let plain = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}});
        check(
            Filter::ServiceEnvUpdater,
            "pods",
            &c,
            plain.clone(),
            Verdict::Unchanged,
            plain,
        );
    }

    #[test]
    fn service_topology_keeps_this_nodes_or_this_pools_endpoints() {
        let slice = |service: &str, nodes: &[Option<&str>]| {
            json!({
                "metadata": {"namespace": "default", "name": format!("{service}-abc"),
                             "labels": {SERVICE_NAME_LABEL: service}},
                "endpoints": nodes.iter().map(|n| match n {
                    Some(n) => json!({"addresses": ["10.1.1.1"], "nodeName": n}),
                    None => json!({"addresses": ["10.1.1.2"]}),
                }).collect::<Vec<_>>()
            })
        };
        let all = [Some("edge-1"), Some("edge-2"), Some("cloud-1"), None];
        let c = context();
        check(
            Filter::ServiceTopology,
            "endpointslices",
            &c,
            slice("by-node", &all),
            Verdict::Rewritten,
            slice("by-node", &[Some("edge-1")]),
        );
        check(
            Filter::ServiceTopology,
            "endpointslices",
            &c,
            slice("by-pool", &all),
            Verdict::Rewritten,
            slice("by-pool", &[Some("edge-1"), Some("edge-2")]),
        );
        check(
            Filter::ServiceTopology,
            "endpointslices",
            &c,
            slice("plain", &all),
            Verdict::Unchanged,
            slice("plain", &all),
        );
        check(
            Filter::ServiceTopology,
            "endpointslices",
            &c,
            slice("by-node", &[]),
            Verdict::Unchanged,
            slice("by-node", &[]),
        );
        let mut unknown = context();
        unknown.topology = None;
        check(
            Filter::ServiceTopology,
            "endpointslices",
            &unknown,
            slice("by-node", &all),
            Verdict::Unchanged,
            slice("by-node", &all),
        );
        let mut no_pool = context();
        no_pool.pool = Some(String::new());
        check(
            Filter::ServiceTopology,
            "endpointslices",
            &no_pool,
            slice("by-pool", &all),
            Verdict::Rewritten,
            slice("by-pool", &[Some("edge-1")]),
        );
        // discovery.k8s.io/v1beta1 of 1.20: the node is in the topology map.
        let beta = |nodes: &[&str]| {
            json!({
                "metadata": {"namespace": "default", "name": "by-node-b", "labels": {SERVICE_NAME_LABEL: "by-node"}},
                "endpoints": nodes.iter().map(|n| json!({"addresses": ["10.1.1.1"], "topology": {HOSTNAME_LABEL: n}})).collect::<Vec<_>>()
            })
        };
        check(
            Filter::ServiceTopology,
            "endpointslices",
            &c,
            beta(&["edge-2", "edge-1"]),
            Verdict::Rewritten,
            beta(&["edge-1"]),
        );
        let mut pool_unknown = context();
        pool_unknown.pool_nodes = None;
        check(
            Filter::ServiceTopology,
            "endpointslices",
            &pool_unknown,
            slice("by-pool", &all),
            Verdict::Unchanged,
            slice("by-pool", &all),
        );
    }

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/tests/fixtures/protobuf/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// A captured protobuf object (kube-apiserver 1.20) through one filter:
    /// the verdict and the object as it would be sent.
    fn on_fixture(
        filter: Filter,
        resource: &str,
        context: &Context,
        name: &str,
    ) -> (Verdict, Object, Vec<u8>) {
        let bytes = fixture(name);
        let mut opened =
            crate::codec::edit::Opened::open(crate::codec::Encoding::Protobuf, &bytes).unwrap();
        let verdict = apply(filter, resource, context, &mut opened.object).unwrap();
        let sealed = opened.seal();
        let reopened =
            crate::codec::edit::Opened::open(crate::codec::Encoding::Protobuf, &sealed).unwrap();
        (verdict, reopened.object, sealed)
    }

    fn strings(object: &mut Object, path: &[Key], field: Key) -> Vec<String> {
        let mut out = Vec::new();
        object
            .retain_elements(path, |element| {
                out.extend(element.str_at(&[field]));
                Ok(true)
            })
            .unwrap();
        out
    }

    #[test]
    fn captured_protobuf_objects_through_each_filter() {
        let c = context();
        // masterservice: the hub's address and port; nothing else moves.
        let (verdict, object, sealed) =
            on_fixture(Filter::MasterService, "services", &c, "svc-kubernetes.pb");
        assert_eq!(verdict, Verdict::Rewritten);
        assert_eq!(
            object.str_at(&[SERVICE_SPEC, CLUSTER_IP]).as_deref(),
            Some("169.254.2.1")
        );
        let mut ports = Vec::new();
        let mut copy = object.clone();
        copy.retain_elements(&[SERVICE_SPEC, SERVICE_PORTS], |p| {
            ports.push((
                p.str_at(&[SERVICE_PORT_NAME]),
                p.int_at(&[SERVICE_PORT_PORT]),
            ));
            Ok(true)
        })
        .unwrap();
        assert_eq!(ports, [(Some("https".to_string()), Some(10268))]);
        // Pointing it back at the apiserver's address gives the captured bytes.
        let original = crate::codec::edit::Opened::open(
            crate::codec::Encoding::Protobuf,
            &fixture("svc-kubernetes.pb"),
        )
        .unwrap()
        .object;
        let ip = original.str_at(&[SERVICE_SPEC, CLUSTER_IP]).unwrap();
        let mut back = context();
        back.hub = HubAddress {
            host: ip,
            port: 443,
        };
        let mut reverted =
            crate::codec::edit::Opened::open(crate::codec::Encoding::Protobuf, &sealed).unwrap();
        apply(
            Filter::MasterService,
            "services",
            &back,
            &mut reverted.object,
        )
        .unwrap();
        assert_eq!(
            reverted.seal(),
            fixture("svc-kubernetes.pb"),
            "every other byte kept"
        );

        // discardcloudservice and nodeportisolation on a marked LoadBalancer.
        assert_eq!(
            on_fixture(Filter::DiscardCloudService, "services", &c, "svc-lb.pb").0,
            Verdict::Dropped
        );
        assert_eq!(
            on_fixture(Filter::NodePortIsolation, "services", &c, "svc-lb.pb").0,
            Verdict::Dropped
        );
        let mut elsewhere = context();
        elsewhere.pool = Some("shanghai".into());
        assert_eq!(
            on_fixture(
                Filter::NodePortIsolation,
                "services",
                &elsewhere,
                "svc-lb.pb"
            )
            .0,
            Verdict::Unchanged
        );
        assert_eq!(
            on_fixture(Filter::MasterService, "services", &c, "svc-lb.pb").0,
            Verdict::Unchanged
        );

        // forwardkubesvctraffic: one ready endpoint at the hub.
        let (verdict, mut object, _) = on_fixture(
            Filter::ForwardKubeSvcTraffic,
            "endpointslices",
            &c,
            "eps-kubernetes.pb",
        );
        assert_eq!(verdict, Verdict::Rewritten);
        assert_eq!(
            strings(&mut object, &[SLICE_ENDPOINTS], ENDPOINT_ADDRESSES),
            ["169.254.2.1"]
        );

        // servicetopology on a 1.20 slice (nodes in the topology map).
        let mut pool = context();
        pool.topology = Some(BTreeMap::from([(
            ("default".to_string(), "web".to_string()),
            "openyurt.io/nodepool".to_string(),
        )]));
        let (verdict, mut object, _) = on_fixture(
            Filter::ServiceTopology,
            "endpointslices",
            &pool,
            "eps-topology.pb",
        );
        assert_eq!(verdict, Verdict::Rewritten);
        assert_eq!(
            strings(&mut object, &[SLICE_ENDPOINTS], ENDPOINT_ADDRESSES),
            ["10.1.0.1", "10.1.0.2"]
        );

        // inclusterconfig: kube-proxy's kubeconfig line commented out.
        let (verdict, object, _) = on_fixture(
            Filter::InClusterConfig,
            "configmaps",
            &c,
            "cm-kube-proxy.pb",
        );
        assert_eq!(verdict, Verdict::Rewritten);
        let config = object.map_str_at(&[CONFIGMAP_DATA], "config.conf").unwrap();
        assert!(
            config.contains("  #kubeconfig: /var/lib/kube-proxy/kubeconfig.conf"),
            "{config}"
        );
        assert_eq!(
            on_fixture(Filter::InClusterConfig, "configmaps", &c, "cm1.pb").0,
            Verdict::Unchanged
        );

        // serviceenvupdater: explicit variables in containers and init containers.
        let (verdict, mut object, _) =
            on_fixture(Filter::ServiceEnvUpdater, "pods", &c, "pod-env.pb");
        assert_eq!(verdict, Verdict::Rewritten);
        let mut values = Vec::new();
        for containers in [CONTAINERS, INIT_CONTAINERS] {
            object
                .retain_elements(&[POD_SPEC, containers], |container| {
                    container.retain_elements(&[ENV], |env| {
                        values.push((
                            env.str_at(&[ENV_NAME]).unwrap(),
                            env.str_at(&[ENV_VALUE]).unwrap(),
                        ));
                        Ok(true)
                    })?;
                    Ok(true)
                })
                .unwrap();
        }
        let values: Vec<(&str, &str)> = values
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            values,
            [
                ("KUBERNETES_SERVICE_HOST", "169.254.2.1"),
                ("OTHER", "x"),
                ("KUBERNETES_SERVICE_PORT", "10268"),
                ("KUBERNETES_SERVICE_HOST", "169.254.2.1"),
            ]
        );
        assert_eq!(
            on_fixture(Filter::ServiceEnvUpdater, "pods", &c, "p1.pb").0,
            Verdict::Unchanged
        );
    }

    #[test]
    fn an_object_a_filter_changes_always_holds_what_may_change_looks_for() {
        let mut pool = context();
        pool.topology = Some(BTreeMap::from([(
            ("default".to_string(), "web".to_string()),
            "openyurt.io/nodepool".to_string(),
        )]));
        let samples: Vec<(&str, Vec<u8>)> = [
            ("services", "svc-kubernetes.pb"),
            ("services", "svc-lb.pb"),
            ("endpointslices", "eps-kubernetes.pb"),
            ("endpointslices", "eps-topology.pb"),
            ("configmaps", "cm-kube-proxy.pb"),
            ("configmaps", "cm1.pb"),
            ("pods", "pod-env.pb"),
            ("pods", "p1.pb"),
        ]
        .into_iter()
        .map(|(resource, name)| (resource, fixture(name)))
        .collect();
        let mut changed = 0;
        for (resource, bytes) in &samples {
            for filter in Filter::ALL {
                let mut opened =
                    crate::codec::edit::Opened::open(crate::codec::Encoding::Protobuf, bytes)
                        .unwrap();
                let verdict = apply(filter, resource, &pool, &mut opened.object).unwrap();
                if verdict != Verdict::Unchanged {
                    changed += 1;
                    assert!(
                        may_change(filter, resource, &pool, bytes),
                        "{filter} on a {resource} it changes"
                    );
                }
            }
        }
        assert!(changed >= 7, "every filter changed one sample ({changed})");
        // And the common case is passed without being read.
        let plain_pod = fixture("p1.pb");
        assert!(!may_change(
            Filter::ServiceEnvUpdater,
            "pods",
            &pool,
            &plain_pod
        ));
        assert!(!may_change(
            Filter::InClusterConfig,
            "configmaps",
            &pool,
            &fixture("cm1.pb")
        ));
    }
}
