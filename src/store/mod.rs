//! The column families over sled: typed handles, key codecs, the record envelope, the
//! storage seam, and the staging area that turns a batch of operations into one atomic
//! commit. No code outside this module touches raw bytes. The byte-exact format is in
//! `src/store/FORMAT.md`.

pub mod bitmaps;
pub mod codec;
pub mod event_blocks;
pub mod kv;
pub mod records;
pub mod timeline;

use std::any::Any;
use std::collections::BTreeMap;
use std::ops::Bound;

use crate::error::{Error, Result};
use crate::model::IdentKind;
use kv::{Kv, WriteSet};
use records::{
    ActivityRecord, AttributesRecord, ChangeRecord, ChangesRecord, DeliveryRecord, DeviceRecord,
    MetaValue, ObjectRecord, ObjectTypeRecord, PersonRecord, RelationshipRecord, SegmentRecord,
    SuppressedRecord, TopicRecord,
};

macro_rules! families {
    ($($variant:ident $name:literal $doc:literal,)*) => {
        /// The column families: one sled tree each.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum Family {
            $(#[doc = $doc] $variant,)*
        }

        impl Family {
            /// Every family, in tree-creation order.
            pub const ALL: &'static [Family] = &[$(Family::$variant,)*];

            /// The family's name, which is also its sled tree's name.
            pub fn name(self) -> &'static str {
                match self {
                    $(Family::$variant => $name,)*
                }
            }
        }
    };
}

families! {
    Meta "meta" "Format version and counters.",
    People "people" "pid → identifiers and times.",
    Identifiers "identifiers" "identifier kind + normalized value → pid.",
    Attributes "attributes" "pid → attribute map and set-times.",
    Activity "activity" "pid + time + seq → activity entry.",
    Suppressed "suppressed" "identifier kind + normalized value → suppression record.",
    EventsByName "events_by_name" "Unused since format 3 (tag 7 stays reserved): a person's occurrences of one event are read from `activity`. A key with this tag is damage.",
    EventIds "event_ids" "owner + event id → (time, seq): deduplication of event ids.",
    Anonymous "anonymous" "anonymous_id + time + seq → event of someone not yet identified.",
    Deliveries "deliveries" "pid + created + delivery id → delivery with its metrics.",
    DeliveryIds "delivery_ids" "delivery id → (pid, created).",
    Devices "devices" "pid + token → device.",
    DeviceTokens "device_tokens" "token → pid.",
    ObjectTypes "object_types" "object type id → name.",
    Objects "objects" "object type id + object id → object attributes.",
    Relationships "relationships" "pid + object type id + object id → relationship attributes.",
    Members "members" "object type id + object id + pid → (): an object's people.",
    AnonRelationships "anon_relationships" "anonymous_id + object type id + object id → relationship attributes.",
    Bitmaps "bitmaps" "bitmap id + chunk (pid >> 16) → one chunk of a roaring bitmap.",
    Topics "topics" "topic id → name and default.",
    Segments "segments" "segment id → definition.",
    Ranges "ranges" "Unused since format 3 (tag 22 stays reserved): ordered indexes are bit-sliced bitmaps in `bitmaps`. A key with this tag is damage.",
    EventBlocks "event_blocks" "kind + name + day + block number → a block of that event's rows in column form.",
    BitmapLog "bitmap_log" "commit seq + part → the bitmap membership changes of that commit, not yet folded into `bitmaps`.",
    Changes "changes" "commit seq + part → the change feed's entries for that commit (written only while the feed is on).",
}

impl Family {
    pub(crate) fn index(self) -> usize {
        // Variants are declared in `ALL`'s order with default discriminants.
        self as usize
    }

    /// The family's tag byte: the first byte of each of its keys in the shared sled
    /// tree (its position in [`Family::ALL`], from 1; see `FORMAT.md`).
    pub fn tag(self) -> u8 {
        // At most 255 families; there are 25.
        u8::try_from(self.index() + 1).unwrap_or(u8::MAX)
    }

