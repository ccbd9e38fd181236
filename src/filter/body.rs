//! Filters applied to a response body as it arrives: an object or a list
//! is held whole and filtered at its end; a watch is filtered event by
//! event, an object that stops passing becoming `DELETED` and one that
//! starts passing again `ADDED`. No I/O: the relay and the offline answers
//! feed bytes in and send what comes out.

use std::collections::HashSet;
use std::sync::Arc;

use super::{Context, Filter, FilterError, FilterState, Verdict, run};
use crate::codec::edit::{Key, Opened, key};
use crate::codec::{Encoding, EventType, MAX_OBJECT_BYTES};
use crate::request_info::Verb;

const LIST_ITEMS: Key = key("items", 2);

/// Objects dropped and rewritten, per filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub dropped: [u64; Filter::ALL.len()],
    pub rewritten: [u64; Filter::ALL.len()],
}

impl Counts {
    fn add(&mut self, each: &[(Filter, Verdict)]) {
        for &(filter, verdict) in each {
            let i = Filter::ALL.iter().position(|&f| f == filter).unwrap_or(0);
            match verdict {
                Verdict::Dropped => self.dropped[i] += 1,
                Verdict::Rewritten => self.rewritten[i] += 1,
                Verdict::Unchanged => {}
            }
        }
    }
}

/// Where a session reads what the filters know: the running hub's, current
/// at each object (a watch lives for minutes while the pool or the
/// Services change), or a fixed one.
#[derive(Clone)]
pub enum ContextSource {
    Live(Arc<FilterState>),
    Fixed(Arc<Context>),
}

impl ContextSource {
    fn current(&self) -> Arc<Context> {
        match self {
            ContextSource::Live(state) => state.context(),
            ContextSource::Fixed(context) => context.clone(),
        }
    }
}

/// The filters of one request, and what they did.
pub struct Session {
    filters: Vec<Filter>,
    resource: String,
    context: ContextSource,
    encoding: Encoding,
    pub counts: Counts,
}

impl Session {
    pub fn new(
        filters: Vec<Filter>,
        resource: &str,
        context: ContextSource,
        encoding: Encoding,
    ) -> Session {
        Session {
            filters,
            resource: resource.to_string(),
            context,
            encoding,
            counts: Counts::default(),
        }
    }

    /// Whether one of the filters could change something in `bytes` (an
    /// object, or a whole list): if not, they are passed on unread.
    fn may_change(&self, context: &Context, bytes: &[u8]) -> bool {
        self.filters
            .iter()
            .any(|&f| super::rules::may_change(f, &self.resource, context, bytes))
    }

    /// Whether a filter of this session still lacks its context.
    fn blind(&self) -> bool {
        super::lacking_context(&self.filters, &self.context.current()).is_some()
    }

    /// One object as sent (a protobuf one in its envelope): what the filters
    /// made of it, and its new bytes when rewritten.
    pub fn object(&mut self, bytes: &[u8]) -> Result<(Verdict, Option<Vec<u8>>), FilterError> {
        let context = self.context.current();
        if !self.may_change(&context, bytes) {
            return Ok((Verdict::Unchanged, None));
        }
        let mut opened = Opened::open(self.encoding, bytes)?;
        let (verdict, each) = run(&self.filters, &self.resource, &context, &mut opened.object)?;
        self.counts.add(&each);
        let rewritten = (verdict == Verdict::Rewritten).then(|| opened.seal());
        Ok((verdict, rewritten))
    }

    /// A whole list as sent, its items filtered; `None` when nothing changed.
    pub fn list(&mut self, bytes: &[u8]) -> Result<Option<Vec<u8>>, FilterError> {
        let context = self.context.current();
        if !self.may_change(&context, bytes) {
            return Ok(None);
        }
        let mut opened = Opened::open(self.encoding, bytes)?;
        let mut changed = false;
        let (filters, resource, context) = (&self.filters, self.resource.as_str(), &context);
        let counts = &mut self.counts;
        opened.object.retain_elements(&[LIST_ITEMS], |item| {
            let (verdict, each) = run(filters, resource, context, item)?;
            counts.add(&each);
            changed |= verdict != Verdict::Unchanged;
            Ok(verdict != Verdict::Dropped)
        })?;
        Ok(changed.then(|| opened.seal()))
    }
}

