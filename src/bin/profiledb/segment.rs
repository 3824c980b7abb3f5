//! `segment ...` and `topic ...`: defining audiences and subscription topics.

use clap::{ArgGroup, Args, Subcommand, ValueEnum};
use profiledb::{Ident, Outcome, ProfileDb, SegmentInfo};
use serde_json::json;

use crate::context::{self, Context};
use crate::output::{or_dash, print_json, progress_bar, CmdResult, Failure};
use crate::person::segment_type;

/// How many people `add`/`remove` send to the library per call (its limit).
const MEMBERS_PER_CALL: usize = 1000;
/// How many members `segment show` lists.
const SHOWN_MEMBERS: usize = 20;

#[derive(Subcommand)]
pub enum SegmentCommand {
    /// Create a segment: manual (people added by hand) or data-driven (everyone matching
    /// a condition, kept current by every write).
    #[command(after_help = crate::CONDITIONS)]
    Create(CreateArgs),
    /// Add people to a manual segment.
    Add {
        /// The segment's name (or `#ID`).
        name: String,
        /// `cio_<cio_id>`, an email (contains `@`), or an `id`; identifiers that name
        /// nobody are ignored and counted.
        #[arg(required = true)]
        idents: Vec<String>,
    },
    /// Remove people from a manual segment.
    Remove {
        /// The segment's name (or `#ID`).
        name: String,
        /// `cio_<cio_id>`, an email (contains `@`), or an `id`.
        #[arg(required = true)]
        idents: Vec<String>,
    },
    /// List every segment with its size.
    List {
        /// Print an array of `{"id", "name", "type", "size"}`.
        #[arg(long)]
        json: bool,
    },
    /// Show a segment: its type, condition, size and first members.
    Show {
        /// The segment's name (or `#ID`).
        name: String,
    },
    /// Delete a segment (refused while another segment's condition refers to it).
    Delete {
        /// The segment's name (or `#ID`).
        name: String,
    },
}

#[derive(Args)]
#[command(group(ArgGroup::new("kind").required(true).args(["manual", "condition"])))]
pub struct CreateArgs {
    /// The new segment's name.
    name: String,
    /// A manual segment.
    #[arg(long)]
    manual: bool,
    /// A data-driven segment of everyone matching EXPR.
    #[arg(long = "where", value_name = "EXPR")]
    condition: Option<String>,
}

#[derive(Subcommand)]
pub enum TopicCommand {
    /// Define a subscription topic (or rename one, or change its default).
    Create {
        /// The topic id: 1, 2, 3... (`cio_subscription_preferences.topics.topic_<ID>`).
        id: u32,
        /// Its name.
        name: String,
        /// Whether people who never chose are subscribed (`in`) or not (`out`).
        #[arg(long, value_enum, default_value_t = Default::Out)]
        default: Default,
    },
    /// List every topic.
    List {
        /// Print an array of `{"id", "name", "default"}`.
        #[arg(long)]
        json: bool,
    },
}

/// A topic's default state.
#[derive(Clone, Copy, ValueEnum)]
pub enum Default {
    /// Subscribed unless they opt out.
    In,
    /// Not subscribed unless they opt in.
    Out,
}

fn default_name(subscribed: bool) -> &'static str {
    if subscribed {
        "in"
    } else {
        "out"
    }
}

/// The segment `name` names: its exact name, or `#ID`.
fn find(db: &ProfileDb, name: &str) -> Result<SegmentInfo, Failure> {
    let segments = db.segments();
    let by_id = name.strip_prefix('#').and_then(|id| id.parse::<u32>().ok());
    segments
        .into_iter()
        .find(|s| s.name == name || Some(s.id) == by_id)
        .ok_or_else(|| {
            Failure::new(format!(
                "no segment named \"{name}\"; `profiledb segment list` shows them"
            ))
        })
}

/// Runs `segment ...`.
pub fn segment(ctx: &Context, command: SegmentCommand) -> CmdResult {
    match command {
        SegmentCommand::Create(args) => create(ctx, args),
        SegmentCommand::Add { name, idents } => members(ctx, &name, &idents, true),
        SegmentCommand::Remove { name, idents } => members(ctx, &name, &idents, false),
        SegmentCommand::List { json } => list(ctx, json),
        SegmentCommand::Show { name } => show(ctx, &name),
        SegmentCommand::Delete { name } => {
            let db = ctx.open_existing()?;
            let s = find(&db, &name)?;
            db.delete_segment(s.id)?;
            outln!("deleted segment #{} \"{}\"", s.id, s.name);
            context::close(db)
        }
    }
}

