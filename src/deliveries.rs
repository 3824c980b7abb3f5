//! The `add_delivery` operation (and its kin); the rules are documented on
//! [`ProfileDb::add_delivery`](crate::ProfileDb::add_delivery), where users read them.

use crate::db::write::Ctx;
use crate::error::{InputError, InputReason, Result};
use crate::model::Outcome;
use crate::model::{Channel, Ident, Map, PersonId, Value};
use crate::people;
use crate::store::records::DeliveryRecord;
use crate::store::{DeliveriesF, DeliveryIdsF};

/// Longest delivery id, in bytes.
pub const MAX_DELIVERY_ID_BYTES: usize = 256;

/// A delivery to record.
///
/// # Examples
/// ```
/// use profiledb::{Channel, NewDelivery};
/// let d = NewDelivery::new("dlv-1", Channel::Email)
///     .campaign_id("42")
///     .recipient("ann@example.com")
///     .subject("Welcome")
///     .created(1_767_225_600);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct NewDelivery {
    pub(crate) id: String,
    pub(crate) channel: Channel,
    pub(crate) message_id: Option<String>,
    pub(crate) campaign_id: Option<String>,
    pub(crate) broadcast_id: Option<String>,
    pub(crate) newsletter_id: Option<String>,
    pub(crate) recipient: Option<String>,
    pub(crate) subject: Option<String>,
    pub(crate) created: Option<i64>,
}

impl NewDelivery {
    /// A delivery `id` on `channel`.
    pub fn new(id: impl Into<String>, channel: Channel) -> NewDelivery {
        NewDelivery {
            id: id.into(),
            channel,
            message_id: None,
            campaign_id: None,
            broadcast_id: None,
            newsletter_id: None,
            recipient: None,
            subject: None,
            created: None,
        }
    }
    /// The message template (action) id.
    pub fn message_id(mut self, v: impl Into<String>) -> NewDelivery {
        self.message_id = Some(v.into());
        self
    }
    /// The campaign id.
    pub fn campaign_id(mut self, v: impl Into<String>) -> NewDelivery {
        self.campaign_id = Some(v.into());
        self
    }
    /// The broadcast id.
    pub fn broadcast_id(mut self, v: impl Into<String>) -> NewDelivery {
        self.broadcast_id = Some(v.into());
        self
    }
    /// The newsletter id.
    pub fn newsletter_id(mut self, v: impl Into<String>) -> NewDelivery {
        self.newsletter_id = Some(v.into());
        self
    }
    /// Where it went.
    pub fn recipient(mut self, v: impl Into<String>) -> NewDelivery {
        self.recipient = Some(v.into());
        self
    }
    /// The subject line.
    pub fn subject(mut self, v: impl Into<String>) -> NewDelivery {
        self.subject = Some(v.into());
        self
    }
    /// When it was created, unix seconds (default: now).
    pub fn created(mut self, unix_seconds: i64) -> NewDelivery {
        self.created = Some(unix_seconds);
        self
    }
}

/// A metric reported against a delivery.
///
/// # Examples
/// ```
/// use profiledb::Metric;
/// let m = Metric::new("dlv-1", "clicked").timestamp(1_767_225_900).href("https://example.com");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub(crate) delivery_id: String,
    pub(crate) metric: String,
    pub(crate) timestamp: Option<i64>,
    pub(crate) href: Option<String>,
    pub(crate) reason: Option<String>,
}

impl Metric {
    /// `metric` (e.g. `opened`) for delivery `delivery_id`.
    pub fn new(delivery_id: impl Into<String>, metric: impl Into<String>) -> Metric {
        Metric {
            delivery_id: delivery_id.into(),
            metric: metric.into(),
            timestamp: None,
            href: None,
            reason: None,
        }
    }
    /// When it happened, unix seconds (default: now).
    pub fn timestamp(mut self, unix_seconds: i64) -> Metric {
        self.timestamp = Some(unix_seconds);
        self
    }
    /// The link clicked.
    pub fn href(mut self, v: impl Into<String>) -> Metric {
        self.href = Some(v.into());
        self
    }
    /// Why it bounced, failed or was dropped.
    pub fn reason(mut self, v: impl Into<String>) -> Metric {
        self.reason = Some(v.into());
        self
    }
}

fn check_id(id: &str) -> Result<(), InputError> {
    if id.is_empty() {
        return Err(InputError::new("delivery_id", InputReason::Empty));
    }
    if id.len() > MAX_DELIVERY_ID_BYTES {
        return Err(InputError::new(
            "delivery_id",
            InputReason::TooLong {
                len: id.len(),
                max: MAX_DELIVERY_ID_BYTES,
            },
        ));
    }
    Ok(())
}

fn check_text(field: &str, v: &Option<String>, max: usize) -> Result<(), InputError> {
    match v {
        Some(s) if s.len() > max => Err(InputError::new(
            field,
            InputReason::TooLong { len: s.len(), max },
        )),
        _ => Ok(()),
    }
}

