//! The change feed: every kind of change reported, a copy built from the feed equal to
//! the database, resuming from any cursor (across pages, reopens and checkpoints) seeing
//! nothing twice and missing nothing, expiry as a typed error, and bad input refused.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use profiledb::{
    synth, ActivityFilter, Change, ChangeFeed, ChangeKind, Channel, Cursor, Durability, Error,
    Ident, Identify, ManualClock, Metric, NewDelivery, ObjectRef, Op, ProfileDb, Track, Value,
};

use common::{input_field, T0};

fn open_with_feed(dir: &std::path::Path, clock: &ManualClock) -> ProfileDb {
    open_keeping(dir, clock, 7 * 86_400)
}

/// A database with the feed on keeping `keep` seconds of changes.
fn open_keeping(dir: &std::path::Path, clock: &ManualClock, keep: i64) -> ProfileDb {
    ProfileDb::builder()
        .clock(Arc::new(clock.clone()))
        .durability(Durability::Buffered)
        .change_feed(Some(ChangeFeed::keep_seconds(keep).unwrap()))
        .open(dir)
        .unwrap()
}

/// The stored `changes` records.
fn change_records(db: &ProfileDb) -> Vec<(Vec<u8>, Vec<u8>)> {
    db.raw_records(profiledb::Family::Changes).unwrap()
}

/// Flips one bit of the last byte of the first `changes` record (its checksum fails).
fn damage_first_change(db: &ProfileDb) {
    let (key, mut value) = change_records(db).remove(0);
    *value.last_mut().unwrap() ^= 0x10;
    db.raw_put(profiledb::Family::Changes, &key, &value)
        .unwrap();
}

/// Every change after `after`, read `page` at a time; checks each page's cursors.
fn read_all(db: &ProfileDb, after: Cursor, page: usize) -> (Vec<Change>, Cursor) {
    let mut out: Vec<Change> = Vec::new();
    let mut at = after;
    loop {
        let p = db.changes(at, page).unwrap();
        assert!(p.changes.len() <= page);
        for c in &p.changes {
            assert!(c.cursor > at, "cursor {} not after {at}", c.cursor);
            at = c.cursor;
        }
        at = p.next;
        out.extend(p.changes);
        if !p.more {
            return (out, at);
        }
    }
}

/// What a downstream copy keeps, built either from the feed or from the database.
#[derive(Debug, Default, PartialEq)]
struct Copy {
    people: BTreeMap<u32, (Option<String>, Option<String>)>,
    attributes: BTreeMap<(u32, String), Value>,
    activities: BTreeMap<u64, (u32, i64, String, Option<String>, Value)>,
    deliveries: BTreeMap<String, (u32, BTreeMap<String, i64>)>,
    devices: BTreeMap<(u32, String), (String, i64)>,
    relationships: BTreeMap<(u32, u32, String), BTreeMap<String, Value>>,
    members: BTreeSet<(u32, u32)>,
}

