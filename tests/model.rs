//! Model-based property test of the people operations.
//!
//! Random sequences of identify (addressed by id, email, phone or cio_id; bodies setting
//! and removing identifiers and attributes, dotted keys, `_update`, `_timestamp`),
//! delete, suppress, unsuppress, small `write_batch`es of those, and reopen run against
//! the real database and against a plain in-memory model written from the documented
//! rules: the `src/people.rs` module docs, the docs of `Identify`, `Outcome` and the
//! operations, and sections 1 and 2 of the model doc. After every step the two must
//! agree on:
//! - the outcome of the operation, or that it was refused with an input error or
//!   `Error::Suppressed` (for a batch: `Error::InBatch` naming the same operation) and
//!   left everything unchanged;
//! - who every identifier of a small fixed pool names, and that person in full
//!   (identifiers, attributes, attribute timestamps, created/updated times);
//! - whether each identifier of the pool is suppressed;
//! - the full list of people, and each person's timeline (kinds, names, times, data);
//! - `verify` finding nothing wrong (nothing left that belongs to nobody).
//!
//! The pool is small so that collisions (identifier conflicts, lookups through body
//! identifiers, suppressed identifiers) happen often. Everything is deterministic: a
//! fixed proptest seed, no failure persistence, a manual clock.
//!
//! Where the docs leave a case open the model does what the code does, and says so in a
//! comment. It departs from the code where the docs are clear:
//! - removing the identifier a new person is addressed by is an input error (nobody
//!   exists yet to record a refusal on);
//! - `_timestamp`: an update older than an attribute's last set (or removal), even one
//!   that left the value as it was, leaves the attribute alone;
//! - the person found through a body identifier who has a different identifier of the
//!   addressed kind is a conflict, whether or not the body names that kind too;
//! - suppressing an identifier already suppressed changes nothing, so unsuppressing any
//!   identifier of a group frees the whole group;
//! - removing a dotted key that is not there changes nothing.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::RngSeed;

use profiledb::{
    kinds, ActivityFilter, Clock, Durability, Error, Ident, IdentKind, Identify, IgnoreReason,
    ManualClock, Map, Op, Outcome, Person, PersonId, ProfileDb, Value,
};

const T0: i64 = 1_767_225_600;
/// Highest internal person id the generated `cio_id`s name (some name nobody).
const MAX_CIO_PID: u32 = 10;

// ---------------------------------------------------------------------------------------
// Operations

/// One write.
#[derive(Debug, Clone)]
enum Write {
    Identify {
        addr: Ident,
        body: Vec<(String, Value)>,
        update_only: bool,
        /// `_timestamp`, relative to the clock at the step.
        ts_delta: Option<i64>,
    },
    Delete(Ident),
    Suppress(Ident),
    Unsuppress(Ident),
}

#[derive(Debug, Clone)]
enum Step {
    /// One write through its own method (`identify`, `delete`...).
    One(Write),
    /// Writes through `write_batch`: all of them or none.
    Batch(Vec<Write>),
    /// Drop the handle and open the directory again.
    Reopen,
}

#[derive(Debug, Clone)]
struct Case {
    allow_email_update_by_id: bool,
    /// Each step with how many seconds the clock moves before it.
    steps: Vec<(i64, Step)>,
}

fn id_value() -> impl Strategy<Value = String> {
    (0..5u8).prop_map(|i| format!("u{i}"))
}

fn email_value() -> impl Strategy<Value = String> {
    (0..4u8, any::<bool>()).prop_map(|(i, upper)| {
        if upper {
            format!("E{i}@X.io")
        } else {
            format!("e{i}@x.io")
        }
    })
}

fn anon_value() -> impl Strategy<Value = String> {
    (0..3u8).prop_map(|i| format!("a{i}"))
}

fn phone_value() -> impl Strategy<Value = String> {
    (1..3u8).prop_map(|i| format!("+1555000{i}"))
}

fn cio_value() -> impl Strategy<Value = String> {
    let pid = prop_oneof![3 => 1..=4u32, 1 => 1..=MAX_CIO_PID];
    (pid, any::<bool>()).prop_map(|(pid, upper)| {
        let s = PersonId(pid).cio_id();
        if upper {
            s.to_ascii_uppercase()
        } else {
            s
        }
    })
}

/// Identifiers for addressing an identify.
fn addr_strategy() -> impl Strategy<Value = Ident> {
    prop_oneof![
        16 => id_value().prop_map(Ident::id),
        16 => email_value().prop_map(Ident::email),
        8 => cio_value().prop_map(Ident::cio_id),
        2 => phone_value().prop_map(Ident::phone),
        // Refused as input: anonymous_id cannot address; a malformed email.
        1 => prop_oneof![
            anon_value().prop_map(Ident::anonymous_id),
            Just(Ident::email("e0@x")),
            Just(Ident::email("not-an-email")),
        ],
    ]
}

