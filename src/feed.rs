//! The change feed: every commit's changes, in commit order, for a consumer that keeps a
//! copy elsewhere (a warehouse, another node) and resumes from a [`Cursor`].
//!
//! The feed is off until it is turned on for a database
//! ([`Builder::change_feed`](crate::Builder::change_feed),
//! [`ProfileDb::set_change_feed`]); from then on each commit that changes anything a
//! consumer sees writes its entries to the `changes` family in the same atomic batch as
//! the data, so the feed and the data never disagree, after a crash either. The entries
//! are derived from the records the commit writes (their values before and after), so
//! every operation is covered, including merges, deletes, expiry and segment refreshes.
//! Every row removal is its own entry: deleting a person also reports each of their
//! attributes, activities, deliveries, devices and relationships removed and each
//! segment they leave, so a copy applies the feed without cascade rules.
//!
//! Changes are kept for [`ChangeFeed::keep`] seconds of commit time (7 days unless
//! configured); older ones are dropped every 256 commits and at checkpoints. A cursor
//! older than what is kept gets [`Error::CursorExpired`]: the consumer must export again
//! (never a silent gap). [`ProfileDb::changes`] serves durable commits only (it makes
//! what is committed durable first), so a crash never takes back a change a consumer
//! has seen.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;
use std::str::FromStr;
use std::sync::atomic::Ordering;

use roaring::RoaringBitmap;
use serde_json::{json, Value as Json};

use crate::db::write::Writer;
use crate::db::ProfileDb;
use crate::error::{Error, InputError, Result};
use crate::index::Bitmaps;
use crate::model::{
    Activity, ActivityCursor, Delivery, Device, DeviceStatus, Ident, Map, Object, ObjectRef,
    PersonId, Platform, Value,
};
use crate::store::bitmaps::BitmapKey;
use crate::store::records::{ChangeRecord, ChangesRecord, MetaValue, PersonRecord};
use crate::store::{
    codec, corrupted, decode_value, ident_kind, meta_keys, pid_from_key, ActivityF, AttributesF,
    ChangesF, DeliveriesF, DevicesF, Fam, Family, KeyReader, MetaF, ObjectTypesF, ObjectsF,
    PeopleF, RelationshipsF, SegmentsF, Store, SuppressedF, TopicsF, Txn,
};

/// How long changes are kept unless configured: 7 days.
pub const DEFAULT_KEEP_SECONDS: i64 = 7 * 86_400;

/// The encoded bytes one `changes` record holds at most (about: one entry more).
const PART_BYTES: usize = 32 << 10;

/// Old changes are dropped every this many commits (and at checkpoints).
const PRUNE_EVERY: u64 = 256;

/// Records deleted per batch when dropping old changes.
const PRUNE_BATCH: usize = 2048;

/// `feed_since` when the feed is off.
pub(crate) const OFF: u64 = u64::MAX;

/// The change feed's setting: on, keeping changes for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeFeed {
    keep_seconds: i64,
}

impl Default for ChangeFeed {
    fn default() -> Self {
        ChangeFeed {
            keep_seconds: DEFAULT_KEEP_SECONDS,
        }
    }
}

impl ChangeFeed {
    /// On, keeping changes for `seconds` of commit time (at least one second).
    ///
    /// # Errors
    /// [`InputError`] on field `keep_seconds` when `seconds` is below 1.
    pub fn keep_seconds(seconds: i64) -> std::result::Result<ChangeFeed, InputError> {
        if seconds < 1 {
            return Err(InputError::invalid(
                "keep_seconds",
                format!("must be at least 1 second, not {seconds}"),
            ));
        }
        Ok(ChangeFeed {
            keep_seconds: seconds,
        })
    }

    /// On, keeping changes for `days` days (at least one).
    pub fn keep_days(days: u32) -> ChangeFeed {
        ChangeFeed {
            keep_seconds: i64::from(days.max(1)) * 86_400,
        }
    }

    /// How long changes are kept, in seconds.
    pub fn keep(&self) -> i64 {
        self.keep_seconds
    }
}

/// A position in the change feed: everything up to it has been read. Cursors order
/// as the feed does. Its text form (`Display`, `FromStr`) is `<commit>` — after the
/// whole of that commit — or `<commit>.<n>` — after its first `n` changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cursor {
    commit: u64,
    /// Changes of `commit` read; `u32::MAX`: all of them.
    index: u32,
}

impl Cursor {
    /// Before the first commit of a database.
    pub const START: Cursor = Cursor {
        commit: 0,
        index: u32::MAX,
    };

    /// After the whole of commit `commit`.
    pub fn after_commit(commit: u64) -> Cursor {
        Cursor {
            commit,
            index: u32::MAX,
        }
    }

    /// The commit the cursor is in (or after).
    pub fn commit(&self) -> u64 {
        self.commit
    }

    fn whole(&self) -> bool {
        self.index == u32::MAX
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.whole() {
            write!(f, "{}", self.commit)
        } else {
            write!(f, "{}.{}", self.commit, self.index)
        }
    }
}

impl FromStr for Cursor {
    type Err = InputError;

    fn from_str(s: &str) -> std::result::Result<Cursor, InputError> {
        let bad = || {
            InputError::invalid(
                "cursor",
                format!(
                    "`{s}` is not a cursor (`<commit>` or `<commit>.<n>`, as the feed gives them)"
                ),
            )
        };
        let (commit, index) = match s.split_once('.') {
            Some((c, i)) => (c, Some(i)),
            None => (s, None),
        };
        let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        if !digits(commit) || index.is_some_and(|i| !digits(i)) {
            return Err(bad());
        }
        let commit = commit.parse::<u64>().map_err(|_| bad())?;
        let index = match index {
            Some(i) => match i.parse::<u32>() {
                Ok(n) if n < u32::MAX => n,
                _ => return Err(bad()),
            },
            None => u32::MAX,
        };
        Ok(Cursor { commit, index })
    }
}

