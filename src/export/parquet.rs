//! The database as Parquet files, one per table, for a warehouse
//! ([`ProfileDb::export_parquet`](crate::ProfileDb::export_parquet), feature `parquet`).
//!
//! # Layout
//! A run writes every table, each as one file `DIR/<table>/<run>-<from>-<to>.parquet`
//! (`run`: six digits, one more than the highest run already in `DIR`; `from`: `full`,
//! or the cursor an incremental run starts after; `to`: the commit the snapshot ends at),
//! and then `DIR/manifests/<run>-<from>-<to>.json` listing the files, their rows and
//! bytes, and the cursor to pass to the next incremental run. A file that already exists
//! is never overwritten: each is written under a temporary name, made durable, and
//! linked to its name (which fails if the name is taken). The manifest is written last;
//! a run that fails removes the files it wrote (a crash can leave some, with no
//! manifest naming them).
//!
//! # Tables
//! [`TABLES`](crate::export::parquet::TABLES) lists every table with its columns (name,
//! Arrow type, meaning); the README shows them. Every table ends with two bookkeeping
//! columns: `_commit` (the commit the run's snapshot ends at) and `_deleted` (false in a
//! full export; true on a row of an incremental run saying the key no longer exists,
//! with only the key columns filled). Times are unix seconds (`Int64`), as everywhere in
//! profiledb; values of attributes, event data and object attributes are compact JSON
//! text.
//!
//! # Incremental runs
//! With [`ParquetOptions::since`](crate::export::parquet::ParquetOptions::since), a run
//! reads the change feed from that cursor to the snapshot's end, collects every key a
//! change touched (the first columns of each table,
//! [`Table::key`](crate::export::parquet::Table::key)), and writes each once as it is at
//! the snapshot, or, gone, as a `_deleted` row of its key (`suppressions`, small, is
//! written whole). Applying runs in order (for each key, the row with the highest
//! `_commit`, dropped when `_deleted`) over one full run gives the tables a full run at
//! the last one's commit writes. A cursor the feed cannot serve fails the run before
//! anything is written.
//!
//! # Consistency
//! Like [`ProfileDb::export`](crate::ProfileDb::export), a run holds the writer lock
//! (writers wait) and the commit gate for reading, so every table is the same snapshot.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Float64Builder, Int64Builder, StringBuilder, UInt32Builder, UInt64Builder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::db::ProfileDb;
use crate::error::{Error, InputError, Result, StorageError};
use crate::feed::{ChangeKind, Cursor};
use crate::index::{topic_number, BitmapKey, Bitmaps};
use crate::model::{IdentKind, Value};
use crate::store::records::{
    ActivityRecord, AttributesRecord, DeliveryRecord, DeviceRecord, ObjectRecord, PersonRecord,
    RelationshipRecord,
};
use crate::store::{
    ident_from_key, ident_key, pid_from_key, pid_key, ActivityF, AttributesF, DeliveriesF,
    DeliveryIdsF, DevicesF, Family, IdentifiersF, KeyReader, ObjectTypesF, ObjectsF, PeopleF,
    RelationshipsF, Store, SuppressedF,
};

/// Rows in one row group, at most: about a million rows makes row groups of tens of
/// megabytes compressed for these narrow tables, in the range warehouses read well
/// (Parquet's own default; Spark, Snowflake and BigQuery read one row group per task).
pub const ROW_GROUP_ROWS: usize = 1024 * 1024;

/// Rows handed to the Parquet writer at a time (one Arrow record batch).
const BATCH_ROWS: usize = 64 * 1024;

/// Text bytes after which a batch is handed over early: an Arrow string column holds at
/// most 2 GiB (32-bit offsets), and large event data would pass that in 64k rows.
const BATCH_BYTES: usize = 64 << 20;

/// What a column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// `UInt32`.
    U32,
    /// `UInt64`.
    U64,
    /// `Int64` (times: unix seconds).
    I64,
    /// `Float64`.
    F64,
    /// `Boolean`.
    Bool,
    /// `Utf8`.
    Str,
}

impl ColumnType {
    /// The Arrow type.
    pub fn arrow(self) -> DataType {
        match self {
            ColumnType::U32 => DataType::UInt32,
            ColumnType::U64 => DataType::UInt64,
            ColumnType::I64 => DataType::Int64,
            ColumnType::F64 => DataType::Float64,
            ColumnType::Bool => DataType::Boolean,
            ColumnType::Str => DataType::Utf8,
        }
    }
}

/// One column: its name, type, and meaning.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    /// The name.
    pub name: &'static str,
    /// The type.
    pub ty: ColumnType,
    /// What it means.
    pub doc: &'static str,
}

/// One table: its name, key columns (the first `key` columns) and columns (without the
/// bookkeeping `_commit` and `_deleted`, which every table ends with).
#[derive(Debug, Clone, Copy)]
pub struct Table {
    /// The name: the folder its files go in.
    pub name: &'static str,
    /// What a row is.
    pub doc: &'static str,
    /// How many leading columns form the key (never null).
    pub key: usize,
    /// The columns.
    pub columns: &'static [Column],
}

const fn col(name: &'static str, ty: ColumnType, doc: &'static str) -> Column {
    Column { name, ty, doc }
}

use ColumnType::{Bool, Str, F64, I64, U32, U64};

const PEOPLE: Table = Table {
    name: "people",
    doc: "one row per person",
    key: 1,
    columns: &[
        col(
            "pid",
            U32,
            "internal person id (the key every other table joins on)",
        ),
        col("cio_id", Str, "`cio_id` (eight hex digits of `pid`)"),
        col("id", Str, "`id`, if set"),
        col("email", Str, "`email` as given, if set"),
        col("phone", Str, "`phone`, if set"),
        col("anonymous_id", Str, "`anonymous_id`, if set"),
        col("created", I64, "when the person was created here"),
        col("updated", I64, "when the person last changed"),
        col(
            "unsubscribed",
            Bool,
            "the `unsubscribed` attribute is truthy",
        ),
        col(
            "suppressed",
            Bool,
            "the `id`, `email` or `phone` is suppressed",
        ),
    ],
};

const ATTRIBUTES: Table = Table {
    name: "attributes",
    doc: "one row per person and top-level attribute (identifiers are in `people`)",
    key: 2,
    columns: &[
        col("person", U32, "`people.pid`"),
        col("name", Str, "the attribute name"),
        col("value", Str, "the value as compact JSON text"),
        col(
            "value_type",
            Str,
            "`null`, `bool`, `int`, `float`, `string`, `array` or `map`",
        ),
        col("value_string", Str, "the value when it is a string"),
        col("value_int", I64, "the value when it is an integer"),
        col(
            "value_float",
            F64,
            "the value when it is a number (integer or float)",
        ),
        col("value_bool", Bool, "the value when it is a boolean"),
        col("set_at", I64, "when it was last set"),
    ],
};

const ACTIVITIES: Table = Table {
    name: "activities",
    doc: "one row per entry of a person's timeline",
    key: 1,
    columns: &[
        col("seq", U64, "the entry's sequence number (unique)"),
        col("person", U32, "`people.pid`"),
        col("timestamp", I64, "when it happened"),
        col(
            "kind",
            Str,
            "`event`, `page`, `screen`, `attribute_change`, ...",
        ),
        col(
            "name",
            Str,
            "the event name, URL, screen or attribute, where the kind has one",
        ),
        col("data", Str, "details as compact JSON text"),
        col(
            "event_id",
            Str,
            "the caller's event id (deduplication), for tracked events",
        ),
    ],
};

const DELIVERIES: Table = Table {
    name: "deliveries",
    doc: "one row per message sent to a person",
    key: 1,
    columns: &[
        col("delivery_id", Str, "the delivery id"),
        col("person", U32, "`people.pid`"),
        col("created", I64, "when it was created"),
        col(
            "channel",
            Str,
            "`email`, `push`, `sms`, `whatsapp`, `in_app`, `slack`, `webhook`",
        ),
        col("message_id", Str, "the message template (action) id"),
        col("campaign_id", Str, "the campaign id"),
        col("broadcast_id", Str, "the broadcast id"),
        col("newsletter_id", Str, "the newsletter id"),
        col("recipient", Str, "where it went"),
        col("subject", Str, "the subject line"),
        col("status", Str, "the latest metric"),
    ],
};