/// Identifiers for delete, suppress and unsuppress: mostly a few, so that unsuppress
/// often finds something suppressed.
fn target_strategy() -> impl Strategy<Value = Ident> {
    prop_oneof![
        12 => prop_oneof![
            Just(Ident::id("u0")),
            Just(Ident::id("u1")),
            Just(Ident::email("e0@x.io")),
            Just(Ident::email("E1@X.io")),
        ],
        2 => id_value().prop_map(Ident::id),
        2 => email_value().prop_map(Ident::email),
        2 => cio_value().prop_map(Ident::cio_id),
        1 => phone_value().prop_map(Ident::phone),
        1 => anon_value().prop_map(Ident::anonymous_id),
        1 => Just(Ident::email("not-an-email")),
    ]
}

fn removal() -> impl Strategy<Value = Value> {
    prop_oneof![Just(Value::Null), Just(Value::from(""))]
}

fn attr_value() -> impl Strategy<Value = Value> {
    let mut topics = Map::new();
    topics.insert("topic_1".into(), Value::Bool(true));
    let mut prefs = Map::new();
    prefs.insert("topics".into(), Value::Map(topics));
    prop_oneof![
        4 => (0..3i64).prop_map(Value::Int),
        2 => any::<bool>().prop_map(Value::Bool),
        3 => prop_oneof![Just("x"), Just("y"), Just("TRUE"), Just("1")].prop_map(Value::from),
        3 => removal(),
        1 => Just(Value::Float(1.5)),
        1 => prop_oneof![
            Just(Value::Map(prefs)),
            Just(Value::Map(Map::new())),
            Just(Value::from(vec![1i64, 2])),
        ],
    ]
}

fn body_entry() -> impl Strategy<Value = (String, Value)> {
    let key = |k: &'static str| Just(k.to_owned());
    prop_oneof![
        // Identifiers.
        12 => (key("id"), prop_oneof![
            6 => id_value().prop_map(Value::from),
            1 => removal(),
            1 => Just(Value::Int(7)),
        ]),
        12 => (key("email"), prop_oneof![
            6 => email_value().prop_map(Value::from),
            1 => removal(),
        ]),
        8 => (key("anonymous_id"), prop_oneof![
            4 => anon_value().prop_map(Value::from),
            2 => removal(),
            1 => Just(Value::Int(3)),
        ]),
        4 => (key("phone"), prop_oneof![
            3 => phone_value().prop_map(Value::from),
            1 => removal(),
        ]),
        // Ordinary attributes, dotted keys, the two that are converted.
        48 => (
            prop_oneof![
                key("plan"),
                key("age"),
                key("prefs"),
                key("prefs.lang"),
                key("prefs.topics"),
                key("prefs.topics.topic_1"),
                key("prefs.topics.topic_2"),
                key("unsubscribed"),
            ],
            attr_value(),
        ),
        4 => (key("created_at"), prop_oneof![
            Just(Value::Int(1_700_000_000)),
            Just(Value::from("1700000001")),
            Just(Value::Float(2.0)),
            removal(),
        ]),
        // cio_id: allowed only as a repeat of a cio_id address.
        1 => (key("cio_id"), cio_value().prop_map(Value::from)),
        // Refused as input.
        1 => prop_oneof![
            (
                prop_oneof![
                    key("_created_in_customerio_at"),
                    key("relationship"),
                    key("cio_relationships"),
                    key("prefs..lang"),
                    key("_update"),
                ],
                attr_value(),
            ),
            (key("plan"), Just(Value::Float(f64::NAN))),
            (key("created_at"), Just(Value::from("soon"))),
            (key("email"), Just(Value::Int(5))),
            (key("phone"), Just(Value::from("555"))),
        ],
    ]
}

fn write_strategy() -> impl Strategy<Value = Write> {
    prop_oneof![
        14 => (
            addr_strategy(),
            prop::collection::vec(body_entry(), 0..5),
            prop::bool::weighted(0.1),
            prop::option::weighted(0.25, -2..=2i64),
        )
            .prop_map(|(addr, body, update_only, ts_delta)| Write::Identify {
                addr,
                body,
                update_only,
                ts_delta,
            }),
        1 => target_strategy().prop_map(Write::Delete),
        2 => target_strategy().prop_map(Write::Suppress),
        2 => target_strategy().prop_map(Write::Unsuppress),
    ]
}

fn step_strategy() -> impl Strategy<Value = Step> {
    prop_oneof![
        18 => write_strategy().prop_map(Step::One),
        2 => prop::collection::vec(write_strategy(), 1..4).prop_map(Step::Batch),
        1 => Just(Step::Reopen),
    ]
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        prop::bool::weighted(0.25),
        prop::collection::vec((0..=1i64, step_strategy()), 1..40),
    )
        .prop_map(|(allow_email_update_by_id, steps)| Case {
            allow_email_update_by_id,
            steps,
        })
}

