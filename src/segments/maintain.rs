//! Segment upkeep inside every commit: the derived changes of what a commit touched
//! (bitmaps, data-driven segment memberships, entered/exited activity), staged with it.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::Result;
use crate::index::{BitmapKey, Bitmaps, Delta, Touches};
use crate::model::{Map, Value};
use crate::query::eval::holds;
use crate::query::source::{Cached, Reader, Source};
use crate::store::records::ActivityRecord;
use crate::store::{ActivityF, Counters, Txn};

use super::{Catalog, SEGMENT_ENTERED, SEGMENT_EXITED};

/// Plans the bitmap changes of what `touches` records and maintains the data-driven
/// segments; the commit logs the returned changes (`bitmap_log`).
pub(crate) fn stage(
    txn: &mut Txn<'_>,
    touches: &Touches,
    bitmaps: &Bitmaps,
    catalog: &Catalog,
    now: i64,
    counters: &mut Counters,
) -> Result<Delta> {
    if touches.is_empty() {
        return Ok(Delta::default());
    }
    // Once a day, the hours of the day leaving the recent window roll up into days; this
    // batch's own occurrences go where they belong after it.
    let rolled = bitmaps.roll_up(now, |pid| touches.is_deleted(pid));
    let hours_from = rolled
        .as_ref()
        .and_then(Delta::hours_from)
        .unwrap_or(bitmaps.hours_from());
    let planned = crate::index::plan(
        txn,
        touches,
        bitmaps,
        &catalog.indexed,
        &catalog.ranged,
        hours_from,
    )?;
    let mut delta = match rolled {
        Some(mut rolled) => {
            rolled.extend(planned);
            rolled
        }
        None => planned,
    };
    maintain(txn, touches, bitmaps, &mut delta, catalog, now, counters)?;
    delta.prune(bitmaps);
    // The changes themselves are persisted by the commit, as one `bitmap_log` record.
    Ok(delta)
}

/// Re-evaluates the data-driven segments for every person the batch touched, adds the
/// membership changes to `delta`, and records entered/exited activity for every segment
/// membership change (manual ones too).
pub(crate) fn maintain(
    txn: &mut Txn<'_>,
    touches: &Touches,
    bitmaps: &Bitmaps,
    delta: &mut Delta,
    catalog: &Catalog,
    now: i64,
    counters: &mut Counters,
) -> Result<()> {
    for (pid, t) in touches.iter() {
        if t.deleted {
            continue;
        }
        let mut changed: BTreeSet<u32> = t.segments.keys().copied().collect();
        let local = {
            let mut src = Reader::staged(txn, bitmaps, delta);
            let mut view = Cached::new(&mut src, pid);
            for id in &catalog.order {
                let Some(def) = catalog.segments.get(id) else {
                    continue;
                };
                let Some(cond) = &def.cond else {
                    continue;
                };
                if !def.reads.affected_by(t, &changed) {
                    continue;
                }
                let key = BitmapKey::Segment(*id);
                let want = holds(cond, pid, &mut view, now)?;
                if view.member(&key, pid) != want {
                    view.decided.insert(*id, want);
                    changed.insert(*id);
                }
            }
            view.decided
        };
        for (id, want) in local {
            delta.set(BitmapKey::Segment(id), pid, want);
        }
    }
    // Entered / exited activity for every segment membership that changes: per person,
    // one entry for the segments entered and one for those exited.
    let mut changes: BTreeMap<(u32, bool), Vec<u32>> = BTreeMap::new();
    for (k, pid, add) in delta.iter() {
        if let BitmapKey::Segment(id) = k {
            if bitmaps.contains(k, pid) != add && !touches.is_deleted(pid) {
                changes.entry((pid, add)).or_default().push(*id);
            }
        }
    }
    for ((pid, entered), mut ids) in changes {
        ids.sort_unstable();
        record(txn, counters, pid, now, catalog, &ids, entered);
    }
    Ok(())
}

/// Appends a segment entered (or exited) entry to `pid`'s timeline naming the segments:
/// `data` is `{"segment_ids": [...], "segments": [names]}`; `name` is the segment's name
/// when there is one.
pub(crate) fn record(
    txn: &mut Txn<'_>,
    counters: &mut Counters,
    pid: u32,
    now: i64,
    catalog: &Catalog,
    ids: &[u32],
    entered: bool,
) {
    let seq = counters.next_seq;
    counters.next_seq += 1;
    let names: Vec<String> = ids
        .iter()
        .map(|id| {
            catalog
                .segments
                .get(id)
                .map(|s| s.name.clone())
                .unwrap_or_default()
        })
        .collect();
    let mut data = Map::new();
    data.insert(
        "segment_ids".into(),
        Value::Array(ids.iter().map(|i| Value::Int(i64::from(*i))).collect()),
    );
    data.insert(
        "segments".into(),
        Value::Array(names.iter().map(|n| Value::from(n.as_str())).collect()),
    );
    txn.put::<ActivityF>(
        ActivityF::key(pid, now, seq),
        ActivityRecord {
            kind: if entered {
                SEGMENT_ENTERED
            } else {
                SEGMENT_EXITED
            }
            .to_owned(),
            name: match names.as_slice() {
                [one] => Some(one.clone()),
                _ => None,
            },
            data: Value::Map(data),
            event_id: None,
        },
    );
}
