//! The condition language's syntax tree (DESIGN.md section 5).
//!
//! ```text
//! expr    := term ("or" term)*         term := factor ("and" factor)*
//! factor  := "not" factor | "(" expr ")" | atom
//! atom    := all | unsubscribed | segment:NAME | topic:ID
//!          | attr.PATH OP VALUE | attr.PATH exists
//!          | event:NAME [FILTERS] [count OP N] [within DURATION]
//!          | delivery:METRIC [FILTERS] [count OP N] [within DURATION]
//!          | device.FIELD OP VALUE | related:TYPE[:ID]
//! OP      := = != < <= > >= contains starts_with
//! VALUE   := "string" | number | true | false | now | now-30d | now+2h
//! FILTERS := "[" PROP OP VALUE ("," PROP OP VALUE)* "]"
//! ```

/// A condition: atoms combined with `and`, `or`, `not`.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// Every operand holds (two or more).
    And(Vec<Expr>),
    /// At least one operand holds (two or more).
    Or(Vec<Expr>),
    /// The operand does not hold.
    Not(Box<Expr>),
    /// A single condition.
    Atom(Atom),
}

/// Which segment an atom names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentName {
    /// By name: `segment:"Trial users"` or `segment:trial`.
    Name(String),
    /// By id: `segment:#3` (and the App API's `{"segment": {"id": 3}}`).
    Id(u32),
}

/// One condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Atom {
    /// Everyone.
    All,
    /// Globally unsubscribed.
    Unsubscribed,
    /// A member of a segment.
    Segment(SegmentName),
    /// Subscribed to a topic (explicitly, or by the topic's opt-in default).
    Topic(u32),
    /// An attribute (a dotted path into nested maps) compared with a value.
    Attr {
        /// The attribute path: `attr.plan` is `["plan"]`.
        path: Vec<String>,
        /// The comparison.
        op: CmpOp,
        /// The value compared with.
        value: Literal,
    },
    /// The attribute (path) exists.
    AttrExists {
        /// The attribute path.
        path: Vec<String>,
    },
    /// Performed an event (with property filters, a count and a time window).
    Event(Occurrence),
    /// Had a delivery metric (`delivery:opened`; filters on delivery fields).
    Delivery(Occurrence),
    /// Has a device whose field compares: `device.platform = "ios"`,
    /// `device.last_used > now-7d`, `device.status = "bounced"`.
    Device {
        /// The device field: `platform`, `last_used`, `status`, or an attribute name.
        field: String,
        /// The comparison.
        op: CmpOp,
        /// The value compared with.
        value: Literal,
    },
    /// Related to an object of a type (and id): `related:1` or `related:1:acme`.
    Related {
        /// The object type id.
        type_id: u32,
        /// The object id, if one object is meant.
        object_id: Option<String>,
    },
}

/// The occurrence part of an `event:` or `delivery:` atom.
#[derive(Debug, Clone, PartialEq)]
pub struct Occurrence {
    /// The event name or the delivery metric.
    pub name: String,
    /// Property filters, all of which must hold for an occurrence to count.
    pub filters: Vec<Filter>,
    /// How many matching occurrences are needed (default: `>= 1`).
    pub count: Option<(CmpOp, u64)>,
    /// Only occurrences in the last this-many seconds count.
    pub within: Option<i64>,
}

/// A property filter: `[amount > 20]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    /// The property path (`a.b` is `["a", "b"]`).
    pub path: Vec<String>,
    /// The comparison.
    pub op: CmpOp,
    /// The value compared with.
    pub value: Literal,
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CmpOp {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `contains` (substring of a string, or member of an array)
    Contains,
    /// `starts_with` (string prefix)
    StartsWith,
}

/// A literal value in a condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// A string.
    String(String),
    /// A whole number.
    Int(i64),
    /// A number with a fraction.
    Float(f64),
    /// `true` / `false`.
    Bool(bool),
    /// `now`, `now-30d`, `now+2h`: the evaluation time plus this many seconds.
    Now(i64),
}
