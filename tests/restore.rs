//! Restoring an export through the library: `ProfileDb::restore` and `Restore` (the rule
//! that a dump arrives whole and alone), round trips and every refusal.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests: failing loudly is right

mod common;

use common::{open, T0};
use profiledb::{
    Broken, Channel, Ident, Identify, LineOutcome, NewDelivery, ProfileDb, Refusal, Restore,
    RestoreError, Track,
};

/// A database with people, events, a delivery, topics, indexes and segments.
fn source() -> (tempfile::TempDir, ProfileDb) {
    let (dir, db, clock) = open();
    for (id, name, default) in profiledb::synth::topics() {
        db.define_topic(id, &name, default).unwrap();
    }
    db.index_attribute("plan").unwrap();
    for (name, cond) in profiledb::synth::segments(4) {
        db.create_segment(&name, Some(&cond)).unwrap();
    }
    let mut ops = Vec::new();
    for n in 0..40 {
        ops.extend(profiledb::synth::person_ops(n, 7, T0));
    }
    db.write_batch(&ops).unwrap();
    clock.advance(60);
    let a = Ident::id(profiledb::synth::person_id(1));
    db.track(Track::event(a.clone(), "purchase").property("amount", 3))
        .unwrap();
    db.add_delivery(&a, NewDelivery::new("dl-1", Channel::Email).created(T0))
        .unwrap();
    (dir, db)
}

fn export(db: &ProfileDb) -> String {
    let mut out = Vec::new();
    db.export(&mut out).unwrap();
    String::from_utf8(out).unwrap()
}

/// The lines of `text` joined back, with `f` applied to the line at each index.
fn edit(text: &str, f: impl Fn(usize, &str) -> Option<String>) -> String {
    let mut out = String::new();
    for (i, line) in text.lines().enumerate() {
        if let Some(l) = f(i, line) {
            out.push_str(&l);
            out.push('\n');
        }
    }
    out
}

/// `text` with `line` inserted before the line at index `at`.
fn insert(text: &str, at: usize, line: &str) -> String {
    edit(text, |i, l| {
        Some(if i == at {
            format!("{line}\n{l}")
        } else {
            l.to_owned()
        })
    })
}

#[test]
fn restore_rebuilds_a_database_that_exports_the_same_dump() {
    let (_d, db) = source();
    let text = export(&db);
    let lines = text.lines().count() as u64;
    assert!(lines >= 3, "{text}");
    let (_d2, copy, _c) = open();
    let report = copy.restore(text.as_bytes()).unwrap();
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    assert_eq!(report.lines, lines);
    assert_eq!(
        report.applied, lines,
        "every dump line is one applied message"
    );
    assert_eq!(export(&copy), text);
    assert_eq!(copy.people().unwrap(), db.people().unwrap());
    // The restored database takes writes again once the dump is done.
    copy.identify(Identify::new(Ident::id("after")).set("plan", "pro"))
        .unwrap();
}

#[test]
fn blank_lines_a_byte_order_mark_and_crlf_are_read_past() {
    let (_d, db) = source();
    let text = export(&db);
    let spaced = format!("\u{feff}{}\r\n\n", text.replace('\n', "\r\n\n"));
    let (_d2, copy, _c) = open();
    let report = copy.restore(spaced.as_bytes()).unwrap();
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    assert_eq!(export(&copy), text);
}

#[test]
fn messages_around_a_dump_are_ingested_and_one_inside_it_is_refused() {
    let (_d, db) = source();
    let text = export(&db);
    let track = r#"{"type":"track","userId":"late","event":"signed_up"}"#;
    // Line 2 is inside the dump: refused, writing nothing; the dump completes.
    let inside = insert(&text, 1, track);
    let (_d2, copy, _c) = open();
    let report = copy.restore(inside.as_bytes()).unwrap();
    assert_eq!(report.rejected.len(), 1);
    assert_eq!(report.rejected[0].line, 2);
    let why = report.rejected[0].rejection.error.to_string();
    assert!(
        why.contains("comes inside the restore dump that began at line 1"),
        "{why}"
    );
    assert_eq!(export(&copy), text, "the refused message wrote nothing");

    // After the dump, the same message is ingested.
    let (_d3, copy, _c) = open();
    let after = format!("{text}{track}\n");
    let report = copy.restore(after.as_bytes()).unwrap();
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    assert!(copy.person(&Ident::id("late")).unwrap().is_some());
}

