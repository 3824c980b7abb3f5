//! Roaring-bitmap indexes over person ids (DESIGN.md section 4).
//!
//! Every bitmap is kept whole in memory, loaded at open, and persisted in the `bitmaps`
//! family split into chunks by `pid >> 16`. A commit does not rewrite chunks: it writes
//! one small `bitmap_log` record (in the same sled batch as the data change) holding the
//! membership changes it made, and the writer remembers which chunks are dirty. A fold
//! ([`LogState`]) rewrites each dirty chunk once and deletes the folded log records, in
//! one atomic batch: when the log passes a bound, and at every checkpoint. Open loads the
//! chunks and replays the log in commit order. The in-memory bitmaps change only after a
//! commit lands, inside the commit gate, so a reader never sees a bitmap that disagrees
//! with committed data.
//!
//! The bitmaps ([`BitmapKey`]): all people; globally unsubscribed; each topic's explicit
//! opt-ins and opt-outs; each segment; each related object and object type; each device
//! platform; people who ever tracked each event name, and who tracked it in each hour of
//! the last [`HOUR_DAYS`] days and on each day before ([`Bitmaps::roll_up`]); people who
//! ever had each delivery metric; people who have each attribute; equality bitmaps of attributes declared
//! indexed; and the bit slices of ranged attributes' ordered indexes ([`range`]).

pub mod range;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use roaring::RoaringBitmap;

use crate::error::Result;
use crate::model::Value;
pub(crate) use crate::store::bitmaps::BitmapKey;
use crate::store::bitmaps::{decode_chunk, decode_log, encode_chunk, encode_log, LogChange};
use crate::store::records::{AttributesRecord, MetaValue, PersonRecord};
use crate::store::{corrupted, meta_keys, BitmapLogF, BitmapsF, Family, KeyBuf, MetaF, Store};

/// The largest log record a commit writes, estimated as 5 bytes per pid plus the ids: a
/// bigger commit splits its changes over several parts (keys `seq + part`). Far under
/// sled's blob threshold, so a log record is always an inline value.
pub const LOG_PART_BYTES: usize = 32 << 10;

/// The log's bound: past this many records, or this many bytes, the writer folds it
/// into the chunks after its commit, so open replays little.
pub const LOG_FOLD_RECORDS: usize = 4_096;
/// See [`LOG_FOLD_RECORDS`].
pub const LOG_FOLD_BYTES: u64 = 4 << 20;

/// What the `bitmap_log` family holds that the chunks do not yet: its keys (in order),
/// their value bytes, and every chunk a logged change touched.
#[derive(Debug, Default, Clone)]
pub struct LogState {
    /// Keys of the log records not yet folded.
    pub keys: Vec<Vec<u8>>,
    /// Their encoded size.
    pub bytes: u64,
    /// (bitmap, chunk) touched by a logged change.
    pub dirty: BTreeSet<(BitmapKey, u16)>,
}

impl LogState {
    /// Whether the log is past its bound and should be folded.
    pub fn over_bound(&self) -> bool {
        self.keys.len() >= LOG_FOLD_RECORDS || self.bytes >= LOG_FOLD_BYTES
    }
}

/// The hour number (hours since 1970-01-01T00:00Z) of a unix time.
pub fn hour_of(unix_seconds: i64) -> i64 {
    unix_seconds.div_euclid(3_600)
}

/// The day number (days since 1970-01-01, UTC) of a unix time.
pub fn day_of(unix_seconds: i64) -> i64 {
    unix_seconds.div_euclid(86_400)
}

/// How many days back from the clock's today the per-event-name occurrence bitmaps are
/// kept per hour: the days before are rolled up into one bitmap a day, so the number of
/// these bitmaps grows by one a day and name with history, not 24. A `within` window of
/// up to 8 days starts inside the hours, so only the people seen in its first hour alone
/// are checked (one by one); a longer one checks those seen on its first day alone,
/// against that day's event blocks.
pub const HOUR_DAYS: i64 = 8;

/// The first day kept in hours at clock time `now`.
pub fn hours_start(now: i64) -> i64 {
    day_of(now).saturating_sub(HOUR_DAYS)
}

/// The occurrence bitmap of an event of `kind`/`name` in hour `hour`, when the days
/// before `hours_from` are kept in days.
pub fn event_bucket(kind: &str, name: &str, hour: i64, hours_from: i64) -> BitmapKey {
    let day = hour.div_euclid(24);
    if day < hours_from {
        BitmapKey::EventDay(kind.to_owned(), name.to_owned(), day)
    } else {
        BitmapKey::EventHour(kind.to_owned(), name.to_owned(), hour)
    }
}