/// A person's identifiers, as a change reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identifiers {
    /// `cio_id`.
    pub cio_id: String,
    /// `id`.
    pub id: Option<String>,
    /// `email`.
    pub email: Option<String>,
    /// `phone`.
    pub phone: Option<String>,
    /// `anonymous_id`.
    pub anonymous_id: Option<String>,
}

impl Identifiers {
    fn of(pid: u32, r: &PersonRecord) -> Identifiers {
        Identifiers {
            cio_id: PersonId(pid).cio_id(),
            id: r.id.clone(),
            email: r.email.clone(),
            phone: r.phone.clone(),
            anonymous_id: r.anonymous_id.clone(),
        }
    }
}

/// What one change did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ChangeKind {
    /// A person was created.
    PersonCreated {
        /// The person.
        person: PersonId,
        /// Their identifiers.
        identifiers: Identifiers,
        /// When they were created, unix seconds.
        created: i64,
    },
    /// A person's identifiers or update time changed.
    PersonUpdated {
        /// The person.
        person: PersonId,
        /// Their identifiers now.
        identifiers: Identifiers,
        /// When they last changed, unix seconds.
        updated: i64,
    },
    /// A person was deleted (or suppressed, or merged away): erase them.
    PersonDeleted {
        /// The person.
        person: PersonId,
        /// The identifiers they had.
        identifiers: Identifiers,
    },
    /// `secondary` was merged into `primary`; `secondary`'s deletion and what moved to
    /// `primary` are reported as their own changes too.
    PersonMerged {
        /// The person kept.
        primary: PersonId,
        /// The person merged away.
        secondary: PersonId,
    },
    /// Identifiers were suppressed (together).
    Suppressed {
        /// The identifiers, normalized.
        identifiers: Vec<Ident>,
    },
    /// Identifiers were unsuppressed (together).
    Unsuppressed {
        /// The identifiers, normalized.
        identifiers: Vec<Ident>,
    },
    /// A top-level attribute changed (`None`: absent).
    AttributeChanged {
        /// The person.
        person: PersonId,
        /// The attribute.
        name: String,
        /// Its value before.
        old: Option<Value>,
        /// Its value after.
        new: Option<Value>,
    },
    /// An activity entry (event, page, screen, attribute change...) was added, or
    /// rewritten: the entry with this `activity.cursor.seq` is now this one.
    ActivityAdded {
        /// The person.
        person: PersonId,
        /// The entry.
        activity: Activity,
        /// The caller's event id, for tracked events that had one.
        event_id: Option<String>,
    },
    /// An activity entry was removed (expired, moved by a merge, or its person deleted).
    ActivityRemoved {
        /// The person.
        person: PersonId,
        /// The entry's sequence number (unique in the database).
        seq: u64,
        /// Its time.
        timestamp: i64,
    },
    /// A delivery was created (with the metrics it arrived with).
    DeliveryCreated {
        /// The person.
        person: PersonId,
        /// The delivery.
        delivery: Delivery,
    },
    /// A delivery gained a metric (or a metric's time changed).
    DeliveryMetric {
        /// The person.
        person: PersonId,
        /// The delivery.
        delivery_id: String,
        /// The metric (`sent`, `opened`...).
        metric: String,
        /// When, unix seconds.
        at: i64,
    },
    /// A delivery was removed, with the metrics it had.
    DeliveryRemoved {
        /// The person.
        person: PersonId,
        /// The delivery.
        delivery_id: String,
        /// The metrics it had.
        metrics: Vec<String>,
    },
    /// A device was added or changed.
    DeviceChanged {
        /// The person.
        person: PersonId,
        /// The device now.
        device: Device,
    },
    /// A device was removed.
    DeviceRemoved {
        /// The person.
        person: PersonId,
        /// Its token.
        token: String,
    },
    /// A relationship was added or its attributes changed.
    RelationshipChanged {
        /// The person.
        person: PersonId,
        /// The object.
        object: ObjectRef,
        /// The relationship's attributes.
        attributes: Map,
    },
    /// A relationship was removed.
    RelationshipRemoved {
        /// The person.
        person: PersonId,
        /// The object.
        object: ObjectRef,
    },
    /// An object was created or changed.
    ObjectChanged {
        /// The object now.
        object: Object,
    },
    /// An object was deleted.
    ObjectRemoved {
        /// The object.
        object: ObjectRef,
    },
    /// A person entered a segment.
    SegmentEntered {
        /// The segment.
        segment: u32,
        /// The person.
        person: PersonId,
    },
    /// A person left a segment (or was deleted, or the segment was).
    SegmentExited {
        /// The segment.
        segment: u32,
        /// The person.
        person: PersonId,
    },
    /// A segment was created, renamed or redefined.
    SegmentDefined {
        /// The segment.
        segment: u32,
        /// Its name.
        name: String,
        /// Its condition; `None` for a manual segment.
        condition: Option<String>,
    },
    /// A segment was deleted (its members' exits are reported too).
    SegmentRemoved {
        /// The segment.
        segment: u32,
    },
    /// A topic was defined or changed.
    TopicDefined {
        /// The topic.
        topic: u32,
        /// Its name.
        name: String,
        /// Whether people with no preference receive it.
        default_subscribed: bool,
    },
    /// An object type was defined or renamed.
    ObjectTypeDefined {
        /// The type.
        type_id: u32,
        /// Its name.
        name: String,
    },
}

/// One change, where it sits in the feed, and its commit.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The position just after this change: resume from it to read what follows.
    pub cursor: Cursor,
    /// The commit that made it.
    pub commit: u64,
    /// When that commit was made (the database clock), unix seconds.
    pub at: i64,
    /// What changed.
    pub kind: ChangeKind,
}

