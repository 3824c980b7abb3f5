//! Crash-kill recovery: a child process writes with `Durability::Flush`, printing each
//! operation's number once the call has returned; the parent kills it with SIGKILL at
//! seeded random moments, reopens the database, and checks that every acknowledged
//! operation is there, that no operation is there in part, and that `verify` passes;
//! then a new child goes on writing to the same database.
//!
//! The child is this test binary itself, re-run on the test `crash_child` with
//! `PROFILEDB_CRASH_CHILD` set (without it that test does nothing). After sled's
//! kill -9 tests (`tests/test_crash_recovery.rs` in sled 0.34).
//!
//! The child checkpoints every few operations, so some kills land while sled is being
//! closed and reopened under the handle; and it compacts the database every
//! [`COMPACT_EVERY`] operations, so some land in the middle of a compaction (while the
//! copy is written, around the exchange of the directories, while the old files go).
//!
//! `PROFILEDB_CRASH_KILLS=300 cargo test --release --test crash -- --nocapture` runs 300
//! kills instead of 10 and prints the counts.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use common::Rng;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use profiledb::{
    ChangeFeed, ChangeKind, Cursor, Durability, Ident, Identify, ManualClock, Op, ProfileDb, Track,
    TrackKind, Value,
};

const CHILD_ENV: &str = "PROFILEDB_CRASH_CHILD";
const START_ENV: &str = "PROFILEDB_CRASH_START";
const T0: i64 = 1_767_225_600;
const SEGMENT: &str = "crash-written";

/// A checkpoint (sled closed and reopened) every few operations, so kills land inside
/// checkpoints too.
fn builder() -> profiledb::Builder {
    ProfileDb::builder()
        .clock(Arc::new(ManualClock::new(T0)))
        .durability(Durability::Flush)
        .checkpoint_bytes(16 << 10)
        .change_feed(Some(ChangeFeed::default()))
}

/// A consumer of the change feed kept across the kills: the people it was told of and
/// the counter's `last` as the feed said. It resumes from its cursor after each
/// reopen; a change seen twice or missed shows as a disagreement with the database.
struct Consumer {
    cursor: Cursor,
    people: BTreeMap<u32, String>,
    counter: Option<u32>,
    last: Option<Value>,
}

impl Consumer {
    fn catch_up(&mut self, db: &ProfileDb, round: u64) {
        loop {
            let page = db
                .changes(self.cursor, 1000)
                .unwrap_or_else(|e| panic!("round {round}: reading the feed failed: {e}"));
            for c in page.changes {
                match c.kind {
                    ChangeKind::PersonCreated {
                        person,
                        identifiers,
                        ..
                    } => {
                        let id = identifiers.id.unwrap_or_default();
                        if id == "counter" {
                            self.counter = Some(person.0);
                        }
                        let again = self.people.insert(person.0, id);
                        assert!(again.is_none(), "round {round}: a person created twice");
                    }
                    ChangeKind::AttributeChanged {
                        person, name, new, ..
                    } if Some(person.0) == self.counter && name == "last" => self.last = new,
                    _ => {}
                }
            }
            self.cursor = page.next;
            if !page.more {
                return;
            }
        }
    }
}

fn person(k: u64) -> Ident {
    Ident::id(format!("p{k}"))
}

/// Operation `k`: a new person with three attributes, an event, a manual-segment
/// addition, and the `counter` person's `last` attribute set to `k`: all of it, or none.
fn operation(k: u64, segment: u32) -> Vec<Op> {
    let n = i64::try_from(k).unwrap();
    vec![
        Op::Identify(
            Identify::new(person(k))
                .set("a", n)
                .set("b", n * 2)
                .set("c", format!("v{k}")),
        ),
        Op::Track(Track::event(person(k), "op").property("k", n)),
        Op::AddToSegment {
            segment,
            people: vec![person(k)],
        },
        Op::Identify(Identify::new(Ident::id("counter")).set("last", n)),
    ]
}

fn segment_id(db: &ProfileDb) -> u32 {
    db.segments()
        .into_iter()
        .find(|s| s.name == SEGMENT)
        .map(|s| s.id)
        .unwrap()
}

/// The child compacts the database after every this many operations.
const COMPACT_EVERY: u64 = 20;

/// The child: writes operations from `PROFILEDB_CRASH_START` on until it is killed.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let start: u64 = std::env::var(START_ENV).unwrap().parse().unwrap();
    let db = builder().open(&dir).unwrap();
    let segment = segment_id(&db);
    println!("OPEN");
    for k in start.. {
        db.write_batch(&operation(k, segment)).unwrap();
        // Rust's stdout is line-buffered: the line leaves the process with the newline.
        println!("ACK {k}");
        if k % COMPACT_EVERY == COMPACT_EVERY - 1 {
            db.compact().unwrap();
        }
    }
}

/// What one operation left behind, part by part.
#[derive(Debug, PartialEq, Eq)]
struct Parts {
    person: bool,
    attributes: bool,
    event: bool,
    segment: bool,
}

impl Parts {
    fn all(&self) -> bool {
        self.person && self.attributes && self.event && self.segment
    }
    fn none(&self) -> bool {
        !self.person && !self.attributes && !self.event && !self.segment
    }
}

