//! The whole profile through the public API: events and the timeline, anonymous
//! activity, deliveries, devices, objects and relationships, merge, the overview, and
//! deletion leaving nothing behind in any family.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use profiledb::{
    kinds, ActivityFilter, Channel, DeviceInput, DeviceStatus, Durability, Family, Ident, Identify,
    IgnoreReason, InputReason, Limits, Metric, NewDelivery, ObjectRef, Outcome, Platform,
    ProfileDb, PushResult, Track, TrackKind, Value,
};

mod common;
use common::{input_field, open, T0};

fn u(id: &str) -> Ident {
    Ident::id(id)
}

// ---------------------------------------------------------------- events and activity

#[test]
fn tracking_for_an_unknown_id_creates_the_person() {
    let (_d, db, _c) = open();
    let out = db.track(Track::event(u("new"), "signed_up")).unwrap();
    assert!(matches!(out, Outcome::Recorded(Some(_))), "{out:?}");
    assert!(db.person(&u("new")).unwrap().is_some());
    let acts = db.activities(&u("new"), &ActivityFilter::new(10)).unwrap();
    assert_eq!(acts[0].kind, kinds::EVENT);
    assert_eq!(acts[0].name.as_deref(), Some("signed_up"));
}

#[test]
fn event_ids_deduplicate() {
    let (_d, db, _c) = open();
    let t = Track::event(u("a"), "purchase")
        .property("amount", 10)
        .id("01HZX3");
    assert!(matches!(db.track(t.clone()).unwrap(), Outcome::Recorded(_)));
    assert_eq!(db.track(t).unwrap(), Outcome::Duplicate);
    // The same id for another person is a different event.
    assert!(matches!(
        db.track(Track::event(u("b"), "purchase").id("01HZX3"))
            .unwrap(),
        Outcome::Recorded(_)
    ));
    let events = db
        .activities(&u("a"), &ActivityFilter::new(10).kind("event"))
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].data.as_map().unwrap()["amount"], Value::Int(10));
}

#[test]
fn backfilled_events_take_their_place_in_time() {
    let (_d, db, _c) = open();
    db.track(Track::event(u("a"), "late").timestamp(T0 - 10))
        .unwrap();
    db.track(Track::event(u("a"), "backfilled").timestamp(T0 - 86_400 * 30))
        .unwrap();
    db.track(Track::event(u("a"), "now")).unwrap();
    let names: Vec<String> = db
        .activities(&u("a"), &ActivityFilter::new(10).kind("event"))
        .unwrap()
        .into_iter()
        .filter_map(|a| a.name)
        .collect();
    assert_eq!(names, ["now", "late", "backfilled"]);
}

#[test]
fn the_timeline_filters_by_type_name_time_and_cursor() {
    let (_d, db, _c) = open();
    for i in 0..10 {
        db.track(Track::event(u("a"), if i % 2 == 0 { "even" } else { "odd" }).timestamp(T0 + i))
            .unwrap();
    }
    db.track(Track::page(u("a"), "/pricing").timestamp(T0 + 20))
        .unwrap();
    db.track(Track::screen(u("a"), "Settings").timestamp(T0 + 21))
        .unwrap();
    let a = u("a");
    let pages = db
        .activities(&a, &ActivityFilter::new(10).kind("page"))
        .unwrap();
    assert_eq!(pages.len(), 1);
    assert_eq!(pages[0].name.as_deref(), Some("/pricing"));
    let evens = db
        .activities(&a, &ActivityFilter::new(10).name("even"))
        .unwrap();
    assert_eq!(evens.len(), 5);
    let window = db
        .activities(
            &a,
            &ActivityFilter::new(10)
                .kind("event")
                .since(T0 + 3)
                .until(T0 + 6),
        )
        .unwrap();
    let times: Vec<i64> = window.iter().map(|x| x.timestamp).collect();
    assert_eq!(times, [T0 + 5, T0 + 4, T0 + 3]);
    // Paging: three pages of 4 cover every event, newest first, without repeats.
    let mut seen = Vec::new();
    let mut filter = ActivityFilter::new(4).kind("event");
    loop {
        let page = db.activities(&a, &filter).unwrap();
        if page.is_empty() {
            break;
        }
        filter = filter.before(page.last().unwrap().cursor);
        seen.extend(page.into_iter().map(|x| x.timestamp));
    }
    assert_eq!(seen, (0..10).rev().map(|i| T0 + i).collect::<Vec<_>>());
}

