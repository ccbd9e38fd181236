//! List shapes: which (namespace, label selector, field selector) lists a
//! component has made of a collection, so that offline a list is answered only
//! in a shape that was really listed, and so that a fresh list can remove the
//! objects the same shape no longer returns. Kept per collection in
//! `_lists.json`, and in memory (`Listings`) for garbage collection and the
//! autonomy report, which must not read the disk; also the bookkeeping of
//! multi-page lists.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::codec::Encoding;
use crate::selector::{FieldSelector, LabelSelector};

use serde::{Deserialize, Serialize};

use super::key::Collection;

/// One list shape of a collection.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListShape {
    /// Empty for a cluster-wide list.
    pub namespace: String,
    pub label_selector: String,
    pub field_selector: String,
}

impl ListShape {
    /// The shape as one index key.
    pub fn key(&self) -> String {
        serde_json::json!([self.namespace, self.label_selector, self.field_selector]).to_string()
    }

    /// Its selectors, if both parse.
    pub fn selectors(&self) -> Option<(LabelSelector, FieldSelector)> {
        Some((
            LabelSelector::parse(&self.label_selector).ok()?,
            FieldSelector::parse(&self.field_selector).ok()?,
        ))
    }

    /// The shape an index key stands for.
    pub fn from_key(key: &str) -> Option<ListShape> {
        let [namespace, label_selector, field_selector] =
            serde_json::from_str::<[String; 3]>(key).ok()?;
        Some(ListShape {
            namespace,
            label_selector,
            field_selector,
        })
    }
}

/// The type of the list a shape returned, to answer it again offline, and the
/// encodings (file extensions) it was listed in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListType {
    pub kind: String,
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    #[serde(default)]
    pub encodings: std::collections::BTreeSet<String>,
    /// When the last complete list of the shape was stored (Unix seconds;
    /// 0: recorded by a version that did not keep it).
    #[serde(default, rename = "listedAt")]
    pub listed_at: i64,
    /// That list's resourceVersion (0: unknown).
    #[serde(default, rename = "resourceVersion")]
    pub resource_version: u64,
}

/// `_lists.json`: every shape listed, with its list type.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShapeIndex {
    pub version: u32,
    pub shapes: BTreeMap<String, ListType>,
    /// Shapes listed once whose complete list the cache no longer holds
    /// (the quota or a collection removed one of their objects): offline
    /// they answer as never listed, but who listed them is remembered
    /// across restarts (a kubelet stays a kubelet, and not ready). A
    /// version that does not know this field ignores it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub incomplete: BTreeMap<String, ListType>,
}

impl ShapeIndex {
    pub const VERSION: u32 = 1;

    pub fn parse(bytes: &[u8]) -> Option<ShapeIndex> {
        serde_json::from_slice::<ShapeIndex>(bytes)
            .ok()
            .filter(|i| i.version == Self::VERSION)
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Moves shapes to `incomplete`; whether anything changed.
    pub fn break_shapes<'a>(&mut self, shapes: impl Iterator<Item = &'a ListShape>) -> bool {
        let mut changed = false;
        for shape in shapes {
            let key = shape.key();
            if let Some(list_type) = self.shapes.remove(&key) {
                self.incomplete.insert(key, list_type);
                changed = true;
            }
        }
        changed
    }
}

/// What the hub knows of one shape's lists, in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListRecord {
    /// Whether the cache holds a complete list of the shape (the last one
    /// stored whole, and none of its objects removed since by the quota).
    pub complete: bool,
    /// When the last complete list was stored (Unix seconds; 0: unknown).
    pub listed_at: i64,
    pub resource_version: u64,
    /// The encodings (file extensions) it was listed in.
    pub encodings: BTreeSet<String>,
    /// The files of the last complete list, in the encoding it came in:
    /// known for lists stored since the start only (not kept on disk).
    pub members: Option<(Encoding, Arc<BTreeSet<PathBuf>>)>,
}

impl ListRecord {
    fn from_type(list_type: &ListType) -> ListRecord {
        ListRecord {
            complete: true,
            listed_at: list_type.listed_at,
            resource_version: list_type.resource_version,
            encodings: list_type.encodings.clone(),
            members: None,
        }
    }
}

/// Every collection's shapes, by collection directory.
pub type ShapeBook = BTreeMap<PathBuf, BTreeMap<ListShape, ListRecord>>;

/// The list shapes of every collection, in memory: loaded from the
/// `_lists.json` files by the start-up scan, then kept by the writer, so
/// that upkeep and the report never read them from disk.
#[derive(Default)]
pub struct Listings {
    book: Mutex<ShapeBook>,
}

