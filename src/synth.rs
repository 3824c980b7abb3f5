//! A deterministic synthetic workload: people with attributes, topic preferences,
//! events, devices and relationships; topics; and segment definitions. The benches, the
//! tests and the demo all draw from it, so their numbers describe the same data.
//!
//! Everything is a pure function of the person number and the seed (splitmix64), so the
//! same arguments always give the same operations.

use crate::devices::DeviceInput;
use crate::model::{Ident, ObjectRef, Platform};
use crate::{Identify, Op, Track};

/// The default seed.
pub const SEED: u64 = 0x5EED_0F9E_091E;

/// splitmix64: a fast, well-mixed hash of `x`.
pub fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const PLANS: [&str; 4] = ["free", "starter", "pro", "enterprise"];
const COUNTRIES: [&str; 8] = ["PT", "NO", "NG", "PE", "JP", "US", "IN", "EE"];

fn pick<'a>(xs: &[&'a str], h: u64) -> &'a str {
    let n = xs.len().max(1) as u64;
    xs.get(usize::try_from(h % n).unwrap_or(0))
        .copied()
        .unwrap_or("")
}

/// The `id` of synthetic person `n`.
pub fn person_id(n: u64) -> String {
    format!("user-{n:08}")
}

/// The operations that create synthetic person `n` as of time `now`: an identify with
/// 8 attributes and preferences for the 10 topics, 0–3 events, a device for about half
/// of them, and a relationship to one of 100 companies for about a third.
pub fn person_ops(n: u64, seed: u64, now: i64) -> Vec<Op> {
    let h = mix(seed ^ n);
    let who = Ident::id(person_id(n));
    let mut op = Identify::new(who.clone())
        .set("email", format!("user{n}@example.com"))
        .set("plan", pick(&PLANS, h))
        .set("country", pick(&COUNTRIES, h >> 8))
        .set("age", 18 + ((h >> 16) % 60) as i64)
        .set("created_at", now - ((h >> 24) % (365 * 86_400)) as i64)
        .set("score", ((h >> 32) % 1000) as i64);
    if (h >> 40) % 20 == 0 {
        op = op.set("unsubscribed", true);
    }
    for t in 1..=10u64 {
        let b = mix(h ^ t);
        match b % 4 {
            0 => {
                op = op.set(
                    format!("cio_subscription_preferences.topics.topic_{t}"),
                    true,
                )
            }
            1 => {
                op = op.set(
                    format!("cio_subscription_preferences.topics.topic_{t}"),
                    false,
                )
            }
            _ => {}
        }
    }
    let mut ops = vec![Op::Identify(op)];
    for e in 0..(h >> 44) % 4 {
        let eh = mix(h ^ (e + 100));
        let name = if eh % 3 == 0 { "login" } else { "purchase" };
        ops.push(Op::Track(
            Track::event(who.clone(), name)
                .property("amount", ((eh >> 8) % 200) as i64)
                .timestamp(now - ((eh >> 16) % (30 * 86_400)) as i64),
        ));
    }
    if (h >> 50) % 2 == 0 {
        ops.push(Op::AddDevice {
            person: who.clone(),
            device: DeviceInput::new(
                format!("tok-{n}"),
                if (h >> 51) % 2 == 0 {
                    Platform::Ios
                } else {
                    Platform::Android
                },
            )
            .last_used(now - ((h >> 52) % (14 * 86_400)) as i64),
        });
    }
    if (h >> 56) % 3 == 0 {
        ops.push(Op::AddRelationship {
            person: who,
            object: ObjectRef::new(1, format!("company-{}", (h >> 58) % 100)),
            attributes: Vec::new(),
        });
    }
    ops
}

/// The 10 synthetic topics: (id, name, opted in by default).
pub fn topics() -> Vec<(u32, String, bool)> {
    (1..=10)
        .map(|i| (i, format!("Topic {i}"), i % 2 == 1))
        .collect()
}

/// `n` segment definitions (name, condition) over the synthetic data; every fifth reads
/// the clock, so `refresh` has work.
pub fn segments(n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            let plan = pick(&PLANS, i as u64);
            let country = pick(&COUNTRIES, (i / 4) as u64);
            let topic = 1 + i % 10;
            let cond = match i % 5 {
                0 => format!(r#"attr.plan = "{plan}" and topic:{topic}"#),
                1 => format!(r#"attr.country = "{country}" and not unsubscribed"#),
                2 => format!("attr.age > {} and related:1", 20 + i % 40),
                3 => format!(
                    r#"device.platform = "ios" and attr.score >= {}"#,
                    (i * 37) % 1000
                ),
                _ => format!("event:purchase within {}d", 1 + i % 20),
            };
            (format!("Segment {i:02}"), cond)
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_workload_is_deterministic_and_parses() {
        assert_eq!(
            person_ops(7, SEED, 1_000_000),
            person_ops(7, SEED, 1_000_000)
        );
        assert_ne!(
            person_ops(7, SEED, 1_000_000),
            person_ops(8, SEED, 1_000_000)
        );
        for (_, cond) in segments(50) {
            crate::query::parse(&cond).unwrap();
        }
    }
}
