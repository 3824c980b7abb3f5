//! The column families over sled: typed handles, key codecs, the record envelope, the
//! storage seam, and the staging area that turns a batch of operations into one atomic
//! commit. No code outside this module touches raw bytes. The byte-exact format is in
//! `src/store/FORMAT.md`.

pub mod codec;
pub mod kv;
pub mod records;

use std::any::Any;
use std::collections::BTreeMap;
use std::ops::Bound;

use crate::error::{Error, Result};
use crate::model::IdentKind;
use kv::{Kv, WriteSet};
use records::{ActivityRecord, AttributesRecord, MetaValue, PersonRecord, SuppressedRecord};

/// The column families: one sled tree each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Family {
    /// Format version and counters.
    Meta,
    /// pid → identifiers and times.
    People,
    /// identifier kind + normalized value → pid.
    Identifiers,
    /// pid → attribute map and set-times.
    Attributes,
    /// pid + time + seq → activity entry.
    Activity,
    /// identifier kind + normalized value → suppression record.
    Suppressed,
}

impl Family {
    /// Every family, in tree-creation order.
    pub const ALL: [Family; 6] = [
        Family::Meta,
        Family::People,
        Family::Identifiers,
        Family::Attributes,
        Family::Activity,
        Family::Suppressed,
    ];

    /// The family's name, which is also its sled tree's name.
    pub fn name(self) -> &'static str {
        match self {
            Family::Meta => "meta",
            Family::People => "people",
            Family::Identifiers => "identifiers",
            Family::Attributes => "attributes",
            Family::Activity => "activity",
            Family::Suppressed => "suppressed",
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Family::Meta => 0,
            Family::People => 1,
            Family::Identifiers => 2,
            Family::Attributes => 3,
            Family::Activity => 4,
            Family::Suppressed => 5,
        }
    }

    /// Decodes a stored value of this family, for checks that read every record
    /// ([`ProfileDb::verify`](crate::ProfileDb::verify)).
    pub(crate) fn check_value(self, key: &[u8], value: &[u8]) -> Result<()> {
        match self {
            Family::Meta => decode_value::<MetaF>(key, value).map(drop),
            Family::People => {
                pid_from_key(self, key)?;
                decode_value::<PeopleF>(key, value).map(drop)
            }
            Family::Identifiers => {
                ident_from_key(self, key)?;
                decode_value::<IdentifiersF>(key, value).map(drop)
            }
            Family::Attributes => {
                pid_from_key(self, key)?;
                decode_value::<AttributesF>(key, value).map(drop)
            }
            Family::Activity => {
                ActivityF::decode_key(key)?;
                decode_value::<ActivityF>(key, value).map(drop)
            }
            Family::Suppressed => {
                ident_from_key(self, key)?;
                decode_value::<SuppressedF>(key, value).map(drop)
            }
        }
    }
}

/// Runs `bytes` through every decoder this module has: the envelope and payload of each
/// family's values, and each key codec. For fuzzing and corpus replay: whatever the
/// bytes, this returns (every result is an `Ok` or a typed error) and never panics.
pub fn decode_everything(bytes: &[u8]) {
    for family in Family::ALL {
        let _ = family.check_value(bytes, bytes);
        let _ = family.check_value(&[], bytes);
    }
    let _ = codec::decode_payload::<MetaValue>(bytes);
    let _ = codec::decode_payload::<PersonRecord>(bytes);
    let _ = codec::decode_payload::<u32>(bytes);
    let _ = codec::decode_payload::<AttributesRecord>(bytes);
    let _ = codec::decode_payload::<ActivityRecord>(bytes);
    let _ = codec::decode_payload::<SuppressedRecord>(bytes);
    let _ = codec::decode_payload::<crate::model::Value>(bytes);
    let _ = pid_from_key(Family::People, bytes);
    let _ = ident_from_key(Family::Identifiers, bytes);
    let _ = ActivityF::decode_key(bytes);
}