    /// Decodes a stored key and value of this family, for checks that read every record
    /// ([`ProfileDb::verify`](crate::ProfileDb::verify)). Returns the person the record
    /// belongs to, where the key or value names one.
    pub(crate) fn check_record(self, key: &[u8], value: &[u8]) -> Result<Option<u32>> {
        let k = || KeyReader::new(self, key);
        Ok(match self {
            Family::Meta => decode_value::<MetaF>(key, value).map(|_| None)?,
            Family::People => {
                k().u32()?.1.end()?;
                decode_value::<PeopleF>(key, value)?;
                None
            }
            Family::Identifiers | Family::Suppressed => {
                ident_from_key(self, key)?;
                if self == Family::Identifiers {
                    Some(decode_value::<IdentifiersF>(key, value)?)
                } else {
                    decode_value::<SuppressedF>(key, value)?;
                    None
                }
            }
            Family::Attributes => {
                let (pid, r) = k().u32()?;
                r.end()?;
                decode_value::<AttributesF>(key, value)?;
                Some(pid)
            }
            Family::Activity => {
                let (pid, _, _) = ActivityF::decode_key(key)?;
                decode_value::<ActivityF>(key, value)?;
                Some(pid)
            }
            Family::EventIds => {
                let owner = EventIdsF::decode_key(key)?.0;
                decode_value::<EventIdsF>(key, value)?;
                match owner {
                    EventOwner::Person(pid) => Some(pid),
                    EventOwner::Anonymous(_) => None,
                }
            }
            Family::Anonymous => {
                AnonymousF::decode_key(key)?;
                decode_value::<AnonymousF>(key, value)?;
                None
            }
            Family::Deliveries => {
                let (pid, _, _) = DeliveriesF::decode_key(key)?;
                decode_value::<DeliveriesF>(key, value)?;
                Some(pid)
            }
            Family::DeliveryIds => Some(decode_value::<DeliveryIdsF>(key, value)?.0),
            Family::Devices => {
                let (pid, r) = k().u32()?;
                r.tail_str()?;
                decode_value::<DevicesF>(key, value)?;
                Some(pid)
            }
            Family::DeviceTokens => {
                k().tail_str()?;
                Some(decode_value::<DeviceTokensF>(key, value)?)
            }
            Family::ObjectTypes => {
                k().u32()?.1.end()?;
                decode_value::<ObjectTypesF>(key, value)?;
                None
            }
            Family::Objects => {
                k().u32()?.1.tail_str()?;
                decode_value::<ObjectsF>(key, value)?;
                None
            }
            Family::Relationships => {
                let (pid, r) = k().u32()?;
                r.u32()?.1.tail_str()?;
                decode_value::<RelationshipsF>(key, value)?;
                Some(pid)
            }
            Family::Members => {
                let (_, _, pid) = MembersF::decode_key(key)?;
                decode_value::<MembersF>(key, value)?;
                Some(pid)
            }
            Family::AnonRelationships => {
                let (_, r) = k().str16()?;
                r.u32()?.1.tail_str()?;
                decode_value::<AnonRelationshipsF>(key, value)?;
                None
            }
            Family::Bitmaps => {
                let (_, chunk) = bitmaps::BitmapKey::decode_chunk_key(key)?;
                let bytes = decode_value::<BitmapsF>(key, value)?;
                bitmaps::decode_chunk(key, chunk, &bytes)?;
                None
            }
            Family::Topics => {
                k().u32()?.1.end()?;
                decode_value::<TopicsF>(key, value)?;
                None
            }
            Family::Segments => {
                k().u32()?.1.end()?;
                decode_value::<SegmentsF>(key, value)?;
                None
            }
            Family::Ranges | Family::EventsByName => {
                return Err(corrupted(
                    self,
                    key,
                    format!(
                        "family `{}` is unused since format 3: no record belongs here",
                        self.name()
                    ),
                ));
            }
            Family::BitmapLog => {
                BitmapLogF::decode_key(key)?;
                let entries = decode_value::<BitmapLogF>(key, value)?;
                bitmaps::decode_log(key, entries)?;
                None
            }
            Family::EventBlocks => {
                EventBlocksF::decode_key(key)?;
                decode_value::<EventBlocksF>(key, value)?;
                None
            }
            Family::Changes => {
                ChangesF::decode_key(key)?;
                let record = decode_value::<ChangesF>(key, value)?;
                check_changes(key, &record)?;
                None
            }
        })
    }
}

/// Runs `bytes` through every decoder this module has: the envelope and payload of each
/// family's values, and each key codec. For fuzzing and corpus replay: whatever the
/// bytes, this returns (every result is an `Ok` or a typed error) and never panics.
#[cfg(feature = "__internal")]
pub fn decode_everything(bytes: &[u8]) {
    for family in Family::ALL {
        let _ = family.check_record(bytes, bytes);
        let _ = family.check_record(&[], bytes);
    }
    let _ = codec::decode_payload::<MetaValue>(bytes);
    let _ = codec::decode_payload::<PersonRecord>(bytes);
    if let Ok(record) = codec::decode_payload::<ChangesRecord>(bytes) {
        let _ = check_changes(bytes, &record);
    }
    let _ = codec::decode_payload::<u32>(bytes);
    let _ = codec::decode_payload::<AttributesRecord>(bytes);
    let _ = codec::decode_payload::<ActivityRecord>(bytes);
    let _ = codec::decode_payload::<SuppressedRecord>(bytes);
    let _ = codec::decode_payload::<DeliveryRecord>(bytes);
    let _ = codec::decode_payload::<DeviceRecord>(bytes);
    let _ = codec::decode_payload::<ObjectRecord>(bytes);
    let _ = codec::decode_payload::<ObjectTypeRecord>(bytes);
    let _ = codec::decode_payload::<RelationshipRecord>(bytes);
    let _ = codec::decode_payload::<(i64, u64)>(bytes);
    let _ = codec::decode_payload::<(u32, i64)>(bytes);
    let _ = codec::decode_payload::<TopicRecord>(bytes);
    let _ = codec::decode_payload::<SegmentRecord>(bytes);
    let _ = bitmaps::BitmapKey::decode_chunk_key(bytes);
    let _ = bitmaps::decode_chunk(bytes, 0, bytes);
    let _ = codec::decode_payload::<crate::model::Value>(bytes);
    let _ = pid_from_key(Family::People, bytes);
    let _ = ident_from_key(Family::Identifiers, bytes);
    let _ = ActivityF::decode_key(bytes);
    if let Some((key, rest)) = bytes.split_at_checked(20) {
        let _ = timeline::decode_entries(key, rest);
        let _ = timeline::decode_block(key, rest);
    }
    let _ = EventIdsF::decode_key(bytes);
    let _ = AnonymousF::decode_key(bytes);
    let _ = DeliveriesF::decode_key(bytes);
    let _ = MembersF::decode_key(bytes);
    let _ = BitmapLogF::decode_key(bytes);
    if let Ok(entries) = codec::decode_payload::<bitmaps::LogEntries>(bytes) {
        let _ = bitmaps::decode_log(bytes, entries);
    }
    let _ = EventBlocksF::decode_key(bytes);
    let _ = codec::decode_payload::<event_blocks::EventBlock>(bytes);
}

/// Builds keys: big-endian integers, sign-flipped times, length-prefixed strings.
#[derive(Debug, Default, Clone)]
pub struct KeyBuf(Vec<u8>);

