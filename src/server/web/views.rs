//! The page templates (maud: compiled in, and every `(value)` escaped).
//!
//! The sections carry ids and `data-` attributes (`#identifiers tr[data-attr=plan]`) so
//! the browser tests can find each value and compare it with the library's answer.

use maud::{html, Markup, DOCTYPE};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::{
    Activity, Audience, Delivery, Device, Map, Object, ObjectRef, Person, PersonId, Profile,
    Relationship, SegmentInfo, SegmentRef, Value,
};

use super::auth::CSRF_FIELD;

/// Everything but the unreserved characters, so any identifier is one path segment.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `s` percent-encoded as one path segment or query value.
pub(crate) fn encode(s: &str) -> String {
    utf8_percent_encode(s, COMPONENT).to_string()
}

/// What every page's frame needs: the CSRF token its forms carry, whether to offer
/// "Log out", and a notice to show at the top.
pub(crate) struct Chrome<'a> {
    pub(crate) csrf: &'a str,
    pub(crate) can_log_out: bool,
    pub(crate) notice: Option<&'static str>,
}

/// Which top-level section a page belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    People,
    Segments,
    Other,
}

fn layout(chrome: &Chrome<'_>, section: Section, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · profiledb" }
                link rel="stylesheet" href="/static/app.css";
                script src="/static/app.js" defer {}
            }
            body {
                header.topbar {
                    a.brand href="/" { "profiledb" }
                    nav {
                        a href="/" class=[(section == Section::People).then_some("active")] { "People" }
                        a href="/segments" class=[(section == Section::Segments).then_some("active")] { "Segments" }
                    }
                    @if chrome.can_log_out {
                        form.logout method="post" action="/logout" {
                            (csrf(chrome.csrf))
                            button.link type="submit" { "Log out" }
                        }
                    }
                }
                main {
                    @if let Some(notice) = chrome.notice {
                        p.notice role="status" { (notice) }
                    }
                    (body)
                }
            }
        }
    }
}

fn csrf(token: &str) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(token); }
}

/// A time as UTC, with its machine-readable form for the script to show local time.
pub(crate) fn when(t: i64) -> Markup {
    let text = time_text(t);
    let iso = time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    html! { time datetime=(iso) { (text) } }
}

/// `2026-01-01 00:00:00 UTC`, or the number when it is outside the calendar.
pub(crate) fn time_text(t: i64) -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'static>] =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| d.format(FORMAT).ok())
        .unwrap_or_else(|| t.to_string())
}

/// A value as the page shows it: a string as itself, anything else as compact JSON.
pub(crate) fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn value(v: &Value) -> Markup {
    match v {
        Value::String(s) => html! { span.v { (s) } },
        other => html! { code.v { (other.to_string()) } },
    }
}

fn dash(v: Option<&str>) -> Markup {
    match v {
        Some(s) => html! { (s) },
        None => html! { span.muted { "—" } },
    }
}

/// The address of a person's profile (by `cio_id`, which never changes or clashes).
pub(crate) fn person_url(pid: PersonId) -> String {
    format!("/people/cio_{}", pid.cio_id())
}

fn object_url(type_id: u32, object_id: &str) -> String {
    format!("/objects/{type_id}/{}", encode(object_id))
}

fn display_name(p: &Person) -> String {
    p.email
        .clone()
        .or_else(|| p.id.clone())
        .unwrap_or_else(|| format!("cio_{}", p.cio_id))
}

/// A condition that did not parse or was refused, to show beside the box.
pub(crate) struct ConditionError {
    pub(crate) message: String,
    /// The byte offset the parser stopped at, when it says.
    pub(crate) position: Option<usize>,
    /// The token it found there, when it was one.
    pub(crate) token: Option<String>,
}

/// The People list's query string.
pub(crate) struct PeopleQuery<'a> {
    pub(crate) search: &'a str,
    pub(crate) condition: &'a str,
    /// Whether this is a later page.
    pub(crate) after: bool,
}

fn people_query_url(q: &PeopleQuery<'_>, after: Option<PersonId>) -> String {
    let mut parts = Vec::new();
    if !q.search.is_empty() {
        parts.push(format!("search={}", encode(q.search)));
    }
    if !q.condition.is_empty() {
        parts.push(format!("where={}", encode(q.condition)));
    }
    if let Some(a) = after {
        parts.push(format!("after={}", a.cio_id()));
    }
    if parts.is_empty() {
        "/".to_owned()
    } else {
        format!("/?{}", parts.join("&"))
    }
}

