//! `demo`: a realistic sample workspace, built with the synthetic generator, then a tour
//! of what it can answer.

use std::path::Path;
use std::time::Instant;

use clap::Args;
use profiledb::synth;
use profiledb::{
    Channel, DeviceInput, Durability, Ident, Identify, Metric, NewDelivery, ObjectRef, Op,
    Platform, ProfileDb, Track, Value,
};

use crate::context::{is_missing_or_empty, Context};
use crate::output::{progress_bar, CmdResult, Failure};
use crate::person::print_profile;

/// A file the demo leaves beside the database, so a later `demo` knows it may replace
/// the directory (and never replaces anything else).
const DEMO_MARKER: &str = "PROFILEDB-DEMO";
/// The database's own marker file (see `src/store/FORMAT.md`).
const DB_MARKER: &str = "PROFILEDB";
/// People per atomic batch while loading.
const PEOPLE_PER_BATCH: u64 = 500;

#[derive(Args)]
pub struct DemoArgs {
    /// How many synthetic people to create.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=2_000_000))]
    people: u64,
}

/// The demo's topics: (id, name, subscribed by default).
const TOPICS: [(u32, &str, bool); 10] = [
    (1, "Product updates", true),
    (2, "Weekly newsletter", false),
    (3, "Offers", true),
    (4, "Events near you", false),
    (5, "Tips and tutorials", true),
    (6, "Surveys", false),
    (7, "Security notices", true),
    (8, "Partner news", false),
    (9, "Release notes", true),
    (10, "Community digest", false),
];