impl Listings {
    /// What a collection's `_lists.json` says (the start-up scan). A shape
    /// the writer recorded meanwhile keeps what the writer said: the scan
    /// may have read the file before that write.
    pub fn load(&self, collection_dir: &Path, index: &ShapeIndex) {
        let mut book = self.lock();
        let known = book.entry(collection_dir.to_path_buf()).or_default();
        for (key, list_type) in &index.shapes {
            if let Some(shape) = ListShape::from_key(key) {
                known
                    .entry(shape)
                    .or_insert_with(|| ListRecord::from_type(list_type));
            }
        }
        for (key, list_type) in &index.incomplete {
            if let Some(shape) = ListShape::from_key(key) {
                known.entry(shape).or_insert_with(|| ListRecord {
                    complete: false,
                    ..ListRecord::from_type(list_type)
                });
            }
        }
    }

    /// A complete list of a shape was stored, with its objects' files.
    pub fn stored(
        &self,
        collection_dir: &Path,
        shape: &ListShape,
        list_type: &ListType,
        members: (Encoding, Arc<BTreeSet<PathBuf>>),
    ) {
        let mut record = ListRecord::from_type(list_type);
        record.members = Some(members);
        self.lock()
            .entry(collection_dir.to_path_buf())
            .or_default()
            .insert(shape.clone(), record);
    }

    /// A list of a shape arrived but not all of its objects could be stored.
    pub fn incomplete(&self, collection_dir: &Path, shape: &ListShape) {
        let mut book = self.lock();
        let shapes = book.entry(collection_dir.to_path_buf()).or_default();
        match shapes.get_mut(shape) {
            Some(record) => record.complete = false,
            None => {
                shapes.insert(
                    shape.clone(),
                    ListRecord {
                        complete: false,
                        listed_at: 0,
                        resource_version: 0,
                        encodings: BTreeSet::new(),
                        members: None,
                    },
                );
            }
        }
    }

    /// Every collection under a directory (a component's) is gone.
    pub fn forget_under(&self, dir: &Path) {
        self.lock()
            .retain(|collection_dir, _| !collection_dir.starts_with(dir));
    }

    /// The shapes of one collection.
    pub fn of(&self, collection_dir: &Path) -> BTreeMap<ListShape, ListRecord> {
        self.lock().get(collection_dir).cloned().unwrap_or_default()
    }

