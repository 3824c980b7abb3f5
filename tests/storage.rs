//! The storage core through the public API: opening, format checks, durability, atomic
//! batches under injected faults, corruption detection, and residue after delete.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use common::all_records;
use std::path::Path;
use std::sync::Arc;

use profiledb::{
    Durability, Error, Family, Faults, Ident, Identify, ManualClock, Op, OpenError, Outcome,
    ProfileDb, StorageError, Value,
};

const T0: i64 = 1_767_225_600;

fn builder() -> profiledb::Builder {
    ProfileDb::builder().clock(Arc::new(ManualClock::new(T0)))
}

/// Every file under `dir` with its bytes, for "nothing was modified" checks.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push((
                    e.path().display().to_string(),
                    std::fs::read(e.path()).unwrap(),
                ));
            }
        }
    }
    out.sort();
    out
}

fn sample_batch() -> Vec<Op> {
    vec![
        Op::Identify(
            Identify::new(Ident::id("a"))
                .set("email", "a@x.io")
                .set("plan", "pro")
                .set("seats", 3),
        ),
        Op::Identify(Identify::new(Ident::id("b")).set("phone", "+15550001")),
        Op::Identify(Identify::new(Ident::email("a@x.io")).set("plan", "team")),
        Op::Suppress(Ident::email("spam@x.io")),
    ]
}

#[test]
fn data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = builder().open(dir.path()).unwrap();
        db.identify(Identify::new(Ident::id("a")).set("k", "v"))
            .unwrap();
    }
    let db = builder().open(dir.path()).unwrap();
    let p = db.person(&Ident::id("a")).unwrap().unwrap();
    assert_eq!(p.attributes["k"], Value::from("v"));
    // Counters survive too: the next person gets a new id.
    let out = db.identify(Identify::new(Ident::id("b"))).unwrap();
    assert_ne!(out.person(), Some(p.pid));
    assert!(db.verify().unwrap().is_ok());
}

#[test]
fn buffered_writes_are_durable_after_flush_and_after_drop() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = builder()
            .durability(Durability::Buffered)
            .open(dir.path())
            .unwrap();
        db.identify(Identify::new(Ident::id("a"))).unwrap();
        let s = db.stats().unwrap();
        assert!(s.durable_seq < s.commit_seq, "not yet durable: {s:?}");
        db.flush().unwrap();
        let s = db.stats().unwrap();
        assert_eq!(s.durable_seq, s.commit_seq);
        db.identify(Identify::new(Ident::id("b"))).unwrap();
        // dropped without flush: Drop flushes
    }
    let db = builder().open(dir.path()).unwrap();
    assert!(db.person(&Ident::id("b")).unwrap().is_some());
}

#[test]
fn flush_durability_records_each_commit_before_returning() {
    let dir = tempfile::tempdir().unwrap();
    let db = builder().open(dir.path()).unwrap();
    db.identify(Identify::new(Ident::id("a"))).unwrap();
    let s = db.stats().unwrap();
    assert_eq!(s.durable_seq, s.commit_seq);
    assert_eq!(common::commit_file_seq(dir.path()), s.commit_seq);
}

#[test]
fn a_directory_that_is_not_a_database_is_refused_unmodified() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"my files").unwrap();
    let before = snapshot(dir.path());
    let err = builder().open(dir.path()).unwrap_err();
    assert!(
        matches!(err, Error::Open(OpenError::NotADatabase { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("not a profiledb database"));
    assert_eq!(snapshot(dir.path()), before);

    // A marker that is not ours.
    std::fs::write(dir.path().join("PROFILEDB"), b"something else").unwrap();
    let before = snapshot(dir.path());
    let err = builder().open(dir.path()).unwrap_err();
    assert!(
        matches!(err, Error::Open(OpenError::NotADatabase { .. })),
        "{err}"
    );
    assert_eq!(snapshot(dir.path()), before);
}

/// `tests/fixtures/format2/db` is a 40-person demo database written by the last
/// format-2 build (`profiledb --now 1764000000 demo --people 40`).
#[test]
fn a_format_2_database_is_refused_unmodified_with_the_way_to_move_it() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format2/db");
    common::copy_dir(&fixture, dir.path());
    let err = refused_unmodified(dir.path(), 2);
    let text = err.to_string();
    assert!(
        text.contains("export") && text.contains("ingest"),
        "the refusal names the way to move it: {text}"
    );
}

/// Opens `dir`, which holds a database in format `found`: the open must fail with
/// `UnsupportedFormat` and leave every file as it was. Returns the error.
fn refused_unmodified(dir: &Path, found: u32) -> Error {
    let before = snapshot(dir);
    let err = builder().open(dir).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Open(OpenError::UnsupportedFormat { found: f, supported })
                if f == found && supported == profiledb::FORMAT_VERSION
        ),
        "{err}"
    );
    assert_eq!(snapshot(dir), before);
    err
}

