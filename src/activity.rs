//! The `track` operation (and its kin); the rules are documented on
//! [`ProfileDb::track`](crate::ProfileDb::track), where users read them.

use crate::db::write::Ctx;
use crate::error::{InputError, InputReason, Result};
use crate::index::hour_of;
use crate::limits::Limits;
use crate::model::Outcome;
use crate::model::{kinds, Ident, IdentKind, Map, PersonId, TrackKind, Value};
use crate::people;
use crate::store::records::ActivityRecord;
use crate::store::{
    ActivityF, AnonRelationshipsF, AnonymousF, EventIdsF, EventOwner, EventsByNameF, Family,
    MembersF, RelationshipsF, Txn,
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
    /// When it happened, unix seconds (default: now). Past times backfill.
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
    let data = Value::Map(t.data.clone());
    crate::limits::check_value("data", &data, limits.max_event_data_bytes)?;
    Ok((name, data))
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
    );
    Ok(Outcome::Recorded(Some(PersonId(pid))))
}

/// Writes a person's tracked event to the timeline, the name index and the id index.
fn put_event(txn: &mut Txn<'_>, pid: u32, timestamp: i64, seq: u64, rec: ActivityRecord) {
    if let Some(name) = &rec.name {
        txn.put::<EventsByNameF>(EventsByNameF::key(pid, &rec.kind, name, timestamp, seq), ());
    }
    if let Some(id) = &rec.event_id {
        txn.put::<EventIdsF>(
            EventIdsF::key(&EventOwner::Person(pid), id),
            (timestamp, seq),
        );
    }
    txn.put::<ActivityF>(ActivityF::key(pid, timestamp, seq), rec);
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
        put_event(cx.txn, pid, timestamp, seq, rec);
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
