//! The validated, resolved configuration the rest of the hub runs on.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::balancer::LbMode;
use crate::cli::Cli;

/// The longest `--gc-frequency`: a week, in minutes.
const MAX_GC_FREQUENCY_MINUTES: u64 = 7 * 24 * 60;
/// The longest `--gc-component-idle-days`: ten years.
const MAX_GC_COMPONENT_IDLE_DAYS: u64 = 3650;
/// The smallest non-zero `--disk-cache-max-bytes`: 1 MiB.
const MIN_DISK_CACHE_BYTES: u64 = 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkingMode {
    Edge,
    Cloud,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Apiserver base URLs, scheme included, no trailing slash.
    pub servers: Vec<String>,
    pub lb_mode: LbMode,
    pub node_name: String,
    pub bind_address: IpAddr,
    pub proxy_port: u16,
    pub proxy_secure_port: u16,
    /// Bytes the hub may hold for requests in flight.
    pub memory_budget: usize,
    /// Where the secure port listens (pods must reach it; the plain port
    /// stays on `bind_address`, usually loopback).
    pub proxy_secure_bind_address: IpAddr,
    /// Serving certificate and key of the secure port, when given.
    pub tls_files: Option<(PathBuf, PathBuf)>,
    pub serve_port: u16,
    pub disk_cache_path: PathBuf,
    pub root_dir: PathBuf,
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    pub heartbeat_failed_retry: u32,
    pub heartbeat_healthy_threshold: u32,
    pub max_requests_in_flight: u32,
    pub max_connections: u32,
    pub working_mode: WorkingMode,
    pub cache_agents: String,
    /// How often garbage is collected.
    pub gc_period: Duration,
    /// How long a component nobody named may go unseen.
    pub gc_component_idle: Duration,
    /// Bytes of cached objects kept at most; 0: no bound.
    pub disk_cache_max_bytes: u64,
    pub min_request_timeout: Duration,
    pub ca_file: PathBuf,
    /// The client certificate in use: kubelet's, or with a join token the
    /// hub's own under `--root-dir`.
    pub client_cert_file: PathBuf,
    pub join_token: Option<String>,
    /// Which response filters are on (`--disabled-resource-filters`, the
    /// working mode), `None` when `--enable-resource-filter=false`.
    pub filters: Option<crate::filter::Filters>,
    /// Where masterservice, forwardkubesvctraffic and serviceenvupdater
    /// point pods: `--dummy-if-ip` and `--proxy-secure-port`.
    pub hub_address: crate::filter::HubAddress,
    /// `--nodepool-name`: this node's pool, when given.
    pub nodepool_name: Option<String>,
    /// Names in `--disabled-resource-filters` of no filter this hub has
    /// (ignored, as the original does; logged at start).
    pub unknown_filters: Vec<String>,
    /// `--shared-watch-resources` (or `--pool-scope-resources`): resources
    /// with one upstream watch for the whole node (both working modes).
    pub shared_watch_resources: Vec<crate::shared::ResourceSpec>,
}

/// A flag with a value that cannot work. Displayed as one line naming the flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub flag: &'static str,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid --{}: {}", self.flag, self.problem)
    }
}

impl std::error::Error for ConfigError {}

fn invalid(flag: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        flag,
        problem: problem.into(),
    }
}

