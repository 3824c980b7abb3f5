//! `profiledb serve` under load: durable requests per second and p50/p99 latency with
//! 1, 8 and 64 concurrent clients, sending single events and batches of 100 events; the
//! ratio of 64-client to 1-client throughput for single events (group commit's gain);
//! and the server's memory at 100,000 people.
//!
//! Runs the release `profiledb` binary as its own process (so its memory is its own)
//! over a database in a temporary directory on disk, and talks to it over loopback.
//!
//! `cargo bench --bench server` (`SERVER_BENCH_SECS` sets each run's length, default 3).

use std::io::BufRead as _;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

const SETUP_PEOPLE: usize = 1_000;
const MEMORY_PEOPLE: usize = 100_000;
const PLANS: [&str; 3] = ["free", "pro", "team"];

struct Spawned {
    child: Child,
    base: String,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(dir: &std::path::Path) -> Spawned {
    let mut child = Command::new(env!("CARGO_BIN_EXE_profiledb"))
        .arg("--db")
        .arg(dir)
        .args(["serve", "--listen", "127.0.0.1:0", "--no-auth"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the profiledb binary");
    let mut err = std::io::BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    err.read_line(&mut line).expect("first line");
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .expect("listening on ...")
        .to_owned();
    Spawned { child, base }
}

/// `VmRSS` and `VmHWM` of a process, in MiB (Linux).
fn memory_mib(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

struct Run {
    requests: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Run {
    fn per_sec(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
    fn pct(&self, p: f64) -> f64 {
        let mut l = self.latencies.clone();
        l.sort();
        let i = ((l.len() as f64 - 1.0) * p).round() as usize;
        l.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e3)
    }
}

/// What client `c` sends as its `i`th request: a path and a JSON body.
type Request = Arc<dyn Fn(usize, usize) -> (String, serde_json::Value) + Send + Sync>;

/// `clients` tasks each send the requests `request(client, i)` makes, for `secs`.
async fn run(
    http: &reqwest::Client,
    base: &str,
    clients: usize,
    secs: f64,
    request: Request,
) -> Run {
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (http, base, request) = (http.clone(), base.to_owned(), request.clone());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut i = 0;
                while Instant::now() < until {
                    let (path, body) = request(c, i);
                    let t = Instant::now();
                    let res = http
                        .post(format!("{base}{path}"))
                        .json(&body)
                        .send()
                        .await
                        .expect("send");
                    assert!(res.status().is_success(), "answer {}", res.status());
                    let _ = res.bytes().await;
                    lat.push(t.elapsed());
                    i += 1;
                }
                lat
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("client task"));
    }
    Run {
        requests: latencies.len(),
        elapsed: started.elapsed(),
        latencies,
    }
}

/// The server's `(commits, committed requests)` counters, from `/metrics`.
async fn commits(http: &reqwest::Client, base: &str) -> (u64, u64) {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    let value = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0)
    };
    (
        value("profiledb_commits_total"),
        value("profiledb_committed_requests_total"),
    )
}

/// Sends one Track v2 batch and checks it was applied.
async fn post_batch(http: &reqwest::Client, base: &str, batch: Vec<serde_json::Value>) {
    let res = http
        .post(format!("{base}/api/v2/batch"))
        .json(&json!({ "batch": batch }))
        .send()
        .await
        .expect("send a batch");
    assert!(res.status().is_success(), "answer {}", res.status());
}

fn person(c: usize, i: usize) -> String {
    format!("u-{}", (c * 7919 + i) % SETUP_PEOPLE)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let secs: f64 = std::env::var("SERVER_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let dir = tempfile::tempdir().expect("temp dir");
    let server = spawn(dir.path());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(128)
        .build()
        .expect("client");
    let base = server.base.clone();
    runtime.block_on(async {
        // The people the events are for.
        for chunk in (0..SETUP_PEOPLE).collect::<Vec<_>>().chunks(100) {
            let batch: Vec<_> = chunk
                .iter()
                .map(|i| json!({"type": "person", "action": "identify", "identifiers": {"id": format!("u-{i}")}, "attributes": {"plan": "pro", "n": i}}))
                .collect();
            post_batch(&http, &base, batch).await;
        }
        println!("profiledb serve, durable (fsynced) acknowledgements, {secs} s per run");
        println!(
            "{:<28} {:>7} {:>10} {:>12} {:>9} {:>9}",
            "workload", "clients", "requests", "requests/s", "p50 ms", "p99 ms"
        );
        let single: Request = Arc::new(|c, i| {
            let body = json!({"type": "person", "action": "event", "identifiers": {"id": person(c, i)},
                              "name": "tick", "attributes": {"i": i}});
            ("/api/v2/entity".to_owned(), body)
        });
        let v1_event: Request = Arc::new(|c, i| {
            (
                format!("/api/v1/customers/{}/events", person(c, i)),
                json!({"name": "tick", "data": {"i": i}}),
            )
        });
        let hundred: Request = Arc::new(|c, i| {
            let batch: Vec<_> = (0..100)
                .map(|k| json!({"type": "person", "action": "event", "identifiers": {"id": person(c, i * 100 + k)}, "name": "tick", "attributes": {"k": k}}))
                .collect();
            ("/api/v2/batch".to_owned(), json!({ "batch": batch }))
        });
        let mut ratios = Vec::new();
        for (label, request) in [
            ("single event (v1 track)", v1_event),
            ("single event (v2 entity)", single),
        ] {
            let mut rates = Vec::new();
            for clients in [1, 8, 64] {
                let before = commits(&http, &base).await;
                let r = run(&http, &base, clients, secs, request.clone()).await;
                let after = commits(&http, &base).await;
                let per_commit = (after.1 - before.1) as f64 / (after.0 - before.0).max(1) as f64;
                println!(
                    "{:<28} {:>7} {:>10} {:>12.0} {:>9.2} {:>9.2}   ({per_commit:.1} requests per fsync)",
                    label,
                    clients,
                    r.requests,
                    r.per_sec(),
                    r.pct(0.5),
                    r.pct(0.99)
                );
                rates.push(r.per_sec());
            }
            if let (Some(one), Some(many)) = (rates.first(), rates.last()) {
                ratios.push((label, many / one));
            }
        }
        for clients in [1, 8, 64] {
            let r = run(&http, &base, clients, secs, hundred.clone()).await;
            println!(
                "{:<28} {:>7} {:>10} {:>12.0} {:>9.2} {:>9.2}   ({:.0} events/s)",
                "batch of 100 events",
                clients,
                r.requests,
                r.per_sec(),
                r.pct(0.5),
                r.pct(0.99),
                r.per_sec() * 100.0
            );
        }
        for (label, ratio) in ratios {
            println!(
                "group commit, {label}: 64 clients / 1 client = {ratio:.1}x ({}; the target is >= 10x)",
                if ratio >= 10.0 { "met" } else { "MISSED" }
            );
        }

        // Memory at 100,000 people.
        let loader: Vec<_> = (0..8)
            .map(|c| {
                let (http, base) = (http.clone(), base.clone());
                tokio::spawn(async move {
                    let mut i = c * 100;
                    while i < MEMORY_PEOPLE {
                        let batch: Vec<_> = (i..i + 100)
                            .map(|k| json!({"type": "person", "action": "identify", "identifiers": {"id": format!("m-{k}")},
                                            "attributes": {"email": format!("m{k}@example.com"), "plan": PLANS.get(k % 3), "n": k}}))
                            .collect();
                        post_batch(&http, &base, batch).await;
                        i += 800;
                    }
                })
            })
            .collect();
        let started = Instant::now();
        for t in loader {
            t.await.expect("loader");
        }
        let took = started.elapsed().as_secs_f64();
        let (rss, hwm) = memory_mib(server.child.id()).unwrap_or((f64::NAN, f64::NAN));
        println!(
            "memory at {} people (+{SETUP_PEOPLE} and the events above): RSS {rss:.0} MiB, peak {hwm:.0} MiB (loaded in {took:.1} s, {:.0} people/s)",
            MEMORY_PEOPLE,
            MEMORY_PEOPLE as f64 / took
        );
    });
}
