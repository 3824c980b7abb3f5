//! Ingest of real wire formats (Track API v2, Data Pipelines, reporting webhooks) and the
//! export → ingest round trip.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use common::{all_records, input_field, open, T0};
use profiledb::{
    ActivityFilter, Channel, DeviceInput, Family, Ident, Identify, Metric, NewDelivery, ObjectRef,
    Platform, ProfileDb, Report, Track, Value,
};
use serde_json::json;

fn ingest(db: &ProfileDb, msg: serde_json::Value) -> Report {
    db.ingest(&msg).unwrap()
}

fn ok(db: &ProfileDb, msg: serde_json::Value) {
    let r = ingest(db, msg.clone());
    assert!(
        r.rejected.is_empty(),
        "{msg} was refused: {}",
        r.rejected[0]
    );
}

/// The single rejection's field.
fn refused(db: &ProfileDb, msg: serde_json::Value) -> String {
    let r = ingest(db, msg.clone());
    assert_eq!(r.applied, 0, "{msg}");
    assert_eq!(r.rejected.len(), 1, "{msg}");
    r.rejected[0].field().unwrap().to_owned()
}

fn kinds(db: &ProfileDb, who: &Ident) -> Vec<(String, Option<String>)> {
    db.activities(who, &ActivityFilter::new(1000))
        .unwrap()
        .into_iter()
        .map(|a| (a.kind, a.name))
        .collect()
}

fn has(db: &ProfileDb, who: &Ident, kind: &str, name: &str) -> bool {
    kinds(db, who)
        .iter()
        .any(|(k, n)| k == kind && n.as_deref() == Some(name))
}

// ---------------------------------------------------------------------------------------
// The customerio-node journey (tests/fixtures/clients/README.md).

#[test]
fn customerio_node_journey_lands_as_its_readme_describes() {
    let (_d, db, _c) = open();
    let text = include_str!("fixtures/clients/customerio-node-5.2.0.jsonl");
    let mut applied = 0;
    for (n, line) in text.lines().enumerate() {
        let r = db.ingest_str(line).unwrap();
        assert!(r.rejected.is_empty(), "line {}: {}", n + 1, r.rejected[0]);
        applied += r.applied;
    }
    // 1 + 12 batch items + 9 single Pipelines calls + 3 batch items.
    assert_eq!(applied, 1 + 12 + 9 + 3);

    // v2: u-200 was suppressed at the end: gone, id and email blocked.
    assert!(db.person(&Ident::id("u-200")).unwrap().is_none());
    assert!(db.is_suppressed(&Ident::id("u-200")).unwrap());
    assert!(db.is_suppressed(&Ident::email("v2@example.com")).unwrap());
    // u-100 was created by the object's relationship, which was then deleted.
    let u100 = Ident::id("u-100");
    assert!(db.person(&u100).unwrap().is_some());
    assert!(db.relationships(&u100).unwrap().is_empty());
    assert!(has(&db, &u100, "add_relationship", "1:acme"));
    assert!(has(&db, &u100, "delete_relationship", "1:acme"));
    // acme holds its attributes and nobody.
    let acme = db.object(&ObjectRef::new(1, "acme")).unwrap().unwrap();
    assert_eq!(acme.attributes["name"], Value::from("Acme Inc"));
    assert_eq!(acme.attributes["tier"], Value::from("gold"));
    assert!(db
        .object_people(&ObjectRef::new(1, "acme"))
        .unwrap()
        .is_empty());
    // u-101 (merge secondary) and u-300 (_update) were never created; dlv-1 unknown.
    assert!(db.person(&Ident::id("u-101")).unwrap().is_none());
    assert!(db.person(&Ident::id("u-300")).unwrap().is_none());
    assert!(db.delivery("dlv-1").unwrap().is_none());

    // Pipelines: p-1 holds its traits, events, views, relationship, device, and p-2's
    // anonymous event via the alias merge.
    let p1 = Ident::id("p-1");
    let person = db.person(&p1).unwrap().unwrap();
    assert_eq!(person.email.as_deref(), Some("pipe@example.com"));
    assert_eq!(person.attributes["name"], Value::from("Pipe One"));
    assert_eq!(person.attributes["plan"], Value::from("pro"));
    assert_eq!(person.attributes["created_at"], Value::Int(1_775_044_800));
    assert_eq!(person.timestamps["plan"], 1_795_887_751);
    let acts = db.activities(&p1, &ActivityFilter::new(100)).unwrap();
    let order = acts
        .iter()
        .find(|a| a.kind == "event" && a.name.as_deref() == Some("Order Completed"))
        .unwrap();
    assert_eq!(order.timestamp, 1_795_887_751);
    assert_eq!(order.data.as_map().unwrap()["revenue"], Value::Float(99.9));
    assert!(has(&db, &p1, "page", "https://example.com/"));
    assert!(has(&db, &p1, "screen", "Cart"));
    assert!(
        has(&db, &p1, "event", "Product Viewed"),
        "{:?}",
        kinds(&db, &p1)
    );
    assert!(kinds(&db, &p1).iter().any(|(k, _)| k == "profile_merge"));
    let rels = db.relationships(&p1).unwrap();
    assert_eq!(rels.len(), 1);
    assert_eq!(rels[0].object, ObjectRef::new(1, "globex"));
    assert_eq!(rels[0].attributes["role"], Value::from("buyer"));
    let globex = db.object(&ObjectRef::new(1, "globex")).unwrap().unwrap();
    assert_eq!(globex.attributes["name"], Value::from("Globex"));
    assert!(!globex.attributes.contains_key("object_type_id"));
    let devices = db.devices(&p1).unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].token, "tok-p1");
    assert_eq!(devices[0].platform, Platform::Ios);
    // p-2 was merged away; p-3 deleted by the semantic event.
    assert!(db.person(&Ident::id("p-2")).unwrap().is_none());
    assert!(db.person(&Ident::id("p-3")).unwrap().is_none());
    assert!(db.anonymous_events("anon-p2", 10).unwrap().is_empty());
    assert_eq!(db.stats().unwrap().people, 2);
    assert!(db.verify().unwrap().is_ok());
}

// ---------------------------------------------------------------------------------------
// Track API v2: every type × action.