// ---------------------------------------------------------------------------------------
// The model

/// What an operation did, as the model predicts it (a refusal's reason text is not
/// compared).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Out {
    Created(u32),
    Updated(u32),
    Unchanged(u32),
    Refused(u32),
    Ignored(IgnoreReason),
    Deleted(u32),
    NotFound,
    Suppressed {
        person: Option<u32>,
        identifiers: usize,
    },
    Unsuppressed(usize),
}

impl Out {
    fn of(o: &Outcome) -> Out {
        match o {
            Outcome::Created(p) => Out::Created(p.0),
            Outcome::Updated(p) => Out::Updated(p.0),
            Outcome::Unchanged(p) => Out::Unchanged(p.0),
            Outcome::Refused { person, .. } => Out::Refused(person.0),
            Outcome::Ignored(r) => Out::Ignored(*r),
            Outcome::Deleted(p) => Out::Deleted(p.0),
            Outcome::NotFound => Out::NotFound,
            Outcome::Suppressed {
                person,
                identifiers,
            } => Out::Suppressed {
                person: person.map(|p| p.0),
                identifiers: *identifiers,
            },
            Outcome::Unsuppressed { identifiers } => Out::Unsuppressed(*identifiers),
            other => panic!("an outcome the model does not know: {other:?}"),
        }
    }
}

/// Why the model refuses an operation outright (nothing is written).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Refusal {
    Input,
    Suppressed(IdentKind, String),
}

impl Refusal {
    fn of(e: &Error) -> Option<Refusal> {
        match e {
            Error::Input(_) => Some(Refusal::Input),
            Error::Suppressed { kind, value } => Some(Refusal::Suppressed(*kind, value.clone())),
            _ => None,
        }
    }
}

/// One timeline entry. A refusal's `reason` text is left out of `data` (its `attribute`
/// and `value` are compared).
#[derive(Debug, Clone, PartialEq)]
struct MAct {
    kind: &'static str,
    name: Option<String>,
    timestamp: i64,
    data: Value,
}

#[derive(Debug, Clone, Default)]
struct MPerson {
    id: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    anon: Option<String>,
    created: i64,
    updated: i64,
    attrs: Map,
    /// When each present top-level attribute last changed (what `Person::timestamps`
    /// shows).
    timestamps: BTreeMap<String, i64>,
    /// The latest `_timestamp` of an update that set or removed each top-level
    /// attribute, even when it left the value as it was: an update with an older
    /// `_timestamp` must leave the attribute alone ("updates sent in quick succession
    /// cannot overwrite newer values with older ones"). Updates without `_timestamp` are
    /// ordered by when they changed something (`timestamps`): one that changes nothing
    /// writes nothing.
    ordered_at: BTreeMap<String, i64>,
    acts: Vec<MAct>,
}

impl MPerson {
    fn field(&self, kind: IdentKind) -> Option<&String> {
        match kind {
            IdentKind::Id => self.id.as_ref(),
            IdentKind::Email => self.email.as_ref(),
            IdentKind::Phone => self.phone.as_ref(),
            IdentKind::AnonymousId => self.anon.as_ref(),
            IdentKind::CioId => None,
        }
    }

    fn field_mut(&mut self, kind: IdentKind) -> &mut Option<String> {
        match kind {
            IdentKind::Id => &mut self.id,
            IdentKind::Email => &mut self.email,
            IdentKind::Phone => &mut self.phone,
            IdentKind::AnonymousId => &mut self.anon,
            IdentKind::CioId => unreachable!("cio_id is not a stored field"),
        }
    }

