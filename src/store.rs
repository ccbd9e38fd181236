//! The durable store: files under the cache root, written so that a crash or a
//! power cut at any moment leaves either the old or the new file, never a torn
//! one (temp file in the same directory, fsync, rename, fsync the directory).
//! Files are 0600 and directories 0700: cached Secrets live here.
//!
//! Nothing under the root is reached through a symbolic link: files are opened
//! with `O_NOFOLLOW`, every directory on the way is checked with
//! `symlink_metadata` (a link there refuses the read or write), scans never
//! descend into one, and the start-up scan sets links aside. A link placed in
//! the cache can then neither be served as an object nor make the hub write
//! (or remove) outside the root. The root itself may be a link.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Prefix of temp files; no Kubernetes name starts with `_`.
const TEMP_PREFIX: &str = "_tmp.";
/// Bytes of the target's file name repeated in its temp file's name (a hint
/// for a person; the whole would not fit 255 bytes with the suffixes).
const TEMP_NAME_HINT: usize = 64;
/// Longest name of a quarantined file (its flattened path, then a stamp).
const QUARANTINE_NAME: usize = 200;

/// `O_NOFOLLOW` from Linux's `fcntl.h`, whose value depends on the
/// architecture (the crate has no `libc`): opening a symbolic link fails.
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
const O_NOFOLLOW: i32 = 0o400000;
#[cfg(any(target_arch = "arm", target_arch = "aarch64"))]
const O_NOFOLLOW: i32 = 0o100000;
#[cfg(not(any(
    target_arch = "x86",
    target_arch = "x86_64",
    target_arch = "arm",
    target_arch = "aarch64"
)))]
compile_error!("define O_NOFOLLOW for this architecture (see its asm/fcntl.h)");
pub const QUARANTINE_DIR: &str = "_quarantine";

#[derive(Default)]
pub struct StoreStats {
    pub quarantined: AtomicU64,
    pub temp_files_removed: AtomicU64,
    /// Reads and writes refused because a directory on the way is a
    /// symbolic link.
    pub symlinks_refused: AtomicU64,
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

