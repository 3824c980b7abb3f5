//! What a write did: [`Outcome`].

use super::PersonId;

/// What a write did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// A person was created.
    Created(PersonId),
    /// The person was updated.
    Updated(PersonId),
    /// The person exists and no value changed (with [`Identify::timestamp`](crate::Identify::timestamp), the
    /// ordering time may still have been recorded).
    Unchanged(PersonId),
    /// The update was refused by the identity rules and recorded as a
    /// `failed_attribute_change` activity on `person`; nothing else changed.
    Refused {
        /// Who the activity was recorded on.
        person: PersonId,
        /// Why.
        reason: String,
    },
    /// Nothing happened, for the reason given.
    Ignored(IgnoreReason),
    /// The person and all their data were deleted.
    Deleted(PersonId),
    /// Nobody has that identifier (or it was not suppressed); nothing happened.
    NotFound,
    /// Identifiers were suppressed (and the person, if any, deleted).
    Suppressed {
        /// The person deleted, if the identifier named one.
        person: Option<PersonId>,
        /// How many identifiers this call blocked (some may have been blocked already).
        identifiers: usize,
    },
    /// Identifiers were freed.
    Unsuppressed {
        /// How many.
        identifiers: usize,
    },
    /// An event (or other record) was stored: for a person, or (`None`) kept for an
    /// anonymous id.
    Recorded(Option<PersonId>),
    /// The event's id was seen before for this person; nothing was stored.
    Duplicate,
    /// The write would change nothing (an object or type as it already is); nothing was
    /// written.
    NoChange,
    /// A manual segment's membership changed for `changed` people; `unknown` of the
    /// identifiers named nobody (they are ignored, as the Track API does).
    Members {
        /// People who joined or left.
        changed: usize,
        /// Identifiers that named nobody.
        unknown: usize,
    },
    /// A merge moved the secondary into `primary`, and deleted the secondary.
    Merged {
        /// Who remains.
        primary: PersonId,
        /// Who was merged in and deleted.
        secondary: PersonId,
    },
}

impl Outcome {
    /// The person the write concerned, if any.
    pub fn person(&self) -> Option<PersonId> {
        match self {
            Outcome::Created(p)
            | Outcome::Updated(p)
            | Outcome::Unchanged(p)
            | Outcome::Deleted(p)
            | Outcome::Refused { person: p, .. }
            | Outcome::Merged { primary: p, .. } => Some(*p),
            Outcome::Suppressed { person, .. } | Outcome::Recorded(person) => *person,
            _ => None,
        }
    }
}

/// Why a write did nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IgnoreReason {
    /// The call addressed a `cio_id` that names nobody (Customer.io drops these).
    UnknownCioId,
    /// `_update: true` and nobody matched.
    NoMatch,
}