    fn to_person(&self, pid: u32) -> Person {
        Person {
            pid: PersonId(pid),
            cio_id: format!("{pid:08x}"),
            id: self.id.clone(),
            email: self.email.clone(),
            phone: self.phone.clone(),
            anonymous_id: self.anon.clone(),
            created: self.created,
            updated: self.updated,
            attributes: self.attrs.clone(),
            timestamps: self.timestamps.clone(),
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Model {
    people: BTreeMap<u32, MPerson>,
    next_pid: u32,
    /// Suppressed identifiers (kind, normalized value) and the suppress call that
    /// blocked them: unsuppress frees an identifier and those suppressed with it.
    suppressed: BTreeMap<(IdentKind, String), u64>,
    next_group: u64,
    allow_email_update_by_id: bool,
}

const SETTABLE: [IdentKind; 4] = [
    IdentKind::Id,
    IdentKind::Email,
    IdentKind::Phone,
    IdentKind::AnonymousId,
];

fn norm_of(kind: IdentKind, v: &str) -> String {
    match kind {
        IdentKind::Email => v.to_lowercase(),
        IdentKind::CioId => v.to_ascii_lowercase(),
        _ => v.to_owned(),
    }
}

fn valid_email(v: &str) -> bool {
    let Some((local, domain)) = v.rsplit_once('@') else {
        return false;
    };
    let labels: Vec<&str> = domain.split('.').collect();
    !local.is_empty()
        && local
            .chars()
            .all(|c| c.is_alphanumeric() || "._+-".contains(c))
        && labels.len() >= 2
        && labels
            .iter()
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_alphanumeric() || c == '-'))
}

fn valid_phone(v: &str) -> bool {
    let digits = v.strip_prefix('+').unwrap_or("");
    (1..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

/// The normalized form of an identifier, or `Refusal::Input` when it is malformed.
fn normalize(kind: IdentKind, v: &str) -> Result<String, Refusal> {
    let ok = !v.is_empty()
        && match kind {
            IdentKind::Email => valid_email(v),
            IdentKind::Phone => valid_phone(v),
            _ => true,
        };
    if ok {
        Ok(norm_of(kind, v))
    } else {
        Err(Refusal::Input)
    }
}

fn is_removal(v: &Value) -> bool {
    matches!(v, Value::Null) || v.as_str() == Some("")
}

fn finite(v: &Value) -> bool {
    match v {
        Value::Float(x) => x.is_finite(),
        Value::Array(a) => a.iter().all(finite),
        Value::Map(m) => m.values().all(finite),
        _ => true,
    }
}

/// Customer.io's truthiness for `unsubscribed` (model doc 2.2).
fn truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Int(i) => *i == 1,
        Value::Float(x) => *x == 1.0,
        Value::String(s) => s.eq_ignore_ascii_case("true") || s == "1",
        _ => false,
    }
}

/// `created_at` as unix seconds: an integer, a whole float or a string of digits.
fn unix_seconds(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::Float(x) if x.fract() == 0.0 && x.abs() < 1e15 => Some(*x as i64),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn get_path<'v>(map: &'v Map, path: &[String]) -> Option<&'v Value> {
    let (first, rest) = path.split_first()?;
    let v = map.get(first)?;
    if rest.is_empty() {
        Some(v)
    } else {
        match v {
            Value::Map(m) => get_path(m, rest),
            _ => None,
        }
    }
}

/// A dotted name sets a key inside nested maps, creating them (over whatever was there)
/// on the way; a removal drops the maps it leaves empty. Removing what is not there
/// changes nothing.
fn set_path(map: &mut Map, path: &[String], value: Option<Value>) {
    if value.is_none() && get_path(map, path).is_none() {
        return;
    }
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    if rest.is_empty() {
        match value {
            Some(v) => {
                map.insert(first.clone(), v);
            }
            None => {
                map.remove(first);
            }
        }
        return;
    }
    match map.get_mut(first) {
        Some(Value::Map(child)) => {
            set_path(child, rest, value);
            if child.is_empty() {
                map.remove(first);
            }
        }
        _ => {
            if value.is_some() {
                let mut child = Map::new();
                set_path(&mut child, rest, value);
                map.insert(first.clone(), Value::Map(child));
            }
        }
    }
}

fn old_new(old: Option<Value>, new: Option<Value>) -> Value {
    let mut m = Map::new();
    m.insert("old".into(), old.unwrap_or(Value::Null));
    m.insert("new".into(), new.unwrap_or(Value::Null));
    Value::Map(m)
}

/// An identifier change from an identify body: `None` removes.
type IdentChange = (IdentKind, Option<(String, String)>);

impl Model {
    fn new(allow_email_update_by_id: bool) -> Model {
        Model {
            next_pid: 1,
            allow_email_update_by_id,
            ..Model::default()
        }
    }

    /// Who has identifier `kind` with normalized value `norm`.
    fn find(&self, kind: IdentKind, norm: &str) -> Option<u32> {
        if kind == IdentKind::CioId {
            if norm.is_empty() || norm.len() > 8 || !norm.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            let pid = u32::from_str_radix(norm, 16).ok()?;
            return self.people.contains_key(&pid).then_some(pid);
        }
        self.people
            .iter()
            .find(|(_, p)| p.field(kind).is_some_and(|v| norm_of(kind, v) == norm))
            .map(|(pid, _)| *pid)
    }

    fn is_suppressed(&self, kind: IdentKind, norm: &str) -> bool {
        kind != IdentKind::CioId && self.suppressed.contains_key(&(kind, norm.to_owned()))
    }

    /// A refusal by the identity rules: recorded on the person, nothing else changes.
    fn refuse(&mut self, pid: u32, kind: IdentKind, value: &str, now: i64) -> Out {
        if let Some(p) = self.people.get_mut(&pid) {
            let mut data = Map::new();
            data.insert("attribute".into(), Value::from(kind.as_str()));
            data.insert("value".into(), Value::from(value));
            p.acts.push(MAct {
                kind: kinds::FAILED_ATTRIBUTE_CHANGE,
                name: Some(kind.as_str().to_owned()),
                timestamp: now,
                data: Value::Map(data),
            });
        }
        Out::Refused(pid)
    }

