//! Encodings of Kubernetes objects as the cache needs them: read an object's
//! metadata, split a list into self-contained items, build a list back, and cut
//! a watch stream into events, in JSON and in protobuf, behind one `Encoding`
//! so the cache never looks at bytes itself.

pub mod edit;
pub mod gzip;
mod json;
pub mod media;
pub mod pieces;
mod protobuf;
pub mod time;
pub mod token;

use std::collections::BTreeMap;
use std::fmt;

use media::MediaRange;
pub use pieces::Pieces;

/// What the cache reads from an object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectMeta {
    pub kind: String,
    pub api_version: String,
    pub name: String,
    pub namespace: String,
    /// `metadata.resourceVersion` as an integer (0 when absent or not a number).
    pub resource_version: u64,
    pub uid: String,
    pub labels: BTreeMap<String, String>,
}

/// A list response taken apart.
#[derive(Debug, Clone, Default)]
pub struct ListParts {
    pub kind: String,
    pub api_version: String,
    pub resource_version: String,
    /// Non-empty when more pages follow.
    pub continue_token: String,
    /// Each item encoded on its own, with its kind and apiVersion.
    pub items: Vec<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
    Bookmark,
    Error,
}

impl EventType {
    /// The type as written on the wire (`ADDED`, ...).
    pub fn parse(text: &str) -> Result<EventType, CodecError> {
        Ok(match text {
            "ADDED" => EventType::Added,
            "MODIFIED" => EventType::Modified,
            "DELETED" => EventType::Deleted,
            "BOOKMARK" => EventType::Bookmark,
            "ERROR" => EventType::Error,
            other => return Err(CodecError(format!("unknown watch event type {other:?}"))),
        })
    }

    /// The type as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
            EventType::Bookmark => "BOOKMARK",
            EventType::Error => "ERROR",
        }
    }
}

/// The annotation on the bookmark that ends a streaming list's initial events.
pub const INITIAL_EVENTS_END: &str = "k8s.io/initial-events-end";

/// One watch event: its type and the object, encoded on its own.
#[derive(Debug, Clone)]
pub struct WatchEvent {
    pub event_type: EventType,
    pub object: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecError(pub String);

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CodecError {}

fn json_error(what: &str, e: impl fmt::Display) -> CodecError {
    CodecError(format!("invalid JSON {what}: {e}"))
}

/// Cuts a watch stream into events as bytes arrive.
pub trait WatchDecoder: Send {
    /// Feeds bytes; returns the events completed by them. An error means the
    /// stream cannot be read further (the caller stops caching it).
    fn push(&mut self, bytes: &[u8]) -> Result<Vec<WatchEvent>, CodecError>;
}

/// An encoding the cache can store and serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Encoding {
    Json,
    Protobuf,
}

/// Largest single object or watch event the cache decodes.
pub const MAX_OBJECT_BYTES: usize = 16 * 1024 * 1024;

impl Encoding {
    /// The encoding of a response with this Content-Type, if the cache can
    /// store it. Responses in another shape (`as=Table`, `as=PartialObjectMetadata`)
    /// are not objects and give `None`.
    pub fn from_content_type(content_type: &str) -> Option<Encoding> {
        let media = MediaRange::parse(content_type);
        if !media
            .parameter_names()
            .all(|name| matches!(name, "charset" | "stream"))
        {
            return None;
        }
        match media.essence.as_str() {
            "application/json" => Some(Encoding::Json),
            "application/vnd.kubernetes.protobuf" => Some(Encoding::Protobuf),
            _ => None,
        }
    }

