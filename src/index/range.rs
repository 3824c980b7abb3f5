//! Ordered indexes as bit-sliced bitmaps (O'Neil & Quass, "Improved query performance
//! with variant indexes", 1997).
//!
//! A ranged attribute's numeric value (a number, or a string holding one, as
//! [`Value::as_number`] reads it) is encoded as a `u64` whose numeric order is the
//! value's order ([`encode`]). The index is 65 ordinary bitmaps: one per bit of the
//! encoding ([`BitmapKey::RangeBit`], the people whose encoding has that bit set) and
//! the people who have a value at all ([`BitmapKey::RangeHas`]). They change, are
//! persisted and verified like every other bitmap; an update changes only the slices of
//! the bits that differ between the old and new value.
//!
//! A comparison against `x` walks the bits from the most significant down, keeping the
//! people whose encoding equals `x`'s so far and moving those that first differ into
//! "less" or "greater": 64 steps of two bitmap operations each, exact, whatever the
//! number of people or distinct values.

use std::borrow::Cow;

use roaring::RoaringBitmap;

use crate::model::Value;
use crate::store::bitmaps::RANGE_BITS;

use super::BitmapKey;

/// A comparison an ordered index answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `=` (numerically: `3`, `3.0` and `"3"` are equal)
    Eq,
}

/// The orderable encoding of a number: IEEE-754 bits with the sign bit flipped for
/// positives and every bit flipped for negatives ([`crate::store::orderable`]), so
/// unsigned order is numeric order; `-0.0` is encoded as `0.0`, which it equals.
pub fn encode(x: f64) -> u64 {
    let x = if x == 0.0 { 0.0 } else { x };
    u64::from_be_bytes(crate::store::orderable(x))
}

/// The number a ranged attribute's value contributes to its index, if any.
pub fn number(value: &Value) -> Option<f64> {
    value.as_number().filter(|x| !x.is_nan())
}

/// The bitmaps a value of ranged attribute `name` puts its person in: the existence
/// bitmap and the slice of every set bit.
pub fn keys_of(name: &str, x: f64) -> impl Iterator<Item = BitmapKey> + '_ {
    let code = encode(x);
    std::iter::once(BitmapKey::RangeHas(name.to_owned())).chain(
        (0..RANGE_BITS)
            .filter(move |bit| code >> bit & 1 == 1)
            .map(move |bit| BitmapKey::RangeBit(name.to_owned(), bit)),
    )
}

/// The people whose ranged attribute `name` compares true with `x` (`op`), among
/// `within`, reading each bitmap through `get` (the committed bitmaps, or those plus a
/// batch's pending changes). A NaN `x` compares true with nothing.
pub fn compare<'a>(
    name: &str,
    op: Order,
    x: f64,
    within: Option<&RoaringBitmap>,
    mut get: impl FnMut(&BitmapKey) -> Option<Cow<'a, RoaringBitmap>>,
) -> RoaringBitmap {
    if x.is_nan() {
        return RoaringBitmap::new();
    }
    let Some(has) = get(&BitmapKey::RangeHas(name.to_owned())) else {
        return RoaringBitmap::new();
    };
    let mut eq = match within {
        Some(w) => w & has.as_ref(),
        None => has.into_owned(),
    };
    let code = encode(x);
    let mut lt = RoaringBitmap::new();
    let mut gt = RoaringBitmap::new();
    for bit in (0..RANGE_BITS).rev() {
        if eq.is_empty() {
            break;
        }
        let slice = get(&BitmapKey::RangeBit(name.to_owned(), bit));
        let x_has = code >> bit & 1 == 1;
        match (slice, x_has) {
            // Nobody has the bit: those equal so far and x differ here only if x has it.
            (None, true) => {
                lt |= &eq;
                eq.clear();
            }
            (None, false) => {}
            (Some(s), true) => {
                if matches!(op, Order::Lt | Order::Le) {
                    lt |= &eq - s.as_ref();
                }
                eq &= s.as_ref();
            }
            (Some(s), false) => {
                if matches!(op, Order::Gt | Order::Ge) {
                    gt |= &eq & s.as_ref();
                }
                eq -= s.as_ref();
            }
        }
    }
    match op {
        Order::Lt => lt,
        Order::Le => lt | eq,
        Order::Gt => gt,
        Order::Ge => gt | eq,
        Order::Eq => eq,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn the_encoding_orders_like_the_numbers() {
        let xs = [
            f64::NEG_INFINITY,
            -1e300,
            -2.5,
            -1.0,
            -f64::MIN_POSITIVE,
            0.0,
            f64::MIN_POSITIVE,
            1.0,
            2.5,
            9_007_199_254_740_993.0,
            1e300,
            f64::INFINITY,
        ];
        for w in xs.windows(2) {
            assert!(encode(w[0]) < encode(w[1]), "{} < {}", w[0], w[1]);
        }
        assert_eq!(encode(-0.0), encode(0.0));
    }

    #[test]
    fn bit_sliced_comparisons_equal_a_scan() {
        let mut state = 0x5EEDu64;
        let mut next = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            state >> 11
        };
        let pool = [
            -3.5, -1.0, -0.0, 0.0, 0.5, 1.0, 2.0, 30.0, 1e18, -1e18, 7.25,
        ];
        let mut values: Vec<(u32, f64)> = Vec::new();
        let mut bitmaps: HashMap<BitmapKey, RoaringBitmap> = HashMap::new();
        for pid in 0..400u32 {
            let x = if next() % 3 == 0 {
                pool[(next() % pool.len() as u64) as usize]
            } else {
                (next() % 2000) as f64 / 8.0 - 120.0
            };
            values.push((pid, x));
            for k in keys_of("v", x) {
                bitmaps.entry(k).or_default().insert(pid);
            }
        }
        let within: RoaringBitmap = (0..400).filter(|p| p % 3 != 0).collect();
        for x in pool.iter().copied().chain([-200.0, 0.125, 500.0, f64::NAN]) {
            for (op, f) in [
                (Order::Lt, (|a: f64, b: f64| a < b) as fn(f64, f64) -> bool),
                (Order::Le, |a, b| a <= b),
                (Order::Gt, |a, b| a > b),
                (Order::Ge, |a, b| a >= b),
                (Order::Eq, |a, b| a == b),
            ] {
                let want: RoaringBitmap = values
                    .iter()
                    .filter(|(_, v)| f(*v, x))
                    .map(|(p, _)| *p)
                    .collect();
                let got = compare("v", op, x, None, |k| bitmaps.get(k).map(Cow::Borrowed));
                assert_eq!(got, want, "{op:?} {x}");
                let got = compare("v", op, x, Some(&within), |k| {
                    bitmaps.get(k).map(Cow::Borrowed)
                });
                assert_eq!(got, &want & &within, "{op:?} {x} within");
            }
        }
    }
}
