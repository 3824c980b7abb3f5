//! The `bitmaps` family's bytes: the key of each bitmap's chunks ([`BitmapKey`]) and
//! the chunk codec (roaring's portable format, one container per chunk, read back with
//! the validating decoder and checked against its key). What a bitmap means, and how
//! bitmaps change, is `index/`'s.

use roaring::RoaringBitmap;

use crate::error::Result;

use super::{corrupted, Family, KeyBuf, KeyReader};

/// Which bitmap.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BitmapKey {
    /// Every person.
    All,
    /// Globally unsubscribed (`unsubscribed` is truthy).
    Unsubscribed,
    /// Explicitly opted in to topic N (`cio_subscription_preferences.topics.topic_N` true).
    TopicIn(u32),
    /// Explicitly opted out of topic N.
    TopicOut(u32),
    /// Members of segment N.
    Segment(u32),
    /// Related to object (type, id).
    Related(u32, String),
    /// Related to any object of the type.
    RelatedType(u32),
    /// Has a device of the platform (`ios`, `android`).
    Platform(String),
    /// Has an event of kind (`event`, `page`, `screen`) and name on record (exact: a
    /// person leaves it when their last occurrence expires).
    Event(String, String),
    /// Ever had the delivery metric (`opened`, `clicked`...).
    Metric(String),
    /// Has the top-level attribute (identifiers `id`, `email`, `phone` count).
    HasAttr(String),
    /// The declared-indexed attribute equals the value (in its canonical JSON text).
    AttrEq(String, String),
    /// Tracked an event of kind and name in the hour ([`hour_of`]) — exact: a person
    /// leaves it when their last occurrence in that hour expires. `within` conditions are
    /// answered from these and [`EventDay`](BitmapKey::EventDay): every bucket after the
    /// window's first is wholly inside it, so only people seen in that first bucket alone
    /// are checked one by one. Kept for the recent days only (see
    /// [`HOUR_DAYS`](crate::index::HOUR_DAYS)).
    ///
    /// [`hour_of`]: crate::index::hour_of
    EventHour(String, String, i64),
    /// Tracked an event of kind and name on the day ([`day_of`]), for the days before
    /// those kept in hours — exact like [`EventHour`](BitmapKey::EventHour).
    ///
    /// [`day_of`]: crate::index::day_of
    EventDay(String, String, i64),
    /// A bit slice of a ranged attribute's ordered index: the people whose value's
    /// 64-bit orderable encoding (`index::range::encode`) has bit N (0 = least
    /// significant, at most 63) set.
    RangeBit(String, u8),
    /// The people whose ranged attribute holds a number (or a numeric string): the
    /// existence bitmap of its bit slices.
    RangeHas(String),
}

/// Bits in a ranged attribute's orderable encoding: bit slices are numbered 0..64.
pub const RANGE_BITS: u8 = 64;

impl BitmapKey {
    fn tag(&self) -> u8 {
        match self {
            BitmapKey::All => 0,
            BitmapKey::Unsubscribed => 1,
            BitmapKey::TopicIn(_) => 2,
            BitmapKey::TopicOut(_) => 3,
            BitmapKey::Segment(_) => 4,
            BitmapKey::Related(..) => 5,
            BitmapKey::RelatedType(_) => 6,
            BitmapKey::Platform(_) => 7,
            BitmapKey::Event(..) => 8,
            BitmapKey::Metric(_) => 9,
            BitmapKey::HasAttr(_) => 10,
            BitmapKey::AttrEq(..) => 11,
            BitmapKey::EventHour(..) => 12,
            BitmapKey::RangeBit(..) => 13,
            BitmapKey::RangeHas(_) => 14,
            BitmapKey::EventDay(..) => 15,
        }
    }

