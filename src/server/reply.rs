//! Answers: how the library's results and refusals become HTTP.
//!
//! # Error bodies
//! Every 4xx and 5xx carries one JSON shape that each client family reads:
//! ```json
//! {"errors": [{"field": "name", "reason": "invalid",
//!              "message": "invalid input: `name` is required",
//!              "detail": "invalid input: `name` is required", "status": 400}],
//!  "meta": {"error": "invalid input: `name` is required",
//!           "errors": ["invalid input: `name` is required"]},
//!  "code": 400, "message": "invalid input: `name` is required"}
//! ```
//! `errors[]` is Track v2's and the App API's envelope, `meta` Track v1's, `code` and
//! `message` what the Pipelines clients print. `message` is the library's refusal text
//! ([`Error`]'s `Display`); `reason` is `empty`, `too_long`, `too_many`, `too_deep`,
//! `reserved` or `invalid`. A batch with refused items answers
//! `{"errors": [{"batch_index": i, "field", "reason", "message"}, ...]}`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json as JsonBody;
use serde_json::{json, Value as Json};

use super::commit::{Done, Refused};
use crate::{Error, InputError, InputReason, Report};

/// An error answer: status and the library's text, with the field when it has one.
pub(crate) fn error(
    status: StatusCode,
    field: Option<&str>,
    reason: &str,
    message: &str,
) -> Response {
    let code = status.as_u16();
    let body = json!({
        "errors": [{
            "field": field,
            "reason": reason,
            "message": message,
            "detail": message,
            "status": code,
        }],
        "meta": {"error": message, "errors": [message]},
        "code": code,
        "message": message,
    });
    (status, JsonBody(body)).into_response()
}

/// A short name for why input was refused (`message` has the whole sentence).
fn reason_code(reason: &InputReason) -> &'static str {
    match reason {
        InputReason::Empty => "empty",
        InputReason::TooLong { .. } => "too_long",
        InputReason::TooMany { .. } => "too_many",
        InputReason::TooDeep { .. } => "too_deep",
        InputReason::Reserved => "reserved",
        _ => "invalid",
    }
}

/// 400 for refused input.
pub(crate) fn refused(e: &InputError) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        Some(&e.field),
        reason_code(&e.reason),
        &e.to_string(),
    )
}

/// The answer for a library error: 400 for refused input (and suppressed
/// identifiers), 500 for the rest.
pub(crate) fn library_error(e: &Error) -> Response {
    if let Some(input) = e.input() {
        return refused(input);
    }
    let inner = match e {
        Error::InBatch { source, .. } => source.as_ref(),
        other => other,
    };
    match inner {
        Error::Suppressed { kind, .. } => error(
            StatusCode::BAD_REQUEST,
            Some(kind.as_str()),
            "is suppressed",
            &e.to_string(),
        ),
        _ => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            None,
            "storage failure",
            &e.to_string(),
        ),
    }
}

/// 404 naming what is unknown.
pub(crate) fn unknown(what: &str) -> Response {
    error(StatusCode::NOT_FOUND, None, "not found", what)
}

/// The fallback: an unknown path.
pub(crate) async fn not_found(uri: axum::http::Uri) -> Response {
    unknown(&format!("no endpoint at {}", uri.path()))
}

/// 200 `{}`: Track's success body.
pub(crate) fn ok_empty() -> Response {
    (StatusCode::OK, JsonBody(json!({}))).into_response()
}

/// The answer for a request the writer did not take.
pub(crate) fn not_queued(r: Refused) -> Response {
    match r {
        Refused::Full => {
            let mut res = error(
                StatusCode::TOO_MANY_REQUESTS,
                None,
                "busy",
                "the write queue is full; retry after a second",
            );
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            res
        }
        Refused::Closed => error(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            "shutting down",
            "the server is shutting down; retry later",
        ),
    }
}

/// The body as JSON, or the answer that refuses it: 413 over the route's limit, 400
/// when it is not JSON. An empty body is `null`.
pub(crate) fn json_body(body: Result<Bytes, BytesRejection>) -> Result<Json, Response> {
    let bytes = body.map_err(|rejection| {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            error(
                status,
                Some("body"),
                "too large",
                &format!(
                    "body: is larger than this endpoint takes ({} bytes for one message, \
                     {} for a batch)",
                    super::MAX_MESSAGE_BYTES,
                    super::MAX_BATCH_BYTES
                ),
            )
        } else {
            error(
                status,
                Some("body"),
                "unreadable",
                &format!("body: {rejection}"),
            )
        }
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Json::Null);
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        refused(&InputError::invalid(
            "body",
            format!("is not valid JSON: {e}"),
        ))
    })
}

/// 413 when a batch item is over the per-message limit.
pub(crate) fn check_items(body: &Json) -> Result<(), Response> {
    let Some(items) = body.get("batch").and_then(Json::as_array) else {
        return Ok(());
    };
    for (i, item) in items.iter().enumerate() {
        let size = serde_json::to_vec(item).map_or(0, |v| v.len());
        if size > super::MAX_MESSAGE_BYTES {
            let field = format!("batch[{i}]");
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                Some(&field),
                "too large",
                &format!(
                    "{field}: is {size} bytes; one message may be at most {} bytes",
                    super::MAX_MESSAGE_BYTES
                ),
            ));
        }
    }
    Ok(())
}

/// The answer to a write of operations, after its commit.
pub(crate) fn ops_done(done: Result<Done, Refused>) -> Response {
    match done {
        Err(r) => not_queued(r),
        Ok(Done::Ops(Ok(_))) => ok_empty(),
        Ok(Done::Ops(Err(e)) | Done::Ingest(Err(e))) => library_error(&e),
        Ok(Done::FlushFailed(why)) => flush_failed(&why),
        Ok(Done::Ingest(Ok(report))) => report_answer(&report, StatusCode::MULTI_STATUS),
    }
}

fn flush_failed(why: &str) -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        None,
        "not durable",
        &format!("the write may not be durable: {why}"),
    )
}

/// The answer to an ingested message: 200 `{}` when everything applied; 400 with the
/// refusal when a single message (or a whole batch) was refused; `partial` (207 for
/// Track v2, 200 for Pipelines, whose clients retry anything but 200) listing the
/// refused batch items otherwise.
pub(crate) fn report_answer(report: &Report, partial: StatusCode) -> Response {
    match report.rejected.as_slice() {
        [] => ok_empty(),
        [only] if only.item.is_none() => library_error(&only.error),
        rejected => {
            let errors: Vec<Json> = rejected
                .iter()
                .map(|r| {
                    let input = r.error.input();
                    json!({
                        "batch_index": r.item,
                        "field": input.map(|i| i.field.clone()),
                        "reason": input.map(|i| reason_code(&i.reason)),
                        "message": r.error.to_string(),
                    })
                })
                .collect();
            (
                partial,
                JsonBody(json!({"applied": report.applied, "errors": errors})),
            )
                .into_response()
        }
    }
}

/// The answer to an ingest, after its commit.
pub(crate) fn ingest_done(done: Result<Done, Refused>, partial: StatusCode) -> Response {
    match done {
        Ok(Done::Ingest(Ok(report))) => report_answer(&report, partial),
        other => ops_done(other),
    }
}
