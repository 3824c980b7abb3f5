//! The storage seam: the internal key-value trait between profiledb and sled, the sled
//! implementation, and a fault-injecting wrapper for tests.
//!
//! Everything above this module sees families and byte strings, never a sled type, so a
//! test can fail any write or read on purpose and check what the layers above do.

use std::fs::File;
use std::ops::Bound;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

use super::Family;
use crate::error::StorageError;

/// A key and its value.
pub type KvPair = (Vec<u8>, Vec<u8>);

/// A lazily read sequence of pairs.
pub type KvIter<'a> = Box<dyn Iterator<Item = Result<KvPair, StorageError>> + 'a>;

/// The writes to one family: keys to set (`Some`) or remove (`None`), in key order.
pub type FamilyWrites = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// Everything one commit writes: per family, keys to set (`Some`) or remove (`None`).
#[derive(Debug, Default)]
pub struct WriteSet {
    /// Families in a fixed order, each with its writes in key order.
    pub families: Vec<(Family, FamilyWrites)>,
}

impl WriteSet {
    /// How many key writes the set holds.
    pub fn len(&self) -> usize {
        self.families.iter().map(|(_, w)| w.len()).sum()
    }

    /// True when the set writes nothing.
    pub fn is_empty(&self) -> bool {
        self.families.iter().all(|(_, w)| w.is_empty())
    }
}

/// The key-value store under profiledb.
pub trait Kv: Send + Sync {
    /// The value at `key`.
    fn get(&self, family: Family, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;
    /// Pairs with keys in `range`, ascending or (when `reverse`) descending.
    fn range(
        &self,
        family: Family,
        range: (Bound<Vec<u8>>, Bound<Vec<u8>>),
        reverse: bool,
    ) -> KvIter<'_>;
    /// Applies every write of `writes` atomically: after a crash, all of it or none.
    fn commit(&self, writes: &WriteSet) -> Result<(), StorageError>;
    /// Makes every committed write durable: sled's flush, then fsync of the files and
    /// directories.
    fn flush(&self) -> Result<(), StorageError>;
    /// Bytes on disk.
    fn size_on_disk(&self) -> Result<u64, StorageError>;
}

/// Runs a sled call, turning a panic inside sled into an error.
fn contain<T>(what: &str, f: impl FnOnce() -> Result<T, StorageError>) -> Result<T, StorageError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            Err(StorageError::Panicked(format!("{what}: {msg}")))
        }
    }
}

/// sled 0.34.7 as the store. Each family is one sled `Tree`.
pub struct SledKv {
    db: sled::Db,
    trees: Vec<sled::Tree>,
    dir: PathBuf,
}

impl SledKv {
    /// Opens (or creates) the sled database in `dir` with every family's tree.
    ///
    /// # Errors
    /// sled's error, or a contained panic, as a [`StorageError`].
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<SledKv, StorageError> {
        contain("open", || {
            let db = sled::Config::new()
                .path(dir)
                .cache_capacity(cache_bytes)
                .flush_every_ms(Some(500))
                .open()?;
            let trees = Family::ALL
                .iter()
                .map(|f| db.open_tree(f.name()))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(SledKv {
                db,
                trees,
                dir: dir.to_path_buf(),
            })
        })
    }

    fn tree(&self, family: Family) -> Result<&sled::Tree, StorageError> {
        self.trees
            .get(family.index())
            .ok_or_else(|| StorageError::Sled(format!("no tree for family {}", family.name())))
    }

    /// Commits `writes` in one sled transaction over the trees they touch, calling
    /// `before_write` before each key write; an `Err` from it aborts the transaction, so
    /// nothing of `writes` is applied.
    pub fn commit_with(
        &self,
        writes: &WriteSet,
        before_write: &dyn Fn() -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        if writes.families.is_empty() {
            return Ok(());
        }
        let trees = writes
            .families
            .iter()
            .map(|(f, _)| self.tree(*f).cloned())
            .collect::<Result<Vec<_>, _>>()?;
        // One sled batch per family, applied inside one transaction: sled seals the
        // transaction's log entries as one batch, so recovery keeps all or none.
        let batches: Vec<sled::Batch> = writes
            .families
            .iter()
            .map(|(_, w)| {
                let mut batch = sled::Batch::default();
                for (k, v) in w {
                    match v {
                        Some(v) => batch.insert(k.as_slice(), v.as_slice()),
                        None => batch.remove(k.as_slice()),
                    }
                }
                batch
            })
            .collect();
        contain("commit", || {
            let result = trees.as_slice().transaction(|txs| {
                for ((tx, batch), (_, w)) in txs.iter().zip(&batches).zip(&writes.families) {
                    for _ in w {
                        before_write().map_err(ConflictableTransactionError::Abort)?;
                    }
                    tx.apply_batch(batch)?;
                }
                Ok(())
            });
            match result {
                Ok(()) => Ok(()),
                Err(TransactionError::Abort(e)) => Err(e),
                Err(TransactionError::Storage(e)) => Err(e.into()),
            }
        })
    }

