//! Client certificates: following kubelet's rotation of its certificate file
//! under a running hub, and reporting a bad one without failing requests.

mod support;

use std::path::Path;
use std::time::Duration;

use support::client;
use support::{Behaviour, FakeApiserver, Hub, TestPki, wait_until};

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
    hub.expect_log("client certificate", WAIT);

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
