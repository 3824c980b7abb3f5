//! Input limits, after Customer.io's published ones, and the checks that enforce them
//! before anything is written.

use crate::error::{InputError, InputReason};
use crate::model::{Ident, IdentKind};

/// Size and count limits on input. Defaults follow Customer.io's published limits.
///
/// # Examples
/// ```
/// let limits = profiledb::Limits { max_attributes: 500, ..Default::default() };
/// assert_eq!(limits.max_identifier_bytes, 150);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Longest `id`, `anonymous_id` (and email) in bytes. Default 150.
    pub max_identifier_bytes: usize,
    /// Longest attribute name in bytes (a dotted path counts whole). Default 150.
    pub max_attribute_name_bytes: usize,
    /// Largest attribute value in bytes: a string's UTF-8 length, other values' compact
    /// JSON length. Default 1000.
    pub max_attribute_value_bytes: usize,
    /// Most attributes a person may have, and most one identify call may set. Default 300.
    pub max_attributes: usize,
    /// Longest event name in bytes. Default 100.
    pub max_event_name_bytes: usize,
    /// Largest event data (compact JSON) in bytes. Default 100,000.
    pub max_event_data_bytes: usize,
    /// Most devices one person may have. Default 25.
    pub max_devices: usize,
    /// Largest total size of one object's or relationship's attributes (compact JSON)
    /// in bytes. Default 100,000.
    pub max_object_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_identifier_bytes: 150,
            max_attribute_name_bytes: 150,
            max_attribute_value_bytes: 1000,
            max_attributes: 300,
            max_event_name_bytes: 100,
            max_event_data_bytes: 100_000,
            max_devices: 25,
            max_object_bytes: 100_000,
        }
    }
}

impl Limits {
    /// Checks `ident` (naming its kind as the field); returns the normalized form used
    /// for lookup.
    ///
    /// # Errors
    /// As [`identifier`](Limits::identifier).
    pub(crate) fn ident(&self, ident: &Ident) -> Result<String, InputError> {
        self.identifier(ident.kind, &ident.value, ident.kind.as_str())
    }

    /// Checks an identifier value of `kind`; `field` names it in the error. Returns the
    /// normalized form used for lookup (emails lowercased).
    ///
    /// # Errors
    /// [`InputError`] naming `field` when the value is empty, too long or malformed.
    pub fn identifier(
        &self,
        kind: IdentKind,
        value: &str,
        field: &str,
    ) -> Result<String, InputError> {
        if value.is_empty() {
            return Err(InputError::new(field, InputReason::Empty));
        }
        if value.len() > self.max_identifier_bytes && kind != IdentKind::Email {
            return Err(InputError::new(
                field,
                InputReason::TooLong {
                    len: value.len(),
                    max: self.max_identifier_bytes,
                },
            ));
        }
        if value.chars().any(char::is_control) {
            return Err(InputError::invalid(field, "contains control characters"));
        }
        match kind {
            IdentKind::Email => {
                check_email(value, field)?;
                Ok(value.to_lowercase())
            }
            IdentKind::Phone => {
                check_e164(value, field)?;
                Ok(value.to_owned())
            }
            IdentKind::CioId => Ok(value.to_ascii_lowercase()),
            IdentKind::Id | IdentKind::AnonymousId => Ok(value.to_owned()),
        }
    }
}

/// Checks a free-form value (an attribute value, event data, object attributes): nesting
/// at most [`MAX_DEPTH`](crate::model::MAX_DEPTH), finite numbers, and at most `max_bytes`
/// (a string's UTF-8 length, otherwise its compact JSON size).
///
/// # Errors
/// [`InputError`] naming `field`.
pub fn check_value(
    field: &str,
    value: &crate::model::Value,
    max_bytes: usize,
) -> Result<(), InputError> {
    use crate::model::{Value, MAX_DEPTH};
    fn finite(v: &Value) -> bool {
        match v {
            Value::Float(x) => x.is_finite(),
            Value::Array(a) => a.iter().all(finite),
            Value::Map(m) => m.values().all(finite),
            _ => true,
        }
    }
    if value.depth() > MAX_DEPTH {
        return Err(InputError::new(
            field,
            InputReason::TooDeep { max: MAX_DEPTH },
        ));
    }
    if !finite(value) {
        return Err(InputError::invalid(
            field,
            "holds a number that is not finite",
        ));
    }
    let size = value.size();
    if size > max_bytes {
        return Err(InputError::new(
            field,
            InputReason::TooLong {
                len: size,
                max: max_bytes,
            },
        ));
    }
    Ok(())
}

