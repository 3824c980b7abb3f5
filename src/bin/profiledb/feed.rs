//! `feed`: turn the change feed on or off, show it, and read it as JSON lines.

use clap::Subcommand;
use profiledb::{ChangeFeed, Cursor};
use serde_json::json;

use crate::context::{self, Context};
use crate::output::{print_json, CmdResult, Failure};

/// The most changes `feed read` prints unless told.
const DEFAULT_LIMIT: usize = 1000;

#[derive(Subcommand)]
pub enum FeedCommand {
    /// Turn the change feed on (or change how long it keeps changes). Prints the cursor
    /// it starts from: pair it with a full export taken now.
    On {
        /// Keep changes this many days (at least 1).
        #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..))]
        keep_days: u32,
    },
    /// Turn the change feed off and drop every change it kept.
    Off,
    /// Whether the feed is on, how long it keeps changes, the oldest cursor it accepts
    /// and its end.
    Status {
        /// Print `{"on", "keep_seconds", "oldest", "end"}`.
        #[arg(long)]
        json: bool,
    },
    /// Print the changes after a cursor, one JSON object per line (`cursor`, `commit`,
    /// `at`, `type` and the change's fields), then on stderr `next cursor: C`.
    ///
    /// Exit 1 with a message telling to export again when the cursor is older than
    /// what the feed keeps.
    Read {
        /// Print changes after this cursor (`<commit>` or `<commit>.<n>`); default: the
        /// oldest one kept.
        #[arg(long)]
        after: Option<String>,
        /// Print at most this many changes.
        #[arg(long, default_value_t = DEFAULT_LIMIT)]
        limit: usize,
    },
}

/// Runs `feed`.
pub fn feed(ctx: &Context, command: FeedCommand) -> CmdResult {
    match command {
        FeedCommand::On { keep_days } => {
            let db = ctx.open_or_create()?;
            db.set_change_feed(Some(ChangeFeed::keep_days(keep_days)))?;
            outln!("change feed on, keeping {keep_days} days of changes");
            outln!("starts after cursor {}", db.change_cursor());
            context::close(db)
        }
        FeedCommand::Off => {
            let db = ctx.open_existing()?;
            db.set_change_feed(None)?;
            outln!("change feed off; its changes are dropped");
            context::close(db)
        }
        FeedCommand::Status { json } => {
            let db = ctx.open_existing()?;
            let status = db.change_feed()?;
            match (json, status) {
                (true, Some(s)) => print_json(&json!({
                    "on": true, "keep_seconds": s.keep_seconds,
                    "oldest": s.oldest.to_string(), "end": s.end.to_string(),
                }))?,
                (true, None) => print_json(&json!({"on": false}))?,
                (false, Some(s)) => {
                    outln!("change feed on, keeping {} s of changes", s.keep_seconds);
                    outln!("oldest cursor accepted: {}", s.oldest);
                    outln!("end: {}", s.end);
                }
                (false, None) => outln!("change feed off (turn it on with `profiledb feed on`)"),
            }
            context::close(db)
        }
        FeedCommand::Read { after, limit } => {
            if limit == 0 {
                return Err(Failure::new("--limit must be at least 1"));
            }
            let db = ctx.open_existing()?;
            let after = match after {
                Some(text) => text
                    .parse::<Cursor>()
                    .map_err(|e| Failure::new(format!("--after: {e}")))?,
                None => match db.change_feed()? {
                    Some(s) => s.oldest,
                    None => Cursor::START,
                },
            };
            let page = db.changes(after, limit)?;
            for change in &page.changes {
                outln!("{}", change.to_json());
            }
            eprintln!(
                "next cursor: {}{}",
                page.next,
                if page.more { " (more follow)" } else { "" }
            );
            context::close(db)
        }
    }
}