    /// fsyncs every file under the sled directory, then the directories themselves.
    fn sync_files(&self) -> Result<(), StorageError> {
        fn sync_dir(dir: &Path) -> std::io::Result<()> {
            for entry in std::fs::read_dir(dir)? {
                let entry = entry?;
                let ty = entry.file_type()?;
                if ty.is_dir() {
                    sync_dir(&entry.path())?;
                } else if ty.is_file() {
                    File::open(entry.path())?.sync_all()?;
                }
            }
            File::open(dir)?.sync_all()
        }
        sync_dir(&self.dir)?;
        Ok(())
    }
}

impl Kv for SledKv {
    fn get(&self, family: Family, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let tree = self.tree(family)?;
        contain("get", || Ok(tree.get(key)?.map(|v| v.to_vec())))
    }

    fn range(
        &self,
        family: Family,
        range: (Bound<Vec<u8>>, Bound<Vec<u8>>),
        reverse: bool,
    ) -> KvIter<'_> {
        let tree = match self.tree(family) {
            Ok(t) => t,
            Err(e) => return Box::new(std::iter::once(Err(e))),
        };
        let iter = match contain("range", || Ok(tree.range(range))) {
            Ok(it) => it,
            Err(e) => return Box::new(std::iter::once(Err(e))),
        };
        let map = |r: sled::Result<(sled::IVec, sled::IVec)>| {
            r.map(|(k, v)| (k.to_vec(), v.to_vec()))
                .map_err(StorageError::from)
        };
        if reverse {
            Box::new(ContainedIter(iter.rev()).map(move |r| r.and_then(map)))
        } else {
            Box::new(ContainedIter(iter).map(move |r| r.and_then(map)))
        }
    }

    fn commit(&self, writes: &WriteSet) -> Result<(), StorageError> {
        self.commit_with(writes, &|| Ok(()))
    }

    fn flush(&self) -> Result<(), StorageError> {
        contain("flush", || {
            self.db.flush()?;
            Ok(())
        })?;
        // sled 0.34's flush ends in sync_file_range, which does not make the data
        // durable against power loss; fsync does.
        self.sync_files()
    }

    fn size_on_disk(&self) -> Result<u64, StorageError> {
        contain("size_on_disk", || Ok(self.db.size_on_disk()?))
    }
}

/// An iterator whose `next` runs with panics contained.
struct ContainedIter<I>(I);

impl<I: Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> Iterator for ContainedIter<I> {
    type Item = Result<sled::Result<(sled::IVec, sled::IVec)>, StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        match catch_unwind(AssertUnwindSafe(|| self.0.next())) {
            Ok(Some(item)) => Some(Ok(item)),
            Ok(None) => None,
            Err(_) => Some(Err(StorageError::Panicked("iteration".to_owned()))),
        }
    }
}

/// A handle for injecting faults into a database's storage, for testing what happens
/// when the disk fails. Pass a clone to [`Builder::faults`](crate::Builder::faults); the
/// database then runs over a wrapper that obeys it.
///
/// # Examples
/// ```
/// # fn main() -> Result<(), profiledb::Error> {
/// use profiledb::{Faults, Ident, Identify, ProfileDb};
/// let dir = tempfile::tempdir().unwrap();
/// let faults = Faults::new();
/// let db = ProfileDb::builder().faults(faults.clone()).open(dir.path())?;
/// faults.fail_write_at(2); // the second key write from now fails
/// assert!(db.identify(Identify::new(Ident::id("u1")).set("plan", "pro")).is_err());
/// assert!(db.person(&Ident::id("u1"))?.is_none()); // nothing of it was written
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct Faults(Arc<FaultState>);

#[derive(Default)]
struct FaultState {
    writes: AtomicU64,
    fail_write_at: AtomicU64,
    fail_reads: AtomicBool,
    fail_flush: AtomicBool,
    corrupt: Mutex<Vec<(Family, Vec<u8>)>>,
}

