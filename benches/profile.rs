//! Track throughput and profile-overview latency.
//!
//! Run with `cargo bench --bench profile`. Cases:
//! - `track/single`: one `track` call per event (`Durability::Buffered`), 3 properties;
//! - `track/batch_1000`: 1000 `Op::Track` per `write_batch`;
//! - `profile/overview`: `ProfileDb::profile` (all seven parts, 20 most recent activities
//!   and deliveries) for a person with 200 events, 20 deliveries, 3 devices and 5
//!   relationships, in a database of 100,000 people (set `PROFILEDB_BENCH_PEOPLE` to
//!   change the size), read again and again (warm);
//! - `profile/person`: `ProfileDb::person` for the same person, for scale.
//!
//! - `profile_peer/*`: profiledb against the SQLite peer (`benches/peer/`) on the synth
//!   workload (`PROFILEDB_BENCH_PEOPLE` people, default 20 000, plus one person with 200
//!   events, 20 deliveries, 3 devices, 5 relationships):
//!   - `overview_heavy`: the overview of that person, read again and again (warm);
//!   - `overview_typical_warm`: the overview of one typical person, read again and again;
//!   - `timeline_page_50`: a timeline page of 50 of the heavy person (warm);
//!   - `overview_typical_cold`: the overview of a different random typical person every
//!     iteration, the engine reopened (its page cache empty) every 64 reads; the
//!     operating system's page cache is not dropped.
//!
//! Inputs are deterministic (counters, fixed values). The database lives in a fresh
//! temporary directory.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: failing loudly is right

