//! Kubernetes wire formats for the fake apiserver and the tests that read
//! its answers: JSON and protobuf objects, lists and watch events, built and
//! decoded by hand from the field numbers in k8s.io/api and apimachinery.
//!
//! Written apart from the hub's codec on purpose, so a misreading of the
//! format shows up as a disagreement instead of being shared.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// Annotation on the bookmark that ends the initial events of a streaming list.
pub const INITIAL_EVENTS_END: &str = "k8s.io/initial-events-end";
/// Prefix of every protobuf object (not of watch frames).
pub const K8S_MAGIC: &[u8; 4] = b"k8s\0";
pub const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";
pub const PROTOBUF_WATCH: &str = "application/vnd.kubernetes.protobuf;stream=watch";

/// How the fake encodes objects, lists and watch events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Json,
    Protobuf,
}

impl Encoding {
    /// `Content-Type` of a single object or list.
    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Json => "application/json",
            Encoding::Protobuf => PROTOBUF,
        }
    }
    /// The `Accept` of a client asking for this encoding (protobuf with JSON
    /// as fallback, as client-go's protobuf clients send it).
    pub fn accept(self) -> &'static str {
        match self {
            Encoding::Json => "application/json",
            Encoding::Protobuf => "application/vnd.kubernetes.protobuf,application/json",
        }
    }
    /// `Content-Type` of a watch stream, as kube-apiserver sends it.
    pub fn watch_content_type(self) -> &'static str {
        match self {
            Encoding::Json => "application/json",
            Encoding::Protobuf => PROTOBUF_WATCH,
        }
    }
    /// The list of `objects` (each as `object` builders make them) with `rv`.
    pub fn list(self, kind: &str, api_version: &str, rv: u64, objects: &[Vec<u8>]) -> Vec<u8> {
        match self {
            Encoding::Json => json_list(kind, api_version, rv, objects).into_bytes(),
            Encoding::Protobuf => pb_list(kind, api_version, rv, objects),
        }
    }
    /// One watch event: a JSON line or a length-prefixed protobuf frame.
    pub fn event(self, event_type: &str, object: &[u8]) -> Vec<u8> {
        match self {
            Encoding::Json => json_event(event_type, &String::from_utf8_lossy(object)).into_bytes(),
            Encoding::Protobuf => pb_event(event_type, object),
        }
    }
    /// A `Status` failure object, e.g. the one an `ERROR` watch event carries.
    pub fn status(self, code: u16, reason: &str, message: &str) -> Vec<u8> {
        match self {
            Encoding::Json => json_status(code, reason, message).into_bytes(),
            Encoding::Protobuf => pb_status(code, reason, message),
        }
    }
    /// The bookmark object that ends a streaming list's initial events.
    pub fn initial_events_end_bookmark(self, kind: &str, api_version: &str, rv: u64) -> Vec<u8> {
        match self {
            Encoding::Json => json_initial_events_end_bookmark(kind, api_version, rv).into_bytes(),
            Encoding::Protobuf => pb_initial_events_end_bookmark(kind, api_version, rv),
        }
    }
}

/// A UUID-shaped uid that depends only on `namespace/name`, so a test can
/// predict it.
pub fn fake_uid(namespace: &str, name: &str) -> String {
    // FNV-1a, twice with different seeds for 128 bits.
    let hash = |seed: u64| {
        let mut h = seed;
        for b in namespace.bytes().chain([b'/']).chain(name.bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100_0000_01b3);
        }
        h
    };
    let x = format!(
        "{:016x}{:016x}",
        hash(0xcbf2_9ce4_8422_2325),
        hash(0x84222325cbf29ce4)
    );
    format!(
        "{}-{}-{}-{}-{}",
        &x[0..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..32]
    )
}

// ---------------------------------------------------------------- JSON

/// One JSON watch event line, `\n`-terminated. `object` is JSON text; it is
/// kept byte for byte unless it spans lines (then it is made compact).
pub fn json_event(event_type: &str, object: &str) -> String {
    let value: Value = serde_json::from_str(object).expect("json_event: object is not JSON");
    let object = if object.contains('\n') {
        value.to_string()
    } else {
        object.trim().to_string()
    };
    format!(
        "{{\"type\":{},\"object\":{object}}}\n",
        Value::from(event_type)
    )
}

