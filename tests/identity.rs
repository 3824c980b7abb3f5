//! Identify, lookup, attributes, delete and suppress through the public API: each rule of
//! Customer.io's identity model (model doc 1.2, 1.4, 1.6, 2) and each limit.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use profiledb::{
    kinds, Durability, Error, Ident, Identify, IgnoreReason, InputReason, Limits, Outcome,
    ProfileDb, Value,
};

mod common;
use common::{input_field, open, T0};

fn ident_op(id: &str) -> Identify {
    Identify::new(Ident::id(id))
}

fn created(o: Outcome) -> profiledb::PersonId {
    match o {
        Outcome::Created(p) => p,
        other => panic!("expected Created, got {other:?}"),
    }
}

#[test]
fn create_then_update_by_the_same_id() {
    let (_d, db, _c) = open();
    let p = created(db.identify(ident_op("u1").set("plan", "trial")).unwrap());
    assert_eq!(
        db.identify(ident_op("u1").set("plan", "pro")).unwrap(),
        Outcome::Updated(p)
    );
    let person = db.person(&Ident::id("u1")).unwrap().unwrap();
    assert_eq!(person.attributes["plan"], Value::from("pro"));
    assert_eq!(db.stats().unwrap().people, 1);
}

#[test]
fn ids_are_case_sensitive_and_emails_are_not() {
    let (_d, db, _c) = open();
    let a = created(db.identify(ident_op("U1")).unwrap());
    let b = created(db.identify(ident_op("u1")).unwrap());
    assert_ne!(a, b);
    let c = created(
        db.identify(Identify::new(Ident::email("Ann@Example.com")))
            .unwrap(),
    );
    assert_eq!(
        db.identify(Identify::new(Ident::email("ann@EXAMPLE.com")).set("x", 1))
            .unwrap(),
        Outcome::Updated(c)
    );
    let person = db
        .person(&Ident::email("ANN@example.COM"))
        .unwrap()
        .unwrap();
    assert_eq!(
        person.email.as_deref(),
        Some("Ann@Example.com"),
        "stored as given"
    );
}

#[test]
fn lookup_by_every_identifier() {
    let (_d, db, _c) = open();
    let p = created(
        db.identify(
            ident_op("u1")
                .set("email", "a@x.io")
                .set("phone", "+14155550100")
                .set("anonymous_id", "anon-1"),
        )
        .unwrap(),
    );
    for ident in [
        Ident::id("u1"),
        Ident::email("A@X.IO"),
        Ident::phone("+14155550100"),
        Ident::anonymous_id("anon-1"),
        Ident::cio_id(p.cio_id()),
        Ident::infer(&format!("cio_{}", p.cio_id())),
    ] {
        let found = db.person(&ident).unwrap();
        assert_eq!(found.map(|f| f.pid), Some(p), "lookup by {ident}");
    }
    assert!(db.person(&Ident::id("nobody")).unwrap().is_none());
    assert!(db.person(&Ident::cio_id("ffffffff")).unwrap().is_none());
    assert!(db.person(&Ident::cio_id("not-hex")).unwrap().is_none());
}

#[test]
fn new_id_with_existing_email_updates_that_person_and_gives_them_the_id() {
    let (_d, db, _c) = open();
    let p = created(
        db.identify(Identify::new(Ident::email("lead@x.io")).set("stage", "lead"))
            .unwrap(),
    );
    assert_eq!(
        db.identify(
            ident_op("u-new")
                .set("email", "LEAD@x.io")
                .set("stage", "customer")
        )
        .unwrap(),
        Outcome::Updated(p)
    );
    let person = db.person(&Ident::id("u-new")).unwrap().unwrap();
    assert_eq!(person.pid, p);
    assert_eq!(person.attributes["stage"], Value::from("customer"));
    assert_eq!(db.stats().unwrap().people, 1, "no second person");
}

