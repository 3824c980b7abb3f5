//! Group commit: a bounded queue in front of one writer thread.
//!
//! Each write request becomes a [`Work`] queued with a one-shot channel for its answer.
//! The writer blocks for the first queued request, then takes whatever else is queued
//! (up to the group size), applies each request as its own atomic unit with the
//! handle's buffered durability, makes the whole group durable with one
//! [`flush`](ProfileDb::flush), and only then answers each request. Requests of one
//! kind share library calls: a run of operation requests is one
//! [`write_batch`](ProfileDb::write_batch), split around any request it refuses, and a
//! run of single messages one [`ingest`](ProfileDb::ingest) of them as a batch, which
//! the library applies item by item with the same result as alone; so the cost of a
//! commit is paid once per group, not once per request. While it flushes,
//! the next group queues up, so the number of requests per fsync grows with the number
//! of clients waiting.
//!
//! A request whose writes were refused is answered with the refusal (nothing of it was
//! written); when the flush fails, every request of the group that wrote something is
//! answered with the failure, since whether it is on disk is unknown.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use serde_json::Value as Json;
use tokio::sync::oneshot;

use super::metrics::Metrics;
use crate::{Error, Op, Outcome, ProfileDb, Report};

/// What one request asks the writer to do.
#[derive(Debug)]
pub enum Work {
    /// Operations applied as one atomic batch.
    Ops(Vec<Op>),
    /// A message for [`ProfileDb::ingest`] (Track v2, Pipelines, webhook, batches).
    Ingest(Json),
}

/// The writer's answer to one request, given after its group was flushed.
#[derive(Debug)]
pub enum Done {
    /// The operations' outcomes, or why they were refused (nothing written).
    Ops(Result<Vec<Outcome>, Error>),
    /// The ingest report, or a fatal error.
    Ingest(Result<Report, Error>),
    /// The writes were applied but the flush that makes them durable failed.
    FlushFailed(String),
}

/// Why a request could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The queue is full: retry later (429).
    Full,
    /// The server is shutting down (503).
    Closed,
}

struct Job {
    work: Work,
    reply: oneshot::Sender<Done>,
}

enum Msg {
    Job(Job),
    /// Commit what is queued, flush and stop; answered with the final flush's result.
    Stop(oneshot::Sender<Result<(), Error>>),
}

/// The handle handlers queue work through.
#[derive(Clone)]
pub struct Writer {
    tx: SyncSender<Msg>,
    metrics: Arc<Metrics>,
}

impl Writer {
    /// Queues `work` and waits for its answer.
    ///
    /// # Errors
    /// [`Refused::Full`] when the queue is full, [`Refused::Closed`] when the writer
    /// has stopped (shutting down).
    pub async fn submit(&self, work: Work) -> Result<Done, Refused> {
        let (reply, answer) = oneshot::channel();
        self.metrics.queue_depth.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(Msg::Job(Job { work, reply })) {
            Ok(()) => {}
            Err(e) => {
                self.metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
                return Err(match e {
                    TrySendError::Full(_) => {
                        self.metrics.overloaded.fetch_add(1, Ordering::Relaxed);
                        Refused::Full
                    }
                    TrySendError::Disconnected(_) => Refused::Closed,
                });
            }
        }
        answer.await.map_err(|_| Refused::Closed)
    }

    /// Tells the writer to commit what is queued, flush and stop; waits for it.
    pub(crate) async fn stop(&self) -> Result<(), Error> {
        let (reply, answer) = oneshot::channel();
        let tx = self.tx.clone();
        // `send` blocks while the queue is full, which is exactly when the writer is
        // busy draining it.
        let sent = tokio::task::spawn_blocking(move || tx.send(Msg::Stop(reply))).await;
        if !matches!(sent, Ok(Ok(()))) {
            return Ok(());
        }
        answer.await.unwrap_or(Ok(()))
    }
}

/// Starts the writer thread over `db`.
///
/// # Errors
/// When the thread cannot be spawned.
pub(crate) fn start(
    db: ProfileDb,
    queue_depth: usize,
    max_group: usize,
    metrics: Arc<Metrics>,
) -> std::io::Result<(Writer, JoinHandle<()>)> {
    let (tx, rx) = sync_channel(queue_depth.max(1));
    let m = metrics.clone();
    let thread = std::thread::Builder::new()
        .name("profiledb-writer".into())
        .spawn(move || writer_loop(&db, &rx, max_group.max(1), &m))?;
    Ok((Writer { tx, metrics }, thread))
}