/// What [`ProfileDb::changes`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangePage {
    /// The changes after the cursor asked for, in commit order.
    pub changes: Vec<Change>,
    /// Where to resume: after the last change returned or, when `more` is false, after
    /// the last durable commit (which may have changed nothing).
    pub next: Cursor,
    /// True when the page was cut at the limit; false when it reaches the end.
    pub more: bool,
}

/// The feed's state ([`ProfileDb::change_feed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedStatus {
    /// How long changes are kept, in seconds.
    pub keep_seconds: i64,
    /// The oldest cursor still accepted.
    pub oldest: Cursor,
    /// The end of the feed: after the last commit.
    pub end: Cursor,
}

/// The writer's view of the feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FeedState {
    pub keep_seconds: i64,
    /// The last commit not in the feed.
    pub since: u64,
}

impl FeedState {
    pub(crate) fn load(store: &Store) -> Result<Option<FeedState>> {
        match store.get::<MetaF>(meta_keys::FEED)? {
            None => Ok(None),
            Some(MetaValue::Feed {
                keep_seconds,
                since,
            }) if keep_seconds >= 1 && since < OFF => Ok(Some(FeedState {
                keep_seconds,
                since,
            })),
            Some(_) => Err(corrupted(
                Family::Meta,
                meta_keys::FEED,
                "expected the feed record (keep_seconds ≥ 1)",
            )),
        }
    }

    fn record(&self) -> MetaValue {
        MetaValue::Feed {
            keep_seconds: self.keep_seconds,
            since: self.since,
        }
    }
}

/// People who entered and left one segment in a commit.
pub(crate) type SegmentMove = (u32, RoaringBitmap, RoaringBitmap);

/// The value at `key` before this commit: its base when it was read, nothing when
/// `fresh` (allocated by this commit), else what the store holds.
fn before<F: Fam>(
    store: &Store,
    key: &[u8],
    base: Option<Option<&F::Value>>,
    fresh: bool,
) -> Result<Option<F::Value>> {
    match base {
        Some(b) => Ok(b.cloned()),
        None if fresh => Ok(None),
        None => store.get::<F>(key),
    }
}

/// Whether `key` held a record before this commit (for a delete: no decode needed).
fn existed<F: Fam>(store: &Store, key: &[u8], base: Option<Option<&F::Value>>) -> Result<bool> {
    match base {
        Some(b) => Ok(b.is_some()),
        None => Ok(store.kv().get(F::FAMILY, key)?.is_some()),
    }
}

/// The staged writes of family `F` (as [`Txn::dirty`]), removals first: a merge moves
/// an activity entry, a delivery or a device to another person under the same seq, id or
/// token, and a copy keyed by those must see the removal before the write.
#[allow(clippy::type_complexity)]
fn dirty<'t, F: Fam>(
    txn: &'t Txn<'_>,
) -> Vec<(&'t [u8], Option<Option<&'t F::Value>>, Option<&'t F::Value>)> {
    let mut list = txn.dirty::<F>();
    list.sort_by_key(|(_, _, new)| new.is_some());
    list
}

fn u32_key(family: Family, key: &[u8]) -> Result<u32> {
    let (id, r) = KeyReader::new(family, key).u32()?;
    r.end()?;
    Ok(id)
}

