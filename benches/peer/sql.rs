//! The condition language compiled to the SQL a competent engineer would write over the
//! peer's tables: an audience is a compound SELECT of person ids (INTERSECT for `and`,
//! EXCEPT for `and not`, UNION for `or`), every atom answered by an index; a segment
//! check for one person is a boolean expression of indexed EXISTS probes.
//!
//! `:now` stands for the clock, `:pid` for the person.

use std::collections::{BTreeMap, BTreeSet};

use profiledb::query::{Atom, CmpOp, Expr, Literal, Occurrence, SegmentName};

use super::{EQ_INDEXED, RANGE_INDEXED};

/// What a condition reads, to know which writes can change it.
#[derive(Debug, Clone, Default)]
pub struct Reads {
    pub attrs: bool,
    pub events: bool,
    pub devices: bool,
    pub relations: bool,
    pub clock: bool,
    pub segments: BTreeSet<u32>,
}

/// Context: segment ids by name, topic defaults.
pub struct Names<'a> {
    pub segments: &'a BTreeMap<String, u32>,
    pub topics: &'a BTreeMap<u32, bool>,
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn literal(l: &Literal, reads: &mut Reads) -> String {
    match l {
        Literal::String(s) => quote(s),
        Literal::Int(i) => i.to_string(),
        Literal::Float(f) => format!("{f:?}"),
        Literal::Bool(b) => if *b { "1" } else { "0" }.to_owned(), // json_extract's true/false
        Literal::Now(d) => {
            reads.clock = true;
            format!("(:now + {d})")
        }
    }
}

fn json_path(path: &[String]) -> String {
    quote(&format!("$.{}", path.join(".")))
}

fn cmp(lhs: &str, op: CmpOp, rhs: &str) -> String {
    match op {
        CmpOp::Eq => format!("{lhs} = {rhs}"),
        CmpOp::Ne => format!("{lhs} <> {rhs}"),
        CmpOp::Lt => format!("{lhs} < {rhs}"),
        CmpOp::Le => format!("{lhs} <= {rhs}"),
        CmpOp::Gt => format!("{lhs} > {rhs}"),
        CmpOp::Ge => format!("{lhs} >= {rhs}"),
        CmpOp::Contains => format!("instr({lhs}, {rhs}) > 0"),
        CmpOp::StartsWith => format!("substr({lhs}, 1, length({rhs})) = {rhs}"),
    }
}

/// Whether the peer has an expression index on the attribute at `path` (see
/// `SqliteEngine::index_attributes`).
fn indexed(path: &[String]) -> bool {
    matches!(path, [name] if EQ_INDEXED.contains(&name.as_str())
        || RANGE_INDEXED.contains(&name.as_str()))
}

/// `json_extract(data, '$.path') OP value`, over the `attributes` table.
fn attr_cmp(path: &[String], op: CmpOp, value: &Literal, reads: &mut Reads) -> String {
    reads.attrs = true;
    let lhs = format!("json_extract(data, {})", json_path(path));
    let rhs = literal(value, reads);
    cmp(&lhs, op, &rhs)
}

fn segment_id(name: &SegmentName, names: &Names<'_>) -> u32 {
    match name {
        SegmentName::Id(id) => *id,
        SegmentName::Name(n) => *names
            .segments
            .get(n)
            .unwrap_or_else(|| panic!("unknown segment `{n}`")),
    }
}

/// The WHERE conditions of an event atom over `activity`.
fn event_where(occ: &Occurrence, reads: &mut Reads) -> String {
    reads.events = true;
    let mut w = format!("kind = 'event' AND name = {}", quote(&occ.name));
    if let Some(within) = occ.within {
        reads.clock = true;
        w.push_str(&format!(" AND time >= :now - {within}"));
    }
    for f in &occ.filters {
        let lhs = format!("json_extract(data, {})", json_path(&f.path));
        let rhs = literal(&f.value, reads);
        w.push_str(&format!(" AND {}", cmp(&lhs, f.op, &rhs)));
    }
    w
}

fn count_holds(count: Option<(CmpOp, u64)>) -> Option<String> {
    match count {
        None | Some((CmpOp::Ge, 1)) => None,
        Some((op, n)) => {
            let admits_zero = match op {
                CmpOp::Lt | CmpOp::Le => true,
                CmpOp::Eq | CmpOp::Ge => n == 0,
                CmpOp::Ne => n != 0,
                _ => false,
            };
            assert!(
                !admits_zero,
                "counts that admit zero are not in the workload"
            );
            Some(cmp("count(*)", op, &n.to_string()))
        }
    }
}

