//! Pure decisions of the shared watch: which local requests the shared
//! state can answer as the apiserver would (the rest are forwarded), and
//! what one change looks like to one client's selectors.

use std::sync::Arc;
use std::time::Duration;

use super::state::{Change, Object};
use crate::codec::EventType;
use crate::request_info::{Query, RequestInfo, Verb, parse_bool};
use crate::selector::{FieldSelector, LabelSelector};

/// How a local request of a shared resource is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// The list of the selected objects, once the state is at least at
    /// this resourceVersion.
    List { at_least: Option<u64> },
    /// A watch.
    Watch(WatchPlan),
    /// Sent to the apiserver: the shared state cannot answer it as the
    /// apiserver would.
    Forward(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchPlan {
    pub start: Start,
    pub bookmarks: bool,
    /// `timeoutSeconds` (0 or absent: the hub's own).
    pub timeout: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Every selected object as ADDED first; with `annotated_end`, a
    /// streaming list, then the bookmark that ends its initial events.
    /// Once the state is at least at `at_least`.
    Initial {
        annotated_end: bool,
        at_least: Option<u64>,
    },
    /// The changes after this resourceVersion.
    After(u64),
}

/// Fields a field selector may name on a shared resource (every resource
/// has these; Services and EndpointSlices have no other).
const SELECTABLE_FIELDS: [&str; 2] = ["metadata.name", "metadata.namespace"];

/// What one client selects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Empty: every namespace.
    pub namespace: String,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Selection {
    /// The request's namespace and selectors; `Err` for what the shared
    /// state cannot judge (the apiserver answers it).
    pub fn of(info: &RequestInfo, query: &Query) -> Result<Selection, &'static str> {
        let labels = LabelSelector::parse(query.get("labelSelector").unwrap_or(""))
            .map_err(|_| "a label selector the apiserver judges")?;
        let fields = FieldSelector::parse(query.get("fieldSelector").unwrap_or(""))
            .map_err(|_| "a field selector the apiserver judges")?;
        if fields.fields().any(|f| !SELECTABLE_FIELDS.contains(&f)) {
            return Err("a field selector on a field the shared state does not read");
        }
        Ok(Selection {
            namespace: info.namespace.clone(),
            labels,
            fields,
        })
    }

    pub fn selects(&self, object: &Object) -> bool {
        (self.namespace.is_empty() || object.namespace == self.namespace)
            && self.labels.matches(&object.labels)
            && self.fields.matches_values(|field| match field {
                "metadata.name" => object.name.as_str(),
                "metadata.namespace" => object.namespace.as_str(),
                _ => "",
            })
    }
}

/// A resourceVersion as the shared state compares them: `None` for the
/// empty one and `0`, `Err` for one that is not a number (opaque to the
/// hub: the apiserver judges it).
fn resource_version(query: &Query) -> Result<Option<u64>, ()> {
    let text = query.get("resourceVersion").unwrap_or("");
    if text.is_empty() {
        return Ok(None);
    }
    // Digits only (a sign is not a version), as kube-apiserver parses them;
    // any spelling of 0 is "any version".
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(());
    }
    match text.parse::<u64>() {
        Ok(0) => Ok(None),
        Ok(rv) => Ok(Some(rv)),
        Err(_) => Err(()),
    }
}