#[test]
fn v2_person_actions() {
    let (_d, db, _c) = open();
    let u = Ident::id("u-1");
    ok(
        &db,
        json!({"type": "person", "action": "identify", "identifiers": {"id": "u-1"},
        "timestamp": T0 - 10,
        "attributes": {"email": "ann@example.com", "plan": "pro", "cio_subscription_preferences": {"topics": {"topic_1": true}}},
        "cio_relationships": [{"identifiers": {"object_type_id": "1", "object_id": "acme"}, "relationship_attributes": {"role": "admin"}}]}),
    );
    let p = db.person(&u).unwrap().unwrap();
    assert_eq!(p.attributes["plan"], Value::from("pro"));
    assert_eq!(p.timestamps["plan"], T0 - 10);
    assert_eq!(
        db.relationships(&u).unwrap()[0].attributes["role"],
        Value::from("admin")
    );

    // By email, by cio_id, _update of nobody.
    ok(
        &db,
        json!({"type": "person", "action": "identify", "identifiers": {"email": "ANN@example.com"}, "attributes": {"age": 30}}),
    );
    ok(
        &db,
        json!({"type": "person", "action": "identify", "identifiers": {"cio_id": p.cio_id}, "attributes": {"id": "u-1b"}}),
    );
    assert_eq!(
        db.person(&Ident::id("u-1b")).unwrap().unwrap().attributes["age"],
        Value::Int(30)
    );
    let u = Ident::id("u-1b");
    ok(
        &db,
        json!({"type": "person", "action": "identify", "identifiers": {"id": "nobody"}, "attributes": {"_update": true, "x": 1}}),
    );
    assert!(db.person(&Ident::id("nobody")).unwrap().is_none());

    ok(
        &db,
        json!({"type": "person", "action": "event", "identifiers": {"id": "u-1b"}, "name": "purchase", "id": "01HZX3J0E7Q0V4K6W8Y9Z1A2B3", "timestamp": T0 - 5, "attributes": {"amount": 42}}),
    );
    ok(
        &db,
        json!({"type": "person", "action": "event", "identifiers": {"id": "u-1b"}, "name": "purchase", "id": "01HZX3J0E7Q0V4K6W8Y9Z1A2B3", "attributes": {"amount": 42}}),
    );
    assert_eq!(
        db.event_count(&u, profiledb::TrackKind::Event, "purchase", None, None)
            .unwrap(),
        1
    );
    ok(
        &db,
        json!({"type": "person", "action": "page", "identifiers": {"id": "u-1b"}, "name": "https://example.com/pricing", "attributes": {"title": "Pricing"}}),
    );
    ok(
        &db,
        json!({"type": "person", "action": "page", "identifiers": {"id": "u-1b"}, "attributes": {"url": "https://example.com/docs"}}),
    );
    ok(
        &db,
        json!({"type": "person", "action": "screen", "identifiers": {"id": "u-1b"}, "name": "Settings"}),
    );
    assert!(has(&db, &u, "page", "https://example.com/pricing"));
    assert!(has(&db, &u, "page", "https://example.com/docs"));
    assert!(has(&db, &u, "screen", "Settings"));

    // Anonymous event, then identify with that anonymous_id: it moves.
    ok(
        &db,
        json!({"type": "person", "action": "event", "identifiers": {"anonymous_id": "anon-9"}, "name": "Viewed"}),
    );
    assert_eq!(db.anonymous_events("anon-9", 10).unwrap().len(), 1);
    ok(
        &db,
        json!({"type": "person", "action": "identify", "identifiers": {"id": "u-1b"}, "attributes": {"anonymous_id": "anon-9"}}),
    );
    assert!(has(&db, &u, "event", "Viewed"));

    ok(
        &db,
        json!({"type": "person", "action": "add_relationships", "identifiers": {"id": "u-1b"},
        "cio_relationships": [{"identifiers": {"object_type_id": "2", "object_id": "team-a"}, "relationship_attributes": {"seat": 3}}]}),
    );
    assert_eq!(db.relationships(&u).unwrap().len(), 2);
    ok(
        &db,
        json!({"type": "person", "action": "delete_relationships", "identifiers": {"id": "u-1b"},
        "cio_relationships": [{"identifiers": {"object_type_id": "2", "object_id": "team-a"}}]}),
    );
    assert_eq!(db.relationships(&u).unwrap().len(), 1);

    ok(
        &db,
        json!({"type": "person", "action": "add_device", "identifiers": {"id": "u-1b"},
        "device": {"token": "tok-1", "platform": "ios", "last_used": T0 - 60, "attributes": {"app_version": "2.0", "push_enabled": "true"}}}),
    );
    let dev = &db.devices(&u).unwrap()[0];
    assert_eq!(
        (dev.token.as_str(), dev.platform, dev.last_used),
        ("tok-1", Platform::Ios, T0 - 60)
    );
    assert_eq!(dev.attributes["app_version"], Value::from("2.0"));
    ok(
        &db,
        json!({"type": "person", "action": "delete_device", "identifiers": {"id": "u-1b"}, "device": {"token": "tok-1"}}),
    );
    assert!(db.devices(&u).unwrap().is_empty());

    ok(
        &db,
        json!({"type": "person", "action": "identify", "identifiers": {"id": "u-2"}, "attributes": {"color": "red"}}),
    );
    ok(
        &db,
        json!({"type": "person", "action": "merge", "primary": {"id": "u-1b"}, "secondary": {"id": "u-2"}}),
    );
    assert!(db.person(&Ident::id("u-2")).unwrap().is_none());
    assert_eq!(
        db.person(&u).unwrap().unwrap().attributes["color"],
        Value::from("red")
    );

    ok(
        &db,
        json!({"type": "person", "action": "identify", "identifiers": {"phone": "+15551234567"}}),
    );
    ok(
        &db,
        json!({"type": "person", "action": "delete", "identifiers": {"phone": "+15551234567"}}),
    );
    assert!(db.person(&Ident::phone("+15551234567")).unwrap().is_none());

    ok(
        &db,
        json!({"type": "person", "action": "suppress", "identifiers": {"id": "u-1b"}}),
    );
    assert!(db.person(&u).unwrap().is_none());
    assert_eq!(
        refused(
            &db,
            json!({"type": "person", "action": "identify", "identifiers": {"id": "u-1b"}})
        ),
        "identifiers.id"
    );
    ok(
        &db,
        json!({"type": "person", "action": "unsuppress", "identifiers": {"id": "u-1b"}}),
    );
    ok(
        &db,
        json!({"type": "person", "action": "identify", "identifiers": {"id": "u-1b"}}),
    );
    assert!(db.verify().unwrap().is_ok());
}

