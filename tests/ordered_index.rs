//! Ordered indexes as bit-sliced bitmaps, through the public API: comparisons answered
//! from the slices equal a brute-force filter over every person's stored value, through
//! updates, removals, deletes and merges; segments stay correct inside a batch; a
//! segment comparing an attribute gives it the index; `verify` checks the slices.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use common::{ids, open, Rng, T0};
use profiledb::{Family, Ident, Identify, Op, ProfileDb, Value};

fn u(id: &str) -> Ident {
    Ident::id(id)
}

/// The people whose attribute `name` compares true with the number `x`, read from
/// every stored person: the condition language's numeric comparison (numbers and
/// numeric strings as `f64`; anything else never compares).
fn brute(db: &ProfileDb, name: &str, op: &str, x: f64) -> Vec<String> {
    let mut out: Vec<String> = db
        .people()
        .unwrap()
        .into_iter()
        .filter(|p| {
            let Some(v) = p.attributes.get(name).and_then(Value::as_number) else {
                return false;
            };
            match op {
                "<" => v < x,
                "<=" => v <= x,
                ">" => v > x,
                ">=" => v >= x,
                _ => v == x,
            }
        })
        .filter_map(|p| p.id)
        .collect();
    out.sort();
    out
}

/// Values of every kind the index meets: negatives, both zeros, fractions, integers
/// beyond 2^53 and at the ends of i64, numeric strings (with spaces, exponents), and
/// values that are no number at all.
fn value(rng: &mut Rng) -> Value {
    let pool: [Value; 18] = [
        Value::Int(0),
        Value::Float(-0.0),
        Value::Float(0.0),
        Value::Int(-1),
        Value::Int(30),
        Value::Float(29.999),
        Value::Float(-1e300),
        Value::Int(i64::MAX),
        Value::Int(i64::MIN),
        Value::Int(9_007_199_254_740_993),
        Value::String("30".into()),
        Value::String(" -2.5 ".into()),
        Value::String("1e3".into()),
        Value::String("old".into()),
        Value::Bool(true),
        Value::Null,
        Value::Float(f64::MIN_POSITIVE),
        Value::Array(vec![Value::Int(3)]),
    ];
    if rng.below(3) == 0 {
        pool[rng.below(pool.len() as u64) as usize].clone()
    } else {
        Value::Int(rng.below(200) as i64 - 100)
    }
}

const THRESHOLDS: [&str; 10] = [
    "0",
    "-0.0",
    "30",
    "-1",
    "29.999",
    "1000",
    "-2.5",
    "9223372036854775807",
    "-9223372036854775808",
    "0.5",
];

fn check_all(db: &ProfileDb, name: &str, at: &str) {
    for t in THRESHOLDS {
        let x: f64 = t.parse().unwrap();
        for op in ["<", "<=", ">", ">=", "="] {
            let cond = format!("attr.{name} {op} {t}");
            assert_eq!(ids(db, &cond), brute(db, name, op, x), "{cond} ({at})");
        }
    }
}

#[test]
fn bit_sliced_comparisons_equal_a_scan_through_updates_deletes_and_merges() {
    let (_d, db, _c) = open();
    let mut rng = Rng(0x5EED_B51D);
    let person = |i: u64| format!("p{i}");
    // Some data first, so declaring the index backfills it.
    for i in 0..40 {
        db.identify(Identify::new(u(&person(i))).set("v", value(&mut rng)))
            .unwrap();
    }
    db.index_attribute_range("v").unwrap();
    let ex = db.explain("attr.v >= 30").unwrap();
    assert!(
        ex.lines.iter().all(|l| l.contains("ordered index")),
        "{ex:?}"
    );
    assert_eq!(ex.scanned, 0);
    check_all(&db, "v", "after the backfill");
    for round in 0..12 {
        let mut ops = Vec::new();
        for _ in 0..15 {
            let who = u(&person(rng.below(60)));
            ops.push(match rng.below(10) {
                0 => Op::Identify(Identify::new(who).remove("v")),
                1 => Op::Identify(Identify::new(who).set("other", 1)),
                _ => Op::Identify(Identify::new(who).set("v", value(&mut rng))),
            });
        }
        db.write_batch(&ops).unwrap();
        match round % 4 {
            1 => {
                let _ = db.delete(&u(&person(rng.below(60)))).unwrap();
            }
            3 => {
                let (a, b) = (rng.below(60), rng.below(60));
                if a != b {
                    let _ = db.merge(&u(&person(a)), &u(&person(b))).unwrap();
                }
            }
            _ => {}
        }
        check_all(&db, "v", &format!("round {round}"));
    }
    let report = db.verify().unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
}

