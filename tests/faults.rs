//! Fault injection through the storage seam, for every N across a representative batch:
//! the Nth key write fails, or the Nth read fails, or the flush fails. Each time the call
//! fails with a typed storage error, the handle refuses further writes
//! (`Error::Poisoned`) until reopened, and the reopened database holds exactly what it
//! held before the call, record for record in every family (after SQLite's I/O-error
//! tests and redb's fuzzer with a failing backend). `tests/storage.rs` has the simpler
//! cases (one small batch, the poisoning rule, corrupt reads).
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use common::{records, Records};
use std::path::Path;
use std::sync::Arc;

use profiledb::{
    Channel, DeviceInput, Durability, Error, Family, Faults, Ident, Identify, ManualClock, Metric,
    NewDelivery, ObjectRef, Op, Platform, ProfileDb, StorageError, Track, Value,
};

const T0: i64 = 1_767_225_600;

fn builder() -> profiledb::Builder {
    ProfileDb::builder()
        .clock(Arc::new(ManualClock::new(T0)))
        .durability(Durability::Buffered)
}

/// Which families differ, for a readable failure.
fn differing(a: &Records, b: &Records) -> Vec<Family> {
    a.iter()
        .zip(b)
        .filter(|(x, y)| x != y)
        .map(|(x, _)| x.0)
        .collect()
}

const PROS: &str = "pros";
const VIP: &str = "vip";

