//! Write handlers: Track v1 and v2, Data Pipelines, reporting webhooks, manual segment
//! membership. Each reads the request into library inputs ([`crate::ingest::v1`] or
//! the JSON [`ProfileDb::ingest`](crate::ProfileDb::ingest) takes), queues it for the
//! group commit, and answers once it is durable.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value as Json};

use super::commit::Work;
use super::reply::{self, json_body};
use super::AppState;
use crate::ingest::v1;
use crate::{Ident, InputError, Op};

type Body = Result<Bytes, BytesRejection>;

async fn write(state: &AppState, ops: Vec<Op>) -> Response {
    reply::ops_done(state.writer.submit(Work::Ops(ops)).await)
}

/// Reads the path identifier and the body, and turns them into operations.
async fn person_write(
    state: &AppState,
    identifier: &str,
    body: Body,
    read: impl FnOnce(Ident, Json) -> Result<Vec<Op>, InputError>,
) -> Response {
    let body = match json_body(body) {
        Ok(b) => b,
        Err(res) => return res,
    };
    match v1::path_ident(identifier).and_then(|who| read(who, body)) {
        Ok(ops) => write(state, ops).await,
        Err(e) => reply::refused(&e),
    }
}

async fn body_write(
    state: &AppState,
    body: Body,
    read: impl FnOnce(Json) -> Result<Vec<Op>, InputError>,
) -> Response {
    match json_body(body) {
        Ok(b) => match read(b) {
            Ok(ops) => write(state, ops).await,
            Err(e) => reply::refused(&e),
        },
        Err(res) => res,
    }
}

/// `PUT /api/v1/customers/{identifier}`.
pub(crate) async fn identify(
    State(state): State<AppState>,
    Path(identifier): Path<String>,
    body: Body,
) -> Response {
    person_write(&state, &identifier, body, |who, b| {
        Ok(vec![Op::Identify(v1::identify(who, &b)?)])
    })
    .await
}

/// `DELETE /api/v1/customers/{identifier}`.
pub(crate) async fn delete(
    State(state): State<AppState>,
    Path(identifier): Path<String>,
    body: Body,
) -> Response {
    person_write(&state, &identifier, body, |who, _| {
        Ok(vec![Op::Delete(who)])
    })
    .await
}

/// `POST /api/v1/customers/{identifier}/suppress`.
pub(crate) async fn suppress(
    State(state): State<AppState>,
    Path(identifier): Path<String>,
    body: Body,
) -> Response {
    person_write(&state, &identifier, body, |who, _| {
        Ok(vec![Op::Suppress(who)])
    })
    .await
}

/// `POST /api/v1/customers/{identifier}/unsuppress`.
pub(crate) async fn unsuppress(
    State(state): State<AppState>,
    Path(identifier): Path<String>,
    body: Body,
) -> Response {
    person_write(&state, &identifier, body, |who, _| {
        Ok(vec![Op::Unsuppress(who)])
    })
    .await
}

/// `POST /api/v1/customers/{identifier}/events`.
pub(crate) async fn event(
    State(state): State<AppState>,
    Path(identifier): Path<String>,
    body: Body,
) -> Response {
    person_write(&state, &identifier, body, |who, b| {
        Ok(vec![Op::Track(v1::event(who, &b)?)])
    })
    .await
}

/// `POST /api/v1/events`.
pub(crate) async fn anonymous_event(State(state): State<AppState>, body: Body) -> Response {
    body_write(&state, body, |b| {
        Ok(vec![Op::Track(v1::anonymous_event(&b)?)])
    })
    .await
}

/// `PUT /api/v1/customers/{identifier}/devices`.
pub(crate) async fn add_device(
    State(state): State<AppState>,
    Path(identifier): Path<String>,
    body: Body,
) -> Response {
    person_write(&state, &identifier, body, |person, b| {
        Ok(vec![Op::AddDevice {
            person,
            device: v1::device(&b)?,
        }])
    })
    .await
}

/// `DELETE /api/v1/customers/{identifier}/devices/{token}`.
pub(crate) async fn delete_device(
    State(state): State<AppState>,
    Path((identifier, token)): Path<(String, String)>,
    body: Body,
) -> Response {
    person_write(&state, &identifier, body, |person, _| {
        Ok(vec![Op::DeleteDevice { person, token }])
    })
    .await
}

/// `POST /api/v1/merge_customers`.
pub(crate) async fn merge(State(state): State<AppState>, body: Body) -> Response {
    body_write(&state, body, |b| Ok(vec![v1::merge(&b)?])).await
}

/// `POST /api/v1/push/events` (and `/push/events`, where Ruby's client sends it).
pub(crate) async fn push_event(State(state): State<AppState>, body: Body) -> Response {
    body_write(&state, body, |b| Ok(vec![Op::Metric(v1::push_event(&b)?)])).await
}

/// `POST /api/v1/metrics`.
pub(crate) async fn metric(State(state): State<AppState>, body: Body) -> Response {
    body_write(&state, body, |b| Ok(vec![Op::Metric(v1::metric(&b)?)])).await
}