    fn identify(
        &mut self,
        addr: &Ident,
        body: &[(String, Value)],
        update_only: bool,
        ts: Option<i64>,
        now: i64,
    ) -> Result<Out, Refusal> {
        // Checks that need no state.
        if addr.kind == IdentKind::AnonymousId {
            return Err(Refusal::Input);
        }
        let addr_norm = normalize(addr.kind, &addr.value)?;
        let by_cio = addr.kind == IdentKind::CioId;
        let mut idents: Vec<IdentChange> = Vec::new();
        let mut attrs: Vec<(String, Vec<String>, Option<Value>)> = Vec::new();
        for (name, value) in body {
            if let Some(kind) = IdentKind::from_name(name) {
                if kind == IdentKind::CioId {
                    // Allowed only as a repeat of the address.
                    if by_cio
                        && value
                            .as_str()
                            .is_some_and(|v| v.eq_ignore_ascii_case(&addr.value))
                    {
                        continue;
                    }
                    return Err(Refusal::Input);
                }
                let change = if is_removal(value) {
                    None
                } else {
                    let given = match value {
                        Value::String(s) => s.clone(),
                        Value::Int(i) if matches!(kind, IdentKind::Id | IdentKind::AnonymousId) => {
                            i.to_string()
                        }
                        _ => return Err(Refusal::Input),
                    };
                    let norm = normalize(kind, &given)?;
                    Some((given, norm))
                };
                // The last value given for an identifier wins.
                idents.retain(|(k, _)| *k != kind);
                idents.push((kind, change));
                continue;
            }
            if matches!(
                name.as_str(),
                "_created_in_customerio_at"
                    | "relationship"
                    | "_relationship"
                    | "_update"
                    | "_timestamp"
                    | "cio_relationships"
            ) {
                return Err(Refusal::Input);
            }
            let path: Vec<String> = name.split('.').map(str::to_owned).collect();
            if path.iter().any(String::is_empty) {
                return Err(Refusal::Input);
            }
            let value = if is_removal(value) {
                None
            } else {
                if !finite(value) {
                    return Err(Refusal::Input);
                }
                Some(match name.as_str() {
                    "unsubscribed" => Value::Bool(truthy(value)),
                    "created_at" => Value::Int(unix_seconds(value).ok_or(Refusal::Input)?),
                    _ => value.clone(),
                })
            };
            attrs.push((name.clone(), path, value));
        }

        // Suppressed identifiers cannot be used.
        if !by_cio && self.is_suppressed(addr.kind, &addr_norm) {
            return Err(Refusal::Suppressed(addr.kind, addr.value.clone()));
        }
        for (kind, change) in &idents {
            if let Some((given, norm)) = change {
                if self.is_suppressed(*kind, norm) {
                    return Err(Refusal::Suppressed(*kind, given.clone()));
                }
            }
        }

        // Who is it?
        let addr_pid = self.find(addr.kind, &addr_norm);
        if by_cio && addr_pid.is_none() {
            return Ok(Out::Ignored(IgnoreReason::UnknownCioId));
        }
        let owners: Vec<(IdentKind, String, u32)> = idents
            .iter()
            .filter_map(|(kind, change)| {
                let (given, norm) = change.as_ref()?;
                Some((*kind, given.clone(), self.find(*kind, norm)?))
            })
            .collect();
        let target = match addr_pid {
            Some(p) => {
                if let Some((k, v, _)) = owners.iter().find(|o| o.2 != p) {
                    return Ok(self.refuse(p, *k, v, now));
                }
                Some(p)
            }
            None => match owners.first() {
                Some(&(_, _, q)) => {
                    if let Some((k, v, _)) = owners.iter().find(|o| o.2 != q) {
                        return Ok(self.refuse(q, *k, v, now));
                    }
                    // A body identifier of the addressed kind must agree with the
                    // address (as when creating); then the person found by the body gets
                    // the addressed identifier, and if they have a different one of that
                    // kind, that is a conflict (planned with the other changes below).
                    if idents.iter().any(|(k, c)| {
                        *k == addr.kind && c.as_ref().is_some_and(|(_, n)| *n != addr_norm)
                    }) {
                        return Err(Refusal::Input);
                    }
                    idents.retain(|(k, _)| *k != addr.kind);
                    idents.push((addr.kind, Some((addr.value.clone(), addr_norm.clone()))));
                    Some(q)
                }
                None if update_only => return Ok(Out::Ignored(IgnoreReason::NoMatch)),
                None => None,
            },
        };

        let (pid, mut person, created) = match target {
            Some(p) => (p, self.people[&p].clone(), false),
            None => {
                let mut person = MPerson {
                    created: now,
                    updated: now,
                    ..MPerson::default()
                };
                *person.field_mut(addr.kind) = Some(addr.value.clone());
                // A body identifier of the addressed kind must agree with the address.
                for (kind, change) in &idents {
                    if let Some((_, norm)) = change {
                        if *kind == addr.kind && *norm != addr_norm {
                            return Err(Refusal::Input);
                        }
                    }
                }
                (self.next_pid, person, true)
            }
        };

        // Identifier changes: added when missing, changed or removed only by cio_id.
        let mut writes: Vec<(IdentKind, Option<String>, Option<String>)> = Vec::new();
        for (kind, change) in &idents {
            let cur = person.field(*kind).cloned();
            match change {
                Some((given, norm)) => {
                    // The same identifier (an email in another case, too) is no change:
                    // the email stays as first given. (Open in the docs; as the code.)
                    if cur.as_deref().map(|c| norm_of(*kind, c)).as_deref() == Some(norm) {
                        continue;
                    }
                    let allowed = created
                        || by_cio
                        || cur.is_none()
                        || *kind == IdentKind::AnonymousId
                        || (*kind == IdentKind::Email
                            && addr.kind == IdentKind::Id
                            && self.allow_email_update_by_id);
                    if !allowed {
                        return Ok(self.refuse(pid, *kind, given, now));
                    }
                    writes.push((*kind, cur, Some(given.clone())));
                }
                None => {
                    if cur.is_none() {
                        continue;
                    }
                    // Removing the identifier a new person is addressed by is bad input.
                    if created {
                        return Err(Refusal::Input);
                    }
                    if !(by_cio || *kind == IdentKind::AnonymousId) {
                        return Ok(self.refuse(pid, *kind, "", now));
                    }
                    writes.push((*kind, cur, None));
                }
            }
        }

        // Attributes, patched one after the other in the order given; a name given twice
        // is two changes, each recorded against the value before it, and a later one
        // overwrites the earlier in the activity. `_timestamp` and `Person::timestamps`
        // are per top-level attribute, and `timestamps` moves only when the value
        // changes. (All open in the docs; as the code.)
        let mut changes = Map::new();
        let set_time = ts.unwrap_or(now);
        for (name, path, value) in &attrs {
            let top = &path[0];
            if let Some(t) = ts {
                let prev = person
                    .timestamps
                    .get(top)
                    .into_iter()
                    .chain(person.ordered_at.get(top))
                    .max();
                if prev.is_some_and(|p| t < *p) {
                    continue;
                }
                person.ordered_at.insert(top.clone(), t);
            }
            let old = get_path(&person.attrs, path).cloned();
            set_path(&mut person.attrs, path, value.clone());
            let new = get_path(&person.attrs, path).cloned();
            if old != new {
                changes.insert(name.clone(), old_new(old, new));
                if person.attrs.contains_key(top) {
                    person.timestamps.insert(top.clone(), set_time);
                } else {
                    person.timestamps.remove(top);
                }
            }
        }
        for (kind, old, new) in writes {
            *person.field_mut(kind) = new.clone();
            changes.insert(
                kind.as_str().to_owned(),
                old_new(old.map(Value::from), new.map(Value::from)),
            );
        }

        if created {
            let mut ids = Map::new();
            for kind in SETTABLE {
                if let Some(v) = person.field(kind) {
                    ids.insert(kind.as_str().to_owned(), Value::from(v.as_str()));
                }
            }
            ids.insert("cio_id".into(), Value::from(PersonId(pid).cio_id()));
            person.acts.push(MAct {
                kind: kinds::PROFILE_CREATE,
                name: None,
                timestamp: now,
                data: Value::Map(ids),
            });
        } else if changes.is_empty() {
            self.people.insert(pid, person);
            return Ok(Out::Unchanged(pid));
        }
        person.updated = now;
        if !changes.is_empty() {
            person.acts.push(MAct {
                kind: kinds::ATTRIBUTE_CHANGE,
                name: None,
                timestamp: now,
                data: Value::Map(changes),
            });
        }
        self.people.insert(pid, person);
        Ok(if created {
            self.next_pid += 1;
            Out::Created(pid)
        } else {
            Out::Updated(pid)
        })
    }