#[test]
fn event_counts_come_from_the_name_index() {
    let (_d, db, _c) = open();
    for t in [10, 20, 30, 40] {
        db.track(Track::event(u("a"), "purchase").timestamp(T0 + t))
            .unwrap();
    }
    db.track(Track::event(u("a"), "purchase_x").timestamp(T0 + 25))
        .unwrap();
    db.track(Track::page(u("a"), "purchase").timestamp(T0 + 25))
        .unwrap();
    let a = u("a");
    let count = |since, until| {
        db.event_count(&a, TrackKind::Event, "purchase", since, until)
            .unwrap()
    };
    assert_eq!(count(None, None), 4);
    assert_eq!(count(Some(T0 + 20), Some(T0 + 40)), 2);
    assert_eq!(count(Some(T0 + 41), None), 0);
    assert_eq!(
        db.event_count(&a, TrackKind::Page, "purchase", None, None)
            .unwrap(),
        1
    );
    assert_eq!(
        db.event_count(&u("nobody"), TrackKind::Event, "purchase", None, None)
            .unwrap(),
        0
    );
}

#[test]
fn event_limits_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let db = ProfileDb::builder()
        .durability(Durability::Buffered)
        .limits(Limits {
            max_event_data_bytes: 50,
            ..Limits::default()
        })
        .open(dir.path())
        .unwrap();
    let err = db.track(Track::event(u("a"), "x".repeat(101))).unwrap_err();
    assert_eq!(input_field(&err), "name");
    let err = db.track(Track::event(u("a"), "   ")).unwrap_err();
    assert_eq!(err.input().unwrap().reason, InputReason::Empty);
    let err = db
        .track(Track::event(u("a"), "big").property("blob", "y".repeat(60)))
        .unwrap_err();
    assert_eq!(input_field(&err), "data");
    assert_eq!(db.stats().unwrap().people, 0, "nothing written");
    // Names are trimmed.
    db.track(Track::event(u("a"), "  padded  ")).unwrap();
    let acts = db.activities(&u("a"), &ActivityFilter::new(1)).unwrap();
    assert_eq!(acts[0].name.as_deref(), Some("padded"));
}

#[test]
fn expire_removes_old_activity_and_its_index() {
    let (_d, db, _c) = open();
    db.track(Track::event(u("a"), "old").timestamp(T0 - 1000).id("e1"))
        .unwrap();
    db.track(Track::event(u("a"), "new").timestamp(T0)).unwrap();
    db.track(Track::anonymous("anon", "viewed").timestamp(T0 - 1000))
        .unwrap();
    let removed = db.expire(T0 - 10).unwrap();
    assert_eq!(removed, 2, "one timeline event and one anonymous event");
    let names: Vec<_> = db
        .activities(&u("a"), &ActivityFilter::new(10).kind("event"))
        .unwrap()
        .into_iter()
        .filter_map(|x| x.name)
        .collect();
    assert_eq!(names, ["new"]);
    assert_eq!(
        db.event_count(&u("a"), TrackKind::Event, "old", None, None)
            .unwrap(),
        0
    );
    assert!(db.anonymous_events("anon", 10).unwrap().is_empty());
    assert!(db.verify().unwrap().is_ok());
    // Retention is off by default.
    assert_eq!(db.apply_retention().unwrap(), 0);
}

// ---------------------------------------------------------------- anonymous activity

#[test]
fn anonymous_events_move_to_the_person_identified_with_the_anonymous_id() {
    let (_d, db, clock) = open();
    db.track(Track::anonymous("anon-1", "Product Viewed").property("sku", "X1"))
        .unwrap();
    db.track(Track::anonymous("anon-1", "Added to Cart").id("ev-9"))
        .unwrap();
    db.add_relationship(
        &Ident::anonymous_id("anon-1"),
        &ObjectRef::new(1, "acme"),
        vec![("role".into(), "viewer".into())],
    )
    .unwrap();
    assert_eq!(db.stats().unwrap().people, 0, "anonymous is not a person");
    assert_eq!(db.anonymous_events("anon-1", 10).unwrap().len(), 2);

    clock.advance(60);
    db.identify(Identify::new(u("p")).set("anonymous_id", "anon-1"))
        .unwrap();
    assert!(db.anonymous_events("anon-1", 10).unwrap().is_empty());
    let acts = db.activities(&u("p"), &ActivityFilter::new(20)).unwrap();
    let kinds_seen: Vec<&str> = acts.iter().map(|a| a.kind.as_str()).collect();
    assert!(kinds_seen.contains(&kinds::ANON_MERGE), "{kinds_seen:?}");
    let events = db
        .activities(&u("p"), &ActivityFilter::new(10).kind("event"))
        .unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(
        db.event_count(&u("p"), TrackKind::Event, "Product Viewed", None, None)
            .unwrap(),
        1
    );
    // The event id moved too: it still deduplicates.
    assert_eq!(
        db.track(Track::event(u("p"), "Added to Cart").id("ev-9"))
            .unwrap(),
        Outcome::Duplicate
    );
    // The relationship carried over.
    let rels = db.relationships(&u("p")).unwrap();
    assert_eq!(rels.len(), 1);
    assert_eq!(rels[0].attributes["role"], Value::from("viewer"));
    // Later events by the anonymous id go straight to the person.
    db.track(Track::anonymous("anon-1", "Checkout")).unwrap();
    assert_eq!(
        db.event_count(&u("p"), TrackKind::Event, "Checkout", None, None)
            .unwrap(),
        1
    );
    assert!(db.verify().unwrap().is_ok());
}

