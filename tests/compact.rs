//! Compaction (`ProfileDb::compact`, `profiledb compact`): the files are rewritten to
//! hold only the live records, every record survives byte for byte, the database goes on
//! working, and an interrupted compaction leaves a whole database that the next open
//! settles. (`tests/crash.rs` kills its child in the middle of compactions too.)
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use std::sync::Arc;

use common::all_records;
use profiledb::{
    Error, Faults, Ident, Identify, ManualClock, OpenError, ProfileDb, Track, TrackKind, Value,
};

const T0: i64 = 1_767_225_600;

fn builder() -> profiledb::Builder {
    ProfileDb::builder().clock(Arc::new(ManualClock::new(T0)))
}

/// 300 people, each rewritten 20 times: most of what sled logged is dead. Ends with a
/// checkpoint, so that the records compared before and after a compaction (which folds
/// the bitmap log first) are those it copies.
fn churn(db: &ProfileDb) {
    for round in 0..20i64 {
        let ops: Vec<_> = (0..300)
            .map(|n| {
                profiledb::Op::Identify(
                    Identify::new(Ident::id(format!("p{n}")))
                        .set("email", format!("p{n}@x.io"))
                        .set("round", round)
                        .set("note", "x".repeat(200)),
                )
            })
            .collect();
        db.write_batch(&ops).unwrap();
    }
    for n in 0..50 {
        db.track(Track::event(Ident::id(format!("p{n}")), "signup").property("n", n))
            .unwrap();
    }
    // The bitmap log folded into its chunks, as a compaction would first.
    db.checkpoint().unwrap();
}

#[test]
fn compaction_keeps_every_record_and_shrinks_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let db = builder().open(dir.path()).unwrap();
    churn(&db);
    db.checkpoint().unwrap();
    let before = all_records(&db);
    let stats = db.stats().unwrap();

    let done = db.compact().unwrap().unwrap();
    assert_eq!(done.bytes_before, stats.size_on_disk);
    assert!(
        done.bytes_after < done.bytes_before,
        "compaction did not shrink the files: {done:?}"
    );
    assert_eq!(db.stats().unwrap().size_on_disk, done.bytes_after);
    assert!(!dir.path().join("sled.new").exists());
    assert_eq!(all_records(&db), before, "a record changed in compaction");
    assert!(db.verify().unwrap().is_ok());

    // The handle goes on: writes land, are durable, and survive a reopen.
    db.identify(Identify::new(Ident::id("after")).set("plan", "pro"))
        .unwrap();
    db.flush().unwrap();
    let seq = db.stats().unwrap().commit_seq;
    assert_eq!(db.stats().unwrap().durable_seq, seq);
    drop(db);
    let db = builder().open(dir.path()).unwrap();
    assert_eq!(db.stats().unwrap().commit_seq, seq);
    let p = db.person(&Ident::id("after")).unwrap().unwrap();
    assert_eq!(p.attributes.get("plan"), Some(&Value::from("pro")));
    assert_eq!(
        db.event_count(&Ident::id("p7"), TrackKind::Event, "signup", None, None)
            .unwrap(),
        1
    );
    assert_eq!(db.counts().unwrap().people, 301);
    assert!(db.verify().unwrap().is_ok());
}

#[test]
fn an_open_removes_what_an_interrupted_compaction_left_and_keeps_the_database_whole() {
    // A crash before the exchange: `sled.new` is a copy, perhaps partial, beside the
    // database it copies.
    let dir = tempfile::tempdir().unwrap();
    let db = builder().open(dir.path()).unwrap();
    churn(&db);
    let records = all_records(&db);
    drop(db);
    common::copy_dir(&dir.path().join("sled"), &dir.path().join("sled.new"));
    std::fs::write(dir.path().join("sled.new").join("db"), b"torn").unwrap();
    let db = builder().open(dir.path()).unwrap();
    assert!(!dir.path().join("sled.new").exists());
    assert_eq!(all_records(&db), records);
    assert!(db.verify().unwrap().is_ok());

    // A crash after the exchange: `sled` is the compacted copy and `sled.new` the old
    // files.
    let old = tempfile::tempdir().unwrap();
    db.flush().unwrap();
    drop(db);
    common::copy_dir(&dir.path().join("sled"), old.path());
    let db = builder().open(dir.path()).unwrap();
    db.compact().unwrap().unwrap();
    drop(db);
    common::copy_dir(old.path(), &dir.path().join("sled.new"));
    let db = builder().open(dir.path()).unwrap();
    assert!(!dir.path().join("sled.new").exists());
    assert_eq!(all_records(&db), records);
    assert!(db.verify().unwrap().is_ok());
}

