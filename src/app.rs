//! Wiring: builds the shared state, starts the named threads and listeners,
//! waits for a signal, and shuts down in bounded time.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGINT, SIGQUIT, SIGTERM};

use crate::admin::Admin;
use crate::bootstrap;
use crate::budget::MemoryBudget;
use crate::cache::{Cache, Upkeep, agents, agents::Agents};
use crate::config::Config;
use crate::config::WorkingMode;
use crate::filter::{self, FilterState};
use crate::health::{self, HealthState, ProbeSettings};
use crate::http::{
    self, ErrorBody, Limits, PlainAcceptor, ServerConfig, ServerHandle, ServerStats, TlsAcceptor,
};
use crate::metrics::Metrics;
use crate::offline::Offline;
use crate::proxy::{Port, Proxy, ProxyPort};
use crate::shared::SharedWatches;
use crate::status::status_body;
use crate::upstream::{Server, Upstream};

/// Stack of each connection thread: enough for TLS and JSON, small enough that
/// hundreds of connections stay cheap on 32-bit boards.
const CONNECTION_STACK: usize = 512 * 1024;
/// Open connections on the hub's own port (probes and scrapes only).
const SERVE_MAX_CONNECTIONS: usize = 32;
/// How long shutdown waits for requests in flight (watches are cut).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Added to the probe timeout for the longest wait on the first probe.
const FIRST_PROBE_GRACE: Duration = Duration::from_secs(1);

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Runs the hub until SIGTERM, SIGINT or SIGQUIT.
pub fn run(config: Config) -> Result<(), String> {
    install_panic_policy();
    log::info!(
        "yurthub {VERSION} starting: node {}, apiservers {}, {:?} mode",
        config.node_name,
        config.servers.join(","),
        config.working_mode
    );
    warn_if_few_file_descriptors(config.max_connections);
    let health_state = Arc::new(HealthState::new(config.servers.len()));
    let servers = config
        .servers
        .iter()
        .map(|url| Server { url: url.clone() })
        .collect();
    let upstream = Arc::new(Upstream::new(
        servers,
        config.lb_mode,
        health_state.clone(),
        &config.ca_file,
        &config.client_cert_file,
        config.heartbeat_interval,
        config.heartbeat_timeout,
    ));
    let metrics = Arc::new(Metrics::default());
    let budget = MemoryBudget::new(config.memory_budget);

    // Bind before anything else runs so a taken port fails the start at once.
    let proxy_listener = bind(config.bind_address, config.proxy_port, "proxy-port")?;
    let serve_listener = bind(config.bind_address, config.serve_port, "serve-port")?;

    let prober_upstream = upstream.clone();
    let probe_timeout = config.heartbeat_timeout;
    health::spawn_probers(
        health_state,
        config.servers.clone(),
        ProbeSettings {
            interval: config.heartbeat_interval,
            failed_retry: config.heartbeat_failed_retry,
            healthy_threshold: config.heartbeat_healthy_threshold,
        },
        move |i| prober_upstream.probe(i, probe_timeout),
    )
    .map_err(|e| format!("cannot start the health checker: {e}"))?;

    if let Some(token) = &config.join_token {
        bootstrap::spawn(
            upstream.clone(),
            config.root_dir.clone(),
            config.node_name.clone(),
            token.clone(),
        )
        .map_err(|e| format!("cannot start the bootstrap: {e}"))?;
    }
    crate::upstream::follow_client_certificate(upstream.clone(), config.client_cert_file.clone())
        .map_err(|e| format!("cannot start the certificate follower: {e}"))?;

    // yurt-hub-cfg as last read: its agents and filter components apply
    // from the start, offline too.
    let saved_hub_config = agents::saved_configmap(&config.root_dir);
    let cache = match config.working_mode {
        WorkingMode::Cloud => None,
        WorkingMode::Edge => start_cache(&config, saved_hub_config.as_ref()),
    };
    if !config.unknown_filters.is_empty() {
        log::warn!(
            "--disabled-resource-filters names no filter of this hub: {} (ignored)",
            config.unknown_filters.join(", ")
        );
    }
    let filters = Arc::new(FilterState::new(
        config.filters.is_some(),
        config.filters.clone().unwrap_or_default(),
        filter::Context {
            hub: config.hub_address.clone(),
            node_name: config.node_name.clone(),
            pool: config.nodepool_name.clone(),
            pool_nodes: None,
            topology: None,
        },
    ));
    if let Some(data) = &saved_hub_config {
        filters.set_configmap_data(data);
    }
    // kube-system/yurt-hub-cfg: the cache agents and the filters' components.
    let followed = {
        let (cache, filters) = (cache.clone(), filters.clone());
        agents::follow_configmap(
            upstream.clone(),
            config.heartbeat_interval * 3,
            &config.root_dir,
            saved_hub_config.clone(),
            move |data| {
                if let Some(cache) = &cache {
                    agents::apply_configmap(&cache.agents, data);
                }
                filters.set_configmap_data(data);
            },
        )
    };
    if let Err(e) = followed {
        log::warn!("cannot follow kube-system/yurt-hub-cfg: {e}");
    }
    // One upstream list+watch per shared resource, started on first use.
    let shared = (!config.shared_watch_resources.is_empty()).then(|| {
        Arc::new(SharedWatches::new(
            config.shared_watch_resources.clone(),
            upstream.clone(),
            config.min_request_timeout,
        ))
    });

    // servicetopology and nodeportisolation need the pool and the Services.
    let needs_context = config.filters.as_ref().is_some_and(|f| {
        f.is_on(filter::Filter::ServiceTopology) || f.is_on(filter::Filter::NodePortIsolation)
    });
    if needs_context
        && let Err(e) = filter::follow_context(
            filters.clone(),
            upstream.clone(),
            shared.clone(),
            &config.root_dir,
            config.nodepool_name.clone(),
        )
    {
        log::warn!("cannot follow what the response filters need to know: {e}");
    }
    let offline = cache.as_ref().map(|cache| Offline {
        cache: cache.clone(),
        budget: budget.clone(),
        health: upstream.health.clone(),
        min_request_timeout: config.min_request_timeout,
        filters: filters.clone(),
    });

    let error_body: ErrorBody = Arc::new(status_body);
    let proxy = Arc::new(Proxy {
        upstream: upstream.clone(),
        metrics: metrics.clone(),
        max_in_flight: i64::from(config.max_requests_in_flight),
        cache: cache.clone(),
        offline,
        first_probe_wait: config.heartbeat_timeout + FIRST_PROBE_GRACE,
        budget: budget.clone(),
        filters: filters.clone(),
        shared: shared.clone(),
    });
    let proxy_stats = Arc::new(ServerStats::default());
    let mut proxy_server = http::spawn(
        proxy_listener,
        ServerConfig {
            name: "proxy",
            max_connections: config.max_connections as usize,
            limits: Limits::default(),
            error_body: error_body.clone(),
            stack_size: CONNECTION_STACK,
            evict_idle_when_full: false,
        },
        Arc::new(PlainAcceptor),
        Arc::new(ProxyPort {
            proxy: proxy.clone(),
            port: Port::Plain,
            stats: proxy_stats.clone(),
        }),
        proxy_stats,
    )
    .map_err(|e| format!("cannot start the proxy listener: {e}"))?;
    let mut secure_server =
        start_secure_proxy(&config, &upstream, proxy.clone(), error_body.clone())?;
    let admin = Arc::new(Admin {
        upstream,
        metrics: metrics.clone(),
        cache,
        budget,
        filters,
        shared,
        listeners: Default::default(),
    });
    let mut serve_server = http::spawn(
        serve_listener,
        ServerConfig {
            name: "serve",
            max_connections: SERVE_MAX_CONNECTIONS,
            limits: Limits::default(),
            error_body,
            stack_size: CONNECTION_STACK,
            // Idle scrapers and half-open probes never make the liveness
            // probe fail (that would restart the hub).
            evict_idle_when_full: true,
        },
        Arc::new(PlainAcceptor),
        admin.clone(),
        Arc::default(),
    )
    .map_err(|e| format!("cannot start the serve listener: {e}"))?;
    let mut listeners = vec![
        ("proxy", proxy_server.stats.clone()),
        ("serve", serve_server.stats.clone()),
    ];
    listeners.extend(
        secure_server
            .as_ref()
            .map(|s| ("proxy-secure", s.stats.clone())),
    );
    let _ = admin.listeners.set(listeners);
    log::info!(
        "proxy listening on http://{}, hub endpoints on http://{}",
        proxy_server.local_addr(),
        serve_server.local_addr()
    );

    let signal = wait_for_shutdown_signal()?;
    log::info!("received {signal}, shutting down");
    proxy_server.stop();
    if let Some(server) = secure_server.as_mut() {
        server.stop();
    }
    serve_server.stop();
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while metrics.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    log::info!("stopped");
    Ok(())
}

