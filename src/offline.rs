//! Offline answers: what the hub says from its cache when no apiserver can be
//! reached, so that node components keep working (behaviour.md section 5, with
//! selectors honoured, any number of list shapes, streaming lists and
//! service-account tokens). `Offline::decide` is the README's offline table as
//! one function returning an `Answer`; `Offline::write` sends any answer.

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::budget::{MemoryBudget, Reservation};
use crate::cache::Item;
use crate::cache::discovery::{self, DocumentType};
use crate::cache::lists::ListType;
use crate::cache::tokens;
use crate::cache::{Cache, key::Collection, shape_of};
use crate::codec::{self, Encoding, Pieces};
use crate::filter::{FilterState, Verdict};
use crate::health::HealthState;
use crate::http::{Exchange, Stream};
use crate::request_info::{Query, RequestInfo, Verb};
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::{Refusal, refuse, refuse_with};

/// Marks every write the hub answered by itself.
pub const OFFLINE_HEADER: &str = "X-Yurthub-Offline";
/// Largest request body read offline (the apiserver's own limit).
pub const MAX_OFFLINE_BODY: u64 = 3 * 1024 * 1024;
/// How often a held watch checks that its client is still there.
const CLIENT_CHECK: Duration = Duration::from_secs(1);

/// What the request says, as far as an offline answer depends on it.
pub struct OfflineRequest<'a> {
    pub info: &'a RequestInfo,
    pub query: &'a Query,
    pub component: &'a str,
    /// `Edge-Cache: true`: cache (and answer) this component even if not an agent.
    pub edge_cache: bool,
    pub accept: Option<&'a str>,
    pub content_type: Option<&'a str>,
    /// The request body, when one was read (create and TokenRequest).
    pub body: Option<&'a [u8]>,
}

/// One offline answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// 200: a cached object.
    Found { encoding: Encoding, body: Vec<u8> },
    /// 200: a list of cached objects, sent as they are held.
    List {
        encoding: Encoding,
        body: Pieces<Item>,
    },
    /// 200: a streaming list's initial events (every cached object of the
    /// shape as ADDED, then the annotated bookmark), then held as `Held`.
    InitialEvents {
        encoding: Encoding,
        events: Pieces<Item>,
    },
    /// 200 with no events, held until `timeoutSeconds`, the cloud's return
    /// or the client leaving.
    Held { encoding: Encoding },
    /// 201 echoing the request body (not stored).
    Echo { content_type: String, body: Vec<u8> },
    /// 201: a service-account token the cloud issued before, still valid.
    Token { encoding: Encoding, body: Vec<u8> },
    /// 200: a cached discovery document in a type the client accepts.
    Document { content_type: String, body: Vec<u8> },
    /// A `Status` error.
    Refused { code: u16, message: String },
}

impl Answer {
    /// Whether the answer comes from what the cache holds (not a refusal, an
    /// echo or an empty held watch): such an answer is given at once even
    /// before the first health probe has finished.
    pub fn is_from_cache(&self) -> bool {
        matches!(
            self,
            Answer::Found { .. }
                | Answer::List { .. }
                | Answer::InitialEvents { .. }
                | Answer::Token { .. }
                | Answer::Document { .. }
        )
    }

    /// Bytes of body the answer holds.
    pub fn body_len(&self) -> usize {
        match self {
            Answer::Found { body, .. }
            | Answer::Token { body, .. }
            | Answer::Echo { body, .. }
            | Answer::Document { body, .. } => body.len(),
            Answer::List { body, .. } | Answer::InitialEvents { events: body, .. } => body.len(),
            Answer::Held { .. } => 0,
            Answer::Refused { message, .. } => message.len(),
        }
    }

    /// The status code the client gets.
    pub fn code(&self) -> u16 {
        match self {
            Answer::Echo { .. } | Answer::Token { .. } => 201,
            Answer::Refused { code, .. } => *code,
            _ => 200,
        }
    }
}

fn refused(code: u16, message: impl Into<String>) -> Answer {
    Answer::Refused {
        code,
        message: message.into(),
    }
}

/// Whether an offline answer needs the request body.
pub fn needs_body(info: &RequestInfo) -> bool {
    info.is_resource_request && info.verb == Verb::Create
}

/// Whether a request registers a node (kubelet's `POST /api/v1/nodes`).
fn is_node_registration(info: &RequestInfo) -> bool {
    info.is_resource_request
        && info.api_group.is_empty()
        && info.resource == "nodes"
        && info.subresource.is_empty()
        && info.verb == Verb::Create
}

