//! The memory budget ([`Builder::memory_budget`](crate::Builder::memory_budget)): sled's
//! page cache sized from what the in-memory bitmaps leave of it, and
//! [`ProfileDb::memory`], what the handle holds now.
//!
//! sled 0.34.7 sizes its cache when it opens and cannot resize it after; the bitmaps
//! can only be measured once they are read, from sled. So a budgeted open starts sled
//! with half the budget, reads the bitmaps, and reopens sled with a smaller cache only
//! when the two together pass the budget; every later reopen of sled (a checkpoint, a
//! compaction) sizes the cache afresh, and a commit whose bitmaps grew the sum past the
//! budget checkpoints to shrink it.

use crate::error::{Error, InputError, Result};

use super::write::Writer;
use super::{Builder, ProfileDb};

/// Commits between two tries of a checkpoint for the budget that reads kept from
/// running.
const BUDGET_RETRY_COMMITS: u64 = 64;

/// sled's page cache never goes below this, whatever the budget: under it sled spends
/// its time rebuilding the pages it just dropped.
pub const CACHE_FLOOR: u64 = 1 << 20;

/// The smallest budget [`Builder::memory_budget`](crate::Builder::memory_budget) accepts.
pub const MIN_BUDGET: u64 = 2 << 20;

/// What the handle holds in memory that a budget covers, and the budget
/// ([`ProfileDb::memory`]). Not covered: sled's table of where each page is (about 400
/// bytes a page, and a page holds at most 16 keys), which no setting of sled 0.34.7
/// bounds, and the memory of calls in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryUse {
    /// The budget the database was opened with, if any.
    pub budget: Option<u64>,
    /// The capacity of sled's page cache, as sled was last opened.
    pub cache_bytes: u64,
    /// The in-memory bitmaps, estimated from their containers (each bitmap's serialized
    /// size, its key and its map entry). Exact in shape for bitmaps as loaded at open;
    /// one grown since by single inserts may hold up to twice its arrays' size in spare
    /// capacity.
    pub bitmap_bytes: u64,
}

impl MemoryUse {
    /// The cache and the bitmaps together.
    pub fn total(&self) -> u64 {
        self.cache_bytes.saturating_add(self.bitmap_bytes)
    }

    /// Whether the cache and the bitmaps together pass the budget. They do when the
    /// bitmaps alone leave less than [`CACHE_FLOOR`] of it (the bitmaps are the index
    /// every audience count reads, and are never evicted), and after a commit that grew
    /// the bitmaps past it until a checkpoint shrinks the cache: the commit's own, or,
    /// when a read in progress kept that from running, one tried 64 commits later (or
    /// [`ProfileDb::checkpoint`] called by the app).
    pub fn over_budget(&self) -> bool {
        self.budget.is_some_and(|b| self.total() > b)
    }
}

/// The cache sled opens with under `budget`, before the bitmaps are known.
pub(crate) fn first_cache(budget: u64) -> u64 {
    (budget / 2).max(CACHE_FLOOR)
}

/// The cache that `budget` leaves beside `bitmaps` bytes of bitmaps, less a sixteenth
/// of the budget kept for the bitmaps to grow into (so that growth does not shrink the
/// cache at every commit); at least [`CACHE_FLOOR`].
pub(crate) fn cache_for(budget: u64, bitmaps: u64) -> u64 {
    budget
        .saturating_sub(bitmaps)
        .saturating_sub(budget / 16)
        .max(CACHE_FLOOR)
}

/// Refuses a budget under [`MIN_BUDGET`], before the open touches anything.
pub(crate) fn check(config: &Builder) -> Result<()> {
    match config.memory_budget {
        Some(b) if b < MIN_BUDGET => Err(Error::Input(InputError::invalid(
            "memory_budget",
            format!(
                "is {b} bytes; the least is {MIN_BUDGET} ({} MiB: sled's page cache \
                 needs {} MiB of it)",
                MIN_BUDGET >> 20,
                CACHE_FLOOR >> 20
            ),
        ))),
        _ => Ok(()),
    }
}

impl ProfileDb {
    /// What this handle holds in memory that a
    /// [memory budget](crate::Builder::memory_budget) covers: sled's page cache and the
    /// bitmaps.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> Result<(), profiledb::Error> {
    /// let dir = tempfile::tempdir().unwrap();
    /// let db = profiledb::ProfileDb::builder().memory_budget(16 << 20).open(dir.path())?;
    /// let memory = db.memory();
    /// assert_eq!(memory.budget, Some(16 << 20));
    /// assert!(memory.total() <= 16 << 20);
    /// # Ok(()) }
    /// ```
    pub fn memory(&self) -> MemoryUse {
        MemoryUse {
            budget: self.inner.config.memory_budget,
            cache_bytes: self.inner.store.kv().cache_bytes(),
            bitmap_bytes: self.read_gate().heap_bytes(),
        }
    }

    /// Whether a reopen of sled should shrink its cache now: the cache and the bitmaps
    /// pass the budget, and the cache is above its floor.
    pub(crate) fn cache_over_budget(&self) -> bool {
        let memory = self.memory();
        memory.over_budget() && memory.cache_bytes > CACHE_FLOOR
    }

    /// After a commit, under the writer lock (`release`): when the cache and the
    /// bitmaps pass the budget, checkpoints, so that sled reopens with the cache the
    /// bitmaps now leave. When a read in progress keeps the checkpoint from running, the
    /// next 64 commits do not try again (each try folds the log and flushes first).
    ///
    /// # Errors
    /// As [`ProfileDb::checkpoint`]: a failed checkpoint poisons the handle.
    pub(crate) fn fit_budget(&self, writer: &mut Writer) -> Result<()> {
        // Without a budget, nothing to check: no lock taken on every write.
        if self.inner.config.memory_budget.is_none()
            || writer.commit_seq < writer.budget_retry
            || !self.cache_over_budget()
        {
            return Ok(());
        }
        if !self.checkpoint_locked(writer)? {
            writer.budget_retry = writer.commit_seq.saturating_add(BUDGET_RETRY_COMMITS);
        }
        Ok(())
    }

    /// Sets the cache of sled's next reopen to what the budget leaves beside the
    /// bitmaps as they are now (nothing without a budget).
    pub(crate) fn size_cache(&self) {
        if let Some(budget) = self.inner.config.memory_budget {
            let bitmaps = self.read_gate().heap_bytes();
            self.inner
                .store
                .kv()
                .set_cache_bytes(cache_for(budget, bitmaps));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_gets_what_the_bitmaps_leave_and_never_less_than_its_floor() {
        assert_eq!(first_cache(64 << 20), 32 << 20);
        assert_eq!(first_cache(MIN_BUDGET), CACHE_FLOOR);
        // 64 MiB less 10 MiB of bitmaps less 4 MiB of room to grow.
        assert_eq!(cache_for(64 << 20, 10 << 20), 50 << 20);
        assert_eq!(cache_for(64 << 20, 63 << 20), CACHE_FLOOR);
        assert_eq!(cache_for(64 << 20, u64::MAX), CACHE_FLOOR);
        let over = MemoryUse {
            budget: Some(8 << 20),
            cache_bytes: CACHE_FLOOR,
            bitmap_bytes: 8 << 20,
        };
        assert!(over.over_budget());
        assert!(!MemoryUse {
            budget: None,
            ..over
        }
        .over_budget());
    }
}
