//! # profiledb
//!
//! An embedded, on-disk database of people profiles, modelled on the People model of
//! Customer.io: identifiers, attributes, activity, deliveries, devices, subscription
//! topics, segments and relationships to objects, kept on
//! [sled](https://docs.rs/sled/0.34.7) and keyed by a dense internal person id, with
//! audience membership in roaring bitmaps.
//!
//! It is a library first: a mobile or edge backend links it as its storage layer
//! (`default-features = false` gives the storage library alone; the default features add
//! the `profiledb` command-line tool and its allocator). It is not a hosted product.
//!
//! ```
//! # fn main() -> Result<(), profiledb::Error> {
//! use profiledb::{Ident, Identify, Outcome, ProfileDb};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let db = ProfileDb::open(dir.path())?;
//!
//! // Add-or-update, with Customer.io's identity rules.
//! let created = db.identify(
//!     Identify::new(Ident::id("u-1"))
//!         .set("email", "Ann@Example.com")
//!         .set("plan", "pro")
//!         .set("cio_subscription_preferences.topics.topic_3", true),
//! )?;
//! assert!(matches!(created, Outcome::Created(_)));
//!
//! // Found by email in any case; the email is stored as given.
//! let ann = db.person(&Ident::email("ann@example.com"))?.unwrap();
//! assert_eq!(ann.email.as_deref(), Some("Ann@Example.com"));
//! assert_eq!(ann.attributes["plan"], "pro".into());
//!
//! // Every change is in the timeline, newest first.
//! let timeline = db.activities(&Ident::id("u-1"), &profiledb::ActivityFilter::new(10))?;
//! assert_eq!(timeline[0].kind, "attribute_change");
//! # Ok(()) }
//! ```
//!
//! # The public API
//! Everything a user needs is re-exported here; the modules behind it are private.
//! - The handle: [`ProfileDb`] (open, write, read; cheap to clone, `Send + Sync`), its
//!   [`Builder`], [`Durability`], [`Clock`] ([`SystemClock`], [`ManualClock`]),
//!   [`Limits`], [`Stats`], [`VerifyReport`], [`FORMAT_VERSION`].
//! - Writes: [`Op`] for [`ProfileDb::write_batch`], and the inputs [`Identify`]
//!   ([`RelationshipChange`]), [`Track`], [`DeviceInput`], [`PushResult`],
//!   [`NewDelivery`], [`Metric`]; what a write did: [`Outcome`], [`IgnoreReason`].
//! - The model: [`Person`], [`PersonId`], [`Ident`], [`IdentKind`], [`Value`], [`Map`],
//!   [`Profile`], [`Activity`], [`ActivityFilter`], [`ActivityCursor`], [`TrackKind`],
//!   [`kinds`], [`Delivery`], [`Channel`], [`Device`], [`DeviceStatus`], [`Platform`],
//!   [`Object`], [`ObjectRef`], [`Relationship`], [`SegmentRef`], [`Subscription`],
//!   [`TopicState`], [`Counts`].
//! - Audiences: the condition language in [`query`] ([`Expr`], [`parse_condition`]),
//!   [`Audience`], [`PersonSummary`], [`SegmentInfo`], [`RefreshReport`], [`Explain`],
//!   and [`RoaringBitmap`] (the crate `roaring`'s) for raw audiences. Attribute indexes:
//!   equality ([`ProfileDb::index_attribute`]) and ordered
//!   ([`ProfileDb::index_attribute_range`]: bit-sliced bitmaps answering `<`, `<=`, `>`,
//!   `>=`, `=` against a number), which a data-driven segment also gives every attribute
//!   its condition compares in order ([`ProfileDb::create_segment`]).
//! - Wire formats in ([`ProfileDb::ingest`], [`ingest`] lists every shape): [`Report`],
//!   [`Rejection`]; export out: [`ProfileDb::export`], and back into an empty database:
//!   [`ProfileDb::restore`] ([`RestoreReport`], [`LineRejection`]) or [`Restore`] line
//!   by line ([`LineOutcome`], [`Refusal`]), failing with [`RestoreError`] ([`Broken`]);
//!   the format is in [`export`]. For a warehouse (feature `parquet`):
//!   `ProfileDb::export_parquet` writes one Parquet file per table, whole or what changed
//!   after a [`Cursor`] (`export::parquet`: `ParquetOptions`, `ParquetReport`, `TABLES`).
//! - The change feed ([`feed`]): [`ProfileDb::changes`] after a [`Cursor`] gives a
//!   [`ChangePage`] of [`Change`]s ([`ChangeKind`], [`Identifiers`]); turned on with
//!   [`ChangeFeed`] ([`Builder::change_feed`], [`ProfileDb::set_change_feed`]), its reach
//!   in [`FeedStatus`].
//! - Errors: [`Error`], [`Result`], [`OpenError`], [`StorageError`], [`InputError`],
//!   [`InputReason`].
//! - The edge server and the People page (feature `server`): `server` (`Server`,
//!   `Config`, `Keys`, `ServeError`), which `profiledb serve` runs.
//! - Limits of single inputs: [`MAX_DELIVERY_ID_BYTES`], [`MAX_EVENT_ID_BYTES`],
//!   [`MAX_TOKEN_BYTES`], [`RESERVED_DEVICE_ATTRIBUTES`], [`MAX_SEGMENT_CHANGE`],
//!   [`MAX_DEPTH`], [`EVENT_TIME_MIN`], [`EVENT_TIME_MAX`].
//!
//! The methods of [`ProfileDb`] are implemented beside what they serve: `db/` (open,
//! the write path, [`Op`] and the single-operation writes, person reads, verify),
//! `profile.rs` (the profile and its parts: activity, deliveries, devices,
//! relationships, objects; expiry), `workspace.rs` (topics, segments, queries, the
//! people list, the attribute catalogue, indexes, refresh), `counts.rs`, `ingest/` and
//! `export/` (export and restore), `feed.rs` (the change feed).
//!
//! # Limits
//! Inputs are checked against [`Limits`] (Customer.io's published limits by default:
//! identifiers and attribute names 150 bytes, attribute values 1000 bytes, 300 attributes
//! per person) before anything is written; a refusal is an [`Error::Input`] naming the
//! field and the reason.
//!
//! # Durability and atomicity
//! Every write is atomic across every family it touches, and a batch
//! ([`ProfileDb::write_batch`]) is one atomic unit: one writer at a time, any number of
//! readers; every write is staged in memory, checked whole, and committed as one sled
//! batch, so after a crash all of it is there or none of it.
//! - [`Durability::Flush`] (the default): when a write returns `Ok`, it is on disk:
//!   sled has flushed its log, its data file is `fdatasync`ed (and every file and
//!   directory under `sled/` when sled has added or removed one; sled 0.34's own flush
//!   only issues `sync_file_range`), and the `COMMIT` file beside the data records the
//!   commit's sequence number (format in `src/store/FORMAT.md`).
//! - [`Durability::Buffered`]: a write returning `Ok` is in sled's log buffers and is
//!   written out by sled's background flush (every 500 ms) but not fsynced; a crash of
//!   the process usually keeps it, a power loss may not. [`ProfileDb::flush`] makes every
//!   write so far durable as above. Dropping the handle (or [`ProfileDb::close`])
//!   flushes.
//!
//! On open, the sequence number sled recovered is compared with the one in `COMMIT`. If
//! sled came back with less than was durable (sled cuts its log at the first damaged
//! entry without an error), open fails with [`Error::DataLoss`] instead of serving a
//! quietly smaller database; [`Builder::salvage`] opens it anyway.
//!
//! # Checkpoints
//! sled 0.34.7 writes the snapshot of its page table only while opening, and an open
//! replays every log segment written since the last snapshot (about a second per
//! gigabyte). So once a handle has committed [`Builder::checkpoint_bytes`] of records
//! since sled last opened, the next commit makes everything durable (as
//! [`ProfileDb::flush`]) and then closes and reopens sled, which writes a fresh
//! snapshot. Readers never see a difference in the data, but a call arriving while it
//! runs waits for it, about as long as an open (0.1 s at 100,000 people, about 1 s at a
//! million). It never waits for a read in progress (a thread holding a scan may be the
//! one writing): it is skipped and tried at the next commit, and once twice overdue each
//! commit tries for up to 100 ms. Reads that never pause defer it. Closing (or dropping
//! the last handle) checkpoints when an eighth of the interval or more was committed
//! since the last one, as SQLite checkpoints its WAL when the last connection closes;
//! so the next open replays almost nothing, and after a crash at most one interval.
//! [`ProfileDb::checkpoint`] runs one on demand. Under a
//! [memory budget](Builder::memory_budget), a write that leaves sled's cache and the
//! bitmaps over the budget checkpoints too (whatever [`Builder::checkpoint_bytes`]
//! says), so that sled reopens with a smaller cache.
//!
//! # Memory
//! What an open handle keeps in memory: sled's page cache ([`Builder::cache_bytes`],
//! 64 MiB by default), the bitmaps every audience count reads (whole, for every
//! person: about 1.5 MiB at 100,000 synthetic people, 12 MiB at a million), and sled's
//! table of where each page is (about 400 bytes a page, a page holding at most 16 keys:
//! about 25 MiB at 100,000 people, 200 MiB at a million; no setting of sled 0.34.7
//! bounds it). [`Builder::memory_budget`] bounds the first two together as far as
//! sled's cache keeps to its capacity: the cache gets what the bitmaps leave, sized
//! again at every reopen of sled, and [`ProfileDb::memory`] reports both.
//!
//! # Compaction
//! sled reclaims the space of its log only from segments that are mostly dead, so after
//! heavy writing its files hold two to three times the bytes of the live records (4.3 GB
//! for 1.3 GB of records at a million people). [`ProfileDb::compact`] (the CLI's
//! `profiledb compact`) rewrites them, as SQLite's `VACUUM` does: it copies the live
//! records in key order into a fresh sled database in `sled.new/`, makes that durable
//! whole, exchanges the two directories in one atomic `renameat2(RENAME_EXCHANGE)`,
//! fsyncs the database directory, reopens, and removes `sled.new/` (now the old files).
//! A crash before the exchange keeps the old files, after it the new ones: every open
//! first removes a `sled.new/` left behind. A copy no smaller than the old files is dropped instead (a fresh
//! sled database has overheads of its own). Nothing runs it on its own; an app calls it
//! when it is idle.
//!
//! # Files
//! A database is a directory holding `PROFILEDB` (the marker: format version), `COMMIT`
//! (the last durable commit's sequence number, in two alternately written slots) and
//! `sled/` (and, only while a compaction runs or after a crash during one, `sled.new/`).
//! An open handle holds an exclusive `flock` on `PROFILEDB` for its whole life, so a
//! second open of the same database, in this process or another, is
//! [`OpenError::Locked`].
//!
//! # Errors and damage
//! No panic escapes the public API. A damaged record is [`Error::Corrupted`] naming the
//! family and key; sled recovering less than was durable is [`Error::DataLoss`]; a
//! failure of the storage below is [`Error::Storage`] with its cause as the
//! [`source`](std::error::Error::source).
//!
//! # On-disk format
//! Format version [`FORMAT_VERSION`]; byte-exact in `src/store/FORMAT.md`. A database of
//! another version is refused at open, unmodified.
//!
//! # Cargo features
//! - `cli` (default): the `profiledb` binary's argument parsing and progress bars.
//! - `mimalloc` (default): mimalloc as the binary's and the benches' allocator; a
//!   program linking the library chooses its own (the README says how).
//! - `server` (default): `profiledb serve` (`server`): the Track, Pipelines, webhook
//!   and App API endpoints with group commit, and the People page.
//! - `parquet` (default): `ProfileDb::export_parquet` (`export::parquet`): one Parquet
//!   file per table for a warehouse, whole or what changed after a change-feed cursor,
//!   with the Apache Arrow project's `parquet` and `arrow` crates.
//! - `__internal` (hidden, not public API): what the tests, benches and fuzz targets
//!   need from the inside.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod activity;
mod clock;
mod commit_file;
mod counts;
mod db;
mod deliveries;
mod devices;
mod error;
pub mod export;
pub mod feed;
#[cfg(feature = "__internal")]
#[doc(hidden)]
pub mod fuzzing;
mod index;
pub mod ingest;
mod limits;
mod merge;
mod model;
mod people;
mod profile;
pub mod query;
mod relations;
mod segments;
/// `profiledb serve`: the HTTP edge server that Customer.io's SDKs write to, and the
/// People page it serves (feature `server`).
#[cfg(feature = "server")]
pub mod server;
mod store;
#[cfg(any(feature = "__internal", feature = "cli"))]
#[doc(hidden)]
pub mod synth;
mod workspace;

