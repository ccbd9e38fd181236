//! The writer's queue. Under a read storm (every kubelet connection reading
//! the same objects) most copies waiting for the writer are outdated before
//! the writer reaches them: only the newest copy of an object, and the newest
//! whole list of a shape, will decide what the disk holds. So a copy waiting
//! under the same key is replaced instead of queued behind it, and the queue
//! holds about one op per object and shape however hot the reads are; work is
//! dropped only when even that is past the bounds.
//!
//! Order: a replacing op takes the place of its latest arrival (the replaced
//! one leaves its place), so what the writer applies is always the arrival
//! order with superseded ops left out. A DELETED queued after an upsert is
//! applied after it; a list's reconciliation still comes after every object
//! queued before it. Within one key the newest resourceVersion wins (the
//! writer's own rule: an incoming version 0 is unknown and taken as newer);
//! a waiting op newer than an arriving one keeps its place and the arriving
//! one is not needed. Whole lists of one shape are judged the same way by
//! the list's resourceVersion: answers finishing out of order under a storm
//! must not let an older list replace the newest one waiting.
//! Ops without a natural key (pages after the first, a streaming list's
//! members and end, tokens, discovery) are queued as they come.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Condvar, Mutex};

use crate::codec::Encoding;

use super::key::Collection;
use super::lists::ListShape;
use super::writer::Op;

/// What makes two ops interchangeable: the newest one alone decides.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum QueueKey {
    /// One object's file (collection, namespace, name and encoding).
    Object(PathBuf),
    /// A first page of a list of one shape, in one encoding.
    List {
        collection: Collection,
        encoding: Encoding,
        shape: ListShape,
    },
}

/// An op's key and the resourceVersion its replacement is judged by (the
/// object's or the list's; 0 when unknown), read before the queue's lock is
/// taken; `None` for ops queued as they come.
pub(super) fn key_of(op: &Op) -> Option<(QueueKey, u64)> {
    match op {
        Op::Upsert {
            collection,
            encoding,
            object,
            member_of: None,
        }
        | Op::Delete {
            collection,
            encoding,
            object,
        } => {
            let meta = encoding.decode_meta(object).ok()?;
            let path = collection.object_path(&meta.namespace, &meta.name, *encoding)?;
            Some((QueueKey::Object(path), meta.resource_version))
        }
        Op::List {
            collection,
            encoding,
            shape,
            request_continue,
            body,
        } if request_continue.is_empty() => Some((
            QueueKey::List {
                collection: collection.clone(),
                encoding: *encoding,
                shape: shape.clone(),
            },
            encoding.list_resource_version(body).unwrap_or(0),
        )),
        _ => None,
    }
}

/// Whether an arriving op is older than the waiting op of its key: the
/// writer's rule (`stored_is_newer`), so the queue never keeps what the
/// writer would skip.
pub(super) fn is_older(arriving_rv: u64, waiting_rv: u64) -> bool {
    arriving_rv != 0 && waiting_rv > arriving_rv
}

/// What became of an op handed to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Queued {
    /// Queued at the end.
    Added,
    /// Queued at the end in place of a waiting op of the same key.
    Replaced,
    /// Not queued: the waiting op of its key is newer.
    Superseded,
    /// Not queued: past the bounds (dropped).
    Full,
}

impl Queued {
    /// Whether the op's content reaches the disk (it, or a newer one of its key).
    pub fn is_kept(self) -> bool {
        self != Queued::Full
    }

    /// Whether one copy became redundant (a `coalesced` in the stats).
    pub fn coalesced(self) -> bool {
        matches!(self, Queued::Replaced | Queued::Superseded)
    }
}

enum Slot {
    /// The op of a key, if the key's waiting op still has this sequence
    /// number (otherwise it was replaced and queued further back).
    Keyed(QueueKey, u64),
    Unkeyed(Op),
}

struct Waiting {
    seq: u64,
    resource_version: u64,
    op: Op,
}

/// The queue itself, without locking: what the writer will apply, in order.
pub(super) struct Pending {
    fifo: VecDeque<Slot>,
    keyed: HashMap<QueueKey, Waiting>,
    next_seq: u64,
    /// Ops waiting (replaced slots left in `fifo` excluded).
    ops: usize,
    /// Bytes of the ops waiting, and of the one being applied.
    bytes: usize,
    in_progress: usize,
    max_ops: usize,
    max_bytes: usize,
}