fn create(ctx: &Context, args: CreateArgs) -> CmdResult {
    let db = ctx.open_or_create()?;
    let condition = if args.manual {
        None
    } else {
        args.condition.as_deref()
    };
    let bar = progress_bar(0, "computing membership");
    let id = db.create_segment_with_progress(&args.name, condition, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })?;
    bar.finish_and_clear();
    let size = db
        .segments()
        .into_iter()
        .find(|s| s.id == id)
        .map_or(0, |s| s.members);
    outln!(
        "created {} segment #{id} \"{}\" with {size} {}",
        segment_type(condition.is_some()),
        args.name,
        if size == 1 { "member" } else { "members" }
    );
    context::close(db)
}

fn members(ctx: &Context, name: &str, idents: &[String], add: bool) -> CmdResult {
    let db = ctx.open_existing()?;
    let s = find(&db, name)?;
    let people: Vec<Ident> = idents.iter().map(|i| Ident::infer(i)).collect();
    let (mut changed, mut unknown) = (0usize, 0usize);
    for chunk in people.chunks(MEMBERS_PER_CALL) {
        let outcome = if add {
            db.add_to_segment(s.id, chunk)?
        } else {
            db.remove_from_segment(s.id, chunk)?
        };
        if let Outcome::Members {
            changed: c,
            unknown: u,
        } = outcome
        {
            changed += c;
            unknown += u;
        }
    }
    outln!(
        "{} {changed} {} {} segment #{} \"{}\"",
        if add { "added" } else { "removed" },
        if changed == 1 { "person" } else { "people" },
        if add { "to" } else { "from" },
        s.id,
        s.name
    );
    if unknown > 0 {
        eprintln!(
            "note: {unknown} {} named nobody and {} ignored",
            if unknown == 1 {
                "identifier"
            } else {
                "identifiers"
            },
            if unknown == 1 { "was" } else { "were" }
        );
    }
    context::close(db)
}

fn list(ctx: &Context, json: bool) -> CmdResult {
    let db = ctx.open_existing()?;
    let segments = db.segments();
    if json {
        print_json(&serde_json::Value::Array(
            segments
                .iter()
                .map(|s| {
                    json!({
                        "id": s.id,
                        "name": s.name,
                        "type": segment_type(s.condition.is_some()),
                        "size": s.members,
                    })
                })
                .collect(),
        ))?;
    } else if segments.is_empty() {
        outln!("(no segments; `profiledb segment create NAME --where EXPR` makes one)");
    } else {
        outln!(
            "  {:<5} {:<28} {:<12} {:>9}  condition",
            "id",
            "name",
            "type",
            "size"
        );
        for s in &segments {
            outln!(
                "  #{:<4} {:<28} {:<12} {:>9}  {}",
                s.id,
                s.name,
                segment_type(s.condition.is_some()),
                s.members,
                or_dash(s.condition.as_deref())
            );
        }
    }
    context::close(db)
}

fn show(ctx: &Context, name: &str) -> CmdResult {
    let db = ctx.open_existing()?;
    let s = find(&db, name)?;
    outln!("Segment #{} \"{}\"", s.id, s.name);
    outln!("  type       {}", segment_type(s.condition.is_some()));
    outln!("  condition  {}", or_dash(s.condition.as_deref()));
    outln!("  size       {}", s.members);
    let first = db.query(&format!("segment:#{}", s.id), SHOWN_MEMBERS, None)?;
    if !first.people.is_empty() {
        outln!(
            "  members{}",
            if first.next.is_some() {
                format!(
                    " (the first {SHOWN_MEMBERS}; `profiledb query 'segment:#{}'` pages through all)",
                    s.id
                )
            } else {
                String::new()
            }
        );
        for p in &first.people {
            outln!(
                "    {:<10} {:<24} {}",
                p.cio_id,
                or_dash(p.id.as_deref()),
                or_dash(p.email.as_deref())
            );
        }
    }
    context::close(db)
}

/// Runs `topic ...`.
pub fn topic(ctx: &Context, command: TopicCommand) -> CmdResult {
    match command {
        TopicCommand::Create { id, name, default } => {
            let db = ctx.open_or_create()?;
            let subscribed = matches!(default, Default::In);
            db.define_topic(id, &name, subscribed)?;
            outln!(
                "defined topic {id} \"{name}\" (default {})",
                default_name(subscribed)
            );
            context::close(db)
        }
        TopicCommand::List { json } => {
            let db = ctx.open_existing()?;
            let topics = db.topics();
            if json {
                print_json(&serde_json::Value::Array(
                    topics
                        .iter()
                        .map(|(id, name, d)| {
                            json!({"id": id, "name": name, "default": default_name(*d)})
                        })
                        .collect(),
                ))?;
            } else if topics.is_empty() {
                outln!("(no topics; `profiledb topic create ID NAME` defines one)");
            } else {
                for (id, name, d) in &topics {
                    outln!("  {id:<5} {name:<32} default {}", default_name(*d));
                }
            }
            context::close(db)
        }
    }
}
