//! `event_blocks` values: the tracked events of one kind, name and day, a block of rows
//! in column form, so a condition over an event reads the rows of its window at once
//! instead of every candidate's timeline. The byte layout is in `FORMAT.md`.
//!
//! Rows are strictly ascending by `seq` within a block (new events get the largest
//! sequence number yet, and an older one moved in from an anonymous id is inserted at
//! its place). Top-level scalar properties are stored per row in one column per property
//! name; what a block cannot hold (a nested value, a long string or name, more columns
//! than [`MAX_COLUMNS`]) is marked so a reader falls back to the `activity` record.

use bincode::de::Decoder;
use bincode::enc::Encoder;
use bincode::error::{DecodeError, EncodeError};
use bincode::{Decode, Encode};

use crate::model::Value;

/// A block accepts another row only while its encoded size stays at most this (an upper
/// bound, [`EventBlock::max_bytes`]); a row that would take it over starts a new block.
/// Far under sled's blob threshold (a quarter of its 512 KiB segments), so a block is
/// an ordinary inline value, and one event rewrites at most one small block.
pub const BLOCK_TARGET_BYTES: usize = 8 * 1024;
/// Property columns per block at most; further properties mark their rows `overflow`.
pub const MAX_COLUMNS: usize = 32;
/// Longest property name kept as a column, and longest string kept as a cell, in bytes.
pub const MAX_CELL_STR: usize = 64;
/// Seconds in a day: the partition of the key.
pub const DAY_SECS: i64 = 86_400;

/// One row's value of one property column.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell {
    /// The row has no such property.
    Absent,
    /// The row has the property, but not as a value a block holds (an array, a map, a
    /// long string): read the `activity` record.
    Opaque,
    /// `null`.
    Null,
    /// A bool.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A finite float.
    Float(f64),
    /// A string: an index into the block's `strings`.
    Str(u32),
}

const CELL_ABSENT: u8 = 0;
const CELL_OPAQUE: u8 = 1;
const CELL_NULL: u8 = 2;
const CELL_BOOL: u8 = 3;
const CELL_INT: u8 = 4;
const CELL_FLOAT: u8 = 5;
const CELL_STR: u8 = 6;

/// One block of rows (see the module docs).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EventBlock {
    /// Each row's person.
    pub pids: Vec<u32>,
    /// Each row's time, seconds after the start of the key's day (below 86 400).
    pub secs: Vec<u32>,
    /// Each row's activity sequence number, strictly ascending.
    pub seqs: Vec<u64>,
    /// Rows with a top-level property that has no column (read `activity` for them).
    pub overflow: Vec<bool>,
    /// Property names, strictly ascending, each at most [`MAX_CELL_STR`] bytes.
    pub names: Vec<String>,
    /// One column per name, each one cell per row.
    pub columns: Vec<Vec<Cell>>,
    /// The strings cells refer to.
    pub strings: Vec<String>,
}

/// Upper bounds of encoded sizes (bincode varints), for [`EventBlock::max_bytes`].
const ROW_BYTES: usize = 5 + 5 + 9 + 1;
const CELL_BYTES: usize = 10;
const LEN_BYTES: usize = 9;

impl EventBlock {
    /// Rows held.
    pub fn len(&self) -> usize {
        self.seqs.len()
    }