/// Records a delivery for the person `ident` names (creating them if needed).
pub(crate) fn add_delivery(
    cx: &mut Ctx<'_, '_>,
    ident: &Ident,
    d: &NewDelivery,
) -> Result<Outcome> {
    check_id(&d.id)?;
    let max = cx.limits.max_attribute_value_bytes;
    for (field, v) in [
        ("message_id", &d.message_id),
        ("campaign_id", &d.campaign_id),
        ("broadcast_id", &d.broadcast_id),
        ("newsletter_id", &d.newsletter_id),
        ("recipient", &d.recipient),
        ("subject", &d.subject),
    ] {
        check_text(field, v, max)?;
    }
    if cx.txn.get::<DeliveryIdsF>(d.id.as_bytes())?.is_some() {
        return Err(InputError::invalid(
            "delivery_id",
            format!(
                "`{}` is already recorded; report metrics against it instead",
                d.id
            ),
        )
        .into());
    }
    let pid = match people::resolve_or_create(cx, ident)? {
        Ok(pid) => pid,
        Err(outcome) => return Ok(outcome),
    };
    let created = d.created.unwrap_or(cx.now);
    cx.txn
        .put::<DeliveryIdsF>(d.id.as_bytes().to_vec(), (pid, created));
    cx.txn.put::<DeliveriesF>(
        DeliveriesF::key(pid, created, &d.id),
        DeliveryRecord {
            channel: d.channel.as_str().to_owned(),
            message_id: d.message_id.clone(),
            campaign_id: d.campaign_id.clone(),
            broadcast_id: d.broadcast_id.clone(),
            newsletter_id: d.newsletter_id.clone(),
            recipient: d.recipient.clone(),
            subject: d.subject.clone(),
            metrics: Default::default(),
            status: "created".to_owned(),
        },
    );
    Ok(Outcome::Recorded(Some(PersonId(pid))))
}

/// Reports a metric against a recorded delivery.
pub(crate) fn report_metric(cx: &mut Ctx<'_, '_>, m: &Metric) -> Result<Outcome> {
    check_id(&m.delivery_id)?;
    check_text("href", &m.href, cx.limits.max_attribute_value_bytes)?;
    check_text("reason", &m.reason, cx.limits.max_attribute_value_bytes)?;
    let Some((pid, created)) = cx.txn.get::<DeliveryIdsF>(m.delivery_id.as_bytes())? else {
        return Ok(Outcome::NotFound);
    };
    let key = DeliveriesF::key(pid, created, &m.delivery_id);
    let Some(mut rec) = cx.txn.get::<DeliveriesF>(&key)? else {
        return Err(crate::store::corrupted(
            crate::store::Family::DeliveryIds,
            m.delivery_id.as_bytes(),
            "the delivery id points at a delivery that does not exist",
        ));
    };
    let channel = Channel::parse(&rec.channel).ok_or_else(|| {
        crate::store::corrupted(
            crate::store::Family::Deliveries,
            &key,
            format!("unknown channel `{}`", rec.channel),
        )
    })?;
    if !channel.metrics().contains(&m.metric.as_str()) {
        return Err(InputError::invalid(
            "metric",
            format!(
                "`{}` is not a metric of the {channel} channel (it has: {})",
                m.metric,
                channel.metrics().join(", ")
            ),
        )
        .into());
    }
    let at = m.timestamp.unwrap_or(cx.now);
    let status_time = rec.metrics.get(&rec.status).copied().unwrap_or(i64::MIN);
    if !rec.metrics.contains_key(&m.metric) && at >= status_time {
        rec.status = m.metric.clone();
    }
    rec.metrics.entry(m.metric.clone()).or_insert(at);
    cx.txn.put::<DeliveriesF>(key, rec);
    let mut data = Map::new();
    data.insert("delivery_id".into(), Value::from(m.delivery_id.as_str()));
    if let Some(href) = &m.href {
        data.insert("href".into(), Value::from(href.as_str()));
    }
    if let Some(reason) = &m.reason {
        data.insert("reason".into(), Value::from(reason.as_str()));
    }
    cx.touches.of(pid).metrics.insert(m.metric.clone());
    let kind = format!("{}_{}", m.metric, channel.activity_name());
    cx.record_at(pid, at, &kind, None, Value::Map(data));
    Ok(Outcome::Recorded(Some(PersonId(pid))))
}

/// One delivery event ([`Op::DeliveryEvent`](crate::Op::DeliveryEvent)): records `d`
/// for `person` unless its id is recorded already, then reports `m`. Deciding inside the
/// write is what keeps a concurrent write from coming between the check and the act.
pub(crate) fn delivery_event(
    cx: &mut Ctx<'_, '_>,
    person: Option<&Ident>,
    d: &NewDelivery,
    m: &Metric,
) -> Result<Outcome> {
    if m.delivery_id != d.id {
        return Err(InputError::invalid(
            "metric.delivery_id",
            format!("must be the delivery's id `{}`", d.id),
        )
        .into());
    }
    check_id(&d.id)?;
    if cx.txn.get::<DeliveryIdsF>(d.id.as_bytes())?.is_none() {
        let Some(person) = person else {
            return Err(InputError::invalid(
                "person",
                format!(
                    "must name the person (id, email or cio_id): delivery `{}` is not \
                     recorded yet, and recording it needs whose it is",
                    d.id
                ),
            )
            .into());
        };
        add_delivery(cx, person, d)?;
    }
    report_metric(cx, m)
}
