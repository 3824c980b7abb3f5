//! [`ProfileDb`]: open, configure, write, read, flush.
//!
//! # The write path
//! One writer at a time (a mutex), any number of readers. Every public write, and every
//! [`write_batch`](ProfileDb::write_batch), is staged in memory, checked whole, encoded
//! once per record, and committed as one sled transaction over every tree it touches:
//! after a crash all of it is there or none of it. Each commit carries a sequence number
//! stored in the `meta` family.
//!
//! # Durability
//! - [`Durability::Flush`] (the default): when a write returns `Ok`, it is on disk:
//!   sled has flushed its log, its data file is `fdatasync`ed (and every file and
//!   directory under `sled/` when sled has added or removed one; sled 0.34's own flush
//!   only issues `sync_file_range`), and the `COMMIT` file beside the data records the
//!   commit's sequence number (format in `src/store/FORMAT.md`).
//! - [`Durability::Buffered`]: a write returning `Ok` is in sled's log buffers and is
//!   written out by sled's background flush (every 500 ms) but not fsynced; a crash of the
//!   process usually keeps it, a power loss may not. [`ProfileDb::flush`] makes every
//!   write so far durable as above. Dropping the handle (or [`ProfileDb::close`]) flushes.
//!
//! On open, the sequence number sled recovered is compared with the one in `COMMIT`. If
//! sled came back with less than was durable (sled cuts its log at the first damaged
//! entry without an error), open fails with [`Error::DataLoss`] instead of serving a
//! quietly smaller database; [`Builder::salvage`] opens it anyway.
//!
//! # Checkpoints
//! sled 0.34.7 writes the snapshot of its page table only while opening, and an open
//! replays every log segment written since the last snapshot (about a second per
//! gigabyte). Left alone, the first open after ingesting a million people would take
//! ten seconds. So once a handle has committed [`Builder::checkpoint_bytes`] of records
//! since sled last opened, the next commit makes everything durable (as
//! [`ProfileDb::flush`]) and then closes and reopens sled, which writes a fresh
//! snapshot. Readers never see a difference in the data, but a call arriving while it
//! runs waits for it, about as long as an open (0.1 s at 100,000 people, about 1 s at a
//! million). It never waits for a read in progress (a
//! thread holding a scan may be the one writing): it is skipped and tried at the next
//! commit, and once twice overdue each commit tries for up to 100 ms. Reads that never
//! pause defer it. Closing (or dropping the last handle) checkpoints when an eighth of
//! the interval or more was committed since the last one, as SQLite checkpoints its WAL
//! when the last connection closes; so the next open replays almost nothing, and after
//! a crash at most one interval. [`ProfileDb::checkpoint`] runs one on demand.
//!
//! # Files
//! A database is a directory holding `PROFILEDB` (the marker: format version), `COMMIT`
//! (the last durable commit's sequence number, in two alternately written slots) and
//! `sled/`.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use std::collections::BTreeSet;

use crate::activity::{self, Track};
use crate::clock::{Clock, SystemClock};
use crate::commit_file::CommitFile;
use crate::deliveries::{self, Metric, NewDelivery};
use crate::devices::{self, DeviceInput, PushResult};
use crate::error::{Error, InputError, OpenError, Result, StorageError};
use crate::index::{BitmapKey, Bitmaps, Delta, Touches};
use crate::limits::Limits;
use crate::merge;
use crate::model::{Ident, IdentKind, Person};
use crate::model::{ObjectRef, Value};
use crate::people::{self, Counters, Ctx, Identify, IdentityOptions, Outcome};
use crate::relations;
use crate::segments::Catalog;
use crate::store::kv::{is_lock_error, FaultKv, Faults, Kv, SledKv};
use crate::store::records::MetaValue;
use crate::store::{
    corrupted, ident_key, meta_keys, pid_key, AttributesF, BitmapsF, Family, MetaF, PeopleF, Store,
    SuppressedF, Txn,
};

/// Records committed between automatic checkpoints (see [`Builder::checkpoint_bytes`]).
const DEFAULT_CHECKPOINT_BYTES: u64 = 192 << 20;

/// The on-disk format version this build reads and writes (see `src/store/FORMAT.md`).
pub const FORMAT_VERSION: u32 = 2;

const MARKER: &str = "PROFILEDB";
const SLED_DIR: &str = "sled";

/// When a write is durable. See the [module docs](crate::db#durability).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Durable (fsynced) before the write returns.
    #[default]
    Flush,
    /// Written to sled's buffers; durable after the next [`ProfileDb::flush`].
    Buffered,
}

/// One write operation, for [`ProfileDb::write_batch`]. Each has a method of the same
/// purpose on [`ProfileDb`] that runs it alone.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Op {
    /// Add or update a person.
    Identify(Identify),
    /// Delete a person and all their data.
    Delete(Ident),
    /// Delete a person and block their identifiers.
    Suppress(Ident),
    /// Free suppressed identifiers.
    Unsuppress(Ident),
    /// Track an event, page view or screen view.
    Track(Track),
    /// Add or update a person's device.
    AddDevice {
        /// Whose.
        person: Ident,
        /// The device.
        device: DeviceInput,
    },
    /// Delete a person's device.
    DeleteDevice {
        /// Whose.
        person: Ident,
        /// The device's token.
        token: String,
    },
    /// Report what happened to a push sent to a device.
    PushResult {
        /// The device's token.
        token: String,
        /// What happened.
        result: PushResult,
    },
    /// Record a delivery to a person.
    AddDelivery {
        /// To whom.
        person: Ident,
        /// The delivery.
        delivery: NewDelivery,
    },
    /// Report a metric against a delivery.
    Metric(Metric),
    /// Report a metric against a delivery, recording the delivery first when its id is
    /// not recorded yet (as a reporting webhook's first event for a delivery does). The
    /// check and the record happen inside the write. Run it with
    /// [`write_batch`](ProfileDb::write_batch).
    DeliveryEvent {
        /// Whose delivery it is; needed only when it is not recorded yet (else the
        /// event is refused, naming `person`).
        person: Option<Ident>,
        /// The delivery to record when its id is not recorded yet.
        delivery: NewDelivery,
        /// The metric; its delivery id must be `delivery`'s.
        metric: Metric,
    },
    /// Create or rename an object type.
    DefineObjectType {
        /// The type id (from 1).
        type_id: u32,
        /// Its name.
        name: String,
    },
    /// Create or update an object.
    IdentifyObject {
        /// Which object.
        object: ObjectRef,
        /// Attributes to set (`null`/`""` removes).
        attributes: Vec<(String, Value)>,
    },
    /// Delete an object and its relationships.
    DeleteObject(ObjectRef),
    /// Relate a person (or an anonymous id) to an object.
    AddRelationship {
        /// The person.
        person: Ident,
        /// The object.
        object: ObjectRef,
        /// Relationship attributes to set (`null`/`""` removes).
        attributes: Vec<(String, Value)>,
    },
    /// Remove a person's relationship to an object.
    DeleteRelationship {
        /// The person.
        person: Ident,
        /// The object.
        object: ObjectRef,
    },
    /// Add people to a manual segment (at most 1000).
    AddToSegment {
        /// The segment id.
        segment: u32,
        /// The people.
        people: Vec<Ident>,
    },
    /// Remove people from a manual segment (at most 1000).
    RemoveFromSegment {
        /// The segment id.
        segment: u32,
        /// The people.
        people: Vec<Ident>,
    },
    /// Merge `secondary` into `primary`.
    Merge {
        /// Who remains.
        primary: Ident,
        /// Who is merged in and deleted.
        secondary: Ident,
    },
}

