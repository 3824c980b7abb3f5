//! Bitmap indexes, topics, segments and audience queries through the public API, and the
//! law that an indexed query equals a brute-force filter over every person read straight
//! from the stored data.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use std::sync::Arc;

use common::{ids, input_field, open, T0};
use profiledb::{
    ActivityFilter, Channel, DeviceInput, Durability, Faults, Ident, Identify, Metric, NewDelivery,
    ObjectRef, Op, Outcome, Platform, ProfileDb, PushResult, Track, TrackKind, Value,
};
use proptest::prelude::*;

fn u(id: &str) -> Ident {
    Ident::id(id)
}

#[test]
fn topics_follow_explicit_preferences_and_defaults() {
    let (_d, db, _c) = open();
    db.define_topic(1, "Newsletter", true).unwrap();
    db.define_topic(2, "Product updates", false).unwrap();
    db.identify(Identify::new(u("a"))).unwrap();
    db.identify(Identify::new(u("b")).set("cio_subscription_preferences.topics.topic_1", false))
        .unwrap();
    db.identify(Identify::new(u("c")).set(
        "cio_subscription_preferences",
        Value::from_json(&serde_json::json!({"topics": {"topic_2": true}}), "p").unwrap(),
    ))
    .unwrap();
    assert_eq!(
        ids(&db, "topic:1"),
        ["a", "c"],
        "opted in by default unless out"
    );
    assert_eq!(ids(&db, "topic:2"), ["c"], "opted out by default unless in");
    let p = db.profile(&u("b"), 1).unwrap().unwrap();
    let states: Vec<(u32, bool)> = p
        .subscription
        .topics
        .iter()
        .map(|t| (t.id, t.subscribed))
        .collect();
    assert_eq!(states, [(1, false), (2, false)]);
    let err = db.query("topic:9", 10, None).unwrap_err();
    assert_eq!(input_field(&err), "condition");
}