#[test]
fn a_newer_format_is_refused_unmodified() {
    let dir = tempfile::tempdir().unwrap();
    builder()
        .open(dir.path())
        .unwrap()
        .identify(Identify::new(Ident::id("a")))
        .unwrap();
    std::fs::write(dir.path().join("PROFILEDB"), b"profiledb\nformat 99\n").unwrap();
    refused_unmodified(dir.path(), 99);
}

#[test]
fn a_file_instead_of_a_directory_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    std::fs::write(&file, b"x").unwrap();
    let err = builder().open(&file).unwrap_err();
    assert!(matches!(err, Error::Open(OpenError::Io { .. })), "{err}");
}

#[test]
fn a_second_handle_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _db = builder().open(dir.path()).unwrap();
    let err = builder().open(dir.path()).unwrap_err();
    assert!(
        matches!(err, Error::Open(OpenError::Locked { .. })),
        "{err}"
    );
}

#[test]
fn sled_recovering_less_than_was_durable_is_data_loss() {
    let dir = tempfile::tempdir().unwrap();
    let seq = {
        let db = builder().open(dir.path()).unwrap();
        db.identify(Identify::new(Ident::id("a"))).unwrap();
        db.stats().unwrap().commit_seq
    };
    // Pretend three more commits were acknowledged durable than sled holds.
    let claimed = seq + 3;
    let mut bytes = common::commit_slot(claimed);
    bytes.extend_from_slice(&common::commit_slot(0));
    std::fs::write(dir.path().join("COMMIT"), &bytes).unwrap();

    let err = builder().open(dir.path()).unwrap_err();
    match &err {
        Error::DataLoss {
            durable_seq,
            recovered_seq,
        } => {
            assert_eq!((*durable_seq, *recovered_seq), (claimed, seq));
        }
        other => panic!("expected DataLoss, got {other}"),
    }
    assert!(err
        .to_string()
        .contains("3 acknowledged commits are missing"));

    // Salvage opens what is left, and from then on the smaller state is the durable one.
    {
        let db = builder().salvage(true).open(dir.path()).unwrap();
        assert!(db.person(&Ident::id("a")).unwrap().is_some());
        // The salvaging handle's verify says what was lost.
        let report = db.verify().unwrap();
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.contains("3 acknowledged commits missing")),
            "{report:?}"
        );
    }
    builder().open(dir.path()).unwrap();
}

#[test]
fn a_damaged_commit_file_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    drop(builder().open(dir.path()).unwrap());
    std::fs::write(dir.path().join("COMMIT"), b"garbage").unwrap();
    let err = builder().open(dir.path()).unwrap_err();
    assert!(err.is_corruption(), "{err}");
}

/// Found by the open_damaged fuzzer: sled's log truncated *and* a bit flipped in a
/// `COMMIT` slot opened with no error and fewer people, because the damaged slot was
/// skipped as if torn. A damaged slot is now an error; salvage opens anyway, says so in
/// `verify`, and rewrites the file.
#[test]
fn storage_bug_02_a_damaged_commit_slot_is_an_error_not_a_guess() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = builder().open(dir.path()).unwrap();
        for i in 0..3 {
            db.identify(Identify::new(Ident::id(format!("u{i}"))))
                .unwrap();
        }
    }
    let path = dir.path().join("COMMIT");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let err = builder().open(dir.path()).unwrap_err();
    assert!(err.is_corruption(), "{err}");
    {
        let db = builder().salvage(true).open(dir.path()).unwrap();
        assert!(db.person(&Ident::id("u2")).unwrap().is_some());
        let report = db.verify().unwrap();
        assert!(
            report.problems.iter().any(|p| p.contains("damaged COMMIT")),
            "{report:?}"
        );
    }
    let db = builder().open(dir.path()).unwrap();
    assert!(db.verify().unwrap().is_ok());
}