// ---------------------------------------------------------------- deliveries

#[test]
fn deliveries_keep_metrics_status_and_activity() {
    let (_d, db, _c) = open();
    db.add_delivery(
        &u("a"),
        NewDelivery::new("d1", Channel::Email)
            .campaign_id("7")
            .recipient("a@x.io")
            .subject("Hi")
            .created(T0),
    )
    .unwrap();
    db.report_metric(Metric::new("d1", "sent").timestamp(T0 + 1))
        .unwrap();
    db.report_metric(Metric::new("d1", "opened").timestamp(T0 + 50))
        .unwrap();
    // A late report of an earlier metric does not move the status back.
    db.report_metric(Metric::new("d1", "delivered").timestamp(T0 + 10))
        .unwrap();
    db.report_metric(
        Metric::new("d1", "clicked")
            .timestamp(T0 + 60)
            .href("https://x.io"),
    )
    .unwrap();
    let (owner, d) = db.delivery("d1").unwrap().unwrap();
    assert_eq!(Some(owner), db.person(&u("a")).unwrap().map(|p| p.pid));
    assert_eq!(d.status, "clicked");
    assert_eq!(d.metrics["delivered"], T0 + 10);
    assert_eq!(d.metrics.len(), 4);
    assert_eq!(d.campaign_id.as_deref(), Some("7"));
    let acts = db
        .activities(&u("a"), &ActivityFilter::new(10).kind("clicked_email"))
        .unwrap();
    assert_eq!(acts.len(), 1);
    assert_eq!(acts[0].timestamp, T0 + 60);
    assert_eq!(
        acts[0].data.as_map().unwrap()["href"],
        Value::from("https://x.io")
    );
}

#[test]
fn metrics_are_validated_per_channel() {
    let (_d, db, _c) = open();
    for (i, channel) in Channel::ALL.iter().enumerate() {
        let id = format!("d{i}");
        db.add_delivery(&u("a"), NewDelivery::new(id.clone(), *channel))
            .unwrap();
        for metric in [
            "sent",
            "delivered",
            "opened",
            "clicked",
            "converted",
            "bounced",
            "dropped",
            "failed",
            "spammed",
            "undeliverable",
            "unsubscribed",
            "replied",
            "bogus",
        ] {
            let ok = channel.metrics().contains(&metric);
            let result = db.report_metric(Metric::new(id.clone(), metric));
            assert_eq!(result.is_ok(), ok, "{metric} on {channel}: {result:?}");
            if let Err(e) = result {
                assert_eq!(input_field(&e), "metric");
                assert!(e.to_string().contains(channel.as_str()), "{e}");
            }
        }
    }
    // SMS metrics are `_twilio` in the timeline.
    db.add_delivery(&u("b"), NewDelivery::new("sms1", Channel::Sms))
        .unwrap();
    db.report_metric(Metric::new("sms1", "delivered")).unwrap();
    assert_eq!(
        db.activities(&u("b"), &ActivityFilter::new(1)).unwrap()[0].kind,
        "delivered_twilio"
    );
}

#[test]
fn delivery_ids_are_unique_and_unknown_ones_are_not_found() {
    let (_d, db, _c) = open();
    db.add_delivery(&u("a"), NewDelivery::new("d1", Channel::Push))
        .unwrap();
    let err = db
        .add_delivery(&u("b"), NewDelivery::new("d1", Channel::Push))
        .unwrap_err();
    assert_eq!(input_field(&err), "delivery_id");
    assert_eq!(
        db.report_metric(Metric::new("nope", "opened")).unwrap(),
        Outcome::NotFound
    );
}

#[test]
fn recent_deliveries_read_newest_first() {
    let (_d, db, _c) = open();
    for i in 0..5 {
        db.add_delivery(
            &u("a"),
            NewDelivery::new(format!("d{i}"), Channel::Email).created(T0 + i),
        )
        .unwrap();
    }
    let ids: Vec<String> = db
        .deliveries(&u("a"), 3)
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(ids, ["d4", "d3", "d2"]);
}

// ---------------------------------------------------------------- devices

