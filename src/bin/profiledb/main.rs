//! The `profiledb` command-line tool: a thin shell over the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use profiledb::synth;
use profiledb::{
    Channel, DeviceInput, Durability, Ident, Identify, ManualClock, Metric, NewDelivery, ObjectRef,
    Platform, Profile, ProfileDb, Track, Value,
};

#[derive(Parser)]
#[command(
    name = "profiledb",
    version,
    about = "An embedded database of people profiles"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a sample database in a temporary directory, identify a few people and
    /// print one profile.
    Demo {
        /// Keep the database in this directory instead of a temporary one.
        #[arg(long)]
        db: Option<std::path::PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo { db } => demo(db),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn demo(dir: Option<std::path::PathBuf>) -> Result<(), Box<dyn std::error::Error>> {
    let tmp;
    let path = match dir {
        Some(p) => p,
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    // A fixed clock, so the demo prints the same thing every run.
    let clock = ManualClock::new(1_767_225_600); // 2026-01-01T00:00:00Z
    let db = ProfileDb::builder()
        .clock(std::sync::Arc::new(clock.clone()))
        .durability(Durability::Buffered)
        .open(&path)?;
    println!("Sample database in {}\n", path.display());

    let steps: Vec<(&str, Identify)> = vec![
        (
            "identify u-100 with an email and a plan",
            Identify::new(Ident::id("u-100"))
                .set("email", "Ann.Lee@Example.com")
                .set("first_name", "Ann")
                .set("plan", "trial")
                .set("created_at", 1_767_000_000i64),
        ),
        (
            "identify u-101",
            Identify::new(Ident::id("u-101"))
                .set("email", "bo@example.com")
                .set("plan", "pro"),
        ),
        (
            "upgrade Ann by email (any case), opt her into topic 3 by dotted key",
            Identify::new(Ident::email("ann.lee@example.com"))
                .set("plan", "pro")
                .set("cio_subscription_preferences.topics.topic_3", true),
        ),
        (
            "a new id with Bo's email updates Bo... who already has an id: refused",
            Identify::new(Ident::id("u-999")).set("email", "BO@example.com"),
        ),
        (
            "add a phone to Ann and remove her first_name with \"\"",
            Identify::new(Ident::id("u-100"))
                .set("phone", "+14155550100")
                .set("first_name", ""),
        ),
        (
            "_update: true for someone unknown creates nobody",
            Identify::new(Ident::id("u-404"))
                .set("plan", "free")
                .update_only(true),
        ),
    ];
    for (what, op) in steps {
        clock.advance(60);
        let outcome = db.identify(op)?;
        println!("- {what}: {outcome:?}");
    }
    let ann = Ident::id("u-100");
    clock.advance(60);
    db.track(Track::page(ann.clone(), "https://example.com/pricing"))?;
    clock.advance(60);
    db.track(
        Track::event(ann.clone(), "purchase")
            .property("amount", 49)
            .property("currency", "EUR")
            .id("01JDEMO0000000000000000001"),
    )?;
    db.add_device(
        &ann,
        DeviceInput::new("apns-demo-token", Platform::Ios).attribute("app_version", "2.3.0"),
    )?;
    db.add_delivery(
        &ann,
        NewDelivery::new("dlv-demo-1", Channel::Email)
            .campaign_id("7")
            .recipient("Ann.Lee@Example.com")
            .subject("Welcome to Pro"),
    )?;
    clock.advance(60);
    db.report_metric(Metric::new("dlv-demo-1", "delivered"))?;
    clock.advance(60);
    db.report_metric(Metric::new("dlv-demo-1", "opened"))?;
    db.identify_object(
        &ObjectRef::new(1, "acme"),
        vec![("name".into(), Value::from("Acme Inc"))],
    )?;
    db.add_relationship(
        &ann,
        &ObjectRef::new(1, "acme"),
        vec![("role".into(), Value::from("admin"))],
    )?;
    println!("- tracked a page view and a purchase, added a device, a delivery and a relationship");
    db.flush()?;

    let profile = db
        .profile(&ann, 10)?
        .ok_or("the sample person is missing")?;
    println!();
    print_profile(&profile);
    audience(&db)?;
    let stats = db.stats()?;
    println!(
        "\n{} people, {} commits, {} bytes on disk",
        stats.people, stats.commit_seq, stats.size_on_disk
    );
    Ok(())
}

/// Loads synthetic people, defines topics and segments, and runs audience queries.
fn audience(db: &ProfileDb) -> Result<(), Box<dyn std::error::Error>> {
    const PEOPLE: u64 = 2_000;
    println!("\nAudiences over {PEOPLE} synthetic people (profiledb::synth)");
    for (id, name, default) in synth::topics() {
        db.define_topic(id, &name, default)?;
    }
    let now = db.now();
    let mut ops = Vec::new();
    for n in 0..PEOPLE {
        ops.extend(synth::person_ops(n, synth::SEED, now));
    }
    for chunk in ops.chunks(1_000) {
        db.write_batch(chunk)?;
    }
    for (name, condition) in synth::segments(5) {
        let id = db.create_segment(&name, Some(&condition))?;
        let members = db.count(&format!("segment:#{id}"))?;
        println!("  segment #{id} {name:<12} {members:>5} members  {condition}");
    }
    let query = r#"segment:"Segment 00" and topic:3 and not unsubscribed and attr.age > 40"#;
    let result = db.query(query, 3, None)?;
    println!("  query  {query}");
    println!(
        "         {} people; first: {:?}",
        result.count,
        result
            .people
            .iter()
            .filter_map(|p| p.id.as_deref())
            .collect::<Vec<_>>()
    );
    for line in db.explain(query)?.lines {
        println!("         {line}");
    }
    let someone = Ident::id(synth::person_id(7));
    let segments: Vec<String> = db
        .person_segments(&someone)?
        .into_iter()
        .map(|s| s.name)
        .collect();
    println!("  {} is in {segments:?}", synth::person_id(7));
    Ok(())
}

fn print_profile(profile: &Profile) {
    let p = &profile.person;
    let show = |v: Option<&str>| v.map_or("-".to_owned(), str::to_owned);
    println!("Person cio_{}", p.cio_id);
    println!("  Subscription preferences");
    println!(
        "    unsubscribed  {}",
        if profile.subscription.unsubscribed {
            "yes"
        } else {
            "no"
        }
    );
    println!("  Identifiers and attributes");
    println!("    id            {}", show(p.id.as_deref()));
    println!("    email         {}", show(p.email.as_deref()));
    println!("    phone         {}", show(p.phone.as_deref()));
    println!("    cio_id        {}", p.cio_id);
    for (name, value) in &p.attributes {
        let set = p.timestamps.get(name).copied().unwrap_or_default();
        println!("    {name:<30} {value}   (set at {set})");
    }
    println!("  Recent activity");
    for a in &profile.activities {
        let data = match &a.data {
            Value::Null => String::new(),
            d => d.to_string(),
        };
        let name = a.name.as_deref().unwrap_or("");
        println!("    {}  {:<24} {name} {data}", a.timestamp, a.kind);
    }
    println!("  Deliveries");
    for d in &profile.deliveries {
        println!(
            "    {}  {:<8} {:<10} {}",
            d.id,
            d.channel,
            d.status,
            d.subject.as_deref().unwrap_or("")
        );
    }
    println!("  Segments");
    if profile.segments.is_empty() {
        println!("    (none)");
    }
    for s in &profile.segments {
        println!("    {} {} ({})", s.id, s.name, s.kind);
    }
    println!("  Devices");
    for d in &profile.devices {
        println!(
            "    {}  {}  last used {}  status {:?}",
            d.token, d.platform, d.last_used, d.status
        );
    }
    println!("  Relationships");
    for r in &profile.relationships {
        println!(
            "    {}  {}  as {}",
            r.object,
            Value::Map(r.object_attributes.clone()),
            Value::Map(r.attributes.clone())
        );
    }
}