impl Config {
    pub fn from_cli(cli: &Cli) -> Result<Config, ConfigError> {
        let server_addr = cli
            .server_addr
            .as_deref()
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| {
                invalid(
                    "server-addr",
                    "required: the cloud apiserver address(es), e.g. https://10.0.0.1:6443",
                )
            })?;
        let servers = server_addr
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(parse_server)
            .collect::<Result<Vec<_>, _>>()?;
        let lb_mode = match cli.lb_mode.as_str() {
            "rr" => LbMode::RoundRobin,
            "priority" => LbMode::Priority,
            other => {
                return Err(invalid(
                    "lb-mode",
                    format!("{other:?}: expected rr or priority"),
                ));
            }
        };
        let working_mode = match cli.working_mode.as_str() {
            "edge" => WorkingMode::Edge,
            "cloud" => WorkingMode::Cloud,
            other => {
                return Err(invalid(
                    "working-mode",
                    format!("{other:?}: expected edge or cloud"),
                ));
            }
        };
        let node_name = match &cli.node_name {
            Some(name) => name.trim().to_string(),
            None => host_name()
                .ok_or_else(|| invalid("node-name", "required: the host name could not be read"))?,
        };
        if node_name.is_empty() || node_name.contains(['/', '\0']) || node_name.len() > 253 {
            return Err(invalid(
                "node-name",
                format!("{node_name:?} is not a valid node name"),
            ));
        }
        let bind_address = cli.bind_address.parse().map_err(|_| {
            invalid(
                "bind-address",
                format!("{:?} is not an IP address", cli.bind_address),
            )
        })?;
        let proxy_secure_bind_address = if cli.proxy_secure_bind_address.is_empty() {
            bind_address
        } else {
            cli.proxy_secure_bind_address.parse().map_err(|_| {
                invalid(
                    "proxy-secure-bind-address",
                    format!("{:?} is not an IP address", cli.proxy_secure_bind_address),
                )
            })?
        };
        if cli.memory_budget_mib < 8 {
            return Err(invalid(
                "memory-budget-mib",
                "must be at least 8 (one cache copy of a large list needs several MiB)",
            ));
        }
        if cli.heartbeat_interval_seconds == 0 {
            return Err(invalid("heartbeat-interval-seconds", "must be at least 1"));
        }
        if cli.heartbeat_timeout_seconds == 0 {
            return Err(invalid("heartbeat-timeout-seconds", "must be at least 1"));
        }
        if cli.heartbeat_failed_retry == 0 {
            return Err(invalid("heartbeat-failed-retry", "must be at least 1"));
        }
        if cli.heartbeat_healthy_threshold == 0 {
            return Err(invalid("heartbeat-healthy-threshold", "must be at least 1"));
        }
        if cli.max_requests_in_flight == 0 {
            return Err(invalid("max-requests-in-flight", "must be at least 1"));
        }
        if cli.min_request_timeout == 0 {
            return Err(invalid("min-request-timeout", "must be at least 1"));
        }
        if cli.max_connections == 0 {
            return Err(invalid("max-connections", "must be at least 1"));
        }
        let (shared_flag, shared_text) =
            match (&cli.shared_watch_resources, &cli.pool_scope_resources) {
                (Some(text), _) => ("shared-watch-resources", text.as_str()),
                (None, Some(text)) => ("pool-scope-resources", text.as_str()),
                (None, None) => ("shared-watch-resources", crate::shared::DEFAULT_RESOURCES),
            };
        let shared_watch_resources =
            crate::shared::parse_resources(shared_text).map_err(|e| invalid(shared_flag, e))?;
        if !(1..=MAX_GC_FREQUENCY_MINUTES).contains(&cli.gc_frequency) {
            return Err(invalid(
                "gc-frequency",
                format!("must be 1 to {MAX_GC_FREQUENCY_MINUTES} minutes"),
            ));
        }
        if !(1..=MAX_GC_COMPONENT_IDLE_DAYS).contains(&cli.gc_component_idle_days) {
            return Err(invalid(
                "gc-component-idle-days",
                format!("must be 1 to {MAX_GC_COMPONENT_IDLE_DAYS} days"),
            ));
        }
        if cli.disk_cache_max_bytes != 0 && cli.disk_cache_max_bytes < MIN_DISK_CACHE_BYTES {
            return Err(invalid(
                "disk-cache-max-bytes",
                format!(
                    "must be 0 (no bound) or at least {MIN_DISK_CACHE_BYTES} (a node's pods and what they use)"
                ),
            ));
        }
        let join_token = match cli.join_token.trim() {
            "" => None,
            token if is_bootstrap_token(token) => Some(token.to_string()),
            _ => {
                return Err(invalid(
                    "join-token",
                    "expected a bootstrap token of the form abcdef.0123456789abcdef",
                ));
            }
        };
        let tls_files = match (
            cli.tls_cert_file.as_str(),
            cli.tls_private_key_file.as_str(),
        ) {
            ("", "") => None,
            ("", _) => {
                return Err(invalid(
                    "tls-cert-file",
                    "required with --tls-private-key-file",
                ));
            }
            (_, "") => {
                return Err(invalid(
                    "tls-private-key-file",
                    "required with --tls-cert-file",
                ));
            }
            (cert, key) => Some((PathBuf::from(cert), PathBuf::from(key))),
        };
        if cli.proxy_secure_port != 0
            && (cli.proxy_secure_port == cli.proxy_port || cli.proxy_secure_port == cli.serve_port)
        {
            return Err(invalid(
                "proxy-secure-port",
                "must differ from --proxy-port and --serve-port",
            ));
        }
        if cli.proxy_port == cli.serve_port && cli.proxy_port != 0 {
            return Err(invalid("serve-port", "must differ from --proxy-port"));
        }
        // Go's strconv.ParseBool, as the original's flag parser reads it.
        let filters_on = match cli.enable_resource_filter.as_str() {
            "1" | "t" | "T" | "true" | "TRUE" | "True" => true,
            "0" | "f" | "F" | "false" | "FALSE" | "False" => false,
            other => {
                return Err(invalid(
                    "enable-resource-filter",
                    format!("{other:?} is neither true nor false"),
                ));
            }
        };
        let mut disabled: Vec<String> = cli
            .disabled_resource_filters
            .split(',')
            .map(str::to_string)
            .collect();
        if cli.proxy_secure_port == 0 {
            // They point pods at the secure port, which is off.
            disabled.extend(
                [
                    "masterservice",
                    "forwardkubesvctraffic",
                    "serviceenvupdater",
                ]
                .map(String::from),
            );
        }
        let (filters, unknown_filters) =
            crate::filter::Filters::new(&disabled, working_mode == WorkingMode::Cloud);
        let dummy_if_ip: IpAddr = cli.dummy_if_ip.parse().map_err(|_| {
            invalid(
                "dummy-if-ip",
                format!("{:?} is not an IP address", cli.dummy_if_ip),
            )
        })?;
        Ok(Config {
            servers,
            lb_mode,
            node_name,
            bind_address,
            proxy_port: cli.proxy_port,
            proxy_secure_port: cli.proxy_secure_port,
            proxy_secure_bind_address,
            memory_budget: cli.memory_budget_mib as usize * 1024 * 1024,
            tls_files,
            serve_port: cli.serve_port,
            disk_cache_path: PathBuf::from(&cli.disk_cache_path),
            root_dir: PathBuf::from(&cli.root_dir),
            heartbeat_interval: Duration::from_secs(cli.heartbeat_interval_seconds),
            heartbeat_timeout: Duration::from_secs(cli.heartbeat_timeout_seconds),
            heartbeat_failed_retry: cli.heartbeat_failed_retry,
            heartbeat_healthy_threshold: cli.heartbeat_healthy_threshold,
            max_requests_in_flight: cli.max_requests_in_flight,
            max_connections: cli.max_connections,
            working_mode,
            cache_agents: cli.cache_agents.clone(),
            gc_period: Duration::from_secs(cli.gc_frequency * 60),
            gc_component_idle: Duration::from_secs(cli.gc_component_idle_days * 24 * 3600),
            disk_cache_max_bytes: cli.disk_cache_max_bytes,
            min_request_timeout: Duration::from_secs(cli.min_request_timeout),
            ca_file: PathBuf::from(&cli.kubelet_ca_file),
            client_cert_file: if join_token.is_some() {
                crate::bootstrap::client_certificate_path(Path::new(&cli.root_dir))
            } else {
                PathBuf::from(&cli.kubelet_client_certificate)
            },
            join_token,
            filters: filters_on.then_some(filters),
            hub_address: crate::filter::HubAddress {
                host: dummy_if_ip.to_string(),
                port: cli.proxy_secure_port,
            },
            nodepool_name: Some(cli.nodepool_name.trim().to_string()).filter(|n| !n.is_empty()),
            unknown_filters,
            shared_watch_resources,
        })
    }
}

