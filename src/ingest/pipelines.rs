//! Data Pipelines (Segment-spec) calls: identify, track, page, screen, group, alias.

use serde_json::{Map as JsonMap, Value as Json};

use super::json::{self, get, join, nonempty_str, opt_iso, opt_str, req_str};
use super::{Names, Plan};
use crate::activity::Track;
use crate::db::Op;
use crate::deliveries::Metric;
use crate::error::InputError;
use crate::model::{Ident, ObjectRef, TrackKind, Value};
use crate::people::Identify;

/// Plans a Pipelines call of type `kind`.
pub(crate) fn plan(m: &JsonMap<String, Json>, kind: &str) -> Result<Plan, InputError> {
    match kind {
        "identify" => identify(m),
        "track" => track(m),
        "page" | "screen" => view(m, kind),
        "group" => group(m),
        _ => alias(m),
    }
}

/// The person `userId` names (as Track v1 reads a path identifier).
fn user(m: &JsonMap<String, Json>) -> Result<Option<Ident>, InputError> {
    Ok(nonempty_str(m, "userId", "")?.map(|u| Ident::infer(&u)))
}

/// `userId`, else `anonymousId`, with the field that named it.
fn actor(m: &JsonMap<String, Json>) -> Result<(Ident, &'static str), InputError> {
    if let Some(who) = user(m)? {
        return Ok((who, "userId"));
    }
    match nonempty_str(m, "anonymousId", "")? {
        Some(a) => Ok((Ident::anonymous_id(a), "anonymousId")),
        None => Err(InputError::invalid(
            "userId",
            "is missing: the call needs userId or anonymousId",
        )),
    }
}

fn named_user(m: &JsonMap<String, Json>, what: &str) -> Result<Ident, InputError> {
    user(m)?.ok_or_else(|| InputError::invalid("userId", format!("is required for {what}")))
}

fn timestamp(m: &JsonMap<String, Json>) -> Result<Option<i64>, InputError> {
    opt_iso(m, "timestamp", "")
}

fn identify(m: &JsonMap<String, Json>) -> Result<Plan, InputError> {
    let traits = match get(m, "traits") {
        Some(t) => json::object(t, "traits")?.clone(),
        None => JsonMap::new(),
    };
    let (who, field) = match user(m)? {
        Some(who) => (who, "userId".to_owned()),
        None => match nonempty_str(&traits, "email", "traits")? {
            Some(email) => (Ident::email(email), "traits.email".to_owned()),
            None => {
                return Err(InputError::invalid(
                    "userId",
                    "is missing and traits has no email: an anonymous identify has no person \
                     to store traits on",
                ))
            }
        },
    };
    let mut op = Identify::new(who);
    for (k, v) in &traits {
        let f = join("traits", k);
        let name = match k.as_str() {
            "createdAt" => "created_at",
            other => other,
        };
        let value = match v {
            Json::String(s) if name == "created_at" || json::iso_seconds(s).is_some() => {
                match json::iso_seconds(s) {
                    Some(t) => Value::Int(t),
                    None => Value::from_json(v, &f)?,
                }
            }
            _ => Value::from_json(v, &f)?,
        };
        op.attributes.push((name.to_owned(), value));
    }
    if let Some(anon) = nonempty_str(m, "anonymousId", "")? {
        op.attributes
            .push(("anonymous_id".to_owned(), Value::from(anon)));
    }
    op.timestamp = timestamp(m)?;
    Ok(Plan::one(
        Op::Identify(op),
        Names::new(field)
            .base("traits")
            .rename("created_at", "traits.createdAt")
            .rename("anonymous_id", "anonymousId"),
    ))
}

fn event_id(m: &JsonMap<String, Json>) -> Result<Option<String>, InputError> {
    nonempty_str(m, "messageId", "")
}