/// An occurrence bitmap's kind, name, and the first and past-the-last unix second of
/// its bucket (`None` for any other bitmap).
fn bucket(key: &BitmapKey) -> Option<(&str, &str, i64, i64)> {
    let (kind, name, n, len) = match key {
        BitmapKey::EventHour(kind, name, hour) => (kind, name, *hour, 3_600),
        BitmapKey::EventDay(kind, name, day) => (kind, name, *day, 86_400),
        _ => return None,
    };
    let start = n.saturating_mul(len);
    Some((kind, name, start, n.saturating_add(1).saturating_mul(len)))
}

/// The members of `bitmap` in chunk `chunk`.
pub fn chunk_of(bitmap: &RoaringBitmap, chunk: u16) -> RoaringBitmap {
    let lo = u32::from(chunk) << 16;
    let mut mask = RoaringBitmap::new();
    mask.insert_range(lo..=lo | 0xFFFF);
    bitmap & mask
}

/// What one bitmap is estimated to take in memory: its serialized size (which follows
/// its containers as they are held: 2 bytes a member of an array, 8 KiB a bitset, 4
/// bytes a run, 8 bytes a container's header), its key's stored form, and
/// [`ENTRY_BYTES`] for the map entry.
pub fn footprint(key: &BitmapKey, bitmap: &RoaringBitmap) -> u64 {
    entry_bytes(key) + bitmap.serialized_size() as u64
}

/// The part of a bitmap's [`footprint`] that does not depend on its members.
fn entry_bytes(key: &BitmapKey) -> u64 {
    key.chunk_key(0).len() as u64 + ENTRY_BYTES
}

/// The map entry of one bitmap: its key, the bitmap's own header and the hash map's
/// slot.
pub const ENTRY_BYTES: u64 = 96;

/// Every bitmap, in memory.
#[derive(Debug, Clone)]
pub struct Bitmaps {
    map: HashMap<BitmapKey, RoaringBitmap>,
    /// The first day whose occurrences are kept per hour (`meta/buckets`); `i64::MIN`
    /// when nothing was rolled up yet.
    hours_from: i64,
    /// The sum of every bitmap's [`footprint`], kept by each change.
    bytes: u64,
}

impl Default for Bitmaps {
    fn default() -> Bitmaps {
        Bitmaps {
            map: HashMap::new(),
            hours_from: i64::MIN,
            bytes: 0,
        }
    }
}

impl Bitmaps {
    /// Reads every stored bitmap chunk into memory.
    ///
    /// # Errors
    /// [`Error::Corrupted`](crate::Error::Corrupted) for a damaged key or chunk;
    /// [`Error::Storage`](crate::Error::Storage) when reading fails.
    /// Then replays the `bitmap_log` records in key (commit) order; a record of a
    /// commit after `commit_seq` cannot exist (the log is written in the commit's own
    /// batch) and is [`Error::Corrupted`](crate::Error::Corrupted).
    pub fn load(store: &Store, commit_seq: u64) -> Result<(Bitmaps, LogState)> {
        let mut bitmaps = Bitmaps::default();
        match store.get::<MetaF>(meta_keys::BUCKETS)? {
            Some(MetaValue::Buckets { hours_from }) => bitmaps.hours_from = hours_from,
            Some(_) => {
                return Err(corrupted(
                    Family::Meta,
                    meta_keys::BUCKETS,
                    "expected where the per-hour event bitmaps begin",
                ))
            }
            None => {}
        }
        for item in store.scan::<BitmapsF>(&[], false, None) {
            let (key, bytes) = item?;
            let (bk, chunk) = BitmapKey::decode_chunk_key(&key)?;
            bitmaps.load_chunk(bk, decode_chunk(&key, chunk, &bytes)?);
        }
        let mut log = LogState::default();
        for item in store.kv().range(
            Family::BitmapLog,
            (std::ops::Bound::Unbounded, std::ops::Bound::Unbounded),
            false,
        ) {
            let (key, raw) = item?;
            let (seq, _) = BitmapLogF::decode_key(&key)?;
            if seq > commit_seq {
                return Err(corrupted(
                    Family::BitmapLog,
                    &key,
                    format!("log record of commit #{seq}, after the last commit #{commit_seq}"),
                ));
            }
            let entries = crate::store::decode_value::<BitmapLogF>(&key, &raw)?;
            for (bk, add, remove) in decode_log(&key, entries)? {
                let b = bitmaps.map.entry(bk.clone()).or_default();
                let mut chunks = BTreeSet::new();
                for &pid in &add {
                    b.insert(pid);
                    chunks.insert((pid >> 16) as u16);
                }
                for &pid in &remove {
                    b.remove(pid);
                    chunks.insert((pid >> 16) as u16);
                }
                for c in chunks {
                    log.dirty.insert((bk.clone(), c));
                }
            }
            log.bytes += raw.len() as u64;
            log.keys.push(key);
        }
        bitmaps.map.retain(|_, b| !b.is_empty());
        bitmaps.bytes = bitmaps.recount_bytes();
        Ok((bitmaps, log))
    }