/// An object with metadata only (`namespace` empty for cluster-scoped ones).
pub fn json_object(
    kind: &str,
    api_version: &str,
    namespace: &str,
    name: &str,
    rv: u64,
    labels: &[(&str, &str)],
) -> String {
    json_object_value(kind, api_version, namespace, name, rv, labels).to_string()
}

fn json_object_value(
    kind: &str,
    api_version: &str,
    namespace: &str,
    name: &str,
    rv: u64,
    labels: &[(&str, &str)],
) -> Value {
    let mut meta = json!({
        "name": name,
        "uid": fake_uid(namespace, name),
        "resourceVersion": rv.to_string(),
        "creationTimestamp": null,
    });
    if !namespace.is_empty() {
        meta["namespace"] = json!(namespace);
    }
    if !labels.is_empty() {
        meta["labels"] = labels
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    json!({"kind": kind, "apiVersion": api_version, "metadata": meta})
}

/// A v1 Pod bound to `node_name` with one container.
pub fn json_pod(namespace: &str, name: &str, rv: u64, node_name: &str) -> String {
    let mut pod = json_object_value("Pod", "v1", namespace, name, rv, &[]);
    pod["spec"] = json!({
        "nodeName": node_name,
        "containers": [{"name": "c", "image": "busybox"}],
    });
    pod.to_string()
}

/// A bookmark object: the resource's kind with only `metadata.resourceVersion`.
pub fn json_bookmark(kind: &str, api_version: &str, rv: u64) -> String {
    json_bookmark_value(kind, api_version, rv).to_string()
}

fn json_bookmark_value(kind: &str, api_version: &str, rv: u64) -> Value {
    json!({
        "kind": kind,
        "apiVersion": api_version,
        "metadata": {"resourceVersion": rv.to_string(), "creationTimestamp": null},
    })
}

/// The bookmark object ending a streaming list's initial events (wrap it
/// with `json_event("BOOKMARK", ..)`).
pub fn json_initial_events_end_bookmark(kind: &str, api_version: &str, rv: u64) -> String {
    let mut object = json_bookmark_value(kind, api_version, rv);
    object["metadata"]["annotations"] = json!({INITIAL_EVENTS_END: "true"});
    object.to_string()
}

/// `{kind}List` of `objects` (JSON texts) at `rv`.
pub fn json_list(kind: &str, api_version: &str, rv: u64, objects: &[Vec<u8>]) -> String {
    let items: Vec<Value> = objects
        .iter()
        .map(|o| serde_json::from_slice(o).expect("json_list: item is not JSON"))
        .collect();
    json!({
        "kind": format!("{kind}List"),
        "apiVersion": api_version,
        "metadata": {"resourceVersion": rv.to_string()},
        "items": items,
    })
    .to_string()
}

/// The JSON values of a watch stream body (concatenated or line-separated);
/// `None` when it is not a sequence of whole JSON values.
pub fn json_events(body: &[u8]) -> Option<Vec<Value>> {
    serde_json::Deserializer::from_slice(body)
        .into_iter()
        .collect::<Result<_, _>>()
        .ok()
}

/// Whether a decoded JSON watch event is the initial-events-end bookmark.
pub fn json_is_initial_events_end(event: &Value) -> bool {
    event["type"] == "BOOKMARK"
        && event["object"]["metadata"]["annotations"][INITIAL_EVENTS_END] == "true"
}

/// A `Status` failure as kube-apiserver writes one without details (the
/// object of an expired watch's `ERROR` event).
pub fn json_status(code: u16, reason: &str, message: &str) -> String {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
    .to_string()
}

/// The TokenRequest body kubelet sends for a projected token of pod
/// `pod_name`/`pod_uid`.
pub fn json_token_request(
    audiences: &[&str],
    expiration_seconds: u64,
    pod_name: &str,
    pod_uid: &str,
) -> String {
    json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": null},
        "spec": {
            "audiences": audiences,
            "expirationSeconds": expiration_seconds,
            "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": pod_name, "uid": pod_uid},
        },
        "status": {"token": "", "expirationTimestamp": null},
    })
    .to_string()
}