/// The feed entries of the writes staged in `txn` and the segment moves `moves`: pids
/// in `fresh_pids` and seqs in `fresh_seqs` were allocated by this commit.
pub(crate) fn collect(
    txn: &Txn<'_>,
    fresh_pids: Range<u64>,
    fresh_seqs: Range<u64>,
    moves: Vec<SegmentMove>,
) -> Result<Vec<ChangeRecord>> {
    let store = txn.store();
    let mut out = Vec::new();
    let mut deleted = BTreeSet::new();
    for (key, base, new) in dirty::<PeopleF>(txn) {
        let pid = pid_from_key(Family::People, key)?;
        let fresh = fresh_pids.contains(&u64::from(pid));
        match (before::<PeopleF>(store, key, base, fresh)?, new) {
            (None, Some(n)) => out.push(ChangeRecord::Person {
                pid,
                created: true,
                record: n.clone(),
            }),
            (Some(o), Some(n)) if o != *n => out.push(ChangeRecord::Person {
                pid,
                created: false,
                record: n.clone(),
            }),
            (Some(o), None) => {
                deleted.insert(pid);
                out.push(ChangeRecord::PersonDeleted { pid, record: o });
            }
            _ => {}
        }
    }
    let mut merges = BTreeSet::new();
    for &(primary, secondary) in txn.merges() {
        if deleted.contains(&secondary) && merges.insert((primary, secondary)) {
            out.push(ChangeRecord::Merged { primary, secondary });
        }
    }
    let mut groups = BTreeSet::new();
    for (key, base, new) in dirty::<SuppressedF>(txn) {
        let entry = match (before::<SuppressedF>(store, key, base, false)?, new) {
            (None, Some(n)) => (true, n.group.clone()),
            (Some(o), None) => (false, o.group),
            _ => continue,
        };
        if groups.insert(entry.clone()) {
            out.push(match entry {
                (true, group) => ChangeRecord::Suppressed(group),
                (false, group) => ChangeRecord::Unsuppressed(group),
            });
        }
    }
    for (key, base, new) in dirty::<AttributesF>(txn) {
        let pid = pid_from_key(Family::Attributes, key)?;
        let fresh = fresh_pids.contains(&u64::from(pid));
        let old = before::<AttributesF>(store, key, base, fresh)?.unwrap_or_default();
        let empty = Map::new();
        let new = new.map_or(&empty, |n| &n.values);
        let names: BTreeSet<&String> = old.values.keys().chain(new.keys()).collect();
        for name in names {
            let (o, n) = (old.values.get(name), new.get(name));
            if o != n {
                out.push(ChangeRecord::Attribute {
                    pid,
                    name: name.clone(),
                    old: o.cloned(),
                    new: n.cloned(),
                });
            }
        }
    }
    for (key, base, new) in dirty::<ActivityF>(txn) {
        let (pid, timestamp, seq) = ActivityF::decode_key(key)?;
        match new {
            Some(n) => {
                let fresh = fresh_seqs.contains(&seq);
                if before::<ActivityF>(store, key, base, fresh)?.as_ref() != Some(n) {
                    out.push(ChangeRecord::Activity {
                        pid,
                        timestamp,
                        seq,
                        record: n.clone(),
                    });
                }
            }
            None => {
                if existed::<ActivityF>(store, key, base)? {
                    out.push(ChangeRecord::ActivityRemoved {
                        pid,
                        timestamp,
                        seq,
                    });
                }
            }
        }
    }
    for (key, base, new) in dirty::<DeliveriesF>(txn) {
        let (pid, created, id) = DeliveriesF::decode_key(key)?;
        match (before::<DeliveriesF>(store, key, base, false)?, new) {
            (None, Some(n)) => out.push(ChangeRecord::Delivery {
                pid,
                created,
                id,
                record: n.clone(),
            }),
            (Some(o), Some(n)) => {
                for (metric, &at) in &n.metrics {
                    if o.metrics.get(metric) != Some(&at) {
                        out.push(ChangeRecord::Metric {
                            pid,
                            id: id.clone(),
                            metric: metric.clone(),
                            at,
                        });
                    }
                }
            }
            (Some(o), None) => out.push(ChangeRecord::DeliveryRemoved {
                pid,
                id,
                metrics: o.metrics.into_keys().collect(),
            }),
            (None, None) => {}
        }
    }
    for (key, base, new) in dirty::<DevicesF>(txn) {
        let (pid, _) = KeyReader::new(Family::Devices, key).u32()?;
        let token = DevicesF::token_of(key)?;
        match new {
            Some(n) => {
                if before::<DevicesF>(store, key, base, false)?.as_ref() != Some(n) {
                    out.push(ChangeRecord::Device {
                        pid,
                        token,
                        record: n.clone(),
                    });
                }
            }
            None => {
                if existed::<DevicesF>(store, key, base)? {
                    out.push(ChangeRecord::DeviceRemoved { pid, token });
                }
            }
        }
    }
    for (key, base, new) in dirty::<RelationshipsF>(txn) {
        let (pid, type_id, object_id) = RelationshipsF::decode_key(key)?;
        match new {
            Some(n) => {
                if before::<RelationshipsF>(store, key, base, false)?.as_ref() != Some(n) {
                    out.push(ChangeRecord::Relationship {
                        pid,
                        type_id,
                        object_id,
                        record: n.clone(),
                    });
                }
            }
            None => {
                if existed::<RelationshipsF>(store, key, base)? {
                    out.push(ChangeRecord::RelationshipRemoved {
                        pid,
                        type_id,
                        object_id,
                    });
                }
            }
        }
    }
    for (key, base, new) in dirty::<ObjectsF>(txn) {
        let (type_id, object_id) = ObjectsF::decode_key(key)?;
        match new {
            Some(n) => {
                if before::<ObjectsF>(store, key, base, false)?.as_ref() != Some(n) {
                    out.push(ChangeRecord::Object {
                        type_id,
                        object_id,
                        record: n.clone(),
                    });
                }
            }
            None => {
                if existed::<ObjectsF>(store, key, base)? {
                    out.push(ChangeRecord::ObjectRemoved { type_id, object_id });
                }
            }
        }
    }
    for (key, base, new) in dirty::<ObjectTypesF>(txn) {
        let id = u32_key(Family::ObjectTypes, key)?;
        if let Some(n) = new {
            if before::<ObjectTypesF>(store, key, base, false)?.as_ref() != Some(n) {
                out.push(ChangeRecord::ObjectType {
                    id,
                    record: n.clone(),
                });
            }
        }
    }
    for (key, base, new) in dirty::<TopicsF>(txn) {
        let id = u32_key(Family::Topics, key)?;
        if let Some(n) = new {
            if before::<TopicsF>(store, key, base, false)?.as_ref() != Some(n) {
                out.push(ChangeRecord::Topic {
                    id,
                    record: n.clone(),
                });
            }
        }
    }
    for (key, base, new) in dirty::<SegmentsF>(txn) {
        let id = u32_key(Family::Segments, key)?;
        match new {
            Some(n) => {
                if before::<SegmentsF>(store, key, base, false)?.as_ref() != Some(n) {
                    out.push(ChangeRecord::Segment {
                        id,
                        record: n.clone(),
                    });
                }
            }
            None => {
                if existed::<SegmentsF>(store, key, base)? {
                    out.push(ChangeRecord::SegmentRemoved(id));
                }
            }
        }
    }
    for (id, entered, exited) in moves {
        let chunks: BTreeSet<u32> = entered
            .iter()
            .chain(exited.iter())
            .map(|p| p >> 16)
            .collect();
        for chunk in chunks {
            let range = (chunk << 16)..=(chunk << 16 | 0xFFFF);
            let part = |b: &RoaringBitmap| {
                let mut piece = b.clone();
                piece.remove_range(..*range.start());
                if *range.end() < u32::MAX {
                    piece.remove_range(range.end() + 1..);
                }
                let mut bytes = Vec::with_capacity(piece.serialized_size());
                // Writing to a Vec cannot fail.
                let _ = piece.serialize_into(&mut bytes);
                bytes
            };
            out.push(ChangeRecord::Members {
                id,
                entered: part(&entered),
                exited: part(&exited),
            });
        }
    }
    Ok(out)
}