    /// The stored form of chunk `chunk` of `key` as the bitmaps are now: (chunk key,
    /// serialized chunk, or `None` when empty and to be deleted).
    pub fn chunk_write(&self, key: &BitmapKey, chunk: u16) -> (Vec<u8>, Option<Vec<u8>>) {
        let c = self
            .map
            .get(key)
            .map(|b| chunk_of(b, chunk))
            .unwrap_or_default();
        let bytes = (!c.is_empty()).then(|| encode_chunk(&c));
        (key.chunk_key(chunk), bytes)
    }

    /// The bitmap, if it has ever had a member.
    pub fn get(&self, key: &BitmapKey) -> Option<&RoaringBitmap> {
        self.map.get(key)
    }

    /// Whether `pid` is in the bitmap.
    pub fn contains(&self, key: &BitmapKey, pid: u32) -> bool {
        self.map.get(key).is_some_and(|b| b.contains(pid))
    }

    /// Every bitmap key with at least one member.
    pub fn keys(&self) -> impl Iterator<Item = &BitmapKey> {
        self.map
            .iter()
            .filter(|(_, b)| !b.is_empty())
            .map(|(k, _)| k)
    }

    /// Every (key, bitmap).
    pub fn iter(&self) -> impl Iterator<Item = (&BitmapKey, &RoaringBitmap)> {
        self.map.iter()
    }

    /// The memory the bitmaps are estimated to take (the sum of their [`footprint`]s),
    /// kept as they change.
    pub fn heap_bytes(&self) -> u64 {
        self.bytes
    }

    /// [`heap_bytes`](Self::heap_bytes) counted afresh, bitmap by bitmap.
    pub fn recount_bytes(&self) -> u64 {
        self.map.iter().map(|(k, b)| footprint(k, b)).sum()
    }

    /// The first day whose occurrences are kept per hour (`i64::MIN`: every day).
    pub fn hours_from(&self) -> i64 {
        self.hours_from
    }

    /// The people with an occurrence of `kind`/`name` at or after `since`, from the
    /// occurrence bitmaps: those certain to have one (in a bucket that starts at or after
    /// `since`), and those who may (in the bucket `since` falls inside only, to be checked
    /// one by one).
    pub fn occurrences_since(
        &self,
        kind: &str,
        name: &str,
        since: i64,
    ) -> (RoaringBitmap, RoaringBitmap) {
        let mut later: Vec<&RoaringBitmap> = Vec::new();
        let mut edge = RoaringBitmap::new();
        for (key, members) in &self.map {
            let Some((k, n, start, end)) = bucket(key) else {
                continue;
            };
            if k != kind || n != name {
                continue;
            }
            if start >= since {
                later.push(members);
            } else if end > since {
                edge |= members;
            }
        }
        // One multi-way union of the many small bitmaps, not one merge per bucket.
        let sure = roaring::MultiOps::union(later);
        edge -= &sure;
        (sure, edge)
    }

    /// The changes that roll the hours of one more day before `today - HOUR_DAYS` up into
    /// a day, `None` when those are all rolled up already: every member of that day's
    /// hour bitmaps joins its day bitmap and leaves the hour's, and the delta carries the
    /// new start of the hours (written to `meta/buckets` by its commit): the day after
    /// the one rolled up, or `today - HOUR_DAYS` when no hours before that are left. One
    /// day at a time, so that no commit carries more than a day's occurrences (a
    /// database of an earlier build, with hours for all time, catches up a day a
    /// commit). `gone`: the people the commit deletes, who join nothing.
    pub fn roll_up(&self, now: i64, gone: impl Fn(u32) -> bool) -> Option<Delta> {
        let target = hours_start(now);
        if target <= self.hours_from {
            return None;
        }
        // The days before the target that still have hours, in order.
        let days: BTreeSet<i64> = self
            .map
            .keys()
            .filter_map(|key| match key {
                BitmapKey::EventHour(_, _, hour) => Some(hour.div_euclid(24)),
                _ => None,
            })
            .filter(|d| *d < target)
            .collect();
        let mut days = days.into_iter();
        let (day, later) = (days.next(), days.next());
        let mut delta = Delta {
            // Past the day rolled up, up to the next day with hours (nothing between);
            // never back (an hour bitmap before the start can only be damage, which
            // this rolls up as well).
            hours_from: Some(later.unwrap_or(target).max(self.hours_from)),
            ..Delta::default()
        };
        let Some(day) = day else {
            return Some(delta);
        };
        for (key, members) in &self.map {
            let BitmapKey::EventHour(kind, name, hour) = key else {
                continue;
            };
            if hour.div_euclid(24) != day {
                continue;
            }
            let into = BitmapKey::EventDay(kind.clone(), name.clone(), day);
            for pid in members {
                if !gone(pid) {
                    delta.set(into.clone(), pid, true);
                }
                delta.set(key.clone(), pid, false);
            }
        }
        Some(delta)
    }

