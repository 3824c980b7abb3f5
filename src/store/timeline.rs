//! The `activity` family stored in per-person blocks.
//!
//! Everything above this module sees `activity` as one record per key (`pid` + time +
//! `seq`, see `FORMAT.md`); underneath, a person's records sit together in *blocks*: one
//! sled value holding up to [`MAX_BLOCK_ENTRIES`] records of one person (at most
//! [`MAX_BLOCK_BYTES`] of them, unless a single record is larger), stored under the key of
//! its oldest record. A block covers the keys from its own key up to the next block's key,
//! so the block holding a key is the one with the greatest key at or below it.
//!
//! [`Blocked`] is the [`Kv`] that does this: reads expand blocks into their records, and
//! a commit reads the blocks its `activity` writes fall into, applies them, and writes the
//! changed blocks back, split where they grew past the bounds; a record appended after
//! a stored block of [`SEAL_BYTES`] or more starts a new block, so that appending does
//! not rewrite a full block. A person's timeline is
//! then one or a few sled keys instead of one a record: sled's page count, open time,
//! resident memory and file size follow the number of keys.
//!
//! A value that is not a sound block reads as one record at its key, the bytes as they
//! are: a single record of an earlier build (record version 2, which decodes as it always
//! did), or a damaged block, which the record decoder reports as damaged (so `verify`
//! lists it and a delete of that key removes it). A key that is not 20 bytes long is no
//! block and is never one: it is read and written as it is.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::codec;
use super::kv::{pass_to_inner, Compacted, FamilyWrites, Kv, KvIter, KvPair};
use super::Family;
use crate::error::StorageError;

/// The envelope version byte of a block (a single record's is
/// [`codec::RECORD_VERSION`]).
pub const BLOCK_VERSION: u8 = 3;

/// A block is split once its records' bytes (each with its 20-byte entry header) would
/// pass this.
pub const MAX_BLOCK_BYTES: usize = 4096;

/// A stored block this large (value bytes) is not rewritten to append records after its
/// last: they start a new block, so that appending to a timeline writes the new records,
/// not the whole block again.
pub const SEAL_BYTES: usize = 512;

/// The most records a block holds.
pub const MAX_BLOCK_ENTRIES: usize = 64;

/// Key length of an `activity` record: pid (4) + time (8) + seq (8).
const KEY_LEN: usize = 20;
const PID_LEN: usize = 4;
const HEADER: usize = 5;
/// Per entry: time + seq (16) and the record's length (u32).
const ENTRY_HEAD: usize = 20;

/// Encodes `entries` (full 20-byte record keys of one person, ascending, at least one)
/// into a block: its key (the first record's) and value.
///
/// Layout: `[BLOCK_VERSION][crc ^ 0xFFFF_FFFF, u32 BE][entries]`, each entry the record
/// key's last 16 bytes, the record's length (u32 BE) and the record as a single record
/// at that key is stored; the checksum is [`codec::checksum`] over the family tag, the
/// block's key and the entries.
pub fn encode_block(entries: &[(&[u8], &[u8])]) -> Option<KvPair> {
    let key = entries.first()?.0.to_vec();
    let size = entries
        .iter()
        .map(|(_, v)| ENTRY_HEAD + v.len())
        .sum::<usize>();
    let mut out = Vec::with_capacity(HEADER + size);
    out.extend_from_slice(&[BLOCK_VERSION, 0, 0, 0, 0]);
    for (k, v) in entries {
        out.extend_from_slice(k.get(PID_LEN..)?);
        out.extend_from_slice(&u32::try_from(v.len()).ok()?.to_be_bytes());
        out.extend_from_slice(v);
    }
    let crc = codec::checksum(Family::Activity.tag(), &key, out.get(HEADER..)?) ^ 0xFFFF_FFFF;
    out.get_mut(1..HEADER)?.copy_from_slice(&crc.to_be_bytes());
    Some((key, out))
}

/// The records of the block stored at `key`, in key order, or why it is not a sound
/// block.
pub fn decode_block(key: &[u8], value: &[u8]) -> Result<Vec<KvPair>, String> {
    decode_entries(key, block_entries(key, value)?)
}

/// The records of a block's entries (the bytes after its header), stored at `key`, or
/// why they are not sound (the fuzzers reach this past the checksum).
pub fn decode_entries(key: &[u8], rest: &[u8]) -> Result<Vec<KvPair>, String> {
    let pid = key.get(..PID_LEN).unwrap_or_default();
    let mut out: Vec<KvPair> = Vec::new();
    walk_entries(key, rest, |suffix, record| {
        let mut k = Vec::with_capacity(KEY_LEN);
        k.extend_from_slice(pid);
        k.extend_from_slice(suffix);
        out.push((k, record.to_vec()));
    })?;
    Ok(out)
}

