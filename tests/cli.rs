//! The `profiledb` command-line tool, run as a user runs it: the built binary, over
//! databases made with the library in this process (and closed before the binary runs),
//! with a fixed `--now` so every output is reproducible.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use profiledb::{
    Channel, DeviceInput, Family, Ident, Identify, ManualClock, Metric, NewDelivery, ObjectRef,
    Platform, ProfileDb, Track, Value,
};
use serde_json::Value as Json;

/// The fixed "now": 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600;
const DAY: i64 = 86_400;

fn open(dir: &Path) -> ProfileDb {
    ProfileDb::builder()
        .clock(Arc::new(ManualClock::new(T0)))
        .open(dir)
        .unwrap()
}

/// A small workspace: Ann (every part of a profile), Bo (an id and nothing else), Cy
/// (email only); topics 1 and 2; a data-driven segment "Pro" and a manual one "VIP"
/// holding Ann.
fn fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    db.define_topic(1, "News", false).unwrap();
    db.define_topic(2, "Offers", true).unwrap();
    let ann = Ident::id("u-1");
    db.identify(
        Identify::new(ann.clone())
            .set("email", "Ann@Example.com")
            .set("plan", "pro")
            .set("age", 30i64)
            .set("cio_subscription_preferences.topics.topic_1", true),
    )
    .unwrap();
    db.track(
        Track::event(ann.clone(), "purchase")
            .property("amount", 49)
            .timestamp(T0 - DAY),
    )
    .unwrap();
    db.track(Track::page(ann.clone(), "/pricing").timestamp(T0 - 2 * DAY))
        .unwrap();
    db.add_device(
        &ann,
        DeviceInput::new("tok-ann", Platform::Ios).attribute("app_version", "2.3.0"),
    )
    .unwrap();
    db.add_delivery(
        &ann,
        NewDelivery::new("dlv-1", Channel::Email)
            .campaign_id("7")
            .recipient("Ann@Example.com")
            .subject("Welcome"),
    )
    .unwrap();
    db.report_metric(Metric::new("dlv-1", "opened")).unwrap();
    db.identify_object(
        &ObjectRef::new(1, "acme"),
        vec![("name".into(), Value::from("Acme Inc"))],
    )
    .unwrap();
    db.add_relationship(
        &ann,
        &ObjectRef::new(1, "acme"),
        vec![("role".into(), Value::from("admin"))],
    )
    .unwrap();
    db.identify(Identify::new(Ident::id("u-2")).set("plan", "free"))
        .unwrap();
    db.identify(Identify::new(Ident::email("cy@example.com")).set("country", "PT"))
        .unwrap();
    db.create_segment("Pro", Some(r#"attr.plan = "pro""#))
        .unwrap();
    let vip = db.create_segment("VIP", None).unwrap();
    db.add_to_segment(vip, &[ann]).unwrap();
    db.close().unwrap();
    dir
}

/// Runs the binary with `--db dir --now T0` and `args`.
fn run(dir: &Path, args: &[&str]) -> Output {
    run_raw(
        &[
            &["--db", dir.to_str().unwrap(), "--now", &T0.to_string()],
            args,
        ]
        .concat(),
    )
}

fn run_raw(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_profiledb"))
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// Asserts success and returns stdout.
fn ok(o: &Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        stdout(o),
        stderr(o)
    );
    stdout(o)
}

/// Asserts exit `code` with one `error: ...` line on stderr (and no panic), and returns
/// that line.
fn fails(o: &Output, code: i32) -> String {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        stdout(o),
        stderr(o)
    );
    let err = stderr(o);
    assert_no_panic(&err);
    if code == 1 {
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "one line on stderr: {err}");
        assert!(lines[0].starts_with("error: "), "{err}");
    }
    err
}

/// Asserts that `stderr` shows no Rust panic message, backtrace, or panic caught as a
/// last resort.
fn assert_no_panic(stderr: &str) {
    for sign in [
        "panicked at",
        "stack backtrace",
        "RUST_BACKTRACE",
        "internal failure",
    ] {
        assert!(!stderr.contains(sign), "{stderr}");
    }
}

fn json(o: &Output) -> Json {
    serde_json::from_str(&ok(o)).unwrap()
}

fn keys(v: &Json) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect();
    k.sort();
    k
}

fn sorted(names: &[&str]) -> Vec<String> {
    let mut k: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
    k.sort();
    k
}

// ---- person show ----

#[test]
fn person_show_prints_the_seven_parts_and_the_attributes_the_person_lacks() {
    let dir = fixture();
    let out = ok(&run(dir.path(), &["person", "show", "u-1"]));
    let sections = [
        "Identifiers and attributes",
        "Subscription",
        "Activity",
        "Deliveries",
        "Devices",
        "Segments",
        "Relationships",
    ];
    let mut at = 0;
    for s in sections {
        let pos = out[at..]
            .find(&format!("\n{s}"))
            .unwrap_or_else(|| panic!("no section {s} after byte {at}:\n{out}"));
        at += pos + 1;
    }
    for needle in [
        "Ann@Example.com",
        "\"pro\"",
        "not set (others have them): country",
        "topic 1    News",
        "purchase",
        "dlv-1",
        "tok-ann",
        "Pro (data-driven)",
        "VIP (manual)",
        "1:acme",
        "\"role\":\"admin\"",
    ] {
        assert!(out.contains(needle), "missing {needle}:\n{out}");
    }
}

