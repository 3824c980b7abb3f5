//! Parsing the condition language (text and App API filter JSON) into [`Expr`], and
//! printing an [`Expr`] back as canonical text.
//!
//! The grammar is in [`ast`](super::ast). This module settles its details:
//!
//! - **Keywords** (`and`, `or`, `not`, `all`, `unsubscribed`, `exists`, `count`, `within`,
//!   `contains`, `starts_with`, `true`, `false`, `now`) and the atom heads (`segment:`,
//!   `topic:`, `attr.`, `event:`, `delivery:`, `device.`, `related:`) are ASCII
//!   case-insensitive. Names, paths and strings are case-sensitive. Duration units are
//!   lowercase only (`30d`; `M` is not a unit, so it cannot be mistaken for months).
//! - **Precedence**: `not` binds tightest, then `and`, then `or`; parentheses group.
//! - **Shape of the tree**: an `and`/`or` with one operand is not produced (the operand is
//!   returned), and nested operators of the same kind are flattened:
//!   `a and (b and c)` is `And([a, b, c])`, `(a)` is `a`. `not not a` stays two `Not`s.
//! - **Whitespace** (Unicode white space) separates tokens and is optional wherever the
//!   meaning is unambiguous (`attr.a>1`, `not(all)`, `event:x [a = 1]`, `now - 7d`), but
//!   there is none inside an atom head: `segment:x`, `attr.a.b`, `related:1:acme`,
//!   `device.platform`, `30d`.
//! - **Names** after `segment:`, `event:`, `delivery:` and `related:TYPE:` are a bare word
//!   (Unicode letters and digits, `_`, `-`, `.`, `/`, `$`) or a double-quoted string. A **path**
//!   (`attr.a.b.c`, filter properties `[a.b = 1]`) is segments joined by `.`; each segment
//!   is a bare word without `.` or a quoted string, so `attr."a.b"` is the one-segment path
//!   `["a.b"]`. A **device field** is one such segment (`device."a.b"`, not `device.a.b`).
//!   Names and path segments are never empty (`segment:""` is refused).
//! - **Strings** are double-quoted; `\"` and `\\` are the only escapes (any other
//!   backslash is an error); every other character, newlines included, stands for itself.
//! - **Ids**: `segment:#3` is segment id 3 (`segment:3` is the segment *named* "3"),
//!   `topic:3`, `related:1`, `related:1:acme`, `related:1:"Acme Inc"`; ids are `u32`,
//!   written as plain digits.
//! - **Values**: `"string"`; integers (`i64`, optional sign: `-5`, `+5`); floats (a number
//!   with a fraction and/or exponent: `1.5`, `-2.0`, `1e3`, `2.5E-3`; finite only); `true`,
//!   `false`; `now`, `now-30d`, `now+2h`. A number glued to a letter, digit or `.`
//!   (`5abc`, `1.`, `1.2.3`) is refused rather than split.
//! - **Durations** (after `within`, and in `now±…`): digits and a unit `s`, `m`, `h`, `d`
//!   or `w`, no sign, and the number of seconds must fit in an `i64` (`now-…` may reach
//!   `i64::MIN`).
//! - **Occurrences**: `event:NAME [FILTERS] [count OP N] [within DURATION]`, in that order;
//!   a filter list holds at least one `PROP OP VALUE`; `count` takes `=`, `!=`, `<`,
//!   `<=`, `>`, `>=` (not `contains`/`starts_with`) and a non-negative integer (`u64`).
//! - **Operators**: `=`, `!=`, `<`, `<=`, `>`, `>=`, `contains`, `starts_with`; `exists`
//!   only directly after `attr.PATH` (not for devices or filter properties).
//! - **Limits**: at most [`MAX_INPUT_BYTES`] of text, and at most [`MAX_DEPTH`] levels of
//!   nesting (each `(` and each `not` is a level; JSON counts `and`/`or`/`not` objects), so
//!   no input can exhaust the stack.
//!
//! Every error is a [`ParseError`] with the byte offset of the offending token, what was
//! expected there, and what was found.
//!
//! The `Display` impls print **canonical text**: lowercase keywords, single spaces, names
//! quoted only when they are not a bare word, floats in Rust's shortest round-trip form
//! (always with a `.` or an exponent, so they stay floats), durations in the largest of
//! `d`, `h`, `m`, `s` that divides them (`7d`, `0s`; `w` is read but never written), `or`
//! parenthesized inside `and`, and `and`/`or` parenthesized under `not`. For every tree `t` that [`parse`] or [`parse_filter_json`] returns,
//! `parse(&t.to_string()) == Ok(t)`. (Trees built by hand that `parse` cannot produce,
//! such as an empty `And`, a NaN or an empty name, print as something sensible that may
//! not parse back to the same tree.)
//!
//! The App API filter JSON ([`parse_filter_json`]) maps onto the same tree: `and`, `or`,
//! `not`, `segment: {id}` and `attribute: {field, operator: "eq" | "exists", value?}`. It is
//! strict: exactly one key per filter object, no unknown keys, at least one operand in
//! `and`/`or`, `value` required with `eq` (a string, number or boolean) and refused with
//! `exists`, `field` split on `.` with no empty parts. The same flattening applies.

use std::fmt;

use serde_json::Value as Json;

use super::ast::{Atom, CmpOp, Expr, Filter, Literal, Occurrence, SegmentName};

/// The longest condition text [`parse`] accepts, in bytes.
pub const MAX_INPUT_BYTES: usize = 64 * 1024;

/// The deepest nesting [`parse`] and [`parse_filter_json`] accept: parentheses and `not`
/// in text, `and`/`or`/`not` objects in JSON.
pub const MAX_DEPTH: usize = 64;

/// Why a condition could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ParseError {
    /// The byte offset in the input of the offending token (0 for JSON filters, whose
    /// location is named in `expected`).
    pub position: usize,
    /// What would have been accepted there.
    pub expected: String,
    /// What was there instead (quoted), or `end of input`.
    pub found: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "at byte {}: expected {}, found {}",
            self.position, self.expected, self.found
        )
    }
}

impl std::error::Error for ParseError {}

// ---------------------------------------------------------------------------------------
// Text
// ---------------------------------------------------------------------------------------

const EXPECTED_CONDITION: &str = "a condition (all, unsubscribed, segment:, topic:, attr., \
     event:, delivery:, device. or related:), \"not\" or \"(\"";
const EXPECTED_OP: &str = "a comparison operator (=, !=, <, <=, >, >=, contains, starts_with)";
const EXPECTED_ATTR_OP: &str =
    "a comparison operator (=, !=, <, <=, >, >=, contains, starts_with) or \"exists\"";
const EXPECTED_COUNT_OP: &str = "a count comparison (=, !=, <, <=, >, >=)";
const EXPECTED_COUNT: &str = "a count (a whole number from 0 to 18446744073709551615)";
const EXPECTED_VALUE: &str =
    "a value (a \"quoted string\", a number, true, false, now, now-30d or now+2h)";
const EXPECTED_NUMBER: &str = "a number (digits with an optional sign, fraction and exponent, \
     not followed by a letter, digit or \".\")";
const EXPECTED_INT: &str = "a whole number from -9223372036854775808 to 9223372036854775807 \
     (write a fraction, like 1.0, for a float)";
const EXPECTED_DURATION: &str = "a duration (a whole number and a unit: s, m, h, d or w)";
const EXPECTED_UNIT: &str = "a duration unit right after the number (s, m, h, d or w)";
const EXPECTED_SECONDS: &str = "a duration that fits in a signed 64-bit number of seconds";

/// Parses condition text into a tree.
///
/// # Errors
/// A [`ParseError`] at the first token that does not fit the grammar, or when the text is
/// longer than [`MAX_INPUT_BYTES`] or nested deeper than [`MAX_DEPTH`].
///
/// # Examples
/// ```
/// use profiledb::query::{parse, Atom, Expr};
///
/// let expr = parse("topic:3 and not unsubscribed").unwrap();
/// assert_eq!(
///     expr,
///     Expr::And(vec![
///         Expr::Atom(Atom::Topic(3)),
///         Expr::Not(Box::new(Expr::Atom(Atom::Unsubscribed))),
///     ])
/// );
/// assert_eq!(expr.to_string(), "topic:3 and not unsubscribed");
///
/// let err = parse("attr.plan foo").unwrap_err();
/// assert_eq!(err.position, 10);
/// ```
pub fn parse(text: &str) -> Result<Expr, ParseError> {
    if text.len() > MAX_INPUT_BYTES {
        return Err(ParseError {
            position: MAX_INPUT_BYTES,
            expected: format!("at most {MAX_INPUT_BYTES} bytes of condition text"),
            found: format!("{} bytes", text.len()),
        });
    }
    let mut parser = Parser {
        src: text,
        pos: 0,
        depth: 0,
        tail: "",
    };
    let expr = parser.expr()?;
    parser.skip_ws();
    if parser.pos < text.len() {
        return Err(parser.error_here(format!(
            "{}\"and\", \"or\" or the end of the input",
            parser.tail
        )));
    }
    Ok(expr)
}

/// Characters of a bare name (after `segment:`, `event:`, `delivery:`, `related:N:`).
fn is_name_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | '$')
}

/// Characters of a bare path segment or device field: a bare name without `.`.
fn is_segment_char(c: char) -> bool {
    c != '.' && is_name_char(c)
}

/// Characters of a keyword; a keyword is a whole run of these.
fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn push_and(operands: &mut Vec<Expr>, expr: Expr) {
    match expr {
        Expr::And(inner) => operands.extend(inner),
        other => operands.push(other),
    }
}

fn push_or(operands: &mut Vec<Expr>, expr: Expr) {
    match expr {
        Expr::Or(inner) => operands.extend(inner),
        other => operands.push(other),
    }
}

/// One operand is returned as itself; several are combined with `make`.
fn combine(mut operands: Vec<Expr>, make: fn(Vec<Expr>) -> Expr) -> Expr {
    if operands.len() == 1 {
        if let Some(only) = operands.pop() {
            return only;
        }
    }
    make(operands)
}

/// Describes the token at `pos` for [`ParseError::found`].
fn describe(src: &str, pos: usize) -> String {
    const SHOWN: usize = 32;
    let rest = src.get(pos..).unwrap_or("");
    let Some(first) = rest.chars().next() else {
        return "end of input".to_owned();
    };
    let run_end = |pred: fn(char) -> bool| {
        rest.char_indices()
            .skip(1)
            .find(|&(_, c)| !pred(c))
            .map_or(rest.len(), |(i, _)| i)
    };
    let end = if first == '"' {
        string_token_len(rest)
    } else if is_name_char(first) || matches!(first, '+' | '#') {
        run_end(is_name_char)
    } else if matches!(first, '=' | '!' | '<' | '>') {
        run_end(|c| matches!(c, '=' | '!' | '<' | '>'))
    } else {
        first.len_utf8()
    };
    let token = rest.get(..end).unwrap_or(rest);
    let (token, is_string) = match token.strip_prefix('"') {
        Some(inner) => (inner.strip_suffix('"').unwrap_or(inner), true),
        None => (token, false),
    };
    let mut shown: String = token.chars().take(SHOWN).collect();
    if token.chars().nth(SHOWN).is_some() {
        shown.push_str("...");
    }
    if is_string {
        format!("the string {shown:?}")
    } else {
        format!("{shown:?}")
    }
}

/// The byte length of the quoted string starting `text` (to its closing quote, or all of
/// `text` if it is unterminated).
fn string_token_len(text: &str) -> usize {
    let mut escaped = false;
    for (i, c) in text.char_indices().skip(1) {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return i + 1,
            _ => {}
        }
    }
    text.len()
}