fn writer_loop(db: &ProfileDb, rx: &Receiver<Msg>, max_group: usize, metrics: &Metrics) {
    let mut group = Vec::with_capacity(max_group);
    let mut stop = None;
    loop {
        match rx.recv() {
            Ok(Msg::Job(j)) => group.push(j),
            Ok(Msg::Stop(s)) => stop = Some(s),
            Err(_) => return,
        }
        while stop.is_none() && group.len() < max_group {
            match rx.try_recv() {
                Ok(Msg::Job(j)) => group.push(j),
                Ok(Msg::Stop(s)) => stop = Some(s),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        if let Some(done) = stop.take() {
            // Whatever was queued before the stop is committed too.
            while let Ok(Msg::Job(j)) = rx.try_recv() {
                group.push(j);
            }
            commit_group(db, &mut group, metrics);
            let _ = done.send(db.flush());
            return;
        }
        commit_group(db, &mut group, metrics);
    }
}

fn commit_group(db: &ProfileDb, group: &mut Vec<Job>, metrics: &Metrics) {
    if group.is_empty() {
        return;
    }
    let started = Instant::now();
    let n = group.len();
    metrics.queue_depth.fetch_sub(n as i64, Ordering::Relaxed);
    let (works, replies): (Vec<Work>, Vec<oneshot::Sender<Done>>) =
        group.drain(..).map(|j| (j.work, j.reply)).unzip();
    let answers = apply_all(db, works);
    let flushed = if answers.iter().any(|(_, wrote)| *wrote) {
        db.flush().map_err(|e| e.to_string())
    } else {
        Ok(())
    };
    metrics.commit(n as u64, started.elapsed());
    for (reply, (done, wrote)) in replies.into_iter().zip(answers) {
        let done = match &flushed {
            Err(why) if wrote => Done::FlushFailed(why.clone()),
            _ => done,
        };
        // The client may have gone; its write is durable all the same.
        let _ = reply.send(done);
    }
}

/// How many batch items an ingest request becomes when it shares one library call with
/// others: 1 for a single message, its item count for a batch; `None` when it must go
/// alone (an extension message, a batch that is not an array, anything not an
/// object). Inside a batch the library applies each item exactly as alone.
fn items(work: &Work) -> Option<usize> {
    let Work::Ingest(Json::Object(m)) = work else {
        return None;
    };
    match m.get("batch") {
        Some(Json::Array(items)) => Some(items.len()),
        Some(_) => None,
        None => (m.get("type").and_then(Json::as_str) != Some("profiledb")).then_some(1),
    }
}

/// Most operations (or batch items) one shared library call takes: past a few hundred,
/// one bigger transaction costs more than it saves.
const MAX_MERGED: usize = 256;

fn mergeable(work: &Work) -> bool {
    items(work).is_some()
}

/// Applies the group's requests in order, each as its own atomic unit, with as few
/// library calls as possible: a run of operation requests is one
/// [`write_batch`](ProfileDb::write_batch) (split around any request it refuses), a run
/// of single messages one [`ingest`](ProfileDb::ingest) of them as a batch (which
/// applies each item as if alone). Each answer says whether it may have written.
fn apply_all(db: &ProfileDb, works: Vec<Work>) -> Vec<(Done, bool)> {
    let mut out: Vec<(Done, bool)> = Vec::with_capacity(works.len());
    let mut works = works.into_iter().peekable();
    while let Some(first) = works.next() {
        match first {
            Work::Ops(ops) => {
                let mut size = ops.len();
                let mut run = vec![ops];
                while let Some(Work::Ops(next)) = works.peek() {
                    if size + next.len() > MAX_MERGED {
                        break;
                    }
                    size += next.len();
                    if let Some(Work::Ops(more)) = works.next() {
                        run.push(more);
                    }
                }
                out.extend(guarded(run.len(), || apply_ops(db, &run)));
            }
            first if mergeable(&first) => {
                let mut size = items(&first).unwrap_or(1);
                let mut run = vec![first];
                while let Some(next) = works.peek().and_then(items) {
                    if size + next > MAX_MERGED {
                        break;
                    }
                    size += next;
                    if let Some(more) = works.next() {
                        run.push(more);
                    }
                }
                out.extend(guarded(run.len(), || ingest_run(db, run)));
            }
            other => out.extend(guarded(1, || vec![apply_one(db, other)])),
        }
    }
    out
}

/// Runs `f`, answering `n` requests. The library promises no panic escapes it; should
/// one slip through, these requests fail and the writer carries on.
fn guarded(n: usize, f: impl FnOnce() -> Vec<(Done, bool)>) -> Vec<(Done, bool)> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        (0..n)
            .map(|_| {
                (
                    Done::FlushFailed("internal failure while applying the request".into()),
                    true,
                )
            })
            .collect()
    })
}

