//! `profiledb serve` over real HTTP on loopback: every API family, auth, limits, gzip,
//! batches with refused items, 404s, and that the App API answers what the library
//! holds.
#![cfg(feature = "server")]
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a failed test"
)]

mod server_common;

use std::io::Write as _;

use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{json, Value as Json};
use server_common::*;

use profiledb::server::{Config, Keys, ServeError, Server};
use profiledb::{Channel, Ident, NewDelivery, ProfileDb};

fn body(res: reqwest::blocking::Response) -> (u16, Json) {
    let status = res.status().as_u16();
    let text = res.text().unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Json::String(text)),
    )
}

fn app_get(s: &TestServer, path: &str) -> (u16, Json) {
    body(
        client()
            .get(s.url(path))
            .bearer_auth(APP_KEY)
            .send()
            .unwrap(),
    )
}

/// Sends `b` with Basic auth `user:pass`.
fn send(s: &TestServer, method: Method, path: &str, auth: (&str, &str), b: Json) -> (u16, Json) {
    let req = client().request(method, s.url(path));
    body(
        req.basic_auth(auth.0, Some(auth.1))
            .json(&b)
            .send()
            .unwrap(),
    )
}

fn put(s: &TestServer, path: &str, b: Json) -> (u16, Json) {
    send(s, Method::PUT, path, (SITE, API_KEY), b)
}

fn post(s: &TestServer, path: &str, b: Json) -> (u16, Json) {
    send(s, Method::POST, path, (SITE, API_KEY), b)
}

fn pipe(s: &TestServer, path: &str, b: Json) -> (u16, Json) {
    send(s, Method::POST, path, (WRITE_KEY, ""), b)
}

#[test]
fn wrong_or_missing_keys_get_401_and_write_nothing() {
    let s = TestServer::start();
    let c = client();
    let id = json!({"plan": "pro"});
    let tries = [
        c.put(s.url("/api/v1/customers/u-1")).json(&id),
        c.put(s.url("/api/v1/customers/u-1"))
            .basic_auth(SITE, Some("wrong"))
            .json(&id),
        c.put(s.url("/api/v1/customers/u-1"))
            .basic_auth(WRITE_KEY, Some(""))
            .json(&id),
        c.post(s.url("/api/v2/entity"))
            .bearer_auth(APP_KEY)
            .json(&json!({"type": "person", "action": "identify", "identifiers": {"id": "u-1"}})),
        c.post(s.url("/v1/identify"))
            .basic_auth(SITE, Some(API_KEY))
            .json(&json!({"userId": "u-1"})),
        c.post(s.url("/v1/identify"))
            .basic_auth("nope", Some(""))
            .json(&json!({"userId": "u-1"})),
        c.post(s.url("/webhooks/reporting"))
            .json(&json!({"object_type": "email", "metric": "sent"})),
        c.post(s.url("/v1/segments/1/add_customers"))
            .basic_auth(SITE, Some(API_KEY))
            .json(&json!({"ids": ["u-1"]})),
    ];
    for req in tries {
        let (status, b) = body(req.send().unwrap());
        assert_eq!(status, 401, "{b}");
        assert!(b["message"].is_string());
    }
    assert_eq!(app_get(&s, "/v1/customers/u-1/attributes").0, 404);
    let (status, _) = body(
        c.get(s.url("/v1/customers/u-1/attributes"))
            .bearer_auth("wrong")
            .send()
            .unwrap(),
    );
    assert_eq!(status, 401);
    assert!(s.db.people().unwrap().is_empty());
}

#[test]
fn refuses_to_start_without_keys_or_with_no_auth_off_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let db = ProfileDb::open(dir.path()).unwrap();
    let local = "127.0.0.1:0".parse().unwrap();
    assert!(matches!(
        Server::bind(db.clone(), local, Config::default()),
        Err(ServeError::NoKeys)
    ));
    let half = Config {
        keys: Keys {
            site_id: Some("s".into()),
            ..Keys::default()
        },
        ..Config::default()
    };
    assert!(matches!(
        Server::bind(db.clone(), local, half),
        Err(ServeError::HalfPair(_))
    ));
    let open = Config {
        no_auth: true,
        ..Config::default()
    };
    assert!(matches!(
        Server::bind(db.clone(), "0.0.0.0:0".parse().unwrap(), open.clone()),
        Err(ServeError::NoAuthNotLoopback(_))
    ));
    assert!(Server::bind(db, local, open).is_ok());
    // Keys are never printed.
    let shown = format!("{:?}", keys());
    assert!(
        !shown.contains(API_KEY) && !shown.contains(APP_KEY),
        "{shown}"
    );
}