const METRICS: Table = Table {
    name: "metrics",
    doc: "one row per metric reported against a delivery",
    key: 2,
    columns: &[
        col("delivery_id", Str, "`deliveries.delivery_id`"),
        col(
            "metric",
            Str,
            "`sent`, `delivered`, `opened`, `clicked`, ...",
        ),
        col("person", U32, "`people.pid`"),
        col("at", I64, "when it was reported"),
    ],
};

const DEVICES: Table = Table {
    name: "devices",
    doc: "one row per push device",
    key: 2,
    columns: &[
        col("person", U32, "`people.pid`"),
        col("token", Str, "the push token"),
        col("platform", Str, "`ios` or `android`"),
        col("last_used", I64, "when it was last used"),
        col(
            "status",
            Str,
            "`\"\"` (unused), `sent`, `bounced` or `suppressed`",
        ),
        col("attributes", Str, "device attributes as compact JSON text"),
        col("created", I64, "when it was added"),
    ],
};

const RELATIONSHIPS: Table = Table {
    name: "relationships",
    doc: "one row per relationship between a person and an object",
    key: 3,
    columns: &[
        col("person", U32, "`people.pid`"),
        col("object_type", U32, "`objects.object_type`"),
        col("object_id", Str, "`objects.object_id`"),
        col(
            "attributes",
            Str,
            "relationship attributes as compact JSON text",
        ),
        col("created", I64, "when it was created"),
    ],
};

const OBJECTS: Table = Table {
    name: "objects",
    doc: "one row per object",
    key: 2,
    columns: &[
        col("object_type", U32, "the object type id (`object_types.id`)"),
        col("object_id", Str, "the object id"),
        col("attributes", Str, "object attributes as compact JSON text"),
        col("created", I64, "when it was created"),
        col("updated", I64, "when it last changed"),
    ],
};

const OBJECT_TYPES: Table = Table {
    name: "object_types",
    doc: "one row per object type",
    key: 1,
    columns: &[
        col("id", U32, "the object type id"),
        col("name", Str, "its name"),
        col("created", I64, "when it was defined"),
    ],
};

const SEGMENT_MEMBERSHIPS: Table = Table {
    name: "segment_memberships",
    doc: "one row per segment and member",
    key: 2,
    columns: &[
        col("segment", U32, "`segments.id`"),
        col("person", U32, "`people.pid`"),
    ],
};

const TOPIC_PREFERENCES: Table = Table {
    name: "topic_preferences",
    doc: "one row per explicit topic preference (`cio_subscription_preferences.topics.topic_<n>` \
          set to a boolean); everyone else gets the topic's default",
    key: 2,
    columns: &[
        col("person", U32, "`people.pid`"),
        col("topic", U32, "the topic number (`topics.id`)"),
        col("subscribed", Bool, "opted in (true) or out (false)"),
    ],
};

const SEGMENTS: Table = Table {
    name: "segments",
    doc: "one row per segment",
    key: 1,
    columns: &[
        col("id", U32, "the segment id"),
        col("name", Str, "its name"),
        col("kind", Str, "`data_driven` or `manual`"),
        col("condition", Str, "the condition (data-driven segments)"),
        col("created", I64, "when it was created"),
    ],
};

const TOPICS: Table = Table {
    name: "topics",
    doc: "one row per subscription topic",
    key: 1,
    columns: &[
        col("id", U32, "the topic id"),
        col("name", Str, "its name"),
        col(
            "default_subscribed",
            Bool,
            "whether people without a preference receive it",
        ),
    ],
};

const SUPPRESSIONS: Table = Table {
    name: "suppressions",
    doc: "one row per suppressed identifier",
    key: 2,
    columns: &[
        col("kind", Str, "`id`, `email` or `phone`"),
        col("value", Str, "the identifier (emails lowercased)"),
        col("at", I64, "when it was suppressed"),
    ],
};

/// Every table, in the order a run writes them.
pub const TABLES: &[Table] = &[
    PEOPLE,
    ATTRIBUTES,
    ACTIVITIES,
    DELIVERIES,
    METRICS,
    DEVICES,
    RELATIONSHIPS,
    OBJECTS,
    OBJECT_TYPES,
    SEGMENT_MEMBERSHIPS,
    TOPIC_PREFERENCES,
    SEGMENTS,
    TOPICS,
    SUPPRESSIONS,
];

/// The bookkeeping columns every table ends with.
pub const BOOKKEEPING: &[Column] = &[
    col("_commit", U64, "the commit the run's snapshot ends at"),
    col(
        "_deleted",
        Bool,
        "the key no longer exists (incremental runs; only the key columns are filled)",
    ),
];

/// How far a run is: `done` of `total` units (each table's scan of the people counts
/// the person ids it has passed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParquetProgress {
    /// Units done.
    pub done: u64,
    /// Units in all.
    pub total: u64,
}

/// How to run [`ProfileDb::export_parquet`].
#[derive(Clone, Copy)]
pub struct ParquetOptions<'a> {
    since: Option<Cursor>,
    row_group_rows: usize,
    progress: Option<&'a (dyn Fn(ParquetProgress) + Sync)>,
}

impl Default for ParquetOptions<'_> {
    fn default() -> Self {
        ParquetOptions {
            since: None,
            row_group_rows: ROW_GROUP_ROWS,
            progress: None,
        }
    }
}

impl std::fmt::Debug for ParquetOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetOptions")
            .field("since", &self.since)
            .field("row_group_rows", &self.row_group_rows)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

impl<'a> ParquetOptions<'a> {
    /// A full run with row groups of [`ROW_GROUP_ROWS`] and no progress reports.
    pub fn new() -> Self {
        Self::default()
    }
    /// An incremental run: only what changed after `cursor` (a cursor an earlier run
    /// printed, or any cursor of the change feed), read from the change feed, which must
    /// have been on since then.
    pub fn since(mut self, cursor: Cursor) -> Self {
        self.since = Some(cursor);
        self
    }
    /// Row groups of at most `rows` rows (at least 1).
    pub fn row_group_rows(mut self, rows: usize) -> Self {
        self.row_group_rows = rows.max(1);
        self
    }
    /// Calls `f` as the run goes.
    pub fn progress(mut self, f: &'a (dyn Fn(ParquetProgress) + Sync)) -> Self {
        self.progress = Some(f);
        self
    }
}

/// One file a run wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParquetFile {
    /// The table.
    pub table: &'static str,
    /// The file.
    pub path: PathBuf,
    /// Its rows.
    pub rows: u64,
    /// Its size in bytes.
    pub bytes: u64,
}

/// What [`ProfileDb::export_parquet`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParquetReport {
    /// The run's number.
    pub run: u64,
    /// Where an incremental run started (`None`: a full run).
    pub since: Option<Cursor>,
    /// The commit the snapshot ends at (every row's `_commit`).
    pub commit: u64,
    /// The cursor the next incremental run passes as `since`: after `commit`.
    pub cursor: Cursor,
    /// One file per table, in [`TABLES`] order.
    pub files: Vec<ParquetFile>,
    /// The run's manifest.
    pub manifest: PathBuf,
}

impl ParquetReport {
    /// Rows written in all.
    pub fn rows(&self) -> u64 {
        self.files.iter().map(|f| f.rows).sum()
    }
    /// Bytes written in all (the manifest aside).
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }
}

fn io(e: std::io::Error) -> Error {
    Error::Storage(StorageError::Io(e))
}

fn io_at(path: &Path, e: std::io::Error) -> Error {
    io(std::io::Error::new(
        e.kind(),
        format!("{}: {e}", path.display()),
    ))
}

