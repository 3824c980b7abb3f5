//! Audiences and segments, profiledb against the SQLite peer (`benches/peer/`), on the
//! synth workload.
//!
//! Run with `cargo bench --bench audience`. Both engines hold
//! `PROFILEDB_BENCH_PEOPLE` synthetic people (default 50 000) with the workload's 50
//! data-driven segments (10 of them clock-dependent) and the same attribute indexes.
//! Printed once per engine: the time to create the 50 segments and each query's count
//! (which must agree). Criterion measures, for both engines in the same group:
//! - `audience/*`: counts over bitmap atoms only (3 and 5 atoms), mixed with an event
//!   condition, and with an indexed attribute (the queries of `peer::AUDIENCES`);
//! - `audience/segment_list`: one person's segments;
//! - `refresh/hourly`: `refresh` of the clock-dependent segments, the clock one hour
//!   later each iteration; both engines take the same 11 steps (NOW + 1 h … NOW + 11 h,
//!   the first a warm-up), one refresh per sample, and must agree on every step;
//! - `open/open_and_count`: opening the closed database and answering the first
//!   audience count (profiledb loads every bitmap while opening).
//!
//! The full-scale version of these numbers is `cargo bench --bench peer_scale`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: failing loudly is right

mod peer;

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode};
use peer::{Engine, Kind, AUDIENCES, NOW, SEGMENTS};
use profiledb::synth;

/// Samples of `refresh/hourly`, one refresh each (plus one warm-up refresh): both engines
/// step through the same clocks, NOW + 1 h to NOW + (1 + this) h.
const REFRESH_SAMPLES: usize = 10;

fn build(kind: Kind, people: u64) -> (tempfile::TempDir, Box<dyn Engine>) {
    let dir = peer::tempdir();
    let mut e = peer::open(kind, dir.path(), 256 << 20);
    peer::populate(&mut *e, people, synth::SEED);
    let start = Instant::now();
    peer::define_segments(&mut *e, SEGMENTS);
    eprintln!(
        "{}: {people} people; {SEGMENTS} segments created in {:.2} s",
        kind.name(),
        start.elapsed().as_secs_f64()
    );
    e.flush();
    (dir, e)
}

fn bench(c: &mut Criterion) {
    let people = peer::people_from_env(50_000);
    let mut engines: Vec<(Kind, tempfile::TempDir, Box<dyn Engine>)> =
        [Kind::Profiledb, Kind::Sqlite]
            .into_iter()
            .map(|k| {
                let (dir, e) = build(k, people);
                (k, dir, e)
            })
            .collect();
    for (label, cond) in AUDIENCES {
        let counts: Vec<u64> = engines.iter_mut().map(|(_, _, e)| e.count(cond)).collect();
        eprintln!("{label}: `{cond}` = {counts:?} (profiledb, SQLite)");
        assert!(
            counts.iter().all(|c| Some(c) == counts.first()),
            "the engines disagree"
        );
    }

    let mut g = c.benchmark_group("audience");
    g.sample_size(20).measurement_time(Duration::from_secs(3));
    let cases = [
        "count_3_bitmap_atoms",
        "count_5_bitmap_atoms",
        "count_with_event",
        "count_with_indexed_attr",
    ];
    for (case, (_, cond)) in cases.into_iter().zip(AUDIENCES) {
        for (kind, _, e) in engines.iter_mut() {
            g.bench_function(BenchmarkId::new(case, kind.name()), |b| {
                b.iter(|| e.count(cond))
            });
        }
    }
    let who = synth::person_id(people / 2);
    for (kind, _, e) in engines.iter_mut() {
        g.bench_function(BenchmarkId::new("segment_list", kind.name()), |b| {
            b.iter(|| e.segment_list(&who))
        });
    }
    g.finish();

    // `refresh` changes the state it runs on (the clock moves forward, people leave the
    // windows), so both engines must take exactly the same steps: criterion would run the
    // faster engine for more iterations and so to a later clock, where the windows have
    // emptied. The group's times are the smallest criterion accepts, so it takes one
    // warm-up iteration and then one iteration per sample, for either engine and whatever
    // `--warm-up-time` / `--measurement-time` say (a group's settings win over them);
    // the steps taken are checked to be the same below.
    let mut g = c.benchmark_group("refresh");
    g.sample_size(REFRESH_SAMPLES)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_nanos(1))
        .measurement_time(Duration::from_nanos(1));
    let mut steps: Vec<Vec<(i64, (u64, u64))>> = Vec::new();
    for (kind, _, e) in engines.iter_mut() {
        let mut taken = Vec::new();
        let mut now = NOW;
        g.bench_function(BenchmarkId::new("hourly", kind.name()), |b| {
            b.iter(|| {
                now += 3600;
                e.set_now(now);
                let changes = e.refresh();
                taken.push((now, changes));
                changes
            })
        });
        if !taken.is_empty() {
            steps.push(taken); // empty when a filter left this engine out
        }
    }
    g.finish();
    eprintln!(
        "refresh/hourly steps (clock, (entered, exited)): {:?}",
        steps.first()
    );
    assert!(
        steps.iter().all(|s| Some(s) == steps.first()),
        "the engines were refreshed at different clocks or disagree: {steps:?}"
    );

    let mut g = c.benchmark_group("open");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .measurement_time(Duration::from_secs(10));
    let first = AUDIENCES.first().map_or("all", |(_, cond)| cond);
    for (kind, dir, e) in engines {
        drop(e); // closed as an application would close it
        let mut open: Option<Box<dyn Engine>> = None;
        g.bench_function(BenchmarkId::new("open_and_count", kind.name()), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    open = None; // the previous iteration's handle closes, untimed
                    let start = Instant::now();
                    let mut e = peer::open(kind, dir.path(), 256 << 20);
                    e.count(first);
                    spent += start.elapsed();
                    open = Some(e);
                }
                spent
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
