//! The Kubernetes protobuf encoding, read without schemas from the wire format
//! (what kubelet, kube-proxy and every client-go program ask for).
//!
//! An object on the wire is the magic `k8s\0` and a `runtime.Unknown`:
//! field 1 TypeMeta (apiVersion 1, kind 2), field 2 the object's own message,
//! fields 3 and 4 content encoding and type. Every object message has
//! ObjectMeta as field 1 (name 1, namespace 3, uid 5, resourceVersion 6,
//! labels 11 as map entries); every list message has ListMeta as field 1
//! (resourceVersion 2, continue 3) and its items, bare, as repeated field 2.
//! A watch stream is frames of a 4-byte big-endian length and a `WatchEvent`
//! (type 1, object 2 = RawExtension whose field 1 holds an enveloped object).
//! Checked against kube-apiserver 1.20; captured samples are test fixtures.

use std::collections::BTreeMap;

use super::pieces::{Pieces, range_within};
use super::{
    CodecError, EventType, ListParts, MAX_OBJECT_BYTES, ObjectMeta, WatchDecoder, WatchEvent,
};

pub const MAGIC: &[u8] = b"k8s\0";

pub(super) fn invalid(what: &str) -> CodecError {
    CodecError(format!("invalid protobuf: {what}"))
}

/// One field of a message: its number and, for length-delimited fields, the bytes.
pub(super) struct Field<'a> {
    pub(super) number: u64,
    /// The whole field as it was read, tag included (copied as is when kept).
    pub(super) raw: &'a [u8],
    /// Length-delimited payload; `None` for varint and fixed-width fields.
    pub(super) bytes: Option<&'a [u8]>,
    /// A varint field's value (0 for the others).
    pub(super) varint: u64,
}

fn read_varint(bytes: &[u8], pos: &mut usize) -> Result<u64, CodecError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*pos).ok_or_else(|| invalid("truncated varint"))?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(invalid("varint too long"))
}

/// The fields of a message, in order; fails on any malformed field.
pub(super) fn fields(message: &[u8]) -> Result<Vec<Field<'_>>, CodecError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < message.len() {
        let start = pos;
        let key = read_varint(message, &mut pos)?;
        let (number, wire_type) = (key >> 3, key & 7);
        if number == 0 {
            return Err(invalid("field number 0"));
        }
        let mut varint = 0;
        let bytes = match wire_type {
            0 => {
                varint = read_varint(message, &mut pos)?;
                None
            }
            1 | 5 => {
                let width = if wire_type == 1 { 8 } else { 4 };
                if message.len() - pos < width {
                    return Err(invalid("truncated fixed-width field"));
                }
                pos += width;
                None
            }
            2 => {
                let len = usize::try_from(read_varint(message, &mut pos)?)
                    .map_err(|_| invalid("length"))?;
                if message.len() - pos < len {
                    return Err(invalid("length beyond the message"));
                }
                let slice = &message[pos..pos + len];
                pos += len;
                Some(slice)
            }
            _ => return Err(invalid("unsupported wire type")),
        };
        out.push(Field {
            number,
            raw: &message[start..pos],
            bytes,
            varint,
        });
    }
    Ok(out)
}

/// The last occurrence of a length-delimited field (protobuf's merge rule).
fn field<'a>(fields: &[Field<'a>], number: u64) -> Option<&'a [u8]> {
    fields
        .iter()
        .rev()
        .find(|f| f.number == number)
        .and_then(|f| f.bytes)
}

fn string(fields: &[Field<'_>], number: u64) -> Result<String, CodecError> {
    match field(fields, number) {
        Some(bytes) => {
            String::from_utf8(bytes.to_vec()).map_err(|_| invalid("string is not UTF-8"))
        }
        None => Ok(String::new()),
    }
}

pub(super) fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn varint_len(mut value: u64) -> usize {
    let mut len = 1;
    while value >= 0x80 {
        value >>= 7;
        len += 1;
    }
    len
}

/// The tag and length of a length-delimited field, its bytes to follow.
pub(super) fn put_prefix(out: &mut Vec<u8>, number: u64, len: usize) {
    put_varint(out, number << 3 | 2);
    put_varint(out, len as u64);
}

pub(super) fn put_bytes(out: &mut Vec<u8>, number: u64, bytes: &[u8]) {
    put_prefix(out, number, bytes.len());
    out.extend_from_slice(bytes);
}

/// Bytes of a length-delimited field of `len` bytes, tag and length included.
fn field_len(number: u64, len: usize) -> usize {
    varint_len(number << 3 | 2) + varint_len(len as u64) + len
}

/// The envelope of an object: type and the object's own message.
pub(super) struct Envelope<'a> {
    pub(super) api_version: String,
    pub(super) kind: String,
    pub(super) raw: &'a [u8],
}

