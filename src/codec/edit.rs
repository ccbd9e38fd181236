//! Objects as the response filters read and change them, in either encoding,
//! through one interface: a path names each field by its JSON name and its
//! protobuf number, so a filter is written once for both. In protobuf only
//! the messages on an edited path are taken apart; every other field,
//! unknown ones included, is written back byte for byte.

use serde_json::Value;

use super::protobuf::{
    Field, fields, invalid, open_envelope, put_bytes, put_varint, seal_envelope,
};
use super::{CodecError, Encoding};

/// One step of a path: a field's JSON name and protobuf number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    pub name: &'static str,
    pub number: u64,
}

pub const fn key(name: &'static str, number: u64) -> Key {
    Key { name, number }
}

/// A whole object (or list item) open for reading and editing.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    Json(Value),
    /// The object's own message (without the `k8s\0` envelope).
    Protobuf(Message),
}

/// An object or a list as sent, open for editing: JSON parsed, a protobuf
/// envelope's type kept aside to seal the edited message again.
#[derive(Debug, Clone, PartialEq)]
pub struct Opened {
    pub object: Object,
    envelope: Option<(String, String)>,
}

impl Opened {
    pub fn open(encoding: Encoding, bytes: &[u8]) -> Result<Opened, CodecError> {
        match encoding {
            Encoding::Json => Ok(Opened {
                object: Object::Json(
                    serde_json::from_slice(bytes)
                        .map_err(|e| CodecError(format!("invalid JSON object: {e}")))?,
                ),
                envelope: None,
            }),
            Encoding::Protobuf => {
                let envelope = open_envelope(bytes)?;
                Ok(Opened {
                    object: Object::Protobuf(Message::parse(envelope.raw)?),
                    envelope: Some((envelope.api_version, envelope.kind)),
                })
            }
        }
    }

    /// A new object of a type (the type goes in a protobuf envelope; a JSON
    /// object carries its own `kind` and `apiVersion`).
    pub fn typed(object: Object, api_version: &str, kind: &str) -> Opened {
        Opened {
            object,
            envelope: Some((api_version.to_string(), kind.to_string())),
        }
    }

    /// The object as it is sent again.
    pub fn seal(&self) -> Vec<u8> {
        match (&self.object, &self.envelope) {
            (Object::Json(value), _) => serde_json::to_vec(value).unwrap_or_default(),
            (Object::Protobuf(message), Some((api_version, kind))) => {
                seal_envelope(api_version, kind, &message.to_bytes())
            }
            (Object::Protobuf(message), None) => message.to_bytes(),
        }
    }
}

/// A protobuf message with the fields on edited paths taken apart.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    fields: Vec<(u64, Part)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    /// The field exactly as read, tag included.
    Raw {
        bytes: Vec<u8>,
        payload: Option<(usize, usize)>,
        varint: u64,
    },
    Bytes(Vec<u8>),
    Varint(u64),
    Message(Message),
}