#[test]
fn a_flipped_byte_in_a_stored_value_is_corrupted_not_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let db = builder().open(dir.path()).unwrap();
    db.identify(Identify::new(Ident::id("a")).set("plan", "pro"))
        .unwrap();
    for family in [Family::People, Family::Attributes, Family::Identifiers] {
        let (key, value) = db.raw_records(family).unwrap().remove(0);
        for pos in 0..value.len() {
            let mut bad = value.clone();
            bad[pos] ^= 0x10;
            db.raw_put(family, &key, &bad).unwrap();
            let err = db.person(&Ident::id("a")).unwrap_err();
            match &err {
                Error::Corrupted { family: f, .. } => assert_eq!(*f, family.name()),
                other => panic!("byte {pos} of {family:?}: expected Corrupted, got {other}"),
            }
            let report = db.verify().unwrap();
            assert!(!report.is_ok(), "verify misses byte {pos} of {family:?}");
        }
        db.raw_put(family, &key, &value).unwrap();
    }
    assert!(db.verify().unwrap().is_ok());
    assert!(db.person(&Ident::id("a")).unwrap().is_some());
}

#[test]
fn corrupt_reads_injected_below_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::new();
    let db = builder().faults(faults.clone()).open(dir.path()).unwrap();
    let pid = db
        .identify(Identify::new(Ident::id("a")).set("k", 1))
        .unwrap()
        .person()
        .unwrap();
    faults.corrupt_reads_of(Family::Attributes, pid.0.to_be_bytes().to_vec());
    let err = db.person(&Ident::id("a")).unwrap_err();
    assert!(err.is_corruption(), "{err}");
    faults.clear();
    assert!(db.person(&Ident::id("a")).unwrap().is_some());
}

#[test]
fn failing_reads_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::new();
    let db = builder().faults(faults.clone()).open(dir.path()).unwrap();
    db.identify(Identify::new(Ident::id("a"))).unwrap();
    faults.fail_reads(true);
    let err = db.person(&Ident::id("a")).unwrap_err();
    assert!(
        matches!(err, Error::Storage(StorageError::Injected(_))),
        "{err}"
    );
    assert!(db.people().is_err());
    faults.fail_reads(false);
    // A failed read outside a write leaves the handle writable.
    db.identify(Identify::new(Ident::id("b"))).unwrap();
    // A failed read inside a write fails it and poisons the handle, as a failed write
    // does (issue 7: "an I/O error at the Nth write or read ... the handle then refuses
    // further writes until reopened"); `tests/faults.rs` runs this for every read.
    faults.fail_reads(true);
    assert!(db.identify(Identify::new(Ident::id("c"))).is_err());
    faults.fail_reads(false);
    assert!(db.person(&Ident::id("b")).unwrap().is_some());
    let err = db.identify(Identify::new(Ident::id("c"))).unwrap_err();
    assert!(matches!(err, Error::Poisoned), "{err}");
}

