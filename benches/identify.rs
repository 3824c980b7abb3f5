//! Identify throughput: creating and updating people, one call per person and in
//! batches of 1000, with `Durability::Buffered` and 10 attributes per person.
//!
//! Run with `cargo bench --bench identify`. Each timed iteration handles `PER_ITER` people;
//! criterion reports elements/s, where one element is one person identified. Before the
//! timed cases, an untimed pass prints what each case costs in sled transactions, key
//! writes and bytes on disk per person (counted through the storage seam's `Faults`
//! handle, which injects nothing here), because throughput alone hides write
//! amplification.
//!
//! Inputs are deterministic: person `n` is `user-{n}`, and every attribute value is a
//! function of `n` (and, for updates, of the update round), mixed with splitmix64 from a
//! fixed seed. Databases live in fresh temporary directories (`TMPDIR` picks the disk).
//! The configuration is the default one but for `Durability::Buffered`, so the sled page
//! cache is 64 MiB: expect `update/single` to spread widely, because once sled starts
//! evicting pages, reading an evicted one waits until every log write queued so far is
//! on disk, and one-call-per-person writes queue a log write per commit. "disk bytes" is
//! sled's own `size_on_disk`, which moves in whole segments: coarse for 2000 people.

use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, BatchSize, Criterion, SamplingMode, Throughput};
use profiledb::{Durability, Faults, Ident, Identify, Op, Outcome, ProfileDb};
use tempfile::TempDir;

/// People handled by one timed iteration, in every case.
const PER_ITER: u64 = 2000;
/// People per `write_batch` in the batched cases.
const BATCH: usize = 1000;
/// People in the database the update cases update, round-robin: each iteration updates
/// people the previous one did not, and every update changes three values.
const POPULATION: u64 = 20_000;
/// Fixed seed of the attribute values.
const SEED: u64 = 0x5EED_1D3E_7A11_0001;

const PLANS: [&str; 3] = ["free", "pro", "enterprise"];
const CITIES: [&str; 8] = [
    "Lisbon", "Oslo", "Lagos", "Lima", "Osaka", "Denver", "Pune", "Tallinn",
];

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn pick<'a>(options: &[&'a str], h: u64) -> &'a str {
    let len = options.len() as u64;
    options
        .get(usize::try_from(h % len).unwrap_or(0))
        .copied()
        .unwrap_or("")
}

fn user_id(n: u64) -> String {
    format!("user-{n:08}")
}

/// The three attributes an update changes, as of update `round` (0 = creation). Each is
/// a function of `n + round`, and consecutive rounds always differ in all three.
fn changing(op: Identify, n: u64, round: u64) -> Identify {
    let v = n + round;
    op.set("plan", pick(&PLANS, v))
        .set("age", 18 + (v % 60) as i64)
        .set("score", (v % 10_000) as f64 + 0.5)
}

/// A new person with 10 attributes: `email` (an identifier), 8 plain ones of mixed
/// types, one nested by a dotted name.
fn new_person(n: u64) -> Identify {
    let h = splitmix64(SEED ^ n);
    let op = Identify::new(Ident::id(user_id(n)))
        .set("email", format!("user{n}@example.com"))
        .set("first_name", format!("First{:04x}", h & 0xFFFF))
        .set("last_name", format!("Last{:04x}", (h >> 16) & 0xFFFF))
        .set("city", pick(&CITIES, h >> 32))
        .set("active", h & 1 == 0)
        .set("created_at", 1_600_000_000 + (h % 100_000_000) as i64)
        .set("cio_subscription_preferences.topics.topic_1", h & 2 == 0);
    changing(op, n, 0)
}

/// Update number `k` of the round-robin over the population.
fn update(k: u64) -> Identify {
    let n = k % POPULATION;
    changing(Identify::new(Ident::id(user_id(n))), n, k / POPULATION + 1)
}

fn open(dir: &Path, faults: Option<&Faults>) -> ProfileDb {
    let mut builder = ProfileDb::builder().durability(Durability::Buffered);
    if let Some(f) = faults {
        builder = builder.faults(f.clone());
    }
    builder.open(dir).expect("open a bench database")
}

fn tempdir() -> TempDir {
    tempfile::Builder::new()
        .prefix("profiledb-bench-")
        .tempdir()
        .expect("create a temporary directory")
}

fn batches(ops: impl Iterator<Item = Identify>) -> Vec<Vec<Op>> {
    let ops: Vec<Op> = ops.map(Op::Identify).collect();
    ops.chunks(BATCH).map(<[Op]>::to_vec).collect()
}

fn expect_all(outcomes: &[Outcome], created: bool) {
    let ok = outcomes.iter().all(|o| {
        if created {
            matches!(o, Outcome::Created(_))
        } else {
            matches!(o, Outcome::Updated(_))
        }
    });
    assert!(
        ok,
        "expected every outcome {}: {:?}",
        if created { "Created" } else { "Updated" },
        outcomes
            .iter()
            .find(|o| !matches!(o, Outcome::Created(_) | Outcome::Updated(_)))
    );
}

fn identify_each(db: &ProfileDb, ops: Vec<Identify>, created: bool) {
    for op in ops {
        let outcome = db.identify(op).expect("identify");
        expect_all(std::slice::from_ref(&outcome), created);
    }
}

fn write_each(db: &ProfileDb, batches: &[Vec<Op>], created: bool) {
    for batch in batches {
        let outcomes = db.write_batch(batch).expect("write_batch");
        expect_all(&outcomes, created);
    }
}