fn track(m: &JsonMap<String, Json>) -> Result<Plan, InputError> {
    let event = req_str(m, "event", "")?;
    let props = match get(m, "properties") {
        Some(p) => json::object(p, "properties")?.clone(),
        None => JsonMap::new(),
    };
    let ts = timestamp(m)?;
    let object = |props: &JsonMap<String, Json>| -> Result<ObjectRef, InputError> {
        let id = req_str(props, "objectId", "properties")?;
        let t = json::type_id(get(props, "objectTypeId"), "properties.objectTypeId")?;
        Ok(ObjectRef::new(t, id))
    };
    let (op, names) = match event.as_str() {
        "Device Created or Updated" | "Device Deleted" => {
            let who = named_user(m, "a device")?;
            let device = get(m, "context")
                .and_then(|c| c.get("device"))
                .and_then(Json::as_object);
            let empty = JsonMap::new();
            let device = device.unwrap_or(&empty);
            let token = match nonempty_str(device, "token", "context.device")? {
                Some(t) => t,
                None => req_str(&props, "device_id", "properties")
                    .map_err(|_| InputError::invalid("context.device.token", "is required"))?,
            };
            let names = Names::new("userId")
                .rename("device.token", "context.device.token")
                .rename("device.attributes", "properties")
                .base("properties");
            if event == "Device Deleted" {
                (Op::DeleteDevice { person: who, token }, names)
            } else {
                let mut body = JsonMap::new();
                let platform = opt_str(device, "type", "context.device")?
                    .ok_or_else(|| InputError::invalid("context.device.type", "is required"))?;
                body.insert("platform".into(), Json::String(platform));
                let mut dev =
                    super::v2::device_input(&body, token, "context.device").map_err(|e| {
                        InputError::new(
                            e.field
                                .replace("context.device.platform", "context.device.type"),
                            e.reason,
                        )
                    })?;
                if let Some(t) = ts {
                    dev = dev.last_used(t);
                }
                dev.attributes = json::attributes(m, "properties", "")?;
                (
                    Op::AddDevice {
                        person: who,
                        device: dev,
                    },
                    names,
                )
            }
        }
        "User Deleted" => (
            Op::Delete(named_user(m, event.as_str())?),
            Names::new("userId"),
        ),
        "User Suppressed" => (
            Op::Suppress(named_user(m, event.as_str())?),
            Names::new("userId"),
        ),
        "User Unsuppressed" => (
            Op::Unsuppress(named_user(m, event.as_str())?),
            Names::new("userId"),
        ),
        "Relationship Deleted" => {
            let (who, field) = actor(m)?;
            (
                Op::DeleteRelationship {
                    person: who,
                    object: object(&props)?,
                },
                Names::new(field)
                    .rename("object_id", "properties.objectId")
                    .rename("object_type_id", "properties.objectTypeId"),
            )
        }
        "Object Deleted" => (
            Op::DeleteObject(object(&props)?),
            Names::new("properties.objectId")
                .rename("object_id", "properties.objectId")
                .rename("object_type_id", "properties.objectTypeId"),
        ),
        "Report Delivery Event" => {
            let id = req_str(&props, "deliveryId", "properties")?;
            let metric = req_str(&props, "metric", "properties")?;
            let mut mt = Metric::new(id, metric);
            if let Some(t) = ts {
                mt = mt.timestamp(t);
            }
            if let Some(h) = nonempty_str(&props, "href", "properties")? {
                mt = mt.href(h);
            }
            if let Some(r) = nonempty_str(&props, "reason", "properties")? {
                mt = mt.reason(r);
            }
            (
                Op::Metric(mt),
                Names::new("properties.deliveryId")
                    .base("properties")
                    .rename("delivery_id", "properties.deliveryId"),
            )
        }
        _ => {
            let (who, field) = actor(m)?;
            let mut t = Track::event(who, event).data(json::data(m, "properties", "")?);
            if let Some(ts) = ts {
                t = t.timestamp(ts);
            }
            if let Some(id) = event_id(m)? {
                t = t.id(id);
            }
            (
                Op::Track(t),
                Names::new(field)
                    .rename("name", "event")
                    .rename("data", "properties")
                    .rename("id", "messageId"),
            )
        }
    };
    Ok(Plan::one(op, names))
}

