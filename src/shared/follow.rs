//! `yh-shared-watch`: one per shared resource and encoding. Lists the whole
//! resource (all namespaces, no selector; compressed when the apiserver
//! compresses), then watches it from the list's resourceVersion with
//! bookmarks, resumes from the last version seen after a break, and lists
//! again when the apiserver says that version is gone (410). A stream
//! from an apiserver marked unhealthy is left for the next healthy one.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Shared;
use super::state::Object;
use crate::codec::edit::{Opened, key};
use crate::codec::gzip::Gunzip;
use crate::codec::{Encoding, EventType};
use crate::health::Health;
use crate::upstream::{self, Deadline, Outgoing, Upstream};

/// Largest list read for a shared state (decompressed).
const MAX_LIST_BYTES: usize = 256 * 1024 * 1024;
/// Watches failing in a row before the state lists again.
const MAX_FAILED_WATCHES: u32 = 3;
/// What is read of a failed list's answer (its Status).
const FAILURE_BODY: u64 = 64 * 1024;
/// A list may take this long (a big list on a slow link).
const LIST_TIMEOUT: Duration = Duration::from_secs(300);
/// Upstream watches are renewed after 5 to 10 minutes, as client-go's
/// reflectors do (spread so that nodes do not renew together).
const WATCH_SECONDS: (u64, u64) = (300, 600);
/// Wait after a failure, doubled up to `MAX_BACKOFF`.
const BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Least time between two watches (an apiserver or a load balancer that
/// ends them at once must not make the thread spin).
const WATCH_INTERVAL: Duration = Duration::from_secs(1);
/// Least time between two warnings (a 403 needs an operator, not a log
/// line every 30 s).
const WARN_INTERVAL: Duration = Duration::from_secs(300);

/// How often a busy follower asks whether its state is still used.
const IDLE_CHECK: Duration = Duration::from_secs(10);

/// `retire(state, at_once)` retires the state if nobody uses it, or at
/// once when the apiserver does not serve it (true: the thread ends).
pub fn start(
    shared: Arc<Shared>,
    upstream: Arc<Upstream>,
    retire: impl Fn(&Shared, bool) -> bool + Send + 'static,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("yh-shared-watch".into())
        .spawn(move || run(&shared, &upstream, &retire))?;
    Ok(())
}

/// Why a watch ended.
enum Ended {
    /// Cleanly, or broken: resume from the last version seen.
    Resume,
    /// The version is gone: list again.
    Gone,
    /// A failure worth a pause: the apiserver could not be reached, or is
    /// busy (429, 5xx); the watch resumes once it answers.
    Unavailable(String),
    /// A failure worth a pause that says the state may be falling behind:
    /// the apiserver refused the watch (401, 403, another 4xx), sent an
    /// ERROR event, or a stream the hub cannot read.
    Failed(String),
    /// Nobody uses the state any more.
    Retired,
}

fn run(shared: &Shared, upstream: &Upstream, retire: &dyn Fn(&Shared, bool) -> bool) {
    let mut backoff = BACKOFF;
    // None: list first; "" after a 410 (a consistent read), "0" at first
    // (any version: the apiserver answers from its watch cache).
    let mut list_from: Option<&str> = Some("0");
    let mut last_watch: Option<Instant> = None;
    let mut failed_watches = 0;
    let mut warned: Option<Instant> = None;
    let mut warn = |what: String| {
        if warned.is_none_or(|at| at.elapsed() >= WARN_INTERVAL) {
            warned = Some(Instant::now());
            log::warn!("shared watch of {}: {what}", shared.label);
        } else {
            log::debug!("shared watch of {}: {what}", shared.label);
        }
    };
    loop {
        if retire(shared, false) {
            return;
        }
        // A server not yet judged is used, as for any request.
        let Some(server) = upstream.pick() else {
            let seen = upstream.health.generation();
            upstream.health.wait_change(seen, Duration::from_secs(5));
            continue;
        };
        if let Some(from) = list_from {
            match list(shared, upstream, server, from) {
                Ok(()) => {
                    list_from = None;
                    backoff = BACKOFF;
                    failed_watches = 0;
                }
                // Not a resource or version this apiserver serves (a made-up
                // version in a request, a CRD removed): forgotten now.
                Err((Some(404), e)) => {
                    log::info!("shared watch of {}: {e}, not served; stopped", shared.label);
                    retire(shared, true);
                    return;
                }
                Err((_, e)) => {
                    warn(format!("list failed: {e} (requests are forwarded)"));
                    shared.update(|_| shared.failing.store(true, Ordering::Relaxed));
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            }
        }
        if let Some(wait) = last_watch.map(|at| WATCH_INTERVAL.saturating_sub(at.elapsed())) {
            std::thread::sleep(wait);
        }
        last_watch = Some(Instant::now());
        shared.streams_open.fetch_add(1, Ordering::Relaxed);
        let ended = watch(shared, upstream, server, retire);
        shared.streams_open.fetch_sub(1, Ordering::Relaxed);
        match ended {
            Ended::Retired => return,
            Ended::Resume => {
                backoff = BACKOFF;
                failed_watches = 0;
            }
            Ended::Gone => {
                log::info!(
                    "shared watch of {}: the apiserver no longer has its version, listing again",
                    shared.label
                );
                relist(shared, &mut list_from);
            }
            Ended::Unavailable(e) => {
                warn(e);
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Ended::Failed(e) => {
                warn(e);
                failed_watches += 1;
                // A watch that keeps failing (a 403 after an RBAC change, an
                // event it cannot read) leaves the state behind the cloud:
                // requests go to the apiserver until a list succeeds again.
                if failed_watches >= MAX_FAILED_WATCHES {
                    failed_watches = 0;
                    relist(shared, &mut list_from);
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// The state is behind the cloud until a list (a consistent read) succeeds:
/// requests are forwarded meanwhile.
fn relist(shared: &Shared, list_from: &mut Option<&str>) {
    shared.relists.fetch_add(1, Ordering::Relaxed);
    shared.update(|_| shared.failing.store(true, Ordering::Relaxed));
    *list_from = Some("");
}

fn headers(encoding: Encoding, gzip: bool) -> Vec<(String, String)> {
    let mut headers = vec![
        ("Accept".to_string(), encoding.content_type().to_string()),
        ("User-Agent".to_string(), "yurthub/shared-watch".to_string()),
    ];
    if gzip {
        headers.push(("Accept-Encoding".to_string(), "gzip".to_string()));
    }
    headers
}

/// Lists the whole resource into the state.
/// Why a list failed: the apiserver's status when it answered one.
type ListFailure = (Option<u16>, String);

fn list(
    shared: &Shared,
    upstream: &Upstream,
    server: usize,
    from: &str,
) -> Result<(), ListFailure> {
    let failed = |message: String| (None, message);
    let target = format!("{}?resourceVersion={from}", shared.path);
    let headers = headers(shared.encoding, true);
    let outgoing = Outgoing {
        method: "GET",
        target: &target,
        headers: &headers,
        body: None,
        deadline: Deadline::Within(LIST_TIMEOUT),
        with_client_cert: true,
        connect_timeout: None,
    };
    let response = upstream
        .send(server, outgoing)
        .map_err(|e| failed(e.to_string()))?;
    let content_type = response.header("content-type").unwrap_or("").to_string();
    let readable = Encoding::from_content_type(&content_type) == Some(shared.encoding);
    if response.status != 200 || !readable {
        // What it says, read (bounded) and counted: those bytes came too.
        let status = response.status;
        let mut said = Vec::new();
        let _ = response
            .into_reader()
            .take(FAILURE_BODY)
            .read_to_end(&mut said);
        shared
            .received_bytes
            .fetch_add(said.len() as u64, Ordering::Relaxed);
        let message = serde_json::from_slice::<serde_json::Value>(&said)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or_default();
        return Err(if status != 200 {
            (Some(status), format!("status {status} {message}"))
        } else {
            failed(format!("the apiserver answered in {content_type:?}"))
        });
    }
    let gzip = response
        .header("content-encoding")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("gzip"));
    let mut gunzip = gzip.then(|| Gunzip::new(MAX_LIST_BYTES));
    let mut reader = response.into_reader();
    let mut body = Vec::new();
    let mut buffer = vec![0; 64 * 1024];
    loop {
        let n = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if upstream::is_quiet_stream(&e) => continue,
            Err(e) => return Err(failed(format!("reading the list: {e}"))),
        };
        shared.received_bytes.fetch_add(n as u64, Ordering::Relaxed);
        match gunzip.as_mut() {
            Some(gunzip) => body.extend(
                gunzip
                    .push(&buffer[..n])
                    .map_err(|e| failed(e.to_string()))?,
            ),
            None => body.extend_from_slice(&buffer[..n]),
        }
        if body.len() > MAX_LIST_BYTES {
            return Err(failed(format!(
                "the list is larger than {MAX_LIST_BYTES} bytes"
            )));
        }
    }
    if let Some(gunzip) = &gunzip {
        gunzip.finish().map_err(|e| failed(e.to_string()))?;
    }
    let parts = shared
        .encoding
        .split_list(&body)
        .map_err(|e| failed(format!("unreadable list: {e}")))?;
    drop(body);
    let resource_version: u64 = parts
        .resource_version
        .parse()
        .map_err(|_| failed(format!("list resourceVersion {:?}", parts.resource_version)))?;
    let mut items = Vec::with_capacity(parts.items.len());
    for item in &parts.items {
        let meta = shared
            .encoding
            .decode_meta(item)
            .map_err(|e| failed(format!("unreadable item: {e}")))?;
        items.push(Object::new(meta, item));
    }
    let count = items.len();
    let kind = parts
        .kind
        .strip_suffix("List")
        .unwrap_or(&parts.kind)
        .to_string();
    let encoding = shared.encoding;
    shared.update(|state| {
        let relisted = state.synced();
        state.kind = kind;
        state.api_version = parts.api_version.clone();
        state.replace(items, resource_version);
        if relisted {
            // Open watches got the difference as changes at the list's
            // version; a bookmark lands clients that take them on it.
            let at = state.resource_version();
            let bookmark =
                encoding.bookmark(&state.kind, &state.api_version, &at.to_string(), false);
            if let Ok(meta) = encoding.decode_meta(&bookmark) {
                state.bookmark(at, Object::new(meta, &bookmark));
            }
        }
        // Ready again, under the lock waiting requests check it with.
        shared.failing.store(false, Ordering::Relaxed);
    });
    log::info!(
        "shared watch of {}: {count} objects listed at {resource_version}",
        shared.label
    );
    Ok(())
}

/// Watches from the state's resourceVersion until the stream ends.
fn watch(
    shared: &Shared,
    upstream: &Upstream,
    server: usize,
    retire: &dyn Fn(&Shared, bool) -> bool,
) -> Ended {
    let from = shared.resource_version();
    let spread = WATCH_SECONDS.1 - WATCH_SECONDS.0;
    let seconds = WATCH_SECONDS.0 + u64::from(std::process::id()).wrapping_add(from) % spread;
    let target = format!(
        "{}?watch=true&allowWatchBookmarks=true&resourceVersion={from}&timeoutSeconds={seconds}",
        shared.path
    );
    let headers = headers(shared.encoding, false);
    let outgoing = Outgoing {
        method: "GET",
        target: &target,
        headers: &headers,
        body: None,
        deadline: Deadline::Stream,
        with_client_cert: true,
        connect_timeout: None,
    };
    let response = match upstream.send(server, outgoing) {
        Ok(response) => response,
        Err(e) => return Ended::Unavailable(format!("watch: {e}")),
    };
    match response.status {
        200 => {}
        410 => return Ended::Gone,
        status @ (429 | 500..) => return Ended::Unavailable(format!("watch: status {status}")),
        status => return Ended::Failed(format!("watch: status {status}")),
    }
    let encoding = shared.encoding;
    let mut reader = response.into_reader();
    let mut decoder = encoding.watch_decoder();
    let mut buffer = vec![0; 64 * 1024];
    let mut checked = Instant::now();
    loop {
        if checked.elapsed() >= IDLE_CHECK {
            checked = Instant::now();
            if retire(shared, false) {
                return Ended::Retired;
            }
        }
        let n = match reader.read(&mut buffer) {
            Ok(0) => return Ended::Resume,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if upstream::is_quiet_stream(&e) => {
                if upstream.health.get(server) == Health::Unhealthy {
                    log::info!(
                        "shared watch of {}: its apiserver is marked unhealthy, resuming elsewhere",
                        shared.label
                    );
                    return Ended::Resume;
                }
                continue;
            }
            Err(e) => {
                log::debug!("shared watch of {}: stream broke off: {e}", shared.label);
                return Ended::Resume;
            }
        };
        shared.received_bytes.fetch_add(n as u64, Ordering::Relaxed);
        let events = match decoder.push(&buffer[..n]) {
            Ok(events) => events,
            Err(e) => return Ended::Failed(format!("unreadable watch stream: {e}")),
        };
        let mut objects = Vec::with_capacity(events.len());
        for event in events {
            if event.event_type == EventType::Error {
                let code = Opened::open(encoding, &event.object)
                    .ok()
                    .and_then(|o| o.object.int_at(&[key("code", 6)]));
                if code == Some(410) {
                    apply(shared, objects);
                    return Ended::Gone;
                }
                apply(shared, objects);
                return Ended::Failed(format!("watch ERROR event (code {code:?})"));
            }
            match encoding.decode_meta(&event.object) {
                Ok(meta) => objects.push((event.event_type, Object::new(meta, &event.object))),
                Err(e) => return Ended::Failed(format!("unreadable watch event: {e}")),
            }
        }
        apply(shared, objects);
    }
}

/// Applies the events of one read at once (one wake-up of local watches).
fn apply(shared: &Shared, events: Vec<(EventType, Object)>) {
    if events.is_empty() {
        return;
    }
    shared.update(|state| {
        for (event_type, object) in events {
            if event_type == EventType::Bookmark {
                let rv = object.resource_version;
                state.bookmark(rv, object);
            } else {
                state.apply(event_type, object);
            }
        }
    });
}