#[test]
fn body_identifier_of_another_person_is_a_conflict_that_changes_nothing() {
    let (_d, db, _c) = open();
    let a = created(db.identify(ident_op("a").set("email", "a@x.io")).unwrap());
    let b = created(db.identify(ident_op("b").set("email", "b@x.io")).unwrap());
    let out = db
        .identify(ident_op("a").set("email", "b@x.io").set("plan", "pro"))
        .unwrap();
    assert!(
        matches!(&out, Outcome::Refused { person, .. } if *person == a),
        "{out:?}"
    );
    let pa = db.person(&Ident::id("a")).unwrap().unwrap();
    assert_eq!(pa.email.as_deref(), Some("a@x.io"));
    assert!(!pa.attributes.contains_key("plan"), "nothing changed");
    let pb = db.person(&Ident::id("b")).unwrap().unwrap();
    assert_eq!(pb.pid, b);
    let newest = &db
        .activities(&Ident::id("a"), &profiledb::ActivityFilter::new(1))
        .unwrap()[0];
    assert_eq!(newest.kind, kinds::FAILED_ATTRIBUTE_CHANGE);
    assert_eq!(
        newest.data.as_map().unwrap()["attribute"],
        Value::from("email")
    );
}

#[test]
fn new_id_whose_email_person_already_has_an_id_is_refused() {
    let (_d, db, _c) = open();
    let p = created(db.identify(ident_op("old").set("email", "e@x.io")).unwrap());
    let out = db.identify(ident_op("new").set("email", "e@x.io")).unwrap();
    assert!(matches!(out, Outcome::Refused { person, .. } if person == p));
    assert!(db.person(&Ident::id("new")).unwrap().is_none());
    assert_eq!(
        db.activities(&Ident::id("old"), &profiledb::ActivityFilter::new(1))
            .unwrap()[0]
            .kind,
        kinds::FAILED_ATTRIBUTE_CHANGE
    );
}

#[test]
fn two_body_identifiers_of_two_people_is_a_conflict() {
    let (_d, db, _c) = open();
    created(db.identify(ident_op("a").set("email", "a@x.io")).unwrap());
    created(
        db.identify(ident_op("b").set("phone", "+15550001"))
            .unwrap(),
    );
    let out = db
        .identify(
            Identify::new(Ident::id("c"))
                .set("email", "a@x.io")
                .set("phone", "+15550001"),
        )
        .unwrap();
    assert!(matches!(out, Outcome::Refused { .. }), "{out:?}");
    assert!(db.person(&Ident::id("c")).unwrap().is_none());
    assert_eq!(db.stats().unwrap().people, 2);
}

#[test]
fn update_only_never_creates() {
    let (_d, db, _c) = open();
    assert_eq!(
        db.identify(ident_op("ghost").set("plan", "x").update_only(true))
            .unwrap(),
        Outcome::Ignored(IgnoreReason::NoMatch)
    );
    assert_eq!(db.stats().unwrap().people, 0);
    let p = created(db.identify(ident_op("real")).unwrap());
    assert_eq!(
        db.identify(ident_op("real").set("plan", "x").update_only(true))
            .unwrap(),
        Outcome::Updated(p)
    );
    // `_update` in a JSON body means the same.
    let op = Identify::from_json(
        Ident::id("ghost2"),
        &serde_json::json!({"_update": true, "plan": "x"}),
    )
    .unwrap();
    assert_eq!(
        db.identify(op).unwrap(),
        Outcome::Ignored(IgnoreReason::NoMatch)
    );
}

#[test]
fn unknown_cio_id_creates_nobody() {
    let (_d, db, _c) = open();
    for cio in ["0000abcd", "zzz"] {
        assert_eq!(
            db.identify(Identify::new(Ident::cio_id(cio)).set("email", "n@x.io"))
                .unwrap(),
            Outcome::Ignored(IgnoreReason::UnknownCioId)
        );
    }
    assert_eq!(db.stats().unwrap().people, 0);
}

#[test]
fn cio_id_is_derived_immutable_and_never_reused() {
    let (_d, db, _c) = open();
    let a = created(db.identify(ident_op("a")).unwrap());
    db.delete(&Ident::id("a")).unwrap();
    let a2 = created(db.identify(ident_op("a")).unwrap());
    assert_ne!(a, a2, "a deleted person's id is never reused");
    assert_eq!(
        db.person(&Ident::id("a")).unwrap().unwrap().cio_id,
        a2.cio_id()
    );
    let err = db
        .identify(ident_op("a").set("cio_id", "00000099"))
        .unwrap_err();
    assert_eq!(input_field(&err), "cio_id");
}