/// The people list: one page of people with their `Person` record (None if they were
/// deleted between the list and the read).
pub(crate) type PeopleRows = (Audience, Vec<(PersonId, Option<Person>)>);

/// The People page.
pub(crate) fn people_page(
    chrome: &Chrome<'_>,
    q: &PeopleQuery<'_>,
    result: Result<&PeopleRows, &ConditionError>,
) -> Markup {
    let body = html! {
        h1 { "People" }
        form.filters method="get" action="/" {
            label.grow {
                span { "Search id or email" }
                input type="search" name="search" value=(q.search) placeholder="prefix, e.g. user-0001 or ann@" autocomplete="off";
            }
            label.grow.wide {
                span { "Condition" }
                input type="text" name="where" value=(q.condition) placeholder=r#"e.g. attr.plan = "pro" and not unsubscribed"# autocomplete="off" spellcheck="false" aria-invalid=[result.is_err().then_some("true")];
            }
            button type="submit" { "Filter" }
            @if !q.search.is_empty() || !q.condition.is_empty() {
                a.button.secondary href="/" { "Clear" }
            }
        }
        details.help {
            summary { "Condition examples" }
            ul {
                @for (example, what) in CONDITION_EXAMPLES {
                    li { code { (example) } " — " (what) }
                }
            }
            p.muted { "Combine with and, or, not and parentheses; or paste App API filter JSON." }
        }
        @match result {
            Err(e) => {
                div.error #condition-error role="alert" {
                    p { strong { "The condition was refused: " } (e.message) }
                    @if let Some(pos) = e.position {
                        @let (before, at, after) = split_at_byte(q.condition, pos, e.token.as_deref());
                        pre.caret { (before) mark { @if at.is_empty() { " " } @else { (at) } } (after) }
                    }
                }
            }
            Ok((audience, rows)) => {
                p #count { strong { (audience.count) } " " (if audience.count == 1 { "person" } else { "people" }) " match" }
                @if rows.is_empty() {
                    p.empty { "Nobody matches." }
                } @else {
                    div.table-wrap {
                        table.people.stack {
                            thead { tr { th { "id" } th { "email" } th { "cio_id" } th { "created" } th { "last updated" } } }
                            tbody {
                                @for (pid, person) in rows {
                                    tr data-cio=(pid.cio_id()) {
                                        @match person {
                                            Some(p) => {
                                                td data-label="id" { a href=(person_url(*pid)) { (dash(p.id.as_deref())) } }
                                                td data-label="email" { a href=(person_url(*pid)) { (dash(p.email.as_deref())) } }
                                                td.mono data-label="cio_id" { (p.cio_id) }
                                                td data-label="created" { (when(p.created)) }
                                                td data-label="updated" { (when(p.updated)) }
                                            }
                                            None => {
                                                td colspan="5" { span.muted { "cio_" (pid.cio_id()) " was just deleted" } }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                nav.pager {
                    @if q.after {
                        a.button.secondary href=(people_query_url(q, None)) { "← First page" }
                    }
                    @if let Some(next) = audience.next {
                        a.button #next-page href=(people_query_url(q, Some(next))) { "Next page →" }
                    }
                }
            }
        }
    };
    layout(chrome, Section::People, "People", body)
}

/// The examples under the condition box.
const CONDITION_EXAMPLES: [(&str, &str); 7] = [
    (
        r#"attr.plan = "pro""#,
        "an attribute's value (=, !=, <, >, contains, starts_with)",
    ),
    ("attr.phone exists", "has the attribute"),
    ("topic:3 and not unsubscribed", "subscribed to topic 3"),
    (
        r#"segment:"VIP""#,
        "in a segment (by name, or segment:#6 by id)",
    ),
    ("event:purchase within 7d", "did an event lately"),
    ("event:purchase count >= 2", "did it at least twice"),
    (r#"device.platform = "ios""#, "has an iOS device"),
];

/// `text` split around what is at byte `pos` (clamped to a character boundary): `token`
/// when it is there, else one character.
fn split_at_byte<'t>(
    text: &'t str,
    pos: usize,
    token: Option<&str>,
) -> (&'t str, &'t str, &'t str) {
    let mut start = pos.min(text.len());
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    let rest = text.get(start..).unwrap_or("");
    let len = match token {
        Some(t) if !t.is_empty() && rest.starts_with(t) => t.len(),
        _ => rest.chars().next().map_or(0, char::len_utf8),
    };
    (
        text.get(..start).unwrap_or(""),
        rest.get(..len).unwrap_or(""),
        rest.get(len..).unwrap_or(""),
    )
}

/// The tabs of a person's page.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tab {
    Overview,
    Attributes,
    Activity,
    Deliveries,
    Devices,
}

impl Tab {
    const ALL: [(Tab, &'static str, &'static str); 5] = [
        (Tab::Overview, "", "Overview"),
        (Tab::Attributes, "/attributes", "Attributes"),
        (Tab::Activity, "/activity", "Activity"),
        (Tab::Deliveries, "/deliveries", "Deliveries"),
        (Tab::Devices, "/devices", "Devices"),
    ];
}

fn person_frame(
    chrome: &Chrome<'_>,
    p: &Person,
    tab: Tab,
    unsubscribed: bool,
    body: Markup,
) -> Markup {
    let base = person_url(p.pid);
    let name = display_name(p);
    let page = html! {
        nav.crumbs { a href="/" { "People" } " / " span { (name) } }
        div.person-head {
            div {
                h1 #person-name { (name) }
                p.sub {
                    span.badge.(if unsubscribed { "off" } else { "on" }) #status { (if unsubscribed { "Unsubscribed" } else { "Subscribed" }) }
                    " cio_" span.mono { (p.cio_id) }
                    " · created " (when(p.created)) " · updated " (when(p.updated))
                }
            }
            div.danger {
                a.button.secondary #suppress-link href={ (base) "/confirm/suppress" } { "Suppress" }
                a.button.destructive #delete-link href={ (base) "/confirm/delete" } { "Delete" }
            }
        }
        nav.tabs {
            @for (t, suffix, label) in Tab::ALL {
                a href={ (base) (suffix) } class=[(t == tab).then_some("active")] aria-current=[(t == tab).then_some("page")] { (label) }
            }
        }
        (body)
    };
    layout(chrome, Section::People, &name, page)
}

fn attr_table(p: &Person, limit: usize) -> Markup {
    html! {
        div.table-wrap {
            table.kv {
                tbody {
                    @for (name, v) in [("id", p.id.as_deref()), ("email", p.email.as_deref()), ("phone", p.phone.as_deref()), ("anonymous_id", p.anonymous_id.as_deref())] {
                        @if v.is_some() || name != "anonymous_id" {
                            tr.ident data-ident=(name) { th { (name) } td.value { (dash(v)) } td {} }
                        }
                    }
                    tr.ident data-ident="cio_id" { th { "cio_id" } td.value.mono { (p.cio_id) } td {} }
                    @for (name, v) in p.attributes.iter().take(limit) {
                        tr data-attr=(name) {
                            th { (name) }
                            td.value { (value(v)) }
                            td.muted { @if let Some(t) = p.timestamps.get(name) { "set " (when(*t)) } }
                        }
                    }
                }
            }
        }
    }
}

/// How many attributes the Overview lists before pointing at the Attributes tab.
const OVERVIEW_ATTRIBUTES: usize = 20;

/// The Overview tab.
pub(crate) fn overview(chrome: &Chrome<'_>, profile: &Profile, manual: &[SegmentInfo]) -> Markup {
    let p = &profile.person;
    let base = person_url(p.pid);
    let (data_driven, manual_in): (Vec<&SegmentRef>, Vec<&SegmentRef>) =
        profile.segments.iter().partition(|s| s.kind != "manual");
    let body = html! {
        div.columns {
            div.col {
                section.card #identifiers {
                    h2 { "Identifiers and attributes" }
                    (attr_table(p, OVERVIEW_ATTRIBUTES))
                    @if p.attributes.len() > OVERVIEW_ATTRIBUTES {
                        p { a href={ (base) "/attributes" } { "All " (p.attributes.len()) " attributes →" } }
                    }
                }
                section.card #activity {
                    h2 { "Recent activity" }
                    (activity_list(&profile.activities))
                    p { a href={ (base) "/activity" } { "All activity →" } }
                }
                section.card #deliveries {
                    h2 { "Deliveries" }
                    (delivery_table(&profile.deliveries))
                }
                section.card #relationships {
                    h2 { "Relationships" }
                    (relationship_table(&profile.relationships))
                }
            }
            div.col {
                section.card #subscription {
                    h2 { "Subscription" }
                    p #subscription-status { (if profile.subscription.unsubscribed { "Unsubscribed from all messages" } else { "Subscribed" }) }
                    @if profile.subscription.topics.is_empty() {
                        p.muted { "No topics in this workspace." }
                    } @else {
                        ul.topics {
                            @for t in &profile.subscription.topics {
                                li data-topic=(t.id) {
                                    span { (t.name) }
                                    span.badge.(if t.subscribed { "on" } else { "off" }) { (if t.subscribed { "in" } else { "out" }) }
                                }
                            }
                        }
                    }
                }
                section.card #segments {
                    h2 { "Segments" }
                    h3 { "Data-driven" }
                    (segment_list(&data_driven, "data-driven"))
                    h3 { "Manual" }
                    (segment_list(&manual_in, "manual"))
                }
                (manual_segments_form(chrome, p, &profile.segments, manual))
                section.card #devices {
                    h2 { "Devices" }
                    (device_list(&profile.devices))
                }
            }
        }
    };
    person_frame(
        chrome,
        p,
        Tab::Overview,
        profile.subscription.unsubscribed,
        body,
    )
}