#[test]
fn person_show_json_has_exactly_the_documented_keys_with_typed_values() {
    let dir = fixture();
    let v = json(&run(dir.path(), &["person", "show", "u-1", "--json"]));
    assert_eq!(
        keys(&v),
        sorted(&[
            "customer",
            "subscription",
            "activities",
            "deliveries",
            "segments",
            "relationships"
        ])
    );
    let c = &v["customer"];
    assert_eq!(
        keys(c),
        sorted(&[
            "id",
            "email",
            "cio_id",
            "identifiers",
            "attributes",
            "timestamps",
            "unsubscribed",
            "devices"
        ])
    );
    assert_eq!(c["id"], "u-1");
    assert_eq!(c["email"], "Ann@Example.com");
    assert_eq!(c["attributes"]["age"], 30);
    assert_eq!(c["attributes"]["plan"], "pro");
    assert_eq!(c["timestamps"]["plan"], T0);
    assert_eq!(c["identifiers"]["phone"], Json::Null);
    assert_eq!(c["unsubscribed"], false);
    let device = &c["devices"][0];
    assert_eq!(
        keys(device),
        sorted(&["id", "platform", "last_used", "attributes"])
    );
    assert_eq!(device["id"], "tok-ann");
    assert_eq!(device["platform"], "ios");
    assert_eq!(device["attributes"]["app_version"], "2.3.0");

    let s = &v["subscription"];
    assert_eq!(keys(s), sorted(&["unsubscribed", "topics"]));
    assert_eq!(keys(&s["topics"][0]), sorted(&["id", "name", "subscribed"]));
    assert_eq!(s["topics"][0]["subscribed"], true);
    assert_eq!(s["topics"][1]["subscribed"], true); // topic 2's default

    let activities = v["activities"].as_array().unwrap();
    assert!(!activities.is_empty());
    for a in activities {
        assert_eq!(keys(a), sorted(&["type", "name", "timestamp", "data"]));
    }
    let purchase = activities.iter().find(|a| a["name"] == "purchase").unwrap();
    assert_eq!(purchase["type"], "event");
    assert_eq!(purchase["timestamp"], T0 - DAY);
    assert_eq!(purchase["data"]["amount"], 49);

    let d = &v["deliveries"][0];
    assert_eq!(
        keys(d),
        sorted(&[
            "id",
            "channel",
            "status",
            "metrics",
            "recipient",
            "subject",
            "campaign_id",
            "created"
        ])
    );
    assert_eq!(d["status"], "opened");
    assert_eq!(d["metrics"]["opened"], T0);

    let segments = v["segments"].as_array().unwrap();
    assert_eq!(segments.len(), 2);
    for s in segments {
        assert_eq!(keys(s), sorted(&["id", "name", "type"]));
    }
    assert_eq!(segments[0]["type"], "data-driven");
    assert_eq!(segments[1]["type"], "manual");

    let r = &v["relationships"][0];
    assert_eq!(
        keys(r),
        sorted(&[
            "object_type_id",
            "object_id",
            "attributes",
            "relationship_attributes"
        ])
    );
    assert_eq!(r["object_type_id"], 1);
    assert_eq!(r["object_id"], "acme");
    assert_eq!(r["attributes"]["name"], "Acme Inc");
    assert_eq!(r["relationship_attributes"]["role"], "admin");
}

#[test]
fn person_show_infers_the_identifier_kind_and_prints_missing_identifiers_as_null() {
    let dir = fixture();
    let by_email = json(&run(
        dir.path(),
        &["person", "show", "ANN@example.com", "--json"],
    ));
    let cio_id = by_email["customer"]["cio_id"].as_str().unwrap().to_owned();
    let by_cio = json(&run(
        dir.path(),
        &["person", "show", &format!("cio_{cio_id}"), "--json"],
    ));
    assert_eq!(by_email, by_cio);
    assert_eq!(by_cio["customer"]["id"], "u-1");

    let bo = json(&run(dir.path(), &["person", "show", "u-2", "--json"]));
    assert_eq!(bo["customer"]["email"], Json::Null);
    assert_eq!(bo["customer"]["identifiers"]["email"], Json::Null);
    let cy = json(&run(
        dir.path(),
        &["person", "show", "cy@example.com", "--json"],
    ));
    assert_eq!(cy["customer"]["id"], Json::Null);
    assert_eq!(cy["customer"]["attributes"]["country"], "PT");
}

#[test]
fn an_unknown_person_exits_1_with_a_clear_message() {
    let dir = fixture();
    for ident in ["nobody", "nobody@example.com", "cio_ffffff", "cio_not-hex"] {
        let err = fails(&run(dir.path(), &["person", "show", ident]), 1);
        assert!(err.contains("no person has the"), "{err}");
        let err = fails(&run(dir.path(), &["activity", ident]), 1);
        assert!(err.contains("no person has the"), "{err}");
    }
    let err = fails(&run(dir.path(), &["person", "show", ""]), 1);
    assert!(err.contains("`id`"), "{err}");
}

// ---- people, activity, query ----

#[test]
fn people_lists_searches_filters_and_pages() {
    let dir = fixture();
    let all = json(&run(dir.path(), &["people", "--json"]));
    assert_eq!(keys(&all), sorted(&["people", "next"]));
    let people = all["people"].as_array().unwrap();
    assert_eq!(people.len(), 3);
    for p in people {
        assert_eq!(keys(p), sorted(&["id", "email", "cio_id"]));
    }
    assert_eq!(all["next"], Json::Null);

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut args = vec!["people", "--json", "--limit", "1"];
        if let Some(a) = &after {
            args.extend(["--after", a.as_str()]);
        }
        let page = json(&run(dir.path(), &args));
        let list = page["people"].as_array().unwrap();
        assert!(list.len() <= 1);
        seen.extend(list.iter().map(|p| p["cio_id"].clone()));
        match page["next"].as_str() {
            Some(n) => after = Some(n.to_owned()),
            None => break,
        }
    }
    assert_eq!(
        seen,
        people
            .iter()
            .map(|p| p["cio_id"].clone())
            .collect::<Vec<_>>()
    );

    let found = json(&run(dir.path(), &["people", "--search", "ANN@", "--json"]));
    assert_eq!(found["people"][0]["id"], "u-1");
    assert_eq!(found["people"].as_array().unwrap().len(), 1);
    let free = json(&run(
        dir.path(),
        &["people", "--where", r#"attr.plan = "free""#, "--json"],
    ));
    assert_eq!(free["people"][0]["id"], "u-2");
    assert_eq!(free["people"].as_array().unwrap().len(), 1);

    let human = ok(&run(dir.path(), &["people", "--limit", "2"]));
    assert!(human.starts_with("3 people\n"), "{human}");
    assert!(human.contains("next page: --after "), "{human}");

    let err = fails(&run(dir.path(), &["people", "--after", "zz-top"]), 1);
    assert!(err.contains("cursor"), "{err}");
    fails(&run(dir.path(), &["people", "--limit", "0"]), 2);
}

#[test]
fn activity_filters_and_pages_newest_first() {
    let dir = fixture();
    let all = json(&run(
        dir.path(),
        &["activity", "u-1", "--json", "--limit", "100"],
    ));
    assert_eq!(keys(&all), sorted(&["activities", "next"]));
    assert_eq!(all["next"], Json::Null);
    let list = all["activities"].as_array().unwrap();
    let times: Vec<i64> = list
        .iter()
        .map(|a| a["timestamp"].as_i64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");

    // Paging one at a time visits the same entries.
    let mut paged = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut args = vec!["activity", "u-1", "--json", "--limit", "2"];
        if let Some(a) = &after {
            args.extend(["--after", a.as_str()]);
        }
        let page = json(&run(dir.path(), &args));
        paged.extend(page["activities"].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            Some(n) => after = Some(n.to_owned()),
            None => break,
        }
    }
    assert_eq!(&paged, list);

    let events = json(&run(
        dir.path(),
        &["activity", "ann@example.com", "--type", "event", "--json"],
    ));
    let events = events["activities"].as_array().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["name"], "purchase");
    let pages = json(&run(
        dir.path(),
        &["activity", "u-1", "--name", "/pricing", "--json"],
    ));
    assert_eq!(pages["activities"][0]["type"], "page");
    let window = json(&run(
        dir.path(),
        &[
            "activity",
            "u-1",
            "--since",
            &(T0 - 2 * DAY).to_string(),
            "--until",
            &(T0 - DAY).to_string(),
            "--json",
        ],
    ));
    let window = window["activities"].as_array().unwrap();
    assert_eq!(window.len(), 1);
    assert_eq!(window[0]["type"], "page");

    let human = ok(&run(dir.path(), &["activity", "u-1", "--type", "event"]));
    assert!(human.contains("purchase"), "{human}");
    let err = fails(&run(dir.path(), &["activity", "u-1", "--after", "x"]), 1);
    assert!(err.contains("cursor"), "{err}");
}

