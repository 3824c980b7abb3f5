//! Writes, profiledb against the SQLite peer (`benches/peer/`), on the synth workload.
//!
//! Run with `cargo bench --bench ingest`. Both engines start from a database of
//! `PROFILEDB_BENCH_PEOPLE` synthetic people (default 20 000; topics and attribute
//! indexes defined) and every iteration writes people neither has seen yet:
//! - `ingest/batch_300_people/*`: one batch of 300 whole people (identify + events +
//!   devices + relationships, about 1000 operations), buffered durability; elements are
//!   people, since every batch holds exactly 300 of them while its operation count
//!   varies;
//! - `ingest_with_segments/batch_300_people/*`: the same with the workload's 50 data-driven
//!   segments live, so the difference to `ingest` is the maintenance overhead;
//! - `durable_write/single/*`: one event, durable before the call returns (profiledb
//!   write + flush, as `Durability::Flush`; SQLite `synchronous=FULL`).
//!
//! Each case also runs profiledb with the change feed on (`profiledb_feed`): the feed's
//! cost on a write.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: failing loudly is right

mod peer;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use peer::{Batch, Batches, Kind, Work, NOW, SEGMENTS};
use profiledb::synth;

/// People per measured batch: about `peer::BATCH_OPS` operations (3.3 per person on
/// average), the batch size of `peer_scale`.
const BATCH_PEOPLE: u64 = 300;

/// profiledb with the change feed on is measured beside it: the feed's cost.
const KINDS: [Kind; 3] = [Kind::Profiledb, Kind::ProfiledbFeed, Kind::Sqlite];

fn bench(c: &mut Criterion) {
    let people = peer::people_from_env(20_000);
    let cache = 64 << 20;
    // One populated database per engine and per case, built the first time it runs.
    for segments in [false, true] {
        let name = if segments {
            "ingest_with_segments"
        } else {
            "ingest"
        };
        let mut g = c.benchmark_group(name);
        g.sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(5));
        for kind in KINDS {
            let mut db = None;
            let mut next = people;
            // Every measured batch holds exactly BATCH_PEOPLE whole people (their
            // operation count varies with the person), so people are the elements.
            g.throughput(Throughput::Elements(BATCH_PEOPLE));
            g.bench_function(BenchmarkId::new("batch_300_people", kind.name()), |b| {
                let (_, e) = db.get_or_insert_with(|| {
                    let dir = peer::tempdir();
                    let mut e = peer::open(kind, dir.path(), cache);
                    peer::populate(&mut *e, people, synth::SEED);
                    if segments {
                        peer::define_segments(&mut *e, SEGMENTS);
                    }
                    (dir, e)
                });
                b.iter_batched(
                    || {
                        let range = next..next + BATCH_PEOPLE;
                        next = range.end;
                        // No operation limit short of the whole range (far above what
                        // 300 people produce); the assertion holds it to that.
                        let limit = BATCH_PEOPLE as usize * 64;
                        let batch = Batches::new(range, synth::SEED, NOW, limit)
                            .next()
                            .expect("a batch");
                        assert_eq!(batch.people, BATCH_PEOPLE);
                        batch
                    },
                    |batch| e.ingest_batch(&batch),
                    BatchSize::PerIteration,
                );
            });
        }
        g.finish();
    }

    let mut g = c.benchmark_group("durable_write");
    g.sample_size(20).measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Elements(1));
    for kind in KINDS {
        let mut db = None;
        let mut i = 0u64;
        g.bench_function(BenchmarkId::new("single", kind.name()), |b| {
            let (_, e) = db.get_or_insert_with(|| {
                let dir = peer::tempdir();
                let mut e = peer::open(kind, dir.path(), cache);
                peer::populate(&mut *e, people, synth::SEED);
                e.flush();
                (dir, e)
            });
            b.iter_batched(
                || {
                    i += 1;
                    Batch::of(vec![Work::Event {
                        id: synth::person_id(synth::mix(i) % people),
                        name: "purchase".to_owned(),
                        props: vec![("amount".to_owned(), peer::workload::V::I(i as i64))],
                        ts: NOW,
                    }])
                },
                |batch| e.durable_write(&batch),
                BatchSize::PerIteration,
            );
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
