//! [`Value`]: the JSON-like value of attributes, event data and activity data.
//!
//! bincode cannot carry `serde_json::Value` (it needs `deserialize_any`), so the crate has
//! its own enum, converted to and from JSON at the edges. Its bincode form is written by
//! hand so that decoding bounds nesting depth: a crafted record cannot recurse the decoder
//! into a stack overflow.

use std::collections::BTreeMap;
use std::fmt;

use bincode::de::Decoder;
use bincode::enc::Encoder;
use bincode::error::{DecodeError, EncodeError};
use bincode::{Decode, Encode};

use crate::error::{InputError, InputReason};

/// A map of attribute names to values, ordered by name.
pub type Map = BTreeMap<String, Value>;

/// The deepest nesting a [`Value`] may have, on input and on disk.
pub const MAX_DEPTH: usize = 32;

/// A JSON-like value: null, boolean, integer, float, string, array or map.
///
/// Floats are always finite: NaN and infinities are refused on input.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value {
    /// JSON `null`.
    #[default]
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A whole number that fits in an `i64`.
    Int(i64),
    /// Any other number.
    Float(f64),
    /// A UTF-8 string.
    String(String),
    /// An ordered list.
    Array(Vec<Value>),
    /// A map ordered by key.
    Map(Map),
}

impl Value {
    /// The value as a number, as conditions compare it: integers and floats, and a
    /// string holding a finite number (Customer.io hands attribute values around as
    /// strings); anything else is `None`.
    pub fn as_number(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(x) => Some(*x),
            Value::String(s) => s.trim().parse::<f64>().ok().filter(|x| x.is_finite()),
            _ => None,
        }
    }

    /// Converts JSON into a `Value`, refusing numbers outside `i64`/`f64` and nesting
    /// deeper than [`MAX_DEPTH`]. `field` names the input in the error.
    ///
    /// # Errors
    /// [`InputError`] naming `field` (and the path inside it) and the reason.
    pub fn from_json(json: &serde_json::Value, field: &str) -> Result<Value, InputError> {
        from_json_at(json, field, 0)
    }

    /// Converts to JSON. Maps keep their key order.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Float(x) => serde_json::Number::from_f64(*x)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::String(s) => serde_json::Value::String(s.clone()),
            Value::Array(a) => serde_json::Value::Array(a.iter().map(Value::to_json).collect()),
            Value::Map(m) => {
                serde_json::Value::Object(m.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
            }
        }
    }

    /// True for the two values that remove an attribute: `null` and `""`.
    pub fn is_removal(&self) -> bool {
        matches!(self, Value::Null) || matches!(self, Value::String(s) if s.is_empty())
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is one.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The map, if this is one.
    pub fn as_map(&self) -> Option<&Map> {
        match self {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// How deeply this value nests (a scalar is 0, `[1]` is 1).
    pub fn depth(&self) -> usize {
        match self {
            Value::Array(a) => 1 + a.iter().map(Value::depth).max().unwrap_or(0),
            Value::Map(m) => 1 + m.values().map(Value::depth).max().unwrap_or(0),
            _ => 0,
        }
    }

    /// The size of this value as compact JSON, in bytes; for a string, its UTF-8 length.
    /// This is the size the attribute-value limit measures.
    pub fn size(&self) -> usize {
        match self {
            Value::String(s) => s.len(),
            other => serde_json::to_vec(&other.to_json())
                .map(|v| v.len())
                .unwrap_or(usize::MAX),
        }
    }

    /// Customer.io's truthiness for `unsubscribed`: `true`, any casing of `"true"`, `1`,
    /// or `"1"`. Anything else is false.
    pub fn is_truthy(&self) -> bool {
        match self {
            Value::Bool(b) => *b,
            Value::Int(i) => *i == 1,
            Value::Float(x) => *x == 1.0,
            Value::String(s) => s.eq_ignore_ascii_case("true") || s == "1",
            _ => false,
        }
    }
}

fn from_json_at(json: &serde_json::Value, field: &str, depth: usize) -> Result<Value, InputError> {
    Ok(match json {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Int(i)
            } else if n.is_u64() {
                return Err(InputError::invalid(
                    field,
                    format!("is the number {n}, beyond the largest integer 9223372036854775807"),
                ));
            } else {
                match n.as_f64() {
                    Some(x) if x.is_finite() => Value::Float(x),
                    _ => {
                        return Err(InputError::invalid(
                            field,
                            format!("is the number {n}, which is not a finite float"),
                        ))
                    }
                }
            }
        }
        serde_json::Value::String(s) => Value::String(s.clone()),
        serde_json::Value::Array(items) => {
            if depth >= MAX_DEPTH {
                return Err(InputError::new(
                    field,
                    InputReason::TooDeep { max: MAX_DEPTH },
                ));
            }
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                out.push(from_json_at(item, &format!("{field}[{i}]"), depth + 1)?);
            }
            Value::Array(out)
        }
        serde_json::Value::Object(obj) => {
            if depth >= MAX_DEPTH {
                return Err(InputError::new(
                    field,
                    InputReason::TooDeep { max: MAX_DEPTH },
                ));
            }
            let mut out = Map::new();
            for (k, v) in obj {
                out.insert(
                    k.clone(),
                    from_json_at(v, &format!("{field}.{k}"), depth + 1)?,
                );
            }
            Value::Map(out)
        }
    })
}

