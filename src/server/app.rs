//! App API reads (`/v1/customers/...`, `/v1/segments/...`), shaped as Customer.io's
//! App API answers them, and the health endpoints. Reads call the library on a
//! blocking thread and never wait for the writer.
//!
//! Attribute values are the stored JSON values (Customer.io's App API writes them as
//! strings; here a number stays a number), so what the API returns is exactly what
//! [`ProfileDb::profile`](crate::ProfileDb::profile) holds.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json as JsonBody;
use serde::Deserialize;
use serde_json::{json, Map as JsonMap, Value as Json};

use super::reply::{self, json_body};
use super::AppState;
use crate::{
    Activity, ActivityCursor, ActivityFilter, Audience, Delivery, Device, Error, Ident, IdentKind,
    InputError, Person, PersonId, ProfileDb, SegmentInfo,
};

/// Runs a read on a blocking thread; a library error becomes its answer.
async fn read(
    state: &AppState,
    f: impl FnOnce(&ProfileDb) -> Result<Response, Error> + Send + 'static,
) -> Response {
    let db = state.db.clone();
    match tokio::task::spawn_blocking(move || f(&db)).await {
        Ok(Ok(res)) => res,
        Ok(Err(e)) => reply::library_error(&e),
        Err(_) => reply::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            None,
            "internal",
            "internal failure while reading",
        ),
    }
}

fn ok(body: Json) -> Result<Response, Error> {
    Ok(JsonBody(body).into_response())
}

/// `?id_type=` names how the path identifies the person (default `id`).
#[derive(Debug, Deserialize)]
pub(crate) struct IdTypeQuery {
    id_type: Option<String>,
}

fn person_ident(identifier: &str, id_type: Option<&str>) -> Result<Ident, InputError> {
    if identifier.is_empty() {
        return Err(InputError::new("customer_id", crate::InputReason::Empty));
    }
    let kind = match id_type.unwrap_or("id") {
        "cio_id" => {
            let bare = identifier.strip_prefix("cio_").unwrap_or(identifier);
            return Ok(Ident::cio_id(bare));
        }
        other => IdentKind::from_name(other)
            .filter(|k| *k != IdentKind::AnonymousId)
            .ok_or_else(|| {
                InputError::invalid(
                    "id_type",
                    format!("`{other}` is not id, email, phone or cio_id"),
                )
            })?,
    };
    Ok(Ident::new(kind, identifier))
}

/// `{"id", "email", "cio_id"}` as the App API lists people.
fn identifiers(p: &Person) -> Json {
    json!({"id": p.id, "email": p.email, "cio_id": p.cio_id})
}

fn device_json(d: &Device) -> Json {
    json!({
        "id": d.token,
        "platform": d.platform.as_str(),
        "last_used": d.last_used,
        "status": d.status.as_str(),
        "attributes": crate::Value::Map(d.attributes.clone()).to_json(),
    })
}

/// The `customer` object of `GET /v1/customers/{id}/attributes`.
pub fn customer_json(p: &Person, devices: &[Device]) -> Json {
    let mut attributes = JsonMap::new();
    for (k, v) in &p.attributes {
        attributes.insert(k.clone(), v.to_json());
    }
    for kind in [
        IdentKind::Id,
        IdentKind::Email,
        IdentKind::Phone,
        IdentKind::CioId,
    ] {
        if let Some(v) = p.identifier(kind) {
            attributes.insert(kind.as_str().to_owned(), Json::String(v.to_owned()));
        }
    }
    json!({
        "customer": {
            "id": p.id,
            "identifiers": identifiers(p),
            "attributes": attributes,
            "timestamps": p.timestamps,
            "unsubscribed": p.unsubscribed(),
            "devices": devices.iter().map(device_json).collect::<Vec<_>>(),
        }
    })
}

fn unknown_person(ident: &Ident) -> Response {
    reply::unknown(&format!("no person with {ident}"))
}