impl Pending {
    pub fn new(max_ops: usize, max_bytes: usize) -> Pending {
        Pending {
            fifo: VecDeque::new(),
            keyed: HashMap::new(),
            next_seq: 0,
            ops: 0,
            bytes: 0,
            in_progress: 0,
            max_ops,
            max_bytes,
        }
    }

    pub fn push(&mut self, op: Op, key: Option<(QueueKey, u64)>) -> Queued {
        let len = op.len();
        let held = self.bytes + self.in_progress;
        let Some((key, resource_version)) = key else {
            if self.ops >= self.max_ops || held + len > self.max_bytes {
                return Queued::Full;
            }
            self.ops += 1;
            self.bytes += len;
            self.fifo.push_back(Slot::Unkeyed(op));
            return Queued::Added;
        };
        let seq = self.next_seq;
        let outcome = match self.keyed.get_mut(&key) {
            Some(waiting) => {
                if is_older(resource_version, waiting.resource_version) {
                    return Queued::Superseded;
                }
                let replaced = waiting.op.len();
                if held - replaced + len > self.max_bytes {
                    return Queued::Full;
                }
                self.bytes = self.bytes - replaced + len;
                *waiting = Waiting {
                    seq,
                    resource_version,
                    op,
                };
                Queued::Replaced
            }
            None => {
                if self.ops >= self.max_ops || held + len > self.max_bytes {
                    return Queued::Full;
                }
                self.ops += 1;
                self.bytes += len;
                self.keyed.insert(
                    key.clone(),
                    Waiting {
                        seq,
                        resource_version,
                        op,
                    },
                );
                Queued::Added
            }
        };
        self.next_seq += 1;
        self.fifo.push_back(Slot::Keyed(key, seq));
        self.compact();
        outcome
    }

    /// The next op to apply, if any; it stays counted against the byte
    /// bound until the next call (while the writer applies it).
    pub fn pop(&mut self) -> Option<Op> {
        self.in_progress = 0;
        while let Some(slot) = self.fifo.pop_front() {
            let op = match slot {
                Slot::Unkeyed(op) => op,
                Slot::Keyed(key, seq) => {
                    if self.keyed.get(&key).is_none_or(|w| w.seq != seq) {
                        continue;
                    }
                    match self.keyed.remove(&key) {
                        Some(waiting) => waiting.op,
                        None => continue,
                    }
                }
            };
            let len = op.len();
            self.ops -= 1;
            self.bytes -= len;
            self.in_progress = len;
            return Some(op);
        }
        None
    }

    /// Ops waiting.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.ops
    }

    /// Drops the places replaced ops left behind once they outnumber the
    /// ops waiting, so the queue's length stays bounded by the ops waiting.
    fn compact(&mut self) {
        if self.fifo.len() <= 2 * self.ops + 64 {
            return;
        }
        let keyed = &self.keyed;
        self.fifo.retain(|slot| match slot {
            Slot::Unkeyed(_) => true,
            Slot::Keyed(key, seq) => keyed.get(key).is_some_and(|w| w.seq == *seq),
        });
    }
}

/// `Pending` shared by every client's tee and the writer thread.
pub(super) struct WriteQueue {
    pending: Mutex<Pending>,
    ready: Condvar,
}

impl WriteQueue {
    pub fn new(max_ops: usize, max_bytes: usize) -> WriteQueue {
        WriteQueue {
            pending: Mutex::new(Pending::new(max_ops, max_bytes)),
            ready: Condvar::new(),
        }
    }

    /// Queues an op; its key is read before the lock is taken.
    pub fn push(&self, op: Op) -> Queued {
        let key = key_of(&op);
        let queued = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(op, key);
        if queued == Queued::Added || queued == Queued::Replaced {
            self.ready.notify_one();
        }
        queued
    }

