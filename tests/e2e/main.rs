//! End to end against a real kube-apiserver + etcd (and kubemark's hollow
//! kubelet), started by `scripts/testbed.sh`. `scripts/test.sh` installs the
//! test bed before running these.
//!
//! Opt-in: every test here is `#[ignore]`d, so a plain `cargo test` on a
//! machine without the test bed passes and lists them as ignored. The README's
//! test command (`scripts/test.sh`) runs them with `--include-ignored`; by hand:
//! `scripts/testbed.sh install`, then `cargo test --test e2e -- --include-ignored`.
//!
//! Contents:
//! - kubectl: create, get, list, patch, delete and `get -w` through the hub
//! - kubemark: a hollow kubelet registers through the hub and stays Ready
//! - two apiservers: round robin reaches both; killing one keeps requests working
//! - offline: kubectl reads from the hub's cache with the apiserver stopped, across a hub restart
//! - kubectl 1.35 (client-go 1.35, fetched by `scripts/testbed.sh install`): get, lists with
//!   label and field selectors, `-o json`, `get -w` and create through the hub, online (the
//!   apiserver's answers) and offline (the hub's cache, a held watch, an echoed create)
//! - a silent outage (kube-apiserver stopped with SIGSTOP): a watch relayed through the hub
//!   ends once the hub marks the apiserver unhealthy, and is then answered offline
//! - autonomy: once the hub's report says the hollow kubelet is ready to restart offline, it is:
//!   restarted while every apiserver is down, it keeps its pods
//! - certificates: join with a bootstrap token; kubelet's certificate rotated under a running
//!   hub; a pod's service-account token over the secure port
//! - the shared watch: three clients watching Services and EndpointSlices through the hub with
//!   their own selectors and encodings see exactly what the same watches show directly, and a
//!   1.35 client's streaming list, which kube-apiserver 1.20 does not speak, is answered
//! - a hub and a hollow kubelet started together against a just-started kube-apiserver (ready,
//!   only listening, or answering /readyz with errors): the node is registered in the cloud every
//!   time, over 12 starts, and no write is answered locally

// The end-to-end tests use only part of the support library they share with
// the integration tests (the hub and the HTTP client, not the fake apiserver),
// whose binary uses all of it.
#[allow(dead_code, unused_imports)]
#[path = "../support/mod.rs"]
mod support;
mod testbed;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::{Hub, wait_until};
use testbed::{
    KubectlStream, Testbed, kubectl, kubectl_ok, modern_kubectl, run_kubectl, run_kubectl_ok,
    write_kubeconfig,
};

const WAIT: Duration = Duration::from_secs(30);

/// A hub in front of every apiserver of `bed`, presenting `identity_pem`.
fn hub_for(bed: &Testbed, identity_pem: &str, extra: &[&str]) -> Hub {
    let mut args = vec![
        "--server-addr".to_string(),
        bed.env("SERVER_ADDRS"),
        "--kubelet-ca-file".into(),
        bed.env("CA_FILE"),
        "--kubelet-client-certificate".into(),
        bed.env(identity_pem),
        "--node-name".into(),
        bed.env("NODE_NAME"),
        "--heartbeat-interval-seconds".into(),
        "1".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    Hub::start(&args)
}

fn requests_counted(hub: &Hub, component: &str, verb: &str, resource: &str) -> u64 {
    let prefix = format!(
        "node_yurthub_requests_total{{component=\"{component}\",verb=\"{verb}\",resource=\"{resource}\",code=\"2"
    );
    hub.metrics()
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
#[ignore = "end to end: needs the test bed (scripts/testbed.sh install); scripts/test.sh runs it"]
fn kubectl_creates_reads_patches_watches_and_deletes_through_the_hub() {
    let bed = Testbed::up(&[]);
    let hub = hub_for(&bed, "ADMIN_PEM", &[]);
    let kc = write_kubeconfig(&bed.dir().join("hub.kubeconfig"), &hub.proxy_url());

    kubectl_ok(&kc, &["create", "namespace", "e2e"]);
    kubectl_ok(
        &kc,
        &[
            "-n",
            "e2e",
            "create",
            "configmap",
            "cm1",
            "--from-literal=a=1",
        ],
    );
    let object: serde_json::Value = serde_json::from_str(&kubectl_ok(
        &kc,
        &["-n", "e2e", "get", "configmap", "cm1", "-o", "json"],
    ))
    .unwrap();
    assert_eq!(object["data"]["a"], "1");
    assert!(
        kubectl_ok(&kc, &["-n", "e2e", "get", "configmaps", "-o", "name"])
            .contains("configmap/cm1")
    );

    // Strategic merge patch, as kubelet sends. (JSON and merge patches crash
    // this Go 1.19 build of kube-apiserver 1.20 itself: see scripts/testbed.sh.)
    kubectl_ok(
        &kc,
        &[
            "-n",
            "e2e",
            "patch",
            "configmap",
            "cm1",
            "-p",
            r#"{"data":{"a":"2"}}"#,
        ],
    );
    let patched = kubectl_ok(
        &kc,
        &[
            "-n",
            "e2e",
            "get",
            "configmap",
            "cm1",
            "-o",
            "jsonpath={.data.a}",
        ],
    );
    assert_eq!(patched, "2");

    // `get -w` through the hub sees an object created afterwards.
    // Killed below; if the test fails first, the hub's exit ends its stream.
    let mut watch = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kc)
        .args(["-n", "e2e", "get", "configmaps", "-w", "-o", "name"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start kubectl get -w");
    let (lines_tx, lines) = mpsc::channel();
    let stdout = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + WAIT;
    let first = lines
        .recv_timeout(WAIT)
        .expect("kubectl get -w listed nothing");
    assert!(first.contains("configmap/"), "{first}");
    kubectl_ok(
        &kc,
        &[
            "-n",
            "e2e",
            "create",
            "configmap",
            "cm2",
            "--from-literal=b=1",
        ],
    );
    let mut seen_cm2 = false;
    while let Ok(line) = lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        if line.contains("configmap/cm2") {
            seen_cm2 = true;
            break;
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(
        seen_cm2,
        "the watch through the hub never showed configmap/cm2"
    );

    kubectl_ok(&kc, &["-n", "e2e", "delete", "configmap", "cm1"]);
    let gone = kubectl(&kc, &["-n", "e2e", "get", "configmap", "cm1"]);
    assert!(!gone.status.success());
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("NotFound"),
        "{}",
        String::from_utf8_lossy(&gone.stderr)
    );

    assert!(requests_counted(&hub, "kubectl", "create", "configmaps") >= 2);
    // A watch is counted when it ends, once the hub notices its client left.
    assert!(wait_until(WAIT, || requests_counted(
        &hub,
        "kubectl",
        "watch",
        "configmaps"
    ) >= 1));
}

#[test]
#[ignore = "end to end: needs the test bed (scripts/testbed.sh install); scripts/test.sh runs it"]
fn hollow_kubelet_registers_its_node_through_the_hub_and_stays_ready() {
    let mut bed = Testbed::up(&[]);
    // kubemark is not kubelet by name: yurt-hub-cfg gives it masterservice,
    // as an operator would for a kubelet with another User-Agent.
    kubectl_ok(
        &bed.admin_kubeconfig(),
        &[
            "-n",
            "kube-system",
            "create",
            "configmap",
            "yurt-hub-cfg",
            "--from-literal=masterservice=kubemark",
        ],
    );
    // Nodes may read it, as OpenYurt's own RBAC lets them.
    for args in [
        &[
            "create",
            "role",
            "yurt-hub-cfg-reader",
            "--verb=get",
            "--resource=configmaps",
            "--resource-name=yurt-hub-cfg",
        ][..],
        &[
            "create",
            "rolebinding",
            "yurt-hub-cfg-reader",
            "--role=yurt-hub-cfg-reader",
            "--group=system:nodes",
        ][..],
    ] {
        let mut full = vec!["-n", "kube-system"];
        full.extend_from_slice(args);
        kubectl_ok(&bed.admin_kubeconfig(), &full);
    }
    // The hub presents the node's certificate, as it does with kubelet's on a real node.
    let secure_port = support::free_port().to_string();
    let hub = hub_for(
        &bed,
        "NODE_PEM",
        &["--lb-mode", "priority", "--proxy-secure-port", &secure_port],
    );
    hub.expect_log(
        "components added by yurt-hub-cfg: masterservice: kubemark",
        WAIT,
    );
    let kc = write_kubeconfig(&bed.dir().join("hub.kubeconfig"), &hub.proxy_url());
    bed.kubemark(&kc, true);
    let node = bed.env("NODE_NAME");

    // Its Service list shows default/kubernetes at the hub's address (the
    // cache keeps the apiserver's).
    let rewritten = || {
        hub.metric(
            "node_yurthub_filter_objects_total{filter=\"masterservice\",outcome=\"rewritten\"}",
        )
    };
    assert!(wait_until(WAIT, || rewritten() >= 1), "{}", hub.metrics());
    let (status, _, body) = support::client::request(
        "GET",
        &format!(
            "{}/api/v1/namespaces/default/services?fieldSelector=metadata.name%3Dkubernetes",
            hub.proxy_url()
        ),
        &[("User-Agent", "kubemark/v1.20.2")],
        b"",
    );
    assert_eq!(status, 200);
    let services: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let kubernetes = &services["items"][0];
    assert_eq!(
        kubernetes["spec"]["clusterIP"], "169.254.2.1",
        "{kubernetes}"
    );
    let https = kubernetes["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "https")
        .unwrap();
    assert_eq!(https["port"].to_string(), secure_port);

    // Lease renewals (every 10 s) keep flowing through the hub.
    let renewals = || requests_counted(&hub, "kubemark", "update", "leases");
    assert!(
        wait_until(Duration::from_secs(45), || renewals() >= 2),
        "no lease renewals through the hub\n{}",
        hub.metrics()
    );
    assert!(requests_counted(&hub, "kubemark", "list", "pods") >= 1);
    // Its watches (pods, node, services, ...) stay open through the hub.
    let open_watches = hub.metric("node_yurthub_long_running_requests");
    assert!(open_watches >= 5, "{open_watches} watches open");
    let ready = kubectl_ok(
        &bed.admin_kubeconfig(),
        &[
            "get",
            "node",
            &node,
            "-o",
            r#"jsonpath={.status.conditions[?(@.type=="Ready")].status}"#,
        ],
    );
    assert_eq!(ready, "True");
    let kubemark_log = bed.read("logs/kubemark.log");
    assert!(
        !kubemark_log.contains("Unable to register node"),
        "{kubemark_log}"
    );
}

#[test]
#[ignore = "end to end: needs the test bed (scripts/testbed.sh install); scripts/test.sh runs it"]
fn round_robin_reaches_both_apiservers_and_survives_losing_one() {
    let bed = Testbed::up(&["--apiservers", "2", "--audit"]);
    let hub = hub_for(&bed, "ADMIN_PEM", &["--lb-mode", "rr"]);
    let kc = write_kubeconfig(&bed.dir().join("hub.kubeconfig"), &hub.proxy_url());
    let (first, second) = (bed.env("APISERVER_0_URL"), bed.env("APISERVER_1_URL"));
    hub.wait_server_health(&first, true, WAIT);
    hub.wait_server_health(&second, true, WAIT);

    for _ in 0..10 {
        kubectl_ok(&kc, &["get", "namespace", "default", "-o", "name"]);
    }
    // Each kubectl run also makes discovery requests, so count them all.
    for i in 0..2 {
        let audit = bed.read(&format!("audit-{i}.log"));
        let hits = audit
            .lines()
            .filter(|l| l.contains("\"userAgent\":\"kubectl/"))
            .count();
        assert!(hits >= 5, "apiserver {i} saw {hits} kubectl requests");
    }

    bed.stop_apiserver(1);
    hub.wait_server_health(&second, false, WAIT);
    for _ in 0..10 {
        kubectl_ok(&kc, &["get", "namespace", "default", "-o", "name"]);
    }
    bed.start_apiserver(1);
    hub.wait_server_health(&second, true, WAIT);
    kubectl_ok(&kc, &["get", "namespace", "default", "-o", "name"]);
}

/// Sends a signal to a process of the test bed (SIGCONT again when dropped,
/// so a stopped apiserver never outlives its test).
struct Stopped(String);

impl Stopped {
    fn stop(pid: String) -> Stopped {
        signal("STOP", &pid);
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        signal("CONT", &self.0);
    }
}

fn signal(name: &str, pid: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), pid])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid}");
}

