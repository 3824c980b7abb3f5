//! Activity: the entries of a person's timeline.

use crate::model::value::Value;

/// Activity types, spelled as Customer.io's App API spells them.
pub mod kinds {
    /// Attributes or identifiers changed; `data` maps each name to `{"old", "new"}`.
    pub const ATTRIBUTE_CHANGE: &str = "attribute_change";
    /// An update was refused (identifier conflict, identifier change not allowed...);
    /// `data` says which identifier and why.
    pub const FAILED_ATTRIBUTE_CHANGE: &str = "failed_attribute_change";
    /// The person was created; `data` holds the identifiers they were created with.
    pub const PROFILE_CREATE: &str = "profile_create";
}

/// One entry of a person's timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Activity {
    /// The activity type (see [`kinds`]).
    pub kind: String,
    /// The event or attribute name, where the type has one.
    pub name: Option<String>,
    /// When it happened, unix seconds.
    pub timestamp: i64,
    /// Details; the shape depends on `kind`.
    pub data: Value,
    /// Where this entry sits in the timeline: pass it as `before` to read older entries.
    pub cursor: ActivityCursor,
}

/// A position in a person's timeline, for paging newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ActivityCursor {
    /// The entry's timestamp.
    pub timestamp: i64,
    /// The entry's sequence number, unique in the database.
    pub seq: u64,
}

impl std::fmt::Display for ActivityCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.timestamp, self.seq)
    }
}

impl std::str::FromStr for ActivityCursor {
    type Err = crate::error::InputError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            crate::error::InputError::invalid("cursor", "is not a cursor this database returned")
        };
        let (t, q) = s.split_once('.').ok_or_else(bad)?;
        Ok(ActivityCursor {
            timestamp: t.parse().map_err(|_| bad())?,
            seq: q.parse().map_err(|_| bad())?,
        })
    }
}