#[test]
fn devices_upsert_by_token_and_move_between_people() {
    let (_d, db, _c) = open();
    db.add_device(
        &u("a"),
        DeviceInput::new("tok", Platform::Ios)
            .attribute("app_version", "1.0")
            .attribute("push_enabled", true),
    )
    .unwrap();
    db.add_device(
        &u("a"),
        DeviceInput::new("tok", Platform::Ios)
            .last_used(T0 + 5)
            .attribute("app_version", "1.1"),
    )
    .unwrap();
    let devices = db.devices(&u("a")).unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].attributes["app_version"], Value::from("1.1"));
    assert_eq!(devices[0].attributes["push_enabled"], Value::from("true"));
    assert_eq!(devices[0].last_used, T0 + 5);
    let a = db.person(&u("a")).unwrap().unwrap().pid;
    assert_eq!(db.device_owner("tok").unwrap(), Some(a));

    db.add_device(&u("b"), DeviceInput::new("tok", Platform::Ios))
        .unwrap();
    assert!(db.devices(&u("a")).unwrap().is_empty(), "a lost the token");
    let b = db.person(&u("b")).unwrap().unwrap().pid;
    assert_eq!(db.device_owner("tok").unwrap(), Some(b));
    let change = &db
        .activities(&u("a"), &ActivityFilter::new(1).kind("device_change"))
        .unwrap()[0];
    assert_eq!(
        change.data.as_map().unwrap()["action"],
        Value::from("moved")
    );

    assert!(matches!(
        db.delete_device(&u("b"), "tok").unwrap(),
        Outcome::Updated(_)
    ));
    assert_eq!(db.device_owner("tok").unwrap(), None);
    assert_eq!(db.delete_device(&u("b"), "tok").unwrap(), Outcome::NotFound);
    assert!(db.verify().unwrap().is_ok());
}

#[test]
fn device_status_transitions() {
    let (_d, db, _c) = open();
    db.add_device(&u("a"), DeviceInput::new("t", Platform::Android))
        .unwrap();
    let status = || db.devices(&u("a")).unwrap()[0].status;
    assert_eq!(status(), DeviceStatus::Unused);
    db.push_result("t", PushResult::Sent).unwrap();
    assert_eq!(status(), DeviceStatus::Sent);
    db.push_result("t", PushResult::Bounced).unwrap();
    assert_eq!(status(), DeviceStatus::Bounced);
    db.push_result("t", PushResult::Sent).unwrap();
    assert_eq!(status(), DeviceStatus::Sent, "a success clears one bounce");
    db.push_result("t", PushResult::Bounced).unwrap();
    db.push_result("t", PushResult::Bounced).unwrap();
    assert_eq!(status(), DeviceStatus::Suppressed, "two bounces in a row");
    db.push_result("t", PushResult::Bounced).unwrap();
    assert_eq!(status(), DeviceStatus::Suppressed);
    // Identifying the same token again resets it.
    db.add_device(&u("a"), DeviceInput::new("t", Platform::Android))
        .unwrap();
    assert_eq!(status(), DeviceStatus::Unused);
    assert_eq!(
        db.push_result("unknown", PushResult::Sent).unwrap(),
        Outcome::NotFound
    );
}

#[test]
fn the_device_cap_is_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let db = ProfileDb::builder()
        .durability(Durability::Buffered)
        .limits(Limits {
            max_devices: 2,
            ..Limits::default()
        })
        .open(dir.path())
        .unwrap();
    db.add_device(&u("a"), DeviceInput::new("t1", Platform::Ios))
        .unwrap();
    db.add_device(&u("a"), DeviceInput::new("t2", Platform::Ios))
        .unwrap();
    let err = db
        .add_device(&u("a"), DeviceInput::new("t3", Platform::Ios))
        .unwrap_err();
    assert_eq!(input_field(&err), "device");
    assert!(err.to_string().contains("limit of 2"), "{err}");
    // Updating an existing one is fine at the cap.
    db.add_device(&u("a"), DeviceInput::new("t2", Platform::Android))
        .unwrap();
    let err = db
        .add_device(
            &u("a"),
            DeviceInput::new("t2", Platform::Ios).attribute("_last_status", "sent"),
        )
        .unwrap_err();
    assert_eq!(input_field(&err), "device.attributes._last_status");
    let err = db
        .add_device(&u("a"), DeviceInput::new("", Platform::Ios))
        .unwrap_err();
    assert_eq!(input_field(&err), "device.token");
}

// ---------------------------------------------------------------- objects and relationships