impl KeyBuf {
    /// An empty key.
    pub fn new() -> KeyBuf {
        KeyBuf(Vec::with_capacity(32))
    }
    /// Appends one byte.
    pub fn byte(mut self, b: u8) -> KeyBuf {
        self.0.push(b);
        self
    }
    /// Appends a `u32`, big-endian.
    pub fn u32(mut self, x: u32) -> KeyBuf {
        self.0.extend_from_slice(&x.to_be_bytes());
        self
    }
    /// Appends a `u64`, big-endian.
    pub fn u64(mut self, x: u64) -> KeyBuf {
        self.0.extend_from_slice(&x.to_be_bytes());
        self
    }
    /// Appends a time (sign-flipped `i64`, big-endian).
    pub fn time(mut self, t: i64) -> KeyBuf {
        self.0.extend_from_slice(&codec::time_bytes(t));
        self
    }
    /// Appends a string with a `u16` big-endian length prefix (strings are at most
    /// 65535 bytes; longer ones are cut, which input limits never allow).
    pub fn str16(mut self, s: &str) -> KeyBuf {
        let len = s.len().min(usize::from(u16::MAX));
        self.0.extend_from_slice(&(len as u16).to_be_bytes());
        self.0
            .extend_from_slice(s.as_bytes().get(..len).unwrap_or_default());
        self
    }
    /// Appends a string as the key's tail (no prefix: it must be the last part).
    pub fn tail(mut self, s: &str) -> KeyBuf {
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    /// The key.
    pub fn done(self) -> Vec<u8> {
        self.0
    }
}

/// Reads keys built by [`KeyBuf`]; every malformed key is [`Error::Corrupted`].
#[derive(Clone, Copy)]
pub struct KeyReader<'a> {
    family: Family,
    key: &'a [u8],
    rest: &'a [u8],
}

impl<'a> KeyReader<'a> {
    /// Reads `key` of `family`.
    pub fn new(family: Family, key: &'a [u8]) -> KeyReader<'a> {
        KeyReader {
            family,
            key,
            rest: key,
        }
    }
    fn bad(&self, what: &str) -> Error {
        corrupted(self.family, self.key, format!("malformed key: {what}"))
    }
    fn take<const N: usize>(self, what: &str) -> Result<([u8; N], KeyReader<'a>)> {
        let (head, rest) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or_else(|| self.bad(what))?;
        Ok((*head, KeyReader { rest, ..self }))
    }
    /// One byte.
    pub fn byte(self) -> Result<(u8, KeyReader<'a>)> {
        let ([b], r) = self.take::<1>("missing a byte")?;
        Ok((b, r))
    }
    /// A big-endian `u32`.
    pub fn u32(self) -> Result<(u32, KeyReader<'a>)> {
        let (b, r) = self.take::<4>("missing a 4-byte integer")?;
        Ok((u32::from_be_bytes(b), r))
    }
    /// A big-endian `u64`.
    pub fn u64(self) -> Result<(u64, KeyReader<'a>)> {
        let (b, r) = self.take::<8>("missing an 8-byte integer")?;
        Ok((u64::from_be_bytes(b), r))
    }
    /// A time.
    pub fn time(self) -> Result<(i64, KeyReader<'a>)> {
        let (b, r) = self.take::<8>("missing an 8-byte time")?;
        Ok((codec::time_from_bytes(b), r))
    }
    /// A `u16`-length-prefixed UTF-8 string.
    pub fn str16(self) -> Result<(String, KeyReader<'a>)> {
        let (len, r) = self.take::<2>("missing a string length")?;
        let len = usize::from(u16::from_be_bytes(len));
        if r.rest.len() < len {
            return Err(self.bad("string longer than the key"));
        }
        let (s, rest) = r.rest.split_at(len);
        let s = std::str::from_utf8(s).map_err(|_| self.bad("string is not UTF-8"))?;
        Ok((s.to_owned(), KeyReader { rest, ..self }))
    }
    /// The rest of the key as a UTF-8 string.
    pub fn tail_str(self) -> Result<String> {
        std::str::from_utf8(self.rest)
            .map(str::to_owned)
            .map_err(|_| self.bad("tail is not UTF-8"))
    }
    /// Checks that nothing is left.
    pub fn end(self) -> Result<()> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(self.bad("trailing bytes"))
        }
    }
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
family!(EventIdsF, Family::EventIds, (i64, u64));
family!(AnonymousF, Family::Anonymous, ActivityRecord);
family!(DeliveriesF, Family::Deliveries, DeliveryRecord);
family!(DeliveryIdsF, Family::DeliveryIds, (u32, i64));
family!(DevicesF, Family::Devices, DeviceRecord);
family!(DeviceTokensF, Family::DeviceTokens, u32);
family!(ObjectTypesF, Family::ObjectTypes, ObjectTypeRecord);
family!(ObjectsF, Family::Objects, ObjectRecord);
family!(RelationshipsF, Family::Relationships, RelationshipRecord);
family!(MembersF, Family::Members, ());
family!(
    AnonRelationshipsF,
    Family::AnonRelationships,
    RelationshipRecord
);
family!(BitmapsF, Family::Bitmaps, Vec<u8>);
family!(TopicsF, Family::Topics, TopicRecord);
family!(SegmentsF, Family::Segments, SegmentRecord);
family!(EventBlocksF, Family::EventBlocks, event_blocks::EventBlock);
family!(BitmapLogF, Family::BitmapLog, bitmaps::LogEntries);
family!(ChangesF, Family::Changes, ChangesRecord);

impl ChangesF {
    /// Key: the commit's sequence number (u64) and the part (u32), big-endian.
    pub fn key(commit_seq: u64, part: u32) -> Vec<u8> {
        KeyBuf::new().u64(commit_seq).u32(part).done()
    }
    /// (commit seq, part) of a key.
    pub fn decode_key(key: &[u8]) -> Result<(u64, u32)> {
        let (seq, r) = KeyReader::new(Family::Changes, key).u64()?;
        let (part, r) = r.u32()?;
        r.end()?;
        Ok((seq, part))
    }
}

/// What decoding alone does not check in a `changes` record: each `Members` entry's
/// bitmaps are valid (see [`member_bitmap`]).
fn check_changes(key: &[u8], record: &ChangesRecord) -> Result<()> {
    for entry in &record.entries {
        if let ChangeRecord::Members {
            entered, exited, ..
        } = entry
        {
            member_bitmap(key, entered)?;
            member_bitmap(key, exited)?;
        }
    }
    Ok(())
}

