//! Track API v1 (`https://track.customer.io/api/v1/...`) request bodies, read into
//! operations.
//!
//! Each function takes what one v1 call carries (the identifier from its path, already
//! URL-decoded, and its JSON body) and returns the library's inputs, or an
//! [`InputError`] naming the body's field and the reason. Nothing here writes: the
//! caller (the server) applies what comes back.
//!
//! | call | reader |
//! |---|---|
//! | `PUT /customers/{identifier}` | [`identify`] |
//! | `POST /customers/{identifier}/events`, `POST /events` | [`event`], [`anonymous_event`] (`type` page/screen too) |
//! | `PUT /customers/{identifier}/devices` | [`device`] (`attributes`, or the extra keys Python's client puts beside `id`) |
//! | `POST /merge_customers` | [`merge`] |
//! | `POST /segments/{id}/add_customers`, `remove_customers` | [`segment_people`] |
//! | `POST /push/events` | [`push_event`] |
//! | `POST /metrics` | [`metric`] |
//! | `POST /forms/{form_id}/submit` | [`form`] |

use serde_json::{Map as JsonMap, Value as Json};

use super::json::{self, get, join, opt_str, opt_unix, req_str};
use crate::activity::Track;
use crate::db::Op;
use crate::deliveries::Metric;
use crate::devices::DeviceInput;
use crate::error::{InputError, InputReason};
use crate::model::{Ident, IdentKind, Platform, TrackKind};
use crate::people::Identify;

/// Most people one segment membership call may name (Customer.io's limit).
pub const MAX_SEGMENT_IDS: usize = 1000;

const NAMED: &[IdentKind] = &[
    IdentKind::Id,
    IdentKind::Email,
    IdentKind::Phone,
    IdentKind::CioId,
];

fn body_object(body: &Json) -> Result<&JsonMap<String, Json>, InputError> {
    json::object(body, "body")
}

/// The person a path identifier names, as Customer.io reads it: `cio_<x>` is a
/// `cio_id`, a value containing `@` an email, anything else an `id`.
///
/// # Errors
/// [`InputError`] on `identifier` when it is empty.
pub fn path_ident(identifier: &str) -> Result<Ident, InputError> {
    if identifier.is_empty() {
        return Err(InputError::new("identifier", InputReason::Empty));
    }
    Ok(Ident::infer(identifier))
}

/// `PUT /customers/{identifier}`: the body is the attributes object
/// ([`Identify::from_json`]: `_update`, `_timestamp`, `cio_relationships`).
///
/// # Errors
/// [`InputError`] naming the attribute that cannot be stored.
pub fn identify(who: Ident, body: &Json) -> Result<Identify, InputError> {
    // An empty body (`DELETE`-style clients send none) is an identify with nothing set.
    if body.is_null() {
        return Ok(Identify::new(who));
    }
    Identify::from_json(who, body)
}

/// `POST /customers/{identifier}/events`: `name` (trimmed), `type`
/// (`event`, `page`, `screen`; default `event`), `data`, `timestamp`, `id`.
///
/// # Errors
/// [`InputError`] naming the field.
pub fn event(who: Ident, body: &Json) -> Result<Track, InputError> {
    let m = body_object(body)?;
    let kind = match opt_str(m, "type", "")?.as_deref() {
        None | Some("") | Some("event") => TrackKind::Event,
        Some("page") => TrackKind::Page,
        Some("screen") => TrackKind::Screen,
        Some(other) => {
            return Err(InputError::invalid(
                "type",
                format!("`{other}` is not event, page or screen"),
            ))
        }
    };
    let name = req_str(m, "name", "")?.trim().to_owned();
    if name.is_empty() {
        return Err(InputError::new("name", InputReason::Empty));
    }
    let mut track = Track::new(who, kind, name).data(json::data(m, "data", "")?);
    if let Some(t) = opt_unix(m, "timestamp", "")? {
        track = track.timestamp(t);
    }
    if let Some(id) = opt_str(m, "id", "")?.filter(|s| !s.is_empty()) {
        track = track.id(id);
    }
    Ok(track)
}