struct Parser<'a> {
    src: &'a str,
    /// Byte offset of the next unread character (always on a char boundary).
    pos: usize,
    /// Parentheses and `not`s currently open.
    depth: usize,
    /// What else could have followed the last atom (`"count", "within", ` after an
    /// event), for the error when something else follows it.
    tail: &'static str,
}

impl<'a> Parser<'a> {
    fn rest(&self) -> &'a str {
        self.src.get(self.pos..).unwrap_or("")
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn skip_ws(&mut self) {
        let rest = self.rest();
        self.pos += rest.len() - rest.trim_start().len();
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    /// The run of characters matching `pred` at the cursor (not consumed).
    fn run(&self, pred: impl Fn(char) -> bool) -> &'a str {
        let rest = self.rest();
        let end = rest
            .char_indices()
            .find(|&(_, c)| !pred(c))
            .map_or(rest.len(), |(i, _)| i);
        rest.get(..end).unwrap_or("")
    }

    /// The keyword-like word at the cursor (not consumed).
    fn word(&self) -> &'a str {
        self.run(is_word_char)
    }

    fn at_keyword(&self, keyword: &str) -> bool {
        self.word().eq_ignore_ascii_case(keyword)
    }

    fn error(&self, position: usize, expected: impl Into<String>) -> ParseError {
        ParseError {
            position,
            expected: expected.into(),
            found: describe(self.src, position),
        }
    }

    fn error_here(&self, expected: impl Into<String>) -> ParseError {
        self.error(self.pos, expected)
    }

    /// `expr := term ("or" term)*`
    fn expr(&mut self) -> Result<Expr, ParseError> {
        let mut operands = Vec::new();
        loop {
            let term = self.term()?;
            push_or(&mut operands, term);
            self.skip_ws();
            if !self.at_keyword("or") {
                break;
            }
            self.pos += "or".len();
        }
        Ok(combine(operands, Expr::Or))
    }

    /// `term := factor ("and" factor)*`
    fn term(&mut self) -> Result<Expr, ParseError> {
        let mut operands = Vec::new();
        loop {
            let factor = self.factor()?;
            push_and(&mut operands, factor);
            self.skip_ws();
            if !self.at_keyword("and") {
                break;
            }
            self.pos += "and".len();
        }
        Ok(combine(operands, Expr::And))
    }

    /// Opens a level of nesting at the cursor, refusing one too many.
    fn enter(&mut self) -> Result<(), ParseError> {
        if self.depth >= MAX_DEPTH {
            return Err(self.error_here(format!(
                "conditions nested at most {MAX_DEPTH} deep (counting parentheses and \"not\")"
            )));
        }
        self.depth += 1;
        Ok(())
    }

    /// `factor := "not" factor | "(" expr ")" | atom`
    fn factor(&mut self) -> Result<Expr, ParseError> {
        self.skip_ws();
        if self.peek() == Some('(') {
            self.enter()?;
            self.pos += 1;
            let inner = self.expr()?;
            self.skip_ws();
            if !self.eat(')') {
                return Err(self.error_here(format!("{}\"and\", \"or\" or \")\"", self.tail)));
            }
            self.tail = "";
            self.depth -= 1;
            return Ok(inner);
        }
        if self.at_keyword("not") {
            self.enter()?;
            self.pos += "not".len();
            let operand = self.factor()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(operand)));
        }
        self.atom().map(Expr::Atom)
    }

    fn atom(&mut self) -> Result<Atom, ParseError> {
        self.tail = "";
        let start = self.pos;
        let word = self.word();
        let head = word.to_ascii_lowercase();
        let separator = match head.as_str() {
            "all" | "unsubscribed" => None,
            "segment" | "topic" | "event" | "delivery" | "related" => Some(':'),
            "attr" | "device" => Some('.'),
            _ => return Err(self.error(start, EXPECTED_CONDITION)),
        };
        self.pos += word.len();
        if let Some(separator) = separator {
            if !self.eat(separator) {
                return Err(self.error_here(format!("\"{separator}\" right after \"{head}\"")));
            }
        }
        match head.as_str() {
            "all" => Ok(Atom::All),
            "unsubscribed" => Ok(Atom::Unsubscribed),
            "segment" => {
                if self.eat('#') {
                    let id = self.id("a segment id (a whole number from 0 to 4294967295)")?;
                    Ok(Atom::Segment(SegmentName::Id(id)))
                } else {
                    let name = self.name(
                        is_name_char,
                        "a segment name (a word or a non-empty \"quoted string\") or #ID",
                    )?;
                    Ok(Atom::Segment(SegmentName::Name(name)))
                }
            }
            "topic" => Ok(Atom::Topic(
                self.id("a topic id (a whole number from 0 to 4294967295)")?,
            )),
            "event" => Ok(Atom::Event(self.occurrence(
                "an event name (a word or a non-empty \"quoted string\")",
            )?)),
            "delivery" => Ok(Atom::Delivery(self.occurrence(
                "a delivery metric (a word or a non-empty \"quoted string\")",
            )?)),
            "related" => {
                let type_id = self.id("an object type id (a whole number from 0 to 4294967295)")?;
                let object_id = if self.eat(':') {
                    Some(self.name(
                        is_name_char,
                        "an object id (a word or a non-empty \"quoted string\")",
                    )?)
                } else {
                    None
                };
                Ok(Atom::Related { type_id, object_id })
            }
            "attr" => {
                let path =
                    self.path("an attribute name (a word or a non-empty \"quoted string\")")?;
                self.skip_ws();
                if self.at_keyword("exists") {
                    self.pos += "exists".len();
                    return Ok(Atom::AttrExists { path });
                }
                let op = self.op(EXPECTED_ATTR_OP, true)?;
                self.skip_ws();
                let value = self.value()?;
                Ok(Atom::Attr { path, op, value })
            }
            _ => {
                let field = self.name(
                    is_segment_char,
                    "a device field (platform, last_used, status, an attribute name or a \
                     non-empty \"quoted string\")",
                )?;
                self.skip_ws();
                let op = self.op(EXPECTED_OP, true)?;
                self.skip_ws();
                let value = self.value()?;
                Ok(Atom::Device { field, op, value })
            }
        }
    }

    /// `NAME [FILTERS] [count OP N] [within DURATION]`, after `event:` or `delivery:`.
    fn occurrence(&mut self, expected_name: &str) -> Result<Occurrence, ParseError> {
        let name = self.name(is_name_char, expected_name)?;
        self.skip_ws();
        let mut filters = Vec::new();
        if self.eat('[') {
            loop {
                self.skip_ws();
                let path =
                    self.path("a property name (a word or a non-empty \"quoted string\")")?;
                self.skip_ws();
                let op = self.op(EXPECTED_OP, true)?;
                self.skip_ws();
                let value = self.value()?;
                filters.push(Filter { path, op, value });
                self.skip_ws();
                if self.eat(']') {
                    break;
                }
                if !self.eat(',') {
                    return Err(self.error_here("\",\" or \"]\""));
                }
            }
            self.skip_ws();
        }
        let mut count = None;
        if self.at_keyword("count") {
            self.pos += "count".len();
            self.skip_ws();
            let op = self.op(EXPECTED_COUNT_OP, false)?;
            self.skip_ws();
            let at = self.pos;
            let digits = self.digits(EXPECTED_COUNT)?;
            let n = digits
                .parse::<u64>()
                .map_err(|_| self.error(at, EXPECTED_COUNT))?;
            count = Some((op, n));
            self.skip_ws();
        }
        let mut within = None;
        if self.at_keyword("within") {
            self.pos += "within".len();
            self.skip_ws();
            let at = self.pos;
            let seconds = self.duration()?;
            within = Some(i64::try_from(seconds).map_err(|_| self.error(at, EXPECTED_SECONDS))?);
        }
        self.tail = if within.is_some() {
            ""
        } else if count.is_some() {
            "\"within\", "
        } else if !filters.is_empty() {
            "\"count\", \"within\", "
        } else {
            "\"[\", \"count\", \"within\", "
        };
        Ok(Occurrence {
            name,
            filters,
            count,
            within,
        })
    }

    /// A bare word of `bare` characters or a quoted string; never empty.
    fn name(&mut self, bare: fn(char) -> bool, expected: &str) -> Result<String, ParseError> {
        let start = self.pos;
        let name = if self.peek() == Some('"') {
            self.quoted()?
        } else {
            let word = self.run(bare);
            self.pos += word.len();
            word.to_owned()
        };
        if name.is_empty() {
            return Err(self.error(start, expected));
        }
        Ok(name)
    }

    /// Path segments joined by `.`.
    fn path(&mut self, expected: &str) -> Result<Vec<String>, ParseError> {
        let mut path = vec![self.name(is_segment_char, expected)?];
        while self.eat('.') {
            path.push(self.name(is_segment_char, expected)?);
        }
        Ok(path)
    }

    /// A double-quoted string at the cursor, with `\"` and `\\` escapes.
    fn quoted(&mut self) -> Result<String, ParseError> {
        let start = self.pos;
        let mut out = String::new();
        let mut chars = self.rest().char_indices().skip(1);
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.pos = start + i + 1;
                    return Ok(out);
                }
                '\\' => match chars.next() {
                    Some((_, escaped @ ('"' | '\\'))) => out.push(escaped),
                    _ => {
                        return Err(self.error(
                            start + i,
                            "\\\" or \\\\ (the only escapes in a quoted string)",
                        ))
                    }
                },
                _ => out.push(c),
            }
        }
        Err(self.error(
            self.src.len(),
            format!("a closing '\"' for the string that starts at byte {start}"),
        ))
    }

    /// ASCII digits not glued to a following letter, digit, `_` or `.`; consumed.
    fn digits(&mut self, expected: &str) -> Result<&'a str, ParseError> {
        let start = self.pos;
        let digits = self.run(|c| c.is_ascii_digit());
        let glued = self
            .rest()
            .get(digits.len()..)
            .and_then(|after| after.chars().next())
            .is_some_and(|c| is_word_char(c) || c == '.');
        if digits.is_empty() || glued {
            return Err(self.error(start, expected));
        }
        self.pos += digits.len();
        Ok(digits)
    }

    fn id(&mut self, expected: &str) -> Result<u32, ParseError> {
        let start = self.pos;
        let digits = self.digits(expected)?;
        digits
            .parse::<u32>()
            .map_err(|_| self.error(start, expected))
    }

    /// A comparison operator; `contains`/`starts_with` only when `words`.
    fn op(&mut self, expected: &str, words: bool) -> Result<CmpOp, ParseError> {
        const SYMBOLS: [(&str, CmpOp); 6] = [
            ("!=", CmpOp::Ne),
            ("<=", CmpOp::Le),
            (">=", CmpOp::Ge),
            ("=", CmpOp::Eq),
            ("<", CmpOp::Lt),
            (">", CmpOp::Gt),
        ];
        let rest = self.rest();
        for (symbol, op) in SYMBOLS {
            if rest.starts_with(symbol) {
                self.pos += symbol.len();
                return Ok(op);
            }
        }
        if words {
            let word = self.word();
            let op = if word.eq_ignore_ascii_case("contains") {
                Some(CmpOp::Contains)
            } else if word.eq_ignore_ascii_case("starts_with") {
                Some(CmpOp::StartsWith)
            } else {
                None
            };
            if let Some(op) = op {
                self.pos += word.len();
                return Ok(op);
            }
        }
        Err(self.error_here(expected))
    }

    fn value(&mut self) -> Result<Literal, ParseError> {
        let start = self.pos;
        match self.peek() {
            Some('"') => return self.quoted().map(Literal::String),
            Some(c) if c.is_ascii_digit() || c == '-' || c == '+' => return self.number(),
            _ => {}
        }
        let word = self.word();
        let keyword = word.to_ascii_lowercase();
        let literal = match keyword.as_str() {
            "true" => Literal::Bool(true),
            "false" => Literal::Bool(false),
            "now" => {
                self.pos += word.len();
                return self.now_offset();
            }
            _ => return Err(self.error(start, EXPECTED_VALUE)),
        };
        self.pos += word.len();
        Ok(literal)
    }

    /// The optional `-30d` / `+2h` after `now`.
    fn now_offset(&mut self) -> Result<Literal, ParseError> {
        let after_now = self.pos;
        self.skip_ws();
        let sign: i128 = match self.peek() {
            Some('+') => 1,
            Some('-') => -1,
            _ => {
                self.pos = after_now;
                return Ok(Literal::Now(0));
            }
        };
        self.pos += 1;
        self.skip_ws();
        let at = self.pos;
        let seconds = self.duration()? * sign;
        let seconds = i64::try_from(seconds).map_err(|_| self.error(at, EXPECTED_SECONDS))?;
        Ok(Literal::Now(seconds))
    }

    /// Digits and a unit; the number of seconds (range checked by the caller).
    fn duration(&mut self) -> Result<i128, ParseError> {
        let start = self.pos;
        let digits = self.run(|c| c.is_ascii_digit());
        if digits.is_empty() {
            return Err(self.error(start, EXPECTED_DURATION));
        }
        let n = digits
            .parse::<u64>()
            .map_err(|_| self.error(start, EXPECTED_SECONDS))?;
        self.pos += digits.len();
        let unit = self.word();
        let scale: i128 = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3_600,
            "d" => 86_400,
            "w" => 604_800,
            _ => return Err(self.error_here(EXPECTED_UNIT)),
        };
        self.pos += unit.len();
        Ok(i128::from(n) * scale)
    }

    /// `[+-]digits[.digits][(e|E)[+-]digits]`: a float if it has a fraction or exponent.
    fn number(&mut self) -> Result<Literal, ParseError> {
        let start = self.pos;
        let rest = self.rest();
        let bytes = rest.as_bytes();
        let digits_at = |i: usize| {
            bytes
                .get(i..)
                .map_or(0, |b| b.iter().take_while(|b| b.is_ascii_digit()).count())
        };
        let mut end = usize::from(matches!(bytes.first(), Some(b'+' | b'-')));
        let int_digits = digits_at(end);
        if int_digits == 0 {
            return Err(self.error(start, EXPECTED_VALUE));
        }
        end += int_digits;
        let mut float = false;
        if bytes.get(end) == Some(&b'.') {
            let fraction = digits_at(end + 1);
            if fraction > 0 {
                end += 1 + fraction;
                float = true;
            }
        }
        if matches!(bytes.get(end), Some(b'e' | b'E')) {
            let sign = usize::from(matches!(bytes.get(end + 1), Some(b'+' | b'-')));
            let exponent = digits_at(end + 1 + sign);
            if exponent > 0 {
                end += 1 + sign + exponent;
                float = true;
            }
        }
        let glued = rest
            .get(end..)
            .and_then(|after| after.chars().next())
            .is_some_and(|c| is_word_char(c) || c == '.');
        if glued {
            return Err(self.error(start, EXPECTED_NUMBER));
        }
        let text = rest.get(..end).unwrap_or("");
        let literal = if float {
            match text.parse::<f64>() {
                Ok(x) if x.is_finite() => Literal::Float(x),
                _ => return Err(self.error(start, "a finite number")),
            }
        } else {
            Literal::Int(
                text.parse::<i64>()
                    .map_err(|_| self.error(start, EXPECTED_INT))?,
            )
        };
        self.pos = start + end;
        Ok(literal)
    }
}

