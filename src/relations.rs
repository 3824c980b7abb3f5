//! The `identify_object` operation (and its kin); the rules are documented on
//! [`ProfileDb::identify_object`](crate::ProfileDb::identify_object), where users read them.

use crate::db::write::Ctx;
use crate::error::{InputError, InputReason, Result};
use crate::model::Outcome;
use crate::model::{kinds, Ident, IdentKind, Map, ObjectRef, PersonId, Value};
use crate::people;
use crate::store::records::{ObjectRecord, ObjectTypeRecord, RelationshipRecord};
use crate::store::{
    AnonRelationshipsF, Family, KeyBuf, MembersF, ObjectTypesF, ObjectsF, RelationshipsF,
};

/// Attribute names objects and relationships may not use.
const RESERVED: [&str; 5] = [
    "cio_object_id",
    "object_id",
    "objectId",
    "relationship",
    "_relationship",
];

fn check_object(cx: &Ctx<'_, '_>, object: &ObjectRef) -> Result<(), InputError> {
    if object.type_id == 0 {
        return Err(InputError::invalid(
            "object_type_id",
            "must be a whole number from 1",
        ));
    }
    let id = &object.object_id;
    if id.is_empty() {
        return Err(InputError::new("object_id", InputReason::Empty));
    }
    if id.len() > cx.limits.max_identifier_bytes {
        return Err(InputError::new(
            "object_id",
            InputReason::TooLong {
                len: id.len(),
                max: cx.limits.max_identifier_bytes,
            },
        ));
    }
    if id.chars().any(char::is_control) {
        return Err(InputError::invalid(
            "object_id",
            "contains control characters",
        ));
    }
    Ok(())
}

/// Parses Customer.io's string-formatted object type id (`"1"`).
///
/// # Errors
/// [`InputError`] on `object_type_id` when it is not a whole number from 1.
pub fn parse_type_id(s: &str) -> Result<u32, InputError> {
    s.trim()
        .parse::<u32>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| {
            InputError::invalid(
                "object_type_id",
                format!("`{s}` is not a whole number from 1"),
            )
        })
}

/// Applies an attribute patch to `map` under the object limits; returns the changes as
/// `{name: {"old", "new"}}`.
fn patch(
    cx: &Ctx<'_, '_>,
    field: &str,
    map: &mut Map,
    attributes: &[(String, Value)],
) -> Result<Map, InputError> {
    let limits = cx.limits;
    let mut changes = Map::new();
    for (name, value) in attributes {
        let f = format!("{field}.{name}");
        if name.is_empty() {
            return Err(InputError::new(field, InputReason::Empty));
        }
        if RESERVED.contains(&name.as_str()) {
            return Err(InputError::new(f, InputReason::Reserved));
        }
        if name.len() > limits.max_attribute_name_bytes {
            return Err(InputError::new(
                f,
                InputReason::TooLong {
                    len: name.len(),
                    max: limits.max_attribute_name_bytes,
                },
            ));
        }
        let new = if value.is_removal() {
            None
        } else {
            crate::limits::check_value(&f, value, limits.max_attribute_value_bytes)?;
            Some(value.clone())
        };
        let old = match &new {
            Some(v) => map.insert(name.clone(), v.clone()),
            None => map.remove(name),
        };
        if old != new {
            let mut diff = Map::new();
            diff.insert("old".into(), old.unwrap_or(Value::Null));
            diff.insert("new".into(), new.unwrap_or(Value::Null));
            changes.insert(name.clone(), Value::Map(diff));
        }
    }
    if map.len() > limits.max_attributes {
        return Err(InputError::new(
            field,
            InputReason::TooMany {
                count: map.len(),
                max: limits.max_attributes,
            },
        ));
    }
    let total = Value::Map(map.clone()).size();
    if total > limits.max_object_bytes {
        return Err(InputError::new(
            field,
            InputReason::TooLong {
                len: total,
                max: limits.max_object_bytes,
            },
        ));
    }
    Ok(changes)
}