#[test]
fn a_second_open_is_refused_while_a_handle_holds_the_database() {
    // The database's own lock (on `PROFILEDB`) is held for the handle's life: a second
    // open never runs the cleanup that would remove a compaction's copy in progress.
    let dir = tempfile::tempdir().unwrap();
    let db = builder().open(dir.path()).unwrap();
    churn(&db);
    std::fs::create_dir(dir.path().join("sled.new")).unwrap();
    std::fs::write(dir.path().join("sled.new").join("db"), b"in progress").unwrap();
    match builder().open(dir.path()) {
        Err(Error::Open(OpenError::Locked { .. })) => {}
        Err(other) => panic!("expected Locked, got {other}"),
        Ok(_) => panic!("a second handle opened a locked database"),
    }
    assert!(dir.path().join("sled.new").join("db").exists());
    // The holder's own compaction replaces the leftover with its copy, then removes it.
    db.compact().unwrap().unwrap();
    assert!(!dir.path().join("sled.new").exists());
    assert!(db.verify().unwrap().is_ok());
    // Once the handle is gone, the database opens again.
    drop(db);
    let db = builder().open(dir.path()).unwrap();
    assert!(db.verify().unwrap().is_ok());
}

#[test]
fn readers_in_other_threads_never_deadlock_a_compaction() {
    // Reads that scan and read inside the scan (the people list, verify) run throughout;
    // the compaction waits for a moment between them and never blocks them for good.
    let dir = tempfile::tempdir().unwrap();
    let db = builder().open(dir.path()).unwrap();
    churn(&db);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (db, stop) = (db.clone(), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    db.people().unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();
    let (tx, rx) = std::sync::mpsc::channel();
    let compactor = {
        let db = db.clone();
        std::thread::spawn(move || {
            let done = db.compact();
            tx.send(()).unwrap();
            done
        })
    };
    let finished = rx.recv_timeout(std::time::Duration::from_secs(60));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(
        finished.is_ok(),
        "the compaction did not finish within 60 s"
    );
    // It ran, or gave up after its 10 s wait: either way nothing hung and nothing changed
    // what the database holds.
    compactor.join().unwrap().unwrap();
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    assert_eq!(db.counts().unwrap().people, 300);
    assert!(db.verify().unwrap().is_ok());
}

#[test]
fn a_failed_compaction_changes_nothing_and_the_handle_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::new();
    let db = builder().faults(faults.clone()).open(dir.path()).unwrap();
    churn(&db);
    let records = all_records(&db);
    faults.fail_flush(true);
    assert!(matches!(db.compact(), Err(Error::Storage(_))));
    faults.fail_flush(false);
    assert!(!dir.path().join("sled.new").exists());
    assert_eq!(all_records(&db), records);
    db.identify(Identify::new(Ident::id("x"))).unwrap();
    db.flush().unwrap();
    drop(db);
    let db = builder().open(dir.path()).unwrap();
    assert!(db.person(&Ident::id("x")).unwrap().is_some());
    assert!(db.verify().unwrap().is_ok());
}

#[test]
fn a_small_database_never_grows_and_keeps_its_records() {
    // A fresh database of a few records: a fresh sled copy is no smaller, and is dropped
    // (or, with sled's sizes in whole segments, no larger).
    let dir = tempfile::tempdir().unwrap();
    let db = builder().open(dir.path()).unwrap();
    db.identify(Identify::new(Ident::id("only")).set("plan", "pro"))
        .unwrap();
    db.checkpoint().unwrap();
    let records = all_records(&db);
    // The files never grow (sled counts its files in whole segments, so the two may be
    // equal whether or not the copy replaced them).
    let done = db.compact().unwrap().unwrap();
    assert!(done.bytes_after <= done.bytes_before, "{done:?}");
    assert_eq!(db.stats().unwrap().size_on_disk, done.bytes_after);
    assert!(!dir.path().join("sled.new").exists());
    assert_eq!(all_records(&db), records);
    db.identify(Identify::new(Ident::id("next"))).unwrap();
    assert!(db.verify().unwrap().is_ok());
}