#[test]
fn v2_object_and_delivery_actions() {
    let (_d, db, _c) = open();
    let acme = ObjectRef::new(1, "acme");
    ok(
        &db,
        json!({"type": "object", "action": "identify", "identifiers": {"object_type_id": "1", "object_id": "acme"},
        "attributes": {"name": "Acme", "industry": "Manufacturing"},
        "cio_relationships": [{"identifiers": {"id": "u-1"}, "relationship_attributes": {"role": "admin"}}]}),
    );
    assert_eq!(
        db.object(&acme).unwrap().unwrap().attributes["name"],
        Value::from("Acme")
    );
    assert_eq!(db.object_people(&acme).unwrap().len(), 1);
    // identify_anonymous: the relationship waits for the anonymous id's person.
    ok(
        &db,
        json!({"type": "object", "action": "identify_anonymous", "identifiers": {"object_type_id": "1", "object_id": "acme"},
        "attributes": {"name": ""}, "cio_relationships": [{"identifiers": {"anonymous_id": "anon-1"}, "relationship_attributes": {"role": "visitor"}}]}),
    );
    assert!(!db
        .object(&acme)
        .unwrap()
        .unwrap()
        .attributes
        .contains_key("name"));
    ok(
        &db,
        json!({"type": "person", "action": "identify", "identifiers": {"id": "u-2"}, "attributes": {"anonymous_id": "anon-1"}}),
    );
    assert_eq!(
        db.relationships(&Ident::id("u-2")).unwrap()[0].attributes["role"],
        Value::from("visitor")
    );
    ok(
        &db,
        json!({"type": "object", "action": "add_relationships", "identifiers": {"object_type_id": 1, "object_id": "acme"},
        "cio_relationships": [{"identifiers": {"email": "c@example.com"}}]}),
    );
    assert_eq!(db.object_people(&acme).unwrap().len(), 3);
    ok(
        &db,
        json!({"type": "object", "action": "delete_relationships", "identifiers": {"object_type_id": "1", "object_id": "acme"},
        "cio_relationships": [{"identifiers": {"id": "u-1"}}]}),
    );
    assert_eq!(db.object_people(&acme).unwrap().len(), 2);
    ok(
        &db,
        json!({"type": "object", "action": "delete", "identifiers": {"object_type_id": "1", "object_id": "acme"}}),
    );
    assert!(db.object(&acme).unwrap().is_none());
    assert!(db.relationships(&Ident::id("u-2")).unwrap().is_empty());

    db.add_delivery(
        &Ident::id("u-1"),
        NewDelivery::new("dlv-push", Channel::Push).created(T0 - 100),
    )
    .unwrap();
    ok(
        &db,
        json!({"type": "delivery", "action": "event", "identifiers": {"id": "dlv-push"}, "name": "opened",
        "timestamp": T0 - 50, "attributes": {"device_token": "tok"}}),
    );
    let (_, d) = db.delivery("dlv-push").unwrap().unwrap();
    assert_eq!(d.metrics["opened"], T0 - 50);
    assert_eq!(d.status, "opened");
}

// ---------------------------------------------------------------------------------------
// Data Pipelines.

#[test]
fn pipelines_calls_and_semantic_events() {
    let (_d, db, _c) = open();
    let u = Ident::id("p-1");
    ok(
        &db,
        json!({"type": "identify", "userId": "p-1", "traits": {"email": "p@example.com", "createdAt": "2026-04-01T12:00:00.250Z", "trial_end": "2026-05-01T00:00:00Z", "birthday": "1990-01-01"}, "timestamp": "2026-01-01T00:00:00Z"}),
    );
    let p = db.person(&u).unwrap().unwrap();
    assert_eq!(p.attributes["created_at"], Value::Int(1_775_044_800));
    assert_eq!(p.attributes["trial_end"], Value::Int(1_777_593_600));
    assert_eq!(p.attributes["birthday"], Value::from("1990-01-01"));
    // Identify by traits.email with an empty userId.
    ok(
        &db,
        json!({"type": "identify", "userId": "", "traits": {"email": "P@example.com", "plan": "team"}}),
    );
    assert_eq!(
        db.person(&u).unwrap().unwrap().attributes["plan"],
        Value::from("team")
    );
    // A userId shaped like an email or cio_ id is read as such.
    ok(
        &db,
        json!({"type": "track", "userId": "p@example.com", "event": "Clicked", "messageId": "m-1"}),
    );
    ok(
        &db,
        json!({"type": "track", "userId": format!("cio_{}", p.cio_id), "event": "Clicked", "messageId": "m-1"}),
    );
    assert_eq!(
        db.event_count(&u, profiledb::TrackKind::Event, "Clicked", None, None)
            .unwrap(),
        1,
        "messageId deduplicates"
    );
    ok(
        &db,
        json!({"type": "page", "userId": "p-1", "name": "Docs", "category": "Help", "context": {"page": {"url": "https://example.com/help"}}}),
    );
    assert!(has(&db, &u, "page", "https://example.com/help"));
    ok(
        &db,
        json!({"type": "screen", "userId": "p-1", "name": "Home", "properties": {"tab": 2}}),
    );
    assert!(has(&db, &u, "screen", "Home"));

    // Anonymous group relationship and event, then identify with the anonymous id.
    ok(
        &db,
        json!({"type": "group", "anonymousId": "a-1", "groupId": "initech", "traits": {"objectTypeId": 2, "name": "Initech", "relationshipAttributes": {"role": "guest"}}}),
    );
    ok(
        &db,
        json!({"type": "track", "anonymousId": "a-1", "event": "Browsed", "timestamp": "2025-12-31T23:00:00Z"}),
    );
    ok(
        &db,
        json!({"type": "identify", "userId": "p-2", "anonymousId": "a-1"}),
    );
    let p2 = Ident::id("p-2");
    assert_eq!(
        db.relationships(&p2).unwrap()[0].object,
        ObjectRef::new(2, "initech")
    );
    assert!(has(&db, &p2, "event", "Browsed"));
    assert!(kinds(&db, &p2).iter().any(|(k, _)| k == "anon_merge"));

    ok(
        &db,
        json!({"type": "track", "userId": "p-2", "event": "Device Created or Updated", "properties": {"app_version": "3.1"},
        "context": {"device": {"token": "tok-2", "type": "android"}}, "timestamp": "2026-01-01T00:00:00Z"}),
    );
    let dev = &db.devices(&p2).unwrap()[0];
    assert_eq!((dev.platform, dev.last_used), (Platform::Android, T0));
    assert_eq!(dev.attributes["app_version"], Value::from("3.1"));
    ok(
        &db,
        json!({"type": "track", "userId": "p-2", "event": "Device Deleted", "context": {"device": {"token": "tok-2"}}}),
    );
    assert!(db.devices(&p2).unwrap().is_empty());
    ok(
        &db,
        json!({"type": "track", "userId": "p-2", "event": "Relationship Deleted", "properties": {"objectId": "initech", "objectTypeId": "2"}}),
    );
    assert!(db.relationships(&p2).unwrap().is_empty());
    ok(
        &db,
        json!({"type": "group", "userId": "p-2", "groupId": "hooli"}),
    );
    ok(
        &db,
        json!({"type": "track", "anonymousId": "x", "event": "Object Deleted", "properties": {"objectId": "hooli"}}),
    );
    assert!(db.object(&ObjectRef::new(1, "hooli")).unwrap().is_none());

    db.add_delivery(&p2, NewDelivery::new("d-1", Channel::Email))
        .unwrap();
    ok(
        &db,
        json!({"type": "track", "userId": "p-2", "event": "Report Delivery Event", "properties": {"deliveryId": "d-1", "metric": "clicked", "href": "https://example.com"}, "timestamp": "2026-01-01T00:00:10Z"}),
    );
    assert_eq!(
        db.delivery("d-1").unwrap().unwrap().1.metrics["clicked"],
        T0 + 10
    );
    ok(
        &db,
        json!({"type": "track", "userId": "p-2", "event": "Report Content Event", "properties": {"contentId": 7, "actionType": "viewed_content"}}),
    );
    assert!(has(&db, &p2, "event", "Report Content Event"));

    ok(
        &db,
        json!({"type": "alias", "userId": "p-1", "previousId": "p-2"}),
    );
    assert!(db.person(&p2).unwrap().is_none());
    assert!(has(&db, &u, "event", "Browsed"));

    ok(
        &db,
        json!({"type": "track", "userId": "p-1", "event": "User Suppressed"}),
    );
    assert!(db.is_suppressed(&u).unwrap());
    ok(
        &db,
        json!({"type": "track", "userId": "p-1", "event": "User Unsuppressed"}),
    );
    assert!(!db.is_suppressed(&u).unwrap());
    ok(&db, json!({"type": "identify", "userId": "p-1"}));
    ok(
        &db,
        json!({"type": "track", "userId": "p-1", "event": "User Deleted"}),
    );
    assert!(db.person(&u).unwrap().is_none());

    // The batch form: items carry their type.
    let r = ingest(
        &db,
        json!({"batch": [
        {"type": "identify", "userId": "p-9", "traits": {"plan": "x"}},
        {"type": "track", "userId": "p-9", "event": "E"},
        {"type": "page", "userId": "p-9", "properties": {"url": "https://e.com/a"}},
    ], "sentAt": "2026-01-01T00:00:00Z"}),
    );
    assert_eq!((r.applied, r.rejected.len()), (3, 0));
    assert!(db.verify().unwrap().is_ok());
}

