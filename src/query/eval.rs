//! Evaluating conditions: audience queries over every person, and one person's
//! membership (for segment maintenance).
//!
//! A parsed [`Expr`] is first resolved against the workspace (segment names to ids,
//! topic defaults, which attributes have equality bitmaps) into a [`Cond`]. Atoms that a
//! bitmap answers exactly become set algebra; the rest are checked person by person, but
//! only on the candidates the bitmaps leave: an `and` evaluates its bitmap operands first
//! and narrows the set the others see, and every per-person atom starts from its own
//! candidate bitmap (people with the attribute, with the event, with a device...).
//!
//! Comparison semantics: numbers compare as numbers (a numeric string compares as its
//! number, since Customer.io hands attribute values around as strings); strings compare
//! lexicographically; `contains` is a substring of a string or a member of an array;
//! `starts_with` a string prefix; `now±N` is the evaluation time plus N seconds. A
//! comparison with an attribute that is absent is false, except `!=`, which is true.

use std::collections::{BTreeMap, BTreeSet};

use roaring::RoaringBitmap;

use crate::error::{Error, InputError, Result};
use crate::index::{eq_text, BitmapKey, Bitmaps};
use crate::model::Value;
use crate::query::{Atom, CmpOp, Expr, Filter, Literal, Occurrence, SegmentName};
use crate::store::event_blocks::{Cell, EventBlock, DAY_SECS};
use crate::store::records::DeliveryRecord;

use super::source::Source;

/// A condition resolved against the workspace.
#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    /// Every operand.
    And(Vec<Cond>),
    /// Any operand.
    Or(Vec<Cond>),
    /// Not the operand.
    Not(Box<Cond>),
    /// Everyone.
    All,
    /// Exactly the members of a bitmap.
    Key(BitmapKey),
    /// Subscribed to an opt-in-by-default topic: everyone but its explicit opt-outs.
    TopicDefaultIn(u32),
    /// Checked per person (on the candidates of its bitmap).
    Scan(Atom),
    /// A numeric comparison (`<`, `<=`, `>`, `>=`, or `=` when the attribute has no
    /// equality bitmaps) of a ranged attribute, answered by the bit slices of its
    /// ordered index.
    Range(Atom),
}

/// What the workspace knows that resolution needs.
pub struct Workspace<'a> {
    /// Segment ids by name.
    pub segments: &'a BTreeMap<String, u32>,
    /// Every segment id that exists.
    pub segment_ids: &'a BTreeSet<u32>,
    /// Topic defaults (opted in?) by id.
    pub topics: &'a BTreeMap<u32, bool>,
    /// Attributes with equality bitmaps.
    pub indexed: &'a BTreeSet<String>,
    /// Attributes with an ordered index.
    pub ranged: &'a BTreeSet<String>,
}

fn query_error(what: String) -> Error {
    InputError::invalid("condition", what).into()
}

/// True when a count comparison accepts zero occurrences.
fn admits_zero(count: Option<(CmpOp, u64)>) -> bool {
    match count {
        None => false,
        Some((op, n)) => cmp_u64(0, op, n),
    }
}

fn cmp_u64(a: u64, op: CmpOp, b: u64) -> bool {
    cmp_ordered(a, op, b)
}

/// `a op b` for an ordered comparison (`contains` and `starts_with` are false).
fn cmp_ordered<T: PartialOrd>(a: T, op: CmpOp, b: T) -> bool {
    match op {
        CmpOp::Eq => a == b,
        CmpOp::Ne => a != b,
        CmpOp::Lt => a < b,
        CmpOp::Le => a <= b,
        CmpOp::Gt => a > b,
        CmpOp::Ge => a >= b,
        CmpOp::Contains | CmpOp::StartsWith => false,
    }
}

/// True when an occurrence atom is just "ever did it at least once".
fn plain(occ: &Occurrence) -> bool {
    occ.filters.is_empty()
        && occ.within.is_none()
        && matches!(
            occ.count,
            None | Some((CmpOp::Ge, 1)) | Some((CmpOp::Gt, 0))
        )
}

