//! The read pages: each extracts its input, reads through the library, renders.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::auth::Reader;
use super::views::{self, ActivityQuery, Chrome, ConditionError, PeopleQuery};
use super::{blocking, html, PageError, WebState};
use crate::{ActivityCursor, ActivityFilter, Ident, ObjectRef, Person, PersonId, ProfileDb};

/// People per page of the list, a segment's members and an object's people.
const PAGE: usize = 50;
/// Activities and deliveries on the Overview.
const RECENT: usize = 10;
/// Activities per page of the Activity tab.
const ACTIVITY_PAGE: usize = 50;
/// Deliveries on the Deliveries tab.
const DELIVERIES: usize = 100;

/// The sentence shown after an action redirected here (`?done=`): fixed texts, so a
/// crafted link cannot put words on the page.
fn notice(done: Option<&str>) -> Option<&'static str> {
    Some(match done? {
        "attribute_set" => "The attribute was set.",
        "attribute_removed" => "The attribute was removed.",
        "segment_added" => "Added to the segment.",
        "segment_removed" => "Removed from the segment.",
        "deleted" => "The person was deleted.",
        "suppressed" => "The person was suppressed and deleted.",
        _ => return None,
    })
}

fn chrome<'a>(reader: &'a Reader, done: Option<&str>) -> Chrome<'a> {
    Chrome {
        csrf: &reader.csrf,
        can_log_out: reader.can_log_out,
        notice: notice(done),
    }
}

fn cursor(text: Option<&str>) -> Result<Option<PersonId>, PageError> {
    match text.filter(|t| !t.is_empty()) {
        None => Ok(None),
        Some(t) => PersonId::from_cio_id(t).map(Some).ok_or_else(|| {
            PageError::bad_request(format!(
                "after: `{t}` is not a cursor this page gave (the cio_id of the last person \
                 of the previous page)"
            ))
        }),
    }
}

fn unknown(who: &Ident) -> PageError {
    PageError::not_found(format!("No person has the {who}."))
}

/// The person `ident` names, or 404.
fn person_of(db: &ProfileDb, who: &Ident) -> Result<Person, PageError> {
    db.person(who)?.ok_or_else(|| unknown(who))
}

#[derive(Deserialize, Default)]
pub(crate) struct PeopleParams {
    #[serde(default)]
    search: String,
    #[serde(default, rename = "where")]
    condition: String,
    after: Option<String>,
    done: Option<String>,
}

/// `/`: the People list.
pub(crate) async fn people(
    State(state): State<WebState>,
    reader: Reader,
    Query(q): Query<PeopleParams>,
) -> Result<Response, PageError> {
    let after = cursor(q.after.as_deref())?;
    let db = state.db.clone();
    blocking(move || {
        let search = q.search.trim();
        let condition = q.condition.trim();
        let view = PeopleQuery {
            search,
            condition,
            after: after.is_some(),
        };
        let chrome = chrome(&reader, q.done.as_deref());
        let found = db.people_page(
            Some(search).filter(|s| !s.is_empty()),
            Some(condition).filter(|c| !c.is_empty()),
            PAGE,
            after,
        );
        match found {
            Ok(audience) => {
                let mut rows = Vec::with_capacity(audience.people.len());
                for s in &audience.people {
                    rows.push((s.pid, db.person(&Ident::cio_id(s.cio_id.clone()))?));
                }
                let rows = (audience, rows);
                Ok(html(
                    StatusCode::OK,
                    views::people_page(&chrome, &view, Ok(&rows)),
                ))
            }
            Err(e) if e.input().is_some() => {
                // The parser's position, to mark the spot in the box (filter JSON has none).
                let at = (!condition.starts_with('{'))
                    .then(|| crate::query::parse(condition).err())
                    .flatten();
                let err = ConditionError {
                    message: e.to_string(),
                    position: at.as_ref().map(|p| p.position),
                    token: at.and_then(|p| {
                        p.found
                            .strip_prefix('"')?
                            .strip_suffix('"')
                            .map(str::to_owned)
                    }),
                };
                Ok(html(
                    StatusCode::BAD_REQUEST,
                    views::people_page(&chrome, &view, Err(&err)),
                ))
            }
            Err(e) => Err(e.into()),
        }
    })
    .await
}