    /// File extension of stored objects.
    pub fn extension(self) -> &'static str {
        match self {
            Encoding::Json => "json",
            Encoding::Protobuf => "pb",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Json => "application/json",
            Encoding::Protobuf => "application/vnd.kubernetes.protobuf",
        }
    }

    /// Content-Type of a watch stream in this encoding.
    pub fn watch_content_type(self) -> &'static str {
        match self {
            Encoding::Json => "application/json",
            Encoding::Protobuf => "application/vnd.kubernetes.protobuf;stream=watch",
        }
    }

    pub fn decode_meta(self, bytes: &[u8]) -> Result<ObjectMeta, CodecError> {
        match self {
            Encoding::Json => json::decode_meta(bytes),
            Encoding::Protobuf => protobuf::decode_meta(bytes),
        }
    }

    pub fn split_list(self, bytes: &[u8]) -> Result<ListParts, CodecError> {
        match self {
            Encoding::Json => json::split_list(bytes),
            Encoding::Protobuf => protobuf::split_list(bytes),
        }
    }

    /// A list's resourceVersion as a number, read without taking its items
    /// apart; `None` when it has none or it is not a number.
    pub fn list_resource_version(self, bytes: &[u8]) -> Option<u64> {
        let text = match self {
            Encoding::Json => json::list_resource_version(bytes),
            Encoding::Protobuf => protobuf::list_resource_version(bytes),
        }?;
        text.parse().ok()
    }

    /// A list of `items` (each an object on its own, as the cache holds
    /// them), as pieces sent without gathering the items.
    pub fn encode_list<T: AsRef<[u8]>>(
        self,
        kind: &str,
        api_version: &str,
        resource_version: &str,
        items: Vec<T>,
    ) -> Pieces<T> {
        match self {
            Encoding::Json => json::encode_list(kind, api_version, resource_version, items),
            Encoding::Protobuf => protobuf::encode_list(kind, api_version, resource_version, items),
        }
    }

    /// A streaming list's initial events: each of `items` as ADDED, then a
    /// BOOKMARK of `bookmark`, as pieces sent without gathering the items.
    pub fn encode_initial_events<T: AsRef<[u8]>>(
        self,
        items: Vec<T>,
        bookmark: &[u8],
    ) -> Pieces<T> {
        self.encode_added_events(items, Some(bookmark))
    }

    /// Each of `items` as an ADDED event, then a BOOKMARK of `bookmark` if
    /// given (a watch from `resourceVersion=0` starts without one).
    pub fn encode_added_events<T: AsRef<[u8]>>(
        self,
        items: Vec<T>,
        bookmark: Option<&[u8]>,
    ) -> Pieces<T> {
        let frame_event = match self {
            Encoding::Json => json::frame_event::<T>,
            Encoding::Protobuf => protobuf::frame_event::<T>,
        };
        let mut pieces = Pieces::new(items);
        for index in 0..pieces.items().len() {
            frame_event(&mut pieces, EventType::Added, index);
        }
        if let Some(bookmark) = bookmark {
            pieces.frame(&self.encode_event(EventType::Bookmark, bookmark));
        }
        pieces
    }

    /// Watch events, each object with its type, as pieces sent without
    /// gathering the objects (a shared watch's changes to one client).
    pub fn encode_events<T: AsRef<[u8]>>(self, events: Vec<(EventType, T)>) -> Pieces<T> {
        let frame_event = match self {
            Encoding::Json => json::frame_event::<T>,
            Encoding::Protobuf => protobuf::frame_event::<T>,
        };
        let (types, items): (Vec<EventType>, Vec<T>) = events.into_iter().unzip();
        let mut pieces = Pieces::new(items);
        for (index, event_type) in types.into_iter().enumerate() {
            frame_event(&mut pieces, event_type, index);
        }
        pieces
    }

    /// Where the first whole frame of a watch stream ends (a JSON line with
    /// its newline, a length-prefixed protobuf frame), if it is complete.
    pub fn watch_frame_end(self, bytes: &[u8]) -> Option<usize> {
        match self {
            Encoding::Json => bytes.iter().position(|&b| b == b'\n').map(|i| i + 1),
            Encoding::Protobuf => {
                let length = bytes.get(..4)?;
                let length = u32::from_be_bytes([length[0], length[1], length[2], length[3]]);
                let end = 4usize.checked_add(usize::try_from(length).ok()?)?;
                (end <= bytes.len()).then_some(end)
            }
        }
    }

    /// The event of one whole frame (as `watch_frame_end` cuts them);
    /// `None` for a JSON line of whitespace only.
    pub fn decode_watch_frame(self, frame: &[u8]) -> Result<Option<WatchEvent>, CodecError> {
        match self {
            Encoding::Json => json::decode_line(frame),
            Encoding::Protobuf => protobuf::decode_frame(frame).map(Some),
        }
    }

    pub fn watch_decoder(self) -> Box<dyn WatchDecoder> {
        match self {
            Encoding::Json => Box::new(json::JsonWatchDecoder::default()),
            Encoding::Protobuf => Box::new(protobuf::ProtobufWatchDecoder::default()),
        }
    }

    /// One watch event as written in a watch stream of this encoding (a JSON
    /// line, or a length-prefixed protobuf frame).
    pub fn encode_event(self, event_type: EventType, object: &[u8]) -> Vec<u8> {
        match self {
            Encoding::Json => json::encode_event(event_type, object),
            Encoding::Protobuf => protobuf::encode_event(event_type, object),
        }
    }

    /// The bookmark object that ends a streaming list's initial events: the
    /// resource's own kind with only `resourceVersion` and the
    /// `k8s.io/initial-events-end` annotation, as kube-apiserver sends it.
    pub fn initial_events_end_bookmark(
        self,
        kind: &str,
        api_version: &str,
        resource_version: &str,
    ) -> Vec<u8> {
        self.bookmark(kind, api_version, resource_version, true)
    }

    /// A bookmark's object: the resource's own kind with only
    /// `resourceVersion` (and, for the end of a streaming list's initial
    /// events, the `k8s.io/initial-events-end` annotation).
    pub fn bookmark(
        self,
        kind: &str,
        api_version: &str,
        resource_version: &str,
        initial_events_end: bool,
    ) -> Vec<u8> {
        match self {
            Encoding::Json => {
                json::bookmark(kind, api_version, resource_version, initial_events_end)
            }
            Encoding::Protobuf => {
                protobuf::bookmark(kind, api_version, resource_version, initial_events_end)
            }
        }
    }

    /// Whether a bookmark's object carries `k8s.io/initial-events-end: "true"`.
    pub fn is_initial_events_end(self, object: &[u8]) -> bool {
        let value = match self {
            Encoding::Json => json::annotation(object, INITIAL_EVENTS_END),
            Encoding::Protobuf => protobuf::annotation(object, INITIAL_EVENTS_END),
        };
        value.as_deref() == Some("true")
    }

    /// The object as a JSON value, for field selectors. JSON objects give every
    /// field; protobuf ones only those `can_read_field` accepts.
    pub fn to_value(self, bytes: &[u8]) -> Result<serde_json::Value, CodecError> {
        match self {
            Encoding::Json => serde_json::from_slice(bytes)
                .map_err(|e| CodecError(format!("invalid JSON object: {e}"))),
            Encoding::Protobuf => protobuf::to_value(bytes),
        }
    }

    /// Whether a field selector on this dotted path can be evaluated here.
    pub fn can_read_field(self, path: &str) -> bool {
        match self {
            Encoding::Json => true,
            Encoding::Protobuf => protobuf::readable_field(path),
        }
    }
}