/// `POST /events`: an event as [`event`] reads it, by `anonymous_id`.
///
/// # Errors
/// [`InputError`] naming the field; `anonymous_id` when it is missing or empty (an
/// anonymous invite without one names nobody this database could store it for).
pub fn anonymous_event(body: &Json) -> Result<Track, InputError> {
    let m = body_object(body)?;
    let anonymous_id = json::nonempty_str(m, "anonymous_id", "")?.ok_or_else(|| {
        InputError::invalid(
            "anonymous_id",
            "is required: an event without one names nobody to store it for",
        )
    })?;
    event(Ident::anonymous_id(anonymous_id), body)
}

/// `PUT /customers/{identifier}/devices`: `{"device": {"id", "platform",
/// "last_used"?, "attributes"?}}`. Keys beside those (as Python's and Ruby's clients
/// send them) are device attributes too.
///
/// # Errors
/// [`InputError`] naming the field under `device`.
pub fn device(body: &Json) -> Result<DeviceInput, InputError> {
    let m = body_object(body)?;
    let dev = match get(m, "device") {
        Some(d) => json::object(d, "device")?,
        None => return Err(InputError::invalid("device", "is required")),
    };
    let token = match opt_str(dev, "id", "device")? {
        Some(t) => t,
        None => req_str(dev, "token", "device")
            .map_err(|_| InputError::invalid("device.id", "is required"))?,
    };
    if token.is_empty() {
        return Err(InputError::new("device.id", InputReason::Empty));
    }
    let platform_text = req_str(dev, "platform", "device")?;
    let platform = Platform::parse(&platform_text.to_ascii_lowercase()).ok_or_else(|| {
        InputError::invalid(
            "device.platform",
            format!("`{platform_text}` is not ios or android"),
        )
    })?;
    let mut input = DeviceInput::new(token, platform);
    if let Some(t) = opt_unix(dev, "last_used", "device")? {
        input = input.last_used(t);
    }
    input.attributes = json::attributes(dev, "attributes", "device")?;
    for (k, v) in dev {
        if matches!(
            k.as_str(),
            "id" | "token" | "platform" | "last_used" | "attributes"
        ) {
            continue;
        }
        let value = crate::model::Value::from_json(v, &join("device", k))?;
        input.attributes.push((k.clone(), value));
    }
    Ok(input)
}

/// `POST /merge_customers`: `{"primary": {kind: value}, "secondary": {kind: value}}`.
///
/// # Errors
/// [`InputError`] naming `primary` or `secondary`.
pub fn merge(body: &Json) -> Result<Op, InputError> {
    let m = body_object(body)?;
    let side = |key: &str| match get(m, key) {
        Some(v) => json::person(v, key, NAMED),
        None => Err(InputError::invalid(key, "is required")),
    };
    Ok(Op::Merge {
        primary: side("primary")?,
        secondary: side("secondary")?,
    })
}