fn pq(e: impl std::fmt::Display) -> Error {
    io(std::io::Error::other(format!("writing Parquet: {e}")))
}

/// One cell.
#[derive(Debug, Clone, Copy)]
enum V<'a> {
    Null,
    U32(u32),
    U64(u64),
    I64(i64),
    F64(f64),
    Bool(bool),
    Str(&'a str),
}

fn opt(s: &Option<String>) -> V<'_> {
    s.as_deref().map_or(V::Null, V::Str)
}

enum Builder {
    U32(UInt32Builder),
    U64(UInt64Builder),
    I64(Int64Builder),
    F64(Float64Builder),
    Bool(BooleanBuilder),
    Str(StringBuilder),
}

impl Builder {
    fn new(ty: ColumnType) -> Builder {
        match ty {
            U32 => Builder::U32(UInt32Builder::new()),
            U64 => Builder::U64(UInt64Builder::new()),
            I64 => Builder::I64(Int64Builder::new()),
            F64 => Builder::F64(Float64Builder::new()),
            Bool => Builder::Bool(BooleanBuilder::new()),
            Str => Builder::Str(StringBuilder::new()),
        }
    }

    /// Appends `v`; false when its type is not the column's.
    fn push(&mut self, v: V<'_>) -> bool {
        match (self, v) {
            (Builder::U32(b), V::U32(x)) => b.append_value(x),
            (Builder::U64(b), V::U64(x)) => b.append_value(x),
            (Builder::I64(b), V::I64(x)) => b.append_value(x),
            (Builder::F64(b), V::F64(x)) => b.append_value(x),
            (Builder::Bool(b), V::Bool(x)) => b.append_value(x),
            (Builder::Str(b), V::Str(x)) => b.append_value(x),
            (Builder::U32(b), V::Null) => b.append_null(),
            (Builder::U64(b), V::Null) => b.append_null(),
            (Builder::I64(b), V::Null) => b.append_null(),
            (Builder::F64(b), V::Null) => b.append_null(),
            (Builder::Bool(b), V::Null) => b.append_null(),
            (Builder::Str(b), V::Null) => b.append_null(),
            _ => return false,
        }
        true
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::U32(b) => Arc::new(b.finish()),
            Builder::U64(b) => Arc::new(b.finish()),
            Builder::I64(b) => Arc::new(b.finish()),
            Builder::F64(b) => Arc::new(b.finish()),
            Builder::Bool(b) => Arc::new(b.finish()),
            Builder::Str(b) => Arc::new(b.finish()),
        }
    }
}

/// The Arrow schema of `table`, bookkeeping columns included. Key columns and the
/// bookkeeping are never null.
pub fn schema(table: &Table) -> SchemaRef {
    let fields: Vec<Field> = table
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| Field::new(c.name, c.ty.arrow(), i >= table.key))
        .chain(
            BOOKKEEPING
                .iter()
                .map(|c| Field::new(c.name, c.ty.arrow(), false)),
        )
        .collect();
    Arc::new(Schema::new(fields))
}

/// One table's file being written.
struct TableOut {
    table: &'static Table,
    schema: SchemaRef,
    builders: Vec<Builder>,
    writer: Option<ArrowWriter<File>>,
    tmp: PathBuf,
    dest: PathBuf,
    buffered: usize,
    buffered_bytes: usize,
    rows: u64,
    commit: u64,
}

impl TableOut {
    fn create(
        table: &'static Table,
        tmp: PathBuf,
        dest: PathBuf,
        commit: u64,
        row_group_rows: usize,
    ) -> Result<TableOut> {
        let schema = schema(table);
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| io_at(&tmp, e))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_max_row_group_row_count(Some(row_group_rows.max(1)))
            .set_created_by(format!("profiledb {}", env!("CARGO_PKG_VERSION")))
            .build();
        let writer = ArrowWriter::try_new(file, schema.clone(), Some(props)).map_err(pq)?;
        let builders = schema
            .fields()
            .iter()
            .zip(table.columns.iter().chain(BOOKKEEPING))
            .map(|(_, c)| Builder::new(c.ty))
            .collect();
        Ok(TableOut {
            table,
            schema,
            builders,
            writer: Some(writer),
            tmp,
            dest,
            buffered: 0,
            buffered_bytes: 0,
            rows: 0,
            commit,
        })
    }

    /// Appends one row: `cells` are the table's columns in order (fewer: the rest null).
    fn push(&mut self, cells: &[V<'_>], deleted: bool) -> Result<()> {
        let n = self.table.columns.len();
        let mut cells = cells
            .iter()
            .copied()
            .chain(std::iter::repeat(V::Null))
            .take(n);
        let tail = [V::U64(self.commit), V::Bool(deleted)];
        for (i, b) in self.builders.iter_mut().enumerate() {
            let v = if i < n {
                cells.next().unwrap_or(V::Null)
            } else {
                tail.get(i - n).copied().unwrap_or(V::Null)
            };
            if let V::Str(text) = v {
                self.buffered_bytes += text.len();
            }
            if !b.push(v) {
                return Err(pq(format!(
                    "table {}: column {i} given a value of another type",
                    self.table.name
                )));
            }
        }
        self.buffered += 1;
        self.rows += 1;
        if self.buffered >= BATCH_ROWS || self.buffered_bytes >= BATCH_BYTES {
            self.write_batch()?;
        }
        Ok(())
    }

    fn row(&mut self, cells: &[V<'_>]) -> Result<()> {
        self.push(cells, false)
    }

    fn write_batch(&mut self) -> Result<()> {
        if self.buffered == 0 {
            return Ok(());
        }
        let columns: Vec<ArrayRef> = self.builders.iter_mut().map(Builder::finish).collect();
        self.buffered = 0;
        self.buffered_bytes = 0;
        let batch = RecordBatch::try_new(self.schema.clone(), columns).map_err(pq)?;
        match self.writer.as_mut() {
            Some(w) => w.write(&batch).map_err(pq),
            None => Err(pq("the file is already closed")),
        }
    }

    /// Ends the file, makes it durable and gives it its name.
    fn finish(mut self) -> Result<ParquetFile> {
        self.write_batch()?;
        let writer = self
            .writer
            .take()
            .ok_or_else(|| pq("the file is already closed"))?;
        let file = writer.into_inner().map_err(pq)?;
        file.sync_all().map_err(|e| io_at(&self.tmp, e))?;
        let bytes = file.metadata().map_err(|e| io_at(&self.tmp, e))?.len();
        drop(file);
        publish(&self.tmp, &self.dest)?;
        Ok(ParquetFile {
            table: self.table.name,
            path: self.dest.clone(),
            rows: self.rows,
            bytes,
        })
    }
}

impl Drop for TableOut {
    fn drop(&mut self) {
        // A file not finished leaves no temporary behind.
        if self.writer.is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Gives the finished temporary file `tmp` the name `dest`, refusing if it is taken: a
/// hard link fails on an existing name where a rename would replace it.
fn publish(tmp: &Path, dest: &Path) -> Result<()> {
    let linked = std::fs::hard_link(tmp, dest);
    let _ = std::fs::remove_file(tmp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(exists(dest)),
        Err(e) => return Err(io_at(dest, e)),
    }
    if let Some(parent) = dest.parent() {
        File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_at(parent, e))?;
    }
    Ok(())
}

fn exists(path: &Path) -> Error {
    InputError::invalid(
        "dir",
        format!(
            "already holds {}: an export never overwrites a file",
            path.display()
        ),
    )
    .into()
}

/// The kind and text of a value, for the typed attribute columns.
fn value_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Int(_) => "int",
        Value::Float(_) => "float",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Map(_) => "map",
    }
}

/// `v` as compact JSON, exactly as `Value`'s `Display` writes it, without building a
/// `serde_json::Value` first (a tenth of a full run's time went to that).
fn json(v: &Value) -> String {
    let mut out = String::new();
    write_json(&mut out, v);
    out
}