#[test]
#[ignore = "end to end: needs the test bed (scripts/testbed.sh install); scripts/test.sh runs it"]
fn a_watch_from_a_stopped_kube_apiserver_ends_once_the_hub_marks_it_unhealthy() {
    let bed = Testbed::up(&[]);
    let hub = hub_for(
        &bed,
        "ADMIN_PEM",
        &[
            "--heartbeat-timeout-seconds",
            "1",
            "--heartbeat-failed-retry",
            "2",
        ],
    );
    let kc = write_kubeconfig(&bed.dir().join("hub.kubeconfig"), &hub.proxy_url());
    kubectl_ok(&kc, &["create", "namespace", "silent"]);
    kubectl_ok(
        &kc,
        &[
            "-n",
            "silent",
            "create",
            "configmap",
            "c1",
            "--from-literal=k=v",
        ],
    );
    let mut watch = support::client::RawStream::get(
        &format!(
            "{}/api/v1/namespaces/silent/configmaps?watch=true&timeoutSeconds=600",
            hub.proxy_url()
        ),
        &[
            ("User-Agent", "kubelet/v1.35.0 (linux/amd64)"),
            ("Accept", "application/json"),
        ],
    );
    assert_eq!(watch.status(), 200);
    let first = watch
        .next_line(WAIT)
        .expect("the current ConfigMap as ADDED");
    assert!(String::from_utf8_lossy(&first.1).contains("\"c1\""));

    // The process keeps its sockets and answers nothing: no reset, no end.
    let stopped = Stopped::stop(bed.env("APISERVER_0_PID"));
    let server = bed.env("APISERVER_0_URL");
    hub.wait_server_health(&server, false, WAIT);
    watch.read_to_end(WAIT);
    assert!(
        watch.is_ended(),
        "the client sees the end of the watch\n{}",
        hub.log()
    );
    assert_eq!(hub.metric("node_yurthub_streams_ended_unhealthy_total"), 1);
    // Asked again, the watch is held offline (and ends by its own timeout).
    let mut again = support::client::RawStream::get(
        &format!(
            "{}/api/v1/namespaces/silent/configmaps?watch=true&timeoutSeconds=1",
            hub.proxy_url()
        ),
        &[("User-Agent", "kubelet/v1.35.0 (linux/amd64)")],
    );
    assert_eq!(again.status(), 200);
    assert!(again.read_to_end(WAIT).is_empty());
    assert!(again.is_ended());
    // Healthy again once it runs again.
    drop(stopped);
    hub.wait_server_health(&server, true, WAIT);
}

fn configmap_names(output: &str) -> Vec<String> {
    let list: serde_json::Value =
        serde_json::from_str(output).unwrap_or_else(|e| panic!("{e}: {output}"));
    let mut names: Vec<String> = list["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items: {output}"))
        .iter()
        .map(|i| {
            i["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    names.sort();
    names
}

#[test]
#[ignore = "end to end: needs the test bed (scripts/testbed.sh install); scripts/test.sh runs it"]
fn kubectl_reads_from_the_cache_while_the_apiserver_is_down_and_across_a_hub_restart() {
    let bed = Testbed::up(&[]);
    let mut hub = hub_for(
        &bed,
        "ADMIN_PEM",
        &["--cache-agents", "kubectl", "--heartbeat-failed-retry", "1"],
    );
    let kc = write_kubeconfig(&bed.dir().join("hub.kubeconfig"), &hub.proxy_url());
    // kubectl keeps its own discovery cache under HOME: keep it out of the way.
    let ns = ["-n", "offline"];
    kubectl_ok(&kc, &["create", "namespace", "offline"]);
    kubectl_ok(
        &kc,
        &[
            ns[0],
            ns[1],
            "create",
            "configmap",
            "c1",
            "--from-literal=k=v1",
        ],
    );
    kubectl_ok(
        &kc,
        &[
            ns[0],
            ns[1],
            "create",
            "configmap",
            "c2",
            "--from-literal=k=v2",
        ],
    );
    kubectl_ok(&kc, &[ns[0], ns[1], "label", "configmap", "c1", "app=web"]);
    kubectl_ok(&kc, &[ns[0], ns[1], "label", "configmap", "c2", "app=db"]);
    // Reads that fill the cache.
    let online_all = configmap_names(&kubectl_ok(
        &kc,
        &[ns[0], ns[1], "get", "configmaps", "-o", "json"],
    ));
    assert!(
        online_all.contains(&"c1".to_string()) && online_all.contains(&"c2".to_string()),
        "{online_all:?}"
    );
    kubectl_ok(
        &kc,
        &[
            ns[0],
            ns[1],
            "get",
            "configmaps",
            "-l",
            "app=web",
            "-o",
            "json",
        ],
    );
    kubectl_ok(&kc, &[ns[0], ns[1], "get", "configmap", "c1", "-o", "json"]);
    let c1_file = hub.cache_dir().join("kubectl/configmaps/offline/c1.json");
    assert!(wait_until(WAIT, || std::fs::read_to_string(&c1_file)
        .is_ok_and(|t| t.contains("\"app\":\"web\""))));

    bed.stop_apiserver(0);
    hub.wait_server_health(&bed.env("APISERVER_0_URL"), false, WAIT);
    let read_offline = |hub: &Hub| {
        let one: serde_json::Value = serde_json::from_str(&kubectl_ok(
            &kc,
            &[ns[0], ns[1], "get", "configmap", "c1", "-o", "json"],
        ))
        .unwrap();
        assert_eq!(one["data"]["k"], "v1");
        let web = configmap_names(&kubectl_ok(
            &kc,
            &[
                ns[0],
                ns[1],
                "get",
                "configmaps",
                "-l",
                "app=web",
                "-o",
                "json",
            ],
        ));
        assert_eq!(web, ["c1"]);
        let all = configmap_names(&kubectl_ok(
            &kc,
            &[ns[0], ns[1], "get", "configmaps", "-o", "json"],
        ));
        assert_eq!(all, online_all);
        // The default table output asks for a Table and falls back to a plain list.
        let table = kubectl_ok(&kc, &[ns[0], ns[1], "get", "configmaps"]);
        assert!(table.contains("c1") && table.contains("c2"), "{table}");
        let gone = kubectl(&kc, &[ns[0], ns[1], "delete", "configmap", "c1"]);
        assert!(!gone.status.success());
        assert!(requests_counted(hub, "kubectl", "get", "configmaps") >= 1);
    };
    read_offline(&hub);

    // A reboot while offline.
    hub.restart();
    read_offline(&hub);

    bed.start_apiserver(0);
    // Offline, a create is only echoed: wait until the hub really forwards again.
    hub.wait_server_health(&bed.env("APISERVER_0_URL"), true, WAIT);
    assert!(wait_until(WAIT, || kubectl(
        &kc,
        &[
            ns[0],
            ns[1],
            "create",
            "configmap",
            "c3",
            "--from-literal=k=v3"
        ]
    )
    .status
    .success()));
    let after = configmap_names(&kubectl_ok(
        &kc,
        &[ns[0], ns[1], "get", "configmaps", "-o", "json"],
    ));
    assert!(after.contains(&"c3".to_string()), "{after:?}");
    assert!(wait_until(WAIT, || hub
        .cache_dir()
        .join("kubectl/configmaps/offline/c3.json")
        .exists()));
}

const POD_MANIFEST: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: NAME, namespace: edge, labels: {app: web}}
spec:
  nodeName: NODE
  automountServiceAccountToken: false
  containers:
  - name: c
    image: busybox
    env:
    - name: FROM_CONFIGMAP
      valueFrom: {configMapKeyRef: {name: cm1, key: greeting}}
    volumeMounts: [{name: secret, mountPath: /secret}]
  volumes:
  - name: secret
    secret: {secretName: s1}
"#;

/// Lines of the hollow kubelet's log that say a read of the apiserver failed.
fn failed_reads(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.starts_with('E') || l.starts_with('W'))
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            [
                "failed to list",
                "failed to watch",
                "failed to get",
                "unable to register",
                "error getting node",
                "unable to retrieve",
            ]
            .iter()
            .any(|p| l.contains(p))
        })
        .collect()
}