#[test]
fn failing_the_nth_write_of_a_batch_leaves_nothing_of_it() {
    // How many key writes does the batch make, after the same first write as below (a
    // database's first commit with an event also writes where its hour bitmaps begin)?
    let total = {
        let dir = tempfile::tempdir().unwrap();
        let faults = Faults::new();
        let db = builder().faults(faults.clone()).open(dir.path()).unwrap();
        db.identify(Identify::new(Ident::id("before")).set("k", 1))
            .unwrap();
        let before = faults.writes_seen();
        db.write_batch(&sample_batch()).unwrap();
        faults.writes_seen() - before
    };
    assert!(total >= 8, "the batch writes several families: {total}");
    for n in 1..=total {
        let dir = tempfile::tempdir().unwrap();
        let faults = Faults::new();
        {
            let db = builder().faults(faults.clone()).open(dir.path()).unwrap();
            db.identify(Identify::new(Ident::id("before")).set("k", 1))
                .unwrap();
            faults.fail_write_at(n);
            let err = db.write_batch(&sample_batch()).unwrap_err();
            assert!(
                matches!(err, Error::Storage(StorageError::Injected(_))),
                "write {n}: {err}"
            );
            // The handle refuses further writes until reopened.
            let err = db.identify(Identify::new(Ident::id("after"))).unwrap_err();
            assert!(matches!(err, Error::Poisoned), "write {n}: {err}");
            // Reads still work and show the state before the batch.
            assert!(db.person(&Ident::id("a")).unwrap().is_none());
        }
        let db = builder().open(dir.path()).unwrap();
        assert!(db.person(&Ident::id("before")).unwrap().is_some());
        for ident in [Ident::id("a"), Ident::id("b"), Ident::email("a@x.io")] {
            assert!(
                db.person(&ident).unwrap().is_none(),
                "write {n} of {total}: {ident} half-written"
            );
        }
        assert!(!db.is_suppressed(&Ident::email("spam@x.io")).unwrap());
        assert_eq!(db.stats().unwrap().people, 1);
        assert!(db.verify().unwrap().is_ok());
        // And the reopened database writes again, with fresh ids.
        db.write_batch(&sample_batch()).unwrap();
        assert_eq!(db.stats().unwrap().people, 3);
    }
}

#[test]
fn a_failed_flush_poisons_the_handle() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::new();
    let db = builder().faults(faults.clone()).open(dir.path()).unwrap();
    faults.fail_flush(true);
    let err = db.identify(Identify::new(Ident::id("a"))).unwrap_err();
    assert!(matches!(err, Error::Storage(_)), "{err}");
    faults.fail_flush(false);
    assert!(matches!(
        db.identify(Identify::new(Ident::id("b"))).unwrap_err(),
        Error::Poisoned
    ));
}

#[test]
fn delete_leaves_no_residue_in_any_family() {
    let dir = tempfile::tempdir().unwrap();
    let db = builder().open(dir.path()).unwrap();
    db.identify(Identify::new(Ident::id("keep")).set("k", 1))
        .unwrap();
    // Bitmap changes are logged; fold them so the chunks are compared.
    db.checkpoint().unwrap();
    let baseline: Vec<_> = all_records(&db)
        .into_iter()
        .filter(|(f, _, _)| *f != Family::Meta)
        .map(|(f, k, _)| (f, k))
        .collect();
    let pid = db
        .identify(
            Identify::new(Ident::id("gone"))
                .set("email", "gone@x.io")
                .set("phone", "+15550002")
                .set("anonymous_id", "anon-gone")
                .set("a", 1)
                .set("nested.b", 2),
        )
        .unwrap()
        .person()
        .unwrap();
    db.identify(Identify::new(Ident::id("gone")).set("a", 2))
        .unwrap();
    assert_eq!(
        db.delete(&Ident::id("gone")).unwrap(),
        Outcome::Deleted(pid)
    );
    db.checkpoint().unwrap();
    let after: Vec<_> = all_records(&db)
        .into_iter()
        .filter(|(f, _, _)| *f != Family::Meta)
        .map(|(f, k, _)| (f, k))
        .collect();
    assert_eq!(after, baseline, "every key of the deleted person is gone");
    for (family, k, v) in all_records(&db) {
        for needle in [&b"gone"[..], b"anon-gone", b"+15550002"] {
            assert!(
                !k.windows(needle.len()).any(|w| w == needle)
                    && !v.windows(needle.len()).any(|w| w == needle),
                "residue of the deleted person in {family:?}"
            );
        }
    }
    assert!(db.verify().unwrap().is_ok());
}

#[test]
fn suppress_leaves_only_the_suppression_records() {
    let dir = tempfile::tempdir().unwrap();
    let db = builder().open(dir.path()).unwrap();
    db.identify(
        Identify::new(Ident::id("s"))
            .set("email", "s@x.io")
            .set("k", 1),
    )
    .unwrap();
    db.suppress(&Ident::id("s")).unwrap();
    for family in [
        Family::People,
        Family::Identifiers,
        Family::Attributes,
        Family::Activity,
    ] {
        assert!(
            db.raw_records(family).unwrap().is_empty(),
            "{family:?} still holds records"
        );
    }
    assert_eq!(db.raw_records(Family::Suppressed).unwrap().len(), 2);
}