fn apply_one(db: &ProfileDb, work: Work) -> (Done, bool) {
    match work {
        Work::Ops(ops) => {
            let r = db.write_batch(&ops);
            let wrote = r.is_ok();
            (Done::Ops(r), wrote)
        }
        Work::Ingest(msg) => {
            let r = db.ingest(&msg);
            let wrote = r.as_ref().map_or(true, |rep| rep.applied > 0);
            (Done::Ingest(r), wrote)
        }
    }
}

/// Applies each request's operations atomically, all in one `write_batch` when none is
/// refused; a refused request is answered with its refusal and the others are applied
/// around it.
fn apply_ops(db: &ProfileDb, run: &[Vec<Op>]) -> Vec<(Done, bool)> {
    if let [only] = run {
        let r = db.write_batch(only);
        let wrote = r.is_ok();
        return vec![(Done::Ops(r), wrote)];
    }
    let all: Vec<Op> = run.iter().flatten().cloned().collect();
    match db.write_batch(&all) {
        Ok(outcomes) => {
            let mut outcomes = outcomes.into_iter();
            run.iter()
                .map(|ops| {
                    (
                        Done::Ops(Ok(outcomes.by_ref().take(ops.len()).collect())),
                        true,
                    )
                })
                .collect()
        }
        Err(Error::InBatch { index, source }) => {
            // Which request holds operation `index`, and where its operations start.
            let mut start = 0;
            let mut owner = run.len();
            for (r, ops) in run.iter().enumerate() {
                if index < start + ops.len() {
                    owner = r;
                    break;
                }
                start += ops.len();
            }
            let (Some(before), Some(after)) = (run.get(..owner), run.get(owner + 1..)) else {
                return one_by_one(db, run);
            };
            let mut out = apply_ops(db, before);
            out.push((
                Done::Ops(Err(Error::InBatch {
                    index: index - start,
                    source,
                })),
                false,
            ));
            if !after.is_empty() {
                out.extend(apply_ops(db, after));
            }
            out
        }
        // Not attributable to one request: apply them one by one.
        Err(_) => one_by_one(db, run),
    }
}

fn one_by_one(db: &ProfileDb, run: &[Vec<Op>]) -> Vec<(Done, bool)> {
    run.iter()
        .map(|ops| {
            let r = db.write_batch(ops);
            let wrote = r.is_ok();
            (Done::Ops(r), wrote)
        })
        .collect()
}

/// Ingests the run's messages and batches as one batch and splits the report per
/// request, naming each refusal as the request alone would get it: a single message's
/// without the `batch[i].` prefix, a batch's with its own item index.
fn ingest_run(db: &ProfileDb, run: Vec<Work>) -> Vec<(Done, bool)> {
    if run.len() == 1 {
        return run.into_iter().map(|w| apply_one(db, w)).collect();
    }
    // Each request's first item in the combined batch, its item count, and whether it
    // was a batch.
    let mut spans = Vec::with_capacity(run.len());
    let mut all = Vec::new();
    for w in run {
        let Work::Ingest(Json::Object(mut m)) = w else {
            continue;
        };
        let start = all.len();
        match m.remove("batch") {
            Some(Json::Array(items)) => {
                spans.push((start, items.len(), true));
                all.extend(items);
            }
            _ => {
                spans.push((start, 1, false));
                all.push(Json::Object(m));
            }
        }
    }
    let mut batch = serde_json::Map::new();
    batch.insert("batch".into(), Json::Array(all));
    let report = match db.ingest(&Json::Object(batch)) {
        Ok(r) => r,
        Err(e) => {
            let why = e.to_string();
            return spans
                .iter()
                .map(|_| (Done::FlushFailed(why.clone()), true))
                .collect();
        }
    };
    let mut reports: Vec<Report> = spans
        .iter()
        .map(|(_, len, _)| Report {
            applied: *len as u64,
            rejected: Vec::new(),
        })
        .collect();
    for r in report.rejected {
        let Some(g) = r.item else { continue };
        let Some(at) = spans.iter().position(|(s, len, _)| g >= *s && g < s + len) else {
            continue;
        };
        let (Some((start, _, was_batch)), Some(rep)) = (spans.get(at), reports.get_mut(at)) else {
            continue;
        };
        let local = g - start;
        rep.applied = rep.applied.saturating_sub(1);
        rep.rejected.push(crate::Rejection {
            item: was_batch.then_some(local),
            error: renamed(r.error, g, was_batch.then_some(local)),
        });
    }
    reports
        .into_iter()
        .map(|rep| {
            let wrote = rep.applied > 0;
            (Done::Ingest(Ok(rep)), wrote)
        })
        .collect()
}