#[test]
fn track_v1_journey_lands_in_the_profile() {
    let s = TestServer::start();
    assert_eq!(
        put(
            &s,
            "/api/v1/customers/u-1",
            json!({"email": "Ann@Example.com", "plan": "pro", "n": 3})
        ),
        (200, json!({}))
    );
    // Identifier in the path as Customer.io reads it, URL-decoded.
    assert_eq!(
        put(
            &s,
            "/api/v1/customers/ann%40example.com",
            json!({"city": "Oslo"})
        )
        .0,
        200
    );
    assert_eq!(
        post(
            &s,
            "/api/v1/customers/u-1/events",
            json!({"name": "purchase", "data": {"amount": 5}, "id": "e-1", "timestamp": NOW - 10})
        )
        .0,
        200
    );
    // The same event id again is stored once.
    assert_eq!(
        post(
            &s,
            "/api/v1/customers/u-1/events",
            json!({"name": "purchase", "id": "e-1"})
        )
        .0,
        200
    );
    assert_eq!(
        post(
            &s,
            "/api/v1/customers/u-1/events",
            json!({"type": "page", "name": "/pricing"})
        )
        .0,
        200
    );
    assert_eq!(
        post(
            &s,
            "/api/v1/customers/u-1/events",
            json!({"type": "screen", "name": "Settings"})
        )
        .0,
        200
    );
    assert_eq!(
        post(
            &s,
            "/api/v1/events",
            json!({"anonymous_id": "anon-1", "name": "viewed"})
        )
        .0,
        200
    );
    assert_eq!(
        put(&s, "/api/v1/customers/u-1/devices", json!({"device": {"id": "tok-1", "platform": "ios", "attributes": {"app_version": "1.0"}}})).0,
        200
    );
    assert_eq!(
        put(
            &s,
            "/api/v1/customers/u-1/devices",
            json!({"device": {"id": "tok/2", "platform": "android"}})
        )
        .0,
        200
    );
    let (status, _) = body(
        track(
            &client(),
            Method::DELETE,
            s.url("/api/v1/customers/u-1/devices/tok%2F2"),
        )
        .send()
        .unwrap(),
    );
    assert_eq!(status, 200);
    let ann = Ident::id("u-1");
    let profile = s.db.profile(&ann, 50).unwrap().unwrap();
    assert_eq!(profile.person.attributes["city"], "Oslo".into());
    assert_eq!(profile.devices.len(), 1);
    assert_eq!(profile.devices[0].token, "tok-1");
    let kinds: Vec<&str> = profile.activities.iter().map(|a| a.kind.as_str()).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "event").count(),
        1,
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&"page") && kinds.contains(&"screen"),
        "{kinds:?}"
    );

    // The App API answers what the library holds.
    let (status, got) = app_get(&s, "/v1/customers/u-1/attributes");
    assert_eq!(status, 200);
    let person = &profile.person;
    let c = &got["customer"];
    assert_eq!(c["id"], "u-1");
    assert_eq!(c["identifiers"]["email"], "Ann@Example.com");
    assert_eq!(c["identifiers"]["cio_id"], person.cio_id.as_str());
    for (k, v) in &person.attributes {
        assert_eq!(c["attributes"][k], v.to_json(), "attribute {k}");
    }
    for (k, t) in &person.timestamps {
        assert_eq!(c["timestamps"][k], json!(t), "timestamp {k}");
    }
    assert_eq!(c["devices"][0]["id"], "tok-1");
    assert_eq!(c["unsubscribed"], false);
    let by_email = app_get(
        &s,
        "/v1/customers/ann%40example.com/attributes?id_type=email",
    );
    assert_eq!(by_email.1, got);
    let by_cio = app_get(
        &s,
        &format!("/v1/customers/{}/attributes?id_type=cio_id", person.cio_id),
    );
    assert_eq!(by_cio.1, got);
    assert_eq!(
        app_get(&s, "/v1/customers?email=ann%40example.com").1,
        json!({"results": [{"email": "Ann@Example.com", "id": "u-1", "cio_id": person.cio_id}]})
    );

    // Activities, paged and filtered, equal the library's timeline.
    let (_, page1) = app_get(&s, "/v1/customers/u-1/activities?limit=2");
    let acts = page1["activities"].as_array().unwrap();
    assert_eq!(acts.len(), 2);
    assert_eq!(acts[0]["type"], profile.activities[0].kind.as_str());
    assert_eq!(acts[0]["data"], profile.activities[0].data.to_json());
    let next = page1["next"].as_str().unwrap();
    assert!(!next.is_empty());
    let (_, page2) = app_get(
        &s,
        &format!("/v1/customers/u-1/activities?limit=2&start={next}"),
    );
    assert_eq!(
        page2["activities"][0]["id"],
        profile.activities[2].cursor.to_string().as_str()
    );
    let (_, events) = app_get(&s, "/v1/customers/u-1/activities?type=event&name=purchase");
    assert_eq!(events["activities"].as_array().unwrap().len(), 1);
    assert_eq!(events["next"], "");

    // Merge, suppress, unsuppress, delete.
    assert_eq!(
        put(&s, "/api/v1/customers/u-2", json!({"plan": "free"})).0,
        200
    );
    assert_eq!(
        post(
            &s,
            "/api/v1/merge_customers",
            json!({"primary": {"id": "u-1"}, "secondary": {"id": "u-2"}})
        )
        .0,
        200
    );
    assert!(s.db.person(&Ident::id("u-2")).unwrap().is_none());
    assert_eq!(post(&s, "/api/v1/customers/u-1/suppress", json!({})).0, 200);
    assert!(s.db.is_suppressed(&ann).unwrap());
    assert_eq!(app_get(&s, "/v1/customers/u-1/attributes").0, 404);
    let (status, b) = put(&s, "/api/v1/customers/u-1", json!({"plan": "x"}));
    assert!(status == 200 || status == 400, "{status} {b}");
    assert!(s.db.person(&ann).unwrap().is_none());
    let (status, _) = body(
        track(
            &client(),
            Method::POST,
            s.url("/api/v1/customers/u-1/unsuppress"),
        )
        .send()
        .unwrap(),
    );
    assert_eq!(status, 200);
    assert!(!s.db.is_suppressed(&ann).unwrap());
    assert_eq!(put(&s, "/api/v1/customers/u-3", json!({})).0, 200);
    let (status, _) = body(
        track(&client(), Method::DELETE, s.url("/api/v1/customers/u-3"))
            .send()
            .unwrap(),
    );
    assert_eq!(status, 200);
    assert!(s.db.person(&Ident::id("u-3")).unwrap().is_none());
}