impl From<Identify> for Op {
    fn from(op: Identify) -> Op {
        Op::Identify(op)
    }
}

/// Configures and opens a [`ProfileDb`].
///
/// # Examples
/// ```
/// # fn main() -> Result<(), profiledb::Error> {
/// use profiledb::{Durability, ProfileDb};
/// let dir = tempfile::tempdir().unwrap();
/// let db = ProfileDb::builder()
///     .durability(Durability::Buffered)
///     .cache_bytes(16 << 20)
///     .open(dir.path())?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Builder {
    cache_bytes: u64,
    durability: Durability,
    pub(crate) limits: Limits,
    clock: Arc<dyn Clock>,
    faults: Option<Faults>,
    salvage: bool,
    identity: IdentityOptions,
    pub(crate) retention: Option<i64>,
    checkpoint_bytes: u64,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            cache_bytes: 64 << 20,
            durability: Durability::Flush,
            limits: Limits::default(),
            clock: Arc::new(SystemClock),
            faults: None,
            salvage: false,
            identity: IdentityOptions::default(),
            retention: None,
            checkpoint_bytes: DEFAULT_CHECKPOINT_BYTES,
        }
    }
}

impl Builder {
    /// sled's page cache size in bytes. Default 64 MiB.
    pub fn cache_bytes(mut self, bytes: u64) -> Builder {
        self.cache_bytes = bytes;
        self
    }

    /// How many bytes of records a handle commits before it checkpoints (see the
    /// [module docs](crate::db#checkpoints)); `0` never checkpoints automatically.
    /// Default 192 MiB, which keeps an open of a database after any amount of writing
    /// well under a second. Smaller costs more write time; larger, longer opens.
    pub fn checkpoint_bytes(mut self, bytes: u64) -> Builder {
        self.checkpoint_bytes = bytes;
        self
    }

    /// When writes are durable. Default [`Durability::Flush`].
    pub fn durability(mut self, durability: Durability) -> Builder {
        self.durability = durability;
        self
    }

    /// Input limits. Default: Customer.io's published limits.
    pub fn limits(mut self, limits: Limits) -> Builder {
        self.limits = limits;
        self
    }

    /// The clock that stamps activity and attribute times. Default: the system clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Builder {
        self.clock = clock;
        self
    }

    /// Runs the database over a storage wrapper that injects the faults `faults` is told
    /// to (for tests).
    pub fn faults(mut self, faults: Faults) -> Builder {
        self.faults = Some(faults);
        self
    }

    /// Opens even when acknowledged commits are missing ([`Error::DataLoss`]), to read
    /// what is left. The next flush records the smaller state as durable.
    pub fn salvage(mut self, yes: bool) -> Builder {
        self.salvage = yes;
        self
    }

    /// How long activity is kept, in seconds, when
    /// [`ProfileDb::apply_retention`] runs. Default: unset, keep everything.
    pub fn retention(mut self, seconds: Option<i64>) -> Builder {
        self.retention = seconds;
        self
    }

    /// Customer.io's workspace setting "Allow updates to email using ID": an identify
    /// addressed by `id` may change an existing email. Default off.
    pub fn allow_email_update_by_id(mut self, yes: bool) -> Builder {
        self.identity.allow_email_update_by_id = yes;
        self
    }

    /// Opens the database in directory `path`, creating it if the directory is missing
    /// or empty.
    ///
    /// # Errors
    /// [`Error::Open`] when the directory is not a profiledb database, has an unknown
    /// format version, is locked, or is damaged (none of which modifies it);
    /// [`Error::DataLoss`] when sled recovered fewer commits than were durable;
    /// [`Error::Corrupted`] when a stored counter is damaged.
    pub fn open(self, path: impl AsRef<Path>) -> Result<ProfileDb> {
        ProfileDb::open_with(self, path.as_ref())
    }
}

struct Writer {
    counters: Counters,
    commit_seq: u64,
}

/// The last durable commit and the file recording it.
struct Durable {
    seq: u64,
    file: CommitFile,
}

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
    /// The last commit known durable, and the `COMMIT` file that records it.
    durable: Mutex<Durable>,
    poisoned: AtomicBool,
    /// Checkpoints run by this handle.
    checkpoints: AtomicU64,
    /// Between an export's `restore_begin` and `restore_end` ([`crate::export`]): other
    /// writes are refused, so nothing mixes into the restored records.
    pub(crate) restoring: AtomicBool,
    /// Opened for salvage over a data loss or a damaged `COMMIT` file: what happened,
    /// which `verify` reports for as long as this handle lives.
    salvaged: Option<String>,
    pub(crate) config: Builder,
    dir: PathBuf,
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

/// Counts and sequence numbers, for monitoring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// People stored.
    pub people: u64,
    /// Sequence number of the last commit.
    pub commit_seq: u64,
    /// Sequence number of the last commit known durable.
    pub durable_seq: u64,
    /// Bytes on disk, as sled counts them.
    pub size_on_disk: u64,
    /// Checkpoints this handle has run (see the [module docs](crate::db#checkpoints)).
    pub checkpoints: u64,
}

/// What [`ProfileDb::verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Records read, per family name.
    pub records: Vec<(&'static str, u64)>,
    /// Every problem found, one sentence each. Empty means the database is sound.
    pub problems: Vec<String>,
}

impl VerifyReport {
    /// True when no problem was found.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Open(OpenError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `bytes` to `dir/name` atomically: a temp file, fsync, rename, fsync of `dir`.
fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, dir.join(name))?;
    File::open(dir)?.sync_all()
}

