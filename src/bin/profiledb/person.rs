//! `person show`, `activity`, `people` and `query`: reading people, one or many.

use clap::{Args, Subcommand};
use profiledb::{
    Activity, ActivityCursor, ActivityFilter, Audience, Delivery, Device, Ident, PersonId,
    PersonSummary, Profile, Relationship, SegmentRef, Value,
};
use serde_json::{json, Value as Json};

use crate::context::{self, Context};
use crate::output::{or_dash, print_json, time, CmdResult, Failure};

/// How many activities and deliveries `person show` lists.
const RECENT: usize = 10;

#[derive(Subcommand)]
pub enum PersonCommand {
    /// Show one person's profile: identifiers and attributes (and the attribute names in
    /// use that they lack), subscription and topics, recent activity, deliveries,
    /// devices, segments and relationships.
    Show {
        /// `cio_<cio_id>`, an email (contains `@`), or an `id`.
        ident: String,
        /// Print one JSON object, shaped like the App API's customer attributes.
        #[arg(long)]
        json: bool,
    },
}

/// `people`: the People page list.
#[derive(Args)]
pub struct PeopleArgs {
    /// Only people whose `id` or `email` starts with this (emails in any case).
    #[arg(long, value_name = "PREFIX")]
    search: Option<String>,
    /// Only people matching this condition (the query language, or filter JSON).
    #[arg(long = "where", value_name = "EXPR")]
    condition: Option<String>,
    /// At most this many people.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    limit: u64,
    /// Continue after this cursor (the `next` of the previous page).
    #[arg(long, value_name = "CURSOR")]
    after: Option<String>,
    /// Print `{"people": [{"id", "email", "cio_id"}], "next"}`.
    #[arg(long)]
    json: bool,
}

/// `activity`: one person's timeline.
#[derive(Args)]
pub struct ActivityArgs {
    /// `cio_<cio_id>`, an email (contains `@`), or an `id`.
    ident: String,
    /// Only this activity type (`event`, `page`, `attribute_change`...); repeatable.
    #[arg(long = "type", value_name = "T")]
    kinds: Vec<String>,
    /// Only activities with this name.
    #[arg(long, value_name = "N")]
    name: Option<String>,
    /// Only activities at or after this unix time.
    #[arg(long, value_name = "T", allow_hyphen_values = true)]
    since: Option<i64>,
    /// Only activities before this unix time.
    #[arg(long, value_name = "T", allow_hyphen_values = true)]
    until: Option<i64>,
    /// At most this many activities.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    limit: u64,
    /// Continue after this cursor (the `next` of the previous page).
    #[arg(long, value_name = "CURSOR")]
    after: Option<String>,
    /// Print `{"activities": [{"type", "name", "timestamp", "data"}], "next"}`.
    #[arg(long)]
    json: bool,
}

/// `query`: an audience.
#[derive(Args)]
pub struct QueryArgs {
    /// The condition, e.g. `attr.plan = "pro" and topic:3 and not unsubscribed` (or
    /// App-API filter JSON).
    expr: String,
    /// Print only the number of people matching.
    #[arg(long)]
    count: bool,
    /// At most this many people.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    limit: u64,
    /// Continue after this cursor (the `next` of the previous page).
    #[arg(long, value_name = "CURSOR")]
    after: Option<String>,
    /// Print `{"count", "people": [{"id", "email", "cio_id"}], "next"}`.
    #[arg(long)]
    json: bool,
    /// Also show how each part of the condition is answered (an index, or a scan of
    /// so many people); on stderr with --json or --count, so stdout stays parseable.
    #[arg(long)]
    explain: bool,
}