#[test]
fn queries_count_page_and_explain() {
    let (_d, db, _c) = open();
    for i in 0..25 {
        db.identify(
            Identify::new(u(&format!("p{i:02}")))
                .set("plan", if i % 2 == 0 { "pro" } else { "free" })
                .set("age", i),
        )
        .unwrap();
    }
    let all = db.query(r#"attr.plan = "pro""#, 5, None).unwrap();
    assert_eq!(all.count, 13);
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = db.query(r#"attr.plan = "pro""#, 5, after).unwrap();
        seen.extend(page.people.iter().filter_map(|p| p.id.clone()));
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(seen.len(), 13);
    assert_eq!(db.count("attr.age >= 20 and attr.plan exists").unwrap(), 5);
    assert_eq!(db.count("not attr.plan exists").unwrap(), 0);
    assert_eq!(db.count("all").unwrap(), 25);

    let explain = db.explain(r#"attr.plan exists and attr.age > 3"#).unwrap();
    assert!(
        explain.lines.iter().any(|l| l.contains("index")),
        "{explain:?}"
    );
    assert!(
        explain
            .lines
            .iter()
            .any(|l| l.contains("scan of 25 candidates")),
        "{explain:?}"
    );
    // A declared index answers equality from a bitmap.
    db.index_attribute("plan").unwrap();
    let explain = db.explain(r#"attr.plan = "pro""#).unwrap();
    assert!(
        explain.lines.iter().all(|l| l.contains("index")),
        "{explain:?}"
    );
    assert_eq!(db.count(r#"attr.plan = "pro""#).unwrap(), 13);
    db.identify(Identify::new(u("p00")).set("plan", "free"))
        .unwrap();
    assert_eq!(
        db.count(r#"attr.plan = "pro""#).unwrap(),
        12,
        "kept up to date"
    );
    assert!(db.verify().unwrap().is_ok());
}

#[test]
fn parse_errors_point_at_the_position() {
    let (_d, db, _c) = open();
    let err = db.count("attr.plan == 3").unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("at byte"), "{msg}");
    assert_eq!(input_field(&err), "condition");
    let err = db.count(r#"{"and": [{"bogus": 1}]}"#).unwrap_err();
    assert!(err.to_string().contains("and[0]"), "{err}");
}

#[test]
fn app_api_filter_json_queries() {
    let (_d, db, _c) = open();
    db.identify(Identify::new(u("a")).set("interest", "roadrunners"))
        .unwrap();
    db.identify(Identify::new(u("b")).set("interest", "coyotes"))
        .unwrap();
    let seg = db
        .create_segment("Everyone A", Some(r#"attr.interest exists"#))
        .unwrap();
    let filter = format!(
        r#"{{"and":[{{"segment":{{"id":{seg}}}}},{{"or":[{{"attribute":{{"field":"interest","operator":"eq","value":"roadrunners"}}}}]}}]}}"#
    );
    assert_eq!(ids(&db, &filter), ["a"]);
}

#[test]
fn people_list_searches_by_identifier_prefix() {
    let (_d, db, _c) = open();
    db.identify(Identify::new(u("alice")).set("email", "Alice@x.io"))
        .unwrap();
    db.identify(Identify::new(u("bob")).set("email", "bob@x.io"))
        .unwrap();
    db.identify(Identify::new(Ident::email("alfred@y.io")))
        .unwrap();
    let page = db.people_page(Some("al"), None, 10, None).unwrap();
    assert_eq!(page.count, 2);
    let page = db.people_page(Some("ALI"), None, 10, None).unwrap();
    assert_eq!(page.count, 1, "email prefix matches in any case");
    let page = db
        .people_page(Some("al"), Some("attr.id exists"), 10, None)
        .unwrap();
    assert_eq!(page.count, 1);
    assert_eq!(db.people_page(None, None, 10, None).unwrap().count, 3);
}

#[test]
fn attribute_catalogue_counts_people_per_attribute() {
    let (_d, db, _c) = open();
    db.identify(Identify::new(u("a")).set("plan", "pro").set("age", 3))
        .unwrap();
    db.identify(Identify::new(u("b")).set("plan", "free"))
        .unwrap();
    let cat = db.attribute_catalogue();
    assert!(cat.contains(&("plan".to_owned(), 2)), "{cat:?}");
    assert!(cat.contains(&("age".to_owned(), 1)), "{cat:?}");
    assert!(cat.contains(&("id".to_owned(), 2)), "{cat:?}");
    assert_eq!(db.missing_attributes(&u("b")).unwrap(), ["age"]);
    db.identify(Identify::new(u("a")).remove("age")).unwrap();
    assert!(!db.attribute_catalogue().iter().any(|(n, _)| n == "age"));
}

#[test]
fn manual_segments_add_and_remove() {
    let (_d, db, _c) = open();
    db.identify(Identify::new(u("a"))).unwrap();
    db.identify(Identify::new(u("b"))).unwrap();
    let vip = db.create_segment("VIP", None).unwrap();
    let out = db
        .add_to_segment(vip, &[u("a"), u("b"), u("ghost")])
        .unwrap();
    assert_eq!(
        out,
        Outcome::Members {
            changed: 2,
            unknown: 1
        }
    );
    assert_eq!(ids(&db, "segment:VIP"), ["a", "b"]);
    db.remove_from_segment(vip, &[u("a")]).unwrap();
    assert_eq!(ids(&db, &format!("segment:#{vip}")), ["b"]);
    let acts = db
        .activities(&u("a"), &ActivityFilter::new(10).kind("segment_exited"))
        .unwrap();
    assert_eq!(acts.len(), 1);
    assert_eq!(acts[0].name.as_deref(), Some("VIP"));
    let p = db.profile(&u("b"), 1).unwrap().unwrap();
    assert_eq!(p.segments.len(), 1);
    assert_eq!(p.segments[0].kind, "manual");
    let too_many: Vec<Ident> = (0..1001).map(|i| u(&format!("x{i}"))).collect();
    assert_eq!(
        input_field(&db.add_to_segment(vip, &too_many).unwrap_err()),
        "ids"
    );
    // Deleting a member removes them from the segment.
    db.delete(&u("b")).unwrap();
    assert_eq!(db.count("segment:VIP").unwrap(), 0);
    assert!(db.verify().unwrap().is_ok());
}

#[test]
fn data_driven_segments_follow_every_write() {
    let (_d, db, _c) = open();
    db.identify(Identify::new(u("a")).set("plan", "pro"))
        .unwrap();
    db.identify(Identify::new(u("b")).set("plan", "free"))
        .unwrap();
    let pro = db
        .create_segment("Pro", Some(r#"attr.plan = "pro""#))
        .unwrap();
    assert_eq!(ids(&db, "segment:Pro"), ["a"], "initial membership");
    db.identify(Identify::new(u("b")).set("plan", "pro"))
        .unwrap();
    db.identify(Identify::new(u("a")).set("plan", "free"))
        .unwrap();
    assert_eq!(ids(&db, "segment:Pro"), ["b"]);
    let kinds: Vec<String> = db
        .activities(&u("a"), &ActivityFilter::new(10))
        .unwrap()
        .into_iter()
        .map(|a| a.kind)
        .collect();
    assert!(kinds.contains(&"segment_exited".to_owned()), "{kinds:?}");
    assert!(
        db.add_to_segment(pro, &[u("a")]).is_err(),
        "data-driven segments refuse manual changes"
    );
    // New people enter on creation.
    db.identify(Identify::new(u("c")).set("plan", "pro"))
        .unwrap();
    assert_eq!(ids(&db, "segment:Pro"), ["b", "c"]);
    // Events, devices and relationships drive segments too.
    let buyers = db
        .create_segment("Buyers", Some("event:purchase count >= 2"))
        .unwrap();
    let ios = db
        .create_segment("iOS", Some(r#"device.platform = "ios""#))
        .unwrap();
    let acme = db.create_segment("Acme", Some("related:1:acme")).unwrap();
    db.track(Track::event(u("a"), "purchase")).unwrap();
    assert_eq!(
        ids(&db, &format!("segment:#{buyers}")),
        Vec::<String>::new()
    );
    db.track(Track::event(u("a"), "purchase")).unwrap();
    assert_eq!(ids(&db, &format!("segment:#{buyers}")), ["a"]);
    db.add_device(&u("b"), DeviceInput::new("t", Platform::Ios))
        .unwrap();
    assert_eq!(ids(&db, &format!("segment:#{ios}")), ["b"]);
    db.add_relationship(&u("c"), &ObjectRef::new(1, "acme"), vec![])
        .unwrap();
    assert_eq!(ids(&db, &format!("segment:#{acme}")), ["c"]);
    db.delete_object(&ObjectRef::new(1, "acme")).unwrap();
    assert_eq!(db.count(&format!("segment:#{acme}")).unwrap(), 0);
    assert!(db.verify().unwrap().is_ok());
}

#[test]
fn segments_reference_segments_in_dependency_order() {
    let (_d, db, _c) = open();
    db.identify(Identify::new(u("a")).set("plan", "pro").set("age", 40))
        .unwrap();
    let pro = db
        .create_segment("Pro", Some(r#"attr.plan = "pro""#))
        .unwrap();
    let old_pro = db
        .create_segment("Old pro", Some(r#"segment:Pro and attr.age > 30"#))
        .unwrap();
    assert_eq!(ids(&db, "segment:\"Old pro\""), ["a"]);
    // A change that moves someone out of Pro moves them out of the dependent too.
    db.identify(Identify::new(u("a")).set("plan", "free"))
        .unwrap();
    assert_eq!(db.count("segment:\"Old pro\"").unwrap(), 0);
    db.identify(Identify::new(u("a")).set("plan", "pro"))
        .unwrap();
    assert_eq!(db.count("segment:\"Old pro\"").unwrap(), 1);
    // Renaming never breaks a reference (stored by id).
    db.rename_segment(pro, "Professionals").unwrap();
    let defs = db.segments();
    let dependent = defs.iter().find(|s| s.id == old_pro).unwrap();
    assert!(dependent
        .condition
        .as_deref()
        .unwrap()
        .contains(&format!("#{pro}")));
    db.identify(Identify::new(u("a")).set("plan", "free"))
        .unwrap();
    assert_eq!(db.count("segment:\"Old pro\"").unwrap(), 0);
    // Deleting a referenced segment is refused, naming the dependents.
    let err = db.delete_segment(pro).unwrap_err();
    assert!(err.to_string().contains("Old pro"), "{err}");
    db.delete_segment(old_pro).unwrap();
    db.delete_segment(pro).unwrap();
    assert!(db.segments().is_empty());
    assert!(db.verify().unwrap().is_ok());
}

#[test]
fn unknown_segments_in_conditions_are_refused() {
    let (_d, db, _c) = open();
    let err = db.create_segment("X", Some("segment:Nope")).unwrap_err();
    assert_eq!(input_field(&err), "condition");
    db.create_segment("A", None).unwrap();
    let err = db.create_segment("A", None).unwrap_err();
    assert_eq!(input_field(&err), "name");
}

#[test]
fn refresh_reevaluates_clock_dependent_segments() {
    let (_d, db, clock) = open();
    db.track(Track::event(u("a"), "login")).unwrap();
    db.identify(Identify::new(u("b"))).unwrap();
    let active = db
        .create_segment("Active", Some("event:login within 1d"))
        .unwrap();
    assert_eq!(ids(&db, &format!("segment:#{active}")), ["a"]);
    clock.advance(2 * 86_400);
    let report = db.refresh().unwrap();
    assert_eq!(report.exited, 1);
    assert_eq!(db.count("segment:Active").unwrap(), 0);
    let acts = db
        .activities(&u("a"), &ActivityFilter::new(1).kind("segment_exited"))
        .unwrap();
    assert_eq!(acts.len(), 1);
    db.track(Track::event(u("b"), "login")).unwrap();
    assert_eq!(
        ids(&db, "segment:Active"),
        ["b"],
        "writes keep it current too"
    );
}

#[test]
fn segments_and_bitmaps_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = ProfileDb::open(dir.path()).unwrap();
        db.define_topic(1, "News", true).unwrap();
        db.identify(Identify::new(u("a")).set("plan", "pro"))
            .unwrap();
        db.create_segment("Pro", Some(r#"attr.plan = "pro""#))
            .unwrap();
        db.index_attribute("plan").unwrap();
    }
    let db = ProfileDb::open(dir.path()).unwrap();
    assert_eq!(db.count("segment:Pro and topic:1").unwrap(), 1);
    db.identify(Identify::new(u("b")).set("plan", "pro"))
        .unwrap();
    assert_eq!(db.count("segment:Pro").unwrap(), 2);
    assert!(db
        .explain(r#"attr.plan = "pro""#)
        .unwrap()
        .lines
        .iter()
        .all(|l| l.contains("index")));
    assert!(db.verify().unwrap().is_ok());
}

#[test]
fn bitmap_chunks_are_atomic_with_the_data() {
    // Fail every write position of a batch that changes data, bitmaps and a segment:
    // after reopen the bitmaps still agree with the data.
    let batch = || {
        vec![
            Op::Identify(Identify::new(u("n1")).set("plan", "pro")),
            Op::Track(Track::event(u("n1"), "purchase")),
            Op::AddDevice {
                person: u("n2"),
                device: DeviceInput::new("tok", Platform::Android),
            },
        ]
    };
    let total = {
        let dir = tempfile::tempdir().unwrap();
        let faults = Faults::new();
        let db = ProfileDb::builder()
            .faults(faults.clone())
            .durability(Durability::Buffered)
            .open(dir.path())
            .unwrap();
        db.create_segment("Pro", Some(r#"attr.plan = "pro""#))
            .unwrap();
        let before = faults.writes_seen();
        db.write_batch(&batch()).unwrap();
        faults.writes_seen() - before
    };
    for n in 1..=total {
        let dir = tempfile::tempdir().unwrap();
        let faults = Faults::new();
        {
            let db = ProfileDb::builder()
                .faults(faults.clone())
                .open(dir.path())
                .unwrap();
            db.create_segment("Pro", Some(r#"attr.plan = "pro""#))
                .unwrap();
            faults.fail_write_at(n);
            assert!(db.write_batch(&batch()).is_err());
        }
        let db = ProfileDb::open(dir.path()).unwrap();
        assert_eq!(db.count("all").unwrap(), 0, "write {n}");
        assert_eq!(db.count("segment:Pro").unwrap(), 0);
        let report = db.verify().unwrap();
        assert!(report.is_ok(), "write {n}: {:?}", report.problems);
    }
}

// ---------------------------------------------------------------- brute force law

/// A person's data as the public API reads it.
struct Facts {
    person: profiledb::Person,
    devices: Vec<profiledb::Device>,
    relationships: Vec<profiledb::Relationship>,
    deliveries: Vec<profiledb::Delivery>,
    events: Vec<profiledb::Activity>,
}

fn facts(db: &ProfileDb, p: profiledb::Person) -> Facts {
    let who = Ident::cio_id(p.cio_id.clone());
    Facts {
        devices: db.devices(&who).unwrap(),
        relationships: db.relationships(&who).unwrap(),
        deliveries: db.deliveries(&who, 10_000).unwrap(),
        events: db
            .activities(&who, &ActivityFilter::new(100_000).kind("event"))
            .unwrap(),
        person: p,
    }
}

fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::Float(x) => Some(*x),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// The documented comparison semantics, written again from the docs.
fn cmp(v: Option<&Value>, op: &str, lit: &Value) -> bool {
    let Some(v) = v else { return op == "!=" };
    let numeric = matches!(lit, Value::Int(_) | Value::Float(_))
        || matches!(v, Value::Int(_) | Value::Float(_));
    let ord = if numeric {
        match (num(v), num(lit)) {
            (Some(a), Some(b)) => a.partial_cmp(&b),
            _ => None,
        }
    } else {
        match (v, lit) {
            (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
            (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
            _ => None,
        }
    };
    use std::cmp::Ordering::*;
    let eq = ord == Some(Equal) || (ord.is_none() && v == lit);
    match op {
        "=" => eq,
        "!=" => !eq,
        "<" => ord == Some(Less),
        "<=" => matches!(ord, Some(Less | Equal)),
        ">" => ord == Some(Greater),
        ">=" => matches!(ord, Some(Greater | Equal)),
        "contains" => match (v, lit) {
            (Value::String(a), Value::String(b)) => a.contains(b.as_str()),
            (Value::Array(xs), _) => xs.iter().any(|x| cmp(Some(x), "=", lit)),
            _ => false,
        },
        _ => match (v, lit) {
            (Value::String(a), Value::String(b)) => a.starts_with(b.as_str()),
            _ => false,
        },
    }
}

/// The atoms the law is checked over: text, and a brute-force predicate.
type Pred = fn(&Facts, i64) -> bool;

fn attr<'a>(f: &'a Facts, name: &str) -> Option<&'a Value> {
    f.person.attributes.get(name)
}

fn atoms() -> Vec<(&'static str, Pred)> {
    vec![
        ("all", |_, _| true),
        ("unsubscribed", |f, _| f.person.unsubscribed()),
        (r#"attr.plan = "pro""#, |f, _| {
            cmp(attr(f, "plan"), "=", &"pro".into())
        }),
        (r#"attr.plan != "pro""#, |f, _| {
            cmp(attr(f, "plan"), "!=", &"pro".into())
        }),
        ("attr.plan exists", |f, _| attr(f, "plan").is_some()),
        ("attr.age > 30", |f, _| {
            cmp(attr(f, "age"), ">", &Value::Int(30))
        }),
        ("attr.age <= 20", |f, _| {
            cmp(attr(f, "age"), "<=", &Value::Int(20))
        }),
        (r#"attr.name starts_with "A""#, |f, _| {
            cmp(attr(f, "name"), "starts_with", &"A".into())
        }),
        (r#"attr.tags contains "x""#, |f, _| {
            cmp(attr(f, "tags"), "contains", &"x".into())
        }),
        (r#"attr.prefs.lang = "en""#, |f, _| {
            let v = attr(f, "prefs")
                .and_then(|p| p.as_map())
                .and_then(|m| m.get("lang"));
            cmp(v, "=", &"en".into())
        }),
        ("attr.email exists", |f, _| f.person.email.is_some()),
        ("topic:1", |f, _| topic(f, 1).unwrap_or(true)),
        ("topic:2", |f, _| topic(f, 2).unwrap_or(false)),
        ("event:purchase", |f, _| {
            occurrences(f, "purchase", None, |_| true) >= 1
        }),
        ("event:purchase count >= 2", |f, _| {
            occurrences(f, "purchase", None, |_| true) >= 2
        }),
        ("event:login count < 1", |f, _| {
            occurrences(f, "login", None, |_| true) < 1
        }),
        ("event:purchase[amount > 20]", |f, _| {
            occurrences(f, "purchase", None, |d| {
                cmp(
                    d.as_map().and_then(|m| m.get("amount")),
                    ">",
                    &Value::Int(20),
                )
            }) >= 1
        }),
        ("event:login within 1d", |f, now| {
            occurrences(f, "login", Some(now - 86_400), |_| true) >= 1
        }),
        (r#"device.platform = "ios""#, |f, _| {
            f.devices.iter().any(|d| d.platform == Platform::Ios)
        }),
        (r#"device.status = "bounced""#, |f, _| {
            f.devices
                .iter()
                .any(|d| d.status == profiledb::DeviceStatus::Bounced)
        }),
        ("device.last_used > now-2d", |f, now| {
            f.devices.iter().any(|d| d.last_used > now - 2 * 86_400)
        }),
        ("related:1", |f, _| {
            f.relationships.iter().any(|r| r.object.type_id == 1)
        }),
        ("related:1:acme", |f, _| {
            f.relationships
                .iter()
                .any(|r| r.object == ObjectRef::new(1, "acme"))
        }),
        ("delivery:opened", |f, _| {
            f.deliveries
                .iter()
                .any(|d| d.metrics.contains_key("opened"))
        }),
        (r#"delivery:clicked[channel = "email"]"#, |f, _| {
            f.deliveries
                .iter()
                .any(|d| d.metrics.contains_key("clicked") && d.channel == Channel::Email)
        }),
    ]
}

fn topic(f: &Facts, n: u32) -> Option<bool> {
    match attr(f, "cio_subscription_preferences")?
        .as_map()?
        .get("topics")?
        .as_map()?
        .get(&format!("topic_{n}"))?
    {
        Value::Bool(b) => Some(*b),
        _ => None,
    }
}

fn occurrences(f: &Facts, name: &str, since: Option<i64>, data: impl Fn(&Value) -> bool) -> usize {
    f.events
        .iter()
        .filter(|e| e.name.as_deref() == Some(name))
        .filter(|e| since.is_none_or(|s| e.timestamp >= s))
        .filter(|e| data(&e.data))
        .count()
}

/// A random condition over the atoms: (text, tree of atom indexes).
#[derive(Debug, Clone)]
enum Tree {
    Atom(usize),
    Not(Box<Tree>),
    And(Box<Tree>, Box<Tree>),
    Or(Box<Tree>, Box<Tree>),
}

impl Tree {
    fn text(&self, atoms: &[(&str, Pred)]) -> String {
        match self {
            Tree::Atom(i) => atoms[*i].0.to_owned(),
            Tree::Not(x) => format!("not ({})", x.text(atoms)),
            Tree::And(a, b) => format!("({}) and ({})", a.text(atoms), b.text(atoms)),
            Tree::Or(a, b) => format!("({}) or ({})", a.text(atoms), b.text(atoms)),
        }
    }
    fn eval(&self, atoms: &[(&str, Pred)], f: &Facts, now: i64) -> bool {
        match self {
            Tree::Atom(i) => (atoms[*i].1)(f, now),
            Tree::Not(x) => !x.eval(atoms, f, now),
            Tree::And(a, b) => a.eval(atoms, f, now) && b.eval(atoms, f, now),
            Tree::Or(a, b) => a.eval(atoms, f, now) || b.eval(atoms, f, now),
        }
    }
}

fn arb_tree(n_atoms: usize) -> impl Strategy<Value = Tree> {
    let leaf = (0..n_atoms).prop_map(Tree::Atom);
    leaf.prop_recursive(3, 12, 2, |inner| {
        prop_oneof![
            inner.clone().prop_map(|x| Tree::Not(Box::new(x))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Tree::And(Box::new(a), Box::new(b))),
            (inner.clone(), inner).prop_map(|(a, b)| Tree::Or(Box::new(a), Box::new(b))),
        ]
    })
}

/// One random person: (plan, age, name, tags, lang, unsubscribed, topic prefs, events,
/// device, relationship, delivery metrics).
#[derive(Debug, Clone)]
struct Spec {
    plan: Option<&'static str>,
    age: Option<i64>,
    name: Option<&'static str>,
    tag_x: bool,
    lang: Option<&'static str>,
    email: bool,
    unsubscribed: bool,
    topic1: Option<bool>,
    topic2: Option<bool>,
    purchases: Vec<(i64, i64)>,
    logins: Vec<i64>,
    device: Option<(bool, i64, u8)>,
    related: Option<&'static str>,
    delivery: Option<(bool, u8)>,
}

fn arb_spec() -> impl Strategy<Value = Spec> {
    (
        (
            prop::option::of(prop::sample::select(vec!["pro", "free", "team"])),
            prop::option::of(0i64..60),
            prop::option::of(prop::sample::select(vec!["Ann", "Bo", "Al"])),
            any::<bool>(),
            prop::option::of(prop::sample::select(vec!["en", "fr"])),
            any::<bool>(),
            any::<bool>(),
        ),
        (
            prop::option::of(any::<bool>()),
            prop::option::of(any::<bool>()),
            prop::collection::vec((0i64..5 * 86_400, 0i64..50), 0..4),
            prop::collection::vec(0i64..4 * 86_400, 0..3),
            prop::option::of((any::<bool>(), 0i64..5 * 86_400, 0u8..3)),
            prop::option::of(prop::sample::select(vec!["acme", "globex"])),
            prop::option::of((any::<bool>(), 0u8..4)),
        ),
    )
        .prop_map(|(a, b)| Spec {
            plan: a.0,
            age: a.1,
            name: a.2,
            tag_x: a.3,
            lang: a.4,
            email: a.5,
            unsubscribed: a.6,
            topic1: b.0,
            topic2: b.1,
            purchases: b.2,
            logins: b.3,
            device: b.4,
            related: b.5,
            delivery: b.6,
        })
}

fn load(db: &ProfileDb, specs: &[Spec], round: u32) {
    for (i, s) in specs.iter().enumerate() {
        let who = u(&format!("p{i}"));
        let mut op = Identify::new(who.clone());
        if let Some(p) = s.plan {
            op = op.set("plan", p);
        }
        if let Some(a) = s.age {
            op = op.set("age", a);
        }
        if let Some(n) = s.name {
            op = op.set("name", n);
        }
        op = op.set(
            "tags",
            Value::from(if s.tag_x { vec!["x", "y"] } else { vec!["y"] }),
        );
        if let Some(l) = s.lang {
            op = op.set("prefs.lang", l);
        }
        if s.email {
            op = op.set("email", format!("p{i}@x.io"));
        }
        if s.unsubscribed {
            op = op.set("unsubscribed", true);
        }
        if let Some(t) = s.topic1 {
            op = op.set("cio_subscription_preferences.topics.topic_1", t);
        }
        if let Some(t) = s.topic2 {
            op = op.set("cio_subscription_preferences.topics.topic_2", t);
        }
        let mut ops = vec![Op::Identify(op)];
        for (ago, amount) in &s.purchases {
            ops.push(Op::Track(
                Track::event(who.clone(), "purchase")
                    .property("amount", *amount)
                    .timestamp(T0 - ago),
            ));
        }
        for ago in &s.logins {
            ops.push(Op::Track(
                Track::event(who.clone(), "login").timestamp(T0 - ago),
            ));
        }
        if let Some((ios, ago, _)) = s.device {
            ops.push(Op::AddDevice {
                person: who.clone(),
                device: DeviceInput::new(
                    format!("tok{i}"),
                    if ios {
                        Platform::Ios
                    } else {
                        Platform::Android
                    },
                )
                .last_used(T0 - ago),
            });
        }
        if let Some(o) = s.related {
            ops.push(Op::AddRelationship {
                person: who.clone(),
                object: ObjectRef::new(1, o),
                attributes: vec![],
            });
        }
        if let Some((email, n)) = s.delivery {
            let id = format!("d{round}-{i}");
            let channel = if email { Channel::Email } else { Channel::Push };
            ops.push(Op::AddDelivery {
                person: who.clone(),
                delivery: NewDelivery::new(id.clone(), channel),
            });
            for m in ["sent", "opened", "clicked"].iter().take(usize::from(n)) {
                ops.push(Op::Metric(Metric::new(id.clone(), *m)));
            }
        }
        db.write_batch(&ops).unwrap();
        if let Some((_, _, bounces)) = s.device {
            for _ in 0..bounces {
                db.push_result(&format!("tok{i}"), PushResult::Bounced)
                    .unwrap();
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 24,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0xA0D1_E7CE),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn indexed_queries_equal_brute_force(
        specs in prop::collection::vec(arb_spec(), 1..20),
        trees in prop::collection::vec(arb_tree(25), 12),
    ) {
        let (_d, db, _c) = open();
        db.define_topic(1, "News", true).unwrap();
        db.define_topic(2, "Beta", false).unwrap();
        load(&db, &specs, 0);
        let atoms = atoms();
        prop_assert_eq!(atoms.len(), 25);
        let people: Vec<Facts> = db.people().unwrap().into_iter().map(|p| facts(&db, p)).collect();
        // Every atom alone, then random combinations; then the same as data-driven
        // segments, then after reopen.
        let mut conditions: Vec<(String, Tree)> =
            (0..atoms.len()).map(|i| (atoms[i].0.to_owned(), Tree::Atom(i))).collect();
        conditions.extend(trees.iter().map(|t| (t.text(&atoms), t.clone())));
        for (text, tree) in &conditions {
            let mut want: Vec<String> = people
                .iter()
                .filter(|f| tree.eval(&atoms, f, T0))
                .filter_map(|f| f.person.id.clone())
                .collect();
            want.sort();
            prop_assert_eq!(&ids(&db, text), &want, "condition: {}", text);
        }
        for (i, (text, _)) in conditions.iter().enumerate().skip(atoms.len()).take(4) {
            db.create_segment(&format!("s{i}"), Some(text)).unwrap();
        }
        // Declared indexes change how atoms are answered, not what they mean.
        db.index_attribute("plan").unwrap();
        db.index_attribute_range("age").unwrap();
        // More writes after the segments and indexes exist: they must keep up.
        load(&db, &specs.iter().rev().cloned().collect::<Vec<_>>(), 1);
        let people: Vec<Facts> = db.people().unwrap().into_iter().map(|p| facts(&db, p)).collect();
        for (text, tree) in &conditions {
            let mut want: Vec<String> = people
                .iter()
                .filter(|f| tree.eval(&atoms, f, T0))
                .filter_map(|f| f.person.id.clone())
                .collect();
            want.sort();
            prop_assert_eq!(&ids(&db, text), &want, "indexed condition: {}", text);
        }
        for (i, (text, tree)) in conditions.iter().enumerate().skip(atoms.len()).take(4) {
            let mut want: Vec<String> = people
                .iter()
                .filter(|f| tree.eval(&atoms, f, T0))
                .filter_map(|f| f.person.id.clone())
                .collect();
            want.sort();
            prop_assert_eq!(&ids(&db, &format!("segment:s{i}")), &want, "segment: {}", text);
        }
        prop_assert!(db.verify().unwrap().is_ok(), "{:?}", db.verify().unwrap().problems);
    }
}

#[test]
fn range_indexed_attributes_answer_comparisons_from_the_ordered_index() {
    let (_d, db, _c) = open();
    for (i, age) in [5i64, 17, 18, 30, 64, -3].iter().enumerate() {
        db.identify(Identify::new(u(&format!("p{i}"))).set("age", *age))
            .unwrap();
    }
    db.identify(Identify::new(u("s")).set("age", "40")).unwrap();
    db.identify(Identify::new(u("f")).set("age", 18.5)).unwrap();
    db.identify(Identify::new(u("none")).set("age", "old"))
        .unwrap();
    let before: Vec<(String, u64)> = [
        "attr.age > 18",
        "attr.age >= 18",
        "attr.age < 18",
        "attr.age <= 18",
        "attr.age > -10",
    ]
    .iter()
    .map(|c| (c.to_string(), db.count(c).unwrap()))
    .collect();
    db.index_attribute_range("age").unwrap();
    for (c, n) in &before {
        assert_eq!(db.count(c).unwrap(), *n, "{c}");
        let ex = db.explain(c).unwrap();
        assert!(
            ex.lines.iter().all(|l| l.contains("ordered index")),
            "{ex:?}"
        );
    }
    assert_eq!(
        db.count("attr.age > 18").unwrap(),
        4,
        "30, 64, \"40\", 18.5"
    );
    // Kept current by writes, removals, deletes.
    db.identify(Identify::new(u("p0")).set("age", 99)).unwrap();
    db.identify(Identify::new(u("p3")).remove("age")).unwrap();
    db.delete(&u("p4")).unwrap();
    assert_eq!(ids(&db, "attr.age > 18"), ["f", "p0", "s"]);
    // And with the clock: created_at within the last day.
    db.index_attribute_range("created_at").unwrap();
    db.identify(Identify::new(u("new")).set("created_at", T0 - 100))
        .unwrap();
    db.identify(Identify::new(u("old")).set("created_at", T0 - 10 * 86_400))
        .unwrap();
    assert_eq!(ids(&db, "attr.created_at > now-1d"), ["new"]);
    assert!(db.verify().unwrap().is_ok());
}

#[test]
fn refresh_matches_a_fresh_evaluation_for_every_trend() {
    let (_d, db, clock) = open();
    for i in 0..40i64 {
        let who = u(&format!("p{i}"));
        db.identify(Identify::new(who.clone()).set("t", T0 - i * 3_600))
            .unwrap();
        for k in 0..(i % 3) {
            db.track(Track::event(who.clone(), "login").timestamp(T0 - i * 3_000 - k * 7_000))
                .unwrap();
        }
    }
    let conditions = [
        "event:login within 1d",           // decaying
        "event:login count < 1 within 1d", // growing
        "event:login count = 1 within 2d", // mixed
        "attr.t > now-1d",                 // decaying
        "attr.t < now-1d",                 // growing
        "not (event:login within 12h)",    // growing, through not
    ];
    for (i, c) in conditions.iter().enumerate() {
        db.create_segment(&format!("s{i}"), Some(c)).unwrap();
    }
    for _ in 0..6 {
        clock.advance(5 * 3_600);
        db.refresh().unwrap();
        for (i, c) in conditions.iter().enumerate() {
            assert_eq!(
                ids(&db, &format!("segment:s{i}")),
                ids(&db, c),
                "{c} at now = T0 + {}",
                clock_now(&db) - T0
            );
        }
    }
    assert!(db.verify().unwrap().is_ok());
}

fn clock_now(db: &ProfileDb) -> i64 {
    db.now()
}

#[test]
fn creating_a_segment_reports_progress() {
    let (_d, db, _c) = open();
    let ops: Vec<Op> = (0..5000)
        .map(|i| Op::Identify(Identify::new(u(&format!("p{i}"))).set("age", i % 90)))
        .collect();
    db.write_batch(&ops).unwrap();
    let mut seen = Vec::new();
    // A condition checked person by person (an ordered comparison would be answered by
    // the ordered index the segment gives `age`, with no per-person work).
    db.create_segment_with_progress("Old", Some("attr.age != 60"), &mut |done, total| {
        seen.push((done, total))
    })
    .unwrap();
    assert_eq!(seen.first(), Some(&(0, 5000)));
    assert_eq!(seen.last(), Some(&(5000, 5000)));
    assert!(seen.iter().any(|(d, _)| *d == 4096), "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0));
    assert_eq!(
        db.count("segment:Old").unwrap(),
        db.count("attr.age != 60").unwrap()
    );
}

#[test]
fn within_is_exact_across_hour_boundaries_and_expiry() {
    // Events spread over five days at uneven hours, so windows start mid-day; the
    // per-hour index must agree with reading every person's events.
    let (_d, db, clock) = open();
    for i in 0..60i64 {
        let who = u(&format!("p{i:02}"));
        db.identify(Identify::new(who.clone())).unwrap();
        for k in 0..(i % 4) {
            let t = T0 - (i * 7_919 + k * 31_337) % (5 * 86_400);
            db.track(Track::event(who.clone(), "login").timestamp(t))
                .unwrap();
        }
    }
    db.create_segment("recent", Some("event:login within 2d"))
        .unwrap();
    db.create_segment("ever", Some("event:login")).unwrap();
    let brute = |db: &ProfileDb, since: Option<i64>| -> Vec<String> {
        let mut out: Vec<String> = (0..60)
            .map(|i| format!("p{i:02}"))
            .filter(|id| {
                db.event_count(&u(id), TrackKind::Event, "login", since, None)
                    .unwrap()
                    > 0
            })
            .collect();
        out.sort();
        out
    };
    for step in 0..4 {
        let now = db.now();
        for window in [3_600, 86_400, 2 * 86_400, 3 * 86_400 + 5_000] {
            assert_eq!(
                ids(&db, &format!("event:login within {window}s")),
                brute(&db, Some(now - window)),
                "window {window}s at step {step}"
            );
        }
        assert_eq!(
            ids(&db, "segment:recent"),
            brute(&db, Some(now - 2 * 86_400))
        );
        assert_eq!(ids(&db, "segment:ever"), brute(&db, None));
        // Expire up to a mid-day moment: some days lose only part of their events.
        db.expire(T0 - 4 * 86_400 + step * 40_000 + 12_345).unwrap();
        clock.advance(9 * 3_600);
        db.refresh().unwrap();
        assert!(db.verify().unwrap().is_ok(), "step {step}");
    }
    let explain = db.explain("event:login within 1d").unwrap();
    assert!(
        explain.lines.iter().any(|l| l.contains("hour index")),
        "{explain:?}"
    );
}

/// The occurrence-bucket bitmaps in the stored chunks (after a checkpoint folds the
/// log): (hour bitmaps, day bitmaps).
fn buckets(db: &ProfileDb) -> (usize, usize) {
    db.checkpoint().unwrap();
    let mut ids = std::collections::BTreeSet::new();
    for (key, _) in db.raw_records(profiledb::Family::Bitmaps).unwrap() {
        if matches!(key.first(), Some(12 | 15)) {
            // The bitmap id: every byte but the chunk's two.
            ids.insert(key[..key.len() - 2].to_vec());
        }
    }
    let hours = ids.iter().filter(|k| k[0] == 12).count();
    (hours, ids.len() - hours)
}

#[test]
fn old_hours_roll_up_into_days_and_within_stays_exact() {
    // Events over 120 days; the days more than 8 back are kept one bitmap a day, so
    // windows that start in them are checked against the day's event blocks, and events
    // tracked, expired or moved there afterwards go into the day bitmaps.
    const DAY: i64 = 86_400;
    let (dir, db, clock) = open();
    let n = 300i64;
    let who = |i: i64| u(&format!("p{i:02}"));
    for i in 0..n {
        db.identify(Identify::new(who(i))).unwrap();
        for k in 0..(1 + i % 5) {
            let t = T0 - (i * 7_919 + k * 1_234_567) % (120 * DAY);
            db.track(Track::event(who(i), "login").timestamp(t))
                .unwrap();
        }
    }
    db.create_segment("quarter", Some("event:login within 90d"))
        .unwrap();
    let brute = |db: &ProfileDb, since: i64| -> Vec<String> {
        let mut out: Vec<String> = (0..n)
            .map(|i| format!("p{i:02}"))
            .filter(|id| {
                db.event_count(&u(id), TrackKind::Event, "login", Some(since), None)
                    .unwrap()
                    > 0
            })
            .collect();
        out.sort();
        out
    };
    // How many windows started in a day kept whole with someone to check there.
    let day_edges = std::cell::Cell::new(0);
    let check =
        |db: &ProfileDb, at: &str| {
            let now = db.now();
            for window in [
                3_600,
                DAY,
                7 * DAY + 1_000,
                8 * DAY + 4_000,
                9 * DAY + 17,
                30 * DAY,
                36 * DAY + 5_000,
                50 * DAY + 77,
                90 * DAY,
                200 * DAY,
            ] {
                let cond = format!("event:login within {window}s");
                assert_eq!(
                    ids(db, &cond),
                    brute(db, now - window),
                    "window {window}s {at}"
                );
                let explain = db.explain(&cond).unwrap();
                if explain.lines.iter().any(|l| {
                    l.contains("read from event blocks") && !l.ends_with("for 0 candidates")
                }) {
                    day_edges.set(day_edges.get() + 1);
                }
            }
            assert_eq!(
                ids(db, "segment:quarter"),
                brute(db, now - 90 * DAY),
                "{at}"
            );
            let report = db.verify().unwrap();
            assert!(report.is_ok(), "{at}: {report:?}");
        };
    // The first commit after the events rolled the days before today - 8 up.
    let (hours, days) = buckets(&db);
    assert!(days > 0 && hours > 0, "{hours} hour and {days} day bitmaps");
    let hours_before = hours;
    check(&db, "at the start");
    for step in 0..4i64 {
        clock.advance(17 * DAY + 3_333);
        // New occurrences in days already rolled up, and one in the hours.
        for i in (step..n).step_by(7) {
            let t = db.now() - 40 * DAY - i * 1_000;
            db.track(Track::event(who(i), "login").timestamp(t))
                .unwrap();
        }
        db.track(Track::event(who(step), "login")).unwrap();
        // Expire part of a rolled-up day: its bitmap keeps only who has one left.
        db.expire(T0 - 100 * DAY + step * 40_000 + 12_345).unwrap();
        db.refresh().unwrap();
        check(&db, &format!("at step {step}"));
    }
    // Fewer hour bitmaps than before: the ones that left the window are days now.
    let (hours, days) = buckets(&db);
    assert!(
        hours < hours_before,
        "{hours} hour bitmaps, {hours_before} before"
    );
    assert!(days > 0);
    // The start of the hours survives a reopen and an export to a new database.
    let mut out = Vec::new();
    db.export(&mut out).unwrap();
    let counts: Vec<u64> = [3_600, 40 * DAY, 90 * DAY]
        .iter()
        .map(|w| db.count(&format!("event:login within {w}s")).unwrap())
        .collect();
    drop(db);
    let db = ProfileDb::builder()
        .clock(Arc::new(clock.clone()))
        .durability(Durability::Buffered)
        .open(dir.path())
        .unwrap();
    check(&db, "after reopen");
    let copy_dir = tempfile::tempdir().unwrap();
    let copy = ProfileDb::builder()
        .clock(Arc::new(clock.clone()))
        .durability(Durability::Buffered)
        .open(copy_dir.path())
        .unwrap();
    copy.restore(&out[..]).unwrap();
    check(&copy, "after a restore");
    for (w, want) in [3_600, 40 * DAY, 90 * DAY].iter().zip(counts) {
        assert_eq!(
            copy.count(&format!("event:login within {w}s")).unwrap(),
            want
        );
    }
    assert!(day_edges.get() > 5, "{} day edges checked", day_edges.get());
    // A later track into a rolled-up day on the copy goes to its day bitmap.
    copy.track(Track::event(who(3), "login").timestamp(copy.now() - 60 * DAY))
        .unwrap();
    check(&copy, "after a track on the copy");
    explains(&copy, "event:login within 50d", "read from event blocks");
    explains(&copy, "event:login within 2d", "first bucket");
}

/// Asserts that a line of `condition`'s explain contains `says`.
fn explains(db: &ProfileDb, condition: &str, says: &str) {
    let explain = db.explain(condition).unwrap();
    assert!(
        explain.lines.iter().any(|l| l.contains(says)),
        "{condition}: {explain:?}"
    );
}

#[test]
fn an_expiry_that_rolls_a_day_up_leaves_no_one_in_it_without_an_event() {
    // The commit that expires a person's last occurrence on a day is also the one that
    // rolls that day's hours up: the day bitmap must not gain them.
    const DAY: i64 = 86_400;
    let (_d, db, clock) = open();
    db.track(Track::event(u("p"), "e").timestamp(T0 - 100))
        .unwrap();
    db.track(Track::event(u("q"), "e").timestamp(T0 - 50))
        .unwrap();
    db.track(Track::event(u("q"), "e").timestamp(T0 + 5 * DAY))
        .unwrap();
    clock.advance(10 * DAY);
    db.expire(T0).unwrap();
    let report = db.verify().unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(ids(&db, "event:e within 30d"), ["q"]);
    assert_eq!(ids(&db, "event:e within 9d"), ["q"]);
    // Many days behind: each write rolls up one more, refresh the rest.
    clock.advance(40 * DAY);
    db.track(Track::event(u("r"), "e")).unwrap();
    assert!(db.verify().unwrap().is_ok());
    db.refresh().unwrap();
    assert!(db.verify().unwrap().is_ok());
    assert_eq!(ids(&db, "event:e within 60d"), ["q", "r"]);
    assert_eq!(ids(&db, "event:e within 1d"), ["r"]);
}