impl Faults {
    /// A handle that injects nothing until told to.
    pub fn new() -> Faults {
        Faults::default()
    }

    /// Fails the `n`th key write from now (1 = the next one). The commit containing it
    /// is aborted, so none of its writes land. Fires once.
    pub fn fail_write_at(&self, n: u64) {
        let now = self.0.writes.load(Ordering::SeqCst);
        self.0.fail_write_at.store(now + n.max(1), Ordering::SeqCst);
    }

    /// Makes every read fail (or stop failing).
    pub fn fail_reads(&self, on: bool) {
        self.0.fail_reads.store(on, Ordering::SeqCst);
    }

    /// Makes every flush fail (or stop failing).
    pub fn fail_flush(&self, on: bool) {
        self.0.fail_flush.store(on, Ordering::SeqCst);
    }

    /// Flips a bit in the value of `key` in `family` whenever it is read.
    pub fn corrupt_reads_of(&self, family: Family, key: Vec<u8>) {
        if let Ok(mut c) = self.0.corrupt.lock() {
            c.push((family, key));
        }
    }

    /// How many key writes have been attempted through this handle.
    pub fn writes_seen(&self) -> u64 {
        self.0.writes.load(Ordering::SeqCst)
    }

    /// Stops every injected fault.
    pub fn clear(&self) {
        self.0.fail_write_at.store(0, Ordering::SeqCst);
        self.0.fail_reads.store(false, Ordering::SeqCst);
        self.0.fail_flush.store(false, Ordering::SeqCst);
        if let Ok(mut c) = self.0.corrupt.lock() {
            c.clear();
        }
    }

    fn check_read(&self) -> Result<(), StorageError> {
        if self.0.fail_reads.load(Ordering::SeqCst) {
            return Err(StorageError::Injected("read failed".to_owned()));
        }
        Ok(())
    }

    fn maybe_corrupt(&self, family: Family, key: &[u8], value: &mut [u8]) {
        let hit = self
            .0
            .corrupt
            .lock()
            .map(|c| c.iter().any(|(f, k)| *f == family && k == key))
            .unwrap_or(false);
        if hit {
            if let Some(last) = value.last_mut() {
                *last ^= 0x01;
            }
        }
    }
}

/// [`SledKv`] with [`Faults`] applied.
pub struct FaultKv {
    inner: SledKv,
    faults: Faults,
}

impl FaultKv {
    /// Wraps `inner` so that it obeys `faults`.
    pub fn new(inner: SledKv, faults: Faults) -> FaultKv {
        FaultKv { inner, faults }
    }
}

impl Kv for FaultKv {
    fn get(&self, family: Family, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.faults.check_read()?;
        let mut v = self.inner.get(family, key)?;
        if let Some(v) = v.as_mut() {
            self.faults.maybe_corrupt(family, key, v);
        }
        Ok(v)
    }

    fn range(
        &self,
        family: Family,
        range: (Bound<Vec<u8>>, Bound<Vec<u8>>),
        reverse: bool,
    ) -> KvIter<'_> {
        if let Err(e) = self.faults.check_read() {
            return Box::new(std::iter::once(Err(e)));
        }
        let faults = self.faults.clone();
        Box::new(self.inner.range(family, range, reverse).map(move |r| {
            faults.check_read()?;
            let (k, mut v) = r?;
            faults.maybe_corrupt(family, &k, &mut v);
            Ok((k, v))
        }))
    }

    fn commit(&self, writes: &WriteSet) -> Result<(), StorageError> {
        let state = &self.faults.0;
        self.inner.commit_with(writes, &|| {
            let n = state.writes.fetch_add(1, Ordering::SeqCst) + 1;
            let at = state.fail_write_at.load(Ordering::SeqCst);
            if at != 0 && n >= at {
                state.fail_write_at.store(0, Ordering::SeqCst);
                return Err(StorageError::Injected(format!("write #{n} failed")));
            }
            Ok(())
        })
    }

    fn flush(&self) -> Result<(), StorageError> {
        if self.faults.0.fail_flush.load(Ordering::SeqCst) {
            return Err(StorageError::Injected("flush failed".to_owned()));
        }
        self.inner.flush()
    }

    fn size_on_disk(&self) -> Result<u64, StorageError> {
        self.inner.size_on_disk()
    }
}