mod peer;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{
    criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use profiledb::{
    Channel, DeviceInput, Durability, Ident, Identify, Metric, NewDelivery, ObjectRef, Op,
    Platform, ProfileDb, Track,
};

/// Page cache of each engine in `profile_peer`.
const CACHE: u64 = 64 << 20;

/// Cold overview reads between two reopens of the engine in
/// `profile_peer/overview_typical_cold`: few enough that the pages they share stay rare.
const COLD_READS_PER_OPEN: u64 = 64;

fn open(dir: &std::path::Path) -> ProfileDb {
    ProfileDb::builder()
        .durability(Durability::Buffered)
        .open(dir)
        .expect("open")
}

fn event(n: u64) -> Track {
    Track::event(Ident::id(format!("user-{}", n % 1000)), "purchase")
        .property("amount", (n % 500) as i64)
        .property("currency", "EUR")
        .property("sku", format!("sku-{}", n % 97))
}

fn bench_track(c: &mut Criterion) {
    let mut g = c.benchmark_group("track");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path());
    // The people exist already: tracking measures events, not creation.
    let ops: Vec<Op> = (0..1000)
        .map(|n| Op::Identify(Identify::new(Ident::id(format!("user-{n}")))))
        .collect();
    db.write_batch(&ops).expect("people");
    let mut n = 0u64;
    g.throughput(Throughput::Elements(1));
    g.bench_function("single", |b| {
        b.iter(|| {
            n += 1;
            db.track(event(n)).expect("track")
        })
    });
    g.throughput(Throughput::Elements(1000));
    g.bench_function("batch_1000", |b| {
        b.iter_batched(
            || {
                (0..1000)
                    .map(|_| {
                        n += 1;
                        Op::Track(event(n))
                    })
                    .collect::<Vec<_>>()
            },
            |ops| db.write_batch(&ops).expect("batch"),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn populate(db: &ProfileDb, people: u64) {
    for start in (0..people).step_by(1000) {
        let ops: Vec<Op> = (start..(start + 1000).min(people))
            .map(|n| {
                Op::Identify(
                    Identify::new(Ident::id(format!("p-{n}")))
                        .set("email", format!("p{n}@example.com"))
                        .set("plan", if n % 3 == 0 { "pro" } else { "free" })
                        .set("age", (n % 70) as i64),
                )
            })
            .collect();
        db.write_batch(&ops).expect("populate");
    }
    let who = Ident::id("heavy");
    let mut ops = vec![Op::Identify(
        Identify::new(who.clone())
            .set("email", "heavy@example.com")
            .set("plan", "pro"),
    )];
    for i in 0..200 {
        ops.push(Op::Track(
            Track::event(who.clone(), format!("event-{}", i % 10))
                .property("i", i)
                .timestamp(1_700_000_000 + i),
        ));
    }
    for i in 0..20 {
        let id = format!("dlv-{i}");
        ops.push(Op::AddDelivery {
            person: who.clone(),
            delivery: NewDelivery::new(id.clone(), Channel::Email)
                .subject("Hello")
                .created(1_700_000_000 + i),
        });
        ops.push(Op::Metric(Metric::new(id, "opened")));
    }
    for i in 0..3 {
        ops.push(Op::AddDevice {
            person: who.clone(),
            device: DeviceInput::new(format!("tok-{i}"), Platform::Ios),
        });
    }
    for i in 0..5 {
        ops.push(Op::AddRelationship {
            person: who.clone(),
            object: ObjectRef::new(1, format!("org-{i}")),
            attributes: vec![("role".into(), "member".into())],
        });
    }
    db.write_batch(&ops).expect("heavy person");
    db.flush().expect("flush");
}

fn bench_profile(c: &mut Criterion) {
    let people: u64 = std::env::var("PROFILEDB_BENCH_PEOPLE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path());
    populate(&db, people);
    let who = Ident::email("heavy@example.com");
    let p = db.profile(&who, 20).expect("profile").expect("exists");
    assert_eq!(p.activities.len(), 20);
    assert_eq!(p.deliveries.len(), 20);
    assert_eq!(p.devices.len(), 3);
    assert_eq!(p.relationships.len(), 5);
    let mut g = c.benchmark_group("profile");
    g.sample_size(50);
    g.throughput(Throughput::Elements(1));
    g.bench_function("overview", |b| {
        b.iter(|| db.profile(&who, 20).expect("profile"))
    });
    g.bench_function("person", |b| b.iter(|| db.person(&who).expect("person")));
    g.finish();
    eprintln!(
        "profile bench database: {people} people, {} bytes on disk",
        db.stats().expect("stats").size_on_disk
    );
}

fn bench_profile_peer(c: &mut Criterion) {
    let people = peer::people_from_env(20_000);
    let typical = profiledb::synth::person_id(people / 3);
    for kind in [peer::Kind::Profiledb, peer::Kind::Sqlite] {
        let dir = peer::tempdir();
        let mut e = peer::open(kind, dir.path(), CACHE);
        peer::populate(&mut *e, people, profiledb::synth::SEED);
        peer::define_segments(&mut *e, peer::SEGMENTS);
        e.ingest_batch(&peer::Batch::of(peer::heavy_person(peer::NOW)));
        e.flush();

        let mut g = c.benchmark_group("profile_peer");
        g.sample_size(50);
        g.throughput(Throughput::Elements(1));
        g.bench_function(BenchmarkId::new("overview_heavy", kind.name()), |b| {
            b.iter(|| e.profile_overview(peer::HEAVY, 20))
        });
        g.bench_function(
            BenchmarkId::new("overview_typical_warm", kind.name()),
            |b| b.iter(|| e.profile_overview(&typical, 20)),
        );
        g.bench_function(BenchmarkId::new("timeline_page_50", kind.name()), |b| {
            b.iter(|| e.timeline_page(peer::HEAVY, 50))
        });
        g.finish();

        // Cold: a different random person every iteration, on an engine reopened every
        // COLD_READS_PER_OPEN reads, so its page cache holds almost none of the pages read
        // (the operating system's page cache stays warm; a process-wide cold read would
        // need root to drop it). Each open is followed by one untimed read of the heavy
        // person, as a running application has its statements prepared and the upper
        // levels of its trees cached.
        let mut g = c.benchmark_group("profile_peer");
        g.sample_size(20)
            .sampling_mode(SamplingMode::Flat)
            .measurement_time(Duration::from_secs(5));
        g.throughput(Throughput::Elements(1));
        let mut open = Some(e);
        let mut n = 0u64;
        g.bench_function(
            BenchmarkId::new("overview_typical_cold", kind.name()),
            |b| {
                b.iter_custom(|iters| {
                    let mut spent = Duration::ZERO;
                    for i in 0..iters {
                        if i % COLD_READS_PER_OPEN == 0 {
                            open = None; // closed before it is opened again, untimed
                            let mut e = peer::open(kind, dir.path(), CACHE);
                            e.profile_overview(peer::HEAVY, 20);
                            open = Some(e);
                        }
                        let e = open.as_mut().expect("opened above");
                        n += 1;
                        let who = profiledb::synth::person_id(profiledb::synth::mix(n) % people);
                        let start = Instant::now();
                        black_box(e.profile_overview(&who, 20));
                        spent += start.elapsed();
                    }
                    spent
                })
            },
        );
        g.finish();
    }
}

criterion_group!(benches, bench_track, bench_profile, bench_profile_peer);
criterion_main!(benches);