// ------------------------------------------------------------ protobuf

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn put_bytes(out: &mut Vec<u8>, field: u32, data: &[u8]) {
    put_varint(out, u64::from(field) << 3 | 2);
    put_varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

pub fn put_uint(out: &mut Vec<u8>, field: u32, v: u64) {
    put_varint(out, u64::from(field) << 3);
    put_varint(out, v);
}

/// Map entries (key 1, value 2) in key order, as gogo-protobuf writes them.
fn put_map(out: &mut Vec<u8>, field: u32, entries: &[(&str, &str)]) {
    let mut sorted = entries.to_vec();
    sorted.sort();
    for (k, v) in sorted {
        let mut entry = Vec::new();
        put_bytes(&mut entry, 1, k.as_bytes());
        put_bytes(&mut entry, 2, v.as_bytes());
        put_bytes(out, field, &entry);
    }
}

/// ObjectMeta as a 1.2x+ apiserver marshals it: every plain string and the
/// generation written even when empty, a zero creationTimestamp as an empty
/// message, maps only when non-empty.
pub fn pb_object_meta(
    name: &str,
    namespace: &str,
    uid: &str,
    rv: &str,
    labels: &[(&str, &str)],
    annotations: &[(&str, &str)],
) -> Vec<u8> {
    let mut m = Vec::new();
    put_bytes(&mut m, 1, name.as_bytes());
    put_bytes(&mut m, 2, b""); // generateName
    put_bytes(&mut m, 3, namespace.as_bytes());
    put_bytes(&mut m, 4, b""); // selfLink
    put_bytes(&mut m, 5, uid.as_bytes());
    put_bytes(&mut m, 6, rv.as_bytes());
    put_uint(&mut m, 7, 0); // generation
    put_bytes(&mut m, 8, b""); // creationTimestamp
    put_map(&mut m, 11, labels);
    put_map(&mut m, 12, annotations);
    m
}

/// `k8s\0` + runtime.Unknown{typeMeta, raw, contentEncoding "", contentType ""}.
pub fn pb_wrap(kind: &str, api_version: &str, raw: &[u8]) -> Vec<u8> {
    let mut type_meta = Vec::new();
    put_bytes(&mut type_meta, 1, api_version.as_bytes());
    put_bytes(&mut type_meta, 2, kind.as_bytes());
    let mut out = K8S_MAGIC.to_vec();
    put_bytes(&mut out, 1, &type_meta);
    put_bytes(&mut out, 2, raw);
    put_bytes(&mut out, 3, b"");
    put_bytes(&mut out, 4, b"");
    out
}

/// One protobuf watch frame: 4-byte big-endian length, then
/// WatchEvent{1: type, 2: RawExtension{1: raw = `object`}}. `object` is a
/// whole protobuf object (with `k8s\0`).
pub fn pb_event(event_type: &str, object_with_k8s_magic: &[u8]) -> Vec<u8> {
    let mut raw_extension = Vec::new();
    put_bytes(&mut raw_extension, 1, object_with_k8s_magic);
    let mut event = Vec::new();
    put_bytes(&mut event, 1, event_type.as_bytes());
    put_bytes(&mut event, 2, &raw_extension);
    let mut frame = (event.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&event);
    frame
}

/// An object with metadata only (field 1), laid out as in the fixtures'
/// cm1.pb; `namespace` empty for cluster-scoped ones.
pub fn pb_object(
    kind: &str,
    api_version: &str,
    namespace: &str,
    name: &str,
    rv: u64,
    labels: &[(&str, &str)],
) -> Vec<u8> {
    let mut raw = Vec::new();
    let uid = fake_uid(namespace, name);
    put_bytes(
        &mut raw,
        1,
        &pb_object_meta(name, namespace, &uid, &rv.to_string(), labels, &[]),
    );
    pb_wrap(kind, api_version, &raw)
}

/// A v1 Pod bound to `node_name`: metadata, and spec (2) with one container
/// (2: {name 1, image 2}) and nodeName (10), as in the fixtures' p1.pb.
pub fn pb_pod(namespace: &str, name: &str, rv: u64, node_name: &str) -> Vec<u8> {
    let uid = fake_uid(namespace, name);
    let mut container = Vec::new();
    put_bytes(&mut container, 1, b"c");
    put_bytes(&mut container, 2, b"busybox");
    let mut spec = Vec::new();
    put_bytes(&mut spec, 2, &container);
    put_bytes(&mut spec, 10, node_name.as_bytes());
    let mut raw = Vec::new();
    put_bytes(
        &mut raw,
        1,
        &pb_object_meta(name, namespace, &uid, &rv.to_string(), &[], &[]),
    );
    put_bytes(&mut raw, 2, &spec);
    pb_wrap("Pod", "v1", &raw)
}

fn pb_bookmark_with(
    kind: &str,
    api_version: &str,
    rv: u64,
    annotations: &[(&str, &str)],
) -> Vec<u8> {
    let mut raw = Vec::new();
    put_bytes(
        &mut raw,
        1,
        &pb_object_meta("", "", "", &rv.to_string(), &[], annotations),
    );
    pb_wrap(kind, api_version, &raw)
}

/// A bookmark object: the resource's kind with only ObjectMeta (field 1)
/// carrying the resourceVersion. A real apiserver also writes the kind's
/// empty spec and status; readers of metadata skip them either way.
pub fn pb_bookmark(kind: &str, api_version: &str, rv: u64) -> Vec<u8> {
    pb_bookmark_with(kind, api_version, rv, &[])
}

/// The bookmark object ending a streaming list's initial events:
/// `pb_bookmark` plus annotation 12 {`k8s.io/initial-events-end`: `true`}
/// (wrap it with `pb_event("BOOKMARK", ..)`).
pub fn pb_initial_events_end_bookmark(kind: &str, api_version: &str, rv: u64) -> Vec<u8> {
    pb_bookmark_with(kind, api_version, rv, &[(INITIAL_EVENTS_END, "true")])
}

/// A `Status` failure without details: ListMeta (1, its strings empty),
/// status (2) `Failure`, message (3), reason (4), code (6).
pub fn pb_status(code: u16, reason: &str, message: &str) -> Vec<u8> {
    let mut list_meta = Vec::new();
    put_bytes(&mut list_meta, 1, b"");
    put_bytes(&mut list_meta, 2, b"");
    put_bytes(&mut list_meta, 3, b"");
    let mut raw = Vec::new();
    put_bytes(&mut raw, 1, &list_meta);
    put_bytes(&mut raw, 2, b"Failure");
    put_bytes(&mut raw, 3, message.as_bytes());
    put_bytes(&mut raw, 4, reason.as_bytes());
    put_uint(&mut raw, 6, u64::from(code));
    pb_wrap("Status", "v1", &raw)
}

/// `(code, reason, message)` of a protobuf `Status` object; `None` when it
/// is not one.
pub fn pb_decode_status(object: &[u8]) -> Option<(u16, String, String)> {
    let (_, kind, raw) = pb_unwrap(object)?;
    if kind != "Status" {
        return None;
    }
    let (mut code, mut reason, mut message) = (0, String::new(), String::new());
    for (field, value) in pb_fields(raw)? {
        match (field, value) {
            (3, PbValue::Bytes(s)) => message = pb_string(s)?,
            (4, PbValue::Bytes(s)) => reason = pb_string(s)?,
            (6, PbValue::Varint(v)) => code = u16::try_from(v).ok()?,
            _ => {}
        }
    }
    Some((code, reason, message))
}

/// `{kind}List` at `rv`: ListMeta{selfLink "", rv, continue ""} and the
/// items, each `objects[i]` unwrapped from its `k8s\0` + Unknown, as in the
/// fixtures' cmlist.pb.
pub fn pb_list(kind: &str, api_version: &str, rv: u64, objects: &[Vec<u8>]) -> Vec<u8> {
    let mut list_meta = Vec::new();
    put_bytes(&mut list_meta, 1, b"");
    put_bytes(&mut list_meta, 2, rv.to_string().as_bytes());
    put_bytes(&mut list_meta, 3, b"");
    let mut raw = Vec::new();
    put_bytes(&mut raw, 1, &list_meta);
    for object in objects {
        let (_, _, item) = pb_unwrap(object).expect("pb_list: item is not a protobuf object");
        put_bytes(&mut raw, 2, item);
    }
    pb_wrap(&format!("{kind}List"), api_version, &raw)
}

enum PbValue<'a> {
    Bytes(&'a [u8]),
    Varint(u64),
    /// A fixed-size number: skipped, the tests never look at one.
    Fixed,
}

fn get_varint(data: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *data.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// The fields of one message, in order; `None` when malformed.
fn pb_fields(data: &[u8]) -> Option<Vec<(u32, PbValue<'_>)>> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < data.len() {
        let key = get_varint(data, &mut pos)?;
        let field = u32::try_from(key >> 3).ok()?;
        let value = match key & 7 {
            0 => PbValue::Varint(get_varint(data, &mut pos)?),
            1 | 5 => {
                pos += if key & 7 == 1 { 8 } else { 4 };
                PbValue::Fixed
            }
            2 => {
                let len = usize::try_from(get_varint(data, &mut pos)?).ok()?;
                let end = pos.checked_add(len).filter(|e| *e <= data.len())?;
                let bytes = &data[pos..end];
                pos = end;
                PbValue::Bytes(bytes)
            }
            _ => return None,
        };
        if pos > data.len() {
            return None;
        }
        out.push((field, value));
    }
    Some(out)
}

fn pb_string(v: &[u8]) -> Option<String> {
    String::from_utf8(v.to_vec()).ok()
}

/// `(apiVersion, kind, raw)` of a `k8s\0` + Unknown object.
fn pb_unwrap(object: &[u8]) -> Option<(String, String, &[u8])> {
    let body = object.strip_prefix(K8S_MAGIC.as_slice())?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), None);
    for (field, value) in pb_fields(body)? {
        match (field, value) {
            (1, PbValue::Bytes(type_meta)) => {
                for (f, v) in pb_fields(type_meta)? {
                    match (f, v) {
                        (1, PbValue::Bytes(s)) => api_version = pb_string(s)?,
                        (2, PbValue::Bytes(s)) => kind = pb_string(s)?,
                        _ => {}
                    }
                }
            }
            (2, PbValue::Bytes(r)) => raw = Some(r),
            _ => {}
        }
    }
    Some((api_version, kind, raw?))
}

