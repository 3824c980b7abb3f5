//! Resident memory of an opened database, for an app that must fit a memory budget.
//!
//! ```text
//! cargo bench --bench footprint -- --people 100000
//! cargo bench --bench footprint -- --db DIR        # an existing database (e.g. a demo's)
//! ```
//! Builds a synthetic database of `--people N` (default 100 000; topics, 10 data-driven
//! segments, the synthetic people) in `--db DIR` (default: a temporary directory) unless
//! DIR already holds one, then, for each memory setting in `--budget-mib` (default
//! `none,16`: no budget, so sled's default 64 MiB cache, and a 16 MiB
//! `Builder::memory_budget`), opens it in a fresh child process and reports what
//! `ProfileDb::memory` says (sled's cache and the bitmaps) and the process's resident
//! memory (`VmRSS`) after open, after one profile read, and after three audience
//! counts, with the peak (`VmHWM`), the open time, and the time of `counts()` (what
//! `profiledb stats` prints: kept, not walked, since format 3).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: failing loudly is right

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use profiledb::{synth, Durability, Ident, ProfileDb};

/// The three audience counts measured after open.
const COUNTS: [&str; 3] = [
    "topic:3 and not unsubscribed and related:1",
    r#"segment:"Segment 00" and attr.plan = "pro""#,
    "event:purchase within 7d",
];

fn status(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1048576.0)
}

/// The child: open under `budget` (bytes; `None`: no budget), read, count, print one
/// table row.
fn child(dir: &Path, budget: Option<u64>, people: u64) {
    let t = Instant::now();
    let builder = ProfileDb::builder();
    let db = match budget {
        Some(b) => builder.memory_budget(b),
        None => builder,
    }
    .open(dir)
    .unwrap();
    let open = t.elapsed();
    let after_open = status("VmRSS:");
    let n = synth::mix(7) % people.max(1);
    let profile = db.profile(&Ident::id(synth::person_id(n)), 20).unwrap();
    assert!(profile.is_some(), "person {n} is in the database");
    let after_profile = status("VmRSS:");
    for c in COUNTS {
        db.count(c).unwrap();
    }
    let after_counts = status("VmRSS:");
    let t = Instant::now();
    let kept = db.counts().unwrap();
    let stats = t.elapsed();
    assert!(kept.people >= people, "{kept:?}");
    let memory = db.memory();
    println!(
        "| {} | {} | {} | {:.0} ms | {:.1} µs | {} | {} | {} | {} |",
        budget.map_or_else(|| "none".to_owned(), mib),
        mib(memory.cache_bytes),
        mib(memory.bitmap_bytes),
        open.as_secs_f64() * 1e3,
        stats.as_secs_f64() * 1e6,
        mib(after_open),
        mib(after_profile),
        mib(after_counts),
        mib(status("VmHWM:")),
    );
}

fn build(dir: &Path, people: u64) {
    let db = ProfileDb::builder()
        .durability(Durability::Buffered)
        .open(dir)
        .unwrap();
    for (id, name, default) in synth::topics() {
        db.define_topic(id, &name, default).unwrap();
    }
    for (name, cond) in synth::segments(10) {
        db.create_segment(&name, Some(&cond)).unwrap();
    }
    let now = 1_767_225_600;
    let mut ops = Vec::new();
    for n in 0..people {
        ops.extend(synth::person_ops(n, synth::SEED, now));
        if ops.len() >= 1000 {
            db.write_batch(&ops).unwrap();
            ops.clear();
        }
    }
    db.write_batch(&ops).unwrap();
    db.checkpoint().unwrap();
    db.close().unwrap();
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let get = |name: &str| {
        argv.iter()
            .position(|a| a == name)
            .and_then(|i| argv.get(i + 1).cloned())
    };
    let people: u64 = get("--people").map_or(100_000, |v| v.parse().expect("--people N"));
    if let (Some(dir), Some(budget)) = (get("--child"), get("--budget")) {
        let budget = (budget != "none").then(|| budget.parse().expect("--budget"));
        child(Path::new(&dir), budget, people);
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir: PathBuf = get("--db").map_or_else(|| tmp.path().join("db"), PathBuf::from);
    if !dir.join("PROFILEDB").exists() {
        eprintln!("building {people} people in {}", dir.display());
        let t = Instant::now();
        build(&dir, people);
        eprintln!("built in {:.0} s", t.elapsed().as_secs_f64());
    }
    let people = ProfileDb::open(&dir).unwrap().stats().unwrap().people;
    println!("footprint of {} ({people} people)\n", dir.display());
    println!(
        "| budget | cache | bitmaps | open | `counts()` | RSS after open | after a profile | after 3 counts | peak |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let budgets = get("--budget-mib").unwrap_or_else(|| "none,16".to_owned());
    for b in budgets.split(',') {
        let budget = match b.trim() {
            "none" => "none".to_owned(),
            n => (n.parse::<u64>().expect("--budget-mib none,M,M") << 20).to_string(),
        };
        let out = Command::new(std::env::current_exe().unwrap())
            .args(["--child", &dir.display().to_string()])
            .args(["--budget", &budget])
            .args(["--people", &people.to_string()])
            // As in peer_scale: mimalloc without transparent huge pages unless the
            // caller says otherwise (the README's Allocator section).
            .env(
                "MIMALLOC_ALLOW_THP",
                std::env::var("MIMALLOC_ALLOW_THP").unwrap_or_else(|_| "0".to_owned()),
            )
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
}