fn map_json(m: &crate::model::Map) -> String {
    let mut out = String::new();
    write_map(&mut out, m);
    out
}

fn write_json(out: &mut String, v: &Value) {
    use std::fmt::Write;
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Float(x) => match serde_json::Number::from_f64(*x) {
            Some(n) => {
                let _ = write!(out, "{n}");
            }
            None => out.push_str("null"),
        },
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(out, item);
            }
            out.push(']');
        }
        Value::Map(m) => write_map(out, m),
    }
}

fn write_map(out: &mut String, m: &crate::model::Map) {
    out.push('{');
    for (i, (k, v)) in m.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_str(out, k);
        out.push(':');
        write_json(out, v);
    }
    out.push('}');
}

fn write_str(out: &mut String, s: &str) {
    // serde_json's escaping, so the text is what `Display` gives.
    match serde_json::to_string(s) {
        Ok(text) => out.push_str(&text),
        Err(_) => out.push_str("null"),
    }
}

/// The explicit topic preferences in a person's attributes: (topic, subscribed).
fn topic_prefs(values: &crate::model::Map) -> BTreeMap<u32, bool> {
    let topics = values
        .get("cio_subscription_preferences")
        .and_then(Value::as_map)
        .and_then(|m| m.get("topics"))
        .and_then(Value::as_map);
    topics
        .into_iter()
        .flatten()
        .filter_map(|(name, v)| match (topic_number(name), v) {
            (Some(n), Value::Bool(b)) => Some((n, *b)),
            _ => None,
        })
        .collect()
}

/// Where a run's files go.
struct Plan {
    dir: PathBuf,
    run: u64,
    /// `<run>-<from>-<to>`.
    stem: String,
}

impl Plan {
    fn dest(&self, table: &str) -> PathBuf {
        self.dir.join(table).join(format!("{}.parquet", self.stem))
    }
    fn tmp(&self, table: &str) -> PathBuf {
        self.dir
            .join(table)
            .join(format!(".{}.parquet.tmp-{}", self.stem, std::process::id()))
    }
    fn manifest(&self) -> PathBuf {
        self.dir
            .join("manifests")
            .join(format!("{}.json", self.stem))
    }
}

/// The highest run number among the files `dir` holds (0 when none).
fn last_run(dir: &Path) -> Result<u64> {
    let mut last = 0u64;
    let sub = TABLES.iter().map(|t| t.name).chain(["manifests"]);
    for name in sub {
        let folder = dir.join(name);
        let entries = match std::fs::read_dir(&folder) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_at(&folder, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| io_at(&folder, e))?;
            let file = entry.file_name();
            let run = file
                .to_str()
                .and_then(|f| f.split('-').next())
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(run) = run {
                last = last.max(run);
            }
        }
    }
    Ok(last)
}

/// Checks `dir` (creating it when missing) and plans the run's file names.
fn plan(dir: &Path, from: &str, to: u64) -> Result<Plan> {
    let bad = |why: String| -> Error { InputError::invalid("dir", why).into() };
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => {
            return Err(bad(format!("{} is a file, not a directory", dir.display())))
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)
                .map_err(|e| bad(format!("cannot create {}: {e}", dir.display())))?;
        }
        Err(e) => return Err(bad(format!("cannot read {}: {e}", dir.display()))),
    }
    for name in TABLES.iter().map(|t| t.name).chain(["manifests"]) {
        let sub = dir.join(name);
        if sub.exists() && !sub.is_dir() {
            return Err(bad(format!("{} is a file, not a directory", sub.display())));
        }
        std::fs::create_dir_all(&sub)
            .map_err(|e| bad(format!("cannot create {}: {e}", sub.display())))?;
        // Writable? Probe with a file of our own name.
        let probe = sub.join(format!(".probe-{}", std::process::id()));
        File::create(&probe).map_err(|e| bad(format!("cannot write in {}: {e}", sub.display())))?;
        let _ = std::fs::remove_file(&probe);
    }
    let run = last_run(dir)?.saturating_add(1);
    let plan = Plan {
        dir: dir.to_path_buf(),
        run,
        stem: format!("{run:06}-{from}-{to}"),
    };
    for t in TABLES {
        let dest = plan.dest(t.name);
        if dest.exists() {
            return Err(exists(&dest));
        }
    }
    if plan.manifest().exists() {
        return Err(exists(&plan.manifest()));
    }
    Ok(plan)
}

/// Progress: each person-keyed scan counts the ids it passes.
struct Meter<'a> {
    f: Option<&'a (dyn Fn(ParquetProgress) + Sync)>,
    per_scan: u64,
    total: u64,
    base: u64,
    last: u64,
}

impl Meter<'_> {
    fn at(&mut self, pid: u32) {
        let done = self.base + u64::from(pid).min(self.per_scan);
        // Every 4096 ids, to keep the callback off the hot path.
        if done >= self.last + 4096 || done == self.total {
            self.last = done;
            if let Some(f) = self.f {
                f(ParquetProgress {
                    done,
                    total: self.total,
                });
            }
        }
    }
    fn scan_done(&mut self) {
        self.base = (self.base + self.per_scan).min(self.total);
        self.last = self.base;
        if let Some(f) = self.f {
            f(ParquetProgress {
                done: self.base,
                total: self.total,
            });
        }
    }
}

/// The person-keyed scans a full run makes (for progress).
const PERSON_SCANS: u64 = 6;

/// Writes the rows of every table from one snapshot.
struct Rows<'s> {
    store: &'s Store,
    bitmaps: &'s Bitmaps,
    suppressed: HashSet<Vec<u8>>,
}

impl Rows<'_> {
    fn person(&self, t: &mut TableOut, pid: u32, rec: &PersonRecord) -> Result<()> {
        let suppressed = [
            (IdentKind::Id, &rec.id),
            (IdentKind::Email, &rec.email),
            (IdentKind::Phone, &rec.phone),
        ]
        .into_iter()
        .any(|(kind, v)| {
            v.as_deref().is_some_and(|v| {
                let norm = if kind == IdentKind::Email {
                    v.to_lowercase()
                } else {
                    v.to_owned()
                };
                self.suppressed.contains(&ident_key(kind, &norm))
            })
        });
        let cio_id = crate::model::PersonId(pid).cio_id();
        t.row(&[
            V::U32(pid),
            V::Str(&cio_id),
            opt(&rec.id),
            opt(&rec.email),
            opt(&rec.phone),
            opt(&rec.anonymous_id),
            V::I64(rec.created),
            V::I64(rec.updated),
            V::Bool(self.bitmaps.contains(&BitmapKey::Unsubscribed, pid)),
            V::Bool(suppressed),
        ])
    }

    fn attribute(
        t: &mut TableOut,
        pid: u32,
        name: &str,
        value: &Value,
        rec: &AttributesRecord,
    ) -> Result<()> {
        let text = json(value);
        let (s, i, f, b) = match value {
            Value::String(s) => (V::Str(s), V::Null, V::Null, V::Null),
            Value::Int(x) => (V::Null, V::I64(*x), V::F64(*x as f64), V::Null),
            Value::Float(x) => (V::Null, V::Null, V::F64(*x), V::Null),
            Value::Bool(x) => (V::Null, V::Null, V::Null, V::Bool(*x)),
            _ => (V::Null, V::Null, V::Null, V::Null),
        };
        t.row(&[
            V::U32(pid),
            V::Str(name),
            V::Str(&text),
            V::Str(value_type(value)),
            s,
            i,
            f,
            b,
            rec.timestamps.get(name).map_or(V::Null, |x| V::I64(*x)),
        ])
    }

    fn activity(
        t: &mut TableOut,
        seq: u64,
        pid: u32,
        timestamp: i64,
        rec: &ActivityRecord,
    ) -> Result<()> {
        let data = json(&rec.data);
        t.row(&[
            V::U64(seq),
            V::U32(pid),
            V::I64(timestamp),
            V::Str(&rec.kind),
            opt(&rec.name),
            V::Str(&data),
            opt(&rec.event_id),
        ])
    }

    fn delivery(
        d: &mut TableOut,
        m: &mut TableOut,
        pid: u32,
        created: i64,
        id: &str,
        rec: &DeliveryRecord,
    ) -> Result<()> {
        Rows::delivery_row(d, pid, created, id, rec)?;
        for (metric, at) in &rec.metrics {
            m.row(&[V::Str(id), V::Str(metric), V::U32(pid), V::I64(*at)])?;
        }
        Ok(())
    }

    /// The `deliveries` row alone (its metrics are rows of `metrics`).
    fn delivery_row(
        d: &mut TableOut,
        pid: u32,
        created: i64,
        id: &str,
        rec: &DeliveryRecord,
    ) -> Result<()> {
        d.row(&[
            V::Str(id),
            V::U32(pid),
            V::I64(created),
            V::Str(&rec.channel),
            opt(&rec.message_id),
            opt(&rec.campaign_id),
            opt(&rec.broadcast_id),
            opt(&rec.newsletter_id),
            opt(&rec.recipient),
            opt(&rec.subject),
            V::Str(&rec.status),
        ])
    }

    fn device(t: &mut TableOut, pid: u32, token: &str, rec: &DeviceRecord) -> Result<()> {
        let attrs = map_json(&rec.attributes);
        t.row(&[
            V::U32(pid),
            V::Str(token),
            V::Str(&rec.platform),
            V::I64(rec.last_used),
            V::Str(&rec.status),
            V::Str(&attrs),
            V::I64(rec.created),
        ])
    }

    fn relationship(
        t: &mut TableOut,
        pid: u32,
        type_id: u32,
        object_id: &str,
        rec: &RelationshipRecord,
    ) -> Result<()> {
        let attrs = map_json(&rec.attributes);
        t.row(&[
            V::U32(pid),
            V::U32(type_id),
            V::Str(object_id),
            V::Str(&attrs),
            V::I64(rec.created),
        ])
    }

    fn object(t: &mut TableOut, type_id: u32, object_id: &str, rec: &ObjectRecord) -> Result<()> {
        let attrs = map_json(&rec.attributes);
        t.row(&[
            V::U32(type_id),
            V::Str(object_id),
            V::Str(&attrs),
            V::I64(rec.created),
            V::I64(rec.updated),
        ])
    }
}