    /// Adds a chunk read from disk (its footprint is counted once the load is whole).
    fn load_chunk(&mut self, key: BitmapKey, chunk: RoaringBitmap) {
        *self.map.entry(key).or_default() |= chunk;
    }

    /// Applies committed changes.
    pub fn apply(&mut self, delta: &Delta) {
        if let Some(from) = delta.hours_from {
            self.hours_from = from;
        }
        for (key, members) in &delta.changes {
            let b = self.map.entry(key.clone()).or_default();
            // The key's share once; the members' before and after.
            let entry = entry_bytes(key);
            let size = |b: &RoaringBitmap| {
                if b.is_empty() {
                    0
                } else {
                    entry + b.serialized_size() as u64
                }
            };
            let before = size(b);
            for (pid, add) in members {
                if *add {
                    b.insert(*pid);
                } else {
                    b.remove(*pid);
                }
            }
            let after = size(b);
            if after == 0 {
                self.map.remove(key);
            }
            self.bytes = self.bytes.saturating_sub(before).saturating_add(after);
        }
    }

    /// Replaces one bitmap whole (segment rebuilds).
    pub fn set(&mut self, key: BitmapKey, bitmap: RoaringBitmap) {
        let before = self.map.get(&key).map_or(0, |b| footprint(&key, b));
        let after = if bitmap.is_empty() {
            0
        } else {
            footprint(&key, &bitmap)
        };
        if bitmap.is_empty() {
            self.map.remove(&key);
        } else {
            self.map.insert(key, bitmap);
        }
        self.bytes = self.bytes.saturating_sub(before).saturating_add(after);
    }
}

/// `bitmap_log` records to write: (key, value).
pub type LogRecords = Vec<(Vec<u8>, crate::store::bitmaps::LogEntries)>;

/// Bitmap changes staged by one batch: the last word for each (bitmap, person).
#[derive(Debug, Default, Clone)]
pub struct Delta {
    changes: HashMap<BitmapKey, BTreeMap<u32, bool>>,
    /// A new start of the per-hour occurrence bitmaps ([`Bitmaps::roll_up`]).
    hours_from: Option<i64>,
}

impl Delta {
    /// The new start of the per-hour occurrence bitmaps this delta sets, if any.
    pub fn hours_from(&self) -> Option<i64> {
        self.hours_from
    }

    /// Adds `later`'s changes over these: where both change one (bitmap, person),
    /// `later` has the last word.
    pub fn extend(&mut self, later: Delta) {
        for (key, members) in later.changes {
            self.changes.entry(key).or_default().extend(members);
        }
        if later.hours_from.is_some() {
            self.hours_from = later.hours_from;
        }
    }

