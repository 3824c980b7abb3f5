//! Track API v2 entities (`POST /api/v2/entity`; items of `/api/v2/batch`).

use serde_json::{Map as JsonMap, Value as Json};

use super::json::parse_relationships;
use super::json::{self, get, join, opt_str, opt_unix, req_str, under};
use super::{Names, Plan};
use crate::activity::Track;
use crate::db::Op;
use crate::deliveries::Metric;
use crate::devices::DeviceInput;
use crate::error::{InputError, InputReason};
use crate::model::{Ident, IdentKind, Platform, TrackKind};
use crate::people::Identify;

const PERSON: &[IdentKind] = &[
    IdentKind::Id,
    IdentKind::Email,
    IdentKind::Phone,
    IdentKind::CioId,
    IdentKind::AnonymousId,
];
const NAMED: &[IdentKind] = &[
    IdentKind::Id,
    IdentKind::Email,
    IdentKind::Phone,
    IdentKind::CioId,
];

/// Plans a v2 entity whose `type` is `person`, `object` or `delivery`.
pub(crate) fn plan(m: &JsonMap<String, Json>, kind: &str) -> Result<Plan, InputError> {
    let action = req_str(m, "action", "")?;
    match kind {
        "person" => person(m, &action),
        "object" => object(m, &action),
        _ => delivery(m, &action),
    }
}

fn unknown_action(kind: &str, action: &str, known: &str) -> InputError {
    InputError::invalid(
        "action",
        format!("`{action}` is not an action of type {kind} (expected one of {known})"),
    )
}

fn who(m: &JsonMap<String, Json>, kinds: &[IdentKind]) -> Result<Ident, InputError> {
    match get(m, "identifiers") {
        Some(v) => json::person(v, "identifiers", kinds),
        None => Err(InputError::invalid("identifiers", "is required")),
    }
}

fn who_field(ident: &Ident) -> String {
    format!("identifiers.{}", ident.kind.as_str())
}