fn segment_list(segments: &[&SegmentRef], kind: &str) -> Markup {
    html! {
        @if segments.is_empty() {
            p.muted data-segments=(kind) { "None" }
        } @else {
            ul.segments data-segments=(kind) {
                @for s in segments {
                    li data-segment=(s.id) { a href={ "/segments/" (s.id) } { (s.name) } }
                }
            }
        }
    }
}

fn map_inline(m: &Map) -> Markup {
    html! {
        @if m.is_empty() { span.muted { "—" } }
        @else {
            dl.inline {
                @for (k, v) in m { dt { (k) } dd { (value(v)) } }
            }
        }
    }
}

fn relationship_table(rels: &[Relationship]) -> Markup {
    html! {
        @if rels.is_empty() {
            p.empty { "No relationships." }
        } @else {
            div.table-wrap {
                table.stack {
                    thead { tr { th { "object" } th { "object attributes" } th { "relationship attributes" } } }
                    tbody {
                        @for r in rels {
                            tr data-object=(r.object.to_string()) {
                                td data-label="object" { a href=(object_url(r.object.type_id, &r.object.object_id)) { (r.object.to_string()) } }
                                td data-label="object attributes" { (map_inline(&r.object_attributes)) }
                                td data-label="relationship attributes" { (map_inline(&r.attributes)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A readable title for an activity entry.
pub(crate) fn activity_title(a: &Activity) -> String {
    let name = a.name.as_deref().unwrap_or("");
    match a.kind.as_str() {
        "attribute_change" => "Attributes changed".to_owned(),
        "failed_attribute_change" => "Update refused".to_owned(),
        "profile_create" => "Profile created".to_owned(),
        "event" => format!("Event “{name}”"),
        "page" => format!("Viewed page {name}"),
        "screen" => format!("Viewed screen {name}"),
        "device_change" => "Device changed".to_owned(),
        "anon_merge" => "Anonymous activity attached".to_owned(),
        "profile_merge" => "Another profile merged in".to_owned(),
        "add_relationship" => format!("Related to {name}"),
        "delete_relationship" => format!("No longer related to {name}"),
        "relationship_attribute_change" => format!("Relationship {name} changed"),
        "segment_entered" => format!("Entered segment {name}"),
        "segment_exited" => format!("Left segment {name}"),
        other => {
            let mut words = other.replace('_', " ");
            if let Some(first) = words.get_mut(..1) {
                first.make_ascii_uppercase();
            }
            if name.is_empty() {
                words
            } else {
                format!("{words} {name}")
            }
        }
    }
    .trim_end()
    .to_owned()
}

fn activity_detail(a: &Activity) -> Markup {
    let changes = (a.kind == "attribute_change" || a.kind == "relationship_attribute_change")
        .then(|| a.data.as_map())
        .flatten();
    html! {
        @if let Some(changes) = changes {
            ul.changes {
                @for (attr, change) in changes {
                    @let m = change.as_map();
                    li data-change=(attr) {
                        span.mono { (attr) } ": "
                        span.old { (change_side(m, "old")) }
                        " → "
                        span.new { (change_side(m, "new")) }
                    }
                }
            }
        } @else if !matches!(&a.data, Value::Null) && a.data.as_map().is_none_or(|m| !m.is_empty()) {
            details {
                summary { "data" }
                pre.json { (serde_json::to_string_pretty(&a.data.to_json()).unwrap_or_default()) }
            }
        }
    }
}

/// One side of an `{"old", "new"}` change: the value, or "—" for none (null).
fn change_side(change: Option<&Map>, side: &str) -> String {
    match change.and_then(|m| m.get(side)) {
        None | Some(Value::Null) => "—".to_owned(),
        Some(v) => value_text(v),
    }
}

fn activity_list(list: &[Activity]) -> Markup {
    html! {
        @if list.is_empty() {
            p.empty { "No activity." }
        } @else {
            ol.timeline {
                @for a in list {
                    li data-kind=(a.kind) data-cursor=(a.cursor.to_string()) {
                        div.when { (when(a.timestamp)) }
                        div.what {
                            strong { (activity_title(a)) }
                            (activity_detail(a))
                        }
                    }
                }
            }
        }
    }
}

fn delivery_table(list: &[Delivery]) -> Markup {
    html! {
        @if list.is_empty() {
            p.empty { "No deliveries." }
        } @else {
            div.table-wrap {
                table.stack {
                    thead { tr { th { "delivery" } th { "channel" } th { "status" } th { "subject" } th { "created" } th { "metrics" } } }
                    tbody {
                        @for d in list {
                            tr data-delivery=(d.id) {
                                td.mono data-label="delivery" { (d.id) }
                                td data-label="channel" { (d.channel.as_str()) }
                                td.status data-label="status" { span.badge { (d.status) } }
                                td data-label="subject" { (dash(d.subject.as_deref())) }
                                td data-label="created" { (when(d.created)) }
                                td data-label="metrics" {
                                    ul.metrics {
                                        @for (m, t) in &d.metrics { li data-metric=(m) { (m) " " (when(*t)) } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The Overview's devices: the side column is too narrow for the Devices tab's table.
fn device_list(list: &[Device]) -> Markup {
    html! {
        @if list.is_empty() {
            p.empty { "No devices." }
        } @else {
            ul.devices {
                @for d in list {
                    li data-device=(d.token) {
                        div.mono.token { (d.token) }
                        div.muted {
                            span.platform { (d.platform.as_str()) }
                            @if let Some(v) = d.attributes.get("app_version") { " · app " span.app-version { (value_text(v)) } }
                            " · last used " (when(d.last_used))
                        }
                    }
                }
            }
        }
    }
}

/// A device's attributes but `app_version`, which has its own column.
fn other_device_attributes(d: &Device) -> Map {
    let mut m = d.attributes.clone();
    m.remove("app_version");
    m
}

fn device_table(list: &[Device]) -> Markup {
    html! {
        @if list.is_empty() {
            p.empty { "No devices." }
        } @else {
            div.table-wrap {
                table.stack {
                    thead { tr { th { "token" } th { "platform" } th { "last used" } th { "status" } th { "app version" } th { "other attributes" } } }
                    tbody {
                        @for d in list {
                            tr data-device=(d.token) {
                                td.mono.token data-label="token" { (d.token) }
                                td.platform data-label="platform" { (d.platform.as_str()) }
                                td data-label="last used" { (when(d.last_used)) }
                                td data-label="status" { (if d.status.as_str().is_empty() { "unused" } else { d.status.as_str() }) }
                                td.app-version data-label="app version" { (dash(d.attributes.get("app_version").map(value_text).as_deref())) }
                                td data-label="other attributes" { (map_inline(&other_device_attributes(d))) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The Attributes tab: every attribute with when it was set, the actions to set or
/// remove one, then the names in use in the workspace that this person lacks.
pub(crate) fn attributes(
    chrome: &Chrome<'_>,
    p: &Person,
    unsubscribed: bool,
    missing: &[String],
) -> Markup {
    let base = person_url(p.pid);
    let body = html! {
        section.card #all-attributes {
            h2 { "Attributes (" (p.attributes.len()) ")" }
            div.table-wrap {
                table.kv {
                    tbody {
                        @for (name, v) in &p.attributes {
                            tr data-attr=(name) {
                                th { (name) }
                                td.value { (value(v)) }
                                td.muted { @if let Some(t) = p.timestamps.get(name) { "set " (when(*t)) } }
                                td {
                                    form.inline method="post" action={ (base) "/attributes/remove" } {
                                        (csrf(chrome.csrf))
                                        input type="hidden" name="name" value=(name);
                                        button.link.destructive type="submit" title={ "Remove " (name) } { "Remove" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        section.card #set-attribute {
            h2 { "Set an attribute" }
            form.row method="post" action={ (base) "/attributes/set" } {
                (csrf(chrome.csrf))
                label { span { "Name" } input type="text" name="name" required list="attribute-names"; }
                label.grow { span { "Value" } input type="text" name="value"; }
                label { span { "As" }
                    select name="as" {
                        option value="text" selected { "text" }
                        option value="json" { "JSON (number, true, [..], {..})" }
                    }
                }
                button type="submit" { "Set" }
            }
            datalist #attribute-names { @for m in missing { option value=(m) {} } }
        }
        section.card #missing-attributes {
            h2 { "Other attributes in the workspace" }
            @if missing.is_empty() {
                p.muted { "This person has every attribute in use." }
            } @else {
                p.muted { "Names other people have that this person lacks." }
                ul.chips { @for m in missing { li data-missing=(m) { (m) } } }
            }
        }
    };
    person_frame(chrome, p, Tab::Attributes, unsubscribed, body)
}

/// The Activity tab's filter, as in its query string.
#[derive(Default)]
pub(crate) struct ActivityQuery {
    pub(crate) kind: String,
    pub(crate) name: String,
    pub(crate) since: String,
    pub(crate) until: String,
}

/// The activity types the filter suggests (any type can be typed, `opened_email`...).
const KINDS: [&str; 17] = [
    "event",
    "page",
    "screen",
    "attribute_change",
    "failed_attribute_change",
    "profile_create",
    "device_change",
    "segment_entered",
    "segment_exited",
    "add_relationship",
    "delete_relationship",
    "relationship_attribute_change",
    "anon_merge",
    "profile_merge",
    "sent_email",
    "delivered_email",
    "opened_email",
];

/// The Activity tab.
pub(crate) fn activity(
    chrome: &Chrome<'_>,
    p: &Person,
    unsubscribed: bool,
    q: &ActivityQuery,
    list: Result<(&[Activity], Option<String>), String>,
) -> Markup {
    let base = person_url(p.pid);
    let next_url = |cursor: &str| {
        format!(
            "{base}/activity?type={}&name={}&since={}&until={}&before={}",
            encode(&q.kind),
            encode(&q.name),
            encode(&q.since),
            encode(&q.until),
            encode(cursor)
        )
    };
    let body = html! {
        form.filters method="get" action={ (base) "/activity" } {
            label { span { "Type" }
                input type="text" name="type" value=(q.kind) list="activity-types" placeholder="any";
                datalist #activity-types { @for k in KINDS { option value=(k) {} } }
            }
            label { span { "Name" } input type="text" name="name" value=(q.name) placeholder="e.g. purchase"; }
            label { span { "From (UTC)" } input type="datetime-local" name="since" value=(q.since); }
            label { span { "Before (UTC)" } input type="datetime-local" name="until" value=(q.until); }
            button type="submit" { "Filter" }
        }
        @match list {
            Err(message) => { div.error role="alert" { p { (message) } } }
            Ok((list, next)) => {
                section.card #all-activity { (activity_list(list)) }
                @if let Some(next) = next {
                    nav.pager { a.button #next-page href=(next_url(&next)) { "Older →" } }
                }
            }
        }
    };
    person_frame(chrome, p, Tab::Activity, unsubscribed, body)
}

/// The Deliveries tab.
pub(crate) fn deliveries(
    chrome: &Chrome<'_>,
    p: &Person,
    unsubscribed: bool,
    list: &[Delivery],
) -> Markup {
    let body =
        html! { section.card #all-deliveries { h2 { "Deliveries" } (delivery_table(list)) } };
    person_frame(chrome, p, Tab::Deliveries, unsubscribed, body)
}

/// The Devices tab.
pub(crate) fn devices(
    chrome: &Chrome<'_>,
    p: &Person,
    unsubscribed: bool,
    list: &[Device],
) -> Markup {
    let body = html! { section.card #all-devices { h2 { "Devices" } (device_table(list)) } };
    person_frame(chrome, p, Tab::Devices, unsubscribed, body)
}

/// The manual segments box of the Overview: the person's manual segments with a
/// remove button each, and a form to add them to another.
pub(crate) fn manual_segments_form(
    chrome: &Chrome<'_>,
    p: &Person,
    member_of: &[SegmentRef],
    manual: &[SegmentInfo],
) -> Markup {
    let base = person_url(p.pid);
    let joinable: Vec<&SegmentInfo> = manual
        .iter()
        .filter(|s| !member_of.iter().any(|m| m.id == s.id))
        .collect();
    html! {
        section.card #manual-segments {
            h2 { "Manual segments" }
            @for s in member_of.iter().filter(|s| s.kind == "manual") {
                form.inline.chip method="post" action={ (base) "/segments/remove" } {
                    (csrf(chrome.csrf))
                    input type="hidden" name="segment" value=(s.id);
                    span { (s.name) }
                    button.link.destructive type="submit" title={ "Remove from " (s.name) } { "×" }
                }
            }
            @if joinable.is_empty() {
                p.muted { "No other manual segment to add to." }
            } @else {
                form.row method="post" action={ (base) "/segments/add" } {
                    (csrf(chrome.csrf))
                    label.grow { span { "Add to" }
                        select name="segment" {
                            @for s in &joinable { option value=(s.id) { (s.name) " (#" (s.id) ")" } }
                        }
                    }
                    button type="submit" { "Add" }
                }
            }
        }
    }
}

/// The confirmation page of a suppress or delete.
pub(crate) fn confirm(chrome: &Chrome<'_>, p: &Person, action: &str) -> Markup {
    let base = person_url(p.pid);
    let name = display_name(p);
    let (title, explain, button) = if action == "suppress" {
        (
            "Suppress this person?",
            "Suppressing deletes the person and all their data, and blocks their id, email and \
             phone: nothing can identify them again until they are unsuppressed.",
            "Suppress",
        )
    } else {
        (
            "Delete this person?",
            "Deleting removes the person and all their data. Identifying them again creates a \
             new person.",
            "Delete",
        )
    };
    let body = html! {
        nav.crumbs { a href="/" { "People" } " / " a href=(base) { (name) } }
        section.card.confirm #confirm {
            h1 { (title) }
            p { strong { (name) } " (cio_" (p.cio_id) ")" }
            p { (explain) " This cannot be undone." }
            form.row method="post" action={ (base) "/" (action) } {
                (csrf(chrome.csrf))
                input type="hidden" name="confirm" value="yes";
                button.destructive #confirm-button type="submit" { (button) }
                a.button.secondary href=(base) { "Cancel" }
            }
        }
    };
    layout(chrome, Section::People, title, body)
}

/// The segments list.
pub(crate) fn segments(chrome: &Chrome<'_>, list: &[SegmentInfo]) -> Markup {
    let body = html! {
        h1 { "Segments" }
        @if list.is_empty() {
            p.empty { "No segments yet." }
        } @else {
            div.table-wrap {
                table.stack #segments-table {
                    thead { tr { th { "#" } th { "name" } th { "type" } th.num { "size" } th { "condition" } } }
                    tbody {
                        @for s in list {
                            tr data-segment=(s.id) {
                                td data-label="#" { (s.id) }
                                td data-label="name" { a href={ "/segments/" (s.id) } { (s.name) } }
                                td data-label="type" { (if s.condition.is_some() { "Data-driven" } else { "Manual" }) }
                                td.num.size data-label="size" { (s.members) }
                                td data-label="condition" { code { (s.condition.as_deref().unwrap_or("—")) } }
                            }
                        }
                    }
                }
            }
        }
    };
    layout(chrome, Section::Segments, "Segments", body)
}

/// One segment with a page of its members.
pub(crate) fn segment(chrome: &Chrome<'_>, s: &SegmentInfo, members: &Audience) -> Markup {
    let body = html! {
        nav.crumbs { a href="/segments" { "Segments" } " / " span { (s.name) } }
        h1 { (s.name) }
        p.sub {
            (if s.condition.is_some() { "Data-driven" } else { "Manual" }) " segment #" (s.id) " · "
            strong #segment-size { (members.count) } " members"
        }
        @if let Some(c) = &s.condition { p { "Condition: " code #segment-condition { (c) } } }
        (member_table(&members.people.iter().map(|m| (m.pid, m.id.as_deref(), m.email.as_deref())).collect::<Vec<_>>()))
        @if let Some(next) = members.next {
            nav.pager { a.button #next-page href={ "/segments/" (s.id) "?after=" (next.cio_id()) } { "Next page →" } }
        }
    };
    layout(chrome, Section::Segments, &s.name, body)
}

fn member_table(rows: &[(PersonId, Option<&str>, Option<&str>)]) -> Markup {
    html! {
        @if rows.is_empty() {
            p.empty { "Nobody." }
        } @else {
            div.table-wrap {
                table.members.stack {
                    thead { tr { th { "id" } th { "email" } th { "cio_id" } } }
                    tbody {
                        @for (pid, id, email) in rows {
                            tr data-cio=(pid.cio_id()) {
                                td data-label="id" { a href=(person_url(*pid)) { (dash(*id)) } }
                                td data-label="email" { (dash(*email)) }
                                td.mono data-label="cio_id" { (pid.cio_id()) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// One object with its attributes (none when only relationships name it so far) and the
/// people related to it.
pub(crate) fn object(
    chrome: &Chrome<'_>,
    type_name: Option<&str>,
    which: &ObjectRef,
    o: Option<&Object>,
    people: &[(PersonId, Option<Person>, Map)],
    total: usize,
) -> Markup {
    let title = format!("{} {}", type_name.unwrap_or("Object"), which.object_id);
    let body = html! {
        nav.crumbs { span { "Objects" } " / " span { (type_name.unwrap_or("type")) " #" (which.type_id) } }
        h1 #object-name { (title) }
        @match o {
            Some(o) => { p.sub { "created " (when(o.created)) " · updated " (when(o.updated)) } }
            None => { p.sub.muted { "Not identified yet: only relationships name this object." } }
        }
        section.card #object-attributes {
            h2 { "Attributes" }
            @match o.filter(|o| !o.attributes.is_empty()) {
                None => { p.empty { "No attributes." } }
                Some(o) => {
                    div.table-wrap {
                        table.kv { tbody {
                            @for (k, v) in &o.attributes { tr data-attr=(k) { th { (k) } td.value { (value(v)) } } }
                        } }
                    }
                }
            }
        }
        section.card #related-people {
            h2 { "Related people (" (total) ")" }
            @if people.is_empty() {
                p.empty { "Nobody is related to this object." }
            } @else {
                div.table-wrap {
                    table.stack {
                        thead { tr { th { "person" } th { "relationship attributes" } } }
                        tbody {
                            @for (pid, person, attrs) in people {
                                tr data-cio=(pid.cio_id()) {
                                    td data-label="person" { a href=(person_url(*pid)) { (person.as_ref().map(display_name).unwrap_or_else(|| format!("cio_{}", pid.cio_id()))) } }
                                    td data-label="relationship attributes" { (map_inline(attrs)) }
                                }
                            }
                        }
                    }
                }
                @if total > people.len() { p.muted { "Showing the first " (people.len()) "." } }
            }
        }
    };
    layout(chrome, Section::Other, &title, body)
}

/// The login page.
pub(crate) fn login_page(next: &str, error: Option<&str>) -> Markup {
    let chrome = Chrome {
        csrf: "",
        can_log_out: false,
        notice: None,
    };
    let body = html! {
        section.card.login {
            h1 { "Log in" }
            p { "This server's People page opens with its App API key." }
            @if let Some(e) = error { div.error role="alert" { p { (e) } } }
            form method="post" action="/login" {
                input type="hidden" name="next" value=(next);
                label { span { "App API key" } input type="password" name="key" required autocomplete="current-password"; }
                button type="submit" { "Log in" }
            }
        }
    };
    layout(&chrome, Section::Other, "Log in", body)
}

/// A page that could not be shown.
pub(crate) fn error_page(title: &str, message: &str) -> Markup {
    let chrome = Chrome {
        csrf: "",
        can_log_out: false,
        notice: None,
    };
    let body = html! {
        h1 { (title) }
        div.error role="alert" { p #error-message { (message) } }
        p { a href="/" { "Back to People" } }
    };
    layout(&chrome, Section::Other, title, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_condition_examples_parse() {
        for (example, _) in CONDITION_EXAMPLES {
            assert!(crate::query::parse(example).is_ok(), "{example}");
        }
    }

    #[test]
    fn the_mark_covers_the_token_and_never_splits_a_character() {
        assert_eq!(
            split_at_byte("a and and", 6, Some("and")),
            ("a and ", "and", "")
        );
        assert_eq!(split_at_byte("é = 1", 1, None), ("", "é", " = 1"));
        assert_eq!(split_at_byte("ab", 9, None), ("ab", "", ""));
    }
}