impl Cond {
    /// Resolves `expr`.
    ///
    /// # Errors
    /// [`Error::Input`] on `condition` naming an unknown segment or topic.
    pub fn resolve(expr: &Expr, ws: &Workspace<'_>) -> Result<Cond> {
        Ok(match expr {
            Expr::And(xs) => Cond::And(
                xs.iter()
                    .map(|x| Cond::resolve(x, ws))
                    .collect::<Result<_>>()?,
            ),
            Expr::Or(xs) => Cond::Or(
                xs.iter()
                    .map(|x| Cond::resolve(x, ws))
                    .collect::<Result<_>>()?,
            ),
            Expr::Not(x) => Cond::Not(Box::new(Cond::resolve(x, ws)?)),
            Expr::Atom(a) => match a {
                Atom::All => Cond::All,
                Atom::Unsubscribed => Cond::Key(BitmapKey::Unsubscribed),
                Atom::Segment(SegmentName::Id(id)) => {
                    if !ws.segment_ids.contains(id) {
                        return Err(query_error(format!(
                            "names segment #{id}, which does not exist"
                        )));
                    }
                    Cond::Key(BitmapKey::Segment(*id))
                }
                Atom::Segment(SegmentName::Name(name)) => match ws.segments.get(name) {
                    Some(id) => Cond::Key(BitmapKey::Segment(*id)),
                    None => {
                        return Err(query_error(format!(
                            "names segment \"{name}\", which does not exist"
                        )))
                    }
                },
                Atom::Topic(n) => match ws.topics.get(n) {
                    Some(true) => Cond::TopicDefaultIn(*n),
                    Some(false) => Cond::Key(BitmapKey::TopicIn(*n)),
                    None => {
                        return Err(query_error(format!(
                            "names topic {n}, which is not defined"
                        )))
                    }
                },
                Atom::AttrExists { path } if path.len() == 1 => match path.first() {
                    Some(name) => Cond::Key(BitmapKey::HasAttr(name.clone())),
                    None => Cond::Scan(a.clone()),
                },
                Atom::Attr {
                    path,
                    op: CmpOp::Eq,
                    value,
                } if path.len() == 1 && !matches!(value, Literal::Now(_)) => {
                    match path.first().filter(|n| !is_identifier(n)) {
                        Some(name) if ws.indexed.contains(name) => Cond::Key(BitmapKey::AttrEq(
                            name.clone(),
                            eq_text(&literal_value(value, 0)),
                        )),
                        // A number equals exactly the values the ordered index holds
                        // at it (`3`, `3.0`, `"3"`).
                        Some(name)
                            if ws.ranged.contains(name)
                                && matches!(value, Literal::Int(_) | Literal::Float(_)) =>
                        {
                            Cond::Range(a.clone())
                        }
                        _ => Cond::Scan(a.clone()),
                    }
                }
                Atom::Attr {
                    path,
                    op: CmpOp::Lt | CmpOp::Le | CmpOp::Gt | CmpOp::Ge,
                    value: Literal::Int(_) | Literal::Float(_) | Literal::Now(_),
                } if path.len() == 1
                    && path
                        .first()
                        .is_some_and(|n| ws.ranged.contains(n) && !is_identifier(n)) =>
                {
                    Cond::Range(a.clone())
                }
                Atom::Related { type_id, object_id } => Cond::Key(match object_id {
                    Some(o) => BitmapKey::Related(*type_id, o.clone()),
                    None => BitmapKey::RelatedType(*type_id),
                }),
                Atom::Device {
                    field,
                    op: CmpOp::Eq,
                    value: Literal::String(p),
                } if field == "platform" => Cond::Key(BitmapKey::Platform(p.to_ascii_lowercase())),
                Atom::Event(occ) if plain(occ) => {
                    Cond::Key(BitmapKey::Event("event".into(), occ.name.clone()))
                }
                Atom::Delivery(occ) if plain(occ) => Cond::Key(BitmapKey::Metric(occ.name.clone())),
                other => Cond::Scan(other.clone()),
            },
        })
    }

    /// Whether the condition depends on the clock (`within`, `now`): such segments are
    /// re-evaluated by `refresh`.
    pub fn uses_clock(&self) -> bool {
        match self {
            Cond::And(xs) | Cond::Or(xs) => xs.iter().any(Cond::uses_clock),
            Cond::Not(x) => x.uses_clock(),
            Cond::Scan(atom) | Cond::Range(atom) => atom_uses_clock(atom),
            _ => false,
        }
    }
}

/// How a condition's result can change as the clock advances while the data stays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trend {
    /// It cannot change.
    Static,
    /// It can only turn from true to false (`within`, `> now-7d`): members can only
    /// leave, so re-evaluating the current members suffices.
    Decaying,
    /// It can only turn from false to true (`< now-7d`, `count < 3 within 1d`).
    Growing,
    /// Either way.
    Mixed,
}

impl Trend {
    fn flip(self) -> Trend {
        match self {
            Trend::Decaying => Trend::Growing,
            Trend::Growing => Trend::Decaying,
            other => other,
        }
    }

    fn join(self, other: Trend) -> Trend {
        match (self, other) {
            (Trend::Static, t) | (t, Trend::Static) => t,
            (a, b) if a == b => a,
            _ => Trend::Mixed,
        }
    }
}