/// `entries` of commit `seq`, made at `at`, as `changes` records of about
/// [`PART_BYTES`] each.
pub(crate) fn records(
    seq: u64,
    at: i64,
    entries: Vec<ChangeRecord>,
) -> Vec<(Vec<u8>, ChangesRecord)> {
    let mut out = Vec::new();
    let mut part = Vec::new();
    let mut size = 0usize;
    for entry in entries {
        let cost = bincode::encode_to_vec(&entry, codec::config()).map_or(PART_BYTES, |v| v.len());
        if !part.is_empty() && size + cost > PART_BYTES {
            let n = u32::try_from(out.len()).unwrap_or(u32::MAX);
            out.push((
                ChangesF::key(seq, n),
                ChangesRecord {
                    at,
                    entries: std::mem::take(&mut part),
                },
            ));
            size = 0;
        }
        size += cost;
        part.push(entry);
    }
    if !part.is_empty() {
        let n = u32::try_from(out.len()).unwrap_or(u32::MAX);
        out.push((ChangesF::key(seq, n), ChangesRecord { at, entries: part }));
    }
    out
}

fn bitmap(key: &[u8], bytes: &[u8]) -> Result<RoaringBitmap> {
    RoaringBitmap::deserialize_from(bytes)
        .map_err(|e| corrupted(Family::Changes, key, format!("bad member bitmap: {e}")))
}

/// The public changes one stored entry stands for (a `Members` entry: one per person).
fn expand(key: &[u8], entry: ChangeRecord, out: &mut Vec<ChangeKind>) -> Result<()> {
    let person = PersonId;
    out.push(match entry {
        ChangeRecord::Person {
            pid,
            created: true,
            record,
        } => ChangeKind::PersonCreated {
            person: person(pid),
            identifiers: Identifiers::of(pid, &record),
            created: record.created,
        },
        ChangeRecord::Person { pid, record, .. } => ChangeKind::PersonUpdated {
            person: person(pid),
            identifiers: Identifiers::of(pid, &record),
            updated: record.updated,
        },
        ChangeRecord::PersonDeleted { pid, record } => ChangeKind::PersonDeleted {
            person: person(pid),
            identifiers: Identifiers::of(pid, &record),
        },
        ChangeRecord::Merged { primary, secondary } => ChangeKind::PersonMerged {
            primary: person(primary),
            secondary: person(secondary),
        },
        ChangeRecord::Suppressed(group) => ChangeKind::Suppressed {
            identifiers: idents(key, group)?,
        },
        ChangeRecord::Unsuppressed(group) => ChangeKind::Unsuppressed {
            identifiers: idents(key, group)?,
        },
        ChangeRecord::Attribute {
            pid,
            name,
            old,
            new,
        } => ChangeKind::AttributeChanged {
            person: person(pid),
            name,
            old,
            new,
        },
        ChangeRecord::Activity {
            pid,
            timestamp,
            seq,
            record,
        } => ChangeKind::ActivityAdded {
            person: person(pid),
            activity: Activity {
                kind: record.kind,
                name: record.name,
                timestamp,
                data: record.data,
                cursor: ActivityCursor { timestamp, seq },
            },
            event_id: record.event_id,
        },
        ChangeRecord::ActivityRemoved {
            pid,
            timestamp,
            seq,
        } => ChangeKind::ActivityRemoved {
            person: person(pid),
            seq,
            timestamp,
        },
        ChangeRecord::Delivery {
            pid,
            created,
            id,
            record,
        } => ChangeKind::DeliveryCreated {
            person: person(pid),
            delivery: record.into_delivery(id, created),
        },
        ChangeRecord::Metric {
            pid,
            id,
            metric,
            at,
        } => ChangeKind::DeliveryMetric {
            person: person(pid),
            delivery_id: id,
            metric,
            at,
        },
        ChangeRecord::DeliveryRemoved { pid, id, metrics } => ChangeKind::DeliveryRemoved {
            person: person(pid),
            delivery_id: id,
            metrics,
        },
        ChangeRecord::Device { pid, token, record } => {
            let platform = Platform::parse(&record.platform).ok_or_else(|| {
                corrupted(
                    Family::Changes,
                    key,
                    format!("unknown platform `{}`", record.platform),
                )
            })?;
            ChangeKind::DeviceChanged {
                person: person(pid),
                device: Device {
                    token,
                    platform,
                    last_used: record.last_used,
                    status: DeviceStatus::parse(&record.status),
                    attributes: record.attributes,
                },
            }
        }
        ChangeRecord::DeviceRemoved { pid, token } => ChangeKind::DeviceRemoved {
            person: person(pid),
            token,
        },
        ChangeRecord::Relationship {
            pid,
            type_id,
            object_id,
            record,
        } => ChangeKind::RelationshipChanged {
            person: person(pid),
            object: ObjectRef::new(type_id, object_id),
            attributes: record.attributes,
        },
        ChangeRecord::RelationshipRemoved {
            pid,
            type_id,
            object_id,
        } => ChangeKind::RelationshipRemoved {
            person: person(pid),
            object: ObjectRef::new(type_id, object_id),
        },
        ChangeRecord::Object {
            type_id,
            object_id,
            record,
        } => ChangeKind::ObjectChanged {
            object: Object {
                object: ObjectRef::new(type_id, object_id),
                attributes: record.attributes,
                created: record.created,
                updated: record.updated,
            },
        },
        ChangeRecord::ObjectRemoved { type_id, object_id } => ChangeKind::ObjectRemoved {
            object: ObjectRef::new(type_id, object_id),
        },
        ChangeRecord::Members {
            id,
            entered,
            exited,
        } => {
            for pid in &bitmap(key, &entered)? {
                out.push(ChangeKind::SegmentEntered {
                    segment: id,
                    person: person(pid),
                });
            }
            for pid in &bitmap(key, &exited)? {
                out.push(ChangeKind::SegmentExited {
                    segment: id,
                    person: person(pid),
                });
            }
            return Ok(());
        }
        ChangeRecord::Segment { id, record } => ChangeKind::SegmentDefined {
            segment: id,
            name: record.name,
            condition: record.condition,
        },
        ChangeRecord::SegmentRemoved(id) => ChangeKind::SegmentRemoved { segment: id },
        ChangeRecord::Topic { id, record } => ChangeKind::TopicDefined {
            topic: id,
            name: record.name,
            default_subscribed: record.default_subscribed,
        },
        ChangeRecord::ObjectType { id, record } => ChangeKind::ObjectTypeDefined {
            type_id: id,
            name: record.name,
        },
    });
    Ok(())
}