/// `GET /v1/customers/{id}/attributes?id_type=`.
pub(crate) async fn attributes(
    State(state): State<AppState>,
    Path(identifier): Path<String>,
    Query(q): Query<IdTypeQuery>,
) -> Response {
    let ident = match person_ident(&identifier, q.id_type.as_deref()) {
        Ok(i) => i,
        Err(e) => return reply::refused(&e),
    };
    read(&state, move |db| {
        let Some(person) = db.person(&ident)? else {
            return Ok(unknown_person(&ident));
        };
        let devices = db.devices(&ident)?;
        ok(customer_json(&person, &devices))
    })
    .await
}

/// `?type=&name=&start=&limit=` of the activities read.
#[derive(Debug, Deserialize)]
pub(crate) struct ActivitiesQuery {
    id_type: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    name: Option<String>,
    start: Option<String>,
    limit: Option<String>,
}

fn limit(raw: Option<&str>, default: usize, max: usize) -> Result<usize, InputError> {
    match raw {
        None | Some("") => Ok(default),
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                InputError::invalid("limit", format!("must be a number from 1 to {max}"))
            }),
    }
}

fn activity_json(a: &Activity, p: &Person) -> Json {
    let delivery_id = a
        .data
        .as_map()
        .and_then(|m| m.get("delivery_id"))
        .map(crate::Value::to_json);
    json!({
        "id": a.cursor.to_string(),
        "customer_id": p.id,
        "customer_identifiers": identifiers(p),
        "type": a.kind,
        "timestamp": a.timestamp,
        "name": a.name,
        "data": a.data.to_json(),
        "delivery_id": delivery_id,
    })
}

/// `GET /v1/customers/{id}/activities`: newest first, at most `limit` (≤ 100, default
/// 50); `next` is the `start` of the following page (empty on the last).
pub(crate) async fn activities(
    State(state): State<AppState>,
    Path(identifier): Path<String>,
    Query(q): Query<ActivitiesQuery>,
) -> Response {
    let parsed = (|| {
        let ident = person_ident(&identifier, q.id_type.as_deref())?;
        let n = limit(q.limit.as_deref(), 50, 100)?;
        // One more than asked says whether there is a next page.
        let mut filter = ActivityFilter::new(n + 1);
        if let Some(k) = q.kind.clone().filter(|s| !s.is_empty()) {
            filter = filter.kind(k);
        }
        if let Some(name) = q.name.clone().filter(|s| !s.is_empty()) {
            filter = filter.name(name);
        }
        if let Some(start) = q.start.as_deref().filter(|s| !s.is_empty()) {
            let cursor: ActivityCursor = start
                .parse()
                .map_err(|e: InputError| InputError::new("start", e.reason))?;
            filter = filter.before(cursor);
        }
        Ok::<_, InputError>((ident, n, filter))
    })();
    let (ident, n, filter) = match parsed {
        Ok(p) => p,
        Err(e) => return reply::refused(&e),
    };
    read(&state, move |db| {
        let Some(person) = db.person(&ident)? else {
            return Ok(unknown_person(&ident));
        };
        let mut list = db.activities(&ident, &filter)?;
        let more = list.len() > n;
        list.truncate(n);
        let next = match (more, list.last()) {
            (true, Some(a)) => a.cursor.to_string(),
            _ => String::new(),
        };
        let items: Vec<Json> = list.iter().map(|a| activity_json(a, &person)).collect();
        ok(json!({"activities": items, "next": next}))
    })
    .await
}

/// `GET /v1/customers/{id}/segments`.
pub(crate) async fn person_segments(
    State(state): State<AppState>,
    Path(identifier): Path<String>,
    Query(q): Query<IdTypeQuery>,
) -> Response {
    let ident = match person_ident(&identifier, q.id_type.as_deref()) {
        Ok(i) => i,
        Err(e) => return reply::refused(&e),
    };
    read(&state, move |db| {
        if db.person(&ident)?.is_none() {
            return Ok(unknown_person(&ident));
        }
        let segments: Vec<Json> = db
            .person_segments(&ident)?
            .iter()
            .map(|s| {
                json!({
                    "id": s.id,
                    "name": s.name,
                    "type": if s.kind == "manual" { "manual" } else { "dynamic" },
                })
            })
            .collect();
        ok(json!({"segments": segments}))
    })
    .await
}