fn op_trend(op: CmpOp) -> Trend {
    // A rising threshold (`now` grows): `> now-D` can only turn false, `< now-D` true.
    match op {
        CmpOp::Gt | CmpOp::Ge => Trend::Decaying,
        CmpOp::Lt | CmpOp::Le => Trend::Growing,
        _ => Trend::Mixed,
    }
}

fn atom_trend(atom: &Atom) -> Trend {
    match atom {
        Atom::Attr { op, value, .. } | Atom::Device { op, value, .. } => {
            if literal_uses_clock(value) {
                op_trend(*op)
            } else {
                Trend::Static
            }
        }
        Atom::Event(o) | Atom::Delivery(o) => {
            let filters = o.filters.iter().fold(Trend::Static, |t, f| {
                t.join(if literal_uses_clock(&f.value) {
                    Trend::Mixed
                } else {
                    Trend::Static
                })
            });
            let window = match (o.within, o.count) {
                (None, _) => Trend::Static,
                // A shrinking window can only lower the count.
                (Some(_), None | Some((CmpOp::Ge | CmpOp::Gt, _))) => Trend::Decaying,
                (Some(_), Some((CmpOp::Lt | CmpOp::Le, _))) => Trend::Growing,
                (Some(_), Some(_)) => Trend::Mixed,
            };
            filters.join(window)
        }
        _ => Trend::Static,
    }
}

impl Cond {
    /// How the result can move as the clock advances (segments it references count as
    /// `Mixed` when `moving` holds them: their membership may change in the same pass).
    pub fn trend(&self, moving: &BTreeSet<u32>) -> Trend {
        match self {
            Cond::And(xs) | Cond::Or(xs) => xs
                .iter()
                .fold(Trend::Static, |t, x| t.join(x.trend(moving))),
            Cond::Not(x) => x.trend(moving).flip(),
            Cond::Key(BitmapKey::Segment(id)) if moving.contains(id) => Trend::Mixed,
            Cond::Scan(a) | Cond::Range(a) => atom_trend(a),
            _ => Trend::Static,
        }
    }
}

fn literal_uses_clock(l: &Literal) -> bool {
    matches!(l, Literal::Now(_))
}

fn atom_uses_clock(atom: &Atom) -> bool {
    match atom {
        Atom::Attr { value, .. } | Atom::Device { value, .. } => literal_uses_clock(value),
        Atom::Event(o) | Atom::Delivery(o) => {
            o.within.is_some() || o.filters.iter().any(|f| literal_uses_clock(&f.value))
        }
        _ => false,
    }
}

/// A literal as a value, with `now±N` made concrete.
fn literal_value(l: &Literal, now: i64) -> Value {
    match l {
        Literal::String(s) => Value::String(s.clone()),
        Literal::Int(i) => Value::Int(*i),
        Literal::Float(x) => Value::Float(*x),
        Literal::Bool(b) => Value::Bool(*b),
        Literal::Now(off) => Value::Int(now.saturating_add(*off)),
    }
}

