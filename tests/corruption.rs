//! Corruption: a single flipped byte in any stored record, in its value or its key, is
//! detected on read (a typed `Error::Corrupted` naming the family) and by `verify`; and
//! damage below the records (sled's own files truncated or overwritten in a closed
//! database) makes `open` return an error or `DataLoss`, never panic, never serve fewer
//! records silently. `tests/storage.rs` has the exhaustive byte-by-byte value flips of
//! three families; this is the property over every family.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use common::Rng;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

use profiledb::{
    ActivityFilter, Channel, DeviceInput, Durability, Error, Family, Ident, Identify, ManualClock,
    Metric, NewDelivery, ObjectRef, Op, Platform, ProfileDb, Track, TrackKind,
};

const T0: i64 = 1_767_225_600;

fn builder() -> profiledb::Builder {
    // The change feed is on: its records are damaged like any other.
    ProfileDb::builder()
        .clock(Arc::new(ManualClock::new(T0)))
        .durability(Durability::Buffered)
        .change_feed(Some(profiledb::ChangeFeed::default()))
}

fn people() -> Vec<Ident> {
    vec![Ident::id("a"), Ident::id("b"), Ident::id("c")]
}

/// A database with records in every family.
fn rich(dir: &Path) {
    let db = builder().open(dir).unwrap();
    db.index_attribute("plan").unwrap();
    db.index_attribute_range("age").unwrap();
    db.define_topic(1, "news", true).unwrap();
    db.create_segment("pros", Some(r#"attr.plan = "pro""#))
        .unwrap();
    let vip = db.create_segment("vip", None).unwrap();
    db.define_object_type(1, "company").unwrap();
    let acme = ObjectRef::new(1, "acme");
    db.identify_object(&acme, vec![("name".into(), "Acme".into())])
        .unwrap();
    db.track(Track::anonymous("anon-1", "visited")).unwrap();
    db.add_relationship(&Ident::anonymous_id("anon-2"), &acme, vec![])
        .unwrap();
    for (i, who) in people().into_iter().enumerate() {
        let n = i64::try_from(i).unwrap();
        db.write_batch(&[
            Op::Identify(
                Identify::new(who.clone())
                    .set("email", format!("p{i}@x.io"))
                    .set("plan", if i == 0 { "pro" } else { "free" })
                    .set("age", 20 + n),
            ),
            Op::Track(Track::event(who.clone(), "bought").id(format!("ev-{i}"))),
            Op::AddDevice {
                person: who.clone(),
                device: DeviceInput::new(format!("tok-{i}"), Platform::Android),
            },
            Op::AddDelivery {
                person: who.clone(),
                delivery: NewDelivery::new(format!("dlv-{i}"), Channel::Email),
            },
            Op::Metric(Metric::new(format!("dlv-{i}"), "opened")),
            Op::AddRelationship {
                person: who.clone(),
                object: acme.clone(),
                attributes: vec![("role".into(), "user".into())],
            },
            Op::AddToSegment {
                segment: vip,
                people: vec![who],
            },
        ])
        .unwrap();
    }
    // Bitmaps: fold what is logged so far into chunks; what follows stays in the log.
    db.checkpoint().unwrap();
    db.identify(Identify::new(Ident::id("gone")).set("email", "gone@x.io"))
        .unwrap();
    db.suppress(&Ident::id("gone")).unwrap();
    let report = db.verify().unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    for &family in Family::ALL {
        if matches!(family, Family::Ranges | Family::EventsByName) {
            // Retired in format 3: their tags stay reserved and nothing writes them.
            continue;
        }
        assert!(
            !db.raw_records(family).unwrap().is_empty(),
            "the fixture has no {family:?} record"
        );
    }
    db.close().unwrap();
}

/// Every read the public API offers over the fixture; returns the families the
/// `Corrupted` errors among them name.
fn read_everything(db: &ProfileDb) -> BTreeSet<&'static str> {
    let mut errors: Vec<Error> = Vec::new();
    let mut keep = |r: Result<(), Error>| {
        if let Err(e) = r {
            errors.push(e);
        }
    };
    let acme = ObjectRef::new(1, "acme");
    keep(db.people().map(drop));
    for (i, who) in people().into_iter().enumerate() {
        keep(db.person(&who).map(drop));
        keep(db.person(&Ident::email(format!("p{i}@x.io"))).map(drop));
        keep(db.profile(&who, 10).map(drop));
        keep(db.activities(&who, &ActivityFilter::new(10)).map(drop));
        keep(
            db.event_count(&who, TrackKind::Event, "bought", None, None)
                .map(drop),
        );
        keep(db.devices(&who).map(drop));
        keep(db.deliveries(&who, 10).map(drop));
        keep(db.relationships(&who).map(drop));
        keep(db.person_segments(&who).map(drop));
        keep(db.delivery(&format!("dlv-{i}")).map(drop));
        keep(db.device_owner(&format!("tok-{i}")).map(drop));
    }
    keep(db.is_suppressed(&Ident::email("gone@x.io")).map(drop));
    keep(db.is_suppressed(&Ident::id("gone")).map(drop));
    keep(db.object(&acme).map(drop));
    keep(db.object_people(&acme).map(drop));
    keep(db.object_types().map(drop));
    keep(db.anonymous_events("anon-1", 10).map(drop));
    match db.change_feed() {
        Ok(Some(status)) => keep(db.changes(status.oldest, usize::MAX).map(drop)),
        Ok(None) => {}
        Err(e) => keep(Err(e)),
    }
    for q in [
        r#"attr.plan = "pro""#,
        "attr.age > 20",
        r#"attr.email contains "x.io""#,
        // Answered from the `event_blocks` family.
        "event:bought count >= 2",
    ] {
        keep(db.query(q, 10, None).map(drop));
    }
    // The write path reads event ids (deduplication): a repeated event must be read
    // against them, and is ignored when they are sound, so this writes nothing.
    for (i, who) in people().into_iter().enumerate() {
        keep(
            db.track(Track::event(who, "bought").id(format!("ev-{i}")))
                .map(drop),
        );
    }
    errors
        .iter()
        .filter_map(|e| match e {
            Error::Corrupted { family, .. } => Some(*family),
            Error::InBatch { source, .. } => match source.as_ref() {
                Error::Corrupted { family, .. } => Some(*family),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// Families read into memory at open (catalog, bitmaps, counters): their damage is
/// detected when the database is opened.
const READ_AT_OPEN: &[Family] = &[
    Family::Meta,
    Family::Bitmaps,
    Family::Segments,
    Family::Topics,
    Family::ObjectTypes,
    Family::BitmapLog,
];

/// Opens `dir` just after its handle was dropped (sled lets go of it a moment later).
fn reopen(dir: &Path) -> Result<ProfileDb, Error> {
    builder().open(dir)
}

/// Runs `cases` seeded single-byte flips of stored values (or, with `keys`, keys: the
/// record moves to the damaged key). Value flips must be detected by a read (or at open)
/// naming the family, and by `verify`. Returns the key flips `verify` missed.
fn run_flips(keys: bool, cases: u32) -> Vec<String> {
    let template = tempfile::tempdir().unwrap();
    rich(template.path());
    let dir = template.path();
    let db = builder().open(dir).unwrap();
    let families: Records = Family::ALL
        .iter()
        .map(|&f| (f, db.raw_records(f).unwrap()))
        // A retired family (format 3's `ranges`) holds nothing to damage.
        .filter(|(_, records)| !records.is_empty())
        .collect();
    drop(db);
    let pristine = tempfile::tempdir().unwrap();
    // Open once more so sled has let go of the files before they are copied.
    builder().open(dir).unwrap().close().unwrap();
    common::copy_dir(dir, pristine.path());
    let config = Config {
        cases,
        failure_persistence: None,
        // A failing case leaves its damage behind: report it as found, unshrunk.
        max_shrink_iters: 0,
        ..Config::default()
    };
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]);
    let mut runner = TestRunner::new_with_rng(config, rng);
    let strategy = (
        0..families.len(),
        any::<prop::sample::Index>(),
        Just(keys),
        any::<prop::sample::Index>(),
        1u8..=255,
    );
    let db = std::cell::RefCell::new(Some(builder().open(dir).unwrap()));
    let missed = std::cell::RefCell::new(Vec::new());
    runner
        .run(&strategy, |(f, rec, in_key, pos, xor)| {
            let (family, recs) = &families[f];
            let family = *family;
            let (key, snapshot) = rec.get(recs).clone();
            let mut guard = db.borrow_mut();
            let handle = guard.as_ref().unwrap();
            // Damage the record as stored now: an earlier case's reads may have changed
            // it (with `event_ids` damaged, the repeated tracks in `read_everything` are
            // new events, and their `event_blocks` rows rewrite a block).
            let value = handle
                .raw_records(family)
                .unwrap()
                .into_iter()
                .find(|(k, _)| *k == key)
                .map_or(snapshot, |(_, v)| v);
            let (bad_key, bad_value) = if in_key {
                let mut k = key.clone();
                let i = pos.index(k.len());
                k[i] ^= xor;
                (k, value.clone())
            } else {
                let mut v = value.clone();
                let i = pos.index(v.len());
                v[i] ^= xor;
                (key.clone(), v)
            };
            let displaced = if in_key {
                // The record moves to the damaged key (and may land on another one).
                let there = recs.iter().find(|(k, _)| *k == bad_key).cloned();
                handle.raw_delete(family, &key).unwrap();
                handle.raw_put(family, &bad_key, &bad_value).unwrap();
                there
            } else {
                handle.raw_put(family, &key, &bad_value).unwrap();
                None
            };
            let what = format!(
                "{family:?} record {} {} byte {} ^ {xor:#04x}",
                rec.index(recs.len()),
                if in_key { "key" } else { "value" },
                pos.index(if in_key { key.len() } else { value.len() })
            );
            let report = handle.verify().unwrap();
            if in_key {
                // Reads of a moved record must still not panic.
                read_everything(handle);
                if report.is_ok() {
                    missed.borrow_mut().push(what.clone());
                }
            } else {
                prop_assert!(!report.is_ok(), "verify misses {}", what);
            }
            if !in_key {
                let mut named = read_everything(handle);
                if READ_AT_OPEN.contains(&family) && !named.contains(family.name()) {
                    // Read at open: reopen the damaged database, then put the pristine
                    // copy back.
                    *guard = None;
                    match reopen(dir) {
                        Err(Error::Corrupted { family: f, .. }) => {
                            named.insert(f);
                        }
                        Err(other) => prop_assert!(false, "{}: open failed with {}", what, other),
                        Ok(reopened) => named.extend(read_everything(&reopened)),
                    }
                    std::fs::remove_dir_all(dir).unwrap();
                    common::copy_dir(pristine.path(), dir);
                    *guard = Some(builder().open(dir).unwrap());
                }
                prop_assert!(
                    named.contains(family.name()) || UNIT_VALUES.contains(&family),
                    "no read names {} as corrupted ({:?})",
                    what,
                    named
                );
            }
            let handle = guard.as_ref().unwrap();
            if in_key {
                handle.raw_delete(family, &bad_key).unwrap();
                if let Some((k, v)) = &displaced {
                    handle.raw_put(family, k, v).unwrap();
                }
            }
            handle.raw_put(family, &key, &value).unwrap();
            let report = handle.verify().unwrap();
            prop_assert!(
                report.is_ok(),
                "not restored after {}: {:?}",
                what,
                report.problems
            );
            Ok(())
        })
        .unwrap();
    missed.into_inner()
}

/// Families whose values are empty (`()` in its envelope): reads scan their keys only,
/// so damage to the envelope changes nothing a read returns; `verify` reports it.
/// Anonymous people's relationships have no read in the public API (they are moved to
/// a person when the anonymous id is identified): `verify` is their check.
const UNIT_VALUES: &[Family] = &[Family::Members, Family::AnonRelationships];

#[test]
fn a_flipped_byte_in_any_value_is_detected_on_read_and_by_verify() {
    assert!(run_flips(false, 96).is_empty());
}

/// The envelope's checksum covers the family and key as well as the value (format 2),
/// so a flipped key byte — which moves an intact value to another valid-looking key —
/// fails the checksum wherever the record is read, and `verify` reports it.
#[test]
fn a_flipped_byte_in_any_key_is_detected_by_verify() {
    let missed = run_flips(true, 96);
    assert!(missed.is_empty(), "verify missed {missed:#?}");
}

/// Every record of every family.
type Records = Vec<(Family, Vec<(Vec<u8>, Vec<u8>)>)>;

fn all_records(db: &ProfileDb) -> Result<Records, Error> {
    Family::ALL
        .iter()
        .map(|&f| db.raw_records(f).map(|r| (f, r)))
        .collect()
}

/// Damage below the records: sled's files truncated, zeroed, overwritten or flipped in a
/// closed database. Opening must return an error (`Open(Damaged)`, `DataLoss`,
/// `Corrupted`) or a database that is whole, or whose damage a read or `verify` reports;
/// never panic, never fewer records silently.
#[test]
fn damage_below_the_records_is_an_error_never_a_panic_or_silent_loss() {
    let pristine = tempfile::tempdir().unwrap();
    let people = 200;
    {
        let db = builder().open(pristine.path()).unwrap();
        for i in 0..people {
            db.identify(
                Identify::new(Ident::id(format!("u{i}")))
                    .set("plan", if i % 3 == 0 { "pro" } else { "free" })
                    .set("n", i),
            )
            .unwrap();
        }
        db.close().unwrap();
    }
    builder().open(pristine.path()).unwrap().close().unwrap();
    let want = all_records(&builder().open(pristine.path()).unwrap()).unwrap();
    let sled_db = pristine.path().join("sled").join("db");
    let len = std::fs::metadata(&sled_db).unwrap().len();
    let mut rng = Rng(0xD15C_0000_0000_0005);
    let (mut refused, mut whole, mut reported) = (0, 0, 0);
    let mut kinds = std::collections::BTreeMap::<String, u32>::new();
    for case in 0..48u32 {
        let scratch = tempfile::tempdir().unwrap();
        common::copy_dir(pristine.path(), scratch.path());
        let file = scratch.path().join("sled").join("db");
        let mut bytes = std::fs::read(&file).unwrap();
        let what = match case % 6 {
            0 => {
                let at = rng.below(len);
                bytes.truncate(usize::try_from(at).unwrap());
                format!("sled/db truncated to {at} of {len} bytes")
            }
            1 => {
                let at = usize::try_from(rng.below(len)).unwrap();
                let n = usize::try_from(1 + rng.below(4096))
                    .unwrap()
                    .min(bytes.len() - at);
                bytes[at..at + n].fill(0);
                format!("sled/db zeroed at {at}..{}", at + n)
            }
            2 => {
                let at = usize::try_from(rng.below(len)).unwrap();
                let n = usize::try_from(1 + rng.below(512))
                    .unwrap()
                    .min(bytes.len() - at);
                for b in &mut bytes[at..at + n] {
                    *b = u8::try_from(rng.below(256)).unwrap();
                }
                format!("sled/db overwritten at {at}..{}", at + n)
            }
            3 | 4 => {
                let at = usize::try_from(rng.below(len)).unwrap();
                let bit = rng.below(8);
                bytes[at] ^= 1 << bit;
                format!("sled/db bit {bit} of byte {at} flipped")
            }
            _ => {
                let conf = scratch.path().join("sled").join("conf");
                let mut c = std::fs::read(&conf).unwrap();
                let at = usize::try_from(rng.below(c.len() as u64)).unwrap();
                c[at] ^= 0x20;
                std::fs::write(&conf, c).unwrap();
                format!("sled/conf byte {at} flipped")
            }
        };
        std::fs::write(&file, &bytes).unwrap();
        let outcome = std::panic::catch_unwind(|| {
            let db = match builder().open(scratch.path()) {
                Ok(db) => db,
                Err(e) => return Err(e),
            };
            let records = all_records(&db);
            let readable = db.people().map(|p| p.len());
            let verify = db.verify();
            Ok((records, readable, verify))
        });
        let outcome = outcome.unwrap_or_else(|_| panic!("{what}: a panic escaped the API"));
        match outcome {
            Err(e) => {
                refused += 1;
                let kind = match &e {
                    Error::Open(_) => "open error",
                    Error::DataLoss { .. } => "data loss",
                    Error::Corrupted { .. } => "corrupted",
                    Error::Storage(_) => "storage error",
                    _ => panic!("{what}: open failed with an unexpected error: {e}"),
                };
                *kinds.entry(kind.to_owned()).or_default() += 1;
            }
            Ok((records, readable, verify)) => {
                let intact = records.as_ref().is_ok_and(|r| *r == want);
                let damage_reported = records.is_err()
                    || readable.is_err()
                    || verify.as_ref().map_or(true, |v| !v.is_ok());
                assert!(
                    intact || damage_reported,
                    "{what}: opened with {:?} people and no error (silent loss)",
                    readable.ok()
                );
                if intact {
                    whole += 1;
                } else {
                    reported += 1;
                }
            }
        }
    }
    eprintln!(
        "corruption: 48 damaged copies: {refused} refused at open ({kinds:?}), {whole} opened \
         whole (damage in bytes sled no longer reads), {reported} opened with the damage \
         reported by reads or verify"
    );
}