fn person(m: &JsonMap<String, Json>, action: &str) -> Result<Plan, InputError> {
    if action == "merge" {
        let side = |key: &str| match get(m, key) {
            Some(v) => json::person(v, key, NAMED),
            None => Err(InputError::invalid(key, "is required")),
        };
        let primary = side("primary")?;
        let secondary = side("secondary")?;
        let names = Names::new("primary").rename("secondary", "secondary");
        return Ok(Plan::one(Op::Merge { primary, secondary }, names));
    }
    let ident = who(m, PERSON)?;
    let names = Names::new(who_field(&ident));
    let anonymous = ident.kind == IdentKind::AnonymousId;
    let refuse_anonymous = |what: &str| {
        if anonymous {
            Err(InputError::invalid(
                "identifiers.anonymous_id",
                format!("cannot address a person for {what}; use id, email, phone or cio_id"),
            ))
        } else {
            Ok(())
        }
    };
    let op = match action {
        "identify" => {
            refuse_anonymous("identify")?;
            let mut op = match get(m, "attributes") {
                Some(a) => Identify::from_json(ident, a).map_err(|e| under("attributes", e))?,
                None => Identify::new(ident),
            };
            if op.timestamp.is_none() {
                op.timestamp = opt_unix(m, "timestamp", "")?;
            }
            if let Some(rels) = get(m, "cio_relationships") {
                op.relationships.extend(parse_relationships(rels)?);
            }
            return Ok(Plan::one(Op::Identify(op), names.base("attributes")));
        }
        "delete" => {
            refuse_anonymous("delete")?;
            Op::Delete(ident)
        }
        "suppress" => {
            refuse_anonymous("suppress")?;
            Op::Suppress(ident)
        }
        "unsuppress" => {
            refuse_anonymous("unsuppress")?;
            Op::Unsuppress(ident)
        }
        "event" | "page" | "screen" => {
            let kind = TrackKind::parse(action).unwrap_or(TrackKind::Event);
            let data = json::data(m, "attributes", "")?;
            let name = match opt_str(m, "name", "")? {
                Some(n) => n,
                None if kind == TrackKind::Page => data
                    .get("url")
                    .or_else(|| data.get("path"))
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
                    .ok_or_else(|| InputError::invalid("name", "is required"))?,
                None => return Err(InputError::invalid("name", "is required")),
            };
            let mut t = Track::new(ident, kind, name).data(data);
            if let Some(ts) = opt_unix(m, "timestamp", "")? {
                t = t.timestamp(ts);
            }
            if let Some(id) = opt_str(m, "id", "")? {
                t = t.id(id);
            }
            return Ok(Plan::one(
                Op::Track(t),
                names.rename("data", "attributes").rename("name", "name"),
            ));
        }
        "add_relationships" | "delete_relationships" => {
            let rels = relationships(m)?;
            let remove = action == "delete_relationships";
            let ops = rels
                .into_iter()
                .enumerate()
                .map(|(i, r)| {
                    let op = if remove {
                        Op::DeleteRelationship {
                            person: ident.clone(),
                            object: r.object,
                        }
                    } else {
                        Op::AddRelationship {
                            person: ident.clone(),
                            object: r.object,
                            attributes: r.attributes,
                        }
                    };
                    (op, names.clone().base(&format!("cio_relationships[{i}]")))
                })
                .collect();
            return Ok(Plan { steps: ops });
        }
        "add_device" | "delete_device" => {
            refuse_anonymous("a device")?;
            let dev = match get(m, "device") {
                Some(d) => json::object(d, "device")?,
                None => return Err(InputError::invalid("device", "is required")),
            };
            let token = match json::nonempty_str(dev, "token", "device")? {
                Some(t) => t,
                None => req_str(dev, "id", "device")
                    .map_err(|_| InputError::invalid("device.token", "is required"))?,
            };
            if action == "delete_device" {
                Op::DeleteDevice {
                    person: ident,
                    token,
                }
            } else {
                let device = device_input(dev, token, "device")?;
                Op::AddDevice {
                    person: ident,
                    device,
                }
            }
        }
        other => {
            return Err(unknown_action(
                "person",
                other,
                "identify, delete, event, screen, page, add_relationships, \
                 delete_relationships, add_device, delete_device, merge, suppress, unsuppress",
            ))
        }
    };
    Ok(Plan::one(op, names))
}

/// A device body: `platform` (ios/android), optional `last_used` and `attributes`.
pub(crate) fn device_input(
    dev: &JsonMap<String, Json>,
    token: String,
    base: &str,
) -> Result<DeviceInput, InputError> {
    let platform_text = req_str(dev, "platform", base)?;
    let platform = Platform::parse(&platform_text.to_ascii_lowercase()).ok_or_else(|| {
        InputError::invalid(
            join(base, "platform"),
            format!("`{platform_text}` is not ios or android"),
        )
    })?;
    let mut device = DeviceInput::new(token, platform);
    if let Some(t) = opt_unix(dev, "last_used", base)? {
        device = device.last_used(t);
    }
    device.attributes = json::attributes(dev, "attributes", base)?;
    Ok(device)
}

fn relationships(
    m: &JsonMap<String, Json>,
) -> Result<Vec<crate::people::RelationshipChange>, InputError> {
    match get(m, "cio_relationships") {
        Some(Json::Array(a)) if a.is_empty() => {
            Err(InputError::new("cio_relationships", InputReason::Empty))
        }
        Some(v @ Json::Array(_)) => parse_relationships(v),
        Some(_) => Err(InputError::invalid("cio_relationships", "must be an array")),
        None => Err(InputError::invalid("cio_relationships", "is required")),
    }
}

/// A person related to an object: who, relationship attributes, the entry's field.
type RelatedPerson = (Ident, Vec<(String, crate::model::Value)>, String);