/// Compares a stored value (`None`: absent) with a literal.
pub fn compare(v: Option<&Value>, op: CmpOp, lit: &Literal, now: i64) -> bool {
    let Some(v) = v else {
        return op == CmpOp::Ne;
    };
    let l = literal_value(lit, now);
    let numeric = matches!(l, Value::Int(_) | Value::Float(_))
        || matches!(v, Value::Int(_) | Value::Float(_));
    let ord = if numeric {
        match (v.as_number(), l.as_number()) {
            (Some(a), Some(b)) => a.partial_cmp(&b),
            _ => None,
        }
    } else {
        match (v, &l) {
            (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
            (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
            _ => None,
        }
    };
    use std::cmp::Ordering::*;
    match op {
        CmpOp::Eq => ord == Some(Equal) || (ord.is_none() && *v == l),
        CmpOp::Ne => !(ord == Some(Equal) || (ord.is_none() && *v == l)),
        CmpOp::Lt => ord == Some(Less),
        CmpOp::Le => matches!(ord, Some(Less | Equal)),
        CmpOp::Gt => ord == Some(Greater),
        CmpOp::Ge => matches!(ord, Some(Greater | Equal)),
        CmpOp::Contains => match (v, &l) {
            (Value::String(a), Value::String(b)) => a.contains(b.as_str()),
            (Value::Array(items), _) => items.iter().any(|i| compare(Some(i), CmpOp::Eq, lit, now)),
            _ => false,
        },
        CmpOp::StartsWith => match (v, &l) {
            (Value::String(a), Value::String(b)) => a.starts_with(b.as_str()),
            _ => false,
        },
    }
}

fn filters_hold(filters: &[Filter], data: &Value, now: i64) -> bool {
    filters.iter().all(|f| {
        let v = data
            .as_map()
            .and_then(|m| crate::model::get_path(m, &f.path));
        compare(v, f.op, &f.value, now)
    })
}

fn delivery_field(d: &DeliveryRecord, path: &[String]) -> Option<Value> {
    let name = path.first()?;
    let s = |o: &Option<String>| o.as_ref().map(|v| Value::from(v.as_str()));
    match name.as_str() {
        "channel" | "type" => Some(Value::from(d.channel.as_str())),
        "message_id" => s(&d.message_id),
        "campaign_id" => s(&d.campaign_id),
        "broadcast_id" => s(&d.broadcast_id),
        "newsletter_id" => s(&d.newsletter_id),
        "recipient" => s(&d.recipient),
        "subject" => s(&d.subject),
        "status" => Some(Value::from(d.status.as_str())),
        _ => None,
    }
}

/// Whether a per-person atom holds for `pid`.
pub fn atom_holds(atom: &Atom, pid: u32, src: &mut dyn Source, now: i64) -> Result<bool> {
    Ok(match atom {
        Atom::All => true,
        Atom::Unsubscribed => src.member(&BitmapKey::Unsubscribed, pid),
        Atom::Segment(_) | Atom::Topic(_) | Atom::Related { .. } => false, // resolved to bitmaps
        Atom::AttrExists { path } => attr_value(src, pid, path)?.is_some(),
        Atom::Attr { path, op, value } => {
            compare(attr_value(src, pid, path)?.as_ref(), *op, value, now)
        }
        Atom::Event(occ) => {
            let since = occ.within.map(|w| now.saturating_sub(w));
            // Without filters, reading past what the count needs cannot change it.
            let needed = match occ.count {
                None => Some(1),
                Some((CmpOp::Ge, n)) => usize::try_from(n).ok(),
                Some((CmpOp::Gt, n)) => usize::try_from(n).ok().map(|n| n + 1),
                _ => None,
            };
            let limit = if occ.filters.is_empty() { needed } else { None };
            let mut n = 0u64;
            for (t, seq) in src.occurrences(pid, "event", &occ.name, since, limit)? {
                if !occ.filters.is_empty() {
                    let data = src.event_data(pid, t, seq)?.unwrap_or_default();
                    if !filters_hold(&occ.filters, &data, now) {
                        continue;
                    }
                }
                n += 1;
            }
            count_holds(occ.count, n)
        }
        Atom::Delivery(occ) => {
            let since = occ.within.map(|w| now.saturating_sub(w));
            let mut n = 0u64;
            for d in src.deliveries(pid)? {
                let Some(t) = d.metrics.get(&occ.name) else {
                    continue;
                };
                if since.is_some_and(|s| *t < s) {
                    continue;
                }
                if occ
                    .filters
                    .iter()
                    .all(|f| compare(delivery_field(&d, &f.path).as_ref(), f.op, &f.value, now))
                {
                    n += 1;
                }
            }
            count_holds(occ.count, n)
        }
        Atom::Device { field, op, value } => src.devices(pid)?.iter().any(|d| {
            let v = match field.as_str() {
                "platform" => Some(Value::from(d.platform.as_str())),
                "last_used" => Some(Value::Int(d.last_used)),
                "status" | "last_status" => Some(Value::from(d.status.as_str())),
                other => d.attributes.get(other).cloned(),
            };
            compare(v.as_ref(), *op, value, now)
        }),
    })
}

fn count_holds(count: Option<(CmpOp, u64)>, n: u64) -> bool {
    match count {
        None => n >= 1,
        Some((op, want)) => cmp_u64(n, op, want),
    }
}

/// An attribute by path; `id`, `email`, `phone`, `anonymous_id` and `cio_id` read the
/// identifiers.
/// Whether `attr.NAME` reads an identifier (from the person record, or derived from the
/// pid) rather than the attributes record, which is all the attribute indexes cover.
pub(crate) fn is_identifier(name: &str) -> bool {
    matches!(name, "cio_id" | "id" | "email" | "phone" | "anonymous_id")
}

fn attr_value(src: &mut dyn Source, pid: u32, path: &[String]) -> Result<Option<Value>> {
    let Some(first) = path.first() else {
        return Ok(None);
    };
    if path.len() == 1 {
        let ident = match first.as_str() {
            "cio_id" => return Ok(Some(Value::from(crate::model::PersonId(pid).cio_id()))),
            "id" | "email" | "phone" | "anonymous_id" => {
                src.person(pid)?.and_then(|p| match first.as_str() {
                    "id" => p.id.clone(),
                    "email" => p.email.clone(),
                    "phone" => p.phone.clone(),
                    _ => p.anonymous_id.clone(),
                })
            }
            _ => None,
        };
        if ident.is_some() {
            return Ok(ident.map(Value::String));
        }
    }
    Ok(src
        .attributes(pid)?
        .and_then(|a| crate::model::get_path(&a.values, path).cloned()))
}

/// Whether `cond` holds for `pid` (segment maintenance: bitmap atoms by membership).
pub fn holds(cond: &Cond, pid: u32, src: &mut dyn Source, now: i64) -> Result<bool> {
    Ok(match cond {
        Cond::And(xs) => {
            for x in xs {
                if !holds(x, pid, src, now)? {
                    return Ok(false);
                }
            }
            true
        }
        Cond::Or(xs) => {
            for x in xs {
                if holds(x, pid, src, now)? {
                    return Ok(true);
                }
            }
            false
        }
        Cond::Not(x) => !holds(x, pid, src, now)?,
        Cond::All => src.member(&BitmapKey::All, pid),
        Cond::Key(k) => src.member(k, pid),
        Cond::TopicDefaultIn(n) => {
            src.member(&BitmapKey::All, pid) && !src.member(&BitmapKey::TopicOut(*n), pid)
        }
        Cond::Scan(atom) | Cond::Range(atom) => atom_holds(atom, pid, src, now)?,
    })
}

/// Records, for `explain`, how each atom was answered.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Explain {
    /// One line per atom: `index`, `scan of N candidates`, or `event blocks` (rows read).
    pub lines: Vec<String>,
    /// People checked one by one, in all.
    pub scanned: u64,
}

/// Whether an event atom holds exactly when one occurrence in its window exists.
fn any_occurrence(occ: &Occurrence) -> bool {
    occ.filters.is_empty()
        && matches!(
            occ.count,
            None | Some((CmpOp::Ge, 1)) | Some((CmpOp::Gt, 0))
        )
}

/// The candidate bitmap of a per-person atom: everyone it could possibly hold for.
fn candidates(atom: &Atom, bitmaps: &Bitmaps, now: i64) -> Option<RoaringBitmap> {
    let get = |k: &BitmapKey| bitmaps.get(k).cloned().unwrap_or_default();
    match atom {
        Atom::Event(occ) if !admits_zero(occ.count) && occ.within.is_some() => {
            let since = now.saturating_sub(occ.within.unwrap_or_default());
            let (sure, edge) = bitmaps.occurrences_since("event", &occ.name, since);
            Some(sure | edge)
        }
        Atom::AttrExists { path } => path.first().map(|n| get(&BitmapKey::HasAttr(n.clone()))),
        Atom::Attr { path, op, .. } if *op != CmpOp::Ne => {
            path.first().map(|n| get(&BitmapKey::HasAttr(n.clone())))
        }
        Atom::Event(occ) if !admits_zero(occ.count) => {
            Some(get(&BitmapKey::Event("event".into(), occ.name.clone())))
        }
        Atom::Delivery(occ) if !admits_zero(occ.count) => {
            Some(get(&BitmapKey::Metric(occ.name.clone())))
        }
        Atom::Device { .. } => {
            let mut any = RoaringBitmap::new();
            for (k, b) in bitmaps.iter() {
                if matches!(k, BitmapKey::Platform(_)) {
                    any |= b;
                }
            }
            Some(any)
        }
        _ => None,
    }
}

/// The members of `within` for whom `cond` holds. `progress` is called with the number
/// of people checked one by one so far, every 4096 of them and at the end of each scan.
pub fn eval(
    cond: &Cond,
    within: &RoaringBitmap,
    bitmaps: &Bitmaps,
    src: &mut dyn Source,
    now: i64,
    explain: &mut Explain,
    progress: &mut dyn FnMut(u64),
) -> Result<RoaringBitmap> {
    let empty = RoaringBitmap::new();
    Ok(match cond {
        Cond::All => within.clone(),
        Cond::Key(k) => {
            explain.lines.push(format!("{k:?}: index"));
            within & bitmaps.get(k).unwrap_or(&empty)
        }
        Cond::TopicDefaultIn(n) => {
            explain
                .lines
                .push(format!("topic {n} (opted in by default): index"));
            within - bitmaps.get(&BitmapKey::TopicOut(*n)).unwrap_or(&empty)
        }
        Cond::Not(x) => within - eval(x, within, bitmaps, src, now, explain, progress)?,
        Cond::Or(xs) if xs.iter().all(|x| matches!(x, Cond::Key(_))) => {
            // Only bitmaps: their union (word-wise over dense containers), then `within`.
            let mut parts: Vec<&RoaringBitmap> = Vec::new();
            for x in xs {
                if let Cond::Key(k) = x {
                    explain.lines.push(format!("{k:?}: index"));
                    parts.extend(bitmaps.get(k));
                }
            }
            parts.sort_by_key(|b| std::cmp::Reverse(b.len()));
            let mut out = match parts.split_first() {
                Some((first, others)) => {
                    let mut out = (*first).clone();
                    for b in others {
                        out |= *b;
                    }
                    out
                }
                None => RoaringBitmap::new(),
            };
            out &= within;
            out
        }
        Cond::Or(xs) => {
            let mut out = RoaringBitmap::new();
            for x in xs {
                out |= eval(x, within, bitmaps, src, now, explain, progress)?;
            }
            out
        }
        Cond::And(xs) => {
            // Plain bitmap operands are combined in place, smallest first: members
            // (`&=`), then exclusions (`-=`); then ordered-index ranges, composites and
            // per-person atoms, each seeing only what the ones before it left.
            let mut members: Vec<&RoaringBitmap> = Vec::new();
            let mut excluded: Vec<&RoaringBitmap> = Vec::new();
            let mut rest: Vec<&Cond> = Vec::new();
            for x in xs {
                match x {
                    Cond::All => {}
                    Cond::Key(k) => {
                        explain.lines.push(format!("{k:?}: index"));
                        members.push(bitmaps.get(k).unwrap_or(&empty));
                    }
                    Cond::TopicDefaultIn(n) => {
                        explain
                            .lines
                            .push(format!("topic {n} (opted in by default): index"));
                        if let Some(out) = bitmaps.get(&BitmapKey::TopicOut(*n)) {
                            excluded.push(out);
                        }
                    }
                    Cond::Not(inner) if matches!(**inner, Cond::Key(_)) => {
                        if let Cond::Key(k) = &**inner {
                            explain.lines.push(format!("{k:?}: index"));
                            if let Some(b) = bitmaps.get(k) {
                                excluded.push(b);
                            }
                        }
                    }
                    other => rest.push(other),
                }
            }
            members.sort_by_key(|b| b.len());
            let mut cur = match members.split_first() {
                Some((first, others)) => {
                    let mut cur = (*first).clone();
                    cur &= within;
                    for b in others {
                        if cur.is_empty() {
                            break;
                        }
                        cur &= *b;
                    }
                    cur
                }
                None => within.clone(),
            };
            for b in excluded {
                cur -= b;
            }
            rest.sort_by_key(|c| match c {
                Cond::Range(_) => 0,
                Cond::Scan(_) => 2,
                _ => 1,
            });
            for x in rest {
                if cur.is_empty() {
                    break;
                }
                cur = eval(x, &cur, bitmaps, src, now, explain, progress)?;
            }
            cur
        }
        Cond::Range(atom) => {
            explain.lines.push(format!("{atom}: ordered index"));
            match atom {
                Atom::Attr { path, op, value } => match path.first() {
                    Some(name) => match literal_value(value, now).as_number() {
                        Some(x) => src.range(name, *op, x, Some(within))?,
                        None => RoaringBitmap::new(),
                    },
                    None => RoaringBitmap::new(),
                },
                _ => RoaringBitmap::new(),
            }
        }
        Cond::Scan(Atom::Event(occ)) if occ.within.is_some() && any_occurrence(occ) => {
            // Everyone with an occurrence in an hour (or a day) wholly inside the window
            // holds; only those seen in the bucket the window starts inside alone are
            // checked: an hour's person by person, a day's against its event blocks.
            let since = now.saturating_sub(occ.within.unwrap_or_default());
            let (sure, edge) = bitmaps.occurrences_since("event", &occ.name, since);
            let edge = within & &edge;
            if crate::index::day_of(since) < bitmaps.hours_from() {
                // The window starts in a day kept whole: who of that day's people has an
                // occurrence at or after its start is read from the day's event blocks
                // (every tracked event has its row there), not person by person.
                let (found, rows) = if edge.is_empty() {
                    (RoaringBitmap::new(), 0)
                } else {
                    day_edge("event", &occ.name, since, &edge, src)?
                };
                explain.lines.push(format!(
                    "event:{} within: hour and day index, {rows} rows of the window's first day \
                     read from event blocks for {} candidates",
                    occ.name,
                    edge.len()
                ));
                return Ok((within & &sure) | found);
            }
            explain.lines.push(format!(
                "event:{} within: hour index, scan of {} candidates in the window's first bucket",
                occ.name,
                edge.len()
            ));
            let mut out = within & &sure;
            scan(
                &Atom::Event(occ.clone()),
                &edge,
                src,
                now,
                explain,
                progress,
                &mut out,
            )?;
            out
        }
        Cond::Scan(atom) => {
            if let Atom::Event(occ) = atom {
                // One person's timeline costs about what a block does, and the blocks
                // hold everyone's rows: person by person only for a few people among
                // many. The blocks need no candidate bitmap: their rows are the
                // candidates.
                let everyone = bitmaps.get(&BitmapKey::All).map_or(0, RoaringBitmap::len);
                let few = |n: u64| n <= FEW_CANDIDATES && n * 16 < everyone;
                if !within.is_empty() && !few(within.len()) {
                    return from_blocks(occ, within, src, now, explain);
                }
            }
            let cands = match candidates(atom, bitmaps, now) {
                Some(c) => within & c,
                None => within.clone(),
            };
            explain
                .lines
                .push(format!("{atom}: scan of {} candidates", cands.len()));
            let mut out = RoaringBitmap::new();
            scan(atom, &cands, src, now, explain, progress, &mut out)?;
            out
        }
    })
}

/// An event atom with at most this many candidates (and they a small part of everyone)
/// is checked person by person; otherwise from the event's blocks.
const FEW_CANDIDATES: u64 = 256;

/// How one filter reads a block: its property's column, and the answer for each of the
/// block's strings and for a missing property.
struct FilterPlan<'f> {
    filter: &'f Filter,
    column: Option<usize>,
    /// The path goes below the top-level property: a scalar there has nothing below it.
    deep: bool,
    absent: bool,
    strings: Vec<bool>,
    /// The literal as a number, when it is one and the operator orders: then a number
    /// cell compares as `compare` would, without building a value.
    number: Option<f64>,
}

