//! Counters for `GET /metrics` (Prometheus text format).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;

/// Upper bounds (seconds) of the commit latency histogram's buckets.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0,
];

/// What the server counts.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// Requests answered.
    pub requests: AtomicU64,
    /// Answered 4xx (refused input, auth, limits, unknown).
    pub rejections: AtomicU64,
    /// Answered 401.
    pub unauthorized: AtomicU64,
    /// Answered 413.
    pub too_large: AtomicU64,
    /// Answered 429 (queue full).
    pub overloaded: AtomicU64,
    /// Answered 5xx.
    pub failures: AtomicU64,
    /// Write requests queued and not yet taken by the writer.
    pub queue_depth: AtomicI64,
    /// Group commits (flushes).
    pub commits: AtomicU64,
    /// Requests committed.
    pub committed: AtomicU64,
    commit_micros: AtomicU64,
    buckets: [AtomicU64; BUCKETS.len()],
}

impl Metrics {
    pub(crate) fn commit(&self, requests: u64, took: Duration) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.committed.fetch_add(requests, Ordering::Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.commit_micros.fetch_add(micros, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        for (bound, count) in BUCKETS.iter().zip(&self.buckets) {
            if secs <= *bound {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        counter(
            "profiledb_requests_total",
            "Requests answered.",
            g(&self.requests),
        );
        counter(
            "profiledb_rejections_total",
            "Requests answered with a 4xx.",
            g(&self.rejections),
        );
        counter(
            "profiledb_unauthorized_total",
            "Requests answered 401.",
            g(&self.unauthorized),
        );
        counter(
            "profiledb_too_large_total",
            "Requests answered 413.",
            g(&self.too_large),
        );
        counter(
            "profiledb_overloaded_total",
            "Writes answered 429 because the queue was full.",
            g(&self.overloaded),
        );
        counter(
            "profiledb_failures_total",
            "Requests answered with a 5xx.",
            g(&self.failures),
        );
        counter(
            "profiledb_commits_total",
            "Group commits (one flush each).",
            g(&self.commits),
        );
        counter(
            "profiledb_committed_requests_total",
            "Write requests made durable.",
            g(&self.committed),
        );
        let _ = writeln!(
            out,
            "# HELP profiledb_queue_depth Write requests waiting for the writer.\n\
             # TYPE profiledb_queue_depth gauge\nprofiledb_queue_depth {}",
            self.queue_depth.load(Ordering::Relaxed).max(0)
        );
        let _ = writeln!(
            out,
            "# HELP profiledb_commit_seconds Time to apply and flush one group.\n\
             # TYPE profiledb_commit_seconds histogram"
        );
        for (bound, count) in BUCKETS.iter().zip(&self.buckets) {
            let _ = writeln!(
                out,
                "profiledb_commit_seconds_bucket{{le=\"{bound}\"}} {}",
                g(count)
            );
        }
        let commits = g(&self.commits);
        let _ = writeln!(
            out,
            "profiledb_commit_seconds_bucket{{le=\"+Inf\"}} {commits}\n\
             profiledb_commit_seconds_sum {}\nprofiledb_commit_seconds_count {commits}",
            g(&self.commit_micros) as f64 / 1e6
        );
        out
    }
}

/// Counts every answer by status.
pub(crate) async fn count(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    let m = &state.metrics;
    m.requests.fetch_add(1, Ordering::Relaxed);
    let status = res.status();
    if status.is_client_error() {
        m.rejections.fetch_add(1, Ordering::Relaxed);
        match status.as_u16() {
            401 => m.unauthorized.fetch_add(1, Ordering::Relaxed),
            413 => m.too_large.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
    } else if status.is_server_error() {
        m.failures.fetch_add(1, Ordering::Relaxed);
    }
    res
}
