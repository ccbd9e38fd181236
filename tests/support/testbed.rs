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
    Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--request-timeout=20s")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run kubectl")
}

/// Like `kubectl`, but panics with stderr unless it succeeds; returns stdout.
pub fn kubectl_ok(kubeconfig: &Path, args: &[&str]) -> String {
    let output = kubectl(kubeconfig, args);
    assert!(
        output.status.success(),
        "kubectl {args:?} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