/// A response body on its way through the filters.
pub enum BodyFilter {
    /// An object or a list: held until its end.
    Whole {
        session: Session,
        list: bool,
        bytes: Vec<u8>,
    },
    /// A watch: event by event.
    Watch {
        session: Session,
        /// Bytes of a frame not yet complete.
        unread: Vec<u8>,
        /// Objects this stream hid (namespace, name): the client does not
        /// hold them, so they come back as ADDED.
        hidden: HashSet<(String, String)>,
        /// A frame the filters could not read: the rest of the stream goes
        /// out as it comes (the client decides what to make of it).
        as_it_comes: bool,
        /// Started while a filter lacked its context: once the context is
        /// known, the watch ends with `410 Gone` so the client lists again
        /// (what it listed and watched so far was not filtered).
        blind: bool,
        /// The watch has been ended that way: nothing more goes out.
        ended: bool,
    },
}

impl BodyFilter {
    pub fn new(session: Session, verb: Verb) -> BodyFilter {
        match verb {
            Verb::Watch => BodyFilter::Watch {
                blind: session.blind(),
                session,
                unread: Vec::new(),
                hidden: HashSet::new(),
                as_it_comes: false,
                ended: false,
            },
            verb => BodyFilter::Whole {
                session,
                list: verb == Verb::List,
                bytes: Vec::new(),
            },
        }
    }

    /// Memory held for the body until its end: its bytes and what reading
    /// them takes (a protobuf object is taken apart along the edited paths
    /// and written again; a JSON one becomes a tree of values).
    pub fn held(&self) -> usize {
        match self {
            BodyFilter::Whole { bytes, session, .. } => {
                let factor = match session.encoding {
                    Encoding::Protobuf => 3,
                    Encoding::Json => 8,
                };
                bytes.len().saturating_mul(factor)
            }
            BodyFilter::Watch { .. } => 0,
        }
    }

    /// Whether the stream was ended (with `410 Gone`) and must be closed.
    pub fn ended(&self) -> bool {
        matches!(self, BodyFilter::Watch { ended: true, .. })
    }

    pub fn counts(&self) -> &Counts {
        match self {
            BodyFilter::Whole { session, .. } | BodyFilter::Watch { session, .. } => {
                &session.counts
            }
        }
    }

    /// What the filters did since the last call (for the metrics).
    pub fn take_counts(&mut self) -> Counts {
        match self {
            BodyFilter::Whole { session, .. } | BodyFilter::Watch { session, .. } => {
                std::mem::take(&mut session.counts)
            }
        }
    }

    /// Takes the next bytes of the body; returns what can be sent now, and
    /// the error that made a watch go out unfiltered from here on.
    pub fn push(&mut self, input: &[u8]) -> (Vec<u8>, Option<FilterError>) {
        match self {
            BodyFilter::Whole { bytes, .. } => {
                bytes.extend_from_slice(input);
                (Vec::new(), None)
            }
            BodyFilter::Watch { ended: true, .. } => (Vec::new(), None),
            BodyFilter::Watch {
                as_it_comes: true, ..
            } => (input.to_vec(), None),
            BodyFilter::Watch {
                blind: true,
                session,
                ended,
                ..
            } if !session.blind() => {
                *ended = true;
                let status = gone(session.encoding);
                (
                    session.encoding.encode_event(EventType::Error, &status),
                    None,
                )
            }
            BodyFilter::Watch {
                session,
                unread,
                hidden,
                as_it_comes,
                ..
            } => {
                unread.extend_from_slice(input);
                let mut out = Vec::new();
                let mut consumed = 0;
                while let Some(end) = session.encoding.watch_frame_end(&unread[consumed..]) {
                    let frame = &unread[consumed..consumed + end];
                    let filtered = session
                        .encoding
                        .decode_watch_frame(frame)
                        .and_then(|event| {
                            let Some(event) = event else {
                                return Ok(Vec::new());
                            };
                            Ok(
                                watch_event(session, hidden, event.event_type, event.object)?
                                    .map(|(event_type, object)| {
                                        session.encoding.encode_event(event_type, &object)
                                    })
                                    .unwrap_or_default(),
                            )
                        });
                    match filtered {
                        Ok(sent) => out.extend(sent),
                        Err(e) => {
                            *as_it_comes = true;
                            out.extend_from_slice(&unread[consumed..]);
                            unread.clear();
                            return (out, Some(e));
                        }
                    }
                    consumed += end;
                }
                unread.drain(..consumed);
                if unread.len() > MAX_OBJECT_BYTES {
                    *as_it_comes = true;
                    out.append(unread);
                    let e = crate::codec::CodecError(format!(
                        "watch event larger than {MAX_OBJECT_BYTES} bytes"
                    ));
                    return (out, Some(e));
                }
                (out, None)
            }
        }
    }