    /// The key prefix of this bitmap's chunks: tag byte, then its fields.
    pub fn prefix(&self) -> Vec<u8> {
        let k = KeyBuf::new().byte(self.tag());
        match self {
            BitmapKey::All | BitmapKey::Unsubscribed => k,
            BitmapKey::TopicIn(n)
            | BitmapKey::TopicOut(n)
            | BitmapKey::Segment(n)
            | BitmapKey::RelatedType(n) => k.u32(*n),
            BitmapKey::Related(t, o) => k.u32(*t).str16(o),
            BitmapKey::Platform(s)
            | BitmapKey::Metric(s)
            | BitmapKey::HasAttr(s)
            | BitmapKey::RangeHas(s) => k.str16(s),
            BitmapKey::RangeBit(s, bit) => k.str16(s).byte(*bit),
            BitmapKey::Event(a, b) | BitmapKey::AttrEq(a, b) => k.str16(a).str16(b),
            BitmapKey::EventHour(a, b, t) | BitmapKey::EventDay(a, b, t) => {
                k.str16(a).str16(b).time(*t)
            }
        }
        .done()
    }

    /// The key of chunk `chunk` (= `pid >> 16`).
    pub fn chunk_key(&self, chunk: u16) -> Vec<u8> {
        let mut k = self.prefix();
        k.extend_from_slice(&chunk.to_be_bytes());
        k
    }

    /// The bitmap and chunk of a stored key.
    pub fn decode_chunk_key(key: &[u8]) -> Result<(BitmapKey, u16)> {
        let r = KeyReader::new(Family::Bitmaps, key);
        let (tag, r) = r.byte()?;
        let (bk, r) = match tag {
            0 => (BitmapKey::All, r),
            1 => (BitmapKey::Unsubscribed, r),
            2..=4 | 6 => {
                let (n, r) = r.u32()?;
                let bk = match tag {
                    2 => BitmapKey::TopicIn(n),
                    3 => BitmapKey::TopicOut(n),
                    4 => BitmapKey::Segment(n),
                    _ => BitmapKey::RelatedType(n),
                };
                (bk, r)
            }
            5 => {
                let (t, r) = r.u32()?;
                let (o, r) = r.str16()?;
                (BitmapKey::Related(t, o), r)
            }
            7 | 9 | 10 | 14 => {
                let (s, r) = r.str16()?;
                let bk = match tag {
                    7 => BitmapKey::Platform(s),
                    9 => BitmapKey::Metric(s),
                    10 => BitmapKey::HasAttr(s),
                    _ => BitmapKey::RangeHas(s),
                };
                (bk, r)
            }
            8 | 11 => {
                let (a, r) = r.str16()?;
                let (b, r) = r.str16()?;
                let bk = if tag == 8 {
                    BitmapKey::Event(a, b)
                } else {
                    BitmapKey::AttrEq(a, b)
                };
                (bk, r)
            }
            12 | 15 => {
                let (a, r) = r.str16()?;
                let (b, r) = r.str16()?;
                let (t, r) = r.time()?;
                let bk = if tag == 12 {
                    BitmapKey::EventHour(a, b, t)
                } else {
                    BitmapKey::EventDay(a, b, t)
                };
                (bk, r)
            }
            13 => {
                let (s, r) = r.str16()?;
                let (bit, r) = r.byte()?;
                if bit >= RANGE_BITS {
                    return Err(corrupted(
                        Family::Bitmaps,
                        key,
                        format!("range bit slice {bit} is past bit 63"),
                    ));
                }
                (BitmapKey::RangeBit(s, bit), r)
            }
            _ => return Err(corrupted(Family::Bitmaps, key, "unknown bitmap tag")),
        };
        let (hi, r) = r.byte()?;
        let (lo, r) = r.byte()?;
        r.end()?;
        Ok((bk, u16::from_be_bytes([hi, lo])))
    }
}

/// The largest serialized chunk accepted from disk: one roaring container is at most
/// 8 KiB, plus headers.
const MAX_CHUNK_BYTES: usize = 16 << 10;

/// Serializes one chunk (the members of one `pid >> 16` range).
pub fn encode_chunk(chunk: &RoaringBitmap) -> Vec<u8> {
    let mut out = Vec::with_capacity(chunk.serialized_size());
    // Writing into a Vec cannot fail.
    let _ = chunk.serialize_into(&mut out);
    out
}

