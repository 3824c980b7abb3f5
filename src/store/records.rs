//! The value types of each column family, as stored (inside the envelope of
//! [`codec`](super::codec)). Field order is the on-disk order: append only, and bump the
//! format version when a record changes shape.

use std::collections::BTreeMap;

use bincode::{Decode, Encode};

use crate::model::{Channel, Delivery, Map, Person, PersonId, Value};

/// `people` family: one person's identifiers and times.
#[derive(Debug, Clone, PartialEq, Encode, Decode, Default)]
pub struct PersonRecord {
    /// `id` as given.
    pub id: Option<String>,
    /// `email` as given (the `identifiers` key holds the lowercased form).
    pub email: Option<String>,
    /// `phone` (E.164).
    pub phone: Option<String>,
    /// `anonymous_id`.
    pub anonymous_id: Option<String>,
    /// When the person was created here, unix seconds.
    pub created: i64,
    /// When the person last changed, unix seconds.
    pub updated: i64,
}

/// `attributes` family: one person's attribute map and when each key was last set.
#[derive(Debug, Clone, PartialEq, Encode, Decode, Default)]
pub struct AttributesRecord {
    /// Attribute values by name.
    pub values: Map,
    /// When each top-level attribute was last set, unix seconds.
    pub timestamps: BTreeMap<String, i64>,
    /// The latest `_timestamp` of an update that touched each top-level attribute
    /// (including ones that changed nothing or removed it): the guard that keeps an older
    /// update from undoing a newer one.
    pub ordered_at: BTreeMap<String, i64>,
}

/// `activity` family: one timeline entry.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct ActivityRecord {
    /// The activity type (`attribute_change`, `event`...).
    pub kind: String,
    /// The event or attribute name, where the type has one.
    pub name: Option<String>,
    /// Details.
    pub data: Value,
    /// The caller's event id (deduplication), for tracked events.
    pub event_id: Option<String>,
}

impl ActivityRecord {
    /// The kind and name of a tracked event (an `event`, `page` or `screen` with a
    /// name): what conditions count and `event_blocks` holds a row for.
    pub fn tracked(&self) -> Option<(&str, &str)> {
        match (self.kind.as_str(), &self.name) {
            ("event" | "page" | "screen", Some(name)) => Some((self.kind.as_str(), name)),
            _ => None,
        }
    }
}

/// `suppressed` family: an identifier blocked from use, and the identifiers suppressed
/// with it (unsuppressing any of them frees the whole group).
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct SuppressedRecord {
    /// When it was suppressed, unix seconds.
    pub at: i64,
    /// Every identifier suppressed together, as (kind code, normalized value).
    pub group: Vec<(u8, String)>,
}

/// `deliveries` family: one message sent to one person, and its metrics.
#[derive(Debug, Clone, PartialEq, Encode, Decode, Default)]
pub struct DeliveryRecord {
    /// The channel: email, push, sms, whatsapp, in_app, slack, webhook.
    pub channel: String,
    /// The message template (action) id.
    pub message_id: Option<String>,
    /// The campaign id.
    pub campaign_id: Option<String>,
    /// The broadcast id.
    pub broadcast_id: Option<String>,
    /// The newsletter id.
    pub newsletter_id: Option<String>,
    /// Where it went (address, phone, token).
    pub recipient: Option<String>,
    /// The subject line.
    pub subject: Option<String>,
    /// Each metric reported, with its time.
    pub metrics: BTreeMap<String, i64>,
    /// The current status: the most recent metric.
    pub status: String,
}

/// `devices` family: one push device of a person.
#[derive(Debug, Clone, PartialEq, Encode, Decode, Default)]
pub struct DeviceRecord {
    /// `ios` or `android`.
    pub platform: String,
    /// When the device was last used, unix seconds.
    pub last_used: i64,
    /// `""` (unused), `sent`, `bounced` or `suppressed`.
    pub status: String,
    /// Reserved and custom device attributes.
    pub attributes: Map,
    /// When the device was first added, unix seconds.
    pub created: i64,
}

