//! Devices, deliveries, objects and the profile overview: the plain types.

use std::collections::BTreeMap;
use std::fmt;

use crate::model::{Activity, Map, Person};

/// A push device's platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Platform {
    /// Apple.
    Ios,
    /// Android.
    Android,
}

impl Platform {
    /// `ios` or `android`.
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Ios => "ios",
            Platform::Android => "android",
        }
    }
    /// The platform named `s` (`ios`/`android`, any case).
    pub fn parse(s: &str) -> Option<Platform> {
        if s.eq_ignore_ascii_case("ios") {
            Some(Platform::Ios)
        } else if s.eq_ignore_ascii_case("android") {
            Some(Platform::Android)
        } else {
            None
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A device's push status (Customer.io's `_last_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceStatus {
    /// No push accepted yet (`""` in the API, "unused" in the UI).
    Unused,
    /// The last push was accepted.
    Sent,
    /// The last push bounced.
    Bounced,
    /// Two pushes in a row bounced: no more are sent.
    Suppressed,
}

impl DeviceStatus {
    /// `""`, `sent`, `bounced` or `suppressed`, as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceStatus::Unused => "",
            DeviceStatus::Sent => "sent",
            DeviceStatus::Bounced => "bounced",
            DeviceStatus::Suppressed => "suppressed",
        }
    }
    /// The status spelled `s`; unknown spellings are `Unused`.
    pub fn parse(s: &str) -> DeviceStatus {
        match s {
            "sent" => DeviceStatus::Sent,
            "bounced" => DeviceStatus::Bounced,
            "suppressed" => DeviceStatus::Suppressed,
            _ => DeviceStatus::Unused,
        }
    }
}

/// A person's push device.
#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    /// The push token (the device's `id`).
    pub token: String,
    /// The platform.
    pub platform: Platform,
    /// When it was last used, unix seconds.
    pub last_used: i64,
    /// Push status.
    pub status: DeviceStatus,
    /// Reserved (`device_os`, `app_version`, `push_enabled`...) and custom attributes.
    pub attributes: Map,
}

/// A message channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// Email.
    Email,
    /// Push notification.
    Push,
    /// SMS (Customer.io's `twilio` in activity types).
    Sms,
    /// WhatsApp.
    Whatsapp,
    /// In-app message.
    InApp,
    /// Slack.
    Slack,
    /// Webhook.
    Webhook,
}

impl Channel {
    /// Every channel.
    pub const ALL: [Channel; 7] = [
        Channel::Email,
        Channel::Push,
        Channel::Sms,
        Channel::Whatsapp,
        Channel::InApp,
        Channel::Slack,
        Channel::Webhook,
    ];

    /// The channel's name: `email`, `push`, `sms`, `whatsapp`, `in_app`, `slack`, `webhook`.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Push => "push",
            Channel::Sms => "sms",
            Channel::Whatsapp => "whatsapp",
            Channel::InApp => "in_app",
            Channel::Slack => "slack",
            Channel::Webhook => "webhook",
        }
    }

    /// The channel named `s` (`twilio` is SMS).
    pub fn parse(s: &str) -> Option<Channel> {
        Some(match s {
            "email" => Channel::Email,
            "push" => Channel::Push,
            "sms" | "twilio" => Channel::Sms,
            "whatsapp" => Channel::Whatsapp,
            "in_app" => Channel::InApp,
            "slack" => Channel::Slack,
            "webhook" => Channel::Webhook,
            _ => return None,
        })
    }

    /// The channel's name in activity types (`twilio` for SMS), as in `delivered_twilio`.
    pub fn activity_name(self) -> &'static str {
        match self {
            Channel::Sms => "twilio",
            other => other.as_str(),
        }
    }

    /// The metrics this channel reports (Customer.io's reporting-webhook vocabulary).
    pub fn metrics(self) -> &'static [&'static str] {
        match self {
            Channel::Email => &[
                "drafted",
                "attempted",
                "sent",
                "delivered",
                "opened",
                "clicked",
                "converted",
                "unsubscribed",
                "bounced",
                "dropped",
                "deferred",
                "spammed",
                "failed",
                "undeliverable",
            ],
            Channel::Push => &[
                "drafted",
                "attempted",
                "sent",
                "delivered",
                "opened",
                "clicked",
                "converted",
                "bounced",
                "dropped",
                "failed",
                "undeliverable",
            ],
            Channel::Sms => &[
                "drafted",
                "attempted",
                "sent",
                "delivered",
                "clicked",
                "converted",
                "bounced",
                "failed",
                "undeliverable",
                "replied",
            ],
            Channel::Whatsapp => &[
                "drafted",
                "attempted",
                "sent",
                "delivered",
                "opened",
                "clicked",
                "converted",
                "bounced",
                "dropped",
                "failed",
                "undeliverable",
                "replied",
            ],
            Channel::InApp => &[
                "drafted",
                "attempted",
                "sent",
                "opened",
                "clicked",
                "converted",
                "failed",
                "undeliverable",
            ],
            Channel::Slack | Channel::Webhook => &[
                "drafted",
                "attempted",
                "sent",
                "clicked",
                "failed",
                "undeliverable",
            ],
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One message sent to one person, with the metrics reported against it.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The delivery id.
    pub id: String,
    /// The channel.
    pub channel: Channel,
    /// The message template (action) id.
    pub message_id: Option<String>,
    /// The campaign id.
    pub campaign_id: Option<String>,
    /// The broadcast id.
    pub broadcast_id: Option<String>,
    /// The newsletter id.
    pub newsletter_id: Option<String>,
    /// Where it went.
    pub recipient: Option<String>,
    /// The subject line.
    pub subject: Option<String>,
    /// When it was created, unix seconds.
    pub created: i64,
    /// Each metric reported and when.
    pub metrics: BTreeMap<String, i64>,
    /// The current status: the metric reported with the latest time (`created` before any).
    pub status: String,
}

/// An object: a type id (Customer.io's string-formatted integer, `"1"`) and your object id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    /// The object type id.
    pub type_id: u32,
    /// The object id.
    pub object_id: String,
}

impl ObjectRef {
    /// The object `object_id` of type `type_id`.
    pub fn new(type_id: u32, object_id: impl Into<String>) -> ObjectRef {
        ObjectRef {
            type_id,
            object_id: object_id.into(),
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.type_id, self.object_id)
    }
}

/// An object with its attributes.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    /// Which object.
    pub object: ObjectRef,
    /// Its attributes.
    pub attributes: Map,
    /// When it was created, unix seconds.
    pub created: i64,
    /// When it last changed, unix seconds.
    pub updated: i64,
}

/// A relationship between a person and an object.
#[derive(Debug, Clone, PartialEq)]
pub struct Relationship {
    /// The object.
    pub object: ObjectRef,
    /// The object's own attributes (empty if the object has none or does not exist yet).
    pub object_attributes: Map,
    /// The relationship's attributes.
    pub attributes: Map,
}

/// A segment a person belongs to, as the overview lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentRef {
    /// The segment id.
    pub id: u32,
    /// Its name.
    pub name: String,
    /// `data_driven` or `manual`.
    pub kind: String,
}

/// One topic's effective state for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicState {
    /// The topic id.
    pub id: u32,
    /// Its name.
    pub name: String,
    /// Whether the person receives it.
    pub subscribed: bool,
}

/// Global and per-topic subscription state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subscription {
    /// Globally unsubscribed.
    pub unsubscribed: bool,
    /// Each topic's effective state (empty while no topics are defined).
    pub topics: Vec<TopicState>,
}

/// Everything the People page shows for one person, in the page's order.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// 1. Subscription preferences.
    pub subscription: Subscription,
    /// 2. Identifiers and attributes.
    pub person: Person,
    /// 3. Recent activity, newest first.
    pub activities: Vec<Activity>,
    /// 4. Recent deliveries, newest first.
    pub deliveries: Vec<Delivery>,
    /// 5. Segments (data-driven and manual).
    pub segments: Vec<SegmentRef>,
    /// 6. Devices.
    pub devices: Vec<Device>,
    /// 7. Relationships.
    pub relationships: Vec<Relationship>,
}
