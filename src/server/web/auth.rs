//! Who may open the People page and act on it: sessions, the App API key, CSRF tokens.
//!
//! - A **session** is a cookie `pdb_session=NONCE.EXPIRY.MAC`, the MAC an HMAC-SHA256 of
//!   the nonce and expiry under the process's secret: nothing is stored on the server,
//!   a forged or altered cookie fails the MAC, and a restart (a new secret) ends every
//!   session. With a key set, only logging in with the key on `/login` makes one; with
//!   no key (`--no-auth`) the first page view makes one, so forms have a token to carry.
//!   The cookie is `HttpOnly` and `SameSite=Strict`.
//! - The **App API key** also opens any page or action as `Authorization: Bearer KEY`,
//!   as the App API takes it. Keys are compared through their HMACs, in constant time.
//! - The **CSRF token** of a session is the HMAC of its nonce: every form carries it and
//!   every action checks it, so another site cannot make a logged-in browser act (it can
//!   neither read the token nor compute it). A request authenticated by the header needs
//!   no token: a browser never attaches that header to a cross-site request. A request
//!   whose `Origin` is another site is refused too.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::{views, PageError, WebState};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "pdb_session";
/// The form field that carries the CSRF token.
pub const CSRF_FIELD: &str = "csrf";
/// How long a session lasts, seconds.
const SESSION_SECONDS: u64 = 12 * 3600;