/// Whether a request asks for credentials (Secrets, service-account tokens):
/// what the secure port never answers from the cache, where no token can be
/// checked.
pub fn is_credential(info: &RequestInfo) -> bool {
    info.is_resource_request
        && info.api_group.is_empty()
        && (info.resource == "secrets"
            || (info.resource == "serviceaccounts" && info.subresource == "token"))
}

/// A list selected from the cache.
struct Selected {
    encoding: Encoding,
    list_type: ListType,
    items: Vec<crate::cache::Item>,
    max_rv: u64,
    /// The items, and the list or events built from them, held against the
    /// memory budget while they are built.
    held: Reservation,
}

impl Selected {
    /// Reserves room for the framing the answer puts around the items (sent
    /// as they are held, never copied), or refuses with 429.
    fn reserve_build(mut self) -> Result<Selected, Answer> {
        let items: usize = self.items.iter().map(|i| i.len()).sum();
        let framing = self.items.len().saturating_mul(64) + 4096;
        let total = items.saturating_add(framing);
        if self.held.grow_or_oversize(total) {
            Ok(self)
        } else {
            Err(budget_spent())
        }
    }
}

fn budget_spent() -> Answer {
    refused(
        429,
        "the hub's memory budget for requests in flight is spent, retry later",
    )
}

pub struct Offline {
    pub cache: Arc<Cache>,
    pub budget: Arc<MemoryBudget>,
    pub health: Arc<HealthState>,
    pub min_request_timeout: Duration,
    /// The response filters apply to offline answers as to the cloud's.
    pub filters: Arc<FilterState>,
}

impl Offline {
    /// The offline answer to a request (reads the cache, writes nothing).
    pub fn decide(&self, request: &OfflineRequest<'_>) -> Answer {
        let info = request.info;
        if !info.is_resource_request {
            return self.discovery(request);
        }
        let first_accepted = codec::accepted(request.accept)
            .first()
            .copied()
            .unwrap_or(Encoding::Json);
        match info.verb {
            Verb::Delete | Verb::DeleteCollection => {
                return refused(403, "delete request is not supported in local cache");
            }
            Verb::Create if tokens::is_token_request(info) => return self.token(request),
            // kubelet takes a registration that succeeded for done and never
            // registers again: a faked one for a node the cloud may not have
            // would leave it missing for good. Answered locally only when the
            // cache holds that node (it exists in the cloud: a reboot
            // offline); else refused, and retried until the cloud answers.
            Verb::Create if is_node_registration(info) && !self.holds_node(request) => {
                return refused(
                    503,
                    "apiserver unreachable: a node registration is never answered locally; retry when the cloud returns",
                );
            }
            Verb::Create => {
                return Answer::Echo {
                    content_type: request
                        .content_type
                        .unwrap_or("application/json")
                        .to_string(),
                    body: request.body.unwrap_or_default().to_vec(),
                };
            }
            Verb::Watch if !request.query.sends_initial_events() => {
                return Answer::Held {
                    encoding: first_accepted,
                };
            }
            _ => {}
        }
        let collection = Collection::for_request(request.component, info).filter(|_| {
            self.cache
                .is_cached_component(request.component, request.edge_cache)
        });
        let Some(collection) = collection else {
            let who = if request.component.is_empty() {
                "a client without User-Agent".to_string()
            } else {
                format!("component {:?}", request.component)
            };
            return refused(
                400,
                format!("apiserver unreachable and {who} is not cached by the hub"),
            );
        };
        let accepted = codec::accepted(request.accept);
        if accepted.is_empty() {
            return refused(
                406,
                "the hub answers offline only in application/json or application/vnd.kubernetes.protobuf",
            );
        }
        match info.verb {
            // A status report faked here would be believed: kubelet would not
            // send it again for minutes once the cloud returns.
            Verb::Update | Verb::Patch if info.subresource == "status" => refused(
                503,
                format!(
                    "apiserver unreachable: the {} status is not kept offline, report it again when the cloud returns",
                    info.resource
                ),
            ),
            Verb::Get | Verb::Update | Verb::Patch => {
                let answer = self.object(info, &collection, &accepted);
                self.filter_object(request, answer)
            }
            Verb::List => match self
                .select_list(request, &collection, &accepted)
                .and_then(Selected::reserve_build)
                .map(|selected| self.filter_items(request, selected))
            {
                Ok(selected) => Answer::List {
                    encoding: selected.encoding,
                    body: selected.encoding.encode_list(
                        &selected.list_type.kind,
                        &selected.list_type.api_version,
                        &selected.max_rv.to_string(),
                        selected.items,
                    ),
                },
                Err(refused) => refused,
            },
            Verb::Watch => match self
                .select_list(request, &collection, &accepted)
                .and_then(Selected::reserve_build)
                .map(|selected| self.filter_items(request, selected))
            {
                Ok(selected) => initial_events(selected),
                Err(refused) => refused,
            },
            _ => refused(
                405,
                format!("{} is not supported in local cache", info.method),
            ),
        }
    }

