//! What one shared upstream list+watch knows: every object of the resource
//! (all namespaces, as the apiserver sent it) and the recent changes that
//! local watches are served from. Pure: the follower feeds it, the local
//! clients read it, both under one lock held by `Shared`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use crate::codec::{EventType, ObjectMeta};

/// Changes kept for local watches to resume from (kube-apiserver's watch
/// cache keeps 100 to a few thousand, by the resource's churn).
pub const MAX_CHANGES: usize = 4096;
/// Bytes of objects the kept changes may hold on their own (versions the
/// current state no longer holds).
pub const MAX_CHANGE_BYTES: usize = 32 * 1024 * 1024;

/// One object as the apiserver encoded it, with what selectors read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub resource_version: u64,
    pub labels: BTreeMap<String, String>,
    pub bytes: Arc<[u8]>,
}

impl Object {
    pub fn new(meta: ObjectMeta, bytes: &[u8]) -> Object {
        Object {
            namespace: meta.namespace,
            name: meta.name,
            uid: meta.uid,
            resource_version: meta.resource_version,
            labels: meta.labels,
            bytes: bytes.into(),
        }
    }

    /// Memory the object takes, roughly.
    pub fn cost(&self) -> usize {
        self.bytes.len()
            + self.namespace.len()
            + self.name.len()
            + self.uid.len()
            + self
                .labels
                .iter()
                .map(|(k, v)| k.len() + v.len() + 48)
                .sum::<usize>()
            + 96
    }

    fn key(&self) -> (String, String) {
        (self.namespace.clone(), self.name.clone())
    }
}

/// One change, numbered in the order local watches see them.
#[derive(Debug, Clone)]
pub struct Change {
    pub seq: u64,
    /// The resourceVersion the change is ordered by (the event's).
    pub resource_version: u64,
    /// `Added`, `Modified`, `Deleted` or `Bookmark`.
    pub event_type: EventType,
    /// The object after the change (a deleted object's last state; a
    /// bookmark's object as the apiserver sent it).
    pub object: Arc<Object>,
    /// The version before the change, for selector transitions.
    pub previous: Option<Arc<Object>>,
}

impl Change {
    /// Memory the change holds beyond the current objects: the version it
    /// replaced, a deleted object, a bookmark.
    fn held_cost(&self) -> usize {
        let held = match self.event_type {
            EventType::Added => 0,
            EventType::Modified => self.previous.as_ref().map_or(0, |p| p.cost()),
            // The last state and the version before it: about the same.
            _ => self.object.cost(),
        };
        held + 64
    }
}

/// Where a local watch starts in the changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// The first change to send (changes at or before the asked
    /// resourceVersion are skipped by the caller's own check).
    At(u64),
    /// The asked resourceVersion is older than the changes kept: 410 Gone.
    Gone,
}

/// The shared state of one resource in one encoding.
#[derive(Debug, Default)]
pub struct State {
    objects: BTreeMap<(String, String), Arc<Object>>,
    changes: VecDeque<Arc<Change>>,
    next_seq: u64,
    /// Every change after this resourceVersion is among `changes`.
    covered_from: u64,
    resource_version: u64,
    synced: bool,
    /// Item kind and apiVersion, from the list (for bookmarks it makes).
    pub kind: String,
    pub api_version: String,
    object_bytes: usize,
    change_bytes: usize,
}

impl State {
    pub fn synced(&self) -> bool {
        self.synced
    }