    fn delete(&mut self, ident: &Ident) -> Result<Out, Refusal> {
        let norm = normalize(ident.kind, &ident.value)?;
        Ok(match self.find(ident.kind, &norm) {
            Some(pid) => {
                self.people.remove(&pid);
                Out::Deleted(pid)
            }
            None => Out::NotFound,
        })
    }

    /// Deletes the person and blocks their id, email and phone; with nobody found, blocks
    /// just the identifier given. (Suppressing a person by anonymous_id blocks that
    /// anonymous_id too: open in the docs; as the code.)
    fn suppress(&mut self, ident: &Ident) -> Result<Out, Refusal> {
        let norm = normalize(ident.kind, &ident.value)?;
        let pid = self.find(ident.kind, &norm);
        let mut group: Vec<(IdentKind, String)> = Vec::new();
        match pid {
            Some(pid) => {
                let p = self.people.remove(&pid).unwrap();
                for kind in [IdentKind::Id, IdentKind::Email, IdentKind::Phone] {
                    if let Some(v) = p.field(kind) {
                        group.push((kind, norm_of(kind, v)));
                    }
                }
            }
            None if ident.kind == IdentKind::CioId => {
                return Ok(Out::Ignored(IgnoreReason::UnknownCioId))
            }
            None => {}
        }
        if ident.kind != IdentKind::CioId && !group.contains(&(ident.kind, norm.clone())) {
            group.push((ident.kind, norm));
        }
        let g = self.next_group;
        self.next_group += 1;
        for key in group.iter().cloned() {
            // Suppressing what is already suppressed changes nothing.
            self.suppressed.entry(key).or_insert(g);
        }
        Ok(Out::Suppressed {
            person: pid,
            identifiers: group.len(),
        })
    }

