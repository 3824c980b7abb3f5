//! The write path: the write context operations run in, staging, the commit, the
//! durability it promises, and checkpoints. It knows no operation: `ops.rs` dispatches
//! each [`Op`](super::Op) to its module, which stages its records through a [`Ctx`].
//!
//! One writer at a time (a mutex), any number of readers. Every public write, and every
//! [`write_batch`](ProfileDb::write_batch), is staged in memory, checked whole, encoded
//! once per record, and committed as one sled batch over every family it touches: after
//! a crash all of it is there or none of it. Each commit carries a sequence number stored
//! in the `meta` family; a durable commit records it in `COMMIT` too.

use std::sync::atomic::Ordering;
use std::sync::MutexGuard;

use crate::commit_file::CommitFile;
use crate::error::{Error, InputError, Result, StorageError};
use crate::feed::{self, FeedState, SegmentMove};
use crate::index::{BitmapKey, Bitmaps, Delta, LogState, Touches};
use crate::limits::Limits;
use crate::model::{Ident, IdentKind, PersonId, Value};
use crate::segments::Catalog;
use crate::store::records::{ActivityRecord, MetaValue};
use crate::store::{
    ident_key, meta_keys, pid_key, ActivityF, BitmapLogF, BitmapsF, ChangesF, Counters, Family,
    IdentifiersF, MetaF, PeopleF, Txn,
};

use super::{Durability, ProfileDb};

/// The chunk bytes one batch of a fold writes at most (about: one chunk more).
const FOLD_BATCH_BYTES: usize = 4 << 20;

/// The writer's state, behind the writer lock.
pub(crate) struct Writer {
    pub(crate) counters: Counters,
    pub(crate) commit_seq: u64,
    /// The `bitmap_log` records not yet folded into the chunks, and the chunks they dirty.
    pub(crate) log: LogState,
    /// No checkpoint for the memory budget before this commit, after one that reads
    /// kept from running ([`ProfileDb::fit_budget`]).
    pub(crate) budget_retry: u64,
    /// The change feed, when it is on.
    pub(crate) feed: Option<FeedState>,
}

/// The last durable commit and the file recording it.
pub(crate) struct Durable {
    pub(crate) seq: u64,
    pub(crate) file: CommitFile,
}

/// Settings of the identity rules.
#[derive(Debug, Clone, Default)]
pub(crate) struct IdentityOptions {
    pub allow_email_update_by_id: bool,
}

/// Everything an operation needs while it runs.
pub(crate) struct Ctx<'t, 'a> {
    pub txn: &'t mut Txn<'a>,
    pub touches: &'t mut Touches,
    /// The committed bitmaps (the batch's own changes are in `touches`).
    pub bitmaps: &'t Bitmaps,
    /// Topics and segments.
    pub catalog: &'t Catalog,
    pub now: i64,
    pub limits: &'t Limits,
    pub options: &'t IdentityOptions,
    pub counters: &'t mut Counters,
}

impl Ctx<'_, '_> {
    /// Appends an activity entry to `pid`'s timeline.
    pub fn record(&mut self, pid: u32, kind: &str, name: Option<String>, data: Value) {
        let now = self.now;
        self.record_at(pid, now, kind, name, data);
    }

    /// Appends an activity entry at time `timestamp`; returns its sequence number.
    pub fn record_at(
        &mut self,
        pid: u32,
        timestamp: i64,
        kind: &str,
        name: Option<String>,
        data: Value,
    ) -> u64 {
        let seq = self.next_seq();
        self.txn.put::<ActivityF>(
            ActivityF::key(pid, timestamp, seq),
            ActivityRecord {
                kind: kind.to_owned(),
                name,
                data,
                event_id: None,
            },
        );
        seq
    }

    /// Allocates an activity sequence number.
    pub fn next_seq(&mut self) -> u64 {
        self.counters.alloc_seq()
    }

    /// Normalizes `ident` for lookup, checking it against the limits.
    pub fn normalize(&self, ident: &Ident) -> Result<String, InputError> {
        self.limits.ident(ident)
    }