    /// True when no row is left.
    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }

    /// An upper bound of the encoded payload's size, whatever the pids' values.
    pub fn max_bytes(&self) -> usize {
        let n = self.len();
        let strings = |v: &[String]| v.iter().map(|s| LEN_BYTES + s.len()).sum::<usize>();
        7 * LEN_BYTES
            + n * ROW_BYTES
            + strings(&self.names)
            + self.columns.len() * (LEN_BYTES + n * CELL_BYTES)
            + strings(&self.strings)
    }

    fn cell_of(&mut self, v: &Value) -> Cell {
        match v {
            Value::Null => Cell::Null,
            Value::Bool(b) => Cell::Bool(*b),
            Value::Int(i) => Cell::Int(*i),
            Value::Float(x) => Cell::Float(*x),
            Value::String(s) if s.len() <= MAX_CELL_STR => {
                let i = match self.strings.iter().position(|x| x == s) {
                    Some(i) => i,
                    None => {
                        self.strings.push(s.clone());
                        self.strings.len() - 1
                    }
                };
                Cell::Str(u32::try_from(i).unwrap_or(u32::MAX))
            }
            _ => Cell::Opaque,
        }
    }

    /// Each row's index, person, second of the day and activity `seq`.
    pub fn rows(&self) -> impl Iterator<Item = (usize, u32, u32, u64)> + '_ {
        self.pids
            .iter()
            .zip(&self.secs)
            .zip(&self.seqs)
            .enumerate()
            .map(|(at, ((&pid, &sec), &seq))| (at, pid, sec, seq))
    }

    /// Inserts a row at its place by `seq`; false (and no change) when the block holds
    /// that `seq` already.
    pub fn insert(&mut self, pid: u32, sec: u32, seq: u64, data: &Value) -> bool {
        let Err(at) = self.seqs.binary_search(&seq) else {
            return false;
        };
        self.pids.insert(at, pid);
        self.secs.insert(at, sec);
        self.seqs.insert(at, seq);
        self.overflow.insert(at, false);
        for col in &mut self.columns {
            col.insert(at, Cell::Absent);
        }
        let Some(map) = data.as_map() else {
            return true;
        };
        let n = self.len();
        for (name, v) in map {
            let col = match self.names.binary_search(name) {
                Ok(c) => Some(c),
                Err(c) if self.names.len() < MAX_COLUMNS && name.len() <= MAX_CELL_STR => {
                    self.names.insert(c, name.clone());
                    self.columns.insert(c, vec![Cell::Absent; n]);
                    Some(c)
                }
                Err(_) => None,
            };
            let cell = self.cell_of(v);
            match col.and_then(|c| self.columns.get_mut(c)?.get_mut(at)) {
                Some(slot) => *slot = cell,
                None => {
                    if let Some(o) = self.overflow.get_mut(at) {
                        *o = true;
                    }
                }
            }
        }
        true
    }

    /// The row of `seq`, when it belongs to `pid`.
    pub fn find(&self, pid: u32, seq: u64) -> Option<usize> {
        let at = self.seqs.binary_search(&seq).ok()?;
        (self.pids.get(at) == Some(&pid)).then_some(at)
    }

    /// Removes row `at` (strings no longer referred to stay until the block empties).
    pub fn remove(&mut self, at: usize) {
        if at >= self.len() {
            return;
        }
        self.pids.remove(at);
        self.secs.remove(at);
        self.seqs.remove(at);
        self.overflow.remove(at);
        for col in &mut self.columns {
            col.remove(at);
        }
    }

    /// The value of a cell (`None`: absent or opaque; see [`Cell`]).
    pub fn value(&self, cell: Cell) -> Option<Value> {
        Some(match cell {
            Cell::Absent | Cell::Opaque => return None,
            Cell::Null => Value::Null,
            Cell::Bool(b) => Value::Bool(b),
            Cell::Int(i) => Value::Int(i),
            Cell::Float(x) => Value::Float(x),
            Cell::Str(i) => Value::String(self.strings.get(i as usize)?.clone()),
        })
    }

    /// Whether row `at` stores `data`'s top-level properties exactly as a fresh block
    /// would (for `verify`).
    pub fn row_matches(&self, at: usize, data: &Value) -> bool {
        let map = data.as_map();
        let mut overflow = false;
        for (name, v) in map.into_iter().flatten() {
            let stored = self
                .names
                .binary_search(name)
                .ok()
                .and_then(|c| self.columns.get(c)?.get(at).copied());
            match stored {
                None => overflow = true,
                Some(Cell::Opaque) => {
                    let mut probe = EventBlock::default();
                    if probe.cell_of(v) != Cell::Opaque {
                        return false;
                    }
                }
                Some(cell) => {
                    if self.value(cell).as_ref() != Some(v) {
                        return false;
                    }
                }
            }
        }
        // Columns the row lacks must read absent.
        let present = |name: &String| map.is_some_and(|m| m.contains_key(name));
        let absent_ok = self
            .names
            .iter()
            .zip(&self.columns)
            .all(|(name, col)| present(name) || matches!(col.get(at), Some(Cell::Absent)));
        absent_ok && self.overflow.get(at) == Some(&overflow)
    }
}