// ---------------------------------------------------------------------------------------
// Reporting webhooks (examples from the reporting-webhooks spec).

#[test]
fn webhook_events_create_the_delivery_then_add_metrics() {
    let (_d, db, _c) = open();
    ok(
        &db,
        json!({"metric": "sent", "event_id": "01E4C4CT6YDC7Y5M7FE1GWWPQJ", "object_type": "email", "timestamp": 1613063089,
        "data": {"action_id": 42, "broadcast_id": 9, "customer_id": "0200000001", "delivery_id": "RPILAgUBcRhIBqSfeiIwdIYJKxTY",
                 "identifiers": {"id": "42", "email": "test@example.com", "cio_id": "d9c106000001"}, "recipient": "test@example.com", "subject": "Hi"}}),
    );
    let (pid, d) = db
        .delivery("RPILAgUBcRhIBqSfeiIwdIYJKxTY")
        .unwrap()
        .unwrap();
    let person = db.person(&Ident::id("42")).unwrap().unwrap();
    assert_eq!(person.pid, pid);
    assert_eq!(d.channel, Channel::Email);
    assert_eq!(d.created, 1613063089);
    assert_eq!(d.broadcast_id.as_deref(), Some("9"));
    assert_eq!(d.message_id.as_deref(), Some("42"));
    assert_eq!(d.recipient.as_deref(), Some("test@example.com"));
    assert_eq!(d.subject.as_deref(), Some("Hi"));
    assert_eq!(d.status, "sent");
    ok(
        &db,
        json!({"metric": "clicked", "event_id": "01E4C4CT6YDC7Y5M7FE1GWWPQK", "object_type": "email", "timestamp": 1613063189,
        "data": {"delivery_id": "RPILAgUBcRhIBqSfeiIwdIYJKxTY", "identifiers": {"id": "42"}, "recipient": "test@example.com",
                 "subject": "Hi", "href": "https://example.com", "link_id": 1}}),
    );
    let (_, d) = db
        .delivery("RPILAgUBcRhIBqSfeiIwdIYJKxTY")
        .unwrap()
        .unwrap();
    assert_eq!(d.metrics.len(), 2);
    assert_eq!(d.status, "clicked");
    assert!(kinds(&db, &Ident::id("42"))
        .iter()
        .any(|(k, _)| k == "clicked_email"));
    // SMS by customer_id only.
    ok(
        &db,
        json!({"metric": "sent", "object_type": "sms", "timestamp": 1613063089,
        "data": {"delivery_id": "sms-1", "customer_id": "77", "recipient": "+15551234567", "campaign_id": 3}}),
    );
    assert_eq!(
        db.delivery("sms-1")
            .unwrap()
            .unwrap()
            .1
            .campaign_id
            .as_deref(),
        Some("3")
    );
    // A metric the channel does not have is refused, naming `metric`.
    assert_eq!(
        refused(
            &db,
            json!({"metric": "opened", "object_type": "sms", "timestamp": 1, "data": {"delivery_id": "sms-1", "customer_id": "77"}})
        ),
        "metric"
    );
    // Customer subscription events.
    ok(
        &db,
        json!({"metric": "unsubscribed", "event_id": "x", "object_type": "customer", "timestamp": 1613063089,
        "data": {"customer_id": "0200000001", "email_address": "test@example.com", "identifiers": {"id": "42", "email": "test@example.com"}}}),
    );
    assert!(db.person(&Ident::id("42")).unwrap().unwrap().unsubscribed());
    ok(
        &db,
        json!({"metric": "cio_subscription_preferences_changed", "object_type": "customer", "timestamp": 1613063090,
        "data": {"identifiers": {"id": "42"}, "content": "{\"topics\":{\"topic_2\":true}}"}}),
    );
    let p = db.person(&Ident::id("42")).unwrap().unwrap();
    assert_eq!(
        p.attributes["cio_subscription_preferences"]
            .as_map()
            .unwrap()["topics"]
            .as_map()
            .unwrap()["topic_2"],
        Value::Bool(true)
    );
}