/// A database of `POPULATION` people, created in batches (untimed).
fn populated(faults: Option<&Faults>) -> (TempDir, ProfileDb) {
    let dir = tempdir();
    let db = open(dir.path(), faults);
    write_each(&db, &batches((0..POPULATION).map(new_person)), true);
    db.flush().expect("flush the populated database");
    (dir, db)
}

fn bench_identify(c: &mut Criterion) {
    let mut group = c.benchmark_group("identify");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Elements(PER_ITER));

    // Creating: every iteration starts from an empty database, opened (and afterwards
    // dropped, which flushes) outside the timed region.
    let people: Vec<Identify> = (0..PER_ITER).map(new_person).collect();
    group.bench_function("create/single", |b| {
        b.iter_batched_ref(
            || {
                let dir = tempdir();
                let db = open(dir.path(), None);
                (db, dir, people.clone())
            },
            |(db, _, ops)| identify_each(db, std::mem::take(ops), true),
            BatchSize::PerIteration,
        );
    });

    let people_batched = batches(people.iter().cloned());
    group.bench_function("create/batch1000", |b| {
        b.iter_batched_ref(
            || {
                let dir = tempdir();
                let db = open(dir.path(), None);
                (db, dir)
            },
            |(db, _)| write_each(db, &people_batched, true),
            BatchSize::PerIteration,
        );
    });

    // Updating: three of the ten attributes change. Each case populates its own
    // database, untimed, the first time it runs (so a filtered-out case costs nothing).
    let mut populated_db = None;
    let mut next = 0u64;
    group.bench_function("update/single", |b| {
        let (_, db) = populated_db.get_or_insert_with(|| populated(None));
        b.iter_batched_ref(
            || {
                let ops: Vec<Identify> = (next..next + PER_ITER).map(update).collect();
                next += PER_ITER;
                ops
            },
            |ops| identify_each(db, std::mem::take(ops), false),
            BatchSize::PerIteration,
        );
    });

    let mut populated_db = None;
    let mut next = 0u64;
    group.bench_function("update/batch1000", |b| {
        let (_, db) = populated_db.get_or_insert_with(|| populated(None));
        b.iter_batched_ref(
            || {
                let ops = batches((next..next + PER_ITER).map(update));
                next += PER_ITER;
                ops
            },
            |ops| write_each(db, ops, false),
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

/// What one case costs the storage: commits, key writes, bytes on disk.
struct Cost {
    commits: u64,
    key_writes: u64,
    disk_bytes: u64,
}

fn measure(db: &ProfileDb, faults: &Faults, run: impl FnOnce(&ProfileDb)) -> Cost {
    let before = db.stats().expect("stats");
    let writes = faults.writes_seen();
    run(db);
    let commits = db.stats().expect("stats").commit_seq - before.commit_seq;
    let key_writes = faults.writes_seen() - writes;
    db.flush().expect("flush");
    let disk_bytes = db.stats().expect("stats").size_on_disk;
    Cost {
        commits,
        key_writes,
        disk_bytes,
    }
}

/// The untimed accounting pass: sled transactions and key writes per person, per case.
fn report_costs() {
    let n = PER_ITER;
    let per = |x: u64| x as f64 / n as f64;
    let mut rows = Vec::new();

    let faults = Faults::new();
    let dir = tempdir();
    let db = open(dir.path(), Some(&faults));
    let base = db.stats().expect("stats").size_on_disk;
    let cost = measure(&db, &faults, |db| {
        identify_each(db, (0..n).map(new_person).collect(), true)
    });
    rows.push(("create/single", cost, base));
    drop(db);

    let dir = tempdir();
    let db = open(dir.path(), Some(&faults));
    let base = db.stats().expect("stats").size_on_disk;
    let cost = measure(&db, &faults, |db| {
        write_each(db, &batches((0..n).map(new_person)), true)
    });
    rows.push(("create/batch1000", cost, base));
    drop(db);

    let (_dir, db) = populated(Some(&faults));
    let base = db.stats().expect("stats").size_on_disk;
    let cost = measure(&db, &faults, |db| {
        identify_each(db, (0..n).map(update).collect(), false)
    });
    rows.push(("update/single", cost, base));
    let base = db.stats().expect("stats").size_on_disk;
    let cost = measure(&db, &faults, |db| {
        write_each(db, &batches((n..2 * n).map(update)), false)
    });
    rows.push(("update/batch1000", cost, base));
    drop(db);

    println!("identify write cost, {n} people per case (untimed; Durability::Buffered):");
    println!(
        "  {:<18} {:>12} {:>15} {:>18} {:>22}",
        "case", "commits", "commits/person", "key writes/person", "disk bytes/person (Δ)"
    );
    for (name, cost, base) in rows {
        println!(
            "  {:<18} {:>12} {:>15.3} {:>18.2} {:>22.0}",
            name,
            cost.commits,
            per(cost.commits),
            per(cost.key_writes),
            cost.disk_bytes.saturating_sub(base) as f64 / n as f64,
        );
    }
}

/// Peak resident memory of this process, from `/proc` where there is one.
fn report_peak_memory() {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return;
    };
    if let Some(line) = status.lines().find(|l| l.starts_with("VmHWM:")) {
        println!(
            "identify bench process peak RSS: {}",
            line.trim_start_matches("VmHWM:").trim()
        );
    }
}

criterion_group!(benches, bench_identify);

fn main() {
    // `cargo bench` passes `--bench`; without it criterion runs each case once as a test
    // (`cargo test --benches`), where the accounting pass would only add time. `--list`
    // must print nothing but benchmark names.
    let args: Vec<String> = std::env::args().collect();
    let measuring = args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--list");
    if measuring {
        report_costs();
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
    if measuring {
        report_peak_memory();
    }
}
