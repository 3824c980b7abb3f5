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

/// One write operation, for [`ProfileDb::write_batch`]. Each has a method of the same
/// purpose on [`ProfileDb`] that runs it alone.
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
    /// [`Error::InBatch`] naming the first operation that failed (nothing of the batch
    /// is written); [`Error::Storage`] when the commit or flush fails (the handle then
    /// refuses further writes, [`Error::Poisoned`], until reopened).
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

    /// Adds or updates a person (Track API v1 identify). See [`crate::people`] for the
    /// rules.
    ///
    /// # Errors
    /// [`Error::Input`] naming the field for bad input or a limit; [`Error::Suppressed`]
    /// when an identifier is suppressed. Nothing is written on error.
    pub fn identify(&self, op: Identify) -> Result<Outcome> {
        self.one(Op::Identify(op))
    }

    /// Deletes a person and all their data. Identifying them again creates a new person.
    ///
    /// # Errors
    /// [`Error::Input`] when the identifier is malformed.
    pub fn delete(&self, ident: &Ident) -> Result<Outcome> {
        self.one(Op::Delete(ident.clone()))
    }

    /// Deletes a person and blocks their `id`, `email` and `phone` from use.
    ///
    /// # Errors
    /// [`Error::Input`] when the identifier is malformed.
    pub fn suppress(&self, ident: &Ident) -> Result<Outcome> {
        self.one(Op::Suppress(ident.clone()))
    }

    /// Frees a suppressed identifier (and those suppressed with it).
    ///
    /// # Errors
    /// [`Error::Input`] when the identifier is malformed.
    pub fn unsuppress(&self, ident: &Ident) -> Result<Outcome> {
        self.one(Op::Unsuppress(ident.clone()))
    }

    /// Tracks an event, page view or screen view (see [`crate::activity`]).
    ///
    /// # Errors
    /// [`Error::Input`] naming the field (name over 100 bytes, data over 100 KB...).
    pub fn track(&self, track: Track) -> Result<Outcome> {
        self.one(Op::Track(track))
    }

    /// Adds or updates a device of `person` (see [`crate::devices`]).
    ///
    /// # Errors
    /// [`Error::Input`] for a bad token or attribute, or past the per-person device cap.
    pub fn add_device(&self, person: &Ident, device: DeviceInput) -> Result<Outcome> {
        self.one(Op::AddDevice {
            person: person.clone(),
            device,
        })
    }

    /// Deletes device `token` of `person`.
    ///
    /// # Errors
    /// [`Error::Input`] for a malformed identifier or token.
    pub fn delete_device(&self, person: &Ident, token: &str) -> Result<Outcome> {
        self.one(Op::DeleteDevice {
            person: person.clone(),
            token: token.to_owned(),
        })
    }

    /// Reports a push result for device `token`, moving its status.
    ///
    /// # Errors
    /// [`Error::Input`] for a malformed token.
    pub fn push_result(&self, token: &str, result: PushResult) -> Result<Outcome> {
        self.one(Op::PushResult {
            token: token.to_owned(),
            result,
        })
    }

    /// Records a delivery to `person` (see [`crate::deliveries`]).
    ///
    /// # Errors
    /// [`Error::Input`] for a bad field or an id already recorded.
    pub fn add_delivery(&self, person: &Ident, delivery: NewDelivery) -> Result<Outcome> {
        self.one(Op::AddDelivery {
            person: person.clone(),
            delivery,
        })
    }

    /// Reports a metric against a delivery.
    ///
    /// # Errors
    /// [`Error::Input`] when the metric is not one of the delivery's channel.
    pub fn report_metric(&self, metric: Metric) -> Result<Outcome> {
        self.one(Op::Metric(metric))
    }

    /// Creates or renames object type `type_id`.
    ///
    /// # Errors
    /// [`Error::Input`] for type id 0 or a name over the value limit.
    pub fn define_object_type(&self, type_id: u32, name: &str) -> Result<Outcome> {
        self.one(Op::DefineObjectType {
            type_id,
            name: name.to_owned(),
        })
    }

    /// Creates or updates an object (see [`crate::relations`]).
    ///
    /// # Errors
    /// [`Error::Input`] naming the field.
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
    /// [`Error::Input`] for a malformed object reference.
    pub fn delete_object(&self, object: &ObjectRef) -> Result<Outcome> {
        self.one(Op::DeleteObject(object.clone()))
    }

    /// Relates `person` to `object`, with relationship attributes.
    ///
    /// # Errors
    /// [`Error::Input`] naming the field.
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
    /// [`Error::Input`] for a malformed identifier or object reference.
    pub fn delete_relationship(&self, person: &Ident, object: &ObjectRef) -> Result<Outcome> {
        self.one(Op::DeleteRelationship {
            person: person.clone(),
            object: object.clone(),
        })
    }

    /// Merges `secondary` into `primary` (see [`crate::merge`]).
    ///
    /// # Errors
    /// [`Error::Input`] when both name the same person.
    pub fn merge(&self, primary: &Ident, secondary: &Ident) -> Result<Outcome> {
        self.one(Op::Merge {
            primary: primary.clone(),
            secondary: secondary.clone(),
        })
    }
}
