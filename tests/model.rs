//! Model-based property test of the whole profile.
//!
//! Random sequences of writes run against the real database and against a plain
//! in-memory model written from the documented rules: the module docs of
//! `src/people.rs`, `src/activity.rs`, `src/devices.rs`, `src/deliveries.rs`,
//! `src/relations.rs` and `src/merge.rs`, the docs of the operations and of the types
//! they return, and sections 1, 2, 3.1, 4, 5 and 8.1 of the model doc. The writes:
//! - identify (addressed by id, email, phone or cio_id; bodies setting and removing
//!   identifiers and attributes, dotted keys, `_update`, `_timestamp`), delete, suppress,
//!   unsuppress;
//! - track (events, page and screen views; by a person or by an anonymous id alone;
//!   optional event ids, which deduplicate per owner; backfilled timestamps); an
//!   identify giving a person an anonymous id moves that id's events and relationships
//!   to them;
//! - add device (upsert by token, tokens moving between people, a cap of
//!   `MAX_DEVICES`), delete device, push results and the status transitions;
//! - add delivery (ids unique), metrics (valid or not for the channel; status and the
//!   `<metric>_<channel>` activity);
//! - identify object, add and delete relationship (with relationship attributes; by an
//!   anonymous id too), delete object;
//! - merge;
//! - small `write_batch`es of all of these, and reopen.
//!
//! After every step the two must agree on:
//! - the outcome of the operation, or that it was refused with an input error or
//!   `Error::Suppressed` (for a batch: `Error::InBatch` naming the same operation) and
//!   left everything unchanged;
//! - who every identifier of a small fixed pool names, and that person in full
//!   (identifiers, attributes, attribute timestamps, created/updated times);
//! - whether each identifier of the pool is suppressed;
//! - the full list of people, and each person's timeline (kinds, names, times, data, in
//!   order), devices, deliveries, relationships, event counts of a few names (whole and
//!   in a time window), and the `profile` overview;
//! - the owner of each device token and of each delivery id of the pool, the events kept
//!   for each anonymous id of the pool, each object of the pool and the people related
//!   to it, the object types;
//! - `verify` finding nothing wrong (nothing left that belongs to nobody).
//!
//! The pools are small so that collisions (identifier conflicts, the same token or
//! event id or delivery id for different people, merges between people who share
//! objects) happen often. Everything is deterministic: a fixed proptest seed, no failure
//! persistence, a manual clock.
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
//! - removing a dotted key that is not there changes nothing;
//! - a delivery's status is the metric of `metrics` with the latest time (each metric
//!   keeps the time it was first reported; on a tie, the one reported later), so a
//!   repeated report of an older metric does not become the status;
//! - deleting an object removes the relationships kept for anonymous ids too ("every
//!   relationship to it"), so none moves later to a person;
//! - a relationship call ignored for an unknown `cio_id` creates nothing (not even the
//!   object): "nothing happened";
//! - a merge whose primary inherits attributes moves the primary's `updated` ("when the
//!   person last changed").
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::RngSeed;

use profiledb::{
    kinds, Activity, ActivityFilter, Channel, Clock, Delivery, Device, DeviceInput, DeviceStatus,
    Durability, Error, Ident, IdentKind, Identify, IgnoreReason, Limits, ManualClock, Map, Metric,
    NewDelivery, Object, ObjectRef, Op, Outcome, Person, PersonId, Platform, ProfileDb, PushResult,
    Relationship, Track, TrackKind, Value,
};

const T0: i64 = 1_767_225_600;
/// Highest internal person id the generated `cio_id`s name (some name nobody).
const MAX_CIO_PID: u32 = 10;
/// The per-person device cap the database is opened with (`Limits::max_devices`).
const MAX_DEVICES: usize = 2;
/// How many of the newest activities and deliveries the `profile` overview is read with.
const RECENT: usize = 5;
/// The pools of device tokens, delivery ids, event names and objects.
const TOKENS: [&str; 4] = ["t0", "t1", "t2", "t3"];
const DELIVERY_IDS: [&str; 3] = ["d0", "d1", "d2"];
const EVENT_NAMES: [&str; 2] = ["buy", "view"];
const OBJECTS: [(u32, &str); 3] = [(1, "o0"), (1, "o1"), (2, "o0")];

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
    Track {
        who: Ident,
        kind: TrackKind,
        name: String,
        event_id: Option<String>,
        /// The event's timestamp, relative to the clock at the step.
        ts_delta: Option<i64>,
        props: Vec<(String, Value)>,
    },
    AddDevice {
        who: Ident,
        token: String,
        platform: Platform,
        /// `last_used`, relative to the clock at the step.
        last_used_delta: Option<i64>,
        attrs: Vec<(String, Value)>,
    },
    DeleteDevice {
        who: Ident,
        token: String,
    },
    PushResult {
        token: String,
        result: PushResult,
    },
    AddDelivery {
        who: Ident,
        id: String,
        channel: Channel,
        /// `created`, relative to the clock at the step.
        created_delta: Option<i64>,
        campaign_id: Option<String>,
    },
    Metric {
        id: String,
        metric: String,
        /// The metric's timestamp, relative to the clock at the step.
        ts_delta: Option<i64>,
        href: Option<String>,
        reason: Option<String>,
    },
    IdentifyObject {
        object: ObjectRef,
        attrs: Vec<(String, Value)>,
    },
    AddRelationship {
        who: Ident,
        object: ObjectRef,
        attrs: Vec<(String, Value)>,
    },
    DeleteRelationship {
        who: Ident,
        object: ObjectRef,
    },
    DeleteObject(ObjectRef),
    Merge {
        primary: Ident,
        secondary: Ident,
    },
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

/// Who a track, device, delivery or relationship is for: people's identifiers, and
/// anonymous ids (which track and relate on their own when nobody has them).
fn who_strategy() -> impl Strategy<Value = Ident> {
    prop_oneof![
        // Mostly a few, so that one person gathers devices, deliveries and events.
        12 => prop_oneof![
            Just(Ident::id("u0")),
            Just(Ident::id("u1")),
            Just(Ident::email("e0@x.io")),
            Just(Ident::anonymous_id("a0")),
        ],
        4 => id_value().prop_map(Ident::id),
        4 => email_value().prop_map(Ident::email),
        2 => cio_value().prop_map(Ident::cio_id),
        1 => phone_value().prop_map(Ident::phone),
        5 => anon_value().prop_map(Ident::anonymous_id),
        1 => Just(Ident::email("not-an-email")),
    ]
}

/// Whose device: mostly two people, so that one of them reaches the cap.
fn device_who() -> impl Strategy<Value = Ident> {
    prop_oneof![
        6 => Just(Ident::id("u0")),
        3 => Just(Ident::email("e0@x.io")),
        4 => who_strategy(),
    ]
}

fn track_strategy() -> impl Strategy<Value = Write> {
    let kind = prop_oneof![
        6 => Just(TrackKind::Event),
        2 => Just(TrackKind::Page),
        2 => Just(TrackKind::Screen),
    ];
    let name = prop_oneof![
        6 => Just("buy"),
        4 => Just("view"),
        1 => Just(" buy "),
        1 => prop_oneof![Just("  "), Just("")],
    ]
    .prop_map(str::to_owned);
    let event_id = prop::option::weighted(
        0.6,
        prop_oneof![
            12 => (0..2u8).prop_map(|i| format!("e{i}")),
            1 => Just(String::new()),
        ],
    );
    let prop_entry = (
        prop_oneof![Just("n"), Just("s")].prop_map(str::to_owned),
        prop_oneof![
            8 => (0..2i64).prop_map(Value::Int),
            4 => Just(Value::from("x")),
            1 => Just(Value::Float(f64::NAN)),
        ],
    );
    (
        who_strategy(),
        kind,
        name,
        event_id,
        prop::option::weighted(0.5, -3..=1i64),
        prop::collection::vec(prop_entry, 0..3),
    )
        .prop_map(
            |(who, kind, name, event_id, ts_delta, props)| Write::Track {
                who,
                kind,
                name,
                event_id,
                ts_delta,
                props,
            },
        )
}

