//! `yh-filter-context`: what `servicetopology` and `nodeportisolation` need
//! to know beyond the object, read through the hub's own client: this
//! node's pool (its `apps.openyurt.io/nodepool` label, or
//! `--nodepool-name`), the nodes of that pool (the `NodePool`'s
//! `status.nodes`), and the Services' `openyurt.io/topologyKeys`
//! annotations (one list, then a watch). What was learnt is kept on disk,
//! so a node that restarts offline filters as it did online.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::FilterState;
use super::rules::TOPOLOGY_ANNOTATION;
use crate::codec::edit::{Opened, key};
use crate::codec::{Encoding, EventType};
use crate::shared::SharedWatches;
use crate::shared::state::Object;
use crate::store::Store;
use crate::upstream::{self, Deadline, Outgoing, Upstream};

/// The node label naming its pool.
pub const NODEPOOL_LABEL: &str = "apps.openyurt.io/nodepool";
/// How often the pool and its nodes are read again.
const POOL_PERIOD: Duration = Duration::from_secs(60);
/// Services per page of the first list (each page is read whole, within
/// the hub's 1 MiB bound for its own calls: 50 Services with long
/// annotations and managed fields stay under it).
const PAGE: usize = 50;
/// Least time between two watches of the Services (an apiserver or a load
/// balancer that ends them at once must not make the thread spin).
const WATCH_INTERVAL: Duration = Duration::from_secs(1);
/// Least time between two warnings of the same kind.
const WARN_INTERVAL: Duration = Duration::from_secs(300);
/// A watch is renewed after this long (as client-go's reflectors do).
const WATCH_SECONDS: u64 = 300;
/// Wait before trying again after a failure.
const RETRY: Duration = Duration::from_secs(5);
/// How long the shared Services wait before the follower looks at the pool
/// again, or gives the shared state up to sync.
const SHARED_WAIT: Duration = Duration::from_secs(5);
/// The file the context is kept in, under `--root-dir`.
const FILE: &str = "filter-context.json";

/// What is kept on disk.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Saved {
    pool: Option<String>,
    pool_nodes: Option<BTreeSet<String>>,
    /// `namespace/name` -> topologyKeys.
    topology: Option<BTreeMap<String, String>>,
}

/// Loads what an earlier run learnt, then keeps it current while the cloud
/// is reachable.
pub fn follow_context(
    filters: Arc<FilterState>,
    upstream: Arc<Upstream>,
    shared: Option<Arc<SharedWatches>>,
    root_dir: &Path,
    fixed_pool: Option<String>,
) -> std::io::Result<()> {
    let store = Store::open(root_dir)?;
    let saved = store
        .read(Path::new(FILE))
        .ok()
        .flatten()
        .and_then(|b| serde_json::from_slice::<Saved>(&b).ok())
        .unwrap_or_default();
    apply(&filters, &saved, fixed_pool.as_deref());
    std::thread::Builder::new()
        .name("yh-filter-context".into())
        .spawn(move || run(&filters, &upstream, shared, store, saved, fixed_pool))?;
    Ok(())
}

fn apply(filters: &FilterState, saved: &Saved, fixed_pool: Option<&str>) {
    let mut context = (*filters.context()).clone();
    context.pool = fixed_pool
        .map(str::to_string)
        .or_else(|| saved.pool.clone());
    context.pool_nodes = saved.pool_nodes.clone();
    context.topology = saved.topology.as_ref().map(|t| {
        t.iter()
            .filter_map(|(key, value)| {
                let (namespace, name) = key.split_once('/')?;
                Some(((namespace.to_string(), name.to_string()), value.clone()))
            })
            .collect()
    });
    filters.set_context(context);
}

struct Follower<'a> {
    filters: &'a FilterState,
    upstream: &'a Upstream,
    store: Store,
    fixed_pool: Option<String>,
    saved: Saved,
    pool_read: Option<Instant>,
    warned: Option<Instant>,
}