/// A SELECT of the ids of everyone matching an atom; `true` when it is compound (and
/// must be wrapped to be an operand).
fn atom_set(a: &Atom, names: &Names<'_>, reads: &mut Reads) -> (String, bool) {
    match a {
        Atom::All => ("SELECT pid FROM people".into(), false),
        Atom::Unsubscribed => {
            reads.attrs = true;
            (
                "SELECT pid FROM people WHERE unsubscribed = 1".into(),
                false,
            )
        }
        Atom::Segment(name) => {
            let id = segment_id(name, names);
            reads.segments.insert(id);
            (
                format!("SELECT pid FROM segment_members WHERE seg = {id}"),
                false,
            )
        }
        Atom::Topic(n) => {
            reads.attrs = true;
            if names.topics.get(n).copied().unwrap_or(false) {
                (
                    format!(
                        "SELECT pid FROM people EXCEPT SELECT pid FROM topic_prefs \
                         WHERE topic = {n} AND subscribed = 0"
                    ),
                    true,
                )
            } else {
                (
                    format!("SELECT pid FROM topic_prefs WHERE topic = {n} AND subscribed = 1"),
                    false,
                )
            }
        }
        Atom::Attr { path, op, value } => (
            format!(
                "SELECT pid FROM attributes WHERE {}",
                attr_cmp(path, *op, value, reads)
            ),
            false,
        ),
        Atom::AttrExists { path } => {
            reads.attrs = true;
            (
                format!(
                    "SELECT pid FROM attributes WHERE json_type(data, {}) IS NOT NULL",
                    json_path(path)
                ),
                false,
            )
        }
        Atom::Event(occ) => {
            let w = event_where(occ, reads);
            match count_holds(occ.count) {
                None => (
                    format!("SELECT DISTINCT pid FROM activity WHERE {w}"),
                    false,
                ),
                Some(h) => (
                    format!("SELECT pid FROM activity WHERE {w} GROUP BY pid HAVING {h}"),
                    false,
                ),
            }
        }
        Atom::Delivery(_) => panic!("delivery conditions are not in the workload"),
        Atom::Device { field, op, value } => {
            reads.devices = true;
            let rhs = literal(value, reads);
            let lhs = match field.as_str() {
                "platform" | "last_used" | "status" => field.clone(),
                other => format!("json_extract(attrs, {})", quote(&format!("$.{other}"))),
            };
            (
                format!(
                    "SELECT DISTINCT pid FROM devices WHERE {}",
                    cmp(&lhs, *op, &rhs)
                ),
                false,
            )
        }
        Atom::Related { type_id, object_id } => {
            reads.relations = true;
            match object_id {
                Some(o) => (
                    format!(
                        "SELECT pid FROM relationships WHERE type = {type_id} AND oid = {}",
                        quote(o)
                    ),
                    false,
                ),
                None => (
                    format!("SELECT DISTINCT pid FROM relationships WHERE type = {type_id}"),
                    false,
                ),
            }
        }
    }
}

fn operand((sql, compound): (String, bool)) -> String {
    if compound {
        format!("SELECT pid FROM ({sql})")
    } else {
        sql
    }
}

/// A SELECT of the ids of everyone matching `e`; `true` when compound.
pub fn set(e: &Expr, names: &Names<'_>, reads: &mut Reads) -> (String, bool) {
    match e {
        Expr::Atom(a) => atom_set(a, names, reads),
        Expr::And(xs) => {
            let mut pos = Vec::new();
            let mut neg = Vec::new();
            // Comparisons on attributes without an index: a filter on the rows the other
            // operands select (looked up by rowid), not a scan of every person.
            let mut filters = Vec::new();
            for x in xs {
                match x {
                    Expr::Not(inner) => neg.push(operand(set(inner, names, reads))),
                    Expr::Atom(Atom::Attr { path, op, value }) if !indexed(path) => {
                        filters.push(attr_cmp(path, *op, value, reads));
                    }
                    other => pos.push(operand(set(other, names, reads))),
                }
            }
            if !filters.is_empty() {
                let within = if pos.is_empty() {
                    String::new()
                } else {
                    format!("pid IN ({}) AND ", pos.join(" INTERSECT "))
                };
                pos = vec![format!(
                    "SELECT pid FROM attributes WHERE {within}{}",
                    filters.join(" AND ")
                )];
            }
            if pos.is_empty() {
                pos.push("SELECT pid FROM people".to_owned());
            }
            let mut sql = pos.join(" INTERSECT ");
            for n in neg {
                sql.push_str(" EXCEPT ");
                sql.push_str(&n);
            }
            (sql, true)
        }
        Expr::Or(xs) => {
            let parts: Vec<String> = xs.iter().map(|x| operand(set(x, names, reads))).collect();
            (parts.join(" UNION "), true)
        }
        Expr::Not(inner) => (
            format!(
                "SELECT pid FROM people EXCEPT {}",
                operand(set(inner, names, reads))
            ),
            true,
        ),
    }
}

