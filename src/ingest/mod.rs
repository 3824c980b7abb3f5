//! Ingest: the JSON that real systems send, turned into operations.
//!
//! [`ProfileDb::ingest`] takes one JSON message (or [`ProfileDb::ingest_str`] one line of
//! text) and applies it as one atomic [`write_batch`](ProfileDb::write_batch), or refuses
//! it. A refusal is a [`Rejection`] carrying an [`Error::Input`] that names the field by
//! its path in the message (`identifiers.id`, `properties.deliveryId`,
//! `batch[3].attributes.plan`) and the reason; a refused message changes nothing. `Err` is
//! only for fatal errors: storage failure, a poisoned handle, damaged records.
//!
//! # How a message is recognised
//! In this order, on the top-level object:
//! 1. `batch` present: a batch (Track v2 `/api/v2/batch` or Pipelines `/v1/batch`). Its
//!    items are recognised one by one by the rules below (a batch inside a batch is
//!    refused). Each item applies, or is refused, on its own; the [`Report`] names each
//!    refused item's index. Consecutive valid items are committed together in one
//!    `write_batch`; when one of them is refused, the items before it are committed
//!    without it and the rest go on after it, so the result is the same as applying
//!    the items one by one.
//! 2. `type` is `person`, `object` or `delivery`: a Track API v2 entity (`action` says
//!    what to do).
//! 3. `type` is `identify`, `track`, `page`, `screen`, `group` or `alias`: a Data
//!    Pipelines (Segment-spec) call.
//! 4. `type` is `profiledb`: an extension message of the export format (see
//!    [`crate::export`]). Not allowed inside a batch.
//! 5. `object_type` and `metric` present (and no `type`): a reporting-webhook event.
//!
//! Anything else is refused naming `type`.
//!
//! # Track API v2 (`type` + `action`)
//! Person identifiers are an object with exactly one of `id`, `email`, `phone`,
//! `cio_id` (without the `cio_` prefix) or `anonymous_id` (as Segment's integration
//! sends for people not yet identified; it may be used only by `event`/`page`/`screen`
//! and relationships).
//!
//! | type/action | operations |
//! |---|---|
//! | person/identify | [`Op::Identify`]: `attributes` as Track v1 takes them ([`Identify::from_json`](crate::Identify::from_json): `_update`, `_timestamp`, dotted keys, `null`/`""` removes); `timestamp` is the ordering time (`_timestamp`) unless the attributes carry one; `cio_relationships` relate the person to objects |
//! | person/delete, suppress, unsuppress | [`Op::Delete`], [`Op::Suppress`], [`Op::Unsuppress`] |
//! | person/event, page, screen | [`Op::Track`]: `name` (for a page, `attributes.url` or `.path` when `name` is missing), `attributes` as the event data, `timestamp`, `id` (deduplication) |
//! | person/add_relationships, delete_relationships | one [`Op::AddRelationship`] / [`Op::DeleteRelationship`] per `cio_relationships` entry |
//! | person/add_device | [`Op::AddDevice`]: `device.token` (or `device.id`), `platform` ios/android, `last_used`, `attributes` |
//! | person/delete_device | [`Op::DeleteDevice`]: `device.token` |
//! | person/merge | [`Op::Merge`]: `primary` and `secondary`, each one identifier |
//! | object/identify, identify_anonymous | [`Op::IdentifyObject`] (`identifiers.object_type_id` + `object_id`, `attributes`), then an [`Op::AddRelationship`] per `cio_relationships` entry (`identifiers` of a person or an `anonymous_id`, `relationship_attributes`), and one for a top-level `anonymous_id` (as the spec's identify_anonymous example sends it) |
//! | object/delete | [`Op::DeleteObject`] |
//! | object/add_relationships, delete_relationships | one relationship op per `cio_relationships` entry |
//! | delivery/event | [`Op::Metric`]: `identifiers.id` is the delivery id, `name` one of opened, converted, delivered; `timestamp`. A delivery this database has not recorded is left alone (there is nobody to record it for). |
//!
//! `cio_object_id` is refused: objects here are addressed by type and object id.
//!
//! # Data Pipelines (Segment spec)
//! The person is `userId` (read as Track v1 reads a path identifier: `cio_<x>` is a
//! `cio_id`, a value with `@` an email, anything else an `id`), else `traits.email` (for
//! identify), else `anonymousId` for what an anonymous visitor can do (track, page,
//! screen, group). `timestamp` is ISO-8601 (RFC 3339; fractions of a second are dropped)
//! or unix seconds; `messageId` becomes the event id, so a retried message is stored once.
//!
//! | type | operations |
//! |---|---|
//! | identify | [`Op::Identify`] with `traits` as attributes; `createdAt` becomes `created_at`; a trait that is an ISO-8601 string becomes unix seconds (as Customer.io's Segment integration converts them); `anonymousId` with a person sets their `anonymous_id`, which moves their anonymous activity to them; `timestamp` is the ordering time. An identify with neither `userId` nor `traits.email` is refused: anonymous traits are not stored. |
//! | track | [`Op::Track`] event `event` with `properties` as data, unless `event` is a semantic event below |
//! | page | [`Op::Track`] page view named by `properties.url` (else `context.page.url`, else `name`); data = `properties` plus `name` and `category` when given |
//! | screen | [`Op::Track`] screen view `name`, data = `properties` |
//! | group | [`Op::IdentifyObject`] `groupId` of type `traits.object_type_id` (default 1; `objectTypeId` also read) with the other traits as attributes, and [`Op::AddRelationship`] of the person (or anonymous id) with `traits.relationshipAttributes` |
//! | alias | [`Op::Merge`] of `previousId` into `userId` (as the Segment destination maps it) |
//!
//! Semantic track events: `Device Created or Updated` ([`Op::AddDevice`]:
//! `context.device.token`, `context.device.type`, `properties` as device attributes,
//! `timestamp` as last used), `Device Deleted`, `User Deleted`, `User Suppressed`,
//! `User Unsuppressed`, `Relationship Deleted` and `Object Deleted`
//! (`properties.objectId`, `properties.objectTypeId` default 1), `Report Delivery Event`
//! ([`Op::Metric`]: `properties.deliveryId`, `metric`, `href`, `reason`). `Report
//! Content Event` (in-app/inbox content views and clicks) has no counterpart here and is
//! stored as an ordinary event with its properties.
//!
//! # Reporting webhooks (`object_type` + `metric`)
//! `object_type` is a channel (`email`, `push`, `sms`/`twilio`, `whatsapp`, `in_app`,
//! `slack`, `webhook`) or `customer`.
//! - Channel events ([`Op::DeliveryEvent`]): `data.delivery_id` names the delivery. If it
//!   is not recorded yet when the event is written, the event creates it for the person
//!   named by `data.identifiers` (`id`, else `email`, else `cio_id`) or
//!   `data.customer_id` (as an `id`), with `campaign_id`, `broadcast_id`,
//!   `newsletter_id`, `action_id` (as the message id), `recipient`, `subject` and
//!   `timestamp` as its creation time (an event naming nobody is then refused, naming
//!   `data.identifiers`); then the metric is reported (at `timestamp`, with `href` and
//!   `failure_message` as the reason). So a batch holding a new delivery's `sent`,
//!   `opened` and `clicked` records it once and all three metrics. Repeated webhook
//!   deliveries of one event keep the metric's first time.
//! - `customer` events: `subscribed` / `unsubscribed` set the person's `unsubscribed`
//!   attribute (only for a person who exists); `cio_subscription_preferences_changed`
//!   sets `cio_subscription_preferences` from `data.content` (a JSON object or its text).
//!
//! # Examples
//! ```
//! # fn main() -> Result<(), profiledb::Error> {
//! use profiledb::{Ident, ProfileDb};
//! let dir = tempfile::tempdir().unwrap();
//! let db = ProfileDb::open(dir.path())?;
//! let report = db.ingest_str(
//!     r#"{"type":"person","action":"identify","identifiers":{"id":"u-1"},"attributes":{"plan":"pro"}}"#,
//! )?;
//! assert_eq!(report.applied, 1);
//! let bad = db.ingest_str(r#"{"type":"person","action":"identify","identifiers":{}}"#)?;
//! assert_eq!(bad.rejected[0].field(), Some("identifiers"));
//! # Ok(()) }
//! ```