fn decode_device_key(key: &[u8]) -> Result<(u32, String)> {
    let (pid, r) = KeyReader::new(Family::Devices, key).u32()?;
    Ok((pid, r.tail_str()?))
}

/// The run's open files, one per table.
struct Outs {
    outs: Vec<Option<TableOut>>,
    done: Vec<Option<ParquetFile>>,
    /// Set once the run's manifest is written: until then, dropping the run removes the
    /// files it published, so a failed run leaves nothing a glob would pick up.
    keep: bool,
}

impl Drop for Outs {
    fn drop(&mut self) {
        if !self.keep {
            for file in self.done.iter().flatten() {
                let _ = std::fs::remove_file(&file.path);
            }
        }
    }
}

impl Outs {
    /// Finishes the files of `tables` now: a table's last row group is held in memory
    /// until its file ends.
    fn close(&mut self, tables: &[&Table]) -> Result<()> {
        for table in tables {
            let i = TABLES.iter().position(|t| t.name == table.name);
            let out = i.and_then(|i| self.outs.get_mut(i)).and_then(Option::take);
            if let (Some(i), Some(out)) = (i, out) {
                let file = out.finish()?;
                if let Some(slot) = self.done.get_mut(i) {
                    *slot = Some(file);
                }
            }
        }
        Ok(())
    }

    /// Finishes every file still open; every table's file, in [`TABLES`] order.
    fn finish(&mut self) -> Result<Vec<ParquetFile>> {
        let all: Vec<&Table> = TABLES.iter().collect();
        self.close(&all)?;
        Ok(self.done.iter().flatten().cloned().collect())
    }

    fn get(&mut self, table: &Table) -> Result<&mut TableOut> {
        TABLES
            .iter()
            .position(|t| t.name == table.name)
            .and_then(|i| self.outs.get_mut(i))
            .and_then(Option::as_mut)
            .ok_or_else(|| pq(format!("table {} is not open", table.name)))
    }
    /// Two tables at once (the second usually a child of the first).
    fn pair(&mut self, a: &Table, b: &Table) -> Result<(&mut TableOut, &mut TableOut)> {
        let ia = TABLES.iter().position(|t| t.name == a.name);
        let ib = TABLES.iter().position(|t| t.name == b.name);
        let (Some(ia), Some(ib)) = (ia, ib) else {
            return Err(pq("unknown table"));
        };
        let (mut x, mut y) = (None, None);
        for (i, o) in self.outs.iter_mut().enumerate() {
            if i == ia {
                x = o.as_mut();
            } else if i == ib {
                y = o.as_mut();
            }
        }
        match (x, y) {
            (Some(x), Some(y)) => Ok((x, y)),
            _ => Err(pq("table is not open")),
        }
    }
}

/// The keys an incremental run rewrites, per table: each is written as it is now, or,
/// gone, as a `_deleted` row holding only the key.
#[derive(Debug, Default)]
struct Touched {
    people: BTreeSet<u32>,
    attributes: BTreeSet<(u32, String)>,
    topic_preferences: BTreeSet<(u32, u32)>,
    /// seq → every (person, time) the entry was seen at.
    activities: BTreeMap<u64, BTreeSet<(u32, i64)>>,
    deliveries: BTreeSet<String>,
    metrics: BTreeSet<(String, String)>,
    devices: BTreeSet<(u32, String)>,
    relationships: BTreeSet<(u32, u32, String)>,
    objects: BTreeSet<(u32, String)>,
    object_types: BTreeSet<u32>,
    segment_memberships: BTreeSet<(u32, u32)>,
    segments: BTreeSet<u32>,
    topics: BTreeSet<u32>,
    suppressions: BTreeSet<(IdentKind, String)>,
}

impl Touched {
    /// Every topic named in the old or new value of `pid`'s top-level attribute `name`,
    /// when it is `cio_subscription_preferences` (whose `topics.topic_<n>` booleans are
    /// the explicit preferences).
    fn topic_change(&mut self, pid: u32, name: &str, values: &[Option<&Value>]) {
        if name != "cio_subscription_preferences" {
            return;
        }
        let topics = values
            .iter()
            .flatten()
            .filter_map(|v| v.as_map())
            .filter_map(|m| m.get("topics"))
            .filter_map(Value::as_map);
        for m in topics {
            for n in m.keys().filter_map(|k| topic_number(k)) {
                self.topic_preferences.insert((pid, n));
            }
        }
    }
}

/// Changes read from the feed at a time.
const CHANGES_PER_PAGE: usize = 4096;