/// A `Members` bitmap of a `changes` record: a roaring bitmap in the portable
/// serialization, exactly as this build writes it (no run containers, containers in
/// ascending order: re-serializing gives the same bytes), of at most 65 536 people, all
/// in one chunk (`pid >> 16`). Anything else is damage: a bitmap that claimed more would
/// make a reader expand billions of changes.
pub(crate) fn member_bitmap(key: &[u8], bytes: &[u8]) -> Result<roaring::RoaringBitmap> {
    let bad = |why: String| corrupted(Family::Changes, key, format!("bad member bitmap: {why}"));
    let bitmap = roaring::RoaringBitmap::deserialize_from(bytes).map_err(|e| bad(e.to_string()))?;
    if bitmap.len() > 1 << 16 {
        return Err(bad(format!("{} members in one chunk", bitmap.len())));
    }
    if bitmap.min().map(|p| p >> 16) != bitmap.max().map(|p| p >> 16) {
        return Err(bad("it spans more than one chunk".into()));
    }
    let mut again = Vec::with_capacity(bitmap.serialized_size());
    bitmap
        .serialize_into(&mut again)
        .map_err(|e| bad(e.to_string()))?;
    if again != bytes {
        return Err(bad("not in the form this format writes".into()));
    }
    Ok(bitmap)
}

impl BitmapLogF {
    /// Key: the commit's sequence number (u64) and the part (u16), big-endian.
    pub fn key(commit_seq: u64, part: u16) -> Vec<u8> {
        let mut k = KeyBuf::new().u64(commit_seq).done();
        k.extend_from_slice(&part.to_be_bytes());
        k
    }
    /// (commit seq, part) of a key.
    pub fn decode_key(key: &[u8]) -> Result<(u64, u16)> {
        let (seq, r) = KeyReader::new(Family::BitmapLog, key).u64()?;
        let (hi, r) = r.byte()?;
        let (lo, r) = r.byte()?;
        r.end()?;
        Ok((seq, u16::from_be_bytes([hi, lo])))
    }
}

/// A float as 8 bytes whose big-endian order is numeric order.
pub fn orderable(x: f64) -> [u8; 8] {
    let bits = x.to_bits();
    let ordered = if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    };
    ordered.to_be_bytes()
}

/// Who an event id belongs to, in `event_ids` keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventOwner {
    /// A person (code 1, then the pid).
    Person(u32),
    /// An anonymous id (code 2, then the `u16`-prefixed anonymous id).
    Anonymous(String),
}

impl EventIdsF {
    /// The key prefix of an owner's event ids.
    pub fn prefix(owner: &EventOwner) -> Vec<u8> {
        match owner {
            EventOwner::Person(pid) => KeyBuf::new().byte(1).u32(*pid).done(),
            EventOwner::Anonymous(anon) => KeyBuf::new().byte(2).str16(anon).done(),
        }
    }
    /// Key: owner, then the event id as the tail.
    pub fn key(owner: &EventOwner, event_id: &str) -> Vec<u8> {
        let mut k = Self::prefix(owner);
        k.extend_from_slice(event_id.as_bytes());
        k
    }
    /// The owner and event id of a key.
    pub fn decode_key(key: &[u8]) -> Result<(EventOwner, String)> {
        let (code, r) = KeyReader::new(Family::EventIds, key).byte()?;
        let (owner, r) = match code {
            1 => {
                let (pid, r) = r.u32()?;
                (EventOwner::Person(pid), r)
            }
            2 => {
                let (anon, r) = r.str16()?;
                (EventOwner::Anonymous(anon), r)
            }
            _ => return Err(corrupted(Family::EventIds, key, "unknown owner code")),
        };
        Ok((owner, r.tail_str()?))
    }
}

/// The kind (`event`, `page`, `screen`) of a code in `event_blocks` keys.
pub fn track_kind_name(code: u8) -> &'static str {
    match code {
        2 => "page",
        3 => "screen",
        _ => "event",
    }
}

/// The one-byte code of a trackable activity kind in `event_blocks` keys.
pub fn track_kind_code(kind: &str) -> u8 {
    match kind {
        "page" => 2,
        "screen" => 3,
        _ => 1,
    }
}

impl EventBlocksF {
    /// The key prefix of one event's blocks (kind code, `u16`-prefixed name).
    pub fn prefix(kind: &str, name: &str) -> Vec<u8> {
        KeyBuf::new().byte(track_kind_code(kind)).str16(name).done()
    }
    /// The key prefix of one event's blocks of day `day` (`unix_seconds.div_euclid(86400)`).
    pub fn day_prefix(kind: &str, name: &str, day: i64) -> Vec<u8> {
        KeyBuf::new()
            .byte(track_kind_code(kind))
            .str16(name)
            .time(day)
            .done()
    }
    /// Key: kind code, `u16`-prefixed name, day (sign-flipped like times), block number.
    pub fn key(kind: &str, name: &str, day: i64, block: u32) -> Vec<u8> {
        let mut k = Self::day_prefix(kind, name, day);
        k.extend_from_slice(&block.to_be_bytes());
        k
    }
    /// (kind code, name, day, block number) of a key; the code is 1..=3 and the day's
    /// seconds all fit an `i64`.
    pub fn decode_key(key: &[u8]) -> Result<(u8, String, i64, u32)> {
        let (code, r) = KeyReader::new(Family::EventBlocks, key).byte()?;
        if !(1..=3).contains(&code) {
            return Err(corrupted(
                Family::EventBlocks,
                key,
                "unknown event kind code",
            ));
        }
        let (name, r) = r.str16()?;
        let (day, r) = r.time()?;
        let (block, r) = r.u32()?;
        r.end()?;
        if day_start(day).is_none() {
            return Err(corrupted(Family::EventBlocks, key, "day out of range"));
        }
        Ok((code, name, day, block))
    }
}

/// The first second of day `day`, when the day lies wholly within `i64` seconds.
pub fn day_start(day: i64) -> Option<i64> {
    let start = day.checked_mul(event_blocks::DAY_SECS)?;
    start.checked_add(event_blocks::DAY_SECS - 1)?;
    Some(start)
}