    /// Records that `pid` is (`add`) or is not in `key` after the batch.
    pub fn set(&mut self, key: BitmapKey, pid: u32, add: bool) {
        self.changes.entry(key).or_default().insert(pid, add);
    }

    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.hours_from.is_none() && self.changes.values().all(BTreeMap::is_empty)
    }

    /// Membership of `pid` in `key` after the batch, given the committed bitmaps.
    pub fn contains(&self, bitmaps: &Bitmaps, key: &BitmapKey, pid: u32) -> bool {
        match self.changes.get(key).and_then(|m| m.get(&pid)) {
            Some(add) => *add,
            None => bitmaps.contains(key, pid),
        }
    }

    /// Bitmap `key` as it will be after the batch: the committed one with this batch's
    /// changes to it applied (`None` when it has no member either way).
    pub fn overlay<'b>(
        &self,
        bitmaps: &'b Bitmaps,
        key: &BitmapKey,
    ) -> Option<Cow<'b, RoaringBitmap>> {
        let committed = bitmaps.get(key);
        let Some(changes) = self.changes.get(key).filter(|m| !m.is_empty()) else {
            return committed.map(Cow::Borrowed);
        };
        let mut b = committed.cloned().unwrap_or_default();
        for (pid, add) in changes {
            if *add {
                b.insert(*pid);
            } else {
                b.remove(*pid);
            }
        }
        (!b.is_empty()).then_some(Cow::Owned(b))
    }

    /// Who enters and who leaves each segment, against `bitmaps` (the committed state),
    /// for the change feed.
    pub fn segment_moves(&self, bitmaps: &Bitmaps) -> Vec<crate::feed::SegmentMove> {
        let mut out: Vec<crate::feed::SegmentMove> = Vec::new();
        for (key, members) in &self.changes {
            let BitmapKey::Segment(id) = key else {
                continue;
            };
            let (mut entered, mut exited) = (RoaringBitmap::new(), RoaringBitmap::new());
            for (&pid, &add) in members {
                if bitmaps.contains(key, pid) != add {
                    if add {
                        entered.insert(pid);
                    } else {
                        exited.insert(pid);
                    }
                }
            }
            if !entered.is_empty() || !exited.is_empty() {
                out.push((*id, entered, exited));
            }
        }
        out.sort_by_key(|m| m.0);
        out
    }

    /// Drops the additions of people who are not in `bitmaps` (deleted since the delta
    /// was planned, outside the writer lock).
    pub fn drop_absent(&mut self, bitmaps: &Bitmaps) {
        for members in self.changes.values_mut() {
            members.retain(|pid, add| !*add || bitmaps.contains(&BitmapKey::All, *pid));
        }
        self.changes.retain(|_, m| !m.is_empty());
    }

    /// Drops changes that change nothing against `bitmaps`.
    pub fn prune(&mut self, bitmaps: &Bitmaps) {
        for (key, members) in self.changes.iter_mut() {
            let committed = bitmaps.get(key);
            members.retain(|pid, add| committed.is_some_and(|b| b.contains(*pid)) != *add);
        }
        self.changes.retain(|_, m| !m.is_empty());
    }

    /// The `bitmap_log` records of commit `seq` for the changes that change something
    /// against `bitmaps` (the committed state): (key, value) in key order, split into
    /// parts of about [`LOG_PART_BYTES`] at most; with every (bitmap, chunk) they touch.
    pub fn log_records(&self, seq: u64, bitmaps: &Bitmaps) -> (LogRecords, Vec<(BitmapKey, u16)>) {
        let mut by_id: BTreeMap<Vec<u8>, LogChange> = BTreeMap::new();
        let mut dirty = Vec::new();
        for (key, members) in &self.changes {
            let (mut add, mut remove) = (Vec::new(), Vec::new());
            for (&pid, &member) in members {
                if bitmaps.contains(key, pid) == member {
                    continue;
                }
                if member {
                    add.push(pid);
                } else {
                    remove.push(pid);
                }
                let chunk = (pid >> 16) as u16;
                if dirty.last() != Some(&(key, chunk)) {
                    dirty.push((key, chunk));
                }
            }
            if !add.is_empty() || !remove.is_empty() {
                by_id.insert(key.prefix(), (key.clone(), add, remove));
            }
        }
        let mut records = Vec::new();
        let mut part: Vec<LogChange> = Vec::new();
        let mut size = 0usize;
        let flush = |part: &mut Vec<LogChange>, records: &mut Vec<_>| {
            if !part.is_empty() {
                let n = u16::try_from(records.len()).unwrap_or(u16::MAX);
                records.push((BitmapLogF::key(seq, n), encode_log(part)));
                part.clear();
            }
        };
        for (id, (key, add, remove)) in by_id {
            // One bitmap's changes may exceed a part themselves: cut them in pieces.
            let mut pids: Vec<(u32, bool)> = add
                .into_iter()
                .map(|p| (p, true))
                .chain(remove.into_iter().map(|p| (p, false)))
                .collect();
            pids.sort_unstable();
            let per = (LOG_PART_BYTES / 5).max(1);
            for piece in pids.chunks(per) {
                let cost = id.len() + 8 + 5 * piece.len();
                if size + cost > LOG_PART_BYTES || part.last().is_some_and(|c| c.0 == key) {
                    flush(&mut part, &mut records);
                    size = 0;
                }
                let add = piece.iter().filter(|p| p.1).map(|p| p.0).collect();
                let remove = piece.iter().filter(|p| !p.1).map(|p| p.0).collect();
                part.push((key.clone(), add, remove));
                size += cost;
            }
        }
        flush(&mut part, &mut records);
        let dirty = dirty.into_iter().map(|(k, c)| (k.clone(), c)).collect();
        (records, dirty)
    }

    /// Splits the changes into deltas covering at most `people` people each (every
    /// change of one person stays in one part).
    pub fn split_by_person(self, people: usize) -> Vec<Delta> {
        let mut by_pid: BTreeMap<u32, Vec<(BitmapKey, bool)>> = BTreeMap::new();
        for (key, members) in self.changes {
            for (pid, add) in members {
                by_pid.entry(pid).or_default().push((key.clone(), add));
            }
        }
        let mut parts = Vec::new();
        // The new start of the hours, if any, goes with the first part.
        let mut cur = Delta {
            hours_from: self.hours_from,
            ..Delta::default()
        };
        let mut n = 0;
        for (pid, changes) in by_pid {
            for (key, add) in changes {
                cur.set(key, pid, add);
            }
            n += 1;
            if n >= people.max(1) {
                parts.push(std::mem::take(&mut cur));
                n = 0;
            }
        }
        if !cur.is_empty() {
            parts.push(cur);
        }
        parts
    }

    /// Every change, as (bitmap, pid, member after).
    pub fn iter(&self) -> impl Iterator<Item = (&BitmapKey, u32, bool)> {
        self.changes
            .iter()
            .flat_map(|(k, m)| m.iter().map(move |(p, a)| (k, *p, *a)))
    }
}