impl fmt::Display for Value {
    /// Compact JSON.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_json())
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}
impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}
impl From<i32> for Value {
    fn from(i: i32) -> Self {
        Value::Int(i64::from(i))
    }
}
impl From<u32> for Value {
    fn from(i: u32) -> Self {
        Value::Int(i64::from(i))
    }
}
impl From<f64> for Value {
    fn from(x: f64) -> Self {
        Value::Float(x)
    }
}
impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.to_owned())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s)
    }
}
impl From<Map> for Value {
    fn from(m: Map) -> Self {
        Value::Map(m)
    }
}
impl<T: Into<Value>> From<Vec<T>> for Value {
    fn from(v: Vec<T>) -> Self {
        Value::Array(v.into_iter().map(Into::into).collect())
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

impl serde::Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

// The bincode form: a tag byte, then the payload. Tags are part of the on-disk format
// (src/store/FORMAT.md) and must never be renumbered.
const TAG_NULL: u8 = 0;
const TAG_BOOL: u8 = 1;
const TAG_INT: u8 = 2;
const TAG_FLOAT: u8 = 3;
const TAG_STRING: u8 = 4;
const TAG_ARRAY: u8 = 5;
const TAG_MAP: u8 = 6;

impl Encode for Value {
    fn encode<E: Encoder>(&self, e: &mut E) -> Result<(), EncodeError> {
        match self {
            Value::Null => TAG_NULL.encode(e),
            Value::Bool(b) => {
                TAG_BOOL.encode(e)?;
                b.encode(e)
            }
            Value::Int(i) => {
                TAG_INT.encode(e)?;
                i.encode(e)
            }
            Value::Float(x) => {
                TAG_FLOAT.encode(e)?;
                x.encode(e)
            }
            Value::String(s) => {
                TAG_STRING.encode(e)?;
                s.encode(e)
            }
            Value::Array(a) => {
                TAG_ARRAY.encode(e)?;
                (a.len() as u64).encode(e)?;
                a.iter().try_for_each(|v| v.encode(e))
            }
            Value::Map(m) => {
                TAG_MAP.encode(e)?;
                (m.len() as u64).encode(e)?;
                m.iter().try_for_each(|(k, v)| {
                    k.encode(e)?;
                    v.encode(e)
                })
            }
        }
    }
}

impl<C> Decode<C> for Value {
    fn decode<D: Decoder<Context = C>>(d: &mut D) -> Result<Self, DecodeError> {
        decode_value(d, 0)
    }
}
bincode::impl_borrow_decode!(Value);

fn decode_len<D: Decoder>(d: &mut D) -> Result<usize, DecodeError> {
    let len = u64::decode(d)?;
    let len = usize::try_from(len).map_err(|_| DecodeError::OutsideUsizeRange(len))?;
    // Account for the entries against the configured limit before allocating anything.
    d.claim_container_read::<Value>(len)?;
    Ok(len)
}

fn decode_value<D: Decoder>(d: &mut D, depth: usize) -> Result<Value, DecodeError> {
    let tag = u8::decode(d)?;
    if matches!(tag, TAG_ARRAY | TAG_MAP) && depth >= MAX_DEPTH {
        return Err(DecodeError::Other("value nested deeper than the limit"));
    }
    Ok(match tag {
        TAG_NULL => Value::Null,
        TAG_BOOL => Value::Bool(bool::decode(d)?),
        TAG_INT => Value::Int(i64::decode(d)?),
        TAG_FLOAT => {
            let x = f64::decode(d)?;
            if !x.is_finite() {
                return Err(DecodeError::Other("float is not finite"));
            }
            Value::Float(x)
        }
        TAG_STRING => Value::String(String::decode(d)?),
        TAG_ARRAY => {
            let len = decode_len(d)?;
            let mut out = Vec::with_capacity(len.min(1024));
            for _ in 0..len {
                d.unclaim_bytes_read(std::mem::size_of::<Value>());
                out.push(decode_value(d, depth + 1)?);
            }
            Value::Array(out)
        }
        TAG_MAP => {
            let len = decode_len(d)?;
            let mut out = Map::new();
            for _ in 0..len {
                d.unclaim_bytes_read(std::mem::size_of::<Value>());
                let k = String::decode(d)?;
                let v = decode_value(d, depth + 1)?;
                if out.insert(k, v).is_some() {
                    return Err(DecodeError::Other("map has a duplicate key"));
                }
            }
            Value::Map(out)
        }
        found => {
            return Err(DecodeError::UnexpectedVariant {
                type_name: "Value",
                allowed: &bincode::error::AllowedEnumVariants::Range { min: 0, max: 6 },
                found: u32::from(found),
            })
        }
    })
}

/// The value at a dotted path (`["address", "city"]`) inside `map`.
pub(crate) fn get_path<'v>(map: &'v Map, path: &[String]) -> Option<&'v Value> {
    let (first, rest) = path.split_first()?;
    let v = map.get(first)?;
    if rest.is_empty() {
        Some(v)
    } else {
        get_path(v.as_map()?, rest)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn truthiness_follows_customerio() {
        for v in [
            Value::Bool(true),
            Value::Int(1),
            Value::from("TRUE"),
            Value::from("True"),
            Value::from("1"),
        ] {
            assert!(v.is_truthy(), "{v} should be truthy");
        }
        for v in [
            Value::Bool(false),
            Value::Int(2),
            Value::from("yes"),
            Value::from("0"),
            Value::Null,
        ] {
            assert!(!v.is_truthy(), "{v} should not be truthy");
        }
    }

    #[test]
    fn json_numbers_beyond_i64_are_refused() {
        let json: serde_json::Value =
            serde_json::from_str("18446744073709551615").expect("valid json");
        let err = Value::from_json(&json, "n").expect_err("u64 max does not fit");
        assert_eq!(err.field, "n");
    }

    #[test]
    fn deep_json_is_refused_with_its_path() {
        let mut s = String::new();
        for _ in 0..40 {
            s.push('[');
        }
        for _ in 0..40 {
            s.push(']');
        }
        let json: serde_json::Value = serde_json::from_str(&s).expect("valid json");
        let err = Value::from_json(&json, "data").expect_err("too deep");
        assert!(matches!(err.reason, InputReason::TooDeep { .. }), "{err}");
    }
}