impl AnonymousF {
    /// The key prefix of one anonymous id's events.
    pub fn prefix(anon: &str) -> Vec<u8> {
        KeyBuf::new().str16(anon).done()
    }
    /// Key: `u16`-prefixed anonymous id, time, seq.
    pub fn key(anon: &str, timestamp: i64, seq: u64) -> Vec<u8> {
        KeyBuf::new().str16(anon).time(timestamp).u64(seq).done()
    }
    /// (anonymous id, time, seq) of a key.
    pub fn decode_key(key: &[u8]) -> Result<(String, i64, u64)> {
        let (anon, r) = KeyReader::new(Family::Anonymous, key).str16()?;
        let (t, r) = r.time()?;
        let (seq, r) = r.u64()?;
        r.end()?;
        Ok((anon, t, seq))
    }
}

impl DeliveriesF {
    /// Key: pid, created time, delivery id as the tail.
    pub fn key(pid: u32, created: i64, delivery_id: &str) -> Vec<u8> {
        KeyBuf::new()
            .u32(pid)
            .time(created)
            .tail(delivery_id)
            .done()
    }
    /// (pid, created, delivery id) of a key.
    pub fn decode_key(key: &[u8]) -> Result<(u32, i64, String)> {
        let (pid, r) = KeyReader::new(Family::Deliveries, key).u32()?;
        let (t, r) = r.time()?;
        Ok((pid, t, r.tail_str()?))
    }
}

impl DevicesF {
    /// Key: pid, token as the tail.
    pub fn key(pid: u32, token: &str) -> Vec<u8> {
        KeyBuf::new().u32(pid).tail(token).done()
    }
    /// The token in a key.
    pub fn token_of(key: &[u8]) -> Result<String> {
        KeyReader::new(Family::Devices, key).u32()?.1.tail_str()
    }
}

impl ObjectsF {
    /// Key: object type id, object id as the tail.
    pub fn key(type_id: u32, object_id: &str) -> Vec<u8> {
        KeyBuf::new().u32(type_id).tail(object_id).done()
    }
    /// (type id, object id) of a key.
    pub fn decode_key(key: &[u8]) -> Result<(u32, String)> {
        let (t, r) = KeyReader::new(Family::Objects, key).u32()?;
        Ok((t, r.tail_str()?))
    }
}

impl RelationshipsF {
    /// Key: pid, object type id, object id as the tail.
    pub fn key(pid: u32, type_id: u32, object_id: &str) -> Vec<u8> {
        KeyBuf::new().u32(pid).u32(type_id).tail(object_id).done()
    }
    /// (pid, type id, object id) of a key.
    pub fn decode_key(key: &[u8]) -> Result<(u32, u32, String)> {
        let (pid, r) = KeyReader::new(Family::Relationships, key).u32()?;
        let (t, r) = r.u32()?;
        Ok((pid, t, r.tail_str()?))
    }
}

impl MembersF {
    /// The key prefix of one object's people.
    pub fn prefix(type_id: u32, object_id: &str) -> Vec<u8> {
        KeyBuf::new().u32(type_id).str16(object_id).done()
    }
    /// Key: object type id, `u16`-prefixed object id, pid.
    pub fn key(type_id: u32, object_id: &str, pid: u32) -> Vec<u8> {
        KeyBuf::new().u32(type_id).str16(object_id).u32(pid).done()
    }
    /// (type id, object id, pid) of a key.
    pub fn decode_key(key: &[u8]) -> Result<(u32, String, u32)> {
        let (t, r) = KeyReader::new(Family::Members, key).u32()?;
        let (o, r) = r.str16()?;
        let (pid, r) = r.u32()?;
        r.end()?;
        Ok((t, o, pid))
    }
}

impl AnonRelationshipsF {
    /// The key prefix of one anonymous id's relationships.
    pub fn prefix(anon: &str) -> Vec<u8> {
        KeyBuf::new().str16(anon).done()
    }
    /// Key: `u16`-prefixed anonymous id, object type id, object id as the tail.
    pub fn key(anon: &str, type_id: u32, object_id: &str) -> Vec<u8> {
        KeyBuf::new()
            .str16(anon)
            .u32(type_id)
            .tail(object_id)
            .done()
    }
    /// (anonymous id, type id, object id) of a key.
    pub fn decode_key(key: &[u8]) -> Result<(String, u32, String)> {
        let (a, r) = KeyReader::new(Family::AnonRelationships, key).str16()?;
        let (t, r) = r.u32()?;
        Ok((a, t, r.tail_str()?))
    }
}

/// The database-wide counters allocated inside a commit and written back to `meta`
/// with it (`MetaValue::Counters`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counters {
    /// The next person id.
    pub next_pid: u64,
    /// The next activity sequence number.
    pub next_seq: u64,
    /// The kept record counts.
    pub counts: records::RecordCounts,
}

impl Counters {
    /// Allocates an activity sequence number.
    pub(crate) fn alloc_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }
}

/// Meta keys.
pub mod meta_keys {
    /// The format record.
    pub const FORMAT: &[u8] = b"format";
    /// The counters and the sequence number of the last commit, written by every commit.
    pub const COUNTERS: &[u8] = b"counters";
    /// The attributes declared indexed (equality bitmaps).
    pub const INDEXED: &[u8] = b"indexed";
    /// The attributes declared range-indexed (the `ranges` family).
    pub const RANGED: &[u8] = b"ranged";
    /// The change feed's settings and how far back it reaches (absent: the feed is off).
    pub const FEED: &[u8] = b"feed";
    /// Where the per-hour event bitmaps begin (`MetaValue::Buckets`).
    pub const BUCKETS: &[u8] = b"buckets";
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
    /// Key: pid, time (sign-flipped), seq: 20 bytes.
    pub fn key(pid: u32, timestamp: i64, seq: u64) -> Vec<u8> {
        KeyBuf::new().u32(pid).time(timestamp).u64(seq).done()
    }