impl Copy {
    fn apply(&mut self, change: &ChangeKind) {
        match change {
            ChangeKind::PersonCreated {
                person,
                identifiers,
                ..
            }
            | ChangeKind::PersonUpdated {
                person,
                identifiers,
                ..
            } => {
                self.people.insert(
                    person.0,
                    (identifiers.id.clone(), identifiers.email.clone()),
                );
            }
            ChangeKind::PersonDeleted { person, .. } => {
                self.people.remove(&person.0);
            }
            ChangeKind::AttributeChanged {
                person, name, new, ..
            } => match new {
                Some(v) => {
                    self.attributes.insert((person.0, name.clone()), v.clone());
                }
                None => {
                    self.attributes.remove(&(person.0, name.clone()));
                }
            },
            ChangeKind::ActivityAdded {
                person, activity, ..
            } => {
                self.activities.insert(
                    activity.cursor.seq,
                    (
                        person.0,
                        activity.timestamp,
                        activity.kind.clone(),
                        activity.name.clone(),
                        activity.data.clone(),
                    ),
                );
            }
            ChangeKind::ActivityRemoved { seq, .. } => {
                assert!(
                    self.activities.remove(seq).is_some(),
                    "removed twice: {seq}"
                );
            }
            ChangeKind::DeliveryCreated { person, delivery } => {
                self.deliveries
                    .insert(delivery.id.clone(), (person.0, delivery.metrics.clone()));
            }
            ChangeKind::DeliveryMetric {
                delivery_id,
                metric,
                at,
                ..
            } => {
                self.deliveries
                    .get_mut(delivery_id)
                    .unwrap()
                    .1
                    .insert(metric.clone(), *at);
            }
            ChangeKind::DeliveryRemoved { delivery_id, .. } => {
                self.deliveries.remove(delivery_id);
            }
            ChangeKind::DeviceChanged { person, device } => {
                self.devices.insert(
                    (person.0, device.token.clone()),
                    (device.platform.as_str().to_owned(), device.last_used),
                );
            }
            ChangeKind::DeviceRemoved { person, token } => {
                assert!(self.devices.remove(&(person.0, token.clone())).is_some());
            }
            ChangeKind::RelationshipChanged {
                person,
                object,
                attributes,
            } => {
                self.relationships.insert(
                    (person.0, object.type_id, object.object_id.clone()),
                    attributes.clone(),
                );
            }
            ChangeKind::RelationshipRemoved { person, object } => {
                self.relationships
                    .remove(&(person.0, object.type_id, object.object_id.clone()));
            }
            ChangeKind::SegmentEntered { segment, person } => {
                assert!(self.members.insert((*segment, person.0)), "entered twice");
            }
            ChangeKind::SegmentExited { segment, person } => {
                assert!(self.members.remove(&(*segment, person.0)), "left twice");
            }
            _ => {}
        }
    }

    fn of(db: &ProfileDb) -> Copy {
        let mut copy = Copy::default();
        for p in db.people().unwrap() {
            let pid = p.pid.0;
            copy.people.insert(pid, (p.id.clone(), p.email.clone()));
            for (name, v) in &p.attributes {
                copy.attributes.insert((pid, name.clone()), v.clone());
            }
            let who = Ident::cio_id(p.pid.cio_id());
            for a in db
                .activities(&who, &ActivityFilter::new(usize::MAX))
                .unwrap()
            {
                copy.activities.insert(
                    a.cursor.seq,
                    (
                        pid,
                        a.timestamp,
                        a.kind.clone(),
                        a.name.clone(),
                        a.data.clone(),
                    ),
                );
            }
            for d in db.deliveries(&who, usize::MAX).unwrap() {
                copy.deliveries
                    .insert(d.id.clone(), (pid, d.metrics.clone()));
            }
            for d in db.devices(&who).unwrap() {
                copy.devices.insert(
                    (pid, d.token.clone()),
                    (d.platform.as_str().to_owned(), d.last_used),
                );
            }
            for r in db.relationships(&who).unwrap() {
                copy.relationships.insert(
                    (pid, r.object.type_id, r.object.object_id.clone()),
                    r.attributes.clone(),
                );
            }
            for s in db.person_segments(&who).unwrap() {
                copy.members.insert((s.id, pid));
            }
        }
        copy
    }
}

/// Asserts `a == b`, naming the first differing entry of each table.
fn same(a: &Copy, b: &Copy) {
    fn diff<K: Ord + std::fmt::Debug, V: PartialEq + std::fmt::Debug>(
        table: &str,
        a: &BTreeMap<K, V>,
        b: &BTreeMap<K, V>,
    ) {
        for (k, v) in a {
            assert_eq!(
                Some(v),
                b.get(k),
                "{table}: {k:?} differs (left: from the feed)"
            );
        }
        for k in b.keys() {
            assert!(
                a.contains_key(k),
                "{table}: {k:?} missing from the feed's copy"
            );
        }
    }
    diff("people", &a.people, &b.people);
    diff("attributes", &a.attributes, &b.attributes);
    diff("activities", &a.activities, &b.activities);
    diff("deliveries", &a.deliveries, &b.deliveries);
    diff("devices", &a.devices, &b.devices);
    diff("relationships", &a.relationships, &b.relationships);
    let only = |x: &BTreeSet<(u32, u32)>, y: &BTreeSet<(u32, u32)>| -> Vec<(u32, u32)> {
        x.difference(y).copied().collect()
    };
    assert_eq!(
        (only(&a.members, &b.members), only(&b.members, &a.members)),
        (vec![], vec![]),
        "members: (only in the feed's copy, only in the database)"
    );
}