/// `object_types` family: an object type's name.
#[derive(Debug, Clone, PartialEq, Encode, Decode, Default)]
pub struct ObjectTypeRecord {
    /// The type's name ("Companies").
    pub name: String,
    /// When it was created, unix seconds.
    pub created: i64,
}

/// `objects` family: one object's attributes.
#[derive(Debug, Clone, PartialEq, Encode, Decode, Default)]
pub struct ObjectRecord {
    /// Attribute values by name.
    pub attributes: Map,
    /// When it was created, unix seconds.
    pub created: i64,
    /// When it last changed, unix seconds.
    pub updated: i64,
}

/// `relationships` and `anon_relationships` families: a relationship's attributes.
#[derive(Debug, Clone, PartialEq, Encode, Decode, Default)]
pub struct RelationshipRecord {
    /// Relationship attribute values by name.
    pub attributes: Map,
    /// When it was created, unix seconds.
    pub created: i64,
}

/// `topics` family: a subscription topic.
#[derive(Debug, Clone, PartialEq, Encode, Decode, Default)]
pub struct TopicRecord {
    /// Its name.
    pub name: String,
    /// Whether people with no explicit preference receive it (opted in by default).
    pub default_subscribed: bool,
}

/// `segments` family: a segment definition.
#[derive(Debug, Clone, PartialEq, Encode, Decode, Default)]
pub struct SegmentRecord {
    /// Its name (unique).
    pub name: String,
    /// The condition in the text language (data-driven segments); `None` for a manual
    /// segment.
    pub condition: Option<String>,
    /// When it was created, unix seconds.
    pub created: i64,
}

/// How many records of each counted kind the database holds: kept in `meta/counters`
/// by every commit, so reporting them walks nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Default)]
pub struct RecordCounts {
    /// Records in `people`.
    pub people: u64,
    /// Records in `objects`.
    pub objects: u64,
    /// Tracked events: `activity` records of a tracked event (`ActivityRecord::tracked`)
    /// plus records in `anonymous`.
    pub events: u64,
    /// Records in `deliveries`.
    pub deliveries: u64,
    /// Records in `devices`.
    pub devices: u64,
    /// Records in `segments`.
    pub segments: u64,
}

impl RecordCounts {
    /// Applies signed differences (people, objects, events, deliveries, devices,
    /// segments), as [`Txn::count_changes`](super::Txn::count_changes) gives them.
    pub fn apply(&mut self, diff: [i64; 6]) {
        let [a, b, c, d, e, f] = diff;
        for (n, by) in [
            (&mut self.people, a),
            (&mut self.objects, b),
            (&mut self.events, c),
            (&mut self.deliveries, d),
            (&mut self.devices, e),
            (&mut self.segments, f),
        ] {
            // A count that would leave its range means the kept counts were wrong
            // already; `verify` reports that against a walk.
            *n = n.saturating_add_signed(by);
        }
    }
}

/// `meta` family values.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub enum MetaValue {
    /// Key `format`: the database's format version and creation time.
    Format {
        /// The format version (see FORMAT.md).
        version: u32,
        /// When the database was created, unix seconds.
        created: i64,
    },
    /// Key `counters`: the next person id, the next activity sequence number, and the
    /// sequence number of the last commit. Every commit rewrites it.
    Counters {
        /// The next person id to allocate.
        next_pid: u64,
        /// The next activity sequence number.
        next_seq: u64,
        /// The sequence number of the last commit.
        commit_seq: u64,
        /// How many records of each counted kind the database holds, kept by every
        /// commit (format 3).
        counts: RecordCounts,
    },
    /// Key `indexed`: the attributes with equality bitmaps.
    Indexed(Vec<String>),
    /// Key `feed`: the change feed is on (no record: off). Written when it is turned on
    /// and whenever old changes are dropped.
    Feed {
        /// How long changes are kept, in seconds of commit time.
        keep_seconds: i64,
        /// Every commit up to and including this one is no longer (or was never) in the
        /// feed: a cursor before it is expired.
        since: u64,
    },
    /// Key `buckets`: where the per-hour event bitmaps begin. An occurrence on a day
    /// (days since 1970-01-01, UTC) before `hours_from` is in its day's bitmap (id `15`),
    /// one on or after it in its hour's (id `12`). Absent: every occurrence is in its
    /// hour's (a database that has not yet rolled hours up).
    Buckets {
        /// The first day kept in hours.
        hours_from: i64,
    },
}