impl Message {
    pub fn parse(bytes: &[u8]) -> Result<Message, CodecError> {
        let fields = fields(bytes)?
            .into_iter()
            .map(|field: Field<'_>| {
                let payload = field.bytes.map(|payload| {
                    let start = field.raw.len() - payload.len();
                    (start, field.raw.len())
                });
                let part = Part::Raw {
                    bytes: field.raw.to_vec(),
                    payload,
                    varint: field.varint,
                };
                (field.number, part)
            })
            .collect();
        Ok(Message { fields })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut Vec<u8>) {
        for (number, part) in &self.fields {
            match part {
                Part::Raw { bytes, .. } => out.extend_from_slice(bytes),
                Part::Bytes(bytes) => put_bytes(out, *number, bytes),
                Part::Varint(value) => {
                    put_varint(out, number << 3);
                    put_varint(out, *value);
                }
                Part::Message(message) => put_bytes(out, *number, &message.to_bytes()),
            }
        }
    }

    /// The payload of the last occurrence of a length-delimited field.
    fn bytes(&self, number: u64) -> Option<Vec<u8>> {
        self.fields
            .iter()
            .rev()
            .filter(|(n, _)| *n == number)
            .find_map(|(_, part)| part_bytes(part))
    }

    fn varint(&self, number: u64) -> Option<u64> {
        self.fields
            .iter()
            .rev()
            .filter(|(n, _)| *n == number)
            .find_map(|(_, part)| match part {
                Part::Raw {
                    payload: None,
                    varint,
                    ..
                } => Some(*varint),
                Part::Varint(value) => Some(*value),
                _ => None,
            })
    }

    /// Every occurrence of a (repeated) message field, read (not kept apart).
    fn children(&self, number: u64) -> Result<Vec<Message>, CodecError> {
        self.fields
            .iter()
            .filter(|(n, _)| *n == number)
            .map(|(_, part)| match part {
                Part::Message(message) => Ok(message.clone()),
                other => Message::parse(
                    &part_bytes(other).ok_or_else(|| invalid("not a message field"))?,
                ),
            })
            .collect()
    }

    /// Every occurrence of a (repeated) message field, taken apart.
    fn messages_mut(&mut self, number: u64) -> Result<Vec<&mut Message>, CodecError> {
        let mut out = Vec::new();
        for (n, part) in &mut self.fields {
            if *n != number {
                continue;
            }
            if !matches!(part, Part::Message(_)) {
                let bytes = part_bytes(part).ok_or_else(|| invalid("not a message field"))?;
                *part = Part::Message(Message::parse(&bytes)?);
            }
            if let Part::Message(message) = part {
                out.push(message);
            }
        }
        Ok(out)
    }

    /// The last occurrence of a message field, taken apart (added empty if absent).
    fn message_mut(&mut self, number: u64) -> Result<&mut Message, CodecError> {
        if !self.fields.iter().any(|(n, _)| *n == number) {
            self.fields
                .push((number, Part::Message(Message::default())));
        }
        let mut all = self.messages_mut(number)?;
        Ok(all.pop().expect("a field of that number exists"))
    }

    /// Sets a field to `parts` (one for a singular field), where its first
    /// occurrence was (at the end if there was none).
    fn replace(&mut self, number: u64, parts: Vec<Part>) {
        let at = self
            .fields
            .iter()
            .position(|(n, _)| *n == number)
            .unwrap_or(self.fields.len());
        self.fields.retain(|(n, _)| *n != number);
        let at = at.min(self.fields.len());
        self.fields
            .splice(at..at, parts.into_iter().map(|part| (number, part)));
    }
}

fn part_bytes(part: &Part) -> Option<Vec<u8>> {
    match part {
        Part::Raw {
            bytes,
            payload: Some((start, end)),
            ..
        } => Some(bytes[*start..*end].to_vec()),
        Part::Bytes(bytes) => Some(bytes.clone()),
        Part::Message(message) => Some(message.to_bytes()),
        _ => None,
    }
}

/// The message `path` names below `message` (`None` inside: `message`
/// itself for an empty path), read without changing it.
fn descend(message: &Message, path: &[Key]) -> Option<Option<Message>> {
    let mut at: Option<Message> = None;
    for key in path {
        let next = at
            .as_ref()
            .unwrap_or(message)
            .children(key.number)
            .ok()?
            .pop()?;
        at = Some(next);
    }
    Some(at)
}

fn map_entry_key(entry: &Message) -> Option<String> {
    entry.bytes(1).and_then(|b| String::from_utf8(b).ok())
}

impl Object {
    pub fn encoding(&self) -> Encoding {
        match self {
            Object::Json(_) => Encoding::Json,
            Object::Protobuf(_) => Encoding::Protobuf,
        }
    }

    /// An empty object of an encoding (to be filled with setters).
    pub fn empty(encoding: Encoding) -> Object {
        match encoding {
            Encoding::Json => Object::Json(Value::Object(Default::default())),
            Encoding::Protobuf => Object::Protobuf(Message::default()),
        }
    }

