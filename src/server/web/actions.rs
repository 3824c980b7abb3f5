//! The actions: each checks the CSRF token, makes one library write, and redirects
//! (303) to the page that shows its effect, or answers the library's refusal.
//!
//! Each write is made durable ([`ProfileDb::flush`](crate::ProfileDb::flush)) before
//! the answer, as the server's 2xx promises, whatever durability the database was opened
//! with (the server opens it buffered and flushes per group of API writes).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;

use super::auth::Writer;
use super::views::person_url;
use super::{blocking, PageError, WebState};
use crate::{Ident, Identify, Outcome, Value};

/// The person `ident` (read as the CLI reads it) names, or a 404 page.
fn existing(db: &crate::ProfileDb, ident: &str) -> Result<(Ident, crate::Person), PageError> {
    let who = Ident::infer(ident);
    match db.person(&who)? {
        Some(person) => Ok((who, person)),
        None => Err(PageError::not_found(format!("No person has the {who}."))),
    }
}

fn back(to: String) -> Response {
    Redirect::to(&to).into_response()
}

/// What an identify from this page did, as a redirect target or the reason it did not.
fn identified(who: &Ident, outcome: Outcome, done: &str) -> Result<Response, PageError> {
    match outcome {
        Outcome::Refused { reason, .. } => Err(PageError::new(StatusCode::CONFLICT, reason)),
        Outcome::Ignored(_) | Outcome::NotFound => {
            Err(PageError::not_found(format!("No person has the {who}.")))
        }
        other => match other.person() {
            Some(pid) => Ok(back(format!("{}/attributes?done={done}", person_url(pid)))),
            None => Err(PageError::not_found(format!("No person has the {who}."))),
        },
    }
}

#[derive(Deserialize)]
pub(crate) struct SetForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    value: String,
    /// `text` (the default) or `json`.
    #[serde(default, rename = "as")]
    as_: String,
}

/// Sets one attribute of an existing person (never creates one).
pub(crate) async fn set_attribute(
    State(state): State<WebState>,
    Path(ident): Path<String>,
    writer: Writer,
    Form(form): Form<SetForm>,
) -> Result<Response, PageError> {
    writer.check(&state, &form.csrf)?;
    let value = if form.as_ == "json" {
        let json: serde_json::Value = serde_json::from_str(&form.value)
            .map_err(|e| PageError::bad_request(format!("value: is not valid JSON ({e})")))?;
        Value::from_json(&json, "value").map_err(|e| PageError::bad_request(e.to_string()))?
    } else {
        Value::String(form.value)
    };
    let db = state.db.clone();
    blocking(move || {
        let who = Ident::infer(&ident);
        let outcome = db.identify(
            Identify::new(who.clone())
                .update_only(true)
                .set(form.name, value),
        )?;
        db.flush()?;
        identified(&who, outcome, "attribute_set")
    })
    .await
}

#[derive(Deserialize)]
pub(crate) struct NameForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
}

/// Removes one attribute.
pub(crate) async fn remove_attribute(
    State(state): State<WebState>,
    Path(ident): Path<String>,
    writer: Writer,
    Form(form): Form<NameForm>,
) -> Result<Response, PageError> {
    writer.check(&state, &form.csrf)?;
    let db = state.db.clone();
    blocking(move || {
        let who = Ident::infer(&ident);
        let outcome = db.identify(
            Identify::new(who.clone())
                .update_only(true)
                .remove(form.name),
        )?;
        db.flush()?;
        identified(&who, outcome, "attribute_removed")
    })
    .await
}

#[derive(Deserialize)]
pub(crate) struct SegmentForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    segment: String,
}

/// `POST /people/{ident}/segments/{add|remove}`: manual segment membership.
pub(crate) async fn membership(
    State(state): State<WebState>,
    Path((ident, op)): Path<(String, String)>,
    writer: Writer,
    Form(form): Form<SegmentForm>,
) -> Result<Response, PageError> {
    let add = match op.as_str() {
        "add" => true,
        "remove" => false,
        _ => {
            return Err(PageError::not_found(format!(
                "There is no segment action `{op}` (add or remove)."
            )))
        }
    };
    writer.check(&state, &form.csrf)?;
    let id: u32 = form.segment.trim().parse().map_err(|_| {
        PageError::bad_request(format!(
            "segment: `{}` is not a segment id (a whole number)",
            form.segment
        ))
    })?;
    let db = state.db.clone();
    blocking(move || {
        let (who, person) = existing(&db, &ident)?;
        let people = [who];
        let done = if add {
            db.add_to_segment(id, &people)?;
            "segment_added"
        } else {
            db.remove_from_segment(id, &people)?;
            "segment_removed"
        };
        db.flush()?;
        Ok(back(format!("{}?done={done}", person_url(person.pid))))
    })
    .await
}

#[derive(Deserialize)]
pub(crate) struct ConfirmForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    confirm: String,
}

/// `POST /people/{ident}/{suppress|delete}`, from its confirmation page: suppress
/// (delete and block the identifiers) or delete the person.
pub(crate) async fn destroy(
    State(state): State<WebState>,
    Path((ident, action)): Path<(String, String)>,
    writer: Writer,
    Form(form): Form<ConfirmForm>,
) -> Result<Response, PageError> {
    let suppress = match action.as_str() {
        "suppress" => true,
        "delete" => false,
        _ => return Err(PageError::not_found("There is no page at this address.")),
    };
    writer.check(&state, &form.csrf)?;
    if form.confirm != "yes" {
        return Err(PageError::bad_request(
            "confirm: must be `yes` (use the confirmation page's button); nothing was done",
        ));
    }
    let db = state.db.clone();
    blocking(move || {
        // Suppressing an identifier nobody has would still block it: only act on a person.
        let (who, _) = existing(&db, &ident)?;
        let outcome = if suppress {
            db.suppress(&who)?
        } else {
            db.delete(&who)?
        };
        db.flush()?;
        match outcome {
            Outcome::Deleted(_) => Ok(back("/?done=deleted".to_owned())),
            Outcome::Suppressed {
                person: Some(_), ..
            } => Ok(back("/?done=suppressed".to_owned())),
            _ => Err(PageError::not_found(format!("No person has the {who}."))),
        }
    })
    .await
}