#[test]
#[ignore = "end to end: needs the test bed (scripts/testbed.sh install); scripts/test.sh runs it"]
fn hollow_kubelet_restarted_offline_gets_everything_from_the_hub_and_keeps_its_pods() {
    let mut bed = Testbed::up(&[]);
    let hub = hub_for(
        &bed,
        "NODE_PEM",
        &[
            "--cache-agents",
            "kubemark",
            "--heartbeat-failed-retry",
            "1",
        ],
    );
    let kc = write_kubeconfig(&bed.dir().join("hub.kubeconfig"), &hub.proxy_url());
    let admin = bed.admin_kubeconfig();
    let node = bed.env("NODE_NAME");
    bed.kubemark(&kc, true);

    kubectl_ok(&admin, &["create", "namespace", "edge"]);
    kubectl_ok(
        &admin,
        &["-n", "edge", "create", "serviceaccount", "default"],
    );
    kubectl_ok(
        &admin,
        &[
            "-n",
            "edge",
            "create",
            "configmap",
            "cm1",
            "--from-literal=greeting=hi",
        ],
    );
    kubectl_ok(
        &admin,
        &[
            "-n",
            "edge",
            "create",
            "secret",
            "generic",
            "s1",
            "--from-literal=token=t",
        ],
    );
    for name in ["p1", "p2"] {
        let manifest = bed.dir().join(format!("{name}.yaml"));
        std::fs::write(
            &manifest,
            POD_MANIFEST.replace("NAME", name).replace("NODE", &node),
        )
        .unwrap();
        kubectl_ok(&admin, &["apply", "-f", &manifest.display().to_string()]);
    }
    let pod_state = || {
        kubectl_ok(
            &admin,
            &[
                "-n",
                "edge",
                "get",
                "pods",
                "-o",
                "jsonpath={range .items[*]}{.metadata.name}={.metadata.uid}/{.status.phase}/{.status.containerStatuses[0].restartCount} {end}",
            ],
        )
    };
    assert!(
        wait_until(Duration::from_secs(60), || pod_state()
            .matches("/Running/0")
            .count()
            == 2),
        "{}",
        pod_state()
    );
    let before = pod_state();

    let cache = hub.cache_dir().join("kubemark");
    let wanted = [
        format!("nodes/{node}.pb"),
        "pods/edge/p1.pb".to_string(),
        "pods/edge/p2.pb".to_string(),
        "services/default/kubernetes.pb".to_string(),
        "configmaps/edge/cm1.pb".to_string(),
        "secrets/edge/s1.pb".to_string(),
    ];
    assert!(
        wait_until(WAIT, || wanted.iter().all(|f| cache.join(f).exists())),
        "missing from the cache: {:?}",
        wanted
            .iter()
            .filter(|f| !cache.join(f).exists())
            .collect::<Vec<_>>()
    );

    // Before the link is cut, the hub's report says kubelet would come back.
    let autonomy = |format: &str| {
        let url = format!("{}/v1/autonomy?format={format}", hub.serve_url());
        let (status, _, body) = support::client::get(&url);
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        String::from_utf8_lossy(&body).into_owned()
    };
    let kubemark_verdict = || {
        let report: serde_json::Value = serde_json::from_str(&autonomy("json")).unwrap();
        report["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "kubemark")
            .map(|c| {
                (
                    c["ready"] == true,
                    c["kubelet"] == true,
                    c["verdict"].to_string(),
                )
            })
    };
    assert!(
        wait_until(WAIT, || kubemark_verdict().is_some_and(
            |(ready, kubelet, verdict)| {
                ready && kubelet && verdict.contains("ready to restart offline: node, 2 pods")
            }
        )),
        "the report does not say the hollow kubelet is ready:\n{}",
        autonomy("text")
    );
    let report_text = autonomy("text");
    eprintln!("--- GET /v1/autonomy before the cloud goes away ---\n{report_text}--- end ---");
    std::fs::write(bed.dir().join("autonomy-report.txt"), &report_text).unwrap();

    // The cloud goes away, and the node reboots while offline.
    bed.stop_apiserver(0);
    hub.wait_server_health(&bed.env("APISERVER_0_URL"), false, WAIT);
    // A garbage collection offline takes nothing the hollow kubelet needs.
    let (status, _, body) =
        support::client::request("POST", &format!("{}/v1/gc", hub.serve_url()), &[], &[]);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    eprintln!(
        "--- POST /v1/gc offline ---\n{}--- end ---",
        String::from_utf8_lossy(&body)
    );
    let gone: Vec<&String> = wanted.iter().filter(|f| !cache.join(f).exists()).collect();
    assert!(gone.is_empty(), "collected offline: {gone:?}");
    assert!(
        kubemark_verdict().is_some_and(|(ready, kubelet, _)| ready && kubelet),
        "not ready after a collection offline:\n{}",
        autonomy("text")
    );
    bed.script_ok(&["stop-kubemark", &bed.dir().display().to_string()]);
    let offline_from = bed.read("logs/kubemark.log").len();
    bed.kubemark(&kc, false);
    // Give it time to start, list, watch, register and renew its lease twice.
    let offline_answers = || hub.metric("node_yurthub_offline_answers_total");
    let start_answers = offline_answers();
    assert!(
        wait_until(Duration::from_secs(45), || offline_answers()
            >= start_answers + 20
            && bed.read("logs/kubemark.log")[offline_from..]
                .contains("Successfully registered node")),
        "the restarted kubelet did not get going offline\n{}",
        &bed.read("logs/kubemark.log")[offline_from..]
    );
    let offline_log = bed.read("logs/kubemark.log")[offline_from..].to_string();
    let failures = failed_reads(&offline_log);
    assert!(
        failures.is_empty(),
        "failed reads while offline:\n{}",
        failures.join("\n")
    );
    eprintln!("--- hollow kubelet while offline ---\n{offline_log}\n--- end ---");
    // And while offline, the report (from memory) still says so.
    assert!(
        kubemark_verdict().is_some_and(|(ready, _, _)| ready),
        "{}",
        autonomy("text")
    );
    eprintln!(
        "--- GET /v1/autonomy offline ---\n{}--- end ---",
        autonomy("text")
    );

    // The cloud returns: lease and node status resume, the pods are the same.
    bed.start_apiserver(0);
    let back = std::time::SystemTime::now();
    let back_secs = back
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Whether a timestamp field (RFC 3339) is at or after the apiserver's return.
    let updated_since_return = |args: &[&str]| {
        let text = String::from_utf8_lossy(&kubectl(&admin, args).stdout).to_string();
        Command::new("date")
            .args(["-d", &text, "+%s"])
            .output()
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .is_some_and(|seconds| seconds >= back_secs)
    };
    let lease = [
        "-n",
        "kube-node-lease",
        "get",
        "lease",
        node.as_str(),
        "-o",
        "jsonpath={.spec.renewTime}",
    ];
    assert!(
        wait_until(Duration::from_secs(60), || updated_since_return(&lease)),
        "the lease was not renewed within a minute"
    );
    let heartbeat = [
        "get",
        "node",
        node.as_str(),
        "-o",
        r#"jsonpath={.status.conditions[?(@.type=="Ready")].lastHeartbeatTime}"#,
    ];
    // kubelet reports an unchanged status only every nodeStatusReportFrequency
    // (5 min): when the cloud saw nothing change, that is when it resumes.
    assert!(
        wait_until(Duration::from_secs(330), || updated_since_return(
            &heartbeat
        )),
        "node status did not resume within kubelet's report period"
    );
    let ready = kubectl_ok(
        &admin,
        &[
            "get",
            "node",
            &node,
            "-o",
            r#"jsonpath={.status.conditions[?(@.type=="Ready")].status}"#,
        ],
    );
    assert_eq!(ready, "True");
    assert_eq!(pod_state(), before, "same pods, same UIDs, no restarts");
}

const BOOTSTRAP: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: bootstrap-token-abcdef, namespace: kube-system}
type: bootstrap.kubernetes.io/token
stringData:
  token-id: abcdef
  token-secret: 0123456789abcdef
  usage-bootstrap-authentication: "true"
  auth-extra-groups: system:bootstrappers:kubeadm:default-node-token
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: yurthub-test-node-bootstrapper}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:node-bootstrapper"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: Group, name: "system:bootstrappers"}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: yurthub-test-node-autoapprove}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:certificates.k8s.io:certificatesigningrequests:nodeclient"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: Group, name: "system:bootstrappers"}]
"#;