/// Walks a block's entries stored at `key`, handing each record's key suffix (time and
/// seq, 16 bytes) and bytes to `each`, in order; or says why they are not sound.
fn walk_entries<'a>(
    key: &[u8],
    mut rest: &'a [u8],
    mut each: impl FnMut(&'a [u8], &'a [u8]),
) -> Result<(), String> {
    let mut count = 0usize;
    let mut prev: Option<&[u8]> = None;
    while !rest.is_empty() {
        let Some((head, tail)) = rest.split_first_chunk::<ENTRY_HEAD>() else {
            return Err(format!("block entry {count} is cut short"));
        };
        let (suffix, len) = head.split_at(16);
        let len = len.iter().fold(0usize, |n, b| n << 8 | usize::from(*b));
        let Some((record, tail)) = tail.split_at_checked(len) else {
            return Err(format!(
                "block entry {count} claims {len} bytes, {} are left",
                tail.len()
            ));
        };
        if count == 0 && key.get(PID_LEN..) != Some(suffix) {
            return Err("block's first record is not at the block's key".to_owned());
        }
        if prev.is_some_and(|p| p >= suffix) {
            return Err(format!("block entry {count} is out of key order"));
        }
        each(suffix, record);
        prev = Some(suffix);
        count += 1;
        rest = tail;
    }
    if count == 0 {
        return Err("block holds no records".to_owned());
    }
    if count > MAX_BLOCK_ENTRIES {
        return Err(format!(
            "block holds {count} records, more than {MAX_BLOCK_ENTRIES}"
        ));
    }
    Ok(())
}

/// The header check of the block stored at `key`: its entries, or why it is not a
/// sound block.
fn block_entries<'a>(key: &[u8], value: &'a [u8]) -> Result<&'a [u8], String> {
    if key.len() != KEY_LEN {
        return Err(format!(
            "a block's key is {KEY_LEN} bytes, not {}",
            key.len()
        ));
    }
    codec::open_envelope("block", BLOCK_VERSION, Family::Activity.tag(), key, value)
}

/// The key of the last record the stored pair stands for (see [`expand`]), without
/// decoding its records.
fn last_key(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut last: Option<&[u8]> = None;
    let sound = key.len() == KEY_LEN
        && value.first() == Some(&BLOCK_VERSION)
        && block_entries(key, value)
            .and_then(|rest| walk_entries(key, rest, |suffix, _| last = Some(suffix)))
            .is_ok();
    match last {
        Some(suffix) if sound => {
            let mut k = key.get(..PID_LEN).unwrap_or_default().to_vec();
            k.extend_from_slice(suffix);
            k
        }
        _ => key.to_vec(),
    }
}

/// Why a value read as one `activity` record is a damaged block, when it is one.
pub(crate) fn damage(family: Family, key: &[u8], value: &[u8]) -> Option<String> {
    if family != Family::Activity || value.first() != Some(&BLOCK_VERSION) {
        return None;
    }
    let why = decode_block(key, value).err()?;
    Some(format!("damaged activity block: {why}"))
}

/// The records a stored pair stands for: a sound block's records, or else the pair
/// itself (a single record of an earlier build, a damaged block, a malformed key).
fn expand(key: Vec<u8>, value: Vec<u8>) -> Vec<KvPair> {
    if key.len() == KEY_LEN && value.first() == Some(&BLOCK_VERSION) {
        if let Ok(records) = decode_block(&key, &value) {
            return records;
        }
    }
    vec![(key, value)]
}

/// Whether a stored key can be a block (and so owns the keys up to the next one).
fn is_block_key(key: &[u8]) -> bool {
    key.len() == KEY_LEN
}