/// The demo's data-driven segments.
const SEGMENTS: [(&str, &str); 5] = [
    ("Paying", r#"attr.plan = "pro" or attr.plan = "enterprise""#),
    ("Recent buyers", "event:purchase within 7d"),
    (
        "Engaged on iOS",
        r#"device.platform = "ios" and event:login within 30d"#,
    ),
    (
        "Over 40 in Norway",
        r#"attr.country = "NO" and attr.age > 40"#,
    ),
    ("Newsletter readers", "topic:2 and not unsubscribed"),
];

/// Audience queries to time.
const QUERIES: [&str; 4] = [
    r#"attr.plan = "pro" and topic:3 and not unsubscribed"#,
    r#"segment:"Recent buyers" and attr.age >= 30"#,
    "event:purchase[amount > 150] count >= 2 within 30d",
    r#"related:1 and device.platform = "android""#,
];

/// Runs `demo`.
pub fn demo(ctx: &Context, args: DemoArgs) -> CmdResult {
    let dir = ctx.dir.clone();
    prepare(&dir)?;
    let started = Instant::now();
    let db = ctx.open(Durability::Buffered)?;
    std::fs::write(
        dir.join(DEMO_MARKER),
        "A sample database made by `profiledb demo`; a later demo may replace this directory.\n",
    )
    .map_err(|e| Failure::new(format!("cannot write in {}: {e}", dir.display())))?;
    outln!(
        "Building a sample workspace of {} people in {}",
        args.people,
        dir.display()
    );

    for (id, name, default) in TOPICS {
        db.define_topic(id, name, default)?;
    }
    db.define_object_type(1, "Companies")?;
    // Indexes declared before the load are kept up to date as people arrive.
    db.index_attribute("plan")?;
    db.index_attribute("country")?;
    db.index_attribute_range("age")?;

    let loading = Instant::now();
    load(&db, args.people)?;
    let companies = Instant::now();
    for n in 0..100u64 {
        db.identify_object(
            &ObjectRef::new(1, format!("company-{n}")),
            vec![
                ("name".into(), Value::from(format!("Company {n}"))),
                ("employees".into(), Value::from(((n * 37) % 500 + 5) as i64)),
            ],
        )?;
    }
    add_ann(&db)?;
    outln!(
        "  loaded {} people with events, devices and relationships in {:.1} s, and 100 companies",
        args.people,
        companies.duration_since(loading).as_secs_f64()
    );

    let segmenting = Instant::now();
    for (name, condition) in SEGMENTS {
        let bar = progress_bar(args.people, &format!("segment \"{name}\""));
        db.create_segment_with_progress(name, Some(condition), &mut |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        })?;
        bar.finish_and_clear();
    }
    let vip = db.create_segment("VIP", None)?;
    let mut vips = vec![Ident::email("ann.lee@example.com")];
    vips.extend((0..args.people.min(5)).map(|n| Ident::id(synth::person_id(n * 3))));
    db.add_to_segment(vip, &vips)?;
    outln!(
        "  defined {} topics and {} segments in {:.2} s",
        TOPICS.len(),
        SEGMENTS.len() + 1,
        segmenting.elapsed().as_secs_f64()
    );
    outln!();
    outln!(
        "  {:<5} {:<22} {:<12} {:>8}  condition",
        "id",
        "segment",
        "type",
        "size"
    );
    for s in db.segments() {
        outln!(
            "  #{:<4} {:<22} {:<12} {:>8}  {}",
            s.id,
            s.name,
            crate::person::segment_type(s.condition.is_some()),
            s.members,
            s.condition.as_deref().unwrap_or("-")
        );
    }

    outln!();
    let ann = Ident::email("ann.lee@example.com");
    let profile = db
        .profile(&ann, 10)?
        .ok_or_else(|| Failure::new("the sample person Ann is missing from the demo database"))?;
    print_profile(&profile, &db.missing_attributes(&ann)?);

    outln!();
    outln!("Audience queries");
    for q in QUERIES {
        let t = Instant::now();
        let result = db.query(q, 3, None)?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        let first: Vec<&str> = result
            .people
            .iter()
            .filter_map(|p| p.id.as_deref())
            .collect();
        outln!("  {ms:>8.2} ms {:>7} people  {q}", result.count);
        if !first.is_empty() {
            outln!("  {:>27}first: {}", "", first.join(", "));
        }
    }

    db.flush()?;
    let stats = db.stats()?;
    db.close()?;
    let shown = shell_word(&dir.display().to_string());
    let me = invoked_as();
    outln!();
    outln!(
        "Done in {:.1} s. The database is in {} ({} people, {:.1} MB on disk); it stays there.",
        started.elapsed().as_secs_f64(),
        dir.display(),
        stats.people,
        stats.size_on_disk as f64 / 1e6
    );
    outln!("Try next:");
    for cmd in [
        format!("{me} --db {shown} person show ann.lee@example.com"),
        format!(
            "{me} --db {shown} person show {} --json",
            synth::person_id(7)
        ),
        format!(
            "{me} --db {shown} activity {} --type event",
            synth::person_id(7)
        ),
        format!("{me} --db {shown} people --search user-0000001"),
        format!(
            "{me} --db {shown} query {} --explain",
            shell_word(QUERIES.first().copied().unwrap_or("all"))
        ),
        format!("{me} --db {shown} segment list"),
        format!("{me} --db {shown} segment show 'Recent buyers'"),
        format!("{me} --db {shown} attributes"),
        format!("{me} --db {shown} stats"),
    ] {
        outln!("  {cmd}");
    }
    #[cfg(feature = "server")]
    {
        outln!("Serve it (the People page, and the APIs Customer.io's SDKs write to):");
        outln!("  {me} --db {shown} serve --no-auth");
        outln!("  then open http://127.0.0.1:8080/");
    }
    #[cfg(feature = "parquet")]
    {
        outln!("Export it for a warehouse (one Parquet file per table; DuckDB, Spark, BigQuery read them):");
        outln!("  {me} --db {shown} export --format parquet {shown}-parquet");
        outln!(
            "  with `{me} --db {shown} feed on` first, later runs take `--since CURSOR` and write only what changed"
        );
    }
    Ok(())
}

