//! The shared workload, in a shape both engines can read.
//!
//! `profiledb::Op` keeps its fields private, so the SQLite peer cannot read the
//! operations `profiledb::synth` produces. [`synth_person`] is a field-by-field mirror of
//! `synth::person_ops` as plain data ([`Work`]); [`Batches`] checks, for every person it
//! hands out, that the mirror converted back into `Op`s equals what `synth::person_ops`
//! returns. So both engines are fed the same seeded operations, by construction and by
//! assertion.

use profiledb::{
    synth, Channel, DeviceInput, Ident, Identify, Metric, NewDelivery, ObjectRef, Op, Platform,
    Track,
};

/// A value of an attribute or event property, as the synthetic workload uses them.
#[derive(Debug, Clone, PartialEq)]
pub enum V {
    S(String),
    I(i64),
    B(bool),
}

impl V {
    pub fn to_value(&self) -> profiledb::Value {
        match self {
            V::S(s) => s.as_str().into(),
            V::I(i) => (*i).into(),
            V::B(b) => (*b).into(),
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            V::S(s) => serde_json::Value::from(s.as_str()),
            V::I(i) => serde_json::Value::from(*i),
            V::B(b) => serde_json::Value::from(*b),
        }
    }
}

/// One operation of the workload, as plain data.
#[derive(Debug, Clone, PartialEq)]
pub enum Work {
    /// Identify the person with `id`, setting attributes (dotted names nest).
    Identify { id: String, attrs: Vec<(String, V)> },
    /// An event by the person with `id`.
    Event {
        id: String,
        name: String,
        props: Vec<(String, V)>,
        ts: i64,
    },
    /// A device of the person with `id`.
    Device {
        id: String,
        token: String,
        platform: Platform,
        last_used: i64,
    },
    /// A relationship of the person with `id` to an object.
    Relate {
        id: String,
        type_id: u32,
        object_id: String,
        attrs: Vec<(String, V)>,
    },
    /// An email delivery to the person with `id`.
    Delivery {
        id: String,
        delivery_id: String,
        subject: String,
        created: i64,
    },
    /// A metric reported against a delivery.
    Metric {
        delivery_id: String,
        metric: String,
        ts: i64,
    },
}

impl Work {
    /// The profiledb operation that does this.
    pub fn to_op(&self) -> Op {
        match self {
            Work::Identify { id, attrs } => {
                let mut op = Identify::new(Ident::id(id.clone()));
                for (k, v) in attrs {
                    op = op.set(k.clone(), v.to_value());
                }
                Op::Identify(op)
            }
            Work::Event {
                id,
                name,
                props,
                ts,
            } => {
                let mut t = Track::event(Ident::id(id.clone()), name.clone());
                for (k, v) in props {
                    t = t.property(k.clone(), v.to_value());
                }
                Op::Track(t.timestamp(*ts))
            }
            Work::Device {
                id,
                token,
                platform,
                last_used,
            } => Op::AddDevice {
                person: Ident::id(id.clone()),
                device: DeviceInput::new(token.clone(), *platform).last_used(*last_used),
            },
            Work::Relate {
                id,
                type_id,
                object_id,
                attrs,
            } => Op::AddRelationship {
                person: Ident::id(id.clone()),
                object: ObjectRef::new(*type_id, object_id.clone()),
                attributes: attrs
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_value()))
                    .collect(),
            },
            Work::Delivery {
                id,
                delivery_id,
                subject,
                created,
            } => Op::AddDelivery {
                person: Ident::id(id.clone()),
                delivery: NewDelivery::new(delivery_id.clone(), Channel::Email)
                    .subject(subject.clone())
                    .created(*created),
            },
            Work::Metric {
                delivery_id,
                metric,
                ts,
            } => Op::Metric(Metric::new(delivery_id.clone(), metric.clone()).timestamp(*ts)),
        }
    }
}

const PLANS: [&str; 4] = ["free", "starter", "pro", "enterprise"];
const COUNTRIES: [&str; 8] = ["PT", "NO", "NG", "PE", "JP", "US", "IN", "EE"];

fn pick(xs: &[&str], h: u64) -> String {
    xs.get((h % xs.len() as u64) as usize)
        .copied()
        .unwrap_or_default()
        .to_owned()
}

