//! Subscription topics and segments: definitions, initial builds, incremental
//! maintenance inside every commit, `refresh`, and the catalog the write path keeps in
//! memory.
//!
//! - **Topics** have an id, a name and a default. "Subscribed to topic N" means an
//!   explicit `cio_subscription_preferences.topics.topic_N = true`, or no explicit value
//!   and a topic that is opted in by default.
//! - **Manual segments** change only by add/remove (at most 1000 people per call, as the
//!   Track API allows).
//! - **Data-driven segments** are defined by a condition. Saving one computes its
//!   membership from the bitmaps (progress is reported for large databases); after that,
//!   every commit re-evaluates, for each person it touched, only the segments whose
//!   condition reads what changed (attributes, devices, relationships, an event or metric
//!   of the names it reads, or a segment it references), in dependency order, and records
//!   `segment_entered` / `segment_exited` in the person's timeline: per person and
//!   commit, one entry for the segments entered and one for those left
//!   (`data.segment_ids`, `data.segments`; `name` when it is a single segment), close to
//!   the shape Customer.io's activity export uses (`data.entered`). The initial build
//!   records no activity.
//! - A condition may reference other segments; a reference cycle is refused. References
//!   are stored by id (`segment:#3`), so renaming a segment never breaks one. Deleting a
//!   segment that others reference is refused, naming them.
//! - Conditions that read the clock (`within`, `now`) are re-evaluated by
//!   [`ProfileDb::refresh`](crate::ProfileDb::refresh).

use std::collections::{BTreeMap, BTreeSet};

use crate::audience::{holds, Cond, Source, TxnSource, Workspace};
use crate::error::{InputError, InputReason, Result};
use crate::index::{BitmapKey, Bitmaps, Delta, Touch, Touches};
use crate::model::{Map, Value};
use crate::people::Counters;
use crate::query::{Atom, Expr, SegmentName};
use crate::store::records::{ActivityRecord, SegmentRecord, TopicRecord};
use crate::store::{ActivityF, Family, KeyBuf, SegmentsF, Store, TopicsF, Txn};

/// Most people one manual-segment add or remove may name.
pub const MAX_SEGMENT_CHANGE: usize = 1000;

/// Activity type: the person entered a segment (`name` is the segment's name).
pub const SEGMENT_ENTERED: &str = "segment_entered";
/// Activity type: the person left a segment.
pub const SEGMENT_EXITED: &str = "segment_exited";

/// What a condition reads, to know which writes can change its result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reads {
    /// Identifiers or attributes (including unsubscribed and topics).
    pub attrs: bool,
    /// Devices.
    pub devices: bool,
    /// Relationships.
    pub objects: bool,
    /// Events by name (`None`: any).
    pub events: BTreeSet<String>,
    /// Delivery metrics by name.
    pub metrics: BTreeSet<String>,
    /// Segments it references.
    pub segments: BTreeSet<u32>,
}

impl Reads {
    /// What `expr` reads.
    pub fn of(expr: &Expr, ids: &BTreeMap<String, u32>) -> Reads {
        let mut r = Reads::default();
        r.add(expr, ids);
        r
    }

    fn add(&mut self, expr: &Expr, ids: &BTreeMap<String, u32>) {
        match expr {
            Expr::And(xs) | Expr::Or(xs) => xs.iter().for_each(|x| self.add(x, ids)),
            Expr::Not(x) => self.add(x, ids),
            Expr::Atom(a) => match a {
                Atom::All => {}
                Atom::Unsubscribed
                | Atom::Topic(_)
                | Atom::Attr { .. }
                | Atom::AttrExists { .. } => self.attrs = true,
                Atom::Segment(SegmentName::Id(id)) => {
                    self.segments.insert(*id);
                }
                Atom::Segment(SegmentName::Name(n)) => {
                    if let Some(id) = ids.get(n) {
                        self.segments.insert(*id);
                    }
                }
                Atom::Event(o) => {
                    self.events.insert(o.name.clone());
                }
                Atom::Delivery(o) => {
                    self.metrics.insert(o.name.clone());
                }
                Atom::Device { .. } => self.devices = true,
                Atom::Related { .. } => self.objects = true,
            },
        }
    }