/// The encodings a client accepts, most preferred first, from its Accept header.
/// `*/*`, `application/*` or no header at all mean JSON.
pub fn accepted(accept: Option<&str>) -> Vec<Encoding> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return vec![Encoding::Json];
    };
    let mut out = Vec::new();
    for media in MediaRange::list(accept) {
        let encoding = match media.essence.as_str() {
            _ if media.parameter("as").is_some() => None,
            "application/json" | "*/*" | "application/*" => Some(Encoding::Json),
            "application/vnd.kubernetes.protobuf" => Some(Encoding::Protobuf),
            _ => None,
        };
        if let Some(encoding) = encoding.filter(|e| !out.contains(e)) {
            out.push(encoding);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_objects_are_storable() {
        assert_eq!(
            Encoding::from_content_type("application/json"),
            Some(Encoding::Json)
        );
        assert_eq!(
            Encoding::from_content_type("application/json; charset=utf-8"),
            Some(Encoding::Json)
        );
        assert_eq!(
            Encoding::from_content_type("application/json;as=Table;v=v1;g=meta.k8s.io"),
            None
        );
        assert_eq!(
            Encoding::from_content_type(
                "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
            ),
            None
        );
        assert_eq!(Encoding::from_content_type("text/plain"), None);
        assert_eq!(
            Encoding::from_content_type("application/vnd.kubernetes.protobuf"),
            Some(Encoding::Protobuf)
        );
        assert_eq!(
            Encoding::from_content_type("application/vnd.kubernetes.protobuf;stream=watch"),
            Some(Encoding::Protobuf)
        );
    }

    #[test]
    fn events_written_from_pieces_read_back_as_they_were() {
        let json: Vec<u8> =
            br#"{"kind":"Service","apiVersion":"v1","metadata":{"name":"a"}}"#.to_vec();
        let pb = include_bytes!("../../tests/fixtures/protobuf/svc-kubernetes.pb").to_vec();
        for (encoding, object) in [(Encoding::Json, json), (Encoding::Protobuf, pb)] {
            let types = [EventType::Added, EventType::Deleted, EventType::Bookmark];
            let events: Vec<(EventType, &[u8])> = types.iter().map(|&t| (t, &object[..])).collect();
            let stream = encoding.encode_events(events).to_vec();
            let read = encoding.watch_decoder().push(&stream).unwrap();
            let read: Vec<(EventType, Vec<u8>)> =
                read.into_iter().map(|e| (e.event_type, e.object)).collect();
            let want: Vec<(EventType, Vec<u8>)> =
                types.iter().map(|&t| (t, object.clone())).collect();
            assert_eq!(read, want, "{encoding:?}");
        }
    }

    #[test]
    fn a_lists_version_is_read_without_its_items() {
        for list in [
            &include_bytes!("../../tests/fixtures/protobuf/podlist.pb")[..],
            &include_bytes!("../../tests/fixtures/protobuf/cmlist.pb")[..],
        ] {
            let whole = Encoding::Protobuf
                .split_list(list)
                .unwrap()
                .resource_version;
            assert_eq!(
                Encoding::Protobuf.list_resource_version(list),
                whole.parse().ok()
            );
            assert!(whole.parse::<u64>().unwrap() > 0);
        }
        let json = br#"{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"42"},"items":[{"metadata":{"name":"a","resourceVersion":"7"}}]}"#;
        assert_eq!(Encoding::Json.list_resource_version(json), Some(42));
        // Another order, or spacing, is read from the whole list.
        let items_first = br#"{"items":[{"metadata":{"resourceVersion":"7"}}],"metadata":{"resourceVersion": "43"}}"#;
        assert_eq!(Encoding::Json.list_resource_version(items_first), Some(43));
        assert_eq!(Encoding::Json.list_resource_version(b"not json"), None);
        assert_eq!(Encoding::Protobuf.list_resource_version(b"k8s\0junk"), None);
    }

    #[test]
    fn accepted_encodings_skip_other_shapes() {
        assert_eq!(accepted(None), [Encoding::Json]);
        assert_eq!(
            accepted(Some("application/vnd.kubernetes.protobuf,application/json")),
            [Encoding::Protobuf, Encoding::Json]
        );
        assert_eq!(
            accepted(Some(
                "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
            )),
            [Encoding::Json]
        );
        assert_eq!(
            accepted(Some("application/json;as=Table;v=v1;g=meta.k8s.io")),
            []
        );
        assert_eq!(accepted(Some("*/*")), [Encoding::Json]);
    }
}