#[test]
fn id_and_email_change_only_when_addressed_by_cio_id() {
    let (_d, db, _c) = open();
    let p = created(db.identify(ident_op("a").set("email", "a@x.io")).unwrap());

    // Addressed by id: changing the email or id is refused and recorded.
    let out = db.identify(ident_op("a").set("email", "new@x.io")).unwrap();
    assert!(matches!(out, Outcome::Refused { .. }), "{out:?}");
    let out = db
        .identify(Identify::new(Ident::email("a@x.io")).set("id", "b"))
        .unwrap();
    assert!(matches!(out, Outcome::Refused { .. }), "{out:?}");

    // Addressed by cio_id: both change, and the old identifiers no longer find anyone.
    let by_cio = Ident::infer(&format!("cio_{}", p.cio_id()));
    assert_eq!(
        db.identify(Identify::new(by_cio).set("id", "b").set("email", "b@x.io"))
            .unwrap(),
        Outcome::Updated(p)
    );
    assert!(db.person(&Ident::id("a")).unwrap().is_none());
    assert!(db.person(&Ident::email("a@x.io")).unwrap().is_none());
    let person = db.person(&Ident::id("b")).unwrap().unwrap();
    assert_eq!(person.email.as_deref(), Some("b@x.io"));
    let change = &db
        .activities(&Ident::id("b"), &profiledb::ActivityFilter::new(1))
        .unwrap()[0];
    assert_eq!(change.kind, kinds::ATTRIBUTE_CHANGE);
    let data = change.data.as_map().unwrap();
    assert_eq!(data["id"].as_map().unwrap()["old"], Value::from("a"));
    assert_eq!(data["id"].as_map().unwrap()["new"], Value::from("b"));

    // Addressed by cio_id, an identifier someone else holds is a conflict.
    created(db.identify(ident_op("c")).unwrap());
    let out = db
        .identify(Identify::new(Ident::cio_id(p.cio_id())).set("id", "c"))
        .unwrap();
    assert!(matches!(out, Outcome::Refused { .. }), "{out:?}");
}

#[test]
fn email_update_by_id_when_the_workspace_allows_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = ProfileDb::builder()
        .durability(Durability::Buffered)
        .allow_email_update_by_id(true)
        .open(dir.path())
        .unwrap();
    let p = created(db.identify(ident_op("a").set("email", "a@x.io")).unwrap());
    assert_eq!(
        db.identify(ident_op("a").set("email", "new@x.io")).unwrap(),
        Outcome::Updated(p)
    );
    assert!(db.person(&Ident::email("new@x.io")).unwrap().is_some());
}

#[test]
fn identifiers_can_be_added_to_a_person_who_lacks_them() {
    let (_d, db, _c) = open();
    let p = created(db.identify(Identify::new(Ident::email("e@x.io"))).unwrap());
    assert_eq!(
        db.identify(Identify::new(Ident::email("e@x.io")).set("id", "u9"))
            .unwrap(),
        Outcome::Updated(p)
    );
    assert_eq!(db.person(&Ident::id("u9")).unwrap().unwrap().pid, p);
}

#[test]
fn attributes_are_patched_never_replaced() {
    let (_d, db, _c) = open();
    db.identify(ident_op("a").set("x", 1).set("y", 2)).unwrap();
    db.identify(ident_op("a").set("y", 3).set("z", "new"))
        .unwrap();
    let p = db.person(&Ident::id("a")).unwrap().unwrap();
    assert_eq!(p.attributes.len(), 3);
    assert_eq!(p.attributes["x"], Value::Int(1));
    assert_eq!(p.attributes["y"], Value::Int(3));
}

#[test]
fn null_and_empty_string_remove_an_attribute() {
    let (_d, db, _c) = open();
    db.identify(ident_op("a").set("x", 1).set("y", 2).set("z", 3))
        .unwrap();
    db.identify(ident_op("a").set("x", Value::Null).set("y", ""))
        .unwrap();
    // Removal through JSON, too.
    let op = Identify::from_json(Ident::id("a"), &serde_json::json!({"z": null})).unwrap();
    db.identify(op).unwrap();
    let p = db.person(&Ident::id("a")).unwrap().unwrap();
    assert!(p.attributes.is_empty(), "{:?}", p.attributes);
    assert!(p.timestamps.is_empty(), "{:?}", p.timestamps);
    // Removing what is not there changes nothing and writes nothing.
    let pid = p.pid;
    let before = db.stats().unwrap().commit_seq;
    assert_eq!(
        db.identify(ident_op("a").remove("nope")).unwrap(),
        Outcome::Unchanged(pid)
    );
    assert_eq!(db.stats().unwrap().commit_seq, before);
}