#[test]
fn a_batch_of_webhook_events_for_one_new_delivery_lands_in_one_commit() {
    let (_d, db, _c) = open();
    let before = db.stats().unwrap().commit_seq;
    // The first event records the delivery; the later ones find it inside the same write
    // (the opened event names nobody, so it needs the delivery to be recorded by then).
    let r = ingest(
        &db,
        json!({"batch": [
            {"metric": "sent", "object_type": "email", "timestamp": 100,
             "data": {"delivery_id": "dl-new", "identifiers": {"id": "7"}, "campaign_id": 3, "subject": "Hi"}},
            {"metric": "opened", "object_type": "email", "timestamp": 200, "data": {"delivery_id": "dl-new"}},
            {"metric": "clicked", "object_type": "email", "timestamp": 300,
             "data": {"delivery_id": "dl-new", "customer_id": "7", "href": "https://example.com"}},
        ]}),
    );
    assert!(r.rejected.is_empty(), "{}", r.rejected[0]);
    assert_eq!(r.applied, 3);
    assert_eq!(
        db.stats().unwrap().commit_seq,
        before + 1,
        "the batch is one commit: nothing was committed early to plan the webhooks"
    );
    let (pid, d) = db.delivery("dl-new").unwrap().unwrap();
    assert_eq!(db.person(&Ident::id("7")).unwrap().unwrap().pid, pid);
    assert_eq!(d.created, 100);
    assert_eq!(d.campaign_id.as_deref(), Some("3"));
    assert_eq!(d.subject.as_deref(), Some("Hi"));
    assert_eq!(
        d.metrics.into_iter().collect::<Vec<_>>(),
        vec![
            ("clicked".to_owned(), 300),
            ("opened".to_owned(), 200),
            ("sent".to_owned(), 100)
        ]
    );
    assert_eq!(d.status, "clicked");
    let who = Ident::id("7");
    for kind in ["sent_email", "opened_email", "clicked_email"] {
        assert!(kinds(&db, &who).iter().any(|(k, _)| k == kind), "{kind}");
    }

    // An event that names nobody, before any event records its delivery: refused, the
    // rest of the batch still applies.
    let r = ingest(
        &db,
        json!({"batch": [
            {"metric": "opened", "object_type": "email", "timestamp": 400, "data": {"delivery_id": "dl-2"}},
            {"metric": "sent", "object_type": "email", "timestamp": 500,
             "data": {"delivery_id": "dl-2", "identifiers": {"id": "7"}}},
        ]}),
    );
    assert_eq!(r.applied, 1);
    assert_eq!(r.rejected.len(), 1);
    assert_eq!(r.rejected[0].item, Some(0));
    assert_eq!(r.rejected[0].field(), Some("batch[0].data.identifiers"));
    let (_, d) = db.delivery("dl-2").unwrap().unwrap();
    assert_eq!(d.metrics.keys().collect::<Vec<_>>(), vec!["sent"]);
}

// ---------------------------------------------------------------------------------------
// Refusals.

#[test]
fn every_refusal_names_the_field() {
    let (_d, db, _c) = open();
    db.add_delivery(&Ident::id("x"), NewDelivery::new("d-1", Channel::Email))
        .unwrap();
    let cases = [
        (json!([1, 2]), "message"),
        (json!({"hello": 1}), "type"),
        (json!({"type": "persona", "action": "identify"}), "type"),
        (
            json!({"type": "person", "identifiers": {"id": "a"}}),
            "action",
        ),
        (
            json!({"type": "person", "action": "fly", "identifiers": {"id": "a"}}),
            "action",
        ),
        (
            json!({"type": "person", "action": "identify"}),
            "identifiers",
        ),
        (
            json!({"type": "person", "action": "identify", "identifiers": {"id": "a", "email": "a@x.com"}}),
            "identifiers",
        ),
        (
            json!({"type": "person", "action": "identify", "identifiers": {"idd": "a"}}),
            "identifiers.idd",
        ),
        (
            json!({"type": "person", "action": "identify", "identifiers": {"id": ""}}),
            "identifiers.id",
        ),
        (
            json!({"type": "person", "action": "identify", "identifiers": {"anonymous_id": "z"}}),
            "identifiers.anonymous_id",
        ),
        (
            json!({"type": "person", "action": "identify", "identifiers": {"id": "a"}, "attributes": {"plan": "x".repeat(2000)}}),
            "attributes.plan",
        ),
        (
            json!({"type": "person", "action": "identify", "identifiers": {"id": "a"}, "attributes": {"_update": "yes"}}),
            "attributes._update",
        ),
        (
            json!({"type": "person", "action": "identify", "identifiers": {"id": "a"}, "timestamp": "soon"}),
            "timestamp",
        ),
        (
            json!({"type": "person", "action": "identify", "identifiers": {"id": "a"}, "cio_relationships": [{"identifiers": {"object_type_id": "0", "object_id": "o"}}]}),
            "cio_relationships[0].identifiers.object_type_id",
        ),
        (
            json!({"type": "person", "action": "event", "identifiers": {"id": "a"}}),
            "name",
        ),
        (
            json!({"type": "person", "action": "event", "identifiers": {"id": "a"}, "name": "n".repeat(101)}),
            "name",
        ),
        (
            json!({"type": "person", "action": "add_device", "identifiers": {"id": "a"}, "device": {"token": "t", "platform": "windows"}}),
            "device.platform",
        ),
        (
            json!({"type": "person", "action": "add_device", "identifiers": {"id": "a"}, "device": {"platform": "ios"}}),
            "device.token",
        ),
        (
            json!({"type": "person", "action": "merge", "primary": {"id": "a"}}),
            "secondary",
        ),
        (
            json!({"type": "object", "action": "identify", "identifiers": {"cio_object_id": "ob1"}}),
            "identifiers.cio_object_id",
        ),
        (
            json!({"type": "object", "action": "identify", "identifiers": {"object_type_id": "1", "object_id": "o"}, "attributes": {"object_id": "x"}}),
            "attributes.object_id",
        ),
        (
            json!({"type": "object", "action": "add_relationships", "identifiers": {"object_type_id": "1", "object_id": "o"}}),
            "cio_relationships",
        ),
        (
            json!({"type": "delivery", "action": "event", "identifiers": {"id": "d-1"}, "name": "exploded"}),
            "name",
        ),
        (
            json!({"type": "identify", "traits": {"plan": "x"}}),
            "userId",
        ),
        (
            json!({"type": "identify", "userId": "a", "timestamp": "yesterday"}),
            "timestamp",
        ),
        (
            json!({"type": "identify", "userId": "a", "traits": {"createdAt": "April"}}),
            "traits.createdAt",
        ),
        (json!({"type": "track", "userId": "a"}), "event"),
        (json!({"type": "track", "event": "E"}), "userId"),
        (
            json!({"type": "track", "userId": "a", "event": "E", "properties": 5}),
            "properties",
        ),
        (
            json!({"type": "track", "userId": "a", "event": "Report Delivery Event", "properties": {"metric": "opened"}}),
            "properties.deliveryId",
        ),
        (
            json!({"type": "track", "userId": "a", "event": "Report Delivery Event", "properties": {"deliveryId": "d-1", "metric": "replied"}}),
            "properties.metric",
        ),
        (
            json!({"type": "track", "userId": "a", "event": "Device Created or Updated", "context": {"device": {"token": "t"}}}),
            "context.device.type",
        ),
        (
            json!({"type": "track", "userId": "a", "event": "Object Deleted", "properties": {}}),
            "properties.objectId",
        ),
        (json!({"type": "group", "userId": "a"}), "groupId"),
        (
            json!({"type": "group", "userId": "a", "groupId": "g", "traits": {"object_type_id": "zero"}}),
            "traits.object_type_id",
        ),
        (json!({"type": "alias", "userId": "a"}), "previousId"),
        (
            json!({"object_type": "fax", "metric": "sent", "data": {"delivery_id": "d"}}),
            "object_type",
        ),
        (
            json!({"object_type": "email", "metric": "sent", "data": {}}),
            "data.delivery_id",
        ),
        (
            json!({"object_type": "email", "metric": "sent", "data": {"delivery_id": "new"}}),
            "data.identifiers",
        ),
        (json!({"batch": 3}), "batch"),
        (
            json!({"type": "profiledb", "action": "restore_begin", "format": 99}),
            "format",
        ),
    ];
    for (msg, field) in cases {
        let before = all_records(&db);
        assert_eq!(refused(&db, msg.clone()), field, "{msg}");
        assert_eq!(all_records(&db), before, "{msg} wrote something");
    }
    let r = db.ingest_str("{not json").unwrap();
    assert_eq!(r.rejected[0].field(), Some("message"));
    assert!(
        r.rejected[0].to_string().contains("not valid JSON"),
        "{}",
        r.rejected[0]
    );
}

