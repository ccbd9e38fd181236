//! Counters and gauges, rendered in the Prometheus text format by hand (it is a
//! few lines; a metrics crate would be most of the binary's dependencies).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use crate::budget::MemoryBudget;
use crate::cache::Cache;
use crate::health::{Health, HealthState};
use crate::http::ServerStats;

/// Distinct (component, verb, resource, code) series kept; later new ones are
/// counted under component `other` so a misbehaving client cannot grow memory.
const MAX_REQUEST_SERIES: usize = 2000;
/// Distinct components named in labels; later ones are counted as `other`.
const MAX_COMPONENTS: usize = 64;
/// Longest label value taken from a request (a User-Agent, a path segment);
/// a longer one is counted as `other`, so `/metrics` stays small.
const MAX_LABEL_BYTES: usize = 64;
/// Component/resource pairs the autonomy gauges name; the JSON report at
/// `/v1/autonomy` has every one.
const MAX_AUTONOMY_RESOURCES: usize = 500;

type RequestKey = (String, &'static str, String, u16);

/// A per-listener series: name, type, help, and how to read it.
type ListenerSeries = (
    &'static str,
    &'static str,
    &'static str,
    fn(&ServerStats) -> u64,
);

#[derive(Default)]
pub struct Metrics {
    /// Read-locked to count (an atomic add); write-locked only for a new
    /// series, so requests on many connections do not queue on one lock.
    requests: Series<RequestKey>,
    pub in_flight: AtomicI64,
    pub long_running: AtomicI64,
    pub rejected_in_flight: AtomicU64,
    pub upstream_errors: AtomicU64,
    pub offline_answers: AtomicU64,
    /// Streams relayed from an apiserver ended because it was marked unhealthy.
    pub streams_ended_unhealthy: AtomicU64,
    /// Writes answered offline, by component and verb (bounded like `requests`).
    offline_writes: Series<(String, &'static str)>,
    /// Requests answered offline because no apiserver could be reached, by how.
    unreachable: Mutex<BTreeMap<&'static str, u64>>,
    /// Components named in labels so far (at most `MAX_COMPONENTS`).
    components: RwLock<std::collections::BTreeSet<String>>,
}

impl Metrics {
    pub fn record_request(&self, component: &str, verb: &'static str, resource: &str, code: u16) {
        let component = self.component_label(component);
        count_capped(
            &self.requests,
            (component, verb, short_label(resource).to_string(), code),
            || ("other".into(), verb, String::new(), code),
        );
    }

    /// One write answered offline (the client was told so by a header).
    pub fn count_offline_write(&self, component: &str, verb: &'static str) {
        let component = self.component_label(component);
        count_capped(&self.offline_writes, (component, verb), || {
            ("other".into(), verb)
        });
    }

    /// The label for a component: itself while it is short and one of the
    /// first `MAX_COMPONENTS` seen, else `other`.
    fn component_label(&self, component: &str) -> String {
        let component = short_label(component);
        if component == "other" {
            return component.to_string();
        }
        if self
            .components
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(component)
        {
            return component.to_string();
        }
        let mut seen = self.components.write().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= MAX_COMPONENTS {
            return "other".to_string();
        }
        seen.insert(component.to_string());
        component.to_string()
    }

    /// One request answered offline because no apiserver could be reached.
    pub fn count_unreachable(&self, how: &'static str) {
        *self
            .unreachable
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(how)
            .or_default() += 1;
    }

    /// The Prometheus text exposition of everything.
    pub fn render(
        &self,
        servers: &[String],
        health: &HealthState,
        listeners: &[(&str, &ServerStats)],
        cache: Option<&Cache>,
        budget: Option<&MemoryBudget>,
    ) -> String {
        let mut out = String::new();
        if let Some(budget) = budget {
            header(
                &mut out,
                "node_yurthub_memory_budget_bytes",
                "gauge",
                "memory held for requests in flight (used) against --memory-budget-mib (limit)",
            );
            let _ = writeln!(
                out,
                "node_yurthub_memory_budget_bytes{{state=\"used\"}} {}\nnode_yurthub_memory_budget_bytes{{state=\"limit\"}} {}",
                budget.used(),
                budget.limit()
            );
            header(
                &mut out,
                "node_yurthub_memory_budget_refused_total",
                "counter",
                "reservations refused because the memory budget was spent (a 429, a small relay buffer or a response not cached)",
            );
            let _ = writeln!(
                out,
                "node_yurthub_memory_budget_refused_total {}",
                budget.refused.load(Ordering::Relaxed)
            );
            header(
                &mut out,
                "node_yurthub_memory_budget_oversize_total",
                "counter",
                "answers too large for the memory budget, built and sent one at a time",
            );
            let _ = writeln!(
                out,
                "node_yurthub_memory_budget_oversize_total {}",
                budget.oversize.load(Ordering::Relaxed)
            );
        }
        header(
            &mut out,
            "node_yurthub_server_healthy_status",
            "gauge",
            "1 if the apiserver is healthy, else 0",
        );
        for (i, server) in servers.iter().enumerate() {
            let healthy = u8::from(health.get(i) == Health::Healthy);
            let _ = writeln!(
                out,
                "node_yurthub_server_healthy_status{{server=\"{}\"}} {healthy}",
                escape(server)
            );
        }
        header(
            &mut out,
            "node_yurthub_in_flight_requests",
            "gauge",
            "requests being served, watches excluded",
        );
        let _ = writeln!(
            out,
            "node_yurthub_in_flight_requests {}",
            self.in_flight.load(Ordering::Relaxed)
        );
        header(
            &mut out,
            "node_yurthub_long_running_requests",
            "gauge",
            "open watches and other streams",
        );
        let _ = writeln!(
            out,
            "node_yurthub_long_running_requests {}",
            self.long_running.load(Ordering::Relaxed)
        );
        header(
            &mut out,
            "node_yurthub_rejected_requests_total",
            "counter",
            "requests refused with 429 past --max-requests-in-flight",
        );
        let _ = writeln!(
            out,
            "node_yurthub_rejected_requests_total {}",
            self.rejected_in_flight.load(Ordering::Relaxed)
        );
        header(
            &mut out,
            "node_yurthub_upstream_errors_total",
            "counter",
            "requests that failed to reach an apiserver",
        );
        let _ = writeln!(
            out,
            "node_yurthub_upstream_errors_total {}",
            self.upstream_errors.load(Ordering::Relaxed)
        );
        header(
            &mut out,
            "node_yurthub_requests_total",
            "counter",
            "answered requests by component, verb, resource and code",
        );
        for ((component, verb, resource, code), count) in self
            .requests
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let count = count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "node_yurthub_requests_total{{component=\"{}\",verb=\"{verb}\",resource=\"{}\",code=\"{code}\"}} {count}",
                escape(component),
                escape(resource)
            );
        }
        let per_listener: [ListenerSeries; 5] = [
            (
                "node_yurthub_open_connections",
                "gauge",
                "open client connections by listener",
                |s| s.open_connections.load(Ordering::Relaxed) as u64,
            ),
            (
                "node_yurthub_rejected_connections_total",
                "counter",
                "connections refused with 503 past --max-connections",
                |s| s.rejected_connections.load(Ordering::Relaxed),
            ),
            (
                "node_yurthub_accept_errors_total",
                "counter",
                "failed accepts (for example out of file descriptors)",
                |s| s.accept_errors.load(Ordering::Relaxed),
            ),
            (
                "node_yurthub_connection_panics_total",
                "counter",
                "connections ended because their handler panicked (logged; the hub went on)",
                |s| s.panics.load(Ordering::Relaxed),
            ),
            (
                "node_yurthub_evicted_idle_connections_total",
                "counter",
                "idle connections closed to make room for a new one (serve port)",
                |s| s.evicted_idle.load(Ordering::Relaxed),
            ),
        ];
        for (name, kind, help, value) in per_listener {
            header(&mut out, name, kind, help);
            for (listener, stats) in listeners {
                let _ = writeln!(out, "{name}{{listener=\"{listener}\"}} {}", value(stats));
            }
        }
        header(
            &mut out,
            "node_yurthub_offline_answers_total",
            "counter",
            "requests answered from the cache",
        );
        let _ = writeln!(
            out,
            "node_yurthub_offline_answers_total {}",
            self.offline_answers.load(Ordering::Relaxed)
        );
        header(
            &mut out,
            "node_yurthub_offline_writes_total",
            "counter",
            "writes answered by the hub itself (marked X-Yurthub-Offline) because no apiserver could be reached",
        );
        for ((component, verb), count) in self
            .offline_writes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let count = count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "node_yurthub_offline_writes_total{{component=\"{}\",verb=\"{verb}\"}} {count}",
                escape(component)
            );
        }
        header(
            &mut out,
            "node_yurthub_unreachable_total",
            "counter",
            "requests answered offline because no apiserver could be reached: refused, timeout, unreachable, or recent (every one failed moments ago)",
        );
        for (how, count) in self
            .unreachable
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "node_yurthub_unreachable_total{{reason=\"{how}\"}} {count}"
            );
        }
        header(
            &mut out,
            "node_yurthub_streams_ended_unhealthy_total",
            "counter",
            "watches and other streams ended because their apiserver was marked unhealthy",
        );
        let _ = writeln!(
            out,
            "node_yurthub_streams_ended_unhealthy_total {}",
            self.streams_ended_unhealthy.load(Ordering::Relaxed)
        );
        if let Some(cache) = cache {
            let stats = &cache.stats;
            let series: [(&str, &str, u64); 12] = [
                (
                    "node_yurthub_cache_objects_written_total",
                    "objects written to the cache",
                    stats.objects_written.load(Ordering::Relaxed),
                ),
                (
                    "node_yurthub_cache_objects_removed_total",
                    "objects removed from the cache",
                    stats.objects_removed.load(Ordering::Relaxed),
                ),
                (
                    "node_yurthub_cache_stale_skipped_total",
                    "writes skipped because the cache held a newer version",
                    stats.stale_skipped.load(Ordering::Relaxed),
                ),
                (
                    "node_yurthub_cache_write_errors_total",
                    "failed cache writes",
                    stats.write_errors.load(Ordering::Relaxed),
                ),
                (
                    "node_yurthub_cache_coalesced_total",
                    "copies waiting for the writer replaced by a newer copy of the same object or list shape",
                    stats.coalesced.load(Ordering::Relaxed),
                ),
                (
                    "node_yurthub_cache_dropped_total",
                    "responses or events not cached because the writer was behind or they were too large",
                    stats.dropped.load(Ordering::Relaxed),
                ),
                (
                    "node_yurthub_cache_decode_errors_total",
                    "responses or events the cache could not read",
                    stats.decode_errors.load(Ordering::Relaxed),
                ),
                (
                    "node_yurthub_cache_streamed_lists_total",
                    "streaming lists whose initial events were stored as a complete list",
                    stats.streamed_lists.load(Ordering::Relaxed),
                ),
                (
                    "node_yurthub_cache_tokens_stored_total",
                    "service-account tokens issued by the cloud and kept for offline use",
                    stats.tokens_stored.load(Ordering::Relaxed),
                ),
                (
                    "node_yurthub_cache_tokens_expired_total",
                    "kept service-account tokens removed because they expired",
                    stats.tokens_expired.load(Ordering::Relaxed),
                ),
                (
                    "node_yurthub_cache_quarantined_files_total",
                    "damaged cache files, files holding another object than their path names, and symlinks moved aside",
                    cache.store.stats.quarantined.load(Ordering::Relaxed),
                ),
                (
                    "node_yurthub_cache_symlinks_refused_total",
                    "cache reads and writes refused because a directory on the way was a symlink",
                    cache.store.stats.symlinks_refused.load(Ordering::Relaxed),
                ),
            ];
            for (name, help, value) in series {
                header(&mut out, name, "counter", help);
                let _ = writeln!(out, "{name} {value}");
            }
            let (objects, bytes, entries) = cache.index_sizes();
            header(
                &mut out,
                "node_yurthub_cache_index_bytes",
                "gauge",
                "memory of the cache's in-memory index: object bytes kept (at most 16 MiB) and its entries (an estimate); objects indexed",
            );
            let _ = writeln!(
                out,
                "node_yurthub_cache_index_bytes{{part=\"objects\"}} {bytes}\nnode_yurthub_cache_index_bytes{{part=\"entries\"}} {entries}\nnode_yurthub_cache_index_objects {objects}"
            );
            render_upkeep(&mut out, cache);
            render_autonomy(&mut out, &cache.autonomy(health.any_healthy()));
        }
        out
    }
}