#[test]
fn a_non_empty_database_refuses_the_dump_and_keeps_what_it_held() {
    let (_d, db) = source();
    let text = export(&db);
    let (_d2, target, _c) = open();
    target.identify(Identify::new(Ident::id("mine"))).unwrap();
    let before = export(&target);
    let err = target.restore(text.as_bytes()).unwrap_err();
    let RestoreError::Begin { line: 1, source } = &err else {
        panic!("expected a refused restore_begin, got {err}");
    };
    assert!(
        source.to_string().contains("holds no records yet"),
        "{source}"
    );
    assert!(err.to_string().contains("nothing of the dump was written"));
    assert_eq!(err.line(), Some(1));
    assert_eq!(export(&target), before);
}

#[test]
fn a_truncated_export_is_a_broken_restore() {
    let (_d, db) = source();
    let text = export(&db);
    let n = text.lines().count();
    let cut = edit(&text, |i, l| (i + 1 < n).then(|| l.to_owned()));
    let (_d2, copy, _c) = open();
    let err = copy.restore(cut.as_bytes()).unwrap_err();
    assert!(
        matches!(
            err,
            RestoreError::Broken {
                begin: 1,
                cause: Broken::Truncated { line }
            } if line == n as u64 - 1
        ),
        "{err}"
    );
    assert_eq!(err.line(), None);
    assert!(err.to_string().contains("partial restore"), "{err}");
}

#[test]
fn a_damaged_restore_line_stops_the_restore_there() {
    let (_d, db) = source();
    let text = export(&db);
    // The last hex digit of line 2's first value, flipped: the checksum fails.
    let damaged = edit(&text, |i, l| {
        Some(if i == 1 {
            let at = l.find("\"]").unwrap() - 1;
            let flipped = if &l[at..=at] == "0" { "1" } else { "0" };
            format!("{}{flipped}{}", &l[..at], &l[at + 1..])
        } else {
            l.to_owned()
        })
    });
    let (_d2, copy, _c) = open();
    let err = copy.restore(damaged.as_bytes()).unwrap_err();
    let RestoreError::Broken {
        begin: 1,
        cause: Broken::Failed { line: 2, source },
    } = &err
    else {
        panic!("expected a broken restore at line 2, got {err}");
    };
    assert_eq!(source.input().unwrap().field, "records[0].value");
    assert!(std::error::Error::source(&err).is_some());
    assert_eq!(err.line(), Some(2));
}

#[test]
fn restore_lines_without_their_begin_are_refused_and_write_nothing() {
    let (_d, db) = source();
    let text = export(&db);
    let headless = edit(&text, |i, l| (i > 0).then(|| l.to_owned()));
    let (_d2, copy, _c) = open();
    let empty = export(&copy);
    let report = copy.restore(headless.as_bytes()).unwrap();
    assert_eq!(report.applied, 0);
    assert_eq!(report.rejected.len(), text.lines().count() - 1);
    let why = report.rejected[0].rejection.error.to_string();
    assert!(
        why.contains("no restore_begin line came before it"),
        "{why}"
    );
    assert_eq!(export(&copy), empty);
}

#[test]
fn a_second_begin_inside_a_dump_breaks_it() {
    let (_d, db) = source();
    let text = export(&db);
    let first = text.lines().next().unwrap();
    let twice = insert(&text, 1, first);
    let (_d2, copy, _c) = open();
    let err = copy.restore(twice.as_bytes()).unwrap_err();
    assert!(
        matches!(
            err,
            RestoreError::Broken {
                begin: 1,
                cause: Broken::Nested { line: 2 }
            }
        ),
        "{err}"
    );
}

#[test]
fn restore_feeds_line_by_line_and_stops_after_an_error() {
    let (_d, db) = source();
    let text = export(&db);
    let (_d2, copy, _c) = open();
    let mut restore = Restore::new(&copy);
    assert!(matches!(
        restore.feed(b"\xff\xfe").unwrap(),
        LineOutcome::Refused(Refusal::NotUtf8)
    ));
    assert!(matches!(restore.feed(b"  ").unwrap(), LineOutcome::Blank));
    let Ok(LineOutcome::Ingested(report)) = restore.feed(b"not json") else {
        panic!("text that is not JSON goes to the library, which refuses it");
    };
    assert_eq!(report.rejected[0].field(), Some("message"));
    let mut lines = text.lines();
    restore.feed(lines.next().unwrap().as_bytes()).unwrap();
    assert_eq!(restore.in_dump(), Some(4));
    let err = restore.feed(
        lines
            .next()
            .unwrap()
            .replace("restore", "restore_begin")
            .as_bytes(),
    );
    assert!(
        matches!(err, Err(RestoreError::Broken { begin: 4, .. })),
        "{err:?}"
    );
    let again = restore.feed(lines.next().unwrap().as_bytes()).unwrap_err();
    assert!(
        matches!(again, RestoreError::Stopped { line: 6 }),
        "{again}"
    );
    assert_eq!(restore.rejected(), 2);
    assert_eq!(restore.applied(), 1);
    // The error was reported once; ending the input does not report it again.
    restore.finish().unwrap();
}