    /// Who has identifier `kind` = `norm` (normalized), as staged so far.
    pub fn lookup(&mut self, kind: IdentKind, norm: &str) -> Result<Option<u32>> {
        if kind == IdentKind::CioId {
            let Some(pid) = PersonId::from_cio_id(norm) else {
                return Ok(None);
            };
            return Ok(self.txn.get::<PeopleF>(&pid_key(pid.0))?.map(|_| pid.0));
        }
        self.txn.get::<IdentifiersF>(&ident_key(kind, norm))
    }

    /// Who `ident` names (checked against the limits), as staged so far.
    pub fn find(&mut self, ident: &Ident) -> Result<Option<u32>> {
        let norm = self.normalize(ident)?;
        self.lookup(ident.kind, &norm)
    }
}

impl ProfileDb {
    pub(crate) fn writer(&self) -> Result<MutexGuard<'_, Writer>> {
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
    pub(crate) fn restore_writer(&self) -> Result<MutexGuard<'_, Writer>> {
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

    pub(crate) fn poison(&self) {
        self.inner.poisoned.store(true, Ordering::SeqCst);
    }

    /// Poisons the handle when `e` is a storage failure met while staging a write (a
    /// failed read): as after a failed write, the handle refuses to guess what the disk
    /// holds. Passes `e` through.
    pub(crate) fn poison_on_io(&self, e: Error) -> Error {
        let mut inner = &e;
        while let Error::InBatch { source, .. } = inner {
            inner = source;
        }
        if matches!(inner, Error::Storage(_)) {
            self.poison();
        }
        e
    }

    /// Commits `txn` (plus the counters, a new commit sequence number, and `delta` as
    /// this commit's `bitmap_log` record), then applies `delta` to the in-memory bitmaps
    /// inside the gate.
    pub(crate) fn commit(
        &self,
        writer: &mut Writer,
        mut txn: Txn<'_>,
        counters: Counters,
        delta: &Delta,
    ) -> Result<()> {
        let mut dirty = Vec::new();
        let mut moves = Vec::new();
        if !delta.is_empty() {
            let bitmaps = self.read_gate();
            let (records, touched) = delta.log_records(writer.commit_seq + 1, &bitmaps);
            for (key, entries) in records {
                txn.put::<BitmapLogF>(key, entries);
            }
            dirty = touched;
            if let Some(hours_from) = delta.hours_from() {
                txn.put::<MetaF>(
                    meta_keys::BUCKETS.to_vec(),
                    MetaValue::Buckets { hours_from },
                );
            }
            if writer.feed.is_some() {
                moves = delta.segment_moves(&bitmaps);
            }
        }
        self.commit_inner(writer, txn, counters, Some(moves), dirty, |bitmaps| {
            if !delta.is_empty() {
                bitmaps.apply(delta);
            }
        })
    }

    /// Commits `txn` (plus the counters and a new commit sequence number), then runs
    /// `change` on the in-memory bitmaps inside the gate, so readers see both or neither.
    /// `moves`: who enters and leaves which segment (for the change feed).
    pub(crate) fn commit_then(
        &self,
        writer: &mut Writer,
        txn: Txn<'_>,
        counters: Counters,
        moves: Vec<SegmentMove>,
        change: impl FnOnce(&mut Bitmaps),
    ) -> Result<()> {
        self.commit_inner(writer, txn, counters, Some(moves), Vec::new(), change)
    }