mod json;
mod pipelines;
mod v2;
mod webhook;

use std::fmt;

use serde_json::{Map as JsonMap, Value as Json};

use crate::db::{Op, ProfileDb};
use crate::error::{Error, InputError, Result};

/// What [`ProfileDb::ingest`] did with one message.
#[derive(Debug, Default)]
pub struct Report {
    /// Messages (a batch counts each item) applied.
    pub applied: u64,
    /// Messages (or batch items) refused, in batch order; each changed nothing.
    pub rejected: Vec<Rejection>,
}

impl Report {
    fn reject(&mut self, item: Option<usize>, e: InputError) {
        let e = match item {
            Some(i) => json::under(&format!("batch[{i}]"), e),
            None => e,
        };
        self.rejected.push(Rejection {
            item,
            error: Error::Input(e),
        });
    }
}

/// One refused message or batch item.
#[derive(Debug)]
pub struct Rejection {
    /// The item's index in its batch; `None` for a message that is not a batch (or a
    /// batch refused as a whole).
    pub item: Option<usize>,
    /// Why: an [`Error::Input`] naming the field (with its `batch[i].` prefix) and the
    /// reason.
    pub error: Error,
}

impl Rejection {
    /// The field the refusal names.
    pub fn field(&self) -> Option<&str> {
        self.error.input().map(|e| e.field.as_str())
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.item {
            Some(i) => write!(f, "item {i}: {}", self.error),
            None => write!(f, "{}", self.error),
        }
    }
}