fn marker_text() -> String {
    format!("profiledb\nformat {FORMAT_VERSION}\n")
}

/// Reads the marker; `Ok(version)` or why the directory is not ours.
fn read_marker(dir: &Path) -> Result<u32> {
    let path = dir.join(MARKER);
    let text = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let sample = fs::read_dir(dir)
                .ok()
                .and_then(|mut it| it.next())
                .and_then(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .unwrap_or_default();
            return Err(OpenError::NotADatabase {
                path: dir.to_path_buf(),
                reason: format!("the directory is not empty (it holds `{sample}`, among others) and has no {MARKER} file"),
            }
            .into());
        }
        Err(e) => return Err(io_err(&path, e)),
    };
    let text = String::from_utf8_lossy(&text);
    let mut lines = text.lines();
    let version = match (lines.next(), lines.next()) {
        (Some("profiledb"), Some(v)) => v
            .strip_prefix("format ")
            .and_then(|n| n.trim().parse::<u32>().ok()),
        _ => None,
    };
    version.ok_or_else(|| {
        OpenError::NotADatabase {
            path: dir.to_path_buf(),
            reason: format!("its {MARKER} file is not a profiledb marker"),
        }
        .into()
    })
}

/// Plans the bitmap changes of what `touches` records, maintains the data-driven
/// segments, and stages every dirty chunk, each once.
pub(crate) fn stage_bitmaps(
    txn: &mut Txn<'_>,
    touches: &Touches,
    bitmaps: &Bitmaps,
    catalog: &Catalog,
    now: i64,
    counters: &mut Counters,
) -> Result<Delta> {
    if touches.is_empty() {
        return Ok(Delta::default());
    }
    let mut delta = crate::index::plan(txn, touches, bitmaps, &catalog.indexed, &catalog.ranged)?;
    crate::segments::maintain(txn, touches, bitmaps, &mut delta, catalog, now, counters)?;
    delta.prune(bitmaps);
    for (key, bytes) in delta.chunk_writes(bitmaps) {
        match bytes {
            Some(b) => txn.put::<BitmapsF>(key, b),
            None => txn.delete::<BitmapsF>(key),
        }
    }
    Ok(delta)
}

/// Reads every bitmap chunk into memory.
fn load_bitmaps(store: &Store) -> Result<Bitmaps> {
    let mut bitmaps = Bitmaps::default();
    for item in store.scan::<BitmapsF>(&[], false, None) {
        let (key, bytes) = item?;
        let (bk, chunk) = BitmapKey::decode_chunk_key(&key)?;
        bitmaps.load_chunk(bk, crate::index::decode_chunk(&key, chunk, &bytes)?);
    }
    Ok(bitmaps)
}

impl ProfileDb {
    /// Opens (or creates) the database in `path` with the default configuration.
    ///
    /// # Errors
    /// As [`Builder::open`].
    pub fn open(path: impl AsRef<Path>) -> Result<ProfileDb> {
        Builder::default().open(path)
    }

    /// A builder for opening with a configuration.
    pub fn builder() -> Builder {
        Builder::default()
    }

    fn open_with(config: Builder, dir: &Path) -> Result<ProfileDb> {
        let fresh = match fs::read_dir(dir) {
            Ok(mut entries) => entries.next().is_none(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
                true
            }
            Err(e) => return Err(io_err(dir, e)),
        };
        if fresh {
            replace_file(dir, MARKER, marker_text().as_bytes()).map_err(|e| io_err(dir, e))?;
        } else {
            let found = read_marker(dir)?;
            if found != FORMAT_VERSION {
                return Err(OpenError::UnsupportedFormat {
                    found,
                    supported: FORMAT_VERSION,
                }
                .into());
            }
        }
        // A damaged COMMIT file leaves the last durable commit unknown: an error, unless
        // opening for salvage, which rewrites it.
        let (durable_seq, commit_file, commit_damaged) = match CommitFile::open(dir) {
            Ok((seq, file)) => (seq, file, None),
            Err(e @ Error::Corrupted { .. }) if config.salvage => {
                (None, CommitFile::recreate(dir), Some(e.to_string()))
            }
            Err(e) => return Err(e),
        };

        let sled_dir = dir.join(SLED_DIR);
        // sled 0.34 releases its file lock only when its background threads let go of
        // the database, a moment after the last handle is dropped; so a reopen right
        // after a close retries for up to a second before calling the database locked.
        let sled = match SledKv::open_waiting(&sled_dir, config.cache_bytes, 50) {
            Ok(kv) => kv,
            Err(e) if is_lock_error(&e) => {
                return Err(Error::Open(OpenError::Locked {
                    path: dir.to_path_buf(),
                }))
            }
            Err(other) => {
                return Err(Error::Open(OpenError::Damaged {
                    reason: other.to_string(),
                }))
            }
        };
        let kv: Box<dyn Kv> = match &config.faults {
            Some(f) => Box::new(FaultKv::new(sled, f.clone())),
            None => Box::new(sled),
        };
        let store = Store::new(kv);

        let format = store.get::<MetaF>(meta_keys::FORMAT)?;
        let initialized = match format {
            Some(MetaValue::Format { version, .. }) if version == FORMAT_VERSION => true,
            Some(MetaValue::Format { version, .. }) => {
                return Err(OpenError::UnsupportedFormat {
                    found: version,
                    supported: FORMAT_VERSION,
                }
                .into())
            }
            Some(_) => {
                return Err(corrupted(
                    Family::Meta,
                    meta_keys::FORMAT,
                    "expected the format record",
                ))
            }
            None => false,
        };
        let (counters, commit_seq) = match store.get::<MetaF>(meta_keys::COUNTERS)? {
            None => (
                Counters {
                    next_pid: 1,
                    next_seq: 1,
                },
                0,
            ),
            Some(MetaValue::Counters {
                next_pid,
                next_seq,
                commit_seq,
            }) => (Counters { next_pid, next_seq }, commit_seq),
            Some(_) => {
                return Err(corrupted(
                    Family::Meta,
                    meta_keys::COUNTERS,
                    "expected the counters record",
                ))
            }
        };
        let bitmaps = load_bitmaps(&store)?;
        let catalog = Catalog::load(&store)?;
        let durable_seq = durable_seq.unwrap_or(0);
        let lost = durable_seq > commit_seq;
        let salvaged = lost || commit_damaged.is_some();
        if lost && !config.salvage {
            return Err(Error::DataLoss {
                durable_seq,
                recovered_seq: commit_seq,
            });
        }

        let db = ProfileDb {
            inner: Arc::new(Inner {
                store,
                writer: Mutex::new(Writer {
                    counters,
                    commit_seq,
                }),
                gate: RwLock::new(bitmaps),
                catalog: RwLock::new(catalog),
                committed: AtomicU64::new(commit_seq),
                durable: Mutex::new(Durable {
                    seq: if salvaged { 0 } else { durable_seq },
                    file: commit_file,
                }),
                poisoned: AtomicBool::new(false),
                checkpoints: AtomicU64::new(0),
                restoring: AtomicBool::new(false),
                salvaged: match commit_damaged {
                    Some(why) => Some(format!(
                        "data loss unknown: opened for salvage over a damaged COMMIT file \
                         ({why}); sled recovered commit #{commit_seq}"
                    )),
                    None => lost.then(|| {
                        format!(
                            "data loss: opened for salvage with {} acknowledged commits \
                             missing (durable commit #{durable_seq}, sled recovered \
                             #{commit_seq})",
                            durable_seq - commit_seq
                        )
                    }),
                },
                config,
                dir: dir.to_path_buf(),
            }),
        };
        if !initialized {
            let now = db.inner.config.clock.now();
            let mut writer = db.writer()?;
            let mut txn = Txn::new(&db.inner.store);
            txn.put::<MetaF>(
                meta_keys::FORMAT.to_vec(),
                MetaValue::Format {
                    version: FORMAT_VERSION,
                    created: now,
                },
            );
            db.commit(&mut writer, txn, counters, &Delta::default())?;
            drop(writer);
            db.make_durable()?;
        } else if salvaged {
            // What sled recovered becomes the durable state.
            db.inner.store.kv().flush()?;
            let mut durable = db
                .inner
                .durable
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            durable.file.reset(commit_seq).map_err(|e| io_err(dir, e))?;
            durable.seq = commit_seq;
        }
        Ok(db)
    }