    /// Whether a touch (plus segment changes so far) can change the result.
    fn affected_by(&self, t: &Touch, changed_segments: &BTreeSet<u32>) -> bool {
        t.created
            || (self.attrs && t.attrs)
            || (self.devices && t.devices)
            || (self.objects && !t.objects.is_empty())
            || t.events.iter().any(|(_, n, _)| self.events.contains(n))
            || t.events_gone
                .iter()
                .any(|(_, n, _)| self.events.contains(n))
            || t.metrics.iter().any(|m| self.metrics.contains(m))
            || !t.absorbed.is_empty()
            || self.segments.iter().any(|s| changed_segments.contains(s))
    }
}

/// One segment, resolved.
#[derive(Debug, Clone)]
pub struct SegmentDef {
    /// Its id.
    pub id: u32,
    /// Its name.
    pub name: String,
    /// The condition as parsed (data-driven segments).
    pub expr: Option<Expr>,
    /// The condition resolved against the workspace.
    pub cond: Option<Cond>,
    /// What the condition reads.
    pub reads: Reads,
    /// When it was created.
    pub created: i64,
}

impl SegmentDef {
    /// Whether its membership is computed from a condition.
    pub fn data_driven(&self) -> bool {
        self.cond.is_some()
    }
}

/// Topics and segments, resolved, kept in memory for the write path.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Topics by id.
    pub topics: BTreeMap<u32, TopicRecord>,
    /// Segments by id.
    pub segments: BTreeMap<u32, SegmentDef>,
    /// Data-driven segments in dependency order (referenced before referencing).
    pub order: Vec<u32>,
    /// Attributes with equality bitmaps.
    pub indexed: BTreeSet<String>,
    /// Attributes with an ordered (range) index.
    pub ranged: BTreeSet<String>,
}

impl Catalog {
    /// Segment ids by name.
    pub fn ids(&self) -> BTreeMap<String, u32> {
        self.segments
            .values()
            .map(|s| (s.name.clone(), s.id))
            .collect()
    }

    /// Resolves a condition against this catalog.
    ///
    /// # Errors
    /// [`Error::Input`](crate::Error::Input) for unknown segments or topics.
    pub fn resolve(&self, expr: &Expr) -> Result<Cond> {
        let indexed = &self.indexed;
        let ranged = &self.ranged;
        let ids = self.ids();
        let segment_ids: BTreeSet<u32> = self.segments.keys().copied().collect();
        let topics: BTreeMap<u32, bool> = self
            .topics
            .iter()
            .map(|(id, t)| (*id, t.default_subscribed))
            .collect();
        Cond::resolve(
            expr,
            &Workspace {
                segments: &ids,
                segment_ids: &segment_ids,
                topics: &topics,
                indexed,
                ranged,
            },
        )
    }

    /// Reads every topic and segment from the store and resolves the conditions.
    ///
    /// # Errors
    /// [`Error::Corrupted`](crate::Error::Corrupted) for damaged records or a stored
    /// condition that no longer parses.
    pub fn load(store: &Store) -> Result<Catalog> {
        let mut cat = Catalog::default();
        for (key, set) in [
            (crate::store::meta_keys::INDEXED, &mut cat.indexed),
            (crate::store::meta_keys::RANGED, &mut cat.ranged),
        ] {
            match store.get::<crate::store::MetaF>(key)? {
                Some(crate::store::records::MetaValue::Indexed(names)) => {
                    *set = names.into_iter().collect();
                }
                Some(_) => {
                    return Err(crate::store::corrupted(
                        Family::Meta,
                        key,
                        "expected a list of indexed attributes",
                    ))
                }
                None => {}
            }
        }
        for item in store.scan::<TopicsF>(&[], false, None) {
            let (key, rec) = item?;
            let (id, r) = crate::store::KeyReader::new(Family::Topics, &key).u32()?;
            r.end()?;
            cat.topics.insert(id, rec);
        }
        let mut raw = Vec::new();
        for item in store.scan::<SegmentsF>(&[], false, None) {
            let (key, rec) = item?;
            let (id, r) = crate::store::KeyReader::new(Family::Segments, &key).u32()?;
            r.end()?;
            let expr = match &rec.condition {
                Some(text) => Some(crate::query::parse(text).map_err(|e| {
                    crate::store::corrupted(
                        Family::Segments,
                        &key,
                        format!("stored condition does not parse: {e}"),
                    )
                })?),
                None => None,
            };
            raw.push((id, rec, expr));
        }
        for (id, rec, expr) in &raw {
            cat.segments.insert(
                *id,
                SegmentDef {
                    id: *id,
                    name: rec.name.clone(),
                    expr: expr.clone(),
                    cond: None,
                    reads: Reads::default(),
                    created: rec.created,
                },
            );
        }
        cat.finish()?;
        Ok(cat)
    }