    /// The end of the body: what is left to send. An object or list the
    /// filters cannot read goes out as it came (and the error is returned
    /// with it, to be logged).
    pub fn finish(&mut self) -> (Vec<u8>, Option<FilterError>) {
        match self {
            BodyFilter::Whole {
                session,
                list,
                bytes,
            } => {
                let bytes = std::mem::take(bytes);
                let filtered = if *list {
                    session.list(&bytes)
                } else {
                    session.object(&bytes).map(|(_, rewritten)| rewritten)
                };
                match filtered {
                    Ok(Some(rewritten)) => (rewritten, None),
                    Ok(None) => (bytes, None),
                    Err(e) => (bytes, Some(e)),
                }
            }
            BodyFilter::Watch { .. } => (Vec::new(), None),
        }
    }
}

/// The `410 Gone` Status that makes a client list again, in `encoding`.
fn gone(encoding: Encoding) -> Vec<u8> {
    crate::status::status_object(
        encoding,
        410,
        "the hub's response filters now know this node's pool and Services: list again",
    )
}

/// The events one upstream event becomes (none, or one).
fn watch_event(
    session: &mut Session,
    hidden: &mut HashSet<(String, String)>,
    event_type: EventType,
    object: Vec<u8>,
) -> Result<Option<(EventType, Vec<u8>)>, FilterError> {
    if matches!(event_type, EventType::Bookmark | EventType::Error) {
        return Ok(Some((event_type, object)));
    }
    // Nothing to change and nothing hidden: the event goes on unread.
    if hidden.is_empty() && !session.may_change(&session.context.current(), &object) {
        return Ok(Some((event_type, object)));
    }
    let meta = session.encoding.decode_meta(&object)?;
    let key = (meta.namespace, meta.name);
    let (verdict, rewritten) = session.object(&object)?;
    let was_hidden = hidden.contains(&key);
    if verdict == Verdict::Dropped {
        if event_type == EventType::Deleted {
            // Gone upstream too: nothing left to hide.
            let was_hidden = hidden.remove(&key);
            return Ok((!was_hidden).then_some((EventType::Deleted, object)));
        }
        hidden.insert(key);
        // Gone from the client's view: said once; never shown: nothing.
        return Ok(match event_type {
            EventType::Modified | EventType::Deleted if !was_hidden => {
                Some((EventType::Deleted, object))
            }
            _ => None,
        });
    }
    hidden.remove(&key);
    let object = rewritten.unwrap_or(object);
    Ok(match event_type {
        EventType::Deleted if was_hidden => None,
        EventType::Modified if was_hidden => Some((EventType::Added, object)),
        other => Some((other, object)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::HubAddress;
    use serde_json::json;

    fn context() -> Arc<Context> {
        Arc::new(Context {
            hub: HubAddress {
                host: "169.254.2.1".into(),
                port: 10268,
            },
            node_name: "edge-1".into(),
            pool: Some("hangzhou".into()),
            pool_nodes: None,
            topology: None,
        })
    }

    fn session() -> Session {
        Session::new(
            vec![Filter::MasterService, Filter::DiscardCloudService],
            "services",
            ContextSource::Fixed(context()),
            Encoding::Json,
        )
    }

    fn service(name: &str, discard: bool) -> serde_json::Value {
        json!({"kind": "Service", "apiVersion": "v1",
               "metadata": {"namespace": "default", "name": name,
                            "annotations": {"svc.openyurt.io/discard": if discard {"true"} else {"false"}}},
               "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.1",
                        "ports": [{"name": "https", "port": 443}]}})
    }

    #[test]
    fn a_list_loses_dropped_items_and_carries_rewritten_ones() {
        let list = json!({"kind": "ServiceList", "apiVersion": "v1",
                          "metadata": {"resourceVersion": "7", "continue": "abc"},
                          "items": [service("kubernetes", false), service("lb", true), service("web", false)]});
        let mut filter = BodyFilter::new(session(), Verb::List);
        let bytes = serde_json::to_vec(&list).unwrap();
        let (first, second) = bytes.split_at(10);
        assert!(filter.push(first).0.is_empty());
        assert!(filter.push(second).0.is_empty());
        let (out, error) = filter.finish();
        assert!(error.is_none());
        let out: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let names: Vec<&str> = out["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["kubernetes", "web"]);
        assert_eq!(out["items"][0]["spec"]["clusterIP"], "169.254.2.1");
        assert_eq!(out["metadata"]["continue"], "abc");
        let counts = filter.counts();
        assert_eq!(counts.rewritten[1], 1);
        assert_eq!(counts.dropped[2], 1);
    }

    #[test]
    fn an_unchanged_or_unreadable_body_goes_out_as_it_came() {
        for (body, fails) in [
            (&br#"{"kind":"ServiceList","items":[]}"#[..], false),
            // Nothing a filter looks for: passed on unread.
            (b"{not json", false),
            (b"{not json, but kubernetes", true),
        ] {
            let mut filter = BodyFilter::new(session(), Verb::List);
            filter.push(body);
            let (out, error) = filter.finish();
            assert_eq!(out, body);
            assert_eq!(error.is_some(), fails);
        }
    }

    #[test]
    fn in_a_watch_objects_leave_as_deleted_and_come_back_as_added() {
        let rows: &[(EventType, bool, Option<EventType>)] = &[
            (EventType::Added, false, Some(EventType::Added)),
            (EventType::Modified, true, Some(EventType::Deleted)),
            (EventType::Modified, true, None),
            (EventType::Modified, false, Some(EventType::Added)),
            (EventType::Modified, false, Some(EventType::Modified)),
            (EventType::Deleted, false, Some(EventType::Deleted)),
            (EventType::Added, true, None),
            // Deleted while hidden: the client never had it.
            (EventType::Deleted, true, None),
            (EventType::Added, false, Some(EventType::Added)),
            (EventType::Deleted, true, Some(EventType::Deleted)),
        ];
        let mut filter = BodyFilter::new(session(), Verb::Watch);
        for (i, (event_type, discard, want)) in rows.iter().enumerate() {
            let object = serde_json::to_vec(&service("lb", *discard)).unwrap();
            let line = Encoding::Json.encode_event(*event_type, &object);
            let (out, error) = filter.push(&line);
            assert!(error.is_none());
            let got: Vec<EventType> = Encoding::Json
                .watch_decoder()
                .push(&out)
                .unwrap()
                .into_iter()
                .map(|e| e.event_type)
                .collect();
            assert_eq!(got, want.iter().copied().collect::<Vec<_>>(), "row {i}");
        }
        let bookmark = Encoding::Json.encode_event(
            EventType::Bookmark,
            br#"{"kind":"Service","metadata":{"resourceVersion":"9"}}"#,
        );
        assert_eq!(filter.push(&bookmark).0, bookmark);
    }

    #[test]
    fn a_watch_started_without_context_ends_with_410_once_the_context_is_known() {
        let state = Arc::new(FilterState::for_tests());
        let session = Session::new(
            vec![Filter::ServiceTopology],
            "endpointslices",
            ContextSource::Live(state.clone()),
            Encoding::Json,
        );
        let mut filter = BodyFilter::new(session, Verb::Watch);
        let slice = br#"{"kind":"EndpointSlice","metadata":{"namespace":"default","name":"s","labels":{"kubernetes.io/service-name":"s"}},"endpoints":[{"addresses":["10.0.0.1"],"nodeName":"far"}]}"#;
        let event = Encoding::Json.encode_event(EventType::Added, slice);
        // Without context: passed as it came (and /v1/readyz says so).
        assert_eq!(filter.push(&event).0, event);
        assert!(!filter.ended());
        let mut context = (*state.context()).clone();
        context.pool = Some(String::new());
        context.topology = Some(Default::default());
        state.set_context(context);
        let (out, error) = filter.push(&event);
        assert!(error.is_none());
        let events = Encoding::Json.watch_decoder().push(&out).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event_type, EventType::Error);
        let status: serde_json::Value = serde_json::from_slice(&events[0].object).unwrap();
        assert_eq!(
            (status["kind"].as_str(), status["code"].as_i64()),
            (Some("Status"), Some(410))
        );
        assert!(filter.ended());
        assert!(filter.push(&event).0.is_empty());
        // The same Status in protobuf reads back.
        let gone = gone(Encoding::Protobuf);
        assert_eq!(
            Encoding::Protobuf.decode_meta(&gone).unwrap().kind,
            "Status"
        );
        // A watch started with its context never ends that way.
        let session = Session::new(
            vec![Filter::ServiceTopology],
            "endpointslices",
            ContextSource::Live(state.clone()),
            Encoding::Json,
        );
        let mut filter = BodyFilter::new(session, Verb::Watch);
        filter.push(&event);
        assert!(!filter.ended());
    }

    #[test]
    fn an_unreadable_watch_goes_out_as_it_comes_from_there_on() {
        let object = serde_json::to_vec(&service("kubernetes", false)).unwrap();
        let good = Encoding::Json.encode_event(EventType::Added, &object);
        let mut filter = BodyFilter::new(session(), Verb::Watch);
        let (out, error) = filter.push(&[&good[..], b"{broken\n{more"].concat());
        assert!(error.is_some());
        let mut want = Encoding::Json.encode_event(
            EventType::Added,
            &serde_json::to_vec(&{
                let mut s = service("kubernetes", false);
                s["spec"]["clusterIP"] = "169.254.2.1".into();
                s["spec"]["clusterIPs"] = serde_json::json!(["169.254.2.1"]);
                s["spec"]["ports"][0]["port"] = 10268.into();
                s
            })
            .unwrap(),
        );
        want.extend_from_slice(b"{broken\n{more");
        assert_eq!(out, want);
        assert_eq!(filter.push(&good), (good.clone(), None));
    }

    #[test]
    fn a_watch_event_split_anywhere_is_filtered_once_whole() {
        let object = serde_json::to_vec(&service("kubernetes", false)).unwrap();
        let line = Encoding::Json.encode_event(EventType::Modified, &object);
        for cut in 1..line.len() {
            let mut filter = BodyFilter::new(session(), Verb::Watch);
            let mut out = filter.push(&line[..cut]).0;
            out.extend(filter.push(&line[cut..]).0);
            let events = Encoding::Json.watch_decoder().push(&out).unwrap();
            assert_eq!(events.len(), 1);
            let value: serde_json::Value = serde_json::from_slice(&events[0].object).unwrap();
            assert_eq!(value["spec"]["clusterIP"], "169.254.2.1");
        }
    }

    #[test]
    fn mutated_objects_lists_and_streams_never_panic_the_filters() {
        let fixture = |name: &str| {
            std::fs::read(format!(
                "{}/tests/fixtures/protobuf/{name}",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap()
        };
        let seeds: Vec<Vec<u8>> = [
            "svc-kubernetes.pb",
            "svc-lb.pb",
            "eps-kubernetes.pb",
            "eps-topology.pb",
            "cm-kube-proxy.pb",
            "pod-env.pb",
            "podlist.pb",
            "watch.pb",
        ]
        .iter()
        .map(|f| fixture(f))
        .chain([serde_json::to_vec(&service("kubernetes", true)).unwrap()])
        .collect();
        let seeds: Vec<&[u8]> = seeds.iter().map(Vec::as_slice).collect();
        let mut context = (*context()).clone();
        context.topology = Some(Default::default());
        context.pool_nodes = Some(Default::default());
        let context = Arc::new(context);
        crate::fuzz::run(0x5eed_0010, &seeds, 3_000, |input| {
            for (resource, verb) in [
                ("services", Verb::List),
                ("endpointslices", Verb::Watch),
                ("configmaps", Verb::Get),
                ("pods", Verb::List),
                ("services", Verb::Watch),
            ] {
                for encoding in [Encoding::Protobuf, Encoding::Json] {
                    let session = Session::new(
                        Filter::ALL.to_vec(),
                        resource,
                        ContextSource::Fixed(context.clone()),
                        encoding,
                    );
                    let mut filter = BodyFilter::new(session, verb);
                    let (first, second) = input.split_at(input.len() / 2);
                    let _ = filter.push(first);
                    let _ = filter.push(second);
                    let _ = filter.finish();
                }
            }
        });
    }
}