fn id(n: u64) -> Ident {
    Ident::id(synth::person_id(n))
}

/// A workload touching every kind of change: people with attributes, events, devices
/// and relationships; segments of both kinds; deliveries and metrics; updates that
/// remove attributes; a merge, a delete, a suppression; expiry; a refresh.
fn workload(db: &ProfileDb, clock: &ManualClock) {
    db.define_object_type(1, "Companies").unwrap();
    for (tid, name, default) in synth::topics() {
        db.define_topic(tid, &name, default).unwrap();
    }
    for n in 0..40 {
        db.write_batch(&synth::person_ops(n, 7, T0)).unwrap();
    }
    let vip = db
        .create_segment("big spenders", Some("attr.score >= 500"))
        .unwrap();
    let manual = db.create_segment("hand picked", None).unwrap();
    db.add_to_segment(manual, &[id(1), id(2), id(3)]).unwrap();
    for n in 0..10u64 {
        db.add_delivery(
            &id(n),
            NewDelivery::new(format!("d-{n}"), Channel::Email).subject("hi"),
        )
        .unwrap();
        db.report_metric(Metric::new(format!("d-{n}"), "opened"))
            .unwrap();
    }
    db.identify(
        Identify::new(id(4))
            .set("score", 999)
            .remove("country")
            .relate(
                ObjectRef::new(1, "company-x"),
                vec![("role".into(), "boss".into())],
            ),
    )
    .unwrap();
    db.track(Track::event(id(5), "signup").property("plan", "pro"))
        .unwrap();
    db.merge(&id(6), &id(7)).unwrap();
    db.identify(Identify::new(id(11)).set("phone", "+14155550123"))
        .unwrap();
    db.delete(&id(8)).unwrap();
    db.suppress(&id(9)).unwrap();
    db.remove_from_segment(manual, &[id(2)]).unwrap();
    db.delete_relationship(&id(4), &ObjectRef::new(1, "company-x"))
        .unwrap();
    db.delete_device(&id(10), "tok-10").ok();
    // Events older than 20 days go.
    db.expire(T0 - 20 * 86_400).unwrap();
    clock.advance(3 * 86_400);
    db.refresh().unwrap();
    db.rename_segment(vip, "whales").unwrap();
    db.delete_segment(manual).unwrap();
}

#[test]
fn the_feed_is_off_until_turned_on() {
    let (_dir, db, _clock) = common::open();
    let e = db.changes(Cursor::START, 10).unwrap_err();
    assert_eq!(input_field(&e), "change_feed");
    assert!(db.change_feed().unwrap().is_none());
    db.identify(Identify::new(Ident::id("a"))).unwrap();
    assert!(change_records(&db).is_empty());
}