/// Garbage collection's and the disk quota's counters.
fn render_upkeep(out: &mut String, cache: &Cache) {
    let stats = &cache.stats;
    let counters = [
        (
            "node_yurthub_cache_collections_total",
            "garbage collections run",
            stats.collections.load(Ordering::Relaxed),
        ),
        (
            "node_yurthub_cache_quota_evicted_total",
            "objects removed to stay under --disk-cache-max-bytes (not kept)",
            stats.quota_evicted.load(Ordering::Relaxed),
        ),
        (
            "node_yurthub_cache_quota_evicted_bytes_total",
            "bytes of objects removed to stay under --disk-cache-max-bytes",
            stats.quota_evicted_bytes.load(Ordering::Relaxed),
        ),
    ];
    for (name, help, value) in counters {
        header(out, name, "counter", help);
        let _ = writeln!(out, "{name} {value}");
    }
    header(
        out,
        "node_yurthub_cache_collected_total",
        "counter",
        "objects (components for idle_component) garbage collection removed, by rule",
    );
    for (rule, count) in crate::cache::COLLECTION_RULES.iter().zip(&stats.collected) {
        let _ = writeln!(
            out,
            "node_yurthub_cache_collected_total{{rule=\"{rule}\"}} {}",
            count.load(Ordering::Relaxed)
        );
    }
}

