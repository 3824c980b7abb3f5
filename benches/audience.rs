//! Audience speed on a large synthetic workspace (`profiledb::synth`).
//!
//! Run with `cargo bench --bench audience` (set `PROFILEDB_BENCH_PEOPLE`, default
//! 1,000,000; building the database takes minutes and a few GB of disk). Printed once:
//! - ingest rate of the synthetic people with and without 50 data-driven segments
//!   defined (on a separate database of `PEOPLE / 10` people, each way);
//! - time to create 50 segments (initial membership) on the full database;
//! - time of `refresh` (10 clock-dependent segments) an hour later (typical) and three
//!   days later (most members leave: the worst case);
//! - time to open the database (bitmaps loaded).
//!
//! Criterion measures: a count over 3 and 5 bitmap atoms, a count with a per-person
//! atom, and one person's segment list.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: failing loudly is right

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use profiledb::{synth, Durability, Ident, ManualClock, Op, ProfileDb};

const NOW: i64 = 1_767_225_600;

fn open(dir: &std::path::Path, clock: &ManualClock) -> ProfileDb {
    ProfileDb::builder()
        .durability(Durability::Buffered)
        .cache_bytes(512 << 20)
        .clock(std::sync::Arc::new(clock.clone()))
        .open(dir)
        .expect("open")
}

fn ingest(db: &ProfileDb, people: u64) -> Duration {
    let start = Instant::now();
    let mut ops: Vec<Op> = Vec::new();
    for n in 0..people {
        ops.extend(synth::person_ops(n, synth::SEED, NOW));
        if ops.len() >= 2000 {
            db.write_batch(&ops).expect("batch");
            ops.clear();
        }
    }
    db.write_batch(&ops).expect("batch");
    db.flush().expect("flush");
    start.elapsed()
}

fn define(db: &ProfileDb, segments: usize) -> Duration {
    for (id, name, default) in synth::topics() {
        db.define_topic(id, &name, default).expect("topic");
    }
    let start = Instant::now();
    for (name, cond) in synth::segments(segments) {
        db.create_segment(&name, Some(&cond)).expect("segment");
    }
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    let people: u64 = std::env::var("PROFILEDB_BENCH_PEOPLE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let clock = ManualClock::new(NOW);

    // Ingest overhead of maintaining 50 data-driven segments.
    let small = (people / 10).max(1000);
    let plain = {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = open(dir.path(), &clock);
        for (id, name, default) in synth::topics() {
            db.define_topic(id, &name, default).expect("topic");
        }
        ingest(&db, small)
    };
    let with_segments = {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = open(dir.path(), &clock);
        define(&db, 50);
        ingest(&db, small)
    };
    eprintln!(
        "ingest of {small} people: {:.0} people/s without segments, {:.0} people/s with 50 \
         data-driven segments ({:+.0}% time)",
        small as f64 / plain.as_secs_f64(),
        small as f64 / with_segments.as_secs_f64(),
        (with_segments.as_secs_f64() / plain.as_secs_f64() - 1.0) * 100.0
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path(), &clock);
    let built = ingest(&db, people);
    eprintln!(
        "built {people} people in {:.1} s ({:.0} people/s)",
        built.as_secs_f64(),
        people as f64 / built.as_secs_f64()
    );
    let created = define(&db, 50);
    eprintln!("created 50 segments in {:.2} s", created.as_secs_f64());
    clock.advance(3_600);
    let start = Instant::now();
    let report = db.refresh().expect("refresh");
    eprintln!(
        "refresh an hour later, {} clock-dependent segments: {:.2} s ({} entered, {} exited)",
        report.segments,
        start.elapsed().as_secs_f64(),
        report.entered,
        report.exited
    );
    clock.advance(3 * 86_400);
    let start = Instant::now();
    let report = db.refresh().expect("refresh");
    eprintln!(
        "refresh three days later (mass exit), {} segments: {:.2} s ({} entered, {} exited)",
        report.segments,
        start.elapsed().as_secs_f64(),
        report.entered,
        report.exited
    );
    db.flush().expect("flush");
    let path = dir.path().to_path_buf();
    drop(db);
    // How much of opening is sled's own recovery: open its directory alone first.
    let start = Instant::now();
    let raw = sled::Config::new()
        .path(path.join("sled"))
        .cache_capacity(512 << 20)
        .open()
        .expect("sled");
    eprintln!("sled alone opens in {:.3} s", start.elapsed().as_secs_f64());
    drop(raw);
    let start = Instant::now();
    let db = open(&path, &clock);
    eprintln!(
        "open with bitmaps loaded: {:.3} s; {} bytes on disk",
        start.elapsed().as_secs_f64(),
        db.stats().expect("stats").size_on_disk
    );

    let mut g = c.benchmark_group("audience");
    g.sample_size(50);
    let three = r#"topic:3 and not unsubscribed and related:1"#;
    let five = r#"segment:"Segment 00" and topic:3 and not unsubscribed and (related:1 or device.platform = "ios")"#;
    eprintln!(
        "count(3 atoms) = {}, count(5 atoms) = {}",
        db.count(three).expect("count"),
        db.count(five).expect("count")
    );
    g.bench_function("count_3_bitmap_atoms", |b| {
        b.iter(|| db.count(three).expect("count"))
    });
    g.bench_function("count_5_bitmap_atoms", |b| {
        b.iter(|| db.count(five).expect("count"))
    });
    let scan = r#"segment:"Segment 00" and attr.age > 60"#;
    g.bench_function("count_with_per_person_atom", |b| {
        b.iter(|| db.count(scan).expect("count"))
    });
    let who = Ident::id(synth::person_id(people / 2));
    g.bench_function("person_segment_list", |b| {
        b.iter(|| db.person_segments(&who).expect("segments"))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