/// A typed column family: which tree, and the type of its values.
pub trait Fam {
    /// The family.
    const FAMILY: Family;
    /// The type of its values.
    type Value: bincode::Encode + bincode::Decode<()> + Clone + Send + 'static;
}

macro_rules! family {
    ($name:ident, $fam:expr, $value:ty) => {
        /// Typed handle for one column family.
        pub struct $name;
        impl Fam for $name {
            const FAMILY: Family = $fam;
            type Value = $value;
        }
    };
}

family!(MetaF, Family::Meta, MetaValue);
family!(PeopleF, Family::People, PersonRecord);
family!(IdentifiersF, Family::Identifiers, u32);
family!(AttributesF, Family::Attributes, AttributesRecord);
family!(ActivityF, Family::Activity, ActivityRecord);
family!(SuppressedF, Family::Suppressed, SuppressedRecord);

/// Meta keys.
pub mod meta_keys {
    /// The format record.
    pub const FORMAT: &[u8] = b"format";
    /// The next person id to allocate.
    pub const NEXT_PID: &[u8] = b"next_pid";
    /// The next activity sequence number.
    pub const NEXT_SEQ: &[u8] = b"next_seq";
    /// The sequence number of the last commit.
    pub const COMMIT_SEQ: &[u8] = b"commit_seq";
}

/// Key of the `people` and `attributes` families: the pid, 4 bytes big-endian.
pub fn pid_key(pid: u32) -> Vec<u8> {
    pid.to_be_bytes().to_vec()
}

/// The pid in a `people`/`attributes` key.
pub fn pid_from_key(family: Family, key: &[u8]) -> Result<u32> {
    let bytes: [u8; 4] = key
        .try_into()
        .map_err(|_| corrupted(family, key, "key is not a 4-byte person id"))?;
    Ok(u32::from_be_bytes(bytes))
}

/// The one-byte code of an identifier kind in `identifiers` and `suppressed` keys.
pub fn ident_code(kind: IdentKind) -> u8 {
    match kind {
        IdentKind::Id => 1,
        IdentKind::Email => 2,
        IdentKind::Phone => 3,
        IdentKind::AnonymousId => 4,
        IdentKind::CioId => 5,
    }
}

/// The kind with code `code`.
pub fn ident_kind(code: u8) -> Option<IdentKind> {
    Some(match code {
        1 => IdentKind::Id,
        2 => IdentKind::Email,
        3 => IdentKind::Phone,
        4 => IdentKind::AnonymousId,
        5 => IdentKind::CioId,
        _ => return None,
    })
}

/// Key of the `identifiers` and `suppressed` families: kind code, then the normalized
/// value's UTF-8 bytes.
pub fn ident_key(kind: IdentKind, normalized: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + normalized.len());
    k.push(ident_code(kind));
    k.extend_from_slice(normalized.as_bytes());
    k
}

/// The kind and normalized value in an `identifiers`/`suppressed` key.
pub fn ident_from_key(family: Family, key: &[u8]) -> Result<(IdentKind, String)> {
    let (code, rest) = key
        .split_first()
        .ok_or_else(|| corrupted(family, key, "empty identifier key"))?;
    let kind =
        ident_kind(*code).ok_or_else(|| corrupted(family, key, "unknown identifier kind code"))?;
    let value =
        std::str::from_utf8(rest).map_err(|_| corrupted(family, key, "identifier is not UTF-8"))?;
    Ok((kind, value.to_owned()))
}

impl ActivityF {
    /// Key: pid (4 bytes BE), time (8 bytes, sign-flipped BE), seq (8 bytes BE).
    pub fn key(pid: u32, timestamp: i64, seq: u64) -> Vec<u8> {
        let mut k = Vec::with_capacity(20);
        k.extend_from_slice(&pid.to_be_bytes());
        k.extend_from_slice(&codec::time_bytes(timestamp));
        k.extend_from_slice(&seq.to_be_bytes());
        k
    }