fn run(
    filters: &FilterState,
    upstream: &Upstream,
    shared: Option<Arc<SharedWatches>>,
    store: Store,
    saved: Saved,
    fixed_pool: Option<String>,
) {
    let mut follower = Follower {
        filters,
        upstream,
        store,
        fixed_pool,
        saved,
        pool_read: None,
        warned: None,
    };
    loop {
        let Some(server) = upstream.pick().filter(|_| upstream.health.any_healthy()) else {
            let seen = upstream.health.generation();
            upstream.health.wait_change(seen, RETRY);
            continue;
        };
        follower.read_pool(server);
        // Services the node already watches once for everyone: read from
        // that watch, not from a second one.
        if let Some(services) = shared
            .as_ref()
            .and_then(|s| s.for_hub("", "v1", "services"))
        {
            follower.follow_shared_services(&services);
            continue;
        }
        match follower.list_services(server) {
            Ok(resource_version) => follower.watch_services(server, resource_version),
            Err(e) => follower.warn(&format!("listing Services: {e}")),
        }
        std::thread::sleep(RETRY);
    }
}

impl Follower<'_> {
    /// A failure said at warning level at most every `WARN_INTERVAL`
    /// (a 403 needs an operator: nodes must be allowed to read it).
    fn warn(&mut self, what: &str) {
        if self.warned.is_none_or(|at| at.elapsed() >= WARN_INTERVAL) {
            self.warned = Some(Instant::now());
            log::warn!("response filters' context: {what}");
        } else {
            log::debug!("response filters' context: {what}");
        }
    }

    fn save(&mut self) {
        apply(self.filters, &self.saved, self.fixed_pool.as_deref());
        let bytes = serde_json::to_vec(&self.saved).unwrap_or_default();
        if let Err(e) = self.store.write(Path::new(FILE), &bytes) {
            log::warn!("cannot keep the filter context ({FILE} under --root-dir): {e}");
        }
    }

    /// The pool (label or flag) and its nodes, at most every `POOL_PERIOD`.
    fn read_pool(&mut self, server: usize) {
        if self.pool_read.is_some_and(|at| at.elapsed() < POOL_PERIOD) {
            return;
        }
        self.pool_read = Some(Instant::now());
        let node = &self.filters.context().node_name;
        let pool = match &self.fixed_pool {
            Some(pool) => Some(pool.clone()),
            None => match self.get(server, &format!("/api/v1/nodes/{node}")) {
                Some(node) => Some(
                    node["metadata"]["labels"][NODEPOOL_LABEL]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                ),
                None => self.saved.pool.clone(),
            },
        };
        let nodes = match pool.as_deref() {
            Some("") => Some(BTreeSet::new()),
            Some(pool) => ["v1beta2", "v1beta1"]
                .iter()
                .find_map(|version| {
                    self.get(
                        server,
                        &format!("/apis/apps.openyurt.io/{version}/nodepools/{pool}"),
                    )
                })
                .map(|pool| pool_nodes(&pool))
                .or_else(|| self.saved.pool_nodes.clone()),
            None => None,
        };
        if pool != self.saved.pool || nodes != self.saved.pool_nodes {
            log::info!(
                "filter context: pool {:?} with {} node(s)",
                pool.as_deref().unwrap_or("unknown"),
                nodes.as_ref().map_or(0, BTreeSet::len)
            );
            self.saved.pool = pool;
            self.saved.pool_nodes = nodes;
            self.save();
        }
    }

    fn get(&mut self, server: usize, path: &str) -> Option<serde_json::Value> {
        match self.upstream.call(server, "GET", path, None, None) {
            Ok((200, body)) => serde_json::from_slice(&body).ok(),
            // No such node (yet) or pool: nothing to warn about.
            Ok((404, _)) => None,
            Ok((status, _)) => {
                self.warn(&format!("{path}: status {status}"));
                None
            }
            Err(e) => {
                log::debug!("filter context: {path}: {e}");
                None
            }
        }
    }

    /// Every Service's topology annotation, page by page; returns the list's
    /// resourceVersion to watch from.
    fn list_services(&mut self, server: usize) -> Result<String, String> {
        let mut topology = BTreeMap::new();
        let mut continue_token = String::new();
        loop {
            let mut path = format!("/api/v1/services?limit={PAGE}");
            if !continue_token.is_empty() {
                path.push_str("&continue=");
                path.push_str(&query_value(&continue_token));
            }
            let page = match self.upstream.call(server, "GET", &path, None, None) {
                Ok((200, body)) => serde_json::from_slice::<serde_json::Value>(&body)
                    .map_err(|e| format!("unreadable list: {e}"))?,
                Ok((status, _)) => return Err(format!("status {status}")),
                Err(e) => return Err(e.to_string()),
            };
            for service in page["items"].as_array().into_iter().flatten() {
                if let Some((key, value)) = topology_of(service) {
                    topology.insert(key, value);
                }
            }
            continue_token = page["metadata"]["continue"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if continue_token.is_empty() {
                let resource_version = page["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                self.set_topology(topology);
                return Ok(resource_version);
            }
        }
    }

    /// Every Service's topology keys, as a whole list gave them: kept (and
    /// said) when they changed.
    fn set_topology(&mut self, topology: BTreeMap<String, String>) {
        if self.saved.topology.as_ref() != Some(&topology) {
            log::info!(
                "filter context: {} Service(s) with {TOPOLOGY_ANNOTATION}",
                topology.len()
            );
            self.saved.topology = Some(topology);
            self.save();
        }
    }

    /// The topology keys from the shared Services: all of them once, then
    /// each change, until the follower falls behind or the state is not
    /// synced (the caller comes back).
    fn follow_shared_services(&mut self, services: &Arc<crate::shared::Shared>) {
        let _held = services.hold();
        let Some(state) = services.wait_ready(None, SHARED_WAIT) else {
            // Not synced in time, or failing (the caller may try the other
            // encoding next): a pause, not a spin.
            std::thread::sleep(WATCH_INTERVAL);
            return;
        };
        let (objects, _, mut seq) = state.snapshot(|_| true);
        drop(state);
        let encoding = services.encoding;
        let topology: BTreeMap<String, String> = objects
            .iter()
            .filter_map(|o| Some((object_key(o), topology_keys(encoding, o)?)))
            .collect();
        self.set_topology(topology);
        loop {
            // Retired (the apiserver said it does not serve it): find
            // another.
            if services.stopped.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            let Some(changes) = services.wait_changes(seq, SHARED_WAIT) else {
                return;
            };
            let topology = self.saved.topology.get_or_insert_with(BTreeMap::new);
            let mut changed = false;
            for change in changes {
                seq = change.seq + 1;
                let key = object_key(&change.object);
                let keys = match change.event_type {
                    EventType::Added | EventType::Modified => {
                        topology_keys(encoding, &change.object)
                    }
                    EventType::Deleted => None,
                    EventType::Bookmark | EventType::Error => continue,
                };
                changed |= match keys {
                    Some(value) => topology.insert(key, value.clone()).as_ref() != Some(&value),
                    None => topology.remove(&key).is_some(),
                };
            }
            if changed {
                self.save();
            }
            if self.upstream.health.any_healthy()
                && let Some(server) = self.upstream.pick()
            {
                self.read_pool(server);
            }
        }
    }

    /// Follows changes from `resource_version` until the watch ends, fails
    /// or the apiserver says the version is gone (the caller lists again).
    fn watch_services(&mut self, server: usize, mut resource_version: String) {
        let mut started: Option<Instant> = None;
        loop {
            if let Some(wait) = started.map(|at| WATCH_INTERVAL.saturating_sub(at.elapsed())) {
                std::thread::sleep(wait);
            }
            started = Some(Instant::now());
            let target = format!(
                "/api/v1/services?watch=true&allowWatchBookmarks=true&timeoutSeconds={WATCH_SECONDS}&resourceVersion={resource_version}"
            );
            let headers = [
                ("Accept".to_string(), "application/json".to_string()),
                ("User-Agent".to_string(), "yurthub".to_string()),
            ];
            let outgoing = Outgoing {
                method: "GET",
                target: &target,
                headers: &headers,
                body: None,
                deadline: Deadline::Stream,
                with_client_cert: true,
                connect_timeout: None,
            };
            let response = match self.upstream.send(server, outgoing) {
                Ok(response) if response.status == 200 => response,
                Ok(response) => {
                    log::debug!(
                        "filter context: watching Services: status {}",
                        response.status
                    );
                    return;
                }
                Err(e) => {
                    log::debug!("filter context: watching Services: {e}");
                    return;
                }
            };
            let mut reader = response.into_reader();
            let mut decoder = Encoding::Json.watch_decoder();
            let mut buffer = vec![0; 16 * 1024];
            loop {
                let n = match reader.read(&mut buffer) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if upstream::is_quiet_stream(&e) => {
                        if !self.upstream.health.any_healthy() {
                            return;
                        }
                        // The pool keeps its own period while Services are quiet.
                        self.read_pool(server);
                        continue;
                    }
                    Err(_) => return,
                };
                let Ok(events) = decoder.push(&buffer[..n]) else {
                    return;
                };
                let mut changed = false;
                for event in events {
                    let Ok(object) = serde_json::from_slice::<serde_json::Value>(&event.object)
                    else {
                        continue;
                    };
                    if let Some(rv) = object["metadata"]["resourceVersion"].as_str() {
                        resource_version = rv.to_string();
                    }
                    let topology = self.saved.topology.get_or_insert_with(BTreeMap::new);
                    match event.event_type {
                        // 410 Gone and other errors: list again.
                        EventType::Error => return,
                        EventType::Bookmark => {}
                        EventType::Deleted => {
                            if let Some(key) = service_key(&object) {
                                changed |= topology.remove(&key).is_some();
                            }
                        }
                        EventType::Added | EventType::Modified => match topology_of(&object) {
                            Some((key, value)) => {
                                changed |=
                                    topology.insert(key, value.clone()).as_ref() != Some(&value);
                            }
                            None => {
                                if let Some(key) = service_key(&object) {
                                    changed |= topology.remove(&key).is_some();
                                }
                            }
                        },
                    }
                }
                if changed {
                    self.save();
                }
                self.read_pool(server);
            }
        }
    }
}