fn ensure_type(cx: &mut Ctx<'_, '_>, type_id: u32) -> Result<()> {
    let key = KeyBuf::new().u32(type_id).done();
    if cx.txn.get::<ObjectTypesF>(&key)?.is_none() {
        cx.txn.put::<ObjectTypesF>(
            key,
            ObjectTypeRecord {
                name: String::new(),
                created: cx.now,
            },
        );
    }
    Ok(())
}

/// Creates or renames an object type.
pub(crate) fn define_type(cx: &mut Ctx<'_, '_>, type_id: u32, name: &str) -> Result<Outcome> {
    if type_id == 0 {
        return Err(InputError::invalid("object_type_id", "must be a whole number from 1").into());
    }
    if name.len() > cx.limits.max_attribute_value_bytes {
        return Err(InputError::new(
            "name",
            InputReason::TooLong {
                len: name.len(),
                max: cx.limits.max_attribute_value_bytes,
            },
        )
        .into());
    }
    let key = KeyBuf::new().u32(type_id).done();
    let rec = cx.txn.get::<ObjectTypesF>(&key)?;
    if rec.as_ref().is_some_and(|r| r.name == name) {
        return Ok(Outcome::NoChange);
    }
    let created = rec.map_or(cx.now, |r| r.created);
    cx.txn.put::<ObjectTypesF>(
        key,
        ObjectTypeRecord {
            name: name.to_owned(),
            created,
        },
    );
    Ok(Outcome::Recorded(None))
}

/// Creates or patches an object.
pub(crate) fn identify_object(
    cx: &mut Ctx<'_, '_>,
    object: &ObjectRef,
    attributes: &[(String, Value)],
) -> Result<Outcome> {
    check_object(cx, object)?;
    let key = ObjectsF::key(object.type_id, &object.object_id);
    let existing = cx.txn.get::<ObjectsF>(&key)?;
    let created = existing.is_none();
    let mut rec = existing.unwrap_or(ObjectRecord {
        created: cx.now,
        updated: cx.now,
        attributes: Map::new(),
    });
    let changes = patch(cx, "attributes", &mut rec.attributes, attributes)?;
    if !created && changes.is_empty() {
        return Ok(Outcome::NoChange);
    }
    ensure_type(cx, object.type_id)?;
    rec.updated = cx.now;
    cx.txn.put::<ObjectsF>(key, rec);
    Ok(Outcome::Recorded(None))
}

/// Deletes an object and every relationship to it.
pub(crate) fn delete_object(cx: &mut Ctx<'_, '_>, object: &ObjectRef) -> Result<Outcome> {
    check_object(cx, object)?;
    let key = ObjectsF::key(object.type_id, &object.object_id);
    let existed = cx.txn.get::<ObjectsF>(&key)?.is_some();
    cx.txn.delete::<ObjectsF>(key);
    let members = cx.txn.keys(
        Family::Members,
        &MembersF::prefix(object.type_id, &object.object_id),
    )?;
    for mkey in &members {
        let (_, _, pid) = MembersF::decode_key(mkey)?;
        cx.txn.delete::<RelationshipsF>(RelationshipsF::key(
            pid,
            object.type_id,
            &object.object_id,
        ));
        cx.txn.delete::<MembersF>(mkey.clone());
        cx.touches
            .of(pid)
            .objects
            .insert((object.type_id, object.object_id.clone()));
        cx.record(
            pid,
            kinds::DELETE_RELATIONSHIP,
            Some(object.to_string()),
            Value::Null,
        );
    }
    for akey in cx.txn.keys(Family::AnonRelationships, &[])? {
        let (_, t, o) = AnonRelationshipsF::decode_key(&akey)?;
        if t == object.type_id && o == object.object_id {
            cx.txn.delete::<AnonRelationshipsF>(akey);
        }
    }
    if existed || !members.is_empty() {
        Ok(Outcome::Recorded(None))
    } else {
        Ok(Outcome::NotFound)
    }
}