fn parts(db: &ProfileDb, k: u64, segment: u32) -> Parts {
    let n = i64::try_from(k).unwrap();
    let p = db.person(&person(k)).unwrap();
    let attributes = p.as_ref().is_some_and(|p| {
        p.attributes.get("a") == Some(&Value::Int(n))
            && p.attributes.get("b") == Some(&Value::Int(n * 2))
            && p.attributes.get("c") == Some(&Value::from(format!("v{k}")))
    });
    let (event, in_segment) = if p.is_some() {
        (
            db.event_count(&person(k), TrackKind::Event, "op", None, None)
                .unwrap()
                == 1,
            db.person_segments(&person(k))
                .unwrap()
                .iter()
                .any(|s| s.id == segment),
        )
    } else {
        (false, false)
    };
    Parts {
        person: p.is_some(),
        attributes,
        event,
        segment: in_segment,
    }
}

/// Runs one child from operation `start`, kills it after `delay` (counted from its first
/// acknowledgement when `after_first_ack`), and returns the operations it acknowledged.
fn run_child(dir: &Path, start: u64, delay: Duration, after_first_ack: bool) -> Vec<u64> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .env(START_ENV, start.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut acks = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(k) = line.strip_prefix("ACK ") {
                acks.push(k.parse::<u64>().unwrap());
                let _ = tx.send(());
            }
        }
        acks
    });
    if after_first_ack {
        // Wait (boundedly) for the child to be writing, then a little more.
        let _ = rx.recv_timeout(Duration::from_secs(30));
    }
    std::thread::sleep(delay);
    // `Child::kill` is SIGKILL on Unix: no destructor, no flush, no exit handler runs.
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the child ended on its own ({status}) instead of being killed"
    );
    reader.join().unwrap()
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let kills: u64 = std::env::var("PROFILEDB_CRASH_KILLS")
        .ok()
        .map_or(10, |s| s.parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let (segment, mut consumer) = {
        let db = builder().open(dir.path()).unwrap();
        let consumer = Consumer {
            cursor: db.change_cursor().unwrap(),
            people: BTreeMap::new(),
            counter: None,
            last: None,
        };
        (db.create_segment(SEGMENT, None).unwrap(), consumer)
    };
    let started = Instant::now();
    let mut rng = Rng(0x5EED_C4A5_0000_0007);
    let mut next = 1u64; // the next operation a child starts with
    let (mut acked_total, mut lost, mut half, mut in_flight_applied) = (0u64, 0u64, 0u64, 0u64);
    let mut killed_before_first_ack = 0u64;
    for round in 0..kills {
        // Half the kills land at any moment from the start (while opening and
        // recovering, too); half once the child is writing.
        let after_first_ack = rng.below(2) == 0;
        let delay = Duration::from_millis(if after_first_ack {
            rng.below(150)
        } else {
            rng.below(400)
        });
        let acks = run_child(dir.path(), next, delay, after_first_ack);
        let expected: Vec<u64> = (next..next + acks.len() as u64).collect();
        assert_eq!(
            acks, expected,
            "round {round}: acknowledgements out of order"
        );
        if acks.is_empty() {
            killed_before_first_ack += 1;
        }
        acked_total += acks.len() as u64;
        let acked_upto = acks.last().copied().unwrap_or(next - 1);

        let db = builder()
            .open(dir.path())
            .unwrap_or_else(|e| panic!("round {round}: reopening after SIGKILL failed: {e}"));
        // A compaction the kill interrupted is settled by the open: its copy (or, after
        // the exchange, the old files) is gone.
        assert!(
            !dir.path().join("sled.new").exists(),
            "round {round}: the open left a compaction's sled.new behind"
        );
        for k in next..=acked_upto + 1 {
            let p = parts(&db, k, segment);
            if k <= acked_upto && !p.all() {
                eprintln!("round {round}: acknowledged operation {k} lost: {p:?}");
                lost += 1;
            }
            if !p.all() && !p.none() {
                eprintln!("round {round}: operation {k} half applied: {p:?}");
                half += 1;
            }
        }
        // The operation in flight at the kill may have landed whole; nothing after it.
        let applied_upto = if parts(&db, acked_upto + 1, segment).all() {
            in_flight_applied += 1;
            acked_upto + 1
        } else {
            acked_upto
        };
        assert!(db.person(&person(applied_upto + 1)).unwrap().is_none());
        let counter = db.person(&Ident::id("counter")).unwrap();
        let last = counter.map(|c| c.attributes["last"].clone());
        let want = (applied_upto > 0).then(|| Value::Int(i64::try_from(applied_upto).unwrap()));
        assert_eq!(last, want, "round {round}: the counter disagrees");
        // Every operation so far, plus the counter person.
        assert_eq!(
            db.stats().unwrap().people,
            applied_upto + u64::from(applied_upto > 0)
        );
        let report = db.verify().unwrap();
        assert!(report.is_ok(), "round {round}: {:?}", report.problems);
        // The feed's consumer, resuming from where it stopped, agrees with the database.
        consumer.catch_up(&db, round);
        assert_eq!(
            consumer.people.len() as u64,
            applied_upto + u64::from(applied_upto > 0),
            "round {round}: the feed's consumer knows another number of people"
        );
        assert_eq!(
            consumer.last, want,
            "round {round}: the feed's counter disagrees"
        );
        db.close().unwrap();
        next = applied_upto + 1;
    }
    eprintln!(
        "crash: {kills} kills ({killed_before_first_ack} before the child's first \
         acknowledgement), {acked_total} acknowledged operations, {lost} lost, {half} half \
         applied, {in_flight_applied} unacknowledged in-flight operations found whole, \
         {} operations in the database, {:.1} s",
        next - 1,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(lost, 0, "acknowledged operations were lost");
    assert_eq!(half, 0, "operations were half applied");
    assert!(acked_total > 0, "no child ever acknowledged a write");
}