fn token_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        16 => (0..TOKENS.len()).prop_map(|i| TOKENS[i].to_owned()),
        1 => Just(String::new()),
    ]
}

fn device_attr() -> impl Strategy<Value = (String, Value)> {
    let key = |k: &'static str| Just(k.to_owned());
    prop_oneof![
        4 => (key("app_version"), prop_oneof![
            Just(Value::from("1")),
            Just(Value::from("2")),
            removal(),
        ]),
        3 => (key("push_enabled"), prop_oneof![
            Just(Value::Bool(true)),
            Just(Value::Bool(false)),
            Just(Value::from("true")),
        ]),
        2 => (key("color"), prop_oneof![(0..2i64).prop_map(Value::Int), removal()]),
        // Refused as input.
        1 => prop_oneof![
            (key("_last_status"), Just(Value::from("sent"))),
            (key(""), Just(Value::from("x"))),
            (key("color"), Just(Value::Float(f64::NAN))),
        ],
    ]
}

fn channel_strategy() -> impl Strategy<Value = Channel> {
    prop_oneof![
        3 => Just(Channel::Email),
        1 => Just(Channel::Push),
        2 => Just(Channel::Sms),
        1 => Just(Channel::Whatsapp),
        1 => Just(Channel::InApp),
        1 => Just(Channel::Webhook),
    ]
}

fn delivery_id(unknown: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![
        16 => (0..DELIVERY_IDS.len()).prop_map(|i| DELIVERY_IDS[i].to_owned()),
        1 => Just(unknown.to_owned()),
    ]
}

fn object_strategy() -> impl Strategy<Value = ObjectRef> {
    prop_oneof![
        16 => (0..OBJECTS.len()).prop_map(|i| ObjectRef::new(OBJECTS[i].0, OBJECTS[i].1)),
        // Refused as input.
        1 => prop_oneof![Just(ObjectRef::new(0, "o0")), Just(ObjectRef::new(1, ""))],
    ]
}

/// Object or relationship attributes named `a` or `b`.
fn object_attrs(a: &'static str, b: &'static str) -> impl Strategy<Value = Vec<(String, Value)>> {
    let entry = prop_oneof![
        10 => (
            prop_oneof![Just(a), Just(b)],
            prop_oneof![
                Just(Value::from("A")),
                Just(Value::from("B")),
                (0..2i64).prop_map(Value::Int),
                removal(),
            ],
        ),
        // Refused as input.
        1 => prop_oneof![
            (Just("object_id"), Just(Value::from("x"))),
            (Just(""), Just(Value::from("x"))),
            (Just(a), Just(Value::Float(f64::NAN))),
        ],
    ]
    .prop_map(|(k, v)| (k.to_owned(), v));
    prop::collection::vec(entry, 0..3)
}

fn merge_ident() -> impl Strategy<Value = Ident> {
    prop_oneof![
        8 => prop_oneof![
            Just(Ident::id("u0")),
            Just(Ident::id("u1")),
            Just(Ident::email("e0@x.io")),
            Just(Ident::cio_id("00000001")),
            Just(Ident::cio_id("00000002")),
        ],
        4 => id_value().prop_map(Ident::id),
        3 => email_value().prop_map(Ident::email),
        3 => cio_value().prop_map(Ident::cio_id),
        1 => anon_value().prop_map(Ident::anonymous_id),
        1 => Just(Ident::email("not-an-email")),
    ]
}