#[test]
fn refusals_name_the_field_and_write_nothing() {
    let s = TestServer::start();
    let (status, b) = post(&s, "/api/v1/customers/u-1/events", json!({"data": {}}));
    assert_eq!(status, 400);
    assert_eq!(b["errors"][0]["field"], "name");
    assert_eq!(b["meta"]["errors"][0], b["message"]);
    assert!(b["message"].as_str().unwrap().contains("`name`"));
    let (status, b) = put(&s, "/api/v1/customers/u-1", json!({"x": "a".repeat(2000)}));
    assert_eq!(status, 400);
    assert_eq!(b["errors"][0]["field"], "x");
    assert_eq!(b["errors"][0]["reason"], "too_long");
    let (status, b) = put(
        &s,
        "/api/v1/customers/u-1/devices",
        json!({"device": {"id": "t", "platform": "web"}}),
    );
    assert_eq!(
        (status, b["errors"][0]["field"].clone()),
        (400, json!("device.platform"))
    );
    let (status, b) = body(
        track(&client(), Method::PUT, s.url("/api/v1/customers/u-1"))
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .unwrap(),
    );
    assert_eq!(
        (status, b["errors"][0]["field"].clone()),
        (400, json!("body"))
    );
    let (status, b) = post(
        &s,
        "/api/v1/merge_customers",
        json!({"primary": {"id": "a"}}),
    );
    assert_eq!(
        (status, b["errors"][0]["field"].clone()),
        (400, json!("secondary"))
    );
    assert!(s.db.people().unwrap().is_empty());
    // Unknown paths and people.
    assert_eq!(app_get(&s, "/v1/nothing/here").0, 404);
    assert_eq!(app_get(&s, "/v1/customers/ghost/activities").0, 404);
    assert_eq!(app_get(&s, "/v1/customers/ghost/segments").0, 404);
    assert_eq!(app_get(&s, "/v1/customers/ghost/messages").0, 404);
    assert_eq!(app_get(&s, "/v1/segments/77").0, 404);
    assert_eq!(
        app_get(&s, "/v1/customers/u/attributes?id_type=bogus").0,
        400
    );
}