#[test]
fn a_copy_built_from_the_feed_equals_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let db = open_with_feed(dir.path(), &clock);
    let start = db.change_cursor().unwrap();
    workload(&db, &clock);
    let (changes, end) = read_all(&db, start, 1000);
    let mut copy = Copy::default();
    for c in &changes {
        copy.apply(&c.kind);
    }
    same(&copy, &Copy::of(&db));
    assert!(db.verify().unwrap().is_ok());
    assert_eq!(end, db.change_cursor().unwrap());
    // Every kind the workload makes is there.
    let kinds: BTreeSet<&str> = changes
        .iter()
        .map(|c| c.to_json()["type"].as_str().unwrap().to_owned())
        .map(|s| &*Box::leak(s.into_boxed_str()))
        .collect();
    for k in [
        "person_created",
        "person_updated",
        "person_deleted",
        "person_merged",
        "suppressed",
        "attribute_changed",
        "activity_added",
        "activity_removed",
        "delivery_created",
        "delivery_metric",
        "device_changed",
        "relationship_changed",
        "relationship_removed",
        "segment_entered",
        "segment_exited",
        "segment_defined",
        "segment_removed",
        "topic_defined",
        "object_type_defined",
    ] {
        assert!(kinds.contains(k), "no {k} in {kinds:?}");
    }
    // A deletion names the identifiers, so a copy can erase them.
    assert!(changes.iter().any(|c| matches!(&c.kind,
        ChangeKind::PersonDeleted { identifiers, .. } if identifiers.id.as_deref() == Some(&*synth::person_id(8)))));
    // Cursors strictly increase, commits never decrease.
    for w in changes.windows(2) {
        assert!(w[0].cursor < w[1].cursor);
        assert!(w[0].commit <= w[1].commit);
    }
}

#[test]
fn resuming_from_any_cursor_sees_nothing_twice_and_misses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let db = open_with_feed(dir.path(), &clock);
    let start = db.change_cursor().unwrap();
    workload(&db, &clock);
    let (whole, _) = read_all(&db, start, usize::MAX);
    for page in [1, 3, 7, 64] {
        let (paged, _) = read_all(&db, start, page);
        assert_eq!(paged, whole, "page {page}");
    }
    // From every cursor, text form included, the rest is the tail.
    for (i, c) in whole.iter().enumerate().step_by(17) {
        let cursor: Cursor = c.cursor.to_string().parse().unwrap();
        let (rest, _) = read_all(&db, cursor, 50);
        assert_eq!(rest, whole[i + 1..]);
    }
    // Across a checkpoint and a reopen, and with more written after.
    let (_, end) = read_all(&db, start, 100);
    db.checkpoint().unwrap();
    db.close().unwrap();
    let db = ProfileDb::builder()
        .clock(Arc::new(clock.clone()))
        .open(dir.path())
        .unwrap();
    assert!(db.changes(end, 10).unwrap().changes.is_empty());
    db.identify(Identify::new(id(100)).set("plan", "gold"))
        .unwrap();
    let (more, _) = read_all(&db, end, 10);
    assert!(matches!(more[0].kind, ChangeKind::PersonCreated { .. }));
    let (again, _) = read_all(&db, start, 10);
    assert_eq!(again[..whole.len()], whole[..]);
    assert_eq!(again[whole.len()..], more[..]);
}

#[test]
fn old_changes_expire_with_a_typed_error_never_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let db = open_keeping(dir.path(), &clock, 3600);
    let start = db.change_cursor().unwrap();
    db.identify(Identify::new(id(1)).set("plan", "a")).unwrap();
    let middle = db.change_cursor().unwrap();
    clock.advance(7200);
    db.identify(Identify::new(id(2)).set("plan", "b")).unwrap();
    // Nothing is dropped before a checkpoint (or 256 commits). Each identify is 4
    // changes: the person, the attribute, and two timeline entries.
    assert_eq!(read_all(&db, start, 10).0.len(), 8);
    db.checkpoint().unwrap();
    let e = db.changes(start, 10).unwrap_err();
    let Error::CursorExpired { cursor, oldest } = &e else {
        panic!("expected CursorExpired, got {e}");
    };
    assert_eq!(cursor, &start.to_string());
    assert_eq!(oldest, &middle.to_string());
    assert!(e.to_string().contains("full export"), "{e}");
    let (rest, _) = read_all(&db, oldest.parse().unwrap(), 10);
    assert_eq!(rest.len(), 4);
    let status = db.change_feed().unwrap().unwrap();
    assert_eq!(status.oldest, middle);
    assert_eq!(status.keep_seconds, 3600);
    // Turning it off drops everything; on again starts afresh.
    db.set_change_feed(None).unwrap();
    assert!(change_records(&db).is_empty());
    assert_eq!(
        input_field(&db.changes(middle, 1).unwrap_err()),
        "change_feed"
    );
    db.set_change_feed(Some(ChangeFeed::default())).unwrap();
    assert!(matches!(
        db.changes(middle, 1).unwrap_err(),
        Error::CursorExpired { .. }
    ));
    let now = db.change_cursor().unwrap();
    assert!(db.changes(now, 1).unwrap().changes.is_empty());
}