/// A panic in a connection thread ends that connection only: its listener
/// catches it and counts it (`node_yurthub_connection_panics_total`). A
/// panic anywhere else (the cache writer, a prober) would leave the hub
/// running without that service, so the process ends and its supervisor
/// starts it again whole.
fn install_panic_policy() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("unnamed");
        let location = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        if name.ends_with("-conn") {
            log::error!("thread {name} panicked{location}: {message}; closing its connection");
        } else {
            log::error!("thread {name} panicked{location}: {message}; exiting");
            std::process::abort();
        }
    }));
}

/// Opens the cache. A cache that cannot be opened is logged; the hub then
/// proxies without one.
fn start_cache(
    config: &Config,
    saved_hub_config: Option<&BTreeMap<String, String>>,
) -> Option<Arc<Cache>> {
    let upkeep = Upkeep {
        node_name: config.node_name.clone(),
        quota_bytes: config.disk_cache_max_bytes,
        component_idle: config.gc_component_idle,
        gc_period: Some(config.gc_period),
    };
    let agents = Agents::new(&config.cache_agents);
    if let Some(data) = saved_hub_config {
        agents::apply_configmap(&agents, data);
    }
    let cache = match Cache::start(&config.disk_cache_path, agents, upkeep) {
        Ok(cache) => cache,
        Err(e) => {
            log::error!(
                "cannot open the cache at {}: {e}; proxying without it",
                config.disk_cache_path.display()
            );
            return None;
        }
    };
    log::info!(
        "caching for {} in {}",
        cache.agents.describe(),
        config.disk_cache_path.display()
    );
    Some(cache)
}

