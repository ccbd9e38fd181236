//! The durable store: files under the cache root, written so that a crash or a
//! power cut at any moment leaves either the old or the new file, never a torn
//! one (temp file in the same directory, fsync, rename, fsync the directory).
//! Files are 0600 and directories 0700: cached Secrets live here.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Prefix of temp files; no Kubernetes name starts with `_`.
const TEMP_PREFIX: &str = "_tmp.";
pub const QUARANTINE_DIR: &str = "_quarantine";

#[derive(Default)]
pub struct StoreStats {
    pub quarantined: AtomicU64,
    pub temp_files_removed: AtomicU64,
}

pub struct Store {
    root: PathBuf,
    temp_counter: AtomicU64,
    pub stats: StoreStats,
}

/// What a start-up scan found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ScanReport {
    pub files: u64,
    pub temp_files_removed: u64,
    pub quarantined: u64,
}

impl Store {
    /// Opens (creating if needed) the cache root. Does not read anything else.
    pub fn open(root: &Path) -> io::Result<Store> {
        DirBuilder::new().recursive(true).mode(0o700).create(root)?;
        Ok(Store {
            root: root.to_path_buf(),
            temp_counter: AtomicU64::new(0),
            stats: StoreStats::default(),
        })
    }

    #[cfg(test)]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A file's bytes, or `None` when it does not exist.
    pub fn read(&self, relative: &Path) -> io::Result<Option<Vec<u8>>> {
        match fs::read(self.root.join(relative)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Replaces a file atomically and durably.
    pub fn write(&self, relative: &Path, bytes: &[u8]) -> io::Result<()> {
        let path = self.root.join(relative);
        let dir = path
            .parent()
            .ok_or_else(|| io::Error::other("no parent directory"))?;
        self.create_dirs(dir)?;
        let file_name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("object");
        let temp = dir.join(format!(
            "{TEMP_PREFIX}{file_name}.{}.{}",
            std::process::id(),
            self.temp_counter.fetch_add(1, Ordering::Relaxed)
        ));
        let result = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temp)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            fs::rename(&temp, &path)?;
            sync_dir(dir)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result
    }

    /// Removes a file durably; `Ok(false)` when it was not there.
    pub fn remove(&self, relative: &Path) -> io::Result<bool> {
        let path = self.root.join(relative);
        match fs::remove_file(&path) {
            Ok(()) => {
                if let Some(dir) = path.parent() {
                    sync_dir(dir)?;
                }
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Moves a damaged file aside, where it is never served, and counts it.
    pub fn quarantine(&self, relative: &Path, why: &str) {
        let flat = relative.to_string_lossy().replace('/', "#");
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let target_dir = self.root.join(QUARANTINE_DIR);
        let moved = self.create_dirs(&target_dir).and_then(|()| {
            fs::rename(
                self.root.join(relative),
                target_dir.join(format!("{flat}.{stamp}")),
            )
        });
        match moved {
            Ok(()) => {
                self.stats.quarantined.fetch_add(1, Ordering::Relaxed);
                log::warn!(
                    "cache file {} is damaged ({why}); moved to {QUARANTINE_DIR}/",
                    relative.display()
                );
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => log::warn!(
                "cache file {} is damaged ({why}) and cannot be moved aside: {e}",
                relative.display()
            ),
        }
    }

    /// Object files of a collection directory: those of one namespace, or
    /// (namespace `None`) the cluster-scoped ones and those of every namespace.
    pub fn list_objects(
        &self,
        collection_dir: &Path,
        namespace: Option<&str>,
        extension: &str,
    ) -> Vec<PathBuf> {
        let mut out = Vec::new();
        match namespace {
            Some(namespace) => {
                self.push_files(&collection_dir.join(namespace), extension, &mut out)
            }
            None => {
                self.push_files(collection_dir, extension, &mut out);
                for entry in read_dir_sorted(&self.root.join(collection_dir)) {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if !name.starts_with('_') && entry.file_type().is_ok_and(|t| t.is_dir()) {
                        self.push_files(&collection_dir.join(&name), extension, &mut out);
                    }
                }
            }
        }
        out
    }

    fn push_files(&self, dir: &Path, extension: &str, out: &mut Vec<PathBuf>) {
        let suffix = format!(".{extension}");
        for entry in read_dir_sorted(&self.root.join(dir)) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with('_')
                && name.ends_with(&suffix)
                && entry.file_type().is_ok_and(|t| t.is_file())
            {
                out.push(dir.join(name));
            }
        }
    }

    /// Every regular file under a directory (relative paths), depth first.
    pub fn files_under(&self, dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut pending = vec![dir.to_path_buf()];
        while let Some(dir) = pending.pop() {
            for entry in read_dir_sorted(&self.root.join(&dir)) {
                let relative = dir.join(entry.file_name());
                match entry.file_type() {
                    Ok(t) if t.is_dir() => pending.push(relative),
                    Ok(t)
                        if t.is_file()
                            && !entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) =>
                    {
                        out.push(relative)
                    }
                    _ => {}
                }
            }
        }
        out
    }

    /// Walks the whole cache once: removes leftover temp files and quarantines
    /// every file `is_intact` rejects. Never fails; problems are logged.
    pub fn scan(&self, is_intact: impl Fn(&Path, &[u8]) -> bool) -> ScanReport {
        let mut report = ScanReport::default();
        let mut pending = vec![PathBuf::new()];
        while let Some(dir) = pending.pop() {
            for entry in read_dir_sorted(&self.root.join(&dir)) {
                let name = entry.file_name().to_string_lossy().into_owned();
                let relative = dir.join(&name);
                let Ok(file_type) = entry.file_type() else {
                    continue;
                };
                if file_type.is_dir() {
                    if !(dir.as_os_str().is_empty() && name == QUARANTINE_DIR) {
                        pending.push(relative);
                    }
                    continue;
                }
                if !file_type.is_file() {
                    continue;
                }
                if name.starts_with(TEMP_PREFIX) {
                    // This process's own temp files are writes in progress.
                    if !is_own_temp_file(&name)
                        && fs::remove_file(self.root.join(&relative)).is_ok()
                    {
                        report.temp_files_removed += 1;
                        self.stats
                            .temp_files_removed
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    continue;
                }
                report.files += 1;
                let intact =
                    fs::read(self.root.join(&relative)).map(|bytes| is_intact(&relative, &bytes));
                match intact {
                    Ok(true) => {}
                    Ok(false) => {
                        self.quarantine(&relative, "does not parse");
                        report.quarantined += 1;
                    }
                    Err(e) => log::warn!("cannot read cache file {}: {e}", relative.display()),
                }
            }
        }
        report
    }

    /// Creates missing directories (0700) and makes each new entry durable.
    fn create_dirs(&self, dir: &Path) -> io::Result<()> {
        if dir.is_dir() {
            return Ok(());
        }
        if let Some(parent) = dir.parent() {
            self.create_dirs(parent)?;
        }
        match DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
            Err(e) => return Err(e),
        }
        match dir.parent() {
            Some(parent) => sync_dir(parent),
            None => Ok(()),
        }
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Whether a temp file name (`_tmp.{name}.{pid}.{n}`) is this process's.
fn is_own_temp_file(name: &str) -> bool {
    let mut parts = name.rsplit('.');
    parts.next();
    parts
        .next()
        .and_then(|pid| pid.parse::<u32>().ok())
        .is_some_and(|pid| pid == std::process::id())
}

fn read_dir_sorted(dir: &Path) -> Vec<fs::DirEntry> {
    let mut entries: Vec<fs::DirEntry> = fs::read_dir(dir)
        .map(|rd| rd.filter_map(Result::ok).collect())
        .unwrap_or_default();
    entries.sort_by_key(|e| e.file_name());
    entries
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("cache")).unwrap();
        (dir, store)
    }

    #[test]
    fn writes_replace_files_atomically_with_private_permissions() {
        let (_dir, store) = store();
        let path = Path::new("kubelet/pods/edge/p1.json");
        store.write(path, b"{\"v\":1}").unwrap();
        store.write(path, b"{\"v\":2}").unwrap();
        assert_eq!(store.read(path).unwrap().unwrap(), b"{\"v\":2}");
        let file_mode = fs::metadata(store.root().join(path))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        let dir_mode = fs::metadata(store.root().join("kubelet/pods"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!((file_mode, dir_mode), (0o600, 0o700));
        let leftovers: Vec<_> = fs::read_dir(store.root().join("kubelet/pods/edge"))
            .unwrap()
            .collect();
        assert_eq!(leftovers.len(), 1, "no temp file may remain");
        assert!(store.remove(path).unwrap());
        assert!(!store.remove(path).unwrap());
        assert_eq!(store.read(path).unwrap(), None);
    }

    #[test]
    fn lists_objects_of_one_or_every_namespace() {
        let (_dir, store) = store();
        for path in [
            "c/pods/a/p1.json",
            "c/pods/b/p2.json",
            "c/pods/_lists.json",
            "c/nodes/n1.json",
            "c/pods/a/_tmp.x.json.1",
        ] {
            store.write(Path::new(path), b"{}").unwrap();
        }
        let all = store.list_objects(Path::new("c/pods"), None, "json");
        assert_eq!(
            all,
            [
                PathBuf::from("c/pods/a/p1.json"),
                PathBuf::from("c/pods/b/p2.json")
            ]
        );
        assert_eq!(
            store.list_objects(Path::new("c/pods"), Some("b"), "json"),
            [PathBuf::from("c/pods/b/p2.json")]
        );
        assert_eq!(
            store.list_objects(Path::new("c/nodes"), None, "json"),
            [PathBuf::from("c/nodes/n1.json")]
        );
        assert!(
            store
                .list_objects(Path::new("c/none"), None, "json")
                .is_empty()
        );
    }

    #[test]
    fn scan_removes_temp_files_and_quarantines_damaged_ones() {
        let (_dir, store) = store();
        store.write(Path::new("c/pods/a/good.json"), b"{}").unwrap();
        store
            .write(Path::new("c/pods/a/bad.json"), b"{\"torn")
            .unwrap();
        fs::write(store.root().join("c/pods/a/_tmp.good.json.9.9"), b"{").unwrap();
        // A write of this process in progress is not a leftover.
        let in_progress = format!("c/pods/a/_tmp.bad.json.{}.3", std::process::id());
        fs::write(store.root().join(&in_progress), b"{").unwrap();
        let report =
            store.scan(|_, bytes| serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok());
        assert_eq!(
            report,
            ScanReport {
                files: 2,
                temp_files_removed: 1,
                quarantined: 1
            }
        );
        assert!(
            store
                .read(Path::new("c/pods/a/good.json"))
                .unwrap()
                .is_some()
        );
        assert!(
            store
                .read(Path::new("c/pods/a/bad.json"))
                .unwrap()
                .is_none()
        );
        assert!(store.root().join(&in_progress).exists());
        let quarantined: Vec<_> = fs::read_dir(store.root().join(QUARANTINE_DIR))
            .unwrap()
            .collect();
        assert_eq!(quarantined.len(), 1);
        // A second scan does not look into the quarantine.
        assert_eq!(store.scan(|_, _| false).quarantined, 1);
    }
}