#[test]
fn readers_run_while_a_writer_writes() {
    let dir = tempfile::tempdir().unwrap();
    let db = builder()
        .durability(Durability::Buffered)
        .open(dir.path())
        .unwrap();
    let writer = {
        let db = db.clone();
        std::thread::spawn(move || {
            for i in 0..200 {
                let id = format!("u{i}");
                db.write_batch(&[
                    Op::Identify(Identify::new(Ident::id(id.clone())).set("n", i)),
                    Op::Identify(Identify::new(Ident::id(id)).set("email", format!("u{i}@x.io"))),
                ])
                .unwrap();
            }
        })
    };
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let db = db.clone();
            std::thread::spawn(move || {
                for i in 0..200 {
                    // A person is either absent or whole: both ops of a batch or neither.
                    if let Some(p) = db.person(&Ident::id(format!("u{i}"))).unwrap() {
                        assert_eq!(p.attributes["n"], Value::Int(i));
                        assert_eq!(p.email, Some(format!("u{i}@x.io")));
                    }
                }
            })
        })
        .collect();
    writer.join().unwrap();
    for r in readers {
        r.join().unwrap();
    }
    assert_eq!(db.stats().unwrap().people, 200);
}

/// Bug: sled releases its file lock only after its background threads let go, so a
/// reopen right after dropping a handle (poisoned or not) could fail as `Locked`.
#[test]
fn storage_bug_01_reopen_right_after_drop_was_locked() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..20 {
        let faults = Faults::new();
        let db = builder().faults(faults.clone()).open(dir.path()).unwrap();
        if i % 2 == 0 {
            faults.fail_write_at(1);
            assert!(db.identify(Identify::new(Ident::id("x"))).is_err());
        } else {
            db.identify(Identify::new(Ident::id(format!("p{i}"))))
                .unwrap();
        }
    }
    let db = builder().open(dir.path()).unwrap();
    assert_eq!(db.stats().unwrap().people, 10);
}

