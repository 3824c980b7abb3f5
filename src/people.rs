//! The `identify` operation (and its kin); the rules are documented on
//! [`ProfileDb::identify`](crate::ProfileDb::identify), where users read them.

use crate::db::write::Ctx;
use crate::error::{Error, InputError, InputReason, Result};
use crate::limits::Limits;
use crate::model::{
    get_path, kinds, Ident, IdentKind, IgnoreReason, Map, Outcome, PersonId, Value,
};
use crate::store::records::{AttributesRecord, PersonRecord, SuppressedRecord};
use crate::store::{
    ident_code, ident_key, ident_kind, pid_key, ActivityF, AttributesF, DeliveriesF, DeliveryIdsF,
    DeviceTokensF, DevicesF, EventIdsF, EventOwner, Family, IdentifiersF, MembersF, PeopleF,
    RelationshipsF, SuppressedF, Txn,
};

/// An identify call: add a person or update one, patching attributes.
///
/// # Examples
/// ```
/// use profiledb::{Ident, Identify};
/// let op = Identify::new(Ident::id("u-1"))
///     .set("email", "ann@example.com")
///     .set("plan", "pro")
///     .set("cio_subscription_preferences.topics.topic_3", true)
///     .remove("trial");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Identify {
    pub(crate) ident: Ident,
    pub(crate) attributes: Vec<(String, Value)>,
    pub(crate) update_only: bool,
    pub(crate) timestamp: Option<i64>,
    pub(crate) relationships: Vec<RelationshipChange>,
}

/// A relationship to add (with attributes) or remove as part of an identify
/// (`cio_relationships`).
#[derive(Debug, Clone, PartialEq)]
pub struct RelationshipChange {
    /// The object.
    pub object: crate::model::ObjectRef,
    /// Relationship attributes to set (ignored when removing).
    pub attributes: Vec<(String, Value)>,
    /// True to remove the relationship.
    pub remove: bool,
}

impl Identify {
    /// Identify the person addressed by `ident` (the path identifier of Track API v1).
    pub fn new(ident: Ident) -> Identify {
        Identify {
            ident,
            attributes: Vec::new(),
            update_only: false,
            timestamp: None,
            relationships: Vec::new(),
        }
    }

    /// Relates the person to `object` (Track API `cio_relationships`), applied after the
    /// identify succeeds.
    pub fn relate(
        mut self,
        object: crate::model::ObjectRef,
        attributes: Vec<(String, Value)>,
    ) -> Identify {
        self.relationships.push(RelationshipChange {
            object,
            attributes,
            remove: false,
        });
        self
    }

    /// Removes the person's relationship to `object`, applied after the identify.
    pub fn unrelate(mut self, object: crate::model::ObjectRef) -> Identify {
        self.relationships.push(RelationshipChange {
            object,
            attributes: Vec::new(),
            remove: true,
        });
        self
    }

    /// Sets attribute `name` (a dotted name sets a key inside a nested map). Setting
    /// `null` or `""` removes it. `id`, `email`, `phone` and `anonymous_id` set
    /// identifiers.
    pub fn set(mut self, name: impl Into<String>, value: impl Into<Value>) -> Identify {
        self.attributes.push((name.into(), value.into()));
        self
    }

    /// Removes attribute `name` (the same as setting it to `null`).
    pub fn remove(self, name: impl Into<String>) -> Identify {
        self.set(name, Value::Null)
    }

    /// `_update: true`: only update an existing person, never create one.
    pub fn update_only(mut self, yes: bool) -> Identify {
        self.update_only = yes;
        self
    }

    /// `_timestamp`: when these attribute values were true, unix seconds. An update
    /// older than an attribute's last-set time leaves that attribute alone, so updates
    /// sent in quick succession cannot overwrite newer values with older ones.
    pub fn timestamp(mut self, unix_seconds: i64) -> Identify {
        self.timestamp = Some(unix_seconds);
        self
    }
}

