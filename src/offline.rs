//! Offline answers: what the hub says from its cache when no apiserver can be
//! reached, so that node components keep working (behaviour.md section 5, with
//! selectors honoured and any number of list shapes).
//!
//! | request | answer |
//! |---|---|
//! | get | 200 cached object, or 404 Status |
//! | list | 200 list of cached objects matching namespace and selectors, in a shape listed before (`metadata.name=X`: any), else 404; kubelet's empty pod list is 404 |
//! | watch | 200, no events, held until `timeoutSeconds` (or `--min-request-timeout`), the cloud's return, or the client leaving |
//! | create | 201 echoing the request body |
//! | update, patch | 200 with the cached object (the change is not kept), or 404 |
//! | delete, deletecollection | 403 Status |
//! | discovery (`/version`, `/api`, `/apis`, ...) | 200 cached document, else 400 Status |
//! | anything from a component that is not cached | 400 Status |

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cache::lists::ListType;
use crate::cache::{Cache, key::Collection, shape_of};
use crate::codec::{self, Encoding};
use crate::health::HealthState;
use crate::http::{Exchange, Stream};
use crate::proxy::respond_status;
use crate::request_info::{Query, RequestInfo, Verb};
use crate::selector::{FieldSelector, LabelSelector};

/// Largest request body echoed back by an offline create (the apiserver's own limit).
const MAX_CREATE_BODY: u64 = 3 * 1024 * 1024;
/// How often a held watch checks that its client is still there.
const CLIENT_CHECK: Duration = Duration::from_secs(1);

pub struct Local {
    pub cache: Arc<Cache>,
    pub health: Arc<HealthState>,
    pub min_request_timeout: Duration,
}

impl Local {
    /// Answers a request from the cache. `component` is the client's.
    pub fn answer<S: Stream>(
        &self,
        exchange: &mut Exchange<'_, S>,
        info: &RequestInfo,
        query: &Query,
        component: &str,
    ) {
        if !info.is_resource_request {
            return self.discovery(exchange, info);
        }
        let edge_cache = exchange
            .head
            .header("edge-cache")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        match info.verb {
            Verb::Delete | Verb::DeleteCollection => {
                return respond_status(
                    exchange,
                    403,
                    "delete request is not supported in local cache",
                );
            }
            Verb::Create => return self.create(exchange),
            Verb::Watch => return self.hold_watch(exchange, query),
            _ => {}
        }
        let collection = Collection::for_request(component, info)
            .filter(|_| self.cache.is_cached_component(component, edge_cache));
        let Some(collection) = collection else {
            let who = if component.is_empty() {
                "a client without User-Agent".to_string()
            } else {
                format!("component {component:?}")
            };
            return respond_status(
                exchange,
                400,
                &format!("apiserver unreachable and {who} is not cached by the hub"),
            );
        };
        let accepted = codec::accepted(exchange.head.header("accept"));
        if accepted.is_empty() {
            return respond_status(
                exchange,
                406,
                "the hub answers offline only in application/json or application/vnd.kubernetes.protobuf",
            );
        }
        match info.verb {
            Verb::Get | Verb::Update | Verb::Patch => {
                self.get(exchange, info, &collection, &accepted)
            }
            Verb::List => self.list(exchange, info, query, component, &collection, &accepted),
            _ => respond_status(
                exchange,
                405,
                &format!("{} is not supported in local cache", info.method),
            ),
        }
    }

    /// Whether the cache holds a real answer (an object, a listed shape, a
    /// discovery document) for a read. Used before the first health probe has
    /// finished: the cache answers at once instead of waiting for a connect
    /// to an apiserver that may be unreachable.
    pub fn has_answer(
        &self,
        info: &RequestInfo,
        query: &Query,
        component: &str,
        edge_cache: bool,
        accept: Option<&str>,
    ) -> bool {
        if !info.is_resource_request {
            return info.verb == Verb::Get && self.cache.read_discovery(&info.path).is_some();
        }
        let Some(collection) = Collection::for_request(component, info) else {
            return false;
        };
        if !self.cache.is_cached_component(component, edge_cache) {
            return false;
        }
        let accepted = codec::accepted(accept);
        match info.verb {
            Verb::Get => accepted.iter().any(|&encoding| {
                self.cache
                    .read_object(&collection, &info.namespace, &info.name, encoding)
                    .is_some()
            }),
            Verb::List => self
                .cache
                .listed_shape(&collection, &shape_of(info, query))
                .is_some_and(|list_type| accepted.iter().any(|e| listed_in(&list_type, *e))),
            _ => false,
        }
    }

    fn get<S: Stream>(
        &self,
        exchange: &mut Exchange<'_, S>,
        info: &RequestInfo,
        collection: &Collection,
        accepted: &[Encoding],
    ) {
        // The first encoding the client accepts that the cache holds.
        let found = accepted.iter().find_map(|&encoding| {
            let object =
                self.cache
                    .read_object(collection, &info.namespace, &info.name, encoding)?;
            Some((encoding, object))
        });
        match found {
            Some((encoding, object)) => {
                let _ = exchange.respond(200, &content_type(encoding.content_type()), &object);
            }
            None => respond_status(
                exchange,
                404,
                &format!("{} {:?} not found", info.resource, info.name),
            ),
        }
    }