#[test]
fn a_feed_on_from_creation_reaches_back_to_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let db = open_with_feed(dir.path(), &clock);
    db.identify(Identify::new(id(1))).unwrap();
    let (all, _) = read_all(&db, Cursor::START, 10);
    assert!(matches!(all[0].kind, ChangeKind::PersonCreated { .. }));
    // Turned on later, it starts at that moment.
    let other = tempfile::tempdir().unwrap();
    let db = ProfileDb::builder()
        .clock(Arc::new(clock.clone()))
        .open(other.path())
        .unwrap();
    db.identify(Identify::new(id(1))).unwrap();
    db.set_change_feed(Some(ChangeFeed::default())).unwrap();
    assert!(matches!(
        db.changes(Cursor::START, 10).unwrap_err(),
        Error::CursorExpired { .. }
    ));
}

#[test]
fn big_segment_moves_are_read_and_verified() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let db = open_with_feed(dir.path(), &clock);
    let ops: Vec<Op> = (0..5000)
        .map(|n| Op::Identify(Identify::new(id(n)).set("plan", "pro")))
        .collect();
    db.write_batch(&ops).unwrap();
    let start = db.change_cursor().unwrap();
    // 5000 people enter at once: a bitmap container, not an array.
    db.create_segment("pros", Some(r#"attr.plan = "pro""#))
        .unwrap();
    assert!(db.verify().unwrap().is_ok());
    let (changes, _) = read_all(&db, start, 777);
    let entered = changes
        .iter()
        .filter(|c| matches!(c.kind, ChangeKind::SegmentEntered { .. }))
        .count();
    assert_eq!(entered, 5000);
    // Turning the feed off drops everything, even past a damaged record.
    damage_first_change(&db);
    db.set_change_feed(None).unwrap();
    assert!(change_records(&db).is_empty());
}

#[test]
fn the_setting_is_kept_by_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let db = open_with_feed(dir.path(), &clock);
    let start = db.change_cursor().unwrap();
    db.identify(Identify::new(id(1))).unwrap();
    db.close().unwrap();
    // Opened without saying: still on, nothing lost.
    let db = ProfileDb::open(dir.path()).unwrap();
    assert_eq!(db.change_feed().unwrap().unwrap().keep_seconds, 7 * 86_400);
    // The person and their `profile_create` timeline entry.
    assert_eq!(read_all(&db, start, 5).0.len(), 2);
}

#[test]
fn bad_cursors_and_limits_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let db = open_with_feed(dir.path(), &clock);
    for text in [
        "",
        "x",
        "1.",
        ".1",
        "-1",
        "1.2.3",
        "99999999999999999999999",
        "1.4294967295",
    ] {
        let e = text.parse::<Cursor>().unwrap_err();
        assert_eq!(e.field, "cursor", "{text}");
    }
    assert_eq!(
        input_field(&db.changes(db.change_cursor().unwrap(), 0).unwrap_err()),
        "limit"
    );
    let ahead = Cursor::after_commit(db.change_cursor().unwrap().commit() + 5);
    assert_eq!(input_field(&db.changes(ahead, 1).unwrap_err()), "cursor");
    assert_eq!(
        ChangeFeed::keep_seconds(0).unwrap_err().field,
        "keep_seconds"
    );
    assert_eq!("12".parse::<Cursor>().unwrap(), Cursor::after_commit(12));
    assert_eq!("12.3".parse::<Cursor>().unwrap().to_string(), "12.3");
}