/// Longest email address (RFC 5321's path limit).
const MAX_EMAIL_BYTES: usize = 254;

/// A pragmatic RFC 5322 check: one `@`, a non-empty local part of at most 64 bytes, a
/// domain of dot-separated labels, no spaces or quotes. Quoted local parts and
/// IP-literal domains are refused.
fn check_email(value: &str, field: &str) -> Result<(), InputError> {
    if value.len() > MAX_EMAIL_BYTES {
        return Err(InputError::new(
            field,
            InputReason::TooLong {
                len: value.len(),
                max: MAX_EMAIL_BYTES,
            },
        ));
    }
    let bad =
        |why: &str| InputError::invalid(field, format!("is not a valid email address: {why}"));
    let (local, domain) = value.rsplit_once('@').ok_or_else(|| bad("no `@`"))?;
    if local.is_empty() || local.len() > 64 {
        return Err(bad("the part before `@` must be 1 to 64 bytes"));
    }
    const LOCAL_SPECIALS: &str = "!#$%&'*+-/=?^_`{|}~.";
    if !local
        .chars()
        .all(|c| c.is_alphanumeric() || LOCAL_SPECIALS.contains(c))
        || local.starts_with('.')
        || local.ends_with('.')
        || local.contains("..")
    {
        return Err(bad("the part before `@` has a character not allowed there"));
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2
        || labels.iter().any(|l| {
            l.is_empty()
                || l.len() > 63
                || l.starts_with('-')
                || l.ends_with('-')
                || !l.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
    {
        return Err(bad(
            "the domain must be labels separated by dots, like example.com",
        ));
    }
    Ok(())
}

/// E.164: `+`, then 1 to 15 digits, the first not 0.
fn check_e164(value: &str, field: &str) -> Result<(), InputError> {
    let digits = value.strip_prefix('+').unwrap_or("");
    let ok = (1..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    if ok {
        Ok(())
    } else {
        Err(InputError::invalid(
            field,
            "is not an E.164 phone number (`+` then up to 15 digits, like +14155550100)",
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        let l = Limits::default();
        for ok in ["a@b.co", "Ann.Lee+tag@Example.COM", "x_y@sub.example.org"] {
            assert!(l.identifier(IdentKind::Email, ok, "email").is_ok(), "{ok}");
        }
        for bad in [
            "", "a", "a@", "@b.co", "a@b", "a b@c.co", "a@@b.co", "a@b..co", ".a@b.co",
        ] {
            assert!(
                l.identifier(IdentKind::Email, bad, "email").is_err(),
                "{bad}"
            );
        }
        assert_eq!(
            l.identifier(IdentKind::Email, "Ann@Example.com", "email")
                .ok(),
            Some("ann@example.com".to_owned())
        );
    }

    #[test]
    fn phones() {
        let l = Limits::default();
        assert!(l
            .identifier(IdentKind::Phone, "+14155550100", "phone")
            .is_ok());
        for bad in ["14155550100", "+", "+0123", "+1234567890123456", "+1 415"] {
            assert!(
                l.identifier(IdentKind::Phone, bad, "phone").is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn id_length_is_in_bytes() {
        let l = Limits::default();
        assert!(l.identifier(IdentKind::Id, &"a".repeat(150), "id").is_ok());
        let err = l
            .identifier(IdentKind::Id, &"é".repeat(76), "id")
            .expect_err("152 bytes");
        assert_eq!(err.reason, InputReason::TooLong { len: 152, max: 150 });
    }
}