    /// Reads what the offline answer needs from the request, decides and
    /// writes the answer. `body`: the request body if the caller read it.
    pub fn answer<S: Stream>(
        &self,
        exchange: &mut Exchange<'_, S>,
        info: &RequestInfo,
        query: &Query,
        component: &str,
        body: Option<&[u8]>,
    ) {
        let read;
        let body = match body {
            Some(body) => Some(body),
            None if needs_body(info) => match read_body(exchange, &self.budget) {
                Ok((bytes, reservation)) => {
                    read = (bytes, reservation);
                    Some(read.0.as_slice())
                }
                Err(refused) => return self.write(exchange, refused, query),
            },
            None => None,
        };
        let request = OfflineRequest {
            info,
            query,
            component,
            edge_cache: is_edge_cache(exchange),
            accept: exchange.head.header("accept"),
            content_type: exchange.head.header("content-type"),
            body,
        };
        let answer = self.decide(&request);
        self.write(exchange, answer, query);
    }

    /// Sends an answer; held watches and streaming lists stay open until
    /// they end (see `hold`).
    pub fn write<S: Stream>(&self, exchange: &mut Exchange<'_, S>, answer: Answer, query: &Query) {
        // Held while it is sent; an answer past the budget is refused (it
        // was built, but is not kept while a slow client takes it).
        let mut held = self.budget.empty();
        if !held.grow_or_oversize(answer.body_len()) {
            return refuse(exchange, &Refusal::MemoryBudgetSpent);
        }
        let code = answer.code();
        // A write answered here says so: the cloud never saw it.
        let is_write = matches!(
            exchange.head.method.as_str(),
            "POST" | "PUT" | "PATCH" | "DELETE"
        );
        let marker: Vec<(String, String)> = is_write
            .then(|| (OFFLINE_HEADER.to_string(), "true".to_string()))
            .into_iter()
            .collect();
        let content_type = |value: &str| {
            let mut headers = content_type(value);
            headers.extend_from_slice(&marker);
            headers
        };
        match answer {
            Answer::Found { encoding, body } | Answer::Token { encoding, body } => {
                let _ = exchange.respond(code, &content_type(encoding.content_type()), &body);
            }
            Answer::List { encoding, body } => {
                let headers = content_type(encoding.content_type());
                if exchange
                    .start_response(code, &headers, Some(body.len() as u64))
                    .is_ok()
                    && exchange.write_body_pieces(body.slices()).is_ok()
                {
                    let _ = exchange.finish();
                }
            }
            Answer::Echo {
                content_type: ct,
                body,
            }
            | Answer::Document {
                content_type: ct,
                body,
            } => {
                let _ = exchange.respond(code, &content_type(&ct), &body);
            }
            Answer::Refused { code, message } => {
                refuse_with(exchange, &Refusal::Offline { code, message }, &marker)
            }
            Answer::Held { encoding } => {
                if exchange
                    .start_response(200, &content_type(encoding.watch_content_type()), None)
                    .is_ok()
                {
                    self.hold(exchange, query);
                }
            }
            Answer::InitialEvents { encoding, events } => {
                if exchange
                    .start_response(200, &content_type(encoding.watch_content_type()), None)
                    .is_err()
                {
                    return;
                }
                if exchange.write_body_pieces(events.slices()).is_err() {
                    return;
                }
                // Sent: nothing of it is kept while the stream is held.
                drop(events);
                drop(held);
                self.hold(exchange, query);
            }
        }
    }