/// `POST /segments/{id}/add_customers` and `remove_customers`: `{"ids": [...]}`, 1 to
/// 1000 identifiers of kind `id_type` (`id`, `email` or `cio_id`; default `id`).
///
/// # Errors
/// [`InputError`] on `id_type` or `ids`.
pub fn segment_people(body: &Json, id_type: Option<&str>) -> Result<Vec<Ident>, InputError> {
    let kind = match id_type.unwrap_or("id") {
        "id" => IdentKind::Id,
        "email" => IdentKind::Email,
        "cio_id" => IdentKind::CioId,
        other => {
            return Err(InputError::invalid(
                "id_type",
                format!("`{other}` is not id, email or cio_id"),
            ))
        }
    };
    let m = body_object(body)?;
    let ids = match get(m, "ids") {
        Some(Json::Array(a)) => a,
        Some(_) => return Err(InputError::invalid("ids", "must be an array")),
        None => return Err(InputError::invalid("ids", "is required")),
    };
    if ids.is_empty() {
        return Err(InputError::new("ids", InputReason::Empty));
    }
    if ids.len() > MAX_SEGMENT_IDS {
        return Err(InputError::invalid(
            "ids",
            format!(
                "holds {} identifiers; at most {MAX_SEGMENT_IDS} per call",
                ids.len()
            ),
        ));
    }
    ids.iter()
        .enumerate()
        .map(|(i, v)| {
            let value = match v {
                Json::String(s) if !s.is_empty() => s.clone(),
                Json::Number(n) => n.to_string(),
                _ => {
                    return Err(InputError::invalid(
                        format!("ids[{i}]"),
                        "must be a non-empty string or a number",
                    ))
                }
            };
            let value = match kind {
                IdentKind::CioId => value
                    .strip_prefix("cio_")
                    .map(str::to_owned)
                    .unwrap_or(value),
                _ => value,
            };
            Ok(Ident::new(kind, value))
        })
        .collect()
}

/// `POST /push/events`: `{"delivery_id", "event": opened|converted|delivered,
/// "device_id"?, "timestamp"?}`.
///
/// # Errors
/// [`InputError`] naming the field.
pub fn push_event(body: &Json) -> Result<Metric, InputError> {
    let m = body_object(body)?;
    let delivery = req_str(m, "delivery_id", "")?;
    let event = req_str(m, "event", "")?;
    if !matches!(event.as_str(), "opened" | "converted" | "delivered") {
        return Err(InputError::invalid(
            "event",
            format!("`{event}` is not opened, converted or delivered"),
        ));
    }
    let mut metric = Metric::new(delivery, event);
    if let Some(t) = opt_unix(m, "timestamp", "")? {
        metric = metric.timestamp(t);
    }
    Ok(metric)
}

/// `POST /metrics`: `{"delivery_id", "metric", "timestamp"?, "recipient"?, "reason"?,
/// "href"?}`.
///
/// # Errors
/// [`InputError`] naming the field.
pub fn metric(body: &Json) -> Result<Metric, InputError> {
    let m = body_object(body)?;
    let mut metric = Metric::new(req_str(m, "delivery_id", "")?, req_str(m, "metric", "")?);
    if let Some(t) = opt_unix(m, "timestamp", "")? {
        metric = metric.timestamp(t);
    }
    if let Some(href) = opt_str(m, "href", "")?.filter(|s| !s.is_empty()) {
        metric = metric.href(href);
    }
    if let Some(reason) = opt_str(m, "reason", "")?.filter(|s| !s.is_empty()) {
        metric = metric.reason(reason);
    }
    Ok(metric)
}

