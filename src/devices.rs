//! The `add_device` operation (and its kin); the rules are documented on
//! [`ProfileDb::add_device`](crate::ProfileDb::add_device), where users read them.

use crate::db::write::Ctx;
use crate::error::{InputError, InputReason, Result};
use crate::model::Outcome;
use crate::model::{kinds, Ident, Map, Platform, Value};
use crate::people;
use crate::store::records::DeviceRecord;
use crate::store::{pid_key, DeviceTokensF, DevicesF, Family};

/// Longest device token, in bytes.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// Reserved device attributes (model doc 5); others are custom. `_last_status` is
/// read-only.
pub const RESERVED_DEVICE_ATTRIBUTES: [&str; 6] = [
    "device_os",
    "device_model",
    "app_version",
    "cio_sdk_version",
    "device_locale",
    "push_enabled",
];

/// A device to add or update.
///
/// # Examples
/// ```
/// use profiledb::{DeviceInput, Platform};
/// let d = DeviceInput::new("fcm-token-1", Platform::Android)
///     .last_used(1_767_225_600)
///     .attribute("app_version", "1.2.0");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceInput {
    pub(crate) token: String,
    pub(crate) platform: Platform,
    pub(crate) last_used: Option<i64>,
    pub(crate) attributes: Vec<(String, Value)>,
}

impl DeviceInput {
    /// A device with push token `token`.
    pub fn new(token: impl Into<String>, platform: Platform) -> DeviceInput {
        DeviceInput {
            token: token.into(),
            platform,
            last_used: None,
            attributes: Vec::new(),
        }
    }
    /// When it was last used, unix seconds (default: now).
    pub fn last_used(mut self, unix_seconds: i64) -> DeviceInput {
        self.last_used = Some(unix_seconds);
        self
    }
    /// Sets a device attribute (`null` or `""` removes it).
    pub fn attribute(mut self, name: impl Into<String>, value: impl Into<Value>) -> DeviceInput {
        self.attributes.push((name.into(), value.into()));
        self
    }
}

/// What happened to a push sent to a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushResult {
    /// The push provider accepted it.
    Sent,
    /// It bounced.
    Bounced,
}

pub(crate) fn check_token(token: &str) -> Result<(), InputError> {
    if token.is_empty() {
        return Err(InputError::new("device.token", InputReason::Empty));
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(InputError::new(
            "device.token",
            InputReason::TooLong {
                len: token.len(),
                max: MAX_TOKEN_BYTES,
            },
        ));
    }
    if token.chars().any(char::is_control) {
        return Err(InputError::invalid(
            "device.token",
            "contains control characters",
        ));
    }
    Ok(())
}

fn device_change(cx: &mut Ctx<'_, '_>, pid: u32, action: &str, token: &str, platform: &str) {
    cx.touches.of(pid).devices = true;
    let mut data = Map::new();
    data.insert("action".into(), Value::from(action));
    data.insert("token".into(), Value::from(token));
    data.insert("platform".into(), Value::from(platform));
    cx.record(pid, kinds::DEVICE_CHANGE, None, Value::Map(data));
}