/// `changes` family: one part of the change feed's record of one commit.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct ChangesRecord {
    /// When the commit was made (the database clock), unix seconds.
    pub at: i64,
    /// The changes, in the order the feed reports them.
    pub entries: Vec<ChangeRecord>,
}

/// One entry of the change feed, as stored. Each names the records it changed by their
/// keys' parts and carries the values a consumer needs (the new record, or what an
/// attribute was and is).
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub enum ChangeRecord {
    /// A `people` record was written: `created` when there was none.
    Person {
        /// The person.
        pid: u32,
        /// True when the person is new.
        created: bool,
        /// The record written.
        record: PersonRecord,
    },
    /// A `people` record was deleted; `record` is what it held.
    PersonDeleted {
        /// The person.
        pid: u32,
        /// The record as it was.
        record: PersonRecord,
    },
    /// `secondary` was merged into `primary` (its identifiers now name `primary`).
    Merged {
        /// The person kept.
        primary: u32,
        /// The person merged away.
        secondary: u32,
    },
    /// Identifiers were suppressed together, as (kind code, normalized value).
    Suppressed(Vec<(u8, String)>),
    /// Identifiers were unsuppressed together.
    Unsuppressed(Vec<(u8, String)>),
    /// A top-level attribute changed from `old` to `new` (`None`: absent).
    Attribute {
        /// The person.
        pid: u32,
        /// The attribute.
        name: String,
        /// Its value before.
        old: Option<Value>,
        /// Its value after.
        new: Option<Value>,
    },
    /// An `activity` record was written.
    Activity {
        /// The person.
        pid: u32,
        /// Its time.
        timestamp: i64,
        /// Its sequence number.
        seq: u64,
        /// The entry.
        record: ActivityRecord,
    },
    /// An `activity` record was deleted.
    ActivityRemoved {
        /// The person.
        pid: u32,
        /// Its time.
        timestamp: i64,
        /// Its sequence number.
        seq: u64,
    },
    /// A delivery was created.
    Delivery {
        /// The person.
        pid: u32,
        /// When it was created.
        created: i64,
        /// Its id.
        id: String,
        /// The record.
        record: DeliveryRecord,
    },
    /// A delivery gained (or changed the time of) a metric.
    Metric {
        /// The person.
        pid: u32,
        /// The delivery's id.
        id: String,
        /// The metric.
        metric: String,
        /// Its time.
        at: i64,
    },
    /// A delivery was deleted, with the metrics it had.
    DeliveryRemoved {
        /// The person.
        pid: u32,
        /// Its id.
        id: String,
        /// The metrics it had.
        metrics: Vec<String>,
    },
    /// A device was written.
    Device {
        /// The person.
        pid: u32,
        /// Its token.
        token: String,
        /// The record.
        record: DeviceRecord,
    },
    /// A device was deleted.
    DeviceRemoved {
        /// The person.
        pid: u32,
        /// Its token.
        token: String,
    },
    /// A relationship was written.
    Relationship {
        /// The person.
        pid: u32,
        /// The object's type.
        type_id: u32,
        /// The object's id.
        object_id: String,
        /// The record.
        record: RelationshipRecord,
    },
    /// A relationship was deleted.
    RelationshipRemoved {
        /// The person.
        pid: u32,
        /// The object's type.
        type_id: u32,
        /// The object's id.
        object_id: String,
    },
    /// An object was written.
    Object {
        /// Its type.
        type_id: u32,
        /// Its id.
        object_id: String,
        /// The record.
        record: ObjectRecord,
    },
    /// An object was deleted.
    ObjectRemoved {
        /// Its type.
        type_id: u32,
        /// Its id.
        object_id: String,
    },
    /// People entered and left segment `id`, within one chunk (pid >> 16) of pids:
    /// roaring bitmaps in their portable serialization.
    Members {
        /// The segment.
        id: u32,
        /// Who entered.
        entered: Vec<u8>,
        /// Who left.
        exited: Vec<u8>,
    },
    /// A segment was defined or changed.
    Segment {
        /// Its id.
        id: u32,
        /// The record.
        record: SegmentRecord,
    },
    /// A segment was deleted.
    SegmentRemoved(u32),
    /// A topic was defined or changed.
    Topic {
        /// Its id.
        id: u32,
        /// The record.
        record: TopicRecord,
    },
    /// An object type was defined or renamed.
    ObjectType {
        /// Its id.
        id: u32,
        /// The record.
        record: ObjectTypeRecord,
    },
}

