//! Client certificates: following kubelet's rotation of its certificate file
//! under a running hub, and reporting a bad one without failing requests.

use std::path::Path;
use std::time::Duration;

use crate::support::{self, client};
use crate::support::{Behaviour, FakeApiserver, Hub, TestPki, wait_until};

const WAIT: Duration = Duration::from_secs(15);

/// Points `link` at `target` atomically, as kubelet does when it rotates.
fn repoint(link: &Path, target: &Path) {
    let temp = link.with_extension("new");
    let _ = std::fs::remove_file(&temp);
    std::os::unix::fs::symlink(target, &temp).unwrap();
    std::fs::rename(&temp, link).unwrap();
}

#[test]
fn a_rotated_client_certificate_is_used_without_a_restart_or_a_failed_request() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    fake.route(
        "GET",
        "/api/v1/nodes/edge-1",
        Behaviour::ok_json(r#"{"kind":"Node"}"#),
    );
    let (first, _) = pki.issue_client_pem(
        "kubelet-client-2026-01.pem",
        "system:node:edge-1",
        &["system:nodes"],
    );
    let (second, _) = pki.issue_client_pem(
        "kubelet-client-2026-02.pem",
        "system:node:edge-1-rotated",
        &["system:nodes"],
    );
    let current = pki.dir().join("kubelet-client-current.pem");
    repoint(&current, &first);
    let mut args = Hub::args_for(&[&fake], &pki);
    args.extend([
        "--kubelet-client-certificate".into(),
        current.display().to_string(),
    ]);
    let hub = Hub::start(&args);
    let url = format!("{}/api/v1/nodes/edge-1", hub.proxy_url());
    assert_eq!(client::get(&url).0, 200);
    let cn_of_last = || {
        fake.requests_to("/api/v1/nodes/edge-1")
            .last()
            .and_then(|r| r.client_cert_cn.clone())
    };
    assert_eq!(cn_of_last().as_deref(), Some("system:node:edge-1"));

    repoint(&current, &second);
    let mut statuses = Vec::new();
    assert!(
        wait_until(WAIT, || {
            statuses.push(client::get(&url).0);
            cn_of_last().as_deref() == Some("system:node:edge-1-rotated")
        }),
        "the rotated certificate was never presented\n{}",
        hub.log()
    );
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    hub.expect_log("now CN \"system:node:edge-1-rotated\"", WAIT);

    // A broken file is reported; the last good identity keeps working.
    std::fs::write(
        pki.dir().join("broken.pem"),
        b"-----BEGIN CERTIFICATE-----\ngarbage\n",
    )
    .unwrap();
    repoint(&current, &pki.dir().join("broken.pem"));
    hub.expect_log("keeping the previous client certificate", WAIT);
    assert_eq!(client::get(&url).0, 200);
    assert_eq!(cn_of_last().as_deref(), Some("system:node:edge-1-rotated"));
    let (status, _, body) = client::get(&format!("{}/v1/readyz", hub.serve_url()));
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("broken.pem") || body.contains("kubelet-client-current.pem"),
        "{body}"
    );
}

#[test]
fn a_missing_certificate_is_a_readyz_reason_and_the_cache_still_serves() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    let mut args = Hub::args_for(&[&fake], &pki);
    args.extend([
        "--kubelet-client-certificate".into(),
        "/nonexistent/client.pem".into(),
    ]);
    let hub = Hub::start(&args);
    hub.expect_log(
        "cannot read client certificate /nonexistent/client.pem",
        WAIT,
    );
    let (status, _, body) = client::get(&format!("{}/v1/readyz", hub.serve_url()));
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 200, "edge mode can serve from its cache: {body}");
    assert!(body.contains("/nonexistent/client.pem"), "{body}");
}

#[test]
fn pods_reach_the_apiserver_over_the_secure_port_with_their_own_token() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    fake.route(
        "GET",
        "/api/v1/namespaces/default/pods",
        Behaviour::ok_json(r#"{"kind":"PodList","items":[]}"#),
    );
    let secure_port = support::free_port();
    let mut args = Hub::args_for(&[&fake], &pki);
    args.extend([
        "--proxy-secure-port".into(),
        secure_port.to_string(),
        "--tls-cert-file".into(),
        pki.server_cert_path().display().to_string(),
        "--tls-private-key-file".into(),
        pki.server_key_path().display().to_string(),
    ]);
    let hub = Hub::start(&args);
    hub.expect_log("secure proxy listening on https://", WAIT);
    let agent = client::tls_agent(&pki.ca_path(), None);
    let url = format!("https://127.0.0.1:{secure_port}/api/v1/namespaces/default/pods");
    let (status, _, body) = client::request_with(
        &agent,
        "GET",
        &url,
        &[("Authorization", "Bearer pod-sa-token")],
        &[],
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let seen = fake.requests_to("/api/v1/namespaces/default/pods");
    assert_eq!(seen[0].header("authorization"), Some("Bearer pod-sa-token"));
    assert_eq!(
        seen[0].client_cert_cn, None,
        "the pod's own identity, not the node's"
    );
    // Plain HTTP on the TLS port is refused, and the hub stays up.
    let plain = client::try_request(
        "GET",
        &format!("http://127.0.0.1:{secure_port}/api"),
        &[],
        &[],
    );
    assert!(plain.is_err() || plain.is_ok_and(|r| r.0 >= 400));
    assert_eq!(
        client::request_with(&agent, "GET", &url, &[("Authorization", "Bearer t")], &[]).0,
        200
    );
    let metrics = hub.metrics();
    assert!(
        metrics.contains("node_yurthub_open_connections{listener=\"proxy-secure\"}"),
        "{metrics}"
    );
}

#[test]
fn a_serving_key_without_a_certificate_is_a_flag_error() {
    let output = std::process::Command::new(Hub::binary())
        .args([
            "--server-addr",
            "https://127.0.0.1:1",
            "--tls-private-key-file",
            "/x.key",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--tls-cert-file"));
}