/// The user kubectl's request was made as, from the apiserver's Forbidden message.
fn forbidden_user(output: &std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    stderr
        .split("User \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_default()
        .to_string()
}

#[test]
#[ignore = "end to end: needs the test bed (scripts/testbed.sh install); scripts/test.sh runs it"]
fn a_node_joins_with_a_bootstrap_token_and_reuses_its_certificate_after_a_restart() {
    let bed = Testbed::up(&["--controller-manager"]);
    let admin = bed.admin_kubeconfig();
    let manifest = bed.dir().join("bootstrap.yaml");
    std::fs::write(&manifest, BOOTSTRAP).unwrap();
    kubectl_ok(&admin, &["apply", "-f", &manifest.display().to_string()]);
    let root_dir = bed.dir().join("hub-root");
    let mut hub = hub_for(
        &bed,
        "ADMIN_PEM",
        &[
            "--join-token",
            "abcdef.0123456789abcdef",
            "--kubelet-client-certificate",
            "/nonexistent.pem",
            "--root-dir",
            &root_dir.display().to_string(),
        ],
    );
    hub.expect_log(
        "client certificate for system:node:edge-1 stored",
        Duration::from_secs(60),
    );
    hub.expect_log("now CN \"system:node:edge-1\"", WAIT);
    let stored = root_dir.join("pki/yurthub-client-current.pem");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&stored).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let kc = write_kubeconfig(&bed.dir().join("hub.kubeconfig"), &hub.proxy_url());
    // A node may not list namespaces: the refusal names who the apiserver saw.
    let as_node = kubectl(&kc, &["get", "namespaces"]);
    assert_eq!(
        forbidden_user(&as_node),
        "system:node:edge-1",
        "{}",
        String::from_utf8_lossy(&as_node.stderr)
    );
    assert!(
        !hub.log().contains("0123456789abcdef"),
        "the token must never be logged"
    );

    hub.restart();
    assert!(
        wait_until(WAIT, || forbidden_user(&kubectl(
            &kc,
            &["get", "namespaces"]
        )) == "system:node:edge-1"),
        "{}",
        hub.log()
    );
    let csrs = kubectl_ok(&admin, &["get", "csr", "-o", "name"]);
    assert_eq!(
        csrs.lines()
            .filter(|l| l.contains("yurthub-edge-1-"))
            .count(),
        1,
        "a restart reuses the certificate: {csrs}"
    );
}

#[test]
#[ignore = "end to end: needs the test bed (scripts/testbed.sh install); scripts/test.sh runs it"]
fn kubelet_certificate_rotation_and_a_pod_token_over_the_secure_port() {
    let bed = Testbed::up(&["--controller-manager", "--audit"]);
    let admin = bed.admin_kubeconfig();
    let current = bed.dir().join("kubelet-client-current.pem");
    std::os::unix::fs::symlink(bed.env("NODE_PEM"), &current).unwrap();
    let secure_port = support::free_port().to_string();
    let pki = std::path::PathBuf::from(bed.env("PKI_DIR"));
    let hub = hub_for(
        &bed,
        "NODE_PEM",
        &[
            "--kubelet-client-certificate",
            &current.display().to_string(),
            "--proxy-secure-port",
            &secure_port,
            "--tls-cert-file",
            &pki.join("apiserver.crt").display().to_string(),
            "--tls-private-key-file",
            &pki.join("apiserver.key").display().to_string(),
        ],
    );
    let kc = write_kubeconfig(&bed.dir().join("hub.kubeconfig"), &hub.proxy_url());
    assert_eq!(
        forbidden_user(&kubectl(&kc, &["get", "namespaces"])),
        "system:node:edge-1"
    );

    // kubelet rotates: the symlink now points at another certificate.
    let next = bed.dir().join("kubelet-client-next.pem");
    std::os::unix::fs::symlink(bed.env("ADMIN_PEM"), &next).unwrap();
    std::fs::rename(&next, &current).unwrap();
    hub.expect_log("now CN \"admin\"", WAIT);
    kubectl_ok(&kc, &["get", "namespaces"]);
    let audit = bed.read("audit-0.log");
    assert!(
        audit.lines().any(|l| l.contains("\"username\":\"admin\"") && l.contains("\"userAgent\":\"kubectl/")),
        "the apiserver never saw the rotated identity"
    );

    // A pod with in-cluster configuration: its own service account token, over HTTPS.
    kubectl_ok(
        &admin,
        &["-n", "default", "create", "serviceaccount", "pod-sa"],
    );
    let token_of = || {
        let secret = kubectl(
            &admin,
            &[
                "-n",
                "default",
                "get",
                "serviceaccount",
                "pod-sa",
                "-o",
                "jsonpath={.secrets[0].name}",
            ],
        );
        let secret = String::from_utf8_lossy(&secret.stdout).to_string();
        if secret.is_empty() {
            return None;
        }
        let data = kubectl(
            &admin,
            &[
                "-n",
                "default",
                "get",
                "secret",
                &secret,
                "-o",
                "go-template={{.data.token | base64decode}}",
            ],
        );
        String::from_utf8(data.stdout)
            .ok()
            .filter(|t| data.status.success() && !t.is_empty() && !t.contains("no value"))
    };
    let token =
        support::wait_for(WAIT, token_of).expect("the controller manager never made a token");
    let agent = support::client::tls_agent(Path::new(&bed.env("CA_FILE")), None);
    let url = format!("https://127.0.0.1:{secure_port}/api/v1/namespaces/default/pods");
    let bearer = format!("Bearer {token}");
    let (status, _, body) = support::client::request_with(
        &agent,
        "GET",
        &url,
        &[("Authorization", bearer.as_str())],
        &[],
    );
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("system:serviceaccount:default:pod-sa"),
        "the apiserver saw someone else: {body}"
    );
}

#[test]
#[ignore = "end to end: needs the test bed (scripts/testbed.sh install); scripts/test.sh runs it"]
fn the_secure_port_gets_its_serving_certificate_from_an_approved_csr() {
    let bed = Testbed::up(&["--controller-manager"]);
    let admin = bed.admin_kubeconfig();
    let secure_port = support::free_port().to_string();
    let hub = hub_for(&bed, "NODE_PEM", &["--proxy-secure-port", &secure_port]);
    hub.expect_log(
        "(kubernetes.io/kubelet-serving) created; waiting for approval",
        Duration::from_secs(60),
    );
    // Serving certificates are not approved automatically: an administrator does it.
    let name = hub
        .log()
        .lines()
        .find(|l| l.contains("(kubernetes.io/kubelet-serving) created"))
        .and_then(|l| l.split("CertificateSigningRequest ").nth(1))
        .and_then(|rest| rest.split(' ').next())
        .map(str::to_string)
        .expect("CSR name in the log");
    kubectl_ok(&admin, &["certificate", "approve", &name]);
    hub.expect_log("serving certificate stored", WAIT);
    let agent = support::client::tls_agent(Path::new(&bed.env("CA_FILE")), None);
    let url = format!("https://127.0.0.1:{secure_port}/version");
    // The listener takes the new certificate within its check interval; a
    // request without a bearer token is then answered by the hub itself
    // (401, never forwarded under the node's identity).
    assert!(
        wait_until(Duration::from_secs(90), || {
            support::client::try_request_with(&agent, "GET", &url, &[], &[])
                .is_ok_and(|r| r.0 == 401)
        }),
        "the secure port never served with the approved certificate\n{}",
        hub.log()
    );
}