    /// Frees the identifier and every identifier suppressed with it.
    fn unsuppress(&mut self, ident: &Ident) -> Result<Out, Refusal> {
        let norm = normalize(ident.kind, &ident.value)?;
        if ident.kind == IdentKind::CioId {
            return Ok(Out::NotFound);
        }
        let Some(&g) = self.suppressed.get(&(ident.kind, norm)) else {
            return Ok(Out::NotFound);
        };
        let before = self.suppressed.len();
        self.suppressed.retain(|_, group| *group != g);
        Ok(Out::Unsuppressed(before - self.suppressed.len()))
    }
}

// ---------------------------------------------------------------------------------------
// Running a case

fn open(dir: &Path, clock: &ManualClock, allow_email_update_by_id: bool) -> ProfileDb {
    ProfileDb::builder()
        .clock(Arc::new(clock.clone()))
        .durability(Durability::Buffered)
        .allow_email_update_by_id(allow_email_update_by_id)
        .open(dir)
        .unwrap()
}

/// Every identifier the state is checked through.
fn pool() -> Vec<Ident> {
    let mut out = Vec::new();
    for i in 0..5 {
        out.push(Ident::id(format!("u{i}")));
    }
    out.push(Ident::id("7"));
    for i in 0..4 {
        out.push(Ident::email(format!("e{i}@x.io")));
        out.push(Ident::email(format!("E{i}@x.IO")));
    }
    for i in 0..3 {
        out.push(Ident::anonymous_id(format!("a{i}")));
    }
    out.push(Ident::anonymous_id("3"));
    for i in 1..3 {
        out.push(Ident::phone(format!("+1555000{i}")));
    }
    out
}

fn check(db: &ProfileDb, model: &Model, step: usize) -> Result<(), TestCaseError> {
    let mut idents = pool();
    for pid in 1..=model.next_pid.max(MAX_CIO_PID) {
        idents.push(Ident::cio_id(PersonId(pid).cio_id()));
    }
    for ident in &idents {
        let norm = norm_of(ident.kind, &ident.value);
        let want = model
            .find(ident.kind, &norm)
            .map(|pid| model.people[&pid].to_person(pid));
        let got = db.person(ident).unwrap();
        prop_assert_eq!(got, want, "step {}: person({})", step, ident);
        if ident.kind != IdentKind::CioId {
            prop_assert_eq!(
                db.is_suppressed(ident).unwrap(),
                model.is_suppressed(ident.kind, &norm),
                "step {}: is_suppressed({})",
                step,
                ident
            );
        }
    }
    let want: Vec<Person> = model
        .people
        .iter()
        .map(|(pid, p)| p.to_person(*pid))
        .collect();
    prop_assert_eq!(db.people().unwrap(), want, "step {}: people()", step);
    for (pid, p) in &model.people {
        let got: Vec<MAct> = db
            .activities(
                &Ident::cio_id(PersonId(*pid).cio_id()),
                &ActivityFilter::new(1000),
            )
            .unwrap()
            .into_iter()
            .rev()
            .map(|a| {
                let data = match (a.kind.as_str(), a.data) {
                    (kinds::FAILED_ATTRIBUTE_CHANGE, Value::Map(mut m)) => {
                        m.remove("reason");
                        Value::Map(m)
                    }
                    (_, d) => d,
                };
                let kind = [
                    kinds::PROFILE_CREATE,
                    kinds::ATTRIBUTE_CHANGE,
                    kinds::FAILED_ATTRIBUTE_CHANGE,
                ]
                .into_iter()
                .find(|k| *k == a.kind)
                .unwrap_or("unexpected activity kind");
                MAct {
                    kind,
                    name: a.name,
                    timestamp: a.timestamp,
                    data,
                }
            })
            .collect();
        prop_assert_eq!(&got, &p.acts, "step {}: activities of person {}", step, pid);
    }
    Ok(())
}

