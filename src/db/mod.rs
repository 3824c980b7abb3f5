//! The handle, [`ProfileDb`]: open and recovery, the write path, reads, verify.
//!
//! Where each part of the handle's API lives (the crate docs say the same for users):
//! - [`builder`]: [`Builder`] and [`Durability`];
//! - [`open`]: opening, recovery and the marker file;
//! - [`write`]: the write path (the write context [`write::Ctx`], staging, commit,
//!   durability, checkpoints); it knows no operation;
//! - [`ops`]: [`Op`] and the single-operation write methods, dispatched to the
//!   operation modules (`people`, `activity`, `devices`, ...), which use the write path;
//! - [`read`]: person reads; [`verify`]: stats, the fsck and raw records;
//! - [`memory`]: the memory budget and [`MemoryUse`].
//!
//! The rest of the handle's API is beside the data it serves: `profile.rs` (the
//! profile and its parts), `workspace.rs` (topics, segments, queries, the catalogue),
//! `counts.rs`, `ingest/` and `dump.rs`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::index::Bitmaps;
use crate::segments::Catalog;
use crate::store::Store;

pub(crate) mod builder;
pub(crate) mod memory;
pub(crate) mod open;
pub(crate) mod ops;
pub(crate) mod read;
pub(crate) mod verify;
pub(crate) mod write;

pub use builder::{Builder, Durability};
pub use memory::{MemoryUse, CACHE_FLOOR, MIN_BUDGET};
pub use ops::Op;
pub use verify::{Stats, VerifyReport};
pub use write::Compaction;
use write::{Durable, Writer};

/// The on-disk format version this build reads and writes (see `src/store/FORMAT.md`).
pub const FORMAT_VERSION: u32 = 3;

const MARKER: &str = "PROFILEDB";
const SLED_DIR: &str = "sled";

pub(crate) struct Inner {
    pub(crate) store: Store,
    writer: Mutex<Writer>,
    /// The in-memory bitmaps, behind the commit gate: held for writing while a commit
    /// lands (and its bitmap changes apply), for reading by multi-record reads and
    /// queries, so a reader never sees half of a commit or a bitmap that disagrees with
    /// the data.
    pub(crate) gate: RwLock<Bitmaps>,
    /// Topics, segments and indexed attributes, resolved for the write path. Changed
    /// only under the writer lock.
    pub(crate) catalog: RwLock<Catalog>,
    /// The sequence number of the last commit applied to sled.
    committed: AtomicU64,
    /// The last commit not in the change feed, as readers of the feed check it;
    /// [`crate::feed::OFF`] when the feed is off. Set before old changes are dropped.
    pub(crate) feed_since: AtomicU64,
    /// The last commit known durable, and the `COMMIT` file that records it.
    durable: Mutex<Durable>,
    poisoned: AtomicBool,
    /// Checkpoints run by this handle.
    checkpoints: AtomicU64,
    /// Between an export's `restore_begin` and `restore_end` ([`crate::export`]): other
    /// writes are refused, so nothing mixes into the restored records.
    pub(crate) restoring: AtomicBool,
    /// The restore in progress, when its dump came from an older format
    /// ([`crate::export`]): what it skipped, for `restore_end`'s count.
    pub(crate) restore_from: Mutex<crate::export::Upgrade>,
    /// Opened for salvage over a data loss or a damaged `COMMIT` file: what happened,
    /// which `verify` reports for as long as this handle lives.
    salvaged: Option<String>,
    pub(crate) config: Builder,
    dir: PathBuf,
    /// The `PROFILEDB` file, holding the database's lock (an exclusive `flock`) for as
    /// long as this handle lives; dropped last.
    _lock: std::fs::File,
}

/// An open profile database. Cheap to clone; clones share one database. `Send + Sync`:
/// share it between threads freely.
///
/// # Examples
/// ```
/// # fn main() -> Result<(), profiledb::Error> {
/// use profiledb::{Ident, Identify, ProfileDb};
/// let dir = tempfile::tempdir().unwrap();
/// let db = ProfileDb::open(dir.path())?;
/// db.identify(Identify::new(Ident::id("u-1")).set("email", "ann@example.com").set("plan", "pro"))?;
/// let ann = db.person(&Ident::email("ANN@example.com"))?.expect("found by email, any case");
/// assert_eq!(ann.id.as_deref(), Some("u-1"));
/// assert_eq!(ann.attributes["plan"], "pro".into());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ProfileDb {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for ProfileDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProfileDb")
            .field("path", &self.inner.dir)
            .field("commit_seq", &self.inner.committed.load(Ordering::SeqCst))
            .field("durability", &self.inner.config.durability)
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Best effort: a handle dropped without close() still ends durable, as far as
        // the disk allows. Errors cannot be reported from here.
        if self.poisoned.load(Ordering::SeqCst) {
            return;
        }
        let seq = self.committed.load(Ordering::SeqCst);
        let durable = self
            .durable
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if seq != durable.seq {
            if self.store.kv().flush().is_err() || durable.file.record(seq).is_err() {
                return;
            }
            durable.seq = seq;
        }
        if self.checkpoint_at_close() {
            let _ = self.store.kv().checkpoint();
        }
    }
}

impl Inner {
    /// Whether closing should checkpoint first: when an eighth of the interval or more
    /// was committed since the last one, so that the next open replays little (as
    /// SQLite checkpoints its WAL when the last connection closes).
    fn checkpoint_at_close(&self) -> bool {
        let every = self.config.checkpoint_bytes;
        every > 0 && self.store.kv().since_checkpoint() >= (every / 8).max(1)
    }
}
