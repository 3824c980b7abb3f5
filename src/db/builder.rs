//! [`Builder`] and [`Durability`]: how a database is opened and when a write is durable.

use std::path::Path;
use std::sync::Arc;

use crate::clock::{Clock, SystemClock};
use crate::error::Result;
use crate::feed::ChangeFeed;
use crate::limits::Limits;
use crate::store::kv::Faults;

use super::write::IdentityOptions;
use super::ProfileDb;

/// Records committed between automatic checkpoints (see [`Builder::checkpoint_bytes`](crate::Builder::checkpoint_bytes)).
const DEFAULT_CHECKPOINT_BYTES: u64 = 192 << 20;

/// When a write is durable. See the [module docs](crate#durability-and-atomicity).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Durable (fsynced) before the write returns.
    #[default]
    Flush,
    /// Written to sled's buffers; durable after the next [`ProfileDb::flush`].
    Buffered,
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
    pub(crate) cache_bytes: u64,
    pub(crate) memory_budget: Option<u64>,
    pub(crate) durability: Durability,
    pub(crate) limits: Limits,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) faults: Option<Faults>,
    pub(crate) salvage: bool,
    pub(crate) identity: IdentityOptions,
    pub(crate) retention: Option<i64>,
    pub(crate) checkpoint_bytes: u64,
    /// `None`: as the database has it.
    pub(crate) change_feed: Option<Option<ChangeFeed>>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            cache_bytes: 64 << 20,
            memory_budget: None,
            durability: Durability::Flush,
            limits: Limits::default(),
            clock: Arc::new(SystemClock),
            faults: None,
            salvage: false,
            identity: IdentityOptions::default(),
            retention: None,
            checkpoint_bytes: DEFAULT_CHECKPOINT_BYTES,
            change_feed: None,
        }
    }
}

impl Builder {
    /// sled's page cache size in bytes. Default 64 MiB. A
    /// [memory budget](Builder::memory_budget) sizes the cache instead.
    pub fn cache_bytes(mut self, bytes: u64) -> Builder {
        self.cache_bytes = bytes;
        self
    }

    /// Bounds sled's page cache and the in-memory bitmaps together to `bytes` (at least
    /// [`MIN_BUDGET`](crate::MIN_BUDGET), 2 MiB), for an app that must stay within a
    /// memory limit. The bitmaps are the index every audience count reads and stay
    /// whole in memory; the cache gets what they leave, less a sixteenth of the budget
    /// for them to grow into, and never less than
    /// [`CACHE_FLOOR`](crate::CACHE_FLOOR) (1 MiB).
    ///
    /// sled sizes its cache when it opens: the open starts it with half the budget,
    /// reads the bitmaps, and opens sled again with a smaller cache only when the two
    /// together pass the budget (which costs one more open of sled's files). Each later
    /// reopen of sled (a [checkpoint](crate#checkpoints), a compaction) sizes the cache
    /// afresh, and a commit that leaves the two over the budget checkpoints to shrink
    /// it (when a read in progress keeps that checkpoint from running, the handle stays
    /// over until one 64 commits later, or a [`ProfileDb::checkpoint`], succeeds).
    /// [`ProfileDb::memory`] reports the sizes. A compaction opens its copy with the
    /// cache beside the open one, so while it runs there are two. Not covered: sled's
    /// page cache admitting more than its capacity (it evicts in batches: see the README's
    /// Memory footprint), and sled's table of where
    /// each page is, which grows with the number of keys (about 200 MiB at a million
    /// people) and which no setting of sled 0.34.7 bounds. Default: no budget, the cache
    /// as [`cache_bytes`](Builder::cache_bytes) says.
    pub fn memory_budget(mut self, bytes: u64) -> Builder {
        self.memory_budget = Some(bytes);
        self
    }

    /// How many bytes of records a handle commits before it checkpoints (see the
    /// [module docs](crate#checkpoints)); `0` never checkpoints automatically for
    /// bytes written (a [memory budget](Builder::memory_budget) still checkpoints to
    /// shrink the cache).
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
    #[cfg(feature = "__internal")]
    #[doc(hidden)]
    pub fn faults(mut self, faults: Faults) -> Builder {
        self.faults = Some(faults);
        self
    }

    /// Opens even when acknowledged commits are missing ([`Error::DataLoss`](crate::Error::DataLoss)), to read
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

    /// Turns the [change feed](crate::feed) on (`Some`, keeping changes as the
    /// [`ChangeFeed`] says) or off (`None`) at open; the setting is stored in the
    /// database, so a later open without this call keeps it. Default: as the database
    /// has it (off for a new one). Same as [`ProfileDb::set_change_feed`] after open.
    pub fn change_feed(mut self, feed: Option<ChangeFeed>) -> Builder {
        self.change_feed = Some(feed);
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
    /// [`Error::Open`](crate::Error::Open) when the directory is not a profiledb database, has an unknown
    /// format version, is locked, or is damaged (none of which modifies it);
    /// [`Error::DataLoss`](crate::Error::DataLoss) when sled recovered fewer commits than were durable;
    /// [`Error::Corrupted`](crate::Error::Corrupted) when a stored counter is damaged.
    pub fn open(self, path: impl AsRef<Path>) -> Result<ProfileDb> {
        ProfileDb::open_with(self, path.as_ref())
    }
}