    /// The next op, waiting for one (the writer thread's only wait: it has
    /// nothing else to do).
    pub fn pop(&self) -> Op {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(op) = pending.pop() {
                return op;
            }
            pending = self.ready.wait(pending).unwrap_or_else(|e| e.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::writer::Members;

    fn configmaps() -> Collection {
        Collection {
            component: "kubelet".into(),
            resource_dir: "configmaps".into(),
        }
    }

    fn cm(name: &str, rv: u64) -> Vec<u8> {
        format!(
            r#"{{"kind":"ConfigMap","apiVersion":"v1","metadata":{{"name":"{name}","namespace":"a","resourceVersion":"{rv}"}}}}"#
        )
        .into_bytes()
    }

    fn shape(labels: &str) -> ListShape {
        ListShape {
            namespace: "a".into(),
            label_selector: labels.into(),
            field_selector: String::new(),
        }
    }

    /// A short text for an op: `+c1@5`, `-c1@5`, `L(app=web)#body`,
    /// `L(app=web)>next#body`, `M+c1@5`, `end`.
    fn op(text: &str) -> Op {
        let object = |rest: &str| {
            let (name, rv) = rest.split_once('@').unwrap();
            cm(name, rv.parse().unwrap())
        };
        if let Some(rest) = text.strip_prefix("M+") {
            return Op::Upsert {
                collection: configmaps(),
                encoding: Encoding::Json,
                object: object(rest),
                member_of: Some(Members::default()),
            };
        }
        if let Some(rest) = text.strip_prefix('+') {
            return Op::Upsert {
                collection: configmaps(),
                encoding: Encoding::Json,
                object: object(rest),
                member_of: None,
            };
        }
        if let Some(rest) = text.strip_prefix('-') {
            return Op::Delete {
                collection: configmaps(),
                encoding: Encoding::Json,
                object: object(rest),
            };
        }
        if let Some(rest) = text.strip_prefix("L(") {
            let (labels, rest) = rest.split_once(')').unwrap();
            let (request_continue, body) = rest.split_once('#').unwrap();
            return Op::List {
                collection: configmaps(),
                encoding: Encoding::Json,
                shape: shape(labels),
                request_continue: request_continue.trim_start_matches('>').into(),
                body: body.as_bytes().to_vec(),
            };
        }
        assert_eq!(text, "discovery");
        Op::Discovery {
            path: "_discovery/version.json".into(),
            body: b"{}".to_vec(),
        }
    }

    /// The short text of an op, as `op` writes it.
    fn text(op: &Op) -> String {
        let meta = |object: &[u8]| {
            let meta = Encoding::Json.decode_meta(object).unwrap();
            format!("{}@{}", meta.name, meta.resource_version)
        };
        match op {
            Op::Upsert {
                object,
                member_of: Some(_),
                ..
            } => format!("M+{}", meta(object)),
            Op::Upsert { object, .. } => format!("+{}", meta(object)),
            Op::Delete { object, .. } => format!("-{}", meta(object)),
            Op::List {
                shape,
                request_continue,
                body,
                ..
            } => {
                let page = if request_continue.is_empty() {
                    String::new()
                } else {
                    format!(">{request_continue}")
                };
                format!(
                    "L({}){page}#{}",
                    shape.label_selector,
                    String::from_utf8_lossy(body)
                )
            }
            Op::Discovery { .. } => "discovery".into(),
            _ => "other".into(),
        }
    }

    fn drain(pending: &mut Pending) -> Vec<String> {
        std::iter::from_fn(|| pending.pop())
            .map(|op| text(&op))
            .collect()
    }

    fn push_all(pending: &mut Pending, ops: &str) -> Vec<Queued> {
        ops.split_whitespace()
            .map(|t| {
                let op = op(t);
                let key = key_of(&op);
                pending.push(op, key)
            })
            .collect()
    }

    #[test]
    fn what_the_writer_applies_is_the_arrival_order_without_superseded_ops() {
        use Queued::{Added as A, Replaced as R, Superseded as S};
        #[rustfmt::skip]
        let rows: &[(&str, &str, &[Queued])] = &[
            // pushed, applied, outcomes
            ("+c1@1 +c1@2 +c1@3", "+c1@3", &[A, R, R]),
            ("+c1@3 +c1@2", "+c1@3", &[A, S]),
            ("+c1@1 +c2@1 +c1@2", "+c2@1 +c1@2", &[A, A, R]),
            // Version 0 is unknown: taken as newer, as the writer takes it.
            ("+c1@5 +c1@0", "+c1@0", &[A, R]),
            ("+c1@0 +c1@5", "+c1@5", &[A, R]),
            // A DELETED after an upsert is applied after it, never undone.
            ("+c1@1 -c1@2", "-c1@2", &[A, R]),
            ("+c1@1 -c1@2 +c1@1", "-c1@2", &[A, R, S]),
            ("-c1@2 +c1@3", "+c1@3", &[A, R]),
            ("+c1@3 -c1@2", "+c1@3", &[A, S]),
            // A list comes after the objects queued before it, whatever
            // replaces them later comes after it.
            ("+c1@1 L(app=web)#1 +c1@2", "L(app=web)#1 +c1@2", &[A, A, R]),
            ("+c1@1 L(app=web)#1 -c1@2", "L(app=web)#1 -c1@2", &[A, A, R]),
            ("L(app=web)#1 +c1@1 L(app=web)#2", "+c1@1 L(app=web)#2", &[A, A, R]),
            ("L(app=web)#1 L(app=db)#2 L(app=web)#3", "L(app=db)#2 L(app=web)#3", &[A, A, R]),
            // Lists by their resourceVersion: an older one arriving later
            // (answers finishing out of order) leaves the newer waiting.
            (
                r#"L(app=web)#{"metadata":{"resourceVersion":"1600"}} L(app=web)#{"metadata":{"resourceVersion":"1599"}}"#,
                r#"L(app=web)#{"metadata":{"resourceVersion":"1600"}}"#,
                &[A, S],
            ),
            (
                r#"L(app=web)#{"metadata":{"resourceVersion":"1599"}} L(app=web)#{"metadata":{"resourceVersion":"1600"}}"#,
                r#"L(app=web)#{"metadata":{"resourceVersion":"1600"}}"#,
                &[A, R],
            ),
            // Later pages, a streaming list's members and documents are
            // queued as they come.
            ("L(app=web)#1 L(app=web)>n#2 L(app=web)>n#3", "L(app=web)#1 L(app=web)>n#2 L(app=web)>n#3", &[A, A, A]),
            ("M+c1@1 M+c1@2 +c1@3", "M+c1@1 M+c1@2 +c1@3", &[A, A, A]),
            ("discovery discovery", "discovery discovery", &[A, A]),
        ];
        for &(pushed, applied, outcomes) in rows {
            let mut pending = Pending::new(100, 1 << 20);
            assert_eq!(push_all(&mut pending, pushed), outcomes, "{pushed}");
            assert_eq!(drain(&mut pending).join(" "), applied, "{pushed}");
            assert_eq!(pending.len(), 0);
        }
    }

    #[test]
    fn a_storm_of_copies_of_the_same_objects_holds_one_op_per_object() {
        let mut pending = Pending::new(4, 1 << 20);
        for rv in 1..=10_000u64 {
            for name in ["c1", "c2", "c3"] {
                let op = op(&format!("+{name}@{rv}"));
                let key = key_of(&op);
                assert!(pending.push(op, key).is_kept());
            }
        }
        assert_eq!(pending.len(), 3);
        assert!(
            pending.fifo.len() <= 2 * 3 + 64 + 1,
            "{}",
            pending.fifo.len()
        );
        assert_eq!(
            drain(&mut pending).join(" "),
            "+c1@10000 +c2@10000 +c3@10000"
        );
    }

    #[test]
    fn the_bounds_still_hold_when_nothing_can_be_replaced() {
        let one = cm("c1", 1).len();
        // Room for two objects, by count then by bytes.
        for (max_ops, max_bytes) in [(2, 1 << 20), (100, 2 * one + 1)] {
            let mut pending = Pending::new(max_ops, max_bytes);
            assert_eq!(
                push_all(&mut pending, "+c1@1 +c2@1 +c3@1 +c1@2"),
                [Queued::Added, Queued::Added, Queued::Full, Queued::Replaced],
                "{max_ops} {max_bytes}"
            );
            // The op being applied still counts against the bytes until the
            // next one is taken.
            assert!(pending.pop().is_some());
            let third = push_all(&mut pending, "+c3@1");
            let expected = if max_ops == 2 {
                Queued::Added
            } else {
                Queued::Full
            };
            assert_eq!(third, [expected], "{max_ops} {max_bytes}");
        }
        // A replacement larger than what it replaces can be past the bytes.
        let mut pending = Pending::new(100, one + 4);
        assert_eq!(push_all(&mut pending, "+c@1"), [Queued::Added]);
        let mut larger = op("+c@2");
        if let Op::Upsert { object, .. } = &mut larger {
            object.extend_from_slice(&[b' '; 64]);
        }
        let key = key_of(&larger);
        assert_eq!(pending.push(larger, key), Queued::Full);
        assert_eq!(drain(&mut pending), ["+c@1"]);
    }

    #[test]
    fn the_writer_waits_for_work_and_takes_it_in_order() {
        let queue = std::sync::Arc::new(WriteQueue::new(10, 1 << 20));
        let writer = queue.clone();
        let taken = std::thread::Builder::new()
            .name("yh-test-writer".into())
            .spawn(move || (0..2).map(|_| text(&writer.pop())).collect::<Vec<_>>())
            .unwrap();
        assert_eq!(queue.push(op("+c1@1")), Queued::Added);
        assert_eq!(queue.push(op("-c2@1")), Queued::Added);
        assert_eq!(taken.join().unwrap(), ["+c1@1", "-c2@1"]);
    }
}