// The model types a caller sees are built from these records here, in one place, so a
// field added to a record meets its conversion.

impl PersonRecord {
    /// The person `pid` with attributes `attrs` as the model shows them.
    pub(crate) fn into_person(self, pid: u32, attrs: Option<AttributesRecord>) -> Person {
        let attrs = attrs.unwrap_or_default();
        Person {
            pid: PersonId(pid),
            cio_id: PersonId(pid).cio_id(),
            id: self.id,
            email: self.email,
            phone: self.phone,
            anonymous_id: self.anonymous_id,
            created: self.created,
            updated: self.updated,
            attributes: attrs.values,
            timestamps: attrs.timestamps.into_iter().collect(),
        }
    }
}

impl DeliveryRecord {
    /// Delivery `id`, created at `created` (both from its key), as the model shows it.
    pub(crate) fn into_delivery(self, id: String, created: i64) -> Delivery {
        Delivery {
            id,
            channel: Channel::parse(&self.channel).unwrap_or(Channel::Email),
            message_id: self.message_id,
            campaign_id: self.campaign_id,
            broadcast_id: self.broadcast_id,
            newsletter_id: self.newsletter_id,
            recipient: self.recipient,
            subject: self.subject,
            created,
            metrics: self.metrics,
            status: self.status,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::store::codec::{decode, encode};
    use proptest::prelude::*;

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            any::<f64>()
                .prop_filter("finite", |x| x.is_finite())
                .prop_map(Value::Float),
            ".{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(".{0,8}", inner, 0..6).prop_map(Value::Map),
            ]
        })
    }

    fn arb_opt_string() -> impl Strategy<Value = Option<String>> {
        prop::option::of(".{0,20}")
    }

    #[test]
    fn the_buckets_record_is_as_format_md_says() {
        // Variant 4, then `hours_from` zig-zag encoded as a varint: 20_454 → 40_908,
        // over 250, so `251` and the u16 little-endian.
        let bytes = encode(1, b"buckets", &MetaValue::Buckets { hours_from: 20_454 }).unwrap();
        assert_eq!(bytes.get(5..), Some(&[4u8, 251, 0xCC, 0x9F][..]));
        let back: MetaValue = decode(1, b"buckets", &bytes).unwrap();
        assert_eq!(back, MetaValue::Buckets { hours_from: 20_454 });
    }

    fn roundtrip<T: Encode + Decode<()> + PartialEq + std::fmt::Debug>(x: &T) {
        let bytes = encode(4, b"key", x).unwrap();
        let back: T = decode(4, b"key", &bytes).unwrap();
        assert_eq!(&back, x);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, rng_seed: proptest::test_runner::RngSeed::Fixed(7), ..ProptestConfig::default() })]

        #[test]
        fn value_roundtrips(v in arb_value()) { roundtrip(&v); }

        #[test]
        fn person_roundtrips(id in arb_opt_string(), email in arb_opt_string(), phone in arb_opt_string(),
                             anon in arb_opt_string(), created in any::<i64>(), updated in any::<i64>()) {
            roundtrip(&PersonRecord { id, email, phone, anonymous_id: anon, created, updated });
        }

        #[test]
        fn attributes_roundtrip(values in prop::collection::btree_map(".{1,10}", arb_value(), 0..8),
                                timestamps in prop::collection::btree_map(".{1,10}", any::<i64>(), 0..8)) {
            roundtrip(&AttributesRecord { values, ordered_at: timestamps.clone(), timestamps });
        }

        #[test]
        fn activity_roundtrips(kind in "[a-z_]{1,20}", name in arb_opt_string(), data in arb_value(), event_id in arb_opt_string()) {
            roundtrip(&ActivityRecord { kind, name, data, event_id });
        }

        #[test]
        fn delivery_roundtrips(channel in "[a-z_]{1,8}", ids in prop::collection::vec(arb_opt_string(), 6),
                               metrics in prop::collection::btree_map("[a-z_]{1,12}", any::<i64>(), 0..6), status in "[a-z]{0,10}") {
            roundtrip(&DeliveryRecord {
                channel, message_id: ids[0].clone(), campaign_id: ids[1].clone(), broadcast_id: ids[2].clone(),
                newsletter_id: ids[3].clone(), recipient: ids[4].clone(), subject: ids[5].clone(), metrics, status,
            });
        }

        #[test]
        fn device_roundtrips(platform in "[a-z]{0,8}", last_used in any::<i64>(), status in "[a-z]{0,10}",
                             attributes in prop::collection::btree_map(".{1,8}", arb_value(), 0..4), created in any::<i64>()) {
            roundtrip(&DeviceRecord { platform, last_used, status, attributes, created });
        }

        #[test]
        fn objects_and_relationships_roundtrip(name in ".{0,20}", attributes in prop::collection::btree_map(".{1,8}", arb_value(), 0..4),
                                               t in any::<i64>(), u in any::<i64>()) {
            roundtrip(&ObjectTypeRecord { name, created: t });
            roundtrip(&ObjectRecord { attributes: attributes.clone(), created: t, updated: u });
            roundtrip(&RelationshipRecord { attributes, created: t });
        }

        #[test]
        fn topics_and_segments_roundtrip(name in ".{0,20}", yes in any::<bool>(), cond in arb_opt_string(), t in any::<i64>()) {
            roundtrip(&TopicRecord { name: name.clone(), default_subscribed: yes });
            roundtrip(&SegmentRecord { name, condition: cond, created: t });
        }

        #[test]
        fn small_values_roundtrip(t in any::<i64>(), s in any::<u64>(), p in any::<u32>()) {
            roundtrip(&(t, s));
            roundtrip(&(p, t));
            roundtrip(&());
        }

        #[test]
        fn suppressed_roundtrips(at in any::<i64>(), group in prop::collection::vec((0u8..5, ".{0,20}"), 0..4)) {
            roundtrip(&SuppressedRecord { at, group });
        }

        #[test]
        fn meta_roundtrips(version in any::<u32>(), created in any::<i64>(), n in any::<u64>(), m in any::<u64>()) {
            roundtrip(&MetaValue::Format { version, created });
            roundtrip(&MetaValue::Counters { next_pid: n, next_seq: m, commit_seq: n ^ m, counts: RecordCounts { people: n, objects: m, events: n / 2, deliveries: m / 3, devices: 1, segments: 0 } });
            roundtrip(&MetaValue::Indexed(vec![format!("{n}"), String::new()]));
        }

        #[test]
        fn pid_roundtrips(pid in any::<u32>()) { roundtrip(&pid); }

        #[test]
        fn any_single_byte_flip_is_detected(v in arb_value(), pos in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut bytes = encode(4, b"key", &v).unwrap();
            let i = pos.index(bytes.len());
            bytes[i] ^= 1 << bit;
            prop_assert!(decode::<Value>(4, b"key", &bytes).is_err());
        }

        #[test]
        fn payload_decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = crate::store::codec::decode_payload::<Value>(&bytes);
            let _ = crate::store::codec::decode_payload::<AttributesRecord>(&bytes);
            let _ = crate::store::codec::decode_payload::<MetaValue>(&bytes);
        }
    }

    #[test]
    fn deeply_nested_payload_is_refused_not_overflowed() {
        // 100_000 nested arrays of length 1: tag 5, len 1, ...
        let mut payload = Vec::new();
        for _ in 0..100_000 {
            payload.extend_from_slice(&[5, 1]);
        }
        payload.push(0);
        let err = crate::store::codec::decode_payload::<Value>(&payload).unwrap_err();
        assert!(err.contains("nested"), "{err}");
    }
}