/// A page about one existing person: reads them (404 if nobody), then `render`s with
/// the database, the identifier and the person, off the async workers.
async fn person_page(
    state: &WebState,
    ident: String,
    render: impl FnOnce(&ProfileDb, &Ident, Person) -> Result<Response, PageError> + Send + 'static,
) -> Result<Response, PageError> {
    let db = state.db.clone();
    blocking(move || {
        let who = Ident::infer(&ident);
        let person = person_of(&db, &who)?;
        render(&db, &who, person)
    })
    .await
}

#[derive(Deserialize, Default)]
pub(crate) struct Done {
    done: Option<String>,
}

/// `/people/{ident}`: the Overview.
pub(crate) async fn overview(
    State(state): State<WebState>,
    Path(ident): Path<String>,
    reader: Reader,
    Query(q): Query<Done>,
) -> Result<Response, PageError> {
    let db = state.db.clone();
    blocking(move || {
        let who = Ident::infer(&ident);
        let profile = db.profile(&who, RECENT)?.ok_or_else(|| unknown(&who))?;
        let manual: Vec<_> = db
            .segments()
            .into_iter()
            .filter(|s| s.condition.is_none())
            .collect();
        Ok(html(
            StatusCode::OK,
            views::overview(&chrome(&reader, q.done.as_deref()), &profile, &manual),
        ))
    })
    .await
}

/// `/people/{ident}/attributes`.
pub(crate) async fn attributes(
    State(state): State<WebState>,
    Path(ident): Path<String>,
    reader: Reader,
    Query(q): Query<Done>,
) -> Result<Response, PageError> {
    person_page(&state, ident, move |db, who, person| {
        let missing = db.missing_attributes(who)?;
        Ok(html(
            StatusCode::OK,
            views::attributes(
                &chrome(&reader, q.done.as_deref()),
                &person,
                person.unsubscribed(),
                &missing,
            ),
        ))
    })
    .await
}

#[derive(Deserialize, Default)]
pub(crate) struct ActivityParams {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    before: String,
}

/// A time from the Activity filter: unix seconds, or `YYYY-MM-DDTHH:MM[:SS]` (what a
/// `datetime-local` box sends), read as UTC.
fn parse_time(field: &str, text: &str) -> Result<Option<i64>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    if let Ok(n) = text.parse::<i64>() {
        return Ok(Some(n));
    }
    let long = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    let short = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]");
    time::PrimitiveDateTime::parse(text, long)
        .or_else(|_| time::PrimitiveDateTime::parse(text, short))
        .map(|t| Some(t.assume_utc().unix_timestamp()))
        .map_err(|_| {
            format!("{field}: `{text}` is not a time (YYYY-MM-DDTHH:MM in UTC, or unix seconds)")
        })
}

fn activity_filter(q: &ActivityParams) -> Result<ActivityFilter, String> {
    let mut filter = ActivityFilter::new(ACTIVITY_PAGE + 1);
    if !q.kind.trim().is_empty() {
        filter = filter.kind(q.kind.trim());
    }
    if !q.name.trim().is_empty() {
        filter = filter.name(q.name.trim());
    }
    filter.since = parse_time("since", &q.since)?;
    filter.until = parse_time("until", &q.until)?;
    if !q.before.is_empty() {
        filter.before = Some(
            q.before
                .parse::<ActivityCursor>()
                .map_err(|e| e.to_string())?,
        );
    }
    Ok(filter)
}

/// `/people/{ident}/activity`: the whole timeline, filtered and paged.
pub(crate) async fn activity(
    State(state): State<WebState>,
    Path(ident): Path<String>,
    reader: Reader,
    Query(q): Query<ActivityParams>,
) -> Result<Response, PageError> {
    person_page(&state, ident, move |db, who, person| {
        let view = ActivityQuery {
            kind: q.kind.clone(),
            name: q.name.clone(),
            since: q.since.clone(),
            until: q.until.clone(),
        };
        let chrome = chrome(&reader, None);
        let (status, markup) = match activity_filter(&q) {
            Err(message) => (
                StatusCode::BAD_REQUEST,
                views::activity(&chrome, &person, person.unsubscribed(), &view, Err(message)),
            ),
            Ok(filter) => {
                let mut list = db.activities(who, &filter)?;
                let next = if list.len() > ACTIVITY_PAGE {
                    list.truncate(ACTIVITY_PAGE);
                    list.last().map(|a| a.cursor.to_string())
                } else {
                    None
                };
                (
                    StatusCode::OK,
                    views::activity(
                        &chrome,
                        &person,
                        person.unsubscribed(),
                        &view,
                        Ok((&list, next)),
                    ),
                )
            }
        };
        Ok(html(status, markup))
    })
    .await
}