#[test]
fn objects_and_relationships_read_from_both_sides() {
    let (_d, db, _c) = open();
    db.define_object_type(1, "Companies").unwrap();
    let acme = ObjectRef::new(1, "acme");
    db.identify_object(
        &acme,
        vec![
            ("name".into(), "Acme".into()),
            ("tier".into(), "gold".into()),
        ],
    )
    .unwrap();
    db.identify_object(&acme, vec![("tier".into(), Value::Null)])
        .unwrap();
    let obj = db.object(&acme).unwrap().unwrap();
    assert_eq!(obj.attributes.len(), 1);
    assert_eq!(db.object_types().unwrap(), [(1, "Companies".to_owned())]);

    db.add_relationship(&u("a"), &acme, vec![("role".into(), "admin".into())])
        .unwrap();
    db.add_relationship(&u("b"), &acme, vec![]).unwrap();
    db.add_relationship(&u("a"), &acme, vec![("role".into(), "owner".into())])
        .unwrap();
    let rels = db.relationships(&u("a")).unwrap();
    assert_eq!(rels.len(), 1);
    assert_eq!(rels[0].attributes["role"], Value::from("owner"));
    assert_eq!(rels[0].object_attributes["name"], Value::from("Acme"));
    let people = db.object_people(&acme).unwrap();
    assert_eq!(people.len(), 2);
    let a_kinds: Vec<String> = db
        .activities(&u("a"), &ActivityFilter::new(10))
        .unwrap()
        .into_iter()
        .map(|x| x.kind)
        .collect();
    assert!(a_kinds.contains(&kinds::ADD_RELATIONSHIP.to_owned()));
    assert!(a_kinds.contains(&kinds::RELATIONSHIP_ATTRIBUTE_CHANGE.to_owned()));

    db.delete_relationship(&u("b"), &acme).unwrap();
    assert_eq!(db.object_people(&acme).unwrap().len(), 1);
    assert_eq!(
        db.activities(&u("b"), &ActivityFilter::new(1)).unwrap()[0].kind,
        kinds::DELETE_RELATIONSHIP
    );

    // Deleting the object removes its relationships.
    db.delete_object(&acme).unwrap();
    assert!(db.object(&acme).unwrap().is_none());
    assert!(db.relationships(&u("a")).unwrap().is_empty());
    assert!(db.object_people(&acme).unwrap().is_empty());
    assert!(db.raw_records(Family::Members).unwrap().is_empty());
    assert!(db.verify().unwrap().is_ok());
}

#[test]
fn object_input_is_checked() {
    let (_d, db, _c) = open();
    let err = db
        .identify_object(&ObjectRef::new(0, "x"), vec![])
        .unwrap_err();
    assert_eq!(input_field(&err), "object_type_id");
    let err = db
        .identify_object(&ObjectRef::new(1, "x".repeat(151)), vec![])
        .unwrap_err();
    assert_eq!(input_field(&err), "object_id");
    let err = db
        .identify_object(
            &ObjectRef::new(1, "x"),
            vec![("object_id".into(), "y".into())],
        )
        .unwrap_err();
    assert_eq!(err.input().unwrap().reason, InputReason::Reserved);
    assert_eq!(
        profiledb::internal::parse_type_id("2").unwrap(),
        2,
        "string-formatted type ids"
    );
    assert!(profiledb::internal::parse_type_id("zero").is_err());
}

// ---------------------------------------------------------------- merge