    /// Holds a started watch open until it times out, the cloud comes back
    /// (so the client re-watches there at once), or the client leaves.
    fn hold<S: Stream>(&self, exchange: &mut Exchange<'_, S>, query: &Query) {
        let timeout = query
            .timeout_seconds()
            .filter(|&s| s > 0)
            .map(Duration::from_secs)
            .unwrap_or(self.min_request_timeout);
        let started = Instant::now();
        loop {
            let generation = self.health.generation();
            if self.health.any_healthy() || exchange.client_gone() {
                break;
            }
            let left = timeout.saturating_sub(started.elapsed());
            if left.is_zero() {
                break;
            }
            self.health.wait_change(generation, left.min(CLIENT_CHECK));
        }
        let _ = exchange.finish();
    }

    /// A cached object as the response filters leave it for this client.
    fn filter_object(&self, request: &OfflineRequest<'_>, answer: Answer) -> Answer {
        let Answer::Found { encoding, body } = answer else {
            return answer;
        };
        let filters = self.filters.for_request(request.component, request.info);
        if filters.is_empty() {
            return Answer::Found { encoding, body };
        }
        let mut session = self
            .filters
            .session(&filters, &request.info.resource, encoding);
        let answer = match session.object(&body) {
            Ok((Verdict::Dropped, _)) => refused(
                404,
                format!(
                    "{} {:?} not found",
                    request.info.resource, request.info.name
                ),
            ),
            Ok((_, Some(rewritten))) => Answer::Found {
                encoding,
                body: rewritten,
            },
            Ok((_, None)) => Answer::Found { encoding, body },
            Err(e) => {
                log::warn!(
                    "cached {} sent unfiltered, the filters cannot read it: {e}",
                    request.info.resource
                );
                Answer::Found { encoding, body }
            }
        };
        self.filters.record(&session.counts);
        answer
    }

    /// The objects of a list as the response filters leave them for this
    /// client (a rewritten one replaces the cached one in the answer only).
    fn filter_items(&self, request: &OfflineRequest<'_>, mut selected: Selected) -> Selected {
        let filters = self.filters.for_request(request.component, request.info);
        if filters.is_empty() {
            return selected;
        }
        let mut session = self
            .filters
            .session(&filters, &request.info.resource, selected.encoding);
        selected.items = std::mem::take(&mut selected.items)
            .into_iter()
            .filter_map(|item| match session.object(&item) {
                Ok((Verdict::Dropped, _)) => None,
                Ok((_, Some(rewritten))) => Some(Item::from(rewritten)),
                Ok((_, None)) => Some(item),
                Err(e) => {
                    log::warn!(
                        "a cached {} sent unfiltered, the filters cannot read it: {e}",
                        request.info.resource
                    );
                    Some(item)
                }
            })
            .collect();
        self.filters.record(&session.counts);
        selected
    }

    /// Whether the cache holds the node a registration's body names.
    fn holds_node(&self, request: &OfflineRequest<'_>) -> bool {
        let encoding = request
            .content_type
            .and_then(Encoding::from_content_type)
            .unwrap_or(Encoding::Json);
        let Some(name) = request
            .body
            .and_then(|body| encoding.decode_meta(body).ok())
            .map(|meta| meta.name)
            .filter(|name| !name.is_empty())
        else {
            return false;
        };
        let Some(collection) = Collection::for_request(request.component, request.info) else {
            return false;
        };
        [Encoding::Json, Encoding::Protobuf]
            .into_iter()
            .any(|encoding| {
                self.cache
                    .read_object(&collection, "", &name, encoding)
                    .is_some()
            })
    }

    fn object(&self, info: &RequestInfo, collection: &Collection, accepted: &[Encoding]) -> Answer {
        // The first encoding the client accepts that the cache holds.
        accepted
            .iter()
            .find_map(|&encoding| {
                let body =
                    self.cache
                        .read_object(collection, &info.namespace, &info.name, encoding)?;
                Some(Answer::Found { encoding, body })
            })
            .unwrap_or_else(|| refused(404, format!("{} {:?} not found", info.resource, info.name)))
    }