#[test]
fn query_counts_lists_pages_and_explains() {
    let dir = fixture();
    let count = ok(&run(dir.path(), &["query", "attr.plan exists", "--count"]));
    assert_eq!(count, "2\n");
    let v = json(&run(
        dir.path(),
        &["query", "attr.plan exists", "--json", "--limit", "1"],
    ));
    assert_eq!(keys(&v), sorted(&["count", "people", "next"]));
    assert_eq!(v["count"], 2);
    assert_eq!(keys(&v["people"][0]), sorted(&["id", "email", "cio_id"]));
    let next = v["next"].as_str().unwrap();
    let rest = json(&run(
        dir.path(),
        &["query", "attr.plan exists", "--json", "--after", next],
    ));
    assert_eq!(rest["people"].as_array().unwrap().len(), 1);
    assert_eq!(rest["people"][0]["id"], "u-2");
    assert_eq!(rest["next"], Json::Null);

    // App-API filter JSON is accepted too.
    let filter = r#"{"attribute": {"field": "plan", "operator": "eq", "value": "pro"}}"#;
    assert_eq!(ok(&run(dir.path(), &["query", filter, "--count"])), "1\n");

    let human = ok(&run(
        dir.path(),
        &["query", r#"segment:VIP and topic:1"#, "--explain"],
    ));
    assert!(human.starts_with("1 person match"), "{human}");
    assert!(human.contains("u-1"), "{human}");
    assert!(human.contains("plan:"), "{human}");
    // With --count, the plan goes to stderr and stdout stays the number.
    let o = run(
        dir.path(),
        &["query", "segment:VIP", "--count", "--explain"],
    );
    assert_eq!(ok(&o), "1\n");
    assert!(stderr(&o).contains("index"), "{}", stderr(&o));
}

#[test]
fn a_bad_query_names_the_position() {
    let dir = fixture();
    let err = fails(&run(dir.path(), &["query", "attr.plan = "]), 1);
    assert!(err.contains("at byte 12"), "{err}");
    let err = fails(
        &run(dir.path(), &["query", "attr.plan = \"a\" annd all"]),
        1,
    );
    assert!(err.contains("at byte"), "{err}");
    let err = fails(&run(dir.path(), &["query", "segment:Nope"]), 1);
    assert!(err.contains("Nope"), "{err}");
    let err = fails(&run(dir.path(), &["people", "--where", "(((("]), 1);
    assert!(err.contains("at byte"), "{err}");
}

// ---- segments and topics ----

#[test]
fn segments_are_created_listed_shown_changed_and_deleted() {
    let dir = fixture();
    let out = ok(&run(
        dir.path(),
        &[
            "segment",
            "create",
            "Free",
            "--where",
            r#"attr.plan = "free""#,
        ],
    ));
    assert!(
        out.contains("created data-driven segment #3 \"Free\" with 1 member"),
        "{out}"
    );
    let out = ok(&run(dir.path(), &["segment", "create", "Hand", "--manual"]));
    assert!(out.contains("manual segment #4"), "{out}");

    let out = ok(&run(
        dir.path(),
        &["segment", "add", "Hand", "u-2", "cy@example.com", "ghost"],
    ));
    assert!(out.contains("added 2 people"), "{out}");
    let o = run(dir.path(), &["segment", "remove", "#4", "u-2"]);
    assert!(ok(&o).contains("removed 1 person"), "{}", stdout(&o));

    let list = json(&run(dir.path(), &["segment", "list", "--json"]));
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 4);
    for s in list {
        assert_eq!(keys(s), sorted(&["id", "name", "type", "size"]));
    }
    let by_name = |n: &str| list.iter().find(|s| s["name"] == n).unwrap().clone();
    assert_eq!(by_name("Pro")["type"], "data-driven");
    assert_eq!(by_name("Pro")["size"], 1);
    assert_eq!(by_name("Hand")["type"], "manual");
    assert_eq!(by_name("Hand")["size"], 1);
    let human = ok(&run(dir.path(), &["segment", "list"]));
    assert!(human.contains("attr.plan = \"free\""), "{human}");

    let show = ok(&run(dir.path(), &["segment", "show", "Hand"]));
    assert!(show.contains("type       manual"), "{show}");
    assert!(show.contains("size       1"), "{show}");
    assert!(show.contains("cy@example.com"), "{show}");

    let out = ok(&run(dir.path(), &["segment", "delete", "Hand"]));
    assert!(out.contains("deleted segment #4"), "{out}");
    let list = json(&run(dir.path(), &["segment", "list", "--json"]));
    assert_eq!(list.as_array().unwrap().len(), 3);
}

#[test]
fn segment_errors() {
    let dir = fixture();
    for args in [
        vec!["segment", "show", "Nope"],
        vec!["segment", "delete", "Nope"],
        vec!["segment", "add", "Nope", "u-1"],
        vec!["segment", "remove", "#99", "u-1"],
    ] {
        let err = fails(&run(dir.path(), &args), 1);
        assert!(err.contains("no segment named"), "{err}");
    }
    let err = fails(
        &run(dir.path(), &["segment", "create", "Pro", "--manual"]),
        1,
    );
    assert!(err.contains("already a segment"), "{err}");
    let err = fails(
        &run(
            dir.path(),
            &["segment", "create", "X", "--where", "attr.a >"],
        ),
        1,
    );
    assert!(err.contains("at byte"), "{err}");
    let err = fails(&run(dir.path(), &["segment", "add", "Pro", "u-2"]), 1);
    assert!(err.contains("segment"), "{err}");
    // Neither or both of --manual and --where is a usage error.
    fails(&run(dir.path(), &["segment", "create", "X"]), 2);
    fails(
        &run(
            dir.path(),
            &["segment", "create", "X", "--manual", "--where", "all"],
        ),
        2,
    );
    fails(&run(dir.path(), &["segment", "add", "VIP"]), 2);
}

#[test]
fn topics_are_defined_and_listed() {
    let dir = fixture();
    let out = ok(&run(
        dir.path(),
        &["topic", "create", "3", "Product news", "--default", "in"],
    ));
    assert!(out.contains("defined topic 3"), "{out}");
    ok(&run(dir.path(), &["topic", "create", "4", "Surveys"]));
    let v = json(&run(dir.path(), &["topic", "list", "--json"]));
    let list = v.as_array().unwrap();
    assert_eq!(list.len(), 4);
    for t in list {
        assert_eq!(keys(t), sorted(&["id", "name", "default"]));
    }
    assert_eq!(list[2]["name"], "Product news");
    assert_eq!(list[2]["default"], "in");
    assert_eq!(list[3]["default"], "out");
    assert!(ok(&run(dir.path(), &["topic", "list"])).contains("Surveys"));
    let err = fails(&run(dir.path(), &["topic", "create", "0", "Zero"]), 1);
    assert!(err.contains("topic"), "{err}");
    fails(
        &run(
            dir.path(),
            &["topic", "create", "5", "X", "--default", "maybe"],
        ),
        2,
    );
    fails(&run(dir.path(), &["topic", "create", "five", "X"]), 2);
}

