//! The People page: the people list, each person's profile and its tabs, segments and
//! objects, rendered on the server as HTML, with the actions a workspace owner takes
//! (manual segment membership, set or remove an attribute, suppress, delete).
//!
//! A shell over the library: each handler extracts its input, makes one library call (or
//! a few reads), and renders. Everything from the database goes through maud, which
//! escapes it; the pages send a Content-Security-Policy that allows only this origin's
//! own script and style, so even a value that slipped through could not run.
//!
//! Access (see [`auth`]): with an App API key set, every page needs a session (made by
//! logging in with the key on `/login`) or the key as `Authorization: Bearer`; without
//! one (the server's `--no-auth`, loopback only) every page opens. Every action is a POST
//! that carries a CSRF token bound to the session, unless it authenticates with the
//! header, which a browser never sends across sites.
//!
//! Routes (none under the server's `/api/`, `/v1/`, `/healthz`, `/metrics`):
//! `/`, `/people/{ident}` and its tabs `/attributes`, `/activity`, `/deliveries`,
//! `/devices`, the actions under `/people/{ident}/…` (POST), the confirmations
//! `/people/{ident}/confirm/{suppress|delete}`, `/segments`, `/segments/{id}`,
//! `/objects/{type_id}/{object_id}`, `/login`, `/logout`, `/static/…`.

mod actions;
pub mod auth;
mod pages;
mod views;

use std::sync::Arc;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::{Error, ProfileDb};

/// What the People page needs: the database, the App API key, and the secret its session
/// and CSRF tokens are signed with.
#[derive(Clone)]
pub struct WebState {
    /// The database the page reads and writes.
    pub db: Arc<ProfileDb>,
    /// The App API key that opens the page; `None` when the server runs with
    /// `--no-auth`, where every page and action opens without one.
    pub app_key: Option<String>,
    /// Signs session cookies and CSRF tokens; random per process, so a restart ends
    /// every session.
    secret: Arc<[u8; 32]>,
}

impl WebState {
    /// The page over `db`, opened by `app_key` (`None`: no key, as with `--no-auth`),
    /// with a fresh random signing secret.
    ///
    /// # Errors
    /// When the operating system cannot supply random bytes for the secret.
    pub fn new(db: Arc<ProfileDb>, app_key: Option<String>) -> std::io::Result<WebState> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(WebState {
            db,
            app_key,
            secret: Arc::new(secret),
        })
    }
}

/// The People page's routes, for the server to merge into its router. The state is
/// applied and there is no fallback, so it merges into a router that has one.
pub fn router(state: WebState) -> Router {
    Router::new()
        .route("/", get(pages::people))
        .route("/people/{ident}", get(pages::overview))
        .route("/people/{ident}/attributes", get(pages::attributes))
        .route("/people/{ident}/activity", get(pages::activity))
        .route("/people/{ident}/deliveries", get(pages::deliveries))
        .route("/people/{ident}/devices", get(pages::devices))
        .route("/people/{ident}/confirm/{action}", get(pages::confirm))
        .route(
            "/people/{ident}/attributes/set",
            post(actions::set_attribute),
        )
        .route(
            "/people/{ident}/attributes/remove",
            post(actions::remove_attribute),
        )
        .route("/people/{ident}/segments/{op}", post(actions::membership))
        // `suppress` or `delete`; the tabs' own paths (GET) are matched first.
        .route("/people/{ident}/{action}", post(actions::destroy))
        .route("/segments", get(pages::segments))
        .route("/segments/{id}", get(pages::segment))
        .route("/objects/{type_id}/{object_id}", get(pages::object))
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/static/app.css", get(css))
        .route("/static/app.js", get(js))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::session_layer,
        ))
        .with_state(state)
}

/// A page that could not be shown: the status and the sentence that says why (the
/// library's own text for a refusal).
#[derive(Debug)]
pub(crate) struct PageError {
    status: StatusCode,
    message: String,
}

impl PageError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> PageError {
        PageError {
            status,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> PageError {
        PageError::new(StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> PageError {
        PageError::new(StatusCode::NOT_FOUND, message)
    }
}

impl From<Error> for PageError {
    fn from(e: Error) -> PageError {
        let status = match &e {
            Error::Input(_) | Error::InBatch { .. } => StatusCode::BAD_REQUEST,
            Error::Suppressed { .. } => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        PageError::new(status, e.to_string())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let title = self.status.canonical_reason().unwrap_or("Error").to_owned();
        html(self.status, views::error_page(&title, &self.message))
    }
}

/// A rendered page with its status.
pub(crate) fn html(status: StatusCode, markup: maud::Markup) -> Response {
    (status, axum::response::Html(markup.into_string())).into_response()
}

/// Runs the blocking library work of a request off the async workers, so a long read or
/// an fsync never stalls the server's other connections.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, PageError> + Send + 'static,
) -> Result<T, PageError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        PageError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the request's work failed: {e}"),
        )
    })?
}

const CSS: &str = include_str!("static/app.css");
const JS: &str = include_str!("static/app.js");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            ),
        ],
        body,
    )
        .into_response()
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

async fn js() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}