impl<'f> FilterPlan<'f> {
    fn new(filter: &'f Filter, block: &EventBlock, now: i64) -> FilterPlan<'f> {
        let absent = compare(None, filter.op, &filter.value, now);
        let first = filter.path.first();
        let column = first.and_then(|n| block.names.binary_search(n).ok());
        let deep = filter.path.len() > 1;
        let strings = match (column, deep) {
            (Some(_), false) => block
                .strings
                .iter()
                .map(|s| {
                    compare(
                        Some(&Value::String(s.clone())),
                        filter.op,
                        &filter.value,
                        now,
                    )
                })
                .collect(),
            _ => Vec::new(),
        };
        let number = match (&filter.value, filter.op) {
            (_, CmpOp::Contains | CmpOp::StartsWith) => None,
            (Literal::Int(_) | Literal::Float(_) | Literal::Now(_), _) => {
                literal_value(&filter.value, now).as_number()
            }
            _ => None,
        };
        FilterPlan {
            filter,
            column: if first.is_some() { column } else { None },
            deep,
            absent,
            strings,
            number,
        }
    }

    /// Whether the filter holds for row `at`; `None` when only the `activity` record
    /// can tell.
    fn holds(&self, block: &EventBlock, at: usize, now: i64) -> Option<bool> {
        if self.filter.path.is_empty() {
            return Some(self.absent);
        }
        let cell = match self.column {
            Some(c) => *block.columns.get(c)?.get(at)?,
            None => Cell::Absent,
        };
        match cell {
            Cell::Absent if *block.overflow.get(at)? => None,
            Cell::Absent => Some(self.absent),
            Cell::Opaque => None,
            _ if self.deep => Some(self.absent),
            Cell::Str(i) => self.strings.get(i as usize).copied(),
            Cell::Int(i) if self.number.is_some() => Some(cmp_number(i as f64, self)),
            Cell::Float(x) if self.number.is_some() => Some(cmp_number(x, self)),
            other => Some(compare(
                block.value(other).as_ref(),
                self.filter.op,
                &self.filter.value,
                now,
            )),
        }
    }
}

/// `compare` of a number cell with a plan's number literal (both finite).
fn cmp_number(a: f64, plan: &FilterPlan<'_>) -> bool {
    cmp_ordered(a, plan.filter.op, plan.number.unwrap_or_default())
}

/// Occurrences counted per person: a dense array over small pids, a map beyond.
#[derive(Default)]
struct Counts {
    dense: Vec<u32>,
    sparse: BTreeMap<u32, u32>,
}

const DENSE_PIDS: u32 = 1 << 24;

impl Counts {
    fn add(&mut self, pid: u32) {
        if pid < DENSE_PIDS {
            let i = pid as usize;
            if self.dense.len() <= i {
                self.dense.resize(i + 1, 0);
            }
            if let Some(n) = self.dense.get_mut(i) {
                *n = n.saturating_add(1);
            }
        } else {
            let n = self.sparse.entry(pid).or_default();
            *n = n.saturating_add(1);
        }
    }