impl Touched {
    /// Records the keys `kind` touches.
    fn add(&mut self, store: &Store, kind: &ChangeKind) -> Result<()> {
        match kind {
            ChangeKind::PersonCreated { person, .. }
            | ChangeKind::PersonUpdated { person, .. }
            | ChangeKind::PersonDeleted { person, .. } => {
                self.people.insert(person.0);
            }
            ChangeKind::PersonMerged { primary, secondary } => {
                self.people.insert(primary.0);
                self.people.insert(secondary.0);
            }
            ChangeKind::Suppressed { identifiers } | ChangeKind::Unsuppressed { identifiers } => {
                for ident in identifiers {
                    self.suppressions.insert((ident.kind, ident.value.clone()));
                    // Whoever holds the identifier now: their `suppressed` column.
                    if ident.kind != IdentKind::CioId {
                        let key = ident_key(ident.kind, &ident.value);
                        if let Some(pid) = store.get::<IdentifiersF>(&key)? {
                            self.people.insert(pid);
                        }
                    }
                }
            }
            ChangeKind::AttributeChanged {
                person,
                name,
                old,
                new,
            } => {
                self.attributes.insert((person.0, name.clone()));
                if name == "unsubscribed" {
                    self.people.insert(person.0);
                }
                self.topic_change(person.0, name, &[old.as_ref(), new.as_ref()]);
            }
            ChangeKind::ActivityAdded {
                person, activity, ..
            } => {
                self.activities
                    .entry(activity.cursor.seq)
                    .or_default()
                    .insert((person.0, activity.cursor.timestamp));
            }
            ChangeKind::ActivityRemoved {
                person,
                seq,
                timestamp,
            } => {
                self.activities
                    .entry(*seq)
                    .or_default()
                    .insert((person.0, *timestamp));
            }
            ChangeKind::DeliveryCreated { delivery, .. } => {
                self.deliveries.insert(delivery.id.clone());
                for metric in delivery.metrics.keys() {
                    self.metrics.insert((delivery.id.clone(), metric.clone()));
                }
            }
            ChangeKind::DeliveryMetric {
                delivery_id,
                metric,
                ..
            } => {
                // The delivery's status is its latest metric.
                self.deliveries.insert(delivery_id.clone());
                self.metrics.insert((delivery_id.clone(), metric.clone()));
            }
            ChangeKind::DeliveryRemoved {
                delivery_id,
                metrics,
                ..
            } => {
                self.deliveries.insert(delivery_id.clone());
                for metric in metrics {
                    self.metrics.insert((delivery_id.clone(), metric.clone()));
                }
            }
            ChangeKind::DeviceChanged { person, device } => {
                self.devices.insert((person.0, device.token.clone()));
            }
            ChangeKind::DeviceRemoved { person, token } => {
                self.devices.insert((person.0, token.clone()));
            }
            ChangeKind::RelationshipChanged { person, object, .. }
            | ChangeKind::RelationshipRemoved { person, object } => {
                self.relationships
                    .insert((person.0, object.type_id, object.object_id.clone()));
            }
            ChangeKind::ObjectChanged { object } => {
                self.objects
                    .insert((object.object.type_id, object.object.object_id.clone()));
            }
            ChangeKind::ObjectRemoved { object } => {
                self.objects
                    .insert((object.type_id, object.object_id.clone()));
            }
            ChangeKind::SegmentEntered { segment, person }
            | ChangeKind::SegmentExited { segment, person } => {
                self.segment_memberships.insert((*segment, person.0));
            }
            ChangeKind::SegmentDefined { segment, .. } | ChangeKind::SegmentRemoved { segment } => {
                self.segments.insert(*segment);
            }
            ChangeKind::TopicDefined { topic, .. } => {
                self.topics.insert(*topic);
            }
            ChangeKind::ObjectTypeDefined { type_id, .. } => {
                self.object_types.insert(*type_id);
            }
        }
        Ok(())
    }

    /// Every key touched by the changes after `since` up to the end of the feed.
    fn since(db: &ProfileDb, since: Cursor) -> Result<Touched> {
        let mut touched = Touched::default();
        let mut at = since;
        loop {
            let page = db.changes(at, CHANGES_PER_PAGE)?;
            for change in &page.changes {
                touched.add(&db.inner.store, &change.kind)?;
            }
            at = page.next;
            if !page.more {
                return Ok(touched);
            }
        }
    }

    fn len(&self) -> usize {
        self.people.len()
            + self.attributes.len()
            + self.topic_preferences.len()
            + self.activities.len()
            + self.deliveries.len()
            + self.metrics.len()
            + self.devices.len()
            + self.relationships.len()
            + self.objects.len()
            + self.object_types.len()
            + self.segment_memberships.len()
            + self.segments.len()
            + self.topics.len()
            + self.suppressions.len()
    }
}

impl Rows<'_> {
    /// Writes each touched key's row as it is now, or a `_deleted` row of its key.
    fn write_touched(
        &self,
        outs: &mut Outs,
        touched: &Touched,
        catalog: &crate::segments::Catalog,
        suppression_rows: &[(IdentKind, String, i64)],
    ) -> Result<()> {
        let store = self.store;
        let t = outs.get(&PEOPLE)?;
        for pid in &touched.people {
            match store.get::<PeopleF>(&pid_key(*pid))? {
                Some(rec) => self.person(t, *pid, &rec)?,
                None => t.push(&[V::U32(*pid)], true)?,
            }
        }
        let attrs_of = |pid: u32| store.get::<AttributesF>(&pid_key(pid));
        let t = outs.get(&ATTRIBUTES)?;
        let mut cached: Option<(u32, Option<AttributesRecord>)> = None;
        for (pid, name) in &touched.attributes {
            if cached.as_ref().is_none_or(|(p, _)| p != pid) {
                cached = Some((*pid, attrs_of(*pid)?));
            }
            let rec = cached.as_ref().and_then(|(_, r)| r.as_ref());
            match rec.and_then(|r| r.values.get(name).map(|v| (v, r))) {
                Some((value, rec)) => Rows::attribute(t, *pid, name, value, rec)?,
                None => t.push(&[V::U32(*pid), V::Str(name)], true)?,
            }
        }
        let t = outs.get(&TOPIC_PREFERENCES)?;
        let mut cached: Option<(u32, BTreeMap<u32, bool>)> = None;
        for (pid, topic) in &touched.topic_preferences {
            if cached.as_ref().is_none_or(|(p, _)| p != pid) {
                let prefs = attrs_of(*pid)?
                    .map(|r| topic_prefs(&r.values))
                    .unwrap_or_default();
                cached = Some((*pid, prefs));
            }
            match cached.as_ref().and_then(|(_, m)| m.get(topic)) {
                Some(yes) => t.row(&[V::U32(*pid), V::U32(*topic), V::Bool(*yes)])?,
                None => t.push(&[V::U32(*pid), V::U32(*topic)], true)?,
            }
        }
        let t = outs.get(&ACTIVITIES)?;
        'seq: for (seq, places) in &touched.activities {
            for (pid, ts) in places {
                if let Some(rec) = store.get::<ActivityF>(&ActivityF::key(*pid, *ts, *seq))? {
                    Rows::activity(t, *seq, *pid, *ts, &rec)?;
                    continue 'seq;
                }
            }
            t.push(&[V::U64(*seq)], true)?;
        }
        let (d, m) = outs.pair(&DELIVERIES, &METRICS)?;
        let delivery = |id: &str| -> Result<Option<(u32, i64, DeliveryRecord)>> {
            let Some((pid, created)) = store.get::<DeliveryIdsF>(id.as_bytes())? else {
                return Ok(None);
            };
            Ok(store
                .get::<DeliveriesF>(&DeliveriesF::key(pid, created, id))?
                .map(|rec| (pid, created, rec)))
        };
        for id in &touched.deliveries {
            match delivery(id)? {
                Some((pid, created, rec)) => Rows::delivery_row(d, pid, created, id, &rec)?,
                None => d.push(&[V::Str(id)], true)?,
            }
        }
        for (id, metric) in &touched.metrics {
            match delivery(id)?
                .and_then(|(pid, _, rec)| rec.metrics.get(metric).map(|at| (pid, *at)))
            {
                Some((pid, at)) => m.row(&[V::Str(id), V::Str(metric), V::U32(pid), V::I64(at)])?,
                None => m.push(&[V::Str(id), V::Str(metric)], true)?,
            }
        }
        let t = outs.get(&DEVICES)?;
        for (pid, token) in &touched.devices {
            match store.get::<DevicesF>(&DevicesF::key(*pid, token))? {
                Some(rec) => Rows::device(t, *pid, token, &rec)?,
                None => t.push(&[V::U32(*pid), V::Str(token)], true)?,
            }
        }
        let t = outs.get(&RELATIONSHIPS)?;
        for (pid, type_id, object_id) in &touched.relationships {
            match store.get::<RelationshipsF>(&RelationshipsF::key(*pid, *type_id, object_id))? {
                Some(rec) => Rows::relationship(t, *pid, *type_id, object_id, &rec)?,
                None => t.push(&[V::U32(*pid), V::U32(*type_id), V::Str(object_id)], true)?,
            }
        }
        let t = outs.get(&OBJECTS)?;
        for (type_id, object_id) in &touched.objects {
            match store.get::<ObjectsF>(&ObjectsF::key(*type_id, object_id))? {
                Some(rec) => Rows::object(t, *type_id, object_id, &rec)?,
                None => t.push(&[V::U32(*type_id), V::Str(object_id)], true)?,
            }
        }
        let t = outs.get(&OBJECT_TYPES)?;
        for id in &touched.object_types {
            match store.get::<ObjectTypesF>(&id.to_be_bytes())? {
                Some(rec) => object_type_row(t, *id, &rec)?,
                None => t.push(&[V::U32(*id)], true)?,
            }
        }
        let t = outs.get(&SEGMENT_MEMBERSHIPS)?;
        for (segment, pid) in &touched.segment_memberships {
            let member = catalog.segments.contains_key(segment)
                && self.bitmaps.contains(&BitmapKey::Segment(*segment), *pid);
            t.push(&[V::U32(*segment), V::U32(*pid)], !member)?;
        }
        let t = outs.get(&SEGMENTS)?;
        for id in &touched.segments {
            match catalog.segments.get(id) {
                Some(def) => segment_row(t, def)?,
                None => t.push(&[V::U32(*id)], true)?,
            }
        }
        let t = outs.get(&TOPICS)?;
        for id in &touched.topics {
            match catalog.topics.get(id) {
                Some(topic) => topic_row(t, *id, topic)?,
                None => t.push(&[V::U32(*id)], true)?,
            }
        }
        // Suppressions are written whole in every run: suppressing an identifier that is
        // suppressed already rewrites its group's records (a new `at`) and the change feed
        // reports only identifiers becoming suppressed or free. The family is small.
        let t = outs.get(&SUPPRESSIONS)?;
        let mut present = BTreeSet::new();
        for (kind, value, at) in suppression_rows {
            t.row(&[V::Str(kind.as_str()), V::Str(value), V::I64(*at)])?;
            present.insert((*kind, value.as_str()));
        }
        for (kind, value) in &touched.suppressions {
            if !present.contains(&(*kind, value.as_str())) {
                t.push(&[V::Str(kind.as_str()), V::Str(value)], true)?;
            }
        }
        Ok(())
    }
}