pub(super) fn open_envelope(bytes: &[u8]) -> Result<Envelope<'_>, CodecError> {
    let body = bytes
        .strip_prefix(MAGIC)
        .ok_or_else(|| invalid("missing k8s magic"))?;
    let unknown = fields(body)?;
    let type_meta = fields(field(&unknown, 1).unwrap_or_default())?;
    Ok(Envelope {
        api_version: string(&type_meta, 1)?,
        kind: string(&type_meta, 2)?,
        raw: field(&unknown, 2).unwrap_or_default(),
    })
}

/// What comes before an object's message of `raw_len` bytes in its envelope.
fn envelope_head(api_version: &str, kind: &str, raw_len: usize) -> Vec<u8> {
    let mut type_meta = Vec::new();
    put_bytes(&mut type_meta, 1, api_version.as_bytes());
    put_bytes(&mut type_meta, 2, kind.as_bytes());
    let mut out = Vec::with_capacity(type_meta.len() + 32);
    out.extend_from_slice(MAGIC);
    put_bytes(&mut out, 1, &type_meta);
    put_prefix(&mut out, 2, raw_len);
    out
}

/// What follows the object's message: empty content encoding and type.
fn envelope_tail() -> Vec<u8> {
    let mut out = Vec::with_capacity(4);
    put_bytes(&mut out, 3, b"");
    put_bytes(&mut out, 4, b"");
    out
}

/// Wraps an object's message as the apiserver does for a get.
pub(super) fn seal_envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
    let mut out = envelope_head(api_version, kind, raw.len());
    out.extend_from_slice(raw);
    out.extend_from_slice(&envelope_tail());
    out
}

fn decode_object_meta(raw: &[u8], envelope: &Envelope<'_>) -> Result<ObjectMeta, CodecError> {
    let object = fields(raw)?;
    let meta = fields(field(&object, 1).unwrap_or_default())?;
    let mut labels = BTreeMap::new();
    for entry in meta.iter().filter(|f| f.number == 11) {
        let entry = fields(entry.bytes.ok_or_else(|| invalid("label entry"))?)?;
        labels.insert(string(&entry, 1)?, string(&entry, 2)?);
    }
    Ok(ObjectMeta {
        kind: envelope.kind.clone(),
        api_version: envelope.api_version.clone(),
        name: string(&meta, 1)?,
        namespace: string(&meta, 3)?,
        resource_version: string(&meta, 6)?.parse().unwrap_or(0),
        uid: string(&meta, 5)?,
        labels,
    })
}

pub fn decode_meta(bytes: &[u8]) -> Result<ObjectMeta, CodecError> {
    let envelope = open_envelope(bytes)?;
    decode_object_meta(envelope.raw, &envelope)
}

pub fn split_list(bytes: &[u8]) -> Result<ListParts, CodecError> {
    let envelope = open_envelope(bytes)?;
    if !envelope.kind.ends_with("List") {
        return Err(CodecError(format!("not a list: kind {:?}", envelope.kind)));
    }
    let list = fields(envelope.raw)?;
    let list_meta = fields(field(&list, 1).unwrap_or_default())?;
    let item_kind = envelope.kind.trim_end_matches("List");
    let mut items = Vec::new();
    for item in list.iter().filter(|f| f.number == 2) {
        let raw = item.bytes.ok_or_else(|| invalid("list item"))?;
        // Each item must at least carry readable metadata.
        decode_object_meta(raw, &envelope)?;
        items.push(seal_envelope(&envelope.api_version, item_kind, raw));
    }
    Ok(ListParts {
        kind: envelope.kind.clone(),
        api_version: envelope.api_version.clone(),
        resource_version: string(&list_meta, 2)?,
        continue_token: string(&list_meta, 3)?,
        items,
    })
}