/// Splits a person's records (ascending) into blocks: greedily from the oldest, so that
/// records appended at the newest end fill a block before a new one starts.
fn chunks(records: &BTreeMap<Vec<u8>, Vec<u8>>) -> Vec<Vec<(&[u8], &[u8])>> {
    let mut out: Vec<Vec<(&[u8], &[u8])>> = Vec::new();
    let mut current: Vec<(&[u8], &[u8])> = Vec::new();
    let mut bytes = 0usize;
    for (k, v) in records {
        let size = ENTRY_HEAD + v.len();
        if !current.is_empty()
            && (bytes + size > MAX_BLOCK_BYTES || current.len() == MAX_BLOCK_ENTRIES)
        {
            out.push(std::mem::take(&mut current));
            bytes = 0;
        }
        current.push((k.as_slice(), v.as_slice()));
        bytes += size;
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// One block read for a commit: its stored key and value, its records once a write
/// goes into it, whether one did.
struct Loaded {
    key: Vec<u8>,
    /// The stored value (empty for a new block).
    value: Vec<u8>,
    /// The records, decoded from `value` when the first write goes into the block.
    records: Option<BTreeMap<Vec<u8>, Vec<u8>>>,
    touched: bool,
    stored: bool,
    /// Stored with [`SEAL_BYTES`] or more: records appended after its last start a new
    /// block.
    sealed: bool,
}

impl Loaded {
    /// A block read from the store.
    fn stored((key, value): KvPair) -> Loaded {
        Loaded {
            sealed: value.len() >= SEAL_BYTES,
            key,
            value,
            records: None,
            touched: false,
            stored: true,
        }
    }

    /// A new block starting at `key`.
    fn new(key: &[u8]) -> Loaded {
        Loaded {
            key: key.to_vec(),
            value: Vec::new(),
            records: Some(BTreeMap::new()),
            touched: false,
            stored: false,
            sealed: false,
        }
    }

    /// Whether `key` lies past the block's last record.
    fn ends_before(&self, key: &[u8]) -> bool {
        match &self.records {
            Some(records) => records
                .keys()
                .next_back()
                .is_some_and(|l| l.as_slice() < key),
            None => last_key(&self.key, &self.value).as_slice() < key,
        }
    }

    /// The records, decoded on first use; the block counts as touched.
    fn records(&mut self) -> &mut BTreeMap<Vec<u8>, Vec<u8>> {
        self.touched = true;
        let Loaded {
            key,
            value,
            records,
            ..
        } = self;
        records.get_or_insert_with(|| {
            expand(key.clone(), std::mem::take(value))
                .into_iter()
                .collect()
        })
    }
}

/// The last block a read decoded, for the next read of a key in it.
struct Recent {
    generation: u64,
    records: Arc<Vec<KvPair>>,
}

/// A [`Kv`] storing `activity` in per-person blocks over another [`Kv`] (see the module
/// docs). Every other family passes through unchanged.
pub struct Blocked {
    inner: Box<dyn Kv>,
    /// Commits read blocks and write them back: one at a time.
    commit: Mutex<()>,
    /// Counts commits, so that a cached block read before one is never served after it.
    generation: AtomicU64,
    recent: Mutex<Option<Recent>>,
}

impl Blocked {
    /// Stores `activity` in blocks over `inner`.
    pub fn new(inner: Box<dyn Kv>) -> Blocked {
        Blocked {
            inner,
            commit: Mutex::new(()),
            generation: AtomicU64::new(0),
            recent: Mutex::new(None),
        }
    }

    /// The stored block that holds `key` (20 bytes): the greatest block key at or below
    /// it with the same pid.
    fn owner(&self, key: &[u8]) -> Result<Option<KvPair>, StorageError> {
        let pid = key.get(..PID_LEN).unwrap_or_default().to_vec();
        let bounds = (Bound::Included(pid), Bound::Included(key.to_vec()));
        for item in self.inner.range(Family::Activity, bounds, true) {
            let (k, v) = item?;
            if is_block_key(&k) {
                return Ok(Some((k, v)));
            }
        }
        Ok(None)
    }

    /// The physical lower bound for logical `lower`: from the block holding it.
    fn physical_lower(&self, lower: Bound<Vec<u8>>) -> Result<Bound<Vec<u8>>, StorageError> {
        let at = match &lower {
            Bound::Included(k) | Bound::Excluded(k) if k.len() >= PID_LEN => k,
            _ => return Ok(lower),
        };
        let probe = if at.len() > KEY_LEN {
            at.get(..KEY_LEN).unwrap_or_default().to_vec()
        } else {
            at.clone()
        };
        Ok(match self.owner(&probe)? {
            Some((k, _)) => Bound::Included(k),
            None => lower,
        })
    }

    /// The stored pairs of one person (`pid`) that can hold records within `range`,
    /// newest first: those below its upper bound, down to the first block at or below
    /// its lower bound.
    fn person_blocks(
        &self,
        pid: &[u8],
        range: &(Bound<Vec<u8>>, Bound<Vec<u8>>),
    ) -> Result<Vec<KvPair>, StorageError> {
        let floor = match &range.0 {
            Bound::Included(k) | Bound::Excluded(k) => k.clone(),
            Bound::Unbounded => pid.to_vec(),
        };
        let bounds = (Bound::Included(pid.to_vec()), range.1.clone());
        let mut out = Vec::new();
        for item in self.inner.range(Family::Activity, bounds, true) {
            let (k, v) = item?;
            let done = is_block_key(&k) && k <= floor;
            out.push((k, v));
            if done {
                break;
            }
        }
        Ok(out)
    }

    fn get_record(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        if !is_block_key(key) {
            return self.inner.get(Family::Activity, key);
        }
        let generation = self.generation.load(Ordering::Acquire);
        {
            let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(r) = recent.as_ref().filter(|r| r.generation == generation) {
                // The cached block holds `key` when `key` lies between its first record
                // and its last: no other block can hold a key inside that span.
                let first = r.records.first().map(|(k, _)| k.as_slice());
                let last = r.records.last().map(|(k, _)| k.as_slice());
                if first.is_some_and(|f| f <= key) && last.is_some_and(|l| key <= l) {
                    return Ok(r
                        .records
                        .binary_search_by(|(k, _)| k.as_slice().cmp(key))
                        .ok()
                        .and_then(|i| r.records.get(i))
                        .map(|(_, v)| v.clone()));
                }
            }
        }
        let Some((bk, bv)) = self.owner(key)? else {
            return Ok(None);
        };
        let records = Arc::new(expand(bk, bv));
        let found = records
            .binary_search_by(|(k, _)| k.as_slice().cmp(key))
            .ok()
            .and_then(|i| records.get(i))
            .map(|(_, v)| v.clone());
        *self.recent.lock().unwrap_or_else(|p| p.into_inner()) = Some(Recent {
            generation,
            records,
        });
        Ok(found)
    }

    /// The stored writes that carry out `writes` (logical `activity` writes, in key
    /// order).
    fn physical(&self, writes: &FamilyWrites) -> Result<FamilyWrites, StorageError> {
        let mut out: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        let mut person: Vec<(&[u8], Option<&[u8]>)> = Vec::new();
        for (k, v) in writes {
            if !is_block_key(k) {
                out.insert(k.clone(), v.clone());
                continue;
            }
            if person
                .first()
                .is_some_and(|(p, _)| p.get(..PID_LEN) != k.get(..PID_LEN))
            {
                self.person(&person, &mut out)?;
                person.clear();
            }
            person.push((k.as_slice(), v.as_deref()));
        }
        if !person.is_empty() {
            self.person(&person, &mut out)?;
        }
        Ok(out.into_iter().collect())
    }

    /// Applies one person's writes (ascending, non-empty) to their blocks.
    fn person(
        &self,
        writes: &[(&[u8], Option<&[u8]>)],
        out: &mut BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let (Some((first, _)), Some((last, _))) = (writes.first(), writes.last()) else {
            return Ok(());
        };
        let pid = first.get(..PID_LEN).unwrap_or_default();
        // The blocks at or below the last write, newest first, down to the one holding
        // the first write.
        let mut blocks: Vec<Loaded> = Vec::new();
        let bounds = (
            Bound::Included(pid.to_vec()),
            Bound::Included(last.to_vec()),
        );
        for item in self.inner.range(Family::Activity, bounds, true) {
            let (k, v) = item?;
            if is_block_key(&k) {
                let holds_first = k.as_slice() <= *first;
                blocks.push(Loaded::stored((k, v)));
                if holds_first {
                    break;
                }
            }
        }
        blocks.reverse();
        if blocks.is_empty() {
            // Every write is older than the person's first block, if they have one: it
            // takes them (and moves to the oldest one's key).
            let bounds = (Bound::Excluded(last.to_vec()), super::prefix_end(pid));
            for item in self.inner.range(Family::Activity, bounds, false) {
                let (k, v) = item?;
                if is_block_key(&k) {
                    blocks.push(Loaded::stored((k, v)));
                    break;
                }
            }
        }
        for (k, v) in writes {
            let mut at = blocks.iter().rposition(|b| b.key.as_slice() <= *k);
            // A record appended past the end of a stored block of SEAL_BYTES or more
            // starts a block of its own: the full one is not rewritten (nor decoded).
            let sealed = at.filter(|&i| {
                v.is_some() && blocks.get(i).is_some_and(|b| b.sealed && b.ends_before(k))
            });
            if let Some(i) = sealed {
                // Blocks after the full one have keys above `k`: the new one goes between.
                blocks.insert(i + 1, Loaded::new(k));
                at = Some(i + 1);
            }
            let block = match at.or(if blocks.is_empty() { None } else { Some(0) }) {
                Some(i) => blocks.get_mut(i),
                None => {
                    blocks.push(Loaded::new(k));
                    blocks.last_mut()
                }
            };
            let Some(block) = block else { continue };
            let records = block.records();
            match v {
                Some(v) => records.insert(k.to_vec(), v.to_vec()),
                None => records.remove(*k),
            };
        }
        let mut puts: Vec<KvPair> = Vec::new();
        for block in blocks.iter().filter(|b| b.touched) {
            let mut kept = false;
            let none = BTreeMap::new();
            for chunk in chunks(block.records.as_ref().unwrap_or(&none)) {
                let (key, value) = encode_block(&chunk).ok_or_else(|| {
                    StorageError::Io(std::io::Error::other(
                        "an activity block could not be encoded",
                    ))
                })?;
                kept |= key == block.key;
                puts.push((key, value));
            }
            if block.stored && !kept {
                out.insert(block.key.clone(), None);
            }
        }
        for (k, v) in puts {
            out.insert(k, Some(v));
        }
        Ok(())
    }
}

/// The pid (4 bytes) when both bounds of `range` lie within that one person's keys.
fn one_person(range: &(Bound<Vec<u8>>, Bound<Vec<u8>>)) -> Option<&[u8]> {
    let pid = match &range.0 {
        Bound::Included(k) | Bound::Excluded(k) => k.get(..PID_LEN)?,
        Bound::Unbounded => return None,
    };
    let end = match super::prefix_end(pid) {
        Bound::Excluded(end) => end,
        _ => return None,
    };
    let same = match &range.1 {
        Bound::Included(u) | Bound::Excluded(u) => u.get(..PID_LEN) == Some(pid) || *u == end,
        Bound::Unbounded => false,
    };
    same.then_some(pid)
}

/// Expands a scan of stored pairs into records within the logical bounds.
struct Expand<'a> {
    inner: KvIter<'a>,
    bounds: (Bound<Vec<u8>>, Bound<Vec<u8>>),
    reverse: bool,
    pending: std::vec::IntoIter<KvPair>,
    /// The last block record handed out: a block rewritten while the scan runs may
    /// show a record again, which is skipped.
    last: Option<Vec<u8>>,
}

/// Whether `key` lies within `bounds`.
fn within(bounds: &(Bound<Vec<u8>>, Bound<Vec<u8>>), key: &[u8]) -> bool {
    use std::ops::RangeBounds;
    let lower = bounds.0.as_ref().map(Vec::as_slice);
    let upper = bounds.1.as_ref().map(Vec::as_slice);
    RangeBounds::<[u8]>::contains::<[u8]>(&(lower, upper), key)
}

impl Iterator for Expand<'_> {
    type Item = Result<KvPair, StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let Expand {
                pending,
                bounds,
                last,
                reverse,
                ..
            } = &mut *self;
            for (k, v) in pending.by_ref() {
                if !is_block_key(&k) {
                    return Some(Ok((k, v)));
                }
                let fresh = match last.as_ref() {
                    None => true,
                    Some(l) if *reverse => k < *l,
                    Some(l) => k > *l,
                };
                if fresh && within(bounds, &k) {
                    *last = Some(k.clone());
                    return Some(Ok((k, v)));
                }
            }
            let (k, v) = match self.inner.next()? {
                Ok(pair) => pair,
                Err(e) => return Some(Err(e)),
            };
            let mut records = expand(k, v);
            if self.reverse {
                records.reverse();
            }
            self.pending = records.into_iter();
        }
    }
}