#[test]
fn a_restored_copy_starts_its_own_feed() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let db = open_with_feed(dir.path(), &clock);
    let start = db.change_cursor().unwrap();
    db.write_batch(&synth::person_ops(1, 3, T0)).unwrap();
    let mut dump = Vec::new();
    db.export(&mut dump).unwrap();
    // The export carries no feed record.
    let text = String::from_utf8(dump).unwrap();
    assert!(!text.contains("\"changes\""));
    let other = tempfile::tempdir().unwrap();
    let copy = open_with_feed(other.path(), &clock);
    for line in text.lines() {
        assert!(copy.ingest_str(line).unwrap().rejected.is_empty());
    }
    assert!(matches!(
        copy.changes(start, 10).unwrap_err(),
        Error::CursorExpired { .. }
    ));
    // A source with more commits than its restore takes: the copy numbers its commits
    // on from the source's. A cursor from before the export expires on the copy however
    // many commits the copy makes; the cursor at the export follows the copy's own new
    // commits (the copy is the source as of that cursor).
    let source = tempfile::tempdir().unwrap();
    let db = open_with_feed(source.path(), &clock);
    for n in 0..30 {
        db.identify(Identify::new(id(n))).unwrap();
    }
    let before = db.change_cursor().unwrap();
    db.identify(Identify::new(id(99))).unwrap();
    let mut dump = Vec::new();
    db.export(&mut dump).unwrap();
    let at_export = db.change_cursor().unwrap();
    let other = tempfile::tempdir().unwrap();
    let copy = open_with_feed(other.path(), &clock);
    for line in String::from_utf8(dump).unwrap().lines() {
        assert!(copy.ingest_str(line).unwrap().rejected.is_empty());
    }
    assert_eq!(copy.change_cursor().unwrap(), at_export);
    for n in 0..40 {
        copy.identify(Identify::new(id(50 + n))).unwrap();
    }
    assert!(matches!(
        copy.changes(before, 10).unwrap_err(),
        Error::CursorExpired { .. }
    ));
    let (next, _) = read_all(&copy, at_export, 100);
    assert_eq!(
        next.iter()
            .filter(|c| matches!(c.kind, ChangeKind::PersonCreated { .. }))
            .count(),
        40
    );
    let now = copy.change_cursor().unwrap();
    copy.identify(Identify::new(id(1)).set("plan", "x"))
        .unwrap();
    let (after, _) = read_all(&copy, now, 10);
    assert!(after
        .iter()
        .any(|c| matches!(&c.kind, ChangeKind::AttributeChanged { name, .. } if name == "plan")));
    assert!(copy.verify().unwrap().is_ok());
}

#[test]
fn writes_in_one_batch_are_one_commit_of_the_feed() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let db = open_with_feed(dir.path(), &clock);
    let start = db.change_cursor().unwrap();
    let ops: Vec<Op> = (0..300).flat_map(|n| synth::person_ops(n, 1, T0)).collect();
    db.write_batch(&ops).unwrap();
    let (changes, _) = read_all(&db, start, 10_000);
    let commits: BTreeSet<u64> = changes.iter().map(|c| c.commit).collect();
    assert_eq!(commits.len(), 1);
    assert_eq!(
        changes
            .iter()
            .filter(|c| matches!(c.kind, ChangeKind::PersonCreated { .. }))
            .count(),
        300
    );
    // A commit this size spans several `changes` records, each well under sled's blob
    // threshold.
    let records = change_records(&db);
    assert!(records.len() > 1);
    assert!(records.iter().all(|(_, v)| v.len() < 40 << 10));
    assert_eq!(Copy::of(&db).people.len(), 300);
}