/// The autonomy report's gauges (the same figures as `/v1/autonomy`).
fn render_autonomy(out: &mut String, report: &crate::cache::autonomy::Report) {
    header(
        out,
        "node_yurthub_cache_disk_bytes",
        "gauge",
        "disk taken by cached object files in 4 KiB blocks (used) against --disk-cache-max-bytes (limit, 0: none), and the bytes over it kept because a kubelet needs them (over_limit_kept)",
    );
    let _ = writeln!(
        out,
        "node_yurthub_cache_disk_bytes{{state=\"used\"}} {}\nnode_yurthub_cache_disk_bytes{{state=\"limit\"}} {}\nnode_yurthub_cache_disk_bytes{{state=\"over_limit_kept\"}} {}",
        report.disk.used_bytes, report.disk.quota_bytes, report.disk.over_quota_kept_bytes
    );
    header(
        out,
        "node_yurthub_cache_index_given_up",
        "gauge",
        "1 if the cache index was given up (too many objects): garbage collection, the quota and the report stop until a restart",
    );
    let _ = writeln!(
        out,
        "node_yurthub_cache_index_given_up {}",
        u8::from(report.index_given_up)
    );
    header(
        out,
        "node_yurthub_autonomy_ready",
        "gauge",
        "1 if the component can restart offline with what the cache holds (see /v1/autonomy)",
    );
    // Kubelets and named agents first: components a local client invents
    // cannot push them out of the first `MAX_COMPONENTS`.
    let mut components: Vec<&crate::cache::autonomy::ComponentReport> =
        report.components.iter().collect();
    components.sort_by_key(|c| (!c.kubelet, !c.agent));
    for component in components.iter().take(MAX_COMPONENTS) {
        let _ = writeln!(
            out,
            "node_yurthub_autonomy_ready{{component=\"{}\"}} {}",
            escape(short_label(&component.name)),
            u8::from(component.ready)
        );
    }
    let rows: Vec<(&str, &crate::cache::autonomy::ResourceReport)> = components
        .iter()
        .take(MAX_COMPONENTS)
        .flat_map(|c| c.resources.iter().map(move |r| (c.name.as_str(), r)))
        .take(MAX_AUTONOMY_RESOURCES)
        .collect();
    let labels = |component: &str, resource: &str| {
        format!(
            "component=\"{}\",resource=\"{}\"",
            escape(short_label(component)),
            escape(short_label(resource))
        )
    };
    header(
        out,
        "node_yurthub_cache_objects",
        "gauge",
        "objects cached, by component and resource",
    );
    for (component, resource) in &rows {
        let _ = writeln!(
            out,
            "node_yurthub_cache_objects{{{}}} {}",
            labels(component, &resource.resource),
            resource.objects
        );
    }
    header(
        out,
        "node_yurthub_cache_lists",
        "gauge",
        "list shapes whose complete list the cache holds (complete) or not (incomplete)",
    );
    for (component, resource) in &rows {
        let complete = resource.lists.iter().filter(|l| l.complete).count();
        let labels = labels(component, &resource.resource);
        let _ = writeln!(
            out,
            "node_yurthub_cache_lists{{{labels},state=\"complete\"}} {complete}\nnode_yurthub_cache_lists{{{labels},state=\"incomplete\"}} {}",
            resource.lists.len() - complete
        );
    }
    header(
        out,
        "node_yurthub_cache_newest_list_age_seconds",
        "gauge",
        "seconds since the newest complete list of the resource was stored",
    );
    for (component, resource) in &rows {
        let newest = resource
            .lists
            .iter()
            .filter(|l| l.complete)
            .filter_map(|l| l.age_seconds)
            .min();
        if let Some(age) = newest {
            let _ = writeln!(
                out,
                "node_yurthub_cache_newest_list_age_seconds{{{}}} {age}",
                labels(component, &resource.resource)
            );
        }
    }
    header(
        out,
        "node_yurthub_cache_last_write_error_age_seconds",
        "gauge",
        "seconds since the resource's last failed cache write (quota removals included); absent if none",
    );
    for (component, resource) in &rows {
        if let Some(error) = &resource.last_write_error {
            let _ = writeln!(
                out,
                "node_yurthub_cache_last_write_error_age_seconds{{{}}} {}",
                labels(component, &resource.resource),
                error.seconds_ago
            );
        }
    }
}

