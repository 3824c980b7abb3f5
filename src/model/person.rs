//! People: identifiers and the person as read back.

use std::fmt;

use crate::model::value::Map;

/// The kinds of identifier a person can be addressed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IdentKind {
    /// `id`: chosen by you, case-sensitive, at most 150 bytes by default.
    Id,
    /// `email`: case-insensitive for lookup, stored as given.
    Email,
    /// `cio_id`: assigned by the database at creation, never changes.
    CioId,
    /// `phone`: E.164 (`+` and up to 15 digits).
    Phone,
    /// `anonymous_id`: links activity from before identification.
    AnonymousId,
}

impl IdentKind {
    /// The identifier's name as Customer.io spells it (`id`, `email`, `cio_id`...).
    pub fn as_str(self) -> &'static str {
        match self {
            IdentKind::Id => "id",
            IdentKind::Email => "email",
            IdentKind::CioId => "cio_id",
            IdentKind::Phone => "phone",
            IdentKind::AnonymousId => "anonymous_id",
        }
    }

    /// The kind named `name`, if it is an identifier name.
    pub fn from_name(name: &str) -> Option<IdentKind> {
        Some(match name {
            "id" => IdentKind::Id,
            "email" => IdentKind::Email,
            "cio_id" => IdentKind::CioId,
            "phone" => IdentKind::Phone,
            "anonymous_id" => IdentKind::AnonymousId,
            _ => return None,
        })
    }

    /// The identifiers a caller may set in attributes (every kind but `cio_id`).
    pub const SETTABLE: [IdentKind; 4] = [
        IdentKind::Id,
        IdentKind::Email,
        IdentKind::Phone,
        IdentKind::AnonymousId,
    ];
}

impl fmt::Display for IdentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An identifier naming one person: a kind and a value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Ident {
    /// Which identifier.
    pub kind: IdentKind,
    /// Its value as given (a `cio_id` without the `cio_` prefix).
    pub value: String,
}

impl Ident {
    /// An identifier of `kind` with `value`.
    pub fn new(kind: IdentKind, value: impl Into<String>) -> Ident {
        Ident {
            kind,
            value: value.into(),
        }
    }
    /// `id`.
    pub fn id(value: impl Into<String>) -> Ident {
        Ident::new(IdentKind::Id, value)
    }
    /// `email`.
    pub fn email(value: impl Into<String>) -> Ident {
        Ident::new(IdentKind::Email, value)
    }
    /// `cio_id`, without the `cio_` prefix.
    pub fn cio_id(value: impl Into<String>) -> Ident {
        Ident::new(IdentKind::CioId, value)
    }
    /// `phone`.
    pub fn phone(value: impl Into<String>) -> Ident {
        Ident::new(IdentKind::Phone, value)
    }
    /// `anonymous_id`.
    pub fn anonymous_id(value: impl Into<String>) -> Ident {
        Ident::new(IdentKind::AnonymousId, value)
    }

    /// Infers the kind the way Track API v1 reads a path identifier: `cio_<x>` is a
    /// `cio_id`, a value containing `@` is an email, anything else is an `id`.
    ///
    /// # Examples
    /// ```
    /// use profiledb::{Ident, IdentKind};
    /// assert_eq!(Ident::infer("cio_0000002a"), Ident::cio_id("0000002a"));
    /// assert_eq!(Ident::infer("ann@example.com").kind, IdentKind::Email);
    /// assert_eq!(Ident::infer("u-1").kind, IdentKind::Id);
    /// ```
    pub fn infer(value: &str) -> Ident {
        if let Some(rest) = value.strip_prefix("cio_") {
            Ident::cio_id(rest)
        } else if value.contains('@') {
            Ident::email(value)
        } else {
            Ident::id(value)
        }
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} `{}`", self.kind, self.value)
    }
}

/// The database's internal person id: dense, allocated from a counter, never reused.
/// Every person is one bit in a roaring bitmap by this number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PersonId(pub u32);

impl PersonId {
    /// The person's `cio_id`, derived from the internal id: eight or more lowercase hex
    /// digits. It never changes and is never given to anyone else.
    pub fn cio_id(self) -> String {
        format!("{:08x}", self.0)
    }

    /// The internal id a `cio_id` names, if it is well-formed (1 to 8 hex digits).
    pub fn from_cio_id(cio_id: &str) -> Option<PersonId> {
        if cio_id.is_empty() || cio_id.len() > 8 || !cio_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u32::from_str_radix(cio_id, 16).ok().map(PersonId)
    }
}

impl fmt::Display for PersonId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cio_{}", self.cio_id())
    }
}

/// A person as stored: identifiers, attributes and when each attribute was last set.
#[derive(Debug, Clone, PartialEq)]
pub struct Person {
    /// The internal id.
    pub pid: PersonId,
    /// `cio_id`, derived from `pid`.
    pub cio_id: String,
    /// `id`, if set.
    pub id: Option<String>,
    /// `email` as given, if set.
    pub email: Option<String>,
    /// `phone`, if set.
    pub phone: Option<String>,
    /// `anonymous_id`, if set.
    pub anonymous_id: Option<String>,
    /// When the person was added to this database (`_created_in_customerio_at`), unix seconds.
    pub created: i64,
    /// When the person last changed, unix seconds.
    pub updated: i64,
    /// The attributes (identifiers are not repeated here).
    pub attributes: Map,
    /// When each attribute was last set, unix seconds (the App API's `timestamps`).
    pub timestamps: std::collections::BTreeMap<String, i64>,
}

impl Person {
    /// The identifier of `kind`, if the person has one.
    pub fn identifier(&self, kind: IdentKind) -> Option<&str> {
        match kind {
            IdentKind::Id => self.id.as_deref(),
            IdentKind::Email => self.email.as_deref(),
            IdentKind::CioId => Some(&self.cio_id),
            IdentKind::Phone => self.phone.as_deref(),
            IdentKind::AnonymousId => self.anonymous_id.as_deref(),
        }
    }

    /// Whether the person is globally unsubscribed (the `unsubscribed` attribute is truthy).
    pub fn unsubscribed(&self) -> bool {
        self.attributes
            .get("unsubscribed")
            .is_some_and(|v| v.is_truthy())
    }
}