    /// The (pid, time, seq) of a key.
    pub fn decode_key(key: &[u8]) -> Result<(u32, i64, u64)> {
        let (pid, r) = KeyReader::new(Family::Activity, key).u32()?;
        let (t, r) = r.time()?;
        let (seq, r) = r.u64()?;
        r.end()?;
        Ok((pid, t, seq))
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
    codec::decode(F::FAMILY.tag(), key, bytes).map_err(|reason| {
        // An `activity` value that is no sound block reads as one record (see
        // `timeline`): a damaged block says what is wrong with it as a block.
        match timeline::damage(F::FAMILY, key, bytes) {
            Some(why) => corrupted(F::FAMILY, key, why),
            None => corrupted(F::FAMILY, key, reason),
        }
    })
}

/// A visitor of the key and value of each record; it returns whether to go on.
pub(crate) type Visit<'v, F> = dyn FnMut(&[u8], <F as Fam>::Value) -> Result<bool> + 'v;

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
        self.keys_between(family, prefix_bounds(prefix), None)
    }

    /// Keys within `bounds`, ascending, at most `limit` of them, without decoding values.
    pub fn keys_between(
        &self,
        family: Family,
        bounds: (Bound<Vec<u8>>, Bound<Vec<u8>>),
        limit: Option<usize>,
    ) -> Result<Vec<Vec<u8>>> {
        self.kv
            .range(family, bounds, false)
            .take(limit.unwrap_or(usize::MAX))
            .map(|r| r.map(|(k, _)| k).map_err(Error::from))
            .collect()
    }
}

/// The bounds of the keys starting with `prefix`.
pub(crate) fn prefix_bounds(prefix: &[u8]) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    (Bound::Included(prefix.to_vec()), prefix_end(prefix))
}

/// The exclusive upper bound of keys starting with `prefix`.
pub(crate) fn prefix_end(prefix: &[u8]) -> Bound<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Bound::Excluded(end);
        }
    }
    Bound::Unbounded
}

type Encoder = fn(&[u8], &dyn Any) -> std::result::Result<Vec<u8>, String>;

fn encoder<F: Fam>(key: &[u8], value: &dyn Any) -> std::result::Result<Vec<u8>, String> {
    match value.downcast_ref::<F::Value>() {
        Some(v) => codec::encode(F::FAMILY.tag(), key, v),
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
    /// For a dirty slot: the value as stored before this commit, when it was read
    /// (`None`: never read; `Some(None)`: read and absent).
    base: Option<Option<Box<dyn Any + Send>>>,
}

/// The staging area of one atomic commit: typed reads through a cache, typed writes
/// kept decoded until [`Txn::into_write_set`] encodes each of them exactly once.
/// A key written several times in a batch is written to sled once, with its last value.
pub struct Txn<'a> {
    store: &'a Store,
    slots: Vec<BTreeMap<Vec<u8>, Slot>>,
    /// (primary, secondary) of each merge staged, for the change feed.
    merges: Vec<(u32, u32)>,
}

