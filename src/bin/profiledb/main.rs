//! The `profiledb` command-line tool: every capability of the library, usable without
//! writing Rust. It owns nothing but presentation: each command opens the database,
//! calls the library, and prints (text for people, `--json` for programs).
//!
//! Errors are one sentence on stderr (`error: ...`) and an exit code: 1 for fatal
//! errors, 2 for usage errors (clap's). No input, file or database state prints a panic:
//! the code does not panic, and any panic that slips through (from a dependency) is
//! caught in `main` and reported as a one-line error with exit 1.

// glibc's malloc spends a third of an ingest fragmenting (see the README's
// "Allocator"); the library leaves the choice to the program, and this program picks
// mimalloc.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[macro_use]
mod output;
mod admin;
mod context;
mod demo;
mod feed;
mod person;
mod segment;
#[cfg(feature = "server")]
mod serve;
mod transfer;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::context::Context;
use crate::output::CmdResult;

const AFTER_HELP: &str = "\
IDENT is inferred as Track API v1 does: `cio_<cio_id>`, an email if it contains `@`,
else an `id`.

Commands that only read (person, people, activity, query, segment list/show/add/remove/
delete, topic list, attributes, refresh, verify, stats, export, feed off/status/read),
and compact, refuse a --db directory that is missing or empty; commands that define things (segment
create, topic create, index, feed on), ingest and demo create the database.

Exit status:
  0  success
  1  a fatal error: the database cannot be opened or is damaged, an unknown person or
     segment, refused input (the message names the field or the position), or `verify`
     found problems
  2  a usage error: an unknown command or flag, or a malformed argument; or `ingest`
     refused some messages (each named on stderr; the others are applied)";

const CONDITIONS: &str = "\
Conditions (for --where and query):
  attr.plan = \"pro\"    attr.age > 40    attr.created_at > now-30d    attr.phone exists
  topic:3    unsubscribed    segment:\"Trial users\"    segment:#3    all
  event:purchase[amount > 20] count >= 3 within 30d    delivery:opened within 7d
  device.platform = \"ios\"    related:1    related:1:acme
  combined with and, or, not and parentheses; or App-API filter JSON such as
  {\"attribute\": {\"field\": \"plan\", \"operator\": \"eq\", \"value\": \"pro\"}}";

#[derive(Parser)]
#[command(
    name = "profiledb",
    version,
    about = "An embedded database of people profiles (Customer.io's People model)",
    after_help = AFTER_HELP
)]
struct Cli {
    /// The database directory [default: ./profiledb-data]
    #[arg(long, global = true, value_name = "DIR")]
    db: Option<PathBuf>,
    /// Use this fixed time (unix seconds) as "now", for reproducible runs [default: the
    /// system clock]
    #[arg(
        long,
        global = true,
        value_name = "UNIX_SECONDS",
        allow_hyphen_values = true
    )]
    now: Option<i64>,
    /// Bound sled's page cache and the in-memory bitmaps together to this many MiB (at
    /// least 2); `stats` shows what each takes [default: no budget, a 64 MiB cache]
    #[arg(long, global = true, value_name = "MIB")]
    memory_budget_mib: Option<u64>,
    #[command(subcommand)]
    command: Command,
}

