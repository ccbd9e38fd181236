//! The JSON encoding: objects as the apiserver writes them, lists as
//! `{"kind","apiVersion","metadata","items"}`, watches as one event per line.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::pieces::Pieces;
use super::{
    CodecError, EventType, ListParts, MAX_OBJECT_BYTES, ObjectMeta, WatchDecoder, WatchEvent,
};

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawObject {
    kind: String,
    #[serde(rename = "apiVersion")]
    api_version: String,
    metadata: RawMeta,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawMeta {
    name: String,
    namespace: String,
    #[serde(rename = "resourceVersion")]
    resource_version: String,
    uid: String,
    labels: Option<BTreeMap<String, String>>,
    #[serde(rename = "continue")]
    continue_token: String,
}

fn invalid(what: &str, e: impl std::fmt::Display) -> CodecError {
    CodecError(format!("invalid JSON {what}: {e}"))
}

pub fn decode_meta(bytes: &[u8]) -> Result<ObjectMeta, CodecError> {
    let raw: RawObject = serde_json::from_slice(bytes).map_err(|e| invalid("object", e))?;
    Ok(ObjectMeta {
        kind: raw.kind,
        api_version: raw.api_version,
        name: raw.metadata.name,
        namespace: raw.metadata.namespace,
        resource_version: raw.metadata.resource_version.parse().unwrap_or(0),
        uid: raw.metadata.uid,
        labels: raw.metadata.labels.unwrap_or_default(),
    })
}

#[derive(Deserialize)]
struct RawList<'a> {
    #[serde(default)]
    kind: String,
    #[serde(rename = "apiVersion", default)]
    api_version: String,
    #[serde(default)]
    metadata: RawMeta,
    #[serde(borrow, default)]
    items: Option<Vec<&'a RawValue>>,
}

pub fn split_list(bytes: &[u8]) -> Result<ListParts, CodecError> {
    let list: RawList<'_> = serde_json::from_slice(bytes).map_err(|e| invalid("list", e))?;
    if !list.kind.ends_with("List") {
        return Err(CodecError(format!("not a list: kind {:?}", list.kind)));
    }
    let item_kind = list.kind.trim_end_matches("List");
    let items = list
        .items
        .unwrap_or_default()
        .into_iter()
        .map(|item| with_type_meta(item.get(), item_kind, &list.api_version))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ListParts {
        kind: list.kind.clone(),
        api_version: list.api_version,
        resource_version: list.metadata.resource_version,
        continue_token: list.metadata.continue_token,
        items,
    })
}

/// A list's `metadata.resourceVersion`, its items skipped unread. Read from
/// the head before `"items"` when it is there, as kube-apiserver writes it
/// (`kind`, `apiVersion`, `metadata`, then `items`): a scan of a few bytes,
/// not a parse of the list; otherwise from the whole body.
pub fn list_resource_version(bytes: &[u8]) -> Option<String> {
    let head = memchr::memmem::find(bytes, b"\"items\"").map_or(bytes, |end| &bytes[..end]);
    const KEY: &[u8] = b"\"resourceVersion\":\"";
    if let Some(at) = memchr::memmem::find(head, KEY) {
        let value = &head[at + KEY.len()..];
        if let Some(end) = memchr::memchr(b'"', value)
            && value[..end].iter().all(u8::is_ascii_digit)
        {
            return std::str::from_utf8(&value[..end]).ok().map(str::to_string);
        }
    }
    #[derive(Deserialize)]
    struct Head {
        #[serde(default)]
        metadata: RawMeta,
    }
    let head: Head = serde_json::from_slice(bytes).ok()?;
    Some(head.metadata.resource_version)
}

/// List items come without `kind` and `apiVersion`; a stored object carries them
/// so it reads back exactly like the answer to a get.
fn with_type_meta(item: &str, kind: &str, api_version: &str) -> Result<Vec<u8>, CodecError> {
    let meta = decode_meta(item.as_bytes())?;
    let body = item.trim_start();
    if !meta.kind.is_empty() || !body.starts_with('{') {
        return Ok(item.as_bytes().to_vec());
    }
    let rest = body[1..].trim_start();
    let separator = if rest.starts_with('}') { "" } else { "," };
    let prefix = serde_json::json!({ "kind": kind, "apiVersion": api_version }).to_string();
    let mut out = Vec::with_capacity(item.len() + prefix.len());
    out.extend_from_slice(&prefix.as_bytes()[..prefix.len() - 1]);
    out.extend_from_slice(separator.as_bytes());
    out.extend_from_slice(rest.as_bytes());
    Ok(out)
}

pub fn encode_list<T: AsRef<[u8]>>(
    kind: &str,
    api_version: &str,
    resource_version: &str,
    items: Vec<T>,
) -> Pieces<T> {
    let head = serde_json::json!({
        "kind": kind,
        "apiVersion": api_version,
        "metadata": { "resourceVersion": resource_version },
    })
    .to_string();
    let mut pieces = Pieces::new(items);
    pieces.frame(&head.as_bytes()[..head.len() - 1]);
    pieces.frame(b",\"items\":[");
    for index in 0..pieces.items().len() {
        if index > 0 {
            pieces.frame(b",");
        }
        let len = pieces.items()[index].as_ref().len();
        pieces.item(index, 0..len);
    }
    pieces.frame(b"]}");
    pieces
}