// ------------------------------------------------ kubectl 1.35 (client-go 1.35) --

/// kubectl 1.35 (from `scripts/testbed.sh install`) with a kubeconfig and a
/// discovery cache directory of its own, so that what it needs comes through
/// the server it talks to, not from an earlier run.
struct Kubectl135 {
    binary: PathBuf,
    kubeconfig: PathBuf,
    cache_dir: PathBuf,
}

impl Kubectl135 {
    fn new(binary: &Path, kubeconfig: &Path, cache_dir: &Path) -> Self {
        Kubectl135 {
            binary: binary.to_path_buf(),
            kubeconfig: kubeconfig.to_path_buf(),
            cache_dir: cache_dir.to_path_buf(),
        }
    }

    fn with_cache_dir<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut full = vec!["--cache-dir", self.cache_dir.to_str().expect("utf-8 path")];
        full.extend_from_slice(args);
        full
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        run_kubectl(&self.binary, &self.kubeconfig, &self.with_cache_dir(args))
    }

    fn ok(&self, args: &[&str]) -> String {
        run_kubectl_ok(&self.binary, &self.kubeconfig, &self.with_cache_dir(args))
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut full = args.to_vec();
        full.extend_from_slice(&["-o", "json"]);
        let out = self.ok(&full);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    /// `get -w ARGS` with a safety bound; killed when dropped.
    fn watch(&self, args: &[&str], stderr: &Path) -> KubectlStream {
        let mut full = vec!["--request-timeout=90s", "get", "-w"];
        full.extend_from_slice(args);
        KubectlStream::spawn(
            &self.binary,
            &self.kubeconfig,
            &self.with_cache_dir(&full),
            stderr,
        )
    }
}

/// The items of a `-o json` list, sorted by name.
fn sorted_items(list: &serde_json::Value) -> Vec<serde_json::Value> {
    let mut items = list["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items: {list}"))
        .clone();
    items.sort_by(|a, b| {
        a["metadata"]["name"]
            .as_str()
            .cmp(&b["metadata"]["name"].as_str())
    });
    items
}