    /// The cached objects of a list (or streaming list) request: only for a
    /// shape listed before (a list narrowed to one name: any), never kubelet's
    /// empty pod list (kubelet would stop every pod on the node).
    fn select_list(
        &self,
        request: &OfflineRequest<'_>,
        collection: &Collection,
        accepted: &[Encoding],
    ) -> Result<Selected, Answer> {
        let info = request.info;
        let shape = shape_of(info, request.query);
        let labels =
            LabelSelector::parse(&shape.label_selector).map_err(|e| refused(400, e.to_string()))?;
        let fields =
            FieldSelector::parse(&shape.field_selector).map_err(|e| refused(400, e.to_string()))?;
        let list_type = self.cache.listed_shape(collection, &shape).or_else(|| {
            // A list narrowed to one name is answered even if never listed.
            fields.required_name().map(|_| {
                let mut list_type = self.cache.any_list_type(collection).unwrap_or(ListType {
                    kind: "List".into(),
                    api_version: "v1".into(),
                    ..Default::default()
                });
                list_type.encodings = accepted.iter().map(|e| e.extension().to_string()).collect();
                list_type
            })
        });
        let Some(list_type) = list_type else {
            return Err(refused(
                404,
                format!(
                    "{} in this shape were never listed through the hub",
                    info.resource
                ),
            ));
        };
        // The first accepted encoding the shape was listed in whose objects the
        // selector can be evaluated on.
        let usable = accepted
            .iter()
            .copied()
            .filter(|&e| listed_in(&list_type, e) && fields.fields().all(|f| e.can_read_field(f)));
        let mut chosen = None;
        let mut held = self.budget.empty();
        for encoding in usable {
            let (items, max_rv) = self
                .cache
                .select(
                    collection,
                    &info.namespace,
                    &labels,
                    &fields,
                    encoding,
                    &mut held,
                )
                .ok_or_else(budget_spent)?;
            let found_something = !items.is_empty();
            if chosen.is_none() || found_something {
                chosen = Some((encoding, items, max_rv));
            }
            if found_something {
                break;
            }
        }
        let Some((encoding, items, max_rv)) = chosen else {
            return Err(refused(
                404,
                format!(
                    "{} in this shape are not cached in an encoding the client accepts",
                    info.resource
                ),
            ));
        };
        if items.is_empty() && request.component == "kubelet" && info.resource == "pods" {
            return Err(refused(404, "no pods cached for kubelet"));
        }
        Ok(Selected {
            encoding,
            list_type,
            items,
            max_rv,
            held,
        })
    }

    fn token(&self, request: &OfflineRequest<'_>) -> Answer {
        let info = request.info;
        let unavailable = || {
            refused(
                503,
                format!(
                    "apiserver unreachable and no valid token issued earlier is cached for serviceaccount {}/{} with these audiences and bound object",
                    info.namespace, info.name
                ),
            )
        };
        if !self
            .cache
            .is_cached_component(request.component, request.edge_cache)
        {
            return unavailable();
        }
        let body = request.body.unwrap_or_default();
        let Some((owner, spec)) =
            tokens::identify(info, request.component, request.content_type, body)
        else {
            return refused(400, "the TokenRequest body cannot be read");
        };
        let accepted = codec::accepted(request.accept);
        match self.cache.read_token(&owner, &spec, &accepted) {
            Some((encoding, body)) => Answer::Token { encoding, body },
            None => unavailable(),
        }
    }

    fn discovery(&self, request: &OfflineRequest<'_>) -> Answer {
        let path = &request.info.path;
        let not_cached = || {
            refused(
                400,
                format!("apiserver unreachable and {path} is not cached"),
            )
        };
        if request.info.verb != Verb::Get {
            return not_cached();
        }
        let wanted = discovery::accepted(request.accept);
        for document_type in &wanted {
            if let Some(body) = self.cache.read_discovery(path, *document_type) {
                return Answer::Document {
                    content_type: document_type.content_type(),
                    body,
                };
            }
        }
        let cached_otherwise = DocumentType::ALL
            .iter()
            .any(|t| !wanted.contains(t) && self.cache.read_discovery(path, *t).is_some());
        if cached_otherwise {
            return refused(
                406,
                format!(
                    "apiserver unreachable and {path} is cached only in types the client does not accept"
                ),
            );
        }
        not_cached()
    }
}

/// A streaming list's initial events: every selected object as ADDED, then
/// the bookmark carrying the highest resourceVersion and the annotation.
fn initial_events(selected: Selected) -> Answer {
    let encoding = selected.encoding;
    let kind = selected
        .list_type
        .kind
        .strip_suffix("List")
        .filter(|k| !k.is_empty())
        .unwrap_or(&selected.list_type.kind);
    let bookmark = encoding.initial_events_end_bookmark(
        kind,
        &selected.list_type.api_version,
        &selected.max_rv.to_string(),
    );
    let events = encoding.encode_initial_events(selected.items, &bookmark);
    Answer::InitialEvents { encoding, events }
}

