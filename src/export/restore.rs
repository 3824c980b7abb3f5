//! Feeding an input of JSON lines to a database with the rule that makes a restore safe:
//! a restore dump arrives whole and alone ([the module docs](crate::export)).

use std::fmt;
use std::io::BufRead;

use serde_json::Value as Json;

use crate::error::{Error, InputError};
use crate::ingest::{Rejection, Report};
use crate::ProfileDb;

/// Feeds JSON lines (an export, possibly among other messages) to a database one at a
/// time, holding them to the rule that a restore dump arrives whole and alone.
///
/// [`ProfileDb::restore`] runs one over a reader; use a `Restore` directly to show
/// progress or each refusal as it happens (the `profiledb ingest` command does).
///
/// # Examples
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use profiledb::{Ident, Identify, LineOutcome, ProfileDb, Restore};
/// let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
/// let db = ProfileDb::open(a.path())?;
/// db.identify(Identify::new(Ident::id("u-1")))?;
/// let mut export = Vec::new();
/// db.export(&mut export)?;
///
/// let copy = ProfileDb::open(b.path())?;
/// let mut restore = Restore::new(&copy);
/// for line in export.split(|b| *b == b'\n') {
///     match restore.feed(line)? {
///         LineOutcome::Ingested(report) => assert!(report.rejected.is_empty()),
///         LineOutcome::Blank => {}
///         other => panic!("line {} refused: {other:?}", restore.line()),
///     }
/// }
/// restore.finish()?; // an input that ends inside a dump is an error
/// assert!(copy.person(&Ident::id("u-1"))?.is_some());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Restore<'a> {
    db: &'a ProfileDb,
    /// Lines fed so far.
    line: u64,
    /// The line of the `restore_begin` of the dump being restored.
    dump: Option<u64>,
    applied: u64,
    rejected: u64,
    /// An earlier line stopped the input: nothing more is read.
    stopped: bool,
}

/// What [`Restore::feed`] did with one line.
#[derive(Debug)]
#[non_exhaustive]
pub enum LineOutcome {
    /// Empty or only whitespace: skipped, nothing written.
    Blank,
    /// Handed to [`ProfileDb::ingest`]: what it applied and refused (text that is not
    /// JSON is refused there, naming `message`).
    Ingested(Report),
    /// Refused whole before anything read it; nothing written.
    Refused(Refusal),
}

/// Why [`Restore::feed`] refused a whole line. `Display` words it to follow `line N: `.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The line's bytes are not UTF-8.
    NotUtf8,
    /// A `restore` or `restore_end` line with no `restore_begin` before it in this
    /// input: a dump is restored whole, from its first line.
    OutsideDump,
    /// Another message inside the dump that began at line `begin`, before its
    /// `restore_end`: nothing else may be written during a restore.
    InsideDump {
        /// The line of the dump's `restore_begin`.
        begin: u64,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NotUtf8 => f.write_str("is not valid UTF-8"),
            Refusal::OutsideDump => f.write_str(
                "is a line of a restore dump, but no restore_begin line came before it in \
                 this input (a dump is ingested whole, from its first line); nothing written",
            ),
            Refusal::InsideDump { begin } => write!(
                f,
                "comes inside the restore dump that began at line {begin}, before its \
                 restore_end line; nothing else may be written during a restore, so it was \
                 not (ingest it after the dump)"
            ),
        }
    }
}

/// Why a restore dump cannot be completed (see [`RestoreError::Broken`]). `Display`
/// words it to follow `the restore dump that began at line N `.
#[derive(Debug)]
#[non_exhaustive]
pub enum Broken {
    /// Line `line` of the dump was refused, or writing it failed.
    Failed {
        /// The line.
        line: u64,
        /// The refusal ([`Error::Input`]) or the failure.
        source: Error,
    },
    /// Another `restore_begin` came at line `line`, before this dump's `restore_end`.
    Nested {
        /// The line of the second `restore_begin`.
        line: u64,
    },
    /// The input ended (after line `line`) before the dump's `restore_end`: a truncated
    /// export.
    Truncated {
        /// The last line of the input.
        line: u64,
    },
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Broken::Failed { line, source } => write!(f, "failed at line {line}: {source}"),
            Broken::Nested { line } => write!(
                f,
                "has no restore_end line before line {line} begins another"
            ),
            Broken::Truncated { line } => write!(
                f,
                "has no restore_end line: the input ended at line {line} inside it (a \
                 truncated export?)"
            ),
        }
    }
}