/// The bitmaps a person's identifiers and attributes put them in: `HasAttr` for each
/// attribute and identifier, `Unsubscribed`, `TopicIn`/`TopicOut`, `AttrEq` for the
/// declared-indexed attributes in `indexed`, and `RangeHas`/`RangeBit` (the ordered
/// index's bit slices, [`range`]) for the ranged attributes in `ranged` that hold a
/// number.
pub fn attribute_keys(
    person: Option<&PersonRecord>,
    attrs: Option<&AttributesRecord>,
    indexed: &BTreeSet<String>,
    ranged: &BTreeSet<String>,
) -> BTreeSet<BitmapKey> {
    let mut out = BTreeSet::new();
    if let Some(p) = person {
        for (name, v) in [("id", &p.id), ("email", &p.email), ("phone", &p.phone)] {
            if v.is_some() {
                out.insert(BitmapKey::HasAttr(name.to_owned()));
            }
        }
    }
    let Some(attrs) = attrs else {
        return out;
    };
    for (name, value) in &attrs.values {
        out.insert(BitmapKey::HasAttr(name.clone()));
        if indexed.contains(name) {
            out.insert(BitmapKey::AttrEq(name.clone(), eq_text(value)));
        }
        if ranged.contains(name) {
            if let Some(x) = range::number(value) {
                out.extend(range::keys_of(name, x));
            }
        }
    }
    if attrs
        .values
        .get("unsubscribed")
        .is_some_and(Value::is_truthy)
    {
        out.insert(BitmapKey::Unsubscribed);
    }
    let topics = attrs
        .values
        .get("cio_subscription_preferences")
        .and_then(Value::as_map)
        .and_then(|m| m.get("topics"))
        .and_then(Value::as_map);
    for (name, value) in topics.into_iter().flatten() {
        let Some(n) = topic_number(name) else {
            continue;
        };
        match value {
            Value::Bool(true) => {
                out.insert(BitmapKey::TopicIn(n));
            }
            Value::Bool(false) => {
                out.insert(BitmapKey::TopicOut(n));
            }
            // Customer.io's truthiness does not apply here: only booleans are explicit.
            _ => {}
        }
    }
    out
}

/// `topic_3` → 3.
pub fn topic_number(name: &str) -> Option<u32> {
    name.strip_prefix("topic_")?.parse().ok()
}