#[test]
fn a_segment_on_a_ranged_attribute_follows_changes_made_in_the_same_batch() {
    let (_d, db, _c) = open();
    db.index_attribute_range("age").unwrap();
    db.identify(Identify::new(u("a")).set("age", 20)).unwrap();
    db.identify(Identify::new(u("b")).set("age", 50)).unwrap();
    db.create_segment("Adults", Some("attr.age >= 30")).unwrap();
    db.create_segment("Young adults", Some("segment:Adults and attr.age < 40"))
        .unwrap();
    assert_eq!(ids(&db, "segment:Adults"), ["b"]);
    // Several changes to one person in one batch: only the last counts.
    db.write_batch(&[
        Op::Identify(Identify::new(u("a")).set("age", 45)),
        Op::Identify(Identify::new(u("a")).set("age", 35)),
        Op::Identify(Identify::new(u("b")).set("age", 10)),
        Op::Identify(Identify::new(u("c")).set("age", "31")),
        Op::Identify(Identify::new(u("d")).set("age", 99)),
        Op::Identify(Identify::new(u("d")).remove("age")),
    ])
    .unwrap();
    assert_eq!(ids(&db, "segment:Adults"), ["a", "c"]);
    assert_eq!(ids(&db, "segment:Adults"), ids(&db, "attr.age >= 30"));
    assert_eq!(ids(&db, r#"segment:"Young adults""#), ["a", "c"]);
    db.write_batch(&[
        Op::Identify(Identify::new(u("c")).set("age", 30.0)),
        Op::Identify(Identify::new(u("a")).set("age", 29.5)),
        Op::Identify(Identify::new(u("b")).set("age", -0.0)),
    ])
    .unwrap();
    assert_eq!(ids(&db, "segment:Adults"), ["c"]);
    assert_eq!(ids(&db, "attr.age = 0"), ["b"]);
    assert!(db.verify().unwrap().is_ok());
}

#[test]
fn comparing_an_attribute_in_a_segment_gives_it_an_ordered_index() {
    let (dir, db, _c) = open();
    for i in 0..50i64 {
        let score = match i % 5 {
            0 => Value::String(format!("{}", i / 5)),
            1 => Value::Float(i as f64 / 7.0),
            2 => Value::String("n/a".into()),
            _ => Value::Int(i - 25),
        };
        db.identify(Identify::new(u(&format!("p{i:02}"))).set("score", score))
            .unwrap();
    }
    let before = db.explain("attr.score > 5").unwrap();
    assert!(before.scanned > 0, "no index yet: {before:?}");
    db.create_segment("High", Some("attr.score > 5")).unwrap();
    let ex = db.explain("attr.score > 5").unwrap();
    assert!(
        ex.lines.iter().all(|l| l.contains("ordered index")),
        "{ex:?}"
    );
    assert_eq!(ex.scanned, 0);
    assert_eq!(ids(&db, "segment:High"), brute(&db, "score", ">", 5.0));
    assert_eq!(ids(&db, "attr.score > 5"), brute(&db, "score", ">", 5.0));
    // Equality and the other orders read the same index.
    assert_eq!(ids(&db, "attr.score = 3"), brute(&db, "score", "=", 3.0));
    assert_eq!(
        ids(&db, "attr.score <= -2"),
        brute(&db, "score", "<=", -2.0)
    );
    // A segment on an attribute already ranged, or comparing a string, adds nothing.
    db.create_segment("Named", Some(r#"attr.name > "m""#))
        .unwrap();
    assert!(db.explain(r#"attr.name > "m""#).unwrap().lines[0].contains("scan"));
    db.identify(Identify::new(u("p00")).set("score", 1000))
        .unwrap();
    db.identify(Identify::new(u("p03")).remove("score"))
        .unwrap();
    assert!(db.verify().unwrap().is_ok());
    drop(db);
    let db = ProfileDb::builder()
        .clock(std::sync::Arc::new(profiledb::ManualClock::new(T0)))
        .open(dir.path())
        .unwrap();
    let ex = db.explain("attr.score >= 0").unwrap();
    assert!(
        ex.lines.iter().all(|l| l.contains("ordered index")),
        "{ex:?}"
    );
    assert_eq!(ids(&db, "attr.score > 5"), brute(&db, "score", ">", 5.0));
    assert_eq!(ids(&db, "segment:High"), brute(&db, "score", ">", 5.0));
    db.identify(Identify::new(u("new")).set("score", "6.5"))
        .unwrap();
    assert_eq!(ids(&db, "segment:High"), brute(&db, "score", ">", 5.0));
    assert!(db.verify().unwrap().is_ok());
}

#[test]
fn verify_reports_a_damaged_slice() {
    let (dir, db, _c) = open();
    for i in 0..20i64 {
        db.identify(Identify::new(u(&format!("p{i}"))).set("age", i * 3))
            .unwrap();
    }
    db.index_attribute_range("age").unwrap();
    assert!(db.verify().unwrap().is_ok());
    // Bitmap id tag 13: a bit slice. Remove one slice's only chunk.
    let (key, _) = db
        .raw_records(Family::Bitmaps)
        .unwrap()
        .into_iter()
        .find(|(k, _)| k.first() == Some(&13))
        .expect("a bit slice is stored");
    db.raw_delete(Family::Bitmaps, &key).unwrap();
    drop(db);
    let db = ProfileDb::builder()
        .clock(std::sync::Arc::new(profiledb::ManualClock::new(T0)))
        .open(dir.path())
        .unwrap();
    let report = db.verify().unwrap();
    assert!(
        report.problems.iter().any(|p| p.contains("RangeBit")),
        "{:?}",
        report.problems
    );
}

/// Identifiers live in the person record, not the attributes the indexes cover: a
/// segment comparing one in order scans, and an index declared on one is not used.
#[test]
fn comparisons_on_identifiers_are_never_answered_from_an_index() {
    let (_d, db, _c) = open();
    for id in ["100", "250", "300"] {
        db.identify(Identify::new(u(id)).set("email", format!("{id}@x.io")))
            .unwrap();
    }
    db.create_segment("Big ids", Some("attr.id > 200")).unwrap();
    assert_eq!(ids(&db, "segment:\"Big ids\""), ["250", "300"]);
    db.index_attribute_range("id").unwrap();
    db.index_attribute("email").unwrap();
    assert_eq!(ids(&db, "attr.id > 200"), ["250", "300"]);
    assert_eq!(ids(&db, "attr.id = 100"), ["100"]);
    assert_eq!(ids(&db, r#"attr.email = "100@x.io""#), ["100"]);
    db.identify(Identify::new(u("999"))).unwrap();
    assert_eq!(ids(&db, "segment:\"Big ids\""), ["250", "300", "999"]);
    assert!(db.verify().unwrap().is_ok());
}
