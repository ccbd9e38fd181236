//! Which components' responses are cached: the original YurtHub's defaults,
//! `--cache-agents`, and the `cache_agents` key of ConfigMap
//! `kube-system/yurt-hub-cfg` (followed while the hub runs). `*` means everyone.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::store::Store;

use crate::upstream::Upstream;

/// Cached without being asked, as in the original.
pub const DEFAULT_AGENTS: &[&str] = &[
    "kubelet",
    "kube-proxy",
    "flanneld",
    "coredns",
    "yurttunnel-agent",
    "yurthub",
];

/// The ConfigMap that can add agents at run time.
pub const CONFIGMAP_PATH: &str = "/api/v1/namespaces/kube-system/configmaps/yurt-hub-cfg";

pub struct Agents {
    fixed: BTreeSet<String>,
    from_configmap: RwLock<BTreeSet<String>>,
}

fn parse_list(list: &str) -> BTreeSet<String> {
    list.split(',')
        .map(|a| a.trim().to_ascii_lowercase())
        .filter(|a| !a.is_empty())
        .collect()
}

impl Agents {
    /// Defaults plus the `--cache-agents` flag's comma list.
    pub fn new(flag: &str) -> Agents {
        let mut fixed = parse_list(flag);
        fixed.extend(DEFAULT_AGENTS.iter().map(|a| a.to_string()));
        Agents {
            fixed,
            from_configmap: RwLock::new(BTreeSet::new()),
        }
    }

    pub fn is_agent(&self, component: &str) -> bool {
        if component.is_empty() {
            return false;
        }
        let configmap = self
            .from_configmap
            .read()
            .unwrap_or_else(|e| e.into_inner());
        self.fixed.contains("*")
            || configmap.contains("*")
            || self.fixed.contains(component)
            || configmap.contains(component)
    }

    /// Whether a component is named as an agent (by the defaults, the flag
    /// or the ConfigMap): `*` caches everyone but names nobody, so garbage
    /// collection may still remove a component it alone caches.
    pub fn is_named(&self, component: &str) -> bool {
        let configmap = self
            .from_configmap
            .read()
            .unwrap_or_else(|e| e.into_inner());
        component != "*" && (self.fixed.contains(component) || configmap.contains(component))
    }

    /// Replaces the ConfigMap's contribution; returns whether it changed.
    pub fn set_from_configmap(&self, list: &str) -> bool {
        let parsed = parse_list(list);
        let mut current = self
            .from_configmap
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if *current == parsed {
            return false;
        }
        *current = parsed;
        true
    }

    /// Every agent, for logs.
    pub fn describe(&self) -> String {
        let configmap = self
            .from_configmap
            .read()
            .unwrap_or_else(|e| e.into_inner());
        let all: BTreeSet<&String> = self.fixed.iter().chain(configmap.iter()).collect();
        all.into_iter().cloned().collect::<Vec<_>>().join(",")
    }
}

/// The `data` of the ConfigMap JSON (string values only), if it reads.
pub fn configmap_data(body: &[u8]) -> Option<BTreeMap<String, String>> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let data = value.get("data")?.as_object()?;
    Some(
        data.iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect(),
    )
}

/// Applies `data.cache_agents` of `yurt-hub-cfg` (absent: none added).
pub fn apply_configmap(agents: &Agents, data: &BTreeMap<String, String>) {
    let list = data
        .get("cache_agents")
        .map(String::as_str)
        .unwrap_or_default();
    if agents.set_from_configmap(list) {
        log::info!("cache agents now {}", agents.describe());
    }
}

/// Where the last data read of `yurt-hub-cfg` is kept, under `--root-dir`:
/// a node restarting offline still caches, and filters for, the components
/// it names.
const SAVED_CONFIGMAP: &str = "yurt-hub-cfg.json";

/// The data of `yurt-hub-cfg` as an earlier run kept it (applied at start,
/// before the cache and the listeners open).
pub fn saved_configmap(root_dir: &Path) -> Option<BTreeMap<String, String>> {
    let store = Store::open(root_dir).ok()?;
    let bytes = store.read(Path::new(SAVED_CONFIGMAP)).ok().flatten()?;
    match serde_json::from_slice(&bytes) {
        Ok(data) => Some(data),
        Err(e) => {
            log::warn!("ignoring {SAVED_CONFIGMAP} under --root-dir: {e}");
            None
        }
    }
}

