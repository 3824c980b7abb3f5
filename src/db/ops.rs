//! [`Op`], [`ProfileDb::write_batch`] and the single-operation write methods: each
//! operation is dispatched to the module that implements it, inside one write context.

use crate::activity::{self, Track};
use crate::deliveries::{self, Metric, NewDelivery};
use crate::devices::{self, DeviceInput, PushResult};
use crate::error::{Error, Result};
use crate::merge;
use crate::model::{Ident, ObjectRef, Outcome, Value};
use crate::people::{self, Identify};
use crate::relations;
use crate::segments::members;

use super::write::Ctx;
use super::ProfileDb;

/// One write operation, for [`ProfileDb::write_batch`]. Each but
/// [`DeliveryEvent`](Op::DeliveryEvent) has a method of the same purpose on
/// [`ProfileDb`] that runs it alone.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Op {
    /// Add or update a person.
    Identify(Identify),
    /// Delete a person and all their data.
    Delete(Ident),
    /// Delete a person and block their identifiers.
    Suppress(Ident),
    /// Free suppressed identifiers.
    Unsuppress(Ident),
    /// Track an event, page view or screen view.
    Track(Track),
    /// Add or update a person's device.
    AddDevice {
        /// Whose.
        person: Ident,
        /// The device.
        device: DeviceInput,
    },
    /// Delete a person's device.
    DeleteDevice {
        /// Whose.
        person: Ident,
        /// The device's token.
        token: String,
    },
    /// Report what happened to a push sent to a device.
    PushResult {
        /// The device's token.
        token: String,
        /// What happened.
        result: PushResult,
    },
    /// Record a delivery to a person.
    AddDelivery {
        /// To whom.
        person: Ident,
        /// The delivery.
        delivery: NewDelivery,
    },
    /// Report a metric against a delivery.
    Metric(Metric),
    /// Report a metric against a delivery, recording the delivery first when its id is
    /// not recorded yet (as a reporting webhook's first event for a delivery does). The
    /// check and the record happen inside the write. Run it with
    /// [`write_batch`](ProfileDb::write_batch).
    DeliveryEvent {
        /// Whose delivery it is; needed only when it is not recorded yet (else the
        /// event is refused, naming `person`).
        person: Option<Ident>,
        /// The delivery to record when its id is not recorded yet.
        delivery: NewDelivery,
        /// The metric; its delivery id must be `delivery`'s.
        metric: Metric,
    },
    /// Create or rename an object type.
    DefineObjectType {
        /// The type id (from 1).
        type_id: u32,
        /// Its name.
        name: String,
    },
    /// Create or update an object.
    IdentifyObject {
        /// Which object.
        object: ObjectRef,
        /// Attributes to set (`null`/`""` removes).
        attributes: Vec<(String, Value)>,
    },
    /// Delete an object and its relationships.
    DeleteObject(ObjectRef),
    /// Relate a person (or an anonymous id) to an object.
    AddRelationship {
        /// The person.
        person: Ident,
        /// The object.
        object: ObjectRef,
        /// Relationship attributes to set (`null`/`""` removes).
        attributes: Vec<(String, Value)>,
    },
    /// Remove a person's relationship to an object.
    DeleteRelationship {
        /// The person.
        person: Ident,
        /// The object.
        object: ObjectRef,
    },
    /// Add people to a manual segment (at most 1000).
    AddToSegment {
        /// The segment id.
        segment: u32,
        /// The people.
        people: Vec<Ident>,
    },
    /// Remove people from a manual segment (at most 1000).
    RemoveFromSegment {
        /// The segment id.
        segment: u32,
        /// The people.
        people: Vec<Ident>,
    },
    /// Merge `secondary` into `primary`.
    Merge {
        /// Who remains.
        primary: Ident,
        /// Who is merged in and deleted.
        secondary: Ident,
    },
}

impl From<Identify> for Op {
    fn from(op: Identify) -> Op {
        Op::Identify(op)
    }
}

