//! The `track` operation (and its kin); the rules are documented on
//! [`ProfileDb::track`](crate::ProfileDb::track), where users read them.

use crate::db::write::Ctx;
use crate::error::{InputError, InputReason, Result};
use crate::index::hour_of;
use crate::limits::Limits;
use crate::model::Outcome;
use crate::model::{kinds, Ident, IdentKind, Map, PersonId, TrackKind, Value};
use crate::people;
use crate::store::event_blocks::{EventBlock, BLOCK_TARGET_BYTES, DAY_SECS};
use crate::store::records::ActivityRecord;
use crate::store::{
    corrupted, ActivityF, AnonRelationshipsF, AnonymousF, EventBlocksF, EventIdsF, EventOwner,
    Family, MembersF, RelationshipsF, Txn,
};

/// Longest event id, in bytes.
pub const MAX_EVENT_ID_BYTES: usize = 150;

/// A tracked event, page view or screen view.
///
/// # Examples
/// ```
/// use profiledb::{Ident, Track};
/// let t = Track::event(Ident::id("u-1"), "purchase")
///     .property("amount", 42)
///     .timestamp(1_767_225_600)
///     .id("01HZX3J0E7Q0V4K6W8Y9Z1A2B3");
/// let anon = Track::anonymous("anon-7", "Product Viewed");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Track {
    pub(crate) who: Ident,
    pub(crate) kind: TrackKind,
    pub(crate) name: String,
    pub(crate) data: Map,
    pub(crate) timestamp: Option<i64>,
    pub(crate) event_id: Option<String>,
}

impl Track {
    /// An event named `name` by the person `who`.
    pub fn new(who: Ident, kind: TrackKind, name: impl Into<String>) -> Track {
        Track {
            who,
            kind,
            name: name.into(),
            data: Map::new(),
            timestamp: None,
            event_id: None,
        }
    }
    /// An event.
    pub fn event(who: Ident, name: impl Into<String>) -> Track {
        Track::new(who, TrackKind::Event, name)
    }
    /// A page view of `url`.
    pub fn page(who: Ident, url: impl Into<String>) -> Track {
        Track::new(who, TrackKind::Page, url)
    }
    /// A screen view.
    pub fn screen(who: Ident, screen: impl Into<String>) -> Track {
        Track::new(who, TrackKind::Screen, screen)
    }
    /// An event by someone known only by `anonymous_id`.
    pub fn anonymous(anonymous_id: impl Into<String>, name: impl Into<String>) -> Track {
        Track::event(Ident::anonymous_id(anonymous_id), name)
    }
    /// Sets one property of the event data.
    pub fn property(mut self, name: impl Into<String>, value: impl Into<Value>) -> Track {
        self.data.insert(name.into(), value.into());
        self
    }
    /// Replaces the event data.
    pub fn data(mut self, data: Map) -> Track {
        self.data = data;
        self
    }
    /// When it happened, unix seconds (default: now). Past times backfill. A time outside
    /// [`EVENT_TIME_MIN`]..=[`EVENT_TIME_MAX`] (about ±292 billion years) is refused
    /// with `Error::Input` naming `timestamp`.
    pub fn timestamp(mut self, unix_seconds: i64) -> Track {
        self.timestamp = Some(unix_seconds);
        self
    }
    /// The event's id: a second event with the same id for the same person is ignored.
    pub fn id(mut self, event_id: impl Into<String>) -> Track {
        self.event_id = Some(event_id.into());
        self
    }
}

fn check_event(limits: &Limits, t: &Track) -> Result<(String, Value), InputError> {
    let name = t.name.trim().to_owned();
    if name.is_empty() {
        return Err(InputError::new("name", InputReason::Empty));
    }
    if name.len() > limits.max_event_name_bytes {
        return Err(InputError::new(
            "name",
            InputReason::TooLong {
                len: name.len(),
                max: limits.max_event_name_bytes,
            },
        ));
    }
    if let Some(id) = &t.event_id {
        if id.is_empty() {
            return Err(InputError::new("id", InputReason::Empty));
        }
        if id.len() > MAX_EVENT_ID_BYTES {
            return Err(InputError::new(
                "id",
                InputReason::TooLong {
                    len: id.len(),
                    max: MAX_EVENT_ID_BYTES,
                },
            ));
        }
    }
    if let Some(time) = t.timestamp {
        check_event_time(time)?;
    }
    let data = Value::Map(t.data.clone());
    crate::limits::check_value("data", &data, limits.max_event_data_bytes)?;
    Ok((name, data))
}