/// Re-reads `kube-system/yurt-hub-cfg` every `period` while the cloud is
/// reachable and hands each read to `apply` (empty once the ConfigMap is
/// gone), keeping what changed under `root_dir` (`saved`: what is kept now).
pub fn follow_configmap(
    upstream: Arc<Upstream>,
    period: Duration,
    root_dir: &Path,
    saved: Option<BTreeMap<String, String>>,
    apply: impl Fn(&BTreeMap<String, String>) + Send + 'static,
) -> std::io::Result<()> {
    let store = match Store::open(root_dir) {
        Ok(store) => Some(store),
        Err(e) => {
            log::warn!("yurt-hub-cfg is followed but not kept for offline starts: {e}");
            None
        }
    };
    // The last data written (or tried: a failed write is said once).
    let last = Mutex::new(saved);
    let keep = move |data: &BTreeMap<String, String>| {
        let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(store) = &store
            && last.as_ref() != Some(data)
        {
            let bytes = serde_json::to_vec(data).unwrap_or_default();
            if let Err(e) = store.write(Path::new(SAVED_CONFIGMAP), &bytes) {
                log::warn!("cannot keep yurt-hub-cfg under --root-dir: {e}");
            }
            *last = Some(data.clone());
        }
        apply(data);
    };
    std::thread::Builder::new()
        .name("yh-hub-config".into())
        .spawn(move || follow(&upstream, period, keep))?;
    Ok(())
}

fn follow(upstream: &Upstream, period: Duration, apply: impl Fn(&BTreeMap<String, String>)) {
    loop {
        if let Some(server) = upstream.pick().filter(|_| upstream.health.any_healthy()) {
            match upstream.call(server, "GET", CONFIGMAP_PATH, None, None) {
                // An answer that does not read is a failed read, not an
                // empty ConfigMap.
                Ok((200, body)) => match configmap_data(&body) {
                    Some(data) => apply(&data),
                    None => log::debug!("reading {CONFIGMAP_PATH}: not a ConfigMap"),
                },
                Ok((404, _)) => apply(&BTreeMap::new()),
                Ok((status, _)) => {
                    log::debug!("reading {}: status {status}", CONFIGMAP_PATH)
                }
                Err(e) => log::debug!("reading {}: {e}", CONFIGMAP_PATH),
            }
        }
        std::thread::sleep(period);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_flag_and_configmap_agents() {
        let agents = Agents::new("kubectl, My-Agent");
        assert!(agents.is_agent("kubelet"));
        assert!(agents.is_agent("kubectl"));
        assert!(agents.is_agent("my-agent"));
        assert!(!agents.is_agent("curl"));
        assert!(!agents.is_agent(""));
        assert!(agents.set_from_configmap("curl"));
        assert!(!agents.set_from_configmap(" curl "));
        assert!(agents.is_agent("curl"));
        assert!(agents.set_from_configmap(""));
        assert!(!agents.is_agent("curl"));
    }

    #[test]
    fn star_means_everyone_but_names_nobody() {
        assert!(Agents::new("*").is_agent("anything"));
        assert!(!Agents::new("*").is_named("anything"));
        assert!(Agents::new("*").is_named("kubelet"));
        let agents = Agents::new("");
        agents.set_from_configmap("*");
        assert!(agents.is_agent("anything"));
    }

    #[test]
    fn reads_the_data_of_a_configmap() {
        let body = br#"{"kind":"ConfigMap","data":{"cache_agents":"a,b","n":1}}"#;
        let data = configmap_data(body).unwrap();
        assert_eq!(data.len(), 1);
        let agents = Agents::new("");
        apply_configmap(&agents, &data);
        assert!(agents.is_agent("a"));
        apply_configmap(&agents, &BTreeMap::new());
        assert!(!agents.is_agent("a"));
        assert_eq!(configmap_data(br#"{"kind":"ConfigMap"}"#), None);
    }
}