#[test]
fn dotted_keys_update_nested_maps() {
    let (_d, db, _c) = open();
    db.identify(
        ident_op("a").set(
            "cio_subscription_preferences",
            Value::from_json(
                &serde_json::json!({"topics": {"topic_1": true, "topic_2": false}}),
                "p",
            )
            .unwrap(),
        ),
    )
    .unwrap();
    db.identify(ident_op("a").set("cio_subscription_preferences.topics.topic_3", true))
        .unwrap();
    db.identify(ident_op("a").set("cio_subscription_preferences.topics.topic_1", false))
        .unwrap();
    let p = db.person(&Ident::id("a")).unwrap().unwrap();
    assert_eq!(
        p.attributes["cio_subscription_preferences"].to_json(),
        serde_json::json!({"topics": {"topic_1": false, "topic_2": false, "topic_3": true}})
    );
    db.identify(ident_op("a").remove("cio_subscription_preferences.topics.topic_2"))
        .unwrap();
    let p = db.person(&Ident::id("a")).unwrap().unwrap();
    assert_eq!(
        p.attributes["cio_subscription_preferences"].to_json(),
        serde_json::json!({"topics": {"topic_1": false, "topic_3": true}})
    );
}

#[test]
fn each_change_records_old_and_new_and_when_it_was_set() {
    let (_d, db, clock) = open();
    db.identify(ident_op("a").set("plan", "trial")).unwrap();
    clock.advance(100);
    db.identify(ident_op("a").set("plan", "pro").set("seats", 3))
        .unwrap();
    let p = db.person(&Ident::id("a")).unwrap().unwrap();
    assert_eq!(p.timestamps["plan"], T0 + 100);
    assert_eq!(p.created, T0);
    let acts = db
        .activities(&Ident::id("a"), &profiledb::ActivityFilter::new(10))
        .unwrap();
    let kinds_seen: Vec<&str> = acts.iter().map(|a| a.kind.as_str()).collect();
    assert_eq!(
        kinds_seen,
        [
            kinds::ATTRIBUTE_CHANGE,
            kinds::ATTRIBUTE_CHANGE,
            kinds::PROFILE_CREATE
        ]
    );
    let plan = acts[0].data.as_map().unwrap()["plan"].clone();
    assert_eq!(
        plan.to_json(),
        serde_json::json!({"old": "trial", "new": "pro"})
    );
    assert_eq!(acts[0].timestamp, T0 + 100);
    // Paging by cursor reads the older ones.
    let older = db
        .activities(
            &Ident::id("a"),
            &profiledb::ActivityFilter::new(10).before(acts[0].cursor),
        )
        .unwrap();
    assert_eq!(older, acts[1..].to_vec());
}