/// `?limit=` of the messages read.
#[derive(Debug, Deserialize)]
pub(crate) struct MessagesQuery {
    id_type: Option<String>,
    limit: Option<String>,
}

fn message_json(d: &Delivery, p: &Person) -> Json {
    json!({
        "id": d.id,
        "customer_id": p.id,
        "customer_identifiers": identifiers(p),
        "type": d.channel.as_str(),
        "recipient": d.recipient,
        "subject": d.subject,
        "created": d.created,
        "campaign_id": d.campaign_id,
        "action_id": d.message_id,
        "broadcast_id": d.broadcast_id,
        "newsletter_id": d.newsletter_id,
        "metrics": d.metrics,
        "status": d.status,
    })
}

/// `GET /v1/customers/{id}/messages`: the person's deliveries, newest first.
pub(crate) async fn messages(
    State(state): State<AppState>,
    Path(identifier): Path<String>,
    Query(q): Query<MessagesQuery>,
) -> Response {
    let parsed = person_ident(&identifier, q.id_type.as_deref())
        .and_then(|i| Ok((i, limit(q.limit.as_deref(), 50, 1000)?)));
    let (ident, n) = match parsed {
        Ok(p) => p,
        Err(e) => return reply::refused(&e),
    };
    read(&state, move |db| {
        let Some(person) = db.person(&ident)? else {
            return Ok(unknown_person(&ident));
        };
        let items: Vec<Json> = db
            .deliveries(&ident, n)?
            .iter()
            .map(|d| message_json(d, &person))
            .collect();
        ok(json!({"messages": items, "next": ""}))
    })
    .await
}

/// `?email=` of the people-by-email read.
#[derive(Debug, Deserialize)]
pub(crate) struct EmailQuery {
    email: Option<String>,
}

/// `GET /v1/customers?email=`.
pub(crate) async fn by_email(
    State(state): State<AppState>,
    Query(q): Query<EmailQuery>,
) -> Response {
    let Some(email) = q.email.filter(|e| !e.is_empty()) else {
        return reply::refused(&InputError::invalid("email", "is required"));
    };
    read(&state, move |db| {
        let found: Vec<Json> = db
            .person(&Ident::email(email))?
            .iter()
            .map(identifiers)
            .collect();
        ok(json!({"results": found}))
    })
    .await
}

/// `?start=&limit=` of paged people lists.
#[derive(Debug, Deserialize)]
pub(crate) struct PageQuery {
    start: Option<String>,
    limit: Option<String>,
}

fn page(
    q: &PageQuery,
    default: usize,
    max: usize,
) -> Result<(usize, Option<PersonId>), InputError> {
    let n = limit(q.limit.as_deref(), default, max)?;
    let after = match q.start.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(PersonId(s.parse().map_err(|_| {
            InputError::invalid("start", "is not a cursor this server returned")
        })?)),
    };
    Ok((n, after))
}

fn audience_json(a: &Audience) -> Json {
    let identifiers: Vec<Json> = a
        .people
        .iter()
        .map(|p| json!({"email": p.email, "id": p.id, "cio_id": p.cio_id}))
        .collect();
    let ids: Vec<Json> = a.people.iter().map(|p| json!(p.id)).collect();
    let next = a.next.map(|p| p.0.to_string()).unwrap_or_default();
    json!({"identifiers": identifiers, "ids": ids, "next": next})
}