/// `synth::person_ops(n, seed, now)`, field by field, as [`Work`].
pub fn synth_person(n: u64, seed: u64, now: i64) -> Vec<Work> {
    let h = synth::mix(seed ^ n);
    let id = synth::person_id(n);
    let mut attrs = vec![
        ("email".to_owned(), V::S(format!("user{n}@example.com"))),
        ("plan".to_owned(), V::S(pick(&PLANS, h))),
        ("country".to_owned(), V::S(pick(&COUNTRIES, h >> 8))),
        ("age".to_owned(), V::I(18 + ((h >> 16) % 60) as i64)),
        (
            "created_at".to_owned(),
            V::I(now - ((h >> 24) % (365 * 86_400)) as i64),
        ),
        ("score".to_owned(), V::I(((h >> 32) % 1000) as i64)),
    ];
    if (h >> 40) % 20 == 0 {
        attrs.push(("unsubscribed".to_owned(), V::B(true)));
    }
    for t in 1..=10u64 {
        let b = synth::mix(h ^ t);
        let name = format!("cio_subscription_preferences.topics.topic_{t}");
        match b % 4 {
            0 => attrs.push((name, V::B(true))),
            1 => attrs.push((name, V::B(false))),
            _ => {}
        }
    }
    let mut out = vec![Work::Identify {
        id: id.clone(),
        attrs,
    }];
    for e in 0..(h >> 44) % 4 {
        let eh = synth::mix(h ^ (e + 100));
        let name = if eh % 3 == 0 { "login" } else { "purchase" };
        out.push(Work::Event {
            id: id.clone(),
            name: name.to_owned(),
            props: vec![("amount".to_owned(), V::I(((eh >> 8) % 200) as i64))],
            ts: now - ((eh >> 16) % (30 * 86_400)) as i64,
        });
    }
    if (h >> 50) % 2 == 0 {
        out.push(Work::Device {
            id: id.clone(),
            token: format!("tok-{n}"),
            platform: if (h >> 51) % 2 == 0 {
                Platform::Ios
            } else {
                Platform::Android
            },
            last_used: now - ((h >> 52) % (14 * 86_400)) as i64,
        });
    }
    if (h >> 56) % 3 == 0 {
        out.push(Work::Relate {
            id,
            type_id: 1,
            object_id: format!("company-{}", (h >> 58) % 100),
            attrs: Vec::new(),
        });
    }
    out
}

/// The `id` of the heavy person of [`heavy_person`].
pub const HEAVY: &str = "heavy";

/// A person with a long history: 200 events, 20 deliveries each opened, 3 devices and
/// 5 relationships (the shape of `benches/profile.rs`'s overview case).
pub fn heavy_person(now: i64) -> Vec<Work> {
    let id = HEAVY.to_owned();
    let mut out = vec![Work::Identify {
        id: id.clone(),
        attrs: vec![
            ("email".to_owned(), V::S("heavy@example.com".to_owned())),
            ("plan".to_owned(), V::S("pro".to_owned())),
            ("age".to_owned(), V::I(40)),
        ],
    }];
    for i in 0..200i64 {
        out.push(Work::Event {
            id: id.clone(),
            name: format!("event-{}", i % 10),
            props: vec![("i".to_owned(), V::I(i))],
            ts: now - 86_400 * 20 + i * 600,
        });
    }
    for i in 0..20i64 {
        let delivery_id = format!("dlv-{i}");
        out.push(Work::Delivery {
            id: id.clone(),
            delivery_id: delivery_id.clone(),
            subject: "Hello".to_owned(),
            created: now - 86_400 * 20 + i * 3600,
        });
        out.push(Work::Metric {
            delivery_id,
            metric: "opened".to_owned(),
            ts: now - 86_400 * 20 + i * 3600 + 60,
        });
    }
    for i in 0..3 {
        out.push(Work::Device {
            id: id.clone(),
            token: format!("heavy-tok-{i}"),
            platform: Platform::Ios,
            last_used: now - i * 3600,
        });
    }
    for i in 0..5 {
        out.push(Work::Relate {
            id: id.clone(),
            type_id: 1,
            object_id: format!("org-{i}"),
            attrs: vec![("role".to_owned(), V::S("member".to_owned()))],
        });
    }
    out
}

/// One batch: the same operations as `Op`s (for profiledb) and as [`Work`] (for the
/// peer), built outside any timed region.
pub struct Batch {
    pub ops: Vec<Op>,
    pub work: Vec<Work>,
    /// People whose operations the batch holds.
    pub people: u64,
}

impl Batch {
    pub fn of(work: Vec<Work>) -> Batch {
        Batch {
            ops: work.iter().map(Work::to_op).collect(),
            people: 1,
            work,
        }
    }
}

/// Batches of the synthetic people `range`, each about `ops_per_batch` operations (whole
/// people), checked against `synth::person_ops`.
pub struct Batches {
    next: u64,
    end: u64,
    seed: u64,
    now: i64,
    ops_per_batch: usize,
}

impl Batches {
    pub fn new(range: std::ops::Range<u64>, seed: u64, now: i64, ops_per_batch: usize) -> Self {
        Batches {
            next: range.start,
            end: range.end,
            seed,
            now,
            ops_per_batch,
        }
    }
}

impl Iterator for Batches {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        if self.next >= self.end {
            return None;
        }
        let mut b = Batch {
            ops: Vec::with_capacity(self.ops_per_batch + 8),
            work: Vec::with_capacity(self.ops_per_batch + 8),
            people: 0,
        };
        while self.next < self.end && b.ops.len() < self.ops_per_batch {
            let work = synth_person(self.next, self.seed, self.now);
            let ops = synth::person_ops(self.next, self.seed, self.now);
            let mirrored: Vec<Op> = work.iter().map(Work::to_op).collect();
            assert_eq!(
                mirrored, ops,
                "the peer's workload mirror drifted from synth::person_ops (person {})",
                self.next
            );
            b.ops.extend(ops);
            b.work.extend(work);
            b.people += 1;
            self.next += 1;
        }
        Some(b)
    }
}