// ---------------------------------------------------------------------------------------
// App API filter JSON
// ---------------------------------------------------------------------------------------

const FILTER_KEYS: &str = "exactly one of \"and\", \"or\", \"not\", \"segment\" or \"attribute\"";

/// Parses a Customer.io App API filter (`{"and": [{"segment": {"id": 3}}, ...]}`) into a
/// tree.
///
/// # Errors
/// A [`ParseError`] with `position` 0 whose `expected` names the offending key and its
/// location (like `and[1].attribute`): a filter object with zero or several keys, an
/// unknown key or operator, a value of the wrong type, an empty `and`/`or`, or nesting
/// deeper than [`MAX_DEPTH`].
///
/// # Examples
/// ```
/// use profiledb::query::{parse, parse_filter_json};
///
/// let json = serde_json::json!({"and": [
///     {"segment": {"id": 3}},
///     {"or": [{"attribute": {"field": "interest", "operator": "eq", "value": "roadrunners"}}]},
/// ]});
/// let expr = parse_filter_json(&json).unwrap();
/// assert_eq!(expr, parse(r#"segment:#3 and attr.interest = "roadrunners""#).unwrap());
/// ```
pub fn parse_filter_json(json: &Json) -> Result<Expr, ParseError> {
    json_filter(json, "", 0)
}

fn json_error(expected: String, found: String) -> ParseError {
    ParseError {
        position: 0,
        expected,
        found,
    }
}

/// The location `path` in an error message.
fn at(path: &str) -> &str {
    if path.is_empty() {
        "the top level"
    } else {
        path
    }
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Describes a JSON value for [`ParseError::found`].
fn describe_json(value: &Json) -> String {
    const SHOWN: usize = 32;
    match value {
        Json::Null => "null".to_owned(),
        Json::Bool(b) => b.to_string(),
        Json::Number(n) => n.to_string(),
        Json::String(s) => {
            let mut shown: String = s.chars().take(SHOWN).collect();
            if s.chars().nth(SHOWN).is_some() {
                shown.push_str("...");
            }
            format!("{shown:?}")
        }
        Json::Array(_) => "an array".to_owned(),
        Json::Object(_) => "an object".to_owned(),
    }
}

fn json_filter(value: &Json, path: &str, depth: usize) -> Result<Expr, ParseError> {
    let Some(object) = value.as_object() else {
        return Err(json_error(
            format!("a filter object with {FILTER_KEYS} at {}", at(path)),
            describe_json(value),
        ));
    };
    let mut entries = object.iter();
    let (key, inner) = match (entries.next(), entries.next()) {
        (Some(entry), None) => entry,
        (None, _) => {
            return Err(json_error(
                format!("{FILTER_KEYS} at {}", at(path)),
                "an empty object".to_owned(),
            ))
        }
        (Some(_), Some(_)) => {
            let keys: Vec<String> = object.keys().map(|k| format!("{k:?}")).collect();
            return Err(json_error(
                format!("{FILTER_KEYS} at {}", at(path)),
                format!("the keys {}", keys.join(", ")),
            ));
        }
    };
    match key.as_str() {
        "and" | "or" | "not" if depth >= MAX_DEPTH => Err(json_error(
            format!("filters nested at most {MAX_DEPTH} deep at {}", at(path)),
            format!("{key:?} nested {} deep", depth + 1),
        )),
        "and" | "or" => {
            let Some(items) = inner.as_array() else {
                return Err(json_error(
                    format!("{key:?} to be an array of filters at {}", at(path)),
                    describe_json(inner),
                ));
            };
            if items.is_empty() {
                return Err(json_error(
                    format!("{key:?} to hold at least one filter at {}", at(path)),
                    "an empty array".to_owned(),
                ));
            }
            let here = child(path, key);
            let mut operands = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let operand = json_filter(item, &format!("{here}[{i}]"), depth + 1)?;
                if key == "and" {
                    push_and(&mut operands, operand);
                } else {
                    push_or(&mut operands, operand);
                }
            }
            Ok(if key == "and" {
                combine(operands, Expr::And)
            } else {
                combine(operands, Expr::Or)
            })
        }
        "not" => {
            let operand = json_filter(inner, &child(path, "not"), depth + 1)?;
            Ok(Expr::Not(Box::new(operand)))
        }
        "segment" => json_segment(inner, path).map(Expr::Atom),
        "attribute" => json_attribute(inner, path).map(Expr::Atom),
        other => Err(json_error(
            format!("{FILTER_KEYS} at {}", at(path)),
            format!("the key {other:?}"),
        )),
    }
}

/// `{"id": 3}` under `"segment"` in the filter at `parent`.
fn json_segment(inner: &Json, parent: &str) -> Result<Atom, ParseError> {
    let Some(object) = inner.as_object() else {
        return Err(json_error(
            format!(
                "\"segment\" to be an object like {{\"id\": 3}} at {}",
                at(parent)
            ),
            describe_json(inner),
        ));
    };
    let here = child(parent, "segment");
    if let Some(key) = object.keys().find(|k| k.as_str() != "id") {
        return Err(json_error(
            format!("only \"id\" at {here}"),
            format!("the key {key:?}"),
        ));
    }
    let expected_id = || {
        format!(
            "\"id\" to be a segment id (a whole number from 0 to {}) at {here}",
            u32::MAX
        )
    };
    let Some(id) = object.get("id") else {
        return Err(json_error(expected_id(), "no \"id\"".to_owned()));
    };
    let id = id
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| json_error(expected_id(), describe_json(id)))?;
    Ok(Atom::Segment(SegmentName::Id(id)))
}

/// `{"field", "operator", "value"?}` under `"attribute"` in the filter at `parent`.
fn json_attribute(inner: &Json, parent: &str) -> Result<Atom, ParseError> {
    let Some(object) = inner.as_object() else {
        return Err(json_error(
            format!(
                "\"attribute\" to be an object with \"field\", \"operator\" and \"value\" at {}",
                at(parent)
            ),
            describe_json(inner),
        ));
    };
    let here = child(parent, "attribute");
    if let Some(key) = object
        .keys()
        .find(|k| !matches!(k.as_str(), "field" | "operator" | "value"))
    {
        return Err(json_error(
            format!("only \"field\", \"operator\" and \"value\" at {here}"),
            format!("the key {key:?}"),
        ));
    }

    let expected_field =
        || format!("\"field\" to be an attribute name (dotted for a nested path) at {here}");
    let path: Vec<String> = match object.get("field") {
        Some(Json::String(field)) => {
            let path: Vec<String> = field.split('.').map(str::to_owned).collect();
            if path.iter().any(String::is_empty) {
                return Err(json_error(
                    format!(
                        "\"field\" to be an attribute name with no empty part between dots at {here}"
                    ),
                    format!("{field:?}"),
                ));
            }
            path
        }
        Some(other) => return Err(json_error(expected_field(), describe_json(other))),
        None => return Err(json_error(expected_field(), "no \"field\"".to_owned())),
    };

    let expected_operator = || format!("\"operator\" to be \"eq\" or \"exists\" at {here}");
    let exists = match object.get("operator") {
        Some(Json::String(op)) if op == "eq" => false,
        Some(Json::String(op)) if op == "exists" => true,
        Some(other) => return Err(json_error(expected_operator(), describe_json(other))),
        None => {
            return Err(json_error(
                expected_operator(),
                "no \"operator\"".to_owned(),
            ))
        }
    };

    let value = object.get("value");
    if exists {
        return match value {
            Some(value) => Err(json_error(
                format!("no \"value\" with \"operator\": \"exists\" at {here}"),
                describe_json(value),
            )),
            None => Ok(Atom::AttrExists { path }),
        };
    }
    let expected_value =
        || format!("\"value\" to be a string, number or boolean (with \"eq\") at {here}");
    let value = match value {
        Some(Json::String(s)) => Literal::String(s.clone()),
        Some(Json::Bool(b)) => Literal::Bool(*b),
        Some(Json::Number(n)) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Literal::Int(i),
            (None, Some(x)) if !n.is_u64() && x.is_finite() => Literal::Float(x),
            _ => {
                return Err(json_error(
                    format!(
                        "\"value\" to be a number that fits in a signed 64-bit integer or a \
                         float at {here}"
                    ),
                    n.to_string(),
                ))
            }
        },
        Some(other) => return Err(json_error(expected_value(), describe_json(other))),
        None => return Err(json_error(expected_value(), "no \"value\"".to_owned())),
    };
    Ok(Atom::Attr {
        path,
        op: CmpOp::Eq,
        value,
    })
}