impl<'a> Txn<'a> {
    /// An empty staging area over `store`.
    pub fn new(store: &'a Store) -> Txn<'a> {
        Txn {
            store,
            slots: Family::ALL.iter().map(|_| BTreeMap::new()).collect(),
            merges: Vec::new(),
        }
    }

    fn slots(&mut self, family: Family) -> &mut BTreeMap<Vec<u8>, Slot> {
        let i = family.index();
        // `slots` has one map per family, so `i` is always in range.
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
                base: None,
            },
        );
        Ok(stored)
    }

    /// The value at `key` as it was before this commit (what the store holds), reusing
    /// what was read already.
    pub fn base<F: Fam>(&mut self, key: &[u8]) -> Result<Option<F::Value>> {
        let cached = self.slots(F::FAMILY).get(key).and_then(|slot| {
            let v = if slot.dirty {
                slot.base.as_ref()?
            } else {
                &slot.value
            };
            Some(
                v.as_ref()
                    .and_then(|v| v.downcast_ref::<F::Value>())
                    .cloned(),
            )
        });
        match cached {
            Some(v) => Ok(v),
            None => self.store.get::<F>(key),
        }
    }

    fn stage(
        &mut self,
        family: Family,
        key: Vec<u8>,
        value: Option<Box<dyn Any + Send>>,
        encode: Encoder,
    ) {
        let slots = self.slots(family);
        let base = match slots.remove(&key) {
            Some(old) if !old.dirty => Some(old.value),
            Some(old) => old.base,
            None => None,
        };
        slots.insert(
            key,
            Slot {
                value,
                dirty: true,
                encode,
                base,
            },
        );
    }

    /// Stages `value` at `key`.
    pub fn put<F: Fam>(&mut self, key: Vec<u8>, value: F::Value) {
        self.stage(F::FAMILY, key, Some(Box::new(value)), encoder::<F>);
    }

    /// Stages the removal of `key`.
    pub fn delete<F: Fam>(&mut self, key: Vec<u8>) {
        self.stage(F::FAMILY, key, None, encoder::<F>);
    }

    /// Keys starting with `prefix` as they would be after this commit.
    pub fn keys(&mut self, family: Family, prefix: &[u8]) -> Result<Vec<Vec<u8>>> {
        self.keys_between(family, prefix_bounds(prefix), None)
    }

    /// The records within `bounds` as they would be after this commit, ascending: one
    /// range read of the store (each record read is kept, as [`get`](Txn::get) keeps
    /// it), then the staged writes over it.
    pub fn values_between<F: Fam>(
        &mut self,
        bounds: (Bound<Vec<u8>>, Bound<Vec<u8>>),
    ) -> Result<Vec<(Vec<u8>, F::Value)>> {
        let mut out = Vec::new();
        self.each_between::<F>(bounds, &mut |k, v| {
            out.push((k.to_vec(), v));
            Ok(true)
        })?;
        Ok(out)
    }

    /// Hands `each` the records within `bounds` as they would be after this commit,
    /// ascending, until it returns `false`: the stored records (each one read is kept,
    /// as [`get`](Txn::get) keeps it) merged with the staged writes, decoded one at a
    /// time as the walk reaches them.
    pub fn each_between<F: Fam>(
        &mut self,
        bounds: (Bound<Vec<u8>>, Bound<Vec<u8>>),
        each: &mut Visit<'_, F>,
    ) -> Result<()> {
        let store = self.store;
        let mut staged = self
            .slots(F::FAMILY)
            .range(bounds.clone())
            .map(|(k, _)| k.clone())
            .collect::<Vec<_>>()
            .into_iter()
            .peekable();
        let mut stored = store.kv.range(F::FAMILY, bounds, false).peekable();
        loop {
            let stored_key = match stored.peek() {
                Some(Ok((k, _))) => Some(k.as_slice()),
                Some(Err(_)) => match stored.next() {
                    Some(Err(e)) => return Err(e.into()),
                    _ => continue,
                },
                None => None,
            };
            let take_staged = match (staged.peek(), stored_key) {
                (None, None) => return Ok(()),
                (Some(s), Some(k)) => s.as_slice() <= k,
                (Some(_), None) => true,
                (None, Some(_)) => false,
            };
            let (key, value) = if take_staged {
                let Some(key) = staged.next() else {
                    return Ok(());
                };
                if stored_key == Some(key.as_slice()) {
                    // The staged slot stands for this stored record.
                    stored.next();
                }
                let value = self
                    .slots(F::FAMILY)
                    .get(&key)
                    .and_then(|slot| slot.value.as_ref()?.downcast_ref::<F::Value>())
                    .cloned();
                (key, value)
            } else {
                let Some(Ok((key, bytes))) = stored.next() else {
                    return Ok(());
                };
                let value = decode_value::<F>(&key, &bytes)?;
                self.slots(F::FAMILY).insert(
                    key.clone(),
                    Slot {
                        value: Some(Box::new(value.clone())),
                        dirty: false,
                        encode: encoder::<F>,
                        base: None,
                    },
                );
                (key, Some(value))
            };
            if let Some(value) = value {
                if !each(&key, value)? {
                    return Ok(());
                }
            }
        }
    }

    /// Keys within `bounds` as they would be after this commit, ascending, at most
    /// `limit` of them.
    pub fn keys_between(
        &mut self,
        family: Family,
        bounds: (Bound<Vec<u8>>, Bound<Vec<u8>>),
        limit: Option<usize>,
    ) -> Result<Vec<Vec<u8>>> {
        let mut keys: std::collections::BTreeSet<Vec<u8>> = self
            .store
            .keys_between(family, bounds.clone(), None)?
            .into_iter()
            .collect();
        for (k, slot) in self.slots(family).range(bounds) {
            if slot.dirty {
                if slot.value.is_some() {
                    keys.insert(k.clone());
                } else {
                    keys.remove(k);
                }
            }
        }
        Ok(keys.into_iter().take(limit.unwrap_or(usize::MAX)).collect())
    }

    /// How the staged writes change the kept record counts ([`records::RecordCounts`]),
    /// as signed differences in the order people, objects, events, deliveries, devices,
    /// segments. A slot's state before the commit is its base when it was read; a
    /// `people` key whose pid lies in `fresh_pids`, or an `activity`/`anonymous` key
    /// whose seq lies in `fresh_seqs`, was allocated by this commit and cannot have
    /// existed; anything else is looked up (one read, off the hot path: deletes and
    /// writes of keys never read). An `activity` record counts only when it is a
    /// tracked event.
    pub(crate) fn count_changes(
        &self,
        fresh_pids: std::ops::Range<u64>,
        fresh_seqs: std::ops::Range<u64>,
    ) -> Result<[i64; 6]> {
        let mut out = [0i64; 6];
        let counted = [
            (Family::People, 0usize),
            (Family::Objects, 1),
            (Family::Activity, 2),
            (Family::Anonymous, 2),
            (Family::Deliveries, 3),
            (Family::Devices, 4),
            (Family::Segments, 5),
        ];
        // Whether a value present in `family` is counted.
        let counts = |family: Family, value: &(dyn Any + Send)| {
            family != Family::Activity
                || value
                    .downcast_ref::<ActivityRecord>()
                    .is_some_and(|r| r.tracked().is_some())
        };
        for (family, at) in counted {
            let Some(slots) = self.slots.get(family.index()) else {
                continue;
            };
            let mut diff = 0i64;
            for (key, slot) in slots.iter().filter(|(_, s)| s.dirty) {
                let before = match &slot.base {
                    Some(b) => b.as_deref().is_some_and(|v| counts(family, v)),
                    None => {
                        let fresh = match family {
                            Family::People => pid_from_key(family, key)
                                .is_ok_and(|p| fresh_pids.contains(&u64::from(p))),
                            Family::Activity | Family::Anonymous => key
                                .last_chunk::<8>()
                                .is_some_and(|s| fresh_seqs.contains(&u64::from_be_bytes(*s))),
                            // A delivery whose id this commit read as absent from
                            // `delivery_ids` is new (each delivery has its id there).
                            Family::Deliveries => {
                                DeliveriesF::decode_key(key).is_ok_and(|(_, _, id)| {
                                    self.slots
                                        .get(Family::DeliveryIds.index())
                                        .and_then(|s| s.get(id.as_bytes()))
                                        .is_some_and(|s| {
                                            matches!(s.base, Some(None))
                                                || (!s.dirty && s.value.is_none())
                                        })
                                })
                            }
                            _ => false,
                        };
                        !fresh
                            && match self.store.kv.get(family, key)? {
                                None => false,
                                Some(_) if family != Family::Activity => true,
                                Some(bytes) => {
                                    decode_value::<ActivityF>(key, &bytes)?.tracked().is_some()
                                }
                            }
                    }
                };
                let after = slot.value.as_deref().is_some_and(|v| counts(family, v));
                diff += i64::from(after) - i64::from(before);
            }
            if let Some(o) = out.get_mut(at) {
                *o += diff;
            }
        }
        Ok(out)
    }

    /// The staged writes of family `F`, in key order: (key, the value before this commit
    /// when it was read — `None` when it was not — and the value staged, `None` for a
    /// delete).
    #[allow(clippy::type_complexity)]
    pub(crate) fn dirty<F: Fam>(
        &self,
    ) -> Vec<(&[u8], Option<Option<&F::Value>>, Option<&F::Value>)> {
        let Some(slots) = self.slots.get(F::FAMILY.index()) else {
            return Vec::new();
        };
        slots
            .iter()
            .filter(|(_, s)| s.dirty)
            .map(|(k, s)| {
                let base = s
                    .base
                    .as_ref()
                    .map(|b| b.as_ref().and_then(|v| v.downcast_ref::<F::Value>()));
                let new = s.value.as_ref().and_then(|v| v.downcast_ref::<F::Value>());
                (k.as_slice(), base, new)
            })
            .collect()
    }

    /// Notes that this commit merges `secondary` into `primary` (the change feed reports
    /// it; the records say only that `secondary` is gone).
    pub(crate) fn note_merge(&mut self, primary: u32, secondary: u32) {
        self.merges.push((primary, secondary));
    }

    /// The merges noted, in order.
    pub(crate) fn merges(&self) -> &[(u32, u32)] {
        &self.merges
    }

    /// The store this staging area reads.
    pub(crate) fn store(&self) -> &Store {
        self.store
    }

    /// The greatest key starting with `prefix` as it would be after this commit.
    pub fn last_key(&mut self, family: Family, prefix: &[u8]) -> Result<Option<Vec<u8>>> {
        let bounds = prefix_bounds(prefix);
        let staged = self.slots(family);
        let mut staged_last = None;
        for (k, slot) in staged.range(bounds.clone()).rev() {
            if slot.dirty && slot.value.is_some() {
                staged_last = Some(k.clone());
                break;
            }
        }
        let mut stored_last = None;
        for item in self.store.kv.range(family, bounds, true) {
            let (k, _) = item?;
            match self.slots(family).get(&k) {
                Some(slot) if slot.dirty && slot.value.is_none() => continue,
                _ => {
                    stored_last = Some(k);
                    break;
                }
            }
        }
        Ok(staged_last.max(stored_last))
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
                    Some(v) => Some((slot.encode)(&key, v.as_ref()).map_err(|reason| {
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

#[cfg(test)]
mod family_tests {
    use super::Family;

    #[test]
    #[allow(clippy::unwrap_used)]
    fn the_retired_families_hold_nothing() {
        // Tags 7 and 22 are reserved since format 3: any record under them is damage.
        for family in [Family::EventsByName, Family::Ranges] {
            let err = family.check_record(b"k", b"v").unwrap_err();
            assert!(err.to_string().contains("unused since format 3"), "{err}");
            assert!(err.to_string().contains(family.name()), "{err}");
        }
    }

    #[test]
    fn family_tags_are_the_documented_ones() {
        // FORMAT.md lists these; changing one is a format change.
        let tags: Vec<(&str, u8)> = Family::ALL.iter().map(|f| (f.name(), f.tag())).collect();
        let want = [
            "meta",
            "people",
            "identifiers",
            "attributes",
            "activity",
            "suppressed",
            "events_by_name",
            "event_ids",
            "anonymous",
            "deliveries",
            "delivery_ids",
            "devices",
            "device_tokens",
            "object_types",
            "objects",
            "relationships",
            "members",
            "anon_relationships",
            "bitmaps",
            "topics",
            "segments",
            "ranges",
            "event_blocks",
            "bitmap_log",
            "changes",
        ];
        assert_eq!(tags.len(), want.len());
        for (i, (name, tag)) in tags.into_iter().enumerate() {
            assert_eq!(
                (name, usize::from(tag)),
                (want.get(i).copied().unwrap_or(""), i + 1)
            );
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod txn_tests {
    use super::*;
    use crate::store::kv::SledKv;
    use std::collections::BTreeMap;

    fn key(i: u64) -> Vec<u8> {
        format!("k{i:03}").into_bytes()
    }

    #[test]
    fn a_staged_walk_merges_writes_over_the_store_and_stops_when_told() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(Box::new(
            SledKv::open_waiting(dir.path(), 1 << 22, 1).unwrap(),
        ));
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let mut model: BTreeMap<Vec<u8>, u32> = BTreeMap::new();
        for round in 0..60 {
            let mut txn = Txn::new(&store);
            let mut staged = model.clone();
            for _ in 0..next(12) {
                let k = key(next(40));
                if next(3) == 0 {
                    txn.delete::<IdentifiersF>(k.clone());
                    staged.remove(&k);
                } else {
                    let v = u32::try_from(next(1000)).unwrap();
                    txn.put::<IdentifiersF>(k.clone(), v);
                    staged.insert(k, v);
                }
            }
            // Random bounds, a random stop, and reading a range twice (the second
            // time from what the first kept).
            for _ in 0..3 {
                let (a, b) = (next(42), next(42));
                let bounds = (
                    Bound::Included(key(a.min(b))),
                    Bound::Excluded(key(a.max(b))),
                );
                let stop = usize::try_from(next(8)).unwrap();
                let mut seen = Vec::new();
                txn.each_between::<IdentifiersF>(bounds.clone(), &mut |k, v| {
                    seen.push((k.to_vec(), v));
                    Ok(seen.len() < stop)
                })
                .unwrap();
                let want: Vec<(Vec<u8>, u32)> = staged
                    .range(bounds.clone())
                    .map(|(k, v)| (k.clone(), *v))
                    .take(stop.max(1))
                    .collect();
                assert_eq!(seen, want, "round {round}, bounds {bounds:?}, stop {stop}");
                let all = txn.values_between::<IdentifiersF>(bounds.clone()).unwrap();
                let want: Vec<(Vec<u8>, u32)> =
                    staged.range(bounds).map(|(k, v)| (k.clone(), *v)).collect();
                assert_eq!(all, want, "round {round}");
            }
            store.kv.commit(&txn.into_write_set().unwrap()).unwrap();
            model = staged;
        }
    }
}