fn object_type_row(
    t: &mut TableOut,
    id: u32,
    rec: &crate::store::records::ObjectTypeRecord,
) -> Result<()> {
    t.row(&[V::U32(id), V::Str(&rec.name), V::I64(rec.created)])
}

fn topic_row(t: &mut TableOut, id: u32, topic: &crate::store::records::TopicRecord) -> Result<()> {
    t.row(&[
        V::U32(id),
        V::Str(&topic.name),
        V::Bool(topic.default_subscribed),
    ])
}

fn segment_row(t: &mut TableOut, def: &crate::segments::SegmentDef) -> Result<()> {
    let condition = def.expr.as_ref().map(ToString::to_string);
    let kind = if def.data_driven() {
        "data_driven"
    } else {
        "manual"
    };
    t.row(&[
        V::U32(def.id),
        V::Str(&def.name),
        V::Str(kind),
        opt(&condition),
        V::I64(def.created),
    ])
}

impl ProfileDb {
    /// Writes the whole database as Parquet, one file per table of [`TABLES`], into
    /// `dir` (created when missing), beside whatever earlier runs left there; the layout
    /// is in [the module docs](crate::export::parquet). Writers wait while it runs, so
    /// every table is one consistent snapshot, which ends at the returned
    /// [`ParquetReport::commit`].
    ///
    /// # Examples
    /// ```
    /// # fn main() -> Result<(), profiledb::Error> {
    /// use profiledb::{Ident, Identify, ProfileDb};
    /// use profiledb::export::parquet::ParquetOptions;
    /// let (a, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    /// let db = ProfileDb::open(a.path())?;
    /// db.identify(Identify::new(Ident::id("u-1")).set("plan", "pro"))?;
    /// let report = db.export_parquet(out.path(), ParquetOptions::new())?;
    /// let people = report.files.iter().find(|f| f.table == "people").unwrap();
    /// assert_eq!(people.rows, 1);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Input`] naming `dir` when it is a file, cannot be created or written, or
    /// already holds a file this run would write (nothing is ever overwritten);
    /// [`Error::Storage`] when reading the database or writing a file fails;
    /// [`Error::Corrupted`] for a damaged record. A run that fails leaves no file of its
    /// own behind (only the folders it created).
    pub fn export_parquet(&self, dir: &Path, options: ParquetOptions<'_>) -> Result<ParquetReport> {
        // The Arrow and Parquet crates are not ours: a panic inside them becomes an
        // error here (the writer lock's guard is released as it unwinds).
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.export_parquet_inner(dir, options)
        }))
        .unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown cause".to_owned());
            Err(pq(format!("the Parquet writer panicked ({what})")))
        })
    }

    fn export_parquet_inner(
        &self,
        dir: &Path,
        options: ParquetOptions<'_>,
    ) -> Result<ParquetReport> {
        let writer = self.writer()?;
        // The cursor the run hands out must never be taken back by a crash: make every
        // commit durable first (no commit lands while the writer lock is held).
        self.make_durable()?;
        let commit = writer.commit_seq;
        let bitmaps = self.read_gate();
        let catalog = self.catalog();
        // An incremental run reads the feed first: a cursor it cannot serve fails the run
        // before anything is written.
        let touched = match options.since {
            Some(since) => Some(Touched::since(self, since)?),
            None => None,
        };
        let from = options
            .since
            .map_or_else(|| "full".to_owned(), |c| c.to_string());
        let plan = plan(dir, &from, commit)?;
        let store = &self.inner.store;

        let mut suppressed = HashSet::new();
        let mut suppression_rows = Vec::new();
        for item in store.scan::<SuppressedF>(&[], false, None) {
            let (key, rec) = item?;
            let (kind, value) = ident_from_key(Family::Suppressed, &key)?;
            suppression_rows.push((kind, value, rec.at));
            suppressed.insert(key);
        }
        let rows = Rows {
            store,
            bitmaps: &bitmaps,
            suppressed,
        };

        let mut outs = Outs {
            outs: Vec::new(),
            done: vec![None; TABLES.len()],
            keep: false,
        };
        for t in TABLES {
            outs.outs.push(Some(TableOut::create(
                t,
                plan.tmp(t.name),
                plan.dest(t.name),
                commit,
                options.row_group_rows,
            )?));
        }
        if let Some(touched) = &touched {
            let total = touched.len() as u64;
            let report = |done| {
                if let Some(f) = options.progress {
                    f(ParquetProgress { done, total });
                }
            };
            report(0);
            rows.write_touched(&mut outs, touched, &catalog, &suppression_rows)?;
            report(total);
        } else {
            rows.write_full(&mut outs, &catalog, &suppression_rows, options.progress)?;
        }
        let files = outs.finish()?;
        let cursor = Cursor::after_commit(commit);
        let since = options.since.map(|c| c.to_string());
        let kind = if since.is_some() {
            "incremental"
        } else {
            "full"
        };
        let manifest = write_manifest(&plan, kind, since.as_deref(), cursor, &files)?;
        outs.keep = true;
        drop(catalog);
        drop(bitmaps);
        drop(writer);
        Ok(ParquetReport {
            run: plan.run,
            since: options.since,
            commit,
            cursor,
            files,
            manifest,
        })
    }
}