#[test]
fn a_refused_message_writes_nothing_even_when_its_first_operations_passed() {
    let (_d, db, _c) = open();
    ok(
        &db,
        json!({"type": "person", "action": "identify", "identifiers": {"id": "keep"}, "attributes": {"a": 1}}),
    );
    let before = all_records(&db);
    // The object identify passes; the relationship's person is malformed.
    let field = refused(
        &db,
        json!({"type": "object", "action": "identify", "identifiers": {"object_type_id": "1", "object_id": "o"},
        "attributes": {"name": "O"}, "cio_relationships": [{"identifiers": {"email": "x".repeat(200)}}]}),
    );
    assert_eq!(field, "cio_relationships[0].identifiers.email");
    // A group whose relationship attribute is over the limit: the object is not created.
    let field = refused(
        &db,
        json!({"type": "group", "userId": "keep", "groupId": "g", "traits": {"name": "G", "relationshipAttributes": {"r": "v".repeat(2000)}}}),
    );
    assert_eq!(field, "traits.relationshipAttributes.r");
    // A webhook whose metric is wrong: the delivery is not created either.
    let field = refused(
        &db,
        json!({"object_type": "webhook", "metric": "opened", "timestamp": 5, "data": {"delivery_id": "w-1", "identifiers": {"id": "keep"}}}),
    );
    assert_eq!(field, "metric");
    assert_eq!(all_records(&db), before);
}

#[test]
fn a_batch_applies_good_items_and_names_refused_ones() {
    let (_d, db, _c) = open();
    let r = ingest(
        &db,
        json!({"batch": [
            {"type": "person", "action": "identify", "identifiers": {"id": "a"}, "attributes": {"n": 1}},
            {"type": "person", "action": "identify", "identifiers": {"id": ""}},
            {"type": "person", "action": "event", "identifiers": {"id": "a"}, "name": "ok"},
            {"type": "person", "action": "event", "identifiers": {"id": "a"}, "name": "x".repeat(200)},
            "not an object",
            {"type": "track", "userId": "b", "event": "Pipelines item"},
            {"batch": []},
            {"type": "person", "action": "suppress", "identifiers": {"id": "c"}},
            {"type": "person", "action": "identify", "identifiers": {"id": "c"}},
            {"type": "person", "action": "identify", "identifiers": {"id": "a"}, "attributes": {"n": 2}},
        ]}),
    );
    assert_eq!(r.applied, 5);
    let refused: Vec<(Option<usize>, &str)> = r
        .rejected
        .iter()
        .map(|x| (x.item, x.field().unwrap()))
        .collect();
    assert_eq!(
        refused,
        vec![
            (Some(1), "batch[1].identifiers.id"),
            (Some(3), "batch[3].name"),
            (Some(4), "batch[4]"),
            (Some(6), "batch[6].batch"),
            (Some(8), "batch[8].identifiers.id"),
        ]
    );
    assert_eq!(
        db.person(&Ident::id("a")).unwrap().unwrap().attributes["n"],
        Value::Int(2)
    );
    assert!(has(&db, &Ident::id("a"), "event", "ok"));
    assert!(has(&db, &Ident::id("b"), "event", "Pipelines item"));
    assert!(db.is_suppressed(&Ident::id("c")).unwrap());
}