/// Why [`Restore`] (or [`ProfileDb::restore`]) stopped reading its input. Everything
/// applied before the failing line stays applied.
#[derive(Debug)]
#[non_exhaustive]
pub enum RestoreError {
    /// Reading the input failed at line `line` (only [`ProfileDb::restore`] reads).
    Read {
        /// The line that could not be read.
        line: u64,
        /// The reader's error.
        source: std::io::Error,
    },
    /// The storage failed (or the database is damaged) while applying line `line`,
    /// outside any dump.
    Storage {
        /// The line.
        line: u64,
        /// [`Error::Storage`], [`Error::Poisoned`], [`Error::Corrupted`]...
        source: Error,
    },
    /// The `restore_begin` line at `line` was refused (the database is not empty, the
    /// format differs, the line is damaged...): nothing of the dump was written.
    Begin {
        /// The line.
        line: u64,
        /// The refusal, an [`Error::Input`] naming the field.
        source: Error,
    },
    /// The dump that began at line `begin` cannot be completed: the database now holds
    /// a partial restore. Remove it and restore the whole export into an empty
    /// database.
    Broken {
        /// The line of the dump's `restore_begin`.
        begin: u64,
        /// What went wrong.
        cause: Broken,
    },
    /// [`Restore::feed`] was called again after an error stopped the input.
    Stopped {
        /// The line that was not read.
        line: u64,
    },
}

impl RestoreError {
    /// The line the input stopped at, `None` when it ended inside a dump.
    pub fn line(&self) -> Option<u64> {
        match self {
            RestoreError::Read { line, .. }
            | RestoreError::Storage { line, .. }
            | RestoreError::Begin { line, .. }
            | RestoreError::Stopped { line }
            | RestoreError::Broken {
                cause: Broken::Failed { line, .. } | Broken::Nested { line },
                ..
            } => Some(*line),
            RestoreError::Broken {
                cause: Broken::Truncated { .. },
                ..
            } => None,
        }
    }
}

impl fmt::Display for RestoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestoreError::Read { line, source } => {
                write!(f, "cannot read the input at line {line}: {source}")
            }
            RestoreError::Storage { line, source } => write!(f, "line {line}: {source}"),
            RestoreError::Begin { line, source } => write!(
                f,
                "line {line}: cannot start the restore dump there: {source}; nothing of the \
                 dump was written"
            ),
            RestoreError::Broken { begin, cause } => write!(
                f,
                "the restore dump that began at line {begin} {cause}; the database now holds \
                 a partial restore: remove it and restore the whole export into an empty \
                 database"
            ),
            RestoreError::Stopped { line } => write!(
                f,
                "line {line}: not read, since an earlier line stopped the restore"
            ),
        }
    }
}

impl std::error::Error for RestoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RestoreError::Read { source, .. } => Some(source),
            RestoreError::Storage { source, .. } | RestoreError::Begin { source, .. } => {
                Some(source)
            }
            RestoreError::Broken {
                cause: Broken::Failed { source, .. },
                ..
            } => Some(source),
            RestoreError::Broken { .. } | RestoreError::Stopped { .. } => None,
        }
    }
}

/// The action of a profiledb extension message (`"type": "profiledb"`), if `msg` is one.
fn extension_action(msg: &Json) -> Option<&str> {
    if msg.get("type").and_then(Json::as_str) != Some("profiledb") {
        return None;
    }
    Some(msg.get("action").and_then(Json::as_str).unwrap_or(""))
}