/// The earliest time an event may have: the first second of the earliest day whose every
/// second fits an `i64` (its `event_blocks` key needs the whole day).
pub const EVENT_TIME_MIN: i64 = (i64::MIN / DAY_SECS) * DAY_SECS;
/// The latest time an event may have: the last second of the latest day whose every
/// second fits an `i64`.
pub const EVENT_TIME_MAX: i64 = ((i64::MAX - (DAY_SECS - 1)) / DAY_SECS) * DAY_SECS + DAY_SECS - 1;

/// Refuses an event time outside [`EVENT_TIME_MIN`]..=[`EVENT_TIME_MAX`].
pub(crate) fn check_event_time(time: i64) -> Result<(), InputError> {
    if (EVENT_TIME_MIN..=EVENT_TIME_MAX).contains(&time) {
        Ok(())
    } else {
        Err(InputError::invalid(
            "timestamp",
            format!(
                "{time} is out of range: an event's time is unix seconds from \
                 {EVENT_TIME_MIN} to {EVENT_TIME_MAX}"
            ),
        ))
    }
}

/// Track: records an event, page or screen view.
pub(crate) fn track(cx: &mut Ctx<'_, '_>, t: &Track) -> Result<Outcome> {
    let (name, data) = check_event(cx.limits, t)?;
    let timestamp = t.timestamp.unwrap_or(cx.now);
    let pid = if t.who.kind == IdentKind::AnonymousId {
        let norm = cx.normalize(&t.who)?;
        match cx.lookup(IdentKind::AnonymousId, &norm)? {
            Some(pid) => pid,
            None => return track_anonymous(cx, &norm, t.kind, name, data, timestamp, t),
        }
    } else {
        match people::resolve_or_create(cx, &t.who)? {
            Ok(pid) => pid,
            Err(outcome) => return Ok(outcome),
        }
    };
    let owner = EventOwner::Person(pid);
    if let Some(id) = &t.event_id {
        if cx
            .txn
            .get::<EventIdsF>(&EventIdsF::key(&owner, id))?
            .is_some()
        {
            return Ok(Outcome::Duplicate);
        }
    }
    let seq = cx.next_seq();
    cx.touches.of(pid).events.insert((
        t.kind.as_str().to_owned(),
        name.clone(),
        hour_of(timestamp),
    ));
    put_event(
        cx.txn,
        pid,
        timestamp,
        seq,
        ActivityRecord {
            kind: t.kind.as_str().to_owned(),
            name: Some(name),
            data,
            event_id: t.event_id.clone(),
        },
    )?;
    Ok(Outcome::Recorded(Some(PersonId(pid))))
}

/// Writes a person's tracked event to the timeline, the event's blocks and the id index.
fn put_event(
    txn: &mut Txn<'_>,
    pid: u32,
    timestamp: i64,
    seq: u64,
    rec: ActivityRecord,
) -> Result<()> {
    if let Some(name) = &rec.name {
        block_insert(txn, pid, &rec.kind, name, timestamp, seq, &rec.data)?;
    }
    if let Some(id) = &rec.event_id {
        txn.put::<EventIdsF>(
            EventIdsF::key(&EventOwner::Person(pid), id),
            (timestamp, seq),
        );
    }
    txn.put::<ActivityF>(ActivityF::key(pid, timestamp, seq), rec);
    Ok(())
}