    /// The (pid, time, seq) of a key.
    pub fn decode_key(key: &[u8]) -> Result<(u32, i64, u64)> {
        let bad = || corrupted(Family::Activity, key, "key is not pid+time+seq (20 bytes)");
        let arr: &[u8; 20] = key.try_into().map_err(|_| bad())?;
        let (p, rest) = arr.split_first_chunk::<4>().ok_or_else(bad)?;
        let (t, s) = rest.split_first_chunk::<8>().ok_or_else(bad)?;
        let s: [u8; 8] = s.try_into().map_err(|_| bad())?;
        Ok((
            u32::from_be_bytes(*p),
            codec::time_from_bytes(*t),
            u64::from_be_bytes(s),
        ))
    }
}

pub(crate) fn corrupted(family: Family, key: &[u8], reason: impl Into<String>) -> Error {
    Error::Corrupted {
        family: family.name(),
        key: codec::hex(key),
        reason: reason.into(),
    }
}

/// Decodes a stored value of family `F`.
pub fn decode_value<F: Fam>(key: &[u8], bytes: &[u8]) -> Result<F::Value> {
    codec::decode(bytes).map_err(|reason| corrupted(F::FAMILY, key, reason))
}

/// Read access to the families, decoding as it goes.
pub struct Store {
    kv: Box<dyn Kv>,
}

impl Store {
    /// Wraps a key-value store.
    pub fn new(kv: Box<dyn Kv>) -> Store {
        Store { kv }
    }

    /// The key-value store underneath.
    pub fn kv(&self) -> &dyn Kv {
        self.kv.as_ref()
    }

    /// The decoded value at `key`.
    pub fn get<F: Fam>(&self, key: &[u8]) -> Result<Option<F::Value>> {
        match self.kv.get(F::FAMILY, key)? {
            Some(bytes) => decode_value::<F>(key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Decoded pairs whose keys start with `prefix`, ascending or descending, starting
    /// strictly after (or before, when `reverse`) `from` if given.
    pub fn scan<F: Fam>(
        &self,
        prefix: &[u8],
        reverse: bool,
        from: Option<&[u8]>,
    ) -> impl Iterator<Item = Result<(Vec<u8>, F::Value)>> + '_ {
        let upper = prefix_end(prefix);
        let range = match (reverse, from) {
            (false, Some(f)) => (Bound::Excluded(f.to_vec()), upper),
            (true, Some(f)) => (
                Bound::Included(prefix.to_vec()),
                Bound::Excluded(f.to_vec()),
            ),
            (_, None) => (Bound::Included(prefix.to_vec()), upper),
        };
        self.kv.range(F::FAMILY, range, reverse).map(|r| {
            let (k, v) = r?;
            let value = decode_value::<F>(&k, &v)?;
            Ok((k, value))
        })
    }

    /// Keys starting with `prefix`, without decoding values.
    pub fn keys(&self, family: Family, prefix: &[u8]) -> Result<Vec<Vec<u8>>> {
        self.kv
            .range(
                family,
                (Bound::Included(prefix.to_vec()), prefix_end(prefix)),
                false,
            )
            .map(|r| r.map(|(k, _)| k).map_err(Error::from))
            .collect()
    }
}

/// The exclusive upper bound of keys starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Bound<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Bound::Excluded(end);
        }
    }
    Bound::Unbounded
}

type Encoder = fn(&dyn Any) -> std::result::Result<Vec<u8>, String>;

fn encoder<F: Fam>(value: &dyn Any) -> std::result::Result<Vec<u8>, String> {
    match value.downcast_ref::<F::Value>() {
        Some(v) => codec::encode(v),
        None => Err(format!(
            "staged value of the wrong type in {}",
            F::FAMILY.name()
        )),
    }
}

