//! Small readers over `serde_json` values that refuse with the field's path.

use serde_json::{Map as JsonMap, Value as Json};

use crate::error::{InputError, InputReason};
use crate::model::{Ident, IdentKind, Map, ObjectRef, Value};
use crate::people::{Identify, RelationshipChange};

/// `base.key`, or `key` when `base` is empty.
pub(crate) fn join(base: &str, key: &str) -> String {
    if base.is_empty() {
        key.to_owned()
    } else {
        format!("{base}.{key}")
    }
}

/// Re-roots an error's field under `base`.
pub(crate) fn under(base: &str, e: InputError) -> InputError {
    if base.is_empty() {
        return e;
    }
    let field = if e.field.is_empty() {
        base.to_owned()
    } else if e.field == base || e.field.starts_with(&format!("{base}.")) {
        e.field
    } else {
        join(base, &e.field)
    };
    InputError::new(field, e.reason)
}

/// The JSON object at `field`.
pub(crate) fn object<'a>(
    v: &'a Json,
    field: &str,
) -> Result<&'a JsonMap<String, Json>, InputError> {
    v.as_object()
        .ok_or_else(|| InputError::invalid(field, "must be a JSON object"))
}

/// Member `key` of `m`, treating `null` as absent.
pub(crate) fn get<'a>(m: &'a JsonMap<String, Json>, key: &str) -> Option<&'a Json> {
    m.get(key).filter(|v| !v.is_null())
}

/// A string (numbers are written out) at `m[key]`, if present.
pub(crate) fn opt_str(
    m: &JsonMap<String, Json>,
    key: &str,
    base: &str,
) -> Result<Option<String>, InputError> {
    match get(m, key) {
        None => Ok(None),
        Some(Json::String(s)) => Ok(Some(s.clone())),
        Some(Json::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(InputError::invalid(join(base, key), "must be a string")),
    }
}

/// A non-empty string at `m[key]`.
pub(crate) fn req_str(
    m: &JsonMap<String, Json>,
    key: &str,
    base: &str,
) -> Result<String, InputError> {
    match opt_str(m, key, base)? {
        Some(s) if !s.is_empty() => Ok(s),
        Some(_) => Err(InputError::new(join(base, key), InputReason::Empty)),
        None => Err(InputError::invalid(join(base, key), "is required")),
    }
}

/// A non-empty string at `m[key]`, if present and not empty.
pub(crate) fn nonempty_str(
    m: &JsonMap<String, Json>,
    key: &str,
    base: &str,
) -> Result<Option<String>, InputError> {
    Ok(opt_str(m, key, base)?.filter(|s| !s.is_empty()))
}

/// A unix time in seconds (an integer, a whole float, or a string of digits).
pub(crate) fn opt_unix(
    m: &JsonMap<String, Json>,
    key: &str,
    base: &str,
) -> Result<Option<i64>, InputError> {
    let Some(v) = get(m, key) else {
        return Ok(None);
    };
    let bad = || InputError::invalid(join(base, key), "must be a unix timestamp in seconds");
    match v {
        Json::Number(n) => match n.as_i64() {
            Some(i) => Ok(Some(i)),
            None => match n.as_f64() {
                Some(x) if x.is_finite() && x.abs() < 1e15 => Ok(Some(x.floor() as i64)),
                _ => Err(bad()),
            },
        },
        Json::String(s) => s.trim().parse::<i64>().map(Some).map_err(|_| bad()),
        _ => Err(bad()),
    }
}

/// An ISO-8601 (RFC 3339) time as unix seconds (fractions dropped), or a unix time.
pub(crate) fn opt_iso(
    m: &JsonMap<String, Json>,
    key: &str,
    base: &str,
) -> Result<Option<i64>, InputError> {
    match get(m, key) {
        Some(Json::String(s)) => match iso_seconds(s) {
            Some(t) => Ok(Some(t)),
            None => Err(InputError::invalid(
                join(base, key),
                format!("`{s}` is not an ISO-8601 time such as 2026-01-01T00:00:00.000Z"),
            )),
        },
        _ => opt_unix(m, key, base),
    }
}

/// Parses an RFC 3339 time to unix seconds.
pub(crate) fn iso_seconds(s: &str) -> Option<i64> {
    time::OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339)
        .ok()
        .map(time::OffsetDateTime::unix_timestamp)
}