    /// The string at `path`, if present.
    pub fn str_at(&self, path: &[Key]) -> Option<String> {
        match self {
            Object::Json(value) => json_at(value, path)?.as_str().map(str::to_string),
            Object::Protobuf(message) => {
                let (last, parents) = path.split_last()?;
                let at = descend(message, parents)?;
                let at = at.as_ref().unwrap_or(message);
                String::from_utf8(at.bytes(last.number)?).ok()
            }
        }
    }

    /// The value of `key` in the string map at `path` (labels, annotations, data).
    pub fn map_str_at(&self, path: &[Key], key: &str) -> Option<String> {
        match self {
            Object::Json(value) => json_at(value, path)?.get(key)?.as_str().map(str::to_string),
            Object::Protobuf(message) => {
                let (last, parents) = path.split_last()?;
                let at = descend(message, parents)?;
                let at = at.as_ref().unwrap_or(message);
                at.children(last.number)
                    .ok()?
                    .into_iter()
                    .rev()
                    .find(|entry| map_entry_key(entry).as_deref() == Some(key))
                    .and_then(|entry| entry.bytes(2))
                    .and_then(|b| String::from_utf8(b).ok())
            }
        }
    }

    /// The integer at `path`, if present.
    pub fn int_at(&self, path: &[Key]) -> Option<i64> {
        match self {
            Object::Json(value) => json_at(value, path)?.as_i64(),
            Object::Protobuf(message) => {
                let (last, parents) = path.split_last()?;
                let at = descend(message, parents)?;
                let at = at.as_ref().unwrap_or(message);
                // int32 and int64 are varints; a negative one is its two's complement.
                at.varint(last.number).map(|v| v as i64)
            }
        }
    }

    /// Sets a string field (its parents are created if absent).
    pub fn set_str(&mut self, path: &[Key], value: &str) -> Result<(), CodecError> {
        self.set(
            path,
            Json::String(value.into()),
            Part::Bytes(value.as_bytes().to_vec()),
        )
    }

    /// Sets a repeated string field to `values`.
    pub fn set_strs(&mut self, path: &[Key], values: &[&str]) -> Result<(), CodecError> {
        match self {
            Object::Json(value) => {
                let (last, parents) = path.split_last().ok_or_else(empty_path)?;
                let parent = json_parent_mut(value, parents)?;
                parent.insert(
                    last.name.into(),
                    values.iter().map(|v| Value::from(*v)).collect(),
                );
                Ok(())
            }
            Object::Protobuf(message) => {
                let (last, parents) = path.split_last().ok_or_else(empty_path)?;
                let parent = proto_parent_mut(message, parents)?;
                let parts = values
                    .iter()
                    .map(|v| Part::Bytes(v.as_bytes().to_vec()))
                    .collect();
                parent.replace(last.number, parts);
                Ok(())
            }
        }
    }

    /// Sets an integer field.
    pub fn set_int(&mut self, path: &[Key], value: i64) -> Result<(), CodecError> {
        self.set(path, Json::from(value), Part::Varint(value as u64))
    }

    /// Sets a boolean field.
    pub fn set_bool(&mut self, path: &[Key], value: bool) -> Result<(), CodecError> {
        self.set(path, Json::Bool(value), Part::Varint(u64::from(value)))
    }

    fn set(&mut self, path: &[Key], json: Value, proto: Part) -> Result<(), CodecError> {
        let (last, parents) = path.split_last().ok_or_else(empty_path)?;
        match self {
            Object::Json(value) => {
                json_parent_mut(value, parents)?.insert(last.name.into(), json);
            }
            Object::Protobuf(message) => {
                proto_parent_mut(message, parents)?.replace(last.number, vec![proto]);
            }
        }
        Ok(())
    }