/// How a list or watch of a shared resource is answered (kube-apiserver's
/// resourceVersion rules, as its watch cache applies them).
pub fn plan(info: &RequestInfo, query: &Query) -> Plan {
    // `/watch/namespaces/a/services/x`, the deprecated path naming one
    // object (a name from `fieldSelector=metadata.name=x` is in the
    // selection already).
    if !info.name.is_empty() && query.field_selector_name().as_deref() != Some(info.name.as_str()) {
        return Plan::Forward("a request naming one object");
    }
    let Ok(at) = resource_version(query) else {
        return Plan::Forward("a resourceVersion that is not a number");
    };
    let exact = match query.get("resourceVersionMatch").unwrap_or("") {
        "" => false,
        "NotOlderThan" => {
            let unversioned = query.get("resourceVersion").unwrap_or("").is_empty();
            if unversioned && !query.sends_initial_events() {
                // The apiserver refuses a match without a version.
                return Plan::Forward("resourceVersionMatch without a resourceVersion");
            }
            false
        }
        "Exact" => true,
        _ => return Plan::Forward("an unknown resourceVersionMatch"),
    };
    match info.verb {
        Verb::List => {
            if query.get("continue").is_some_and(|c| !c.is_empty()) {
                return Plan::Forward("the next page of a list the apiserver started");
            }
            // With `limit` and no match, a version is exact (the apiserver
            // reads that page from etcd).
            let paged = query
                .get("limit")
                .is_some_and(|l| !l.is_empty() && l != "0");
            if exact || (at.is_some() && paged && query.get("resourceVersionMatch").is_none()) {
                return Plan::Forward("a list at an exact resourceVersion");
            }
            Plan::List { at_least: at }
        }
        Verb::Watch => {
            let timeout = query
                .timeout_seconds()
                .filter(|&s| s > 0)
                .map(Duration::from_secs);
            let bookmarks = query.get("allowWatchBookmarks").is_some_and(parse_bool);
            let streaming = query.sends_initial_events();
            let start = if streaming {
                // The apiserver refuses a streaming list without both.
                if query.get("resourceVersionMatch") != Some("NotOlderThan") || !bookmarks {
                    return Plan::Forward(
                        "a streaming list without resourceVersionMatch=NotOlderThan and bookmarks",
                    );
                }
                Start::Initial {
                    annotated_end: true,
                    at_least: at,
                }
            } else if query.get("resourceVersionMatch").is_some() {
                return Plan::Forward("resourceVersionMatch on a watch");
            } else {
                match at {
                    None => Start::Initial {
                        annotated_end: false,
                        at_least: None,
                    },
                    Some(after) => Start::After(after),
                }
            };
            Plan::Watch(WatchPlan {
                start,
                bookmarks,
                timeout,
            })
        }
        _ => Plan::Forward("not a list or a watch"),
    }
}

/// What a client is sent for one change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// The event as it is.
    Event(EventType, Arc<Object>),
    /// The object left the client's selection: `DELETED` with the version
    /// it last saw, at the change's resourceVersion (as the apiserver's
    /// watch cache does).
    Left(Arc<Object>, u64),
}