/// Adds a person's tracked event to the last block of its day in `event_blocks`, or to
/// a new block when that one would grow past [`BLOCK_TARGET_BYTES`].
pub(crate) fn block_insert(
    txn: &mut Txn<'_>,
    pid: u32,
    kind: &str,
    name: &str,
    timestamp: i64,
    seq: u64,
    data: &Value,
) -> Result<()> {
    let day = timestamp.div_euclid(DAY_SECS);
    // `rem_euclid` of a positive divisor lies in 0..86 400.
    let sec = u32::try_from(timestamp.rem_euclid(DAY_SECS)).unwrap_or(0);
    let prefix = EventBlocksF::day_prefix(kind, name, day);
    let mut number = 0u32;
    if let Some(key) = txn.last_key(Family::EventBlocks, &prefix)? {
        let (_, _, _, last) = EventBlocksF::decode_key(&key)?;
        if let Some(mut block) = txn.get::<EventBlocksF>(&key)? {
            block.insert(pid, sec, seq, data);
            if block.len() == 1 || block.max_bytes() <= BLOCK_TARGET_BYTES {
                txn.put::<EventBlocksF>(key, block);
                return Ok(());
            }
        }
        number = last.checked_add(1).ok_or_else(|| {
            corrupted(
                Family::EventBlocks,
                &key,
                "the day's last block number is the largest",
            )
        })?;
    }
    let mut block = EventBlock::default();
    block.insert(pid, sec, seq, data);
    txn.put::<EventBlocksF>(EventBlocksF::key(kind, name, day, number), block);
    Ok(())
}

/// One row of `event_blocks`: who, which event, when, and its activity `seq`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct BlockRow {
    /// The person the row belongs to now.
    pub pid: u32,
    /// `event`, `page` or `screen`.
    pub kind: String,
    /// The event name.
    pub name: String,
    /// When.
    pub time: i64,
    /// The activity sequence number.
    pub seq: u64,
}

/// Removes `rows` from `event_blocks` (`to: None`), or gives them to person `to`; rows
/// not found are skipped. Each day's blocks are read once.
pub(crate) fn blocks_edit(txn: &mut Txn<'_>, rows: Vec<BlockRow>, to: Option<u32>) -> Result<()> {
    type Day = (String, String, i64);
    let mut by_day: std::collections::BTreeMap<Day, Vec<(u32, u64)>> = Default::default();
    for r in rows {
        by_day
            .entry((r.kind, r.name, r.time.div_euclid(DAY_SECS)))
            .or_default()
            .push((r.pid, r.seq));
    }
    for ((kind, name, day), mut wanted) in by_day {
        for key in txn.keys(
            Family::EventBlocks,
            &EventBlocksF::day_prefix(&kind, &name, day),
        )? {
            if wanted.is_empty() {
                break;
            }
            let Some(mut block) = txn.get::<EventBlocksF>(&key)? else {
                continue;
            };
            let before = wanted.len();
            wanted.retain(|&(pid, seq)| match block.find(pid, seq) {
                Some(at) => {
                    match to {
                        Some(to) => {
                            if let Some(p) = block.pids.get_mut(at) {
                                *p = to;
                            }
                        }
                        None => block.remove(at),
                    }
                    false
                }
                None => true,
            });
            if wanted.len() == before {
                continue;
            }
            if block.is_empty() {
                txn.delete::<EventBlocksF>(key);
            } else {
                txn.put::<EventBlocksF>(key, block);
            }
        }
    }
    Ok(())
}

fn track_anonymous(
    cx: &mut Ctx<'_, '_>,
    anon: &str,
    kind: TrackKind,
    name: String,
    data: Value,
    timestamp: i64,
    t: &Track,
) -> Result<Outcome> {
    let owner = EventOwner::Anonymous(anon.to_owned());
    if let Some(id) = &t.event_id {
        if cx
            .txn
            .get::<EventIdsF>(&EventIdsF::key(&owner, id))?
            .is_some()
        {
            return Ok(Outcome::Duplicate);
        }
    }
    let seq = cx.next_seq();
    if let Some(id) = &t.event_id {
        cx.txn
            .put::<EventIdsF>(EventIdsF::key(&owner, id), (timestamp, seq));
    }
    cx.txn.put::<AnonymousF>(
        AnonymousF::key(anon, timestamp, seq),
        ActivityRecord {
            kind: kind.as_str().to_owned(),
            name: Some(name),
            data,
            event_id: t.event_id.clone(),
        },
    );
    Ok(Outcome::Recorded(None))
}