// ---- catalogue, indexes, refresh ----

#[test]
fn attributes_lists_the_catalogue() {
    let dir = fixture();
    let v = json(&run(dir.path(), &["attributes", "--json"]));
    let list = v.as_array().unwrap();
    let plan = list.iter().find(|a| a["name"] == "plan").unwrap();
    assert_eq!(keys(plan), sorted(&["name", "people"]));
    assert_eq!(plan["people"], 2);
    let human = ok(&run(dir.path(), &["attributes"]));
    assert!(human.contains("country"), "{human}");
}

#[test]
fn index_declares_indexes_that_queries_then_use() {
    let dir = fixture();
    let before = ok(&run(dir.path(), &["query", "attr.age > 20", "--explain"]));
    assert!(before.contains("scan"), "{before}");
    assert!(ok(&run(dir.path(), &["index", "attr", "age", "--range"])).contains("range-indexed"));
    let after = ok(&run(dir.path(), &["query", "attr.age > 20", "--explain"]));
    assert!(!after.contains("scan"), "{after}");
    assert!(after.contains("1 person match"), "{after}");
    assert!(ok(&run(dir.path(), &["index", "attr", "plan"])).contains("is indexed"));
    let err = fails(&run(dir.path(), &["index", "attr", "a.b"]), 1);
    assert!(err.contains("attribute"), "{err}");
}

#[test]
fn refresh_reevaluates_clock_dependent_segments_at_now() {
    let dir = fixture();
    ok(&run(
        dir.path(),
        &[
            "segment",
            "create",
            "Recent buyers",
            "--where",
            "event:purchase within 7d",
        ],
    ));
    let later = (T0 + 30 * DAY).to_string();
    let db = dir.path().to_str().unwrap();
    let out = ok(&run_raw(&["--db", db, "--now", &later, "refresh"]));
    assert_eq!(
        out,
        "re-evaluated 1 clock-dependent segment: 0 entered, 1 exited\n"
    );
    let list = json(&run(dir.path(), &["segment", "list", "--json"]));
    let recent = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "Recent buyers")
        .unwrap()
        .clone();
    assert_eq!(recent["size"], 0);
}

// ---- verify and stats ----

#[test]
fn verify_passes_a_healthy_database() {
    let dir = fixture();
    let out = ok(&run(dir.path(), &["verify"]));
    assert!(out.contains("healthy"), "{out}");
}

#[test]
fn verify_reports_a_damaged_record_and_exits_1() {
    let dir = fixture();
    {
        let db = open(dir.path());
        let (key, mut value) = db.raw_records(Family::Attributes).unwrap().remove(0);
        let last = value.len() - 1;
        value[last] ^= 0x40;
        db.raw_put(Family::Attributes, &key, &value).unwrap();
        db.close().unwrap();
    }
    let o = run(dir.path(), &["verify"]);
    let err = fails(&o, 1);
    assert!(err.contains("damaged"), "{err}");
    let report = stdout(&o);
    assert!(report.contains("problem"), "{report}");
    assert!(report.contains("attributes"), "{report}");
    // Reading the damaged person fails with a sentence, not a panic.
    let err = fails(&run(dir.path(), &["person", "show", "u-1"]), 1);
    assert!(err.contains("corrupted record"), "{err}");
}

/// The counts `stats --json` prints (besides `bytes_on_disk`).
const COUNT_KEYS: [&str; 6] = [
    "people",
    "objects",
    "events",
    "deliveries",
    "devices",
    "segments",
];

#[test]
fn stats_counts_every_kind() {
    let dir = fixture();
    let v = json(&run(dir.path(), &["stats", "--json"]));
    let mut want = COUNT_KEYS.to_vec();
    want.extend(["bytes_on_disk", "memory"]);
    assert_eq!(keys(&v), sorted(&want));
    assert_eq!(
        keys(&v["memory"]),
        sorted(&["budget", "cache_bytes", "bitmap_bytes"])
    );
    assert_eq!(v["memory"]["budget"], Json::Null);
    assert_eq!(v["memory"]["cache_bytes"], 64 << 20);
    assert!(v["memory"]["bitmap_bytes"].as_u64().unwrap() > 0);
    assert_eq!(v["people"], 3);
    assert_eq!(v["objects"], 1);
    assert_eq!(v["events"], 2);
    assert_eq!(v["deliveries"], 1);
    assert_eq!(v["devices"], 1);
    assert_eq!(v["segments"], 2);
    assert!(v["bytes_on_disk"].as_u64().unwrap() > 0);
    assert!(ok(&run(dir.path(), &["stats"])).contains("people"));
}

#[test]
fn a_memory_budget_sizes_the_cache_and_a_bad_one_is_a_usage_error() {
    let dir = fixture();
    let v = json(&run(
        dir.path(),
        &["--memory-budget-mib", "8", "stats", "--json"],
    ));
    assert_eq!(v["memory"]["budget"], 8 << 20);
    // Half the budget at open: the fixture's bitmaps fit beside it.
    assert_eq!(v["memory"]["cache_bytes"], 4 << 20);
    let text = ok(&run(dir.path(), &["--memory-budget-mib", "8", "stats"]));
    assert!(text.contains("memory budget"), "{text}");
    let err = fails(&run(dir.path(), &["--memory-budget-mib", "1", "stats"]), 2);
    assert!(
        err.contains("--memory-budget-mib") && err.contains("`memory_budget`"),
        "{err}"
    );
    let err = fails(
        &run(
            dir.path(),
            &["--memory-budget-mib", "18446744073709551615", "stats"],
        ),
        2,
    );
    assert!(err.contains("more bytes than"), "{err}");
}

#[test]
fn compact_rewrites_the_files_and_keeps_every_record() {
    let dir = fixture();
    let before = json(&run(dir.path(), &["stats", "--json"]));
    let v = json(&run(dir.path(), &["compact", "--json"]));
    assert_eq!(keys(&v), sorted(&["bytes_before", "bytes_after"]));
    assert!(v["bytes_before"].as_u64().unwrap() > 0);
    assert!(v["bytes_after"].as_u64().unwrap() > 0);
    assert!(!dir.path().join("sled.new").exists());
    let after = json(&run(dir.path(), &["stats", "--json"]));
    for k in COUNT_KEYS {
        assert_eq!(after[k], before[k], "{k}");
    }
    assert!(ok(&run(dir.path(), &["verify"])).contains("ok"));
    let text = ok(&run(dir.path(), &["compact"]));
    assert!(
        text.contains("bytes before") && text.contains("bytes after"),
        "{text}"
    );
}