fn profile_write_strategy() -> impl Strategy<Value = Write> {
    prop_oneof![
        8 => track_strategy(),
        7 => (
            device_who(),
            token_strategy(),
            prop_oneof![Just(Platform::Ios), Just(Platform::Android)],
            prop::option::weighted(0.5, -1..=0i64),
            prop::collection::vec(device_attr(), 0..3),
        )
            .prop_map(|(who, token, platform, last_used_delta, attrs)| Write::AddDevice {
                who,
                token,
                platform,
                last_used_delta,
                attrs,
            }),
        1 => (device_who(), token_strategy())
            .prop_map(|(who, token)| Write::DeleteDevice { who, token }),
        3 => (
            token_strategy(),
            prop_oneof![Just(PushResult::Sent), Just(PushResult::Bounced)],
        )
            .prop_map(|(token, result)| Write::PushResult { token, result }),
        5 => (
            who_strategy(),
            delivery_id(""),
            channel_strategy(),
            prop::option::weighted(0.3, -2..=0i64),
            prop::option::of(Just("c1".to_owned())),
        )
            .prop_map(|(who, id, channel, created_delta, campaign_id)| Write::AddDelivery {
                who,
                id,
                channel,
                created_delta,
                campaign_id,
            }),
        8 => (
            delivery_id("dx"),
            prop_oneof![
                3 => Just("sent"),
                3 => Just("delivered"),
                2 => Just("opened"),
                1 => Just("clicked"),
                1 => Just("bounced"),
                1 => Just("replied"),
                1 => Just("deferred"),
                1 => Just("bogus"),
            ],
            prop::option::weighted(0.6, -3..=1i64),
            prop::option::weighted(0.2, Just("https://x.io".to_owned())),
            prop::option::weighted(0.2, Just("full".to_owned())),
        )
            .prop_map(|(id, metric, ts_delta, href, reason)| Write::Metric {
                id,
                metric: metric.to_owned(),
                ts_delta,
                href,
                reason,
            }),
        2 => (object_strategy(), object_attrs("name", "tier"))
            .prop_map(|(object, attrs)| Write::IdentifyObject { object, attrs }),
        5 => (who_strategy(), object_strategy(), object_attrs("role", "since"))
            .prop_map(|(who, object, attrs)| Write::AddRelationship { who, object, attrs }),
        1 => (who_strategy(), object_strategy())
            .prop_map(|(who, object)| Write::DeleteRelationship { who, object }),
        1 => object_strategy().prop_map(Write::DeleteObject),
        4 => (merge_ident(), merge_ident())
            .prop_map(|(primary, secondary)| Write::Merge { primary, secondary }),
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
        30 => profile_write_strategy(),
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
        prop::collection::vec((0..=1i64, step_strategy()), 1..80),
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
    Recorded(Option<u32>),
    Duplicate,
    NoChange,
    Merged {
        primary: u32,
        secondary: u32,
    },
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
            Outcome::Recorded(p) => Out::Recorded(p.map(|p| p.0)),
            Outcome::Duplicate => Out::Duplicate,
            Outcome::NoChange => Out::NoChange,
            Outcome::Merged { primary, secondary } => Out::Merged {
                primary: primary.0,
                secondary: secondary.0,
            },
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

/// One timeline entry as read back. A refusal's `reason` text is left out of `data`
/// (its `attribute` and `value` are compared).
#[derive(Debug, Clone, PartialEq)]
struct MAct {
    kind: String,
    name: Option<String>,
    timestamp: i64,
    data: Value,
}

impl MAct {
    fn of(a: Activity) -> MAct {
        let data = match (a.kind.as_str(), a.data) {
            (kinds::FAILED_ATTRIBUTE_CHANGE, Value::Map(mut m)) => {
                m.remove("reason");
                Value::Map(m)
            }
            (_, d) => d,
        };
        MAct {
            kind: a.kind,
            name: a.name,
            timestamp: a.timestamp,
            data,
        }
    }
}

/// One timeline entry (or anonymous event) in the model.
#[derive(Debug, Clone)]
struct Entry {
    act: MAct,
    /// Timelines read in (timestamp, seq) order; seq counts entries as they are made, so
    /// entries of one time read in the order they were made, and an entry that moves (an
    /// anonymous event, a merged event) keeps its place.
    seq: u64,
    event_id: Option<String>,
    /// Moves to the primary in a merge: tracked events and delivery metrics.
    moves: bool,
}

/// Entries as read back, oldest first.
fn in_order(entries: &[Entry]) -> Vec<MAct> {
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by_key(|e| (e.act.timestamp, e.seq));
    sorted.into_iter().map(|e| e.act.clone()).collect()
}

#[derive(Debug, Clone, PartialEq)]
struct MDevice {
    platform: Platform,
    last_used: i64,
    status: DeviceStatus,
    attrs: Map,
}

#[derive(Debug, Clone)]
struct MDelivery {
    channel: Channel,
    campaign_id: Option<String>,
    created: i64,
    /// Each metric with the time it was first reported, in the order first reported.
    metrics: Vec<(String, i64)>,
}

impl MDelivery {
    /// "The status is the metric reported with the latest time (on a tie, the later
    /// report), `created` before any", where each metric keeps the time it was first
    /// reported: the metric of `metrics` with the latest time.
    fn status(&self) -> String {
        let mut best: Option<&(String, i64)> = None;
        for m in &self.metrics {
            if best.is_none_or(|b| m.1 >= b.1) {
                best = Some(m);
            }
        }
        best.map_or_else(|| "created".to_owned(), |b| b.0.clone())
    }

    fn to_delivery(&self, id: &str) -> Delivery {
        Delivery {
            id: id.to_owned(),
            channel: self.channel,
            message_id: None,
            campaign_id: self.campaign_id.clone(),
            broadcast_id: None,
            newsletter_id: None,
            recipient: None,
            subject: None,
            created: self.created,
            metrics: self.metrics.iter().cloned().collect(),
            status: self.status(),
        }
    }
}

/// An object: (type id, object id).
type ObjKey = (u32, String);

fn obj_name(key: &ObjKey) -> String {
    format!("{}:{}", key.0, key.1)
}

#[derive(Debug, Clone)]
struct MObject {
    attrs: Map,
    created: i64,
    updated: i64,
}

/// What is kept for an anonymous id nobody has.
#[derive(Debug, Clone, Default)]
struct MAnon {
    events: Vec<Entry>,
    relationships: BTreeMap<ObjKey, Map>,
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
    acts: Vec<Entry>,
    devices: BTreeMap<String, MDevice>,
    deliveries: BTreeMap<String, MDelivery>,
    relationships: BTreeMap<ObjKey, Map>,
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

    fn has_event_id(&self, id: &str) -> bool {
        self.acts.iter().any(|e| e.event_id.as_deref() == Some(id))
    }

    fn event_count(&self, kind: TrackKind, name: &str, since: i64, until: i64) -> u64 {
        self.acts
            .iter()
            .filter(|e| e.act.kind == kind.as_str() && e.act.name.as_deref() == Some(name))
            .filter(|e| (since..until).contains(&e.act.timestamp))
            .count() as u64
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
    next_seq: u64,
    objects: BTreeMap<ObjKey, MObject>,
    /// Object types created (by the first object of the type).
    types: BTreeSet<u32>,
    anon: BTreeMap<String, MAnon>,
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
        let mut data = Map::new();
        data.insert("attribute".into(), Value::from(kind.as_str()));
        data.insert("value".into(), Value::from(value));
        self.record(
            pid,
            kinds::FAILED_ATTRIBUTE_CHANGE,
            Some(kind.as_str().to_owned()),
            now,
            Value::Map(data),
        );
        Out::Refused(pid)
    }

    /// A new timeline entry (not yet placed in any timeline).
    fn entry(&mut self, kind: &str, name: Option<String>, timestamp: i64, data: Value) -> Entry {
        self.next_seq += 1;
        Entry {
            act: MAct {
                kind: kind.to_owned(),
                name,
                timestamp,
                data,
            },
            seq: self.next_seq,
            event_id: None,
            moves: false,
        }
    }

    /// Appends an entry to `pid`'s timeline.
    fn record(&mut self, pid: u32, kind: &str, name: Option<String>, timestamp: i64, data: Value) {
        let e = self.entry(kind, name, timestamp, data);
        self.people.get_mut(&pid).unwrap().acts.push(e);
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
        let mut new_anon = None;
        for (kind, old, new) in writes {
            if kind == IdentKind::AnonymousId {
                new_anon.clone_from(&new);
            }
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
            let e = self.entry(kinds::PROFILE_CREATE, None, now, Value::Map(ids));
            person.acts.push(e);
        } else if changes.is_empty() {
            self.people.insert(pid, person);
            return Ok(Out::Unchanged(pid));
        }
        person.updated = now;
        if !changes.is_empty() {
            let e = self.entry(kinds::ATTRIBUTE_CHANGE, None, now, Value::Map(changes));
            person.acts.push(e);
        }
        self.people.insert(pid, person);
        if created {
            self.next_pid += 1;
        }
        // A person given an anonymous id gets what was kept for it.
        if let Some(anon) = new_anon {
            self.merge_anonymous(pid, &anon, now);
        }
        Ok(if created {
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
// The model: events, devices, deliveries, objects, merge

fn check_token(token: &str) -> Result<(), Refusal> {
    if token.is_empty() || token.len() > 4096 || token.chars().any(char::is_control) {
        return Err(Refusal::Input);
    }
    Ok(())
}

fn check_object(object: &ObjectRef) -> Result<ObjKey, Refusal> {
    let id = &object.object_id;
    if object.type_id == 0 || id.is_empty() || id.len() > 150 || id.chars().any(char::is_control) {
        return Err(Refusal::Input);
    }
    Ok((object.type_id, id.clone()))
}

/// Object and relationship attribute names that may not be used (model doc 8.1; the doc
/// lists `created_at` as reserved too, but for people "reserved" means converted, not
/// refused, and the code takes it as an ordinary attribute: not generated here).
const OBJECT_RESERVED: [&str; 5] = [
    "cio_object_id",
    "object_id",
    "objectId",
    "relationship",
    "_relationship",
];

/// Patches object or relationship attributes (`null`/`""` removes), returning the
/// changes as `{name: {old, new}}`. A name given twice is two changes, the later
/// overwriting the earlier in the result, as for people's attributes (open in the docs;
/// as the code).
fn patch(map: &mut Map, attrs: &[(String, Value)]) -> Result<Map, Refusal> {
    let mut changes = Map::new();
    for (name, value) in attrs {
        if name.is_empty() || OBJECT_RESERVED.contains(&name.as_str()) {
            return Err(Refusal::Input);
        }
        let new = if is_removal(value) {
            None
        } else if finite(value) {
            Some(value.clone())
        } else {
            return Err(Refusal::Input);
        };
        let old = match &new {
            Some(v) => map.insert(name.clone(), v.clone()),
            None => map.remove(name),
        };
        if old != new {
            changes.insert(name.clone(), old_new(old, new));
        }
    }
    Ok(changes)
}

/// The metrics of each channel, from model doc 4. `deferred` is also an email metric:
/// the doc lists it among the metrics and `deferred_*` activity types without naming
/// its channels (as the code).
fn channel_metrics(channel: Channel) -> &'static [&'static str] {
    match channel {
        Channel::Email => &[
            "drafted",
            "attempted",
            "sent",
            "delivered",
            "opened",
            "clicked",
            "converted",
            "unsubscribed",
            "bounced",
            "dropped",
            "spammed",
            "failed",
            "undeliverable",
            "deferred",
        ],
        Channel::Push => &[
            "drafted",
            "attempted",
            "sent",
            "delivered",
            "opened",
            "clicked",
            "converted",
            "bounced",
            "dropped",
            "failed",
            "undeliverable",
        ],
        Channel::Sms => &[
            "drafted",
            "attempted",
            "sent",
            "delivered",
            "clicked",
            "converted",
            "bounced",
            "failed",
            "undeliverable",
            "replied",
        ],
        Channel::Whatsapp => &[
            "drafted",
            "attempted",
            "sent",
            "delivered",
            "opened",
            "clicked",
            "converted",
            "bounced",
            "dropped",
            "failed",
            "undeliverable",
            "replied",
        ],
        Channel::InApp => &[
            "drafted",
            "attempted",
            "sent",
            "opened",
            "clicked",
            "converted",
            "failed",
            "undeliverable",
        ],
        Channel::Slack | Channel::Webhook => &[
            "drafted",
            "attempted",
            "sent",
            "clicked",
            "failed",
            "undeliverable",
        ],
    }
}

/// The channel's name in activity types (model doc 3.2: SMS is `twilio`).
fn channel_activity_name(channel: Channel) -> &'static str {
    match channel {
        Channel::Email => "email",
        Channel::Push => "push",
        Channel::Sms => "twilio",
        Channel::Whatsapp => "whatsapp",
        Channel::InApp => "in_app",
        Channel::Slack => "slack",
        Channel::Webhook => "webhook",
    }
}

/// Empty for merging: unset, `""`, `[]` or `{}` (merge module docs).
fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Map(m) => m.is_empty(),
        _ => false,
    }
}

/// `device_change` data. (Its shape is open in the docs beyond `action` and `token`; the
/// platform as the code.)
fn device_data(action: &str, token: &str, platform: Platform) -> Value {
    let mut data = Map::new();
    data.insert("action".into(), Value::from(action));
    data.insert("token".into(), Value::from(token));
    data.insert(
        "platform".into(),
        Value::from(match platform {
            Platform::Ios => "ios",
            Platform::Android => "android",
        }),
    );
    Value::Map(data)
}

impl Model {
    fn device_owner(&self, token: &str) -> Option<u32> {
        self.people
            .iter()
            .find(|(_, p)| p.devices.contains_key(token))
            .map(|(pid, _)| *pid)
    }

    fn delivery_owner(&self, id: &str) -> Option<u32> {
        self.people
            .iter()
            .find(|(_, p)| p.deliveries.contains_key(id))
            .map(|(pid, _)| *pid)
    }

    /// The person `who` names, created as by an identify with no attributes when nobody
    /// has it (tracking, adding a device, a delivery or a relationship for an unknown id
    /// or email creates the person); `Err(outcome)` when nobody can be: an unknown
    /// `cio_id` (ignored, as identify) or an anonymous id nobody has (`NotFound`, as the
    /// code: an anonymous id cannot create a person).
    fn resolve_or_create(&mut self, who: &Ident, now: i64) -> Result<Result<u32, Out>, Refusal> {
        let norm = normalize(who.kind, &who.value)?;
        if let Some(pid) = self.find(who.kind, &norm) {
            return Ok(Ok(pid));
        }
        if who.kind == IdentKind::AnonymousId {
            return Ok(Err(Out::NotFound));
        }
        Ok(match self.identify(who, &[], false, None, now)? {
            Out::Created(p) | Out::Updated(p) | Out::Unchanged(p) => Ok(p),
            other => Err(other),
        })
    }

    /// Creates the object, empty, if it does not exist ("relating to an object that does
    /// not exist yet creates it").
    fn ensure_object(&mut self, key: &ObjKey, now: i64) {
        if !self.objects.contains_key(key) {
            self.objects.insert(
                key.clone(),
                MObject {
                    attrs: Map::new(),
                    created: now,
                    updated: now,
                },
            );
            self.types.insert(key.0);
        }
    }

    /// Moves the events and relationships kept for `anon` to `pid` (model doc 1.3): an
    /// event whose id the person already has is dropped; a relationship to an object the
    /// person is already related to is dropped, the person's own kept (open in the docs;
    /// as the code). Each relationship moved gets an `add_relationship` activity (data
    /// `null`), then one `anon_merge` names the anonymous id and what moved, if anything
    /// did (the shapes as the code).
    fn merge_anonymous(&mut self, pid: u32, anon: &str, now: i64) {
        let Some(kept) = self.anon.remove(anon) else {
            return;
        };
        let mut events = kept.events;
        events.sort_by_key(|e| (e.act.timestamp, e.seq));
        let mut moved = 0i64;
        let mut added = Vec::new();
        {
            let p = self.people.get_mut(&pid).unwrap();
            for e in events {
                if e.event_id.as_deref().is_some_and(|id| p.has_event_id(id)) {
                    continue;
                }
                p.acts.push(e);
                moved += 1;
            }
            for (key, attrs) in kept.relationships {
                if let std::collections::btree_map::Entry::Vacant(slot) =
                    p.relationships.entry(key.clone())
                {
                    slot.insert(attrs);
                    added.push(key);
                }
            }
        }
        for key in &added {
            self.record(
                pid,
                kinds::ADD_RELATIONSHIP,
                Some(obj_name(key)),
                now,
                Value::Null,
            );
        }
        if moved > 0 || !added.is_empty() {
            let mut data = Map::new();
            data.insert("anonymous_id".into(), Value::from(anon));
            data.insert("events".into(), Value::Int(moved));
            data.insert("relationships".into(), Value::Int(added.len() as i64));
            self.record(pid, kinds::ANON_MERGE, None, now, Value::Map(data));
        }
    }

    /// Track: an event, page view or screen view (`src/activity.rs`, model doc 3.1).
    #[allow(clippy::too_many_arguments)]
    fn track(
        &mut self,
        who: &Ident,
        kind: TrackKind,
        name: &str,
        event_id: Option<&str>,
        ts: Option<i64>,
        props: &[(String, Value)],
        now: i64,
    ) -> Result<Out, Refusal> {
        let name = name.trim();
        if name.is_empty() || name.len() > 100 {
            return Err(Refusal::Input);
        }
        if event_id.is_some_and(|id| id.is_empty() || id.len() > 150) {
            return Err(Refusal::Input);
        }
        let mut data = Map::new();
        for (k, v) in props {
            data.insert(k.clone(), v.clone());
        }
        if !data.values().all(finite) {
            return Err(Refusal::Input);
        }
        let timestamp = ts.unwrap_or(now);
        let kind_name = match kind {
            TrackKind::Event => kinds::EVENT,
            TrackKind::Page => kinds::PAGE,
            TrackKind::Screen => kinds::SCREEN,
        };
        let pid = if who.kind == IdentKind::AnonymousId {
            let norm = normalize(who.kind, &who.value)?;
            match self.find(IdentKind::AnonymousId, &norm) {
                Some(pid) => pid,
                None => {
                    // Kept apart, not a person; the same id twice for the same anonymous
                    // id is stored once. (Tracking by a suppressed anonymous id is not
                    // refused: the docs suppress id, email and phone; as the code.)
                    let dup = self.anon.get(&norm).is_some_and(|a| {
                        a.events
                            .iter()
                            .any(|e| e.event_id.is_some() && e.event_id.as_deref() == event_id)
                    });
                    if dup {
                        return Ok(Out::Duplicate);
                    }
                    let mut e = self.entry(
                        kind_name,
                        Some(name.to_owned()),
                        timestamp,
                        Value::Map(data),
                    );
                    e.event_id = event_id.map(str::to_owned);
                    e.moves = true;
                    self.anon.entry(norm).or_default().events.push(e);
                    return Ok(Out::Recorded(None));
                }
            }
        } else {
            match self.resolve_or_create(who, now)? {
                Ok(pid) => pid,
                Err(out) => return Ok(out),
            }
        };
        if event_id.is_some_and(|id| self.people[&pid].has_event_id(id)) {
            return Ok(Out::Duplicate);
        }
        let mut e = self.entry(
            kind_name,
            Some(name.to_owned()),
            timestamp,
            Value::Map(data),
        );
        e.event_id = event_id.map(str::to_owned);
        e.moves = true;
        self.people.get_mut(&pid).unwrap().acts.push(e);
        Ok(Out::Recorded(Some(pid)))
    }

    /// Add device: an upsert keyed by token (`src/devices.rs`, model doc 5).
    fn add_device(
        &mut self,
        who: &Ident,
        token: &str,
        platform: Platform,
        last_used: Option<i64>,
        attrs: &[(String, Value)],
        now: i64,
    ) -> Result<Out, Refusal> {
        check_token(token)?;
        let mut changes = Vec::new();
        for (name, value) in attrs {
            if name.is_empty() || name == "_last_status" {
                return Err(Refusal::Input);
            }
            if is_removal(value) {
                changes.push((name.clone(), None));
                continue;
            }
            if !finite(value) {
                return Err(Refusal::Input);
            }
            // push_enabled is the string "true"/"false" (model doc 5); booleans are taken
            // and stored as those strings (as the code).
            let value = match (name.as_str(), value) {
                ("push_enabled", Value::Bool(b)) => Value::from(if *b { "true" } else { "false" }),
                _ => value.clone(),
            };
            changes.push((name.clone(), Some(value)));
        }
        let pid = match self.resolve_or_create(who, now)? {
            Ok(pid) => pid,
            Err(out) => return Ok(out),
        };
        let owner = self.device_owner(token);
        let existing = if owner == Some(pid) {
            self.people[&pid].devices.get(token).cloned()
        } else {
            None
        };
        // One more device than the cap is refused.
        if existing.is_none() && self.people[&pid].devices.len() >= MAX_DEVICES {
            return Err(Refusal::Input);
        }
        // The token moves: the previous owner loses the device. (What the device keeps
        // when it moves is open in the docs: as the code, it starts afresh, as added.)
        if let Some(previous) = owner.filter(|p| *p != pid) {
            let old = self
                .people
                .get_mut(&previous)
                .unwrap()
                .devices
                .remove(token)
                .unwrap();
            self.record(
                previous,
                kinds::DEVICE_CHANGE,
                None,
                now,
                device_data("moved", token, old.platform),
            );
        }
        let update = existing.is_some();
        let mut device = existing.unwrap_or(MDevice {
            platform,
            last_used: now,
            status: DeviceStatus::Unused,
            attrs: Map::new(),
        });
        let before = device.clone();
        device.platform = platform;
        device.last_used = last_used.unwrap_or(now);
        if matches!(
            device.status,
            DeviceStatus::Bounced | DeviceStatus::Suppressed
        ) {
            device.status = DeviceStatus::Unused;
        }
        for (name, value) in changes {
            match value {
                Some(v) => device.attrs.insert(name, v),
                None => device.attrs.remove(&name),
            };
        }
        // The same device again, as it is: nothing to record (open in the docs; as the
        // code).
        if update && device == before {
            return Ok(Out::Unchanged(pid));
        }
        self.people
            .get_mut(&pid)
            .unwrap()
            .devices
            .insert(token.to_owned(), device);
        let action = if update { "update" } else { "add" };
        self.record(
            pid,
            kinds::DEVICE_CHANGE,
            None,
            now,
            device_data(action, token, platform),
        );
        Ok(Out::Updated(pid))
    }

    fn delete_device(&mut self, who: &Ident, token: &str, now: i64) -> Result<Out, Refusal> {
        check_token(token)?;
        let norm = normalize(who.kind, &who.value)?;
        let Some(pid) = self.find(who.kind, &norm) else {
            return Ok(Out::NotFound);
        };
        let Some(old) = self.people.get_mut(&pid).unwrap().devices.remove(token) else {
            return Ok(Out::NotFound);
        };
        self.record(
            pid,
            kinds::DEVICE_CHANGE,
            None,
            now,
            device_data("delete", token, old.platform),
        );
        Ok(Out::Updated(pid))
    }

    /// unused → sent when a push is accepted; bounced after one failed push; suppressed
    /// after two bounces in a row; a later accepted push is sent again. No activity.
    fn push_result(&mut self, token: &str, result: PushResult) -> Result<Out, Refusal> {
        check_token(token)?;
        let Some(pid) = self.device_owner(token) else {
            return Ok(Out::NotFound);
        };
        let device = self
            .people
            .get_mut(&pid)
            .unwrap()
            .devices
            .get_mut(token)
            .unwrap();
        let next = match (result, device.status) {
            (PushResult::Sent, _) => DeviceStatus::Sent,
            (PushResult::Bounced, DeviceStatus::Bounced | DeviceStatus::Suppressed) => {
                DeviceStatus::Suppressed
            }
            (PushResult::Bounced, _) => DeviceStatus::Bounced,
        };
        if device.status == next {
            return Ok(Out::Unchanged(pid));
        }
        device.status = next;
        Ok(Out::Updated(pid))
    }

    fn add_delivery(
        &mut self,
        who: &Ident,
        id: &str,
        channel: Channel,
        created: Option<i64>,
        campaign_id: Option<&String>,
        now: i64,
    ) -> Result<Out, Refusal> {
        if id.is_empty() || id.len() > 256 {
            return Err(Refusal::Input);
        }
        // Recorded once under its id: the same id again is refused.
        if self.delivery_owner(id).is_some() {
            return Err(Refusal::Input);
        }
        let pid = match self.resolve_or_create(who, now)? {
            Ok(pid) => pid,
            Err(out) => return Ok(out),
        };
        self.people.get_mut(&pid).unwrap().deliveries.insert(
            id.to_owned(),
            MDelivery {
                channel,
                campaign_id: campaign_id.cloned(),
                created: created.unwrap_or(now),
                metrics: Vec::new(),
            },
        );
        Ok(Out::Recorded(Some(pid)))
    }

    fn metric(
        &mut self,
        id: &str,
        metric: &str,
        ts: Option<i64>,
        href: Option<&String>,
        reason: Option<&String>,
        now: i64,
    ) -> Result<Out, Refusal> {
        if id.is_empty() || id.len() > 256 {
            return Err(Refusal::Input);
        }
        let Some(pid) = self.delivery_owner(id) else {
            return Ok(Out::NotFound);
        };
        let d = self
            .people
            .get_mut(&pid)
            .unwrap()
            .deliveries
            .get_mut(id)
            .unwrap();
        if !channel_metrics(d.channel).contains(&metric) {
            return Err(Refusal::Input);
        }
        let at = ts.unwrap_or(now);
        if !d.metrics.iter().any(|(m, _)| m == metric) {
            d.metrics.push((metric.to_owned(), at));
        }
        // Every report lands in the timeline at its own time ("at the metric's time";
        // a repeated report is recorded again: open in the docs, as the code).
        let kind = format!("{metric}_{}", channel_activity_name(d.channel));
        let mut data = Map::new();
        data.insert("delivery_id".into(), Value::from(id));
        if let Some(href) = href {
            data.insert("href".into(), Value::from(href.as_str()));
        }
        if let Some(reason) = reason {
            data.insert("reason".into(), Value::from(reason.as_str()));
        }
        let mut e = self.entry(&kind, None, at, Value::Map(data));
        e.moves = true;
        self.people.get_mut(&pid).unwrap().acts.push(e);
        Ok(Out::Recorded(Some(pid)))
    }

    fn identify_object(
        &mut self,
        object: &ObjectRef,
        attrs: &[(String, Value)],
        now: i64,
    ) -> Result<Out, Refusal> {
        let key = check_object(object)?;
        let created = !self.objects.contains_key(&key);
        let mut obj = self.objects.get(&key).cloned().unwrap_or(MObject {
            attrs: Map::new(),
            created: now,
            updated: now,
        });
        let changes = patch(&mut obj.attrs, attrs)?;
        if !created && changes.is_empty() {
            return Ok(Out::NoChange);
        }
        obj.updated = now;
        self.objects.insert(key, obj);
        self.types.insert(object.type_id);
        Ok(Out::Recorded(None))
    }

    fn add_relationship(
        &mut self,
        who: &Ident,
        object: &ObjectRef,
        attrs: &[(String, Value)],
        now: i64,
    ) -> Result<Out, Refusal> {
        let key = check_object(object)?;
        if who.kind == IdentKind::AnonymousId {
            let norm = normalize(who.kind, &who.value)?;
            if self.find(IdentKind::AnonymousId, &norm).is_none() {
                // Kept for the anonymous id until a person gets it.
                let mut rel = self
                    .anon
                    .get(&norm)
                    .and_then(|a| a.relationships.get(&key))
                    .cloned()
                    .unwrap_or_default();
                patch(&mut rel, attrs)?;
                self.ensure_object(&key, now);
                self.anon
                    .entry(norm)
                    .or_default()
                    .relationships
                    .insert(key, rel);
                return Ok(Out::Recorded(None));
            }
        }
        // (An unknown cio_id is ignored before the attributes are checked: open in the
        // docs; as the code.)
        let pid = match self.resolve_or_create(who, now)? {
            Ok(pid) => pid,
            Err(out) => return Ok(out),
        };
        let existing = self.people[&pid].relationships.get(&key).cloned();
        let is_new = existing.is_none();
        let mut rel = existing.unwrap_or_default();
        let changes = patch(&mut rel, attrs)?;
        self.ensure_object(&key, now);
        if !is_new && changes.is_empty() {
            return Ok(Out::Unchanged(pid));
        }
        self.people
            .get_mut(&pid)
            .unwrap()
            .relationships
            .insert(key.clone(), rel);
        // The activity's data: the attribute changes (`null` for none), as the code.
        if is_new {
            let data = if changes.is_empty() {
                Value::Null
            } else {
                Value::Map(changes)
            };
            self.record(
                pid,
                kinds::ADD_RELATIONSHIP,
                Some(obj_name(&key)),
                now,
                data,
            );
        } else {
            self.record(
                pid,
                kinds::RELATIONSHIP_ATTRIBUTE_CHANGE,
                Some(obj_name(&key)),
                now,
                Value::Map(changes),
            );
        }
        Ok(Out::Updated(pid))
    }

    fn delete_relationship(
        &mut self,
        who: &Ident,
        object: &ObjectRef,
        now: i64,
    ) -> Result<Out, Refusal> {
        let key = check_object(object)?;
        let norm = normalize(who.kind, &who.value)?;
        let Some(pid) = self.find(who.kind, &norm) else {
            if who.kind == IdentKind::AnonymousId {
                if let Some(a) = self.anon.get_mut(&norm) {
                    if a.relationships.remove(&key).is_some() {
                        return Ok(Out::Recorded(None));
                    }
                }
            }
            return Ok(Out::NotFound);
        };
        if self
            .people
            .get_mut(&pid)
            .unwrap()
            .relationships
            .remove(&key)
            .is_none()
        {
            return Ok(Out::NotFound);
        }
        self.record(
            pid,
            kinds::DELETE_RELATIONSHIP,
            Some(obj_name(&key)),
            now,
            Value::Null,
        );
        Ok(Out::Updated(pid))
    }

    /// Deleting an object removes every relationship to it: each person's (with a
    /// `delete_relationship` activity) and those kept for anonymous ids.
    fn delete_object(&mut self, object: &ObjectRef, now: i64) -> Result<Out, Refusal> {
        let key = check_object(object)?;
        let existed = self.objects.remove(&key).is_some();
        let members: Vec<u32> = self
            .people
            .iter()
            .filter(|(_, p)| p.relationships.contains_key(&key))
            .map(|(pid, _)| *pid)
            .collect();
        for pid in &members {
            self.people.get_mut(pid).unwrap().relationships.remove(&key);
            self.record(
                *pid,
                kinds::DELETE_RELATIONSHIP,
                Some(obj_name(&key)),
                now,
                Value::Null,
            );
        }
        for kept in self.anon.values_mut() {
            kept.relationships.remove(&key);
        }
        Ok(if existed || !members.is_empty() {
            Out::Recorded(None)
        } else {
            Out::NotFound
        })
    }

    /// Merge (`src/merge.rs`, model doc 1.5).
    fn merge(&mut self, primary: &Ident, secondary: &Ident, now: i64) -> Result<Out, Refusal> {
        let pnorm = normalize(primary.kind, &primary.value)?;
        let snorm = normalize(secondary.kind, &secondary.value)?;
        let Some(p) = self.find(primary.kind, &pnorm) else {
            return Ok(Out::Ignored(IgnoreReason::NoMatch));
        };
        let Some(s) = self.find(secondary.kind, &snorm) else {
            return Ok(Out::NotFound);
        };
        if p == s {
            return Err(Refusal::Input);
        }
        let sec = self.people.remove(&s).unwrap();
        let mut pri = self.people.remove(&p).unwrap();

        // Attributes the primary lacks or has empty, with their set-times. (An empty
        // value of the secondary is not inherited, and the primary's record of
        // `_timestamp` orderings stays its own: open in the docs; as the code.)
        let mut inherited = Map::new();
        for (name, value) in &sec.attrs {
            if pri.attrs.get(name).is_none_or(is_empty_value) && !is_empty_value(value) {
                pri.attrs.insert(name.clone(), value.clone());
                if let Some(t) = sec.timestamps.get(name) {
                    pri.timestamps.insert(name.clone(), *t);
                }
                inherited.insert(name.clone(), value.clone());
            }
        }
        // The primary's attributes changed: the person changed.
        if !inherited.is_empty() {
            pri.updated = now;
        }

        // Events, page and screen views and delivery-metric activity move (an event id
        // the primary already has is dropped); the rest goes with the secondary.
        let mut acts: Vec<Entry> = sec.acts.iter().filter(|e| e.moves).cloned().collect();
        acts.sort_by_key(|e| (e.act.timestamp, e.seq));
        let mut events = 0i64;
        for e in acts {
            if e.event_id.as_deref().is_some_and(|id| pri.has_event_id(id)) {
                continue;
            }
            pri.acts.push(e);
            events += 1;
        }
        // Deliveries and devices move (devices even past the cap).
        let deliveries = sec.deliveries.len() as i64;
        pri.deliveries.extend(sec.deliveries);
        let devices = sec.devices.len() as i64;
        pri.devices.extend(sec.devices);
        // Relationships the primary lacks move; the primary keeps its own.
        let mut relationships = 0i64;
        for (key, attrs) in sec.relationships {
            if let std::collections::btree_map::Entry::Vacant(slot) = pri.relationships.entry(key) {
                slot.insert(attrs);
                relationships += 1;
            }
        }
        // `profile_merge` names the secondary; what else it holds is open in the docs
        // (as the code: what was inherited and how much moved).
        let mut named = Map::new();
        named.insert("cio_id".into(), Value::from(PersonId(s).cio_id()));
        if let Some(id) = &sec.id {
            named.insert("id".into(), Value::from(id.as_str()));
        }
        if let Some(email) = &sec.email {
            named.insert("email".into(), Value::from(email.as_str()));
        }
        let mut data = Map::new();
        data.insert("secondary".into(), Value::Map(named));
        data.insert("attributes".into(), Value::Map(inherited));
        data.insert("events".into(), Value::Int(events));
        data.insert("deliveries".into(), Value::Int(deliveries));
        data.insert("devices".into(), Value::Int(devices));
        data.insert("relationships".into(), Value::Int(relationships));
        let e = self.entry(kinds::PROFILE_MERGE, None, now, Value::Map(data));
        pri.acts.push(e);
        self.people.insert(p, pri);
        Ok(Out::Merged {
            primary: p,
            secondary: s,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Running a case

fn open(dir: &Path, clock: &ManualClock, allow_email_update_by_id: bool) -> ProfileDb {
    ProfileDb::builder()
        .clock(Arc::new(clock.clone()))
        .durability(Durability::Buffered)
        .allow_email_update_by_id(allow_email_update_by_id)
        .limits(Limits {
            max_devices: MAX_DEVICES,
            ..Limits::default()
        })
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
    for anon in anon_pool() {
        out.push(Ident::anonymous_id(anon));
    }
    for i in 1..3 {
        out.push(Ident::phone(format!("+1555000{i}")));
    }
    out
}

fn anon_pool() -> Vec<String> {
    let mut out: Vec<String> = (0..3).map(|i| format!("a{i}")).collect();
    out.push("3".into());
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

    let relationships_of = |p: &MPerson| -> Vec<Relationship> {
        p.relationships
            .iter()
            .map(|(key, attrs)| Relationship {
                object: ObjectRef::new(key.0, key.1.clone()),
                object_attributes: model
                    .objects
                    .get(key)
                    .map(|o| o.attrs.clone())
                    .unwrap_or_default(),
                attributes: attrs.clone(),
            })
            .collect()
    };
    for (pid, p) in &model.people {
        let who = Ident::cio_id(PersonId(*pid).cio_id());
        // The timeline, oldest first.
        let want_acts = in_order(&p.acts);
        let got: Vec<MAct> = db
            .activities(&who, &ActivityFilter::new(1000))
            .unwrap()
            .into_iter()
            .rev()
            .map(MAct::of)
            .collect();
        prop_assert_eq!(
            &got,
            &want_acts,
            "step {}: activities of person {}",
            step,
            pid
        );
        // Devices, by token.
        let want_devices: Vec<Device> = p
            .devices
            .iter()
            .map(|(token, d)| Device {
                token: token.clone(),
                platform: d.platform,
                last_used: d.last_used,
                status: d.status,
                attributes: d.attrs.clone(),
            })
            .collect();
        prop_assert_eq!(
            &db.devices(&who).unwrap(),
            &want_devices,
            "step {}: devices of person {}",
            step,
            pid
        );
        // Deliveries, newest first by created time (for one created time, by id
        // descending: open in the docs; as the code).
        let mut want_deliveries: Vec<Delivery> = p
            .deliveries
            .iter()
            .map(|(id, d)| d.to_delivery(id))
            .collect();
        want_deliveries.sort_by(|a, b| (b.created, &b.id).cmp(&(a.created, &a.id)));
        prop_assert_eq!(
            &db.deliveries(&who, 1000).unwrap(),
            &want_deliveries,
            "step {}: deliveries of person {}",
            step,
            pid
        );
        // Relationships, by object.
        let want_relationships = relationships_of(p);
        prop_assert_eq!(
            &db.relationships(&who).unwrap(),
            &want_relationships,
            "step {}: relationships of person {}",
            step,
            pid
        );
        // Event counts: whole, and in a window.
        for kind in [TrackKind::Event, TrackKind::Page, TrackKind::Screen] {
            for name in EVENT_NAMES {
                prop_assert_eq!(
                    db.event_count(&who, kind, name, None, None).unwrap(),
                    p.event_count(kind, name, i64::MIN, i64::MAX),
                    "step {}: event_count({:?}, {}) of person {}",
                    step,
                    kind,
                    name,
                    pid
                );
            }
        }
        let (since, until) = (T0 + 3, T0 + 10);
        prop_assert_eq!(
            db.event_count(&who, TrackKind::Event, "buy", Some(since), Some(until))
                .unwrap(),
            p.event_count(TrackKind::Event, "buy", since, until),
            "step {}: event_count in a window of person {}",
            step,
            pid
        );
        // The overview.
        let profile = db.profile(&who, RECENT).unwrap().unwrap();
        prop_assert_eq!(
            &profile.person,
            &p.to_person(*pid),
            "step {}: profile",
            step
        );
        prop_assert_eq!(
            profile.subscription.unsubscribed,
            p.attrs.get("unsubscribed").is_some_and(truthy),
            "step {}: profile subscription of person {}",
            step,
            pid
        );
        prop_assert!(profile.subscription.topics.is_empty());
        let recent_acts: Vec<MAct> = profile.activities.into_iter().map(MAct::of).collect();
        let want_recent: Vec<MAct> = want_acts.iter().rev().take(RECENT).cloned().collect();
        prop_assert_eq!(
            recent_acts,
            want_recent,
            "step {}: profile activities of person {}",
            step,
            pid
        );
        let want_recent: Vec<Delivery> = want_deliveries.into_iter().take(RECENT).collect();
        prop_assert_eq!(
            profile.deliveries,
            want_recent,
            "step {}: profile deliveries of person {}",
            step,
            pid
        );
        prop_assert!(profile.segments.is_empty());
        prop_assert_eq!(
            profile.devices,
            want_devices,
            "step {}: profile devices of person {}",
            step,
            pid
        );
        prop_assert_eq!(
            profile.relationships,
            want_relationships,
            "step {}: profile relationships of person {}",
            step,
            pid
        );
    }

    for token in TOKENS {
        prop_assert_eq!(
            db.device_owner(token).unwrap(),
            model.device_owner(token).map(PersonId),
            "step {}: device_owner({})",
            step,
            token
        );
    }
    for id in DELIVERY_IDS {
        let want = model.delivery_owner(id).map(|pid| {
            (
                PersonId(pid),
                model.people[&pid].deliveries[id].to_delivery(id),
            )
        });
        prop_assert_eq!(
            db.delivery(id).unwrap(),
            want,
            "step {}: delivery({})",
            step,
            id
        );
    }
    for anon in anon_pool() {
        let got: Vec<MAct> = db
            .anonymous_events(&anon, 1000)
            .unwrap()
            .into_iter()
            .rev()
            .map(MAct::of)
            .collect();
        let want = model
            .anon
            .get(&anon)
            .map(|a| in_order(&a.events))
            .unwrap_or_default();
        prop_assert_eq!(got, want, "step {}: anonymous_events({})", step, anon);
    }
    for (type_id, object_id) in OBJECTS {
        let object = ObjectRef::new(type_id, object_id);
        let key = (type_id, object_id.to_owned());
        let want = model.objects.get(&key).map(|o| Object {
            object: object.clone(),
            attributes: o.attrs.clone(),
            created: o.created,
            updated: o.updated,
        });
        prop_assert_eq!(
            db.object(&object).unwrap(),
            want,
            "step {}: object({})",
            step,
            object
        );
        let want: Vec<(PersonId, Map)> = model
            .people
            .iter()
            .filter_map(|(pid, p)| Some((PersonId(*pid), p.relationships.get(&key)?.clone())))
            .collect();
        prop_assert_eq!(
            db.object_people(&object).unwrap(),
            want,
            "step {}: object_people({})",
            step,
            object
        );
    }
    let want: Vec<(u32, String)> = model.types.iter().map(|t| (*t, String::new())).collect();
    prop_assert_eq!(
        db.object_types().unwrap(),
        want,
        "step {}: object_types",
        step
    );
    Ok(())
}

impl Model {
    fn apply(&mut self, w: &Write, now: i64) -> Result<Out, Refusal> {
        let at = |delta: &Option<i64>| delta.map(|d| now + d);
        match w {
            Write::Identify {
                addr,
                body,
                update_only,
                ts_delta,
            } => self.identify(addr, body, *update_only, at(ts_delta), now),
            Write::Delete(ident) => self.delete(ident),
            Write::Suppress(ident) => self.suppress(ident),
            Write::Unsuppress(ident) => self.unsuppress(ident),
            Write::Track {
                who,
                kind,
                name,
                event_id,
                ts_delta,
                props,
            } => self.track(
                who,
                *kind,
                name,
                event_id.as_deref(),
                at(ts_delta),
                props,
                now,
            ),
            Write::AddDevice {
                who,
                token,
                platform,
                last_used_delta,
                attrs,
            } => self.add_device(who, token, *platform, at(last_used_delta), attrs, now),
            Write::DeleteDevice { who, token } => self.delete_device(who, token, now),
            Write::PushResult { token, result } => self.push_result(token, *result),
            Write::AddDelivery {
                who,
                id,
                channel,
                created_delta,
                campaign_id,
            } => self.add_delivery(
                who,
                id,
                *channel,
                at(created_delta),
                campaign_id.as_ref(),
                now,
            ),
            Write::Metric {
                id,
                metric,
                ts_delta,
                href,
                reason,
            } => self.metric(
                id,
                metric,
                at(ts_delta),
                href.as_ref(),
                reason.as_ref(),
                now,
            ),
            Write::IdentifyObject { object, attrs } => self.identify_object(object, attrs, now),
            Write::AddRelationship { who, object, attrs } => {
                self.add_relationship(who, object, attrs, now)
            }
            Write::DeleteRelationship { who, object } => self.delete_relationship(who, object, now),
            Write::DeleteObject(object) => self.delete_object(object, now),
            Write::Merge { primary, secondary } => self.merge(primary, secondary, now),
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
        Write::Track {
            who,
            kind,
            name,
            event_id,
            ts_delta,
            props,
        } => {
            let mut t = Track::new(who.clone(), *kind, name.clone());
            for (k, v) in props {
                t = t.property(k.clone(), v.clone());
            }
            if let Some(d) = ts_delta {
                t = t.timestamp(now + d);
            }
            if let Some(id) = event_id {
                t = t.id(id.clone());
            }
            Op::Track(t)
        }
        Write::AddDevice {
            who,
            token,
            platform,
            last_used_delta,
            attrs,
        } => {
            let mut device = DeviceInput::new(token.clone(), *platform);
            if let Some(d) = last_used_delta {
                device = device.last_used(now + d);
            }
            for (k, v) in attrs {
                device = device.attribute(k.clone(), v.clone());
            }
            Op::AddDevice {
                person: who.clone(),
                device,
            }
        }
        Write::DeleteDevice { who, token } => Op::DeleteDevice {
            person: who.clone(),
            token: token.clone(),
        },
        Write::PushResult { token, result } => Op::PushResult {
            token: token.clone(),
            result: *result,
        },
        Write::AddDelivery {
            who,
            id,
            channel,
            created_delta,
            campaign_id,
        } => {
            let mut delivery = NewDelivery::new(id.clone(), *channel);
            if let Some(d) = created_delta {
                delivery = delivery.created(now + d);
            }
            if let Some(c) = campaign_id {
                delivery = delivery.campaign_id(c.clone());
            }
            Op::AddDelivery {
                person: who.clone(),
                delivery,
            }
        }
        Write::Metric {
            id,
            metric,
            ts_delta,
            href,
            reason,
        } => {
            let mut m = Metric::new(id.clone(), metric.clone());
            if let Some(d) = ts_delta {
                m = m.timestamp(now + d);
            }
            if let Some(h) = href {
                m = m.href(h.clone());
            }
            if let Some(r) = reason {
                m = m.reason(r.clone());
            }
            Op::Metric(m)
        }
        Write::IdentifyObject { object, attrs } => Op::IdentifyObject {
            object: object.clone(),
            attributes: attrs.clone(),
        },
        Write::AddRelationship { who, object, attrs } => Op::AddRelationship {
            person: who.clone(),
            object: object.clone(),
            attributes: attrs.clone(),
        },
        Write::DeleteRelationship { who, object } => Op::DeleteRelationship {
            person: who.clone(),
            object: object.clone(),
        },
        Write::DeleteObject(object) => Op::DeleteObject(object.clone()),
        Write::Merge { primary, secondary } => Op::Merge {
            primary: primary.clone(),
            secondary: secondary.clone(),
        },
    }
}

/// Runs one write on the database through its own method.
fn db_apply(db: &ProfileDb, w: &Write, now: i64) -> Result<Outcome, Error> {
    match to_op(w, now) {
        Op::Identify(op) => db.identify(op),
        Op::Delete(ident) => db.delete(&ident),
        Op::Suppress(ident) => db.suppress(&ident),
        Op::Unsuppress(ident) => db.unsuppress(&ident),
        Op::Track(t) => db.track(t),
        Op::AddDevice { person, device } => db.add_device(&person, device),
        Op::DeleteDevice { person, token } => db.delete_device(&person, &token),
        Op::PushResult { token, result } => db.push_result(&token, result),
        Op::AddDelivery { person, delivery } => db.add_delivery(&person, delivery),
        Op::Metric(m) => db.report_metric(m),
        Op::IdentifyObject { object, attributes } => db.identify_object(&object, attributes),
        Op::AddRelationship {
            person,
            object,
            attributes,
        } => db.add_relationship(&person, &object, attributes),
        Op::DeleteRelationship { person, object } => db.delete_relationship(&person, &object),
        Op::DeleteObject(object) => db.delete_object(&object),
        Op::Merge { primary, secondary } => db.merge(&primary, &secondary),
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
                // A refused write leaves everything as it was.
                let mut staged = model.clone();
                let want = staged.apply(w, now);
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
                if want.is_ok() {
                    model = staged;
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
        cases: 192,
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