/// `SELECT count(*)` of an audience.
pub fn count(e: &Expr, names: &Names<'_>) -> String {
    let (sql, _) = set(e, names, &mut Reads::default());
    format!("SELECT count(*) FROM ({sql})")
}

fn atom_holds(a: &Atom, names: &Names<'_>, reads: &mut Reads) -> String {
    match a {
        Atom::All => "1".into(),
        Atom::Unsubscribed => {
            reads.attrs = true;
            "EXISTS (SELECT 1 FROM people WHERE pid = :pid AND unsubscribed = 1)".into()
        }
        Atom::Segment(name) => {
            let id = segment_id(name, names);
            reads.segments.insert(id);
            format!("EXISTS (SELECT 1 FROM segment_members WHERE seg = {id} AND pid = :pid)")
        }
        Atom::Topic(n) => {
            reads.attrs = true;
            if names.topics.get(n).copied().unwrap_or(false) {
                format!(
                    "NOT EXISTS (SELECT 1 FROM topic_prefs WHERE topic = {n} AND subscribed = 0 \
                     AND pid = :pid)"
                )
            } else {
                format!(
                    "EXISTS (SELECT 1 FROM topic_prefs WHERE topic = {n} AND subscribed = 1 \
                     AND pid = :pid)"
                )
            }
        }
        Atom::Attr { path, op, value } => format!(
            "EXISTS (SELECT 1 FROM attributes WHERE pid = :pid AND {})",
            attr_cmp(path, *op, value, reads)
        ),
        Atom::AttrExists { path } => {
            reads.attrs = true;
            format!(
                "EXISTS (SELECT 1 FROM attributes WHERE pid = :pid AND json_type(data, {}) IS NOT NULL)",
                json_path(path)
            )
        }
        Atom::Event(occ) => {
            let w = event_where(occ, reads);
            match count_holds(occ.count) {
                None => format!("EXISTS (SELECT 1 FROM activity WHERE pid = :pid AND {w})"),
                Some(h) => format!("(SELECT {h} FROM activity WHERE pid = :pid AND {w})"),
            }
        }
        Atom::Delivery(_) => panic!("delivery conditions are not in the workload"),
        Atom::Device { field, op, value } => {
            reads.devices = true;
            let rhs = literal(value, reads);
            let lhs = match field.as_str() {
                "platform" | "last_used" | "status" => field.clone(),
                other => format!("json_extract(attrs, {})", quote(&format!("$.{other}"))),
            };
            format!(
                "EXISTS (SELECT 1 FROM devices WHERE pid = :pid AND {})",
                cmp(&lhs, *op, &rhs)
            )
        }
        Atom::Related { type_id, object_id } => {
            reads.relations = true;
            match object_id {
                Some(o) => format!(
                    "EXISTS (SELECT 1 FROM relationships WHERE pid = :pid AND type = {type_id} \
                     AND oid = {})",
                    quote(o)
                ),
                None => format!(
                    "EXISTS (SELECT 1 FROM relationships WHERE pid = :pid AND type = {type_id})"
                ),
            }
        }
    }
}

/// A boolean SQL expression: does person `:pid` match `e`?
pub fn holds(e: &Expr, names: &Names<'_>, reads: &mut Reads) -> String {
    match e {
        Expr::Atom(a) => atom_holds(a, names, reads),
        Expr::And(xs) => {
            let parts: Vec<String> = xs
                .iter()
                .map(|x| format!("({})", holds(x, names, reads)))
                .collect();
            parts.join(" AND ")
        }
        Expr::Or(xs) => {
            let parts: Vec<String> = xs
                .iter()
                .map(|x| format!("({})", holds(x, names, reads)))
                .collect();
            parts.join(" OR ")
        }
        Expr::Not(inner) => format!("NOT ({})", holds(inner, names, reads)),
    }
}