// ---------------------------------------------------------------------------------------
// Canonical text
// ---------------------------------------------------------------------------------------

/// Writes `s` bare if it is a non-empty run of `bare` characters, quoted otherwise.
fn write_name(f: &mut fmt::Formatter<'_>, s: &str, bare: fn(char) -> bool) -> fmt::Result {
    if !s.is_empty() && s.chars().all(bare) {
        f.write_str(s)
    } else {
        write_quoted(f, s)
    }
}

fn write_quoted(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in s.chars() {
        if matches!(c, '"' | '\\') {
            f.write_str("\\")?;
        }
        write!(f, "{c}")?;
    }
    f.write_str("\"")
}

fn write_path(f: &mut fmt::Formatter<'_>, path: &[String]) -> fmt::Result {
    for (i, segment) in path.iter().enumerate() {
        if i > 0 {
            f.write_str(".")?;
        }
        write_name(f, segment, is_segment_char)?;
    }
    Ok(())
}

/// Seconds in the largest unit up to days that divides them exactly (`7d`, not `1w`).
fn write_duration(f: &mut fmt::Formatter<'_>, seconds: u64) -> fmt::Result {
    const UNITS: [(u64, &str); 3] = [(86_400, "d"), (3_600, "h"), (60, "m")];
    for (size, unit) in UNITS {
        if seconds != 0 && seconds % size == 0 {
            return write!(f, "{}{unit}", seconds / size);
        }
    }
    write!(f, "{seconds}s")
}

fn write_occurrence(f: &mut fmt::Formatter<'_>, head: &str, occ: &Occurrence) -> fmt::Result {
    write!(f, "{head}:")?;
    write_name(f, &occ.name, is_name_char)?;
    if !occ.filters.is_empty() {
        f.write_str("[")?;
        for (i, filter) in occ.filters.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{filter}")?;
        }
        f.write_str("]")?;
    }
    if let Some((op, n)) = occ.count {
        write!(f, " count {op} {n}")?;
    }
    if let Some(within) = occ.within {
        f.write_str(" within ")?;
        match u64::try_from(within) {
            Ok(seconds) => write_duration(f, seconds)?,
            Err(_) => write!(f, "{within}s")?,
        }
    }
    Ok(())
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Atom(atom) => write!(f, "{atom}"),
            Expr::Not(operand) => match **operand {
                Expr::And(_) | Expr::Or(_) => write!(f, "not ({operand})"),
                _ => write!(f, "not {operand}"),
            },
            Expr::And(operands) => match operands.as_slice() {
                [] => f.write_str("all"),
                [only] => write!(f, "{only}"),
                _ => {
                    for (i, operand) in operands.iter().enumerate() {
                        if i > 0 {
                            f.write_str(" and ")?;
                        }
                        match operand {
                            Expr::Or(_) => write!(f, "({operand})")?,
                            _ => write!(f, "{operand}")?,
                        }
                    }
                    Ok(())
                }
            },
            Expr::Or(operands) => match operands.as_slice() {
                [] => f.write_str("not all"),
                [only] => write!(f, "{only}"),
                _ => {
                    for (i, operand) in operands.iter().enumerate() {
                        if i > 0 {
                            f.write_str(" or ")?;
                        }
                        write!(f, "{operand}")?;
                    }
                    Ok(())
                }
            },
        }
    }
}

impl fmt::Display for Atom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Atom::All => f.write_str("all"),
            Atom::Unsubscribed => f.write_str("unsubscribed"),
            Atom::Segment(name) => write!(f, "segment:{name}"),
            Atom::Topic(id) => write!(f, "topic:{id}"),
            Atom::Attr { path, op, value } => {
                f.write_str("attr.")?;
                write_path(f, path)?;
                write!(f, " {op} {value}")
            }
            Atom::AttrExists { path } => {
                f.write_str("attr.")?;
                write_path(f, path)?;
                f.write_str(" exists")
            }
            Atom::Event(occ) => write_occurrence(f, "event", occ),
            Atom::Delivery(occ) => write_occurrence(f, "delivery", occ),
            Atom::Device { field, op, value } => {
                f.write_str("device.")?;
                write_name(f, field, is_segment_char)?;
                write!(f, " {op} {value}")
            }
            Atom::Related { type_id, object_id } => {
                write!(f, "related:{type_id}")?;
                if let Some(object_id) = object_id {
                    f.write_str(":")?;
                    write_name(f, object_id, is_name_char)?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for SegmentName {
    /// `#3` or the name (quoted unless a bare word), as after `segment:`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SegmentName::Id(id) => write!(f, "#{id}"),
            SegmentName::Name(name) => write_name(f, name, is_name_char),
        }
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_path(f, &self.path)?;
        write!(f, " {} {}", self.op, self.value)
    }
}