/// A list's `metadata.resourceVersion` (ListMeta field 2), its items not
/// taken apart.
pub fn list_resource_version(bytes: &[u8]) -> Option<String> {
    let envelope = open_envelope(bytes).ok()?;
    let list = fields(envelope.raw).ok()?;
    let list_meta = fields(field(&list, 1).unwrap_or_default()).ok()?;
    string(&list_meta, 2).ok()
}

/// A list built from enveloped items (items that cannot be opened are skipped).
pub fn encode_list<T: AsRef<[u8]>>(
    kind: &str,
    api_version: &str,
    resource_version: &str,
    items: Vec<T>,
) -> Pieces<T> {
    let mut list_meta = Vec::new();
    put_bytes(&mut list_meta, 1, b"");
    put_bytes(&mut list_meta, 2, resource_version.as_bytes());
    put_bytes(&mut list_meta, 3, b"");
    // Each item's own message, bare, as the list holds it (an item that is
    // not an enveloped object is left out).
    let raws: Vec<_> = items
        .iter()
        .map(|item| {
            let item = item.as_ref();
            open_envelope(item)
                .ok()
                .map(|envelope| range_within(item, envelope.raw))
        })
        .collect();
    let raw_len = field_len(1, list_meta.len())
        + raws
            .iter()
            .flatten()
            .map(|raw| field_len(2, raw.len()))
            .sum::<usize>();
    let mut pieces = Pieces::new(items);
    pieces.frame(&envelope_head(api_version, kind, raw_len));
    let mut prefix = Vec::with_capacity(16);
    put_bytes(&mut prefix, 1, &list_meta);
    pieces.frame(&prefix);
    for (index, raw) in raws.into_iter().enumerate() {
        let Some(raw) = raw else { continue };
        prefix.clear();
        put_prefix(&mut prefix, 2, raw.len());
        pieces.frame(&prefix);
        pieces.item(index, raw);
    }
    pieces.frame(&envelope_tail());
    pieces
}

/// The fields a field selector can use from a protobuf object, as JSON:
/// metadata name, namespace and labels, and a pod's `spec.nodeName`.
pub fn to_value(bytes: &[u8]) -> Result<serde_json::Value, CodecError> {
    let envelope = open_envelope(bytes)?;
    let meta = decode_object_meta(envelope.raw, &envelope)?;
    let mut value = serde_json::json!({
        "kind": meta.kind,
        "apiVersion": meta.api_version,
        "metadata": { "name": meta.name, "namespace": meta.namespace, "labels": meta.labels },
    });
    if envelope.kind == "Pod" {
        let object = fields(envelope.raw)?;
        let spec = fields(field(&object, 2).unwrap_or_default())?;
        value["spec"] = serde_json::json!({ "nodeName": string(&spec, 10)? });
    }
    Ok(value)
}

/// Field paths `to_value` can answer.
pub fn readable_field(path: &str) -> bool {
    matches!(
        path,
        "metadata.name" | "metadata.namespace" | "spec.nodeName"
    )
}