/// One change as a client with `selection` sees it (kube-apiserver's watch
/// cache rules: an object entering the selection is `ADDED`, one leaving it
/// `DELETED`).
pub fn for_client(change: &Change, selection: &Selection, bookmarks: bool) -> Option<Sent> {
    let now = || selection.selects(&change.object);
    let before = || {
        change
            .previous
            .as_ref()
            .is_some_and(|p| selection.selects(p))
    };
    match change.event_type {
        EventType::Bookmark => {
            bookmarks.then(|| Sent::Event(EventType::Bookmark, change.object.clone()))
        }
        EventType::Added => now().then(|| Sent::Event(EventType::Added, change.object.clone())),
        EventType::Deleted => {
            let matched = match &change.previous {
                Some(previous) => selection.selects(previous),
                None => now(),
            };
            // A deletion a relist found carries the last version seen: it
            // is sent at the list's version.
            let stale = change.object.resource_version < change.resource_version;
            matched.then(|| match stale {
                false => Sent::Event(EventType::Deleted, change.object.clone()),
                true => Sent::Left(change.object.clone(), change.resource_version),
            })
        }
        EventType::Modified => match (before(), now()) {
            (true, true) => Some(Sent::Event(EventType::Modified, change.object.clone())),
            (false, true) => Some(Sent::Event(EventType::Added, change.object.clone())),
            (true, false) => change
                .previous
                .clone()
                .map(|previous| Sent::Left(previous, change.resource_version)),
            (false, false) => None,
        },
        EventType::Error => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request_info::classify;
    use std::collections::BTreeMap;

    fn planned(path: &str, query: &str) -> Plan {
        let query = Query::parse(query);
        let info = classify("GET", path, &query).unwrap();
        plan(&info, &query)
    }

    fn watch(start: Start, bookmarks: bool, timeout: Option<u64>) -> Plan {
        Plan::Watch(WatchPlan {
            start,
            bookmarks,
            timeout: timeout.map(Duration::from_secs),
        })
    }

    #[test]
    fn resource_versions_as_the_apiserver_reads_them() {
        let initial = |annotated_end, at_least| Start::Initial {
            annotated_end,
            at_least,
        };
        let services = "/api/v1/services";
        let rows = [
            ("", Plan::List { at_least: None }),
            ("resourceVersion=0", Plan::List { at_least: None }),
            ("resourceVersion=0&limit=500", Plan::List { at_least: None }),
            ("resourceVersion=&limit=500", Plan::List { at_least: None }),
            ("resourceVersion=42", Plan::List { at_least: Some(42) }),
            (
                "resourceVersion=42&resourceVersionMatch=NotOlderThan",
                Plan::List { at_least: Some(42) },
            ),
            (
                "resourceVersion=42&resourceVersionMatch=Exact",
                Plan::Forward("a list at an exact resourceVersion"),
            ),
            (
                "resourceVersion=42&limit=500",
                Plan::Forward("a list at an exact resourceVersion"),
            ),
            (
                "resourceVersion=42&limit=500&resourceVersionMatch=NotOlderThan",
                Plan::List { at_least: Some(42) },
            ),
            ("resourceVersion=00", Plan::List { at_least: None }),
            (
                "resourceVersion=%2B5",
                Plan::Forward("a resourceVersion that is not a number"),
            ),
            (
                "limit=500&continue=abc",
                Plan::Forward("the next page of a list the apiserver started"),
            ),
            (
                "resourceVersion=abc",
                Plan::Forward("a resourceVersion that is not a number"),
            ),
            (
                "resourceVersionMatch=Sometime&resourceVersion=1",
                Plan::Forward("an unknown resourceVersionMatch"),
            ),
            ("watch=true", watch(initial(false, None), false, None)),
            (
                "watch=1&resourceVersion=0&allowWatchBookmarks=true&timeoutSeconds=300",
                watch(initial(false, None), true, Some(300)),
            ),
            (
                "watch=true&resourceVersion=42",
                watch(Start::After(42), false, None),
            ),
            (
                "watch=true&timeoutSeconds=0&resourceVersion=42",
                watch(Start::After(42), false, None),
            ),
            (
                "watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true",
                watch(initial(true, None), true, None),
            ),
            (
                "watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&resourceVersion=42&allowWatchBookmarks=1",
                watch(initial(true, Some(42)), true, None),
            ),
            (
                "watch=true&sendInitialEvents=true&allowWatchBookmarks=true",
                Plan::Forward(
                    "a streaming list without resourceVersionMatch=NotOlderThan and bookmarks",
                ),
            ),
            (
                "watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan",
                Plan::Forward(
                    "a streaming list without resourceVersionMatch=NotOlderThan and bookmarks",
                ),
            ),
            (
                "watch=true&resourceVersion=5&resourceVersionMatch=NotOlderThan",
                Plan::Forward("resourceVersionMatch on a watch"),
            ),
        ];
        for (query, expected) in rows {
            assert_eq!(planned(services, query), expected, "{query}");
        }
        assert_eq!(
            planned("/api/v1/namespaces/a/services/x", ""),
            Plan::Forward("a request naming one object")
        );
        assert_eq!(
            planned("/api/v1/watch/namespaces/a/services/x", ""),
            Plan::Forward("a request naming one object")
        );
        assert_eq!(
            planned(
                "/api/v1/namespaces/a/services",
                "fieldSelector=metadata.name%3Dx"
            ),
            Plan::List { at_least: None }
        );
    }

    fn object(namespace: &str, name: &str, rv: u64, labels: &[(&str, &str)]) -> Arc<Object> {
        Arc::new(Object {
            namespace: namespace.into(),
            name: name.into(),
            uid: String::new(),
            resource_version: rv,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            bytes: Arc::from(&b"{}"[..]),
        })
    }

    fn change(event_type: EventType, object: Arc<Object>, previous: Option<Arc<Object>>) -> Change {
        Change {
            seq: 0,
            resource_version: object.resource_version,
            event_type,
            object,
            previous,
        }
    }

    fn selection(namespace: &str, labels: &str, fields: &str) -> Selection {
        Selection {
            namespace: namespace.into(),
            labels: LabelSelector::parse(labels).unwrap(),
            fields: FieldSelector::parse(fields).unwrap(),
        }
    }

    #[test]
    fn each_client_sees_a_change_through_its_own_selection() {
        let in_a = object("a", "s", 10, &[("app", "x")]);
        let in_a_relabelled = object("a", "s", 11, &[("app", "y")]);
        let in_b = object("b", "s", 12, &[("app", "x")]);
        let bookmark = object("", "", 13, &[]);
        let app_x = selection("", "app=x", "");
        let only_a = selection("a", "", "");
        let named_s_in_b = selection("", "", "metadata.name=s,metadata.namespace=b");
        let added = change(EventType::Added, in_a.clone(), None);
        let relabelled = change(
            EventType::Modified,
            in_a_relabelled.clone(),
            Some(in_a.clone()),
        );
        let relabelled_back = change(
            EventType::Modified,
            in_a.clone(),
            Some(in_a_relabelled.clone()),
        );
        let deleted = change(EventType::Deleted, in_b.clone(), Some(in_b.clone()));
        let marked = change(EventType::Bookmark, bookmark.clone(), None);
        let mut relisted_away = change(EventType::Deleted, in_a.clone(), Some(in_a.clone()));
        relisted_away.resource_version = 20;
        let ev = |t, o: &Arc<Object>| Some(Sent::Event(t, o.clone()));
        let rows: Vec<(&str, &Change, &Selection, bool, Option<Sent>)> = vec![
            (
                "added, selected",
                &added,
                &app_x,
                false,
                ev(EventType::Added, &in_a),
            ),
            ("added, other namespace", &added, &named_s_in_b, false, None),
            (
                "relabelled out of the selector",
                &relabelled,
                &app_x,
                false,
                Some(Sent::Left(in_a.clone(), 11)),
            ),
            (
                "relabelled within the namespace",
                &relabelled,
                &only_a,
                false,
                ev(EventType::Modified, &in_a_relabelled),
            ),
            (
                "relabelled back into the selector",
                &relabelled_back,
                &app_x,
                false,
                ev(EventType::Added, &in_a),
            ),
            (
                "relabelled, never selected",
                &relabelled,
                &named_s_in_b,
                false,
                None,
            ),
            (
                "deleted, selected",
                &deleted,
                &named_s_in_b,
                false,
                ev(EventType::Deleted, &in_b),
            ),
            ("deleted, other namespace", &deleted, &only_a, false, None),
            (
                "deleted, found by a relist",
                &relisted_away,
                &app_x,
                false,
                Some(Sent::Left(in_a.clone(), 20)),
            ),
            (
                "bookmark, asked",
                &marked,
                &only_a,
                true,
                ev(EventType::Bookmark, &bookmark),
            ),
            ("bookmark, not asked", &marked, &only_a, false, None),
        ];
        for (what, change, selection, bookmarks, expected) in rows {
            assert_eq!(for_client(change, selection, bookmarks), expected, "{what}");
        }
    }

    #[test]
    fn selections_the_shared_state_cannot_judge_are_the_apiservers() {
        let query = Query::parse("fieldSelector=spec.clusterIP%3D10.0.0.1");
        let info = classify("GET", "/api/v1/services", &query).unwrap();
        assert!(Selection::of(&info, &query).is_err());
        let query = Query::parse("labelSelector=a%20in%20(");
        assert!(Selection::of(&info, &query).is_err());
        let query =
            Query::parse("labelSelector=!svc,app%20in%20(x,y)&fieldSelector=metadata.name!%3Dz");
        let selection = Selection::of(&info, &query).unwrap();
        assert!(selection.selects(&object("a", "s", 1, &[("app", "y")])));
        assert!(!selection.selects(&object("a", "z", 1, &[("app", "y")])));
        assert!(!selection.selects(&object("a", "s", 1, &[("app", "y"), ("svc", "")])));
    }
}