#[test]
fn merge_follows_customerio_rules() {
    let (_d, db, clock) = open();
    db.identify(
        Identify::new(u("p"))
            .set("email", "p@x.io")
            .set("plan", "pro")
            .set("nick", ""),
    )
    .unwrap();
    db.identify(
        Identify::new(u("s"))
            .set("email", "s@x.io")
            .set("plan", "free")
            .set("city", "Oslo"),
    )
    .unwrap();
    clock.advance(10);
    db.track(Track::event(u("s"), "bought").id("e1")).unwrap();
    db.track(Track::event(u("p"), "bought").id("e1")).unwrap();
    db.track(Track::event(u("s"), "browsed")).unwrap();
    db.add_delivery(&u("s"), NewDelivery::new("d-s", Channel::Email))
        .unwrap();
    db.report_metric(Metric::new("d-s", "opened")).unwrap();
    db.add_device(&u("s"), DeviceInput::new("tok-s", Platform::Ios))
        .unwrap();
    let acme = ObjectRef::new(1, "acme");
    let globex = ObjectRef::new(1, "globex");
    db.add_relationship(&u("p"), &acme, vec![("role".into(), "admin".into())])
        .unwrap();
    db.add_relationship(&u("s"), &acme, vec![("role".into(), "member".into())])
        .unwrap();
    db.add_relationship(&u("s"), &globex, vec![]).unwrap();

    let out = db.merge(&u("p"), &Ident::email("s@x.io")).unwrap();
    assert!(matches!(out, Outcome::Merged { .. }), "{out:?}");

    let p = db.person(&u("p")).unwrap().unwrap();
    assert_eq!(
        p.attributes["plan"],
        Value::from("pro"),
        "primary keeps its own"
    );
    assert_eq!(
        p.attributes["city"],
        Value::from("Oslo"),
        "inherits what it lacks"
    );
    assert!(db.person(&u("s")).unwrap().is_none());
    assert!(db.person(&Ident::email("s@x.io")).unwrap().is_none());
    assert_eq!(db.stats().unwrap().people, 1);

    assert_eq!(
        db.event_count(&u("p"), TrackKind::Event, "bought", None, None)
            .unwrap(),
        1,
        "the duplicate event id is not doubled"
    );
    assert_eq!(
        db.event_count(&u("p"), TrackKind::Event, "browsed", None, None)
            .unwrap(),
        1
    );
    let (owner, d) = db.delivery("d-s").unwrap().unwrap();
    assert_eq!(owner, p.pid);
    assert_eq!(d.status, "opened");
    assert_eq!(
        db.activities(&u("p"), &ActivityFilter::new(10).kind("opened_email"))
            .unwrap()
            .len(),
        1
    );
    assert_eq!(db.device_owner("tok-s").unwrap(), Some(p.pid));
    let rels = db.relationships(&u("p")).unwrap();
    assert_eq!(rels.len(), 2);
    let acme_rel = rels.iter().find(|r| r.object == acme).unwrap();
    assert_eq!(acme_rel.attributes["role"], Value::from("admin"));
    assert_eq!(db.object_people(&globex).unwrap()[0].0, p.pid);
    assert_eq!(
        db.activities(&u("p"), &ActivityFilter::new(1)).unwrap()[0].kind,
        kinds::PROFILE_MERGE
    );
    assert!(db.verify().unwrap().is_ok(), "{:?}", db.verify().unwrap());
}

#[test]
fn merge_needs_an_existing_primary_and_two_people() {
    let (_d, db, _c) = open();
    db.identify(Identify::new(u("s"))).unwrap();
    assert_eq!(
        db.merge(&u("ghost"), &u("s")).unwrap(),
        Outcome::Ignored(IgnoreReason::NoMatch)
    );
    assert!(db.person(&u("s")).unwrap().is_some(), "nothing happened");
    assert_eq!(db.merge(&u("s"), &u("ghost")).unwrap(), Outcome::NotFound);
    let err = db.merge(&u("s"), &u("s")).unwrap_err();
    assert_eq!(input_field(&err), "secondary");
}

// ---------------------------------------------------------------- overview and deletion

fn full_person(db: &ProfileDb, id: &str) {
    let who = u(id);
    db.identify(
        Identify::new(who.clone())
            .set("email", format!("{id}@x.io"))
            .set("anonymous_id", format!("anon-{id}"))
            .set("plan", "pro"),
    )
    .unwrap();
    for i in 0..5 {
        db.track(Track::event(who.clone(), "e").id(format!("{id}-{i}")))
            .unwrap();
    }
    db.track(Track::page(who.clone(), "/")).unwrap();
    db.add_delivery(&who, NewDelivery::new(format!("d-{id}"), Channel::Push))
        .unwrap();
    db.report_metric(Metric::new(format!("d-{id}"), "delivered"))
        .unwrap();
    db.add_device(&who, DeviceInput::new(format!("tok-{id}"), Platform::Ios))
        .unwrap();
    db.add_relationship(
        &who,
        &ObjectRef::new(1, "acme"),
        vec![("r".into(), 1.into())],
    )
    .unwrap();
}

#[test]
fn the_overview_has_all_seven_parts() {
    let (_d, db, _c) = open();
    full_person(&db, "a");
    db.identify(Identify::new(u("a")).set("unsubscribed", true))
        .unwrap();
    let p = db.profile(&Ident::email("A@x.io"), 3).unwrap().unwrap();
    assert!(p.subscription.unsubscribed);
    assert!(p.subscription.topics.is_empty());
    assert_eq!(p.person.id.as_deref(), Some("a"));
    assert_eq!(p.activities.len(), 3, "the N most recent");
    assert_eq!(p.deliveries.len(), 1);
    assert_eq!(p.deliveries[0].status, "delivered");
    assert!(p.segments.is_empty());
    assert_eq!(p.devices.len(), 1);
    assert_eq!(p.relationships.len(), 1);
    assert!(db.profile(&u("nobody"), 3).unwrap().is_none());
}

