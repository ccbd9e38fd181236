//! Runs the real `yurthub` binary for a test, in its own temporary
//! directory, on free loopback ports. Dropping a `Hub` kills the process.

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use super::fake_apiserver::FakeApiserver;
use super::pki::TestPki;

/// How long `Hub::start` waits for `/v1/healthz`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `terminate()` waits for the process to exit after SIGTERM.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Hub {
    child: Option<Child>,
    dir: tempfile::TempDir,
    proxy_port: u16,
    serve_port: u16,
    /// Full argument list the binary was started with.
    args: Vec<String>,
    log_path: PathBuf,
}

impl Hub {
    /// The path of the binary under test.
    pub fn binary() -> &'static str {
        env!("CARGO_BIN_EXE_yurthub")
    }

    /// Starts the hub with the standard flags plus `args`, and waits (10 s)
    /// until `GET /v1/healthz` on the serve port answers 200; panics with
    /// the log otherwise. A flag in `args` replaces the standard one.
    pub fn start<S: AsRef<str>>(args: &[S]) -> Hub {
        let mut hub = Hub::spawn(args);
        if !hub.wait_ready(READY_TIMEOUT) {
            let state = match hub.child.as_mut().map(|c| c.try_wait()) {
                Some(Ok(Some(status))) => format!("exited with {status}"),
                _ => "still running".to_string(),
            };
            hub.kill();
            panic!(
                "yurthub not healthy within {READY_TIMEOUT:?} ({state}); args {:?}\n--- log ---\n{}",
                hub.args,
                hub.log()
            );
        }
        hub
    }

    /// Starts the process without waiting for it to be healthy (e.g. to test
    /// that bad flags make it exit).
    pub fn spawn<S: AsRef<str>>(args: &[S]) -> Hub {
        let dir = tempfile::Builder::new()
            .prefix("yurthub-test-")
            .tempdir()
            .expect("create hub temp dir");
        let [proxy_port, serve_port] = super::free_ports::<2>();
        let extra: Vec<String> = args.iter().map(|a| a.as_ref().to_string()).collect();
        let cache = dir.path().join("cache");
        let root = dir.path().join("root");
        let defaults: [(&str, String); 6] = [
            ("--bind-address", "127.0.0.1".to_string()),
            ("--proxy-port", proxy_port.to_string()),
            ("--serve-port", serve_port.to_string()),
            ("--disk-cache-path", cache.display().to_string()),
            ("--root-dir", root.display().to_string()),
            // Tests run many hubs at once: the secure port only where asked for.
            ("--proxy-secure-port", "0".to_string()),
        ];
        let mut full = Vec::new();
        for (flag, value) in defaults {
            let overridden = extra
                .iter()
                .any(|a| a == flag || a.starts_with(&format!("{flag}=")));
            if !overridden {
                full.push(flag.to_string());
                full.push(value);
            }
        }
        full.extend(extra);
        let log_path = dir.path().join("hub.log");
        let mut hub = Hub {
            child: None,
            dir,
            proxy_port,
            serve_port,
            args: full,
            log_path,
        };
        hub.launch();
        hub
    }

    fn launch(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open hub log");
        let log2 = log.try_clone().expect("clone log handle");
        let child = Command::new(Self::binary())
            .args(&self.args)
            .env("RUST_LOG", "debug,rustls=info")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", Self::binary()));
        self.child = Some(child);
    }

    /// Flags pointing the hub at `fakes` with the node's client certificate:
    /// `--server-addr`, `--kubelet-ca-file`, `--kubelet-client-certificate`,
    /// `--node-name edge-1`, `--heartbeat-interval-seconds 1`.
    pub fn args_for(fakes: &[&FakeApiserver], pki: &TestPki) -> Vec<String> {
        let urls: Vec<String> = fakes.iter().map(|f| f.url()).collect();
        vec![
            "--server-addr".to_string(),
            urls.join(","),
            "--kubelet-ca-file".to_string(),
            pki.ca_path().display().to_string(),
            "--kubelet-client-certificate".to_string(),
            pki.client_pem_path().display().to_string(),
            "--node-name".to_string(),
            "edge-1".to_string(),
            "--heartbeat-interval-seconds".to_string(),
            "1".to_string(),
        ]
    }

    /// `http://127.0.0.1:PROXY_PORT`
    pub fn proxy_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.proxy_port)
    }
    /// The hub's `/metrics` text.
    pub fn metrics(&self) -> String {
        let (_, _, body) = super::client::get(&format!("{}/metrics", self.serve_url()));
        String::from_utf8_lossy(&body).into_owned()
    }

    /// The value of one series of the hub's `/metrics`: its name, followed by
    /// its labels as the hub renders them when it has any, e.g.
    /// `node_yurthub_accept_errors_total{listener="proxy"}`. Panics with the
    /// metrics text when the series is missing, so that a misspelt or renamed
    /// series fails the test instead of reading as 0.
    pub fn metric(&self, series: &str) -> u64 {
        let text = self.metrics();
        let prefix = format!("{series} ");
        let Some(value) = text.lines().find_map(|l| l.strip_prefix(&prefix)) else {
            panic!("the hub's /metrics has no series {series}\n--- metrics ---\n{text}");
        };
        value
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{series} is {value:?}, not a count: {e}"))
    }

    /// Whether `node_yurthub_server_healthy_status{server="URL"}` reads 1. It
    /// reads 0 both before the first probe and once the server is unhealthy.
    pub fn server_healthy(&self, server_url: &str) -> bool {
        let series = format!("node_yurthub_server_healthy_status{{server=\"{server_url}\"}}");
        match self.metric(&series) {
            0 => false,
            1 => true,
            other => panic!("{series} is {other}, neither 0 nor 1"),
        }
    }

    /// Waits until the hub reports the apiserver at `server_url` healthy (or
    /// unhealthy); panics with the log otherwise. Healthy: the health gauge
    /// reads 1. Unhealthy: the gauge reads 0 and the hub's last verdict on that
    /// server in its log is "unhealthy", since the gauge alone also reads 0
    /// before the first probe. A verdict from earlier in the log does not count
    /// once a later one replaced it, so this also works for a second outage.
    pub fn wait_server_health(&self, server_url: &str, healthy: bool, timeout: Duration) {
        let reached = super::wait_until(timeout, || {
            self.server_healthy(server_url) == healthy
                && (healthy || self.last_logged_health(server_url) == Some(false))
        });
        if !reached {
            let wanted = if healthy { "healthy" } else { "unhealthy" };
            panic!(
                "the hub never reported {server_url} {wanted} within {timeout:?}\n--- log ---\n{}",
                self.log()
            );
        }
    }

    /// The last verdict the hub logged on the apiserver at `server_url`
    /// (`apiserver URL is healthy` / `is unhealthy: why`); `None` before the first.
    fn last_logged_health(&self, server_url: &str) -> Option<bool> {
        let log = self.log();
        let needle = format!("apiserver {server_url} is ");
        let at = log.rfind(&needle)? + needle.len();
        Some(log[at..].starts_with("healthy"))
    }

    /// `http://127.0.0.1:SERVE_PORT`
    pub fn serve_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.serve_port)
    }
    pub fn proxy_port(&self) -> u16 {
        self.proxy_port
    }
    pub fn cache_dir(&self) -> PathBuf {
        self.dir.path().join("cache")
    }
    /// Everything the process wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("hub not running").id()
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Polls `/v1/healthz` until 200 (true) or the timeout / process exit (false).
    pub fn wait_ready(&mut self, timeout: Duration) -> bool {
        let agent = super::client::agent_with_timeout(Some(Duration::from_secs(1)));
        let url = format!("{}/v1/healthz", self.serve_url());
        let mut exited = false;
        let ok = super::wait_until(timeout, || {
            if !self.is_running() {
                exited = true;
                return true;
            }
            matches!(
                super::client::try_request_with(&agent, "GET", &url, &[], &[]),
                Ok((200, _, _))
            )
        });
        ok && !exited
    }

    /// SIGKILL and reap. No-op when not running.
    pub fn kill(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM (via the `kill` command) and waits up to 10 s for the
    /// exit; panics with the log (after SIGKILL) if it does not exit.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal("TERM");
        match self.wait_exit(EXIT_TIMEOUT) {
            Some(status) => status,
            None => {
                self.kill();
                panic!(
                    "yurthub did not exit within {EXIT_TIMEOUT:?} after SIGTERM\n--- log ---\n{}",
                    self.log()
                );
            }
        }
    }

    /// Sends a signal by name (`TERM`, `INT`, `HUP`, ...) with the `kill` command.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {} failed", self.pid());
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let mut status = None;
        super::wait_until(timeout, || {
            status = child.try_wait().ok().flatten();
            status.is_some()
        });
        status
    }

    /// Polls the log until it contains `needle` (true) or the timeout (false).
    pub fn wait_log_contains(&self, needle: &str, timeout: Duration) -> bool {
        super::wait_until(timeout, || self.log().contains(needle))
    }

    /// Like `wait_log_contains` but panics with the log on timeout.
    pub fn expect_log(&self, needle: &str, timeout: Duration) {
        if !self.wait_log_contains(needle, timeout) {
            panic!(
                "hub log does not contain {needle:?} after {timeout:?}\n--- log ---\n{}",
                self.log()
            );
        }
    }

    /// Kills the process (if running) and starts it again with the same
    /// arguments, ports and directories (cache kept); the log is appended.
    /// Waits for healthy like `start`.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
        if !self.wait_ready(READY_TIMEOUT) {
            self.kill();
            panic!(
                "yurthub not healthy after restart within {READY_TIMEOUT:?}\n--- log ---\n{}",
                self.log()
            );
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- yurthub log ({}) ---\n{}",
                self.log_path.display(),
                self.log()
            );
        }
    }
}