/// What the tests look at in a protobuf object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PbObject {
    /// Empty for list items (they carry no TypeMeta).
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub resource_version: String,
    /// In wire order.
    pub labels: Vec<(String, String)>,
    pub annotations: Vec<(String, String)>,
    /// `spec.nodeName` (field 2 -> 10) when the object is a Pod.
    pub node_name: Option<String>,
}

impl PbObject {
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    pub fn is_initial_events_end(&self) -> bool {
        self.annotation(INITIAL_EVENTS_END) == Some("true")
    }
}

fn pb_map_entry(entry: &[u8]) -> Option<(String, String)> {
    let (mut k, mut v) = (String::new(), String::new());
    for (f, value) in pb_fields(entry)? {
        match (f, value) {
            (1, PbValue::Bytes(s)) => k = pb_string(s)?,
            (2, PbValue::Bytes(s)) => v = pb_string(s)?,
            _ => {}
        }
    }
    Some((k, v))
}

/// Reads an object message (not wrapped): metadata and, for `kind` Pod, nodeName.
fn pb_read_raw(raw: &[u8], kind: &str) -> Option<PbObject> {
    let mut out = PbObject::default();
    for (field, value) in pb_fields(raw)? {
        let PbValue::Bytes(bytes) = value else {
            continue;
        };
        match field {
            1 => {
                for (f, v) in pb_fields(bytes)? {
                    let PbValue::Bytes(s) = v else { continue };
                    match f {
                        1 => out.name = pb_string(s)?,
                        3 => out.namespace = pb_string(s)?,
                        5 => out.uid = pb_string(s)?,
                        6 => out.resource_version = pb_string(s)?,
                        11 => out.labels.push(pb_map_entry(s)?),
                        12 => out.annotations.push(pb_map_entry(s)?),
                        _ => {}
                    }
                }
            }
            2 if kind == "Pod" => {
                for (f, v) in pb_fields(bytes)? {
                    if let (10, PbValue::Bytes(s)) = (f, v) {
                        out.node_name = Some(pb_string(s)?);
                    }
                }
            }
            _ => {}
        }
    }
    Some(out)
}