/// A query parameter's value, percent-encoded (all but unreserved characters).
fn query_value(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

fn object_key(object: &Object) -> String {
    format!("{}/{}", object.namespace, object.name)
}

/// The topology annotation of a shared Service, in either encoding.
fn topology_keys(encoding: Encoding, object: &Object) -> Option<String> {
    const ANNOTATIONS: [crate::codec::edit::Key; 2] = [key("metadata", 1), key("annotations", 12)];
    Opened::open(encoding, &object.bytes)
        .ok()?
        .object
        .map_str_at(&ANNOTATIONS, TOPOLOGY_ANNOTATION)
}

fn service_key(service: &serde_json::Value) -> Option<String> {
    let namespace = service["metadata"]["namespace"].as_str()?;
    let name = service["metadata"]["name"].as_str()?;
    Some(format!("{namespace}/{name}"))
}

/// `namespace/name` and the topology annotation of a Service that has one.
fn topology_of(service: &serde_json::Value) -> Option<(String, String)> {
    let value = service["metadata"]["annotations"][TOPOLOGY_ANNOTATION].as_str()?;
    Some((service_key(service)?, value.to_string()))
}

/// The node names of a `NodePool` (`status.nodes`).
fn pool_nodes(pool: &serde_json::Value) -> BTreeSet<String> {
    pool["status"]["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n.as_str().map(str::to_string))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_topology_annotations_and_pool_members() {
        let service = json!({"metadata": {"namespace": "a", "name": "s",
            "annotations": {TOPOLOGY_ANNOTATION: "openyurt.io/nodepool"}}});
        assert_eq!(
            topology_of(&service),
            Some(("a/s".to_string(), "openyurt.io/nodepool".to_string()))
        );
        assert_eq!(
            topology_of(&json!({"metadata": {"namespace": "a", "name": "s"}})),
            None
        );
        let pool = json!({"status": {"nodes": ["n1", "n2", 3]}});
        assert_eq!(
            pool_nodes(&pool),
            BTreeSet::from(["n1".to_string(), "n2".to_string()])
        );
        assert!(pool_nodes(&json!({})).is_empty());
        assert_eq!(
            query_value("eyJ2Ijo=+/a-b_c.d~"),
            "eyJ2Ijo%3D%2B%2Fa-b_c.d~"
        );
    }
}