fn view(m: &JsonMap<String, Json>, kind: &str) -> Result<Plan, InputError> {
    let (who, field) = actor(m)?;
    let mut data = json::data(m, "properties", "")?;
    let name = nonempty_str(m, "name", "")?;
    let (kind, activity_name) = if kind == "page" {
        let url = data
            .get("url")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| {
                get(m, "context")
                    .and_then(|c| c.get("page"))
                    .and_then(|p| p.get("url"))
                    .and_then(Json::as_str)
                    .map(str::to_owned)
            })
            .filter(|u| !u.is_empty());
        let activity_name = url.or_else(|| name.clone()).ok_or_else(|| {
            InputError::invalid("name", "is required when properties.url is missing")
        })?;
        if let Some(n) = &name {
            data.entry("name".to_owned())
                .or_insert_with(|| Value::from(n.as_str()));
        }
        if let Some(c) = nonempty_str(m, "category", "")? {
            data.entry("category".to_owned()).or_insert(Value::from(c));
        }
        (TrackKind::Page, activity_name)
    } else {
        let n = name.ok_or_else(|| InputError::invalid("name", "is required"))?;
        (TrackKind::Screen, n)
    };
    let mut t = Track::new(who, kind, activity_name).data(data);
    if let Some(ts) = timestamp(m)? {
        t = t.timestamp(ts);
    }
    if let Some(id) = event_id(m)? {
        t = t.id(id);
    }
    Ok(Plan::one(
        Op::Track(t),
        Names::new(field)
            .rename("data", "properties")
            .rename("id", "messageId"),
    ))
}

fn group(m: &JsonMap<String, Json>) -> Result<Plan, InputError> {
    let (who, field) = actor(m)?;
    let group_id = req_str(m, "groupId", "")?;
    // Objects and relationships carry no time, but a malformed one is still refused.
    timestamp(m)?;
    let mut traits = match get(m, "traits") {
        Some(t) => json::object(t, "traits")?.clone(),
        None => JsonMap::new(),
    };
    let type_key = if traits.contains_key("object_type_id") {
        "object_type_id"
    } else {
        "objectTypeId"
    };
    let type_id = json::type_id(
        traits.get(type_key).filter(|v| !v.is_null()),
        &join("traits", type_key),
    )?;
    traits.remove("object_type_id");
    traits.remove("objectTypeId");
    let rel = traits.remove("relationshipAttributes");
    let rel_attrs = match rel {
        Some(Json::Object(r)) => r
            .iter()
            .map(|(k, v)| {
                let f = join("traits.relationshipAttributes", k);
                Ok((k.clone(), Value::from_json(v, &f)?))
            })
            .collect::<Result<Vec<_>, InputError>>()?,
        None | Some(Json::Null) => Vec::new(),
        Some(_) => {
            return Err(InputError::invalid(
                "traits.relationshipAttributes",
                "must be a JSON object",
            ))
        }
    };
    let mut attributes = Vec::with_capacity(traits.len());
    for (k, v) in &traits {
        attributes.push((k.clone(), Value::from_json(v, &join("traits", k))?));
    }
    let object = ObjectRef::new(type_id, group_id);
    Ok(Plan {
        steps: vec![
            (
                Op::IdentifyObject {
                    object: object.clone(),
                    attributes,
                },
                Names::new("groupId")
                    .base("traits")
                    .rename("object_id", "groupId")
                    .rename("attributes", "traits"),
            ),
            (
                Op::AddRelationship {
                    person: who,
                    object,
                    attributes: rel_attrs,
                },
                Names::new(field)
                    .rename("object_id", "groupId")
                    .rename("relationship_attributes", "traits.relationshipAttributes"),
            ),
        ],
    })
}

fn alias(m: &JsonMap<String, Json>) -> Result<Plan, InputError> {
    let primary = named_user(m, "alias")?;
    let previous = req_str(m, "previousId", "")?;
    timestamp(m)?;
    Ok(Plan::one(
        Op::Merge {
            primary,
            secondary: Ident::infer(&previous),
        },
        Names::new("userId").rename("secondary", "previousId"),
    ))
}