/// Runs one operation in the write context.
fn apply_op(cx: &mut Ctx<'_, '_>, op: &Op) -> Result<Outcome> {
    match op {
        Op::Identify(i) => identify(cx, i),
        Op::Delete(i) => people::delete(cx, i),
        Op::Suppress(i) => people::suppress(cx, i),
        Op::Unsuppress(i) => people::unsuppress(cx, i),
        Op::Track(t) => activity::track(cx, t),
        Op::AddDevice { person, device } => devices::add_device(cx, person, device),
        Op::DeleteDevice { person, token } => devices::delete_device(cx, person, token),
        Op::PushResult { token, result } => devices::push_result(cx, token, *result),
        Op::AddDelivery { person, delivery } => deliveries::add_delivery(cx, person, delivery),
        Op::Metric(m) => deliveries::report_metric(cx, m),
        Op::DeliveryEvent {
            person,
            delivery,
            metric,
        } => deliveries::delivery_event(cx, person.as_ref(), delivery, metric),
        Op::DefineObjectType { type_id, name } => relations::define_type(cx, *type_id, name),
        Op::IdentifyObject { object, attributes } => {
            relations::identify_object(cx, object, attributes)
        }
        Op::DeleteObject(o) => relations::delete_object(cx, o),
        Op::AddRelationship {
            person,
            object,
            attributes,
        } => relations::add_relationship(cx, person, object, attributes),
        Op::DeleteRelationship { person, object } => {
            relations::delete_relationship(cx, person, object)
        }
        Op::Merge { primary, secondary } => merge::merge(cx, primary, secondary),
        Op::AddToSegment { segment, people } => {
            members::change_members(cx, *segment, people, false)
        }
        Op::RemoveFromSegment { segment, people } => {
            members::change_members(cx, *segment, people, true)
        }
    }
}

/// Identify, with what it sets off: a newly set `anonymous_id` moves that visitor's
/// anonymous activity to the person, then `cio_relationships` are applied.
fn identify(cx: &mut Ctx<'_, '_>, op: &Identify) -> Result<Outcome> {
    let (outcome, new_anon) = people::identify(cx, op)?;
    let pid = match &outcome {
        Outcome::Created(p) | Outcome::Updated(p) | Outcome::Unchanged(p) => *p,
        _ => return Ok(outcome),
    };
    if let Some(anon) = new_anon {
        activity::merge_anonymous(cx, pid.0, &anon)?;
    }
    if op.relationships.is_empty() {
        return Ok(outcome);
    }
    let who = Ident::cio_id(pid.cio_id());
    let mut changed = false;
    for r in &op.relationships {
        let o = if r.remove {
            relations::delete_relationship(cx, &who, &r.object)?
        } else {
            relations::add_relationship(cx, &who, &r.object, &r.attributes)?
        };
        changed |= matches!(o, Outcome::Updated(_));
    }
    Ok(match outcome {
        Outcome::Unchanged(p) if changed => Outcome::Updated(p),
        other => other,
    })
}

impl ProfileDb {
    /// Applies `ops` as one atomic unit: every operation or none. Operations see the
    /// effects of the ones before them in the batch.
    ///
    /// # Errors
    /// [`Error::InBatch`](crate::Error::InBatch) naming the first operation that failed (nothing of the batch
    /// is written); [`Error::Storage`](crate::Error::Storage) when the commit or flush fails (the handle then
    /// refuses further writes, [`Error::Poisoned`](crate::Error::Poisoned), until reopened).
    ///
    /// # Examples
    /// ```
    /// # fn main() -> Result<(), profiledb::Error> {
    /// use profiledb::{Ident, Identify, Op, ProfileDb, Track};
    /// let dir = tempfile::tempdir().unwrap();
    /// let db = ProfileDb::open(dir.path())?;
    /// let outcomes = db.write_batch(&[
    ///     Op::Identify(Identify::new(Ident::id("u-1")).set("plan", "pro")),
    ///     Op::Track(Track::event(Ident::id("u-1"), "signed_up")),
    /// ])?;
    /// assert_eq!(outcomes.len(), 2);
    /// // A refused operation refuses the whole batch, naming it.
    /// let err = db
    ///     .write_batch(&[
    ///         Op::Track(Track::event(Ident::id("u-1"), "ok")),
    ///         Op::Identify(Identify::new(Ident::id(""))),
    ///     ])
    ///     .unwrap_err();
    /// assert!(matches!(err, profiledb::Error::InBatch { index: 1, .. }));
    /// # Ok(()) }
    /// ```
    pub fn write_batch(&self, ops: &[Op]) -> Result<Vec<Outcome>> {
        self.apply(ops, true)
    }