/// The canonical text of a value for equality bitmaps: compact JSON, with whole floats
/// written as integers so `3` and `3.0` are equal.
pub fn eq_text(value: &Value) -> String {
    match value {
        Value::Float(x) if x.fract() == 0.0 && x.abs() < 9.0e15 => (*x as i64).to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn a_delta_logs_only_what_changes_and_dirties_only_its_chunks() {
        let mut bitmaps = Bitmaps::default();
        let mut big = RoaringBitmap::new();
        big.insert_range(0..300_000);
        bitmaps.set(BitmapKey::All, big);
        let mut d = Delta::default();
        d.set(BitmapKey::All, 300_001, true);
        d.set(BitmapKey::All, 5, false);
        d.set(BitmapKey::All, 6, true); // already a member: nothing to log
        let (records, dirty) = d.log_records(7, &bitmaps);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].0, BitmapLogF::key(7, 0));
        assert_eq!(
            records[0].1,
            vec![(BitmapKey::All.prefix(), vec![300_001], vec![5])]
        );
        assert_eq!(dirty, vec![(BitmapKey::All, 0), (BitmapKey::All, 4)]);
        bitmaps.apply(&d);
        assert!(bitmaps.contains(&BitmapKey::All, 300_001));
        assert!(!bitmaps.contains(&BitmapKey::All, 5));
    }

    #[test]
    fn a_huge_delta_is_split_into_parts_under_the_bound() {
        let bitmaps = Bitmaps::default();
        let mut d = Delta::default();
        for pid in 0..50_000 {
            d.set(BitmapKey::All, pid, true);
            d.set(BitmapKey::HasAttr("a".into()), pid * 3, true);
        }
        let (records, _) = d.log_records(9, &bitmaps);
        assert!(records.len() > 2, "{} parts", records.len());
        let mut back = Bitmaps::default();
        for (i, (key, entries)) in records.into_iter().enumerate() {
            assert_eq!(key, BitmapLogF::key(9, i as u16));
            let bytes = crate::store::codec::encode(24, &key, &entries).unwrap();
            assert!(bytes.len() <= LOG_PART_BYTES + 64, "{} bytes", bytes.len());
            for (bk, add, remove) in decode_log(&key, entries).unwrap() {
                assert!(remove.is_empty());
                let b = back.map.entry(bk).or_default();
                add.into_iter().for_each(|p| {
                    b.insert(p);
                });
            }
        }
        assert_eq!(back.get(&BitmapKey::All).unwrap().len(), 50_000);
        assert_eq!(
            back.get(&BitmapKey::HasAttr("a".into())).unwrap().len(),
            50_000
        );
    }

    /// The staged view of a batch: committed bitmaps with the pending changes applied,
    /// which is what an ordered-index comparison inside a commit reads.
    #[test]
    fn an_overlay_is_the_bitmap_after_the_batch() {
        let mut bitmaps = Bitmaps::default();
        let name = "age".to_owned();
        let committed = BTreeSet::new();
        let ranged: BTreeSet<String> = [name.clone()].into_iter().collect();
        let with = |age: i64| {
            let mut a = AttributesRecord::default();
            a.values.insert(name.clone(), Value::Int(age));
            a
        };
        let mut d = Delta::default();
        for (pid, age) in [(1, 20), (2, 50)] {
            for k in attribute_keys(None, Some(&with(age)), &committed, &ranged) {
                d.set(k, pid, true);
            }
        }
        bitmaps.apply(&d);
        // In the batch: 1 turns 40, 2 loses the attribute, 3 arrives at 30.
        let mut d = Delta::default();
        let before = |age| attribute_keys(None, Some(&with(age)), &committed, &ranged);
        for (pid, old, new) in [
            (1, Some(20), Some(40)),
            (2, Some(50), None),
            (3, None, Some(30)),
        ] {
            let old = old.map(before).unwrap_or_default();
            let new = new.map(before).unwrap_or_default();
            for k in old.difference(&new) {
                d.set(k.clone(), pid, false);
            }
            for k in new.difference(&old) {
                d.set(k.clone(), pid, true);
            }
        }
        let staged = range::compare(&name, range::Order::Ge, 30.0, None, |k| {
            d.overlay(&bitmaps, k)
        });
        assert_eq!(staged, [1, 3].into_iter().collect());
        let committed_view = range::compare(&name, range::Order::Ge, 30.0, None, |k| {
            bitmaps.get(k).map(Cow::Borrowed)
        });
        assert_eq!(committed_view, [2].into_iter().collect());
    }
}

/// What a batch changed about each person, as far as the bitmaps care.
#[derive(Debug, Default, Clone)]
pub struct Touches {
    people: BTreeMap<u32, Touch>,
}

/// What one batch changed about one person.
#[derive(Debug, Default, Clone)]
pub struct Touch {
    /// Created in this batch.
    pub created: bool,
    /// Deleted in this batch (which overrides everything else).
    pub deleted: bool,
    /// Identifiers or attributes changed.
    pub attrs: bool,
    /// Devices changed.
    pub devices: bool,
    /// Relationships to these objects changed.
    pub objects: BTreeSet<(u32, String)>,
    /// Tracked these (kind, name, hour) events.
    pub events: BTreeSet<(String, String, i64)>,
    /// Lost (expired) occurrences of these (kind, name, hour) events: the hour bitmap is
    /// re-checked against what is left.
    pub events_gone: BTreeSet<(String, String, i64)>,
    /// Had these delivery metrics.
    pub metrics: BTreeSet<String>,
    /// Absorbed these people by merge (their delivery-metric history; moved events are
    /// in `events`).
    pub absorbed: Vec<u32>,
    /// Manual segments joined (`true`) or left (`false`).
    pub segments: BTreeMap<u32, bool>,
}

impl Touches {
    /// The touch record of `pid`.
    pub fn of(&mut self, pid: u32) -> &mut Touch {
        self.people.entry(pid).or_default()
    }

    /// Whether nothing was touched.
    pub fn is_empty(&self) -> bool {
        self.people.is_empty()
    }

    /// Whether `pid` was deleted in this batch.
    pub fn is_deleted(&self, pid: u32) -> bool {
        self.people.get(&pid).is_some_and(|t| t.deleted)
    }

    /// Every touched person.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &Touch)> {
        self.people.iter().map(|(p, t)| (*p, t))
    }
}