/// How the fields of one operation's errors are named in the message.
#[derive(Debug, Clone, Default)]
pub(crate) struct Names {
    /// The field that names the person (for suppressed identifiers).
    who: String,
    /// The object that the operation's own field names are inside.
    base: String,
    /// Operation field names that have another name in the message.
    renames: Vec<(String, String)>,
}

impl Names {
    pub(crate) fn new(who: impl Into<String>) -> Names {
        Names {
            who: who.into(),
            ..Names::default()
        }
    }
    pub(crate) fn base(mut self, base: &str) -> Names {
        self.base = base.to_owned();
        self
    }
    pub(crate) fn rename(mut self, from: &str, to: &str) -> Names {
        self.renames.push((from.to_owned(), to.to_owned()));
        self
    }
    fn name(&self, field: &str) -> String {
        for (from, to) in &self.renames {
            if field == from {
                return to.clone();
            }
            if let Some(rest) = field.strip_prefix(from.as_str()) {
                if rest.starts_with('.') || rest.starts_with('[') {
                    return format!("{to}{rest}");
                }
            }
        }
        let who_leaf = self.who.rsplit('.').next().unwrap_or_default();
        if field == who_leaf || field.is_empty() {
            return self.who.clone();
        }
        if field == self.base || field.starts_with(&format!("{}.", self.base)) {
            return field.to_owned();
        }
        json::join(&self.base, field)
    }
}

/// The operations one message becomes, with how to name their errors.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub(crate) steps: Vec<(Op, Names)>,
}

impl Plan {
    pub(crate) fn one(op: Op, names: Names) -> Plan {
        Plan {
            steps: vec![(op, names)],
        }
    }
}

/// The input error behind a refused operation, named as in the message; `Err` for a
/// fatal error.
fn refusal(e: Error, names: &Names) -> std::result::Result<InputError, Error> {
    match e {
        Error::Input(ie) => Ok(InputError::new(names.name(&ie.field), ie.reason)),
        Error::Suppressed { kind, value } => Ok(InputError::invalid(
            names.who.clone(),
            format!("names the {kind} `{value}`, which is suppressed; unsuppress it first"),
        )),
        Error::InBatch { source, .. } => refusal(*source, names),
        other => Err(other),
    }
}