/// Decodes a `k8s\0` + Unknown object; `None` when malformed.
pub fn pb_decode(object: &[u8]) -> Option<PbObject> {
    let (api_version, kind, raw) = pb_unwrap(object)?;
    let mut out = pb_read_raw(raw, &kind)?;
    out.api_version = api_version;
    out.kind = kind;
    Some(out)
}

/// A decoded protobuf list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PbList {
    pub api_version: String,
    /// e.g. `PodList`.
    pub kind: String,
    pub resource_version: String,
    pub items: Vec<PbObject>,
}

/// Decodes a `k8s\0` + Unknown list; item kinds are taken from the list's.
pub fn pb_decode_list(body: &[u8]) -> Option<PbList> {
    let (api_version, kind, raw) = pb_unwrap(body)?;
    let item_kind = kind.strip_suffix("List").unwrap_or_default().to_string();
    let mut out = PbList {
        api_version,
        kind,
        ..PbList::default()
    };
    for (field, value) in pb_fields(raw)? {
        match (field, value) {
            (1, PbValue::Bytes(meta)) => {
                for (f, v) in pb_fields(meta)? {
                    if let (2, PbValue::Bytes(s)) = (f, v) {
                        out.resource_version = pb_string(s)?;
                    }
                }
            }
            (2, PbValue::Bytes(item)) => out.items.push(pb_read_raw(item, &item_kind)?),
            _ => {}
        }
    }
    Some(out)
}

