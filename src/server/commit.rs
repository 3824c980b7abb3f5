//! Group commit: a bounded queue in front of one writer thread.
//!
//! Each write request becomes a [`Work`] queued with a one-shot channel for its answer.
//! The writer blocks for the first queued request, then takes whatever else is queued
//! (up to the group size), applies each request on its own (one atomic
//! [`write_batch`](ProfileDb::write_batch) or [`ingest`](ProfileDb::ingest), with the
//! handle's buffered durability), makes the whole group durable with one
//! [`flush`](ProfileDb::flush), and only then answers each request. While it flushes,
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
    let mut answers: Vec<(oneshot::Sender<Done>, Done, bool)> = Vec::with_capacity(n);
    for job in group.drain(..) {
        let (done, wrote) = apply(db, job.work);
        answers.push((job.reply, done, wrote));
    }
    let flushed = if answers.iter().any(|(_, _, wrote)| *wrote) {
        db.flush().map_err(|e| e.to_string())
    } else {
        Ok(())
    };
    metrics.commit(n as u64, started.elapsed());
    for (reply, done, wrote) in answers {
        let done = match &flushed {
            Err(why) if wrote => Done::FlushFailed(why.clone()),
            _ => done,
        };
        // The client may have gone; its write is durable all the same.
        let _ = reply.send(done);
    }
}

/// Applies one request; the flag says whether it may have written something.
fn apply(db: &ProfileDb, work: Work) -> (Done, bool) {
    // The library promises no panic escapes it; should one slip through, only this
    // request fails and the writer carries on.
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match work {
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
    }));
    run.unwrap_or_else(|_| {
        (
            Done::FlushFailed("internal failure while applying the request".into()),
            true,
        )
    })
}