#[test]
fn deleting_a_full_person_leaves_nothing_in_any_family() {
    let (_d, db, _c) = open();
    full_person(&db, "keep");
    // Bitmap changes are logged; fold them so the chunks are compared.
    db.checkpoint().unwrap();
    let baseline: Vec<(Family, Vec<u8>)> = Family::ALL
        .iter()
        .filter(|f| **f != Family::Meta)
        .flat_map(|f| {
            db.raw_records(*f)
                .unwrap()
                .into_iter()
                .map(move |(k, _)| (*f, k))
        })
        .collect();
    full_person(&db, "gone");
    db.delete(&u("gone")).unwrap();
    db.checkpoint().unwrap();
    let after: Vec<(Family, Vec<u8>)> = Family::ALL
        .iter()
        .filter(|f| **f != Family::Meta)
        .flat_map(|f| {
            db.raw_records(*f)
                .unwrap()
                .into_iter()
                .map(move |(k, _)| (*f, k))
        })
        .collect();
    // The object they were related to stays; everything of theirs is gone.
    assert_eq!(after, baseline);
    assert!(db.verify().unwrap().is_ok());
}

#[test]
fn identify_carries_cio_relationships_in_both_wire_forms() {
    let (_d, db, _c) = open();
    // Track v2: a plain array.
    let v2 = serde_json::json!({
        "email": "v2@example.com",
        "cio_relationships": [{"identifiers": {"object_type_id": "1", "object_id": "acme"},
                               "relationship_attributes": {"role": "admin"}}]
    });
    db.identify(Identify::from_json(u("u-200"), &v2).unwrap())
        .unwrap();
    let rels = db.relationships(&u("u-200")).unwrap();
    assert_eq!(rels.len(), 1);
    assert_eq!(rels[0].object, ObjectRef::new(1, "acme"));
    assert_eq!(rels[0].attributes["role"], Value::from("admin"));
    // Track v1: an action object.
    let v1 = serde_json::json!({"cio_relationships": {"action": "delete_relationships",
        "relationships": [{"identifiers": {"object_type_id": 1, "object_id": "acme"}}]}});
    assert!(matches!(
        db.identify(Identify::from_json(u("u-200"), &v1).unwrap())
            .unwrap(),
        Outcome::Updated(_)
    ));
    assert!(db.relationships(&u("u-200")).unwrap().is_empty());
    // A malformed entry names its position.
    let bad = serde_json::json!({"cio_relationships": [{"identifiers": {"object_id": "x"}}]});
    let err = Identify::from_json(u("u-200"), &bad).unwrap_err();
    assert_eq!(err.field, "cio_relationships[0].identifiers.object_type_id");
    // An invalid relationship fails the whole identify.
    let err = db
        .identify(Identify::new(u("u-201")).set("plan", "x").relate(
            ObjectRef::new(1, "o"),
            vec![("object_id".into(), "y".into())],
        ))
        .unwrap_err();
    assert!(err.input().is_some());
    assert!(db.person(&u("u-201")).unwrap().is_none());
}

// Regression tests for bugs the model test (tests/model.rs) found in the profile.

/// Bug 1: a merge that gave the primary new attributes left its `updated` time alone.
#[test]
fn profile_bug_01_merge_did_not_touch_updated() {
    let (_d, db, clock) = open();
    db.identify(Identify::new(u("p"))).unwrap();
    db.identify(Identify::new(u("s")).set("plan", "pro"))
        .unwrap();
    clock.advance(60);
    db.merge(&u("p"), &u("s")).unwrap();
    let p = db.person(&u("p")).unwrap().unwrap();
    assert_eq!(p.attributes["plan"], Value::from("pro"));
    assert_eq!(p.updated, T0 + 60);
}

/// Bug 2: a repeated report of an earlier metric took the status back although the
/// metric kept its first time.
#[test]
fn profile_bug_02_repeated_metric_took_the_status() {
    let (_d, db, _c) = open();
    db.add_delivery(&u("a"), NewDelivery::new("d1", Channel::Email))
        .unwrap();
    db.report_metric(Metric::new("d1", "sent").timestamp(T0 + 10))
        .unwrap();
    db.report_metric(Metric::new("d1", "delivered").timestamp(T0 + 20))
        .unwrap();
    db.report_metric(Metric::new("d1", "sent").timestamp(T0 + 30))
        .unwrap();
    let (_, d) = db.delivery("d1").unwrap().unwrap();
    assert_eq!(d.status, "delivered");
    assert_eq!(d.metrics["sent"], T0 + 10);
}

