//! The `merge` operation (and its kin); the rules are documented on
//! [`ProfileDb::merge`](crate::ProfileDb::merge), where users read them.

use crate::db::write::Ctx;
use crate::error::{InputError, Result};
use crate::model::{kinds, Ident, Map, PersonId, Value};
use crate::model::{IgnoreReason, Outcome};
use crate::people;
use crate::store::{
    pid_key, ActivityF, AttributesF, DeliveriesF, DeliveryIdsF, DeviceTokensF, DevicesF, EventIdsF,
    EventOwner, Family, MembersF, PeopleF, RelationshipsF,
};

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Map(m) => m.is_empty(),
        _ => false,
    }
}

/// True for activity kinds that move with a merge: tracked events and delivery metrics.
fn moves(kind: &str) -> bool {
    matches!(kind, kinds::EVENT | kinds::PAGE | kinds::SCREEN)
        || crate::model::Channel::ALL
            .iter()
            .any(|c| kind.ends_with(&format!("_{}", c.activity_name())))
}

/// Merge `secondary` into `primary`.
pub(crate) fn merge(cx: &mut Ctx<'_, '_>, primary: &Ident, secondary: &Ident) -> Result<Outcome> {
    let pnorm = cx.normalize(primary)?;
    let snorm = cx.normalize(secondary)?;
    let Some(p) = cx.lookup(primary.kind, &pnorm)? else {
        return Ok(Outcome::Ignored(IgnoreReason::NoMatch));
    };
    let Some(s) = cx.lookup(secondary.kind, &snorm)? else {
        return Ok(Outcome::NotFound);
    };
    if p == s {
        return Err(InputError::invalid(
            "secondary",
            "names the same person as primary; a person cannot be merged into themselves",
        )
        .into());
    }
    let Some(srec) = cx.txn.get::<PeopleF>(&pid_key(s))? else {
        return Ok(Outcome::NotFound);
    };
    cx.txn.note_merge(p, s);

    // Attributes the primary lacks or has empty.
    let mut pattrs = cx.txn.get::<AttributesF>(&pid_key(p))?.unwrap_or_default();
    let sattrs = cx.txn.get::<AttributesF>(&pid_key(s))?.unwrap_or_default();
    let mut inherited = Map::new();
    for (name, value) in &sattrs.values {
        if pattrs.values.get(name).is_none_or(is_empty) && !is_empty(value) {
            pattrs.values.insert(name.clone(), value.clone());
            if let Some(t) = sattrs.timestamps.get(name) {
                pattrs.timestamps.insert(name.clone(), *t);
            }
            inherited.insert(name.clone(), value.clone());
        }
    }
    if !inherited.is_empty() {
        cx.txn.put::<AttributesF>(pid_key(p), pattrs);
        if let Some(mut prec) = cx.txn.get::<PeopleF>(&pid_key(p))? {
            prec.updated = cx.now;
            cx.txn.put::<PeopleF>(pid_key(p), prec);
        }
    }

    // Timeline: tracked events and delivery metrics move.
    let mut moved_events = 0i64;
    let mut moved_rows = Vec::new();
    let timeline = cx
        .txn
        .values_between::<ActivityF>(crate::store::prefix_bounds(&pid_key(s)))?;
    for (key, rec) in timeline {
        let (_, timestamp, seq) = ActivityF::decode_key(&key)?;
        if !moves(&rec.kind) {
            continue; // deleted with the secondary below
        }
        if let Some(id) = &rec.event_id {
            if cx
                .txn
                .get::<EventIdsF>(&EventIdsF::key(&EventOwner::Person(p), id))?
                .is_some()
            {
                continue;
            }
            cx.txn
                .put::<EventIdsF>(EventIdsF::key(&EventOwner::Person(p), id), (timestamp, seq));
        }
        if let Some(name) = &rec.name {
            moved_rows.push(crate::activity::BlockRow {
                pid: s,
                kind: rec.kind.clone(),
                name: name.clone(),
                time: timestamp,
                seq,
            });
            cx.touches.of(p).events.insert((
                rec.kind.clone(),
                name.clone(),
                crate::index::hour_of(timestamp),
            ));
        }
        cx.txn
            .put::<ActivityF>(ActivityF::key(p, timestamp, seq), rec);
        moved_events += 1;
    }
    // Their rows in the event blocks change hands in place.
    crate::activity::blocks_edit(cx.txn, moved_rows, Some(p))?;

    // Deliveries move.
    let mut moved_ids = Vec::new();
    for key in cx.txn.keys(Family::Deliveries, &pid_key(s))? {
        let (_, created, id) = DeliveriesF::decode_key(&key)?;
        if let Some(rec) = cx.txn.get::<DeliveriesF>(&key)? {
            cx.txn
                .put::<DeliveriesF>(DeliveriesF::key(p, created, &id), rec);
            moved_ids.push((id.into_bytes(), (p, created)));
        }
    }

    // Devices move.
    let mut moved_tokens = Vec::new();
    for key in cx.txn.keys(Family::Devices, &pid_key(s))? {
        let token = DevicesF::token_of(&key)?;
        if let Some(rec) = cx.txn.get::<DevicesF>(&key)? {
            cx.txn.put::<DevicesF>(DevicesF::key(p, &token), rec);
            moved_tokens.push(token.into_bytes());
        }
    }

    // Relationships the primary lacks move.
    let mut moved_relationships = 0i64;
    let mut moved_objects = Vec::new();
    for key in cx.txn.keys(Family::Relationships, &pid_key(s))? {
        let (_, type_id, object_id) = RelationshipsF::decode_key(&key)?;
        let pkey = RelationshipsF::key(p, type_id, &object_id);
        if cx.txn.get::<RelationshipsF>(&pkey)?.is_some() {
            continue;
        }
        if let Some(rec) = cx.txn.get::<RelationshipsF>(&key)? {
            cx.txn.put::<RelationshipsF>(pkey, rec);
            cx.txn
                .put::<MembersF>(MembersF::key(type_id, &object_id, p), ());
            moved_objects.push((type_id, object_id));
            moved_relationships += 1;
        }
    }

    // Delete the secondary (which removes its delivery ids and device tokens), then
    // point the moved ones at the primary.
    // The primary's bitmaps: what it inherited, and the secondary's event and metric
    // history (including what this batch added to it).
    let pending = cx.touches.of(s).clone();
    {
        let touch = cx.touches.of(p);
        touch.attrs |= !inherited.is_empty();
        touch.devices |= !moved_tokens.is_empty();
        touch.objects.extend(moved_objects);
        touch.metrics.extend(pending.metrics);
        touch.absorbed.push(s);
        // Manual segment memberships the primary lacks.
        for def in cx.catalog.segments.values().filter(|d| !d.data_driven()) {
            let key = crate::index::BitmapKey::Segment(def.id);
            let in_s = pending
                .segments
                .get(&def.id)
                .copied()
                .unwrap_or_else(|| cx.bitmaps.contains(&key, s));
            if in_s {
                touch.segments.insert(def.id, true);
            }
        }
    }
    people::delete_person(cx, s)?;
    let moved_deliveries = moved_ids.len() as i64;
    for (id, v) in moved_ids {
        cx.txn.put::<DeliveryIdsF>(id, v);
    }
    let moved_devices = moved_tokens.len() as i64;
    for token in moved_tokens {
        cx.txn.put::<DeviceTokensF>(token, p);
    }

    let mut data = Map::new();
    let mut sec = Map::new();
    sec.insert("cio_id".into(), Value::from(PersonId(s).cio_id()));
    if let Some(id) = &srec.id {
        sec.insert("id".into(), Value::from(id.as_str()));
    }
    if let Some(email) = &srec.email {
        sec.insert("email".into(), Value::from(email.as_str()));
    }
    data.insert("secondary".into(), Value::Map(sec));
    data.insert("attributes".into(), Value::Map(inherited));
    data.insert("events".into(), Value::Int(moved_events));
    data.insert("deliveries".into(), Value::Int(moved_deliveries));
    data.insert("devices".into(), Value::Int(moved_devices));
    data.insert("relationships".into(), Value::Int(moved_relationships));
    cx.record(p, kinds::PROFILE_MERGE, None, Value::Map(data));
    Ok(Outcome::Merged {
        primary: PersonId(p),
        secondary: PersonId(s),
    })
}