#[test]
fn feed_turns_on_reads_resumes_and_refuses_expired_cursors() {
    let dir = fixture();
    // Off: reading says how to turn it on.
    let e = fails(&run(dir.path(), &["feed", "read"]), 1);
    assert!(e.contains("change_feed") && e.contains("feed on"), "{e}");
    assert!(ok(&run(dir.path(), &["feed", "status"])).contains("off"));
    let on = ok(&run(dir.path(), &["feed", "on", "--keep-days", "2"]));
    let start = on
        .lines()
        .find_map(|l| l.strip_prefix("starts after cursor "))
        .unwrap()
        .to_owned();
    let status = json(&run(dir.path(), &["feed", "status", "--json"]));
    assert_eq!(status["on"], true);
    assert_eq!(status["keep_seconds"], 2 * 86_400);
    assert_eq!(status["oldest"], start.as_str());
    ok(&run(
        dir.path(),
        &["segment", "create", "fed", "--where", "attr.plan = \"pro\""],
    ));
    let read = run(
        dir.path(),
        &["feed", "read", "--after", &start, "--limit", "1"],
    );
    let lines: Vec<Json> = ok(&read)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["type"], "segment_defined");
    let next = stderr(&read)
        .lines()
        .find_map(|l| l.strip_prefix("next cursor: "))
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(next, lines[0]["cursor"].as_str().unwrap());
    // Resuming gives the rest (the members who entered), then nothing.
    let rest = ok(&run(dir.path(), &["feed", "read", "--after", &next]));
    assert!(rest.lines().count() >= 1, "{rest}");
    assert!(
        rest.lines().all(|l| l.contains("segment_entered")),
        "{rest}"
    );
    // Bad and expired cursors.
    let e = fails(&run(dir.path(), &["feed", "read", "--after", "x"]), 1);
    assert!(e.contains("cursor"), "{e}");
    let e = fails(&run(dir.path(), &["feed", "read", "--after", "0"]), 1);
    assert!(e.contains("full export"), "{e}");
    ok(&run(dir.path(), &["feed", "off"]));
    assert!(ok(&run(dir.path(), &["feed", "status"])).contains("off"));
}

// ---- opening, usage, robustness ----

#[test]
fn read_commands_refuse_a_missing_or_empty_database_and_create_nothing() {
    let parent = tempfile::tempdir().unwrap();
    let missing = parent.path().join("nothing-here");
    let empty = tempfile::tempdir().unwrap();
    for dir in [missing.as_path(), empty.path()] {
        for args in [
            vec!["person", "show", "u-1"],
            vec!["people"],
            vec!["activity", "u-1"],
            vec!["query", "all"],
            vec!["segment", "list"],
            vec!["segment", "show", "x"],
            vec!["topic", "list"],
            vec!["attributes"],
            vec!["refresh"],
            vec!["verify"],
            vec!["stats"],
            vec!["compact"],
        ] {
            let err = fails(&run(dir, &args), 1);
            assert!(err.contains("no profiledb database at"), "{args:?}: {err}");
        }
    }
    assert!(!missing.exists());
    assert_eq!(std::fs::read_dir(empty.path()).unwrap().count(), 0);
}

#[test]
fn write_commands_create_the_database() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("new");
    ok(&run(&dir, &["topic", "create", "1", "News"]));
    ok(&run(
        &dir,
        &["segment", "create", "Everyone", "--where", "all"],
    ));
    ok(&run(&dir, &["index", "attr", "plan"]));
    assert!(ok(&run(&dir, &["verify"])).contains("healthy"));
}

#[test]
fn a_directory_that_is_not_a_database_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    for args in [
        vec!["stats"],
        vec!["topic", "create", "1", "News"],
        vec!["demo", "--people", "10"],
    ] {
        let err = fails(&run(dir.path(), &args), 1);
        assert!(err.contains(dir.path().to_str().unwrap()), "{err}");
    }
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("notes.txt")]);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("notes.txt")).unwrap(),
        "mine"
    );
    let file = dir.path().join("notes.txt");
    fails(&run(&file, &["stats"]), 1);
    fails(&run(&file, &["topic", "create", "1", "News"]), 1);
}

#[test]
fn damaged_files_give_one_line_errors_never_panics() {
    let dir = fixture();
    // Every file of the database overwritten with garbage, one at a time.
    let mut files = Vec::new();
    let mut stack = vec![dir.path().to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files.sort();
    for f in files {
        let saved = std::fs::read(&f).unwrap();
        let half = saved.get(..saved.len() / 2).unwrap().to_vec();
        for damage in [b"\xff\x00garbage\x00\xff".to_vec(), half, Vec::new()] {
            std::fs::write(&f, &damage).unwrap();
            for args in [
                vec!["stats"],
                vec!["person", "show", "u-1", "--json"],
                vec!["verify"],
            ] {
                let o = run(dir.path(), &args);
                let err = stderr(&o);
                assert_no_panic(&err);
                if o.status.code() != Some(0) {
                    assert_eq!(o.status.code(), Some(1), "{f:?} {args:?}: {err}");
                    assert_eq!(err.lines().count(), 1, "{f:?} {args:?}: {err}");
                }
            }
        }
        std::fs::write(&f, saved).unwrap();
    }
}

#[test]
fn usage_errors_exit_2_and_help_documents_exit_codes() {
    let help = ok(&run_raw(&["--help"]));
    assert!(help.contains("Exit status"), "{help}");
    assert!(help.contains("2  a usage error"), "{help}");
    for args in [
        vec!["frobnicate"],
        vec!["person", "show"],
        vec!["query"],
        vec!["people", "--limit", "lots"],
        vec!["--now", "yesterday", "stats"],
        vec!["person", "show", "u-1", "--colour"],
    ] {
        fails(&run_raw(&args), 2);
    }
}

// ---- demo ----

#[test]
fn demo_builds_a_workspace_that_the_other_commands_read() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("demo");
    let out = ok(&run(&dir, &["demo", "--people", "2000"]));
    for needle in [
        "Building a sample workspace of 2000 people",
        "Identifiers and attributes",
        "Relationships",
        "Audience queries",
        " ms ",
        "Try next:",
        &format!("profiledb --db {} person show", dir.display()),
    ] {
        assert!(out.contains(needle), "missing {needle}:\n{out}");
    }
    if cfg!(feature = "parquet") {
        assert!(out.contains("export --format parquet"), "{out}");
    }
    let stats = json(&run(&dir, &["stats", "--json"]));
    assert_eq!(stats["people"], 2001);
    assert_eq!(stats["segments"], 6);
    let ann = json(&run(
        &dir,
        &["person", "show", "ann.lee@example.com", "--json"],
    ));
    assert_eq!(ann["customer"]["id"], "ann-lee");
    assert!(!ann["deliveries"].as_array().unwrap().is_empty());
    let count: u64 = ok(&run(&dir, &["query", "segment:Paying", "--count"]))
        .trim()
        .parse()
        .unwrap();
    assert!(count > 0);
    assert!(ok(&run(&dir, &["verify"])).contains("healthy"));

    // A second demo replaces the first.
    let again = ok(&run(&dir, &["demo", "--people", "50"]));
    assert!(
        again.contains("Replacing the earlier demo database"),
        "{again}"
    );
    assert_eq!(json(&run(&dir, &["stats", "--json"]))["people"], 51);
}