    /// Everything, as it is now (members are shared, not copied).
    pub fn snapshot(&self) -> ShapeBook {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ShapeBook> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The files of a list's objects as the writer stored them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Gathered {
    /// Every object's file, those whose write failed included (a failed
    /// write leaves the file's earlier content, which reconciliation must
    /// not remove: the object still exists upstream).
    pub files: BTreeSet<PathBuf>,
    /// Whether the write of one of the objects failed.
    pub failed: bool,
}

impl Gathered {
    fn extend(&mut self, other: Gathered) {
        self.files.extend(other.files);
        self.failed |= other.failed;
    }
}

/// A list being received page by page.
struct Paging {
    next_continue: String,
    gathered: Gathered,
}

/// Pages of lists not yet complete, by collection and shape.
#[derive(Default)]
pub struct PagedLists {
    in_progress: Mutex<HashMap<(Collection, ListShape), Paging>>,
}

/// Keeps at most this many unfinished paged lists (abandoned ones are dropped).
const MAX_PAGED_LISTS: usize = 256;

impl PagedLists {
    /// Records one page. `request_continue` is the `continue` the request sent
    /// (empty for a first page), `response_continue` the one the page returned.
    /// Returns the files of the whole list once its last page has arrived,
    /// `None` while pages are missing or out of order.
    pub fn page(
        &self,
        collection: &Collection,
        shape: &ListShape,
        request_continue: &str,
        response_continue: &str,
        page: Gathered,
    ) -> Option<Gathered> {
        let mut in_progress = self.in_progress.lock().unwrap_or_else(|e| e.into_inner());
        let key = (collection.clone(), shape.clone());
        let mut gathered = if request_continue.is_empty() {
            Gathered::default()
        } else {
            match in_progress.remove(&key) {
                Some(paging) if paging.next_continue == request_continue => paging.gathered,
                // A page whose first pages we did not see: it cannot complete a list.
                _ => return None,
            }
        };
        gathered.extend(page);
        if response_continue.is_empty() {
            in_progress.remove(&key);
            return Some(gathered);
        }
        if in_progress.len() >= MAX_PAGED_LISTS {
            in_progress.clear();
        }
        in_progress.insert(
            key,
            Paging {
                next_continue: response_continue.to_string(),
                gathered,
            },
        );
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> ListShape {
        ListShape {
            namespace: String::new(),
            label_selector: String::new(),
            field_selector: "spec.nodeName=edge-1".into(),
        }
    }

    fn collection() -> Collection {
        Collection {
            component: "kubelet".into(),
            resource_dir: "pods".into(),
        }
    }

    fn files(names: &[&str]) -> Gathered {
        Gathered {
            files: names.iter().map(PathBuf::from).collect(),
            failed: false,
        }
    }

    #[test]
    fn a_single_page_list_is_complete_at_once() {
        let paged = PagedLists::default();
        let done = paged
            .page(&collection(), &shape(), "", "", files(&["a"]))
            .unwrap();
        assert_eq!(done.files.len(), 1);
    }

    #[test]
    fn pages_complete_a_list_only_at_the_last_page() {
        let paged = PagedLists::default();
        assert!(
            paged
                .page(&collection(), &shape(), "", "t1", files(&["a"]))
                .is_none()
        );
        assert!(
            paged
                .page(&collection(), &shape(), "t1", "t2", files(&["b"]))
                .is_none()
        );
        let done = paged
            .page(&collection(), &shape(), "t2", "", files(&["c"]))
            .unwrap();
        assert_eq!(done, files(&["a", "b", "c"]));
    }

    #[test]
    fn a_failed_write_on_any_page_marks_the_whole_list() {
        let paged = PagedLists::default();
        let mut first = files(&["a"]);
        first.failed = true;
        assert!(
            paged
                .page(&collection(), &shape(), "", "t1", first)
                .is_none()
        );
        let done = paged
            .page(&collection(), &shape(), "t1", "", files(&["b"]))
            .unwrap();
        assert!(done.failed);
        assert_eq!(done.files.len(), 2);
    }

    #[test]
    fn a_page_out_of_order_completes_nothing() {
        let paged = PagedLists::default();
        assert!(
            paged
                .page(&collection(), &shape(), "", "t1", files(&["a"]))
                .is_none()
        );
        assert!(
            paged
                .page(&collection(), &shape(), "other", "", files(&["b"]))
                .is_none()
        );
        assert!(
            paged
                .page(&collection(), &shape(), "t1", "", files(&["b"]))
                .is_none()
        );
    }

    #[test]
    fn the_start_up_load_never_overwrites_what_the_writer_recorded() {
        let listings = Listings::default();
        let dir = Path::new("kubelet/pods");
        let newer = ListType {
            kind: "PodList".into(),
            api_version: "v1".into(),
            listed_at: 200,
            ..ListType::default()
        };
        let members = (Encoding::Json, Arc::new(BTreeSet::new()));
        listings.stored(dir, &shape(), &newer, members);
        let mut on_disk = ShapeIndex {
            version: ShapeIndex::VERSION,
            ..Default::default()
        };
        let older = ListType {
            listed_at: 100,
            ..newer.clone()
        };
        let other = ListShape {
            namespace: "a".into(),
            ..shape()
        };
        on_disk.shapes.insert(shape().key(), older.clone());
        on_disk.shapes.insert(other.key(), older);
        listings.load(dir, &on_disk);
        let known = listings.of(dir);
        assert_eq!(known[&shape()].listed_at, 200, "the writer's record stands");
        assert!(known[&shape()].members.is_some());
        assert_eq!(known[&other].listed_at, 100);
        assert!(known[&other].complete && known[&other].members.is_none());
    }

    #[test]
    fn shape_index_round_trips_and_rejects_other_versions() {
        let mut index = ShapeIndex {
            version: ShapeIndex::VERSION,
            ..Default::default()
        };
        index.shapes.insert(
            shape().key(),
            ListType {
                kind: "PodList".into(),
                api_version: "v1".into(),
                encodings: ["pb".to_string()].into(),
                listed_at: 1_700_000_000,
                resource_version: 42,
            },
        );
        assert_eq!(ShapeIndex::parse(&index.encode()), Some(index));
        // A file of an earlier version (no time, no resourceVersion) still reads.
        let older =
            br#"{"version":1,"shapes":{"[\"\",\"\",\"\"]":{"kind":"PodList","apiVersion":"v1"}}}"#;
        let parsed = ShapeIndex::parse(older).unwrap();
        assert_eq!(parsed.shapes.values().next().unwrap().listed_at, 0);
        assert_eq!(
            ListShape::from_key(parsed.shapes.keys().next().unwrap()),
            Some(ListShape {
                namespace: String::new(),
                label_selector: String::new(),
                field_selector: String::new(),
            })
        );
        assert_eq!(ListShape::from_key(&shape().key()), Some(shape()));
        assert_eq!(ListShape::from_key("garbage"), None);
        assert_eq!(ShapeIndex::parse(br#"{"version":99,"shapes":{}}"#), None);
        assert_eq!(ShapeIndex::parse(b"garbage"), None);
    }
}