fn idents(key: &[u8], group: Vec<(u8, String)>) -> Result<Vec<Ident>> {
    group
        .into_iter()
        .map(|(code, value)| {
            let kind = ident_kind(code).ok_or_else(|| {
                corrupted(
                    Family::Changes,
                    key,
                    format!("unknown identifier kind {code}"),
                )
            })?;
            Ok(Ident { kind, value })
        })
        .collect()
}

impl ProfileDb {
    /// Turns the change feed on (`Some`, keeping changes as `feed` says) or off
    /// (`None`: every kept change is dropped). Turning it on starts the feed at the
    /// next commit: [`change_cursor`](ProfileDb::change_cursor) then is the cursor a
    /// consumer starts from (after a full export taken at that point). Changing how long
    /// changes are kept keeps the feed. The setting is stored in the database.
    ///
    /// # Errors
    /// [`Error::Storage`] when writing fails.
    pub fn set_change_feed(&self, feed: Option<ChangeFeed>) -> Result<()> {
        let mut writer = self.writer()?;
        self.set_feed_locked(&mut writer, feed)?;
        self.release(writer)
    }

    pub(crate) fn set_feed_locked(
        &self,
        writer: &mut Writer,
        feed: Option<ChangeFeed>,
    ) -> Result<()> {
        match (writer.feed, feed) {
            (None, None) => Ok(()),
            (Some(state), Some(f)) if state.keep_seconds == f.keep_seconds => Ok(()),
            (Some(state), Some(f)) => {
                let state = FeedState {
                    keep_seconds: f.keep_seconds,
                    ..state
                };
                self.commit_meta(writer, meta_keys::FEED, Some(state.record()))?;
                writer.feed = Some(state);
                Ok(())
            }
            (None, Some(f)) => {
                // The commit that turns the feed on is its `since`: not in the feed.
                let state = FeedState {
                    keep_seconds: f.keep_seconds,
                    since: writer.commit_seq + 1,
                };
                self.commit_meta(writer, meta_keys::FEED, Some(state.record()))?;
                writer.feed = Some(state);
                self.inner.feed_since.store(state.since, Ordering::SeqCst);
                Ok(())
            }
            (Some(_), None) => {
                self.prune_feed(writer, i64::MAX)?;
                self.inner.feed_since.store(OFF, Ordering::SeqCst);
                self.commit_meta(writer, meta_keys::FEED, None)?;
                writer.feed = None;
                Ok(())
            }
        }
    }

    /// Drops the changes committed before `cutoff` (commit time), in batches; each
    /// batch also records how far back the feed now reaches. Readers learn the new
    /// reach before the batch lands, so one that read across it reports the cursor
    /// expired rather than a gap.
    pub(crate) fn prune_feed(&self, writer: &mut Writer, cutoff: i64) -> Result<()> {
        let Some(mut state) = writer.feed else {
            return Ok(());
        };
        loop {
            let mut keys = Vec::new();
            let mut last = None;
            let all = (std::ops::Bound::Unbounded, std::ops::Bound::Unbounded);
            for item in self.inner.store.kv().range(Family::Changes, all, false) {
                let (key, value) = item?;
                let (commit, _) = ChangesF::decode_key(&key)?;
                let old =
                    commit <= state.since || decode_value::<ChangesF>(&key, &value)?.at < cutoff;
                if !old {
                    break;
                }
                keys.push(key);
                last = Some(commit);
                if keys.len() >= PRUNE_BATCH {
                    break;
                }
            }
            let Some(commit) = last else {
                return Ok(());
            };
            state.since = state.since.max(commit);
            self.inner.feed_since.store(state.since, Ordering::SeqCst);
            writer.feed = Some(state);
            let full = keys.len() >= PRUNE_BATCH;
            let mut txn = Txn::new(&self.inner.store);
            for key in keys {
                txn.delete::<ChangesF>(key);
            }
            txn.put::<MetaF>(meta_keys::FEED.to_vec(), state.record());
            self.write_batch_uncommitted(txn)?;
            if !full {
                return Ok(());
            }
        }
    }

    /// After commit `seq`: drops expired changes every [`PRUNE_EVERY`] commits.
    pub(crate) fn after_commit_feed(&self, writer: &mut Writer, seq: u64) -> Result<()> {
        match writer.feed {
            Some(_) if seq % PRUNE_EVERY == 0 => self.prune_expired(writer),
            _ => Ok(()),
        }
    }

    /// Drops the changes older than the feed keeps. A damaged `changes` record stops
    /// the dropping where it lies, without failing the commit or checkpoint that asked
    /// for it (which has landed): `verify` reports the damage, and a reader of the feed
    /// meets it as [`Error::Corrupted`]. A storage failure is the caller's error, as
    /// any failure of the write path.
    pub(crate) fn prune_expired(&self, writer: &mut Writer) -> Result<()> {
        let Some(state) = writer.feed else {
            return Ok(());
        };
        let cutoff = self.now().saturating_sub(state.keep_seconds);
        match self.prune_feed(writer, cutoff) {
            Err(e) if e.is_corruption() => Ok(()),
            other => other,
        }
    }

    /// The feed's setting and reach, or `None` when it is off.
    pub fn change_feed(&self) -> Result<Option<FeedStatus>> {
        let writer = self.restore_writer()?;
        Ok(writer.feed.map(|state| FeedStatus {
            keep_seconds: state.keep_seconds,
            oldest: Cursor::after_commit(state.since),
            end: Cursor::after_commit(writer.commit_seq),
        }))
    }