/// Appends item `index` as one event: `{"type":"ADDED","object":...}` and a
/// newline, as kube-apiserver frames JSON watches.
pub fn frame_event<T: AsRef<[u8]>>(pieces: &mut Pieces<T>, event_type: EventType, index: usize) {
    pieces.frame(b"{\"type\":\"");
    pieces.frame(event_type.as_str().as_bytes());
    pieces.frame(b"\",\"object\":");
    let len = pieces.items()[index].as_ref().len();
    pieces.item(index, 0..len);
    pieces.frame(b"}\n");
}

/// One event on its own.
pub fn encode_event(event_type: EventType, object: &[u8]) -> Vec<u8> {
    let mut pieces = Pieces::new(vec![object]);
    frame_event(&mut pieces, event_type, 0);
    pieces.to_vec()
}

/// A bookmark's object: the kind with only `resourceVersion` (and the
/// annotation ending a streaming list's initial events, if asked).
pub fn bookmark(
    kind: &str,
    api_version: &str,
    resource_version: &str,
    initial_events_end: bool,
) -> Vec<u8> {
    let mut object = serde_json::json!({
        "kind": kind,
        "apiVersion": api_version,
        "metadata": {"resourceVersion": resource_version},
    });
    if initial_events_end {
        object["metadata"]["annotations"] =
            serde_json::json!({ super::INITIAL_EVENTS_END: "true" });
    }
    object.to_string().into_bytes()
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct AnnotatedObject {
    metadata: AnnotatedMeta,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct AnnotatedMeta {
    annotations: Option<BTreeMap<String, String>>,
}

/// One annotation of an object, if present and readable.
pub fn annotation(object: &[u8], key: &str) -> Option<String> {
    let object: AnnotatedObject = serde_json::from_slice(object).ok()?;
    object.metadata.annotations?.remove(key)
}

#[derive(Deserialize)]
struct RawEvent<'a> {
    #[serde(rename = "type")]
    event_type: String,
    #[serde(borrow)]
    object: &'a RawValue,
}

/// JSON watch streams carry one event object per line.
#[derive(Default)]
pub struct JsonWatchDecoder {
    pending: Vec<u8>,
}

impl WatchDecoder for JsonWatchDecoder {
    fn push(&mut self, bytes: &[u8]) -> Result<Vec<WatchEvent>, CodecError> {
        self.pending.extend_from_slice(bytes);
        let mut events = Vec::new();
        let mut consumed = 0;
        while let Some(end) = super::Encoding::Json.watch_frame_end(&self.pending[consumed..]) {
            events.extend(decode_line(&self.pending[consumed..consumed + end])?);
            consumed += end;
        }
        self.pending.drain(..consumed);
        if self.pending.len() > MAX_OBJECT_BYTES {
            return Err(CodecError(format!(
                "watch event larger than {MAX_OBJECT_BYTES} bytes"
            )));
        }
        Ok(events)
    }
}

/// The event of one line of a JSON watch (its newline included or not);
/// `None` for a line of whitespace only.
pub fn decode_line(line: &[u8]) -> Result<Option<WatchEvent>, CodecError> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let event: RawEvent<'_> =
        serde_json::from_slice(line).map_err(|e| invalid("watch event", e))?;
    let event_type = EventType::parse(event.event_type.as_str())?;
    Ok(Some(WatchEvent {
        event_type,
        object: event.object.get().as_bytes().to_vec(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = r#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"p1","namespace":"edge","uid":"u1","resourceVersion":"42","labels":{"app":"web"}},"spec":{"nodeName":"edge-1"}}"#;

    #[test]
    fn reads_object_metadata() {
        let meta = decode_meta(POD.as_bytes()).unwrap();
        assert_eq!(
            (
                meta.kind.as_str(),
                meta.name.as_str(),
                meta.namespace.as_str()
            ),
            ("Pod", "p1", "edge")
        );
        assert_eq!(meta.resource_version, 42);
        assert_eq!(meta.uid, "u1");
        assert_eq!(meta.labels.get("app").map(String::as_str), Some("web"));
        assert!(decode_meta(b"{not json").is_err());
    }

    #[test]
    fn splits_a_list_into_self_contained_items() {
        let list = r#"{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"50","continue":"abc"},
            "items":[{"metadata":{"name":"a","resourceVersion":"3"}},{"metadata":{"name":"b"}, "spec":{}}, {}]}"#;
        let parts = split_list(list.as_bytes()).unwrap();
        assert_eq!(
            (
                parts.kind.as_str(),
                parts.resource_version.as_str(),
                parts.continue_token.as_str()
            ),
            ("PodList", "50", "abc")
        );
        assert_eq!(parts.items.len(), 3);
        for item in &parts.items {
            let value: serde_json::Value = serde_json::from_slice(item).unwrap();
            assert_eq!(value["kind"], "Pod");
            assert_eq!(value["apiVersion"], "v1");
        }
        let first = decode_meta(&parts.items[0]).unwrap();
        assert_eq!((first.name.as_str(), first.resource_version), ("a", 3));
        assert!(split_list(br#"{"kind":"Pod","metadata":{}}"#).is_err());
    }

    #[test]
    fn builds_a_list_that_splits_back() {
        let items = vec![
            POD.as_bytes().to_vec(),
            POD.replace("p1", "p2").into_bytes(),
        ];
        let list = encode_list("PodList", "v1", "42", items.clone()).to_vec();
        let value: serde_json::Value = serde_json::from_slice(&list).unwrap();
        assert_eq!(value["metadata"]["resourceVersion"], "42");
        assert_eq!(value["items"][1]["metadata"]["name"], "p2");
        let empty: serde_json::Value = serde_json::from_slice(
            &encode_list("PodList", "v1", "0", Vec::<Vec<u8>>::new()).to_vec(),
        )
        .unwrap();
        assert_eq!(empty["items"], serde_json::json!([]));
    }

    #[test]
    fn cuts_a_watch_stream_into_events_across_chunk_boundaries() {
        let stream = format!(
            "{{\"type\":\"ADDED\",\"object\":{POD}}}\n{{\"type\":\"BOOKMARK\",\"object\":{{\"kind\":\"Pod\",\"metadata\":{{\"resourceVersion\":\"60\"}}}}}}\n"
        );
        let mut decoder = JsonWatchDecoder::default();
        let (first, second) = stream.as_bytes().split_at(37);
        assert!(decoder.push(first).unwrap().is_empty());
        let events = decoder.push(second).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].event_type, EventType::Added);
        assert_eq!(decode_meta(&events[0].object).unwrap().name, "p1");
        assert_eq!(events[1].event_type, EventType::Bookmark);
        assert!(JsonWatchDecoder::default().push(b"garbage\n").is_err());
    }

    #[test]
    fn streaming_list_bookmarks_are_built_and_recognised() {
        let bookmark = bookmark("Pod", "v1", "77", true);
        assert_eq!(
            annotation(&bookmark, crate::codec::INITIAL_EVENTS_END).as_deref(),
            Some("true")
        );
        assert_eq!(decode_meta(&bookmark).unwrap().resource_version, 77);
        assert_eq!(
            annotation(POD.as_bytes(), "k8s.io/initial-events-end"),
            None
        );
        let line = encode_event(EventType::Bookmark, &bookmark);
        let events = JsonWatchDecoder::default().push(&line).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event_type, EventType::Bookmark);
        assert_eq!(events[0].object, bookmark);
    }

    /// Any bytes an apiserver or a client could send as JSON: decoding never
    /// panics, and a watch stream fed whole or in two pieces gives the same events.
    #[test]
    fn generated_documents_never_panic() {
        use crate::codec::{Encoding, accepted, time::parse_rfc3339, token};
        let list = encode_list("PodList", "v1", "77", vec![POD.as_bytes()]).to_vec();
        let event = encode_event(EventType::Added, POD.as_bytes());
        let bookmark = bookmark("Pod", "v1", "9223372036854775808", true);
        let token_request = br#"{"kind":"TokenRequest","spec":{"audiences":["a","b"],"expirationSeconds":3607,"boundObjectRef":{"kind":"Pod","name":"p","uid":"u"}},"status":{"token":"t","expirationTimestamp":"2031-03-04T00:00:00.5+01:30"}}"#;
        let seeds: &[&[u8]] = &[
            POD.as_bytes(),
            &list,
            &event,
            &bookmark,
            token_request,
            b"application/vnd.kubernetes.protobuf;stream=watch, application/json;as=Table;v=v1;g=meta.k8s.io, */*;q=0.9",
        ];
        let mut split = 0;
        crate::fuzz::run(0x5eed_0006, seeds, 20_000, |input| {
            let _ = decode_meta(input);
            let _ = split_list(input);
            let _ = annotation(input, crate::codec::INITIAL_EVENTS_END);
            let _ = token::request_spec(Encoding::Json, input);
            let _ = token::issued_expiry(Encoding::Json, input);
            let text = String::from_utf8_lossy(input);
            let _ = (accepted(Some(&text)), Encoding::from_content_type(&text));
            let _ = parse_rfc3339(&text);
            let whole = JsonWatchDecoder::default().push(input).map_err(|e| e.0);
            split = (split + 7) % (input.len() + 1);
            let mut decoder = JsonWatchDecoder::default();
            let pieces = decoder.push(&input[..split]).and_then(|mut first| {
                first.extend(decoder.push(&input[split..])?);
                Ok(first)
            });
            if let (Ok(whole), Ok(pieces)) = (&whole, &pieces) {
                assert_eq!(whole.len(), pieces.len());
            }
        });
    }
}