    /// Resolves every condition and orders the data-driven segments by dependency.
    ///
    /// # Errors
    /// [`Error::Input`](crate::Error::Input) when a condition names an unknown segment or
    /// topic, or references form a cycle.
    pub fn finish(&mut self) -> Result<()> {
        let ids = self.ids();
        let mut resolved = BTreeMap::new();
        for (id, def) in &self.segments {
            if let Some(expr) = &def.expr {
                resolved.insert(*id, (self.resolve(expr)?, Reads::of(expr, &ids)));
            }
        }
        for (id, (cond, reads)) in resolved {
            if let Some(def) = self.segments.get_mut(&id) {
                def.cond = Some(cond);
                def.reads = reads;
            }
        }
        self.order = topo_order(&self.segments)?;
        Ok(())
    }
}

/// Data-driven segments ordered so every segment comes after those it references.
fn topo_order(segments: &BTreeMap<u32, SegmentDef>) -> Result<Vec<u32>> {
    fn visit(
        id: u32,
        segments: &BTreeMap<u32, SegmentDef>,
        state: &mut BTreeMap<u32, u8>,
        out: &mut Vec<u32>,
        path: &mut Vec<String>,
    ) -> Result<()> {
        match state.get(&id) {
            Some(2) => return Ok(()),
            Some(1) => {
                let name = segments
                    .get(&id)
                    .map(|s| s.name.clone())
                    .unwrap_or_default();
                path.push(name);
                return Err(InputError::invalid(
                    "condition",
                    format!("makes a reference cycle: {}", path.join(" → ")),
                )
                .into());
            }
            _ => {}
        }
        state.insert(id, 1);
        if let Some(def) = segments.get(&id) {
            path.push(def.name.clone());
            for dep in &def.reads.segments {
                visit(*dep, segments, state, out, path)?;
            }
            path.pop();
            if def.data_driven() {
                out.push(id);
            }
        }
        state.insert(id, 2);
        Ok(())
    }
    let mut state = BTreeMap::new();
    let mut out = Vec::new();
    for id in segments.keys() {
        visit(*id, segments, &mut state, &mut out, &mut Vec::new())?;
    }
    Ok(out)
}

/// Key of the `topics` and `segments` families: the id, 4 bytes big-endian.
pub fn id_key(id: u32) -> Vec<u8> {
    KeyBuf::new().u32(id).done()
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
            let mut src = TxnSource {
                txn,
                bitmaps,
                delta,
            };
            let mut cached = crate::audience::Cached::new(&mut src, pid);
            let mut view = Overlay {
                inner: &mut cached,
                local: BTreeMap::new(),
            };
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
                    view.local.insert(*id, want);
                    changed.insert(*id);
                }
            }
            view.local
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

/// A source whose segment memberships reflect changes decided earlier in the same
/// maintenance pass (dependents see what their dependencies just became).
struct Overlay<'s> {
    inner: &'s mut dyn crate::audience::Source,
    local: BTreeMap<u32, bool>,
}

