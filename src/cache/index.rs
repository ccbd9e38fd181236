//! What the cache directory holds, in memory, so an offline list is answered
//! without reading and parsing every file of its collection (kubelet's pod
//! list was bound by that: about 390 answers a second for 110 pods). Per
//! collection and encoding, per object file: its resourceVersion, labels and
//! the values of the fields node components select on, and its bytes while
//! the bytes of all of them fit `MAX_INDEXED_BYTES` (the rest is read from
//! its file when selected). The disk its file takes (whole 4 KiB blocks) and
//! when it was written, too:
//! garbage collection, the disk quota and the autonomy report are decided
//! from here, never by walking the disk.
//!
//! It is built in the background at start; until it is complete, lists read
//! the directory as before. The writer thread is the only writer of the cache
//! directory and tells the index of every file it writes or removes, and so
//! does whatever sets a file aside. A file the writer touched while the index
//! was being built keeps what the writer said (the build may have read it
//! before the change). A list still lists the directory (names only, no
//! reads): a file the index does not know (put there by hand, a link) is
//! read and checked as before, and one the index knows that is gone is left
//! out, so an answer made from the index is byte for byte the one made from
//! the files, in the same order. Not seen: a file replaced by hand under the
//! same name while the hub runs (its indexed version is served).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use super::key::{is_safe_segment, stored_segment};
use crate::codec::Encoding;
use crate::selector::{FieldSelector, LabelSelector, field_value};

/// Bytes of objects kept in memory (first come; the others are read from
/// their file when selected, which costs a list of 110 pods 30 times as
/// much: with 4 MiB, 10,000 ConfigMaps indexed first left kubelet's pods
/// on disk).
pub(super) const MAX_INDEXED_BYTES: usize = 16 * 1024 * 1024;
/// What the entries themselves may take (names, labels, field values, by
/// `Entry::cost`); past it the index is given up and lists read the
/// directory, as before it existed. About 550 bytes an object (measured in
/// `the_index_of_ten_thousand_objects_is_small`): some 120,000 objects.
pub(super) const MAX_INDEX_COST: usize = 64 * 1024 * 1024;
/// The fields whose values each entry keeps: what kubelet and kube-proxy
/// select on, and all that a protobuf object can answer. A selector on
/// another field is evaluated on the object's bytes.
pub(super) const INDEXED_FIELDS: [&str; 3] =
    ["metadata.name", "metadata.namespace", "spec.nodeName"];

/// One object file.
struct Entry {
    resource_version: u64,
    labels: BTreeMap<String, String>,
    /// The values of `INDEXED_FIELDS` as a field selector reads them; `None`
    /// when the object cannot be read as fields (no field selector matches).
    fields: Option<[Box<str>; 3]>,
    bytes: Option<Arc<[u8]>>,
    /// The disk the file takes, in whole blocks (`gc::disk_size`), for the
    /// disk quota.
    size: u64,
    /// When the file was written (Unix seconds; at start, its mtime): how
    /// old an event is, and which objects the quota removes first.
    written_at: i64,
}

impl Entry {
    /// Heap and inline bytes, roughly, of the entry and its key.
    fn cost(&self, key: &FileKey) -> usize {
        let strings = |s: &str| s.len() + std::mem::size_of::<String>();
        std::mem::size_of::<Entry>()
            + 2 * std::mem::size_of::<FileKey>()
            + key.0.as_deref().map_or(0, str::len)
            + key.1.len()
            + self
                .labels
                .iter()
                .map(|(k, v)| strings(k) + strings(v) + 16)
                .sum::<usize>()
            + self
                .fields
                .as_ref()
                .map_or(0, |f| f.iter().map(|v| v.len()).sum())
    }
}

/// A file within its collection: its namespace directory (`None` for a
/// cluster-scoped object) and its file name. Ordered as a directory read.
type FileKey = (Option<String>, String);

/// One collection in one encoding.
type CollectionKey = (PathBuf, Encoding);