#[test]
fn limits_answer_413() {
    let s = TestServer::start();
    let big = "a".repeat(40 * 1024);
    let (status, b) = put(&s, "/api/v1/customers/u-1", json!({ "x": big }));
    assert_eq!(status, 413, "{b}");
    assert_eq!(b["errors"][0]["field"], "body");
    // A batch item over 32 KiB, in a batch under 500 KB.
    let item = json!({"type": "person", "action": "identify", "identifiers": {"id": "u-1"}, "attributes": {"x": big}});
    let (status, b) = post(&s, "/api/v2/batch", json!({ "batch": [item] }));
    assert_eq!(status, 413, "{b}");
    assert_eq!(b["errors"][0]["field"], "batch[0]");
    // A batch over 500 KB.
    let small = "b".repeat(20 * 1024);
    let items: Vec<Json> = (0..30)
        .map(|i| json!({"type": "person", "action": "identify", "identifiers": {"id": format!("u-{i}")}, "attributes": {"x": small}}))
        .collect();
    let (status, _) = post(&s, "/api/v2/batch", json!({ "batch": items }));
    assert_eq!(status, 413);
    assert!(s.db.people().unwrap().is_empty());
    let (_, m) = body(client().get(s.url("/metrics")).send().unwrap());
    assert!(
        m.as_str().unwrap().contains("profiledb_too_large_total 3"),
        "{m}"
    );
}

