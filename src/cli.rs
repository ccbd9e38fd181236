//! Command-line flags exactly as typed, with the original YurtHub's names and
//! defaults so that existing manifests keep working. Validation is `config.rs`'s.

use argh::FromArgs;

/// yurthub: keeps an edge node's components working while the cloud apiserver is unreachable.
#[derive(FromArgs, Debug)]
pub struct Cli {
    /// comma-separated apiserver addresses, e.g. https://10.0.0.1:6443 (https when no scheme)
    #[argh(option)]
    pub server_addr: Option<String>,

    /// load-balancing mode over healthy apiservers: rr or priority
    #[argh(option, default = "String::from(\"rr\")")]
    pub lb_mode: String,

    /// this node's name (default: the host name)
    #[argh(option)]
    pub node_name: Option<String>,

    /// address the listeners bind to
    #[argh(option, default = "String::from(\"127.0.0.1\")")]
    pub bind_address: String,

    /// port of the plain-HTTP proxy that node components use
    #[argh(option, default = "10261")]
    pub proxy_port: u16,

    /// port of the HTTPS proxy for pods using in-cluster configuration (0: off)
    #[argh(option, default = "10268")]
    pub proxy_secure_port: u16,

    /// memory the hub may hold for requests in flight (cache copies, bodies,
    /// offline answers, relay buffers), in MiB; past it: 429 or no cache copy
    #[argh(option, default = "64")]
    pub memory_budget_mib: u32,

    /// address the HTTPS proxy port binds to, one pods can reach (for example
    /// the node's address or 169.254.2.1 on a dummy interface); default: --bind-address
    #[argh(option, default = "String::new()")]
    pub proxy_secure_bind_address: String,

    /// serving certificate (PEM) of the secure proxy port
    #[argh(option, default = "String::new()")]
    pub tls_cert_file: String,

    /// private key (PEM) of the serving certificate
    #[argh(option, default = "String::new()")]
    pub tls_private_key_file: String,

    /// port of the hub's own server (/v1/healthz, /v1/readyz, /metrics)
    #[argh(option, default = "10267")]
    pub serve_port: u16,

    /// root of the on-disk cache
    #[argh(option, default = "String::from(\"/etc/kubernetes/cache/\")")]
    pub disk_cache_path: String,

    /// directory for the hub's own state and certificates
    #[argh(option, default = "String::from(\"/var/lib/yurthub\")")]
    pub root_dir: String,

    /// seconds between health probes of each apiserver
    #[argh(option, default = "10")]
    pub heartbeat_interval_seconds: u64,

    /// timeout of one health probe, in seconds
    #[argh(option, default = "2")]
    pub heartbeat_timeout_seconds: u64,

    /// consecutive failed probes before an apiserver counts as unhealthy
    #[argh(option, default = "3")]
    pub heartbeat_failed_retry: u32,

    /// consecutive successful probes before an unhealthy apiserver counts as healthy
    #[argh(option, default = "2")]
    pub heartbeat_healthy_threshold: u32,

    /// requests (watches excluded) served at once; past it: 429 with Retry-After
    #[argh(option, default = "250")]
    pub max_requests_in_flight: u32,

    /// open client connections per listener; past it: 503
    #[argh(option, default = "512")]
    pub max_connections: u32,

    /// edge (proxy and serve offline) or cloud (proxy only)
    #[argh(option, default = "String::from(\"edge\")")]
    pub working_mode: String,

    /// extra components to cache, comma-separated (`*`: every component); kubelet,
    /// kube-proxy, flanneld, coredns, yurttunnel-agent and yurthub always are
    #[argh(option, default = "String::new()")]
    pub cache_agents: String,

    /// minutes between garbage collections of the cache (pods no longer bound
    /// here, events past their time, what the last list of a shape no longer
    /// held, components unseen for --gc-component-idle-days)
    #[argh(option, default = "120")]
    pub gc_frequency: u64,

    /// days a component that is neither a named cache agent nor a kubelet may
    /// go unseen before its cache is removed
    #[argh(option, default = "30")]
    pub gc_component_idle_days: u64,

    /// bytes of cached objects kept at most (0: no bound); past it the least
    /// needed objects are removed first, a kubelet's node, pods and what
    /// they use last of all
    #[argh(option, default = "536870912")]
    pub disk_cache_max_bytes: u64,

    /// apply OpenYurt's response filters (true or false)
    #[argh(option, default = "String::from(\"true\")")]
    pub enable_resource_filter: String,

    /// response filters switched off, comma-separated (`*`: all): servicetopology,
    /// masterservice, discardcloudservice, inclusterconfig, nodeportisolation,
    /// forwardkubesvctraffic, serviceenvupdater
    #[argh(option, default = "String::new()")]
    pub disabled_resource_filters: String,