/// Moves everything kept for `anon` (events, relationships to objects) to person `pid`,
/// recording an `anon_merge` activity when anything moved.
pub(crate) fn merge_anonymous(cx: &mut Ctx<'_, '_>, pid: u32, anon: &str) -> Result<()> {
    let mut moved = 0u64;
    let anon_owner = EventOwner::Anonymous(anon.to_owned());
    for key in cx.txn.keys(Family::Anonymous, &AnonymousF::prefix(anon))? {
        let (_, timestamp, seq) = AnonymousF::decode_key(&key)?;
        let Some(rec) = cx.txn.get::<AnonymousF>(&key)? else {
            continue;
        };
        cx.txn.delete::<AnonymousF>(key);
        if let Some(id) = &rec.event_id {
            cx.txn.delete::<EventIdsF>(EventIdsF::key(&anon_owner, id));
            let person_key = EventIdsF::key(&EventOwner::Person(pid), id);
            if cx.txn.get::<EventIdsF>(&person_key)?.is_some() {
                continue; // the person already has this event
            }
        }
        if let Some(name) = &rec.name {
            cx.touches
                .of(pid)
                .events
                .insert((rec.kind.clone(), name.clone(), hour_of(timestamp)));
        }
        put_event(cx.txn, pid, timestamp, seq, rec)?;
        moved += 1;
    }
    // Event ids of anonymous events already gone (expired) leave no dangling entries.
    for key in cx
        .txn
        .keys(Family::EventIds, &EventIdsF::prefix(&anon_owner))?
    {
        cx.txn.delete::<EventIdsF>(key);
    }
    let mut related = 0u64;
    for key in cx
        .txn
        .keys(Family::AnonRelationships, &AnonRelationshipsF::prefix(anon))?
    {
        let (_, type_id, object_id) = AnonRelationshipsF::decode_key(&key)?;
        let Some(rel) = cx.txn.get::<AnonRelationshipsF>(&key)? else {
            continue;
        };
        cx.txn.delete::<AnonRelationshipsF>(key);
        let rkey = RelationshipsF::key(pid, type_id, &object_id);
        if cx.txn.get::<RelationshipsF>(&rkey)?.is_none() {
            cx.txn.put::<RelationshipsF>(rkey, rel);
            cx.txn
                .put::<MembersF>(MembersF::key(type_id, &object_id, pid), ());
            cx.touches
                .of(pid)
                .objects
                .insert((type_id, object_id.clone()));
            cx.record(
                pid,
                kinds::ADD_RELATIONSHIP,
                Some(format!("{type_id}:{object_id}")),
                Value::Null,
            );
            related += 1;
        }
    }
    if moved > 0 || related > 0 {
        let mut data = Map::new();
        data.insert("anonymous_id".into(), Value::from(anon));
        data.insert("events".into(), Value::Int(moved as i64));
        data.insert("relationships".into(), Value::Int(related as i64));
        cx.record(pid, kinds::ANON_MERGE, None, Value::Map(data));
    }
    Ok(())
}