#[test]
fn a_changes_record_is_byte_exact_as_format_md_says() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let db = open_with_feed(dir.path(), &clock);
    db.define_topic(7, "news", true).unwrap();
    let commit = db.change_cursor().unwrap().commit();
    let records = change_records(&db);
    assert_eq!(records.len(), 1);
    let (key, value) = &records[0];
    // Key: commit (u64) + part (u32), big-endian.
    let mut want_key = commit.to_be_bytes().to_vec();
    want_key.extend_from_slice(&0u32.to_be_bytes());
    assert_eq!(key, &want_key);
    // Payload: `at` (i64, zig-zag varint: 252 + u32 LE), one entry: variant 20 `Topic`,
    // id 7, name "news", default_subscribed true.
    let mut payload = vec![252];
    payload.extend_from_slice(&u32::try_from(T0 * 2).unwrap().to_le_bytes());
    payload.extend_from_slice(&[1, 20, 7, 4]);
    payload.extend_from_slice(b"news");
    payload.push(1);
    let crc = profiledb::internal::codec::checksum(profiledb::Family::Changes.tag(), key, &payload);
    let mut want = vec![2];
    want.extend_from_slice(&(crc ^ 0xFFFF_FFFF).to_be_bytes());
    want.extend_from_slice(&payload);
    assert_eq!(value, &want);
    // And `meta/feed`: variant 3, keep_seconds 7 days (zig-zag 1 209 600: 252 + u32 LE),
    // since 0: turned on as the database was created, the feed reaches back to the start.
    let meta = db.raw_records(profiledb::Family::Meta).unwrap();
    let (_, feed) = meta.iter().find(|(k, _)| k.as_slice() == b"feed").unwrap();
    let mut p = vec![3, 252];
    p.extend_from_slice(&(7u32 * 86_400 * 2).to_le_bytes());
    p.push(0);
    assert_eq!(&feed[5..], &p[..]);
}

#[test]
fn a_damaged_change_is_reported_never_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let db = open_keeping(dir.path(), &clock, 3600);
    let start = db.change_cursor().unwrap();
    db.identify(Identify::new(id(1)).set("plan", "a")).unwrap();
    damage_first_change(&db);
    match db.changes(start, 10) {
        Err(Error::Corrupted { family, .. }) => assert_eq!(family, "changes"),
        other => panic!("expected Corrupted, got {other:?}"),
    }
    let report = db.verify().unwrap();
    assert!(report.problems.iter().any(|p| p.contains("changes")));
    // Dropping old changes meets the damage: the writes and the checkpoint asking for
    // it stand, and the damage stays where readers and verify see it.
    clock.advance(7200);
    for n in 2..300 {
        db.identify(Identify::new(id(n))).unwrap();
    }
    db.checkpoint().unwrap();
    assert!(matches!(
        db.changes(start, 10).unwrap_err(),
        Error::Corrupted { .. }
    ));
}

#[test]
fn a_salvage_over_lost_commits_expires_every_earlier_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let seen = {
        let db = open_with_feed(dir.path(), &clock);
        db.identify(Identify::new(id(1))).unwrap();
        db.change_cursor().unwrap()
    };
    // Pretend three more commits were acknowledged (and served by the feed) than sled
    // holds: a consumer may hold a cursor past what is left.
    let claimed = seen.commit() + 3;
    let mut bytes = common::commit_slot(claimed);
    bytes.extend_from_slice(&common::commit_slot(0));
    std::fs::write(dir.path().join("COMMIT"), &bytes).unwrap();
    let db = ProfileDb::builder()
        .clock(Arc::new(clock.clone()))
        .salvage(true)
        .open(dir.path())
        .unwrap();
    for n in 2..10 {
        db.identify(Identify::new(id(n))).unwrap();
    }
    for old in [seen, Cursor::after_commit(claimed)] {
        assert!(
            matches!(
                db.changes(old, 10).unwrap_err(),
                Error::CursorExpired { .. }
            ),
            "{old}"
        );
    }
    let now = db.change_feed().unwrap().unwrap().oldest;
    assert!(now.commit() > claimed);
    assert_eq!(read_all(&db, now, 100).0.len(), 16);
}