struct State {
    /// `MAX_INDEXED_BYTES`, lower in tests.
    bytes_cap: usize,
    /// Whether every file of the cache is indexed (answers may come from here).
    ready: bool,
    /// Set once the index outgrew `MAX_INDEX_COST`: never used again.
    given_up: bool,
    collections: HashMap<CollectionKey, BTreeMap<FileKey, Entry>>,
    /// While building: the files the writer wrote or removed since the build
    /// started; what it said about them stands.
    touched: Option<HashSet<PathBuf>>,
    bytes_held: usize,
    cost: usize,
    /// The sum of the entries' `size`.
    disk_bytes: u64,
}

impl Default for State {
    fn default() -> State {
        State {
            bytes_cap: MAX_INDEXED_BYTES,
            ready: false,
            given_up: false,
            collections: HashMap::new(),
            touched: None,
            bytes_held: 0,
            cost: 0,
            disk_bytes: 0,
        }
    }
}

/// An object the index selected: its file, and its bytes when in memory.
pub(super) struct Candidate {
    /// The object's file; empty when its bytes are held here.
    pub path: PathBuf,
    pub resource_version: u64,
    pub bytes: Option<Arc<[u8]>>,
    /// Whether the index decided the selector (otherwise the bytes must).
    pub decided: bool,
}

#[derive(Default)]
pub(super) struct Index {
    state: Mutex<State>,
    ready: Condvar,
}

/// One indexed object file, as garbage collection, the disk quota and the
/// autonomy report see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Indexed {
    /// Its collection's directory (`{component}/{resource-dir}`).
    pub dir: PathBuf,
    pub encoding: Encoding,
    /// Its namespace directory, `None` when cluster-scoped.
    pub namespace: Option<String>,
    /// Its file name.
    pub file: String,
    /// `metadata.name` and `spec.nodeName` (empty when it has none).
    pub name: Box<str>,
    pub node_name: Box<str>,
    pub resource_version: u64,
    /// The disk its file takes, in whole blocks.
    pub size: u64,
    pub written_at: i64,
}

impl Indexed {
    /// Its file, relative to the cache root.
    pub fn path(&self) -> PathBuf {
        file_path(&self.dir, self.namespace.as_deref(), &self.file)
    }
}

/// What an object file holds, as the index keeps it.
fn entry_for(encoding: Encoding, bytes: &[u8], keep_bytes: bool, written_at: i64) -> Option<Entry> {
    let meta = encoding.decode_meta(bytes).ok()?;
    let fields = encoding.to_value(bytes).ok().map(|value| {
        INDEXED_FIELDS.map(|path| Box::<str>::from(field_value(&value, path).as_ref()))
    });
    Some(Entry {
        resource_version: meta.resource_version,
        labels: meta.labels,
        fields,
        bytes: keep_bytes.then(|| Arc::from(bytes)),
        size: super::gc::disk_size(bytes.len() as u64),
        written_at,
    })
}

/// Whether an entry matches the selectors: `Some` when the index can tell
/// (labels always; fields when every one is indexed), `None` when the
/// object's bytes must decide.
fn matches(entry: &Entry, labels: &LabelSelector, fields: &FieldSelector) -> Option<bool> {
    if !labels.is_empty() && !labels.matches(&entry.labels) {
        return Some(false);
    }
    if fields.is_empty() {
        return Some(true);
    }
    if !fields.fields().all(|f| INDEXED_FIELDS.contains(&f)) {
        return None;
    }
    let Some(values) = &entry.fields else {
        return Some(false);
    };
    Some(fields.matches_values(|field| {
        INDEXED_FIELDS
            .iter()
            .position(|f| *f == field)
            .map_or("", |i| &values[i])
    }))
}