struct Slot {
    value: Option<Box<dyn Any + Send>>,
    dirty: bool,
    encode: Encoder,
}

/// The staging area of one atomic commit: typed reads through a cache, typed writes
/// kept decoded until [`Txn::into_write_set`] encodes each of them exactly once.
/// A key written several times in a batch is written to sled once, with its last value.
pub struct Txn<'a> {
    store: &'a Store,
    slots: [BTreeMap<Vec<u8>, Slot>; 6],
}

impl<'a> Txn<'a> {
    /// An empty staging area over `store`.
    pub fn new(store: &'a Store) -> Txn<'a> {
        Txn {
            store,
            slots: Default::default(),
        }
    }

    fn slots(&mut self, family: Family) -> &mut BTreeMap<Vec<u8>, Slot> {
        // Family::index is always < 6; the fallback is never taken.
        let i = family.index().min(5);
        #[allow(clippy::indexing_slicing)]
        &mut self.slots[i]
    }

    /// The value at `key`, as staged or as stored.
    pub fn get<F: Fam>(&mut self, key: &[u8]) -> Result<Option<F::Value>> {
        if let Some(slot) = self.slots(F::FAMILY).get(key) {
            return Ok(slot
                .value
                .as_ref()
                .and_then(|v| v.downcast_ref::<F::Value>())
                .cloned());
        }
        let stored = self.store.get::<F>(key)?;
        self.slots(F::FAMILY).insert(
            key.to_vec(),
            Slot {
                value: stored.clone().map(|v| Box::new(v) as Box<dyn Any + Send>),
                dirty: false,
                encode: encoder::<F>,
            },
        );
        Ok(stored)
    }

    /// Stages `value` at `key`.
    pub fn put<F: Fam>(&mut self, key: Vec<u8>, value: F::Value) {
        self.slots(F::FAMILY).insert(
            key,
            Slot {
                value: Some(Box::new(value)),
                dirty: true,
                encode: encoder::<F>,
            },
        );
    }

    /// Stages the removal of `key`.
    pub fn delete<F: Fam>(&mut self, key: Vec<u8>) {
        self.slots(F::FAMILY).insert(
            key,
            Slot {
                value: None,
                dirty: true,
                encode: encoder::<F>,
            },
        );
    }

    /// Keys starting with `prefix` as they would be after this commit.
    pub fn keys(&mut self, family: Family, prefix: &[u8]) -> Result<Vec<Vec<u8>>> {
        let mut keys: std::collections::BTreeSet<Vec<u8>> =
            self.store.keys(family, prefix)?.into_iter().collect();
        for (k, slot) in self.slots(family).range(prefix.to_vec()..) {
            if !k.starts_with(prefix) {
                break;
            }
            if slot.dirty {
                if slot.value.is_some() {
                    keys.insert(k.clone());
                } else {
                    keys.remove(k);
                }
            }
        }
        Ok(keys.into_iter().collect())
    }

    /// True when nothing has been staged for writing.
    pub fn is_clean(&self) -> bool {
        self.slots
            .iter()
            .all(|m| m.values().all(|slot| !slot.dirty))
    }

    /// Encodes every staged write, once, into a write set in family and key order.
    pub fn into_write_set(self) -> Result<WriteSet> {
        let mut set = WriteSet::default();
        for (family, slots) in Family::ALL.iter().zip(self.slots) {
            let mut writes = Vec::new();
            for (key, slot) in slots {
                if !slot.dirty {
                    continue;
                }
                let bytes = match &slot.value {
                    Some(v) => Some((slot.encode)(v.as_ref()).map_err(|reason| {
                        Error::Input(crate::error::InputError::invalid(
                            family.name(),
                            format!("cannot be stored: {reason}"),
                        ))
                    })?),
                    None => None,
                };
                writes.push((key, bytes));
            }
            if !writes.is_empty() {
                set.families.push((*family, writes));
            }
        }
        Ok(set)
    }
}
