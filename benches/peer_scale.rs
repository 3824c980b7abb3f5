//! The scale run: profiledb and the SQLite peer on the same seeded workload, one table.
//!
//! ```text
//! cargo bench --bench peer_scale -- --people 1000000
//! ```
//! The run fails (after printing the table) when the engines disagree on any count or
//! refresh; `--people 2000 --reps 20` checks that in seconds.
//!
//! Options: `--people N` (default 100 000), `--seed S` (default `synth::SEED`),
//! `--cache-mib M` (page cache of both engines, default 256), `--reps R` (samples per
//! read latency, default 200; the most runs of an audience count).
//!
//! Every latency measured more than once is reported as its median and its p99
//! (nearest rank: of 200 samples the third slowest, of 100 or fewer the slowest), with
//! the number of runs. Audience counts run at least 3 times (the conditions of issue 13,
//! [`CONDITIONS`], at least once, after an untimed warm-up) and at most `--reps` times,
//! stopping once 5 s (10 s) have passed.
//!
//! Profiling: with `PEER_SCALE_PERF=DIR` set (and `perf` installed), each engine's run
//! attaches `perf record --call-graph dwarf` to itself for the last fifth of the batched
//! ingest and for the three-day refresh, and after measuring each read and the durable write, repeats it for 15 s
//! under perf; the profiles land in `DIR/<engine>-<phase>.data`. The figures printed
//! are measured before any profiling, except the ingest rate and the three-day refresh,
//! which include perf's overhead (a few per cent).
//!
//! Each engine runs in its own child process (this binary re-executed with `--engine`),
//! so the peak memory reported (`VmHWM`) is that engine's alone. Per engine: topics and
//! attribute indexes, then the N people in batches of about 1000 operations (timed:
//! batched ingest), 50 data-driven segments created and one more comparing the undeclared
//! `created_at` (`peer::COMPARING_SEGMENT`, timed alone), N/10 more people ingested with the
//! segments live (the maintenance overhead), a heavy person, `refresh` an hour and
//! three days later, read latencies (over sampled people), audience counts and the
//! conditions of issue 13 (each checked equal across the engines; the run's log shows
//! how each engine answers the latter), single durable writes, bytes on disk, open; then,
//! reopened, the profile overview cold (each read a different person not read before,
//! the engine's caches empty, the OS page cache as the run left it) and warm (one person
//! re-read); then each compacts its files (profiledb's `compact`, SQLite's `VACUUM`),
//! timed, and the bytes on disk after it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: failing loudly is right

mod peer;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use peer::{
    Batch, Batches, Engine, Kind, Work, AUDIENCES, BATCH_OPS, COMPARING_SEGMENT, CONDITIONS, HEAVY,
    NOW, SEGMENTS,
};
use profiledb::synth;

struct Args {
    people: u64,
    seed: u64,
    cache_mib: u64,
    reps: usize,
    engine: Option<Kind>,
}

fn args() -> Args {
    let mut a = Args {
        people: 100_000,
        seed: synth::SEED,
        cache_mib: 256,
        reps: 200,
        engine: None,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let value = || argv.get(i + 1).cloned().unwrap_or_default();
        match argv.get(i).map_or("", String::as_str) {
            "--people" => a.people = value().parse().expect("--people N"),
            "--seed" => {
                let v = value();
                a.seed = match v.strip_prefix("0x") {
                    Some(hex) => u64::from_str_radix(hex, 16).expect("--seed"),
                    None => v.parse().expect("--seed"),
                }
            }
            "--cache-mib" => a.cache_mib = value().parse().expect("--cache-mib M"),
            "--reps" => a.reps = value().parse().expect("--reps R"),
            "--engine" => a.engine = Some(Kind::parse(&value()).expect("--engine")),
            _ => {
                i += 1; // `--bench` and the like, from cargo
                continue;
            }
        }
        i += 2;
    }
    a
}

/// One measured value, printed by the child for the parent.
fn emit(key: &str, value: f64) {
    println!("RESULT\t{key}\t{value}");
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs.get(xs.len() / 2).copied().unwrap_or_default()
}

/// The nearest-rank 99th percentile (of 200 samples, the third slowest; of 100 or
/// fewer, the slowest).
fn p99(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    let rank = (xs.len() * 99).div_ceil(100);
    xs.get(rank.saturating_sub(1)).copied().unwrap_or_default()
}

