//! Errors: one enum per concern and the umbrella [`Error`].
//!
//! Every error says what went wrong in a sentence. Bad input names the field and the
//! reason ([`InputError`]); damage on disk names the family and key
//! ([`Error::Corrupted`]); failures of the storage below us are [`StorageError`], after
//! which the handle refuses further writes ([`Error::Poisoned`]) until it is reopened.

use std::fmt;
use std::path::PathBuf;

use crate::model::IdentKind;

/// The result type of every fallible call in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in profiledb.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The database could not be opened; nothing was modified.
    Open(OpenError),
    /// The storage below profiledb failed (I/O error, sled error, injected fault).
    Storage(StorageError),
    /// A stored record failed its checksum or could not be decoded.
    Corrupted {
        /// The column family holding the record.
        family: &'static str,
        /// The record's key, in hex.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Sled recovered the database to an earlier point than the last durable commit:
    /// acknowledged writes are missing. Open with
    /// [`Builder::salvage`](crate::Builder::salvage) to read what is left.
    DataLoss {
        /// The sequence number of the last commit known to be durable.
        durable_seq: u64,
        /// The sequence number sled recovered.
        recovered_seq: u64,
    },
    /// The input was refused; nothing was written.
    Input(InputError),
    /// An identifier is suppressed and cannot be used until it is unsuppressed.
    Suppressed {
        /// Which identifier.
        kind: IdentKind,
        /// Its value as given.
        value: String,
    },
    /// An earlier I/O failure left this handle unable to write; reopen the database.
    Poisoned,
    /// The change feed no longer holds the changes right after this cursor (they were
    /// dropped as older than the feed keeps, or the feed was turned on, or the database
    /// restored, after it): take a full export and resume from its cursor.
    CursorExpired {
        /// The cursor asked for.
        cursor: String,
        /// The oldest cursor the feed still accepts.
        oldest: String,
    },
    /// Operation `index` of a batch failed; nothing of the batch was written.
    InBatch {
        /// Zero-based position of the failing operation in the batch.
        index: usize,
        /// Why it failed.
        source: Box<Error>,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Open(e) => write!(f, "cannot open the database: {e}"),
            Error::Storage(e) => write!(f, "storage failure: {e}"),
            Error::Corrupted {
                family,
                key,
                reason,
            } => write!(
                f,
                "corrupted record in family `{family}` at key {key}: {reason}"
            ),
            Error::DataLoss {
                durable_seq,
                recovered_seq,
            } => write!(
                f,
                "data loss: the last durable commit is #{durable_seq} but the storage recovered \
                 only up to #{recovered_seq} ({} acknowledged commits are missing); open with \
                 salvage to read what is left",
                durable_seq.saturating_sub(*recovered_seq)
            ),
            Error::Input(e) => write!(f, "{e}"),
            Error::Suppressed { kind, value } => write!(
                f,
                "the {kind} `{value}` is suppressed; unsuppress it before using it again"
            ),
            Error::Poisoned => write!(
                f,
                "an earlier storage failure left this handle unable to write; reopen the database"
            ),
            Error::CursorExpired { cursor, oldest } => write!(
                f,
                "the change feed no longer holds what follows cursor {cursor} (the oldest \
                 cursor it accepts is {oldest}): take a full export and resume from the \
                 cursor it gives"
            ),
            Error::InBatch { index, source } => {
                write!(f, "operation {index} of the batch: {source}")
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Open(e) => Some(e),
            Error::Storage(e) => Some(e),
            Error::Input(e) => Some(e),
            Error::InBatch { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}

impl From<OpenError> for Error {
    fn from(e: OpenError) -> Self {
        Error::Open(e)
    }
}

impl From<StorageError> for Error {
    fn from(e: StorageError) -> Self {
        Error::Storage(e)
    }
}

impl From<InputError> for Error {
    fn from(e: InputError) -> Self {
        Error::Input(e)
    }
}

impl Error {
    /// The input error behind this error, looking through [`Error::InBatch`].
    pub fn input(&self) -> Option<&InputError> {
        match self {
            Error::Input(e) => Some(e),
            Error::InBatch { source, .. } => source.input(),
            _ => None,
        }
    }

    /// True when the error means stored data is damaged or missing.
    pub fn is_corruption(&self) -> bool {
        match self {
            Error::Corrupted { .. } | Error::DataLoss { .. } => true,
            Error::InBatch { source, .. } => source.is_corruption(),
            _ => false,
        }
    }
}

/// Why a database could not be opened. Opening never modifies a directory it refuses.
#[derive(Debug)]
#[non_exhaustive]
pub enum OpenError {
    /// The directory exists, is not empty, and is not a profiledb database.
    NotADatabase {
        /// The directory.
        path: PathBuf,
        /// What was found instead.
        reason: String,
    },
    /// The database was written in a format this version does not read.
    UnsupportedFormat {
        /// The format version found on disk.
        found: u32,
        /// The format version this build reads and writes.
        supported: u32,
    },
    /// Another process (or handle) has the database open.
    Locked {
        /// The directory.
        path: PathBuf,
    },
    /// The files are damaged below the record level (sled refused them or failed on them).
    Damaged {
        /// What sled reported.
        reason: String,
    },
    /// An I/O error while opening.
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::NotADatabase { path, reason } => write!(
                f,
                "{} is not a profiledb database ({reason}); nothing was changed",
                path.display()
            ),
            OpenError::UnsupportedFormat { found, supported } if found < supported => write!(
                f,
                "the database has format version {found}, but this build reads only version \
                 {supported}; nothing was changed. To move it, export it with the profiledb \
                 version that wrote it (`profiledb --db OLD export dump.jsonl`), then ingest \
                 the dump into a new database with this one (`profiledb --db NEW ingest \
                 dump.jsonl`)"
            ),
            OpenError::UnsupportedFormat { found, supported } => write!(
                f,
                "the database has format version {found}, but this build reads only version \
                 {supported}; nothing was changed (a newer profiledb wrote it)"
            ),
            OpenError::Locked { path } => write!(
                f,
                "{} is already open in another process or handle",
                path.display()
            ),
            OpenError::Damaged { reason } => {
                write!(f, "the database files are damaged: {reason}")
            }
            OpenError::Io { path, source } => write!(f, "{}: {source}", path.display()),
        }
    }
}

impl std::error::Error for OpenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OpenError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A failure of the storage below profiledb.
#[derive(Debug)]
#[non_exhaustive]
pub enum StorageError {
    /// An operating-system I/O error.
    Io(std::io::Error),
    /// sled reported an error (other than I/O); the error is the [`source`](std::error::Error::source).
    Sled(sled::Error),
    /// The store was closed because reopening it at a checkpoint failed; every call
    /// fails until the database is opened again. The call that met the failure got
    /// the reopen's own error; this carries its text.
    Closed(String),
    /// sled panicked; the panic was contained.
    Panicked(String),
    /// A fault injected by the test-only fault injection.
    Injected(String),
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::Io(e) => write!(f, "I/O error: {e}"),
            StorageError::Sled(e) => write!(f, "sled error: {e}"),
            StorageError::Closed(e) => write!(
                f,
                "the store is closed: reopening it at a checkpoint failed ({e})"
            ),
            StorageError::Panicked(e) => write!(f, "sled panicked: {e}"),
            StorageError::Injected(e) => write!(f, "injected fault: {e}"),
        }
    }
}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StorageError::Io(e) => Some(e),
            StorageError::Sled(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for StorageError {
    fn from(e: std::io::Error) -> Self {
        StorageError::Io(e)
    }
}

impl From<sled::Error> for StorageError {
    fn from(e: sled::Error) -> Self {
        match e {
            sled::Error::Io(io) => StorageError::Io(io),
            other => StorageError::Sled(other),
        }
    }
}

/// Refused input: which field, and why. Nothing was written.
#[derive(Debug, Clone, PartialEq)]
pub struct InputError {
    /// The field, as the caller named it (`email`, `attributes.plan`, `name`...).
    pub field: String,
    /// Why it was refused.
    pub reason: InputReason,
}

impl InputError {
    /// An error for `field` with `reason`.
    pub fn new(field: impl Into<String>, reason: InputReason) -> Self {
        InputError {
            field: field.into(),
            reason,
        }
    }

    /// An error for `field` whose value is invalid for the stated reason.
    pub fn invalid(field: impl Into<String>, why: impl Into<String>) -> Self {
        Self::new(field, InputReason::Invalid(why.into()))
    }
}

/// Why an input field was refused.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum InputReason {
    /// Empty where a value is required.
    Empty,
    /// Longer than the limit.
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// More entries than the limit.
    TooMany {
        /// How many there would be.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// Nested deeper than the limit.
    TooDeep {
        /// The limit.
        max: usize,
    },
    /// A name the database reserves for itself.
    Reserved,
    /// Malformed or out of range, with the reason.
    Invalid(String),
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let field = &self.field;
        match &self.reason {
            InputReason::Empty => write!(f, "invalid input: `{field}` must not be empty"),
            InputReason::TooLong { len, max } => write!(
                f,
                "invalid input: `{field}` is {len} bytes, over the limit of {max} bytes"
            ),
            InputReason::TooMany { count, max } => write!(
                f,
                "invalid input: `{field}` would have {count} entries, over the limit of {max}"
            ),
            InputReason::TooDeep { max } => write!(
                f,
                "invalid input: `{field}` is nested more than {max} levels deep"
            ),
            InputReason::Reserved => write!(
                f,
                "invalid input: `{field}` is reserved by the database and cannot be set"
            ),
            InputReason::Invalid(why) => write!(f, "invalid input: `{field}` {why}"),
        }
    }
}

impl std::error::Error for InputError {}