fn item_names(list: &serde_json::Value) -> Vec<String> {
    sorted_items(list)
        .iter()
        .map(|i| {
            i["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

const CONFIGMAPS_135: &str = r#"
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: ConfigMap, metadata: {name: c1, namespace: m135, labels: {app: web}}, data: {k: v1}}
- {apiVersion: v1, kind: ConfigMap, metadata: {name: c2, namespace: m135, labels: {app: db}}, data: {k: v2}}
- {apiVersion: v1, kind: ConfigMap, metadata: {name: c3, namespace: m135}, data: {k: v3}}
"#;

/// The selectors both kubectl 1.35 tests list with, and the names each returns.
const SELECTORS_135: [(&[&str], &[&str]); 4] = [
    (&["-l", "app=web"], &["c1"]),
    (&["-l", "app in (web,db)"], &["c1", "c2"]),
    (&["--field-selector", "metadata.name=c2"], &["c2"]),
    (
        &["-l", "app", "--field-selector", "metadata.name!=c1"],
        &["c2"],
    ),
];

/// Checks that the binary is kubectl 1.35 and returns its `gitVersion`.
fn assert_kubectl_1_35(kubectl: &Kubectl135) -> String {
    let version = kubectl.json(&["version", "--client"]);
    let git_version = version["clientVersion"]["gitVersion"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(git_version.starts_with("v1.35."), "{version}");
    git_version
}

#[test]
#[ignore = "end to end: needs the test bed (scripts/testbed.sh install); scripts/test.sh runs it"]
fn kubectl_1_35_gets_lists_watches_and_creates_through_the_hub() {
    let binary = modern_kubectl();
    let bed = Testbed::up(&["--audit"]);
    let hub = hub_for(&bed, "ADMIN_PEM", &["--cache-agents", "kubectl"]);
    let kc = write_kubeconfig(&bed.dir().join("hub.kubeconfig"), &hub.proxy_url());
    let via_hub = Kubectl135::new(&binary, &kc, &bed.dir().join("kubectl-cache-hub"));
    let direct = Kubectl135::new(
        &binary,
        &bed.admin_kubeconfig(),
        &bed.dir().join("kubectl-cache-direct"),
    );
    let git_version = assert_kubectl_1_35(&via_hub);
    let ns = ["-n", "m135"];

    via_hub.ok(&["create", "namespace", "m135"]);
    let manifest = bed.dir().join("configmaps.yaml");
    std::fs::write(&manifest, CONFIGMAPS_135).unwrap();
    let created = via_hub.ok(&["create", "-f", manifest.to_str().unwrap()]);
    assert_eq!(
        created.lines().filter(|l| l.ends_with(" created")).count(),
        3,
        "{created}"
    );

    // get: the very object the apiserver has.
    let get = [ns[0], ns[1], "get", "configmap", "c1"];
    let one = via_hub.json(&get);
    assert_eq!(one["data"]["k"], "v1");
    assert_eq!(one, direct.json(&get));

    // list, and lists with label and field selectors.
    let list = [ns[0], ns[1], "get", "configmaps"];
    let all = via_hub.json(&list);
    assert_eq!(item_names(&all), ["c1", "c2", "c3"]);
    assert_eq!(sorted_items(&all), sorted_items(&direct.json(&list)));
    for (selector, names) in SELECTORS_135 {
        let args = [&list[..], selector].concat();
        let selected = via_hub.json(&args);
        assert_eq!(item_names(&selected), names, "{selector:?}");
        assert_eq!(
            sorted_items(&selected),
            sorted_items(&direct.json(&args)),
            "{selector:?}"
        );
    }
    // The default output: a server-side Table.
    let table = via_hub.ok(&list);
    assert!(
        ["NAME", "c1", "c2", "c3"].iter().all(|w| table.contains(w)),
        "{table}"
    );

    // get -w lists, then shows an object created afterwards.
    let mut watch = via_hub.watch(
        &[ns[0], ns[1], "configmaps", "-o", "name"],
        &bed.dir().join("watch.stderr"),
    );
    assert!(
        watch.wait_lines(&["configmap/c1", "configmap/c2", "configmap/c3"], WAIT),
        "kubectl get -w listed {:?}; stderr: {}",
        watch.seen(),
        watch.stderr()
    );
    let c4 = via_hub.ok(&[
        ns[0],
        ns[1],
        "create",
        "configmap",
        "c4",
        "--from-literal=k=v4",
    ]);
    assert!(c4.contains("configmap/c4 created"), "{c4}");
    assert!(
        watch.wait_lines(&["configmap/c4"], WAIT),
        "the watch through the hub never showed configmap/c4: {:?}; stderr: {}",
        watch.seen(),
        watch.stderr()
    );
    watch.kill();
    assert_eq!(
        direct.json(&[ns[0], ns[1], "get", "configmap", "c4"])["data"]["k"],
        "v4"
    );

    // The hub counted it all for component "kubectl" and cached what it read.
    for (verb, resource) in [
        ("create", "namespaces"),
        ("create", "configmaps"),
        ("get", "configmaps"),
        ("list", "configmaps"),
    ] {
        assert!(
            requests_counted(&hub, "kubectl", verb, resource) >= 1,
            "no {verb} {resource} counted for kubectl\n{}",
            hub.metrics()
        );
    }
    assert!(
        wait_until(WAIT, || requests_counted(
            &hub,
            "kubectl",
            "watch",
            "configmaps"
        ) >= 1),
        "{}",
        hub.metrics()
    );
    assert!(wait_until(WAIT, || hub
        .cache_dir()
        .join("kubectl/configmaps/m135/c1.json")
        .exists()));
    // And the apiserver saw kubectl 1.35's own User-Agent, no other kubectl.
    let audit = bed.read("audit-0.log");
    let agents: std::collections::BTreeSet<&str> = audit
        .lines()
        .filter_map(|l| l.split("\"userAgent\":\"").nth(1)?.split('"').next())
        .filter(|a| a.starts_with("kubectl"))
        .collect();
    let expected = format!("kubectl/{git_version} ");
    assert!(
        !agents.is_empty() && agents.iter().all(|a| a.starts_with(&expected)),
        "User-Agents seen by the apiserver: {agents:?}"
    );
}

#[test]
#[ignore = "end to end: needs the test bed (scripts/testbed.sh install); scripts/test.sh runs it"]
fn kubectl_1_35_is_answered_from_the_hubs_cache_while_the_apiserver_is_down() {
    let binary = modern_kubectl();
    let bed = Testbed::up(&[]);
    let hub = hub_for(
        &bed,
        "ADMIN_PEM",
        &["--cache-agents", "kubectl", "--heartbeat-failed-retry", "1"],
    );
    let kc = write_kubeconfig(&bed.dir().join("hub.kubeconfig"), &hub.proxy_url());
    let online = Kubectl135::new(&binary, &kc, &bed.dir().join("kubectl-cache-online"));
    assert_kubectl_1_35(&online);
    let ns = ["-n", "m135"];
    online.ok(&["create", "namespace", "m135"]);
    let manifest = bed.dir().join("configmaps.yaml");
    std::fs::write(&manifest, CONFIGMAPS_135).unwrap();
    online.ok(&["create", "-f", manifest.to_str().unwrap()]);

    // kubectl 1.35 reads through the hub: that fills the hub's cache.
    let get = [ns[0], ns[1], "get", "configmap", "c1"];
    let list = [ns[0], ns[1], "get", "configmaps"];
    let online_one = online.json(&get);
    let online_all = online.json(&list);
    assert_eq!(item_names(&online_all), ["c1", "c2", "c3"]);
    let online_selected: Vec<_> = SELECTORS_135
        .iter()
        .map(|(selector, names)| {
            let selected = online.json(&[&list[..], selector].concat());
            assert_eq!(item_names(&selected), *names, "{selector:?}");
            selected
        })
        .collect();
    // The cache writer applies writes in order: once the last read's object
    // is on disk, so is everything read before it.
    online.json(&["get", "namespace", "default"]);
    let last = hub.cache_dir().join("kubectl/namespaces/default.json");
    assert!(
        wait_until(WAIT, || last.exists()),
        "kubectl 1.35's reads were not cached\n{}",
        hub.log()
    );
    assert!(
        hub.cache_dir()
            .join("kubectl/configmaps/m135/c1.json")
            .exists()
    );

    // What the hub counted for kubectl (2xx) so far, per verb.
    let verbs = ["get", "list", "watch", "create"];
    let counted = || verbs.map(|verb| requests_counted(&hub, "kubectl", verb, "configmaps"));
    let counted_online = counted();

    bed.stop_apiserver(0);
    hub.wait_server_health(&bed.env("APISERVER_0_URL"), false, WAIT);
    let answers_before = hub.metric("node_yurthub_offline_answers_total");

    // A fresh discovery cache: discovery too must come from the hub.
    let offline = Kubectl135::new(&binary, &kc, &bed.dir().join("kubectl-cache-offline"));
    assert_eq!(offline.json(&get), online_one, "get offline");
    let all = offline.json(&list);
    assert_eq!(
        sorted_items(&all),
        sorted_items(&online_all),
        "list offline"
    );
    for ((selector, _), online) in SELECTORS_135.iter().zip(&online_selected) {
        let selected = offline.json(&[&list[..], selector].concat());
        assert_eq!(
            sorted_items(&selected),
            sorted_items(online),
            "list offline with {selector:?}"
        );
    }
    // The default output asks for a Table and takes the plain list instead.
    let table = offline.ok(&list);
    assert!(
        ["c1", "c2", "c3"].iter().all(|w| table.contains(w)),
        "{table}"
    );

    // get -w prints the cached objects, then the hub holds the watch open.
    let long_running_before = hub.metric("node_yurthub_long_running_requests");
    let mut watch = offline.watch(
        &[ns[0], ns[1], "configmaps", "-o", "name"],
        &bed.dir().join("watch-offline.stderr"),
    );
    assert!(
        watch.wait_lines(&["configmap/c1", "configmap/c2", "configmap/c3"], WAIT),
        "kubectl get -w offline printed {:?}; stderr: {}",
        watch.seen(),
        watch.stderr()
    );
    assert!(
        wait_until(WAIT, || hub.metric("node_yurthub_long_running_requests")
            > long_running_before),
        "the hub holds no watch for kubectl get -w\n{}",
        hub.metrics()
    );
    assert!(
        !wait_until(Duration::from_secs(3), || watch.exited()),
        "kubectl get -w ended offline; printed {:?}; stderr: {}",
        watch.seen(),
        watch.stderr()
    );
    watch.kill();
    assert!(
        wait_until(WAIT, || hub.metric("node_yurthub_long_running_requests")
            == long_running_before),
        "the hub still holds the watch kubectl left\n{}",
        hub.metrics()
    );
    // The default output: list and watch ask for Tables and take plain JSON.
    let mut table_watch = offline.watch(
        &[ns[0], ns[1], "configmaps"],
        &bed.dir().join("watch-offline-table.stderr"),
    );
    assert!(
        table_watch.wait_lines(&["NAME", "c1", "c2", "c3"], WAIT),
        "kubectl get -w (table) offline printed {:?}; stderr: {}",
        table_watch.seen(),
        table_watch.stderr()
    );
    assert!(
        wait_until(WAIT, || hub.metric("node_yurthub_long_running_requests")
            > long_running_before),
        "the hub holds no watch for kubectl get -w (table)\n{}",
        hub.metrics()
    );
    assert!(
        !table_watch.exited(),
        "kubectl get -w (table) ended offline; stderr: {}",
        table_watch.stderr()
    );
    table_watch.kill();

    // create: the hub echoes the object (201) and does not keep it.
    let created = offline.json(&[
        ns[0],
        ns[1],
        "create",
        "configmap",
        "c9",
        "--from-literal=k=v9",
    ]);
    assert_eq!(created["metadata"]["name"], "c9", "{created}");
    assert_eq!(created["data"]["k"], "v9", "{created}");
    let not_kept = offline.run(&[ns[0], ns[1], "get", "configmap", "c9"]);
    assert!(
        String::from_utf8_lossy(&not_kept.stderr).contains("NotFound"),
        "{}",
        String::from_utf8_lossy(&not_kept.stderr)
    );

    assert!(
        hub.metric("node_yurthub_offline_answers_total") > answers_before,
        "{}",
        hub.metrics()
    );
    // Every verb was answered (2xx) offline too, for component "kubectl"
    // (a watch is counted once the hub notices its client left).
    assert!(
        wait_until(WAIT, || counted()
            .iter()
            .zip(&counted_online)
            .all(|(now, online)| now > online)),
        "kubectl's {verbs:?} on configmaps: {counted_online:?} online, {:?} after\n{}",
        counted(),
        hub.metrics()
    );
}

// ------------------------------------------------ a hub and a kubelet started together --

/// The hub's `node_yurthub_offline_writes_total` series, as rendered.
fn offline_write_series(hub: &Hub) -> Vec<String> {
    hub.metrics()
        .lines()
        .filter(|l| l.starts_with("node_yurthub_offline_writes_total{"))
        .map(str::to_string)
        .collect()
}

/// Whether the admin sees `node` in the cloud.
fn node_exists(admin: &Path, node: &str) -> bool {
    kubectl(admin, &["get", "node", node, "-o", "name"])
        .status
        .success()
}

/// When, in kube-apiserver's start-up, the hub and the hollow kubelet start.
#[derive(Clone, Copy, Debug)]
enum Moment {
    /// Its `/readyz` answers 200 (the test bed's start-apiserver returned).
    Ready,
    /// Its port accepts connections; it may answer nothing yet.
    Listening,
    /// It answers `/readyz`, at first usually 403 or 500 while its start-up
    /// hooks run: the case of issue 17, where the hub's first probe failed
    /// and kubelet's node registration got a 201 nobody had made.
    Answering,
}

/// Restarts kube-apiserver 0 and returns at `moment` of its start-up (with
/// what its `/readyz` answered then, for `Answering`); the rest of its
/// start-up goes on in `scope`.
fn restart_apiserver<'scope>(
    bed: &Testbed,
    scope: &'scope std::thread::Scope<'scope, '_>,
    moment: Moment,
) -> (
    std::thread::ScopedJoinHandle<'scope, std::process::Output>,
    Option<u16>,
) {
    bed.stop_apiserver(0);
    let dir = bed.dir().display().to_string();
    let starting = scope.spawn(move || {
        Command::new(Testbed::script())
            .args(["start-apiserver", &dir, "0"])
            .stdin(Stdio::null())
            .output()
            .expect("run scripts/testbed.sh start-apiserver")
    });
    let port: u16 = bed.env("APISERVER_0_PORT").parse().expect("a port");
    let mut readyz = None;
    let reached = match moment {
        // The script bounds its own wait for /readyz (60 s).
        Moment::Ready => wait_until(Duration::from_secs(90), || starting.is_finished()),
        Moment::Listening => wait_until(Duration::from_secs(60), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() || starting.is_finished()
        }),
        Moment::Answering => {
            let agent = support::client::tls_agent_with_timeout(
                Path::new(&bed.env("CA_FILE")),
                Some(Path::new(&bed.env("ADMIN_PEM"))),
                Duration::from_millis(500),
            );
            let url = format!("https://127.0.0.1:{port}/readyz");
            wait_until(Duration::from_secs(60), || {
                readyz = support::client::try_request_with(&agent, "GET", &url, &[], &[])
                    .ok()
                    .map(|reply| reply.0);
                readyz.is_some() || starting.is_finished()
            })
        }
    };
    assert!(reached, "kube-apiserver never reached {moment:?}");
    (starting, readyz)
}

#[test]
#[ignore = "end to end: needs the test bed (scripts/testbed.sh install); scripts/test.sh runs it"]
fn a_hollow_kubelet_started_with_a_fresh_hub_against_a_just_started_apiserver_always_registers() {
    const MOMENTS: [Moment; 3] = [Moment::Ready, Moment::Listening, Moment::Answering];
    const STARTS: usize = 12;
    let mut bed = Testbed::up(&[]);
    let admin = bed.admin_kubeconfig();
    let node = bed.env("NODE_NAME");
    let dir = bed.dir().display().to_string();
    let whole = Instant::now();
    for start in 0..STARTS {
        let begun = Instant::now();
        let moment = MOMENTS[start % MOMENTS.len()];
        let kubemark_from = bed.read("logs/kubemark.log").len();
        let (hub, apiserver_up, readyz, launched, registered) = std::thread::scope(|scope| {
            let (starting, readyz) = restart_apiserver(&bed, scope, moment);
            let apiserver_up = begun.elapsed();
            let launch = Instant::now();
            // A fresh hub (its own cache directory) and, at once, the kubelet.
            let hub = hub_for(&bed, "NODE_PEM", &["--cache-agents", "kubemark"]);
            let kc = write_kubeconfig(
                &bed.dir().join(format!("hub-{start}.kubeconfig")),
                &hub.proxy_url(),
            );
            let launched = launch.elapsed();
            bed.kubemark(&kc, false);
            let output = starting.join().expect("start-apiserver thread");
            assert!(
                output.status.success(),
                "start {start}: start-apiserver failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            let registered = wait_until(Duration::from_secs(60), || node_exists(&admin, &node));
            let registered = registered.then(|| launch.elapsed());
            (hub, apiserver_up, readyz, launched, registered)
        });
        let offline_writes = offline_write_series(&hub);
        assert!(
            registered.is_some(),
            "start {start} ({moment:?}): node {node} never appeared in the cloud\n\
             locally answered writes: {offline_writes:?}\n--- hub log ---\n{}\n\
             --- kubemark log ---\n{}",
            hub.log(),
            &bed.read("logs/kubemark.log")[kubemark_from..]
        );
        assert!(
            launched < Duration::from_secs(1),
            "start {start}: the hub took {launched:?} to start"
        );
        assert!(
            offline_writes.is_empty(),
            "start {start} ({moment:?}): writes answered locally while an apiserver listened: \
             {offline_writes:?}\n{}",
            hub.log()
        );
        eprintln!(
            "start {start} ({moment:?}{}): apiserver restarted in {apiserver_up:?}, hub started \
             in {launched:?}, node registered {:?} after the hub started; iteration {:?}",
            readyz.map_or(String::new(), |s| format!(", /readyz {s}")),
            registered.unwrap_or_default(),
            begun.elapsed()
        );

        bed.script_ok(&["stop-kubemark", &dir]);
        drop(hub);
        kubectl_ok(&admin, &["delete", "node", &node, "--wait=true"]);
        assert!(
            wait_until(WAIT, || !node_exists(&admin, &node)),
            "start {start}: node {node} not deleted"
        );
    }
    eprintln!("{STARTS} starts in {:?}", whole.elapsed());
}

// ------------------------------------------------ response filters --

/// A NodePool CRD with the group, versions, names and scope of OpenYurt's
/// (`apps.openyurt.io`, v1beta1 and v1beta2, cluster-scoped), its schema
/// reduced to what the hub reads (`status.nodes`); no status subresource,
/// so the test sets the status when it creates the pool.
const NODEPOOL_CRD: &str = r#"{
  "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
  "metadata": {"name": "nodepools.apps.openyurt.io"},
  "spec": {
    "group": "apps.openyurt.io", "scope": "Cluster",
    "names": {"plural": "nodepools", "singular": "nodepool", "kind": "NodePool", "listKind": "NodePoolList", "shortNames": ["np"]},
    "versions": [
      {"name": "v1beta1", "served": true, "storage": false,
       "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}},
      {"name": "v1beta2", "served": true, "storage": true,
       "schema": {"openAPIV3Schema": {"type": "object", "properties": {
         "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
         "status": {"type": "object", "properties": {"nodes": {"type": "array", "items": {"type": "string"}}},
                    "x-kubernetes-preserve-unknown-fields": true}}}}}
    ]
  }
}"#;

/// The addresses of the endpoints of EndpointSlice `name` in a list
/// answer, JSON or protobuf (endpoints 2, addresses 1).
fn slice_addresses(body: &[u8], protobuf: bool, name: &str) -> Vec<String> {
    use support::k8s_wire;
    if protobuf {
        let items = k8s_wire::pb_list_raw_items(body).expect("a protobuf list");
        let item = items
            .iter()
            .find(|i| k8s_wire::pb_string_at(i, &[1, 1]).as_deref() == Some(name))
            .expect("the slice");
        return k8s_wire::pb_strings_of_messages(item, 2, 1);
    }
    let list: serde_json::Value = serde_json::from_slice(body).unwrap();
    let item = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["metadata"]["name"] == name)
        .expect("the slice")
        .clone();
    item["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["addresses"][0].as_str().unwrap().to_string())
        .collect()
}

#[test]
#[ignore = "end to end: needs the test bed (scripts/testbed.sh install); scripts/test.sh runs it"]
fn kube_proxy_sees_only_its_pools_endpoints_online_and_offline() {
    let bed = Testbed::up(&[]);
    let admin = bed.admin_kubeconfig();
    let node = bed.env("NODE_NAME");
    let apply = |name: &str, manifest: &str| {
        let path = bed.dir().join(name);
        std::fs::write(&path, manifest).unwrap();
        kubectl_ok(&admin, &["apply", "-f", &path.display().to_string()]);
    };
    apply("nodepool-crd.json", NODEPOOL_CRD);
    kubectl_ok(
        &admin,
        &[
            "wait",
            "--for",
            "condition=established",
            "--timeout=30s",
            "crd/nodepools.apps.openyurt.io",
        ],
    );
    let pool = serde_json::json!({
        "apiVersion": "apps.openyurt.io/v1beta2", "kind": "NodePool",
        "metadata": {"name": "hangzhou"}, "spec": {"type": "Edge"},
        "status": {"nodes": [node, "edge-peer"]}
    });
    apply("nodepool.json", &pool.to_string());
    let service = serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "topo", "namespace": "default",
                     "annotations": {"openyurt.io/topologyKeys": "openyurt.io/nodepool"}},
        "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}
    });
    apply("service.json", &service.to_string());
    // Kubernetes 1.20 serves EndpointSlices as discovery.k8s.io/v1beta1,
    // the node of an endpoint in its topology.
    let endpoint = |address: &str, host: &str| {
        serde_json::json!({"addresses": [address], "conditions": {"ready": true},
                           "topology": {"kubernetes.io/hostname": host}})
    };
    let slice = serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1beta1", "kind": "EndpointSlice",
        "metadata": {"name": "topo-1", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "topo",
                                "endpointslice.kubernetes.io/managed-by": "e2e"}},
        "addressType": "IPv4",
        "endpoints": [endpoint("10.9.0.1", &node), endpoint("10.9.0.2", "edge-peer"), endpoint("10.9.0.3", "far-away")],
        "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]
    });
    apply("slice.json", &slice.to_string());

    let secure_port = support::free_port().to_string();
    let hub = hub_for(
        &bed,
        "ADMIN_PEM",
        &[
            "--nodepool-name",
            "hangzhou",
            "--proxy-secure-port",
            &secure_port,
            "--heartbeat-failed-retry",
            "1",
        ],
    );
    let readyz = || support::client::get(&format!("{}/v1/readyz", hub.serve_url())).2;
    assert!(
        wait_until(WAIT, || !String::from_utf8_lossy(&readyz())
            .contains("without context")),
        "{}\n{}",
        String::from_utf8_lossy(&readyz()),
        hub.log()
    );
    let list = |protobuf: bool| {
        let accept = if protobuf {
            "application/vnd.kubernetes.protobuf,application/json"
        } else {
            "application/json"
        };
        let (status, headers, body) = support::client::request(
            "GET",
            &format!(
                "{}/apis/discovery.k8s.io/v1beta1/endpointslices",
                hub.proxy_url()
            ),
            &[
                (
                    "User-Agent",
                    "kube-proxy/v1.20.2 (linux/amd64) kubernetes/faecb19",
                ),
                ("Accept", accept),
            ],
            b"",
        );
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let content_type = support::client::header(&headers, "content-type").unwrap_or_default();
        assert_eq!(
            content_type.starts_with("application/vnd.kubernetes.protobuf"),
            protobuf
        );
        slice_addresses(&body, protobuf, "topo-1")
    };
    let pool_only = ["10.9.0.1", "10.9.0.2"];
    for protobuf in [true, false] {
        assert_eq!(list(protobuf), pool_only, "online, protobuf {protobuf}");
    }
    // Another client sees every endpoint.
    let (_, _, body) = support::client::request(
        "GET",
        &format!(
            "{}/apis/discovery.k8s.io/v1beta1/endpointslices",
            hub.proxy_url()
        ),
        &[("User-Agent", "kubectl/v1.20.2")],
        b"",
    );
    assert_eq!(slice_addresses(&body, false, "topo-1").len(), 3);

    bed.stop_apiserver(0);
    hub.wait_server_health(&bed.env("APISERVER_0_URL"), false, WAIT);
    for protobuf in [true, false] {
        assert_eq!(list(protobuf), pool_only, "offline, protobuf {protobuf}");
    }
}