impl Model {
    fn apply(&mut self, w: &Write, now: i64) -> Result<Out, Refusal> {
        match w {
            Write::Identify {
                addr,
                body,
                update_only,
                ts_delta,
            } => self.identify(addr, body, *update_only, ts_delta.map(|d| now + d), now),
            Write::Delete(ident) => self.delete(ident),
            Write::Suppress(ident) => self.suppress(ident),
            Write::Unsuppress(ident) => self.unsuppress(ident),
        }
    }
}

fn to_op(w: &Write, now: i64) -> Op {
    match w {
        Write::Identify {
            addr,
            body,
            update_only,
            ts_delta,
        } => {
            let mut op = Identify::new(addr.clone()).update_only(*update_only);
            for (k, v) in body {
                op = op.set(k.clone(), v.clone());
            }
            if let Some(d) = ts_delta {
                op = op.timestamp(now + d);
            }
            Op::Identify(op)
        }
        Write::Delete(ident) => Op::Delete(ident.clone()),
        Write::Suppress(ident) => Op::Suppress(ident.clone()),
        Write::Unsuppress(ident) => Op::Unsuppress(ident.clone()),
    }
}

/// Runs one write on the database through its own method.
fn db_apply(db: &ProfileDb, w: &Write, now: i64) -> Result<Outcome, Error> {
    match to_op(w, now) {
        Op::Identify(op) => db.identify(op),
        Op::Delete(ident) => db.delete(&ident),
        Op::Suppress(ident) => db.suppress(&ident),
        Op::Unsuppress(ident) => db.unsuppress(&ident),
        other => panic!("not generated: {other:?}"),
    }
}

fn run(case: &Case) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut db = open(dir.path(), &clock, case.allow_email_update_by_id);
    let mut model = Model::new(case.allow_email_update_by_id);
    for (i, (advance, step)) in case.steps.iter().enumerate() {
        clock.advance(*advance);
        let now = clock.now();
        match step {
            Step::One(w) => {
                let want = model.apply(w, now);
                let got = db_apply(&db, w, now);
                match (&want, &got) {
                    (Ok(w), Ok(g)) => prop_assert_eq!(w, &Out::of(g), "step {}: {:?}", i, step),
                    (Err(w), Err(g)) => prop_assert_eq!(
                        Some(w.clone()),
                        Refusal::of(g),
                        "step {}: {:?} failed with {}",
                        i,
                        step,
                        g
                    ),
                    _ => prop_assert!(
                        false,
                        "step {}: {:?}: the model says {:?}, the database {:?}",
                        i,
                        step,
                        want,
                        got
                    ),
                }
            }
            Step::Batch(writes) => {
                // Every write sees the ones before it; the first refused one refuses all.
                let mut staged = model.clone();
                let mut want = Ok(Vec::new());
                for (index, w) in writes.iter().enumerate() {
                    match staged.apply(w, now) {
                        Ok(o) => {
                            if let Ok(outs) = &mut want {
                                outs.push(o);
                            }
                        }
                        Err(e) => {
                            want = Err((index, e));
                            break;
                        }
                    }
                }
                let ops: Vec<Op> = writes.iter().map(|w| to_op(w, now)).collect();
                let got = db.write_batch(&ops);
                match (&want, &got) {
                    (Ok(w), Ok(g)) => {
                        let g: Vec<Out> = g.iter().map(Out::of).collect();
                        prop_assert_eq!(w, &g, "step {}: {:?}", i, step);
                        model = staged;
                    }
                    (Err((index, w)), Err(Error::InBatch { index: gi, source })) => {
                        prop_assert_eq!(
                            (*index, Some(w.clone())),
                            (*gi, Refusal::of(source)),
                            "step {}: {:?} failed with {}",
                            i,
                            step,
                            source
                        );
                    }
                    _ => prop_assert!(
                        false,
                        "step {}: {:?}: the model says {:?}, the database {:?}",
                        i,
                        step,
                        want,
                        got
                    ),
                }
            }
            Step::Reopen => {
                drop(db);
                db = open(dir.path(), &clock, case.allow_email_update_by_id);
            }
        }
        check(&db, &model, i)?;
        // Nothing left behind that belongs to nobody (activity of a person who does not
        // exist, an identifier pointing at nobody...).
        let report = db.verify().unwrap();
        prop_assert!(report.is_ok(), "step {}: verify: {:?}", i, report.problems);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        rng_seed: RngSeed::Fixed(0x0070_726f_6669_6c65),
        max_shrink_iters: 4096,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_database_behaves_like_the_model(case in case_strategy()) {
        run(&case)?;
    }
}