#[test]
fn a_failing_reader_is_a_read_error_naming_the_line() {
    struct Failing(usize);
    impl std::io::Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0 == 0 {
                return Err(std::io::Error::other("disk gone"));
            }
            self.0 -= 1;
            buf[0] = b'\n';
            Ok(1)
        }
    }
    let (_d, copy, _c) = open();
    let err = copy
        .restore(std::io::BufReader::with_capacity(1, Failing(2)))
        .unwrap_err();
    assert!(matches!(&err, RestoreError::Read { line: 3, .. }), "{err}");
    assert!(err.to_string().contains("disk gone"));
}

/// The export of `tests/fixtures/format2/db` (a 40-person demo written by the last
/// format-2 build): the way a format-2 database moves to this format.
#[test]
fn a_format_2_export_restores_into_this_format_with_its_derived_data_rebuilt() {
    let dump = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format2/dump.jsonl"),
    )
    .unwrap();
    let (dir, db, _clock) = open();
    let report = db.restore(dump.as_bytes()).unwrap();
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    let check = db.verify().unwrap();
    assert!(check.is_ok(), "{check:?}");
    let people = db.people().unwrap();
    assert_eq!(people.len(), 41);
    // The ordered index on `age` (declared in the fixture) answers as a scan does.
    let by_scan = people
        .iter()
        .filter(|p| {
            p.attributes
                .get("age")
                .and_then(profiledb::Value::as_number)
                .is_some_and(|a| a >= 30.0)
        })
        .count() as u64;
    assert!(by_scan > 0);
    assert_eq!(db.count("attr.age >= 30").unwrap(), by_scan);
    // Its export is this format's, and restores again.
    let again = export(&db);
    assert!(again.starts_with(&format!(
        "{{\"type\":\"profiledb\",\"action\":\"restore_begin\",\"format\":{}",
        profiledb::FORMAT_VERSION
    )));
    drop(db);
    let reopened = ProfileDb::open(dir.path()).unwrap();
    assert_eq!(reopened.people().unwrap().len(), 41);
    let (_dir2, copy, _clock2) = open();
    copy.restore(again.as_bytes()).unwrap();
    assert_eq!(export(&copy), again);
}

/// Builds of format 3 from before `events_by_name` was retired wrote one record per
/// tracked event there; their exports restore, those records skipped (and counted
/// against the export's total).
#[test]
fn a_format_3_export_with_the_retired_events_by_name_restores_without_it() {
    let (_d, db) = source();
    let text = export(&db);
    let retired = r#"["events_by_name","00000001010008707572636861736580000000696dd9f00000000000000001","02000000"]"#;
    let first = text
        .lines()
        .position(|l| l.contains(r#""action":"restore","records":["#))
        .unwrap();
    let text = edit(&text, |i, l| {
        Some(if i == first {
            l.replacen(r#""records":["#, &format!(r#""records":[{retired},"#), 1)
        } else if l.contains(r#""action":"restore_end""#) {
            let n: u64 = l
                .split(r#""records":"#)
                .nth(1)
                .and_then(|r| r.trim_end_matches('}').parse().ok())
                .unwrap();
            l.replace(
                &format!(r#""records":{n}"#),
                &format!(r#""records":{}"#, n + 1),
            )
        } else {
            l.to_owned()
        })
    });
    assert!(text.contains("events_by_name"));
    let (_d2, copy, _c) = open();
    let report = copy.restore(text.as_bytes()).unwrap();
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    assert!(copy
        .raw_records(profiledb::Family::EventsByName)
        .unwrap()
        .is_empty());
    assert_eq!(copy.people().unwrap(), db.people().unwrap());
    assert_eq!(copy.counts().unwrap(), db.counts().unwrap());
    assert!(copy.verify().unwrap().is_ok());
}