    /// The commit itself. `moves`: the segment membership changes, for the change
    /// feed; `None` for a restore's commits, which are not operations: nothing is
    /// freshly allocated (pids and seqs between the writer's counters and `counters`
    /// are, otherwise: keys holding them are new, for the kept counts) and nothing goes
    /// to the feed. `dirty`: the chunks this commit's `bitmap_log` records touch.
    fn commit_inner(
        &self,
        writer: &mut Writer,
        mut txn: Txn<'_>,
        mut counters: Counters,
        moves: Option<Vec<SegmentMove>>,
        dirty: Vec<(BitmapKey, u16)>,
        change: impl FnOnce(&mut Bitmaps),
    ) -> Result<()> {
        let seq = writer.commit_seq + 1;
        let (pids, seqs) = if moves.is_some() {
            (
                writer.counters.next_pid..counters.next_pid,
                writer.counters.next_seq..counters.next_seq,
            )
        } else {
            (0..0, 0..0)
        };
        if let (Some(_), Some(moves)) = (writer.feed, moves) {
            let entries = feed::collect(&txn, pids.clone(), seqs.clone(), moves)
                .map_err(|e| self.poison_on_io(e))?;
            let now = self.inner.config.clock.now();
            for (key, record) in feed::records(seq, now, entries) {
                txn.put::<ChangesF>(key, record);
            }
        }
        let diff = txn
            .count_changes(pids, seqs)
            .map_err(|e| self.poison_on_io(e))?;
        counters.counts.apply(diff);
        // One meta write per commit: the counters, the kept counts and the commit's
        // sequence number.
        txn.put::<MetaF>(
            meta_keys::COUNTERS.to_vec(),
            MetaValue::Counters {
                next_pid: counters.next_pid,
                next_seq: counters.next_seq,
                commit_seq: seq,
                counts: counters.counts,
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
        for (family, list) in &writes.families {
            if *family == Family::BitmapLog {
                for (key, value) in list {
                    if let Some(v) = value {
                        writer.log.keys.push(key.clone());
                        writer.log.bytes += v.len() as u64;
                    }
                }
            }
        }
        writer.log.dirty.extend(dirty);
        if writer.log.over_bound() {
            self.fold_locked(writer)?;
        }
        self.after_commit_feed(writer, seq)?;
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
    pub(crate) fn checkpoint_tries(
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
    /// [module docs](crate#checkpoints)). Needs the writer lock, which `_writer`
    /// proves. `Ok(false)` when a read in progress kept it from running.
    pub(crate) fn checkpoint_locked(&self, writer: &mut Writer) -> Result<bool> {
        self.fold_locked(writer)?;
        self.prune_expired(writer)?;
        self.make_durable()?;
        self.size_cache();
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

    /// Folds the `bitmap_log` into the chunks: rewrites every chunk a logged change
    /// dirtied, from the in-memory bitmaps (which are the committed state: only this
    /// writer changes them), then deletes the folded log records. The chunks go in
    /// batches of about [`FOLD_BATCH_BYTES`], the last of which also deletes the log
    /// records: until then every log record is still there, and replaying them over
    /// chunks newer than they are gives the same members (each pid a record touches ends
    /// as the last record touching it says, which is its state now). No batch changes
    /// data or a counter, so none is a commit: lost in a crash, the log and the chunks
    /// still agree.
    pub(crate) fn fold_locked(&self, writer: &mut Writer) -> Result<()> {
        if writer.log.keys.is_empty() && writer.log.dirty.is_empty() {
            return Ok(());
        }
        let log = std::mem::take(&mut writer.log);
        let mut txn = Txn::new(&self.inner.store);
        let mut bytes = 0usize;
        {
            let bitmaps = self.read_gate();
            for (key, chunk) in &log.dirty {
                let (k, v) = bitmaps.chunk_write(key, *chunk);
                bytes += k.len() + v.as_ref().map_or(0, Vec::len);
                match v {
                    Some(b) => txn.put::<BitmapsF>(k, b),
                    None => txn.delete::<BitmapsF>(k),
                }
                if bytes >= FOLD_BATCH_BYTES {
                    let full = std::mem::replace(&mut txn, Txn::new(&self.inner.store));
                    self.fold_batch(full)?;
                    bytes = 0;
                }
            }
        }
        for key in log.keys {
            txn.delete::<BitmapLogF>(key);
        }
        self.fold_batch(txn)
    }

    /// Writes a batch that is not a commit (a fold's, or dropping old changes): it
    /// changes no data and no counter, so lost in a crash it leaves everything agreeing.
    /// A failure poisons the handle.
    pub(crate) fn write_batch_uncommitted(&self, txn: Txn<'_>) -> Result<()> {
        self.fold_batch(txn)
    }

    /// Commits one `meta` record (`None`: deletes it) as a commit of its own.
    pub(crate) fn commit_meta(
        &self,
        writer: &mut Writer,
        key: &[u8],
        value: Option<MetaValue>,
    ) -> Result<()> {
        let mut txn = Txn::new(&self.inner.store);
        match value {
            Some(v) => txn.put::<MetaF>(key.to_vec(), v),
            None => txn.delete::<MetaF>(key.to_vec()),
        }
        let counters = writer.counters;
        self.commit(writer, txn, counters, &Delta::default())
    }

    /// Numbers the next commits after `floor` at least (a restore continues its
    /// source's numbering; a salvage numbers on after the commits it lost).
    pub(crate) fn raise_commit_seq(&self, floor: u64) -> Result<()> {
        let mut writer = self.restore_writer()?;
        writer.commit_seq = writer.commit_seq.max(floor);
        Ok(())
    }

    /// The sequence number of the last commit known durable.
    pub(crate) fn durable_seq(&self) -> u64 {
        self.inner
            .durable
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .seq
    }

    /// Writes one batch of a fold; a failure poisons the handle.
    fn fold_batch(&self, txn: Txn<'_>) -> Result<()> {
        let writes = txn.into_write_set()?;
        if let Err(e) = self.inner.store.kv().commit(&writes) {
            self.poison();
            return Err(e.into());
        }
        Ok(())
    }

    /// Stages a fold of the log (see [`fold_locked`](Self::fold_locked)) in `txn`.
    fn stage_fold(&self, writer: &Writer, txn: &mut Txn<'_>) {
        let bitmaps = self.read_gate();
        for (key, chunk) in &writer.log.dirty {
            match bitmaps.chunk_write(key, *chunk) {
                (k, Some(b)) => txn.put::<BitmapsF>(k, b),
                (k, None) => txn.delete::<BitmapsF>(k),
            }
        }
        for key in &writer.log.keys {
            txn.delete::<BitmapLogF>(key.clone());
        }
    }

    /// Makes every write so far durable and checkpoints the store now (see the
    /// [module docs](crate#checkpoints)): the next open of this database replays
    /// nothing written before it. Waits up to a second for reads in progress to finish;
    /// returns `Ok(false)` if they never did, with everything durable but no checkpoint.
    ///
    /// # Errors
    /// [`Error::Storage`](crate::Error::Storage) when flushing or reopening the store fails; the handle then
    /// refuses further calls, [`Error::Poisoned`](crate::Error::Poisoned), until the database is opened again.
    pub fn checkpoint(&self) -> Result<bool> {
        let mut writer = self.restore_writer()?;
        self.checkpoint_tries(&mut writer, 100, std::time::Duration::from_millis(10))
    }

    /// Rewrites the database's files so that they hold only its live records, as SQLite's
    /// `VACUUM` does (see the [module docs](crate#compaction)): sled reclaims log space
    /// only from mostly dead segments, so after heavy writing its files hold two to
    /// three times the records. Makes every write so far durable first; reads and
    /// writes wait while it runs (about as long as an export: minutes at a million
    /// people), and it needs free disk for a copy of the live records. A crash at any
    /// point leaves the old files or the new ones whole, never a mix; the next open
    /// settles it. A copy no smaller than the files it would replace (a fresh sled
    /// database has overheads of its own, so a small or lightly written one can come out
    /// larger) is dropped, and nothing changes.
    ///
    /// Returns the bytes on disk before and after, or `Ok(None)` when reads in progress
    /// (a scan, a long query) kept it from starting for 10 seconds: nothing changed.
    ///
    /// # Errors
    /// [`Error::Storage`](crate::Error::Storage) when flushing, copying or swapping the
    /// files fails. The handle goes on with the old files, or with the new ones when
    /// the swap was done; only when sled could not be opened again does every call fail
    /// until the database is opened again (which finds the old files or the new ones,
    /// whole). On a system without an atomic exchange of directories (other than Linux,
    /// Android and Apple systems) it is refused before any work.
    pub fn compact(&self) -> Result<Option<Compaction>> {
        let mut writer = self.restore_writer()?;
        self.fold_locked(&mut writer)?;
        self.prune_expired(&mut writer)?;
        self.make_durable()?;
        self.size_cache();
        let done = self.inner.store.kv().compact()?;
        if done.is_some_and(|d| d.swapped) {
            // The reopen wrote sled's snapshot: it counts as a checkpoint.
            self.inner.checkpoints.fetch_add(1, Ordering::Relaxed);
        }
        Ok(done.map(|d| Compaction {
            bytes_before: d.before,
            bytes_after: d.after,
        }))
    }

    /// Flushes and fsyncs everything committed so far, then records it in `COMMIT`.
    pub(crate) fn make_durable(&self) -> Result<()> {
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
        let delta = crate::segments::maintain::stage(
            &mut txn,
            &touches,
            &bitmaps,
            &catalog,
            now,
            &mut counters,
        )
        .map_err(|e| self.poison_on_io(e))?;
        drop(bitmaps);
        drop(catalog);
        if txn.is_clean() && delta.is_empty() {
            return Ok(out);
        }
        self.commit(&mut writer, txn, counters, &delta)?;
        self.release(writer)?;
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
    /// `stage` may write whole chunks (a rebuild): the log is folded in the same batch,
    /// first, so no older log record is replayed over those chunks. `writer` is the
    /// writer lock, taken by the caller before it read what it stages (the catalog,
    /// every person's attributes), so no commit lands between that read and this one.
    pub(crate) fn commit_with(
        &self,
        mut writer: MutexGuard<'_, Writer>,
        stage: impl FnOnce(&mut Txn<'_>),
        after: impl FnOnce(&mut Bitmaps, &mut Catalog),
    ) -> Result<()> {
        let counters = writer.counters;
        let mut txn = Txn::new(&self.inner.store);
        self.stage_fold(&writer, &mut txn);
        stage(&mut txn);
        let mut new_catalog = self.catalog().clone();
        let mut bitmaps = self.read_gate().clone();
        after(&mut bitmaps, &mut new_catalog);
        let moves = if writer.feed.is_some() {
            let old = self.read_gate();
            feed::segment_moves(&old, &bitmaps)
        } else {
            Vec::new()
        };
        let log = std::mem::take(&mut writer.log);
        let done = self.commit_then(&mut writer, txn, counters, moves, |gate| *gate = bitmaps);
        if done.is_err() {
            writer.log = log;
        }
        done?;
        *self
            .inner
            .catalog
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = new_catalog;
        self.release(writer)?;
        Ok(())
    }

    /// Commits bitmap changes `delta` (their log record, and what `stage` adds) as one
    /// unit.
    pub(crate) fn commit_delta(
        &self,
        delta: Delta,
        stage: impl FnOnce(&mut Txn<'_>, &mut Counters, &Bitmaps, &Delta),
    ) -> Result<()> {
        let mut writer = self.writer()?;
        let mut counters = writer.counters;
        let mut txn = Txn::new(&self.inner.store);
        let mut delta = delta;
        {
            let bitmaps = self.read_gate();
            // Planned before the writer lock: someone deleted since then joins nothing.
            delta.drop_absent(&bitmaps);
            stage(&mut txn, &mut counters, &bitmaps, &delta);
        }
        self.commit(&mut writer, txn, counters, &delta)?;
        self.release(writer)?;
        Ok(())
    }

    /// Rolls the hours of the days before `now`'s day minus
    /// [`HOUR_DAYS`](crate::index::HOUR_DAYS) up into days, a day a commit, until none
    /// is left (a commit that changes people rolls up a day too, so that the hours stop
    /// growing without this).
    pub(crate) fn roll_up_hours(&self, now: i64) -> Result<()> {
        while self.read_gate().hours_from() < crate::index::hours_start(now) {
            let mut writer = self.writer()?;
            let Some(delta) = self.read_gate().roll_up(now, |_| false) else {
                return Ok(());
            };
            let txn = Txn::new(&self.inner.store);
            let counters = writer.counters;
            self.commit(&mut writer, txn, counters, &delta)?;
            self.release(writer)?;
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
        let mut loaded = Ok(LogState::default());
        let seq = writer.commit_seq + 1;
        // What a restore writes is not in the change feed: a cursor from before it has
        // expired. The writer sees the new state during the commit (a drop of old changes
        // right after it writes the new record).
        let feed = writer.feed.map(|state| FeedState {
            since: seq,
            ..state
        });
        writer.feed = feed;
        if let Some(state) = feed {
            txn.put::<MetaF>(
                meta_keys::FEED.to_vec(),
                MetaValue::Feed {
                    keep_seconds: state.keep_seconds,
                    since: state.since,
                },
            );
        }
        // A restore writes chunks whole and no log (its database held no records, so no
        // log, when it began): nothing here is freshly allocated.
        self.commit_inner(&mut writer, txn, counters, None, Vec::new(), |gate| {
            if reload {
                match Bitmaps::load(store, seq) {
                    Ok((b, log)) => {
                        *gate = b;
                        loaded = Ok(log);
                    }
                    Err(e) => loaded = Err(e),
                }
            }
        })?;
        if let Some(state) = writer.feed {
            self.inner.feed_since.store(state.since, Ordering::SeqCst);
        }
        let log = loaded?;
        if reload {
            writer.log = log;
        }
        if reload {
            *self
                .inner
                .catalog
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = Catalog::load(store)?;
        }
        self.release(writer)?;
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
        self.release(writer)?;
        Ok(())
    }

    /// Ends a commit: releases the writer lock and, with [`Durability::Flush`], makes
    /// the commit durable before the call returns.
    pub(crate) fn release(&self, mut writer: MutexGuard<'_, Writer>) -> Result<()> {
        self.fit_budget(&mut writer)?;
        drop(writer);
        if self.inner.config.durability == Durability::Flush {
            self.make_durable()?;
        }
        Ok(())
    }

    /// Makes every write so far durable: sled's flush, fsync of the files and
    /// directories, then the `COMMIT` file. See the [module docs](crate#durability-and-atomicity).
    ///
    /// # Errors
    /// [`Error::Storage`](crate::Error::Storage) when flushing or fsync fails; the handle then refuses writes.
    pub fn flush(&self) -> Result<()> {
        self.make_durable()
    }

    /// Flushes (as [`flush`](ProfileDb::flush)), checkpoints when an eighth of
    /// [`Builder::checkpoint_bytes`](crate::Builder::checkpoint_bytes) or more was committed since the last checkpoint
    /// (see the [module docs](crate#checkpoints)), and closes this handle.
    ///
    /// # Errors
    /// As [`flush`](ProfileDb::flush) and [`checkpoint`](ProfileDb::checkpoint).
    pub fn close(self) -> Result<()> {
        if self.inner.poisoned.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.make_durable()?;
        if self.inner.checkpoint_at_close() {
            {
                let mut writer = self.restore_writer()?;
                self.fold_locked(&mut writer)?;
                self.prune_expired(&mut writer)?;
            }
            self.inner.store.kv().checkpoint().map_err(|e| {
                self.poison();
                Error::from(e)
            })?;
        }
        Ok(())
    }
}

/// What [`ProfileDb::compact`] did: bytes on disk (as sled counts them) before and after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compaction {
    /// Bytes on disk before.
    pub bytes_before: u64,
    /// Bytes on disk after.
    pub bytes_after: u64,
}