enum Kind<'a> {
    Batch,
    V2(&'a str),
    Pipelines(&'a str),
    Webhook,
    Extension,
}

fn recognise(m: &JsonMap<String, Json>) -> std::result::Result<Kind<'_>, InputError> {
    if m.contains_key("batch") {
        return Ok(Kind::Batch);
    }
    let webhook = m.contains_key("object_type") && m.contains_key("metric");
    match m.get("type") {
        Some(Json::String(t)) => match t.as_str() {
            "person" | "object" | "delivery" => Ok(Kind::V2(t)),
            "identify" | "track" | "page" | "screen" | "group" | "alias" => Ok(Kind::Pipelines(t)),
            "profiledb" => Ok(Kind::Extension),
            other => Err(InputError::invalid(
                "type",
                format!(
                    "`{other}` is not a message type profiledb reads (Track v2: person, object, \
                     delivery; Pipelines: identify, track, page, screen, group, alias)"
                ),
            )),
        },
        None if webhook => Ok(Kind::Webhook),
        Some(_) => Err(InputError::invalid("type", "must be a string")),
        None => Err(InputError::invalid(
            "type",
            "is missing, and the message is not a batch (`batch`) or a reporting webhook \
             (`object_type` and `metric`)",
        )),
    }
}

/// The outcome of trying to commit some items together.
enum Attempt {
    Applied,
    /// Item `n` (relative) was refused.
    Refused(usize, InputError),
    /// The commit refused input it cannot attribute to one item.
    Unattributed(InputError),
}

/// The operations one recognised message becomes. Pure: planning reads nothing, so a
/// batch's items are planned before any of them is written, and every decision that
/// depends on what is stored is made inside the write.
fn plan(kind: Kind<'_>, m: &JsonMap<String, Json>) -> std::result::Result<Plan, InputError> {
    match kind {
        Kind::V2(t) => v2::plan(m, t),
        Kind::Pipelines(t) => pipelines::plan(m, t),
        Kind::Webhook => webhook::plan(m),
        Kind::Batch => Err(InputError::invalid("batch", "a batch cannot hold a batch")),
        Kind::Extension => Err(InputError::invalid(
            "type",
            "profiledb extension messages cannot be inside a batch",
        )),
    }
}

impl ProfileDb {
    /// Applies one JSON message: a Track API v2 entity, a Data Pipelines call, a
    /// reporting-webhook event, a batch of the first two, or a profiledb extension
    /// message of [`export`](ProfileDb::export). See the [module docs](crate::ingest).
    ///
    /// # Errors
    /// Only fatal errors: [`Error::Storage`], [`Error::Poisoned`], [`Error::Corrupted`].
    /// Refused input is in the report.
    pub fn ingest(&self, msg: &Json) -> Result<Report> {
        let mut report = Report::default();
        let Some(m) = msg.as_object() else {
            report.reject(
                None,
                InputError::invalid("message", "must be a JSON object"),
            );
            return Ok(report);
        };
        match recognise(m) {
            Err(e) => report.reject(None, e),
            Ok(Kind::Batch) => self.ingest_batch(m, &mut report)?,
            Ok(Kind::Extension) => match crate::export::dump::apply(self, m)? {
                Ok(()) => report.applied += 1,
                Err(e) => report.reject(None, e),
            },
            Ok(kind) => match plan(kind, m) {
                Ok(plan) => self.apply_items(&[(None, plan)], &mut report)?,
                Err(e) => report.reject(None, e),
            },
        }
        Ok(report)
    }

    /// Parses `line` as JSON and [`ingest`](ProfileDb::ingest)s it; text that is not
    /// JSON is a rejection naming `message`.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> Result<(), profiledb::Error> {
    /// use profiledb::{Ident, ProfileDb};
    /// let dir = tempfile::tempdir().unwrap();
    /// let db = ProfileDb::open(dir.path())?;
    /// let report = db.ingest_str(
    ///     r#"{"type": "identify", "userId": "p-1", "traits": {"email": "p@example.com"}}"#,
    /// )?;
    /// assert_eq!(report.applied, 1);
    /// assert!(db.person(&Ident::email("p@example.com"))?.is_some());
    /// // Refused input changes nothing and names the field.
    /// let report = db.ingest_str(r#"{"type": "person", "action": "identify"}"#)?;
    /// assert_eq!(report.rejected.len(), 1);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`ingest`](ProfileDb::ingest).
    pub fn ingest_str(&self, line: &str) -> Result<Report> {
        let refuse = |why: &str| {
            let mut report = Report::default();
            report.reject(None, InputError::invalid("message", why));
            Ok(report)
        };
        if line.starts_with('\u{feff}') {
            return refuse("starts with a UTF-8 byte-order mark (U+FEFF); strip it");
        }
        if line.trim().is_empty() {
            return refuse("is empty");
        }
        match serde_json::from_str::<Json>(line) {
            Ok(msg) => self.ingest(&msg),
            Err(e) => {
                let mut report = Report::default();
                report.reject(
                    None,
                    InputError::invalid("message", format!("is not valid JSON: {e}")),
                );
                Ok(report)
            }
        }
    }