/// Normalises one `--server-addr` entry to `scheme://host:port[/prefix]`.
fn parse_server(entry: &str) -> Result<String, ConfigError> {
    let with_scheme = if entry.contains("://") {
        entry.to_string()
    } else {
        format!("https://{entry}")
    };
    let uri: http::Uri = with_scheme
        .parse()
        .map_err(|_| invalid("server-addr", format!("{entry:?} is not a URL")))?;
    match uri.scheme_str() {
        Some("https" | "http") => {}
        _ => {
            return Err(invalid(
                "server-addr",
                format!("{entry:?}: scheme must be https or http"),
            ));
        }
    }
    let authority = uri
        .authority()
        .filter(|a| !a.host().is_empty())
        .ok_or_else(|| invalid("server-addr", format!("{entry:?} has no host")))?;
    if uri.query().is_some() {
        return Err(invalid(
            "server-addr",
            format!("{entry:?} must not have a query"),
        ));
    }
    let path = uri.path().trim_end_matches('/');
    Ok(format!(
        "{}://{}{}",
        uri.scheme_str().unwrap_or("https"),
        authority,
        path
    ))
}

/// `[a-z0-9]{6}.[a-z0-9]{16}`, as kubeadm makes them.
fn is_bootstrap_token(token: &str) -> bool {
    let valid = |part: &str, len: usize| {
        part.len() == len
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    token
        .split_once('.')
        .is_some_and(|(id, secret)| valid(id, 6) && valid(secret, 16))
}

fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim().to_ascii_lowercase();
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Result<Config, ConfigError> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        Config::from_cli(&crate::cli::parse("yurthub", &args).unwrap())
    }

    #[test]
    fn server_addresses_are_normalised() {
        let c = config(&[
            "--server-addr",
            "1.2.3.4:6443, https://b:443/,http://c:8080/prefix/",
            "--node-name",
            "n",
        ])
        .unwrap();
        assert_eq!(
            c.servers,
            [
                "https://1.2.3.4:6443",
                "https://b:443",
                "http://c:8080/prefix"
            ]
        );
    }

    #[test]
    fn bad_values_name_their_flag() {
        for (args, flag) in [
            (&["--node-name", "n"][..], "server-addr"),
            (
                &["--server-addr", "ftp://x", "--node-name", "n"][..],
                "server-addr",
            ),
            (
                &[
                    "--server-addr",
                    "https://a",
                    "--node-name",
                    "n",
                    "--lb-mode",
                    "random",
                ][..],
                "lb-mode",
            ),
            (
                &[
                    "--server-addr",
                    "https://a",
                    "--node-name",
                    "n",
                    "--working-mode",
                    "x",
                ][..],
                "working-mode",
            ),
            (
                &[
                    "--server-addr",
                    "https://a",
                    "--node-name",
                    "n",
                    "--bind-address",
                    "localhost",
                ][..],
                "bind-address",
            ),
            (
                &[
                    "--server-addr",
                    "https://a",
                    "--node-name",
                    "n",
                    "--proxy-secure-bind-address",
                    "node",
                ][..],
                "proxy-secure-bind-address",
            ),
            (
                &[
                    "--server-addr",
                    "https://a",
                    "--node-name",
                    "n",
                    "--heartbeat-interval-seconds",
                    "0",
                ][..],
                "heartbeat-interval-seconds",
            ),
            (
                &["--server-addr", "https://a", "--node-name", "a/b"][..],
                "node-name",
            ),
            (
                &["--server-addr", "https://a", "--gc-frequency", "0"][..],
                "gc-frequency",
            ),
            (
                &[
                    "--server-addr",
                    "https://a",
                    "--gc-component-idle-days",
                    "0",
                ][..],
                "gc-component-idle-days",
            ),
            (
                &[
                    "--server-addr",
                    "https://a",
                    "--disk-cache-max-bytes",
                    "1000",
                ][..],
                "disk-cache-max-bytes",
            ),
        ] {
            let err = config(args).unwrap_err();
            assert_eq!(err.flag, flag, "{args:?}: {err}");
            assert!(err.to_string().starts_with(&format!("invalid --{flag}")));
        }
    }

    #[test]
    fn node_name_defaults_to_the_host_name() {
        let c = config(&["--server-addr", "https://a:6443"]).unwrap();
        assert!(!c.node_name.is_empty());
    }
}