/// Runs `person show`.
pub fn person(ctx: &Context, command: PersonCommand) -> CmdResult {
    let PersonCommand::Show { ident, json } = command;
    let db = ctx.open_existing()?;
    let who = Ident::infer(&ident);
    let profile = db
        .profile(&who, RECENT)?
        .ok_or_else(|| unknown_person(&who))?;
    if json {
        print_json(&profile_json(&profile))?;
    } else {
        let missing = db.missing_attributes(&who)?;
        print_profile(&profile, &missing);
    }
    context::close(db)
}

/// The error for an identifier that names nobody.
pub fn unknown_person(who: &Ident) -> Failure {
    Failure::new(format!("no person has the {who}"))
}

/// Runs `activity`.
pub fn activity(ctx: &Context, args: ActivityArgs) -> CmdResult {
    let db = ctx.open_existing()?;
    let who = Ident::infer(&args.ident);
    if db.person(&who)?.is_none() {
        return Err(unknown_person(&who));
    }
    let limit = usize::try_from(args.limit).unwrap_or(usize::MAX);
    let mut filter = ActivityFilter::new(limit.saturating_add(1));
    filter.kinds = args.kinds;
    filter.name = args.name;
    filter.since = args.since;
    filter.until = args.until;
    if let Some(after) = &args.after {
        filter.before = Some(
            after
                .parse::<ActivityCursor>()
                .map_err(|_| bad_cursor(after))?,
        );
    }
    let mut page = db.activities(&who, &filter)?;
    let next = if page.len() > limit {
        page.truncate(limit);
        page.last().map(|a| a.cursor.to_string())
    } else {
        None
    };
    if args.json {
        print_json(&json!({
            "activities": page.iter().map(activity_json).collect::<Vec<_>>(),
            "next": next,
        }))?;
    } else {
        if page.is_empty() {
            outln!("(no activity)");
        }
        for a in &page {
            print_activity(a);
        }
        if let Some(next) = next {
            outln!("next page: --after {next}");
        }
    }
    context::close(db)
}

/// Runs `people`.
pub fn people(ctx: &Context, args: PeopleArgs) -> CmdResult {
    let db = ctx.open_existing()?;
    let after = args.after.as_deref().map(parse_cursor).transpose()?;
    let page = db.people_page(
        args.search.as_deref(),
        args.condition.as_deref(),
        usize::try_from(args.limit).unwrap_or(usize::MAX),
        after,
    )?;
    if args.json {
        print_json(&json!({
            "people": page.people.iter().map(summary_json).collect::<Vec<_>>(),
            "next": page.next.map(cursor),
        }))?;
    } else {
        outln!("{} {}", page.count, plural(page.count, "person", "people"));
        print_audience(&page);
    }
    context::close(db)
}

/// Runs `query`.
pub fn query(ctx: &Context, args: QueryArgs) -> CmdResult {
    let db = ctx.open_existing()?;
    let after = args.after.as_deref().map(parse_cursor).transpose()?;
    let limit = if args.count {
        0
    } else {
        usize::try_from(args.limit).unwrap_or(usize::MAX)
    };
    let result = db.query(&args.expr, limit, after)?;
    let explain = if args.explain {
        db.explain(&args.expr)?.lines
    } else {
        Vec::new()
    };
    let machine = args.count || args.json;
    if args.count {
        outln!("{}", result.count);
    } else if args.json {
        print_json(&json!({
            "count": result.count,
            "people": result.people.iter().map(summary_json).collect::<Vec<_>>(),
            "next": result.next.map(cursor),
        }))?;
    } else {
        outln!(
            "{} {} match",
            result.count,
            plural(result.count, "person", "people")
        );
        print_audience(&result);
    }
    if args.explain {
        if machine {
            for line in &explain {
                eprintln!("{line}");
            }
        } else {
            outln!("plan:");
            for line in &explain {
                outln!("  {line}");
            }
        }
    }
    context::close(db)
}

/// A paging cursor for the people list and queries: the last person's `cio_id`.
fn cursor(pid: PersonId) -> String {
    pid.cio_id()
}