impl crate::audience::Source for Overlay<'_> {
    fn person(
        &mut self,
        pid: u32,
    ) -> Result<Option<std::rc::Rc<crate::store::records::PersonRecord>>> {
        self.inner.person(pid)
    }
    fn attributes(
        &mut self,
        pid: u32,
    ) -> Result<Option<std::rc::Rc<crate::store::records::AttributesRecord>>> {
        self.inner.attributes(pid)
    }
    fn devices(&mut self, pid: u32) -> Result<Vec<crate::store::records::DeviceRecord>> {
        self.inner.devices(pid)
    }
    fn deliveries(&mut self, pid: u32) -> Result<Vec<crate::store::records::DeliveryRecord>> {
        self.inner.deliveries(pid)
    }
    fn occurrences(
        &mut self,
        pid: u32,
        kind: &str,
        name: &str,
        since: Option<i64>,
        limit: Option<usize>,
    ) -> Result<Vec<(i64, u64)>> {
        self.inner.occurrences(pid, kind, name, since, limit)
    }
    fn event_data(&mut self, pid: u32, time: i64, seq: u64) -> Result<Option<Value>> {
        self.inner.event_data(pid, time, seq)
    }
    fn member(&self, key: &BitmapKey, pid: u32) -> bool {
        match key {
            BitmapKey::Segment(id) => match self.local.get(id) {
                Some(m) => *m,
                None => self.inner.member(key, pid),
            },
            _ => self.inner.member(key, pid),
        }
    }
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

/// Checks a segment name.
pub fn check_name(name: &str) -> Result<(), InputError> {
    if name.trim().is_empty() {
        return Err(InputError::new("name", InputReason::Empty));
    }
    if name.len() > 150 {
        return Err(InputError::new(
            "name",
            InputReason::TooLong {
                len: name.len(),
                max: 150,
            },
        ));
    }
    Ok(())
}

/// A segment definition to store.
pub fn record_of(def: &SegmentDef) -> SegmentRecord {
    SegmentRecord {
        name: def.name.clone(),
        condition: def.expr.as_ref().map(|e| e.to_string()),
        created: def.created,
    }
}

/// Adds people to (or with `remove`, removes them from) a manual segment.
pub(crate) fn change_members(
    cx: &mut crate::people::Ctx<'_, '_>,
    segment: u32,
    people: &[crate::model::Ident],
    remove: bool,
) -> Result<crate::people::Outcome> {
    let Some(def) = cx.catalog.segments.get(&segment) else {
        return Err(InputError::invalid("segment", format!("#{segment} does not exist")).into());
    };
    if def.data_driven() {
        return Err(InputError::invalid(
            "segment",
            format!(
                "\"{}\" is data-driven: its members follow its condition and cannot be added or removed",
                def.name
            ),
        )
        .into());
    }
    if people.is_empty() {
        return Err(InputError::new("ids", InputReason::Empty).into());
    }
    if people.len() > MAX_SEGMENT_CHANGE {
        return Err(InputError::new(
            "ids",
            InputReason::TooMany {
                count: people.len(),
                max: MAX_SEGMENT_CHANGE,
            },
        )
        .into());
    }
    let key = BitmapKey::Segment(segment);
    let mut changed = 0;
    let mut unknown = 0;
    for ident in people {
        let norm = crate::people::normalize(cx.limits, ident)?;
        let Some(pid) = crate::people::lookup(cx.txn, ident.kind, &norm)? else {
            unknown += 1;
            continue;
        };
        let touch = cx.touches.of(pid);
        let now_in = touch
            .segments
            .get(&segment)
            .copied()
            .unwrap_or_else(|| cx.bitmaps.contains(&key, pid));
        if now_in == remove {
            touch.segments.insert(segment, !remove);
            changed += 1;
        }
    }
    Ok(crate::people::Outcome::Members { changed, unknown })
}

/// Rewrites segment references by name into references by id, so renames never break
/// a stored condition.
pub fn canonical(expr: &Expr, ids: &BTreeMap<String, u32>) -> Expr {
    match expr {
        Expr::And(xs) => Expr::And(xs.iter().map(|x| canonical(x, ids)).collect()),
        Expr::Or(xs) => Expr::Or(xs.iter().map(|x| canonical(x, ids)).collect()),
        Expr::Not(x) => Expr::Not(Box::new(canonical(x, ids))),
        Expr::Atom(Atom::Segment(SegmentName::Name(n))) => match ids.get(n) {
            Some(id) => Expr::Atom(Atom::Segment(SegmentName::Id(*id))),
            None => expr.clone(),
        },
        other => other.clone(),
    }
}