impl Encode for Cell {
    fn encode<E: Encoder>(&self, e: &mut E) -> Result<(), EncodeError> {
        match *self {
            Cell::Absent => CELL_ABSENT.encode(e),
            Cell::Opaque => CELL_OPAQUE.encode(e),
            Cell::Null => CELL_NULL.encode(e),
            Cell::Bool(b) => {
                CELL_BOOL.encode(e)?;
                b.encode(e)
            }
            Cell::Int(i) => {
                CELL_INT.encode(e)?;
                i.encode(e)
            }
            Cell::Float(x) => {
                CELL_FLOAT.encode(e)?;
                x.encode(e)
            }
            Cell::Str(i) => {
                CELL_STR.encode(e)?;
                i.encode(e)
            }
        }
    }
}

impl<C> Decode<C> for Cell {
    fn decode<D: Decoder<Context = C>>(d: &mut D) -> Result<Self, DecodeError> {
        Ok(match u8::decode(d)? {
            CELL_ABSENT => Cell::Absent,
            CELL_OPAQUE => Cell::Opaque,
            CELL_NULL => Cell::Null,
            CELL_BOOL => Cell::Bool(bool::decode(d)?),
            CELL_INT => Cell::Int(i64::decode(d)?),
            CELL_FLOAT => {
                let x = f64::decode(d)?;
                if !x.is_finite() {
                    return Err(DecodeError::Other("event block: float is not finite"));
                }
                Cell::Float(x)
            }
            CELL_STR => Cell::Str(u32::decode(d)?),
            _ => return Err(DecodeError::Other("event block: unknown cell tag")),
        })
    }
}
bincode::impl_borrow_decode!(Cell);

impl Encode for EventBlock {
    fn encode<E: Encoder>(&self, e: &mut E) -> Result<(), EncodeError> {
        self.pids.encode(e)?;
        self.secs.encode(e)?;
        self.seqs.encode(e)?;
        self.overflow.encode(e)?;
        self.names.encode(e)?;
        self.columns.encode(e)?;
        self.strings.encode(e)
    }
}

impl<C> Decode<C> for EventBlock {
    fn decode<D: Decoder<Context = C>>(d: &mut D) -> Result<Self, DecodeError> {
        let b = EventBlock {
            pids: Vec::decode(d)?,
            secs: Vec::decode(d)?,
            seqs: Vec::decode(d)?,
            overflow: Vec::decode(d)?,
            names: Vec::decode(d)?,
            columns: Vec::decode(d)?,
            strings: Vec::decode(d)?,
        };
        b.check().map_err(DecodeError::Other)?;
        Ok(b)
    }
}
bincode::impl_borrow_decode!(EventBlock);