/// A file's place in its collection, if it is an object file of it.
fn file_key(collection_dir: &Path, path: &Path) -> Option<FileKey> {
    let rest = path.strip_prefix(collection_dir).ok()?;
    let parts: Vec<&str> = rest
        .components()
        .map(|c| match c {
            Component::Normal(s) => s.to_str(),
            _ => None,
        })
        .collect::<Option<_>>()?;
    match parts.as_slice() {
        [file] => Some((None, file.to_string())),
        [namespace, file] => Some((Some(namespace.to_string()), file.to_string())),
        _ => None,
    }
}

impl Index {
    /// Starts a build: from now on the writer's changes are remembered.
    /// Starts from nothing: lists read the directory until the build ends.
    pub fn begin_build(&self) {
        let mut state = self.lock();
        state.ready = false;
        state.collections.clear();
        state.bytes_held = 0;
        state.cost = 0;
        state.touched = Some(HashSet::new());
    }

    /// Adds what a build read of one collection (in any order): each file
    /// with its bytes and when it was written; a file the writer touched
    /// meanwhile keeps what the writer said.
    pub fn add_built(
        &self,
        collection_dir: &Path,
        encoding: Encoding,
        built: Vec<(PathBuf, Vec<u8>, i64)>,
    ) {
        let mut state = self.lock();
        for (path, bytes, written_at) in built {
            if state.given_up || state.touched.as_ref().is_some_and(|t| t.contains(&path)) {
                continue;
            }
            let keep = state.bytes_held + bytes.len() <= state.bytes_cap;
            if let (Some(key), Some(entry)) = (
                file_key(collection_dir, &path),
                entry_for(encoding, &bytes, keep, written_at),
            ) {
                state.insert(collection_dir, encoding, key, entry);
            }
        }
    }

    /// The build is complete: answers may come from the index.
    pub fn finish_build(&self) {
        let mut state = self.lock();
        state.touched = None;
        state.ready = !state.given_up;
        self.ready.notify_all();
    }

    /// The writer wrote `bytes` to an object file of a collection.
    pub fn put(&self, collection_dir: &Path, encoding: Encoding, path: &Path, bytes: &[u8]) {
        self.put_at(
            collection_dir,
            encoding,
            path,
            bytes,
            crate::codec::time::now_unix(),
        );
    }

    /// `put`, written at `written_at` (Unix seconds).
    pub fn put_at(
        &self,
        collection_dir: &Path,
        encoding: Encoding,
        path: &Path,
        bytes: &[u8],
        written_at: i64,
    ) {
        let mut state = self.lock();
        state.touch(path);
        let Some(key) = file_key(collection_dir, path) else {
            return;
        };
        let held_now = state
            .collections
            .get(&(collection_dir.to_path_buf(), encoding))
            .and_then(|c| c.get(&key))
            .and_then(|e| e.bytes.as_ref())
            .map_or(0, |b| b.len());
        let keep = state.bytes_held - held_now + bytes.len() <= state.bytes_cap;
        match entry_for(encoding, bytes, keep, written_at) {
            Some(entry) => state.insert(collection_dir, encoding, key, entry),
            // Nothing an offline answer could serve: as if it were absent.
            None => state.remove(collection_dir, encoding, &key),
        }
    }

    /// An object file of a collection is gone (removed or set aside).
    pub fn remove(&self, collection_dir: &Path, encoding: Encoding, path: &Path) {
        let mut state = self.lock();
        state.touch(path);
        if let Some(key) = file_key(collection_dir, path) {
            state.remove(collection_dir, encoding, &key);
        }
    }

    /// Every collection under a directory (a component's) is gone.
    pub fn remove_under(&self, dir: &Path) {
        let mut state = self.lock();
        let gone: Vec<CollectionKey> = state
            .collections
            .keys()
            .filter(|(collection_dir, _)| collection_dir.starts_with(dir))
            .cloned()
            .collect();
        for key in gone {
            let files: Vec<FileKey> = state.collections[&key].keys().cloned().collect();
            for file in files {
                state.remove(&key.0, key.1, &file);
            }
            state.collections.remove(&key);
        }
    }