#[test]
fn track_v2_entity_and_batch_with_refused_items() {
    let s = TestServer::start();
    let (status, _) = post(
        &s,
        "/api/v2/entity",
        json!({"type": "person", "identifiers": {"id": "u-200"}, "action": "identify", "attributes": {"plan": "team"},
               "cio_relationships": [{"identifiers": {"object_type_id": "1", "object_id": "acme"}, "relationship_attributes": {"role": "admin"}}]}),
    );
    assert_eq!(status, 200);
    let (status, b) = post(
        &s,
        "/api/v2/batch",
        json!({"batch": [
            {"type": "person", "identifiers": {"id": "u-200"}, "action": "event", "name": "signed", "attributes": {"v": 1}},
            {"type": "person", "identifiers": {}, "action": "identify"},
            {"type": "person", "identifiers": {"id": "u-200"}, "action": "page", "name": "/docs"},
        ]}),
    );
    assert_eq!(status, 207, "{b}");
    assert_eq!(b["applied"], 2);
    assert_eq!(b["errors"][0]["batch_index"], 1);
    assert_eq!(b["errors"][0]["field"], "batch[1].identifiers");
    let p = s.db.profile(&Ident::id("u-200"), 10).unwrap().unwrap();
    assert_eq!(p.relationships.len(), 1);
    assert!(p.activities.iter().any(|a| a.kind == "page"));
    // A single refused entity is a 400.
    let (status, b) = post(
        &s,
        "/api/v2/entity",
        json!({"type": "person", "action": "fly", "identifiers": {"id": "u"}}),
    );
    assert_eq!(
        (status, b["errors"][0]["field"].clone()),
        (400, json!("action"))
    );
    // The batch route takes batches only.
    let (status, b) = post(&s, "/api/v2/batch", json!({"type": "person"}));
    assert_eq!(
        (status, b["errors"][0]["field"].clone()),
        (400, json!("batch"))
    );
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

#[test]
fn pipelines_single_calls_and_gzipped_batch() {
    let s = TestServer::start();
    assert_eq!(
        pipe(&s, "/v1/identify", json!({"userId": "p-1", "traits": {"email": "pipe@example.com", "createdAt": "2026-04-01T12:00:00.000Z"}, "messageId": "m1"})).0,
        200
    );
    for _ in 0..2 {
        // Retried with the same messageId: stored once.
        assert_eq!(
            pipe(&s, "/v1/track", json!({"userId": "p-1", "event": "Order Completed", "properties": {"revenue": 9.5}, "messageId": "m2"})).0,
            200
        );
    }
    assert_eq!(
        pipe(
            &s,
            "/v1/page",
            json!({"userId": "p-1", "name": "Home", "properties": {"url": "https://e.com/"}})
        )
        .0,
        200
    );
    assert_eq!(
        pipe(&s, "/v1/screen", json!({"userId": "p-1", "name": "Cart"})).0,
        200
    );
    assert_eq!(
        pipe(&s, "/v1/group", json!({"userId": "p-1", "groupId": "globex", "traits": {"name": "Globex", "relationshipAttributes": {"role": "buyer"}}})).0,
        200
    );
    // As the Python client sends it: gzip, null ids, sentAt, a batch.
    let batch = json!({"batch": [
        {"type": "track", "userId": null, "anonymousId": "anon-9", "event": "Viewed", "messageId": "m3", "timestamp": "2026-11-28T17:42:31.056Z"},
        {"type": "identify", "userId": "p-2", "anonymousId": "anon-9", "traits": {"email": "p2@example.com"}, "messageId": "m4"},
        {"type": "alias", "userId": "p-1", "previousId": "p-2", "messageId": "m5"},
        {"type": "track", "userId": null, "anonymousId": null, "event": "Nobody"},
    ], "sentAt": "2026-11-28T17:42:32.000Z"});
    let res = client()
        .post(s.url("/v1/batch"))
        .basic_auth(WRITE_KEY, Some(""))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gzip(batch.to_string().as_bytes()))
        .send()
        .unwrap();
    let (status, b) = body(res);
    assert_eq!(status, 200, "{b}");
    assert_eq!(b["applied"], 3);
    assert_eq!(b["errors"][0]["batch_index"], 3);
    let p = s.db.profile(&Ident::id("p-1"), 50).unwrap().unwrap();
    assert_eq!(
        p.activities
            .iter()
            .filter(|a| a.name.as_deref() == Some("Order Completed"))
            .count(),
        1
    );
    assert!(
        p.activities
            .iter()
            .any(|a| a.name.as_deref() == Some("Viewed")),
        "anonymous activity followed p-2 into p-1"
    );
    assert_eq!(p.relationships.len(), 1);
    assert!(s.db.person(&Ident::id("p-2")).unwrap().is_none());
    // A single refused call is a 400 naming the field.
    let (status, b) = pipe(&s, "/v1/track", json!({"event": "x"}));
    assert_eq!(
        (status, b["errors"][0]["field"].clone()),
        (400, json!("userId"))
    );
}