    pub fn resource_version(&self) -> u64 {
        self.resource_version
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Memory held: objects, and the versions only kept changes hold.
    pub fn bytes(&self) -> usize {
        self.object_bytes + self.change_bytes
    }

    /// Sequence number the next change gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// A complete list at `resource_version`. The first one starts the
    /// state; a later one (after the apiserver said the watch's version is
    /// gone) becomes the changes from what was known to what is listed, all
    /// at the list's version, so open local watches carry on without
    /// listing again; a watch resumed from before it is gone (the changes
    /// in between are not known), as kube-apiserver's watch cache does
    /// after its own relist.
    pub fn replace(&mut self, items: Vec<Object>, resource_version: u64) {
        let listed: BTreeMap<(String, String), Arc<Object>> = items
            .into_iter()
            .map(|object| (object.key(), Arc::new(object)))
            .collect();
        if !self.synced {
            self.object_bytes = listed.values().map(|o| o.cost()).sum();
            self.objects = listed;
            self.resource_version = resource_version;
            self.covered_from = resource_version;
            self.synced = true;
            return;
        }
        // Ordered after everything already sent, even if the list came from
        // an apiserver behind the one the watch was on.
        let at = resource_version.max(self.resource_version);
        let gone: Vec<(String, String)> = self
            .objects
            .keys()
            .filter(|key| !listed.contains_key(*key))
            .cloned()
            .collect();
        for key in gone {
            if let Some(previous) = self.objects.remove(&key) {
                self.object_bytes -= previous.cost();
                self.push(EventType::Deleted, at, previous.clone(), Some(previous));
            }
        }
        for (key, object) in listed {
            let mut previous = self.objects.get(&key).cloned();
            let same = previous
                .as_ref()
                .is_some_and(|p| p.resource_version == object.resource_version);
            if same {
                continue;
            }
            // Deleted and created again meanwhile: another object.
            if let Some(old) = previous.take_if(|p| p.uid != object.uid) {
                self.objects.remove(&key);
                self.object_bytes -= old.cost();
                self.push(EventType::Deleted, at, old.clone(), Some(old));
            }
            let event_type = if previous.is_some() {
                EventType::Modified
            } else {
                EventType::Added
            };
            self.insert(object.clone());
            self.push(event_type, at, object, previous);
        }
        self.resource_version = at;
        self.covered_from = self.covered_from.max(at);
    }

    /// One watch event from upstream (`Added`, `Modified`, `Deleted`): a
    /// version already known (a resumed watch repeating itself) is skipped.
    pub fn apply(&mut self, event_type: EventType, object: Object) {
        let key = object.key();
        let at = object.resource_version;
        let previous = self.objects.get(&key).cloned();
        if previous
            .as_ref()
            .is_some_and(|p| p.resource_version >= at && at != 0)
        {
            return;
        }
        let object = Arc::new(object);
        match event_type {
            EventType::Deleted => {
                let Some(previous) = previous else {
                    return;
                };
                self.objects.remove(&key);
                self.object_bytes -= previous.cost();
                self.push(EventType::Deleted, at, object, Some(previous));
            }
            EventType::Added | EventType::Modified => {
                let event_type = if previous.is_some() {
                    EventType::Modified
                } else {
                    EventType::Added
                };
                self.insert(object.clone());
                self.push(event_type, at, object, previous);
            }
            EventType::Bookmark | EventType::Error => return,
        }
        self.resource_version = self.resource_version.max(at);
    }

    /// A bookmark from upstream: nothing changed up to `resource_version`.
    pub fn bookmark(&mut self, resource_version: u64, object: Object) {
        if resource_version < self.resource_version {
            return;
        }
        self.resource_version = resource_version;
        self.push(
            EventType::Bookmark,
            resource_version,
            Arc::new(object),
            None,
        );
    }

    /// Objects `select` keeps, with the resourceVersion and the sequence
    /// number they are a snapshot at.
    pub fn snapshot(
        &self,
        mut select: impl FnMut(&Object) -> bool,
    ) -> (Vec<Arc<Object>>, u64, u64) {
        let objects = self
            .objects
            .values()
            .filter(|o| select(o))
            .cloned()
            .collect();
        (objects, self.resource_version, self.next_seq)
    }

    /// Where a watch from `resource_version` starts.
    pub fn resume(&self, resource_version: u64) -> Resume {
        if resource_version < self.covered_from {
            return Resume::Gone;
        }
        let first = self
            .changes
            .iter()
            .find(|c| c.resource_version > resource_version)
            .map_or(self.next_seq, |c| c.seq);
        Resume::At(first)
    }

    /// The changes from `seq` on; `None` when some of them are no longer
    /// kept (the watch fell too far behind: 410 Gone).
    pub fn changes_from(&self, seq: u64) -> Option<Vec<Arc<Change>>> {
        let first = self.changes.front().map_or(self.next_seq, |c| c.seq);
        if seq < first {
            return None;
        }
        let skip = usize::try_from(seq - first).unwrap_or(usize::MAX);
        Some(self.changes.iter().skip(skip).cloned().collect())
    }

    fn insert(&mut self, object: Arc<Object>) {
        self.object_bytes += object.cost();
        if let Some(old) = self.objects.insert(object.key(), object) {
            self.object_bytes -= old.cost();
        }
    }

    fn push(
        &mut self,
        event_type: EventType,
        resource_version: u64,
        object: Arc<Object>,
        previous: Option<Arc<Object>>,
    ) {
        let change = Change {
            seq: self.next_seq,
            resource_version,
            event_type,
            object,
            previous,
        };
        self.change_bytes += change.held_cost();
        self.changes.push_back(Arc::new(change));
        self.next_seq += 1;
        while self.changes.len() > MAX_CHANGES || self.change_bytes > MAX_CHANGE_BYTES {
            let Some(oldest) = self.changes.pop_front() else {
                break;
            };
            self.change_bytes -= oldest.held_cost();
            self.covered_from = self.covered_from.max(oldest.resource_version);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(namespace: &str, name: &str, rv: u64) -> Object {
        Object {
            namespace: namespace.into(),
            name: name.into(),
            resource_version: rv,
            uid: format!("{namespace}/{name}"),
            labels: BTreeMap::new(),
            bytes: Arc::from(format!("{namespace}/{name}@{rv}").as_bytes()),
        }
    }

    /// Each change as `TYPE ns/name@rv (at rv)`.
    fn seen(state: &State, from: u64) -> Vec<String> {
        state
            .changes_from(from)
            .unwrap()
            .iter()
            .map(|c| {
                format!(
                    "{} {} (at {})",
                    c.event_type.as_str(),
                    String::from_utf8_lossy(&c.object.bytes),
                    c.resource_version
                )
            })
            .collect()
    }

    #[test]
    fn a_list_then_events_then_a_relist_become_one_run_of_changes() {
        let mut state = State::default();
        assert!(!state.synced());
        state.replace(vec![object("a", "x", 5), object("a", "y", 6)], 10);
        assert!(state.synced());
        assert_eq!(
            (state.len(), state.resource_version(), state.next_seq()),
            (2, 10, 0)
        );
        state.apply(EventType::Modified, object("a", "x", 11));
        // A resumed watch repeating a version already applied.
        state.apply(EventType::Modified, object("a", "x", 11));
        state.apply(EventType::Added, object("b", "z", 12));
        state.apply(EventType::Deleted, object("a", "y", 13));
        // Deleting what was never there changes nothing.
        state.apply(EventType::Deleted, object("c", "nothing", 14));
        state.bookmark(16, object("", "", 16));
        // One older than what is known says nothing.
        state.bookmark(15, object("", "", 15));
        assert_eq!(
            seen(&state, 0),
            [
                "MODIFIED a/x@11 (at 11)",
                "ADDED b/z@12 (at 12)",
                "DELETED a/y@13 (at 13)",
                "BOOKMARK /@16 (at 16)",
            ]
        );
        // After a 410: the list says b/z changed, a/x is gone, a/w is new,
        // and c/r was deleted and created again (another uid).
        state.apply(EventType::Added, object("c", "r", 17));
        let before = state.next_seq();
        let mut recreated = object("c", "r", 18);
        recreated.uid = "another".into();
        state.replace(
            vec![object("b", "z", 20), object("a", "w", 19), recreated],
            21,
        );
        assert_eq!(
            seen(&state, before),
            [
                "DELETED a/x@11 (at 21)",
                "ADDED a/w@19 (at 21)",
                "MODIFIED b/z@20 (at 21)",
                "DELETED c/r@17 (at 21)",
                "ADDED c/r@18 (at 21)",
            ]
        );
        assert_eq!(state.resource_version(), 21);
        // What happened between the last event and the list is not known:
        // a watch from before the list is gone; open watches got the diff.
        assert_eq!(state.resume(17), Resume::Gone);
        assert_eq!(state.resume(21), Resume::At(state.next_seq()));
        let (objects, rv, seq) = state.snapshot(|o| o.namespace == "a");
        assert_eq!(objects.len(), 1);
        assert_eq!((rv, seq), (21, state.next_seq()));
    }

    #[test]
    fn a_watch_resumes_from_any_version_still_covered_and_is_gone_before() {
        let mut state = State::default();
        state.replace(vec![], 100);
        assert_eq!(state.resume(99), Resume::Gone);
        assert_eq!(state.resume(100), Resume::At(0));
        assert_eq!(state.resume(500), Resume::At(0));
        for i in 0..(MAX_CHANGES as u64 + 10) {
            state.apply(EventType::Added, object("a", &format!("o{i}"), 101 + i));
        }
        // The first ten changes (101..=110) were dropped.
        assert_eq!(state.resume(109), Resume::Gone);
        assert_eq!(state.resume(110), Resume::At(10));
        assert_eq!(state.resume(111), Resume::At(11));
        assert!(
            state.changes_from(9).is_none(),
            "a watch that fell behind is gone"
        );
        assert_eq!(state.changes_from(10).unwrap().len(), MAX_CHANGES);
        let last = state.next_seq();
        assert_eq!(state.changes_from(last).unwrap().len(), 0);
    }

    #[test]
    fn memory_counts_objects_once_and_kept_versions_until_dropped() {
        let mut state = State::default();
        state.replace(vec![object("a", "x", 1)], 1);
        let one = state.bytes();
        assert!(one > 0);
        state.apply(EventType::Modified, object("a", "x", 2));
        assert!(
            state.bytes() > one,
            "the replaced version is kept by its change"
        );
        state.apply(EventType::Deleted, object("a", "x", 3));
        assert_eq!(state.len(), 0);
        assert!(state.object_bytes == 0);
    }
}
