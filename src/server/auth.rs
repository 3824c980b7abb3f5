//! Authentication as Customer.io's APIs do it, one middleware per API family. A request
//! without the right key is answered 401 before its handler runs, so it writes nothing.
//! Keys are compared in constant time and never logged or echoed.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{reply, AppState};

fn eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `user:password` from a Basic `Authorization` header. The Go client encodes with the
/// URL-safe alphabet, so both alphabets are read.
fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let rest = rest.trim();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(rest))
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_owned(), pass.to_owned()))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(rest.trim())
}

fn unauthorized(what: &str) -> Response {
    let mut res = reply::error(StatusCode::UNAUTHORIZED, None, "unauthorized", what);
    res.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static("Basic realm=\"profiledb\""),
    );
    res
}

fn track_ok(state: &AppState, headers: &HeaderMap) -> bool {
    let (Some(site), Some(key)) = (&state.keys.site_id, &state.keys.api_key) else {
        return false;
    };
    basic(headers)
        .is_some_and(|(u, p)| eq(u.as_bytes(), site.as_bytes()) & eq(p.as_bytes(), key.as_bytes()))
}

/// Track API: Basic `site_id:api_key`.
pub(crate) async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if state.no_auth || track_ok(&state, req.headers()) {
        return next.run(req).await;
    }
    unauthorized("the Track API needs Basic auth with this server's site id and API key")
}

/// Data Pipelines: Basic `write_key:` (the password is empty).
pub(crate) async fn pipelines(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let ok = state.no_auth
        || state.keys.write_key.as_ref().is_some_and(|k| {
            basic(req.headers()).is_some_and(|(u, _)| eq(u.as_bytes(), k.as_bytes()))
        });
    if ok {
        return next.run(req).await;
    }
    unauthorized("the Pipelines API needs Basic auth with this server's write key")
}

/// App API: `Bearer app_key`.
pub(crate) async fn app(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let ok =
        state.no_auth
            || state.keys.app_key.as_ref().is_some_and(|k| {
                bearer(req.headers()).is_some_and(|t| eq(t.as_bytes(), k.as_bytes()))
            });
    if ok {
        return next.run(req).await;
    }
    unauthorized("the App API needs a Bearer token: this server's App API key")
}

/// Reporting webhooks: Customer.io's `X-CIO-Signature` (hex HMAC-SHA256 of
/// `v0:<X-CIO-Timestamp>:<body>` under the webhook signing key), or Track's Basic auth
/// for a relay that forwards them.
pub(crate) async fn webhook(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if state.no_auth || track_ok(&state, req.headers()) {
        return next.run(req).await;
    }
    let Some(key) = state.keys.webhook_key.clone() else {
        return unauthorized(
            "reporting webhooks need a signature (--webhook-key) or Track's Basic auth",
        );
    };
    let signature = req
        .headers()
        .get("x-cio-signature")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let timestamp = req
        .headers()
        .get("x-cio-timestamp")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (Some(signature), Some(timestamp)) = (signature, timestamp) else {
        return unauthorized("reporting webhooks need X-CIO-Signature and X-CIO-Timestamp");
    };
    // The signature covers the body, so it is read here (within the route's limit)
    // and handed on.
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, super::MAX_MESSAGE_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return reply::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                Some("body"),
                "too large",
                "body: is larger than one message may be",
            )
        }
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key.as_bytes()) else {
        return unauthorized("the webhook signing key is unusable");
    };
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(&bytes);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if !eq(
        expected.as_bytes(),
        signature.trim().to_ascii_lowercase().as_bytes(),
    ) {
        return unauthorized("X-CIO-Signature does not match the body");
    }
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code")]
mod tests {
    use super::*;

    #[test]
    fn basic_reads_both_alphabets() {
        let mut h = HeaderMap::new();
        // "site?>:k" has a `?>` that encodes differently in the URL-safe alphabet.
        let url = base64::engine::general_purpose::URL_SAFE.encode("s?>:k~~");
        h.insert(
            header::AUTHORIZATION,
            format!("Basic {url}").parse().unwrap(),
        );
        assert_eq!(basic(&h), Some(("s?>".into(), "k~~".into())));
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(basic(&h), None);
        assert_eq!(bearer(&h), Some("abc"));
    }
}