/// What the request may do, as the session layer found it.
#[derive(Clone, Debug)]
pub(crate) struct Access {
    /// The session's nonce, when it carries a valid session cookie (or was just given one).
    nonce: Option<String>,
    /// Whether it may read and act: no key is set, or it has a session or the key.
    authenticated: bool,
    /// Whether it authenticated with `Authorization: Bearer`.
    via_header: bool,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn mac(state: &WebState, parts: &[&[u8]]) -> String {
    // An HMAC accepts a key of any length, so this never fails; an empty MAC could
    // never match a real one should it ever.
    let Ok(mut m) = Hmac::<Sha256>::new_from_slice(state.secret.as_slice()) else {
        return String::new();
    };
    for p in parts {
        m.update(&(p.len() as u64).to_be_bytes());
        m.update(p);
    }
    hex(&m.finalize().into_bytes())
}

fn same(a: &str, b: &str) -> bool {
    !a.is_empty() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The CSRF token of the session whose nonce is `nonce`.
pub(crate) fn csrf_token(state: &WebState, nonce: &str) -> String {
    mac(state, &[b"csrf", nonce.as_bytes()])
}

fn session_cookie(state: &WebState) -> (String, String) {
    let mut raw = [0u8; 16];
    // Without randomness every session would share a nonce; refuse to make one then.
    let nonce = match getrandom::fill(&mut raw) {
        Ok(()) => hex(&raw),
        Err(_) => String::new(),
    };
    let expiry = (now() + SESSION_SECONDS).to_string();
    let sig = mac(state, &[b"session", nonce.as_bytes(), expiry.as_bytes()]);
    let value = format!(
        "{SESSION_COOKIE}={nonce}.{expiry}.{sig}; Path=/; HttpOnly; SameSite=Strict; Max-Age={SESSION_SECONDS}"
    );
    (nonce, value)
}

/// The nonce of the valid session cookie in `headers`, if there is one.
fn valid_session(state: &WebState, headers: &HeaderMap) -> Option<String> {
    let cookies = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok());
    for line in cookies {
        for pair in line.split(';') {
            let Some((name, value)) = pair.trim().split_once('=') else {
                continue;
            };
            if name != SESSION_COOKIE {
                continue;
            }
            let mut fields = value.split('.');
            let (Some(nonce), Some(expiry), Some(sig), None) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            let expected = mac(state, &[b"session", nonce.as_bytes(), expiry.as_bytes()]);
            let fresh = expiry.parse::<u64>().is_ok_and(|t| t > now());
            if same(sig, &expected) && fresh && !nonce.is_empty() {
                return Some(nonce.to_owned());
            }
        }
    }
    None
}

/// Whether `given` is the App API key.
fn is_key(state: &WebState, given: &str) -> bool {
    match &state.app_key {
        Some(key) => same(
            &mac(state, &[b"key", given.as_bytes()]),
            &mac(state, &[b"key", key.as_bytes()]),
        ),
        None => false,
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

/// Finds what each request may do, gives a session to a visitor when no key is set, and
/// adds the security headers every page carries.
pub(crate) async fn session_layer(
    State(state): State<WebState>,
    mut request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let mut nonce = valid_session(&state, headers);
    let via_header = bearer(headers).is_some_and(|k| is_key(&state, k));
    let mut set_cookie = None;
    if state.app_key.is_none() && nonce.is_none() {
        let (n, cookie) = session_cookie(&state);
        if !n.is_empty() {
            nonce = Some(n);
            set_cookie = Some(cookie);
        }
    }
    let authenticated = state.app_key.is_none() || via_header || nonce.is_some();
    request.extensions_mut().insert(Access {
        nonce,
        authenticated,
        via_header,
    });
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    if let Some(cookie) = set_cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        h.append(header::SET_COOKIE, cookie);
    }
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Profiles are personal data: no shared or back-button cache keeps them (the static
    // files say otherwise for themselves).
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

fn access(parts: &Parts) -> Access {
    parts.extensions.get::<Access>().cloned().unwrap_or(Access {
        nonce: None,
        authenticated: false,
        via_header: false,
    })
}

/// A request that may read the page; `csrf` is the token its forms carry.
pub(crate) struct Reader {
    pub(crate) csrf: String,
    /// Whether it has a session it can end (a key is set and it logged in).
    pub(crate) can_log_out: bool,
}

impl FromRequestParts<WebState> for Reader {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &WebState) -> Result<Reader, Response> {
        let a = access(parts);
        if !a.authenticated {
            let next = parts
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned();
            let to = format!("/login?next={}", super::views::encode(&next));
            return Err(Redirect::to(&to).into_response());
        }
        Ok(Reader {
            can_log_out: state.app_key.is_some() && a.nonce.is_some(),
            csrf: a
                .nonce
                .as_deref()
                .map(|n| csrf_token(state, n))
                .unwrap_or_default(),
        })
    }
}

/// A request that may act: authenticated, and (unless by the header) from this site,
/// with its session's CSRF token checked by [`Writer::check`].
pub(crate) struct Writer {
    access: Access,
}

impl FromRequestParts<WebState> for Writer {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, _state: &WebState) -> Result<Writer, PageError> {
        let a = access(parts);
        if !a.authenticated {
            return Err(PageError::new(
                StatusCode::UNAUTHORIZED,
                "This action needs the App API key: log in at /login, or send the key as \
                 Authorization: Bearer.",
            ));
        }
        if !a.via_header && !same_origin(&parts.headers) {
            return Err(PageError::new(
                StatusCode::FORBIDDEN,
                "This action came from another site (its Origin is not this server's); \
                 nothing was done.",
            ));
        }
        Ok(Writer { access: a })
    }
}

impl Writer {
    /// Checks the form's CSRF token against the session (not needed with the header).
    pub(crate) fn check(&self, state: &WebState, token: &str) -> Result<(), PageError> {
        if self.access.via_header {
            return Ok(());
        }
        match &self.access.nonce {
            Some(n) if same(token, &csrf_token(state, n)) => Ok(()),
            _ => Err(PageError::new(
                StatusCode::FORBIDDEN,
                "The form's CSRF token is missing or does not belong to this session; \
                 nothing was done. Reload the page and try again.",
            )),
        }
    }
}

/// Whether the request's `Origin`, when it has one, is this server (its `Host`).
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or("");
    !host.is_empty() && origin_host == host
}

/// Where to go after logging in: a path on this site, never another site.
fn local_path(next: Option<&str>) -> String {
    match next {
        Some(p) if p.starts_with('/') && !p.starts_with("//") && !p.contains('\\') => p.to_owned(),
        _ => "/".to_owned(),
    }
}

/// `/login`'s query and form.
#[derive(Deserialize)]
pub(crate) struct LoginForm {
    #[serde(default)]
    key: String,
    next: Option<String>,
}

/// `/login`'s query.
#[derive(Deserialize)]
pub(crate) struct LoginQuery {
    next: Option<String>,
}

/// The login page (with no key set, there is nothing to log in to: go home).
pub(crate) async fn login_page(
    State(state): State<WebState>,
    Query(q): Query<LoginQuery>,
) -> Response {
    let next = local_path(q.next.as_deref());
    if state.app_key.is_none() {
        return Redirect::to(&next).into_response();
    }
    super::html(StatusCode::OK, views::login_page(&next, None))
}

/// Logs in with the App API key: a session cookie, then the page asked for.
pub(crate) async fn login(
    State(state): State<WebState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = local_path(form.next.as_deref());
    if state.app_key.is_none() {
        return Redirect::to(&next).into_response();
    }
    if !same_origin(&headers) {
        return PageError::new(
            StatusCode::FORBIDDEN,
            "This login came from another site; nothing was done.",
        )
        .into_response();
    }
    if !is_key(&state, &form.key) {
        return super::html(
            StatusCode::UNAUTHORIZED,
            views::login_page(&next, Some("That is not this server's App API key.")),
        );
    }
    let (nonce, cookie) = session_cookie(&state);
    if nonce.is_empty() {
        return PageError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The system gave no random bytes for a session; try again.",
        )
        .into_response();
    }
    let mut response = Redirect::to(&next).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

/// The logout form.
#[derive(Deserialize)]
pub(crate) struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

/// Ends the session.
pub(crate) async fn logout(
    State(state): State<WebState>,
    writer: Writer,
    Form(form): Form<LogoutForm>,
) -> Result<Response, PageError> {
    writer.check(&state, &form.csrf)?;
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_static("pdb_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    Ok(response)
}