    fn list<S: Stream>(
        &self,
        exchange: &mut Exchange<'_, S>,
        info: &RequestInfo,
        query: &Query,
        component: &str,
        collection: &Collection,
        accepted: &[Encoding],
    ) {
        let shape = shape_of(info, query);
        let labels = match LabelSelector::parse(&shape.label_selector) {
            Ok(labels) => labels,
            Err(e) => return respond_status(exchange, 400, &e.to_string()),
        };
        let fields = match FieldSelector::parse(&shape.field_selector) {
            Ok(fields) => fields,
            Err(e) => return respond_status(exchange, 400, &e.to_string()),
        };
        let list_type = self.cache.listed_shape(collection, &shape).or_else(|| {
            // A list narrowed to one name is answered even if never listed.
            fields.required_name().map(|_| {
                let mut list_type = self.cache.any_list_type(collection).unwrap_or(ListType {
                    kind: "List".into(),
                    api_version: "v1".into(),
                    encodings: Default::default(),
                });
                list_type.encodings = accepted.iter().map(|e| e.extension().to_string()).collect();
                list_type
            })
        });
        let Some(list_type) = list_type else {
            return respond_status(
                exchange,
                404,
                &format!(
                    "{} in this shape were never listed through the hub",
                    info.resource
                ),
            );
        };
        // The first accepted encoding the shape was listed in whose objects the
        // selector can be evaluated on.
        let usable = accepted
            .iter()
            .copied()
            .filter(|&e| listed_in(&list_type, e) && fields.fields().all(|f| e.can_read_field(f)));
        let mut chosen = None;
        for encoding in usable {
            let (items, max_rv) =
                self.cache
                    .select(collection, &info.namespace, &labels, &fields, encoding);
            let found_something = !items.is_empty();
            if chosen.is_none() || found_something {
                chosen = Some((encoding, items, max_rv));
            }
            if found_something {
                break;
            }
        }
        let Some((encoding, items, max_rv)) = chosen else {
            return respond_status(
                exchange,
                404,
                &format!(
                    "{} in this shape are not cached in an encoding the client accepts",
                    info.resource
                ),
            );
        };
        if items.is_empty() && component == "kubelet" && info.resource == "pods" {
            // An empty pod list would make kubelet stop every pod on the node.
            return respond_status(exchange, 404, "no pods cached for kubelet");
        }
        let body = encoding.encode_list(
            &list_type.kind,
            &list_type.api_version,
            &max_rv.to_string(),
            &items,
        );
        let _ = exchange.respond(200, &content_type(encoding.content_type()), &body);
    }

    fn create<S: Stream>(&self, exchange: &mut Exchange<'_, S>) {
        let mut body = Vec::new();
        let read = exchange
            .body()
            .take(MAX_CREATE_BODY + 1)
            .read_to_end(&mut body);
        if read.is_err() {
            return respond_status(exchange, 400, "cannot read the request body");
        }
        if body.len() as u64 > MAX_CREATE_BODY {
            exchange.close_after();
            return respond_status(exchange, 413, "request body too large");
        }
        let kind = exchange
            .head
            .header("content-type")
            .unwrap_or("application/json")
            .to_string();
        let _ = exchange.respond(201, &content_type(&kind), &body);
    }

    /// Holds a watch open with no events until it times out, the cloud comes
    /// back (so the client re-watches there at once), or the client leaves.
    fn hold_watch<S: Stream>(&self, exchange: &mut Exchange<'_, S>, query: &Query) {
        let timeout = query
            .timeout_seconds()
            .filter(|&s| s > 0)
            .map(Duration::from_secs)
            .unwrap_or(self.min_request_timeout);
        let encoding = codec::accepted(exchange.head.header("accept"))
            .first()
            .copied()
            .unwrap_or(Encoding::Json);
        if exchange
            .start_response(200, &content_type(encoding.watch_content_type()), None)
            .is_err()
        {
            return;
        }
        let deadline = Instant::now() + timeout;
        loop {
            let generation = self.health.generation();
            if self.health.any_healthy() || exchange.client_gone() {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            self.health.wait_change(generation, left.min(CLIENT_CHECK));
        }
        let _ = exchange.finish();
    }

    fn discovery<S: Stream>(&self, exchange: &mut Exchange<'_, S>, info: &RequestInfo) {
        if info.verb == Verb::Get
            && let Some(document) = self.cache.read_discovery(&info.path)
        {
            let _ = exchange.respond(200, &content_type("application/json"), &document);
            return;
        }
        respond_status(
            exchange,
            400,
            &format!("apiserver unreachable and {} is not cached", info.path),
        );
    }
}

/// Whether a shape was listed in an encoding (shapes recorded before encodings
/// were tracked were JSON).
fn listed_in(list_type: &ListType, encoding: Encoding) -> bool {
    list_type.encodings.contains(encoding.extension())
        || (list_type.encodings.is_empty() && encoding == Encoding::Json)
}

fn content_type(value: &str) -> Vec<(String, String)> {
    vec![("Content-Type".to_string(), value.to_string())]
}