/// Add or update a device of the person `ident` names (creating the person if needed).
pub(crate) fn add_device(cx: &mut Ctx<'_, '_>, ident: &Ident, d: &DeviceInput) -> Result<Outcome> {
    check_token(&d.token)?;
    let mut patch = Vec::with_capacity(d.attributes.len());
    if d.attributes.len() > cx.limits.max_attributes {
        return Err(InputError::new(
            "device.attributes",
            InputReason::TooMany {
                count: d.attributes.len(),
                max: cx.limits.max_attributes,
            },
        )
        .into());
    }
    for (name, value) in &d.attributes {
        let field = format!("device.attributes.{name}");
        if name.is_empty() {
            return Err(InputError::new("device.attributes", InputReason::Empty).into());
        }
        if name == "_last_status" {
            return Err(InputError::new(field, InputReason::Reserved).into());
        }
        if name.len() > cx.limits.max_attribute_name_bytes {
            return Err(InputError::new(
                field,
                InputReason::TooLong {
                    len: name.len(),
                    max: cx.limits.max_attribute_name_bytes,
                },
            )
            .into());
        }
        if value.is_removal() {
            patch.push((name.clone(), None));
            continue;
        }
        crate::limits::check_value(&field, value, cx.limits.max_attribute_value_bytes)?;
        // The spec has push_enabled as the string "true"/"false"; accept booleans too.
        let value = match (name.as_str(), value) {
            ("push_enabled", Value::Bool(b)) => Value::from(if *b { "true" } else { "false" }),
            _ => value.clone(),
        };
        patch.push((name.clone(), Some(value)));
    }
    let pid = match people::resolve_or_create(cx, ident)? {
        Ok(pid) => pid,
        Err(outcome) => return Ok(outcome),
    };
    let token_key = d.token.as_bytes().to_vec();
    let owner = cx.txn.get::<DeviceTokensF>(&token_key)?;
    let key = DevicesF::key(pid, &d.token);
    let existing = if owner == Some(pid) {
        cx.txn.get::<DevicesF>(&key)?
    } else {
        None
    };
    if existing.is_none() {
        let count = cx.txn.keys(Family::Devices, &pid_key(pid))?.len();
        if count >= cx.limits.max_devices {
            return Err(InputError::new(
                "device",
                InputReason::TooMany {
                    count: count + 1,
                    max: cx.limits.max_devices,
                },
            )
            .into());
        }
    }
    if let Some(previous) = owner.filter(|p| *p != pid) {
        // The token moves: the previous owner loses the device.
        if let Some(old) = cx.txn.get::<DevicesF>(&DevicesF::key(previous, &d.token))? {
            cx.txn.delete::<DevicesF>(DevicesF::key(previous, &d.token));
            device_change(cx, previous, "moved", &d.token, &old.platform);
        }
    }
    let action = if existing.is_some() { "update" } else { "add" };
    let mut rec = existing.unwrap_or_else(|| DeviceRecord {
        created: cx.now,
        ..DeviceRecord::default()
    });
    let before = rec.clone();
    rec.platform = d.platform.as_str().to_owned();
    rec.last_used = d.last_used.unwrap_or(cx.now);
    if matches!(rec.status.as_str(), "bounced" | "suppressed") {
        rec.status = String::new();
    }
    for (name, value) in patch {
        match value {
            Some(v) => rec.attributes.insert(name, v),
            None => rec.attributes.remove(&name),
        };
    }
    if action == "update" && rec == before {
        return Ok(Outcome::Unchanged(crate::model::PersonId(pid)));
    }
    if rec.attributes.len() > cx.limits.max_attributes {
        return Err(InputError::new(
            "device.attributes",
            InputReason::TooMany {
                count: rec.attributes.len(),
                max: cx.limits.max_attributes,
            },
        )
        .into());
    }
    let platform = rec.platform.clone();
    cx.txn.put::<DevicesF>(key, rec);
    cx.txn.put::<DeviceTokensF>(token_key, pid);
    device_change(cx, pid, action, &d.token, &platform);
    Ok(Outcome::Updated(crate::model::PersonId(pid)))
}

/// Delete the device `token` of the person `ident` names.
pub(crate) fn delete_device(cx: &mut Ctx<'_, '_>, ident: &Ident, token: &str) -> Result<Outcome> {
    check_token(token)?;
    let norm = cx.normalize(ident)?;
    let Some(pid) = cx.lookup(ident.kind, &norm)? else {
        return Ok(Outcome::NotFound);
    };
    let key = DevicesF::key(pid, token);
    let Some(rec) = cx.txn.get::<DevicesF>(&key)? else {
        return Ok(Outcome::NotFound);
    };
    cx.txn.delete::<DevicesF>(key);
    cx.txn.delete::<DeviceTokensF>(token.as_bytes().to_vec());
    device_change(cx, pid, "delete", token, &rec.platform);
    Ok(Outcome::Updated(crate::model::PersonId(pid)))
}

/// Apply a push result to the device `token` (whoever owns it).
pub(crate) fn push_result(
    cx: &mut Ctx<'_, '_>,
    token: &str,
    result: PushResult,
) -> Result<Outcome> {
    check_token(token)?;
    let Some(pid) = cx.txn.get::<DeviceTokensF>(token.as_bytes())? else {
        return Ok(Outcome::NotFound);
    };
    let key = DevicesF::key(pid, token);
    let Some(mut rec) = cx.txn.get::<DevicesF>(&key)? else {
        return Ok(Outcome::NotFound);
    };
    let next = match (result, rec.status.as_str()) {
        (PushResult::Sent, _) => "sent",
        (PushResult::Bounced, "bounced" | "suppressed") => "suppressed",
        (PushResult::Bounced, _) => "bounced",
    };
    if rec.status == next {
        return Ok(Outcome::Unchanged(crate::model::PersonId(pid)));
    }
    rec.status = next.to_owned();
    cx.txn.put::<DevicesF>(key, rec);
    // Segments may read the status.
    cx.touches.of(pid).devices = true;
    Ok(Outcome::Updated(crate::model::PersonId(pid)))
}
