//! Bad input, table-driven, through `ProfileDb::ingest_bytes` (what a reader of files or
//! sockets calls): each row is refused with an `Error::Input` naming the field, writes
//! nothing (every family's raw records unchanged), and the next message still applies.
//! `tests/ingest.rs` `every_refusal_names_the_field` covers the semantic refusals of
//! each message kind; this table is the malformed bytes and types real ingestion meets.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use common::records;
use std::sync::Arc;

use profiledb::{Durability, Ident, ManualClock, ProfileDb};

fn v2(rest: &str) -> String {
    format!(r#"{{"type":"person","action":"identify","identifiers":{{"id":"x"}}{rest}}}"#)
}

fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

#[test]
fn bad_input_is_refused_naming_the_field_and_writes_nothing() {
    let long = "x".repeat(151);
    let big_value = "y".repeat(1001);
    let big_event = format!(r#""{}""#, "z".repeat(100_001));
    let many_attrs: String = (0..301)
        .map(|i| format!(r#""a{i}":{i}"#))
        .collect::<Vec<_>>()
        .join(",");
    let rows: Vec<(&str, Vec<u8>, &str)> = vec![
        // Bytes and syntax.
        ("invalid UTF-8", b"{\"type\":\"person\xff\"}".to_vec(), "message"),
        ("UTF-8 BOM", format!("\u{feff}{}", v2("")).into_bytes(), "message"),
        ("empty line", b"".to_vec(), "message"),
        ("blank line", b"  \t ".to_vec(), "message"),
        ("unterminated JSON", br#"{"type":"person","action":"identify""#.to_vec(), "message"),
        ("unterminated string", br#"{"type":"person"#.to_vec(), "message"),
        ("not an object", b"[1,2,3]".to_vec(), "message"),
        ("raw control character", b"{\"type\":\"per\x01son\"}".to_vec(), "message"),
        ("JSON nested past the parser's limit", nested(200).into_bytes(), "message"),
        (
            "attribute nested past 32 levels",
            v2(&format!(r#","attributes":{{"deep":{}}}"#, nested(40))).into_bytes(),
            "attributes.deep",
        ),
        ("number beyond f64", v2(r#","attributes":{"n":1e400}"#).into_bytes(), "message"),
        (
            "timestamp beyond i64",
            v2(r#","timestamp":99999999999999999999999"#).into_bytes(),
            "timestamp",
        ),
        (
            "escaped control character in an id",
            br#"{"type":"person","action":"identify","identifiers":{"id":"a\u0000b"}}"#.to_vec(),
            "identifiers.id",
        ),
        // Sizes.
        (
            "id over 150 bytes",
            format!(r#"{{"type":"person","action":"identify","identifiers":{{"id":"{long}"}}}}"#)
                .into_bytes(),
            "identifiers.id",
        ),
        (
            "attribute name over 150 bytes",
            v2(&format!(r#","attributes":{{"{long}":1}}"#)).into_bytes(),
            "attributes",
        ),
        (
            "attribute value over 1000 bytes",
            v2(&format!(r#","attributes":{{"v":"{big_value}"}}"#)).into_bytes(),
            "attributes.v",
        ),
        (
            "over 300 attributes",
            v2(&format!(r#","attributes":{{{many_attrs}}}"#)).into_bytes(),
            "attributes",
        ),
        (
            "event data over 100 KB",
            format!(
                r#"{{"type":"person","action":"event","identifiers":{{"id":"x"}},"name":"e","attributes":{{"d":{big_event}}}}}"#
            )
            .into_bytes(),
            "attributes",
        ),
        (
            "event name over 100 bytes",
            format!(
                r#"{{"type":"person","action":"event","identifiers":{{"id":"x"}},"name":"{long}"}}"#
            )
            .into_bytes(),
            "name",
        ),
        // Wrong types, field by field.
        ("type not a string", br#"{"type":7}"#.to_vec(), "type"),
        (
            "action not a string",
            br#"{"type":"person","action":1,"identifiers":{"id":"x"}}"#.to_vec(),
            "action",
        ),
        (
            "identifiers not an object",
            br#"{"type":"person","action":"identify","identifiers":"x"}"#.to_vec(),
            "identifiers",
        ),
        (
            "identifiers.id an object",
            br#"{"type":"person","action":"identify","identifiers":{"id":{}}}"#.to_vec(),
            "identifiers.id",
        ),
        ("attributes an array", v2(r#","attributes":[1]"#).into_bytes(), "attributes"),
        ("timestamp a word", v2(r#","timestamp":"soon""#).into_bytes(), "timestamp"),
        (
            "_update not a bool",
            v2(r#","attributes":{"_update":"yes"}"#).into_bytes(),
            "attributes._update",
        ),
        (
            "event name a number array",
            br#"{"type":"person","action":"event","identifiers":{"id":"x"},"name":[1]}"#.to_vec(),
            "name",
        ),
        (
            "device not an object",
            br#"{"type":"person","action":"add_device","identifiers":{"id":"x"},"device":5}"#
                .to_vec(),
            "device",
        ),
        (
            "cio_relationships not a list",
            v2(r#","cio_relationships":5"#).into_bytes(),
            "cio_relationships",
        ),
        (
            "pipelines traits an array",
            br#"{"type":"identify","userId":"x","traits":[1]}"#.to_vec(),
            "traits",
        ),
        (
            "pipelines userId an object",
            br#"{"type":"identify","userId":{},"traits":{}}"#.to_vec(),
            "userId",
        ),
        (
            "pipelines event an array (numbers are read as text)",
            br#"{"type":"track","userId":"x","event":[5]}"#.to_vec(),
            "event",
        ),
        (
            "pipelines timestamp not a time",
            br#"{"type":"track","userId":"x","event":"e","timestamp":"yesterday"}"#.to_vec(),
            "timestamp",
        ),
        (
            "webhook data not an object",
            br#"{"object_type":"email","metric":"opened","data":3}"#.to_vec(),
            "data",
        ),
        ("batch not an array", br#"{"batch":{}}"#.to_vec(), "batch"),
        // Unknown kinds.
        ("unknown type", br#"{"type":"persona"}"#.to_vec(), "type"),
        ("missing type", br#"{"identifiers":{"id":"x"}}"#.to_vec(), "type"),
        (
            "unknown action",
            br#"{"type":"person","action":"explode","identifiers":{"id":"x"}}"#.to_vec(),
            "action",
        ),
        (
            "unknown delivery metric",
            br#"{"type":"delivery","action":"event","identifiers":{"id":"d"},"name":"exploded"}"#
                .to_vec(),
            "name",
        ),
        (
            "unknown webhook object type",
            br#"{"object_type":"pigeon","metric":"sent","data":{}}"#.to_vec(),
            "object_type",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let db = ProfileDb::builder()
        .clock(Arc::new(ManualClock::new(1_767_225_600)))
        .durability(Durability::Buffered)
        .open(dir.path())
        .unwrap();
    let mut failures = Vec::new();
    for (i, (name, input, field)) in rows.iter().enumerate() {
        let before = records(&db);
        let report = db.ingest_bytes(input).unwrap();
        let got: Vec<Option<&str>> = report.rejected.iter().map(|r| r.field()).collect();
        // The refusal names the field, or a path inside it (`attributes.deep[0][0]...`).
        let names_field = matches!(got.as_slice(), [Some(f)] if f == field
            || f.starts_with(&format!("{field}.")) || f.starts_with(&format!("{field}[")));
        if report.applied != 0 || !names_field {
            failures.push(format!(
                "{name}: applied {}, refusals naming {got:?} (want [{field:?}]): {}",
                report.applied,
                report
                    .rejected
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
        if records(&db) != before {
            failures.push(format!("{name}: wrote records"));
        }
        // The next message still applies.
        let good = format!(
            r#"{{"type":"person","action":"identify","identifiers":{{"id":"ok{i}"}},"attributes":{{"row":{i}}}}}"#
        );
        let report = db.ingest_bytes(good.as_bytes()).unwrap();
        if report.applied != 1 || db.person(&Ident::id(format!("ok{i}"))).unwrap().is_none() {
            failures.push(format!("{name}: the next message did not apply"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(db.stats().unwrap().people, rows.len() as u64);
    assert!(db.verify().unwrap().is_ok());
}

/// Duplicate keys are valid JSON (RFC 8259 says names SHOULD be unique); serde_json, and
/// so profiledb, keeps the last. Pinned here so a change is deliberate.
#[test]
fn duplicate_keys_keep_the_last_value() {
    let dir = tempfile::tempdir().unwrap();
    let db = ProfileDb::builder()
        .durability(Durability::Buffered)
        .open(dir.path())
        .unwrap();
    let r = db
        .ingest_str(
            r#"{"type":"person","action":"identify","identifiers":{"id":"a"},"identifiers":{"id":"b"},"attributes":{"plan":"free","plan":"pro"}}"#,
        )
        .unwrap();
    assert_eq!(r.applied, 1, "{:?}", r.rejected);
    assert!(db.person(&Ident::id("a")).unwrap().is_none());
    let b = db.person(&Ident::id("b")).unwrap().unwrap();
    assert_eq!(b.attributes["plan"], "pro".into());
}