/// The people side of an object's `cio_relationships`: `[{identifiers, relationship_attributes}]`.
fn related_people(
    m: &JsonMap<String, Json>,
    required: bool,
) -> Result<Vec<RelatedPerson>, InputError> {
    let list = match get(m, "cio_relationships") {
        None if !required => return Ok(Vec::new()),
        None => return Err(InputError::invalid("cio_relationships", "is required")),
        Some(Json::Array(a)) if a.is_empty() && required => {
            return Err(InputError::new("cio_relationships", InputReason::Empty))
        }
        Some(Json::Array(a)) => a,
        Some(_) => return Err(InputError::invalid("cio_relationships", "must be an array")),
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, entry) in list.iter().enumerate() {
        let at = format!("cio_relationships[{i}]");
        let e = json::object(entry, &at)?;
        let ident = match get(e, "identifiers") {
            Some(v) => json::person(v, &join(&at, "identifiers"), PERSON)?,
            None => return Err(InputError::invalid(join(&at, "identifiers"), "is required")),
        };
        let attrs = json::attributes(e, "relationship_attributes", &at)?;
        out.push((ident, attrs, at));
    }
    Ok(out)
}

fn object(m: &JsonMap<String, Json>, action: &str) -> Result<Plan, InputError> {
    let object = match get(m, "identifiers") {
        Some(v) => json::object_ref(v, "identifiers")?,
        None => return Err(InputError::invalid("identifiers", "is required")),
    };
    let names = Names::new("identifiers.object_id");
    let mut steps = Vec::new();
    match action {
        "identify" | "identify_anonymous" => {
            let attributes = json::attributes(m, "attributes", "")?;
            steps.push((
                Op::IdentifyObject {
                    object: object.clone(),
                    attributes,
                },
                names.clone().base("attributes"),
            ));
            // The spec's identify_anonymous example names the visitor at the top level.
            if let Some(anon) = json::nonempty_str(m, "anonymous_id", "")? {
                steps.push((
                    Op::AddRelationship {
                        person: Ident::anonymous_id(anon),
                        object: object.clone(),
                        attributes: Vec::new(),
                    },
                    Names::new("anonymous_id"),
                ));
            }
            for (person, attributes, at) in related_people(m, false)? {
                let n = Names::new(format!("{at}.identifiers.{}", person.kind.as_str())).base(&at);
                steps.push((
                    Op::AddRelationship {
                        person,
                        object: object.clone(),
                        attributes,
                    },
                    n,
                ));
            }
        }
        "delete" => steps.push((Op::DeleteObject(object), names)),
        "add_relationships" | "delete_relationships" => {
            for (person, attributes, at) in related_people(m, true)? {
                let n = Names::new(format!("{at}.identifiers.{}", person.kind.as_str())).base(&at);
                let op = if action == "add_relationships" {
                    Op::AddRelationship {
                        person,
                        object: object.clone(),
                        attributes,
                    }
                } else {
                    Op::DeleteRelationship {
                        person,
                        object: object.clone(),
                    }
                };
                steps.push((op, n));
            }
        }
        other => {
            return Err(unknown_action(
                "object",
                other,
                "identify, identify_anonymous, delete, add_relationships, delete_relationships",
            ))
        }
    }
    Ok(Plan { steps })
}

fn delivery(m: &JsonMap<String, Json>, action: &str) -> Result<Plan, InputError> {
    if action != "event" {
        return Err(unknown_action("delivery", action, "event"));
    }
    let ids = match get(m, "identifiers") {
        Some(v) => json::object(v, "identifiers")?,
        None => return Err(InputError::invalid("identifiers", "is required")),
    };
    let id = req_str(ids, "id", "identifiers")?;
    let name = req_str(m, "name", "")?;
    if !matches!(name.as_str(), "opened" | "converted" | "delivered") {
        return Err(InputError::invalid(
            "name",
            format!("`{name}` is not a delivery event (expected opened, converted or delivered)"),
        ));
    }
    // `attributes` (device_token) is read for its shape only: the metric is the delivery's.
    json::attributes(m, "attributes", "")?;
    let mut metric = Metric::new(id, name);
    if let Some(ts) = opt_unix(m, "timestamp", "")? {
        metric = metric.timestamp(ts);
    }
    Ok(Plan::one(
        Op::Metric(metric),
        Names::new("identifiers.id")
            .rename("delivery_id", "identifiers.id")
            .rename("metric", "name"),
    ))
}