    /// As [`ingest_str`](ProfileDb::ingest_str), for bytes as read from a file or a
    /// socket: bytes that are not UTF-8 are a rejection naming `message`.
    ///
    /// # Errors
    /// As [`ingest`](ProfileDb::ingest).
    pub fn ingest_bytes(&self, line: &[u8]) -> Result<Report> {
        match std::str::from_utf8(line) {
            Ok(text) => self.ingest_str(text),
            Err(e) => {
                let mut report = Report::default();
                report.reject(
                    None,
                    InputError::invalid(
                        "message",
                        format!("is not valid UTF-8 (at byte {})", e.valid_up_to()),
                    ),
                );
                Ok(report)
            }
        }
    }

    fn ingest_batch(&self, m: &JsonMap<String, Json>, report: &mut Report) -> Result<()> {
        let Some(Json::Array(items)) = m.get("batch") else {
            report.reject(None, InputError::invalid("batch", "must be an array"));
            return Ok(());
        };
        let mut pending: Vec<(Option<usize>, Plan)> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let Some(im) = item.as_object() else {
                report.reject(Some(i), InputError::invalid("", "must be a JSON object"));
                continue;
            };
            let kind = match recognise(im) {
                Ok(k) => k,
                Err(e) => {
                    report.reject(Some(i), e);
                    continue;
                }
            };
            match plan(kind, im) {
                Ok(plan) => pending.push((Some(i), plan)),
                Err(e) => report.reject(Some(i), e),
            }
        }
        self.apply_items(&pending, report)?;
        report.rejected.sort_by_key(|r| r.item);
        Ok(())
    }

    /// Commits `items` together where possible; each refused item is reported and the
    /// others still apply, in order.
    fn apply_items(&self, items: &[(Option<usize>, Plan)], report: &mut Report) -> Result<()> {
        let mut start = 0;
        while let Some(rest) = items.get(start..).filter(|r| !r.is_empty()) {
            match self.attempt(rest)? {
                Attempt::Applied => {
                    report.applied += rest.len() as u64;
                    return Ok(());
                }
                Attempt::Refused(n, e) => {
                    if let Some(before) = rest.get(..n) {
                        self.apply_items(before, report)?;
                    }
                    report.reject(rest.get(n).and_then(|(item, _)| *item), e);
                    start += n + 1;
                }
                Attempt::Unattributed(e) => {
                    if let [(item, _)] = rest {
                        report.reject(*item, e);
                    } else {
                        for one in rest.chunks(1) {
                            self.apply_items(one, report)?;
                        }
                    }
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    fn attempt(&self, items: &[(Option<usize>, Plan)]) -> Result<Attempt> {
        let mut ops = Vec::new();
        let mut owners = Vec::new();
        for (n, (_, plan)) in items.iter().enumerate() {
            for (op, names) in &plan.steps {
                ops.push(op.clone());
                owners.push((n, names));
            }
        }
        if ops.is_empty() {
            return Ok(Attempt::Applied);
        }
        match self.write_batch(&ops) {
            Ok(_) => Ok(Attempt::Applied),
            Err(Error::InBatch { index, source }) => {
                let Some((n, names)) = owners.get(index) else {
                    return Err(*source);
                };
                match refusal(*source, names) {
                    Ok(e) => Ok(Attempt::Refused(*n, e)),
                    Err(fatal) => Err(fatal),
                }
            }
            Err(e) => match refusal(e, &Names::default()) {
                Ok(e) => Ok(Attempt::Unattributed(e)),
                Err(fatal) => Err(fatal),
            },
        }
    }
}
