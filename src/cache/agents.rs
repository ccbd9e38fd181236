//! Which components' responses are cached: the original YurtHub's defaults,
//! `--cache-agents`, and the `cache_agents` key of ConfigMap
//! `kube-system/yurt-hub-cfg` (followed while the hub runs). `*` means everyone.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::Cache;
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

/// `data.cache_agents` of the ConfigMap JSON, if present.
pub fn cache_agents_from_configmap(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value["data"]["cache_agents"].as_str().map(str::to_string)
}

/// Re-reads `kube-system/yurt-hub-cfg` every `period` while the cloud is
/// reachable and applies its `cache_agents`.
pub fn follow_configmap(
    cache: Arc<Cache>,
    upstream: Arc<Upstream>,
    period: Duration,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("yh-cache-agents".into())
        .spawn(move || follow(&cache, &upstream, period))?;
    Ok(())
}

fn follow(cache: &Cache, upstream: &Upstream, period: Duration) {
    loop {
        if let Some(server) = upstream.pick().filter(|_| upstream.health.any_healthy()) {
            match upstream.call(server, "GET", CONFIGMAP_PATH, None, None) {
                Ok((200, body)) => {
                    let list = cache_agents_from_configmap(&body).unwrap_or_default();
                    if cache.agents.set_from_configmap(&list) {
                        log::info!("cache agents now {}", cache.agents.describe());
                    }
                }
                Ok((404, _)) => {
                    if cache.agents.set_from_configmap("") {
                        log::info!("cache agents now {}", cache.agents.describe());
                    }
                }
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
    fn reads_cache_agents_from_a_configmap() {
        let body = br#"{"kind":"ConfigMap","data":{"cache_agents":"a,b"}}"#;
        assert_eq!(cache_agents_from_configmap(body).as_deref(), Some("a,b"));
        assert_eq!(
            cache_agents_from_configmap(br#"{"kind":"ConfigMap"}"#),
            None
        );
    }
}