/// Reads one stored chunk with roaring's validating decoder, checking that every member
/// lies in the chunk's range.
pub fn decode_chunk(key: &[u8], chunk: u16, bytes: &[u8]) -> Result<RoaringBitmap> {
    if bytes.len() > MAX_CHUNK_BYTES {
        return Err(corrupted(
            Family::Bitmaps,
            key,
            format!(
                "chunk of {} bytes is larger than any valid chunk",
                bytes.len()
            ),
        ));
    }
    let bitmap = RoaringBitmap::deserialize_from(bytes)
        .map_err(|e| corrupted(Family::Bitmaps, key, format!("invalid roaring bitmap: {e}")))?;
    // roaring's validating decoder accepts containers with repeated or unsorted keys, and
    // empty run containers (both found by the record_decode fuzzer), so `min`/`max` do not
    // bound the members and the bitmap may not even re-serialize. A chunk we write is
    // exactly one container, keyed by the chunk number, in roaring's format without run
    // containers (`encode_chunk`): cookie 12346, count 1, key = chunk (all little-endian).
    // Checking that header rules out both defects without visiting every member; the
    // size check then rules out trailing bytes.
    let mut header = Vec::with_capacity(10);
    header.extend_from_slice(&12_346u32.to_le_bytes());
    header.extend_from_slice(&1u32.to_le_bytes());
    header.extend_from_slice(&chunk.to_le_bytes());
    if bytes.get(..10) != Some(header.as_slice()) {
        return Err(corrupted(
            Family::Bitmaps,
            key,
            "chunk is not one roaring container for its range",
        ));
    }
    if bitmap.serialized_size() != bytes.len() {
        return Err(corrupted(
            Family::Bitmaps,
            key,
            format!(
                "chunk is {} bytes, but its members take {} (trailing bytes)",
                bytes.len(),
                bitmap.serialized_size()
            ),
        ));
    }
    Ok(bitmap)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    /// Fuzz bug 2 (record_decode): roaring decodes an empty run container, which then
    /// panicked re-serializing (`len() - 1`); chunks must be in the form we write.
    #[test]
    fn fuzz_bug_02_chunk_with_an_empty_run_container_is_corrupted() {
        // Run-container cookie, 1 container (key 48, flagged as runs) holding 0 runs.
        let bytes = [0x3b, 0x30, 0, 0, 0x01, 0x30, 0, 0, 0, 0, 0];
        let decoded = RoaringBitmap::deserialize_from(&bytes[..]).unwrap();
        // `is_empty` is false: it counts containers, and there is one, empty.
        assert_eq!(
            decoded.len(),
            0,
            "roaring accepts it: the check is ours to make"
        );
        let err = decode_chunk(b"k", 0, &bytes).unwrap_err().to_string();
        assert!(err.contains("not one roaring container"), "{err}");
        // A valid chunk with trailing bytes is refused too.
        let mut trailing = encode_chunk(&(1..10).collect());
        trailing.push(0);
        assert!(decode_chunk(b"k", 0, &trailing).is_err());
        assert_eq!(
            decode_chunk(b"k", 0, &trailing[..trailing.len() - 1]).unwrap(),
            (1..10).collect()
        );
    }

    /// Fuzz bug 1 (record_decode): roaring decodes a chunk whose containers repeat or are
    /// out of order, so checking `min`/`max` let members of another chunk through.
    #[test]
    fn fuzz_bug_01_chunk_with_unsorted_containers_is_corrupted() {
        // No-run-container cookie, 3 containers: keys 0, 7, 0, one member each (0, 7<<16, 0).
        let mut bytes = vec![0x3a, 0x30, 0, 0, 3, 0, 0, 0];
        for key in [0u16, 7, 0] {
            bytes.extend_from_slice(&key.to_le_bytes());
            bytes.extend_from_slice(&0u16.to_le_bytes()); // cardinality - 1
        }
        for offset in [32u32, 34, 36] {
            bytes.extend_from_slice(&offset.to_le_bytes());
        }
        bytes.extend_from_slice(&[0; 6]); // the three members' low 16 bits
        let decoded = RoaringBitmap::deserialize_from(&bytes[..]);
        assert!(
            decoded.is_ok(),
            "roaring accepts it: the check is ours to make"
        );
        let err = decode_chunk(b"k", 0, &bytes).unwrap_err().to_string();
        assert!(err.contains("not one roaring container"), "{err}");
        // Repeated keys alone (all members in range) are refused too.
        let mut twice = vec![0x3a, 0x30, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        twice.extend_from_slice(&24u32.to_le_bytes());
        twice.extend_from_slice(&26u32.to_le_bytes());
        twice.extend_from_slice(&[0; 4]);
        assert!(RoaringBitmap::deserialize_from(&twice[..]).is_ok());
        let err = decode_chunk(b"k", 0, &twice).unwrap_err().to_string();
        assert!(err.contains("not one roaring container"), "{err}");
    }

    #[test]
    fn chunk_keys_roundtrip() {
        let keys = [
            BitmapKey::All,
            BitmapKey::Unsubscribed,
            BitmapKey::TopicIn(3),
            BitmapKey::TopicOut(4),
            BitmapKey::Segment(9),
            BitmapKey::Related(1, "acme".into()),
            BitmapKey::RelatedType(2),
            BitmapKey::Platform("ios".into()),
            BitmapKey::Event("event".into(), "purchase".into()),
            BitmapKey::Metric("opened".into()),
            BitmapKey::HasAttr("plan".into()),
            BitmapKey::AttrEq("plan".into(), "\"pro\"".into()),
            BitmapKey::EventHour("event".into(), "purchase".into(), 490_896),
            BitmapKey::EventHour("page".into(), "/".into(), -3),
            BitmapKey::EventDay("event".into(), "purchase".into(), 20_454),
            BitmapKey::EventDay("page".into(), "/".into(), -1),
            BitmapKey::RangeBit("age".into(), 0),
            BitmapKey::RangeBit("age".into(), 63),
            BitmapKey::RangeHas("age".into()),
        ];
        for k in keys {
            for chunk in [0u16, 1, 0xFFFF] {
                let (back, c) = BitmapKey::decode_chunk_key(&k.chunk_key(chunk)).unwrap();
                assert_eq!((back, c), (k.clone(), chunk));
            }
        }
        assert!(BitmapKey::decode_chunk_key(&[99, 0, 0]).is_err());
        assert!(BitmapKey::decode_chunk_key(&[0]).is_err());
        // A bit slice past bit 63 does not exist.
        let mut past = BitmapKey::RangeBit("age".into(), 63).chunk_key(0);
        let at = past.len() - 3;
        past[at] = 64;
        assert!(BitmapKey::decode_chunk_key(&past).is_err());
    }

    #[test]
    fn chunks_roundtrip_and_are_range_checked() {
        let mut b = RoaringBitmap::new();
        b.insert(5);
        b.insert(70_000);
        let c0: RoaringBitmap = b.iter().filter(|p| p >> 16 == 0).collect();
        assert_eq!(c0.len(), 1);
        let bytes = encode_chunk(&c0);
        assert_eq!(decode_chunk(b"k", 0, &bytes).unwrap(), c0);
        assert!(
            decode_chunk(b"k", 1, &bytes).is_err(),
            "member 5 is not in chunk 1"
        );
        assert!(decode_chunk(b"k", 0, &[1, 2, 3]).is_err());
    }
}

/// The value of a `bitmap_log` record: for each bitmap whose membership the commit
/// changed, in ascending order of its id bytes, (id bytes as in [`BitmapKey::prefix`],
/// pids added, pids removed), each pid list delta-coded (the first pid, then the gap to
/// each next one, every gap at least 1).
pub type LogEntries = Vec<(Vec<u8>, Vec<u32>, Vec<u32>)>;

/// One bitmap's membership changes in a log record: (bitmap, added, removed), each pid
/// list strictly ascending.
pub type LogChange = (BitmapKey, Vec<u32>, Vec<u32>);

fn gaps(pids: &[u32]) -> Vec<u32> {
    let mut prev = None;
    pids.iter()
        .map(|&p| {
            let g = match prev {
                Some(q) => p.wrapping_sub(q),
                None => p,
            };
            prev = Some(p);
            g
        })
        .collect()
}

/// Encodes changes (bitmaps in ascending id-byte order, pid lists strictly ascending and
/// disjoint) as a log record's value.
pub fn encode_log(changes: &[LogChange]) -> LogEntries {
    changes
        .iter()
        .map(|(k, add, remove)| (k.prefix(), gaps(add), gaps(remove)))
        .collect()
}

/// Decodes and validates a log record's value: ids are bitmap ids in strictly ascending
/// order, written canonically; each entry changes something; pid lists are strictly
/// ascending (every gap after the first at least 1, no overflow) and disjoint.
pub fn decode_log(key: &[u8], entries: LogEntries) -> Result<Vec<LogChange>> {
    let bad = |why: String| corrupted(Family::BitmapLog, key, why);
    if entries.is_empty() {
        return Err(bad("log record changes no bitmap".into()));
    }
    let mut out = Vec::with_capacity(entries.len());
    let mut last: Option<Vec<u8>> = None;
    for (id, add, remove) in entries {
        if last.as_ref().is_some_and(|l| *l >= id) {
            return Err(bad("bitmap ids are not in strictly ascending order".into()));
        }
        let mut chunk_key = id.clone();
        chunk_key.extend_from_slice(&[0, 0]);
        let (bk, _) = BitmapKey::decode_chunk_key(&chunk_key)
            .map_err(|e| bad(format!("bad bitmap id: {e}")))?;
        if bk.prefix() != id {
            return Err(bad("bitmap id is not in its canonical form".into()));
        }
        if add.is_empty() && remove.is_empty() {
            return Err(bad(format!("entry for {bk:?} changes nothing")));
        }
        let undelta = |g: Vec<u32>, what: &str| -> Result<Vec<u32>> {
            let mut pids = Vec::with_capacity(g.len());
            let mut prev: Option<u32> = None;
            for gap in g {
                let p = match prev {
                    None => gap,
                    Some(_) if gap == 0 => {
                        return Err(bad(format!("{what} pids of {bk:?} repeat a pid")))
                    }
                    Some(q) => q
                        .checked_add(gap)
                        .ok_or_else(|| bad(format!("{what} pids of {bk:?} overflow")))?,
                };
                pids.push(p);
                prev = Some(p);
            }
            Ok(pids)
        };
        let add = undelta(add, "added")?;
        let remove = undelta(remove, "removed")?;
        // Both strictly ascending: a merge walk finds any pid in both.
        let (mut i, mut j) = (0, 0);
        while let (Some(a), Some(r)) = (add.get(i), remove.get(j)) {
            match a.cmp(r) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
                std::cmp::Ordering::Equal => {
                    return Err(bad(format!(
                        "pid {a} is both added to and removed from {bk:?}"
                    )))
                }
            }
        }
        last = Some(id);
        out.push((bk, add, remove));
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod log_tests {
    use super::*;

    #[test]
    fn log_records_roundtrip_and_are_validated() {
        let changes: Vec<LogChange> = vec![
            (BitmapKey::All, vec![1, 2, 70_000], vec![5]),
            (BitmapKey::HasAttr("plan".into()), vec![], vec![3, u32::MAX]),
        ];
        let entries = encode_log(&changes);
        assert_eq!(entries[0].1, vec![1, 1, 69_998]);
        assert_eq!(decode_log(b"k", entries.clone()).unwrap(), changes);
        let refused = |e: LogEntries, why: &str| {
            let err = decode_log(b"k", e).unwrap_err().to_string();
            assert!(err.contains(why), "{err} lacks {why}");
        };
        refused(Vec::new(), "changes no bitmap");
        let mut e = entries.clone();
        e.swap(0, 1);
        refused(e, "ascending");
        let mut e = entries.clone();
        e[0].1 = vec![1, 0];
        refused(e, "repeat");
        let mut e = entries.clone();
        e[0].1 = vec![u32::MAX, 1];
        refused(e, "overflow");
        let mut e = entries.clone();
        e[0].2 = vec![2];
        refused(e, "both added to and removed");
        let mut e = entries.clone();
        e[0].0 = vec![99];
        refused(e, "bad bitmap id");
        let mut e = entries.clone();
        e[1].1 = Vec::new();
        e[1].2 = Vec::new();
        refused(e, "changes nothing");
        let mut e = entries;
        e[1].0.push(7);
        refused(e, "bad bitmap id");
    }
}