#[test]
fn demo_will_not_replace_a_database_it_did_not_make() {
    let dir = fixture();
    let err = fails(&run(dir.path(), &["demo", "--people", "10"]), 1);
    assert!(err.contains("did not make"), "{err}");
    assert_eq!(json(&run(dir.path(), &["stats", "--json"]))["people"], 3);
}

#[test]
fn a_reader_that_goes_away_is_not_an_error() {
    let dir = fixture();
    let mut child = Command::new(env!("CARGO_BIN_EXE_profiledb"))
        .args(["--db", dir.path().to_str().unwrap(), "people", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // closed before the program writes (or while it does)
    let o = child.wait_with_output().unwrap();
    assert_no_panic(&stderr(&o));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn a_failing_standard_output_is_a_one_line_error() {
    let full = Path::new("/dev/full");
    if !full.exists() {
        return; // not Linux
    }
    let dir = fixture();
    let o = Command::new(env!("CARGO_BIN_EXE_profiledb"))
        .args(["--db", dir.path().to_str().unwrap(), "stats"])
        .stdout(std::fs::File::create(full).unwrap())
        .output()
        .unwrap();
    let err = fails(&o, 1);
    assert!(err.contains("cannot write to standard output"), "{err}");
}

// ---- ingest and export ----

/// Runs the binary with `--db dir --now T0` and `args`, `input` on its stdin.
fn run_stdin(dir: &Path, args: &[&str], input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_profiledb"))
        .args(["--db", dir.to_str().unwrap(), "--now", &T0.to_string()])
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // Written from another thread, so a large input cannot deadlock with the output.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let o = child.wait_with_output().unwrap();
    writer.join().unwrap();
    o
}

/// The `{"applied", "rejected"}` line `ingest` prints, checked for exactly those keys and
/// exit `code`; returns (applied, rejected).
fn ingested(o: &Output, code: i32) -> (u64, u64) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        stdout(o),
        stderr(o)
    );
    assert_no_panic(&stderr(o));
    let out = stdout(o);
    assert_eq!(out.lines().count(), 1, "{out}");
    let v: Json = serde_json::from_str(&out).unwrap();
    assert_eq!(keys(&v), sorted(&["applied", "rejected"]));
    (
        v["applied"].as_u64().unwrap(),
        v["rejected"].as_u64().unwrap(),
    )
}

fn fixture_path(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

const CLIENT_FIXTURE: &str = "clients/customerio-node-5.2.0.jsonl";

#[test]
fn ingest_reads_every_fixture_file() {
    // (file, applied, refused lines)
    let cases: [(&str, u64, &[u64]); 4] = [
        (CLIENT_FIXTURE, 25, &[]),
        ("specs/track-v2-examples.jsonl", 22, &[]),
        ("specs/pipelines-examples.jsonl", 4, &[5]),
        ("specs/reporting-webhooks-examples.jsonl", 3, &[]),
    ];
    for (file, applied, refused) in cases {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("db");
        let o = run(&dir, &["ingest", &fixture_path(file)]);
        let code = if refused.is_empty() { 0 } else { 2 };
        assert_eq!(
            ingested(&o, code),
            (applied, refused.len() as u64),
            "{file}"
        );
        let err = stderr(&o);
        let named: Vec<&str> = err.lines().filter(|l| l.starts_with("line ")).collect();
        assert_eq!(named.len(), refused.len(), "{file}: {err}");
        for (l, line) in refused.iter().zip(&named) {
            assert!(line.starts_with(&format!("line {l}: ")), "{file}: {err}");
        }
        if code == 0 {
            assert!(err.is_empty(), "{file}: {err}");
        }
        assert!(ok(&run(&dir, &["verify"])).contains("healthy"), "{file}");
    }

    // The client journey, as its README describes it.
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("db");
    ingested(&run(&dir, &["ingest", &fixture_path(CLIENT_FIXTURE)]), 0);
    let p1 = json(&run(&dir, &["person", "show", "p-1", "--json"]));
    assert_eq!(p1["customer"]["email"], "pipe@example.com");
    assert_eq!(p1["customer"]["attributes"]["plan"], "pro");
    assert!(p1["relationships"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["object_id"] == "globex"));
    let err = fails(&run(&dir, &["person", "show", "u-200"]), 1);
    assert!(err.contains("u-200"), "{err}");
    // The Pipelines group example's bad timestamp is named.
    let parent = tempfile::tempdir().unwrap();
    let o = run(
        &parent.path().join("db"),
        &["ingest", &fixture_path("specs/pipelines-examples.jsonl")],
    );
    assert!(stderr(&o).contains("line 5: invalid input: `timestamp`"));
}

#[test]
fn ingest_of_a_mixed_file_applies_the_good_lines_and_names_each_bad_one() {
    let dir = fixture();
    let lines = [
        r#"{"type":"person","action":"identify","identifiers":{"id":"m-1"},"attributes":{"plan":"team"}}"#,
        "",
        "{not json",
        r#"{"type":"identify","userId":"m-2","traits":{"email":"m2@example.com"},"timestamp":"2025-12-31T10:00:00Z"}"#,
        r#"{"batch":[{"type":"person","action":"identify","identifiers":{"id":"m-3"}},{"type":"person","action":"identify","identifiers":{}},{"type":"person","action":"event","identifiers":{"id":"m-1"},"name":"signed_up","timestamp":1767200000},{"type":"nope"}]}"#,
        r#"{"type":"person","action":"identify","attributes":{"plan":"x"}}"#,
        "   ",
        r#"{"type":"person","action":"identify","identifiers":{"id":"u-2"},"attributes":{"plan":"team"}}"#,
    ];
    let inputs = tempfile::tempdir().unwrap();
    let file = inputs.path().join("mixed.jsonl");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let o = run(dir.path(), &["ingest", file.to_str().unwrap()]);
    assert_eq!(ingested(&o, 2), (5, 4));
    let err = stderr(&o);
    let got: Vec<&str> = err.lines().collect();
    assert_eq!(got.len(), 5, "{err}");
    assert!(
        got[0].starts_with("line 3: invalid input: `message`"),
        "{err}"
    );
    assert!(
        got[1].starts_with("line 5 item 1: invalid input: `batch[1].identifiers`"),
        "{err}"
    );
    assert!(
        got[2].starts_with("line 5 item 3: invalid input: `batch[3].type`"),
        "{err}"
    );
    assert!(
        got[3].starts_with("line 6: invalid input: `identifiers`"),
        "{err}"
    );
    assert!(
        got[4].starts_with("error: 4 of 9 messages were refused"),
        "{err}"
    );

    let m1 = json(&run(dir.path(), &["person", "show", "m-1", "--json"]));
    assert_eq!(m1["customer"]["attributes"]["plan"], "team");
    assert!(m1["activities"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["name"] == "signed_up" && a["timestamp"] == 1_767_200_000));
    let m2 = json(&run(
        dir.path(),
        &["person", "show", "m2@example.com", "--json"],
    ));
    assert_eq!(m2["customer"]["id"], "m-2");
    json(&run(dir.path(), &["person", "show", "m-3", "--json"]));
    let u2 = json(&run(dir.path(), &["person", "show", "u-2", "--json"]));
    assert_eq!(u2["customer"]["attributes"]["plan"], "team");
    // The refused line 6 created nobody; the fixture's people are still there.
    assert_eq!(json(&run(dir.path(), &["stats", "--json"]))["people"], 6);
    assert!(ok(&run(dir.path(), &["verify"])).contains("healthy"));
}

#[test]
fn ingest_reads_stdin_and_survives_a_bom_empty_lines_crlf_and_bytes_that_are_not_utf8() {
    let good = |id: &str| {
        format!(r#"{{"type":"person","action":"identify","identifiers":{{"id":"{id}"}}}}"#)
    };
    let mut input = b"\xEF\xBB\xBF".to_vec();
    input.extend_from_slice(good("s-1").as_bytes());
    input.extend_from_slice(b"\r\n\n");
    input.extend_from_slice(b"{\"type\":\"person\",\"id\":\"\xff\xfe\"}\n");
    input.extend_from_slice(b" \t \r\n");
    // A very long line: refused by the attribute size limit, not a crash.
    let long = format!(
        r#"{{"type":"person","action":"identify","identifiers":{{"id":"s-long"}},"attributes":{{"bio":"{}"}}}}"#,
        "x".repeat(3 << 20)
    );
    input.extend_from_slice(long.as_bytes());
    input.extend_from_slice(b"\n");
    input.extend_from_slice(good("s-2").as_bytes()); // no final newline
    let expect_err = |err: &str| {
        let got: Vec<&str> = err.lines().collect();
        assert_eq!(got.len(), 3, "{err}");
        assert_eq!(got[0], "line 3: is not valid UTF-8");
        assert!(
            got[1].starts_with("line 5: invalid input: `attributes.bio`"),
            "{err}"
        );
        assert!(
            got[2].starts_with("error: 2 of 4 messages were refused"),
            "{err}"
        );
    };
    for args in [vec!["ingest"], vec!["ingest", "-"]] {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("db");
        let o = run_stdin(&dir, &args, &input);
        assert_eq!(ingested(&o, 2), (2, 2), "{args:?}");
        expect_err(&stderr(&o));
        json(&run(&dir, &["person", "show", "s-1", "--json"]));
        json(&run(&dir, &["person", "show", "s-2", "--json"]));
        fails(&run(&dir, &["person", "show", "s-long"]), 1);
    }
    // The same bytes from a file.
    let parent = tempfile::tempdir().unwrap();
    let file = parent.path().join("in.jsonl");
    std::fs::write(&file, &input).unwrap();
    let o = run(
        &parent.path().join("db"),
        &["ingest", file.to_str().unwrap()],
    );
    assert_eq!(ingested(&o, 2), (2, 2));
    expect_err(&stderr(&o));
    // Nothing but empty lines: nothing counted, exit 0.
    let parent = tempfile::tempdir().unwrap();
    let o = run_stdin(&parent.path().join("db"), &["ingest"], b"\n\n  \n");
    assert_eq!(ingested(&o, 0), (0, 0));
    assert!(stderr(&o).is_empty());
}

#[test]
fn ingest_fatal_errors_exit_1_with_one_line() {
    let line = br#"{"type":"person","action":"identify","identifiers":{"id":"f-1"}}"#;
    // --db is a file.
    let parent = tempfile::tempdir().unwrap();
    let file = parent.path().join("a-file");
    std::fs::write(&file, "mine").unwrap();
    let o = run_stdin(&file, &["ingest"], line);
    fails(&o, 1);
    assert!(stdout(&o).is_empty());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine");
    // --db is a directory holding something else: refused untouched.
    let foreign = tempfile::tempdir().unwrap();
    std::fs::write(foreign.path().join("notes.txt"), "mine").unwrap();
    let err = fails(&run_stdin(foreign.path(), &["ingest"], line), 1);
    assert!(err.contains(foreign.path().to_str().unwrap()), "{err}");
    assert_eq!(std::fs::read_dir(foreign.path()).unwrap().count(), 1);
    // An input that is missing, or cannot be read: no database is created.
    let dir = parent.path().join("db");
    let missing = parent.path().join("missing.jsonl");
    let err = fails(&run(&dir, &["ingest", missing.to_str().unwrap()]), 1);
    assert!(
        err.contains("cannot read") && err.contains("missing.jsonl"),
        "{err}"
    );
    let err = fails(&run(&dir, &["ingest", parent.path().to_str().unwrap()]), 1);
    assert!(err.contains("cannot read"), "{err}");
    assert!(!dir.exists());
}

/// A database with people, topics, segments, devices, objects and deliveries: `demo` of
/// 500 people, then the client fixture.
fn rich_database(dir: &Path) {
    ok(&run(dir, &["demo", "--people", "500"]));
    ingested(&run(dir, &["ingest", &fixture_path(CLIENT_FIXTURE)]), 0);
}

#[test]
fn export_then_ingest_rebuilds_an_equal_database() {
    let parent = tempfile::tempdir().unwrap();
    let (src, copy) = (parent.path().join("src"), parent.path().join("copy"));
    rich_database(&src);
    let dump = parent.path().join("dump.jsonl");
    let out = ok(&run(&src, &["export", dump.to_str().unwrap()]));
    assert!(
        out.contains("exported") && out.contains("dump.jsonl"),
        "{out}"
    );
    assert!(!parent.path().join("dump.jsonl.tmp").exists());
    let text = std::fs::read_to_string(&dump).unwrap();
    // To stdout: the same lines.
    assert_eq!(ok(&run(&src, &["export"])), text);
    assert_eq!(ok(&run(&src, &["export", "-"])), text);

    let lines = text.lines().count() as u64;
    assert!(lines >= 3);
    assert_eq!(
        ingested(&run(&copy, &["ingest", dump.to_str().unwrap()]), 0),
        (lines, 0)
    );
    assert!(ok(&run(&copy, &["verify"])).contains("healthy"));

    let both = |args: &[&str]| {
        let (a, b) = (ok(&run(&src, args)), ok(&run(&copy, args)));
        assert_eq!(a, b, "{args:?}");
        a
    };
    let listed = json(&run(&src, &["people", "--limit", "5", "--json"]));
    let mut idents: Vec<String> = listed["people"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect();
    idents.extend(
        ["ann.lee@example.com", "p-1", "u-100", "cio_1"]
            .iter()
            .map(|s| (*s).to_owned()),
    );
    for ident in &idents {
        let shown = both(&["person", "show", ident, "--json"]);
        assert!(shown.contains("\"customer\""), "{ident}");
    }
    assert!(!json(&run(&src, &["segment", "list", "--json"]))
        .as_array()
        .unwrap()
        .is_empty());
    both(&["segment", "list", "--json"]);
    both(&["topic", "list", "--json"]);
    both(&["attributes", "--json"]);
    let mut stats = [&src, &copy].map(|d| json(&run(d, &["stats", "--json"])));
    for s in &mut stats {
        s.as_object_mut().unwrap().remove("bytes_on_disk");
    }
    assert_eq!(stats[0], stats[1]);
    assert_eq!(stats[0]["people"], 503);
    for expr in [
        "all",
        r#"attr.plan = "pro""#,
        "segment:Paying",
        "event:purchase within 30d",
        r#"device.platform = "ios""#,
        "related:1",
        "topic:3 and not unsubscribed",
    ] {
        let n = both(&["query", expr, "--count"]);
        assert!(n.trim().parse::<u64>().is_ok(), "{expr}: {n}");
    }
    // The copy exports the very same dump.
    assert_eq!(ok(&run(&copy, &["export"])), text);
}

#[test]
fn a_restore_dump_goes_whole_and_alone_into_an_empty_database() {
    let parent = tempfile::tempdir().unwrap();
    let src = parent.path().join("src");
    ingested(&run(&src, &["ingest", &fixture_path(CLIENT_FIXTURE)]), 0);
    let text = ok(&run(&src, &["export"]));
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 3, "{text}");
    let people = json(&run(&src, &["stats", "--json"]))["people"].clone();

    // Into a database that holds records: refused at its first line, nothing written.
    let o = run_stdin(&src, &["ingest"], text.as_bytes());
    let err = fails(&o, 1);
    assert!(
        err.contains("line 1:") && err.contains("restore_begin needs a database that holds no"),
        "{err}"
    );
    assert_eq!(ingested(&o, 1), (0, 0));
    assert_eq!(json(&run(&src, &["stats", "--json"]))["people"], people);

    // After other messages: they apply and are durable, the dump is refused.
    let dir = parent.path().join("after");
    let input = format!(
        "{}\n{text}",
        r#"{"type":"person","action":"identify","identifiers":{"id":"first"}}"#
    );
    let o = run_stdin(&dir, &["ingest"], input.as_bytes());
    let err = fails(&o, 1);
    assert!(
        err.contains("line 2:") && err.contains("everything before it is applied and durable"),
        "{err}"
    );
    json(&run(&dir, &["person", "show", "first", "--json"]));

    // Truncated: a partial restore, said plainly.
    let dir = parent.path().join("truncated");
    let cut = lines[..lines.len() - 1].join("\n");
    let err = fails(&run_stdin(&dir, &["ingest"], cut.as_bytes()), 1);
    assert!(
        err.contains("no restore_end") && err.contains("partial restore"),
        "{err}"
    );

    // Another message inside the dump: refused (it writes nothing), the restore completes.
    let dir = parent.path().join("inside");
    let mut mixed: Vec<&str> = lines.clone();
    let intruder = r#"{"type":"person","action":"identify","identifiers":{"id":"intruder"}}"#;
    mixed.insert(1, intruder);
    let o = run_stdin(&dir, &["ingest"], mixed.join("\n").as_bytes());
    assert_eq!(ingested(&o, 2), (lines.len() as u64, 1));
    assert!(
        stderr(&o).starts_with("line 2: comes inside the restore dump that began at line 1"),
        "{}",
        stderr(&o)
    );
    fails(&run(&dir, &["person", "show", "intruder"]), 1);
    assert!(ok(&run(&dir, &["verify"])).contains("healthy"));
    assert_eq!(ok(&run(&dir, &["export"])), text);

    // Restore lines without their restore_begin: refused, nothing written.
    let dir = parent.path().join("headless");
    let o = run_stdin(&dir, &["ingest"], lines[1..].join("\n").as_bytes());
    assert_eq!(ingested(&o, 2), (0, (lines.len() - 1) as u64));
    assert!(stderr(&o).contains("no restore_begin line came before it"));
    assert_eq!(json(&run(&dir, &["stats", "--json"]))["people"], 0);

    // A damaged restore line: the restore stops there.
    let dir = parent.path().join("damaged");
    let mut bad: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    bad[1] = bad[1].replacen(
        "\"records\":[[",
        "\"records\":[[\"nofamily\",\"00\",\"00\"],[",
        1,
    );
    let err = fails(&run_stdin(&dir, &["ingest"], bad.join("\n").as_bytes()), 1);
    assert!(
        err.contains("failed at line 2") && err.contains("partial restore"),
        "{err}"
    );
}

#[test]
fn export_refuses_a_missing_database_and_never_leaves_a_half_file() {
    let parent = tempfile::tempdir().unwrap();
    let missing = parent.path().join("nothing-here");
    let out = parent.path().join("out.jsonl");
    let err = fails(&run(&missing, &["export", out.to_str().unwrap()]), 1);
    assert!(err.contains("no profiledb database at"), "{err}");
    assert!(!missing.exists() && !out.exists());

    let dir = fixture();
    // FILE.tmp cannot be created: the export fails and FILE keeps what it held.
    std::fs::write(&out, "old").unwrap();
    std::fs::create_dir(parent.path().join("out.jsonl.tmp")).unwrap();
    let err = fails(&run(dir.path(), &["export", out.to_str().unwrap()]), 1);
    assert!(err.contains("out.jsonl.tmp"), "{err}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "old");
    // A directory that does not exist.
    let nowhere = parent.path().join("no-dir").join("out.jsonl");
    fails(&run(dir.path(), &["export", nowhere.to_str().unwrap()]), 1);
    assert!(!parent.path().join("no-dir").exists());
    // Replacing an existing file once complete.
    std::fs::remove_dir(parent.path().join("out.jsonl.tmp")).unwrap();
    ok(&run(dir.path(), &["export", out.to_str().unwrap()]));
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(
        text.starts_with(r#"{"type":"profiledb","action":"restore_begin""#),
        "{text}"
    );
    assert!(!parent.path().join("out.jsonl.tmp").exists());
}

#[test]
fn export_to_a_reader_that_goes_away_or_a_full_disk() {
    let dir = fixture();
    let mut child = Command::new(env!("CARGO_BIN_EXE_profiledb"))
        .args(["--db", dir.path().to_str().unwrap(), "export"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    assert_no_panic(&stderr(&o));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let full = Path::new("/dev/full");
    if !full.exists() {
        return; // not Linux
    }
    let o = Command::new(env!("CARGO_BIN_EXE_profiledb"))
        .args(["--db", dir.path().to_str().unwrap(), "export"])
        .stdout(std::fs::File::create(full).unwrap())
        .output()
        .unwrap();
    let err = fails(&o, 1);
    assert!(err.contains("cannot write to standard output"), "{err}");
}