fn parse_cursor(text: &str) -> Result<PersonId, Failure> {
    PersonId::from_cio_id(text).ok_or_else(|| bad_cursor(text))
}

fn bad_cursor(text: &str) -> Failure {
    Failure::new(format!(
        "--after `{text}` is not a cursor this command printed as `next`"
    ))
}

fn plural<'a>(n: u64, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 {
        one
    } else {
        many
    }
}

fn print_audience(page: &Audience) {
    if !page.people.is_empty() {
        outln!("  {:<10} {:<24} email", "cio_id", "id");
    }
    for p in &page.people {
        outln!(
            "  {:<10} {:<24} {}",
            p.cio_id,
            or_dash(p.id.as_deref()),
            or_dash(p.email.as_deref())
        );
    }
    if let Some(next) = page.next {
        outln!("next page: --after {}", cursor(next));
    }
}

/// `{"id", "email", "cio_id"}`.
pub fn summary_json(p: &PersonSummary) -> Json {
    json!({"id": p.id, "email": p.email, "cio_id": p.cio_id})
}

/// `{"type", "name", "timestamp", "data"}`.
pub fn activity_json(a: &Activity) -> Json {
    json!({
        "type": a.kind,
        "name": a.name,
        "timestamp": a.timestamp,
        "data": a.data.to_json(),
    })
}

fn map_json(map: &profiledb::Map) -> Json {
    Value::Map(map.clone()).to_json()
}

fn device_json(d: &Device) -> Json {
    json!({
        "id": d.token,
        "platform": d.platform.as_str(),
        "last_used": d.last_used,
        "attributes": map_json(&d.attributes),
    })
}

fn delivery_json(d: &Delivery) -> Json {
    json!({
        "id": d.id,
        "channel": d.channel.as_str(),
        "status": d.status,
        "metrics": d.metrics,
        "recipient": d.recipient,
        "subject": d.subject,
        "campaign_id": d.campaign_id,
        "created": d.created,
    })
}

/// A segment's type as the CLI spells it: `manual` or `data-driven`.
pub fn segment_type(data_driven: bool) -> &'static str {
    if data_driven {
        "data-driven"
    } else {
        "manual"
    }
}

fn segment_ref_json(s: &SegmentRef) -> Json {
    json!({"id": s.id, "name": s.name, "type": segment_type(s.kind != "manual")})
}

fn relationship_json(r: &Relationship) -> Json {
    json!({
        "object_type_id": r.object.type_id,
        "object_id": r.object.object_id,
        "attributes": map_json(&r.object_attributes),
        "relationship_attributes": map_json(&r.attributes),
    })
}

/// The whole profile as one JSON object (the shape `person show --json` prints).
pub fn profile_json(profile: &Profile) -> Json {
    let p = &profile.person;
    json!({
        "customer": {
            "id": p.id,
            "email": p.email,
            "cio_id": p.cio_id,
            "identifiers": {
                "id": p.id,
                "email": p.email,
                "cio_id": p.cio_id,
                "phone": p.phone,
            },
            "attributes": map_json(&p.attributes),
            "timestamps": p.timestamps,
            "unsubscribed": profile.subscription.unsubscribed,
            "devices": profile.devices.iter().map(device_json).collect::<Vec<_>>(),
        },
        "subscription": {
            "unsubscribed": profile.subscription.unsubscribed,
            "topics": profile.subscription.topics.iter().map(|t| json!({
                "id": t.id,
                "name": t.name,
                "subscribed": t.subscribed,
            })).collect::<Vec<_>>(),
        },
        "activities": profile.activities.iter().map(activity_json).collect::<Vec<_>>(),
        "deliveries": profile.deliveries.iter().map(delivery_json).collect::<Vec<_>>(),
        "segments": profile.segments.iter().map(segment_ref_json).collect::<Vec<_>>(),
        "relationships": profile.relationships.iter().map(relationship_json).collect::<Vec<_>>(),
    })
}