/// `verify`'s cross-check of `event_blocks` against `activity`: every row is a tracked
/// event on record with the same person, kind, name, time and properties, held once;
/// every tracked event with a name has its row. One sentence per problem.
pub(crate) fn verify_blocks(store: &crate::store::Store) -> Result<Vec<String>> {
    use crate::store::{day_start, decode_value, track_kind_code, track_kind_name};
    use std::collections::HashSet;
    let all = || {
        (
            std::ops::Bound::<Vec<u8>>::Unbounded,
            std::ops::Bound::<Vec<u8>>::Unbounded,
        )
    };
    let mut problems = Vec::new();
    let mut rows: HashSet<(u32, u64)> = HashSet::new();
    for item in store.kv().range(Family::EventBlocks, all(), false) {
        let (key, value) = item?;
        // Damage to the block itself is reported by the record checks.
        let (Ok((code, name, day, _)), Ok(block)) = (
            EventBlocksF::decode_key(&key),
            decode_value::<EventBlocksF>(&key, &value),
        ) else {
            continue;
        };
        let start = day_start(day).unwrap_or_default();
        for (at, pid, sec, seq) in block.rows() {
            let what = || {
                format!(
                    "event_blocks row of {} {name:?} (person {pid}, seq {seq})",
                    track_kind_name(code)
                )
            };
            if !rows.insert((pid, seq)) {
                problems.push(format!("{} is held twice", what()));
                continue;
            }
            let time = start.saturating_add(i64::from(sec));
            let matches = match store.get::<ActivityF>(&ActivityF::key(pid, time, seq)) {
                Ok(Some(rec)) => {
                    tracked(&rec.kind)
                        && track_kind_code(&rec.kind) == code
                        && rec.name.as_deref() == Some(name.as_str())
                        && block.row_matches(at, &rec.data)
                }
                _ => false,
            };
            if !matches {
                problems.push(format!("{} does not match the activity on record", what()));
            }
        }
    }
    for item in store.kv().range(Family::Activity, all(), false) {
        let (key, value) = item?;
        let (Ok((pid, _, seq)), Ok(rec)) = (
            ActivityF::decode_key(&key),
            decode_value::<ActivityF>(&key, &value),
        ) else {
            continue;
        };
        if tracked(&rec.kind) && rec.name.is_some() && !rows.contains(&(pid, seq)) {
            problems.push(format!(
                "tracked {} {:?} of person {pid} (seq {seq}) has no event_blocks row",
                rec.kind,
                rec.name.unwrap_or_default()
            ));
        }
    }
    Ok(problems)
}

/// Builds `event_blocks` from `activity` as tracking each event in key order would have
/// (each row into its day's last block, a new block past [`BLOCK_TARGET_BYTES`]): for
/// a restore from an export of a format without blocks (format 2). Holds every block in
/// memory (tens of bytes a row) and returns them by key.
pub(crate) fn build_blocks(
    store: &crate::store::Store,
) -> Result<std::collections::BTreeMap<Vec<u8>, EventBlock>> {
    use crate::store::decode_value;
    type Day = (String, String, i64);
    let all = (
        std::ops::Bound::<Vec<u8>>::Unbounded,
        std::ops::Bound::<Vec<u8>>::Unbounded,
    );
    let mut open: std::collections::HashMap<Day, (u32, EventBlock)> = Default::default();
    let mut out = std::collections::BTreeMap::new();
    for item in store.kv().range(Family::Activity, all, false) {
        let (key, value) = item?;
        let (pid, time, seq) = ActivityF::decode_key(&key)?;
        let rec = decode_value::<ActivityF>(&key, &value)?;
        let Some(name) = rec.name.filter(|_| tracked(&rec.kind)) else {
            continue;
        };
        check_event_time(time)?;
        let day = time.div_euclid(DAY_SECS);
        // `rem_euclid` of a positive divisor lies in 0..86 400.
        let sec = u32::try_from(time.rem_euclid(DAY_SECS)).unwrap_or(0);
        let k = (rec.kind, name, day);
        if !open.contains_key(&k) {
            open.insert(k.clone(), (0, EventBlock::default()));
        }
        let Some((number, block)) = open.get_mut(&k) else {
            continue;
        };
        block.insert(pid, sec, seq, &rec.data);
        if block.len() > 1 && block.max_bytes() > BLOCK_TARGET_BYTES {
            if let Some(at) = block.find(pid, seq) {
                block.remove(at);
            }
            let full = std::mem::take(block);
            out.insert(EventBlocksF::key(&k.0, &k.1, k.2, *number), full);
            *number = number.checked_add(1).ok_or_else(|| {
                corrupted(
                    Family::Activity,
                    &key,
                    "a day holds more event blocks than fit",
                )
            })?;
            block.insert(pid, sec, seq, &rec.data);
        }
    }
    for ((kind, name, day), (number, block)) in open {
        if !block.is_empty() {
            out.insert(EventBlocksF::key(&kind, &name, day, number), block);
        }
    }
    Ok(out)
}

fn tracked(kind: &str) -> bool {
    matches!(kind, kinds::EVENT | kinds::PAGE | kinds::SCREEN)
}