/// The state the batch runs against: an indexed attribute, a data-driven and a manual
/// segment, an object, and a person in the manual segment.
fn setup(dir: &Path) {
    let db = builder().open(dir).unwrap();
    db.index_attribute("plan").unwrap();
    db.create_segment(PROS, Some(r#"attr.plan = "pro""#))
        .unwrap();
    let vip = db.create_segment(VIP, None).unwrap();
    db.define_object_type(1, "company").unwrap();
    db.identify_object(
        &ObjectRef::new(1, "acme"),
        vec![("name".into(), "Acme".into())],
    )
    .unwrap();
    db.identify(Identify::new(Ident::id("old")).set("plan", "free"))
        .unwrap();
    db.add_to_segment(vip, &[Ident::id("old")]).unwrap();
    db.close().unwrap();
}

/// Several people with attributes, an event, a device, a delivery and its metric, a
/// relationship, manual segment changes both ways, and data-driven segment entries.
fn batch(db: &ProfileDb) -> Vec<Op> {
    let vip = db
        .segments()
        .into_iter()
        .find(|s| s.name == VIP)
        .unwrap()
        .id;
    vec![
        Op::Identify(
            Identify::new(Ident::id("a"))
                .set("email", "a@x.io")
                .set("plan", "pro")
                .set("seats", 3),
        ),
        Op::Identify(
            Identify::new(Ident::id("b"))
                .set("phone", "+15550001")
                .set("plan", "free"),
        ),
        Op::Identify(Identify::new(Ident::id("old")).set("plan", "pro")),
        Op::Track(Track::event(Ident::id("a"), "signed_up").property("via", "web")),
        Op::AddDevice {
            person: Ident::id("a"),
            device: DeviceInput::new("tok-a", Platform::Ios),
        },
        Op::AddDelivery {
            person: Ident::id("a"),
            delivery: NewDelivery::new("dlv-1", Channel::Email).subject("Hi"),
        },
        Op::Metric(Metric::new("dlv-1", "opened")),
        Op::AddRelationship {
            person: Ident::id("a"),
            object: ObjectRef::new(1, "acme"),
            attributes: vec![("role".into(), Value::from("admin"))],
        },
        Op::AddToSegment {
            segment: vip,
            people: vec![Ident::id("a"), Ident::id("b")],
        },
        Op::RemoveFromSegment {
            segment: vip,
            people: vec![Ident::id("old")],
        },
    ]
}

/// The storage error behind `e`, looking through `InBatch`.
fn storage_error(e: &Error) -> Option<&StorageError> {
    match e {
        Error::Storage(s) => Some(s),
        Error::InBatch { source, .. } => storage_error(source),
        _ => None,
    }
}

/// The records before and after the batch on a healthy disk, and how many key writes
/// and reads the batch makes.
fn reference() -> (Records, Records, u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let faults = Faults::new();
    let db = builder().faults(faults.clone()).open(dir.path()).unwrap();
    let before = records(&db);
    let ops = batch(&db);
    let (w0, r0) = (faults.writes_seen(), faults.reads_seen());
    db.write_batch(&ops).unwrap();
    let (writes, reads) = (faults.writes_seen() - w0, faults.reads_seen() - r0);
    let after = records(&db);
    assert!(db.verify().unwrap().is_ok());
    // The batch really does touch what it claims to.
    for family in [
        Family::People,
        Family::Attributes,
        Family::Activity,
        Family::Devices,
        Family::Deliveries,
        Family::Relationships,
        Family::Members,
        Family::BitmapLog,
    ] {
        let i = Family::ALL.iter().position(|f| *f == family).unwrap();
        assert_ne!(before[i], after[i], "the batch does not write {family:?}");
    }
    (before, after, writes, reads)
}

/// Opens `dir` with `faults`, checks it holds exactly `before`, then runs the batch with
/// `arm` having armed a fault: the batch must fail with an injected storage error and
/// leave the handle poisoned, its reads still showing `before`.
fn fail_once(dir: &Path, before: &Records, what: &str, arm: &dyn Fn(&Faults)) {
    let faults = Faults::new();
    let db = builder().faults(faults.clone()).open(dir).unwrap();
    let now = records(&db);
    assert!(
        now == *before,
        "{what}: reopened after the previous failure, families {:?} differ from before it",
        differing(&now, before)
    );
    let ops = batch(&db);
    arm(&faults);
    let err = db.write_batch(&ops).unwrap_err();
    assert!(
        matches!(storage_error(&err), Some(StorageError::Injected(_))),
        "{what}: expected the injected storage error, got {err}"
    );
    faults.clear();
    for attempt in [
        db.write_batch(&ops).map(|_| ()),
        db.identify(Identify::new(Ident::id("later"))).map(|_| ()),
        db.flush(),
    ] {
        // flush() of a poisoned handle with nothing new to flush is a no-op; writes
        // must be refused.
        if let Err(e) = attempt {
            assert!(matches!(e, Error::Poisoned), "{what}: {e}");
        }
    }
    assert!(
        matches!(
            db.identify(Identify::new(Ident::id("later"))),
            Err(Error::Poisoned)
        ),
        "{what}: the handle still writes after the failure"
    );
    let now = records(&db);
    assert!(
        now == *before,
        "{what}: the failed call changed families {:?}",
        differing(&now, before)
    );
}

#[test]
fn the_nth_write_or_read_of_a_batch_fails_it_whole_and_poisons_the_handle() {
    let (before, after, writes, reads) = reference();
    assert!(writes >= 20, "a representative batch: {writes} key writes");
    assert!(reads >= 10, "a representative batch: {reads} reads");
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    for n in 1..=writes {
        fail_once(
            dir.path(),
            &before,
            &format!("write {n} of {writes}"),
            &|f| f.fail_write_at(n),
        );
    }
    for n in 1..=reads {
        fail_once(dir.path(), &before, &format!("read {n} of {reads}"), &|f| {
            f.fail_read_at(n)
        });
    }
    // After every failure, the database is whole and the batch applies as it would have.
    let db = builder().open(dir.path()).unwrap();
    assert!(records(&db) == before);
    assert!(db.verify().unwrap().is_ok());
    db.write_batch(&batch(&db)).unwrap();
    let now = records(&db);
    assert!(
        now == after,
        "families {:?} differ from the healthy run",
        differing(&now, &after)
    );
    eprintln!("faults: failed each of {writes} key writes and {reads} reads of the batch");
}

/// A failed flush leaves the batch's outcome unknown (as a failed fsync does anywhere):
/// the records are either all of the batch or none of it, never part, and the handle is
/// poisoned. With the injected fault sled's own background flush usually still writes
/// the batch out, so "all of it" is what reopening shows; both are accepted.
#[test]
fn a_failed_flush_poisons_and_leaves_the_batch_whole_or_absent() {
    let (before, after, _, _) = reference();
    for durability in [Durability::Flush, Durability::Buffered] {
        let dir = tempfile::tempdir().unwrap();
        setup(dir.path());
        let faults = Faults::new();
        {
            let db = builder()
                .durability(durability)
                .faults(faults.clone())
                .open(dir.path())
                .unwrap();
            let ops = batch(&db);
            faults.fail_flush(true);
            let err = match durability {
                Durability::Flush => db.write_batch(&ops).unwrap_err(),
                _ => {
                    db.write_batch(&ops).unwrap();
                    db.flush().unwrap_err()
                }
            };
            assert!(
                matches!(err, Error::Storage(StorageError::Injected(_))),
                "{durability:?}: {err}"
            );
            faults.clear();
            assert!(matches!(
                db.identify(Identify::new(Ident::id("later"))),
                Err(Error::Poisoned)
            ));
        }
        let db = builder().open(dir.path()).unwrap();
        let now = records(&db);
        assert!(
            now == before || now == after,
            "{durability:?}: part of the batch: families {:?} differ from before, {:?} from after",
            differing(&now, &before),
            differing(&now, &after)
        );
        assert!(db.verify().unwrap().is_ok());
        eprintln!(
            "faults: failed flush ({durability:?}): reopened with the batch {}",
            if now == after { "whole" } else { "absent" }
        );
    }
}