/// Makes sure `dir` can take the demo: missing or empty, or an earlier demo's database
/// (which is replaced). Anything else is refused untouched.
fn prepare(dir: &Path) -> Result<(), Failure> {
    if is_missing_or_empty(dir)? {
        return Ok(());
    }
    if dir.join(DEMO_MARKER).is_file() && dir.join(DB_MARKER).is_file() {
        outln!("Replacing the earlier demo database in {}", dir.display());
        return std::fs::remove_dir_all(dir).map_err(|e| {
            Failure::new(format!(
                "cannot remove the earlier demo database in {}: {e}",
                dir.display()
            ))
        });
    }
    let what = if dir.join(DB_MARKER).is_file() {
        "a profiledb database that the demo did not make"
    } else if dir.is_dir() {
        "files that are not a profiledb demo database"
    } else {
        "something that is not a directory"
    };
    Err(Failure::new(format!(
        "{} holds {what}; the demo will not overwrite it, so name an empty or new \
         directory with --db",
        dir.display()
    )))
}

/// Creates the synthetic people in atomic batches, with a progress bar.
fn load(db: &ProfileDb, people: u64) -> Result<(), Failure> {
    let now = db.now();
    let bar = progress_bar(people, "loading people");
    let mut n = 0;
    while n < people {
        let end = n.saturating_add(PEOPLE_PER_BATCH).min(people);
        let ops: Vec<Op> = (n..end)
            .flat_map(|i| synth::person_ops(i, synth::SEED, now))
            .collect();
        db.write_batch(&ops)?;
        bar.set_position(end);
        n = end;
    }
    bar.finish_and_clear();
    Ok(())
}

/// One hand-made person whose profile has something in every section.
fn add_ann(db: &ProfileDb) -> Result<(), Failure> {
    let now = db.now();
    let ann = Ident::id("ann-lee");
    db.identify(
        Identify::new(ann.clone())
            .set("email", "Ann.Lee@Example.com")
            .set("first_name", "Ann")
            .set("plan", "pro")
            .set("country", "PT")
            .set("age", 34i64)
            .set("created_at", now - 90 * 86_400)
            .set("cio_subscription_preferences.topics.topic_2", true)
            .set("cio_subscription_preferences.topics.topic_3", false),
    )?;
    db.track(Track::page(ann.clone(), "https://example.com/pricing").timestamp(now - 3600))?;
    for (days, amount) in [(20, 120i64), (9, 180), (2, 240)] {
        db.track(
            Track::event(ann.clone(), "purchase")
                .property("amount", amount)
                .property("currency", "EUR")
                .timestamp(now - days * 86_400),
        )?;
    }
    db.track(Track::event(ann.clone(), "login").timestamp(now - 600))?;
    db.add_device(
        &ann,
        DeviceInput::new("apns-ann-iphone", Platform::Ios)
            .attribute("app_version", "2.3.0")
            .last_used(now - 600),
    )?;
    db.add_delivery(
        &ann,
        NewDelivery::new("dlv-ann-welcome", Channel::Email)
            .campaign_id("7")
            .recipient("Ann.Lee@Example.com")
            .subject("Welcome to Pro"),
    )?;
    db.report_metric(Metric::new("dlv-ann-welcome", "delivered"))?;
    db.report_metric(Metric::new("dlv-ann-welcome", "opened"))?;
    db.add_relationship(
        &ann,
        &ObjectRef::new(1, "company-7"),
        vec![("role".into(), Value::from("admin"))],
    )?;
    Ok(())
}

/// How to run this program again: `profiledb` when it was found on the PATH, else the
/// path it was run by (`target/release/profiledb` under `cargo run`), so the commands
/// the demo suggests work as printed.
fn invoked_as() -> String {
    match std::env::args_os().next() {
        Some(arg0) if Path::new(&arg0).components().count() > 1 => {
            shell_word(&arg0.to_string_lossy())
        }
        _ => "profiledb".to_owned(),
    }
}

/// `word` as one shell word: as is when it is plain, single-quoted otherwise.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:@%+=,".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}