/// Relates the person (or anonymous id) `who` to `object`, patching the relationship's
/// attributes if it exists.
pub(crate) fn add_relationship(
    cx: &mut Ctx<'_, '_>,
    who: &Ident,
    object: &ObjectRef,
    attributes: &[(String, Value)],
) -> Result<Outcome> {
    check_object(cx, object)?;
    let anon = if who.kind == IdentKind::AnonymousId {
        let norm = cx.normalize(who)?;
        match cx.lookup(IdentKind::AnonymousId, &norm)? {
            Some(_) => None,
            None => Some(norm),
        }
    } else {
        None
    };
    let pid = if anon.is_none() {
        match people::resolve_or_create(cx, who)? {
            Ok(pid) => Some(pid),
            Err(outcome) => return Ok(outcome),
        }
    } else {
        None
    };
    let okey = ObjectsF::key(object.type_id, &object.object_id);
    if cx.txn.get::<ObjectsF>(&okey)?.is_none() {
        ensure_type(cx, object.type_id)?;
        cx.txn.put::<ObjectsF>(
            okey,
            ObjectRecord {
                attributes: Map::new(),
                created: cx.now,
                updated: cx.now,
            },
        );
    }
    if let Some(anon) = anon {
        let key = AnonRelationshipsF::key(&anon, object.type_id, &object.object_id);
        let mut rec = cx
            .txn
            .get::<AnonRelationshipsF>(&key)?
            .unwrap_or(RelationshipRecord {
                attributes: Map::new(),
                created: cx.now,
            });
        patch(
            cx,
            "relationship_attributes",
            &mut rec.attributes,
            attributes,
        )?;
        cx.txn.put::<AnonRelationshipsF>(key, rec);
        return Ok(Outcome::Recorded(None));
    }
    let Some(pid) = pid else {
        return Ok(Outcome::NotFound);
    };
    let key = RelationshipsF::key(pid, object.type_id, &object.object_id);
    let existing = cx.txn.get::<RelationshipsF>(&key)?;
    let is_new = existing.is_none();
    let mut rec = existing.unwrap_or(RelationshipRecord {
        attributes: Map::new(),
        created: cx.now,
    });
    let changes = patch(
        cx,
        "relationship_attributes",
        &mut rec.attributes,
        attributes,
    )?;
    if !is_new && changes.is_empty() {
        return Ok(Outcome::Unchanged(PersonId(pid)));
    }
    cx.txn.put::<RelationshipsF>(key, rec);
    cx.touches
        .of(pid)
        .objects
        .insert((object.type_id, object.object_id.clone()));
    if is_new {
        cx.txn
            .put::<MembersF>(MembersF::key(object.type_id, &object.object_id, pid), ());
        let data = if changes.is_empty() {
            Value::Null
        } else {
            Value::Map(changes)
        };
        cx.record(pid, kinds::ADD_RELATIONSHIP, Some(object.to_string()), data);
    } else {
        cx.record(
            pid,
            kinds::RELATIONSHIP_ATTRIBUTE_CHANGE,
            Some(object.to_string()),
            Value::Map(changes),
        );
    }
    Ok(Outcome::Updated(PersonId(pid)))
}

/// Removes the relationship between `who` and `object`.
pub(crate) fn delete_relationship(
    cx: &mut Ctx<'_, '_>,
    who: &Ident,
    object: &ObjectRef,
) -> Result<Outcome> {
    check_object(cx, object)?;
    let norm = cx.normalize(who)?;
    let Some(pid) = cx.lookup(who.kind, &norm)? else {
        if who.kind == IdentKind::AnonymousId {
            let key = AnonRelationshipsF::key(&norm, object.type_id, &object.object_id);
            if cx.txn.get::<AnonRelationshipsF>(&key)?.is_some() {
                cx.txn.delete::<AnonRelationshipsF>(key);
                return Ok(Outcome::Recorded(None));
            }
        }
        return Ok(Outcome::NotFound);
    };
    let key = RelationshipsF::key(pid, object.type_id, &object.object_id);
    if cx.txn.get::<RelationshipsF>(&key)?.is_none() {
        return Ok(Outcome::NotFound);
    }
    cx.txn.delete::<RelationshipsF>(key);
    cx.txn
        .delete::<MembersF>(MembersF::key(object.type_id, &object.object_id, pid));
    cx.touches
        .of(pid)
        .objects
        .insert((object.type_id, object.object_id.clone()));
    cx.record(
        pid,
        kinds::DELETE_RELATIONSHIP,
        Some(object.to_string()),
        Value::Null,
    );
    Ok(Outcome::Updated(PersonId(pid)))
}
