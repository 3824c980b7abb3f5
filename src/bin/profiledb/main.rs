//! The `profiledb` command-line tool: a thin shell over the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use profiledb::{Durability, Ident, Identify, ManualClock, Person, ProfileDb, Value};

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
    db.flush()?;

    let ann = db
        .person(&Ident::id("u-100"))?
        .ok_or("the sample person is missing")?;
    println!();
    print_profile(&db, &ann)?;
    let stats = db.stats()?;
    println!(
        "\n{} people, {} commits, {} bytes on disk",
        stats.people, stats.commit_seq, stats.size_on_disk
    );
    Ok(())
}

fn print_profile(db: &ProfileDb, p: &Person) -> Result<(), Box<dyn std::error::Error>> {
    let show = |v: Option<&str>| v.map_or("-".to_owned(), str::to_owned);
    println!("Person cio_{}", p.cio_id);
    println!("  Identifiers");
    println!("    id            {}", show(p.id.as_deref()));
    println!("    email         {}", show(p.email.as_deref()));
    println!("    phone         {}", show(p.phone.as_deref()));
    println!("    cio_id        {}", p.cio_id);
    println!("  Subscription");
    println!(
        "    unsubscribed  {}",
        if p.unsubscribed() { "yes" } else { "no" }
    );
    println!("  Attributes");
    for (name, value) in &p.attributes {
        let set = p.timestamps.get(name).copied().unwrap_or_default();
        println!("    {name:<30} {value}   (set at {set})");
    }
    println!("  Recent activity");
    for a in db.activities(
        &Ident::cio_id(p.cio_id.clone()),
        &profiledb::ActivityFilter::new(10),
    )? {
        let data = match &a.data {
            Value::Null => String::new(),
            d => d.to_string(),
        };
        println!("    {}  {:<24} {data}", a.timestamp, a.kind);
    }
    Ok(())
}