    /// the hub's address as pods reach it (its dummy interface): masterservice,
    /// forwardkubesvctraffic and serviceenvupdater point pods here, at --proxy-secure-port
    #[argh(option, default = "String::from(\"169.254.2.1\")")]
    pub dummy_if_ip: String,

    /// this node's pool, when set; otherwise read from the node's
    /// apps.openyurt.io/nodepool label
    #[argh(option, default = "String::new()")]
    pub nodepool_name: String,

    /// resources listed and watched once for the whole node, every local
    /// list and watch of them answered from that one upstream watch,
    /// comma-separated as resource[.version][.group] or group/version/resource
    /// (default: services,endpointslices.v1.discovery.k8s.io; empty: none)
    #[argh(option)]
    pub shared_watch_resources: Option<String>,

    /// the original's name of --shared-watch-resources (used when that is not given)
    #[argh(option)]
    pub pool_scope_resources: Option<String>,

    /// seconds an offline watch is held when the client set no timeoutSeconds
    #[argh(option, default = "1800")]
    pub min_request_timeout: u64,

    /// CA bundle that signs the apiservers' certificates
    #[argh(option, default = "String::from(\"/etc/kubernetes/pki/ca.crt\")")]
    pub kubelet_ca_file: String,

    /// client certificate and key in one PEM file (kubelet's rotated client certificate)
    #[argh(
        option,
        default = "String::from(\"/var/lib/kubelet/pki/kubelet-client-current.pem\")"
    )]
    pub kubelet_client_certificate: String,

    /// bootstrap token (id.secret): the hub obtains its own client certificate
    /// by CSR and keeps it under --root-dir, instead of using kubelet's
    #[argh(option, default = "String::new()")]
    pub join_token: String,

    /// print the version and exit
    #[argh(switch)]
    pub version: bool,
}

/// Flags that take no value.
const SWITCHES: &[&str] = &["--version", "--help"];

/// Rewrites arguments the way Kubernetes components accept them into what argh
/// accepts: `--flag=value` becomes `--flag value`, and a flag given twice keeps
/// its last value (argh refuses duplicates; manifests often append overrides).
pub fn normalize(args: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut split = Vec::new();
    for arg in args {
        match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                split.push(flag.to_string());
                split.push(value.to_string());
            }
            _ => split.push(arg),
        }
    }
    let mut pairs: Vec<Vec<String>> = Vec::new();
    let mut iter = split.into_iter();
    while let Some(arg) = iter.next() {
        if arg.starts_with("--") && !SWITCHES.contains(&arg.as_str()) {
            let value = iter.next();
            pairs.retain(|pair| pair[0] != arg);
            pairs.push(std::iter::once(arg).chain(value).collect());
        } else {
            pairs.push(vec![arg]);
        }
    }
    pairs.into_iter().flatten().collect()
}

/// Parses the arguments after the program name.
pub fn parse(program: &str, args: &[String]) -> Result<Cli, argh::EarlyExit> {
    let args = normalize(args.iter().cloned());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    Cli::from_args(&[program], &refs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn defaults_match_the_original() {
        let cli = parse("yurthub", &[]).unwrap();
        assert_eq!(cli.proxy_port, 10261);
        assert_eq!(cli.serve_port, 10267);
        assert_eq!(cli.lb_mode, "rr");
        assert_eq!(cli.max_requests_in_flight, 250);
        assert_eq!(cli.heartbeat_interval_seconds, 10);
        assert_eq!(cli.disk_cache_path, "/etc/kubernetes/cache/");
        assert_eq!(cli.gc_frequency, 120);
    }

    #[test]
    fn accepts_flag_equals_value() {
        let cli = parse(
            "yurthub",
            &args(&[
                "--server-addr=https://a:6443,https://b:6443",
                "--lb-mode",
                "priority",
            ]),
        )
        .unwrap();
        assert_eq!(
            cli.server_addr.as_deref(),
            Some("https://a:6443,https://b:6443")
        );
        assert_eq!(cli.lb_mode, "priority");
    }

    #[test]
    fn a_repeated_flag_keeps_its_last_value() {
        let cli = parse(
            "yurthub",
            &args(&["--proxy-port", "1", "--version", "--proxy-port=2"]),
        )
        .unwrap();
        assert_eq!(cli.proxy_port, 2);
        assert!(cli.version);
    }

    #[test]
    fn bad_numbers_name_the_flag() {
        let err = parse("yurthub", &args(&["--proxy-port", "x"])).unwrap_err();
        assert!(err.output.contains("--proxy-port"), "{}", err.output);
        assert!(err.status.is_err());
    }
}