/// The person `ident` names, created (as by an identify with no attributes) if nobody
/// has it: tracking an event, adding a device or a delivery for an unknown `id` or
/// `email` creates the person, as Customer.io's Track API does. `Err(outcome)` when
/// nobody can be created (an unknown `cio_id`).
pub(crate) fn resolve_or_create(
    cx: &mut Ctx<'_, '_>,
    ident: &Ident,
) -> Result<std::result::Result<u32, Outcome>> {
    if let Some(pid) = cx.find(ident)? {
        return Ok(Ok(pid));
    }
    if ident.kind == IdentKind::AnonymousId {
        return Ok(Err(Outcome::NotFound));
    }
    // An identify with no attributes sets no anonymous_id and relates nobody.
    match identify_person(cx, &Identify::new(ident.clone()), &mut None)? {
        Outcome::Created(p) | Outcome::Updated(p) | Outcome::Unchanged(p) => Ok(Ok(p.0)),
        other => Ok(Err(other)),
    }
}

fn field_of(rec: &mut PersonRecord, kind: IdentKind) -> Option<&mut Option<String>> {
    match kind {
        IdentKind::Id => Some(&mut rec.id),
        IdentKind::Email => Some(&mut rec.email),
        IdentKind::Phone => Some(&mut rec.phone),
        IdentKind::AnonymousId => Some(&mut rec.anonymous_id),
        IdentKind::CioId => None,
    }
}

fn current(rec: &PersonRecord, kind: IdentKind) -> Option<&String> {
    match kind {
        IdentKind::Id => rec.id.as_ref(),
        IdentKind::Email => rec.email.as_ref(),
        IdentKind::Phone => rec.phone.as_ref(),
        IdentKind::AnonymousId => rec.anonymous_id.as_ref(),
        IdentKind::CioId => None,
    }
}

fn norm_of(kind: IdentKind, given: &str) -> String {
    if kind == IdentKind::Email {
        given.to_lowercase()
    } else {
        given.to_owned()
    }
}

/// One identifier change requested in the body: `Some((given, normalized))` sets,
/// `None` removes.
type IdentChange = (IdentKind, Option<(String, String)>);

/// A planned identifier write: kind, the current value, the new (given, normalized).
type IdentWrite = (IdentKind, Option<String>, Option<(String, String)>);

/// One attribute change: path segments and the new value (`None` removes).
struct AttrChange {
    name: String,
    path: Vec<String>,
    value: Option<Value>,
}

/// Checks every attribute of an identify against the limits and reserved names, and
/// splits them into identifier changes and attribute changes.
fn validate(
    limits: &Limits,
    op: &Identify,
) -> Result<(Vec<IdentChange>, Vec<AttrChange>), InputError> {
    if op.attributes.len() > limits.max_attributes {
        return Err(InputError::new(
            "attributes",
            InputReason::TooMany {
                count: op.attributes.len(),
                max: limits.max_attributes,
            },
        ));
    }
    let mut idents: Vec<IdentChange> = Vec::new();
    let mut attrs = Vec::new();
    for (name, value) in &op.attributes {
        if name.is_empty() {
            return Err(InputError::new("attribute name", InputReason::Empty));
        }
        if name.len() > limits.max_attribute_name_bytes {
            return Err(InputError::new(
                name.clone(),
                InputReason::TooLong {
                    len: name.len(),
                    max: limits.max_attribute_name_bytes,
                },
            ));
        }
        if let Some(kind) = IdentKind::from_name(name) {
            if kind == IdentKind::CioId {
                let same = op.ident.kind == IdentKind::CioId
                    && value
                        .as_str()
                        .is_some_and(|v| v.eq_ignore_ascii_case(&op.ident.value));
                if same {
                    continue;
                }
                return Err(InputError::new(name.clone(), InputReason::Reserved));
            }
            let change = if value.is_removal() {
                None
            } else {
                let given = match value {
                    Value::String(s) => s.clone(),
                    Value::Int(i) if matches!(kind, IdentKind::Id | IdentKind::AnonymousId) => {
                        i.to_string()
                    }
                    _ => return Err(InputError::invalid(name.clone(), "must be a string")),
                };
                let norm = limits.identifier(kind, &given, name)?;
                Some((given, norm))
            };
            idents.retain(|(k, _)| *k != kind);
            idents.push((kind, change));
            continue;
        }
        match name.as_str() {
            "_created_in_customerio_at"
            | "relationship"
            | "_relationship"
            | "_update"
            | "_timestamp" => return Err(InputError::new(name.clone(), InputReason::Reserved)),
            "cio_relationships" => {
                return Err(InputError::invalid(
                    name.clone(),
                    "is a request key, not an attribute: use Identify::relate, or \
                     Identify::from_json to read it from a request body",
                ))
            }
            _ => {}
        }
        let path: Vec<String> = name.split('.').map(str::to_owned).collect();
        if path.iter().any(String::is_empty) {
            return Err(InputError::invalid(
                name.clone(),
                "has an empty segment in its dotted path",
            ));
        }
        let value = if value.is_removal() {
            None
        } else {
            crate::limits::check_value(name, value, limits.max_attribute_value_bytes)?;
            Some(match name.as_str() {
                "unsubscribed" => Value::Bool(value.is_truthy()),
                "created_at" => Value::Int(timestamp_of(value).ok_or_else(|| {
                    InputError::invalid(name.clone(), "must be a unix timestamp in seconds")
                })?),
                _ => value.clone(),
            })
        };
        attrs.push(AttrChange {
            name: name.clone(),
            path,
            value,
        });
    }
    Ok((idents, attrs))
}