/// The refusal of combined batch item `g` as its request alone would get it: item
/// `local` of its own batch, or (`None`) a single message.
fn renamed(e: Error, g: usize, local: Option<usize>) -> Error {
    match e {
        Error::Input(ie) => {
            let prefix = format!("batch[{g}]");
            let field = match (ie.field.strip_prefix(&prefix), local) {
                (Some(rest), Some(l)) => format!("batch[{l}]{rest}"),
                (Some(""), None) => "message".to_owned(),
                (Some(rest), None) => rest.strip_prefix('.').unwrap_or(rest).to_owned(),
                (None, _) => ie.field,
            };
            Error::Input(crate::InputError::new(field, ie.reason))
        }
        other => other,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test code")]
mod tests {
    use super::*;
    use crate::{Ident, Identify};
    use serde_json::json;

    fn report(d: &(Done, bool)) -> &Report {
        match &d.0 {
            Done::Ingest(Ok(r)) => r,
            other => panic!("not a report: {other:?}"),
        }
    }

    #[test]
    fn merged_ingest_answers_each_request_as_alone() {
        let dir = tempfile::tempdir().unwrap();
        let db = ProfileDb::open(dir.path()).unwrap();
        let run = vec![
            Work::Ingest(
                json!({"type": "person", "action": "identify", "identifiers": {"id": "a"}}),
            ),
            Work::Ingest(json!({"type": "person", "action": "fly", "identifiers": {"id": "b"}})),
            Work::Ingest(json!({"batch": [
                {"type": "person", "action": "identify", "identifiers": {"id": "c"}},
                {"type": "person", "action": "identify", "identifiers": {}},
            ]})),
            Work::Ingest(json!({"batch": []})),
        ];
        let out = ingest_run(&db, run);
        assert_eq!(out.len(), 4);
        assert_eq!((report(&out[0]).applied, out[0].1), (1, true));
        let r1 = report(&out[1]);
        assert_eq!((r1.applied, r1.rejected[0].item), (0, None));
        assert_eq!(r1.rejected[0].field(), Some("action"));
        let r2 = report(&out[2]);
        assert_eq!((r2.applied, r2.rejected[0].item), (1, Some(1)));
        assert_eq!(r2.rejected[0].field(), Some("batch[1].identifiers"));
        assert_eq!((report(&out[3]).applied, out[3].1), (0, false));
        assert!(db.person(&Ident::id("a")).unwrap().is_some());
        assert!(db.person(&Ident::id("c")).unwrap().is_some());
        assert!(db.person(&Ident::id("b")).unwrap().is_none());
    }

    #[test]
    fn a_full_queue_refuses_at_once_and_answers_429() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // A writer that never takes anything: the queue holds one request.
        let (tx, _rx) = sync_channel(1);
        let metrics = Arc::new(Metrics::default());
        let writer = Writer {
            tx,
            metrics: metrics.clone(),
        };
        runtime.block_on(async {
            let first = writer.clone();
            let waiting = tokio::spawn(async move { first.submit(Work::Ops(Vec::new())).await });
            tokio::task::yield_now().await;
            let second = writer.submit(Work::Ops(Vec::new())).await;
            assert_eq!(second.unwrap_err(), Refused::Full);
            let res = super::super::reply::not_queued(Refused::Full);
            assert_eq!(res.status(), axum::http::StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(res.headers()["retry-after"], "1");
            waiting.abort();
        });
        assert_eq!(metrics.overloaded.load(Ordering::Relaxed), 1);
        assert_eq!(metrics.queue_depth.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn merged_ops_split_around_a_refused_request() {
        let dir = tempfile::tempdir().unwrap();
        let db = ProfileDb::open(dir.path()).unwrap();
        let run = vec![
            vec![Op::Identify(Identify::new(Ident::id("a")))],
            vec![
                Op::Identify(Identify::new(Ident::id("b"))),
                Op::Identify(Identify::new(Ident::id("b2")).set("x", "y".repeat(5000))),
            ],
            vec![Op::Identify(Identify::new(Ident::id("c")))],
        ];
        let out = apply_ops(&db, &run);
        assert!(matches!(&out[0], (Done::Ops(Ok(o)), true) if o.len() == 1));
        match &out[1] {
            (Done::Ops(Err(Error::InBatch { index, .. })), false) => assert_eq!(*index, 1),
            other => panic!("{other:?}"),
        }
        assert!(matches!(&out[2], (Done::Ops(Ok(_)), true)));
        assert!(
            db.person(&Ident::id("b")).unwrap().is_none(),
            "nothing of a refused request"
        );
        assert!(db.person(&Ident::id("c")).unwrap().is_some());
    }
}