/// A TokenRequest body (`authentication.k8s.io/v1`): spec = 2 with audiences 1
/// (repeated), boundObjectRef 3 (kind 1, apiVersion 2, name 3, uid 4).
pub fn token_request_spec(bytes: &[u8]) -> Result<super::token::TokenSpec, CodecError> {
    let envelope = open_envelope(bytes)?;
    let request = fields(envelope.raw)?;
    let spec = fields(field(&request, 2).unwrap_or_default())?;
    let audiences = spec
        .iter()
        .filter(|f| f.number == 1)
        .map(|f| {
            String::from_utf8(f.bytes.unwrap_or_default().to_vec())
                .map_err(|_| invalid("audience is not UTF-8"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let bound = match field(&spec, 3) {
        Some(reference) => {
            let reference = fields(reference)?;
            Some(super::token::BoundObject {
                kind: string(&reference, 1)?,
                api_version: string(&reference, 2)?,
                name: string(&reference, 3)?,
                uid: string(&reference, 4)?,
            })
        }
        None => None,
    };
    Ok(super::token::TokenSpec::new(audiences, bound))
}

/// An issued TokenRequest's expiry (status = 3: token 1, expirationTimestamp 2
/// = Time{seconds 1}), in Unix seconds; an error when it carries no token.
pub fn token_expiry(bytes: &[u8]) -> Result<i64, CodecError> {
    let envelope = open_envelope(bytes)?;
    let request = fields(envelope.raw)?;
    let status = fields(field(&request, 3).unwrap_or_default())?;
    if string(&status, 1)?.is_empty() {
        return Err(invalid("TokenRequest without status.token"));
    }
    let time = fields(field(&status, 2).unwrap_or_default())?;
    let seconds = time
        .iter()
        .rev()
        .find(|f| f.number == 1 && f.bytes.is_none())
        .map(|f| f.varint as i64)
        .ok_or_else(|| invalid("TokenRequest without status.expirationTimestamp"))?;
    Ok(seconds)
}

/// One annotation of an object (ObjectMeta field 12, map entries), if present.
pub fn annotation(bytes: &[u8], key: &str) -> Option<String> {
    let envelope = open_envelope(bytes).ok()?;
    let object = fields(envelope.raw).ok()?;
    let meta = fields(field(&object, 1).unwrap_or_default()).ok()?;
    meta.iter()
        .filter(|f| f.number == 12)
        .filter_map(|entry| fields(entry.bytes?).ok())
        .filter(|entry| string(entry, 1).is_ok_and(|k| k == key))
        .find_map(|entry| string(&entry, 2).ok())
}

/// An object of `kind` with only metadata: resourceVersion and the
/// `k8s.io/initial-events-end` annotation (what kube-apiserver sends).
/// A bookmark's object: the kind with only `resourceVersion` (and the
/// annotation ending a streaming list's initial events, if asked).
pub fn bookmark(
    kind: &str,
    api_version: &str,
    resource_version: &str,
    initial_events_end: bool,
) -> Vec<u8> {
    let mut meta = Vec::new();
    put_bytes(&mut meta, 6, resource_version.as_bytes());
    if initial_events_end {
        let mut entry = Vec::new();
        put_bytes(&mut entry, 1, super::INITIAL_EVENTS_END.as_bytes());
        put_bytes(&mut entry, 2, b"true");
        put_bytes(&mut meta, 12, &entry);
    }
    let mut raw = Vec::new();
    put_bytes(&mut raw, 1, &meta);
    seal_envelope(api_version, kind, &raw)
}

/// A watch frame: 4-byte big-endian length, then `WatchEvent{type, RawExtension{raw}}`.
/// Appends item `index` (an enveloped object) as one watch frame.
pub fn frame_event<T: AsRef<[u8]>>(pieces: &mut Pieces<T>, event_type: EventType, index: usize) {
    let object_len = pieces.items()[index].as_ref().len();
    let type_bytes = event_type.as_str().as_bytes();
    let raw_extension_len = field_len(1, object_len);
    let event_len = field_len(1, type_bytes.len()) + field_len(2, raw_extension_len);
    let mut head = Vec::with_capacity(32);
    head.extend_from_slice(&(event_len as u32).to_be_bytes());
    put_bytes(&mut head, 1, type_bytes);
    put_prefix(&mut head, 2, raw_extension_len);
    put_prefix(&mut head, 1, object_len);
    pieces.frame(&head);
    pieces.item(index, 0..object_len);
}

/// One watch frame on its own.
pub fn encode_event(event_type: EventType, object: &[u8]) -> Vec<u8> {
    let mut pieces = Pieces::new(vec![object]);
    frame_event(&mut pieces, event_type, 0);
    pieces.to_vec()
}

/// Frames of a protobuf watch stream.
#[derive(Default)]
pub struct ProtobufWatchDecoder {
    pending: Vec<u8>,
}

impl WatchDecoder for ProtobufWatchDecoder {
    fn push(&mut self, bytes: &[u8]) -> Result<Vec<WatchEvent>, CodecError> {
        self.pending.extend_from_slice(bytes);
        let mut events = Vec::new();
        let mut consumed = 0;
        loop {
            let rest = &self.pending[consumed..];
            if rest.len() < 4 {
                break;
            }
            let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            if len > MAX_OBJECT_BYTES {
                return Err(CodecError(format!(
                    "watch frame of {len} bytes is larger than {MAX_OBJECT_BYTES}"
                )));
            }
            let Some(end) = super::Encoding::Protobuf.watch_frame_end(rest) else {
                break;
            };
            events.push(decode_frame(&rest[..end])?);
            consumed += end;
        }
        self.pending.drain(..consumed);
        Ok(events)
    }
}

/// The event of one whole frame, its 4-byte length included.
pub fn decode_frame(frame: &[u8]) -> Result<WatchEvent, CodecError> {
    let event = fields(frame.get(4..).ok_or_else(|| invalid("watch frame"))?)?;
    let event_type = EventType::parse(&string(&event, 1)?)?;
    let raw_extension = fields(field(&event, 2).unwrap_or_default())?;
    let object = field(&raw_extension, 1).unwrap_or_default().to_vec();
    Ok(WatchEvent { event_type, object })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/tests/fixtures/protobuf/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn reads_metadata_of_a_captured_configmap() {
        let meta = decode_meta(&fixture("cm1.pb")).unwrap();
        assert_eq!(
            (meta.kind.as_str(), meta.api_version.as_str()),
            ("ConfigMap", "v1")
        );
        assert_eq!(
            (meta.name.as_str(), meta.namespace.as_str()),
            ("cm1", "edge")
        );
        assert_eq!(meta.resource_version, 201);
        assert_eq!(meta.uid, "6b7c401f-375f-4a22-ba8f-283462de07d0");
        assert_eq!(meta.labels.get("app").map(String::as_str), Some("web"));
    }

    #[test]
    fn list_items_are_sealed_exactly_as_a_get_returns_them() {
        let parts = split_list(&fixture("cmlist.pb")).unwrap();
        assert_eq!(
            (parts.kind.as_str(), parts.resource_version.as_str()),
            ("ConfigMapList", "202")
        );
        assert_eq!(parts.items.len(), 1);
        assert_eq!(
            parts.items[0],
            fixture("cm1.pb"),
            "byte for byte what GET returned"
        );
        let pods = split_list(&fixture("podlist.pb")).unwrap();
        assert_eq!(pods.items[0], fixture("p1.pb"));
    }

    #[test]
    fn built_lists_match_the_apiserver_and_split_back() {
        let empty = encode_list("ConfigMapList", "v1", "202", Vec::<Vec<u8>>::new()).to_vec();
        assert_eq!(
            empty,
            fixture("emptylist.pb"),
            "byte for byte the apiserver's empty list"
        );
        let built = encode_list("ConfigMapList", "v1", "202", vec![fixture("cm1.pb")]).to_vec();
        let parts = split_list(&built).unwrap();
        assert_eq!(parts.items, [fixture("cm1.pb")]);
        assert_eq!(parts.resource_version, "202");
    }

    #[test]
    fn pods_expose_their_node_for_field_selectors() {
        let value = to_value(&fixture("p1.pb")).unwrap();
        assert_eq!(value["spec"]["nodeName"], "edge-1");
        assert_eq!(value["metadata"]["labels"]["app"], "web");
        assert_eq!(value["metadata"]["namespace"], "edge");
    }

    #[test]
    fn cuts_a_captured_watch_stream_across_any_chunking() {
        let stream = fixture("watch.pb");
        for chunk in [1, 3, 7, 100, stream.len()] {
            let mut decoder = ProtobufWatchDecoder::default();
            let mut events = Vec::new();
            for piece in stream.chunks(chunk) {
                events.extend(decoder.push(piece).unwrap());
            }
            let types: Vec<EventType> = events.iter().map(|e| e.event_type).collect();
            assert_eq!(
                types,
                [
                    EventType::Added,
                    EventType::Added,
                    EventType::Deleted,
                    EventType::Bookmark
                ],
                "chunk {chunk}"
            );
            assert_eq!(decode_meta(&events[1].object).unwrap().name, "cm2");
            assert_eq!(events[0].object, fixture("cm1.pb"));
        }
    }

    #[test]
    fn malformed_input_is_an_error_never_a_panic() {
        assert!(decode_meta(b"").is_err());
        assert!(decode_meta(b"k8s\0\x0a\xff").is_err());
        assert!(decode_meta(b"not protobuf").is_err());
        let mut truncated = fixture("cm1.pb");
        truncated.truncate(100);
        assert!(decode_meta(&truncated).is_err());
        assert!(
            split_list(&fixture("cm1.pb")).is_err(),
            "an object is not a list"
        );
        assert!(
            ProtobufWatchDecoder::default()
                .push(&[0, 0, 0, 3, 0xff, 0xff, 0xff])
                .is_err()
        );
        assert!(
            ProtobufWatchDecoder::default()
                .push(&[0xff, 0xff, 0xff, 0xff])
                .is_err()
        );
    }

    #[test]
    fn streaming_list_frames_round_trip_through_the_decoder() {
        let bookmark = bookmark("Pod", "v1", "88", true);
        assert_eq!(
            annotation(&bookmark, super::super::INITIAL_EVENTS_END).as_deref(),
            Some("true")
        );
        let meta = decode_meta(&bookmark).unwrap();
        assert_eq!((meta.kind.as_str(), meta.resource_version), ("Pod", 88));
        assert_eq!(
            annotation(&fixture("p1.pb"), "k8s.io/initial-events-end"),
            None
        );
        let mut stream = encode_event(EventType::Added, &fixture("p1.pb"));
        stream.extend(encode_event(EventType::Bookmark, &bookmark));
        let events = ProtobufWatchDecoder::default().push(&stream).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].event_type, EventType::Added);
        assert_eq!(events[0].object, fixture("p1.pb"));
        assert_eq!(events[1].event_type, EventType::Bookmark);
        assert_eq!(events[1].object, bookmark);
    }

    #[test]
    fn token_requests_read_from_the_wire_format() {
        let mut reference = Vec::new();
        put_bytes(&mut reference, 1, b"Pod");
        put_bytes(&mut reference, 2, b"v1");
        put_bytes(&mut reference, 3, b"p");
        put_bytes(&mut reference, 4, b"u1");
        let mut spec = Vec::new();
        put_bytes(&mut spec, 1, b"zeta");
        put_bytes(&mut spec, 1, b"alpha");
        put_bytes(&mut spec, 3, &reference);
        put_varint(&mut spec, 4 << 3);
        put_varint(&mut spec, 3607);
        let mut time = Vec::new();
        put_varint(&mut time, 1 << 3);
        put_varint(&mut time, 1_930_348_800);
        let mut status = Vec::new();
        put_bytes(&mut status, 1, b"eyJ.token");
        put_bytes(&mut status, 2, &time);
        let mut raw = Vec::new();
        put_bytes(&mut raw, 1, b"");
        put_bytes(&mut raw, 2, &spec);
        let request = seal_envelope("authentication.k8s.io/v1", "TokenRequest", &raw);
        let parsed = token_request_spec(&request).unwrap();
        assert_eq!(parsed.audiences, ["alpha", "zeta"]);
        assert_eq!(parsed.bound.unwrap().uid, "u1");
        assert!(
            token_expiry(&request).is_err(),
            "a request carries no token"
        );
        put_bytes(&mut raw, 3, &status);
        let issued = seal_envelope("authentication.k8s.io/v1", "TokenRequest", &raw);
        assert_eq!(token_expiry(&issued), Ok(1_930_348_800));
    }

    #[test]
    fn frames_match_the_captured_stream_byte_for_byte() {
        let captured = fixture("watch.pb");
        let events = ProtobufWatchDecoder::default().push(&captured).unwrap();
        let rebuilt: Vec<u8> = events
            .iter()
            .flat_map(|e| encode_event(e.event_type, &e.object))
            .collect();
        assert_eq!(rebuilt, captured);
    }

    /// Random and mutated inputs: every entry point returns, never panics.
    /// (A deterministic generator keeps failures reproducible.)
    #[test]
    fn random_and_mutated_inputs_never_panic() {
        let seeds: Vec<Vec<u8>> = [
            "cm1.pb",
            "cmlist.pb",
            "podlist.pb",
            "watch.pb",
            "emptylist.pb",
        ]
        .iter()
        .map(|f| fixture(f))
        .collect();
        let seeds: Vec<&[u8]> = seeds.iter().map(Vec::as_slice).collect();
        crate::fuzz::run(0x9e37_79b9_7f4a_7c15, &seeds, 20_000, |input| {
            let _ = decode_meta(input);
            let _ = split_list(input);
            let _ = to_value(input);
            let _ = annotation(input, "k8s.io/initial-events-end");
            let _ = token_request_spec(input);
            let _ = token_expiry(input);
            let _ = ProtobufWatchDecoder::default().push(input);
        });
    }
}