/// An object of attributes at `m[key]` as (name, value) pairs; absent is empty.
pub(crate) fn attributes(
    m: &JsonMap<String, Json>,
    key: &str,
    base: &str,
) -> Result<Vec<(String, Value)>, InputError> {
    let field = join(base, key);
    match get(m, key) {
        None => Ok(Vec::new()),
        Some(Json::Object(obj)) => obj
            .iter()
            .map(|(k, v)| Ok((k.clone(), Value::from_json(v, &join(&field, k))?)))
            .collect(),
        Some(_) => Err(InputError::invalid(field, "must be a JSON object")),
    }
}

/// An object at `m[key]` as a [`Map`]; absent is empty.
pub(crate) fn data(m: &JsonMap<String, Json>, key: &str, base: &str) -> Result<Map, InputError> {
    Ok(attributes(m, key, base)?.into_iter().collect())
}

/// A person's identifiers object: exactly one of `kinds`.
pub(crate) fn person(v: &Json, field: &str, kinds: &[IdentKind]) -> Result<Ident, InputError> {
    let m = object(v, field)?;
    let names = || {
        kinds
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut found = Vec::new();
    for (k, v) in m {
        let kind = IdentKind::from_name(k)
            .filter(|kind| kinds.contains(kind))
            .ok_or_else(|| {
                InputError::invalid(
                    join(field, k),
                    format!("is not a person identifier (expected one of {})", names()),
                )
            })?;
        if v.is_null() {
            continue;
        }
        found.push((kind, k));
    }
    match found.as_slice() {
        [(kind, k)] => {
            let value = req_str(m, k, field)?;
            Ok(Ident::new(*kind, value))
        }
        [] => Err(InputError::invalid(
            field,
            format!("must name the person by one of {}", names()),
        )),
        more => Err(InputError::invalid(
            field,
            format!(
                "must hold exactly one identifier, not {} ({})",
                more.len(),
                more.iter()
                    .map(|(_, k)| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// An object type id: a string-formatted or plain whole number from 1.
pub(crate) fn type_id(v: Option<&Json>, field: &str) -> Result<u32, InputError> {
    match v {
        None => Ok(1),
        Some(Json::String(s)) => {
            crate::relations::parse_type_id(s).map_err(|e| InputError::new(field, e.reason))
        }
        Some(Json::Number(n)) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| InputError::invalid(field, "must be a whole number from 1")),
        Some(_) => Err(InputError::invalid(field, "must be a whole number from 1")),
    }
}

/// An object's identifiers `{object_type_id, object_id}`.
pub(crate) fn object_ref(v: &Json, field: &str) -> Result<ObjectRef, InputError> {
    let m = object(v, field)?;
    if get(m, "object_id").is_none() && get(m, "cio_object_id").is_some() {
        return Err(InputError::invalid(
            join(field, "cio_object_id"),
            "is not supported: profiledb addresses objects by object_type_id and object_id",
        ));
    }
    let object_id = req_str(m, "object_id", field)?;
    let type_id = match get(m, "object_type_id") {
        None => {
            return Err(InputError::invalid(
                join(field, "object_type_id"),
                "is required",
            ))
        }
        some => type_id(some, &join(field, "object_type_id"))?,
    };
    Ok(ObjectRef::new(type_id, object_id))
}

// The Track API v1 identify body, which Track v2 and Pipelines identifies share.
impl Identify {
    /// Builds an identify from a JSON attributes object as Track API v1 takes it:
    /// every key is an attribute, except `_update` and `_timestamp`, which become
    /// [`update_only`](Identify::update_only) and [`timestamp`](Identify::timestamp), and
    /// `cio_relationships`, which becomes [`relate`](Identify::relate) /
    /// [`unrelate`](Identify::unrelate) calls. `cio_relationships` may be Track v1's
    /// `{"action": "add_relationships"|"delete_relationships", "relationships": [...]}`
    /// or Track v2's plain array; each entry is `{"identifiers": {"object_type_id",
    /// "object_id"}, "relationship_attributes": {...}}`.
    ///
    /// # Errors
    /// [`InputError`] when `body` is not an object or a value cannot be stored.
    pub fn from_json(ident: Ident, body: &serde_json::Value) -> Result<Identify, InputError> {
        let obj = body
            .as_object()
            .ok_or_else(|| InputError::invalid("attributes", "must be a JSON object"))?;
        let mut op = Identify::new(ident);
        for (k, v) in obj {
            match k.as_str() {
                "_update" => {
                    op.update_only = v
                        .as_bool()
                        .ok_or_else(|| InputError::invalid("_update", "must be true or false"))?
                }
                "_timestamp" => {
                    op.timestamp = Some(v.as_i64().ok_or_else(|| {
                        InputError::invalid("_timestamp", "must be a unix timestamp in seconds")
                    })?)
                }
                "cio_relationships" => op.relationships = parse_relationships(v)?,
                _ => op.attributes.push((k.clone(), Value::from_json(v, k)?)),
            }
        }
        Ok(op)
    }
}

/// Parses `cio_relationships` (Track v1 object form or v2 array form).
///
/// # Errors
/// [`InputError`] naming the entry and field that is malformed.
pub(crate) fn parse_relationships(
    v: &serde_json::Value,
) -> Result<Vec<RelationshipChange>, InputError> {
    let field = "cio_relationships";
    let (list, remove) = match v {
        serde_json::Value::Array(items) => (items, false),
        serde_json::Value::Object(obj) => {
            let remove = match obj.get("action").and_then(|a| a.as_str()) {
                Some("add_relationships") | None => false,
                Some("delete_relationships") => true,
                Some(other) => {
                    return Err(InputError::invalid(
                        "cio_relationships.action",
                        format!("`{other}` is not add_relationships or delete_relationships"),
                    ))
                }
            };
            match obj.get("relationships") {
                Some(serde_json::Value::Array(items)) => (items, remove),
                _ => {
                    return Err(InputError::invalid(
                        "cio_relationships.relationships",
                        "must be an array",
                    ))
                }
            }
        }
        _ => return Err(InputError::invalid(field, "must be an array or an object")),
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, entry) in list.iter().enumerate() {
        let at = format!("{field}[{i}]");
        let ids = entry
            .get("identifiers")
            .and_then(|x| x.as_object())
            .ok_or_else(|| InputError::invalid(format!("{at}.identifiers"), "must be an object"))?;
        let type_id = match ids.get("object_type_id") {
            Some(serde_json::Value::String(s)) => crate::relations::parse_type_id(s),
            Some(serde_json::Value::Number(n)) => n
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    InputError::invalid("object_type_id", "must be a whole number from 1")
                }),
            _ => Err(InputError::invalid("object_type_id", "is required")),
        }
        .map_err(|e| InputError::new(format!("{at}.identifiers.object_type_id"), e.reason))?;
        let object_id = match ids.get("object_id") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            _ => {
                return Err(InputError::invalid(
                    format!("{at}.identifiers.object_id"),
                    "is required",
                ))
            }
        };
        let mut attributes = Vec::new();
        match entry.get("relationship_attributes") {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::Object(attrs)) => {
                for (k, v) in attrs {
                    let f = format!("{at}.relationship_attributes.{k}");
                    attributes.push((k.clone(), Value::from_json(v, &f)?));
                }
            }
            Some(_) => {
                return Err(InputError::invalid(
                    format!("{at}.relationship_attributes"),
                    "must be an object",
                ))
            }
        }
        out.push(RelationshipChange {
            object: crate::model::ObjectRef::new(type_id, object_id),
            attributes,
            remove,
        });
    }
    Ok(out)
}