/// `/people/{ident}/deliveries`.
pub(crate) async fn deliveries(
    State(state): State<WebState>,
    Path(ident): Path<String>,
    reader: Reader,
) -> Result<Response, PageError> {
    person_page(&state, ident, move |db, who, person| {
        let list = db.deliveries(who, DELIVERIES)?;
        Ok(html(
            StatusCode::OK,
            views::deliveries(
                &chrome(&reader, None),
                &person,
                person.unsubscribed(),
                &list,
            ),
        ))
    })
    .await
}

/// `/people/{ident}/devices`.
pub(crate) async fn devices(
    State(state): State<WebState>,
    Path(ident): Path<String>,
    reader: Reader,
) -> Result<Response, PageError> {
    person_page(&state, ident, move |db, who, person| {
        let list = db.devices(who)?;
        Ok(html(
            StatusCode::OK,
            views::devices(
                &chrome(&reader, None),
                &person,
                person.unsubscribed(),
                &list,
            ),
        ))
    })
    .await
}

/// `/people/{ident}/confirm/{suppress|delete}`: the confirmation before the action.
pub(crate) async fn confirm(
    State(state): State<WebState>,
    Path((ident, action)): Path<(String, String)>,
    reader: Reader,
) -> Result<Response, PageError> {
    if action != "suppress" && action != "delete" {
        return Err(PageError::not_found(format!(
            "There is no action `{action}` to confirm (suppress or delete)."
        )));
    }
    person_page(&state, ident, move |_, _, person| {
        Ok(html(
            StatusCode::OK,
            views::confirm(&chrome(&reader, None), &person, &action),
        ))
    })
    .await
}

/// `/segments`.
pub(crate) async fn segments(
    State(state): State<WebState>,
    reader: Reader,
) -> Result<Response, PageError> {
    let db = state.db.clone();
    blocking(move || {
        Ok(html(
            StatusCode::OK,
            views::segments(&chrome(&reader, None), &db.segments()),
        ))
    })
    .await
}

#[derive(Deserialize, Default)]
pub(crate) struct After {
    after: Option<String>,
}

/// `/segments/{id}`: the segment and a page of its members.
pub(crate) async fn segment(
    State(state): State<WebState>,
    Path(id): Path<String>,
    reader: Reader,
    Query(q): Query<After>,
) -> Result<Response, PageError> {
    let id: u32 = id.parse().map_err(|_| {
        PageError::not_found(format!("`{id}` is not a segment id (a whole number)."))
    })?;
    let after = cursor(q.after.as_deref())?;
    let db = state.db.clone();
    blocking(move || {
        let segment = db
            .segments()
            .into_iter()
            .find(|s| s.id == id)
            .ok_or_else(|| PageError::not_found(format!("There is no segment #{id}.")))?;
        let members = db.query(&format!("segment:#{id}"), PAGE, after)?;
        Ok(html(
            StatusCode::OK,
            views::segment(&chrome(&reader, None), &segment, &members),
        ))
    })
    .await
}

/// How many related people an object's page lists.
const OBJECT_PEOPLE: usize = 100;

/// `/objects/{type_id}/{object_id}`.
pub(crate) async fn object(
    State(state): State<WebState>,
    Path((type_id, object_id)): Path<(String, String)>,
    reader: Reader,
) -> Result<Response, PageError> {
    let type_id: u32 = type_id.parse().map_err(|_| {
        PageError::not_found(format!(
            "`{type_id}` is not an object type id (a whole number)."
        ))
    })?;
    let db = state.db.clone();
    blocking(move || {
        let which = ObjectRef::new(type_id, object_id);
        let found = db.object(&which)?;
        let related = db.object_people(&which)?;
        if found.is_none() && related.is_empty() {
            return Err(PageError::not_found(format!("There is no object {which}.")));
        }
        let type_name = db
            .object_types()?
            .into_iter()
            .find(|(id, _)| *id == type_id)
            .map(|(_, name)| name);
        let total = related.len();
        let mut people = Vec::new();
        for (pid, attrs) in related.into_iter().take(OBJECT_PEOPLE) {
            people.push((pid, db.person(&Ident::cio_id(pid.cio_id()))?, attrs));
        }
        Ok(html(
            StatusCode::OK,
            views::object(
                &chrome(&reader, None),
                type_name.as_deref(),
                &which,
                found.as_ref(),
                &people,
                total,
            ),
        ))
    })
    .await
}