impl Kv for Blocked {
    fn get(&self, family: Family, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        if family == Family::Activity {
            self.get_record(key)
        } else {
            self.inner.get(family, key)
        }
    }

    fn range(
        &self,
        family: Family,
        range: (Bound<Vec<u8>>, Bound<Vec<u8>>),
        reverse: bool,
    ) -> KvIter<'_> {
        if family != Family::Activity {
            return self.inner.range(family, range, reverse);
        }
        let inner = match one_person(&range) {
            // Within one person's records: one read, newest first, from the upper bound
            // down to the block holding the lower bound.
            Some(pid) => match self.person_blocks(pid, &range) {
                Ok(mut blocks) => {
                    if !reverse {
                        blocks.reverse();
                    }
                    Box::new(blocks.into_iter().map(Ok)) as KvIter<'_>
                }
                Err(e) => return Box::new(std::iter::once(Err(e))),
            },
            None => {
                let lower = match self.physical_lower(range.0.clone()) {
                    Ok(l) => l,
                    Err(e) => return Box::new(std::iter::once(Err(e))),
                };
                self.inner.range(family, (lower, range.1.clone()), reverse)
            }
        };
        Box::new(Expand {
            inner,
            bounds: range,
            reverse,
            pending: Vec::new().into_iter(),
            last: None,
        })
    }

    fn commit_families(&self, families: &[(Family, &FamilyWrites)]) -> Result<(), StorageError> {
        let _one = self.commit.lock().unwrap_or_else(|p| p.into_inner());
        let activity = families
            .iter()
            .find(|(f, w)| *f == Family::Activity && !w.is_empty());
        let Some((_, writes)) = activity else {
            return self.inner.commit_families(families);
        };
        let stored = self.physical(writes)?;
        let parts: Vec<(Family, &FamilyWrites)> = families
            .iter()
            .map(|&(f, w)| {
                if f == Family::Activity {
                    (f, &stored)
                } else {
                    (f, w)
                }
            })
            .collect();
        let result = self.inner.commit_families(&parts);
        // Whatever happened, a block read before may be stale now.
        self.generation.fetch_add(1, Ordering::AcqRel);
        result
    }

    pass_to_inner! {
        flush -> Result<(), StorageError>;
        size_on_disk -> Result<u64, StorageError>;
        since_checkpoint -> u64;
        checkpoint -> Result<bool, StorageError>;
        compact -> Result<Option<Compacted>, StorageError>;
        cache_bytes -> u64;
    }

    fn set_cache_bytes(&self, bytes: u64) {
        self.inner.set_cache_bytes(bytes);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::store::kv::{SledKv, WriteSet};

    type Model = BTreeMap<Vec<u8>, Vec<u8>>;

    fn open(dir: &std::path::Path) -> Blocked {
        Blocked::new(Box::new(SledKv::open_waiting(dir, 1 << 22, 1).unwrap()))
    }

    fn key(pid: u32, time: u64, seq: u64) -> Vec<u8> {
        let mut k = pid.to_be_bytes().to_vec();
        k.extend_from_slice(&time.to_be_bytes());
        k.extend_from_slice(&seq.to_be_bytes());
        k
    }

    fn commit(kv: &dyn Kv, family: Family, writes: Vec<(Vec<u8>, Option<Vec<u8>>)>) {
        let mut writes = writes;
        writes.sort_by(|a, b| a.0.cmp(&b.0));
        writes.dedup_by(|a, b| a.0 == b.0);
        kv.commit(&WriteSet {
            families: vec![(family, writes)],
        })
        .unwrap();
    }

    fn all(kv: &dyn Kv, bounds: (Bound<Vec<u8>>, Bound<Vec<u8>>), reverse: bool) -> Vec<KvPair> {
        kv.range(Family::Activity, bounds, reverse)
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
    }

    /// A fixed-seed xorshift generator.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn random_key(rng: &mut Rng) -> Vec<u8> {
        key(1 + rng.below(4) as u32, rng.below(300), rng.below(4))
    }

    fn random_bound(rng: &mut Rng) -> Bound<Vec<u8>> {
        let mut k = random_key(rng);
        k.truncate([4, 12, 20, 20][rng.below(4) as usize]);
        match rng.below(3) {
            0 => Bound::Included(k),
            1 => Bound::Excluded(k),
            _ => Bound::Unbounded,
        }
    }

    /// Every stored `activity` pair is a sound block within the bounds, and the blocks
    /// hold exactly the model's records.
    fn check_stored(kv: &Blocked, model: &Model) {
        let stored = all(
            kv.inner.as_ref(),
            (Bound::Unbounded, Bound::Unbounded),
            false,
        );
        let mut records = Vec::new();
        for (k, v) in stored {
            let block = decode_block(&k, &v).unwrap();
            let bytes: usize = block.iter().map(|(_, v)| ENTRY_HEAD + v.len()).sum();
            assert!(block.len() <= MAX_BLOCK_ENTRIES);
            assert!(block.len() == 1 || bytes <= MAX_BLOCK_BYTES, "{bytes}");
            records.extend(block);
        }
        let expected: Vec<KvPair> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        assert_eq!(records, expected);
    }

    #[test]
    fn blocks_read_and_write_as_single_records_would() {
        let dir = tempfile::tempdir().unwrap();
        let kv = open(dir.path());
        let mut model = Model::new();
        let mut rng = Rng(0x5eed_0b10c);
        for round in 0..400 {
            let n = if round % 50 == 0 {
                200
            } else {
                1 + rng.below(12)
            };
            let mut writes = Vec::new();
            for _ in 0..n {
                let k = random_key(&mut rng);
                let v = if rng.below(4) == 0 {
                    None
                } else {
                    let len = if rng.below(40) == 0 {
                        5000
                    } else {
                        10 + rng.below(400)
                    };
                    let mut v = vec![2u8; len as usize];
                    v[1] = round as u8;
                    Some(v)
                };
                writes.push((k, v));
            }
            writes.sort_by(|a, b| a.0.cmp(&b.0));
            writes.dedup_by(|a, b| a.0 == b.0);
            for (k, v) in &writes {
                match v {
                    Some(v) => model.insert(k.clone(), v.clone()),
                    None => model.remove(k),
                };
            }
            commit(&kv, Family::Activity, writes);
            check_stored(&kv, &model);
            for _ in 0..4 {
                let bounds = (random_bound(&mut rng), random_bound(&mut rng));
                let expected: Vec<KvPair> = model
                    .iter()
                    .filter(|(k, _)| within(&bounds, k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                assert_eq!(all(&kv, bounds.clone(), false), expected, "{bounds:?}");
                let mut reversed = expected;
                reversed.reverse();
                assert_eq!(all(&kv, bounds.clone(), true), reversed, "{bounds:?}");
                let k = random_key(&mut rng);
                assert_eq!(
                    kv.get(Family::Activity, &k).unwrap(),
                    model.get(&k).cloned()
                );
            }
        }
        assert!(model.len() > 100);
    }

    #[test]
    fn an_earlier_builds_single_record_reads_and_joins_a_block() {
        let dir = tempfile::tempdir().unwrap();
        let kv = open(dir.path());
        let (a, b) = (key(7, 10, 1), key(7, 20, 2));
        // Written under the blocks, as a build before them stored every record.
        commit(
            kv.inner.as_ref(),
            Family::Activity,
            vec![(a.clone(), Some(vec![2, 1]))],
        );
        assert_eq!(kv.get(Family::Activity, &a).unwrap(), Some(vec![2, 1]));
        commit(&kv, Family::Activity, vec![(b.clone(), Some(vec![2, 2]))]);
        let both = vec![(a.clone(), vec![2, 1]), (b, vec![2, 2])];
        assert_eq!(all(&kv, (Bound::Unbounded, Bound::Unbounded), false), both);
        let stored = all(
            kv.inner.as_ref(),
            (Bound::Unbounded, Bound::Unbounded),
            false,
        );
        assert_eq!(stored.len(), 1);
        assert_eq!(decode_block(&stored[0].0, &stored[0].1).unwrap(), both);
    }

    #[test]
    fn appending_after_a_full_block_leaves_it_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let kv = open(dir.path());
        let stored = |kv: &Blocked| {
            all(
                kv.inner.as_ref(),
                (Bound::Unbounded, Bound::Unbounded),
                false,
            )
        };
        // Two records of 300 bytes: one block of more than SEAL_BYTES.
        let first: Vec<_> = (1..=2u64)
            .map(|s| (key(9, s, s), Some(vec![2; 300])))
            .collect();
        commit(&kv, Family::Activity, first);
        let before = stored(&kv);
        assert_eq!(before.len(), 1);
        assert!(before[0].1.len() >= SEAL_BYTES);
        // Appended later: a block of its own, the full one untouched.
        commit(
            &kv,
            Family::Activity,
            vec![(key(9, 3, 3), Some(vec![2; 10]))],
        );
        commit(
            &kv,
            Family::Activity,
            vec![(key(9, 4, 4), Some(vec![2; 10]))],
        );
        let after = stored(&kv);
        assert_eq!(after.len(), 2);
        assert_eq!(after[0], before[0]);
        assert_eq!(decode_block(&after[1].0, &after[1].1).unwrap().len(), 2);
        // A record backfilled into the full block's span still goes into it.
        commit(
            &kv,
            Family::Activity,
            vec![(key(9, 1, 9), Some(vec![2; 10]))],
        );
        let all_records = all(&kv, (Bound::Unbounded, Bound::Unbounded), false);
        assert_eq!(all_records.len(), 5);
        assert_eq!(stored(&kv).len(), 2);
    }

    #[test]
    fn a_damaged_block_reads_as_one_damaged_record_that_a_delete_removes() {
        let dir = tempfile::tempdir().unwrap();
        let kv = open(dir.path());
        let (a, b) = (key(3, 10, 1), key(3, 20, 2));
        commit(
            &kv,
            Family::Activity,
            vec![(a.clone(), Some(vec![2, 1])), (b.clone(), Some(vec![2, 2]))],
        );
        let (k, mut v) = all(
            kv.inner.as_ref(),
            (Bound::Unbounded, Bound::Unbounded),
            false,
        )
        .pop()
        .unwrap();
        let last = v.len() - 1;
        v[last] ^= 0x40;
        commit(
            kv.inner.as_ref(),
            Family::Activity,
            vec![(k.clone(), Some(v.clone()))],
        );
        let seen = all(&kv, (Bound::Unbounded, Bound::Unbounded), false);
        assert_eq!(seen, vec![(a.clone(), v.clone())]);
        let err = crate::store::decode_value::<crate::store::ActivityF>(&a, &v).unwrap_err();
        assert!(err.to_string().contains("damaged activity block"), "{err}");
        assert!(err.to_string().contains("checksum"), "{err}");
        assert_eq!(kv.get(Family::Activity, &b).unwrap(), None);
        commit(&kv, Family::Activity, vec![(a, None)]);
        assert!(all(
            kv.inner.as_ref(),
            (Bound::Unbounded, Bound::Unbounded),
            false
        )
        .is_empty());
    }

    #[test]
    fn a_malformed_key_is_read_and_removed_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let kv = open(dir.path());
        let good = key(5, 1, 1);
        let mut odd = key(5, 1, 1);
        odd.push(0);
        commit(
            &kv,
            Family::Activity,
            vec![(good.clone(), Some(vec![2, 9]))],
        );
        commit(
            &kv,
            Family::Activity,
            vec![(odd.clone(), Some(vec![1, 2, 3]))],
        );
        let seen = all(&kv, (Bound::Unbounded, Bound::Unbounded), false);
        assert_eq!(
            seen,
            vec![(good.clone(), vec![2, 9]), (odd.clone(), vec![1, 2, 3])]
        );
        commit(&kv, Family::Activity, vec![(odd, None)]);
        assert_eq!(
            all(&kv, (Bound::Unbounded, Bound::Unbounded), false),
            vec![(good, vec![2, 9])]
        );
    }

    #[test]
    fn the_fuzz_seed_is_a_sound_block() {
        // `fuzz/corpus/record_decode/seed_activity_block`: a key, then two entries.
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fuzz/corpus/record_decode/seed_activity_block"
        );
        let bytes = std::fs::read(path).unwrap();
        let (key, rest) = bytes.split_at(20);
        assert_eq!(decode_entries(key, rest).unwrap().len(), 2);
    }

    #[test]
    fn a_block_decoder_never_panics_and_refuses_damage() {
        let (k, v) =
            encode_block(&[(&key(1, 1, 1), &[2, 1, 2][..]), (&key(1, 2, 1), &[2][..])]).unwrap();
        assert_eq!(decode_block(&k, &v).unwrap().len(), 2);
        for cut in 0..v.len() {
            assert!(decode_block(&k, &v[..cut]).is_err());
        }
        for i in 0..v.len() {
            let mut bad = v.clone();
            bad[i] ^= 1;
            assert!(decode_block(&k, &bad).is_err(), "byte {i}");
        }
        assert!(decode_block(&key(1, 1, 2), &v).is_err());
    }

    #[test]
    fn the_last_key_without_decoding_is_the_decoders_last_key() {
        let records = [
            (key(4, 1, 1), vec![2, 1, 2]),
            (key(4, 5, 3), vec![2; 40]),
            (key(4, 9, 2), vec![2]),
        ];
        let entries: Vec<(&[u8], &[u8])> = records
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
            .collect();
        let (k, v) = encode_block(&entries).unwrap();
        assert_eq!(last_key(&k, &v), key(4, 9, 2));
        for n in 1..=entries.len() {
            let (k, v) = encode_block(&entries[..n]).unwrap();
            let decoded = expand(k.clone(), v.clone());
            assert_eq!(last_key(&k, &v), decoded.last().unwrap().0, "{n} entries");
        }
        // Whatever is no sound block reads as one record at its key, so that is its last.
        for i in 0..v.len() {
            let mut bad = v.clone();
            bad[i] ^= 0x40;
            assert_eq!(last_key(&k, &bad), k, "byte {i} damaged");
        }
        assert_eq!(last_key(&k, &v[..v.len() - 1]), k);
        assert_eq!(last_key(&k, &[2, 0, 0, 0, 0, 1]), k, "a single record");
        assert_eq!(last_key(b"short", &v), b"short".to_vec());
        // A block under another key fails its checksum: its own key again.
        assert_eq!(last_key(&key(4, 0, 0), &v), key(4, 0, 0));
    }
}