/// Counts one under `key`, or under `overflow()` once `MAX_REQUEST_SERIES`
/// distinct series exist, so a misbehaving client cannot grow memory.
fn count_capped<K: Ord>(series: &Series<K>, key: K, overflow: impl FnOnce() -> K) {
    if let Some(count) = series.read().unwrap_or_else(|e| e.into_inner()).get(&key) {
        count.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let mut series = series.write().unwrap_or_else(|e| e.into_inner());
    let key = if series.contains_key(&key) || series.len() < MAX_REQUEST_SERIES {
        key
    } else {
        overflow()
    };
    series
        .entry(key)
        .or_default()
        .fetch_add(1, Ordering::Relaxed);
}

/// Counters by label values.
type Series<K> = RwLock<BTreeMap<K, AtomicU64>>;

/// A label value taken from a request, or `other` when it is too long.
fn short_label(value: &str) -> &str {
    if value.len() <= MAX_LABEL_BYTES {
        value
    } else {
        "other"
    }
}

pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Escapes a label value: backslash, double quote and newline.
pub fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::autonomy::{ComponentReport, Disk, Report};

    #[test]
    fn invented_components_never_hide_the_kubelets_and_agents_gauges() {
        let component = |name: String, kubelet: bool, agent: bool| ComponentReport {
            name,
            agent,
            kubelet,
            last_seen_seconds_ago: None,
            objects: 0,
            bytes: 0,
            service_account_tokens: 0,
            ready: kubelet,
            verdict: String::new(),
            resources: Vec::new(),
        };
        // Sorted by name, as the report is: 70 invented names come first.
        let mut components: Vec<ComponentReport> = (0..70)
            .map(|i| component(format!("a{i:02}"), false, false))
            .collect();
        components.push(component("kube-proxy".into(), false, true));
        components.push(component("kubelet".into(), true, true));
        components.push(component("kubemark".into(), true, false));
        let report = Report {
            node: "edge-1".into(),
            online: true,
            index_ready: true,
            index_given_up: false,
            disk: Disk {
                used_bytes: 0,
                quota_bytes: 0,
                over_quota_kept_bytes: 0,
            },
            last_collection: None,
            components,
        };
        let mut out = String::new();
        render_autonomy(&mut out, &report);
        for line in [
            r#"node_yurthub_autonomy_ready{component="kubelet"} 1"#,
            r#"node_yurthub_autonomy_ready{component="kubemark"} 1"#,
            r#"node_yurthub_autonomy_ready{component="kube-proxy"} 0"#,
            r#"node_yurthub_autonomy_ready{component="a00"} 0"#,
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing:\n{out}");
        }
        assert!(!out.contains(r#"component="a69""#), "{out}");
    }

    #[test]
    fn renders_series_with_escaped_labels() {
        let metrics = Metrics::default();
        metrics.record_request("kube\"let", "get", "pods", 200);
        metrics.record_request("kube\"let", "get", "pods", 200);
        let health = HealthState::new(1);
        health.set(0, Health::Healthy);
        let stats = ServerStats::default();
        let text = metrics.render(
            &["https://a:6443".into()],
            &health,
            &[("proxy", &stats)],
            None,
            None,
        );
        assert!(
            text.contains("node_yurthub_server_healthy_status{server=\"https://a:6443\"} 1"),
            "{text}"
        );
        assert!(text.contains("node_yurthub_requests_total{component=\"kube\\\"let\",verb=\"get\",resource=\"pods\",code=\"200\"} 2"), "{text}");
        assert!(
            text.contains("node_yurthub_open_connections{listener=\"proxy\"} 0"),
            "{text}"
        );
    }

    #[test]
    fn series_count_is_bounded() {
        let metrics = Metrics::default();
        for i in 0..MAX_REQUEST_SERIES + 10 {
            metrics.record_request("kubelet", "get", &format!("r{i}"), 200);
        }
        let n = metrics.requests.read().unwrap().len();
        assert_eq!(n, MAX_REQUEST_SERIES + 1);
    }

    #[test]
    fn long_and_numerous_label_values_are_counted_as_other() {
        let metrics = Metrics::default();
        let long = "x".repeat(60_000);
        metrics.record_request(&long, "get", &long, 200);
        for i in 0..MAX_COMPONENTS + 10 {
            metrics.record_request(&format!("c{i}"), "get", "pods", 200);
            metrics.count_offline_write(&format!("c{i}"), "create");
        }
        let health = HealthState::new(0);
        let text = metrics.render(&[], &health, &[], None, None);
        assert!(text.len() < 64 * 1024, "{} bytes", text.len());
        assert!(
            text.contains("component=\"other\",verb=\"get\",resource=\"other\""),
            "{text}"
        );
        let components: std::collections::BTreeSet<&str> = text
            .lines()
            .filter_map(|l| l.split("component=\"").nth(1))
            .filter_map(|l| l.split('"').next())
            .collect();
        assert_eq!(components.len(), MAX_COMPONENTS + 1, "{components:?}");
    }
}