    fn apply(&self, ops: &[Op], wrap: bool) -> Result<Vec<Outcome>> {
        self.run(|cx| {
            let mut outcomes = Vec::with_capacity(ops.len());
            for (index, op) in ops.iter().enumerate() {
                match apply_op(cx, op) {
                    Ok(o) => outcomes.push(o),
                    Err(e) if wrap => {
                        return Err(Error::InBatch {
                            index,
                            source: Box::new(e),
                        })
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(outcomes)
        })
    }

    fn one(&self, op: Op) -> Result<Outcome> {
        self.run(|cx| apply_op(cx, &op))
    }

    /// Adds or updates a person (Track API v1 identify).
    ///
    /// Nothing is written until every check has passed; in a batch, identify is part of
    /// the batch's one atomic commit.
    ///
    /// The identify rules follow Customer.io's Track API (model doc 1.2 and 1.4):
    /// - The person addressed exists: update them. A body identifier owned by somebody else
    ///   is a conflict: nothing changes, and the addressed person gets a
    ///   `failed_attribute_change` activity.
    /// - The person addressed does not exist but a body identifier (say `email`) belongs to
    ///   somebody: update that person and give them the addressed identifier (a new `id` with
    ///   an existing email updates the existing person). If that person already has a
    ///   different identifier of the addressed kind, that is a conflict as above.
    /// - Nobody matches: create a person, unless `_update: true` ([`Identify::update_only`](crate::Identify::update_only)).
    /// - Addressed by an unknown `cio_id`: nothing happens.
    /// - `id`, `email` and `phone` can be *added* to a person who lacks them, but *changed*
    ///   or removed only when the person is addressed by `cio_id` (or, for email addressed by
    ///   id, with [`Builder::allow_email_update_by_id`](crate::Builder::allow_email_update_by_id)).
    ///   `anonymous_id` is an ordinary settable attribute.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> Result<(), profiledb::Error> {
    /// use profiledb::{Ident, Identify, Outcome, ProfileDb};
    /// let dir = tempfile::tempdir().unwrap();
    /// let db = ProfileDb::open(dir.path())?;
    /// db.identify(Identify::new(Ident::id("u-1")).set("email", "ann@example.com"))?;
    /// // A new id with an existing email updates that person.
    /// let o = db.identify(Identify::new(Ident::id("u-2")).set("email", "ann@example.com"))?;
    /// assert!(matches!(o, Outcome::Refused { .. })); // u-1 already has an id
    /// // `_update: true` never creates anybody.
    /// let o = db.identify(Identify::new(Ident::id("u-9")).update_only(true))?;
    /// assert!(matches!(o, Outcome::Ignored(_)));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Input`](crate::Error::Input) naming the field for bad input or a limit; [`Error::Suppressed`](crate::Error::Suppressed)
    /// when an identifier is suppressed. Nothing is written on error.
    pub fn identify(&self, op: Identify) -> Result<Outcome> {
        self.one(Op::Identify(op))
    }

    /// Deletes a person and all their data. Identifying them again creates a new person.
    ///
    /// # Errors
    /// [`Error::Input`](crate::Error::Input) when the identifier is malformed.
    pub fn delete(&self, ident: &Ident) -> Result<Outcome> {
        self.one(Op::Delete(ident.clone()))
    }

    /// Deletes a person and blocks their `id`, `email` and `phone` from use.
    ///
    /// # Errors
    /// [`Error::Input`](crate::Error::Input) when the identifier is malformed.
    pub fn suppress(&self, ident: &Ident) -> Result<Outcome> {
        self.one(Op::Suppress(ident.clone()))
    }

    /// Frees a suppressed identifier (and those suppressed with it).
    ///
    /// # Errors
    /// [`Error::Input`](crate::Error::Input) when the identifier is malformed.
    pub fn unsuppress(&self, ident: &Ident) -> Result<Outcome> {
        self.one(Op::Unsuppress(ident.clone()))
    }

    /// Tracks an event, page view or screen view.
    ///
    /// Events, page and screen views, anonymous activity, and timeline reads.
    ///
    /// - A tracked event lands in the person's timeline (`activity`), in a row of its
    ///   name's column blocks (`event_blocks`, which answer conditions over everyone), and,
    ///   when it has an id, in `event_ids`: the same id twice for the same owner is stored
    ///   once.
    /// - Tracking for an `id`/`email` nobody has creates that person (as Customer.io does).
    /// - Events with only an `anonymous_id` that no person has are kept apart (`anonymous`):
    ///   they are not a person and are not listed. When a person gets that `anonymous_id`,
    ///   the events move into their timeline with an `anon_merge` activity, and relationships
    ///   to objects made for the anonymous id move with them (model doc 1.3). While a person
    ///   has the anonymous id, events tracked by it go straight to the person.
    /// - Timestamps default to now; backfilled (past) timestamps are placed in time order.
    /// - Nothing expires unless asked: [`ProfileDb::expire`](crate::ProfileDb::expire)
    ///   removes activity older than a time.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> Result<(), profiledb::Error> {
    /// use profiledb::{Ident, Outcome, ProfileDb, Track};
    /// let dir = tempfile::tempdir().unwrap();
    /// let db = ProfileDb::open(dir.path())?;
    /// let buy = Track::event(Ident::id("u-1"), "purchase").property("amount", 49).id("e-1");
    /// assert!(matches!(db.track(buy.clone())?, Outcome::Recorded(Some(_))));
    /// assert_eq!(db.track(buy)?, Outcome::Duplicate); // same event id: stored once
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Input`](crate::Error::Input) naming the field (name over 100 bytes, data over 100 KB...).
    pub fn track(&self, track: Track) -> Result<Outcome> {
        self.one(Op::Track(track))
    }

    /// Adds or updates a device of `person`.
    ///
    /// Push devices: upsert by token, delete, status transitions, token ownership.
    ///
    /// - Adding a device is an upsert keyed by token: the same token again updates platform,
    ///   `last_used` (default: now) and attributes (patched; `null`/`""` removes one), and
    ///   resets a `bounced` or `suppressed` status to unused (model doc 5).
    /// - A token belongs to one person: adding it to another moves it, and the first person
    ///   loses it (both get a `device_change` activity).
    /// - Status: unused → `sent` when a push is accepted; `bounced` after one failed push;
    ///   `suppressed` after two bounces in a row; a later accepted push is `sent` again.
    /// - A person holds at most [`Limits::max_devices`](crate::Limits::max_devices) devices
    ///   (default 25); adding one more is refused. Merging people may exceed it: merges never
    ///   drop a device.
    ///
    /// # Errors
    /// [`Error::Input`](crate::Error::Input) for a bad token or attribute, or past the per-person device cap.
    pub fn add_device(&self, person: &Ident, device: DeviceInput) -> Result<Outcome> {
        self.one(Op::AddDevice {
            person: person.clone(),
            device,
        })
    }

    /// Deletes device `token` of `person`.
    ///
    /// # Errors
    /// [`Error::Input`](crate::Error::Input) for a malformed identifier or token.
    pub fn delete_device(&self, person: &Ident, token: &str) -> Result<Outcome> {
        self.one(Op::DeleteDevice {
            person: person.clone(),
            token: token.to_owned(),
        })
    }

    /// Reports a push result for device `token`, moving its status.
    ///
    /// # Errors
    /// [`Error::Input`](crate::Error::Input) for a malformed token.
    pub fn push_result(&self, token: &str, result: PushResult) -> Result<Outcome> {
        self.one(Op::PushResult {
            token: token.to_owned(),
            result,
        })
    }

    /// Records a delivery to `person`.
    ///
    /// Deliveries: one message sent to one person, and the metrics reported against it.
    ///
    /// - A delivery is recorded once under its id; recording the same id again is refused.
    /// - A metric must belong to the delivery's channel (model doc 4: an SMS is never
    ///   `opened`, a webhook never `delivered`); anything else is refused naming the metric
    ///   and the channel's vocabulary.
    /// - Each metric keeps the time it was first reported. The status is the metric reported
    ///   with the latest time (on a tie, the later report), `created` before any.
    /// - Each metric also lands in the person's timeline as `<metric>_<channel>` (SMS is
    ///   `twilio` there, as in Customer.io's activity types), at the metric's time.
    /// - Recent deliveries read newest first (by created time); lookup by id reads
    ///   `delivery_ids` then the record.
    ///
    /// # Errors
    /// [`Error::Input`](crate::Error::Input) for a bad field or an id already recorded.
    pub fn add_delivery(&self, person: &Ident, delivery: NewDelivery) -> Result<Outcome> {
        self.one(Op::AddDelivery {
            person: person.clone(),
            delivery,
        })
    }

    /// Reports a metric against a delivery.
    ///
    /// # Errors
    /// [`Error::Input`](crate::Error::Input) when the metric is not one of the delivery's channel.
    pub fn report_metric(&self, metric: Metric) -> Result<Outcome> {
        self.one(Op::Metric(metric))
    }

    /// Creates or renames object type `type_id`.
    ///
    /// # Errors
    /// [`Error::Input`](crate::Error::Input) for type id 0 or a name over the value limit.
    pub fn define_object_type(&self, type_id: u32, name: &str) -> Result<Outcome> {
        self.one(Op::DefineObjectType {
            type_id,
            name: name.to_owned(),
        })
    }

    /// Creates or updates an object.
    ///
    /// Objects (companies, accounts...) and relationships between people and objects.
    ///
    /// - Object types are numbered from 1 (Customer.io's string-formatted integers); an
    ///   object is (type id, object id). Identifying an object creates or patches it
    ///   (`null`/`""` removes an attribute); its type is created on first use.
    /// - A relationship links one person to one object and has its own attributes. It is
    ///   readable from both sides: `relationships` is keyed by person, `members` by object.
    ///   Relating to an object that does not exist yet creates it, empty.
    /// - Deleting an object removes every relationship to it (each person gets a
    ///   `delete_relationship` activity), including those kept for anonymous ids (found by a
    ///   scan of `anon_relationships`, which holds only relationships of people not yet
    ///   identified).
    /// - Relationships can be made for an `anonymous_id` that no person has yet; they move
    ///   to the person who is identified with it.
    ///
    /// # Errors
    /// [`Error::Input`](crate::Error::Input) naming the field.
    pub fn identify_object(
        &self,
        object: &ObjectRef,
        attributes: Vec<(String, Value)>,
    ) -> Result<Outcome> {
        self.one(Op::IdentifyObject {
            object: object.clone(),
            attributes,
        })
    }

    /// Deletes an object and every relationship to it.
    ///
    /// # Errors
    /// [`Error::Input`](crate::Error::Input) for a malformed object reference.
    pub fn delete_object(&self, object: &ObjectRef) -> Result<Outcome> {
        self.one(Op::DeleteObject(object.clone()))
    }

    /// Relates `person` to `object`, with relationship attributes.
    ///
    /// # Errors
    /// [`Error::Input`](crate::Error::Input) naming the field.
    pub fn add_relationship(
        &self,
        person: &Ident,
        object: &ObjectRef,
        attributes: Vec<(String, Value)>,
    ) -> Result<Outcome> {
        self.one(Op::AddRelationship {
            person: person.clone(),
            object: object.clone(),
            attributes,
        })
    }

    /// Removes `person`'s relationship to `object`.
    ///
    /// # Errors
    /// [`Error::Input`](crate::Error::Input) for a malformed identifier or object reference.
    pub fn delete_relationship(&self, person: &Ident, object: &ObjectRef) -> Result<Outcome> {
        self.one(Op::DeleteRelationship {
            person: person.clone(),
            object: object.clone(),
        })
    }

    /// Merges `secondary` into `primary`.
    ///
    /// Merging people: the secondary into the primary (model doc 1.5).
    ///
    /// - The primary must exist; otherwise nothing happens ([`IgnoreReason::NoMatch`](crate::IgnoreReason::NoMatch)), as
    ///   Customer.io silently drops the request. An unknown secondary is
    ///   [`Outcome::NotFound`]. Merging a person into themselves is refused.
    /// - Attributes: the primary keeps every attribute it has; it inherits those it lacks (or
    ///   has empty: `""`, `[]`, `{}`) from the secondary, with their set-times.
    /// - Identifiers are not inherited: the secondary's `id`, `email`, `phone` and
    ///   `anonymous_id` are freed with it.
    /// - Events, page and screen views and delivery-metric activity move to the primary's
    ///   timeline (an event id the primary already has is dropped); the secondary's other
    ///   activity (its attribute changes, creation) is deleted with it.
    /// - Deliveries and devices move to the primary (devices even past the per-person cap:
    ///   a merge never drops a device). Relationships the primary lacks move; for an object
    ///   both are related to, the primary keeps its own relationship attributes.
    /// - Manual segment memberships the primary lacks are inherited; data-driven ones follow
    ///   from the primary's new data.
    /// - The secondary and every key of it are then deleted, and the primary gets a
    ///   `profile_merge` activity naming the secondary.
    ///
    /// # Errors
    /// [`Error::Input`](crate::Error::Input) when both name the same person.
    pub fn merge(&self, primary: &Ident, secondary: &Ident) -> Result<Outcome> {
        self.one(Op::Merge {
            primary: primary.clone(),
            secondary: secondary.clone(),
        })
    }
}
