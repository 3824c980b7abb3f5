//! The memory budget (`Builder::memory_budget`): sled's page cache sized from what the
//! in-memory bitmaps leave, at open, at every reopen of sled, and after a commit that
//! grew the bitmaps past it; `ProfileDb::memory` reports both.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::path::Path;
use std::sync::Arc;

use profiledb::{
    Durability, Error, Faults, Ident, InputReason, ManualClock, MemoryUse, Op, ProfileDb, Track,
    CACHE_FLOOR,
};

const T0: i64 = 1_767_225_600;
const MIB: u64 = 1 << 20;

fn builder() -> profiledb::Builder {
    ProfileDb::builder()
        .clock(Arc::new(ManualClock::new(T0)))
        .durability(Durability::Buffered)
}

/// People `from..to`, each tracking an event of a name of their own: two bitmaps each
/// (who ever tracked the name, and who did in that hour), so the bitmaps grow by a few
/// hundred bytes a person.
fn add_people(db: &ProfileDb, from: u32, to: u32) {
    let ops: Vec<Op> = (from..to)
        .map(|n| {
            Op::Track(Track::event(
                Ident::id(format!("p{n}")),
                format!("event_{n}"),
            ))
        })
        .collect();
    for chunk in ops.chunks(2_000) {
        db.write_batch(chunk).unwrap();
    }
}

fn fits(memory: MemoryUse) {
    let budget = memory.budget.unwrap();
    assert!(
        memory.total() <= budget,
        "{memory:?} passes its budget of {budget}"
    );
    assert!(memory.cache_bytes >= CACHE_FLOOR, "{memory:?}");
}

fn db_with_people(dir: &Path, people: u32) -> u64 {
    let db = builder().open(dir).unwrap();
    add_people(&db, 0, people);
    let bitmaps = db.memory().bitmap_bytes;
    db.close().unwrap();
    bitmaps
}

#[test]
fn a_budget_bounds_the_cache_and_the_bitmaps_together() {
    let dir = tempfile::tempdir().unwrap();
    let bitmaps = db_with_people(dir.path(), 8_000);
    assert!(
        bitmaps > 2 * MIB && bitmaps < 3 * MIB,
        "the test wants 2 to 3 MiB of bitmaps, has {bitmaps}"
    );

    // No budget: the cache as `cache_bytes` says.
    let db = builder().cache_bytes(8 * MIB).open(dir.path()).unwrap();
    let memory = db.memory();
    assert_eq!(memory.budget, None);
    assert_eq!(memory.cache_bytes, 8 * MIB);
    assert_eq!(
        memory.bitmap_bytes, bitmaps,
        "the count kept by commits is the count at open"
    );
    assert!(!memory.over_budget());
    db.close().unwrap();

    // A roomy budget: sled opens with half of it, which fits beside the bitmaps; the
    // next checkpoint gives the cache what they leave.
    let db = builder().memory_budget(64 * MIB).open(dir.path()).unwrap();
    assert_eq!(db.memory().cache_bytes, 32 * MIB);
    fits(db.memory());
    assert!(db.checkpoint().unwrap());
    assert_eq!(db.memory().cache_bytes, 64 * MIB - bitmaps - 4 * MIB);
    fits(db.memory());
    db.close().unwrap();

    // A tight one: half of it beside the bitmaps passes it, so the open reopens sled
    // with the cache they leave (4 MiB less the bitmaps, less a sixteenth).
    let budget = 4 * MIB;
    let db = builder().memory_budget(budget).open(dir.path()).unwrap();
    fits(db.memory());
    assert_eq!(db.memory().cache_bytes, budget - bitmaps - budget / 16);
    assert_eq!(
        db.person(&Ident::id("p7")).unwrap().unwrap().id.as_deref(),
        Some("p7")
    );
    assert_eq!(db.count("event:event_7000").unwrap(), 1);
    assert!(db.verify().unwrap().is_ok());
    db.close().unwrap();

    // One the bitmaps alone fill: the cache keeps its floor, and the report says so.
    let db = builder().memory_budget(2 * MIB).open(dir.path()).unwrap();
    let memory = db.memory();
    assert_eq!(memory.cache_bytes, CACHE_FLOOR);
    assert!(memory.over_budget());
    assert_eq!(db.count("event:event_1").unwrap(), 1);
    db.close().unwrap();
}

#[test]
fn bitmaps_that_grow_past_the_budget_shrink_the_cache_at_the_next_commit() {
    let dir = tempfile::tempdir().unwrap();
    let budget = 6 * MIB;
    let db = builder().memory_budget(budget).open(dir.path()).unwrap();
    // A new database: no bitmaps, sled opened with half the budget.
    assert_eq!(db.memory().cache_bytes, 3 * MIB);
    let mut people = 0;
    let mut shrunk = false;
    while people < 16_000 {
        add_people(&db, people, people + 2_000);
        people += 2_000;
        let memory = db.memory();
        // Each commit that passes the budget checkpoints: the cache is back within it
        // when the write returns.
        assert!(
            !memory.over_budget() || memory.cache_bytes == CACHE_FLOOR,
            "{memory:?} after {people} people"
        );
        shrunk |= memory.cache_bytes < 3 * MIB;
    }
    assert!(
        shrunk,
        "the bitmaps never grew past the budget: {:?}",
        db.memory()
    );
    assert_eq!(db.count("event:event_15999").unwrap(), 1);
    assert!(db.verify().unwrap().is_ok());
    db.close().unwrap();
}

#[test]
fn a_budget_under_the_least_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let err = builder().memory_budget(MIB).open(dir.path()).unwrap_err();
    match &err {
        Error::Input(e) => {
            assert_eq!(e.field, "memory_budget");
            assert!(matches!(e.reason, InputReason::Invalid(_)));
        }
        other => panic!("expected an input error, got {other:?}"),
    }
    assert!(err.to_string().contains("the least is 2097152"), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn a_checkpoint_that_cannot_run_defers_the_shrink_and_a_later_commit_does_it() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::new();
    let db = builder()
        .faults(faults.clone())
        .memory_budget(4 * MIB)
        .open(dir.path())
        .unwrap();
    // As when a read in progress holds the store: sled cannot reopen, the bitmaps pass
    // the budget and the cache stays.
    faults.busy_checkpoints(true);
    add_people(&db, 0, 10_000);
    let memory = db.memory();
    assert!(memory.over_budget(), "{memory:?}");
    assert_eq!(memory.cache_bytes, 2 * MIB);
    faults.busy_checkpoints(false);
    // The commit after the last refused try waits 64 commits before trying again.
    let mut n = 10_000;
    while db.memory().cache_bytes == 2 * MIB {
        assert!(n < 10_000 + 65, "no shrink after {} commits", n - 10_000);
        add_people(&db, n, n + 1);
        n += 1;
    }
    assert!(n > 10_000 + 1, "tried again at once");
    let memory = db.memory();
    assert!(!memory.over_budget(), "{memory:?}");
    assert!(db.verify().unwrap().is_ok());
    db.close().unwrap();
}