impl EventBlock {
    /// Every rule of the layout; the first one broken.
    fn check(&self) -> Result<(), &'static str> {
        let n = self.len();
        if n == 0 {
            return Err("event block: no rows (an empty block is deleted)");
        }
        if self.pids.len() != n || self.secs.len() != n || self.overflow.len() != n {
            return Err("event block: columns of different lengths");
        }
        if self.secs.iter().any(|s| i64::from(*s) >= DAY_SECS) {
            return Err("event block: a time past the end of its day");
        }
        if self.seqs.windows(2).any(|w| w.first() >= w.get(1)) {
            return Err("event block: rows not strictly ascending by seq");
        }
        if self.names.len() > MAX_COLUMNS
            || self.names.len() != self.columns.len()
            || self.names.iter().any(|s| s.len() > MAX_CELL_STR)
            || self.names.windows(2).any(|w| w.first() >= w.get(1))
        {
            return Err("event block: property names not strictly ascending, too many or too long");
        }
        let strings = self.strings.len();
        for col in &self.columns {
            if col.len() != n {
                return Err("event block: a property column of another length");
            }
            if col
                .iter()
                .any(|c| matches!(c, Cell::Str(i) if *i as usize >= strings))
            {
                return Err("event block: a string index out of bounds");
            }
        }
        if self.strings.iter().any(|s| s.len() > MAX_CELL_STR) {
            return Err("event block: a string longer than a cell holds");
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::model::Map;
    use crate::store::codec;

    fn data(pairs: &[(&str, Value)]) -> Value {
        let mut m = Map::new();
        for (k, v) in pairs {
            m.insert((*k).to_owned(), v.clone());
        }
        Value::Map(m)
    }

    #[test]
    fn rows_round_trip_and_validate() {
        let mut b = EventBlock::default();
        assert!(b.insert(7, 10, 5, &data(&[("amount", Value::Int(3))])));
        assert!(b.insert(
            8,
            20,
            2,
            &data(&[("s", Value::from("x")), ("n", Value::Array(vec![]))])
        ));
        assert!(!b.insert(9, 0, 5, &Value::Null), "a seq is held once");
        assert_eq!(b.seqs, vec![2, 5]);
        assert_eq!(b.names, vec!["amount", "n", "s"]);
        assert_eq!(b.columns[1], vec![Cell::Opaque, Cell::Absent]);
        let bytes = codec::encode(23, b"k", &b).unwrap();
        let back: EventBlock = codec::decode(23, b"k", &bytes).unwrap();
        assert_eq!(back, b);
        assert!(bytes.len() - 5 <= b.max_bytes());
        assert!(b.row_matches(
            0,
            &data(&[("s", Value::from("x")), ("n", Value::Array(vec![]))])
        ));
        assert!(!b.row_matches(1, &data(&[("amount", Value::Int(4))])));
    }

    #[test]
    fn the_size_bound_holds_and_edits_round_trip() {
        let mut x = 0x1234_5678_9ABC_DEF0u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..50 {
            let mut b = EventBlock::default();
            for _ in 0..(next() % 200) {
                let mut m = Map::new();
                for _ in 0..(next() % 6) {
                    let v = match next() % 6 {
                        0 => Value::Int(next() as i64),
                        1 => Value::Float((next() % 1000) as f64 / 7.0),
                        2 => Value::from("s".repeat((next() % 80) as usize)),
                        3 => Value::Bool(next() % 2 == 0),
                        4 => Value::Null,
                        _ => Value::Array(vec![Value::Int(1)]),
                    };
                    m.insert(format!("p{}", next() % 50), v);
                }
                let seq = next() % 100_000;
                b.insert(
                    u32::MAX - (next() % 3) as u32,
                    (next() % 86_400) as u32,
                    seq,
                    &Value::Map(m),
                );
            }
            if round % 3 == 0 && !b.is_empty() {
                b.remove((next() as usize) % b.len());
            }
            if b.is_empty() {
                continue;
            }
            let bytes = codec::encode(23, b"k", &b).unwrap();
            assert!(bytes.len() - 5 <= b.max_bytes(), "round {round}");
            assert_eq!(codec::decode::<EventBlock>(23, b"k", &bytes).unwrap(), b);
        }
    }

    #[test]
    fn broken_blocks_do_not_decode() {
        let mut b = EventBlock::default();
        b.insert(1, 1, 1, &data(&[("a", Value::from("s"))]));
        b.insert(1, 1, 2, &Value::Null);
        let cases: Vec<EventBlock> = vec![
            EventBlock::default(),
            EventBlock {
                secs: vec![1],
                ..b.clone()
            },
            EventBlock {
                secs: vec![1, 86_400],
                ..b.clone()
            },
            EventBlock {
                seqs: vec![2, 2],
                ..b.clone()
            },
            EventBlock {
                strings: vec![],
                ..b.clone()
            },
            EventBlock {
                names: vec!["b".into(), "a".into()],
                columns: vec![vec![Cell::Absent; 2]; 2],
                ..b.clone()
            },
        ];
        for bad in cases {
            let bytes = codec::encode(23, b"k", &bad).unwrap();
            assert!(
                codec::decode::<EventBlock>(23, b"k", &bytes).is_err(),
                "{bad:?}"
            );
        }
    }
}