/// `POST /api/v1/forms/{form_id}/submit`: 204 as Customer.io answers it.
pub(crate) async fn form(
    State(state): State<AppState>,
    Path(_form_id): Path<String>,
    body: Body,
) -> Response {
    let res = body_write(&state, body, |b| Ok(vec![Op::Identify(v1::form(&b)?)])).await;
    if res.status() == StatusCode::OK {
        return StatusCode::NO_CONTENT.into_response();
    }
    res
}

/// `GET /api/v1/accounts/region`: this server is the region.
pub(crate) async fn region(uri: Uri, headers: axum::http::HeaderMap) -> Response {
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let _ = uri;
    axum::Json(json!({"url": format!("http://{host}"), "region": "us", "environment_id": 0}))
        .into_response()
}

/// `?id_type=` of the segment membership calls.
#[derive(Debug, Deserialize)]
pub(crate) struct IdType {
    id_type: Option<String>,
}

fn segment_id(raw: &str) -> Result<u32, InputError> {
    raw.parse::<u32>()
        .map_err(|_| InputError::invalid("segment_id", format!("`{raw}` is not a segment id")))
}

async fn membership(
    state: &AppState,
    segment: &str,
    id_type: Option<&str>,
    body: Body,
    add: bool,
) -> Response {
    body_write(state, body, |b| {
        let segment = segment_id(segment)?;
        let people = v1::segment_people(&b, id_type)?;
        Ok(vec![if add {
            Op::AddToSegment { segment, people }
        } else {
            Op::RemoveFromSegment { segment, people }
        }])
    })
    .await
}

/// `POST /api/v1/segments/{id}/add_customers` (and the App API's `/v1/...`).
pub(crate) async fn add_customers(
    State(state): State<AppState>,
    Path(segment): Path<String>,
    Query(q): Query<IdType>,
    body: Body,
) -> Response {
    membership(&state, &segment, q.id_type.as_deref(), body, true).await
}

/// `POST /api/v1/segments/{id}/remove_customers` (and the App API's `/v1/...`).
pub(crate) async fn remove_customers(
    State(state): State<AppState>,
    Path(segment): Path<String>,
    Query(q): Query<IdType>,
    body: Body,
) -> Response {
    membership(&state, &segment, q.id_type.as_deref(), body, false).await
}

/// What an ingest route takes.
enum Kind<'a> {
    /// One message of any kind the library reads.
    Any,
    /// `{"batch": [...]}` only.
    Batch,
    /// One Pipelines call of this type (the path gives it; the body has no `type`).
    Pipelines(&'a str),
}

async fn ingest(state: &AppState, body: Body, partial: StatusCode, kind: Kind<'_>) -> Response {
    let mut msg = match json_body(body) {
        Ok(b) => b,
        Err(res) => return res,
    };
    if let Err(res) = reply::check_items(&msg) {
        return res;
    }
    match kind {
        Kind::Any => {}
        Kind::Batch => {
            if !msg.get("batch").is_some_and(Json::is_array) {
                return reply::refused(&InputError::invalid(
                    "batch",
                    "is required: this endpoint takes {\"batch\": [...]}",
                ));
            }
        }
        Kind::Pipelines(t) => {
            if let Some(m) = msg.as_object_mut() {
                m.entry("type")
                    .or_insert_with(|| Json::String(t.to_owned()));
            }
        }
    }
    reply::ingest_done(state.writer.submit(Work::Ingest(msg)).await, partial)
}

/// `POST /api/v2/entity`.
pub(crate) async fn entity(State(state): State<AppState>, body: Body) -> Response {
    ingest(&state, body, StatusCode::MULTI_STATUS, Kind::Any).await
}

/// `POST /api/v2/batch`: 207 naming the refused items when some are refused.
pub(crate) async fn batch(State(state): State<AppState>, body: Body) -> Response {
    ingest(&state, body, StatusCode::MULTI_STATUS, Kind::Batch).await
}

/// `POST /v1/identify|track|page|screen|group|alias`: the path gives the type.
pub(crate) async fn pipelines(State(state): State<AppState>, uri: Uri, body: Body) -> Response {
    let kind = uri.path().rsplit('/').next().unwrap_or_default().to_owned();
    ingest(&state, body, StatusCode::OK, Kind::Pipelines(&kind)).await
}

/// `POST /v1/batch`: 200 even when items are refused (the Pipelines clients retry
/// anything else), naming them in `errors`.
pub(crate) async fn pipelines_batch(State(state): State<AppState>, body: Body) -> Response {
    ingest(&state, body, StatusCode::OK, Kind::Batch).await
}

/// `POST /webhooks/reporting`: one reporting-webhook event.
pub(crate) async fn webhook(State(state): State<AppState>, body: Body) -> Response {
    ingest(&state, body, StatusCode::MULTI_STATUS, Kind::Any).await
}