/// Splits a protobuf watch stream into `(type, object)` per frame; `None`
/// when malformed or when it does not end on a frame boundary.
pub fn pb_frames(stream: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let event = rest.get(4..4 + len)?;
        rest = &rest[4 + len..];
        let (mut event_type, mut object) = (None, None);
        for (field, value) in pb_fields(event)? {
            match (field, value) {
                (1, PbValue::Bytes(s)) => event_type = Some(pb_string(s)?),
                (2, PbValue::Bytes(ext)) => {
                    for (f, v) in pb_fields(ext)? {
                        if let (1, PbValue::Bytes(raw)) = (f, v) {
                            object = Some(raw.to_vec());
                        }
                    }
                }
                _ => {}
            }
        }
        out.push((event_type?, object?));
    }
    Some(out)
}

// --------------------------------------------------------------- misc

/// RFC 3339 in UTC with seconds precision (`2026-01-31T23:59:59Z`), as
/// metav1.Time is written; instants before 1970 are clamped to the epoch.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Base64url without padding (the JWT alphabet).
pub fn base64url(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

/// The raw items of a `k8s\0` + Unknown list (each an object's own message).
pub fn pb_list_raw_items(body: &[u8]) -> Option<Vec<Vec<u8>>> {
    let (_, _, raw) = pb_unwrap(body)?;
    Some(
        pb_fields(raw)?
            .into_iter()
            .filter_map(|(field, value)| match (field, value) {
                (2, PbValue::Bytes(item)) => Some(item.to_vec()),
                _ => None,
            })
            .collect(),
    )
}

/// The string at a path of field numbers in a message (the last
/// occurrence of each field), e.g. `[2, 3]` for a Service's spec.clusterIP.
pub fn pb_string_at(message: &[u8], path: &[u32]) -> Option<String> {
    let (last, parents) = path.split_last()?;
    let mut at = message;
    for number in parents {
        at = pb_fields(at)?
            .into_iter()
            .rev()
            .find_map(|(f, v)| match v {
                PbValue::Bytes(b) if f == *number => Some(b),
                _ => None,
            })?;
    }
    pb_fields(at)?.into_iter().rev().find_map(|(f, v)| match v {
        PbValue::Bytes(b) if f == *last => pb_string(b),
        _ => None,
    })
}

/// In each occurrence of message field `field` of `message`, the string
/// field `inner` (e.g. the nodeName of each endpoint of an EndpointSlice).
pub fn pb_strings_of_messages(message: &[u8], field: u32, inner: u32) -> Vec<String> {
    pb_fields(message)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(f, v)| match v {
            PbValue::Bytes(b) if f == field => pb_string_at(b, &[inner]),
            _ => None,
        })
        .collect()
}