/// `POST /v1/customers?start=&limit=` with `{"filter": F}`: the people matching the
/// App API filter F (limit ≤ 1000, default 50).
pub(crate) async fn search(
    State(state): State<AppState>,
    Query(q): Query<PageQuery>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let parsed = json_body(body).and_then(|b| {
        let filter = b
            .get("filter")
            .filter(|f| f.is_object())
            .cloned()
            .ok_or_else(|| reply::refused(&InputError::invalid("filter", "is required: an object such as {\"attribute\": {\"field\": \"plan\", \"operator\": \"eq\", \"value\": \"pro\"}}")))?;
        let (n, after) = page(&q, 50, 1000).map_err(|e| reply::refused(&e))?;
        Ok((filter.to_string(), n, after))
    });
    let (filter, n, after) = match parsed {
        Ok(p) => p,
        Err(res) => return res,
    };
    read(&state, move |db| {
        let found = db.query(&filter, n, after).map_err(|e| match e {
            Error::Input(ie) => Error::Input(InputError::new(
                if ie.field == "condition" {
                    "filter".into()
                } else {
                    ie.field
                },
                ie.reason,
            )),
            other => other,
        })?;
        ok(audience_json(&found))
    })
    .await
}

fn segment_json(s: &SegmentInfo) -> Json {
    json!({
        "id": s.id,
        "deduplicate_id": format!("{}:{}", s.id, s.name),
        "name": s.name,
        "description": "",
        "state": "finished",
        "progress": null,
        "type": if s.condition.is_some() { "dynamic" } else { "manual" },
        "conditions": s.condition,
        "tags": null,
    })
}

/// `GET /v1/segments`.
pub(crate) async fn segments(State(state): State<AppState>) -> Response {
    read(&state, |db| {
        let list: Vec<Json> = db.segments().iter().map(segment_json).collect();
        ok(json!({"segments": list}))
    })
    .await
}

fn find_segment(db: &ProfileDb, raw: &str) -> Result<SegmentInfo, Response> {
    let id: u32 = raw.parse().map_err(|_| {
        reply::refused(&InputError::invalid(
            "segment_id",
            format!("`{raw}` is not a segment id"),
        ))
    })?;
    db.segments()
        .into_iter()
        .find(|s| s.id == id)
        .ok_or_else(|| reply::unknown(&format!("no segment {id}")))
}

/// `GET /v1/segments/{id}`.
pub(crate) async fn segment(State(state): State<AppState>, Path(raw): Path<String>) -> Response {
    read(&state, move |db| {
        Ok(match find_segment(db, &raw) {
            Ok(s) => JsonBody(json!({"segment": segment_json(&s)})).into_response(),
            Err(res) => res,
        })
    })
    .await
}

/// `GET /v1/segments/{id}/customer_count`.
pub(crate) async fn customer_count(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Response {
    read(&state, move |db| {
        Ok(match find_segment(db, &raw) {
            Ok(s) => JsonBody(json!({"count": s.members})).into_response(),
            Err(res) => res,
        })
    })
    .await
}

/// `GET /v1/segments/{id}/membership?start=&limit=` (limit ≤ 30000, default 1000).
pub(crate) async fn membership(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    Query(q): Query<PageQuery>,
) -> Response {
    let (n, after) = match page(&q, 1000, 30_000) {
        Ok(p) => p,
        Err(e) => return reply::refused(&e),
    };
    read(&state, move |db| {
        let s = match find_segment(db, &raw) {
            Ok(s) => s,
            Err(res) => return Ok(res),
        };
        ok(audience_json(&db.query(
            &format!("segment:#{}", s.id),
            n,
            after,
        )?))
    })
    .await
}

/// `GET /healthz`.
pub(crate) async fn healthz() -> Response {
    JsonBody(json!({"status": "ok"})).into_response()
}

/// `GET /metrics`: Prometheus text.
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

/// `/` when the server runs with keys but no App API key: the People page needs one.
pub(crate) async fn people_page_closed() -> Response {
    (
        StatusCode::FORBIDDEN,
        "The People page opens with the App API key: start `profiledb serve` with \
         --app-key (or PROFILEDB_APP_KEY), or with --no-auth on a loopback address.\n",
    )
        .into_response()
}