    /// Everyone counted, and those of them whose count passes `keep`. Built from byte
    /// bitsets: pushing members one at a time costs far more.
    fn split(&self, keep: impl Fn(u32) -> bool) -> (RoaringBitmap, RoaringBitmap) {
        let bytes = self.dense.len().div_ceil(8);
        let (mut seen, mut held) = (vec![0u8; bytes], vec![0u8; bytes]);
        for (i, &n) in self.dense.iter().enumerate() {
            if n > 0 {
                let bit = 1u8 << (i % 8);
                if let Some(b) = seen.get_mut(i / 8) {
                    *b |= bit;
                }
                if keep(n) {
                    if let Some(b) = held.get_mut(i / 8) {
                        *b |= bit;
                    }
                }
            }
        }
        let mut seen = RoaringBitmap::from_lsb0_bytes(0, &seen);
        let mut held = RoaringBitmap::from_lsb0_bytes(0, &held);
        for (&pid, &n) in &self.sparse {
            seen.insert(pid);
            if keep(n) {
                held.insert(pid);
            }
        }
        (seen, held)
    }
}

/// Who among `edge` has an occurrence of `kind`/`name` at or after `since` on the day
/// `since` falls in, from that day's event blocks; with the rows read.
fn day_edge(
    kind: &str,
    name: &str,
    since: i64,
    edge: &RoaringBitmap,
    src: &mut dyn Source,
) -> Result<(RoaringBitmap, u64)> {
    let day = since.div_euclid(DAY_SECS);
    let first_sec = since.saturating_sub(crate::store::day_start(day).unwrap_or(since));
    let mut found = RoaringBitmap::new();
    let mut rows = 0u64;
    src.event_blocks(kind, name, Some(since), &mut |d, block| {
        if d != day {
            return Ok(false);
        }
        for (_, pid, sec, _) in block.rows() {
            rows += 1;
            if i64::from(sec) >= first_sec && edge.contains(pid) {
                found.insert(pid);
            }
        }
        Ok(true)
    })?;
    Ok((found, rows))
}

/// An event atom (filters, a count, a window) answered set-at-a-time from the event's
/// blocks of the days in its window, among `within`. Rows whose filtered properties a
/// block does not hold are checked against their `activity` records.
fn from_blocks(
    occ: &Occurrence,
    within: &RoaringBitmap,
    src: &mut dyn Source,
    now: i64,
    explain: &mut Explain,
) -> Result<RoaringBitmap> {
    let since = occ.within.map(|w| now.saturating_sub(w));
    let since_day = since.map(|t| t.div_euclid(DAY_SECS));
    let mut counts = Counts::default();
    let mut unsure: Vec<(u32, i64, u64)> = Vec::new();
    let (mut rows, mut blocks) = (0u64, 0u64);
    src.event_blocks("event", &occ.name, since, &mut |day, block| {
        blocks += 1;
        // The key's day was checked when it was decoded: its seconds fit an `i64`.
        let start = crate::store::day_start(day).unwrap_or_default();
        let first_sec = match since {
            Some(t) if Some(day) == since_day => t.saturating_sub(start),
            _ => 0,
        };
        let plans: Vec<FilterPlan<'_>> = occ
            .filters
            .iter()
            .map(|f| FilterPlan::new(f, &block, now))
            .collect();
        for (at, pid, sec, seq) in block.rows() {
            if i64::from(sec) < first_sec {
                continue;
            }
            rows += 1;
            let mut verdict = Some(true);
            for plan in &plans {
                match plan.holds(&block, at, now) {
                    Some(true) => {}
                    Some(false) => {
                        verdict = Some(false);
                        break;
                    }
                    None => verdict = None,
                }
            }
            match verdict {
                Some(true) => counts.add(pid),
                Some(false) => {}
                None => unsure.push((pid, start.saturating_add(i64::from(sec)), seq)),
            }
        }
        Ok(true)
    })?;
    let read = unsure.len();
    for (pid, t, seq) in unsure {
        if !within.contains(pid) {
            continue;
        }
        let data = src.event_data(pid, t, seq)?.unwrap_or_default();
        if filters_hold(&occ.filters, &data, now) {
            counts.add(pid);
        }
    }
    explain.lines.push(format!(
        "{}: event blocks, {rows} rows in {blocks} blocks, {read} read from activity",
        Atom::Event(occ.clone())
    ));
    let (seen, held) = counts.split(|n| count_holds(occ.count, u64::from(n)));
    Ok(if admits_zero(occ.count) {
        (within - &seen) | (within & &held)
    } else {
        within & &held
    })
}

/// Checks `atom` for each of `candidates` one by one, adding to `out` those it holds
/// for, and reporting progress every 4096 people and at the end.
fn scan(
    atom: &Atom,
    candidates: &RoaringBitmap,
    src: &mut dyn Source,
    now: i64,
    explain: &mut Explain,
    progress: &mut dyn FnMut(u64),
    out: &mut RoaringBitmap,
) -> Result<()> {
    for pid in candidates {
        if atom_holds(atom, pid, src, now)? {
            out.insert(pid);
        }
        explain.scanned += 1;
        if explain.scanned % 4096 == 0 {
            progress(explain.scanned);
        }
    }
    progress(explain.scanned);
    Ok(())
}
