//! One local client's answer from the shared state, as a body the relay
//! reads like an apiserver's: a list at once, or a watch that waits for
//! changes (a quiet poll between them lets the relay notice a client that
//! left), each change through the client's selection.

use std::io::{self, Read};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Shared;
use super::serve::{Selection, Sent, for_client};
use super::state::Object;
use crate::codec::edit::{Opened, key};
use crate::codec::{Encoding, EventType, Pieces};
use crate::status::status_object;

/// Longest a watch waits for a change before the relay checks its client.
const POLL: Duration = Duration::from_secs(1);
/// The longest watch (a `timeoutSeconds` past it is served as this).
const MAX_WATCH: Duration = Duration::from_secs(365 * 24 * 3600);

pub struct SharedBody {
    shared: Arc<Shared>,
    encoding: Encoding,
    selection: Selection,
    /// Pieces being sent: a list, a watch's initial events, the events of
    /// the last changes read.
    pending: Option<Pieces<Arc<[u8]>>>,
    cursor: (usize, usize),
    /// A watch: the next change to look at, changes at or before
    /// `after` skipped, bookmarks if asked, and when it ends.
    watch: Option<WatchCursor>,
    /// The watch ends once what is pending is sent (an ERROR was queued).
    ending: bool,
    /// Counted among the resource's local watchers while it lives.
    _watcher: Option<super::WatcherSlot>,
}

struct WatchCursor {
    seq: u64,
    after: u64,
    /// The newest version among the changes this watch has gone through
    /// (sent or not selected): what its last bookmark may say.
    seen: u64,
    bookmarks: bool,
    ends_at: Instant,
}

impl SharedBody {
    /// A list (or a streaming list's initial events): sent, then the end.
    pub fn whole(shared: Arc<Shared>, encoding: Encoding, pieces: Pieces<Arc<[u8]>>) -> SharedBody {
        SharedBody {
            shared,
            encoding,
            selection: Selection::default(),
            pending: Some(pieces),
            cursor: (0, 0),
            watch: None,
            ending: false,
            _watcher: None,
        }
    }

    /// A watch from change `seq` (skipping changes at or before `after`),
    /// after `initial` (ADDED events, the streaming list's end) if any.
    #[allow(clippy::too_many_arguments)]
    pub fn watch(
        shared: Arc<Shared>,
        encoding: Encoding,
        selection: Selection,
        initial: Option<Pieces<Arc<[u8]>>>,
        seq: u64,
        after: u64,
        bookmarks: bool,
        timeout: Duration,
    ) -> SharedBody {
        let watcher = Some(shared.watcher());
        SharedBody {
            shared,
            encoding,
            selection,
            pending: initial,
            cursor: (0, 0),
            watch: Some(WatchCursor {
                seq,
                after,
                seen: after,
                bookmarks,
                ends_at: Instant::now() + timeout.min(MAX_WATCH),
            }),
            ending: false,
            _watcher: watcher,
        }
    }

    /// A watch that starts too far back: one `410 Gone` ERROR event, then
    /// the end (the client lists again, as after the apiserver's).
    pub fn gone(shared: Arc<Shared>, encoding: Encoding, asked: u64) -> SharedBody {
        let mut body = SharedBody::whole(shared, encoding, Pieces::from_bytes(Vec::new()));
        body.queue_gone(Some(asked));
        body
    }

    fn queue_gone(&mut self, asked: Option<u64>) {
        let message = match asked {
            Some(asked) => format!("too old resource version: {asked}"),
            None => "the shared watch's changes moved on past this watch; list again".into(),
        };
        let status = status_object(self.encoding, 410, &message);
        let event = self.encoding.encode_event(EventType::Error, &status);
        self.pending = Some(Pieces::from_bytes(event));
        self.cursor = (0, 0);
        self.ending = true;
    }

    /// Waits (at most `POLL`) for changes past the cursor and queues what
    /// the client sees of them. `Ok(false)`: nothing yet.
    fn next_changes(&mut self) -> io::Result<bool> {
        let Some(watch) = self.watch.as_mut() else {
            return Ok(false);
        };
        let wait = watch
            .ends_at
            .saturating_duration_since(Instant::now())
            .min(POLL);
        let changes = match self.shared.wait_changes(watch.seq, wait) {
            Some(changes) => changes,
            None => {
                self.queue_gone(None);
                return Ok(true);
            }
        };
        let Some(last) = changes.last() else {
            return Ok(false);
        };
        watch.seq = last.seq + 1;
        let mut events: Vec<(EventType, Arc<[u8]>)> = Vec::new();
        for change in &changes {
            watch.seen = watch.seen.max(change.resource_version);
            // Bookmarks too: one older than where the client starts would
            // move it back.
            if change.resource_version <= watch.after {
                continue;
            }
            let Some(sent) = for_client(change, &self.selection, watch.bookmarks) else {
                continue;
            };
            events.push(match sent {
                Sent::Event(event_type, object) => (event_type, object.bytes.clone()),
                Sent::Left(previous, at) => (
                    EventType::Deleted,
                    with_resource_version(self.encoding, &previous, at).into(),
                ),
            });
        }
        if events.is_empty() {
            return Ok(false);
        }
        // The objects as the shared state holds them, never copied per client.
        self.pending = Some(self.encoding.encode_events(events));
        self.cursor = (0, 0);
        Ok(true)
    }
}