pub use activity::{Track, EVENT_TIME_MAX, EVENT_TIME_MIN, MAX_EVENT_ID_BYTES};
pub use clock::{Clock, ManualClock, SystemClock};
pub use counts::Counts;
pub use db::{
    Builder, Compaction, Durability, MemoryUse, Op, ProfileDb, Stats, VerifyReport, CACHE_FLOOR,
    FORMAT_VERSION, MIN_BUDGET,
};
pub use deliveries::{Metric, NewDelivery, MAX_DELIVERY_ID_BYTES};
pub use devices::{DeviceInput, PushResult, MAX_TOKEN_BYTES, RESERVED_DEVICE_ATTRIBUTES};
pub use error::{Error, InputError, InputReason, OpenError, Result, StorageError};
pub use export::{
    Broken, LineOutcome, LineRejection, Refusal, Restore, RestoreError, RestoreReport,
};
pub use feed::{Change, ChangeFeed, ChangeKind, ChangePage, Cursor, FeedStatus, Identifiers};
pub use ingest::{Rejection, Report};
pub use limits::Limits;
pub use model::{
    kinds, Activity, ActivityCursor, ActivityFilter, Channel, Delivery, Device, DeviceStatus,
    Ident, IdentKind, IgnoreReason, Map, Object, ObjectRef, Outcome, Person, PersonId, Platform,
    Profile, Relationship, SegmentRef, Subscription, TopicState, TrackKind, Value, MAX_DEPTH,
};
pub use people::{Identify, RelationshipChange};
pub use query::eval::Explain;
pub use query::Expr;
pub use roaring::RoaringBitmap;
pub use segments::MAX_SEGMENT_CHANGE;
pub use workspace::{parse_condition, Audience, PersonSummary, RefreshReport, SegmentInfo};

#[cfg(feature = "__internal")]
#[doc(hidden)]
pub use store::{kv::Faults, Family};

/// Not public API: what the tests, benches and fuzz targets reach inside for.
#[cfg(feature = "__internal")]
#[doc(hidden)]
pub mod internal {
    pub use crate::relations::parse_type_id;
    pub use crate::store::codec;
}
