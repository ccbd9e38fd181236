//! The copy of a response taken while it is relayed: whole bodies (objects,
//! lists, documents, tokens) handed to the writer once complete, watch streams
//! event by event, a streaming list's initial events up to its annotated
//! bookmark. Never blocks on disk: it only copies bytes and queues work.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::budget::Reservation;
use crate::codec::token::TokenSpec;
use crate::codec::{Encoding, EventType, WatchDecoder};

use super::Cache;
use super::discovery::DocumentType;
use super::key::Collection;
use super::lists::ListShape;
use super::plan::{Plan, PlanTarget};
use super::tokens::TokenOwner;
use super::writer::{ListHead, Members, Op};

/// Largest response body copied aside for the cache; past it the response is
/// still relayed whole, just not cached.
const MAX_TEE_BYTES: usize = 32 * 1024 * 1024;

/// What a whole response body (not a stream) is stored as.
enum Whole {
    Object(Collection),
    List {
        collection: Collection,
        shape: ListShape,
        request_continue: String,
    },
    Discovery(PathBuf),
    Token {
        owner: TokenOwner,
        spec: TokenSpec,
    },
}

impl Cache {
    /// Starts copying a response aside, if its status and encoding allow.
    pub fn tee(
        self: &Arc<Self>,
        plan: Plan,
        status: u16,
        content_type: Option<&str>,
        reservation: Reservation,
    ) -> Option<Tee> {
        if !(200..300).contains(&status) {
            return None;
        }
        let content_type = content_type.unwrap_or_default();
        let (encoding, sink) = match plan.target {
            PlanTarget::Discovery(path) => {
                let file = DocumentType::from_content_type(content_type)?.file(&path)?;
                (Encoding::Json, Sink::whole(Whole::Discovery(file)))
            }
            target => {
                let encoding = Encoding::from_content_type(content_type)?;
                let sink = match target {
                    PlanTarget::Watch {
                        collection,
                        initial_list,
                    } => Sink::Watch {
                        decoder: encoding.watch_decoder(),
                        collection,
                        initial: initial_list.map(|shape| InitialEvents {
                            shape,
                            members: Members::default(),
                            intact: true,
                        }),
                    },
                    PlanTarget::Object(collection) => Sink::whole(Whole::Object(collection)),
                    PlanTarget::List {
                        collection,
                        shape,
                        request_continue,
                    } => Sink::whole(Whole::List {
                        collection,
                        shape,
                        request_continue,
                    }),
                    PlanTarget::Token { owner, spec } => Sink::whole(Whole::Token { owner, spec }),
                    PlanTarget::Discovery(_) => return None,
                };
                (encoding, sink)
            }
        };
        Some(Tee {
            cache: self.clone(),
            encoding,
            sink,
            abandoned: false,
            reservation,
        })
    }
}

/// A response being copied aside for the cache as it is relayed.
pub struct Tee {
    cache: Arc<Cache>,
    encoding: Encoding,
    sink: Sink,
    abandoned: bool,
    /// A whole body's copy held against the hub's memory budget.
    reservation: Reservation,
}

enum Sink {
    /// A whole body (object, list, document, token), stored once complete.
    Whole { buffer: Vec<u8>, target: Whole },
    /// A watch stream, stored event by event.
    Watch {
        decoder: Box<dyn WatchDecoder>,
        collection: Collection,
        /// Until its annotated bookmark: the streaming list being received.
        initial: Option<InitialEvents>,
    },
}

impl Sink {
    fn whole(target: Whole) -> Sink {
        Sink::Whole {
            buffer: Vec::new(),
            target,
        }
    }
}

/// A streaming list's initial events, as they are handed to the writer.
struct InitialEvents {
    shape: ListShape,
    members: Members,
    /// False once one of its objects could not be queued: the list is then
    /// not complete and its shape is not recorded.
    intact: bool,
}

impl Tee {
    /// Takes the next piece of the body. Never blocks on disk.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.abandoned {
            return;
        }
        match &mut self.sink {
            Sink::Whole { buffer, .. } => {
                let wanted = buffer.len() + bytes.len();
                if wanted > MAX_TEE_BYTES {
                    self.abandoned = true;
                    *buffer = Vec::new();
                    self.cache.dropped("response larger than the cache copies");
                    return;
                }
                if !self.reservation.grow_to(wanted) {
                    self.abandoned = true;
                    *buffer = Vec::new();
                    self.cache
                        .dropped("the memory budget for requests in flight is spent");
                    return;
                }
                buffer.extend_from_slice(bytes);
            }
            Sink::Watch {
                decoder,
                collection,
                initial,
            } => match decoder.push(bytes) {
                Ok(events) => {
                    for event in events {
                        let op = match event.event_type {
                            EventType::Added | EventType::Modified => Op::Upsert {
                                collection: collection.clone(),
                                encoding: self.encoding,
                                object: event.object,
                                member_of: initial.as_ref().map(|i| i.members.clone()),
                            },
                            EventType::Deleted => Op::Delete {
                                collection: collection.clone(),
                                encoding: self.encoding,
                                object: event.object,
                            },
                            EventType::Bookmark
                                if initial.is_some()
                                    && self.encoding.is_initial_events_end(&event.object) =>
                            {
                                let Some(ended) = initial.take().filter(|i| i.intact) else {
                                    continue;
                                };
                                let Ok(meta) = self.encoding.decode_meta(&event.object) else {
                                    continue;
                                };
                                Op::StreamedListEnd {
                                    collection: collection.clone(),
                                    encoding: self.encoding,
                                    shape: ended.shape,
                                    members: ended.members,
                                    list: ListHead {
                                        kind: format!("{}List", meta.kind),
                                        api_version: meta.api_version,
                                        resource_version: meta.resource_version,
                                    },
                                }
                            }
                            EventType::Bookmark | EventType::Error => continue,
                        };
                        let is_member = matches!(
                            &op,
                            Op::Upsert {
                                member_of: Some(_),
                                ..
                            }
                        );
                        if !self.cache.enqueue(op)
                            && is_member
                            && let Some(initial) = initial.as_mut()
                        {
                            initial.intact = false;
                        }
                    }
                }
                Err(e) => {
                    self.abandoned = true;
                    self.cache
                        .stats
                        .decode_errors
                        .fetch_add(1, Ordering::Relaxed);
                    log::warn!("not caching the rest of a watch: {e}");
                }
            },
        }
    }

    /// The body ended; `complete` says whether it arrived whole.
    pub fn finish(self, complete: bool) {
        if self.abandoned || !complete {
            return;
        }
        let Sink::Whole { buffer, target } = self.sink else {
            return;
        };
        let op = match target {
            Whole::Object(collection) => Op::Upsert {
                collection,
                encoding: self.encoding,
                object: buffer,
                member_of: None,
            },
            Whole::List {
                collection,
                shape,
                request_continue,
            } => Op::List {
                collection,
                encoding: self.encoding,
                shape,
                request_continue,
                body: buffer,
            },
            Whole::Discovery(path) => Op::Discovery { path, body: buffer },
            Whole::Token { owner, spec } => Op::Token {
                owner,
                spec,
                encoding: self.encoding,
                body: buffer,
            },
        };
        self.cache.enqueue(op);
    }
}