    fn writer(&self) -> Result<MutexGuard<'_, Writer>> {
        let guard = self.restore_writer()?;
        if self.inner.restoring.load(Ordering::SeqCst) {
            return Err(InputError::invalid(
                "database",
                "is being restored from an export: no other write until its restore_end",
            )
            .into());
        }
        Ok(guard)
    }

    /// The writer lock, also while a restore is in progress.
    fn restore_writer(&self) -> Result<MutexGuard<'_, Writer>> {
        let guard = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if self.inner.poisoned.load(Ordering::SeqCst) {
            return Err(Error::Poisoned);
        }
        Ok(guard)
    }

    fn poison(&self) {
        self.inner.poisoned.store(true, Ordering::SeqCst);
    }

    /// Poisons the handle when `e` is a storage failure met while staging a write (a
    /// failed read): as after a failed write, the handle refuses to guess what the disk
    /// holds. Passes `e` through.
    fn poison_on_io(&self, e: Error) -> Error {
        let mut inner = &e;
        while let Error::InBatch { source, .. } = inner {
            inner = source;
        }
        if matches!(inner, Error::Storage(_)) {
            self.poison();
        }
        e
    }

    /// Commits `txn` (plus the counters and a new commit sequence number), then applies
    /// `delta` to the in-memory bitmaps inside the gate.
    fn commit(
        &self,
        writer: &mut Writer,
        txn: Txn<'_>,
        counters: Counters,
        delta: &Delta,
    ) -> Result<()> {
        self.commit_then(writer, txn, counters, |bitmaps| {
            if !delta.is_empty() {
                bitmaps.apply(delta);
            }
        })
    }

    /// Commits `txn` (plus the counters and a new commit sequence number), then runs
    /// `change` on the in-memory bitmaps inside the gate, so readers see both or neither.
    fn commit_then(
        &self,
        writer: &mut Writer,
        mut txn: Txn<'_>,
        counters: Counters,
        change: impl FnOnce(&mut Bitmaps),
    ) -> Result<()> {
        let seq = writer.commit_seq + 1;
        // One meta write per commit: the counters and the commit's sequence number.
        txn.put::<MetaF>(
            meta_keys::COUNTERS.to_vec(),
            MetaValue::Counters {
                next_pid: counters.next_pid,
                next_seq: counters.next_seq,
                commit_seq: seq,
            },
        );
        let writes = txn.into_write_set()?;
        {
            let mut bitmaps = self
                .inner
                .gate
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Err(e) = self.inner.store.kv().commit(&writes) {
                self.poison();
                return Err(e.into());
            }
            change(&mut bitmaps);
        }
        writer.counters = counters;
        writer.commit_seq = seq;
        self.inner.committed.store(seq, Ordering::SeqCst);
        let every = self.inner.config.checkpoint_bytes;
        let since = self.inner.store.kv().since_checkpoint();
        if every > 0 && since >= every {
            // One try; once twice overdue (reads kept it from running), keep trying for
            // up to 100 ms. The commit stands, but as when a durable write's flush fails,
            // a failed checkpoint is this write's error and poisons the handle.
            let tries = if since >= every.saturating_mul(2) {
                100
            } else {
                1
            };
            self.checkpoint_tries(writer, tries, std::time::Duration::from_millis(1))?;
        }
        Ok(())
    }

    /// [`checkpoint_locked`](Self::checkpoint_locked) up to `tries` times, `pause` apart,
    /// until no read holds the store.
    fn checkpoint_tries(
        &self,
        writer: &mut Writer,
        tries: u32,
        pause: std::time::Duration,
    ) -> Result<bool> {
        for n in 0..tries {
            if n > 0 {
                std::thread::sleep(pause);
            }
            if self.checkpoint_locked(writer)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Makes everything durable, then has the store reopen itself (see the
    /// [module docs](crate::db#checkpoints)). Needs the writer lock, which `_writer`
    /// proves. `Ok(false)` when a read in progress kept it from running.
    fn checkpoint_locked(&self, _writer: &mut Writer) -> Result<bool> {
        self.make_durable()?;
        match self.inner.store.kv().checkpoint() {
            Ok(done) => {
                if done {
                    self.inner.checkpoints.fetch_add(1, Ordering::Relaxed);
                }
                Ok(done)
            }
            Err(e) => {
                self.poison();
                Err(e.into())
            }
        }
    }

    /// Makes every write so far durable and checkpoints the store now (see the
    /// [module docs](crate::db#checkpoints)): the next open of this database replays
    /// nothing written before it. Waits up to a second for reads in progress to finish;
    /// returns `Ok(false)` if they never did, with everything durable but no checkpoint.
    ///
    /// # Errors
    /// [`Error::Storage`] when flushing or reopening the store fails; the handle then
    /// refuses further calls, [`Error::Poisoned`], until the database is opened again.
    pub fn checkpoint(&self) -> Result<bool> {
        let mut writer = self.restore_writer()?;
        self.checkpoint_tries(&mut writer, 100, std::time::Duration::from_millis(10))
    }

    /// Flushes and fsyncs everything committed so far, then records it in `COMMIT`.
    fn make_durable(&self) -> Result<()> {
        let mut durable = self
            .inner
            .durable
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let seq = self.inner.committed.load(Ordering::SeqCst);
        if seq == durable.seq {
            return Ok(());
        }
        let result = self
            .inner
            .store
            .kv()
            .flush()
            .and_then(|()| durable.file.record(seq).map_err(StorageError::from));
        if let Err(e) = result {
            // After a failed fsync the state on disk is unknown: refuse to guess.
            self.poison();
            return Err(e.into());
        }
        durable.seq = seq;
        Ok(())
    }

    /// Applies `ops` as one atomic unit: every operation or none. Operations see the
    /// effects of the ones before them in the batch.
    ///
    /// # Errors
    /// [`Error::InBatch`] naming the first operation that failed (nothing of the batch
    /// is written); [`Error::Storage`] when the commit or flush fails (the handle then
    /// refuses further writes, [`Error::Poisoned`], until reopened).
    pub fn write_batch(&self, ops: &[Op]) -> Result<Vec<Outcome>> {
        self.apply(ops, true)
    }

    fn apply(&self, ops: &[Op], wrap: bool) -> Result<Vec<Outcome>> {
        self.run(|cx| {
            let mut outcomes = Vec::with_capacity(ops.len());
            for (index, op) in ops.iter().enumerate() {
                let result = match op {
                    Op::Identify(i) => people::identify(cx, i),
                    Op::Delete(i) => people::delete(cx, i),
                    Op::Suppress(i) => people::suppress(cx, i),
                    Op::Unsuppress(i) => people::unsuppress(cx, i),
                    Op::Track(t) => activity::track(cx, t),
                    Op::AddDevice { person, device } => devices::add_device(cx, person, device),
                    Op::DeleteDevice { person, token } => devices::delete_device(cx, person, token),
                    Op::PushResult { token, result } => devices::push_result(cx, token, *result),
                    Op::AddDelivery { person, delivery } => {
                        deliveries::add_delivery(cx, person, delivery)
                    }
                    Op::Metric(m) => deliveries::report_metric(cx, m),
                    Op::DeliveryEvent {
                        person,
                        delivery,
                        metric,
                    } => deliveries::delivery_event(cx, person.as_ref(), delivery, metric),
                    Op::DefineObjectType { type_id, name } => {
                        relations::define_type(cx, *type_id, name)
                    }
                    Op::IdentifyObject { object, attributes } => {
                        relations::identify_object(cx, object, attributes)
                    }
                    Op::DeleteObject(o) => relations::delete_object(cx, o),
                    Op::AddRelationship {
                        person,
                        object,
                        attributes,
                    } => relations::add_relationship(cx, person, object, attributes),
                    Op::DeleteRelationship { person, object } => {
                        relations::delete_relationship(cx, person, object)
                    }
                    Op::Merge { primary, secondary } => merge::merge(cx, primary, secondary),
                    Op::AddToSegment { segment, people } => {
                        crate::segments::change_members(cx, *segment, people, false)
                    }
                    Op::RemoveFromSegment { segment, people } => {
                        crate::segments::change_members(cx, *segment, people, true)
                    }
                };
                match result {
                    Ok(o) => outcomes.push(o),
                    Err(e) if wrap => {
                        return Err(Error::InBatch {
                            index,
                            source: Box::new(e),
                        })
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(outcomes)
        })
    }

    /// Runs `body` against a fresh staging transaction under the writer lock, then plans
    /// the bitmap and segment changes of what it touched and commits it all as one unit
    /// (nothing when `body` fails or stages nothing).
    pub(crate) fn run<T>(&self, body: impl FnOnce(&mut Ctx<'_, '_>) -> Result<T>) -> Result<T> {
        let mut writer = self.writer()?;
        let now = self.inner.config.clock.now();
        let mut counters = writer.counters;
        let mut txn = Txn::new(&self.inner.store);
        let mut touches = Touches::default();
        // Only this writer changes the bitmaps and the catalog, so what it reads here
        // stays true until its own commit.
        let catalog = self.catalog();
        let bitmaps = self.read_gate();
        let out = body(&mut Ctx {
            txn: &mut txn,
            touches: &mut touches,
            bitmaps: &bitmaps,
            catalog: &catalog,
            now,
            limits: &self.inner.config.limits,
            options: &self.inner.config.identity,
            counters: &mut counters,
        })
        .map_err(|e| self.poison_on_io(e))?;
        if txn.is_clean() && touches.is_empty() {
            return Ok(out);
        }
        let delta = stage_bitmaps(&mut txn, &touches, &bitmaps, &catalog, now, &mut counters)
            .map_err(|e| self.poison_on_io(e))?;
        drop(bitmaps);
        drop(catalog);
        if txn.is_clean() {
            return Ok(out);
        }
        self.commit(&mut writer, txn, counters, &delta)?;
        drop(writer);
        if self.inner.config.durability == Durability::Flush {
            self.make_durable()?;
        }
        Ok(out)
    }

    /// The topic and segment catalog.
    pub(crate) fn catalog(&self) -> std::sync::RwLockReadGuard<'_, Catalog> {
        self.inner
            .catalog
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Now, by the configured clock.
    pub fn now(&self) -> i64 {
        self.inner.config.clock.now()
    }

    /// Commits what `stage` stages under the writer lock; then, inside the commit gate,
    /// `bitmaps` changes the in-memory bitmaps, and after it `catalog` the catalog.
    pub(crate) fn commit_with(
        &self,
        stage: impl FnOnce(&mut Txn<'_>),
        after: impl FnOnce(&mut Bitmaps, &mut Catalog),
    ) -> Result<()> {
        let mut writer = self.writer()?;
        let counters = writer.counters;
        let mut txn = Txn::new(&self.inner.store);
        stage(&mut txn);
        let mut new_catalog = self.catalog().clone();
        let mut bitmaps = self.read_gate().clone();
        after(&mut bitmaps, &mut new_catalog);
        self.commit_then(&mut writer, txn, counters, |gate| *gate = bitmaps)?;
        *self
            .inner
            .catalog
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = new_catalog;
        drop(writer);
        if self.inner.config.durability == Durability::Flush {
            self.make_durable()?;
        }
        Ok(())
    }

    /// Commits bitmap changes `delta` (their chunks, and what `stage` adds) as one unit.
    pub(crate) fn commit_delta(
        &self,
        delta: Delta,
        stage: impl FnOnce(&mut Txn<'_>, &mut Counters, &Bitmaps, &Delta),
    ) -> Result<()> {
        let mut writer = self.writer()?;
        let mut counters = writer.counters;
        let mut txn = Txn::new(&self.inner.store);
        {
            let bitmaps = self.read_gate();
            stage(&mut txn, &mut counters, &bitmaps, &delta);
            for (key, bytes) in delta.chunk_writes(&bitmaps) {
                match bytes {
                    Some(b) => txn.put::<BitmapsF>(key, b),
                    None => txn.delete::<BitmapsF>(key),
                }
            }
        }
        self.commit(&mut writer, txn, counters, &delta)?;
        drop(writer);
        if self.inner.config.durability == Durability::Flush {
            self.make_durable()?;
        }
        Ok(())
    }

    /// Restore hook for [`crate::export`]: commits what `stage` stages (with `counters`
    /// when given, else the current ones) as one unit; with `reload`, the in-memory
    /// bitmaps and catalog are then read afresh from the store, inside the commit gate.
    pub(crate) fn commit_restore(
        &self,
        stage: impl FnOnce(&mut Txn<'_>) -> Result<()>,
        counters: Option<Counters>,
        reload: bool,
    ) -> Result<()> {
        let mut writer = self.restore_writer()?;
        let counters = counters.unwrap_or(writer.counters);
        let mut txn = Txn::new(&self.inner.store);
        stage(&mut txn).map_err(|e| self.poison_on_io(e))?;
        let store = &self.inner.store;
        let mut loaded = Ok(());
        self.commit_then(&mut writer, txn, counters, |gate| {
            if reload {
                match load_bitmaps(store) {
                    Ok(b) => *gate = b,
                    Err(e) => loaded = Err(e),
                }
            }
        })?;
        loaded?;
        if reload {
            *self
                .inner
                .catalog
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = Catalog::load(store)?;
        }
        drop(writer);
        if self.inner.config.durability == Durability::Flush {
            self.make_durable()?;
        }
        Ok(())
    }

    /// Commits whatever `stage` stages, as one atomic unit under the writer lock.
    pub(crate) fn commit_raw(&self, stage: impl FnOnce(&mut Txn<'_>)) -> Result<()> {
        let mut writer = self.writer()?;
        let counters = writer.counters;
        let mut txn = Txn::new(&self.inner.store);
        stage(&mut txn);
        if txn.is_clean() {
            return Ok(());
        }
        self.commit(&mut writer, txn, counters, &Delta::default())?;
        drop(writer);
        if self.inner.config.durability == Durability::Flush {
            self.make_durable()?;
        }
        Ok(())
    }

    fn one(&self, op: Op) -> Result<Outcome> {
        self.apply(std::slice::from_ref(&op), false)?
            .pop()
            .ok_or_else(|| Error::Storage(StorageError::Sled("no outcome".into())))
    }

    /// Adds or updates a person (Track API v1 identify). See [`crate::people`] for the
    /// rules.
    ///
    /// # Errors
    /// [`Error::Input`] naming the field for bad input or a limit; [`Error::Suppressed`]
    /// when an identifier is suppressed. Nothing is written on error.
    pub fn identify(&self, op: Identify) -> Result<Outcome> {
        self.one(Op::Identify(op))
    }

    /// Deletes a person and all their data. Identifying them again creates a new person.
    ///
    /// # Errors
    /// [`Error::Input`] when the identifier is malformed.
    pub fn delete(&self, ident: &Ident) -> Result<Outcome> {
        self.one(Op::Delete(ident.clone()))
    }

    /// Deletes a person and blocks their `id`, `email` and `phone` from use.
    ///
    /// # Errors
    /// [`Error::Input`] when the identifier is malformed.
    pub fn suppress(&self, ident: &Ident) -> Result<Outcome> {
        self.one(Op::Suppress(ident.clone()))
    }

    /// Frees a suppressed identifier (and those suppressed with it).
    ///
    /// # Errors
    /// [`Error::Input`] when the identifier is malformed.
    pub fn unsuppress(&self, ident: &Ident) -> Result<Outcome> {
        self.one(Op::Unsuppress(ident.clone()))
    }

    /// Tracks an event, page view or screen view (see [`crate::activity`]).
    ///
    /// # Errors
    /// [`Error::Input`] naming the field (name over 100 bytes, data over 100 KB...).
    pub fn track(&self, track: Track) -> Result<Outcome> {
        self.one(Op::Track(track))
    }

    /// Adds or updates a device of `person` (see [`crate::devices`]).
    ///
    /// # Errors
    /// [`Error::Input`] for a bad token or attribute, or past the per-person device cap.
    pub fn add_device(&self, person: &Ident, device: DeviceInput) -> Result<Outcome> {
        self.one(Op::AddDevice {
            person: person.clone(),
            device,
        })
    }

    /// Deletes device `token` of `person`.
    ///
    /// # Errors
    /// [`Error::Input`] for a malformed identifier or token.
    pub fn delete_device(&self, person: &Ident, token: &str) -> Result<Outcome> {
        self.one(Op::DeleteDevice {
            person: person.clone(),
            token: token.to_owned(),
        })
    }

    /// Reports a push result for device `token`, moving its status.
    ///
    /// # Errors
    /// [`Error::Input`] for a malformed token.
    pub fn push_result(&self, token: &str, result: PushResult) -> Result<Outcome> {
        self.one(Op::PushResult {
            token: token.to_owned(),
            result,
        })
    }

    /// Records a delivery to `person` (see [`crate::deliveries`]).
    ///
    /// # Errors
    /// [`Error::Input`] for a bad field or an id already recorded.
    pub fn add_delivery(&self, person: &Ident, delivery: NewDelivery) -> Result<Outcome> {
        self.one(Op::AddDelivery {
            person: person.clone(),
            delivery,
        })
    }

    /// Reports a metric against a delivery.
    ///
    /// # Errors
    /// [`Error::Input`] when the metric is not one of the delivery's channel.
    pub fn report_metric(&self, metric: Metric) -> Result<Outcome> {
        self.one(Op::Metric(metric))
    }

    /// Creates or renames object type `type_id`.
    ///
    /// # Errors
    /// [`Error::Input`] for type id 0 or a name over the value limit.
    pub fn define_object_type(&self, type_id: u32, name: &str) -> Result<Outcome> {
        self.one(Op::DefineObjectType {
            type_id,
            name: name.to_owned(),
        })
    }

    /// Creates or updates an object (see [`crate::relations`]).
    ///
    /// # Errors
    /// [`Error::Input`] naming the field.
    pub fn identify_object(
        &self,
        object: &ObjectRef,
        attributes: Vec<(String, Value)>,
    ) -> Result<Outcome> {
        self.one(Op::IdentifyObject {
            object: object.clone(),
            attributes,
        })
    }

    /// Deletes an object and every relationship to it.
    ///
    /// # Errors
    /// [`Error::Input`] for a malformed object reference.
    pub fn delete_object(&self, object: &ObjectRef) -> Result<Outcome> {
        self.one(Op::DeleteObject(object.clone()))
    }

    /// Relates `person` to `object`, with relationship attributes.
    ///
    /// # Errors
    /// [`Error::Input`] naming the field.
    pub fn add_relationship(
        &self,
        person: &Ident,
        object: &ObjectRef,
        attributes: Vec<(String, Value)>,
    ) -> Result<Outcome> {
        self.one(Op::AddRelationship {
            person: person.clone(),
            object: object.clone(),
            attributes,
        })
    }

    /// Removes `person`'s relationship to `object`.
    ///
    /// # Errors
    /// [`Error::Input`] for a malformed identifier or object reference.
    pub fn delete_relationship(&self, person: &Ident, object: &ObjectRef) -> Result<Outcome> {
        self.one(Op::DeleteRelationship {
            person: person.clone(),
            object: object.clone(),
        })
    }

    /// Merges `secondary` into `primary` (see [`crate::merge`]).
    ///
    /// # Errors
    /// [`Error::Input`] when both name the same person.
    pub fn merge(&self, primary: &Ident, secondary: &Ident) -> Result<Outcome> {
        self.one(Op::Merge {
            primary: primary.clone(),
            secondary: secondary.clone(),
        })
    }

    /// Makes every write so far durable: sled's flush, fsync of the files and
    /// directories, then the `COMMIT` file. See the [module docs](crate::db#durability).
    ///
    /// # Errors
    /// [`Error::Storage`] when flushing or fsync fails; the handle then refuses writes.
    pub fn flush(&self) -> Result<()> {
        self.make_durable()
    }

    /// Flushes (as [`flush`](ProfileDb::flush)), checkpoints when an eighth of
    /// [`Builder::checkpoint_bytes`] or more was committed since the last checkpoint
    /// (see the [module docs](crate::db#checkpoints)), and closes this handle.
    ///
    /// # Errors
    /// As [`flush`](ProfileDb::flush) and [`checkpoint`](ProfileDb::checkpoint).
    pub fn close(self) -> Result<()> {
        if self.inner.poisoned.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.make_durable()?;
        if self.inner.checkpoint_at_close() {
            self.inner.store.kv().checkpoint().map_err(|e| {
                self.poison();
                Error::from(e)
            })?;
        }
        Ok(())
    }

    pub(crate) fn read_gate(&self) -> std::sync::RwLockReadGuard<'_, Bitmaps> {
        self.inner
            .gate
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn resolve(&self, ident: &Ident) -> Result<Option<u32>> {
        let norm = people::normalize(&self.inner.config.limits, ident)?;
        let store = &self.inner.store;
        if ident.kind == IdentKind::CioId {
            let Some(pid) = crate::model::PersonId::from_cio_id(&norm) else {
                return Ok(None);
            };
            return Ok(store.get::<PeopleF>(&pid_key(pid.0))?.map(|_| pid.0));
        }
        store.get::<crate::store::IdentifiersF>(&ident_key(ident.kind, &norm))
    }

    /// The person with identifier `ident` (emails match in any case), or `None`.
    ///
    /// # Errors
    /// [`Error::Input`] when the identifier is malformed; [`Error::Corrupted`] when a
    /// record is damaged.
    pub fn person(&self, ident: &Ident) -> Result<Option<Person>> {
        let _gate = self.read_gate();
        let Some(pid) = self.resolve(ident)? else {
            return Ok(None);
        };
        let store = &self.inner.store;
        let Some(rec) = store.get::<PeopleF>(&pid_key(pid))? else {
            return Ok(None);
        };
        let attrs = store.get::<AttributesF>(&pid_key(pid))?;
        Ok(Some(people::to_person(pid, rec, attrs)))
    }

    /// Whether `ident` is suppressed.
    ///
    /// # Errors
    /// As [`person`](ProfileDb::person).
    pub fn is_suppressed(&self, ident: &Ident) -> Result<bool> {
        if ident.kind == IdentKind::CioId {
            return Ok(false);
        }
        let norm = people::normalize(&self.inner.config.limits, ident)?;
        Ok(self
            .inner
            .store
            .get::<SuppressedF>(&ident_key(ident.kind, &norm))?
            .is_some())
    }

    /// Every person, in id order.
    ///
    /// # Errors
    /// [`Error::Corrupted`] when a record is damaged.
    pub fn people(&self) -> Result<Vec<Person>> {
        let _gate = self.read_gate();
        let store = &self.inner.store;
        let mut out = Vec::new();
        for item in store.scan::<PeopleF>(&[], false, None) {
            let (key, rec) = item?;
            let pid = crate::store::pid_from_key(Family::People, &key)?;
            let attrs = store.get::<AttributesF>(&key)?;
            out.push(people::to_person(pid, rec, attrs));
        }
        Ok(out)
    }

    /// Counts and sequence numbers.
    ///
    /// # Errors
    /// [`Error::Storage`] when sled fails.
    pub fn stats(&self) -> Result<Stats> {
        let people = self
            .read_gate()
            .get(&BitmapKey::All)
            .map_or(0, roaring::RoaringBitmap::len);
        Ok(Stats {
            people,
            commit_seq: self.inner.committed.load(Ordering::SeqCst),
            durable_seq: self
                .inner
                .durable
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .seq,
            size_on_disk: self.inner.store.kv().size_on_disk()?,
            checkpoints: self.inner.checkpoints.load(Ordering::Relaxed),
        })
    }

    /// Reads and checks every record of every family: envelopes, checksums, keys, and
    /// that identifiers, attributes and activity belong to people who exist.
    ///
    /// # Errors
    /// [`Error::Storage`] when reading fails; damage is reported in the report, not as
    /// an error.
    pub fn verify(&self) -> Result<VerifyReport> {
        let bitmaps = self.read_gate();
        let kv = self.inner.store.kv();
        let mut report = VerifyReport::default();
        let mut people = std::collections::BTreeSet::new();
        for item in kv.range(
            Family::People,
            (std::ops::Bound::Unbounded, std::ops::Bound::Unbounded),
            false,
        ) {
            let (k, _) = item?;
            if let Ok(pid) = crate::store::pid_from_key(Family::People, &k) {
                people.insert(pid);
            }
        }
        for &family in Family::ALL {
            let mut n = 0u64;
            for item in kv.range(
                family,
                (std::ops::Bound::Unbounded, std::ops::Bound::Unbounded),
                false,
            ) {
                let (k, v) = item?;
                n += 1;
                match family.check_record(&k, &v) {
                    Err(e) => report.problems.push(e.to_string()),
                    Ok(Some(pid)) if !people.contains(&pid) => report.problems.push(format!(
                        "family `{}` key {} belongs to person {pid}, who does not exist",
                        family.name(),
                        crate::store::codec::hex(&k)
                    )),
                    Ok(_) => {}
                }
            }
            report.records.push((family.name(), n));
        }
        if let Err(e) = self.verify_bitmaps(&bitmaps, &mut report.problems) {
            report.problems.push(e.to_string());
        }
        let seq = self.inner.committed.load(Ordering::SeqCst);
        let durable = self
            .inner
            .durable
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .seq;
        if durable > seq {
            report.problems.push(format!(
                "data loss: durable commit #{durable} but only #{seq} recovered"
            ));
        }
        if let Some(what) = &self.inner.salvaged {
            report.problems.push(what.clone());
        }
        Ok(report)
    }

    /// Checks the bitmaps against the data: the stored chunks equal the in-memory
    /// bitmaps; every bitmap derived from people's attributes, devices, relationships and
    /// events holds exactly the people whose data puts them there; metric bitmaps hold at
    /// least everyone with such a metric (they are "ever" bitmaps).
    fn verify_bitmaps(&self, bitmaps: &Bitmaps, problems: &mut Vec<String>) -> Result<()> {
        use crate::index::{attribute_keys, BitmapKey as K};
        use std::collections::BTreeMap;
        let store = &self.inner.store;
        let stored = load_bitmaps(store)?;
        let mut keys: BTreeSet<&K> = bitmaps.keys().collect();
        keys.extend(stored.keys());
        for key in keys {
            if bitmaps.get(key) != stored.get(key) {
                problems.push(format!(
                    "bitmap {key:?} in memory differs from the stored chunks"
                ));
            }
        }
        let mut expected: BTreeMap<K, roaring::RoaringBitmap> = BTreeMap::new();
        let mut at_least: BTreeMap<K, roaring::RoaringBitmap> = BTreeMap::new();
        for item in store.scan::<PeopleF>(&[], false, None) {
            let (key, rec) = item?;
            let pid = crate::store::pid_from_key(Family::People, &key)?;
            let attrs = store.get::<AttributesF>(&key)?;
            let mut derived = attribute_keys(Some(&rec), attrs.as_ref(), &self.catalog().indexed);
            derived.insert(K::All);
            for item in store.scan::<crate::store::DevicesF>(&key, false, None) {
                derived.insert(K::Platform(item?.1.platform));
            }
            for item in store.scan::<crate::store::RelationshipsF>(&key, false, None) {
                let (rk, _) = item?;
                let (_, t, o) = crate::store::RelationshipsF::decode_key(&rk)?;
                derived.insert(K::Related(t, o));
                derived.insert(K::RelatedType(t));
            }
            for k in derived {
                expected.entry(k).or_default().insert(pid);
            }
            for rk in store.keys(Family::EventsByName, &key)? {
                let (_, code, name, t, _) = crate::store::EventsByNameF::decode_key(&rk)?;
                let kind = crate::store::track_kind_name(code);
                expected
                    .entry(K::EventHour(
                        kind.to_owned(),
                        name.clone(),
                        crate::index::hour_of(t),
                    ))
                    .or_default()
                    .insert(pid);
                expected
                    .entry(K::Event(kind.to_owned(), name))
                    .or_default()
                    .insert(pid);
            }
            for item in store.scan::<crate::store::DeliveriesF>(&key, false, None) {
                for metric in item?.1.metrics.into_keys() {
                    at_least.entry(K::Metric(metric)).or_default().insert(pid);
                }
            }
        }
        let empty = roaring::RoaringBitmap::new();
        let all = bitmaps.get(&K::All).unwrap_or(&empty);
        for (key, bitmap) in bitmaps.iter() {
            let exact = !matches!(key, K::Metric(_) | K::Segment(_));
            if exact && expected.get(key) != Some(bitmap) && !bitmap.is_empty() {
                problems.push(format!("bitmap {key:?} does not match the people's data"));
            }
            if !bitmap.is_subset(all) {
                problems.push(format!("bitmap {key:?} holds people who do not exist"));
            }
        }
        for (key, want) in &expected {
            if bitmaps.get(key) != Some(want) {
                problems.push(format!(
                    "bitmap {key:?} is missing people its data puts there"
                ));
            }
        }
        for (key, want) in &at_least {
            if !want.is_subset(bitmaps.get(key).unwrap_or(&empty)) {
                problems.push(format!("bitmap {key:?} is missing people who had it"));
            }
        }
        Ok(())
    }

    /// Every raw (key, value) record of `family`, for diagnostics and tests.
    ///
    /// # Errors
    /// [`Error::Storage`] when reading fails.
    pub fn raw_records(&self, family: Family) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.inner
            .store
            .kv()
            .range(
                family,
                (std::ops::Bound::Unbounded, std::ops::Bound::Unbounded),
                false,
            )
            .map(|r| r.map_err(Error::from))
            .collect()
    }

    /// Overwrites one raw record, bypassing every check: for corruption tests only.
    ///
    /// # Errors
    /// [`Error::Storage`] when writing fails.
    #[doc(hidden)]
    pub fn raw_put(&self, family: Family, key: &[u8], value: &[u8]) -> Result<()> {
        let _writer = self.writer()?;
        let writes = crate::store::kv::WriteSet {
            families: vec![(family, vec![(key.to_vec(), Some(value.to_vec()))])],
        };
        self.inner.store.kv().commit(&writes)?;
        Ok(())
    }

    /// Removes one raw record, bypassing every check: for corruption tests only (with
    /// [`raw_put`](ProfileDb::raw_put), moves a record to a damaged key).
    ///
    /// # Errors
    /// [`Error::Storage`] when writing fails.
    #[doc(hidden)]
    pub fn raw_delete(&self, family: Family, key: &[u8]) -> Result<()> {
        let _writer = self.writer()?;
        let writes = crate::store::kv::WriteSet {
            families: vec![(family, vec![(key.to_vec(), None)])],
        };
        self.inner.store.kv().commit(&writes)?;
        Ok(())
    }

    /// The directory the database lives in.
    pub fn path(&self) -> &Path {
        &self.inner.dir
    }
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