/// What the shared-watch test compares of an event: type, object,
/// resourceVersion, labels (bookmarks left out: their timing is the
/// apiserver's).
type WatchedEvent = (String, String, String, u64, Vec<(String, String)>);

fn watch_events(watch: &support::WatchRecorder) -> Vec<WatchedEvent> {
    watch
        .events()
        .into_iter()
        .filter(|e| e.event_type != "BOOKMARK")
        .map(|e| {
            (
                e.event_type,
                e.namespace,
                e.name,
                e.resource_version,
                e.labels,
            )
        })
        .collect()
}

#[test]
#[ignore = "end to end: needs the test bed (scripts/testbed.sh install); scripts/test.sh runs it"]
fn three_clients_watching_through_the_shared_watch_see_what_direct_watches_show() {
    use support::{Encoding, WatchRecorder};
    let bed = Testbed::up(&[]);
    let admin = bed.admin_kubeconfig();
    // Kubernetes 1.20 serves EndpointSlices as discovery.k8s.io/v1beta1.
    let hub = hub_for(
        &bed,
        "ADMIN_PEM",
        &[
            "--shared-watch-resources",
            "services,endpointslices.discovery.k8s.io",
        ],
    );
    kubectl_ok(&admin, &["create", "namespace", "shared"]);
    let services = "/api/v1/services";
    let slices = "/apis/discovery.k8s.io/v1beta1/endpointslices";
    let list_rv = |path: &str| -> String {
        let (status, _, body) = support::client::request(
            "GET",
            &format!("{}{path}", hub.proxy_url()),
            &[
                ("User-Agent", "kube-proxy/v1.20.2"),
                ("Accept", "application/json"),
            ],
            b"",
        );
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let list: serde_json::Value = serde_json::from_slice(&body).unwrap();
        list["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (services_rv, slices_rv) = (list_rv(services), list_rv(slices));
    // kube-proxy (everything, JSON, bookmarks), coredns (a namespace and a
    // label, protobuf), an agent (one Service's slices, protobuf).
    let clients = [
        (
            format!("{services}?watch=true&resourceVersion={services_rv}&allowWatchBookmarks=true"),
            Encoding::Json,
            6,
        ),
        (
            format!(
                "/api/v1/namespaces/shared/services?watch=true&resourceVersion={services_rv}&labelSelector=app%3Dweb"
            ),
            Encoding::Protobuf,
            4,
        ),
        (
            format!(
                "{slices}?watch=true&resourceVersion={slices_rv}&labelSelector=kubernetes.io%2Fservice-name%3Dweb"
            ),
            Encoding::Protobuf,
            3,
        ),
    ];
    let (ca, admin_pem) = (
        PathBuf::from(bed.env("CA_FILE")),
        PathBuf::from(bed.env("ADMIN_PEM")),
    );
    let watches: Vec<(WatchRecorder, WatchRecorder)> = clients
        .iter()
        .map(|(query, encoding, _)| {
            let accept = match encoding {
                Encoding::Json => "application/json",
                Encoding::Protobuf => "application/vnd.kubernetes.protobuf",
            };
            let through_hub = WatchRecorder::start(
                &hub.proxy_url(),
                query,
                *encoding,
                &[("User-Agent", "kube-proxy/v1.20.2"), ("Accept", accept)],
                None,
            );
            let direct = WatchRecorder::start(
                &bed.env("APISERVER_0_URL"),
                query,
                *encoding,
                &[("Accept", accept)],
                Some((&ca, Some(&admin_pem))),
            );
            for watch in [&through_hub, &direct] {
                assert_eq!(
                    watch.wait_open(WAIT),
                    Some(200),
                    "{query}: {:?}",
                    watch.problem()
                );
            }
            (through_hub, direct)
        })
        .collect();

    // A 1.35 kubelet or kube-proxy lists by a streaming list, which this
    // 1.20 apiserver does not speak (it would never send the bookmark that
    // ends the initial events); the shared watch answers it.
    let streaming = WatchRecorder::start(
        &hub.proxy_url(),
        &format!(
            "{services}?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&resourceVersion=&allowWatchBookmarks=true"
        ),
        Encoding::Json,
        &[
            ("User-Agent", "kube-proxy/v1.35.0"),
            ("Accept", "application/json"),
        ],
        None,
    );
    assert!(
        streaming.wait_for(|e| e.iter().any(|e| e.initial_events_end), WAIT),
        "{:?}",
        streaming.problem()
    );
    let initial: Vec<(String, String)> = streaming
        .events()
        .iter()
        .take_while(|e| !e.initial_events_end)
        .map(|e| {
            assert_eq!(e.event_type, "ADDED");
            (e.namespace.clone(), e.name.clone())
        })
        .collect();
    let listed: serde_json::Value = serde_json::from_str(&kubectl_ok(
        &admin,
        &["get", "services", "-A", "-o", "json"],
    ))
    .unwrap();
    let mut listed: Vec<(String, String)> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let meta = &s["metadata"];
            (
                meta["namespace"].as_str().unwrap().to_string(),
                meta["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    listed.sort();
    let mut sorted = initial.clone();
    sorted.sort();
    assert_eq!(
        sorted, listed,
        "the streaming list's initial events are the Services"
    );

    let apply = |name: &str, manifest: serde_json::Value| {
        let path = bed.dir().join(name);
        std::fs::write(&path, manifest.to_string()).unwrap();
        kubectl_ok(&admin, &["apply", "-f", &path.display().to_string()]);
    };
    let service = |name: &str, app: &str| {
        serde_json::json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "shared", "labels": {"app": app}},
            "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})
    };
    let slice = |name: &str, service: &str, address: &str| {
        serde_json::json!({"apiVersion": "discovery.k8s.io/v1beta1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": "shared",
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [address], "conditions": {"ready": true}}],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]})
    };
    apply("web.json", service("web", "web"));
    apply("db.json", service("db", "db"));
    apply("web-1.json", slice("web-1", "web", "10.8.0.1"));
    apply("db-1.json", slice("db-1", "db", "10.8.0.2"));
    let label = |app: &str| {
        kubectl_ok(
            &admin,
            &[
                "-n",
                "shared",
                "label",
                "service",
                "web",
                &format!("app={app}"),
                "--overwrite",
            ],
        );
    };
    label("other");
    label("web");
    apply("web-1.json", slice("web-1", "web", "10.8.0.3"));
    for (kind, name) in [
        ("endpointslice", "web-1"),
        ("service", "db"),
        ("service", "web"),
    ] {
        kubectl_ok(&admin, &["-n", "shared", "delete", kind, name]);
    }

    for ((through_hub, direct), (query, _, least)) in watches.iter().zip(&clients) {
        let agreed = wait_until(WAIT, || {
            let theirs = watch_events(direct);
            theirs.len() >= *least && watch_events(through_hub) == theirs
        });
        assert!(
            agreed,
            "{query}\nthrough the hub: {:#?}\ndirect: {:#?}\n{:?}\n{}",
            watch_events(through_hub),
            watch_events(direct),
            through_hub.problem(),
            hub.log()
        );
    }
    // After its initial events, the streaming list goes on as the direct
    // watch of every Service does.
    let after_bookmark = |watch: &WatchRecorder| -> Vec<WatchedEvent> {
        let events = watch.events();
        let end = events.iter().position(|e| e.initial_events_end).unwrap();
        events[end + 1..]
            .iter()
            .filter(|e| e.event_type != "BOOKMARK")
            .map(|e| {
                (
                    e.event_type.clone(),
                    e.namespace.clone(),
                    e.name.clone(),
                    e.resource_version,
                    e.labels.clone(),
                )
            })
            .collect()
    };
    let all_services = &watches[0].1;
    assert!(
        wait_until(WAIT, || after_bookmark(&streaming)
            == watch_events(all_services)),
        "{:#?}\n{:#?}",
        after_bookmark(&streaming),
        watch_events(all_services)
    );
    // The coredns-like client saw web leave its selection and come back.
    let types: Vec<String> = watch_events(&watches[1].0)
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(types, ["ADDED", "DELETED", "ADDED", "DELETED"]);
    // One upstream watch per resource and encoding served them all.
    let metric = |name: &str, resource: &str, encoding: &str| {
        hub.metric(&format!(
            "node_yurthub_shared_watch_{name}{{resource=\"{resource}\",encoding=\"{encoding}\"}}"
        ))
    };
    let slices_label = "endpointslices.v1beta1.discovery.k8s.io";
    for (resource, encoding, watchers) in [
        ("services.v1", "json", 2),
        ("services.v1", "pb", 1),
        (slices_label, "pb", 1),
    ] {
        assert_eq!(
            metric("upstream_streams", resource, encoding),
            1,
            "{resource} {encoding}"
        );
        assert_eq!(
            metric("watchers", resource, encoding),
            watchers,
            "{resource} {encoding}"
        );
    }
    assert!(metric("received_bytes_total", slices_label, "pb") > 0);
}