/// Starts the HTTPS proxy port. Its serving certificate comes from
/// --tls-cert-file/--tls-private-key-file, or else from a CSR the hub makes
/// (kept under --root-dir); until that one is approved, connections are
/// closed. Pods verify the hub against the cluster CA, so a self-signed
/// certificate would not do.
fn start_secure_proxy(
    config: &Config,
    upstream: &Arc<Upstream>,
    proxy: Arc<Proxy>,
    error_body: ErrorBody,
) -> Result<Option<ServerHandle>, String> {
    if config.proxy_secure_port == 0 {
        return Ok(None);
    }
    let acceptor = match &config.tls_files {
        Some((cert_file, key_file)) => {
            let read = |path: &Path| {
                std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
            };
            Arc::new(TlsAcceptor::new(Some(http::server_config(
                &read(cert_file)?,
                &read(key_file)?,
            )?)))
        }
        None => {
            let stored =
                bootstrap::stored_serving_config(&config.root_dir).map(|(config, _)| config);
            if stored.is_none() {
                log::info!(
                    "secure proxy port waits for its serving certificate: approve the hub's CSR \
                     (kubectl certificate approve) or give --tls-cert-file/--tls-private-key-file"
                );
            }
            let acceptor = Arc::new(TlsAcceptor::new(stored));
            let mut ip_sans = vec![std::net::IpAddr::from([127, 0, 0, 1])];
            let address = config.proxy_secure_bind_address;
            if !address.is_unspecified() && !address.is_loopback() {
                ip_sans.push(address);
            }
            bootstrap::spawn_serving(
                upstream.clone(),
                config.root_dir.clone(),
                config.node_name.clone(),
                ip_sans,
                acceptor.clone(),
            )
            .map_err(|e| format!("cannot start the serving certificate thread: {e}"))?;
            acceptor
        }
    };
    let listener = bind(
        config.proxy_secure_bind_address,
        config.proxy_secure_port,
        "proxy-secure-port",
    )?;
    let stats = Arc::new(ServerStats::default());
    let server = http::spawn(
        listener,
        ServerConfig {
            name: "proxy-secure",
            max_connections: config.max_connections as usize,
            limits: Limits::default(),
            error_body,
            stack_size: CONNECTION_STACK,
            evict_idle_when_full: false,
        },
        acceptor,
        Arc::new(ProxyPort {
            proxy,
            port: Port::Secure,
            stats: stats.clone(),
        }),
        stats,
    )
    .map_err(|e| format!("cannot start the secure proxy listener: {e}"))?;
    log::info!("secure proxy listening on https://{}", server.local_addr());
    Ok(Some(server))
}

fn bind(address: std::net::IpAddr, port: u16, flag: &str) -> Result<TcpListener, String> {
    let addr = SocketAddr::new(address, port);
    TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr} (--{flag}): {e}"))
}

/// Blocks until a shutdown signal arrives; a second one exits at once.
fn wait_for_shutdown_signal() -> Result<&'static str, String> {
    let terminate_now = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [SIGTERM, SIGINT, SIGQUIT] {
        // The first signal arms this; a second one while draining exits with 1.
        signal_hook::flag::register_conditional_shutdown(signal, 1, terminate_now.clone())
            .map_err(|e| format!("cannot install signal handlers: {e}"))?;
        signal_hook::flag::register(signal, terminate_now.clone())
            .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    }
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGQUIT])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let signal = signals.forever().next().unwrap_or(SIGTERM);
    Ok(match signal {
        SIGINT => "SIGINT",
        SIGQUIT => "SIGQUIT",
        _ => "SIGTERM",
    })
}

/// Each proxied connection needs about two descriptors (client and upstream).
fn warn_if_few_file_descriptors(max_connections: u32) {
    let Ok(limits) = std::fs::read_to_string("/proc/self/limits") else {
        return;
    };
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<u64>().ok());
    let wanted = 2 * u64::from(max_connections) + 128;
    if let Some(soft) = soft.filter(|&soft| soft < wanted) {
        log::warn!(
            "open-file limit {soft} is below the {wanted} that --max-connections {max_connections} may need; \
             raise LimitNOFILE or lower --max-connections"
        );
    }
}