impl<'a> Restore<'a> {
    /// A restore into `db`, before its first line.
    pub fn new(db: &'a ProfileDb) -> Self {
        Restore {
            db,
            line: 0,
            dump: None,
            applied: 0,
            rejected: 0,
            stopped: false,
        }
    }

    /// Lines fed so far (the number of the last one).
    pub fn line(&self) -> u64 {
        self.line
    }

    /// The line of the `restore_begin` of the dump being restored, `None` outside one.
    pub fn in_dump(&self) -> Option<u64> {
        self.dump
    }

    /// Messages (a batch counts each item) applied so far.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// Lines and batch items refused so far.
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// Applies the next line: its bytes as read, with or without the line break
    /// (surrounding whitespace, and a UTF-8 byte-order mark on the first line, are
    /// ignored). A refusal is in the outcome and writes nothing.
    ///
    /// # Errors
    /// A [`RestoreError`] when the input cannot go on: the storage failed, a dump
    /// could not be started ([`RestoreError::Begin`]) or completed
    /// ([`RestoreError::Broken`]). After one, every call is [`RestoreError::Stopped`].
    pub fn feed(&mut self, raw: &[u8]) -> Result<LineOutcome, RestoreError> {
        self.line += 1;
        if self.stopped {
            return Err(RestoreError::Stopped { line: self.line });
        }
        let outcome = self.apply(raw);
        match &outcome {
            Ok(LineOutcome::Ingested(report)) => {
                self.applied += report.applied;
                self.rejected += report.rejected.len() as u64;
            }
            Ok(LineOutcome::Refused(_)) => self.rejected += 1,
            Ok(LineOutcome::Blank) => {}
            Err(_) => self.stopped = true,
        }
        outcome
    }

    /// Ends the input.
    ///
    /// # Errors
    /// [`RestoreError::Broken`] with [`Broken::Truncated`] when it ends inside a dump.
    pub fn finish(self) -> Result<(), RestoreError> {
        match self.dump {
            Some(begin) if !self.stopped => Err(RestoreError::Broken {
                begin,
                cause: Broken::Truncated { line: self.line },
            }),
            _ => Ok(()),
        }
    }

    fn apply(&mut self, raw: &[u8]) -> Result<LineOutcome, RestoreError> {
        let line = self.line;
        let raw = if line == 1 {
            raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw)
        } else {
            raw
        };
        let raw = raw.trim_ascii();
        if raw.is_empty() {
            return Ok(LineOutcome::Blank);
        }
        let Ok(text) = std::str::from_utf8(raw) else {
            return Ok(LineOutcome::Refused(Refusal::NotUtf8));
        };
        let dump = self.dump;
        let storage = move |source| match dump {
            Some(begin) => RestoreError::Broken {
                begin,
                cause: Broken::Failed { line, source },
            },
            None => RestoreError::Storage { line, source },
        };
        let Ok(msg) = serde_json::from_str::<Json>(text) else {
            // The library words the refusal of text that is not JSON.
            return self
                .db
                .ingest_str(text)
                .map(LineOutcome::Ingested)
                .map_err(storage);
        };
        let action = extension_action(&msg);
        // A refused dump line stops the input: its refusal is the error.
        let refusal = |mut report: Report| {
            if report.rejected.is_empty() {
                Ok(report)
            } else {
                Err(report.rejected.swap_remove(0).error)
            }
        };
        match (self.dump, action) {
            (None, Some("restore_begin")) => {
                let report = self.db.ingest(&msg).map_err(storage)?;
                let report =
                    refusal(report).map_err(|source| RestoreError::Begin { line, source })?;
                self.dump = Some(line);
                Ok(LineOutcome::Ingested(report))
            }
            (None, Some("restore" | "restore_end")) => {
                Ok(LineOutcome::Refused(Refusal::OutsideDump))
            }
            // Any other message, or an unknown action (the library names it).
            (None, _) => self
                .db
                .ingest(&msg)
                .map(LineOutcome::Ingested)
                .map_err(storage),
            (Some(_), Some(action @ ("restore" | "restore_end"))) => {
                let report = self.db.ingest(&msg).map_err(storage)?;
                let report = refusal(report).map_err(storage)?;
                if action == "restore_end" {
                    self.dump = None;
                }
                Ok(LineOutcome::Ingested(report))
            }
            (Some(begin), Some("restore_begin")) => Err(RestoreError::Broken {
                begin,
                cause: Broken::Nested { line },
            }),
            (Some(begin), _) => Ok(LineOutcome::Refused(Refusal::InsideDump { begin })),
        }
    }
}