fn print_activity(a: &Activity) {
    let data = match &a.data {
        Value::Null => String::new(),
        Value::Map(m) if m.is_empty() => String::new(),
        d => d.to_string(),
    };
    outln!(
        "  {}  {:<24} {:<20} {data}",
        time(a.timestamp),
        a.kind,
        or_dash(a.name.as_deref())
    );
}

/// Prints the profile as the People page's sections; `missing` are the attribute
/// names in use in the workspace that this person lacks.
pub fn print_profile(profile: &Profile, missing: &[String]) {
    let p = &profile.person;
    outln!(
        "Person cio_{} (created {}, updated {})",
        p.cio_id,
        time(p.created),
        time(p.updated)
    );

    outln!();
    outln!("Identifiers and attributes");
    outln!("  {:<28} {}", "id", or_dash(p.id.as_deref()));
    outln!("  {:<28} {}", "email", or_dash(p.email.as_deref()));
    outln!("  {:<28} {}", "phone", or_dash(p.phone.as_deref()));
    outln!("  {:<28} {}", "cio_id", p.cio_id);
    if let Some(anon) = &p.anonymous_id {
        outln!("  {:<28} {anon}", "anonymous_id");
    }
    for (name, value) in &p.attributes {
        match p.timestamps.get(name) {
            Some(set) => outln!("  {name:<28} {value}   (set {})", time(*set)),
            None => outln!("  {name:<28} {value}"),
        }
    }
    if !missing.is_empty() {
        outln!("  not set (others have them): {}", missing.join(", "));
    }

    outln!();
    outln!("Subscription");
    outln!(
        "  {}",
        if profile.subscription.unsubscribed {
            "unsubscribed from everything"
        } else {
            "subscribed"
        }
    );
    for t in &profile.subscription.topics {
        outln!(
            "  topic {:<4} {:<24} {}",
            t.id,
            t.name,
            if t.subscribed { "in" } else { "out" }
        );
    }

    outln!();
    outln!("Activity (newest {RECENT}; `profiledb activity` pages through all of it)");
    if profile.activities.is_empty() {
        outln!("  (none)");
    }
    for a in &profile.activities {
        print_activity(a);
    }

    outln!();
    outln!("Deliveries");
    if profile.deliveries.is_empty() {
        outln!("  (none)");
    }
    for d in &profile.deliveries {
        let metrics: Vec<String> = d.metrics.keys().cloned().collect();
        outln!(
            "  {:<16} {:<8} {:<12} {}  {}  campaign {}  [{}]",
            d.id,
            d.channel,
            d.status,
            time(d.created),
            or_dash(d.subject.as_deref()),
            or_dash(d.campaign_id.as_deref()),
            metrics.join(", ")
        );
    }

    outln!();
    outln!("Devices");
    if profile.devices.is_empty() {
        outln!("  (none)");
    }
    for d in &profile.devices {
        let status = match d.status.as_str() {
            "" => "unused",
            s => s,
        };
        let attributes = if d.attributes.is_empty() {
            String::new()
        } else {
            map_json(&d.attributes).to_string()
        };
        outln!(
            "  {:<24} {:<8} last used {}  {status}  {attributes}",
            d.token,
            d.platform,
            time(d.last_used)
        );
    }

    outln!();
    outln!("Segments");
    if profile.segments.is_empty() {
        outln!("  (none)");
    }
    for s in &profile.segments {
        outln!(
            "  #{:<4} {} ({})",
            s.id,
            s.name,
            segment_type(s.kind != "manual")
        );
    }

    outln!();
    outln!("Relationships");
    if profile.relationships.is_empty() {
        outln!("  (none)");
    }
    for r in &profile.relationships {
        outln!(
            "  {}  {}  as {}",
            r.object,
            map_json(&r.object_attributes),
            map_json(&r.attributes)
        );
    }
}