impl Rows<'_> {
    /// Writes every table whole.
    fn write_full(
        &self,
        outs: &mut Outs,
        catalog: &crate::segments::Catalog,
        suppression_rows: &[(IdentKind, String, i64)],
        progress: Option<&(dyn Fn(ParquetProgress) + Sync)>,
    ) -> Result<()> {
        let (rows, store, bitmaps) = (self, self.store, self.bitmaps);
        let next_pid = bitmaps
            .get(&BitmapKey::All)
            .and_then(roaring::RoaringBitmap::max)
            .map_or(0, |m| u64::from(m) + 1);
        let mut meter = Meter {
            f: progress,
            per_scan: next_pid,
            total: next_pid * PERSON_SCANS,
            base: 0,
            last: 0,
        };

        // people
        {
            let t = outs.get(&PEOPLE)?;
            for item in store.scan::<PeopleF>(&[], false, None) {
                let (key, rec) = item?;
                let pid = pid_from_key(Family::People, &key)?;
                rows.person(t, pid, &rec)?;
                meter.at(pid);
            }
            meter.scan_done();
        }
        outs.close(&[&PEOPLE])?;
        // attributes and topic preferences
        {
            let (a, tp) = outs.pair(&ATTRIBUTES, &TOPIC_PREFERENCES)?;
            for item in store.scan::<AttributesF>(&[], false, None) {
                let (key, rec) = item?;
                let pid = pid_from_key(Family::Attributes, &key)?;
                for (name, value) in &rec.values {
                    Rows::attribute(a, pid, name, value, &rec)?;
                }
                for (topic, yes) in topic_prefs(&rec.values) {
                    tp.row(&[V::U32(pid), V::U32(topic), V::Bool(yes)])?;
                }
                meter.at(pid);
            }
            meter.scan_done();
        }
        outs.close(&[&ATTRIBUTES, &TOPIC_PREFERENCES])?;
        // activities
        {
            let t = outs.get(&ACTIVITIES)?;
            for item in store.scan::<ActivityF>(&[], false, None) {
                let (key, rec) = item?;
                let (pid, ts, seq) = ActivityF::decode_key(&key)?;
                Rows::activity(t, seq, pid, ts, &rec)?;
                meter.at(pid);
            }
            meter.scan_done();
        }
        outs.close(&[&ACTIVITIES])?;
        // deliveries and their metrics
        {
            let (d, m) = outs.pair(&DELIVERIES, &METRICS)?;
            for item in store.scan::<DeliveriesF>(&[], false, None) {
                let (key, rec) = item?;
                let (pid, created, id) = DeliveriesF::decode_key(&key)?;
                Rows::delivery(d, m, pid, created, &id, &rec)?;
                meter.at(pid);
            }
            meter.scan_done();
        }
        outs.close(&[&DELIVERIES, &METRICS])?;
        // devices
        {
            let t = outs.get(&DEVICES)?;
            for item in store.scan::<DevicesF>(&[], false, None) {
                let (key, rec) = item?;
                let (pid, token) = decode_device_key(&key)?;
                Rows::device(t, pid, &token, &rec)?;
                meter.at(pid);
            }
            meter.scan_done();
        }
        outs.close(&[&DEVICES])?;
        // relationships
        {
            let t = outs.get(&RELATIONSHIPS)?;
            for item in store.scan::<RelationshipsF>(&[], false, None) {
                let (key, rec) = item?;
                let (pid, type_id, object_id) = RelationshipsF::decode_key(&key)?;
                Rows::relationship(t, pid, type_id, &object_id, &rec)?;
                meter.at(pid);
            }
            meter.scan_done();
        }
        outs.close(&[&RELATIONSHIPS])?;
        // objects and their types
        {
            let t = outs.get(&OBJECTS)?;
            for item in store.scan::<ObjectsF>(&[], false, None) {
                let (key, rec) = item?;
                let (type_id, object_id) = ObjectsF::decode_key(&key)?;
                Rows::object(t, type_id, &object_id, &rec)?;
            }
            let t = outs.get(&OBJECT_TYPES)?;
            for item in store.scan::<ObjectTypesF>(&[], false, None) {
                let (key, rec) = item?;
                let (id, r) = KeyReader::new(Family::ObjectTypes, &key).u32()?;
                r.end()?;
                object_type_row(t, id, &rec)?;
            }
        }
        // segments and their members
        {
            let (s, sm) = outs.pair(&SEGMENTS, &SEGMENT_MEMBERSHIPS)?;
            for def in catalog.segments.values() {
                segment_row(s, def)?;
                if let Some(members) = bitmaps.get(&BitmapKey::Segment(def.id)) {
                    for pid in members {
                        sm.row(&[V::U32(def.id), V::U32(pid)])?;
                    }
                }
            }
        }
        // topics and suppressions
        {
            let t = outs.get(&TOPICS)?;
            for (id, topic) in &catalog.topics {
                topic_row(t, *id, topic)?;
            }
            let t = outs.get(&SUPPRESSIONS)?;
            for (kind, value, at) in suppression_rows {
                t.row(&[V::Str(kind.as_str()), V::Str(value), V::I64(*at)])?;
            }
        }

        Ok(())
    }
}

/// Writes the run's manifest (last: a run without one did not finish).
fn write_manifest(
    plan: &Plan,
    kind: &str,
    since: Option<&str>,
    cursor: Cursor,
    files: &[ParquetFile],
) -> Result<PathBuf> {
    let list: Vec<serde_json::Value> = files
        .iter()
        .map(|f| {
            let rel = f.path.strip_prefix(&plan.dir).unwrap_or(&f.path);
            serde_json::json!({
                "table": f.table,
                "path": rel.to_string_lossy(),
                "rows": f.rows,
                "bytes": f.bytes,
            })
        })
        .collect();
    let doc = serde_json::json!({
        "format": "profiledb-parquet",
        "version": 1,
        "run": plan.run,
        "kind": kind,
        "since": since,
        "commit": cursor.commit(),
        "cursor": cursor.to_string(),
        "files": list,
    });
    let text = serde_json::to_vec_pretty(&doc).map_err(|e| pq(e.to_string()))?;
    let dest = plan.manifest();
    let tmp = plan.tmp("manifests");
    let mut file = File::options()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| io_at(&tmp, e))?;
    let written = std::io::Write::write_all(&mut file, &text).and_then(|()| file.sync_all());
    drop(file);
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_at(&tmp, e));
    }
    publish(&tmp, &dest)?;
    Ok(dest)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn json_text_is_what_display_writes() {
        let mut m = crate::model::Map::new();
        m.insert("zeta \"q\"\n".into(), Value::Float(0.1 + 0.2));
        m.insert(
            "a".into(),
            Value::Array(vec![Value::Null, Value::Bool(true), Value::Int(-7)]),
        );
        m.insert("big".into(), Value::Float(1e300));
        m.insert("whole".into(), Value::Float(3.0));
        m.insert("nan".into(), Value::Float(f64::NAN));
        m.insert("ünï\u{1}".into(), Value::String("tab\t \u{7f} é 🎉".into()));
        m.insert("nested".into(), Value::Map(m.clone()));
        for v in [
            Value::Map(m.clone()),
            Value::Int(i64::MIN),
            Value::Float(-0.0),
            Value::String(String::new()),
            Value::Array(Vec::new()),
            Value::Map(crate::model::Map::new()),
        ] {
            assert_eq!(json(&v), v.to_string());
        }
        assert_eq!(map_json(&m), Value::Map(m.clone()).to_string());
    }

    #[test]
    fn publishing_onto_a_taken_name_is_refused_and_leaves_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let (tmp, dest) = (
            dir.path().join(".new.tmp"),
            dir.path().join("000001-full-1.parquet"),
        );
        std::fs::write(&tmp, b"new").unwrap();
        std::fs::write(&dest, b"old").unwrap();
        let e = publish(&tmp, &dest).unwrap_err();
        assert_eq!(e.input().map(|i| i.field.as_str()), Some("dir"), "{e}");
        assert_eq!(std::fs::read(&dest).unwrap(), b"old");
        assert!(!tmp.exists(), "the temporary file is removed");
        std::fs::write(&tmp, b"new").unwrap();
        let fresh = dir.path().join("000002-full-1.parquet");
        publish(&tmp, &fresh).unwrap();
        assert_eq!(std::fs::read(&fresh).unwrap(), b"new");
    }
}