/// Checkpoints (sled closed and reopened under a live handle, so its next open replays
/// little) lose nothing, keep the handle working, and leave a database that verifies.
#[test]
fn checkpoints_under_a_live_handle_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = builder()
        .durability(Durability::Buffered)
        .checkpoint_bytes(16 << 10)
        .open(dir.path())
        .unwrap();
    db.define_topic(1, "News", true).unwrap();
    db.create_segment("pro", Some(r#"attr.plan = "pro""#))
        .unwrap();
    for n in 0..60 {
        let ops = profiledb::synth::person_ops(n, profiledb::synth::SEED, T0);
        db.write_batch(&ops).unwrap();
    }
    let stats = db.stats().unwrap();
    assert!(stats.checkpoints >= 3, "{stats:?}");
    // A checkpoint makes everything before it durable.
    assert!(stats.durable_seq > 0, "{stats:?}");
    let before = common::records(&db);
    let pro = db.count(r#"segment:"pro""#).unwrap();
    assert!(db.verify().unwrap().is_ok());
    drop(db);
    let db = builder().open(dir.path()).unwrap();
    assert_eq!(common::records(&db), before);
    assert_eq!(db.count(r#"segment:"pro""#).unwrap(), pro);
    assert!(db.verify().unwrap().is_ok());
}

#[test]
fn checkpoint_on_demand_makes_everything_durable() {
    let dir = tempfile::tempdir().unwrap();
    let db = builder()
        .durability(Durability::Buffered)
        .checkpoint_bytes(0)
        .open(dir.path())
        .unwrap();
    for n in 0..5 {
        db.write_batch(&profiledb::synth::person_ops(n, 7, T0))
            .unwrap();
    }
    assert_eq!(db.stats().unwrap().checkpoints, 0, "0 turns them off");
    let before = common::records_but_bitmaps(&db);
    assert!(db.checkpoint().unwrap());
    let s = db.stats().unwrap();
    assert_eq!((s.checkpoints, s.durable_seq), (1, s.commit_seq));
    assert_eq!(common::commit_file_seq(dir.path()), s.commit_seq);
    // The bitmap log was folded into the chunks; every other record is unchanged.
    assert!(db.raw_records(Family::BitmapLog).unwrap().is_empty());
    assert_eq!(common::records_but_bitmaps(&db), before);
    // The handle goes on writing and reading over the reopened store.
    db.identify(Identify::new(Ident::id("after")).set("k", 1))
        .unwrap();
    assert!(db.person(&Ident::id("after")).unwrap().is_some());
    assert!(db.verify().unwrap().is_ok());
}

/// A checkpoint that cannot make the data durable fails the write that triggered it
/// and poisons the handle, as a failed flush does; the commit itself stands and is
/// there on reopen.
#[test]
fn a_failed_checkpoint_poisons_the_handle_and_keeps_the_commit() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::new();
    let db = builder()
        .durability(Durability::Buffered)
        .checkpoint_bytes(1)
        .faults(faults.clone())
        .open(dir.path())
        .unwrap();
    faults.fail_flush(true);
    let err = db.identify(Identify::new(Ident::id("a"))).unwrap_err();
    assert!(matches!(err, Error::Storage(_)), "{err}");
    assert!(matches!(
        db.identify(Identify::new(Ident::id("b"))).unwrap_err(),
        Error::Poisoned
    ));
    assert!(matches!(db.checkpoint().unwrap_err(), Error::Poisoned));
    faults.fail_flush(false);
    drop(db);
    let db = builder().open(dir.path()).unwrap();
    assert!(db.person(&Ident::id("a")).unwrap().is_some());
    assert!(db.person(&Ident::id("b")).unwrap().is_none());
}

/// sled's snapshot files, by name (`snap.<log position>`).
fn snapshots(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("sled"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("snap."))
        .collect();
    names.sort();
    names
}

/// Closing after enough writing checkpoints, so sled's snapshot on disk moves past the
/// session's log and the next open replays almost nothing; with checkpoints off it stays
/// where the open left it.
#[test]
fn close_checkpoints_after_enough_writing() {
    for (every, moves) in [(64 << 10, true), (0, false)] {
        let dir = tempfile::tempdir().unwrap();
        drop(builder().open(dir.path()).unwrap());
        let db = builder()
            .durability(Durability::Buffered)
            .checkpoint_bytes(every)
            .open(dir.path())
            .unwrap();
        let at_open = snapshots(dir.path());
        for n in 0..12 {
            db.write_batch(&profiledb::synth::person_ops(n, 3, T0))
                .unwrap();
        }
        assert_eq!(db.stats().unwrap().checkpoints, 0, "below the interval");
        let before = common::records_but_bitmaps(&db);
        db.close().unwrap();
        let at_close = snapshots(dir.path());
        assert_eq!(at_close != at_open, moves, "{at_open:?} then {at_close:?}");
        let db = builder().open(dir.path()).unwrap();
        // A checkpoint at close folds the bitmap log (verify checks the bitmaps).
        assert_eq!(common::records_but_bitmaps(&db), before);
        assert!(db.verify().unwrap().is_ok());
    }
}

/// Builds of format 3 from before `events_by_name` was retired wrote one key per tracked
/// event under tag 7. `verify` reports such a key as damage; the next open deletes them
/// all (derived data nothing reads), leaving everything else as it was.
#[test]
fn an_open_drops_the_retired_events_by_name_keys_of_an_earlier_format_3_build() {
    let dir = tempfile::tempdir().unwrap();
    let db = builder().open(dir.path()).unwrap();
    db.track(profiledb::Track::event(Ident::id("a"), "purchase"))
        .unwrap();
    db.checkpoint().unwrap();
    let counts = db.counts().unwrap();
    let before = all_records(&db);
    // 10,001 leftover keys: more than one batch of the cleanup.
    for n in 0..10_001u32 {
        let mut key = n.to_be_bytes().to_vec();
        key.extend_from_slice(b"\x01\x00\x08purchase");
        db.raw_put(Family::EventsByName, &key, b"\x02\x00\x00\x00\x00")
            .unwrap();
    }
    let report = db.verify().unwrap();
    assert!(
        report.problems.iter().any(|p| p.contains("events_by_name")),
        "{:?}",
        report.problems
    );
    drop(db);
    let db = builder().open(dir.path()).unwrap();
    assert!(db.raw_records(Family::EventsByName).unwrap().is_empty());
    assert_eq!(all_records(&db), before);
    assert_eq!(db.counts().unwrap(), counts);
    assert!(db.verify().unwrap().is_ok());
}
