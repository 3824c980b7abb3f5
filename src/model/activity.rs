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
    /// A tracked event; `name` is the event name, `data` its properties.
    pub const EVENT: &str = "event";
    /// A page view; `name` is the URL or path.
    pub const PAGE: &str = "page";
    /// A screen view; `name` is the screen.
    pub const SCREEN: &str = "screen";
    /// A device was added, updated or deleted; `data` has `action` and `token`.
    pub const DEVICE_CHANGE: &str = "device_change";
    /// Anonymous events were attached to the person; `data` has `anonymous_id` and `count`.
    pub const ANON_MERGE: &str = "anon_merge";
    /// Another person was merged into this one; `data` names the secondary.
    pub const PROFILE_MERGE: &str = "profile_merge";
    /// A relationship to an object was added; `name` is `type_id:object_id`.
    pub const ADD_RELATIONSHIP: &str = "add_relationship";
    /// A relationship to an object was removed.
    pub const DELETE_RELATIONSHIP: &str = "delete_relationship";
    /// A relationship's attributes changed; `data` as for `attribute_change`.
    pub const RELATIONSHIP_ATTRIBUTE_CHANGE: &str = "relationship_attribute_change";
}

/// What kind of thing was tracked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrackKind {
    /// An event.
    Event,
    /// A page view.
    Page,
    /// A screen view.
    Screen,
}

impl TrackKind {
    /// The activity type: `event`, `page` or `screen`.
    pub fn as_str(self) -> &'static str {
        match self {
            TrackKind::Event => kinds::EVENT,
            TrackKind::Page => kinds::PAGE,
            TrackKind::Screen => kinds::SCREEN,
        }
    }
    /// The kind named `s`.
    pub fn parse(s: &str) -> Option<TrackKind> {
        Some(match s {
            "event" => TrackKind::Event,
            "page" => TrackKind::Page,
            "screen" => TrackKind::Screen,
            _ => return None,
        })
    }
}

/// Which timeline entries to read: newest first, optionally by type, name and time.
///
/// # Examples
/// ```
/// use profiledb::ActivityFilter;
/// let f = ActivityFilter::new(20).kind("event").name("purchase").since(1_700_000_000);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivityFilter {
    /// At most this many entries.
    pub limit: usize,
    /// Only these types (empty: every type).
    pub kinds: Vec<String>,
    /// Only entries with this name.
    pub name: Option<String>,
    /// Only entries at or after this time.
    pub since: Option<i64>,
    /// Only entries before this time.
    pub until: Option<i64>,
    /// Only entries older than this cursor (paging).
    pub before: Option<ActivityCursor>,
}

impl ActivityFilter {
    /// The newest `limit` entries of any type.
    pub fn new(limit: usize) -> ActivityFilter {
        ActivityFilter {
            limit,
            kinds: Vec::new(),
            name: None,
            since: None,
            until: None,
            before: None,
        }
    }
    /// Adds a type to read.
    pub fn kind(mut self, kind: impl Into<String>) -> ActivityFilter {
        self.kinds.push(kind.into());
        self
    }
    /// Only entries named `name`.
    pub fn name(mut self, name: impl Into<String>) -> ActivityFilter {
        self.name = Some(name.into());
        self
    }
    /// Only entries at or after `t`.
    pub fn since(mut self, t: i64) -> ActivityFilter {
        self.since = Some(t);
        self
    }
    /// Only entries before `t`.
    pub fn until(mut self, t: i64) -> ActivityFilter {
        self.until = Some(t);
        self
    }
    /// Only entries older than `cursor`.
    pub fn before(mut self, cursor: ActivityCursor) -> ActivityFilter {
        self.before = Some(cursor);
        self
    }
    /// Whether `a` passes the type and name filters.
    pub fn matches(&self, kind: &str, name: Option<&str>) -> bool {
        (self.kinds.is_empty() || self.kinds.iter().any(|k| k == kind))
            && self.name.as_deref().is_none_or(|n| name == Some(n))
    }
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