/// Emits the median of `samples` as `key` (µs), their p99 as `key_p99` and their
/// number as `key_runs`.
fn emit_samples(key: &str, samples: Vec<Duration>) {
    emit(&format!("{key}_runs"), samples.len() as f64);
    emit(&format!("{key}_p99"), micros(p99(samples.clone())));
    emit(key, micros(median(samples)));
}

/// Times `f` at least `min` times and at most `max` times, stopping early once
/// `budget` has passed.
fn timed_runs(min: usize, max: usize, budget: Duration, mut f: impl FnMut()) -> Vec<Duration> {
    let mut times = Vec::new();
    let began = Instant::now();
    while times.len() < min || (times.len() < max && began.elapsed() < budget) {
        let start = Instant::now();
        f();
        times.push(start.elapsed());
    }
    times
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn sample_ids(a: &Args, k: usize) -> Vec<String> {
    (0..k as u64)
        .map(|i| synth::person_id(synth::mix(a.seed ^ (0xA11CE + i)) % a.people))
        .collect()
}

/// The person of durable write `i`.
fn writer_id(a: &Args, i: u64) -> String {
    synth::person_id(synth::mix(a.seed ^ (0xD0 + i)) % a.people)
}

/// `k` different people among the first `people`, none of them in `read`.
fn fresh_ids(a: &Args, people: u64, k: usize, read: &BTreeSet<String>) -> Vec<String> {
    let mut seen = read.clone();
    let mut out = Vec::with_capacity(k);
    let mut i = 0u64;
    while out.len() < k && (seen.len() as u64) < people {
        let id = synth::person_id(synth::mix(a.seed ^ (0xC01D_0000 + i)) % people);
        i += 1;
        if seen.insert(id.clone()) {
            out.push(id);
        }
    }
    out
}

/// `perf record` attached to this process while the value lives, when
/// `PEER_SCALE_PERF` names a directory (see the module docs).
struct Perf(Option<std::process::Child>);

impl Perf {
    fn start(kind: Kind, phase: &str) -> Perf {
        let Some(dir) = std::env::var_os("PEER_SCALE_PERF") else {
            return Perf(None);
        };
        let out = std::path::Path::new(&dir).join(format!("{}-{phase}.data", kind.name()));
        let child = Command::new("perf")
            .args(["record", "-F", "199", "--call-graph", "dwarf,32768", "-o"])
            .arg(out)
            .args(["-p", &std::process::id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("PEER_SCALE_PERF is set but perf does not start");
        // Let perf attach before the work starts.
        std::thread::sleep(Duration::from_millis(500));
        Perf(Some(child))
    }

    /// Runs `f` over and over for 15 s under perf, when profiling.
    fn repeat(kind: Kind, phase: &str, mut f: impl FnMut()) {
        if std::env::var_os("PEER_SCALE_PERF").is_none() {
            return;
        }
        let _perf = Perf::start(kind, phase);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(15) {
            f();
        }
    }
}

impl Drop for Perf {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

fn ingest(e: &mut dyn Engine, batches: Batches) -> (u64, u64, Duration) {
    ingest_profiled(e, batches, None)
}

/// [`ingest`], under perf from `profile_from` people on, when profiling.
fn ingest_profiled(
    e: &mut dyn Engine,
    batches: Batches,
    profile_from: Option<(Kind, u64)>,
) -> (u64, u64, Duration) {
    let (mut ops, mut people, mut spent) = (0u64, 0u64, Duration::ZERO);
    let mut perf = None;
    for b in batches {
        if let Some((kind, from)) = profile_from {
            if perf.is_none() && people >= from {
                perf = Some(Perf::start(kind, "ingest"));
            }
        }
        let start = Instant::now();
        e.ingest_batch(&b);
        spent += start.elapsed();
        ops += b.ops.len() as u64;
        people += b.people;
    }
    (ops, people, spent)
}

fn child(a: &Args, kind: Kind) {
    let dir = peer::tempdir();
    let mut e = peer::open(kind, dir.path(), a.cache_mib << 20);
    let log = |what: &str| eprintln!("[{}] {what}", kind.name());
    e.define_topics();
    e.index_attributes();

    let (ops, people, spent) = ingest_profiled(
        &mut *e,
        Batches::new(0..a.people, a.seed, NOW, BATCH_OPS),
        Some((kind, a.people * 4 / 5)),
    );
    emit("ingest_ops_per_s", ops as f64 / spent.as_secs_f64());
    emit("ingest_people_per_s", people as f64 / spent.as_secs_f64());
    log(&format!(
        "ingested {people} people ({ops} ops) in {:.1} s",
        spent.as_secs_f64()
    ));

    let start = Instant::now();
    peer::define_segments(&mut *e, SEGMENTS);
    emit("create_segments_s", start.elapsed().as_secs_f64());
    log(&format!(
        "created {SEGMENTS} segments in {:.1} s",
        start.elapsed().as_secs_f64()
    ));

    let start = Instant::now();
    e.create_segment(COMPARING_SEGMENT.0, COMPARING_SEGMENT.1);
    emit("create_comparing_segment_s", start.elapsed().as_secs_f64());
    emit(
        "comparing_segment_value",
        e.count(&format!(r#"segment:"{}""#, COMPARING_SEGMENT.0)) as f64,
    );
    log(&format!(
        "created `{}` in {:.1} s",
        COMPARING_SEGMENT.1,
        start.elapsed().as_secs_f64()
    ));

    let more = (a.people / 10).max(1000);
    let (ops, _, spent) = ingest(
        &mut *e,
        Batches::new(a.people..a.people + more, a.seed, NOW, BATCH_OPS),
    );
    emit(
        "ingest_segments_ops_per_s",
        ops as f64 / spent.as_secs_f64(),
    );
    log(&format!(
        "ingested {more} more people with {SEGMENTS} segments live"
    ));
    e.ingest_batch(&Batch::of(peer::heavy_person(NOW)));
    e.flush();

    e.set_now(NOW + 3600);
    let start = Instant::now();
    let (entered, exited) = e.refresh();
    emit("refresh_1h_ms", start.elapsed().as_secs_f64() * 1e3);
    emit("refresh_1h_changes", (entered + exited) as f64);
    e.set_now(NOW + 3 * 86_400);
    let perf = Perf::start(kind, "refresh");
    let start = Instant::now();
    let (entered, exited) = e.refresh();
    emit("refresh_3d_ms", start.elapsed().as_secs_f64() * 1e3);
    drop(perf);
    emit("refresh_3d_changes", (entered + exited) as f64);
    log("refreshed");

    let ids = sample_ids(a, a.reps);
    let samples_of = |e: &mut dyn Engine, ids: &[String], f: &dyn Fn(&mut dyn Engine, &str)| {
        for id in ids.iter().take(20) {
            f(e, id);
        }
        ids.iter()
            .map(|id| {
                let start = Instant::now();
                f(e, id);
                start.elapsed()
            })
            .collect::<Vec<_>>()
    };
    emit_samples(
        "overview_us",
        samples_of(&mut *e, &ids, &|e, id| {
            e.profile_overview(id, 20);
        }),
    );
    let mut n = 0u64;
    Perf::repeat(kind, "overview", || {
        n += 1;
        let id = synth::person_id(synth::mix(a.seed ^ (0xB0B + n)) % a.people);
        e.profile_overview(&id, 20);
    });
    let heavy: Vec<String> = vec![HEAVY.to_owned(); a.reps];
    emit_samples(
        "overview_heavy_us",
        samples_of(&mut *e, &heavy, &|e, id| {
            e.profile_overview(id, 20);
        }),
    );
    emit_samples(
        "timeline_us",
        samples_of(&mut *e, &heavy, &|e, id| {
            e.timeline_page(id, 50);
        }),
    );
    Perf::repeat(kind, "timeline", || {
        e.timeline_page(HEAVY, 50);
    });
    emit_samples(
        "segment_list_us",
        samples_of(&mut *e, &ids, &|e, id| {
            e.segment_list(id);
        }),
    );
    log("reads measured");

    for (i, (_, cond)) in AUDIENCES.iter().enumerate() {
        let n = e.count(cond);
        emit(&format!("count{i}_value"), n as f64);
        let times = timed_runs(3, a.reps, Duration::from_secs(5), || {
            e.count(cond);
        });
        emit_samples(&format!("count{i}_us"), times);
    }
    // profiledb scans candidates for these today (seconds at 1M people): at least one
    // timed run after the warm-up, more while the budget lasts.
    for (i, (_, cond)) in CONDITIONS.iter().enumerate() {
        let start = Instant::now();
        let n = e.count(cond);
        let first = start.elapsed();
        emit(&format!("cond{i}_value"), n as f64);
        log(&format!(
            "`{cond}` = {n} (first run {:.1} ms); how it is answered:\n{}",
            first.as_secs_f64() * 1e3,
            e.explain(cond)
        ));
        let times = timed_runs(1, a.reps, Duration::from_secs(10), || {
            assert_eq!(e.count(cond), n, "`{cond}` changed between runs");
        });
        emit_samples(&format!("cond{i}_us"), times);
    }
    log("audiences measured");

    let writes: Vec<Duration> = (0..100u64)
        .map(|i| {
            let b = Batch::of(vec![Work::Event {
                id: writer_id(a, i),
                name: "purchase".to_owned(),
                props: vec![("amount".to_owned(), peer::workload::V::I(i as i64))],
                ts: NOW + 3 * 86_400,
            }]);
            let start = Instant::now();
            e.durable_write(&b);
            start.elapsed()
        })
        .collect();
    emit_samples("durable_write_us", writes);
    let mut n = 0u64;
    Perf::repeat(kind, "durable", || {
        n += 1;
        e.durable_write(&Batch::of(vec![Work::Event {
            id: synth::person_id(synth::mix(a.seed ^ (0xD00 + n)) % a.people),
            name: "purchase".to_owned(),
            props: vec![],
            ts: NOW + 3 * 86_400,
        }]));
    });
    log("durable writes measured");

    e.flush();
    emit("bytes_on_disk", e.bytes_on_disk() as f64);
    drop(e);
    // Reopen: profiledb loads every bitmap here; the first count shows it is ready.
    let start = Instant::now();
    let mut e = peer::open(kind, dir.path(), a.cache_mib << 20);
    emit("open_ms", start.elapsed().as_secs_f64() * 1e3);
    let start = Instant::now();
    e.count(AUDIENCES.first().map_or("all", |(_, c)| c));
    emit(
        "first_count_after_open_ms",
        start.elapsed().as_secs_f64() * 1e3,
    );
    drop(e);
    log("reopened");

    // Cold: the engine just opened (its caches empty; the OS page cache as the run left
    // it), each read a different person among everyone, none read before in this run.
    let mut e = peer::open(kind, dir.path(), a.cache_mib << 20);
    let mut read: BTreeSet<String> = ids.iter().cloned().collect();
    read.extend((0..100u64).map(|i| writer_id(a, i)));
    let cold = fresh_ids(a, a.people + more, a.reps, &read);
    let times = cold
        .iter()
        .map(|id| {
            let start = Instant::now();
            e.profile_overview(id, 20);
            start.elapsed()
        })
        .collect();
    emit_samples("overview_cold_us", times);
    // Warm: one of them, read again and again.
    let warm = cold.first().expect("a person to re-read").clone();
    e.profile_overview(&warm, 20);
    let times = timed_runs(a.reps, a.reps, Duration::ZERO, || {
        e.profile_overview(&warm, 20);
    });
    emit_samples("overview_warm_us", times);
    drop(e);
    log("cold and warm overviews measured");
    emit("peak_rss", peer::peak_rss() as f64);

    // Compaction (profiledb's `compact`, SQLite's `VACUUM`), after the peak memory is
    // taken: what the files hold once rewritten.
    let mut e = peer::open(kind, dir.path(), a.cache_mib << 20);
    let start = Instant::now();
    e.compact();
    emit("compact_s", start.elapsed().as_secs_f64());
    e.flush();
    emit("bytes_compacted", e.bytes_on_disk() as f64);
    drop(e);
    log("compacted");
}

fn run_child(a: &Args, kind: Kind) -> BTreeMap<String, f64> {
    let exe = std::env::current_exe().expect("current exe");
    let mut child = Command::new(exe)
        .args([
            "--engine",
            kind.name(),
            "--people",
            &a.people.to_string(),
            "--seed",
            &a.seed.to_string(),
            "--cache-mib",
            &a.cache_mib.to_string(),
            "--reps",
            &a.reps.to_string(),
        ])
        // mimalloc without transparent huge pages unless the caller says otherwise (see
        // the README's Allocator section): both engines run on it.
        .env(
            "MIMALLOC_ALLOW_THP",
            std::env::var("MIMALLOC_ALLOW_THP").unwrap_or_else(|_| "0".to_owned()),
        )
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the engine's process");
    let mut out = BTreeMap::new();
    for line in BufReader::new(child.stdout.take().expect("stdout")).lines() {
        let line = line.expect("read");
        let mut parts = line.split('\t');
        if parts.next() == Some("RESULT") {
            let key = parts.next().expect("key").to_owned();
            let value: f64 = parts.next().expect("value").parse().expect("number");
            out.insert(key, value);
        } else {
            println!("{line}");
        }
    }
    let status = child.wait().expect("wait");
    assert!(status.success(), "the {} run failed: {status}", kind.name());
    out
}

/// A speed ratio (profiledb's speed over SQLite's) in words.
fn speed(r: f64) -> String {
    if r >= 1.0 {
        format!("{r:.2}× faster")
    } else {
        format!("{:.2}× slower", 1.0 / r)
    }
}

/// A duration given in µs, in the unit that suits it.
fn human_time(us: f64) -> String {
    if us >= 1e6 {
        format!("{:.2} s", us / 1e6)
    } else if us >= 1e3 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{us:.1} µs")
    }
}

fn human_bytes(b: f64) -> String {
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else {
        format!("{:.1} MB", b / 1e6)
    }
}

fn main() {
    let a = args();
    if let Some(kind) = a.engine {
        child(&a, kind);
        return;
    }
    let started = Instant::now();
    let p = run_child(&a, Kind::Profiledb);
    let s = run_child(&a, Kind::Sqlite);

    println!();
    println!(
        "command: cargo bench --bench peer_scale -- --people {} --seed {:#x} --cache-mib {} --reps {}",
        a.people, a.seed, a.cache_mib, a.reps
    );
    println!(
        "workload: profiledb::synth, seed {:#x}; {} people + {} more with {SEGMENTS} segments; \
         batches of ~{BATCH_OPS} ops; page cache {} MiB each; mimalloc, MIMALLOC_ALLOW_THP={}; \
         {} CPUs; total {:.0} s",
        a.seed,
        a.people,
        (a.people / 10).max(1000),
        a.cache_mib,
        std::env::var("MIMALLOC_ALLOW_THP").unwrap_or_else(|_| "0".to_owned()),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        started.elapsed().as_secs_f64()
    );
    println!();
    println!(
        "| operation | profiledb median | p99 | SQLite median | p99 | runs | profiledb vs SQLite (median) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let get = |m: &BTreeMap<String, f64>, k: &str| m.get(k).copied().unwrap_or(f64::NAN);
    // Rates: higher is better; the ratio is profiledb / SQLite.
    for (label, key) in [
        ("batched ingest (ops/s)", "ingest_ops_per_s"),
        ("batched ingest (people/s)", "ingest_people_per_s"),
        (
            "batched ingest, 51 data-driven segments live (ops/s)",
            "ingest_segments_ops_per_s",
        ),
    ] {
        let (x, y) = (get(&p, key), get(&s, key));
        println!(
            "| {label} | {x:.0} | — | {y:.0} | — | 1 | {} |",
            speed(x / y)
        );
    }
    // Latencies: lower is better; the ratio is SQLite / profiledb. `to_us` converts the
    // key's unit; rows measured once have no p99.
    let latency = |label: &str, key: &str, to_us: f64| {
        let (x, y) = (get(&p, key) * to_us, get(&s, key) * to_us);
        let p99_of = |m: &BTreeMap<String, f64>| {
            m.get(&format!("{key}_p99"))
                .map_or("—".to_owned(), |v| human_time(v * to_us))
        };
        let runs =
            |m: &BTreeMap<String, f64>| m.get(&format!("{key}_runs")).copied().unwrap_or(1.0);
        let (rp, rs) = (runs(&p), runs(&s));
        let runs = if rp == rs {
            format!("{rp}")
        } else {
            format!("{rp} / {rs}")
        };
        println!(
            "| {label} | {} | {} | {} | {} | {runs} | {} |",
            human_time(x),
            p99_of(&p),
            human_time(y),
            p99_of(&s),
            speed(y / x)
        );
    };
    latency("create 50 segments", "create_segments_s", 1e6);
    latency(
        &format!(
            "create a segment comparing an undeclared attribute: `{}`",
            COMPARING_SEGMENT.1
        ),
        "create_comparing_segment_s",
        1e6,
    );
    latency("refresh, an hour later", "refresh_1h_ms", 1e3);
    latency(
        "refresh, three days later (mass exit)",
        "refresh_3d_ms",
        1e3,
    );
    latency(
        "profile overview, typical person (random people, cache warm from the run)",
        "overview_us",
        1.0,
    );
    latency(
        "profile overview, typical person, cold (after reopen, each person read once)",
        "overview_cold_us",
        1.0,
    );
    latency(
        "profile overview, typical person, warm (the same person re-read)",
        "overview_warm_us",
        1.0,
    );
    latency(
        "profile overview, 200 events + 20 deliveries",
        "overview_heavy_us",
        1.0,
    );
    latency("timeline page of 50", "timeline_us", 1.0);
    latency("segment list of one person", "segment_list_us", 1.0);
    for (i, (label, _)) in AUDIENCES.iter().enumerate() {
        latency(&format!("audience {label}"), &format!("count{i}_us"), 1.0);
    }
    for (i, (label, cond)) in CONDITIONS.iter().enumerate() {
        latency(
            &format!("audience {label}: `{cond}`"),
            &format!("cond{i}_us"),
            1.0,
        );
    }
    latency("durable single write", "durable_write_us", 1.0);
    latency("open (profiledb loads every bitmap)", "open_ms", 1e3);
    latency("first count after open", "first_count_after_open_ms", 1e3);
    let (x, y) = (get(&p, "bytes_on_disk"), get(&s, "bytes_on_disk"));
    println!(
        "| bytes on disk | {} | — | {} | — | 1 | {:.2}× SQLite's |",
        human_bytes(x),
        human_bytes(y),
        x / y
    );
    let (x, y) = (get(&p, "compact_s"), get(&s, "compact_s"));
    println!(
        "| compaction (profiledb `compact`, SQLite `VACUUM`) | {:.1} s | — | {:.1} s | — | 1 | {} |",
        x,
        y,
        speed(y / x)
    );
    let (x, y) = (get(&p, "bytes_compacted"), get(&s, "bytes_compacted"));
    println!(
        "| bytes on disk after compaction | {} | — | {} | — | 1 | {:.2}× SQLite's |",
        human_bytes(x),
        human_bytes(y),
        x / y
    );
    let (x, y) = (get(&p, "peak_rss"), get(&s, "peak_rss"));
    println!(
        "| peak memory (VmHWM) | {} | — | {} | — | 1 | {:.2}× SQLite's |",
        human_bytes(x),
        human_bytes(y),
        x / y
    );
    println!();
    let mut same = true;
    for (prefix, list) in [("count", &AUDIENCES[..]), ("cond", &CONDITIONS[..])] {
        for (i, (label, cond)) in list.iter().enumerate() {
            let key = format!("{prefix}{i}_value");
            let (x, y) = (get(&p, &key), get(&s, &key));
            same &= x == y;
            println!(
                "{label}: `{cond}` = {x} (profiledb), {y} (SQLite){}",
                if x == y { "" } else { "  <-- MISMATCH" }
            );
        }
    }
    for key in [
        "comparing_segment_value",
        "refresh_1h_changes",
        "refresh_3d_changes",
    ] {
        let (x, y) = (get(&p, key), get(&s, key));
        same &= x == y;
        println!(
            "{key}: {x} (profiledb), {y} (SQLite){}",
            if x == y { "" } else { "  <-- MISMATCH" }
        );
    }
    if !same {
        // After the table, so the figures are not lost; a failing status, so a smoke run
        // (`--people 2000 --reps 20`, seconds) can check the engines agree.
        println!("ERROR: the engines disagree on a result above");
        std::process::exit(1);
    }
}