/// Every command. Each is one module function `fn(&Context, Args) -> CmdResult` that
/// prints through `outln!`/`output::print_json` and fails with an `output::Failure`
/// (its exit code included: `ingest`'s "some refused" is a `Failure` with code 2), so a
/// new command (`ingest`, `export`) is a variant here, an arm in `run`, and its module.
#[derive(Subcommand)]
enum Command {
    /// Show one person.
    #[command(subcommand)]
    Person(person::PersonCommand),
    /// List people (the People page): search by id/email prefix, filter by condition.
    #[command(after_help = CONDITIONS)]
    People(person::PeopleArgs),
    /// One person's activity timeline, newest first.
    Activity(person::ActivityArgs),
    /// Count and list the people matching a condition.
    #[command(after_help = CONDITIONS)]
    Query(person::QueryArgs),
    /// Manual and data-driven segments.
    #[command(subcommand)]
    Segment(segment::SegmentCommand),
    /// Subscription topics.
    #[command(subcommand)]
    Topic(segment::TopicCommand),
    /// The attribute catalogue: every attribute name in use, with how many people have it.
    Attributes {
        /// Print an array of `{"name", "people"}`.
        #[arg(long)]
        json: bool,
    },
    /// Declare an attribute index.
    #[command(subcommand)]
    Index(admin::IndexCommand),
    /// Re-evaluate the segments whose conditions read the clock (`within`, `now`), at
    /// --now.
    Refresh,
    /// Check the whole database; exit 1 with a report when it is damaged.
    ///
    /// Reads every record and checks its checksum, and that identifiers, reverse
    /// indexes and bitmaps agree with the data. Exit 0 when healthy, 1 with a report
    /// naming each problem when not.
    Verify,
    /// Counts and size on disk.
    Stats {
        /// Print `{"people", "objects", "events", "deliveries", "devices", "segments",
        /// "bytes_on_disk"}`.
        #[arg(long)]
        json: bool,
    },
    /// Rewrite the database's files to hold only its live records (as SQLite's VACUUM).
    ///
    /// sled reclaims space only from mostly dead log segments, so after heavy writing
    /// its files hold two to three times the records. Copies the live records into
    /// fresh files beside the old ones (needing that much free disk), swaps them in
    /// atomically, and removes the old; a crash at any point leaves the old files or the
    /// new ones, whole. Prints the bytes on disk before and after.
    Compact {
        /// Print `{"bytes_before", "bytes_after"}`.
        #[arg(long)]
        json: bool,
    },
    /// Read JSON lines (Track v2, Pipelines, reporting webhooks, batches, an export).
    ///
    /// One message or batch per line; empty lines are skipped. Prints
    /// `{"applied": N, "rejected": M}` (a batch counts each item) and, on stderr, one
    /// `line L: <reason>` (or `line L item I: <reason>`) per refused message. Exit 0
    /// when everything applied, 2 when some messages were refused (the others are
    /// applied), 1 on a fatal error. Creates the database if missing; everything it
    /// applied is durable when it exits. A dump made by `export` goes into an empty
    /// database, whole and alone.
    Ingest(transfer::IngestArgs),
    /// Write the whole database as JSON lines that `ingest` restores into an empty one,
    /// or (`--format parquet DIR`) as one Parquet file per table for a warehouse.
    ///
    /// JSON lines: a lossless dump, every record in profiledb's own extension messages,
    /// written to FILE.tmp first and renamed to FILE when complete. Parquet: one file per
    /// table (people, attributes, activities, deliveries, metrics, devices,
    /// relationships, objects, object_types, segment_memberships, topic_preferences,
    /// segments, topics, suppressions) in DIR/<table>/, and a manifest in
    /// DIR/manifests/, never overwriting a file; prints each file's rows and bytes and
    /// `next cursor: <commit>`.
    Export(transfer::ExportArgs),
    /// The change feed: every commit's changes in order, for a copy kept elsewhere.
    #[command(subcommand)]
    Feed(feed::FeedCommand),
    /// Build a sample workspace, show a profile and time a few audience queries.
    ///
    /// Synthetic people with attributes, topic preferences, events, devices and
    /// companies; topics; data-driven and manual segments. The database stays in --db
    /// (default ./profiledb-data) for the other commands to read; an earlier demo's
    /// database there is replaced, and a directory holding anything else is refused.
    Demo(demo::DemoArgs),
    /// Serve the database over HTTP at Customer.io's own API paths (Track v1/v2, Data
    /// Pipelines, reporting webhooks, App API reads), so an unmodified SDK writes to it.
    ///
    /// Keys come from the flags or the environment (PROFILEDB_SITE_ID,
    /// PROFILEDB_API_KEY, PROFILEDB_WRITE_KEY, PROFILEDB_APP_KEY,
    /// PROFILEDB_WEBHOOK_KEY); with none it refuses to start unless given --no-auth,
    /// which only binds a loopback address. Prints `listening on http://ADDR` on stderr
    /// when ready; SIGTERM or ctrl-c drains, flushes and closes. Creates the database
    /// if the directory is empty.
    #[cfg(feature = "server")]
    Serve(serve::ServeArgs),
}

fn run(ctx: &Context, command: Command) -> CmdResult {
    match command {
        Command::Person(c) => person::person(ctx, c),
        Command::People(a) => person::people(ctx, a),
        Command::Activity(a) => person::activity(ctx, a),
        Command::Query(a) => person::query(ctx, a),
        Command::Segment(c) => segment::segment(ctx, c),
        Command::Topic(c) => segment::topic(ctx, c),
        Command::Attributes { json } => admin::attributes(ctx, json),
        Command::Index(c) => admin::index(ctx, c),
        Command::Refresh => admin::refresh(ctx),
        Command::Verify => admin::verify(ctx),
        Command::Stats { json } => admin::stats(ctx, json),
        Command::Compact { json } => admin::compact(ctx, json),
        Command::Demo(a) => demo::demo(ctx, a),
        Command::Ingest(a) => transfer::ingest(ctx, a),
        Command::Export(a) => transfer::export(ctx, a),
        Command::Feed(c) => feed::feed(ctx, c),
        #[cfg(feature = "server")]
        Command::Serve(a) => serve::serve(ctx, a),
    }
}

fn main() -> ExitCode {
    // The default hook prints the panic (and a backtrace hint) the moment it happens,
    // even for a panic the library catches and turns into an error (it contains sled's
    // panics on damaged files). So the hook stays silent, and a panic that reaches `main`
    // is reported below as one line.
    std::panic::set_hook(Box::new(|_| {}));
    let cli = Cli::parse();
    let ctx = Context::new(cli.db, cli.now, cli.memory_budget_mib);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run(&ctx, cli.command).and_then(|()| output::finish())
    }))
    .unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown cause".to_owned());
        Err(output::Failure::new(format!(
            "internal failure ({what}); please report it"
        )))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            // Whatever was printed before the failure goes out first.
            let _ = output::finish();
            eprintln!("error: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}