    /// The end of the feed now: after the last commit. A full copy taken with no commit
    /// in between (an export holds writers off while it runs) pairs with it: follow the
    /// feed from here.
    pub fn change_cursor(&self) -> Cursor {
        Cursor::after_commit(self.committed_seq())
    }

    /// The changes after `after`, at most `limit` of them, in commit order; see the
    /// [module docs](crate::feed). Only durable commits are served: this makes what is
    /// committed durable first.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> Result<(), profiledb::Error> {
    /// use profiledb::{ChangeFeed, ChangeKind, Cursor, Ident, Identify, ProfileDb};
    /// let dir = tempfile::tempdir().unwrap();
    /// let db = ProfileDb::builder().change_feed(Some(ChangeFeed::keep_days(7))).open(dir.path())?;
    /// let start = db.change_cursor();
    /// db.identify(Identify::new(Ident::id("u-1")).set("plan", "pro"))?;
    /// let page = db.changes(start, 100)?;
    /// assert!(matches!(page.changes[0].kind, ChangeKind::PersonCreated { .. }));
    /// assert!(!page.more);
    /// // Resuming from `next` sees nothing twice.
    /// assert!(db.changes(page.next, 100)?.changes.is_empty());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// - [`Error::CursorExpired`] when changes after `after` are no longer kept (or the
    ///   feed was turned on after it): export again and resume from that export's
    ///   cursor.
    /// - [`Error::Input`] on field `limit` for 0, on `cursor` for a cursor beyond this
    ///   database's last commit, on `change_feed` when the feed is off.
    /// - [`Error::Storage`], [`Error::Corrupted`] when reading fails.
    pub fn changes(&self, after: Cursor, limit: usize) -> Result<ChangePage> {
        if limit == 0 {
            return Err(InputError::invalid("limit", "must be at least 1").into());
        }
        self.make_durable()?;
        let end = self.durable_seq();
        let check = |since: u64| -> Result<()> {
            if since == OFF {
                return Err(InputError::invalid(
                    "change_feed",
                    "is off for this database: turn it on (Builder::change_feed, \
                     ProfileDb::set_change_feed or `profiledb feed on`) and start from a \
                     full export",
                )
                .into());
            }
            if after.commit < since || (after.commit == since && !after.whole()) {
                return Err(Error::CursorExpired {
                    cursor: after.to_string(),
                    oldest: Cursor::after_commit(since).to_string(),
                });
            }
            Ok(())
        };
        check(self.inner.feed_since.load(Ordering::SeqCst))?;
        if after.commit > end {
            return Err(InputError::invalid(
                "cursor",
                format!(
                    "{after} is beyond this database's last commit ({end}): is it another \
                     database's?"
                ),
            )
            .into());
        }
        let mut changes = Vec::new();
        let mut more = false;
        let mut commit = None;
        let mut index = 0u32;
        let mut kinds = Vec::new();
        let from = std::ops::Bound::Included(ChangesF::key(after.commit, 0));
        'scan: for item in
            self.inner
                .store
                .kv()
                .range(Family::Changes, (from, std::ops::Bound::Unbounded), false)
        {
            let (key, value) = item?;
            let (c, _) = ChangesF::decode_key(&key)?;
            if c > end {
                break;
            }
            if commit != Some(c) {
                commit = Some(c);
                index = 0;
            }
            if c == after.commit && after.whole() {
                continue;
            }
            let record: ChangesRecord = decode_value::<ChangesF>(&key, &value)?;
            for entry in record.entries {
                kinds.clear();
                expand(&key, entry, &mut kinds)?;
                for kind in kinds.drain(..) {
                    let skip = c == after.commit && index < after.index;
                    index = index.saturating_add(1);
                    if skip {
                        continue;
                    }
                    if changes.len() == limit {
                        more = true;
                        break 'scan;
                    }
                    changes.push(Change {
                        cursor: Cursor { commit: c, index },
                        commit: c,
                        at: record.at,
                        kind,
                    });
                }
            }
        }
        // Old changes dropped while this read ran may have been skipped: say so.
        check(self.inner.feed_since.load(Ordering::SeqCst))?;
        let next = match (more, changes.last()) {
            (true, Some(last)) => last.cursor,
            _ => after.max(Cursor::after_commit(end)),
        };
        Ok(ChangePage {
            changes,
            next,
            more,
        })
    }
}