/// Bug 3: deleting an object left relationships kept for anonymous ids, which then
/// moved to the person identified with the anonymous id.
#[test]
fn profile_bug_03_delete_object_left_anonymous_relationships() {
    let (_d, db, _c) = open();
    let acme = ObjectRef::new(1, "acme");
    db.add_relationship(
        &Ident::anonymous_id("anon"),
        &acme,
        vec![("role".into(), "admin".into())],
    )
    .unwrap();
    db.delete_object(&acme).unwrap();
    assert_eq!(
        db.delete_relationship(&Ident::anonymous_id("anon"), &acme)
            .unwrap(),
        Outcome::NotFound
    );
    db.identify(Identify::new(u("u")).set("anonymous_id", "anon"))
        .unwrap();
    assert!(db.relationships(&u("u")).unwrap().is_empty());
    assert!(db.object_people(&acme).unwrap().is_empty());
}

/// Bug 4: a relationship call for an unknown cio_id was ignored but still created the
/// object and its type.
#[test]
fn profile_bug_04_ignored_relationship_created_the_object() {
    let (_d, db, _c) = open();
    let acme = ObjectRef::new(1, "acme");
    assert_eq!(
        db.add_relationship(&Ident::cio_id("00000009"), &acme, vec![])
            .unwrap(),
        Outcome::Ignored(IgnoreReason::UnknownCioId)
    );
    assert!(db.object(&acme).unwrap().is_none());
    assert!(db.object_types().unwrap().is_empty());
}

/// `activity` is stored in per-person blocks of up to 64 records or 4 KiB (see
/// `src/store/timeline.rs`): a timeline of hundreds of events, written out of time order
/// and in batches, spans many blocks and still reads, pages, counts, merges and deletes
/// record by record.
#[test]
fn a_long_timeline_spans_blocks_and_reads_as_records() {
    let (_d, db, _c) = open();
    let mut expected: Vec<(i64, String)> = Vec::new();
    let mut x = 0x2545_f491_u64;
    for i in 0..700i64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Mostly appended in time order, one in five backfilled into the past.
        let t = if x % 5 == 0 {
            T0 - (x % 100_000) as i64
        } else {
            T0 + i * 60
        };
        let name = ["view", "click", "purchase"][(x % 3) as usize];
        let (who, pad) = if i % 7 == 0 {
            ("b", 10)
        } else {
            ("a", (x % 300) as usize)
        };
        db.track(
            Track::event(u(who), name)
                .timestamp(t)
                .property("pad", "x".repeat(pad)),
        )
        .unwrap();
        if who == "a" {
            expected.push((t, name.to_owned()));
        }
    }
    // Newest first; records at the same second in reverse write order.
    let mut order: Vec<(i64, usize, String)> = expected
        .iter()
        .enumerate()
        .map(|(i, (t, n))| (*t, i, n.clone()))
        .collect();
    order.sort_by_key(|o| std::cmp::Reverse((o.0, o.1)));
    let newest_first: Vec<(i64, String)> = order.into_iter().map(|(t, _, n)| (t, n)).collect();
    let events = |f: ActivityFilter| -> Vec<(i64, String)> {
        db.activities(&u("a"), &f.kind("event"))
            .unwrap()
            .into_iter()
            .map(|a| (a.timestamp, a.name.unwrap()))
            .collect()
    };
    assert_eq!(events(ActivityFilter::new(1000)), newest_first);
    // Pages of 37 cover it exactly, across block boundaries.
    let mut seen = Vec::new();
    let mut filter = ActivityFilter::new(37).kind("event");
    loop {
        let page = db.activities(&u("a"), &filter).unwrap();
        let Some(last) = page.last() else { break };
        filter = filter.before(last.cursor);
        seen.extend(page.into_iter().map(|a| (a.timestamp, a.name.unwrap())));
    }
    assert_eq!(seen, newest_first);
    let window: Vec<(i64, String)> = newest_first
        .iter()
        .filter(|(t, _)| (T0 + 3_000..T0 + 20_000).contains(t))
        .cloned()
        .collect();
    assert_eq!(
        events(
            ActivityFilter::new(1000)
                .since(T0 + 3_000)
                .until(T0 + 20_000)
        ),
        window
    );
    for name in ["view", "click", "purchase"] {
        let n = newest_first.iter().filter(|(_, m)| m == name).count() as u64;
        let counted = db
            .event_count(&u("a"), TrackKind::Event, name, None, None)
            .unwrap();
        assert_eq!(counted, n, "{name}");
    }
    assert!(db.verify().unwrap().is_ok());

    // b takes a's timeline in a merge, then is deleted: nothing is left.
    db.merge(&u("b"), &u("a")).unwrap();
    let moved = db
        .activities(&u("b"), &ActivityFilter::new(2000).kind("event"))
        .unwrap();
    assert_eq!(moved.len(), 700);
    assert!(db.verify().unwrap().is_ok());
    db.delete(&u("b")).unwrap();
    assert!(db.raw_records(Family::Activity).unwrap().is_empty());
    assert!(db.verify().unwrap().is_ok());
}