    /// Sets `key` of the string map at `path` to `value`.
    pub fn set_map_str(&mut self, path: &[Key], key: &str, value: &str) -> Result<(), CodecError> {
        let (last, parents) = path.split_last().ok_or_else(empty_path)?;
        match self {
            Object::Json(json) => {
                let parent = json_parent_mut(json, parents)?;
                let map = parent
                    .entry(last.name)
                    .or_insert_with(|| Value::Object(Default::default()));
                let map = map
                    .as_object_mut()
                    .ok_or_else(|| not_an_object(last.name))?;
                map.insert(key.into(), value.into());
            }
            Object::Protobuf(message) => {
                let parent = proto_parent_mut(message, parents)?;
                let entries = parent.messages_mut(last.number)?;
                match entries
                    .into_iter()
                    .rev()
                    .find(|entry| map_entry_key(entry).as_deref() == Some(key))
                {
                    Some(entry) => entry.replace(2, vec![Part::Bytes(value.as_bytes().to_vec())]),
                    None => {
                        let mut entry = Message::default();
                        entry.replace(1, vec![Part::Bytes(key.as_bytes().to_vec())]);
                        entry.replace(2, vec![Part::Bytes(value.as_bytes().to_vec())]);
                        parent.fields.push((last.number, Part::Message(entry)));
                    }
                }
            }
        }
        Ok(())
    }

    /// Calls `edit` on every element of the repeated message field at `path`
    /// and keeps those for which it returns true.
    pub fn retain_elements(
        &mut self,
        path: &[Key],
        mut edit: impl FnMut(&mut Object) -> Result<bool, CodecError>,
    ) -> Result<(), CodecError> {
        let (last, parents) = path.split_last().ok_or_else(empty_path)?;
        match self {
            Object::Json(json) => {
                let Some(parent) = json_at_mut(json, parents) else {
                    return Ok(());
                };
                let Some(Value::Array(elements)) = parent.get_mut(last.name) else {
                    return Ok(());
                };
                let mut kept = Vec::with_capacity(elements.len());
                for element in elements.drain(..) {
                    let mut element = Object::Json(element);
                    if edit(&mut element)? {
                        let Object::Json(element) = element else {
                            unreachable!()
                        };
                        kept.push(element);
                    }
                }
                *elements = kept;
            }
            Object::Protobuf(message) => {
                let Some(parent) = proto_at_mut(message, parents)? else {
                    return Ok(());
                };
                let mut fields = Vec::with_capacity(parent.fields.len());
                for (number, part) in parent.fields.drain(..) {
                    if number != last.number {
                        fields.push((number, part));
                        continue;
                    }
                    let element = match part {
                        Part::Message(message) => message,
                        other => Message::parse(
                            &part_bytes(&other).ok_or_else(|| invalid("not a message field"))?,
                        )?,
                    };
                    let mut element = Object::Protobuf(element);
                    if edit(&mut element)? {
                        let Object::Protobuf(element) = element else {
                            unreachable!()
                        };
                        fields.push((number, Part::Message(element)));
                    }
                }
                parent.fields = fields;
            }
        }
        Ok(())
    }

    /// Replaces the repeated message field at `path` with `elements` (of
    /// this object's encoding).
    pub fn set_elements(&mut self, path: &[Key], elements: Vec<Object>) -> Result<(), CodecError> {
        let (last, parents) = path.split_last().ok_or_else(empty_path)?;
        match self {
            Object::Json(json) => {
                let values = elements
                    .into_iter()
                    .map(|e| match e {
                        Object::Json(v) => Ok(v),
                        Object::Protobuf(_) => Err(CodecError("mixed encodings".into())),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                json_parent_mut(json, parents)?.insert(last.name.into(), Value::Array(values));
            }
            Object::Protobuf(message) => {
                let parts = elements
                    .into_iter()
                    .map(|e| match e {
                        Object::Protobuf(m) => Ok(Part::Message(m)),
                        Object::Json(_) => Err(CodecError("mixed encodings".into())),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                proto_parent_mut(message, parents)?.replace(last.number, parts);
            }
        }
        Ok(())
    }
}

use serde_json::Value as Json;

fn empty_path() -> CodecError {
    CodecError("empty field path".into())
}

fn not_an_object(name: &str) -> CodecError {
    CodecError(format!("{name} is not an object"))
}

fn json_at<'v>(value: &'v Value, path: &[Key]) -> Option<&'v Value> {
    path.iter().try_fold(value, |at, key| at.get(key.name))
}

fn json_at_mut<'v>(value: &'v mut Value, path: &[Key]) -> Option<&'v mut Value> {
    path.iter().try_fold(value, |at, key| at.get_mut(key.name))
}