#[test]
fn setting_the_same_value_is_not_a_change() {
    let (_d, db, _c) = open();
    let p = created(db.identify(ident_op("a").set("plan", "pro")).unwrap());
    assert_eq!(
        db.identify(ident_op("a").set("plan", "pro")).unwrap(),
        Outcome::Unchanged(p)
    );
    assert_eq!(
        db.activities(&Ident::id("a"), &profiledb::ActivityFilter::new(10))
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn older_timestamp_does_not_overwrite_a_newer_value() {
    let (_d, db, _c) = open();
    db.identify(ident_op("a").set("plan", "new").timestamp(T0 + 10))
        .unwrap();
    db.identify(
        ident_op("a")
            .set("plan", "old")
            .set("other", 1)
            .timestamp(T0 + 5),
    )
    .unwrap();
    let p = db.person(&Ident::id("a")).unwrap().unwrap();
    assert_eq!(p.attributes["plan"], Value::from("new"));
    assert_eq!(p.attributes["other"], Value::Int(1));
    assert_eq!(p.timestamps["plan"], T0 + 10);
}

#[test]
fn unsubscribed_follows_the_truthiness_rule() {
    let (_d, db, _c) = open();
    for (i, (given, expect)) in [
        (Value::from("TRUE"), true),
        (Value::from("1"), true),
        (Value::Int(1), true),
        (Value::Bool(true), true),
        (Value::from("yes"), false),
        (Value::Int(0), false),
        (Value::from("false"), false),
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("p{i}");
        db.identify(ident_op(&id).set("unsubscribed", given.clone()))
            .unwrap();
        let p = db.person(&Ident::id(id)).unwrap().unwrap();
        assert_eq!(p.unsubscribed(), expect, "{given}");
        assert_eq!(p.attributes["unsubscribed"], Value::Bool(expect));
    }
}

#[test]
fn created_at_must_be_a_timestamp() {
    let (_d, db, _c) = open();
    db.identify(ident_op("a").set("created_at", "1489014595"))
        .unwrap();
    let p = db.person(&Ident::id("a")).unwrap().unwrap();
    assert_eq!(p.attributes["created_at"], Value::Int(1_489_014_595));
    let err = db
        .identify(ident_op("a").set("created_at", "last tuesday"))
        .unwrap_err();
    assert_eq!(input_field(&err), "created_at");
}

#[test]
fn reserved_names_are_refused() {
    let (_d, db, _c) = open();
    for name in [
        "_created_in_customerio_at",
        "relationship",
        "_relationship",
        "cio_id",
        "_update",
    ] {
        let err = db.identify(ident_op("a").set(name, "x")).unwrap_err();
        assert_eq!(input_field(&err), name);
        assert_eq!(err.input().unwrap().reason, InputReason::Reserved);
    }
    assert_eq!(db.stats().unwrap().people, 0, "nothing written");
}

#[test]
fn anonymous_id_alone_cannot_identify() {
    let (_d, db, _c) = open();
    let err = db
        .identify(Identify::new(Ident::anonymous_id("anon")))
        .unwrap_err();
    assert_eq!(input_field(&err), "anonymous_id");
}

#[test]
fn limits_are_enforced_before_anything_is_written() {
    let (_d, db, _c) = open();
    let cases: Vec<(Identify, &str)> = vec![
        (ident_op(&"x".repeat(151)), "id"),
        (ident_op(""), "id"),
        (ident_op("a").set("k".repeat(151), 1), "kkk"),
        (ident_op("a").set("bio", "x".repeat(1001)), "bio"),
        (
            ident_op("a").set(
                "list",
                Value::Array((0..300).map(Value::Int).collect::<Vec<_>>()),
            ),
            "list",
        ),
        (ident_op("a").set("email", "not-an-email"), "email"),
        (ident_op("a").set("phone", "555-0100"), "phone"),
        (ident_op("a").set("score", f64::NAN), "score"),
        (ident_op("a").set("a..b", 1), "a..b"),
        (ident_op("a").set("", 1), "attribute name"),
    ];
    for (op, field) in cases {
        let err = db.identify(op).unwrap_err();
        let got = input_field(&err);
        assert!(
            got.starts_with(field),
            "expected field {field}, got {got}: {err}"
        );
        assert!(!err.to_string().is_empty());
    }
    // 301 attributes in one call.
    let mut op = ident_op("a");
    for i in 0..301 {
        op = op.set(format!("k{i}"), i);
    }
    let err = db.identify(op).unwrap_err();
    assert_eq!(input_field(&err), "attributes");
    assert_eq!(db.stats().unwrap().people, 0, "nothing written");
    assert_eq!(db.stats().unwrap().commit_seq, 1, "only the initial commit");
}

#[test]
fn the_per_person_attribute_limit_counts_the_whole_map() {
    let dir = tempfile::tempdir().unwrap();
    let db = ProfileDb::builder()
        .durability(Durability::Buffered)
        .limits(Limits {
            max_attributes: 3,
            ..Limits::default()
        })
        .open(dir.path())
        .unwrap();
    db.identify(ident_op("a").set("x", 1).set("y", 1).set("z", 1))
        .unwrap();
    let err = db.identify(ident_op("a").set("w", 1)).unwrap_err();
    assert_eq!(input_field(&err), "attributes");
    assert!(
        matches!(
            err.input().unwrap().reason,
            InputReason::TooMany { count: 4, max: 3 }
        ),
        "{err}"
    );
    // Replacing one is fine.
    db.identify(ident_op("a").set("x", Value::Null).set("w", 1))
        .unwrap();
}

#[test]
fn delete_removes_the_person_and_allows_recreation() {
    let (_d, db, _c) = open();
    let p = created(
        db.identify(ident_op("a").set("email", "a@x.io").set("k", 1))
            .unwrap(),
    );
    assert_eq!(
        db.delete(&Ident::email("a@x.io")).unwrap(),
        Outcome::Deleted(p)
    );
    assert!(db.person(&Ident::id("a")).unwrap().is_none());
    assert!(db
        .activities(&Ident::id("a"), &profiledb::ActivityFilter::new(10))
        .unwrap()
        .is_empty());
    assert_eq!(db.delete(&Ident::id("a")).unwrap(), Outcome::NotFound);
    let again = created(db.identify(ident_op("a")).unwrap());
    let p2 = db.person(&Ident::id("a")).unwrap().unwrap();
    assert_eq!(p2.pid, again);
    assert!(p2.attributes.is_empty(), "a fresh profile");
}

#[test]
fn suppress_blocks_identifiers_until_unsuppressed() {
    let (_d, db, _c) = open();
    created(db.identify(ident_op("a").set("email", "a@x.io")).unwrap());
    let out = db.suppress(&Ident::id("a")).unwrap();
    assert!(
        matches!(
            out,
            Outcome::Suppressed {
                person: Some(_),
                identifiers: 2
            }
        ),
        "{out:?}"
    );
    assert!(db.person(&Ident::id("a")).unwrap().is_none());
    assert!(db.is_suppressed(&Ident::id("a")).unwrap());
    assert!(db.is_suppressed(&Ident::email("A@x.io")).unwrap());

    // Both the id and the email are refused, addressed or in the body.
    for op in [
        ident_op("a"),
        Identify::new(Ident::email("a@x.io")),
        ident_op("b").set("email", "a@x.io"),
    ] {
        let err = db.identify(op).unwrap_err();
        assert!(matches!(err, Error::Suppressed { .. }), "{err}");
        assert!(err.to_string().contains("suppressed"));
    }

    // Unsuppressing either frees both; identifying then creates a fresh profile.
    assert_eq!(
        db.unsuppress(&Ident::email("a@x.io")).unwrap(),
        Outcome::Unsuppressed { identifiers: 2 }
    );
    assert!(!db.is_suppressed(&Ident::id("a")).unwrap());
    created(db.identify(ident_op("a")).unwrap());
    assert!(
        db.activities(&Ident::id("a"), &profiledb::ActivityFilter::new(10))
            .unwrap()
            .len()
            == 1
    );
    assert_eq!(db.unsuppress(&Ident::id("zzz")).unwrap(), Outcome::NotFound);
}

#[test]
fn suppressing_an_unknown_identifier_blocks_it() {
    let (_d, db, _c) = open();
    assert_eq!(
        db.suppress(&Ident::email("never@x.io")).unwrap(),
        Outcome::Suppressed {
            person: None,
            identifiers: 1
        }
    );
    assert!(db
        .identify(Identify::new(Ident::email("never@x.io")))
        .is_err());
}

#[test]
fn a_batch_is_all_or_nothing() {
    let (_d, db, _c) = open();
    let ops = vec![
        profiledb::Op::Identify(ident_op("a").set("k", 1)),
        profiledb::Op::Identify(ident_op("b").set("k", 1)),
        profiledb::Op::Identify(ident_op("c").set("email", "bad")),
    ];
    let err = db.write_batch(&ops).unwrap_err();
    assert!(matches!(err, Error::InBatch { index: 2, .. }), "{err}");
    assert_eq!(input_field(&err), "email");
    assert_eq!(db.stats().unwrap().people, 0);

    // Later operations see earlier ones.
    let outs = db
        .write_batch(&[
            profiledb::Op::Identify(ident_op("a").set("email", "a@x.io")),
            profiledb::Op::Identify(Identify::new(Ident::email("a@x.io")).set("k", 2)),
            profiledb::Op::Delete(Ident::id("gone")),
        ])
        .unwrap();
    assert!(matches!(outs[0], Outcome::Created(_)));
    assert!(matches!(outs[1], Outcome::Updated(_)));
    assert_eq!(outs[2], Outcome::NotFound);
}

#[test]
fn track_v1_path_identifiers_are_inferred_by_shape() {
    assert_eq!(Ident::infer("cio_a3000001"), Ident::cio_id("a3000001"));
    assert_eq!(Ident::infer("x@y.z"), Ident::email("x@y.z"));
    assert_eq!(Ident::infer("+14155550100"), Ident::id("+14155550100"));
}

// Regression tests for bugs the model test (tests/model.rs) found. Each names the bug
// and says in one line what went wrong.

/// Bug 1: removing the addressed identifier while creating recorded a refusal on a pid
/// that did not exist yet, which the next person created then inherited.
#[test]
fn identity_bug_01_refusal_while_creating_wrote_activity_for_nobody() {
    let (_d, db, _c) = open();
    let err = db.identify(ident_op("u0").remove("id")).unwrap_err();
    assert_eq!(input_field(&err), "id");
    assert!(db
        .raw_records(profiledb::Family::Activity)
        .unwrap()
        .is_empty());
    let p = created(db.identify(ident_op("u1")).unwrap());
    assert_eq!(
        db.activities(
            &Ident::cio_id(p.cio_id()),
            &profiledb::ActivityFilter::new(10)
        )
        .unwrap()
        .len(),
        1
    );
    assert!(db.verify().unwrap().is_ok());
}

/// Bug 2: the `_timestamp` guard only remembered updates that changed a value, so an
/// older update could undo a newer same-value set or a newer removal.
#[test]
fn identity_bug_02_timestamp_guard_forgot_unchanged_sets_and_removals() {
    let (_d, db, _c) = open();
    db.identify(ident_op("a").set("plan", "pro").timestamp(T0 - 20))
        .unwrap();
    db.identify(ident_op("a").set("plan", "pro").timestamp(T0))
        .unwrap();
    db.identify(ident_op("a").set("plan", "basic").timestamp(T0 - 10))
        .unwrap();
    let p = db.person(&Ident::id("a")).unwrap().unwrap();
    assert_eq!(p.attributes["plan"], Value::from("pro"));

    db.identify(ident_op("b").set("plan", "pro").timestamp(T0 - 20))
        .unwrap();
    db.identify(ident_op("b").remove("plan").timestamp(T0))
        .unwrap();
    db.identify(ident_op("b").set("plan", "basic").timestamp(T0 - 10))
        .unwrap();
    let p = db.person(&Ident::id("b")).unwrap().unwrap();
    assert!(!p.attributes.contains_key("plan"), "{:?}", p.attributes);
}

/// Bug 3: suppressing an identifier a second time replaced its group, so unsuppressing
/// it no longer freed the identifiers suppressed with it the first time.
#[test]
fn identity_bug_03_resuppressing_split_the_group() {
    let (_d, db, _c) = open();
    db.identify(ident_op("u0").set("email", "e0@x.io")).unwrap();
    db.suppress(&Ident::id("u0")).unwrap();
    db.suppress(&Ident::id("u0")).unwrap();
    assert_eq!(
        db.unsuppress(&Ident::id("u0")).unwrap(),
        Outcome::Unsuppressed { identifiers: 2 }
    );
    assert!(!db.is_suppressed(&Ident::email("e0@x.io")).unwrap());
}

/// Bug 4: removing an absent dotted key dropped an empty map that was already stored,
/// without an activity entry and leaving its timestamp behind.
#[test]
fn identity_bug_04_removing_absent_dotted_key_dropped_empty_map() {
    let (_d, db, _c) = open();
    let p = created(
        db.identify(ident_op("a").set("prefs", profiledb::Map::new()))
            .unwrap(),
    );
    assert_eq!(
        db.identify(ident_op("a").remove("prefs.lang")).unwrap(),
        Outcome::Unchanged(p)
    );
    db.identify(ident_op("a").remove("prefs.lang").set("x", 1))
        .unwrap();
    let person = db.person(&Ident::id("a")).unwrap().unwrap();
    assert_eq!(
        person.attributes["prefs"],
        Value::Map(profiledb::Map::new())
    );
    assert!(person.timestamps.contains_key("prefs"));
}

/// Bug 5: a body identifier of the addressed kind silently replaced the address when
/// the person was found through it, dropping the addressed identifier.
#[test]
fn identity_bug_05_body_identifier_overrode_the_address() {
    let (_d, db, _c) = open();
    created(db.identify(ident_op("u0").set("email", "e0@x.io")).unwrap());
    let err = db
        .identify(ident_op("u1").set("id", "u0").set("plan", "pro"))
        .unwrap_err();
    assert_eq!(input_field(&err), "id");
    let err = db
        .identify(Identify::new(Ident::email("e1@x.io")).set("email", "e0@x.io"))
        .unwrap_err();
    assert_eq!(input_field(&err), "email");
    assert!(!db
        .person(&Ident::id("u0"))
        .unwrap()
        .unwrap()
        .attributes
        .contains_key("plan"));
}