/// `POST /forms/{form_id}/submit`: `{"data": {...}}`. The respondent is `data.id`,
/// else `data.email`; the other fields are set as attributes (Customer.io's default
/// mapping), except the reserved `form_id`, `form_name`, `form_type`, `form_url` and
/// `form_url_param`, which are ignored.
///
/// # Errors
/// [`InputError`] on `data`, `data.id`/`data.email` or a field that cannot be stored.
pub fn form(body: &Json) -> Result<Identify, InputError> {
    let m = body_object(body)?;
    let data = match get(m, "data") {
        Some(d) => json::object(d, "data")?,
        None => return Err(InputError::invalid("data", "is required")),
    };
    let who = match json::nonempty_str(data, "id", "data")? {
        Some(id) => Ident::id(id),
        None => match json::nonempty_str(data, "email", "data")? {
            Some(email) => Ident::email(email),
            None => {
                return Err(InputError::invalid(
                    "data",
                    "must hold `id` or `email` to name who submitted the form",
                ))
            }
        },
    };
    let mut op = Identify::new(who);
    for (k, v) in data {
        if matches!(
            k.as_str(),
            "form_id" | "form_name" | "form_type" | "form_url" | "form_url_param"
        ) {
            continue;
        }
        op = op.set(
            k.clone(),
            crate::model::Value::from_json(v, &join("data", k))?,
        );
    }
    Ok(op)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test code")]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn page_event_by_type() {
        let t = event(
            Ident::id("u"),
            &json!({"type": "page", "name": " /docs ", "data": {"a": 1}, "id": "e1", "timestamp": 5}),
        )
        .unwrap();
        assert_eq!(t.kind, TrackKind::Page);
        assert_eq!(t.name, "/docs");
        assert_eq!(t.timestamp, Some(5));
        assert_eq!(t.event_id.as_deref(), Some("e1"));
    }

    #[test]
    fn event_refusals_name_the_field() {
        let e = event(Ident::id("u"), &json!({"data": {}})).unwrap_err();
        assert_eq!(e.field, "name");
        let e = event(Ident::id("u"), &json!({"name": "x", "type": "bogus"})).unwrap_err();
        assert_eq!(e.field, "type");
        let e = anonymous_event(&json!({"name": "x"})).unwrap_err();
        assert_eq!(e.field, "anonymous_id");
        let e = event(Ident::id("u"), &json!([1])).unwrap_err();
        assert_eq!(e.field, "body");
    }

    #[test]
    fn device_flat_keys_are_attributes() {
        let d = device(&json!({"device": {"id": "tok", "platform": "iOS", "app_version": "1.2", "last_used": 7}}))
            .unwrap();
        assert_eq!(d.token, "tok");
        assert_eq!(d.platform, Platform::Ios);
        assert_eq!(d.last_used, Some(7));
        assert_eq!(d.attributes.len(), 1);
        let e = device(&json!({"device": {"id": "tok", "platform": "web"}})).unwrap_err();
        assert_eq!(e.field, "device.platform");
    }

    #[test]
    fn segment_ids_limits() {
        let ids = segment_people(&json!({"ids": ["a", 2]}), None).unwrap();
        assert_eq!(ids, vec![Ident::id("a"), Ident::id("2")]);
        let big: Vec<u32> = (0..1001).collect();
        assert_eq!(
            segment_people(&json!({ "ids": big }), None)
                .unwrap_err()
                .field,
            "ids"
        );
        assert_eq!(
            segment_people(&json!({"ids": ["a"]}), Some("phone"))
                .unwrap_err()
                .field,
            "id_type"
        );
    }

    #[test]
    fn merge_and_metrics() {
        let op = merge(&json!({"primary": {"id": "a"}, "secondary": {"email": "b@x"}})).unwrap();
        assert_eq!(
            op,
            Op::Merge {
                primary: Ident::id("a"),
                secondary: Ident::email("b@x")
            }
        );
        assert_eq!(
            merge(&json!({"primary": {"id": "a"}})).unwrap_err().field,
            "secondary"
        );
        let m =
            push_event(&json!({"delivery_id": "d", "event": "opened", "device_id": "t"})).unwrap();
        assert_eq!(m.metric, "opened");
        assert_eq!(
            push_event(&json!({"delivery_id": "d", "event": "x"}))
                .unwrap_err()
                .field,
            "event"
        );
        let m = metric(&json!({"delivery_id": "d", "metric": "clicked", "href": "h"})).unwrap();
        assert_eq!(m.href.as_deref(), Some("h"));
    }

    #[test]
    fn form_respondent() {
        let op =
            form(&json!({"data": {"email": "a@b", "first_name": "A", "form_name": "x"}})).unwrap();
        assert_eq!(
            op,
            Identify::new(Ident::email("a@b"))
                .set("email", "a@b")
                .set("first_name", "A")
        );
        assert_eq!(
            form(&json!({"data": {"name": "x"}})).unwrap_err().field,
            "data"
        );
    }
}