/// An object's bytes with `metadata.resourceVersion` set to `at` (as is,
/// if the object cannot be opened).
fn with_resource_version(encoding: Encoding, object: &Object, at: u64) -> Vec<u8> {
    const PATH: [crate::codec::edit::Key; 2] = [key("metadata", 1), key("resourceVersion", 6)];
    let Ok(mut opened) = Opened::open(encoding, &object.bytes) else {
        return object.bytes.to_vec();
    };
    match opened.object.set_str(&PATH, &at.to_string()) {
        Ok(()) => opened.seal(),
        Err(_) => object.bytes.to_vec(),
    }
}

impl Read for SharedBody {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(pieces) = &self.pending {
                let n = pieces.read_at(&mut self.cursor, out);
                if n > 0 {
                    return Ok(n);
                }
                self.pending = None;
            }
            if self.ending
                || self
                    .shared
                    .stopped
                    .load(std::sync::atomic::Ordering::Relaxed)
            {
                return Ok(0);
            }
            let Some(watch) = &self.watch else {
                return Ok(0);
            };
            if Instant::now() >= watch.ends_at {
                // As kube-apiserver does before a watch times out: a last
                // bookmark, so the client resumes from the newest version.
                if watch.bookmarks {
                    // At the newest change this watch went through, never
                    // the state's: a change that came after it would be
                    // skipped by a client resuming from the bookmark.
                    let bookmark = self.shared.bookmark_at(watch.seen);
                    let event = self.encoding.encode_event(EventType::Bookmark, &bookmark);
                    self.pending = Some(Pieces::from_bytes(event));
                    self.cursor = (0, 0);
                    self.ending = true;
                    continue;
                }
                return Ok(0);
            }
            if !self.next_changes()? {
                // Quiet: the relay checks its client and reads again.
                return Err(crate::upstream::quiet_stream());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(name: &str, rv: u64) -> Object {
        let bytes = format!(
            r#"{{"kind":"Service","apiVersion":"v1","metadata":{{"name":"{name}","namespace":"a","resourceVersion":"{rv}"}}}}"#
        );
        let meta = Encoding::Json.decode_meta(bytes.as_bytes()).unwrap();
        Object::new(meta, bytes.as_bytes())
    }

    fn read_all(body: &mut SharedBody) -> String {
        let mut out = Vec::new();
        let mut buffer = [0; 64];
        loop {
            match body.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buffer[..n]),
                Err(e) if crate::upstream::is_quiet_stream(&e) => continue,
                Err(e) => panic!("{e}"),
            }
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_watch_that_times_out_bookmarks_the_last_change_it_went_through() {
        let shared = Arc::new(Shared::new(
            "services.v1".into(),
            Encoding::Json,
            "/api/v1/services".into(),
        ));
        shared.update(|state| {
            state.kind = "Service".into();
            state.api_version = "v1".into();
            state.replace(vec![object("s", 10)], 10);
        });
        let seq = shared.lock().next_seq();
        // A change arrives once the watch has timed out, before it looks.
        let mut body = SharedBody::watch(
            shared.clone(),
            Encoding::Json,
            Selection::default(),
            None,
            seq,
            10,
            true,
            Duration::ZERO,
        );
        shared.update(|state| state.apply(EventType::Modified, object("s", 11)));
        let sent = read_all(&mut body);
        assert!(sent.contains(r#""type":"BOOKMARK""#), "{sent}");
        assert!(sent.contains(r#""resourceVersion":"10""#), "{sent}");
        assert!(!sent.contains(r#""resourceVersion":"11""#), "{sent}");
        // A watch that went through the change bookmarks it.
        let mut body = SharedBody::watch(
            shared.clone(),
            Encoding::Json,
            Selection::default(),
            None,
            seq,
            10,
            true,
            Duration::from_millis(200),
        );
        let sent = read_all(&mut body);
        let lines: Vec<&str> = sent.lines().collect();
        assert_eq!(lines.len(), 2, "{sent}");
        assert!(lines[0].contains(r#""type":"MODIFIED""#), "{sent}");
        assert!(
            lines[1].contains(r#""type":"BOOKMARK""#) && lines[1].contains(r#""11""#),
            "{sent}"
        );
    }
}
