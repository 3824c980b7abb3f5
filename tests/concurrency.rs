//! Concurrency stress: reader threads run profile reads and audience queries while a
//! writer ingests. The writer moves each person up through levels 1..=3, each message
//! setting `level` and `mirror` (not indexed) and `tier` (indexed, a bitmap) together.
//! Readers check, continuously:
//! - one person read is one commit: `level == mirror`, and `tier` agrees with `level`;
//! - one query is one snapshot of bitmaps and data: `attr.tier = "t3"` (a bitmap) and
//!   `attr.level = 3` (a scan of the data) never disagree inside one condition;
//! - bitmaps never run ahead of or behind the data across calls: levels only rise, so
//!   `count(tier t3)` ≤ people read with level 3 ≤ a later `count(tier t3)`;
//! - every person a query returns reads back in the tier it was counted in.
//!
//! Nothing deadlocks (a watchdog bounds the run) and the final state equals the model's.
//! `tests/storage.rs` `readers_run_while_a_writer_writes` is the simpler two-attribute
//! version without bitmaps.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use profiledb::{Durability, Ident, ManualClock, ProfileDb, Value};

const PEOPLE: usize = 40;
const LEVELS: i64 = 3;
const READERS: usize = 3;

fn tier(level: i64) -> String {
    format!("t{level}")
}

fn message(person: usize, level: i64) -> String {
    format!(
        r#"{{"type":"person","action":"identify","identifiers":{{"id":"u{person}"}},"attributes":{{"level":{level},"mirror":{level},"tier":"{}"}}}}"#,
        tier(level)
    )
}

