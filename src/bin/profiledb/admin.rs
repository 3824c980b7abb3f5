//! `attributes`, `index`, `refresh`, `verify` and `stats`: the workspace as a whole.

use clap::Subcommand;
use serde_json::json;

use crate::context::{self, Context};
use crate::output::{print_json, CmdResult, Failure};

#[derive(Subcommand)]
pub enum IndexCommand {
    /// Index an attribute: equality (`attr.NAME = VALUE` answered from bitmaps), or with
    /// --range an ordered index of its numeric values (`<`, `<=`, `>`, `>=`, `=`,
    /// `now±N`); a data-driven segment comparing an attribute in order creates the latter.
    Attr {
        /// A top-level attribute name.
        name: String,
        /// An ordered index of numeric values instead of equality bitmaps.
        #[arg(long)]
        range: bool,
    },
}

/// Runs `attributes`.
pub fn attributes(ctx: &Context, json: bool) -> CmdResult {
    let db = ctx.open_existing()?;
    let catalogue = db.attribute_catalogue();
    if json {
        print_json(&serde_json::Value::Array(
            catalogue
                .iter()
                .map(|(name, people)| json!({"name": name, "people": people}))
                .collect(),
        ))?;
    } else if catalogue.is_empty() {
        outln!("(no attributes)");
    } else {
        outln!("  {:<32} {:>9}", "attribute", "people");
        for (name, people) in &catalogue {
            outln!("  {name:<32} {people:>9}");
        }
    }
    context::close(db)
}

/// Runs `index attr`.
pub fn index(ctx: &Context, command: IndexCommand) -> CmdResult {
    let IndexCommand::Attr { name, range } = command;
    let db = ctx.open_or_create()?;
    if range {
        db.index_attribute_range(&name)?;
        outln!("attribute `{name}` is range-indexed");
    } else {
        db.index_attribute(&name)?;
        outln!("attribute `{name}` is indexed");
    }
    context::close(db)
}

/// Runs `refresh`.
pub fn refresh(ctx: &Context) -> CmdResult {
    let db = ctx.open_existing()?;
    let report = db.refresh()?;
    outln!(
        "re-evaluated {} clock-dependent {}: {} entered, {} exited",
        report.segments,
        if report.segments == 1 {
            "segment"
        } else {
            "segments"
        },
        report.entered,
        report.exited
    );
    context::close(db)
}

/// Runs `verify`: the report on stdout; a damaged database fails with exit 1.
pub fn verify(ctx: &Context) -> CmdResult {
    let db = ctx.open_existing()?;
    let report = db.verify()?;
    let total: u64 = report.records.iter().map(|(_, n)| n).sum();
    outln!(
        "checked {total} records in {} families",
        report.records.len()
    );
    for (family, n) in &report.records {
        if *n > 0 {
            outln!("  {family:<20} {n:>10}");
        }
    }
    context::close(db)?;
    if report.is_ok() {
        outln!("healthy: every checksum, identifier, reverse index and bitmap agrees");
        return Ok(());
    }
    outln!(
        "{} {} found:",
        report.problems.len(),
        if report.problems.len() == 1 {
            "problem"
        } else {
            "problems"
        }
    );
    for problem in &report.problems {
        outln!("  - {problem}");
    }
    Err(Failure::new(format!(
        "the database at {} is damaged: {} {} (listed above)",
        ctx.dir.display(),
        report.problems.len(),
        if report.problems.len() == 1 {
            "problem"
        } else {
            "problems"
        }
    )))
}

/// Runs `stats`.
pub fn stats(ctx: &Context, json: bool) -> CmdResult {
    let db = ctx.open_existing()?;
    let stats = db.stats()?;
    let counts = db.counts()?;
    let memory = db.memory();
    if json {
        print_json(&json!({
            "people": stats.people,
            "objects": counts.objects,
            "events": counts.events,
            "deliveries": counts.deliveries,
            "devices": counts.devices,
            "segments": counts.segments,
            "bytes_on_disk": stats.size_on_disk,
            "memory": {
                "budget": memory.budget,
                "cache_bytes": memory.cache_bytes,
                "bitmap_bytes": memory.bitmap_bytes,
            },
        }))?;
    } else {
        outln!("  {:<14} {:>12}", "people", stats.people);
        outln!("  {:<14} {:>12}", "objects", counts.objects);
        outln!("  {:<14} {:>12}", "events", counts.events);
        outln!("  {:<14} {:>12}", "deliveries", counts.deliveries);
        outln!("  {:<14} {:>12}", "devices", counts.devices);
        outln!("  {:<14} {:>12}", "segments", counts.segments);
        outln!("  {:<14} {:>12}", "bytes on disk", stats.size_on_disk);
        outln!("  {:<14} {:>12}", "commits", stats.commit_seq);
        outln!("  {:<14} {:>12}", "page cache", memory.cache_bytes);
        outln!("  {:<14} {:>12}", "bitmaps", memory.bitmap_bytes);
        if let Some(budget) = memory.budget {
            outln!("  {:<14} {:>12}", "memory budget", budget);
        }
    }
    context::close(db)
}

/// Runs `compact`.
pub fn compact(ctx: &Context, json: bool) -> CmdResult {
    let db = ctx.open_existing()?;
    let Some(done) = db.compact()? else {
        return Err(Failure::new(
            "reads in progress kept the compaction from starting for 10 s; nothing changed",
        ));
    };
    if json {
        print_json(&json!({
            "bytes_before": done.bytes_before,
            "bytes_after": done.bytes_after,
        }))?;
    } else {
        outln!("  {:<14} {:>12}", "bytes before", done.bytes_before);
        outln!("  {:<14} {:>12}", "bytes after", done.bytes_after);
    }
    context::close(db)
}
