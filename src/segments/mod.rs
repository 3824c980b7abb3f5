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
//! - Creating a data-driven segment whose condition compares a top-level attribute in
//!   order with a number (`attr.score > 5`, `attr.created_at > now-7d`) gives that
//!   attribute an ordered index first ([`compared_attributes`]), built from every person
//!   in the same commit as the segment, and kept by every write after (it outlives the
//!   segment): the initial build, the segment's upkeep and any query comparing the
//!   attribute read bitmaps instead of attribute records.
//! - Conditions that read the clock (`within`, `now`) are re-evaluated by
//!   [`ProfileDb::refresh`](crate::ProfileDb::refresh).

use std::collections::{BTreeMap, BTreeSet};

pub(crate) mod maintain;
pub(crate) mod members;

use crate::error::{InputError, InputReason, Result};
use crate::index::Touch;
use crate::query::eval::{Cond, Workspace};
use crate::query::{Atom, CmpOp, Expr, Literal, SegmentName};
use crate::store::records::{SegmentRecord, TopicRecord};
use crate::store::{Family, KeyBuf, SegmentsF, Store, TopicsF};

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

/// The top-level attributes `expr` compares in order (`<`, `<=`, `>`, `>=`) with a number
/// or `now±N`: creating a segment with such a condition gives each of them an ordered
/// index, so the comparison is answered from bitmaps (see
/// [`ProfileDb::create_segment`](crate::ProfileDb::create_segment)).
pub fn compared_attributes(expr: &Expr) -> BTreeSet<String> {
    fn walk(expr: &Expr, out: &mut BTreeSet<String>) {
        match expr {
            Expr::And(xs) | Expr::Or(xs) => xs.iter().for_each(|x| walk(x, out)),
            Expr::Not(x) => walk(x, out),
            Expr::Atom(Atom::Attr {
                path,
                op: CmpOp::Lt | CmpOp::Le | CmpOp::Gt | CmpOp::Ge,
                value: Literal::Int(_) | Literal::Float(_) | Literal::Now(_),
            }) => match path.as_slice() {
                [name] if !crate::query::eval::is_identifier(name) => {
                    out.insert(name.clone());
                }
                _ => {}
            },
            Expr::Atom(_) => {}
        }
    }
    let mut out = BTreeSet::new();
    walk(expr, &mut out);
    out
}

/// Key of the `topics` and `segments` families: the id, 4 bytes big-endian.
pub fn id_key(id: u32) -> Vec<u8> {
    KeyBuf::new().u32(id).done()
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