/// Computes the bitmap changes of a batch from what it touched, reading the staged
/// state (after) and the stored state (before) through `txn`, and the committed bitmaps.
/// `hours_from`: the first day whose occurrences are kept per hour after the batch.
pub fn plan(
    txn: &mut crate::store::Txn<'_>,
    touches: &Touches,
    bitmaps: &Bitmaps,
    indexed: &BTreeSet<String>,
    ranged: &BTreeSet<String>,
    hours_from: i64,
) -> Result<Delta> {
    use crate::store::{pid_key, AttributesF, DevicesF, PeopleF, RelationshipsF};
    let mut delta = Delta::default();
    for (pid, t) in touches.iter() {
        if t.deleted {
            for key in bitmaps.keys() {
                if bitmaps.contains(key, pid) {
                    delta.set(key.clone(), pid, false);
                }
            }
            continue;
        }
        if t.created {
            delta.set(BitmapKey::All, pid, true);
        }
        if t.attrs || t.created {
            let pk = pid_key(pid);
            let before = attribute_keys(
                txn.base::<PeopleF>(&pk)?.as_ref(),
                txn.base::<AttributesF>(&pk)?.as_ref(),
                indexed,
                ranged,
            );
            let after = attribute_keys(
                txn.get::<PeopleF>(&pk)?.as_ref(),
                txn.get::<AttributesF>(&pk)?.as_ref(),
                indexed,
                ranged,
            );
            for k in before.difference(&after) {
                delta.set(k.clone(), pid, false);
            }
            for k in after.difference(&before) {
                delta.set(k.clone(), pid, true);
            }
        }
        if t.devices {
            let mut platforms = BTreeSet::new();
            for key in txn.keys(Family::Devices, &pid_key(pid))? {
                if let Some(d) = txn.get::<DevicesF>(&key)? {
                    platforms.insert(d.platform);
                }
            }
            let known: BTreeSet<String> = bitmaps
                .keys()
                .filter_map(|k| match k {
                    BitmapKey::Platform(p) => Some(p.clone()),
                    _ => None,
                })
                .chain(platforms.iter().cloned())
                .collect();
            for p in known {
                let has = platforms.contains(&p);
                delta.set(BitmapKey::Platform(p), pid, has);
            }
        }
        let mut types = BTreeSet::new();
        for (type_id, object_id) in &t.objects {
            let exists = txn
                .get::<RelationshipsF>(&RelationshipsF::key(pid, *type_id, object_id))?
                .is_some();
            delta.set(BitmapKey::Related(*type_id, object_id.clone()), pid, exists);
            types.insert(*type_id);
        }
        for type_id in types {
            let prefix = KeyBuf::new().u32(pid).u32(type_id).done();
            let any = !txn.keys(Family::Relationships, &prefix)?.is_empty();
            delta.set(BitmapKey::RelatedType(type_id), pid, any);
        }
        for (kind, name, hour) in &t.events {
            delta.set(BitmapKey::Event(kind.clone(), name.clone()), pid, true);
            delta.set(event_bucket(kind, name, *hour, hours_from), pid, true);
        }
        // What is left of the person's events after this commit, read once from their
        // timeline when any left: (kind, name) → the buckets with an occurrence.
        let mut left: BTreeMap<(String, String), BTreeSet<BitmapKey>> = BTreeMap::new();
        if !t.events_gone.is_empty() {
            let timeline = txn.values_between::<crate::store::ActivityF>(
                crate::store::prefix_bounds(&pid_key(pid)),
            )?;
            for (key, rec) in timeline {
                if let Some((kind, name)) = rec.tracked() {
                    let time = crate::store::ActivityF::decode_key(&key)?.1;
                    left.entry((kind.to_owned(), name.to_owned()))
                        .or_default()
                        .insert(event_bucket(kind, name, hour_of(time), hours_from));
                }
            }
        }
        for (kind, name, hour) in &t.events_gone {
            if t.events.contains(&(kind.clone(), name.clone(), *hour)) {
                continue;
            }
            let buckets = left.get(&(kind.clone(), name.clone()));
            let bucket = event_bucket(kind, name, *hour, hours_from);
            let member = buckets.is_some_and(|b| b.contains(&bucket));
            delta.set(bucket, pid, member);
            if buckets.is_none() {
                delta.set(BitmapKey::Event(kind.clone(), name.clone()), pid, false);
            }
        }
        for metric in &t.metrics {
            delta.set(BitmapKey::Metric(metric.clone()), pid, true);
        }
        for s in &t.absorbed {
            for key in bitmaps.keys() {
                if matches!(key, BitmapKey::Metric(_)) && bitmaps.contains(key, *s) {
                    delta.set(key.clone(), pid, true);
                }
            }
        }
        for (id, member) in &t.segments {
            delta.set(BitmapKey::Segment(*id), pid, *member);
        }
    }
    // Not pruned here: the caller lays these changes over a roll-up's, where a change
    // that is a no-op against the committed bitmaps (leaving a day bitmap not yet
    // written) still has the last word; it prunes the whole.
    Ok(delta)
}