#[test]
fn a_file_mixing_good_and_bad_lines() {
    let (_d, db, _c) = open();
    let text = r#"{"type":"person","action":"identify","identifiers":{"id":"a"},"attributes":{"plan":"pro"}}
{"type":"person","action":"identify","identifiers":{"id":"a"},"attributes":{"plan":
{"type":"track","userId":"a","event":"Signed Up"}
{"type":"page"}
{"object_type":"email","metric":"sent","timestamp":10,"data":{"delivery_id":"d-1","identifiers":{"id":"a"}}}
[]
{"type":"person","action":"event","identifiers":{"id":"a"},"name":"later"}"#;
    let mut applied = 0;
    let mut bad = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let r = db.ingest_str(line).unwrap();
        applied += r.applied;
        for x in r.rejected {
            bad.push((n + 1, x.field().unwrap().to_owned()));
        }
    }
    assert_eq!(applied, 4);
    assert_eq!(
        bad,
        vec![
            (2, "message".to_owned()),
            (4, "userId".to_owned()),
            (6, "message".to_owned())
        ]
    );
    let a = Ident::id("a");
    assert!(has(&db, &a, "event", "Signed Up"));
    assert!(has(&db, &a, "event", "later"));
    assert!(db.delivery("d-1").unwrap().is_some());
}

// ---------------------------------------------------------------------------------------
// Export → ingest.

fn rich_db() -> (tempfile::TempDir, ProfileDb) {
    let (dir, db, clock) = open();
    for (id, name, default) in profiledb::synth::topics() {
        db.define_topic(id, &name, default).unwrap();
    }
    db.index_attribute("plan").unwrap();
    db.index_attribute_range("age").unwrap();
    for (name, cond) in profiledb::synth::segments(6) {
        db.create_segment(&name, Some(&cond)).unwrap();
    }
    let manual = db.create_segment("VIPs", None).unwrap();
    db.create_segment("Buyers", Some(r#"event:purchase count >= 1"#))
        .unwrap();
    let mut ops = Vec::new();
    for n in 0..60 {
        ops.extend(profiledb::synth::person_ops(n, 7, T0));
    }
    db.write_batch(&ops).unwrap();
    db.define_object_type(1, "Companies").unwrap();
    clock.advance(60);
    let a = Ident::id(profiledb::synth::person_id(1));
    let b = Ident::id(profiledb::synth::person_id(2));
    db.add_to_segment(manual, &[a.clone(), b.clone()]).unwrap();
    db.track(
        Track::event(a.clone(), "purchase")
            .property("amount", 12.5)
            .id("evt-1"),
    )
    .unwrap();
    db.add_delivery(
        &a,
        NewDelivery::new("dl-1", Channel::Email)
            .campaign_id("5")
            .subject("Hi")
            .created(T0),
    )
    .unwrap();
    db.report_metric(Metric::new("dl-1", "opened").timestamp(T0 + 30))
        .unwrap();
    db.add_device(
        &a,
        DeviceInput::new("tok-a", Platform::Ios).attribute("app_version", "1.0"),
    )
    .unwrap();
    db.push_result("tok-a", profiledb::PushResult::Bounced)
        .unwrap();
    db.identify_object(
        &ObjectRef::new(2, "team"),
        vec![("size".into(), Value::Int(4))],
    )
    .unwrap();
    db.add_relationship(
        &b,
        &ObjectRef::new(2, "team"),
        vec![("seat".into(), Value::from("x"))],
    )
    .unwrap();
    db.track(Track::anonymous("anon-z", "Visited")).unwrap();
    db.add_relationship(
        &Ident::anonymous_id("anon-z"),
        &ObjectRef::new(2, "team"),
        vec![],
    )
    .unwrap();
    db.identify(
        Identify::new(Ident::id(profiledb::synth::person_id(3)))
            .timestamp(T0 + 100)
            .set("plan", "free"),
    )
    .unwrap();
    // Deleted and suppressed people leave pid gaps.
    db.delete(&Ident::id(profiledb::synth::person_id(10)))
        .unwrap();
    db.suppress(&Ident::id(profiledb::synth::person_id(11)))
        .unwrap();
    db.merge(&a, &Ident::id(profiledb::synth::person_id(12)))
        .unwrap();
    clock.advance(3600);
    db.refresh().unwrap();
    (dir, db)
}

#[test]
fn export_then_ingest_restores_an_equal_database() {
    let (_d1, db) = rich_db();
    let mut out = Vec::new();
    let lines = db.export(&mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(lines as usize, text.lines().count());
    let (_d2, copy, _c) = open();
    for (n, line) in text.lines().enumerate() {
        let r = copy.ingest_str(line).unwrap();
        assert!(r.rejected.is_empty(), "line {}: {}", n + 1, r.rejected[0]);
    }
    assert_eq!(
        all_records(&copy)
            .into_iter()
            .filter(|(f, k, _)| *f != Family::Meta || k.as_slice() != b"counters")
            .collect::<Vec<_>>(),
        all_records(&db)
            .into_iter()
            .filter(|(f, k, _)| *f != Family::Meta || k.as_slice() != b"counters")
            .collect::<Vec<_>>()
    );
    let people = db.people().unwrap();
    assert_eq!(copy.people().unwrap(), people);
    assert!(people.len() > 50);
    for p in &people {
        let who = Ident::cio_id(p.cio_id.clone());
        assert_eq!(
            copy.profile(&who, 1000).unwrap(),
            db.profile(&who, 1000).unwrap()
        );
        assert_eq!(
            copy.activities(&who, &ActivityFilter::new(10_000)).unwrap(),
            db.activities(&who, &ActivityFilter::new(10_000)).unwrap()
        );
        assert_eq!(
            copy.deliveries(&who, 1000).unwrap(),
            db.deliveries(&who, 1000).unwrap()
        );
        assert_eq!(copy.devices(&who).unwrap(), db.devices(&who).unwrap());
        assert_eq!(
            copy.relationships(&who).unwrap(),
            db.relationships(&who).unwrap()
        );
    }
    for o in [ObjectRef::new(1, "company-1"), ObjectRef::new(2, "team")] {
        assert_eq!(copy.object(&o).unwrap(), db.object(&o).unwrap());
        assert_eq!(
            copy.object_people(&o).unwrap(),
            db.object_people(&o).unwrap()
        );
    }
    assert_eq!(copy.object_types().unwrap(), db.object_types().unwrap());
    assert_eq!(copy.topics(), db.topics());
    assert_eq!(copy.segments(), db.segments());
    assert_eq!(copy.attribute_catalogue(), db.attribute_catalogue());
    assert_eq!(
        copy.anonymous_events("anon-z", 10).unwrap(),
        db.anonymous_events("anon-z", 10).unwrap()
    );
    for cond in [
        "all",
        "segment:VIPs",
        r#"attr.plan = "free""#,
        "attr.age > 40",
        "unsubscribed",
        "topic:3",
        "related:2:team",
    ] {
        assert_eq!(copy.count(cond).unwrap(), db.count(cond).unwrap(), "{cond}");
    }
    assert_eq!(copy.stats().unwrap().people, db.stats().unwrap().people);
    assert!(copy
        .is_suppressed(&Ident::id(profiledb::synth::person_id(11)))
        .unwrap());
    assert!(db.verify().unwrap().is_ok());
    let v = copy.verify().unwrap();
    assert!(v.is_ok(), "{:?}", v.problems);
    assert_eq!(v.records, db.verify().unwrap().records);

    // New people continue the original's pid sequence.
    let next_a = db.identify(Identify::new(Ident::id("new"))).unwrap();
    let next_b = copy.identify(Identify::new(Ident::id("new"))).unwrap();
    assert_eq!(next_a, next_b);
}

#[test]
fn a_restore_refuses_a_non_empty_database_and_damaged_lines() {
    let (_d1, db) = rich_db();
    let mut out = Vec::new();
    db.export(&mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // Into a database that holds data.
    let (_d2, other, _c) = open();
    other.identify(Identify::new(Ident::id("x"))).unwrap();
    let r = other.ingest_str(lines[0]).unwrap();
    assert_eq!(r.rejected[0].field(), Some("action"));
    // A damaged value: one hex digit changed.
    let (_d3, copy, _c) = open();
    assert!(copy.ingest_str(lines[0]).unwrap().rejected.is_empty());
    let mut msg: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
    let v = msg["records"][0][2].as_str().unwrap().to_owned();
    let last = if v.ends_with('0') { "1" } else { "0" };
    msg["records"][0][2] = json!(format!("{}{last}", &v[..v.len() - 1]));
    let before = all_records(&copy);
    let r = copy.ingest(&msg).unwrap();
    assert_eq!(r.rejected[0].field(), Some("records[0].value"));
    assert_eq!(all_records(&copy), before);
    // The same line twice: refused, never overwritten.
    assert!(copy.ingest_str(lines[1]).unwrap().rejected.is_empty());
    let r = copy.ingest_str(lines[1]).unwrap();
    assert_eq!(r.rejected[0].field(), Some("records[0].key"));
    // Nothing else writes while a restore is in progress, and the header comes once.
    let err = copy
        .identify(Identify::new(Ident::id("intruder")))
        .unwrap_err();
    assert_eq!(input_field(&err), "database");
    let r = copy
        .ingest(&json!({"type": "person", "identifiers": {"id": "intruder"}, "action": "identify"}))
        .unwrap();
    assert_eq!(r.rejected.len(), 1);
    let r = copy.ingest_str(lines[0]).unwrap();
    assert_eq!(r.rejected[0].field(), Some("action"));
    // The end line checks that every record arrived.
    let r = copy.ingest_str(lines[lines.len() - 1]).unwrap();
    assert_eq!(r.rejected[0].field(), Some("records"));
    // Restore lines without a restore_begin are refused, even into an empty database.
    let (_d4, stray, _c) = open();
    let r = stray.ingest_str(lines[1]).unwrap();
    assert_eq!(r.rejected[0].field(), Some("action"));
    let r = stray.ingest_str(lines[lines.len() - 1]).unwrap();
    assert_eq!(r.rejected[0].field(), Some("action"));
    // A database whose only data is a declared index is not empty: the header would
    // overwrite the declaration.
    let (_d5, indexed, _c) = open();
    indexed.index_attribute("plan").unwrap();
    let r = indexed.ingest_str(lines[0]).unwrap();
    assert_eq!(r.rejected[0].field(), Some("action"));
}

// ---------------------------------------------------------------------------------------
// Every example of the specs (tests/fixtures/specs/README.md).

#[test]
fn every_spec_example_is_ingested() {
    let (_d, db, _c) = open();
    let files = [
        include_str!("fixtures/specs/track-v2-examples.jsonl"),
        include_str!("fixtures/specs/pipelines-examples.jsonl"),
        include_str!("fixtures/specs/reporting-webhooks-examples.jsonl"),
    ];
    let mut refused = Vec::new();
    let mut applied = 0;
    for (f, text) in files.iter().enumerate() {
        for (n, line) in text.lines().enumerate() {
            let r = db.ingest_str(line).unwrap();
            applied += r.applied;
            for x in r.rejected {
                refused.push((f, n + 1, x.field().unwrap().to_owned()));
            }
        }
    }
    // Only the Pipelines group example, whose timestamp ends in a stray comma.
    assert_eq!(refused, vec![(1, 5, "timestamp".to_owned())]);
    assert!(applied >= 25, "{applied}");
    // The v2 examples end with a batch that identifies 42 again, after its suppress
    // and unsuppress: 42 exists with the batch's attributes.
    let p = db.person(&Ident::id("42")).unwrap().unwrap();
    assert_eq!(p.attributes["first_name"], Value::from("Jane"));
    // The identify_anonymous example's visitor is related to acme (in a fresh database:
    // a later example deletes acme, and its relationships with it).
    let (_d2, fresh, _c2) = open();
    let line = files[0]
        .lines()
        .find(|l| l.contains("identify_anonymous"))
        .unwrap();
    assert!(fresh.ingest_str(line).unwrap().rejected.is_empty());
    ok(
        &fresh,
        json!({"type": "person", "action": "identify", "identifiers": {"id": "v"}, "attributes": {"anonymous_id": "anon-abc-123"}}),
    );
    assert_eq!(
        fresh.relationships(&Ident::id("v")).unwrap()[0].object,
        ObjectRef::new(1, "acme")
    );
    // The webhook examples: the email and SMS share a delivery id, so the SMS event
    // reports `sent` again on the email delivery it names.
    let (_, d) = db
        .delivery("RPILAgUBcRhIBqSfeiIwdIYJKxTY")
        .unwrap()
        .unwrap();
    assert_eq!(d.channel, Channel::Email);
    assert_eq!(d.status, "sent");
    assert!(db.person(&Ident::id("97980cfea0067")).unwrap().is_some());
    assert!(db.verify().unwrap().is_ok());
}

#[test]
fn consecutive_valid_batch_items_commit_together() {
    let (_d, db, _c) = open();
    let item = |i: usize| json!({"type": "person", "action": "event", "identifiers": {"id": format!("u-{i}")}, "name": "e"});
    let seq = db.stats().unwrap().commit_seq;
    let r = ingest(&db, json!({"batch": (0..50).map(item).collect::<Vec<_>>()}));
    assert_eq!((r.applied, r.rejected.len()), (50, 0));
    assert_eq!(
        db.stats().unwrap().commit_seq,
        seq + 1,
        "one commit for the whole batch"
    );
    // One refused item in the middle: the items before it commit together, then the rest.
    let mut items: Vec<_> = (50..60).map(item).collect();
    items[4] =
        json!({"type": "person", "action": "event", "identifiers": {"id": "u-x"}, "name": ""});
    let seq = db.stats().unwrap().commit_seq;
    let r = ingest(&db, json!({ "batch": items }));
    assert_eq!((r.applied, r.rejected[0].item), (9, Some(4)));
    assert_eq!(db.stats().unwrap().commit_seq, seq + 2);
    assert_eq!(db.people().unwrap().len(), 59);
}

#[test]
fn export_refuses_to_copy_a_damaged_record() {
    let (_d, db, _c) = open();
    db.identify(Identify::new(Ident::id("a")).set("plan", "pro"))
        .unwrap();
    let (key, mut value) = db
        .raw_records(profiledb::Family::Attributes)
        .unwrap()
        .pop()
        .unwrap();
    *value.last_mut().unwrap() ^= 1;
    db.raw_put(profiledb::Family::Attributes, &key, &value)
        .unwrap();
    let mut out = Vec::new();
    let err = db.export(&mut out).unwrap_err();
    assert!(err.is_corruption(), "{err}");
}