impl Change {
    /// The change as a JSON object: `{"cursor", "commit", "at", "type", ...}` with the
    /// kind's fields (`type` is the kind in snake case, `person_created`...).
    pub fn to_json(&self) -> Json {
        let pid = |p: &PersonId| json!(p.0);
        let opt = |v: &Option<Value>| v.as_ref().map_or(Json::Null, Value::to_json);
        let map = |m: &Map| Json::Object(m.iter().map(|(k, v)| (k.clone(), v.to_json())).collect());
        let ids = |i: &Identifiers| {
            json!({"cio_id": i.cio_id, "id": i.id, "email": i.email, "phone": i.phone,
                   "anonymous_id": i.anonymous_id})
        };
        let idents = |list: &Vec<Ident>| {
            Json::Array(
                list.iter()
                    .map(|i| json!({"kind": i.kind.as_str(), "value": i.value}))
                    .collect(),
            )
        };
        let (kind, fields) = match &self.kind {
            ChangeKind::PersonCreated {
                person,
                identifiers,
                created,
            } => (
                "person_created",
                json!({"person": pid(person), "identifiers": ids(identifiers), "created": created}),
            ),
            ChangeKind::PersonUpdated {
                person,
                identifiers,
                updated,
            } => (
                "person_updated",
                json!({"person": pid(person), "identifiers": ids(identifiers), "updated": updated}),
            ),
            ChangeKind::PersonDeleted {
                person,
                identifiers,
            } => (
                "person_deleted",
                json!({"person": pid(person), "identifiers": ids(identifiers)}),
            ),
            ChangeKind::PersonMerged { primary, secondary } => (
                "person_merged",
                json!({"primary": pid(primary), "secondary": pid(secondary)}),
            ),
            ChangeKind::Suppressed { identifiers } => {
                ("suppressed", json!({"identifiers": idents(identifiers)}))
            }
            ChangeKind::Unsuppressed { identifiers } => {
                ("unsuppressed", json!({"identifiers": idents(identifiers)}))
            }
            ChangeKind::AttributeChanged {
                person,
                name,
                old,
                new,
            } => (
                "attribute_changed",
                json!({"person": pid(person), "name": name, "old": opt(old), "new": opt(new)}),
            ),
            ChangeKind::ActivityAdded {
                person,
                activity,
                event_id,
            } => (
                "activity_added",
                json!({"person": pid(person), "seq": activity.cursor.seq,
                       "timestamp": activity.timestamp, "kind": activity.kind,
                       "name": activity.name, "data": activity.data.to_json(),
                       "event_id": event_id}),
            ),
            ChangeKind::ActivityRemoved {
                person,
                seq,
                timestamp,
            } => (
                "activity_removed",
                json!({"person": pid(person), "seq": seq, "timestamp": timestamp}),
            ),
            ChangeKind::DeliveryCreated { person, delivery } => (
                "delivery_created",
                json!({"person": pid(person), "delivery_id": delivery.id,
                       "channel": delivery.channel.as_str(), "message_id": delivery.message_id,
                       "campaign_id": delivery.campaign_id, "broadcast_id": delivery.broadcast_id,
                       "newsletter_id": delivery.newsletter_id, "recipient": delivery.recipient,
                       "subject": delivery.subject, "created": delivery.created,
                       "metrics": delivery.metrics, "status": delivery.status}),
            ),
            ChangeKind::DeliveryMetric {
                person,
                delivery_id,
                metric,
                at,
            } => (
                "delivery_metric",
                json!({"person": pid(person), "delivery_id": delivery_id, "metric": metric, "at": at}),
            ),
            ChangeKind::DeliveryRemoved {
                person,
                delivery_id,
                metrics,
            } => (
                "delivery_removed",
                json!({"person": pid(person), "delivery_id": delivery_id, "metrics": metrics}),
            ),
            ChangeKind::DeviceChanged { person, device } => (
                "device_changed",
                json!({"person": pid(person), "token": device.token,
                       "platform": device.platform.as_str(), "last_used": device.last_used,
                       "status": device.status.as_str(), "attributes": map(&device.attributes)}),
            ),
            ChangeKind::DeviceRemoved { person, token } => (
                "device_removed",
                json!({"person": pid(person), "token": token}),
            ),
            ChangeKind::RelationshipChanged {
                person,
                object,
                attributes,
            } => (
                "relationship_changed",
                json!({"person": pid(person), "object_type_id": object.type_id,
                       "object_id": object.object_id, "attributes": map(attributes)}),
            ),
            ChangeKind::RelationshipRemoved { person, object } => (
                "relationship_removed",
                json!({"person": pid(person), "object_type_id": object.type_id,
                       "object_id": object.object_id}),
            ),
            ChangeKind::ObjectChanged { object } => (
                "object_changed",
                json!({"object_type_id": object.object.type_id, "object_id": object.object.object_id,
                       "attributes": map(&object.attributes), "created": object.created,
                       "updated": object.updated}),
            ),
            ChangeKind::ObjectRemoved { object } => (
                "object_removed",
                json!({"object_type_id": object.type_id, "object_id": object.object_id}),
            ),
            ChangeKind::SegmentEntered { segment, person } => (
                "segment_entered",
                json!({"segment": segment, "person": pid(person)}),
            ),
            ChangeKind::SegmentExited { segment, person } => (
                "segment_exited",
                json!({"segment": segment, "person": pid(person)}),
            ),
            ChangeKind::SegmentDefined {
                segment,
                name,
                condition,
            } => (
                "segment_defined",
                json!({"segment": segment, "name": name, "condition": condition}),
            ),
            ChangeKind::SegmentRemoved { segment } => {
                ("segment_removed", json!({"segment": segment}))
            }
            ChangeKind::TopicDefined {
                topic,
                name,
                default_subscribed,
            } => (
                "topic_defined",
                json!({"topic": topic, "name": name, "default_subscribed": default_subscribed}),
            ),
            ChangeKind::ObjectTypeDefined { type_id, name } => (
                "object_type_defined",
                json!({"object_type_id": type_id, "name": name}),
            ),
        };
        let mut out = json!({
            "cursor": self.cursor.to_string(),
            "commit": self.commit,
            "at": self.at,
            "type": kind,
        });
        if let (Some(o), Json::Object(f)) = (out.as_object_mut(), fields) {
            o.extend(f);
        }
        out
    }
}

/// The membership changes of segments between bitmaps `old` and `new` (a segment
/// missing from one side has no members there).
pub(crate) fn segment_moves(old: &Bitmaps, new: &Bitmaps) -> Vec<SegmentMove> {
    fn segments(b: &Bitmaps) -> BTreeMap<u32, &RoaringBitmap> {
        b.iter()
            .filter_map(|(k, m)| match k {
                BitmapKey::Segment(id) => Some((*id, m)),
                _ => None,
            })
            .collect()
    }
    let (old, new) = (segments(old), segments(new));
    let empty = RoaringBitmap::new();
    let ids: BTreeSet<u32> = old.keys().chain(new.keys()).copied().collect();
    ids.into_iter()
        .filter_map(|id| {
            let o = old.get(&id).copied().unwrap_or(&empty);
            let n = new.get(&id).copied().unwrap_or(&empty);
            if o == n {
                return None;
            }
            Some((id, n - o, o - n))
        })
        .collect()
}