/// Reads a request body for an offline answer, at most `MAX_OFFLINE_BODY`.
/// Reads a request body whole (at most `MAX_OFFLINE_BODY`), held against
/// the memory budget for as long as the reservation lives.
pub fn read_body<S: Stream>(
    exchange: &mut Exchange<'_, S>,
    budget: &Arc<MemoryBudget>,
) -> Result<(Vec<u8>, Reservation), Answer> {
    const PIECE: usize = 64 * 1024;
    let mut reservation = budget.empty();
    let mut body = Vec::new();
    let mut reader = exchange.body().take(MAX_OFFLINE_BODY + 1);
    loop {
        if !reservation.grow_to(body.len() + PIECE) {
            exchange.close_after();
            return Err(refused(
                429,
                "the hub's memory budget for requests in flight is spent, retry later",
            ));
        }
        let at = body.len();
        body.reserve_exact(PIECE);
        body.resize(at + PIECE, 0);
        match reader.read(&mut body[at..]) {
            Ok(0) => {
                body.truncate(at);
                break;
            }
            Ok(n) => body.truncate(at + n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => body.truncate(at),
            Err(_) => return Err(refused(400, "cannot read the request body")),
        }
    }
    if body.len() as u64 > MAX_OFFLINE_BODY {
        exchange.close_after();
        return Err(refused(413, "request body too large"));
    }
    Ok((body, reservation))
}

pub fn is_edge_cache<S: Stream>(exchange: &Exchange<'_, S>) -> bool {
    exchange
        .head
        .header("edge-cache")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
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

/// Writes an answer that can only be a refusal (a body that could not be read).
pub fn write_refusal<S: Stream>(exchange: &mut Exchange<'_, S>, answer: Answer) {
    let code = answer.code();
    let message = match answer {
        Answer::Refused { message, .. } => message,
        _ => String::new(),
    };
    refuse(exchange, &Refusal::Offline { code, message });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::agents::Agents;
    use crate::cache::lists::{ListShape, ShapeIndex};
    use crate::cache::tokens::{TokenOwner, TokenRecord};
    use crate::codec::token::TokenSpec;
    use crate::request_info::classify;
    use std::path::Path;

    const POD: &str = r#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"p1","namespace":"default","resourceVersion":"5"},"spec":{"nodeName":"edge-1"}}"#;
    const TOKEN_BODY: &str = r#"{"spec":{"audiences":["api"],"boundObjectRef":{"kind":"Pod","apiVersion":"v1","name":"p1","uid":"u1"}}}"#;
    const ISSUED: &str = r#"{"kind":"TokenRequest","status":{"token":"t","expirationTimestamp":"2999-01-01T00:00:00Z"}}"#;

    /// A cache holding kubelet's pod p1 (the node's pod list shape listed),
    /// its configmap cm1 (never listed), `/apis` in both discovery types,
    /// `/api` only aggregated, and a token for `default/default` bound to p1.
    fn offline() -> (tempfile::TempDir, Offline) {
        let dir = tempfile::tempdir().unwrap();
        let cache =
            Cache::start(dir.path(), Agents::new(""), crate::cache::Upkeep::default()).unwrap();
        let write = |path: &str, bytes: &[u8]| cache.store.write(Path::new(path), bytes).unwrap();
        write("kubelet/pods/default/p1.json", POD.as_bytes());
        write(
            "kubelet/configmaps/default/cm1.json",
            br#"{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"cm1","namespace":"default","resourceVersion":"3"}}"#,
        );
        let mut index = ShapeIndex {
            version: ShapeIndex::VERSION,
            ..Default::default()
        };
        let node_pods = ListShape {
            namespace: String::new(),
            label_selector: String::new(),
            field_selector: "spec.nodeName=edge-1".into(),
        };
        index.shapes.insert(
            node_pods.key(),
            ListType {
                kind: "PodList".into(),
                api_version: "v1".into(),
                encodings: ["json".to_string()].into(),
                ..Default::default()
            },
        );
        write("kubelet/pods/_lists.json", &index.encode());
        write("_discovery/apis.json", br#"{"kind":"APIGroupList"}"#);
        write(
            "_discovery/apis.apidiscovery-v2.json",
            br#"{"kind":"APIGroupDiscoveryList"}"#,
        );
        write(
            "_discovery/api.apidiscovery-v2.json",
            br#"{"kind":"APIGroupDiscoveryList"}"#,
        );
        let owner = TokenOwner {
            component: "kubelet".into(),
            namespace: "default".into(),
            service_account: "default".into(),
        };
        let spec: TokenSpec =
            crate::codec::token::request_spec(Encoding::Json, TOKEN_BODY.as_bytes()).unwrap();
        let record = TokenRecord::new(&spec, 32_503_680_000, Encoding::Json, ISSUED.as_bytes());
        write(
            owner.record_path(&spec).unwrap().to_str().unwrap(),
            &record.encode(),
        );
        cache.reindex();
        let health = Arc::new(HealthState::new(1));
        let offline = Offline {
            cache,
            budget: crate::budget::MemoryBudget::new(64 << 20),
            health,
            min_request_timeout: Duration::from_secs(1),
            filters: Arc::new(crate::filter::FilterState::for_tests()),
        };
        (dir, offline)
    }

    /// The answer in a few words: what kind, status, encoding or type.
    fn summary(answer: &Answer) -> String {
        match answer {
            Answer::Found { encoding, .. } | Answer::List { encoding, .. } => {
                format!("200 {encoding:?}")
            }
            Answer::InitialEvents { encoding, events } => {
                let n = encoding
                    .watch_decoder()
                    .push(&events.to_vec())
                    .unwrap()
                    .len();
                format!("200 {encoding:?} {n} events")
            }
            Answer::Held { encoding } => format!("200 held {encoding:?}"),
            Answer::Echo { .. } => "201 echo".into(),
            Answer::Token { encoding, .. } => format!("201 token {encoding:?}"),
            Answer::Document { content_type, .. } => format!("200 {content_type}"),
            Answer::Refused { code, .. } => format!("{code}"),
        }
    }

    /// One row per row of the README's offline table.
    #[test]
    fn the_offline_table() {
        let (_dir, offline) = offline();
        let json = "application/json";
        let pb = "application/vnd.kubernetes.protobuf";
        let kubectl =
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json";
        let streaming = "watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true";
        #[rustfmt::skip]
        let rows: &[(&str, &str, &str, &str, &str, &str)] = &[
            // method, path, query, component, accept, expected
            ("GET", "/api/v1/namespaces/default/pods/p1", "", "kubelet", json, "200 Json"),
            ("GET", "/api/v1/namespaces/default/pods/p1", "", "kubelet", pb, "404"),
            ("GET", "/api/v1/namespaces/default/pods/p9", "", "kubelet", json, "404"),
            ("GET", "/api/v1/pods", "fieldSelector=spec.nodeName%3Dedge-1", "kubelet", json, "200 Json"),
            ("GET", "/api/v1/pods", "", "kubelet", json, "404"),
            ("GET", "/api/v1/pods", "fieldSelector=spec.nodeName%3Dedge-2", "kubelet", json, "404"),
            ("GET", "/api/v1/namespaces/default/configmaps", "", "kubelet", json, "404"),
            ("GET", "/api/v1/namespaces/default/configmaps", "fieldSelector=metadata.name%3Dcm1", "kubelet", json, "200 Json"),
            ("GET", "/api/v1/pods", "watch=true", "kubelet", pb, "200 held Protobuf"),
            ("GET", "/api/v1/pods", &format!("{streaming}&fieldSelector=spec.nodeName%3Dedge-1"), "kubelet", json, "200 Json 2 events"),
            ("GET", "/api/v1/pods", streaming, "kubelet", json, "404"),
            ("GET", "/api/v1/namespaces/default/configmaps", &format!("{streaming}&fieldSelector=metadata.name%3Dcm1"), "kubelet", json, "200 Json 2 events"),
            ("POST", "/api/v1/namespaces/default/configmaps", "", "kubelet", json, "201 echo"),
            ("POST", "/api/v1/nodes", "", "kubelet", json, "503"),
            ("POST", "/api/v1/namespaces/default/serviceaccounts/default/token", "", "kubelet", json, "201 token Json"),
            ("POST", "/api/v1/namespaces/default/serviceaccounts/other/token", "", "kubelet", json, "503"),
            ("POST", "/api/v1/namespaces/default/serviceaccounts/default/token", "", "kubectl", json, "503"),
            ("PUT", "/api/v1/namespaces/default/pods/p1", "", "kubelet", json, "200 Json"),
            ("PATCH", "/api/v1/namespaces/default/pods/p1/status", "", "kubelet", json, "503"),
            ("PATCH", "/api/v1/nodes/edge-1/status", "", "kubelet", json, "503"),
            ("PATCH", "/api/v1/namespaces/default/pods/p9", "", "kubelet", json, "404"),
            ("DELETE", "/api/v1/namespaces/default/pods/p1", "", "kubelet", json, "403"),
            ("DELETE", "/api/v1/namespaces/default/pods", "", "kubelet", json, "403"),
            ("GET", "/apis", "", "kubectl", kubectl, AGGREGATED_200),
            ("GET", "/apis", "", "kubectl", json, "200 application/json"),
            ("GET", "/api", "", "kubectl", json, "406"),
            ("GET", "/api", "", "kubectl", kubectl, AGGREGATED_200),
            ("GET", "/version", "", "kubectl", json, "400"),
            ("GET", "/healthz", "", "kubectl", json, "400"),
            ("GET", "/api/v1/namespaces/default/pods/p1", "", "kubectl", json, "400"),
            ("GET", "/api/v1/namespaces/default/pods/p1", "", "", json, "400"),
            ("GET", "/api/v1/namespaces/default/pods/p1", "", "kubelet", "text/html", "406"),
        ];
        for &(method, path, query, component, accept, expected) in rows {
            let parsed = Query::parse(query);
            let info = classify(method, path, &parsed).unwrap();
            let body = needs_body(&info).then_some(TOKEN_BODY.as_bytes());
            let request = OfflineRequest {
                info: &info,
                query: &parsed,
                component,
                edge_cache: false,
                accept: Some(accept),
                content_type: Some("application/json"),
                body,
            };
            let answer = offline.decide(&request);
            assert_eq!(
                summary(&answer),
                expected,
                "{method} {path}?{query} as {component:?} accepting {accept}: {answer:?}"
            );
        }
    }

    const AGGREGATED_200: &str =
        "200 application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

    #[test]
    fn kubelet_never_gets_an_empty_pod_list() {
        let (dir, offline) = offline();
        std::fs::remove_file(dir.path().join("kubelet/pods/default/p1.json")).unwrap();
        offline.cache.reindex();
        for query in [
            "fieldSelector=spec.nodeName%3Dedge-1",
            "watch=true&sendInitialEvents=true&fieldSelector=spec.nodeName%3Dedge-1",
        ] {
            let parsed = Query::parse(query);
            let info = classify("GET", "/api/v1/pods", &parsed).unwrap();
            let request = OfflineRequest {
                info: &info,
                query: &parsed,
                component: "kubelet",
                edge_cache: false,
                accept: None,
                content_type: None,
                body: None,
            };
            assert_eq!(summary(&offline.decide(&request)), "404", "{query}");
        }
    }

    #[test]
    fn credentials_are_secrets_and_service_account_tokens() {
        let rows = [
            ("GET", "/api/v1/namespaces/d/secrets/s", true),
            ("GET", "/api/v1/secrets", true),
            (
                "POST",
                "/api/v1/namespaces/d/serviceaccounts/sa/token",
                true,
            ),
            ("GET", "/api/v1/namespaces/d/serviceaccounts/sa", false),
            ("GET", "/api/v1/namespaces/d/configmaps/c", false),
            ("GET", "/apis/example.com/v1/secrets", false),
        ];
        for (method, path, expected) in rows {
            let info = classify(method, path, &crate::request_info::Query::parse("")).unwrap();
            assert_eq!(is_credential(&info), expected, "{method} {path}");
        }
    }

    #[test]
    fn a_node_registration_is_answered_locally_only_for_a_node_the_cache_holds() {
        let (_dir, offline) = offline();
        offline
            .cache
            .store
            .write(
                Path::new("kubelet/nodes/edge-1.json"),
                br#"{"kind":"Node","apiVersion":"v1","metadata":{"name":"edge-1","resourceVersion":"7"}}"#,
            )
            .unwrap();
        offline.cache.reindex();
        let parsed = Query::parse("");
        let info = classify("POST", "/api/v1/nodes", &parsed).unwrap();
        for (name, expected) in [("edge-1", "201 echo"), ("edge-2", "503")] {
            let body =
                format!(r#"{{"kind":"Node","apiVersion":"v1","metadata":{{"name":"{name}"}}}}"#);
            let request = OfflineRequest {
                info: &info,
                query: &parsed,
                component: "kubelet",
                edge_cache: false,
                accept: None,
                content_type: Some("application/json"),
                body: Some(body.as_bytes()),
            };
            assert_eq!(summary(&offline.decide(&request)), expected, "{name}");
        }
    }
}
