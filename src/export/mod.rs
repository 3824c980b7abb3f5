//! Export and restore: the whole database as JSON lines ([`ProfileDb::export`]), and
//! those lines back into an empty database ([`ProfileDb::restore`], or [`Restore`] fed
//! one line at a time), which then equals the exported one.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use profiledb::{Ident, Identify, ProfileDb};
//! let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
//! let db = ProfileDb::open(a.path())?;
//! db.identify(Identify::new(Ident::id("u-1")).set("plan", "pro"))?;
//! let mut export = Vec::new();
//! db.export(&mut export)?;
//!
//! let copy = ProfileDb::open(b.path())?;
//! let report = copy.restore(export.as_slice())?;
//! assert!(report.rejected.is_empty());
//! assert_eq!(copy.person(&Ident::id("u-1"))?, db.person(&Ident::id("u-1"))?);
//! # Ok(()) }
//! ```
//!
//! # Why extension messages
//! The wire formats cannot carry what makes two databases equal: the internal person ids
//! (and so every `cio_id`, including the gaps deleted people leave), activity history as
//! recorded (attribute changes, merges, segment entered/exited, anonymous merges, with
//! their times and sequence numbers), when each attribute was set, delivery metric
//! times, device statuses, suppression groups, topic and segment definitions with their
//! manual members, object-type names, declared indexes, or the anonymous activity kept
//! for people not yet identified. Replaying Track or Pipelines calls would rebuild a
//! similar database, not this one. So the export is a lossless dump of every stored
//! record, in profiledb's own extension messages (`"type": "profiledb"`), and ingesting it
//! restores every record byte for byte.
//!
//! # Format
//! One JSON object per line, in this order:
//! 1. `{"type": "profiledb", "action": "restore_begin", "format": <FORMAT_VERSION>,
//!    "next_pid": N, "next_seq": N, "commit_seq": N, "records": [...]}`: the
//!    database-wide counters (the next person id and activity sequence number; the
//!    sequence number of the last commit, which the restore's last commit takes when it
//!    has not passed it, so a cursor of the source's change feed from before the export
//!    expires on the copy; optional) and
//!    the `meta` records (format record, declared indexes; never the change feed's). Accepted only by a database that holds no records yet
//!    (a fresh one). `format` is the format of the database exported: this build's, or
//!    an older one from [`OLDEST_RESTORABLE`] on, which is how a database moves to this
//!    format (export it with the build that wrote it, ingest the export with this one).
//!    An older export's records are written as this format stores them: its `meta`
//!    format record names this format, families this format no longer has (format 2's
//!    `ranges`) are skipped, and the data this format derives from records that the old
//!    export does not carry is rebuilt at `restore_end`.
//! 2. `{"type": "profiledb", "action": "restore", "records": [...]}`: up to
//!    [`RECORDS_PER_LINE`] records (fewer when they are large) of one family after
//!    another, in `Family::ALL` order and key order. Each line is committed as one
//!    unit. A record that already exists is refused (a restore never overwrites).
//! 3. `{"type": "profiledb", "action": "restore_end", "records": N}`: N records were
//!    exported after the header. The restore checks the database now holds exactly
//!    that many (plus those it skipped), rebuilds derived data for an older format's
//!    export, then loads the bitmaps and the topic/segment catalog from the restored
//!    records. Between `restore_begin` and this line every other write is refused
//!    (`restore` and `restore_end` without a `restore_begin` are refused too), and
//!    readers see people without their bitmaps: do not read the database in between.
//!
//! A record is `[family, key, value]`: the family's name (as `src/store/FORMAT.md`
//! names it), the key in lowercase hex, and the stored value in lowercase hex,
//! envelope included (format version, checksum, payload; `src/store/FORMAT.md`). Each
//! value is checked (checksum, decoding) before it is written: a damaged line is
//! refused, naming `records[i].value`, and writes nothing.
//!
//! What is not carried: the commit sequence numbers
//! ([`Stats::commit_seq`](crate::Stats::commit_seq), `durable_seq`), which count this
//! database's commits, and the bytes on disk.
//!
//! # Restoring
//! [`ProfileDb::ingest`] applies each of these lines on its own. [`Restore`] (and
//! [`ProfileDb::restore`] over it) holds a whole input to the rule that makes a restore
//! safe: a dump arrives whole and alone. Its `restore_begin` line, its `restore` lines
//! and its `restore_end` line come with nothing else in between (the database is not
//! consistent until `restore_end`): another message inside a dump is refused and writes
//! nothing ([`Refusal::InsideDump`]); a restore line outside one is refused
//! ([`Refusal::OutsideDump`]); a dump that cannot be applied, or that the input ends
//! inside, stops the input with [`RestoreError::Broken`], and the database then holds
//! a partial restore: remove it and restore the whole export into an empty database.
//! Lines outside a dump are ingested as [`ProfileDb::ingest`] would.
//!
//! [`ProfileDb::export`]: crate::ProfileDb::export
//! [`ProfileDb::restore`]: crate::ProfileDb::restore
//! [`ProfileDb::ingest`]: crate::ProfileDb::ingest

pub(crate) mod dump;
/// The database as Parquet files, one per table ([`ProfileDb::export_parquet`](crate::ProfileDb::export_parquet); feature `parquet`).
#[cfg(feature = "parquet")]
pub mod parquet;
mod restore;

pub(crate) use dump::Upgrade;
pub use dump::{OLDEST_RESTORABLE, RECORDS_PER_LINE};
pub use restore::{
    Broken, LineOutcome, LineRejection, Refusal, Restore, RestoreError, RestoreReport,
};