    /// A file's bytes, or `None` when it does not exist. A symbolic link in
    /// its place is set aside and counts as absent; one on the way (a linked
    /// directory) is an error.
    pub fn read(&self, relative: &Path) -> io::Result<Option<Vec<u8>>> {
        let path = self.checked(relative)?;
        let opened = OpenOptions::new()
            .read(true)
            .custom_flags(O_NOFOLLOW)
            .open(&path);
        match opened {
            Ok(mut file) => {
                let mut bytes = Vec::new();
                io::Read::read_to_end(&mut file, &mut bytes)?;
                Ok(Some(bytes))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(_) if is_symlink(&path) => {
                self.quarantine(relative, "a symbolic link");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The full path of a file under the root, once no directory between
    /// the root and it is a symbolic link (what is missing is not checked:
    /// it does not exist yet).
    fn checked(&self, relative: &Path) -> io::Result<PathBuf> {
        self.checked_path(relative, false)
    }

    /// The full path of a directory under the root, once neither it nor a
    /// directory on the way is a symbolic link.
    fn checked_dir(&self, relative: &Path) -> io::Result<PathBuf> {
        self.checked_path(relative, true)
    }

    fn checked_path(&self, relative: &Path, check_last: bool) -> io::Result<PathBuf> {
        let mut path = self.root.clone();
        let mut components = relative.components().peekable();
        while let Some(component) = components.next() {
            let std::path::Component::Normal(segment) = component else {
                return Err(io::Error::other(format!(
                    "{} is not a plain path under the cache root",
                    relative.display()
                )));
            };
            path.push(segment);
            if components.peek().is_none() && !check_last {
                break;
            }
            match fs::symlink_metadata(&path) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    self.stats.symlinks_refused.fetch_add(1, Ordering::Relaxed);
                    return Err(io::Error::other(format!(
                        "{} is a symbolic link; the cache never goes through one",
                        path.display()
                    )));
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    path.extend(components);
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(path)
    }

    /// A directory's entries, sorted; none when it is missing or it (or a
    /// directory on the way) is a symbolic link.
    fn entries(&self, dir: &Path) -> Vec<fs::DirEntry> {
        self.checked_dir(dir)
            .map(|path| read_dir_sorted(&path))
            .unwrap_or_default()
    }

    /// Replaces a file atomically and durably.
    pub fn write(&self, relative: &Path, bytes: &[u8]) -> io::Result<()> {
        let path = self.checked(relative)?;
        let dir = path
            .parent()
            .ok_or_else(|| io::Error::other("no parent directory"))?;
        self.create_dirs(dir)?;
        let file_name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("object");
        let temp = dir.join(format!(
            "{TEMP_PREFIX}{}.{}.{}",
            prefix(file_name, TEMP_NAME_HINT),
            std::process::id(),
            self.temp_counter.fetch_add(1, Ordering::Relaxed)
        ));
        let result = (|| {
            // The rename below replaces a link at `path` itself, never its target.
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(O_NOFOLLOW)
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
        let path = self.checked(relative)?;
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

    /// When a file was last written (Unix seconds), if it is a regular file
    /// reached without a symbolic link.
    pub fn modified(&self, relative: &Path) -> Option<i64> {
        let metadata = fs::symlink_metadata(self.checked(relative).ok()?).ok()?;
        let modified = metadata.is_file().then(|| metadata.modified().ok())??;
        let seconds = modified.duration_since(UNIX_EPOCH).ok()?.as_secs();
        i64::try_from(seconds).ok()
    }

    /// Removes a directory and everything in it, durably; returns how many
    /// entries were removed. A symbolic link inside is removed itself, never
    /// followed; a directory reached through one is refused.
    pub fn remove_tree(&self, relative: &Path) -> io::Result<usize> {
        let top = self.checked_dir(relative)?;
        if !top.is_dir() {
            return Ok(0);
        }
        let mut dirs = vec![top.clone()];
        let mut removed = 0;
        let mut i = 0;
        while i < dirs.len() {
            let dir = dirs[i].clone();
            i += 1;
            for entry in read_dir_sorted(&dir) {
                match entry.file_type() {
                    Ok(t) if t.is_dir() => dirs.push(entry.path()),
                    Ok(_) => {
                        fs::remove_file(entry.path())?;
                        removed += 1;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        for dir in dirs.iter().rev() {
            match fs::remove_dir(dir) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        if let Some(parent) = top.parent() {
            sync_dir(parent)?;
        }
        Ok(removed)
    }

    /// Moves a damaged file aside, where it is never served, and counts it.
    /// A symbolic link is moved itself; its target is never touched.
    pub fn quarantine(&self, relative: &Path, why: &str) {
        let flat = relative.to_string_lossy().replace('/', "#");
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let target_dir = self.root.join(QUARANTINE_DIR);
        let moved = self.checked(relative).and_then(|source| {
            self.checked_dir(Path::new(QUARANTINE_DIR))?;
            self.create_dirs(&target_dir)?;
            // Two files set aside in the same second keep both.
            let name = format!(
                "{}.{stamp}.{}",
                prefix(&flat, QUARANTINE_NAME),
                self.temp_counter.fetch_add(1, Ordering::Relaxed)
            );
            fs::rename(source, target_dir.join(name))
        });
        match moved {
            Ok(()) => {
                self.stats.quarantined.fetch_add(1, Ordering::Relaxed);
                log::warn!(
                    "cache file {} is unusable ({why}); moved to {QUARANTINE_DIR}/",
                    relative.display()
                );
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => log::warn!(
                "cache file {} is unusable ({why}) and cannot be moved aside: {e}",
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
                for entry in self.entries(collection_dir) {
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
        for entry in self.entries(dir) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with('_')
                && name.ends_with(&suffix)
                && entry.file_type().is_ok_and(|t| t.is_file())
            {
                out.push(dir.join(name));
            }
        }
    }

    /// The subdirectories of a directory (names, sorted), the hub's own
    /// (`_`) left out; none when it is missing or reached through a link.
    pub fn subdirs(&self, dir: &Path) -> Vec<String> {
        self.entries(dir)
            .into_iter()
            .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|name| !name.starts_with('_'))
            .collect()
    }

    /// Every regular file under a directory (relative paths), depth first.
    pub fn files_under(&self, dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut pending = vec![dir.to_path_buf()];
        while let Some(dir) = pending.pop() {
            for entry in self.entries(&dir) {
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

    /// Walks the whole cache once: removes leftover temp files, quarantines
    /// every file `is_intact` rejects and every symbolic link (the link
    /// itself, never what it points to). Never fails; problems are logged.
    pub fn scan(&self, is_intact: impl Fn(&Path, &[u8]) -> bool) -> ScanReport {
        let mut report = ScanReport::default();
        let mut pending = vec![PathBuf::new()];
        while let Some(dir) = pending.pop() {
            for entry in self.entries(&dir) {
                let name = entry.file_name().to_string_lossy().into_owned();
                let relative = dir.join(&name);
                let Ok(file_type) = entry.file_type() else {
                    continue;
                };
                if file_type.is_symlink() {
                    if !(dir.as_os_str().is_empty() && name == QUARANTINE_DIR) {
                        self.quarantine(&relative, "a symbolic link");
                        report.quarantined += 1;
                    }
                    continue;
                }
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
                let intact = self
                    .read(&relative)
                    .map(|bytes| bytes.is_none_or(|bytes| is_intact(&relative, &bytes)));
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

/// The first bytes of a name, at most `max`, cut at a character boundary.
fn prefix(name: &str, max: usize) -> &str {
    let mut cut = max.min(name.len());
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    &name[..cut]
}

fn is_symlink(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
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
    fn a_tree_is_removed_whole_without_following_a_link_inside() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("keep"), b"x").unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.write(Path::new("c/r/a/o.json"), b"{}").unwrap();
        store.write(Path::new("c/r/_lists.json"), b"{}").unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("c/r/link")).unwrap();
        assert_eq!(store.remove_tree(Path::new("c")).unwrap(), 6);
        assert!(!dir.path().join("c").exists());
        assert!(
            outside.path().join("keep").exists(),
            "the link's target stays"
        );
        assert_eq!(store.remove_tree(Path::new("missing/x")).unwrap(), 0);
        std::os::unix::fs::symlink(outside.path(), dir.path().join("linked")).unwrap();
        assert!(store.remove_tree(Path::new("linked")).is_err());
        assert!(outside.path().join("keep").exists());
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

    fn quarantined(store: &Store) -> Vec<String> {
        read_dir_sorted(&store.root().join(QUARANTINE_DIR))
            .iter()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn a_symlinked_file_is_never_read_and_its_target_never_touched() {
        let (dir, store) = store();
        let secret = dir.path().join("secret.json");
        fs::write(&secret, b"{\"secret\":1}").unwrap();
        fs::create_dir_all(store.root().join("c/pods/a")).unwrap();
        std::os::unix::fs::symlink(&secret, store.root().join("c/pods/a/evil.json")).unwrap();
        assert_eq!(store.read(Path::new("c/pods/a/evil.json")).unwrap(), None);
        assert!(!store.root().join("c/pods/a/evil.json").exists());
        assert_eq!(quarantined(&store).len(), 1, "the link itself is set aside");
        // A write in its place replaces a link, never writes through it.
        std::os::unix::fs::symlink(&secret, store.root().join("c/pods/a/evil.json")).unwrap();
        store.write(Path::new("c/pods/a/evil.json"), b"{}").unwrap();
        assert_eq!(fs::read(&secret).unwrap(), b"{\"secret\":1}");
        assert!(!is_symlink(&store.root().join("c/pods/a/evil.json")));
        assert!(store.list_objects(Path::new("c/pods"), None, "json").len() == 1);
    }

    #[test]
    fn a_symlinked_directory_is_never_written_read_or_listed_through() {
        let (dir, store) = store();
        let elsewhere = dir.path().join("elsewhere");
        fs::create_dir_all(elsewhere.join("a")).unwrap();
        fs::write(elsewhere.join("a/p1.json"), b"{}").unwrap();
        fs::create_dir_all(store.root().join("c")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, store.root().join("c/pods")).unwrap();
        let refused = store.write(Path::new("c/pods/a/p2.json"), b"{}");
        assert!(refused.is_err(), "{refused:?}");
        assert!(store.write(Path::new("c/pods/b/p3.json"), b"{}").is_err());
        assert!(store.read(Path::new("c/pods/a/p1.json")).is_err());
        assert!(store.remove(Path::new("c/pods/a/p1.json")).is_err());
        assert!(
            store
                .list_objects(Path::new("c/pods"), None, "json")
                .is_empty()
        );
        assert!(
            store
                .list_objects(Path::new("c/pods"), Some("a"), "json")
                .is_empty()
        );
        assert!(store.files_under(Path::new("c")).is_empty());
        // A linked namespace directory is skipped too.
        fs::create_dir_all(store.root().join("c/nodes")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, store.root().join("c/nodes/a")).unwrap();
        assert!(
            store
                .list_objects(Path::new("c/nodes"), None, "json")
                .is_empty()
        );
        assert!(
            store
                .list_objects(Path::new("c/nodes"), Some("a"), "json")
                .is_empty()
        );
        let names: Vec<_> = read_dir_sorted(&elsewhere.join("a"))
            .iter()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            names,
            ["p1.json"],
            "nothing written or removed outside the root"
        );
        assert!(store.stats.symlinks_refused.load(Ordering::Relaxed) >= 4);
    }

    #[test]
    fn scan_sets_symlinks_aside_never_their_targets() {
        let (dir, store) = store();
        let secret = dir.path().join("secret.json");
        fs::write(&secret, b"{}").unwrap();
        let elsewhere = dir.path().join("elsewhere");
        fs::create_dir_all(&elsewhere).unwrap();
        fs::write(elsewhere.join("p.json"), b"{\"torn").unwrap();
        store.write(Path::new("c/pods/a/good.json"), b"{}").unwrap();
        std::os::unix::fs::symlink(&secret, store.root().join("c/pods/a/evil.json")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, store.root().join("c/pods/b")).unwrap();
        let report =
            store.scan(|_, bytes| serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok());
        assert_eq!(
            report,
            ScanReport {
                files: 1,
                temp_files_removed: 0,
                quarantined: 2
            },
            "the torn file behind the linked directory is not looked at"
        );
        assert_eq!(quarantined(&store).len(), 2);
        assert!(secret.exists() && elsewhere.join("p.json").exists());
        assert!(!store.root().join("c/pods/b").exists());
        assert!(
            store
                .read(Path::new("c/pods/a/good.json"))
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn the_longest_file_names_get_temp_files_and_quarantine_names_that_fit() {
        let (_dir, store) = store();
        let long = format!("c/pods/a/{}.json", "n".repeat(245));
        store.write(Path::new(&long), b"{\"torn").unwrap();
        assert!(store.read(Path::new(&long)).unwrap().is_some());
        store.quarantine(Path::new(&long), "does not parse");
        let names = quarantined(&store);
        assert_eq!(names.len(), 1);
        assert!(names[0].len() <= 255);
        // Two files set aside in the same second are both kept.
        store.write(Path::new(&long), b"{}").unwrap();
        store.quarantine(Path::new(&long), "does not parse");
        assert_eq!(quarantined(&store).len(), 2);
        assert_eq!(store.stats.quarantined.load(Ordering::Relaxed), 2);
    }
}