/// A unix timestamp in seconds from an integer, a whole float, or a string of digits.
fn timestamp_of(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::Float(x) if x.fract() == 0.0 && x.abs() < 1e15 => Some(*x as i64),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn is_suppressed(txn: &mut Txn<'_>, kind: IdentKind, norm: &str) -> Result<bool> {
    if kind == IdentKind::CioId {
        return Ok(false);
    }
    Ok(txn.get::<SuppressedF>(&ident_key(kind, norm))?.is_some())
}

/// Records a `failed_attribute_change` on `pid` and reports the refusal.
fn refuse(cx: &mut Ctx<'_, '_>, pid: u32, kind: IdentKind, value: &str, reason: String) -> Outcome {
    let mut data = Map::new();
    data.insert("attribute".into(), Value::from(kind.as_str()));
    data.insert("value".into(), Value::from(value));
    data.insert("reason".into(), Value::from(reason.as_str()));
    cx.record(
        pid,
        kinds::FAILED_ATTRIBUTE_CHANGE,
        Some(kind.as_str().to_owned()),
        Value::Map(data),
    );
    Outcome::Refused {
        person: PersonId(pid),
        reason,
    }
}

/// Identify: add or update a person (see the module docs for the rules). Also returns
/// the `anonymous_id` this call newly gave the person, whose anonymous activity the
/// caller moves to them; `cio_relationships` are the caller's too.
pub(crate) fn identify(cx: &mut Ctx<'_, '_>, op: &Identify) -> Result<(Outcome, Option<String>)> {
    let mut new_anon = None;
    let outcome = identify_person(cx, op, &mut new_anon)?;
    Ok((outcome, new_anon))
}

fn identify_person(
    cx: &mut Ctx<'_, '_>,
    op: &Identify,
    anon_out: &mut Option<String>,
) -> Result<Outcome> {
    let addr = &op.ident;
    if addr.kind == IdentKind::AnonymousId {
        return Err(InputError::invalid(
            "anonymous_id",
            "cannot address a person on its own; identify them by id, email, phone or cio_id \
             and set anonymous_id as an attribute",
        )
        .into());
    }
    let addr_norm = cx.normalize(addr)?;
    let (mut idents, attrs) = validate(cx.limits, op)?;
    let by_cio = addr.kind == IdentKind::CioId;

    if is_suppressed(cx.txn, addr.kind, &addr_norm)? {
        return Err(Error::Suppressed {
            kind: addr.kind,
            value: addr.value.clone(),
        });
    }
    for (kind, change) in &idents {
        if let Some((given, norm)) = change {
            if is_suppressed(cx.txn, *kind, norm)? {
                return Err(Error::Suppressed {
                    kind: *kind,
                    value: given.clone(),
                });
            }
        }
    }

    let addr_pid = cx.lookup(addr.kind, &addr_norm)?;
    if by_cio && addr_pid.is_none() {
        return Ok(Outcome::Ignored(IgnoreReason::UnknownCioId));
    }
    let mut owners: Vec<(IdentKind, String, u32)> = Vec::new();
    for (kind, change) in &idents {
        if let Some((given, norm)) = change {
            if let Some(q) = cx.lookup(*kind, norm)? {
                owners.push((*kind, given.clone(), q));
            }
        }
    }

    let target = match addr_pid {
        Some(p) => {
            if let Some((k, v, q)) = owners.iter().find(|o| o.2 != p) {
                let reason = format!("{k} `{v}` belongs to another person ({})", PersonId(*q));
                return Ok(refuse(cx, p, *k, v, reason));
            }
            Some(p)
        }
        None => match owners.first() {
            Some((_, _, q)) => {
                let q = *q;
                if let Some((k, v, other)) = owners.iter().find(|o| o.2 != q) {
                    let reason =
                        format!("{k} `{v}` belongs to another person ({})", PersonId(*other));
                    return Ok(refuse(cx, q, *k, v, reason));
                }
                // A body identifier of the addressed kind must agree with the address,
                // as when creating.
                if let Some((kind, Some((given, _)))) = idents.iter().find(|(k, c)| {
                    *k == addr.kind && c.as_ref().is_some_and(|(_, n)| *n != addr_norm)
                }) {
                    return Err(InputError::invalid(
                        kind.as_str(),
                        format!(
                            "`{given}` differs from the {kind} the call is addressed by; \
                             address the person by cio_id to change it"
                        ),
                    )
                    .into());
                }
                // The addressed identifier is new: the person found by the body gets it
                // (the planning below refuses it if they have a different one).
                idents.retain(|(k, _)| *k != addr.kind);
                idents.push((addr.kind, Some((addr.value.clone(), addr_norm.clone()))));
                Some(q)
            }
            None if op.update_only => return Ok(Outcome::Ignored(IgnoreReason::NoMatch)),
            None => None,
        },
    };

    let (pid, mut person, created) = match target {
        Some(p) => {
            let rec = cx.txn.get::<PeopleF>(&pid_key(p))?.ok_or_else(|| {
                crate::store::corrupted(
                    Family::Identifiers,
                    &pid_key(p),
                    "an identifier points at a person who does not exist",
                )
            })?;
            (p, rec, false)
        }
        None => {
            let mut rec = PersonRecord {
                created: cx.now,
                updated: cx.now,
                ..PersonRecord::default()
            };
            if !by_cio {
                if let Some(slot) = field_of(&mut rec, addr.kind) {
                    *slot = Some(addr.value.clone());
                }
            }
            // A body identifier of the addressed kind must agree with the address.
            for (kind, change) in &idents {
                if let (Some((given, norm)), Some(cur)) = (change, current(&rec, *kind)) {
                    if norm_of(*kind, cur) != *norm {
                        return Err(InputError::invalid(
                            kind.as_str(),
                            format!(
                                "`{given}` differs from the {kind} the call is addressed by; \
                                 address the person by cio_id to change it"
                            ),
                        )
                        .into());
                    }
                }
            }
            let pid = u32::try_from(cx.counters.next_pid).map_err(|_| {
                InputError::invalid("person", "cannot be created: all 2^32 person ids are used")
            })?;
            (pid, rec, true)
        }
    };

    // Plan identifier changes; refuse before writing anything.
    let mut changes = Map::new();
    let mut ident_writes: Vec<IdentWrite> = Vec::new();
    for (kind, change) in &idents {
        let cur = current(&person, *kind).cloned();
        let cur_norm = cur.as_deref().map(|c| norm_of(*kind, c));
        match change {
            Some((given, norm)) => {
                if cur_norm.as_deref() == Some(norm.as_str()) {
                    continue;
                }
                let allowed = created
                    || by_cio
                    || cur.is_none()
                    || *kind == IdentKind::AnonymousId
                    || (*kind == IdentKind::Email
                        && addr.kind == IdentKind::Id
                        && cx.options.allow_email_update_by_id);
                if !allowed {
                    let reason = format!(
                        "{kind} cannot change from `{}` to `{given}` unless the person is \
                         addressed by cio_id",
                        cur.unwrap_or_default()
                    );
                    return Ok(refuse(cx, pid, *kind, given, reason));
                }
                ident_writes.push((*kind, cur, Some((given.clone(), norm.clone()))));
            }
            None => {
                if cur.is_none() {
                    continue;
                }
                if created {
                    // Only the addressed identifier is set on a new person.
                    return Err(InputError::invalid(
                        kind.as_str(),
                        "cannot be removed from the new person it addresses",
                    )
                    .into());
                }
                if !(by_cio || *kind == IdentKind::AnonymousId) {
                    let reason = format!(
                        "{kind} cannot be removed unless the person is addressed by cio_id"
                    );
                    return Ok(refuse(cx, pid, *kind, "", reason));
                }
                ident_writes.push((*kind, cur, None));
            }
        }
    }

    // Patch attributes on a copy; nothing is staged until the limits pass.
    let mut record = if created {
        AttributesRecord::default()
    } else {
        cx.txn
            .get::<AttributesF>(&pid_key(pid))?
            .unwrap_or_default()
    };
    let set_time = op.timestamp.unwrap_or(cx.now);
    let mut ordering_changed = false;
    for change in &attrs {
        let Some(top) = change.path.first() else {
            continue;
        };
        if let Some(ts) = op.timestamp {
            let prev = record
                .timestamps
                .get(top)
                .into_iter()
                .chain(record.ordered_at.get(top))
                .max();
            if prev.is_some_and(|prev| ts < *prev) {
                continue; // an older update than one already applied
            }
            // Remember this update's time even if it changes nothing (or removes the
            // attribute), so an older update arriving later cannot undo it.
            if record.ordered_at.get(top) != Some(&ts) {
                record.ordered_at.insert(top.clone(), ts);
                ordering_changed = true;
            }
        }
        let old = get_path(&record.values, &change.path).cloned();
        let _ = set_path(&mut record.values, &change.path, change.value.clone());
        let new = get_path(&record.values, &change.path).cloned();
        if old != new {
            let mut diff = Map::new();
            diff.insert("old".into(), old.unwrap_or(Value::Null));
            diff.insert("new".into(), new.unwrap_or(Value::Null));
            changes.insert(change.name.clone(), Value::Map(diff));
            if record.values.contains_key(top) {
                record.timestamps.insert(top.clone(), set_time);
            } else {
                record.timestamps.remove(top);
            }
        }
    }
    if record.values.len() > cx.limits.max_attributes {
        return Err(InputError::new(
            "attributes",
            InputReason::TooMany {
                count: record.values.len(),
                max: cx.limits.max_attributes,
            },
        )
        .into());
    }

    for (kind, old, new) in &ident_writes {
        if let Some(old) = old {
            cx.txn
                .delete::<IdentifiersF>(ident_key(*kind, &norm_of(*kind, old)));
        }
        if let Some((_, norm)) = new {
            cx.txn.put::<IdentifiersF>(ident_key(*kind, norm), pid);
        }
        if let Some(slot) = field_of(&mut person, *kind) {
            *slot = new.as_ref().map(|(given, _)| given.clone());
        }
        let mut diff = Map::new();
        diff.insert("old".into(), Value::from(old.clone()));
        diff.insert(
            "new".into(),
            Value::from(new.as_ref().map(|(given, _)| given.clone())),
        );
        changes.insert(kind.as_str().to_owned(), Value::Map(diff));
    }

    if created {
        // The addressed identifier of a new person is not among the body changes.
        if !by_cio && !ident_writes.iter().any(|(k, _, _)| *k == addr.kind) {
            cx.txn
                .put::<IdentifiersF>(ident_key(addr.kind, &addr_norm), pid);
        }
        cx.counters.next_pid += 1;
        let mut ids = Map::new();
        for kind in IdentKind::SETTABLE {
            if let Some(v) = current(&person, kind) {
                ids.insert(kind.as_str().to_owned(), Value::from(v.as_str()));
            }
        }
        ids.insert("cio_id".into(), Value::from(PersonId(pid).cio_id()));
        cx.record(pid, kinds::PROFILE_CREATE, None, Value::Map(ids));
    } else if changes.is_empty() {
        if ordering_changed {
            cx.txn.put::<AttributesF>(pid_key(pid), record);
        }
        return Ok(Outcome::Unchanged(PersonId(pid)));
    }

    person.updated = cx.now;
    {
        let touch = cx.touches.of(pid);
        touch.created |= created;
        touch.attrs = true;
    }
    let new_anon = ident_writes
        .iter()
        .find(|(k, _, _)| *k == IdentKind::AnonymousId)
        .and_then(|(_, _, new)| new.as_ref().map(|(given, _)| given.clone()));
    cx.txn.put::<PeopleF>(pid_key(pid), person);
    if !changes.is_empty() {
        if record.values.is_empty() && record.timestamps.is_empty() && record.ordered_at.is_empty()
        {
            cx.txn.delete::<AttributesF>(pid_key(pid));
        } else {
            cx.txn.put::<AttributesF>(pid_key(pid), record);
        }
        cx.record(pid, kinds::ATTRIBUTE_CHANGE, None, Value::Map(changes));
    }
    *anon_out = new_anon;
    Ok(if created {
        Outcome::Created(PersonId(pid))
    } else {
        Outcome::Updated(PersonId(pid))
    })
}

/// Sets (or with `None` removes) the value at `path`, creating maps on the way. A
/// removal that empties a map drops that map too; a removal of something absent changes
/// nothing (an empty map already there stays). Returns whether anything changed.
fn set_path(map: &mut Map, path: &[String], value: Option<Value>) -> bool {
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    if rest.is_empty() {
        return match value {
            Some(v) => map.insert(first.clone(), v.clone()) != Some(v),
            None => map.remove(first).is_some(),
        };
    }
    match (map.get_mut(first), &value) {
        (Some(Value::Map(child)), _) => {
            let changed = set_path(child, rest, value);
            if changed && child.is_empty() {
                map.remove(first);
            }
            changed
        }
        (_, None) => false, // nothing there to remove
        (_, Some(_)) => {
            let mut child = Map::new();
            set_path(&mut child, rest, value);
            map.insert(first.clone(), Value::Map(child));
            true
        }
    }
}

/// Deletes `pid` and every key they own in every family.
pub(crate) fn delete_person(cx: &mut Ctx<'_, '_>, pid: u32) -> Result<Option<PersonRecord>> {
    let txn = &mut *cx.txn;
    let Some(rec) = txn.get::<PeopleF>(&pid_key(pid))? else {
        return Ok(None);
    };
    cx.touches.of(pid).deleted = true;
    for kind in IdentKind::SETTABLE {
        if let Some(v) = current(&rec, kind) {
            txn.delete::<IdentifiersF>(ident_key(kind, &norm_of(kind, v)));
        }
    }
    txn.delete::<PeopleF>(pid_key(pid));
    txn.delete::<AttributesF>(pid_key(pid));
    let prefix = pid_key(pid);
    let mut rows = Vec::new();
    // Read, not only deleted: the tracked events' rows leave their blocks, and the kept
    // event count follows.
    for (key, rec) in txn.values_between::<ActivityF>(crate::store::prefix_bounds(&prefix))? {
        if let Some((kind, name)) = rec.tracked() {
            let (_, time, seq) = ActivityF::decode_key(&key)?;
            rows.push(crate::activity::BlockRow {
                pid,
                kind: kind.to_owned(),
                name: name.to_owned(),
                time,
                seq,
            });
        }
        txn.delete::<ActivityF>(key);
    }
    crate::activity::blocks_edit(txn, rows, None)?;
    for key in txn.keys(
        Family::EventIds,
        &EventIdsF::prefix(&EventOwner::Person(pid)),
    )? {
        txn.delete::<EventIdsF>(key);
    }
    for key in txn.keys(Family::Deliveries, &prefix)? {
        let (_, _, delivery_id) = DeliveriesF::decode_key(&key)?;
        txn.delete::<DeliveryIdsF>(delivery_id.into_bytes());
        txn.delete::<DeliveriesF>(key);
    }
    for key in txn.keys(Family::Devices, &prefix)? {
        let token = DevicesF::token_of(&key)?;
        txn.delete::<DeviceTokensF>(token.into_bytes());
        txn.delete::<DevicesF>(key);
    }
    for key in txn.keys(Family::Relationships, &prefix)? {
        let (_, type_id, object_id) = RelationshipsF::decode_key(&key)?;
        txn.delete::<MembersF>(MembersF::key(type_id, &object_id, pid));
        txn.delete::<RelationshipsF>(key);
    }
    Ok(Some(rec))
}

/// Delete: removes the person and all their data. They can be created again later.
pub(crate) fn delete(cx: &mut Ctx<'_, '_>, ident: &Ident) -> Result<Outcome> {
    let norm = cx.normalize(ident)?;
    match cx.lookup(ident.kind, &norm)? {
        Some(pid) => {
            delete_person(cx, pid)?;
            Ok(Outcome::Deleted(PersonId(pid)))
        }
        None => Ok(Outcome::NotFound),
    }
}

/// Suppress: deletes the person and blocks their `id`, `email` and `phone` (or, when
/// nobody has the identifier, blocks just that identifier).
pub(crate) fn suppress(cx: &mut Ctx<'_, '_>, ident: &Ident) -> Result<Outcome> {
    let norm = cx.normalize(ident)?;
    let pid = cx.lookup(ident.kind, &norm)?;
    let mut group: Vec<(u8, String)> = Vec::new();
    match pid {
        Some(pid) => {
            if let Some(rec) = delete_person(cx, pid)? {
                for kind in [IdentKind::Id, IdentKind::Email, IdentKind::Phone] {
                    if let Some(v) = current(&rec, kind) {
                        group.push((ident_code(kind), norm_of(kind, v)));
                    }
                }
            }
        }
        None if ident.kind == IdentKind::CioId => {
            return Ok(Outcome::Ignored(IgnoreReason::UnknownCioId))
        }
        None => {}
    }
    if ident.kind != IdentKind::CioId
        && !group
            .iter()
            .any(|(c, v)| *c == ident_code(ident.kind) && *v == norm)
    {
        group.push((ident_code(ident.kind), norm));
    }
    let requested = group.len();
    // Identifiers already suppressed keep their group: the groups join, so unsuppressing
    // any one of them frees all of them.
    let mut i = 0;
    while let Some((code, value)) = group.get(i).cloned() {
        if let Some(kind) = ident_kind(code) {
            if let Some(existing) = cx.txn.get::<SuppressedF>(&ident_key(kind, &value))? {
                for member in existing.group {
                    if !group.contains(&member) {
                        group.push(member);
                    }
                }
            }
        }
        i += 1;
    }
    let record = SuppressedRecord {
        at: cx.now,
        group: group.clone(),
    };
    for (code, value) in &group {
        if let Some(kind) = ident_kind(*code) {
            cx.txn
                .put::<SuppressedF>(ident_key(kind, value), record.clone());
        }
    }
    Ok(Outcome::Suppressed {
        person: pid.map(PersonId),
        identifiers: requested,
    })
}

/// Unsuppress: frees the identifier and every identifier suppressed with it. The old
/// profile is not restored.
pub(crate) fn unsuppress(cx: &mut Ctx<'_, '_>, ident: &Ident) -> Result<Outcome> {
    let norm = cx.normalize(ident)?;
    if ident.kind == IdentKind::CioId {
        return Ok(Outcome::NotFound);
    }
    let Some(rec) = cx.txn.get::<SuppressedF>(&ident_key(ident.kind, &norm))? else {
        return Ok(Outcome::NotFound);
    };
    let mut freed = 0;
    for (code, value) in &rec.group {
        if let Some(kind) = ident_kind(*code) {
            cx.txn.delete::<SuppressedF>(ident_key(kind, value));
            freed += 1;
        }
    }
    // The identifier itself, should the group not name it.
    cx.txn.delete::<SuppressedF>(ident_key(ident.kind, &norm));
    Ok(Outcome::Unsuppressed {
        identifiers: freed.max(1),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn p(s: &str) -> Vec<String> {
        s.split('.').map(str::to_owned).collect()
    }

    #[test]
    fn dotted_paths_patch_nested_maps() {
        let mut m = Map::new();
        set_path(&mut m, &p("a.b.c"), Some(Value::Int(1)));
        set_path(&mut m, &p("a.b.d"), Some(Value::Int(2)));
        assert_eq!(get_path(&m, &p("a.b.c")), Some(&Value::Int(1)));
        assert_eq!(get_path(&m, &p("a.b.d")), Some(&Value::Int(2)));
        set_path(&mut m, &p("a.b.c"), None);
        set_path(&mut m, &p("a.b.d"), None);
        assert!(m.is_empty(), "empty parents are dropped: {m:?}");
        set_path(&mut m, &p("x"), Some(Value::Int(1)));
        set_path(&mut m, &p("x.y"), Some(Value::Int(2)));
        assert_eq!(get_path(&m, &p("x.y")), Some(&Value::Int(2)));
    }
}
