//! The global options every command shares, and opening the database they name.
//!
//! Commands that only read refuse a directory that is missing or empty instead of
//! creating an empty database there (a typo in `--db` should not look like an empty
//! workspace); commands that write create it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use profiledb::{Clock, Durability, ManualClock, ProfileDb, SystemClock};

use crate::output::Failure;

/// Where the database is when `--db` is not given.
pub const DEFAULT_DB: &str = "./profiledb-data";

/// The global options.
pub struct Context {
    /// The database directory.
    pub dir: PathBuf,
    /// `--now`: a fixed clock.
    pub now: Option<i64>,
    /// `--memory-budget-mib`: a memory budget, in MiB.
    pub memory_budget_mib: Option<u64>,
}

impl Context {
    /// The options as given.
    pub fn new(db: Option<PathBuf>, now: Option<i64>, memory_budget_mib: Option<u64>) -> Context {
        Context {
            dir: db.unwrap_or_else(|| PathBuf::from(DEFAULT_DB)),
            now,
            memory_budget_mib,
        }
    }

    /// The clock `--now` asks for: fixed at that time, or the system clock.
    pub fn clock(&self) -> Arc<dyn Clock> {
        match self.now {
            Some(t) => Arc::new(ManualClock::new(t)),
            None => Arc::new(SystemClock),
        }
    }

    /// Opens the database, which must exist.
    pub fn open_existing(&self) -> Result<ProfileDb, Failure> {
        if is_missing_or_empty(&self.dir)? {
            return Err(Failure::new(format!(
                "no profiledb database at {}; run `profiledb ingest` or `profiledb demo` \
                 first, or name another directory with --db",
                self.dir.display()
            )));
        }
        self.open(Durability::Flush)
    }

    /// Opens the database, creating it when the directory is missing or empty.
    pub fn open_or_create(&self) -> Result<ProfileDb, Failure> {
        self.open(Durability::Flush)
    }

    /// Opens with `durability`, creating the database when the directory is missing or
    /// empty.
    pub fn open(&self, durability: Durability) -> Result<ProfileDb, Failure> {
        let mut builder = ProfileDb::builder()
            .clock(self.clock())
            .durability(durability);
        if let Some(mib) = self.memory_budget_mib {
            let bytes = mib.checked_mul(1 << 20).ok_or_else(|| Failure {
                code: 2,
                message: format!(
                    "--memory-budget-mib {mib} is more bytes than a 64-bit count holds"
                ),
            })?;
            builder = builder.memory_budget(bytes);
        }
        builder.open(&self.dir).map_err(|e| match &e {
            // A malformed argument: a usage error, with the library's reason.
            profiledb::Error::Input(input) if input.field == "memory_budget" => Failure {
                code: 2,
                message: format!("--memory-budget-mib: {e}"),
            },
            _ => e.into(),
        })
    }
}

/// True when `dir` does not exist or holds nothing.
pub fn is_missing_or_empty(dir: &Path) -> Result<bool, Failure> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(Failure::new(format!(
            "cannot read the directory {}: {e}",
            dir.display()
        ))),
    }
}

/// Closes the database, making every write durable.
pub fn close(db: ProfileDb) -> Result<(), Failure> {
    Ok(db.close()?)
}