fn sign(body: &str, ts: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(WEBHOOK_KEY.as_bytes()).unwrap();
    mac.update(format!("v0:{ts}:{body}").as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn reporting_webhook_needs_its_signature() {
    let s = TestServer::start();
    s.db.identify(profiledb::Identify::new(Ident::id("u-1")))
        .unwrap();
    let event = json!({"object_type": "email", "metric": "opened", "timestamp": NOW - 5, "event_id": "ev1",
        "data": {"delivery_id": "dlv-1", "identifiers": {"id": "u-1"}, "campaign_id": 3, "recipient": "a@b.c", "subject": "Hi"}})
    .to_string();
    let send = |sig: &str| {
        body(
            client()
                .post(s.url("/webhooks/reporting"))
                .header("content-type", "application/json")
                .header("x-cio-timestamp", "1790000000")
                .header("x-cio-signature", sig)
                .body(event.clone())
                .send()
                .unwrap(),
        )
    };
    assert_eq!(send("00ff").0, 401);
    assert!(s.db.delivery("dlv-1").unwrap().is_none());
    let (status, b) = send(&sign(&event, "1790000000"));
    assert_eq!(status, 200, "{b}");
    let (_, d) = s.db.delivery("dlv-1").unwrap().unwrap();
    assert!(d.metrics.contains_key("opened"));
    let (_, msgs) = app_get(&s, "/v1/customers/u-1/messages");
    assert_eq!(msgs["messages"][0]["id"], "dlv-1");
    assert_eq!(msgs["messages"][0]["type"], "email");
}

#[test]
fn segments_metrics_and_forms() {
    let s = TestServer::start();
    for i in 0..5 {
        put(
            &s,
            &format!("/api/v1/customers/u-{i}"),
            json!({"plan": if i % 2 == 0 { "pro" } else { "free" }}),
        );
    }
    let manual = s.db.create_segment("VIP", None).unwrap();
    let pro =
        s.db.create_segment("Pro", Some(r#"attr.plan = "pro""#))
            .unwrap();
    assert_eq!(
        post(
            &s,
            &format!("/api/v1/segments/{manual}/add_customers"),
            json!({"ids": ["u-1", "u-2", "ghost"]})
        )
        .0,
        200
    );
    assert_eq!(
        post(
            &s,
            &format!("/api/v1/segments/{manual}/remove_customers"),
            json!({"ids": ["u-2"]})
        )
        .0,
        200
    );
    let (status, b) = post(
        &s,
        "/api/v1/segments/x/add_customers",
        json!({"ids": ["u-1"]}),
    );
    assert_eq!(
        (status, b["errors"][0]["field"].clone()),
        (400, json!("segment_id"))
    );
    let (_, list) = app_get(&s, "/v1/segments");
    assert_eq!(list["segments"].as_array().unwrap().len(), 2);
    assert_eq!(
        app_get(&s, &format!("/v1/segments/{manual}")).1["segment"]["type"],
        "manual"
    );
    assert_eq!(
        app_get(&s, &format!("/v1/segments/{pro}")).1["segment"]["type"],
        "dynamic"
    );
    assert_eq!(
        app_get(&s, &format!("/v1/segments/{manual}/customer_count")).1,
        json!({"count": 1})
    );
    assert_eq!(
        app_get(&s, &format!("/v1/segments/{pro}/customer_count")).1,
        json!({"count": 3})
    );
    let (_, m1) = app_get(&s, &format!("/v1/segments/{pro}/membership?limit=2"));
    assert_eq!(m1["ids"], json!(["u-0", "u-2"]));
    let (_, m2) = app_get(
        &s,
        &format!(
            "/v1/segments/{pro}/membership?limit=2&start={}",
            m1["next"].as_str().unwrap()
        ),
    );
    assert_eq!(m2["ids"], json!(["u-4"]));
    assert_eq!(m2["next"], "");
    let (_, segs) = app_get(&s, "/v1/customers/u-1/segments");
    assert_eq!(segs["segments"][0]["name"], "VIP");
    // App API manual membership too.
    let (status, _) = body(
        client()
            .post(s.url(&format!("/v1/segments/{manual}/add_customers")))
            .bearer_auth(APP_KEY)
            .json(&json!({"ids": ["u-3"]}))
            .send()
            .unwrap(),
    );
    assert_eq!(status, 200);
    assert_eq!(
        app_get(&s, &format!("/v1/segments/{manual}/customer_count")).1,
        json!({"count": 2})
    );
    // Search with App API filter JSON.
    let (status, found) = body(
        client()
            .post(s.url("/v1/customers?limit=10"))
            .bearer_auth(APP_KEY)
            .json(&json!({"filter": {"attribute": {"field": "plan", "operator": "eq", "value": "free"}}}))
            .send()
            .unwrap(),
    );
    assert_eq!(status, 200);
    assert_eq!(found["ids"], json!(["u-1", "u-3"]));
    // Delivery metrics from the SDKs.
    s.db.add_delivery(&Ident::id("u-1"), NewDelivery::new("dlv-9", Channel::Push))
        .unwrap();
    assert_eq!(
        post(
            &s,
            "/api/v1/push/events",
            json!({"delivery_id": "dlv-9", "event": "opened", "device_id": "t", "timestamp": NOW})
        )
        .0,
        200
    );
    assert_eq!(
        post(
            &s,
            "/api/v1/metrics",
            json!({"delivery_id": "dlv-9", "metric": "clicked", "href": "https://x"})
        )
        .0,
        200
    );
    let (_, d) = s.db.delivery("dlv-9").unwrap().unwrap();
    assert!(
        d.metrics.contains_key("opened") && d.metrics.contains_key("clicked"),
        "{d:?}"
    );
    // Forms answer 204 and identify the respondent.
    let res = track(
        &client(),
        Method::POST,
        s.url("/api/v1/forms/signup/submit"),
    )
    .json(&json!({"data": {"email": "f@x.com", "first_name": "F", "form_name": "ignored"}}))
    .send()
    .unwrap();
    assert_eq!(res.status().as_u16(), 204);
    let f = s.db.person(&Ident::email("f@x.com")).unwrap().unwrap();
    assert_eq!(f.attributes["first_name"], "F".into());
    assert!(!f.attributes.contains_key("form_name"));
    // Health and metrics.
    assert_eq!(
        body(client().get(s.url("/healthz")).send().unwrap()),
        (200, json!({"status": "ok"}))
    );
    let (_, m) = body(client().get(s.url("/metrics")).send().unwrap());
    let m = m.as_str().unwrap().to_owned();
    assert!(
        m.contains("profiledb_commits_total") && m.contains("profiledb_queue_depth 0"),
        "{m}"
    );
}

#[test]
fn concurrent_writes_share_commits_and_are_durable_after_stop() {
    let mut s = TestServer::start();
    in_parallel(&s, 16, |t, url| {
        let c = client();
        let res = c
            .put(format!("{url}/api/v1/customers/c-{t}"))
            .basic_auth(SITE, Some(API_KEY))
            .json(&json!({"thread": t}))
            .send()
            .unwrap();
        assert_eq!(res.status().as_u16(), 200);
        for i in 0..20 {
            let res = c
                .post(format!("{url}/api/v1/customers/c-{t}/events"))
                .basic_auth(SITE, Some(API_KEY))
                .json(&json!({"name": "tick", "id": format!("{t}-{i}")}))
                .send()
                .unwrap();
            assert_eq!(res.status().as_u16(), 200);
        }
    });
    let (_, m) = body(client().get(s.url("/metrics")).send().unwrap());
    let m = m.as_str().unwrap().to_owned();
    let value = |name: &str| -> u64 {
        m.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(value("profiledb_committed_requests_total"), 336);
    assert!(value("profiledb_commits_total") <= 336);
    s.stop();
    // Keep the directory past the server's end.
    let dir = std::mem::replace(&mut s.dir, tempfile::tempdir().unwrap());
    drop(s);
    let path = dir.path();
    let db = ProfileDb::builder()
        .clock(std::sync::Arc::new(profiledb::ManualClock::new(NOW)))
        .open(path)
        .unwrap();
    for t in 0..16 {
        let n = db
            .activities(
                &Ident::id(format!("c-{t}")),
                &profiledb::ActivityFilter::new(100).kind("event"),
            )
            .unwrap()
            .len();
        assert_eq!(n, 20);
    }
}

/// Requests that share a commit are still answered one by one: a refused one gets its
/// own refusal (named as if it were alone) and the others apply.
#[test]
fn refusals_inside_a_shared_commit_are_answered_alone() {
    let s = TestServer::start();
    in_parallel(&s, 8, |t, url| {
        let c = client();
        for i in 0..10 {
            let ok = (t + i) % 3 != 0;
            let (path, b) = if i % 2 == 0 {
                let attrs = if ok {
                    json!({"n": i})
                } else {
                    json!({"n": "x".repeat(2000)})
                };
                (format!("/api/v1/customers/m-{t}-{i}"), attrs)
            } else {
                let action = if ok { "identify" } else { "fly" };
                (
                    "/api/v2/entity".to_owned(),
                    json!({"type": "person", "action": action, "identifiers": {"id": format!("m-{t}-{i}")}, "attributes": {"n": i}}),
                )
            };
            let method = if i % 2 == 0 {
                Method::PUT
            } else {
                Method::POST
            };
            let (status, b) = body(
                c.request(method, format!("{url}{path}"))
                    .basic_auth(SITE, Some(API_KEY))
                    .json(&b)
                    .send()
                    .unwrap(),
            );
            if ok {
                assert_eq!((status, &b), (200, &json!({})));
            } else {
                assert_eq!(status, 400, "{b}");
                let want = if i % 2 == 0 { "n" } else { "action" };
                assert_eq!(b["errors"][0]["field"], want, "{b}");
            }
        }
    });
    for t in 0..8 {
        for i in 0..10 {
            let ok = (t + i) % 3 != 0;
            let p = s.db.person(&Ident::id(format!("m-{t}-{i}"))).unwrap();
            assert_eq!(p.is_some(), ok, "m-{t}-{i}");
        }
    }
}

/// Batches that share a commit answer with their own item indices.
#[test]
fn batches_inside_a_shared_commit_name_their_own_items() {
    let s = TestServer::start();
    in_parallel(&s, 8, |t, url| {
        let c = client();
        for i in 0..6 {
            let batch: Vec<Json> = (0..4)
                        .map(|k| {
                            let action = if k == (t + i) % 4 { "fly" } else { "identify" };
                            json!({"type": "person", "action": action, "identifiers": {"id": format!("b-{t}-{i}-{k}")}})
                        })
                        .collect();
            let (status, b) = body(
                c.post(format!("{url}/api/v2/batch"))
                    .basic_auth(SITE, Some(API_KEY))
                    .json(&json!({ "batch": batch }))
                    .send()
                    .unwrap(),
            );
            let bad = (t + i) % 4;
            assert_eq!(status, 207, "{b}");
            assert_eq!(b["applied"], 3, "{b}");
            assert_eq!(b["errors"].as_array().unwrap().len(), 1, "{b}");
            assert_eq!(b["errors"][0]["batch_index"], bad, "{b}");
            assert_eq!(
                b["errors"][0]["field"],
                format!("batch[{bad}].action"),
                "{b}"
            );
        }
    });
    assert_eq!(s.db.people().unwrap().len(), 8 * 6 * 3);
}

#[test]
fn binary_serves_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_profiledb"))
        .args(["--db"])
        .arg(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("PROFILEDB_APP_KEY", APP_KEY)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut err, &mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_owned();
    let (status, _) = body(
        client()
            .get(format!("{addr}/v1/customers/x/attributes"))
            .bearer_auth(APP_KEY)
            .send()
            .unwrap(),
    );
    assert_eq!(status, 404);
    // Only the App API key was given: the Track API refuses everyone.
    let (status, _) = body(
        client()
            .put(format!("{addr}/api/v1/customers/x"))
            .basic_auth("", Some(""))
            .json(&json!({}))
            .send()
            .unwrap(),
    );
    assert_eq!(status, 401);
    #[cfg(unix)]
    {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let status = child.wait().unwrap();
        assert!(status.success(), "{status:?}");
    }
    #[cfg(not(unix))]
    {
        let _ = child.kill();
    }
    // Without any key it refuses to start.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_profiledb"))
        .arg("--db")
        .arg(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_remove("PROFILEDB_SITE_ID")
        .env_remove("PROFILEDB_API_KEY")
        .env_remove("PROFILEDB_WRITE_KEY")
        .env_remove("PROFILEDB_APP_KEY")
        .env_remove("PROFILEDB_WEBHOOK_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no key given"));
}

/// A client that sends its headers or body too slowly is cut off, so it cannot hold
/// the server; with one connection allowed, the next client is served after it.
#[test]
fn slow_clients_are_cut_off() {
    use std::io::Read as _;
    let s = TestServer::with(Config {
        keys: keys(),
        max_connections: 1,
        header_timeout: std::time::Duration::from_millis(300),
        request_timeout: std::time::Duration::from_millis(600),
        ..Config::default()
    });
    // Half the headers, then nothing: the connection is closed.
    let mut slow = std::net::TcpStream::connect(s.addr).unwrap();
    slow.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // Meanwhile the only connection slot is taken; this request waits for it.
    let waiting = {
        let url = s.url("/healthz");
        std::thread::spawn(move || client().get(url).send().unwrap().status().as_u16())
    };
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    let answer = String::from_utf8_lossy(&rest);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    assert_eq!(waiting.join().unwrap(), 200);
    // A body that never arrives: 408 and nothing written.
    let mut slow = std::net::TcpStream::connect(s.addr).unwrap();
    slow.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let auth = base64_basic(SITE, API_KEY);
    slow.write_all(
        format!(
            "PUT /api/v1/customers/slow HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"a\":"
        )
        .as_bytes(),
    )
    .unwrap();
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    assert!(
        String::from_utf8_lossy(&rest).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&rest)
    );
    assert!(s.db.person(&Ident::id("slow")).unwrap().is_none());
}

fn base64_basic(user: &str, pass: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
}