/// The JSON object `path` names, created (as empty objects) where absent.
fn json_parent_mut<'v>(
    value: &'v mut Value,
    path: &[Key],
) -> Result<&'v mut serde_json::Map<String, Value>, CodecError> {
    let mut at = value;
    for key in path {
        let map = at.as_object_mut().ok_or_else(|| not_an_object(key.name))?;
        at = map
            .entry(key.name)
            .or_insert_with(|| Value::Object(Default::default()));
    }
    at.as_object_mut().ok_or_else(|| not_an_object("object"))
}

/// The message `path` names, created where absent.
fn proto_parent_mut<'m>(
    message: &'m mut Message,
    path: &[Key],
) -> Result<&'m mut Message, CodecError> {
    path.iter()
        .try_fold(message, |at, key| at.message_mut(key.number))
}

/// The message `path` names, if present.
fn proto_at_mut<'m>(
    message: &'m mut Message,
    path: &[Key],
) -> Result<Option<&'m mut Message>, CodecError> {
    let mut at = message;
    for key in path {
        match at.messages_mut(key.number)?.pop() {
            Some(next) => at = next,
            None => return Ok(None),
        }
    }
    Ok(Some(at))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: Key = key("spec", 2);
    const CLUSTER_IP: Key = key("clusterIP", 3);
    const CLUSTER_IPS: Key = key("clusterIPs", 18);
    const PORTS: Key = key("ports", 1);
    const NAME: Key = key("name", 1);
    const PORT: Key = key("port", 3);
    const META: Key = key("metadata", 1);
    const ANNOTATIONS: Key = key("annotations", 12);

    /// A Service message built field by field, with an unknown field (99)
    /// that must survive every edit.
    fn service_pb() -> Vec<u8> {
        let mut meta = Vec::new();
        put_bytes(&mut meta, 1, b"kubernetes");
        put_bytes(&mut meta, 3, b"default");
        let mut entry = Vec::new();
        put_bytes(&mut entry, 1, b"a");
        put_bytes(&mut entry, 2, b"1");
        put_bytes(&mut meta, 12, &entry);
        let mut https = Vec::new();
        put_bytes(&mut https, 1, b"https");
        put_varint(&mut https, 3 << 3);
        put_varint(&mut https, 443);
        let mut spec = Vec::new();
        put_bytes(&mut spec, 1, &https);
        put_bytes(&mut spec, 3, b"10.0.0.1");
        put_bytes(&mut spec, 18, b"10.0.0.1");
        put_bytes(&mut spec, 99, b"unknown");
        let mut service = Vec::new();
        put_bytes(&mut service, 1, &meta);
        put_bytes(&mut service, 2, &spec);
        put_bytes(&mut service, 3, b"status bytes");
        service
    }

    fn service_json() -> Value {
        serde_json::json!({
            "metadata": {"name": "kubernetes", "namespace": "default", "annotations": {"a": "1"}},
            "spec": {"ports": [{"name": "https", "port": 443}], "clusterIP": "10.0.0.1",
                     "clusterIPs": ["10.0.0.1"], "unknown": "kept"},
            "status": {},
        })
    }

    fn both() -> [Object; 2] {
        [
            Object::Json(service_json()),
            Object::Protobuf(Message::parse(&service_pb()).unwrap()),
        ]
    }

    #[test]
    fn an_untouched_message_is_written_back_byte_for_byte() {
        let bytes = service_pb();
        assert_eq!(Message::parse(&bytes).unwrap().to_bytes(), bytes);
    }

    #[test]
    fn reads_agree_across_encodings() {
        for object in both() {
            assert_eq!(object.str_at(&[META, NAME]).as_deref(), Some("kubernetes"));
            assert_eq!(
                object.str_at(&[SPEC, CLUSTER_IP]).as_deref(),
                Some("10.0.0.1")
            );
            assert_eq!(
                object.map_str_at(&[META, ANNOTATIONS], "a").as_deref(),
                Some("1")
            );
            assert_eq!(object.map_str_at(&[META, ANNOTATIONS], "b"), None);
            assert_eq!(object.str_at(&[SPEC, key("type", 4)]), None);
        }
    }

    #[test]
    fn edits_agree_across_encodings_and_keep_everything_else() {
        for mut object in both() {
            object.set_str(&[SPEC, CLUSTER_IP], "169.254.2.1").unwrap();
            object
                .set_strs(&[SPEC, CLUSTER_IPS], &["169.254.2.1"])
                .unwrap();
            object
                .retain_elements(&[SPEC, PORTS], |port| {
                    if port.str_at(&[NAME]).as_deref() == Some("https") {
                        port.set_int(&[PORT], 10268)?;
                    }
                    Ok(true)
                })
                .unwrap();
            object.set_map_str(&[META, ANNOTATIONS], "b", "2").unwrap();
            assert_eq!(
                object.str_at(&[SPEC, CLUSTER_IP]).as_deref(),
                Some("169.254.2.1")
            );
            assert_eq!(
                object.map_str_at(&[META, ANNOTATIONS], "a").as_deref(),
                Some("1")
            );
            assert_eq!(
                object.map_str_at(&[META, ANNOTATIONS], "b").as_deref(),
                Some("2")
            );
            let mut ports = Vec::new();
            object
                .retain_elements(&[SPEC, PORTS], |port| {
                    ports.push(port.int_at(&[PORT]));
                    Ok(true)
                })
                .unwrap();
            assert_eq!(ports, [Some(10268)]);
            match &object {
                Object::Json(value) => {
                    assert_eq!(
                        value["spec"]["clusterIPs"],
                        serde_json::json!(["169.254.2.1"])
                    );
                    assert_eq!(value["spec"]["unknown"], "kept");
                }
                Object::Protobuf(message) => {
                    let bytes = message.to_bytes();
                    let top = fields(&bytes).unwrap();
                    let spec =
                        fields(top.iter().find(|f| f.number == 2).unwrap().bytes.unwrap()).unwrap();
                    let unknown: Vec<_> = spec.iter().filter(|f| f.number == 99).collect();
                    assert_eq!(unknown.len(), 1);
                    assert_eq!(unknown[0].bytes, Some(&b"unknown"[..]));
                    let ips: Vec<_> = spec
                        .iter()
                        .filter(|f| f.number == 18)
                        .map(|f| f.bytes.unwrap())
                        .collect();
                    assert_eq!(ips, [&b"169.254.2.1"[..]]);
                    // The status was never taken apart.
                    assert!(bytes.ends_with(&{
                        let mut status = Vec::new();
                        put_bytes(&mut status, 3, b"status bytes");
                        status
                    }));
                }
            }
        }
    }

    #[test]
    fn elements_are_dropped_and_replaced() {
        for mut object in both() {
            object
                .retain_elements(&[SPEC, PORTS], |_| Ok(false))
                .unwrap();
            let mut count = 0;
            object
                .retain_elements(&[SPEC, PORTS], |_| {
                    count += 1;
                    Ok(true)
                })
                .unwrap();
            assert_eq!(count, 0);
            let encoding = match object {
                Object::Json(_) => Encoding::Json,
                Object::Protobuf(_) => Encoding::Protobuf,
            };
            let mut port = Object::empty(encoding);
            port.set_str(&[NAME], "https").unwrap();
            port.set_bool(&[key("ready", 7)], true).unwrap();
            object.set_elements(&[SPEC, PORTS], vec![port]).unwrap();
            let mut names = Vec::new();
            object
                .retain_elements(&[SPEC, PORTS], |port| {
                    names.push(port.str_at(&[NAME]));
                    Ok(true)
                })
                .unwrap();
            assert_eq!(names, [Some("https".to_string())]);
        }
    }

    #[test]
    fn malformed_protobuf_is_an_error_never_a_panic() {
        let mut bytes = service_pb();
        bytes.truncate(bytes.len() - 3);
        assert!(Message::parse(&bytes).is_err());
        // A string field where a message is expected.
        let mut object = Object::Protobuf(Message::parse(&service_pb()).unwrap());
        assert!(object.retain_elements(&[META, NAME], |_| Ok(true)).is_err());
    }
}
