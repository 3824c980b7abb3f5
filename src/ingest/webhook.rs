//! Reporting-webhook events: delivery metrics per channel, and customer subscription
//! changes.

use serde_json::{Map as JsonMap, Value as Json};

use super::json::{self, get, nonempty_str, opt_str, opt_unix, req_str};
use super::{Names, Plan};
use crate::db::Op;
use crate::deliveries::{Metric, NewDelivery};
use crate::error::InputError;
use crate::model::{Channel, Ident, Value};
use crate::people::Identify;

/// The person `data.identifiers` (or `data.customer_id`) names, with the field; `None`
/// when the event names nobody.
fn named(data: &JsonMap<String, Json>) -> std::result::Result<Option<(Ident, String)>, InputError> {
    if let Some(ids) = get(data, "identifiers") {
        let ids = json::object(ids, "data.identifiers")?;
        for key in ["id", "email", "cio_id"] {
            if let Some(v) = nonempty_str(ids, key, "data.identifiers")? {
                let kind =
                    crate::model::IdentKind::from_name(key).unwrap_or(crate::model::IdentKind::Id);
                return Ok(Some((
                    Ident::new(kind, v),
                    format!("data.identifiers.{key}"),
                )));
            }
        }
    }
    Ok(nonempty_str(data, "customer_id", "data")?
        .map(|id| (Ident::id(id), "data.customer_id".to_owned())))
}

/// The person a customer event names, with the field.
fn person(data: &JsonMap<String, Json>) -> std::result::Result<(Ident, String), InputError> {
    named(data)?.ok_or_else(|| {
        InputError::invalid(
            "data.identifiers",
            "must name the person (id, email or cio_id), or data.customer_id must",
        )
    })
}

/// Plans a webhook event. Pure: whether a delivery event's delivery is recorded yet is
/// decided inside the write ([`Op::DeliveryEvent`]), so no other write can come between.
pub(crate) fn plan(m: &JsonMap<String, Json>) -> std::result::Result<Plan, InputError> {
    let object_type = req_str(m, "object_type", "")?;
    let metric = req_str(m, "metric", "")?;
    let data = match get(m, "data") {
        Some(d) => json::object(d, "data")?,
        None => return Err(InputError::invalid("data", "is required")),
    };
    let timestamp = opt_unix(m, "timestamp", "")?;
    if object_type == "customer" {
        return customer(&metric, data, timestamp);
    }
    let channel = Channel::parse(&object_type).ok_or_else(|| {
        InputError::invalid(
            "object_type",
            format!(
                "`{object_type}` is not a channel (email, push, sms, whatsapp, in_app, slack, \
                 webhook) or customer"
            ),
        )
    })?;
    let delivery_id = req_str(data, "delivery_id", "data")?;
    delivery(data, channel, metric, delivery_id, timestamp)
}

fn delivery(
    data: &JsonMap<String, Json>,
    channel: Channel,
    metric: String,
    delivery_id: String,
    timestamp: Option<i64>,
) -> std::result::Result<Plan, InputError> {
    let person = named(data)?;
    let mut d = NewDelivery::new(delivery_id.clone(), channel);
    if let Some(v) = opt_str(data, "campaign_id", "data")? {
        d = d.campaign_id(v);
    }
    if let Some(v) = opt_str(data, "broadcast_id", "data")? {
        d = d.broadcast_id(v);
    }
    if let Some(v) = opt_str(data, "newsletter_id", "data")? {
        d = d.newsletter_id(v);
    }
    if let Some(v) = opt_str(data, "action_id", "data")? {
        d = d.message_id(v);
    }
    if let Some(v) = nonempty_str(data, "recipient", "data")? {
        d = d.recipient(v);
    }
    if let Some(v) = nonempty_str(data, "subject", "data")? {
        d = d.subject(v);
    }
    if let Some(t) = timestamp {
        d = d.created(t);
    }
    let mut mt = Metric::new(delivery_id, metric);
    if let Some(t) = timestamp {
        mt = mt.timestamp(t);
    }
    if let Some(h) = nonempty_str(data, "href", "data")? {
        mt = mt.href(h);
    }
    if let Some(r) = nonempty_str(data, "failure_message", "data")? {
        mt = mt.reason(r);
    }
    let (person, who) = match person {
        Some((ident, field)) => (Some(ident), field),
        None => (None, "data.identifiers".to_owned()),
    };
    let names = Names::new(who)
        .base("data")
        .rename("person", "data.identifiers")
        .rename("message_id", "data.action_id")
        .rename("metric", "metric")
        .rename("href", "data.href")
        .rename("reason", "data.failure_message");
    Ok(Plan::one(
        Op::DeliveryEvent {
            person,
            delivery: d,
            metric: mt,
        },
        names,
    ))
}

fn customer(
    metric: &str,
    data: &JsonMap<String, Json>,
    timestamp: Option<i64>,
) -> std::result::Result<Plan, InputError> {
    let (who, field) = person(data)?;
    let mut op = Identify::new(who).update_only(true);
    match metric {
        "subscribed" | "unsubscribed" => {
            op = op.set("unsubscribed", metric == "unsubscribed");
        }
        "cio_subscription_preferences_changed" => {
            let content = match get(data, "content") {
                Some(Json::String(s)) => serde_json::from_str::<Json>(s).map_err(|e| {
                    InputError::invalid("data.content", format!("is not JSON: {e}"))
                })?,
                Some(v) => v.clone(),
                None => return Err(InputError::invalid("data.content", "is required")),
            };
            if !content.is_object() {
                return Err(InputError::invalid("data.content", "must be a JSON object"));
            }
            op = op.set(
                "cio_subscription_preferences",
                Value::from_json(&content, "data.content")?,
            );
        }
        other => {
            return Err(InputError::invalid(
                "metric",
                format!(
                    "`{other}` is not a customer event (subscribed, unsubscribed, \
                     cio_subscription_preferences_changed)"
                ),
            ))
        }
    }
    if let Some(t) = timestamp {
        op = op.timestamp(t);
    }
    Ok(Plan::one(Op::Identify(op), Names::new(field).base("data")))
}