impl fmt::Display for CmpOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
            CmpOp::Contains => "contains",
            CmpOp::StartsWith => "starts_with",
        })
    }
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::String(s) => write_quoted(f, s),
            Literal::Int(n) => write!(f, "{n}"),
            // Debug is the shortest text that parses back to the same f64, and always has a
            // `.` or an exponent, so the literal stays a float.
            Literal::Float(x) => write!(f, "{x:?}"),
            Literal::Bool(b) => write!(f, "{b}"),
            Literal::Now(0) => f.write_str("now"),
            Literal::Now(seconds) => {
                f.write_str(if *seconds < 0 { "now-" } else { "now+" })?;
                write_duration(f, seconds.unsigned_abs())
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::RngSeed;
    use serde_json::json;

    fn ok(text: &str) -> Expr {
        match parse(text) {
            Ok(expr) => expr,
            Err(e) => panic!("{text:?} did not parse: {e}"),
        }
    }

    fn atom(text: &str) -> Atom {
        match ok(text) {
            Expr::Atom(atom) => atom,
            other => panic!("{text:?} is not an atom: {other:?}"),
        }
    }

    /// Parses, checks the canonical text parses back to the same tree, returns the tree.
    fn round(text: &str) -> Expr {
        let expr = ok(text);
        let printed = expr.to_string();
        assert_eq!(
            parse(&printed),
            Ok(expr.clone()),
            "{text:?} printed as {printed:?}"
        );
        expr
    }

    fn err(text: &str) -> ParseError {
        match parse(text) {
            Ok(expr) => panic!("{text:?} parsed as {expr:?}"),
            Err(e) => e,
        }
    }

    #[track_caller]
    fn assert_err(text: &str, position: usize, expected: &str, found: &str) {
        let e = err(text);
        assert_eq!(e.position, position, "{text:?}: {e}");
        assert!(e.expected.contains(expected), "{text:?}: {e}");
        assert_eq!(e.found, found, "{text:?}: {e}");
    }

    fn s(text: &str) -> String {
        text.to_owned()
    }

    fn path(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|p| s(p)).collect()
    }

    fn attr(parts: &[&str], op: CmpOp, value: Literal) -> Expr {
        Expr::Atom(Atom::Attr {
            path: path(parts),
            op,
            value,
        })
    }

    fn topic(id: u32) -> Expr {
        Expr::Atom(Atom::Topic(id))
    }

    fn not(e: Expr) -> Expr {
        Expr::Not(Box::new(e))
    }

    fn occ(name: &str) -> Occurrence {
        Occurrence {
            name: s(name),
            filters: vec![],
            count: None,
            within: None,
        }
    }

    // ---- atoms ------------------------------------------------------------------------

    #[test]
    fn all_and_unsubscribed() {
        assert_eq!(atom("all"), Atom::All);
        assert_eq!(atom("  ALL\n"), Atom::All);
        assert_eq!(atom("unsubscribed"), Atom::Unsubscribed);
        assert_eq!(atom("Unsubscribed"), Atom::Unsubscribed);
        assert_err("allx", 0, "a condition", "\"allx\"");
    }

    #[test]
    fn segment_atoms() {
        let name = |n: &str| Atom::Segment(SegmentName::Name(s(n)));
        assert_eq!(atom("segment:trial"), name("trial"));
        assert_eq!(atom("SEGMENT:trial"), name("trial"));
        assert_eq!(atom("segment:Trial"), name("Trial"));
        assert_eq!(atom("segment:\"Trial users\""), name("Trial users"));
        assert_eq!(atom("segment:a_b-c.d/e$f9"), name("a_b-c.d/e$f9"));
        assert_eq!(atom("segment:café"), name("café"));
        assert_eq!(atom("segment:#3"), Atom::Segment(SegmentName::Id(3)));
        assert_eq!(
            atom("segment:#4294967295"),
            Atom::Segment(SegmentName::Id(u32::MAX))
        );
        assert_eq!(atom("segment:3"), name("3"));
        assert_eq!(atom("segment:\"#3\""), name("#3"));
        assert_eq!(atom("segment:and"), name("and"));
        assert_err("segment:#4294967296", 9, "a segment id", "\"4294967296\"");
        assert_err("segment:#x", 9, "a segment id", "\"x\"");
        assert_err("segment:#", 9, "a segment id", "end of input");
        assert_err("segment:", 8, "a segment name", "end of input");
        assert_err("segment:\"\"", 8, "a segment name", "the string \"\"");
        assert_err("segment x", 7, "\":\" right after \"segment\"", "\" \"");
        assert_err("segment :x", 7, "\":\" right after \"segment\"", "\" \"");
    }

    #[test]
    fn topic_atoms() {
        assert_eq!(atom("topic:3"), Atom::Topic(3));
        assert_eq!(atom("Topic:0"), Atom::Topic(0));
        assert_eq!(atom("topic:4294967295"), Atom::Topic(u32::MAX));
        assert_err("topic:4294967296", 6, "a topic id", "\"4294967296\"");
        assert_err("topic:x", 6, "a topic id", "\"x\"");
        assert_err("topic:3x", 6, "a topic id", "\"3x\"");
        assert_err("topic:3.5", 6, "a topic id", "\"3.5\"");
        assert_err("topic:-1", 6, "a topic id", "\"-1\"");
        assert_err("topic:", 6, "a topic id", "end of input");
    }

    #[test]
    fn attr_atoms_with_every_operator() {
        let one = Literal::Int(1);
        for (text, op) in [
            ("=", CmpOp::Eq),
            ("!=", CmpOp::Ne),
            ("<", CmpOp::Lt),
            ("<=", CmpOp::Le),
            (">", CmpOp::Gt),
            (">=", CmpOp::Ge),
            ("contains", CmpOp::Contains),
            ("CONTAINS", CmpOp::Contains),
            ("starts_with", CmpOp::StartsWith),
            ("Starts_With", CmpOp::StartsWith),
        ] {
            assert_eq!(
                ok(&format!("attr.plan {text} 1")),
                attr(&["plan"], op, one.clone())
            );
        }
        // No spaces needed around symbolic operators.
        assert_eq!(ok("attr.a>=1"), attr(&["a"], CmpOp::Ge, one.clone()));
        assert_eq!(ok("attr.a!=1"), attr(&["a"], CmpOp::Ne, one.clone()));
        assert_eq!(
            ok("attr.a contains\"x\""),
            attr(&["a"], CmpOp::Contains, Literal::String(s("x")))
        );
    }

    #[test]
    fn attr_paths_and_exists() {
        assert_eq!(
            ok("attr.a.b.c = 1"),
            attr(&["a", "b", "c"], CmpOp::Eq, Literal::Int(1))
        );
        assert_eq!(
            ok("ATTR.\"first name\" = 1"),
            attr(&["first name"], CmpOp::Eq, Literal::Int(1))
        );
        assert_eq!(
            ok("attr.\"a.b\".c = 1"),
            attr(&["a.b", "c"], CmpOp::Eq, Literal::Int(1))
        );
        assert_eq!(
            ok("attr.cio_subscription_preferences.topics.topic_3 = true"),
            attr(
                &["cio_subscription_preferences", "topics", "topic_3"],
                CmpOp::Eq,
                Literal::Bool(true)
            )
        );
        assert_eq!(
            atom("attr.email exists"),
            Atom::AttrExists {
                path: path(&["email"])
            }
        );
        assert_eq!(
            atom("attr.a.\"b c\" EXISTS"),
            Atom::AttrExists {
                path: path(&["a", "b c"])
            }
        );
        // A path segment named like a keyword is just a name.
        assert_eq!(
            atom("attr.exists exists"),
            Atom::AttrExists {
                path: path(&["exists"])
            }
        );
        assert_err("attr.", 5, "an attribute name", "end of input");
        assert_err("attr.a.", 7, "an attribute name", "end of input");
        assert_err("attr.a..b = 1", 7, "an attribute name", "\".b\"");
        assert_err("attr. a = 1", 5, "an attribute name", "\" \"");
        assert_err(
            "attr.\"\" exists",
            5,
            "an attribute name",
            "the string \"\"",
        );
        assert_err("attr.a", 6, "or \"exists\"", "end of input");
        assert_err("attr a = 1", 4, "\".\" right after \"attr\"", "\" \"");
    }

    #[test]
    fn values() {
        let value = |text: &str| match atom(&format!("attr.x = {text}")) {
            Atom::Attr { value, .. } => value,
            other => panic!("{other:?}"),
        };
        assert_eq!(value("\"pro\""), Literal::String(s("pro")));
        assert_eq!(value("\"\""), Literal::String(s("")));
        assert_eq!(value("\"a\nb\""), Literal::String(s("a\nb")));
        assert_eq!(value("0"), Literal::Int(0));
        assert_eq!(value("42"), Literal::Int(42));
        assert_eq!(value("-42"), Literal::Int(-42));
        assert_eq!(value("+42"), Literal::Int(42));
        assert_eq!(value("9223372036854775807"), Literal::Int(i64::MAX));
        assert_eq!(value("-9223372036854775808"), Literal::Int(i64::MIN));
        assert_eq!(value("1.5"), Literal::Float(1.5));
        assert_eq!(value("-2.0"), Literal::Float(-2.0));
        assert_eq!(value("1e3"), Literal::Float(1000.0));
        assert_eq!(value("2.5E-3"), Literal::Float(0.0025));
        assert_eq!(value("1e+2"), Literal::Float(100.0));
        assert_eq!(value("true"), Literal::Bool(true));
        assert_eq!(value("FALSE"), Literal::Bool(false));
        assert_eq!(value("now"), Literal::Now(0));
        assert_eq!(value("NOW"), Literal::Now(0));
        assert_eq!(value("now-30d"), Literal::Now(-30 * 86_400));
        assert_eq!(value("now+2h"), Literal::Now(7_200));
        assert_eq!(value("now - 15m"), Literal::Now(-900));
        assert_eq!(value("now+10s"), Literal::Now(10));
        assert_eq!(value("now-2w"), Literal::Now(-2 * 604_800));
        assert_eq!(value("now-9223372036854775808s"), Literal::Now(i64::MIN));
        assert_eq!(value("now+9223372036854775807s"), Literal::Now(i64::MAX));
    }

    #[test]
    fn value_errors() {
        assert_err("attr.plan = pro", 12, "a value (", "\"pro\"");
        assert_err("attr.plan =", 11, "a value (", "end of input");
        assert_err("attr.a == 1", 8, "a value (", "\"=\"");
        assert_err("attr.a = -x", 9, "a value (", "\"-x\"");
        assert_err("attr.a = 5abc", 9, "a number", "\"5abc\"");
        assert_err("attr.a = 1.", 9, "a number", "\"1.\"");
        assert_err("attr.a = 1.2.3", 9, "a number", "\"1.2.3\"");
        assert_err("attr.a = 1e", 9, "a number", "\"1e\"");
        assert_err(
            "attr.a = 9223372036854775808",
            9,
            "a whole number from -9223372036854775808",
            "\"9223372036854775808\"",
        );
        assert_err("attr.a = 1e999", 9, "a finite number", "\"1e999\"");
        assert_err("attr.a = now-", 13, "a duration", "end of input");
        assert_err("attr.a = now-3", 14, "a duration unit", "end of input");
        assert_err("attr.a = now-3y", 14, "a duration unit", "\"y\"");
        assert_err("attr.a = now-3D", 14, "a duration unit", "\"D\"");
        assert_err("attr.a = now-3days", 14, "a duration unit", "\"days\"");
        assert_err(
            "attr.a = now+9223372036854775808s",
            13,
            "fits in a signed 64-bit",
            "\"9223372036854775808s\"",
        );
        assert_err(
            "attr.a = now-99999999999999999999s",
            13,
            "fits in a signed 64-bit",
            "\"99999999999999999999s\"",
        );
        assert_err("attr.a = nowx", 9, "a value (", "\"nowx\"");
    }

    #[test]
    fn strings_and_escapes() {
        assert_eq!(
            atom(r#"segment:"say \"hi\" \\ bye""#),
            Atom::Segment(SegmentName::Name(s(r#"say "hi" \ bye"#)))
        );
        assert_eq!(
            ok(r#"attr."we\"ird" = "\\""#),
            attr(&["we\"ird"], CmpOp::Eq, Literal::String(s("\\")))
        );
        assert_err(
            r#"attr.a = "x\n""#,
            11,
            r#"\" or \\ (the only escapes"#,
            r#""\\""#,
        );
        assert_err(r#"attr.a = "x\"#, 11, r#"\" or \\"#, r#""\\""#);
        assert_err(
            r#"attr.a = "abc"#,
            13,
            "a closing '\"' for the string that starts at byte 9",
            "end of input",
        );
        // The found text of a string token is the string.
        assert_err(
            r#"attr.a "abc""#,
            7,
            "a comparison operator",
            "the string \"abc\"",
        );
    }

    #[test]
    fn event_and_delivery_atoms() {
        assert_eq!(atom("event:purchase"), Atom::Event(occ("purchase")));
        assert_eq!(atom("EVENT:purchase"), Atom::Event(occ("purchase")));
        assert_eq!(
            atom("event:\"page viewed\""),
            Atom::Event(occ("page viewed"))
        );
        assert_eq!(
            atom("event:purchase[amount > 20] count >= 3 within 30d"),
            Atom::Event(Occurrence {
                name: s("purchase"),
                filters: vec![Filter {
                    path: path(&["amount"]),
                    op: CmpOp::Gt,
                    value: Literal::Int(20)
                }],
                count: Some((CmpOp::Ge, 3)),
                within: Some(30 * 86_400),
            })
        );
        assert_eq!(
            atom("event:x [ a.\"b c\" contains \"q\" , d<=now-1h ]COUNT=0 WITHIN 2w"),
            Atom::Event(Occurrence {
                name: s("x"),
                filters: vec![
                    Filter {
                        path: path(&["a", "b c"]),
                        op: CmpOp::Contains,
                        value: Literal::String(s("q"))
                    },
                    Filter {
                        path: path(&["d"]),
                        op: CmpOp::Le,
                        value: Literal::Now(-3_600)
                    },
                ],
                count: Some((CmpOp::Eq, 0)),
                within: Some(2 * 604_800),
            })
        );
        assert_eq!(
            atom("event:x count < 18446744073709551615"),
            Atom::Event(Occurrence {
                count: Some((CmpOp::Lt, u64::MAX)),
                ..occ("x")
            })
        );
        assert_eq!(
            atom("event:x within 0s"),
            Atom::Event(Occurrence {
                within: Some(0),
                ..occ("x")
            })
        );
        assert_eq!(
            atom("delivery:opened within 7d"),
            Atom::Delivery(Occurrence {
                within: Some(7 * 86_400),
                ..occ("opened")
            })
        );
        assert_eq!(
            atom("delivery:clicked[link starts_with \"https://\"]"),
            Atom::Delivery(Occurrence {
                filters: vec![Filter {
                    path: path(&["link"]),
                    op: CmpOp::StartsWith,
                    value: Literal::String(s("https://"))
                }],
                ..occ("clicked")
            })
        );
        // An event named like a keyword.
        assert_eq!(
            atom("event:count count > 1"),
            Atom::Event(Occurrence {
                count: Some((CmpOp::Gt, 1)),
                ..occ("count")
            })
        );
    }

    #[test]
    fn event_errors() {
        assert_err("event:", 6, "an event name", "end of input");
        assert_err("delivery:", 9, "a delivery metric", "end of input");
        assert_err("event:x[]", 8, "a property name", "\"]\"");
        assert_err("event:x[a = 1", 13, "\",\" or \"]\"", "end of input");
        assert_err("event:x[a = 1,]", 14, "a property name", "\"]\"");
        assert_err(
            "event:x[a exists]",
            10,
            "a comparison operator (",
            "\"exists\"",
        );
        assert_err("event:x count > -1", 16, "a count (", "\"-1\"");
        assert_err("event:x count > 1.5", 16, "a count (", "\"1.5\"");
        assert_err(
            "event:x count > 18446744073709551616",
            16,
            "a count (",
            "\"18446744073709551616\"",
        );
        assert_err(
            "event:x count contains 1",
            14,
            "a count comparison",
            "\"contains\"",
        );
        assert_err("event:x within 3y", 16, "a duration unit", "\"y\"");
        assert_err("event:x within 30", 17, "a duration unit", "end of input");
        assert_err("event:x within d", 15, "a duration (", "\"d\"");
        assert_err("event:x within -1d", 15, "a duration (", "\"-1d\"");
        assert_err(
            "event:x within 1000000000000000000w",
            15,
            "fits in a signed 64-bit",
            "\"1000000000000000000w\"",
        );
        assert_err(
            "event:x within 99999999999999999999d",
            15,
            "fits in a signed 64-bit",
            "\"99999999999999999999d\"",
        );
        // What may follow depends on what the occurrence already has.
        let e = err("event:x foo");
        assert_eq!(e.position, 8);
        assert_eq!(
            e.expected,
            "\"[\", \"count\", \"within\", \"and\", \"or\" or the end of the input"
        );
        assert_eq!(
            err("event:x[a=1] foo").expected,
            "\"count\", \"within\", \"and\", \"or\" or the end of the input"
        );
        assert_eq!(
            err("event:x count > 1 foo").expected,
            "\"within\", \"and\", \"or\" or the end of the input"
        );
        assert_eq!(
            err("event:x within 1d count > 1").expected,
            "\"and\", \"or\" or the end of the input"
        );
        assert_eq!(
            err("(event:x foo)").expected,
            "\"[\", \"count\", \"within\", \"and\", \"or\" or \")\""
        );
        assert_eq!(
            err("(event:x) foo").expected,
            "\"and\", \"or\" or the end of the input"
        );
    }

    #[test]
    fn device_atoms() {
        assert_eq!(
            atom("device.platform = \"ios\""),
            Atom::Device {
                field: s("platform"),
                op: CmpOp::Eq,
                value: Literal::String(s("ios"))
            }
        );
        assert_eq!(
            atom("DEVICE.last_used > now-7d"),
            Atom::Device {
                field: s("last_used"),
                op: CmpOp::Gt,
                value: Literal::Now(-7 * 86_400)
            }
        );
        assert_eq!(
            atom("device.\"app.version\" starts_with \"2.\""),
            Atom::Device {
                field: s("app.version"),
                op: CmpOp::StartsWith,
                value: Literal::String(s("2."))
            }
        );
        assert_err(
            "device.platform exists",
            16,
            "a comparison operator (",
            "\"exists\"",
        );
        assert_err("device.a.b = 1", 8, "a comparison operator (", "\".b\"");
        assert_err("device.", 7, "a device field", "end of input");
        assert_err(
            "device:platform = 1",
            6,
            "\".\" right after \"device\"",
            "\":\"",
        );
    }

    #[test]
    fn related_atoms() {
        assert_eq!(
            atom("related:1"),
            Atom::Related {
                type_id: 1,
                object_id: None
            }
        );
        assert_eq!(
            atom("related:1:acme"),
            Atom::Related {
                type_id: 1,
                object_id: Some(s("acme"))
            }
        );
        assert_eq!(
            atom("related:1:\"Acme Inc\""),
            Atom::Related {
                type_id: 1,
                object_id: Some(s("Acme Inc"))
            }
        );
        assert_eq!(
            atom("related:7:a.b-c"),
            Atom::Related {
                type_id: 7,
                object_id: Some(s("a.b-c"))
            }
        );
        assert_err("related:x", 8, "an object type id", "\"x\"");
        assert_err("related:1:", 10, "an object id", "end of input");
        assert_err("related:1:\"\"", 10, "an object id", "the string \"\"");
        assert_err("related:1.5", 8, "an object type id", "\"1.5\"");
    }

    #[test]
    fn design_examples_parse_and_round_trip() {
        for text in [
            "segment:\"Trial users\" and topic:3 and not unsubscribed",
            "event:purchase[amount > 20] count >= 3 within 30d",
            "device.platform = \"ios\"",
            "attr.created_at > now-7d",
            "related:1:acme",
        ] {
            let expr = round(text);
            assert_eq!(expr.to_string(), text, "canonical text of {text:?}");
        }
    }

    // ---- combinators ------------------------------------------------------------------

    #[test]
    fn precedence() {
        // and binds tighter than or.
        assert_eq!(
            ok("topic:1 or topic:2 and topic:3"),
            Expr::Or(vec![topic(1), Expr::And(vec![topic(2), topic(3)])])
        );
        assert_eq!(
            ok("topic:1 and topic:2 or topic:3"),
            Expr::Or(vec![Expr::And(vec![topic(1), topic(2)]), topic(3)])
        );
        assert_eq!(
            ok("(topic:1 or topic:2) and topic:3"),
            Expr::And(vec![Expr::Or(vec![topic(1), topic(2)]), topic(3)])
        );
        // not binds tighter than and.
        assert_eq!(
            ok("not topic:1 and topic:2"),
            Expr::And(vec![not(topic(1)), topic(2)])
        );
        assert_eq!(
            ok("not (topic:1 and topic:2)"),
            not(Expr::And(vec![topic(1), topic(2)]))
        );
        assert_eq!(ok("not not topic:1"), not(not(topic(1))));
        assert_eq!(ok("NOT(topic:1)"), not(topic(1)));
        // Keywords in any case, and only as whole words.
        assert_eq!(
            ok("topic:1 AND topic:2 Or topic:3"),
            Expr::Or(vec![Expr::And(vec![topic(1), topic(2)]), topic(3)])
        );
        assert_err("topic:1 andy topic:2", 8, "\"and\", \"or\"", "\"andy\"");
        assert_err("nothing", 0, "a condition", "\"nothing\"");
    }

    #[test]
    fn flattening_and_single_operands() {
        assert_eq!(ok("(topic:1)"), topic(1));
        assert_eq!(ok("((((topic:1))))"), topic(1));
        assert_eq!(
            ok("topic:1 and (topic:2 and topic:3)"),
            Expr::And(vec![topic(1), topic(2), topic(3)])
        );
        assert_eq!(
            ok("(topic:1 and topic:2) and topic:3 and (topic:4)"),
            Expr::And(vec![topic(1), topic(2), topic(3), topic(4)])
        );
        assert_eq!(
            ok("topic:1 or (topic:2 or (topic:3 or topic:4))"),
            Expr::Or(vec![topic(1), topic(2), topic(3), topic(4)])
        );
        // Different kinds are not merged.
        assert_eq!(
            ok("topic:1 or (topic:2 and topic:3)"),
            Expr::Or(vec![topic(1), Expr::And(vec![topic(2), topic(3)])])
        );
        assert_eq!(
            ok("topic:1 and not (topic:2 and topic:3)"),
            Expr::And(vec![topic(1), not(Expr::And(vec![topic(2), topic(3)]))])
        );
    }

    #[test]
    fn structure_errors() {
        assert_err("", 0, "a condition (", "end of input");
        assert_err("   ", 3, "a condition (", "end of input");
        assert_err("all and", 7, "a condition (", "end of input");
        assert_err("all or or all", 7, "a condition (", "\"or\"");
        assert_err("not", 3, "a condition (", "end of input");
        assert_err("(all", 4, "\"and\", \"or\" or \")\"", "end of input");
        assert_err(
            "all)",
            3,
            "\"and\", \"or\" or the end of the input",
            "\")\"",
        );
        assert_err("()", 1, "a condition (", "\")\"");
        assert_err("all all", 4, "\"and\", \"or\" or the end", "\"all\"");
        assert_err("all and ?", 8, "a condition (", "\"?\"");
        assert_err("all and é", 8, "a condition (", "\"é\"");
    }

    #[test]
    fn error_display_is_a_sentence() {
        let e = err("attr.plan.tier  foo");
        assert_eq!(
            e.to_string(),
            "at byte 16: expected a comparison operator (=, !=, <, <=, >, >=, contains, \
             starts_with) or \"exists\", found \"foo\""
        );
        assert_eq!(
            err("all and").to_string(),
            "at byte 7: expected a condition (all, unsubscribed, segment:, topic:, attr., \
             event:, delivery:, device. or related:), \"not\" or \"(\", found end of input"
        );
        let long = format!("attr.a {}", "x".repeat(100));
        assert_eq!(err(&long).found, format!("\"{}...\"", "x".repeat(32)));
        let boxed: Box<dyn std::error::Error> = Box::new(err("all and"));
        assert!(boxed.to_string().starts_with("at byte 7: "));
    }

    #[test]
    fn nesting_is_limited() {
        let parens = |n: usize| format!("{}all{}", "(".repeat(n), ")".repeat(n));
        assert_eq!(ok(&parens(MAX_DEPTH)), Expr::Atom(Atom::All));
        let e = err(&parens(MAX_DEPTH + 1));
        assert_eq!(e.position, MAX_DEPTH);
        assert!(e.expected.contains("nested at most 64 deep"), "{e}");
        assert_eq!(e.found, "\"(\"");

        let nots = |n: usize| format!("{}all", "not ".repeat(n));
        assert!(ok(&nots(MAX_DEPTH)).to_string().starts_with("not not"));
        let e = err(&nots(MAX_DEPTH + 1));
        assert_eq!(e.position, 4 * MAX_DEPTH);
        assert_eq!(e.found, "\"not\"");

        // Mixed, and levels that close do not count.
        let mixed = format!("{}all{}", "not (".repeat(32), ")".repeat(32));
        assert!(parse(&mixed).is_ok());
        let wide = format!("{} and {}", parens(MAX_DEPTH), parens(MAX_DEPTH));
        assert!(parse(&wide).is_ok());
        let mixed = format!("{}all{}", "not (".repeat(33), ")".repeat(33));
        assert_eq!(err(&mixed).position, 32 * 5);

        // Far too deep is refused without exhausting the stack.
        let e = err(&"(".repeat(MAX_INPUT_BYTES));
        assert_eq!(e.position, MAX_DEPTH);
    }

    #[test]
    fn input_length_is_limited() {
        let at_limit = format!("all{}", " ".repeat(MAX_INPUT_BYTES - 3));
        assert_eq!(ok(&at_limit), Expr::Atom(Atom::All));
        let over = format!("all{}", " ".repeat(MAX_INPUT_BYTES - 2));
        let e = err(&over);
        assert_eq!(e.position, MAX_INPUT_BYTES);
        assert_eq!(e.expected, "at most 65536 bytes of condition text");
        assert_eq!(e.found, "65537 bytes");
        // Long but within the limit, wide rather than deep: fine.
        let wide = vec!["topic:1"; 5_000].join(" or ");
        assert!(matches!(ok(&wide), Expr::Or(v) if v.len() == 5_000));
    }

    // ---- printing ---------------------------------------------------------------------

    #[test]
    fn canonical_text() {
        let cases = [
            (
                "SEGMENT:\"Trial users\"   AND Topic:3 and NOT unsubscribed",
                "segment:\"Trial users\" and topic:3 and not unsubscribed",
            ),
            ("segment:\"trial\"", "segment:trial"),
            ("segment:\"a b\"", "segment:\"a b\""),
            ("segment:\"#3\"", "segment:\"#3\""),
            ("segment:#3", "segment:#3"),
            ("attr.\"a\".\"b.c\" exists", "attr.a.\"b.c\" exists"),
            ("attr.x=\"say \\\"hi\\\"\"", "attr.x = \"say \\\"hi\\\"\""),
            ("attr.x = 2.0", "attr.x = 2.0"),
            ("attr.x = 1e3", "attr.x = 1000.0"),
            ("attr.x = 1e16", "attr.x = 1e16"),
            ("attr.x = 1.5e-7", "attr.x = 1.5e-7"),
            ("attr.x = +7", "attr.x = 7"),
            ("attr.x = now-0d", "attr.x = now"),
            ("attr.x = now-168h", "attr.x = now-7d"),
            ("attr.x = now-2w", "attr.x = now-14d"),
            ("attr.x = now+90s", "attr.x = now+90s"),
            ("attr.x = now+120s", "attr.x = now+2m"),
            ("attr.x CONTAINS TRUE", "attr.x contains true"),
            ("event:x within 86400s", "event:x within 1d"),
            ("event:x within 0d", "event:x within 0s"),
            ("event:x [a=1,b.c!=\"z\"]", "event:x[a = 1, b.c != \"z\"]"),
            ("event:\"a b\" count=2", "event:\"a b\" count = 2"),
            ("device.\"a b\" = 1", "device.\"a b\" = 1"),
            ("related:1:\"Acme Inc\"", "related:1:\"Acme Inc\""),
            (
                "(topic:1 or topic:2) and topic:3",
                "(topic:1 or topic:2) and topic:3",
            ),
            (
                "topic:1 or topic:2 and topic:3",
                "topic:1 or topic:2 and topic:3",
            ),
            (
                "(topic:1 and topic:2) or topic:3",
                "topic:1 and topic:2 or topic:3",
            ),
            ("not (topic:1 or topic:2)", "not (topic:1 or topic:2)"),
            ("not (not topic:1)", "not not topic:1"),
            ("not ((topic:1))", "not topic:1"),
        ];
        for (input, canonical) in cases {
            let expr = round(input);
            assert_eq!(expr.to_string(), canonical, "canonical text of {input:?}");
        }
    }

    #[test]
    fn printing_literals_and_hand_built_trees() {
        assert_eq!(Literal::Float(2.0).to_string(), "2.0");
        assert_eq!(Literal::Float(-0.0).to_string(), "-0.0");
        assert_eq!(
            Literal::Now(i64::MIN).to_string(),
            "now-9223372036854775808s"
        );
        assert_eq!(Literal::Now(-30 * 86_400).to_string(), "now-30d");
        assert_eq!(Literal::Int(i64::MIN).to_string(), "-9223372036854775808");
        assert_eq!(CmpOp::StartsWith.to_string(), "starts_with");
        assert_eq!(SegmentName::Id(3).to_string(), "#3");
        assert_eq!(SegmentName::Name(s("")).to_string(), "\"\"");
        for x in [
            f64::MIN_POSITIVE,
            5e-324,
            f64::MAX,
            0.1 + 0.2,
            -1e-10,
            123_456.789,
        ] {
            let text = format!("attr.x = {}", Literal::Float(x));
            assert_eq!(
                ok(&text),
                attr(&["x"], CmpOp::Eq, Literal::Float(x)),
                "{text}"
            );
        }
        // Trees `parse` never produces still print as equivalent text.
        assert_eq!(Expr::And(vec![]).to_string(), "all");
        assert_eq!(Expr::Or(vec![]).to_string(), "not all");
        assert_eq!(Expr::And(vec![topic(1)]).to_string(), "topic:1");
        let nested = Expr::And(vec![topic(1), Expr::And(vec![topic(2), topic(3)])]);
        assert_eq!(
            ok(&nested.to_string()),
            Expr::And(vec![topic(1), topic(2), topic(3)])
        );
    }

    // ---- JSON -------------------------------------------------------------------------

    fn json_ok(value: &Json) -> Expr {
        match parse_filter_json(value) {
            Ok(expr) => {
                let printed = expr.to_string();
                assert_eq!(
                    parse(&printed),
                    Ok(expr.clone()),
                    "{value} printed as {printed:?}"
                );
                expr
            }
            Err(e) => panic!("{value} did not parse: {e}"),
        }
    }

    #[track_caller]
    fn assert_json_err(value: &Json, expected: &str, found: &str) {
        match parse_filter_json(value) {
            Ok(expr) => panic!("{value} parsed as {expr:?}"),
            Err(e) => {
                assert_eq!(e.position, 0, "{e}");
                assert_eq!(e.expected, expected, "{e}");
                assert_eq!(e.found, found, "{e}");
            }
        }
    }

    #[test]
    fn json_model_example() {
        let value = json!({"and":[{"segment":{"id":3}},{"or":[{"attribute":{"field":"interest","operator":"eq","value":"roadrunners"}}]}]});
        assert_eq!(
            json_ok(&value),
            Expr::And(vec![
                Expr::Atom(Atom::Segment(SegmentName::Id(3))),
                attr(&["interest"], CmpOp::Eq, Literal::String(s("roadrunners"))),
            ])
        );
        assert_eq!(
            json_ok(&value),
            ok("segment:#3 and attr.interest = \"roadrunners\"")
        );
    }

    #[test]
    fn json_forms() {
        assert_eq!(
            json_ok(&json!({"not": {"attribute": {"field": "a.b", "operator": "exists"}}})),
            not(Expr::Atom(Atom::AttrExists {
                path: path(&["a", "b"])
            }))
        );
        let eq = |value: Json| {
            json_ok(&json!({"attribute": {"field": "x", "operator": "eq", "value": value}}))
        };
        assert_eq!(eq(json!(5)), attr(&["x"], CmpOp::Eq, Literal::Int(5)));
        assert_eq!(eq(json!(-5)), attr(&["x"], CmpOp::Eq, Literal::Int(-5)));
        assert_eq!(eq(json!(2.5)), attr(&["x"], CmpOp::Eq, Literal::Float(2.5)));
        assert_eq!(eq(json!(3.0)), attr(&["x"], CmpOp::Eq, Literal::Float(3.0)));
        assert_eq!(
            eq(json!(true)),
            attr(&["x"], CmpOp::Eq, Literal::Bool(true))
        );
        assert_eq!(
            eq(json!("")),
            attr(&["x"], CmpOp::Eq, Literal::String(s("")))
        );
        let seg = |id: u32| Expr::Atom(Atom::Segment(SegmentName::Id(id)));
        assert_eq!(
            json_ok(
                &json!({"or": [{"or": [{"segment": {"id": 1}}, {"segment": {"id": 2}}]},
                                    {"and": [{"segment": {"id": 3}}]},
                                    {"and": [{"segment": {"id": 4}}, {"segment": {"id": 5}}]}]})
            ),
            Expr::Or(vec![
                seg(1),
                seg(2),
                seg(3),
                Expr::And(vec![seg(4), seg(5)])
            ])
        );
        assert_eq!(
            json_ok(&json!({"segment": {"id": 4_294_967_295_u64}})),
            seg(u32::MAX)
        );
    }

    #[test]
    fn json_errors() {
        let filter_keys =
            "exactly one of \"and\", \"or\", \"not\", \"segment\" or \"attribute\" at ";
        assert_json_err(
            &json!({"and": [{"segment": {"id": 3}}, {"attribute": {"field": "a", "operator": "gt", "value": 1}}]}),
            "\"operator\" to be \"eq\" or \"exists\" at and[1].attribute",
            "\"gt\"",
        );
        assert_eq!(
            parse_filter_json(&json!({"and": [{"segment": {"id": 3}}, {"attribute": {"field": "a", "operator": "gt", "value": 1}}]}))
                .unwrap_err()
                .to_string(),
            "at byte 0: expected \"operator\" to be \"eq\" or \"exists\" at and[1].attribute, found \"gt\""
        );
        assert_json_err(
            &json!({}),
            &format!("{filter_keys}the top level"),
            "an empty object",
        );
        assert_json_err(
            &json!({"not": {"and": [{}]}}),
            &format!("{filter_keys}not.and[0]"),
            "an empty object",
        );
        assert_json_err(
            &json!({"segment": {"id": 1}, "not": {"segment": {"id": 2}}}),
            &format!("{filter_keys}the top level"),
            "the keys \"segment\", \"not\"",
        );
        assert_json_err(
            &json!({"or": [{"event": {}}]}),
            &format!("{filter_keys}or[0]"),
            "the key \"event\"",
        );
        assert_json_err(
            &json!([]),
            &format!("a filter object with {filter_keys}the top level"),
            "an array",
        );
        assert_json_err(
            &json!({"and": [null]}),
            &format!("a filter object with {filter_keys}and[0]"),
            "null",
        );
        assert_json_err(
            &json!({"and": {}}),
            "\"and\" to be an array of filters at the top level",
            "an object",
        );
        assert_json_err(
            &json!({"or": []}),
            "\"or\" to hold at least one filter at the top level",
            "an empty array",
        );
        assert_json_err(
            &json!({"segment": 3}),
            "\"segment\" to be an object like {\"id\": 3} at the top level",
            "3",
        );
        assert_json_err(
            &json!({"segment": {"id": 3, "name": "x"}}),
            "only \"id\" at segment",
            "the key \"name\"",
        );
        let segment_id =
            "\"id\" to be a segment id (a whole number from 0 to 4294967295) at segment";
        assert_json_err(&json!({"segment": {}}), segment_id, "no \"id\"");
        assert_json_err(&json!({"segment": {"id": "3"}}), segment_id, "\"3\"");
        assert_json_err(&json!({"segment": {"id": -1}}), segment_id, "-1");
        assert_json_err(&json!({"segment": {"id": 3.0}}), segment_id, "3.0");
        assert_json_err(
            &json!({"segment": {"id": 4_294_967_296_u64}}),
            segment_id,
            "4294967296",
        );
        assert_json_err(
            &json!({"attribute": "x"}),
            "\"attribute\" to be an object with \"field\", \"operator\" and \"value\" at the top level",
            "\"x\"",
        );
        assert_json_err(
            &json!({"attribute": {"field": "a", "operator": "eq", "value": 1, "inverse": true}}),
            "only \"field\", \"operator\" and \"value\" at attribute",
            "the key \"inverse\"",
        );
        let field = "\"field\" to be an attribute name (dotted for a nested path) at attribute";
        assert_json_err(
            &json!({"attribute": {"operator": "exists"}}),
            field,
            "no \"field\"",
        );
        assert_json_err(
            &json!({"attribute": {"field": 1, "operator": "exists"}}),
            field,
            "1",
        );
        assert_json_err(
            &json!({"attribute": {"field": "a..b", "operator": "exists"}}),
            "\"field\" to be an attribute name with no empty part between dots at attribute",
            "\"a..b\"",
        );
        assert_json_err(
            &json!({"attribute": {"field": "", "operator": "exists"}}),
            "\"field\" to be an attribute name with no empty part between dots at attribute",
            "\"\"",
        );
        let operator = "\"operator\" to be \"eq\" or \"exists\" at attribute";
        assert_json_err(
            &json!({"attribute": {"field": "a"}}),
            operator,
            "no \"operator\"",
        );
        assert_json_err(
            &json!({"attribute": {"field": "a", "operator": "EQ", "value": 1}}),
            operator,
            "\"EQ\"",
        );
        assert_json_err(
            &json!({"attribute": {"field": "a", "operator": "exists", "value": 1}}),
            "no \"value\" with \"operator\": \"exists\" at attribute",
            "1",
        );
        let value = "\"value\" to be a string, number or boolean (with \"eq\") at attribute";
        assert_json_err(
            &json!({"attribute": {"field": "a", "operator": "eq"}}),
            value,
            "no \"value\"",
        );
        assert_json_err(
            &json!({"attribute": {"field": "a", "operator": "eq", "value": null}}),
            value,
            "null",
        );
        assert_json_err(
            &json!({"attribute": {"field": "a", "operator": "eq", "value": [1]}}),
            value,
            "an array",
        );
        assert_json_err(
            &json!({"attribute": {"field": "a", "operator": "eq", "value": u64::MAX}}),
            "\"value\" to be a number that fits in a signed 64-bit integer or a float at attribute",
            "18446744073709551615",
        );
    }

    #[test]
    fn json_nesting_is_limited() {
        let leaf = json!({"segment": {"id": 1}});
        let nest = |n: usize, key: &str| {
            let mut value = leaf.clone();
            for _ in 0..n {
                value = if key == "not" {
                    json!({ "not": value })
                } else {
                    json!({ key: [value] })
                };
            }
            value
        };
        assert!(parse_filter_json(&nest(MAX_DEPTH, "not")).is_ok());
        assert_eq!(
            json_ok(&nest(MAX_DEPTH, "and")),
            Expr::Atom(Atom::Segment(SegmentName::Id(1)))
        );
        let e = parse_filter_json(&nest(MAX_DEPTH + 1, "not")).unwrap_err();
        assert_eq!(e.found, "\"not\" nested 65 deep");
        assert!(
            e.expected
                .starts_with("filters nested at most 64 deep at not.not."),
            "{e}"
        );
        let e = parse_filter_json(&nest(MAX_DEPTH + 1, "or")).unwrap_err();
        assert_eq!(e.found, "\"or\" nested 65 deep");
        assert!(
            e.expected
                .starts_with("filters nested at most 64 deep at or[0].or[0]."),
            "{e}"
        );
        // A tree built deeper than serde_json's own parser allows is refused just as well.
        let e = parse_filter_json(&nest(10 * MAX_DEPTH, "not")).unwrap_err();
        assert!(
            e.expected.starts_with("filters nested at most 64 deep"),
            "{e}"
        );
    }

    // ---- properties -------------------------------------------------------------------

    fn normalize(expr: Expr) -> Expr {
        match expr {
            Expr::And(operands) => {
                let mut out = Vec::new();
                for operand in operands {
                    push_and(&mut out, normalize(operand));
                }
                Expr::And(out)
            }
            Expr::Or(operands) => {
                let mut out = Vec::new();
                for operand in operands {
                    push_or(&mut out, normalize(operand));
                }
                Expr::Or(out)
            }
            Expr::Not(operand) => Expr::Not(Box::new(normalize(*operand))),
            atom @ Expr::Atom(_) => atom,
        }
    }

    fn name() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z][a-z0-9_]{0,6}",
            "[a-zA-Z0-9_./$-]{1,6}",
            "[ a.\"\\\\#:()\\[\\],=]{1,6}",
            "(and|or|not|all|exists|count|within|now|true)",
            any::<String>().prop_filter("names are not empty", |s| !s.is_empty()),
        ]
    }

    fn literal() -> impl Strategy<Value = Literal> {
        prop_oneof![
            any::<String>().prop_map(Literal::String),
            "[a\"\\\\ ]{0,4}".prop_map(Literal::String),
            any::<i64>().prop_map(Literal::Int),
            any::<f64>()
                .prop_filter("finite", |x| x.is_finite())
                .prop_map(Literal::Float),
            (-1000_i64..1000).prop_map(|n| Literal::Float(n as f64)),
            any::<bool>().prop_map(Literal::Bool),
            any::<i64>().prop_map(Literal::Now),
            (
                -1000_i64..1000,
                prop::sample::select(vec![1_i64, 60, 3_600, 86_400, 604_800])
            )
                .prop_map(|(n, unit)| Literal::Now(n * unit)),
        ]
    }

    fn op() -> impl Strategy<Value = CmpOp> {
        prop::sample::select(vec![
            CmpOp::Eq,
            CmpOp::Ne,
            CmpOp::Lt,
            CmpOp::Le,
            CmpOp::Gt,
            CmpOp::Ge,
            CmpOp::Contains,
            CmpOp::StartsWith,
        ])
    }

    fn count_op() -> impl Strategy<Value = CmpOp> {
        prop::sample::select(vec![
            CmpOp::Eq,
            CmpOp::Ne,
            CmpOp::Lt,
            CmpOp::Le,
            CmpOp::Gt,
            CmpOp::Ge,
        ])
    }

    fn attr_path() -> impl Strategy<Value = Vec<String>> {
        prop::collection::vec(name(), 1..4)
    }

    fn occurrence() -> impl Strategy<Value = Occurrence> {
        let filter =
            (attr_path(), op(), literal()).prop_map(|(path, op, value)| Filter { path, op, value });
        (
            name(),
            prop::collection::vec(filter, 0..3),
            proptest::option::of((count_op(), any::<u64>())),
            proptest::option::of(prop_oneof![
                0..=i64::MAX,
                (0_i64..100).prop_map(|n| n * 86_400)
            ]),
        )
            .prop_map(|(name, filters, count, within)| Occurrence {
                name,
                filters,
                count,
                within,
            })
    }

    fn any_atom() -> impl Strategy<Value = Atom> {
        prop_oneof![
            Just(Atom::All),
            Just(Atom::Unsubscribed),
            name().prop_map(|n| Atom::Segment(SegmentName::Name(n))),
            any::<u32>().prop_map(|id| Atom::Segment(SegmentName::Id(id))),
            any::<u32>().prop_map(Atom::Topic),
            (attr_path(), op(), literal()).prop_map(|(path, op, value)| Atom::Attr {
                path,
                op,
                value
            }),
            attr_path().prop_map(|path| Atom::AttrExists { path }),
            occurrence().prop_map(Atom::Event),
            occurrence().prop_map(Atom::Delivery),
            (name(), op(), literal()).prop_map(|(field, op, value)| Atom::Device {
                field,
                op,
                value
            }),
            (any::<u32>(), proptest::option::of(name()))
                .prop_map(|(type_id, object_id)| Atom::Related { type_id, object_id }),
        ]
    }

    fn expr() -> impl Strategy<Value = Expr> {
        any_atom()
            .prop_map(Expr::Atom)
            .prop_recursive(5, 48, 4, |inner| {
                prop_oneof![
                    inner.clone().prop_map(|e| Expr::Not(Box::new(e))),
                    prop::collection::vec(inner.clone(), 2..5).prop_map(Expr::And),
                    prop::collection::vec(inner, 2..5).prop_map(Expr::Or),
                ]
            })
            .prop_map(normalize)
    }

    /// Fragments of condition text, valid and broken.
    fn fragment() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "and",
            "or",
            "not",
            "(",
            ")",
            "all",
            "unsubscribed",
            "segment:",
            "segment:#3",
            "topic:",
            "topic:3",
            "attr.",
            "attr.a",
            "attr.a.b",
            ".",
            "exists",
            "event:e",
            "delivery:opened",
            "device.platform",
            "related:1",
            "related:1:x",
            ":",
            "[",
            "]",
            ",",
            "count",
            "within",
            "30d",
            "=",
            "!=",
            "<",
            "<=",
            ">",
            ">=",
            "contains",
            "starts_with",
            "\"s\"",
            "\"",
            "\\",
            "1",
            "-2",
            "1.5",
            "1e999",
            "true",
            "now",
            "now-7d",
            "+",
            "-",
            " ",
            "é",
            "#",
        ])
    }

    /// Condition text from grammar fragments, so many inputs get past the first token.
    fn token_soup() -> impl Strategy<Value = String> {
        (prop::collection::vec(fragment(), 0..24), any::<bool>())
            .prop_map(|(tokens, spaced)| tokens.join(if spaced { " " } else { "" }))
    }

    /// The canonical text of a valid tree, truncated, or with one character deleted,
    /// replaced by a fragment, or a fragment inserted: near misses, many still valid.
    fn mutated_text() -> impl Strategy<Value = String> {
        (expr(), any::<prop::sample::Index>(), 0_u8..4, fragment()).prop_map(
            |(tree, at, kind, fragment)| {
                let mut text = tree.to_string();
                let bounds: Vec<usize> = text
                    .char_indices()
                    .map(|(i, _)| i)
                    .chain(std::iter::once(text.len()))
                    .collect();
                let i = bounds[at.index(bounds.len())];
                let next = text[i..].chars().next().map_or(0, char::len_utf8);
                match kind {
                    0 => text.truncate(i),
                    1 => text.insert_str(i, fragment),
                    2 => text.replace_range(i..i + next, ""),
                    _ => text.replace_range(i..i + next, fragment),
                }
                text
            },
        )
    }

    /// App API filters, mostly well-formed, with wrong keys, types and operators mixed in.
    fn filter_json() -> impl Strategy<Value = Json> {
        let junk = prop_oneof![
            Just(Json::Null),
            any::<bool>().prop_map(Json::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|x| json!(x)),
            "[a-z.]{0,4}".prop_map(Json::String),
            Just(json!({})),
            Just(json!([])),
        ];
        let value = prop_oneof![
            any::<String>().prop_map(Json::String),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|x| json!(x)),
            any::<bool>().prop_map(Json::Bool),
        ];
        let field = prop_oneof![
            6 => "[a-z_]{1,4}(\\.[a-z_ ]{1,4}){0,2}".prop_map(Json::String),
            1 => junk.clone(),
        ];
        let operator_value = prop_oneof![
            3 => value.prop_map(|v| (json!("eq"), Some(v))),
            3 => Just((json!("exists"), None)),
            1 => (
                prop_oneof![
                    prop::sample::select(vec!["eq", "exists", "gt", "EQ"]).prop_map(|s| json!(s)),
                    junk.clone(),
                ],
                proptest::option::of(junk.clone()),
            ),
        ];
        let id = prop_oneof![
            6 => any::<u32>().prop_map(|n| json!(n)),
            1 => junk.clone(),
        ];
        let leaf = prop_oneof![
            4 => id.prop_map(|id| json!({"segment": {"id": id}})),
            4 => (field, operator_value).prop_map(|(field, (operator, value))| {
                let mut attribute = serde_json::Map::new();
                attribute.insert("field".to_owned(), field);
                attribute.insert("operator".to_owned(), operator);
                if let Some(value) = value {
                    attribute.insert("value".to_owned(), value);
                }
                json!({ "attribute": attribute })
            }),
            1 => junk,
        ];
        leaf.prop_recursive(5, 48, 4, |inner| {
            prop_oneof![
                4 => prop::collection::vec(inner.clone(), 0..4).prop_map(|v| json!({ "and": v })),
                4 => prop::collection::vec(inner.clone(), 0..4).prop_map(|v| json!({ "or": v })),
                4 => inner.clone().prop_map(|v| json!({ "not": v })),
                1 => (inner.clone(), inner).prop_map(|(a, b)| json!({ "not": a, "or": [b] })),
            ]
        })
    }

    fn any_json() -> impl Strategy<Value = Json> {
        let key = prop::sample::select(vec![
            "and",
            "or",
            "not",
            "segment",
            "attribute",
            "id",
            "field",
            "operator",
            "value",
            "x",
        ]);
        let leaf = prop_oneof![
            Just(Json::Null),
            any::<bool>().prop_map(Json::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u32>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|x| json!(x)),
            prop::sample::select(vec!["eq", "exists", "a.b", "", "a..b", "x"])
                .prop_map(|s| json!(s)),
        ];
        leaf.prop_recursive(6, 64, 4, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Json::Array),
                prop::collection::vec((key.clone(), inner), 0..4).prop_map(|entries| {
                    Json::Object(
                        entries
                            .into_iter()
                            .map(|(k, v)| (k.to_owned(), v))
                            .collect(),
                    )
                }),
            ]
        })
    }

    fn config(cases: u32) -> ProptestConfig {
        ProptestConfig {
            cases,
            rng_seed: RngSeed::Fixed(0x0071_7565_7279),
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    proptest! {
        #![proptest_config(config(1024))]

        /// The law: printing any tree `parse` could produce gives text that parses back
        /// to the same tree.
        #[test]
        fn print_then_parse_is_identity(tree in expr()) {
            let text = tree.to_string();
            prop_assert_eq!(parse(&text), Ok(tree), "text: {}", text);
        }

        /// Arbitrary text never panics, and whatever parses round-trips.
        #[test]
        fn arbitrary_text_never_panics(text in any::<String>()) {
            if let Ok(tree) = parse(&text) {
                prop_assert_eq!(parse(&tree.to_string()), Ok(tree));
            }
        }

        #[test]
        fn token_soup_never_panics(text in token_soup()) {
            match parse(&text) {
                Ok(tree) => prop_assert_eq!(parse(&tree.to_string()), Ok(tree)),
                Err(e) => prop_assert!(e.position <= text.len(), "{} for {:?}", e, text),
            }
        }

        #[test]
        fn mutated_text_never_panics(text in mutated_text()) {
            match parse(&text) {
                Ok(tree) => prop_assert_eq!(parse(&tree.to_string()), Ok(tree)),
                Err(e) => prop_assert!(e.position <= text.len(), "{} for {:?}", e, text),
            }
        }

        #[test]
        fn arbitrary_json_never_panics(value in prop_oneof![any_json(), filter_json()]) {
            if let Ok(tree) = parse_filter_json(&value) {
                prop_assert_eq!(parse(&tree.to_string()), Ok(tree));
            }
        }
    }
}