/// What [`ProfileDb::restore`] did with its input.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct RestoreReport {
    /// Lines read (blank ones included).
    pub lines: u64,
    /// Messages (a batch counts each item) applied.
    pub applied: u64,
    /// Lines and batch items refused, in input order; each wrote nothing.
    pub rejected: Vec<LineRejection>,
}

/// One line (or batch item) [`ProfileDb::restore`] refused.
#[derive(Debug)]
#[non_exhaustive]
pub struct LineRejection {
    /// The line, from 1.
    pub line: u64,
    /// Why, with the batch item when the line was a batch; a whole-line [`Refusal`] is
    /// an [`Error::Input`] naming `message`.
    pub rejection: Rejection,
}

impl ProfileDb {
    /// Restores an export ([`export`](ProfileDb::export)) read from `input` into this
    /// database, which must be empty: reads JSON lines until the input ends, a restore
    /// dump whole and alone ([`Restore`] holds the rules; the format is in
    /// [`crate::export`]). Lines outside the dump are ingested as
    /// [`ingest`](ProfileDb::ingest) would. Writes are as durable as the handle's
    /// [`Durability`](crate::Durability) makes them: with `Buffered`, call
    /// [`flush`](ProfileDb::flush) afterwards.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use profiledb::{Ident, Identify, ProfileDb, RestoreError};
    /// let (a, b, c) = (tempfile::tempdir()?, tempfile::tempdir()?, tempfile::tempdir()?);
    /// let db = ProfileDb::open(a.path())?;
    /// db.identify(Identify::new(Ident::id("u-1")).set("plan", "pro"))?;
    /// let mut export = Vec::new();
    /// db.export(&mut export)?;
    ///
    /// let copy = ProfileDb::open(b.path())?;
    /// let report = copy.restore(export.as_slice())?;
    /// assert!(report.rejected.is_empty());
    /// assert_eq!(copy.person(&Ident::id("u-1"))?, db.person(&Ident::id("u-1"))?);
    ///
    /// // An export cut short is an error that says so.
    /// let cut = &export[..export.len() - 2];
    /// let err = ProfileDb::open(c.path())?.restore(cut).unwrap_err();
    /// assert!(matches!(err, RestoreError::Broken { begin: 1, .. }), "{err}");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`RestoreError`] when the input cannot go on: reading it failed, the storage
    /// failed, the database is not empty or the dump is damaged ([`RestoreError::Begin`],
    /// nothing written), or the dump broke off after its start ([`RestoreError::Broken`]:
    /// the database holds a partial restore).
    pub fn restore(&self, mut input: impl BufRead) -> Result<RestoreReport, RestoreError> {
        let mut restore = Restore::new(self);
        let mut report = RestoreReport::default();
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match input.read_until(b'\n', &mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(source) => {
                    return Err(RestoreError::Read {
                        line: restore.line() + 1,
                        source,
                    })
                }
            }
            let line = restore.line() + 1;
            match restore.feed(&buf)? {
                LineOutcome::Blank => {}
                LineOutcome::Ingested(r) => {
                    report.applied += r.applied;
                    report.rejected.extend(
                        r.rejected
                            .into_iter()
                            .map(|rejection| LineRejection { line, rejection }),
                    );
                }
                LineOutcome::Refused(why) => report.rejected.push(LineRejection {
                    line,
                    rejection: Rejection {
                        item: None,
                        error: Error::Input(InputError::invalid("message", why.to_string())),
                    },
                }),
            }
        }
        report.lines = restore.line();
        restore.finish()?;
        Ok(report)
    }
}