    /// An object's bytes, when the index is complete and holds them (they
    /// were checked when they were indexed).
    pub fn get(&self, collection_dir: &Path, encoding: Encoding, path: &Path) -> Option<Arc<[u8]>> {
        let key = file_key(collection_dir, path)?;
        let state = self.lock();
        if !state.ready {
            return None;
        }
        state
            .collections
            .get(&(collection_dir.to_path_buf(), encoding))?
            .get(&key)?
            .bytes
            .clone()
    }

    /// Once the index is complete, the objects of a collection (of one
    /// namespace, or all) the selectors may choose, in a directory read's
    /// order, without reading the directory: lists are answered from
    /// memory. A file put in the cache by hand while the hub runs is not
    /// known here, so it is never served (a restart's scan judges it).
    pub fn lookup_all(
        &self,
        collection_dir: &Path,
        encoding: Encoding,
        namespace: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> Option<Vec<Candidate>> {
        let state = self.lock();
        if !state.ready {
            return None;
        }
        let found = state.select(collection_dir, encoding, namespace, labels, fields);
        Some(
            found
                .map(|((entry_namespace, file), entry, decided)| {
                    // The file is only read when its bytes are not held here.
                    let mut path = PathBuf::new();
                    if entry.bytes.is_none() {
                        path = file_path(collection_dir, entry_namespace.as_deref(), file);
                    }
                    Candidate {
                        path,
                        resource_version: entry.resource_version,
                        bytes: entry.bytes.clone(),
                        decided,
                    }
                })
                .collect(),
        )
    }

    /// Once the index is complete, the files of a collection a list of this
    /// shape returns, each with its resourceVersion; a file whose match only
    /// its bytes could decide is left out (`undecided` counts them).
    pub fn shape_files(
        &self,
        collection_dir: &Path,
        encoding: Encoding,
        namespace: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> Option<ShapeFiles> {
        let state = self.lock();
        if !state.ready {
            return None;
        }
        let mut out = ShapeFiles::default();
        for ((entry_namespace, file), entry, decided) in
            state.select(collection_dir, encoding, namespace, labels, fields)
        {
            if decided {
                let path = file_path(collection_dir, entry_namespace.as_deref(), file);
                out.files.push((path, entry.resource_version));
            } else {
                out.undecided += 1;
            }
        }
        Some(out)
    }

    /// Whether the index holds a file: `None` until it is complete (or once
    /// it is given up), when only the disk can tell.
    pub fn holds(&self, collection_dir: &Path, encoding: Encoding, path: &Path) -> Option<bool> {
        let key = file_key(collection_dir, path)?;
        let state = self.lock();
        if !state.ready {
            return None;
        }
        Some(
            state
                .collections
                .get(&(collection_dir.to_path_buf(), encoding))
                .is_some_and(|entries| entries.contains_key(&key)),
        )
    }

    /// Whether an indexed file would be returned by a list of this shape:
    /// `None` when the index does not hold it or cannot tell.
    pub fn file_matches(
        &self,
        collection_dir: &Path,
        encoding: Encoding,
        path: &Path,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> Option<bool> {
        let key = file_key(collection_dir, path)?;
        let state = self.lock();
        let entry = state
            .collections
            .get(&(collection_dir.to_path_buf(), encoding))?
            .get(&key)?;
        matches(entry, labels, fields)
    }

    /// Once the index is complete, every object file it holds, and the sum
    /// of their sizes.
    pub fn objects(&self) -> Option<(Vec<Indexed>, u64)> {
        let state = self.lock();
        if !state.ready {
            return None;
        }
        let mut out = Vec::new();
        for ((dir, encoding), entries) in &state.collections {
            for ((namespace, file), entry) in entries {
                let field = |i: usize| -> Box<str> {
                    entry
                        .fields
                        .as_ref()
                        .map_or_else(Box::default, |f| f[i].clone())
                };
                out.push(Indexed {
                    dir: dir.clone(),
                    encoding: *encoding,
                    namespace: namespace.clone(),
                    file: file.clone(),
                    name: field(0),
                    node_name: field(2),
                    resource_version: entry.resource_version,
                    size: entry.size,
                    written_at: entry.written_at,
                });
            }
        }
        Some((out, state.disk_bytes))
    }

    /// Whether the index was given up (it outgrew `MAX_INDEX_COST`): until
    /// the hub restarts, lists read the directory and upkeep cannot run.
    pub fn given_up(&self) -> bool {
        self.lock().given_up
    }

    /// The bytes of every indexed file, once the index is complete.
    pub fn disk_bytes(&self) -> Option<u64> {
        let state = self.lock();
        state.ready.then_some(state.disk_bytes)
    }

    /// Waits (at most `timeout`) for the index to be complete.
    #[cfg(test)]
    pub fn wait_ready(&self, timeout: std::time::Duration) -> bool {
        let state = self.lock();
        let (state, _) = self
            .ready
            .wait_timeout_while(state, timeout, |s| !s.ready && !s.given_up)
            .unwrap_or_else(|e| e.into_inner());
        state.ready
    }

    /// Keeps at most `cap` bytes of objects from now on.
    #[cfg(test)]
    pub fn set_bytes_cap(&self, cap: usize) {
        self.lock().bytes_cap = cap;
    }

    /// Objects indexed, their bytes kept, and the entries' cost (an
    /// estimate of their memory besides the bytes).
    pub fn sizes(&self) -> (usize, usize, usize) {
        let state = self.lock();
        let objects = state.collections.values().map(BTreeMap::len).sum();
        (objects, state.bytes_held, state.cost)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The file of an entry, relative to the cache root.
fn file_path(collection_dir: &Path, namespace: Option<&str>, file: &str) -> PathBuf {
    let mut path = collection_dir.to_path_buf();
    if let Some(namespace) = namespace {
        path.push(namespace);
    }
    path.push(file);
    path
}

/// An entry a list may return, and whether the index decided the selector.
type Selected<'a> = (&'a FileKey, &'a Entry, bool);

/// The files an answer to a list selects, for a list's answer or its count.
#[derive(Debug, Default)]
pub(super) struct ShapeFiles {
    pub files: Vec<(PathBuf, u64)>,
    pub undecided: usize,
}

impl State {
    /// The entries of a collection (of one namespace, or all) the selectors
    /// may choose, in a directory read's order.
    fn select<'a>(
        &'a self,
        collection_dir: &Path,
        encoding: Encoding,
        namespace: Option<&'a str>,
        labels: &'a LabelSelector,
        fields: &'a FieldSelector,
    ) -> Box<dyn Iterator<Item = Selected<'a>> + 'a> {
        let Some(entries) = self
            .collections
            .get(&(collection_dir.to_path_buf(), encoding))
        else {
            return Box::new(std::iter::empty());
        };
        // One namespace is a range of the map (namespaces sort together),
        // so a list of `default` does not walk the other namespaces' objects;
        // one name in one namespace (how kubelet lists what its pods use) is
        // one entry.
        let one_name = fields.required_name().filter(|name| is_safe_segment(name));
        let in_scope: Box<dyn Iterator<Item = (&FileKey, &Entry)>> = match (namespace, one_name) {
            (Some(namespace), Some(name)) => {
                let file = format!("{}.{}", stored_segment(name), encoding.extension());
                Box::new(
                    entries
                        .get_key_value(&(Some(namespace.to_string()), file))
                        .into_iter(),
                )
            }
            (Some(namespace), None) => Box::new(
                entries
                    .range((Some(namespace.to_string()), String::new())..)
                    .take_while(move |((entry_namespace, _), _)| {
                        entry_namespace.as_deref() == Some(namespace)
                    }),
            ),
            (None, _) => Box::new(entries.iter()),
        };
        Box::new(
            in_scope.filter_map(move |(key, entry)| match matches(entry, labels, fields) {
                Some(false) => None,
                Some(true) => Some((key, entry, true)),
                None => Some((key, entry, false)),
            }),
        )
    }

    fn touch(&mut self, path: &Path) {
        if let Some(touched) = &mut self.touched {
            touched.insert(path.to_path_buf());
        }
    }

    fn insert(&mut self, collection_dir: &Path, encoding: Encoding, key: FileKey, entry: Entry) {
        if self.given_up {
            return;
        }
        self.remove(collection_dir, encoding, &key);
        self.cost += entry.cost(&key);
        self.bytes_held += entry.bytes.as_ref().map_or(0, |b| b.len());
        self.disk_bytes += entry.size;
        if self.cost > MAX_INDEX_COST {
            log::warn!(
                "the cache index outgrew {MAX_INDEX_COST} bytes; offline lists read the directory"
            );
            *self = State {
                given_up: true,
                touched: self.touched.take(),
                bytes_cap: self.bytes_cap,
                ..State::default()
            };
            return;
        }
        self.collections
            .entry((collection_dir.to_path_buf(), encoding))
            .or_default()
            .insert(key, entry);
    }

    fn remove(&mut self, collection_dir: &Path, encoding: Encoding, key: &FileKey) {
        let Some(entries) = self
            .collections
            .get_mut(&(collection_dir.to_path_buf(), encoding))
        else {
            return;
        };
        if let Some(old) = entries.remove(key) {
            self.cost -= old.cost(key);
            self.bytes_held -= old.bytes.as_ref().map_or(0, |b| b.len());
            self.disk_bytes -= old.size;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_index_decides_indexed_fields_as_the_selector_does_on_the_object() {
        let objects = [
            json!({"metadata": {"name": "p1", "namespace": "a"}, "spec": {"nodeName": "edge-1"}}),
            json!({"metadata": {"name": "p2", "namespace": "a"}, "spec": {"nodeName": null}}),
            json!({"metadata": {"name": "p3", "namespace": "a"}, "spec": {}}),
            json!({"metadata": {"name": "p4", "namespace": "a"}}),
            json!({"metadata": {"name": "p5"}, "spec": {"nodeName": 3}}),
            json!({"metadata": {"name": "p6"}, "spec": {"nodeName": {"x": true}}}),
            json!({"metadata": {"name": "p7"}, "spec": "flat"}),
        ];
        let selectors = [
            "spec.nodeName=edge-1",
            "spec.nodeName!=edge-1",
            "spec.nodeName=",
            "spec.nodeName=3",
            r#"spec.nodeName={"x":true}"#,
            "metadata.name=p1,metadata.namespace=a",
            "metadata.namespace=",
            "metadata.namespace!=a,spec.nodeName!=",
        ];
        let none = LabelSelector::parse("").unwrap();
        for object in &objects {
            let bytes = serde_json::to_vec(object).unwrap();
            let entry = entry_for(Encoding::Json, &bytes, false, 0).unwrap();
            for selector in selectors {
                let Ok(fields) = FieldSelector::parse(selector) else {
                    continue;
                };
                assert_eq!(
                    matches(&entry, &none, &fields),
                    Some(fields.matches(object)),
                    "{selector} on {object}"
                );
            }
        }
        let other = FieldSelector::parse("status.phase=Running").unwrap();
        let bytes = serde_json::to_vec(&objects[0]).unwrap();
        let entry = entry_for(Encoding::Json, &bytes, false, 0).unwrap();
        assert_eq!(matches(&entry, &none, &other), None, "the bytes decide");
    }

    /// What the index holds for 10,000 pods of a node-sized cache (names
    /// of 40 characters, three labels, a node name), bytes not counted:
    /// printed, and held well under the bound.
    #[test]
    fn the_index_of_ten_thousand_objects_is_small() {
        let index = Index::default();
        index.set_bytes_cap(0);
        index.begin_build();
        let dir = Path::new("kubelet/pods");
        let built: Vec<(PathBuf, Vec<u8>, i64)> = (0..10_000)
            .map(|i| {
                let name = format!("workload-{i:05}-5d8f7c9b4-abcdefghijklmnop");
                let namespace = format!("team-{:02}", i % 40);
                let object = json!({
                    "kind": "Pod", "apiVersion": "v1",
                    "metadata": {
                        "name": name, "namespace": namespace, "resourceVersion": (1000 + i).to_string(),
                        "labels": {"app": format!("workload-{i:05}"), "pod-template-hash": "5d8f7c9b4", "tier": "backend"},
                    },
                    "spec": {"nodeName": "edge-node-0001"},
                });
                (
                    dir.join(&namespace).join(format!("{name}.json")),
                    serde_json::to_vec(&object).unwrap(),
                    0,
                )
            })
            .collect();
        index.add_built(dir, Encoding::Json, built);
        index.finish_build();
        let (objects, bytes, cost) = index.sizes();
        assert_eq!((objects, bytes), (10_000, 0));
        println!(
            "index of 10,000 pods: {cost} bytes ({} per object), objects' bytes apart",
            cost / objects
        );
        assert!(cost < 10_000 * 600, "{cost}");
        assert!(cost * 10 < MAX_INDEX_COST);
    }

    #[test]
    fn objects_bytes_are_kept_up_to_the_cap_and_the_index_gives_up_past_its_bound() {
        let index = Index::default();
        index.set_bytes_cap(200);
        index.begin_build();
        index.finish_build();
        let dir = Path::new("kubelet/configmaps");
        let object = |name: &str| {
            serde_json::to_vec(&json!({"kind": "ConfigMap", "metadata": {"name": name, "namespace": "a", "resourceVersion": "1"}}))
                .unwrap()
        };
        let one = object("c1").len();
        assert!(2 * one <= 200 && 3 * one > 200, "{one}");
        for name in ["c1", "c2", "c3"] {
            index.put(
                dir,
                Encoding::Json,
                &dir.join(format!("a/{name}.json")),
                &object(name),
            );
        }
        assert_eq!(index.sizes().1, 2 * one, "c3 is read from its file");
        index.remove(
            dir,
            Encoding::Json,
            Path::new("kubelet/configmaps/a/c1.json"),
        );
        index.put(
            dir,
            Encoding::Json,
            Path::new("kubelet/configmaps/a/c3.json"),
            &object("c3"),
        );
        assert_eq!(index.sizes(), (2, 2 * one, index.sizes().2));
        // Past its bound the index is given up: lists read the directory.
        let mut state = index.lock();
        state.cost = MAX_INDEX_COST;
        drop(state);
        index.put(
            dir,
            Encoding::Json,
            Path::new("kubelet/configmaps/a/c4.json"),
            &object("c4"),
        );
        let none = LabelSelector::default();
        let all = FieldSelector::default();
        assert!(
            index
                .lookup_all(dir, Encoding::Json, Some("a"), &none, &all)
                .is_none()
        );
        assert_eq!(index.sizes(), (0, 0, 0));
    }

    #[test]
    fn files_have_their_place_in_their_collection() {
        let dir = Path::new("kubelet/pods");
        type Place<'a> = Option<(Option<&'a str>, &'a str)>;
        #[rustfmt::skip]
        let rows: &[(&str, Place)] = &[
            ("kubelet/pods/a/p1.json", Some((Some("a"), "p1.json"))),
            ("kubelet/pods/n1.json", Some((None, "n1.json"))),
            ("kubelet/pods/a/b/p1.json", None),
            ("kubelet/nodes/n1.json", None),
        ];
        for &(path, expected) in rows {
            let expected = expected.map(|(ns, f)| (ns.map(String::from), f.to_string()));
            assert_eq!(file_key(dir, Path::new(path)), expected, "{path}");
        }
    }
}