/// One reader pass; returns how many checks it made.
fn check_once(db: &ProfileDb, rng: &mut u64) -> u64 {
    let mut checks = 0;
    // One person, one commit.
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    let who = Ident::id(format!("u{}", *rng % PEOPLE as u64));
    if let Some(p) = db.person(&who).unwrap() {
        let level = p.attributes["level"].clone();
        assert_eq!(p.attributes["mirror"], level, "{who}: half a commit");
        let Value::Int(n) = level else {
            panic!("{who}: level {level:?}")
        };
        assert_eq!(p.attributes["tier"], Value::from(tier(n)), "{who}");
        checks += 1;
    }
    // One query, one snapshot: the bitmap and the scan agree.
    for n in 1..=LEVELS {
        let t = tier(n);
        for q in [
            format!(r#"attr.tier = "{t}" and not attr.level = {n}"#),
            format!(r#"attr.level = {n} and not attr.tier = "{t}""#),
        ] {
            assert_eq!(db.count(&q).unwrap(), 0, "{q}: bitmap and data disagree");
            checks += 1;
        }
    }
    // Across calls: levels only rise, so bitmap ≤ data ≤ later bitmap.
    let top = format!(r#"attr.tier = "{}""#, tier(LEVELS));
    let before = db.count(&top).unwrap();
    let data = db
        .people()
        .unwrap()
        .iter()
        .filter(|p| p.attributes.get("level") == Some(&Value::Int(LEVELS)))
        .count() as u64;
    let after = db.count(&top).unwrap();
    assert!(
        before <= data && data <= after,
        "bitmap {before}, data {data}, bitmap again {after}"
    );
    // Whoever a query returns reads back in that tier (levels never fall).
    for person in db.query(&top, 5, None).unwrap().people {
        let p = db
            .person(&Ident::id(person.id.clone().unwrap()))
            .unwrap()
            .unwrap();
        assert_eq!(p.attributes["level"], Value::Int(LEVELS));
    }
    checks + 2
}

#[test]
fn readers_never_see_bitmaps_disagree_with_data_while_a_writer_ingests() {
    let checkpoints = ingest_under_readers(0);
    assert_eq!(checkpoints, 0);
}

/// The same with a checkpoint every few commits: sled is closed and reopened under the
/// readers again and again.
#[test]
fn readers_run_through_checkpoints() {
    let checkpoints = ingest_under_readers(4 << 10);
    // How many find a moment with no read in progress depends on the scheduler.
    assert!(checkpoints >= 1, "{checkpoints} checkpoints");
}

/// Runs the writer and the readers; returns how many checkpoints the handle ran.
fn ingest_under_readers(checkpoint_bytes: u64) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let db = ProfileDb::builder()
        .clock(Arc::new(ManualClock::new(1_767_225_600)))
        .durability(Durability::Buffered)
        .checkpoint_bytes(checkpoint_bytes)
        .open(dir.path())
        .unwrap();
    db.index_attribute("tier").unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let checks = Arc::new(AtomicU64::new(0));
    let (tx, rx) = std::sync::mpsc::channel::<&'static str>();

    // The model: the order of messages is fixed; each person ends at level LEVELS.
    let mut order = Vec::new();
    for level in 1..=LEVELS {
        for person in 0..PEOPLE {
            order.push((person, level));
        }
    }
    let writer = {
        let (db, done, tx) = (db.clone(), done.clone(), tx.clone());
        std::thread::spawn(move || {
            for (n, (person, level)) in order.into_iter().enumerate() {
                let r = db.ingest_str(&message(person, level)).unwrap();
                assert_eq!(r.applied, 1, "{:?}", r.rejected);
                if checkpoint_bytes > 0 && n % 30 == 29 {
                    // Besides the automatic ones: this one retries for up to a second.
                    db.checkpoint().unwrap();
                }
            }
            done.store(true, Ordering::SeqCst);
            tx.send("writer").unwrap();
        })
    };
    let readers: Vec<_> = (0..READERS)
        .map(|i| {
            let (db, done, checks, tx) = (db.clone(), done.clone(), checks.clone(), tx.clone());
            std::thread::spawn(move || {
                let mut rng = 0x9E37_79B9_7F4A_7C15_u64 + i as u64;
                // At least a few passes, and on until the writer is done.
                let mut passes = 0;
                while passes < 3 || !done.load(Ordering::SeqCst) {
                    checks.fetch_add(check_once(&db, &mut rng), Ordering::Relaxed);
                    passes += 1;
                }
                tx.send("reader").unwrap();
            })
        })
        .collect();
    drop(tx);
    // The watchdog: every thread reports within the bound, or the run has deadlocked
    // (or a thread panicked: its join below says which).
    let deadline = Instant::now() + Duration::from_secs(60);
    for _ in 0..=READERS {
        let left = deadline.saturating_duration_since(Instant::now());
        if rx.recv_timeout(left).is_err() {
            assert!(
                writer.is_finished() && readers.iter().all(|r| r.is_finished()),
                "deadlock: threads still running after 60 s"
            );
            break;
        }
    }
    writer.join().unwrap();
    for r in readers {
        r.join().unwrap();
    }
    // The final state is the model's.
    for person in 0..PEOPLE {
        let p = db
            .person(&Ident::id(format!("u{person}")))
            .unwrap()
            .unwrap();
        assert_eq!(p.attributes["level"], Value::Int(LEVELS));
        assert_eq!(p.attributes["mirror"], Value::Int(LEVELS));
    }
    assert_eq!(
        db.count(&format!(r#"attr.tier = "{}""#, tier(LEVELS)))
            .unwrap(),
        PEOPLE as u64
    );
    for level in 1..LEVELS {
        assert_eq!(
            db.count(&format!(r#"attr.tier = "{}""#, tier(level)))
                .unwrap(),
            0
        );
    }
    assert_eq!(db.stats().unwrap().people, PEOPLE as u64);
    assert!(db.verify().unwrap().is_ok());
    let stats = db.stats().unwrap();
    eprintln!(
        "concurrency: {} messages, {READERS} readers made {} checks, {} checkpoints",
        PEOPLE as i64 * LEVELS,
        checks.load(Ordering::Relaxed),
        stats.checkpoints
    );
    stats.checkpoints
}

/// Indexes built while a writer writes miss nothing: `create_segment` (which gives a
/// compared attribute its ordered index), `index_attribute_range` and `index_attribute`
/// read every person and commit under one writer lock, so a write cannot land between
/// the read and the commit and stay out of the index for good.
#[test]
fn indexes_built_while_a_writer_writes_miss_nobody() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(
        ProfileDb::builder()
            .clock(Arc::new(ManualClock::new(1_767_225_600)))
            .durability(Durability::Buffered)
            .open(dir.path())
            .unwrap(),
    );
    let writer = {
        let db = Arc::clone(&db);
        std::thread::spawn(move || {
            for i in 0..400u32 {
                db.identify(
                    profiledb::Identify::new(Ident::id(format!("p{i}")))
                        .set("score", i64::from(i % 20))
                        .set("rank", i64::from(i % 7))
                        .set("plan", if i % 2 == 0 { "pro" } else { "free" }),
                )
                .unwrap();
            }
        })
    };
    db.create_segment("high", Some("attr.score > 5")).unwrap();
    db.index_attribute_range("rank").unwrap();
    db.index_attribute("plan").unwrap();
    writer.join().unwrap();
    let report = db.verify().unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    // 400 people, scores 0..20 and ranks 0..7 in turn.
    assert_eq!(db.count("attr.score > 5").unwrap(), 280);
    assert_eq!(db.count("segment:high").unwrap(), 280);
    assert_eq!(db.count("attr.rank >= 3").unwrap(), 228);
    assert_eq!(db.count(r#"attr.plan = "pro""#).unwrap(), 200);
}
