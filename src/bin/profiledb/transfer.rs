//! `ingest` and `export`: JSON lines in, and the whole database out as JSON lines that
//! `ingest` reads back.
//!
//! `ingest` reads one message (or batch) per line with `read_until`, so a line that is not
//! UTF-8 or is very long is one refused line, not a failure. It writes with
//! [`Durability::Buffered`] and flushes at the end, and before reporting a fatal error,
//! so everything it acknowledged is durable when it exits.
//!
//! A restore dump (`profiledb export`) must arrive whole and alone; the library's
//! [`Restore`] holds each input to that (see `profiledb::export`), and this file only
//! reads, shows progress and words the outcome: a dump that cannot be applied, or that
//! the input ends inside, is a fatal error that says the database at `--db` holds a
//! partial restore.

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use clap::Args;
use indicatif::ProgressBar;
use profiledb::{Durability, LineOutcome, ProfileDb, Restore, RestoreError};

use crate::context::{self, Context};
use crate::output::{progress_bar, progress_spinner, CmdResult, Failure};

/// Bytes read from the input at a time.
const READ_BUFFER: usize = 1 << 16;

#[derive(Args)]
pub struct IngestArgs {
    /// A file of JSON lines, or `-` for standard input.
    #[arg(value_name = "FILE|-", default_value = "-")]
    input: PathBuf,
}

#[derive(Args)]
pub struct ExportArgs {
    /// Where to write. JSON lines: a file (replaced only once the export is complete),
    /// or `-` for standard output. Parquet: a directory (created when missing), beside
    /// the files earlier runs left there, none of which is ever overwritten.
    #[arg(value_name = "FILE|-|DIR", default_value = "-")]
    output: PathBuf,
    /// `jsonl`: the lossless dump `ingest` restores. `parquet`: one Parquet file per
    /// table, for a warehouse (the README's "Data out: Parquet" lists the tables).
    #[arg(long, value_enum, default_value = "jsonl")]
    format: ExportFormat,
    /// Parquet only: write only what changed after this cursor (the `next cursor` an
    /// earlier run printed), from the change feed, which must have been on since then
    /// (`profiledb feed on`).
    #[arg(long, value_name = "CURSOR")]
    since: Option<String>,
}

/// What `export` writes.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// JSON lines: every record, for `ingest` into an empty database.
    Jsonl,
    /// One Parquet file per table.
    #[cfg(feature = "parquet")]
    Parquet,
}

fn is_dash(p: &Path) -> bool {
    p.as_os_str() == "-"
}

/// Where the lines come from, for messages and the progress bar.
struct Input {
    reader: Box<dyn BufRead>,
    /// `standard input` or the file's path.
    name: String,
    bar: ProgressBar,
    /// The bar counts bytes (a regular file of known size) rather than lines.
    counts_bytes: bool,
}

impl Input {
    fn open(path: &Path) -> Result<Input, Failure> {
        if is_dash(path) {
            return Ok(Input {
                reader: Box::new(std::io::stdin().lock()),
                name: "standard input".to_owned(),
                bar: progress_spinner("ingesting lines"),
                counts_bytes: false,
            });
        }
        let name = path.display().to_string();
        let file =
            File::open(path).map_err(|e| Failure::new(format!("cannot read {name}: {e}")))?;
        let size = file
            .metadata()
            .ok()
            .filter(std::fs::Metadata::is_file)
            .map(|m| m.len());
        let (bar, counts_bytes) = match size {
            Some(len) => (progress_bar(len, "ingesting bytes"), true),
            None => (progress_spinner("ingesting lines"), false),
        };
        let mut reader = BufReader::with_capacity(READ_BUFFER, file);
        // A file that cannot be read at all (a directory) fails before the database is
        // opened, or created.
        reader
            .fill_buf()
            .map_err(|e| Failure::new(format!("cannot read {name}: {e}")))?;
        Ok(Input {
            reader: Box::new(reader),
            name,
            bar,
            counts_bytes,
        })
    }
}

/// Writes one line to stderr above the progress bar. A failing stderr is ignored: there
/// is nowhere left to report it.
fn note(bar: &ProgressBar, text: &str) {
    bar.suspend(|| {
        let _ = writeln!(std::io::stderr().lock(), "{text}");
    });
}

/// Prints what the library did with line `line`.
fn report_line(bar: &ProgressBar, line: u64, outcome: &LineOutcome) {
    match outcome {
        LineOutcome::Ingested(report) => {
            for r in &report.rejected {
                let text = match r.item {
                    Some(i) => format!("line {line} item {i}: {}", r.error),
                    None => format!("line {line}: {}", r.error),
                };
                note(bar, &text);
            }
        }
        LineOutcome::Refused(why) => note(bar, &format!("line {line}: {why}")),
        _ => {}
    }
}

/// The fatal error for an input that cannot go on. A broken dump names the directory
/// holding the partial restore.
fn fatal(dir: &Path, e: &RestoreError) -> Failure {
    match e {
        RestoreError::Broken { begin, cause } => Failure::new(format!(
            "the restore dump that began at line {begin} {cause}; the database at {} now \
             holds a partial restore: remove it and ingest the whole export into an empty \
             directory",
            dir.display()
        )),
        e => Failure::new(e.to_string()),
    }
}

/// Runs `ingest`.
pub fn ingest(ctx: &Context, args: IngestArgs) -> CmdResult {
    let mut input = Input::open(&args.input)?;
    let db = ctx.open(Durability::Buffered)?;
    let bar = input.bar.clone();
    let mut restore = Restore::new(&db);
    let mut buf = Vec::new();
    let mut bytes = 0u64;
    // The fatal error, and the line the input stopped at (`None`: it ended).
    let stopped: Option<(Failure, Option<u64>)> = loop {
        buf.clear();
        let n = match input.reader.read_until(b'\n', &mut buf) {
            Ok(0) => break None,
            Ok(n) => n,
            Err(e) => {
                let at = restore.line() + 1;
                let why = format!("cannot read {} at line {at}: {e}", input.name);
                break Some((Failure::new(why), Some(at)));
            }
        };
        bytes += n as u64;
        let line = restore.line() + 1;
        bar.set_position(if input.counts_bytes { bytes } else { line });
        match restore.feed(&buf) {
            Ok(outcome) => report_line(&bar, line, &outcome),
            Err(e) => break Some((fatal(&ctx.dir, &e), e.line())),
        }
    };
    bar.finish_and_clear();
    let (applied, rejected) = (restore.applied(), restore.rejected());
    let stopped = stopped.or_else(|| {
        restore
            .finish()
            .err()
            .map(|e| (fatal(&ctx.dir, &e), e.line()))
    });
    // Everything acknowledged becomes durable before anything is reported.
    let flushed = db.flush();
    outln!("{{\"applied\": {applied}, \"rejected\": {rejected}}}");
    if let Some((mut failure, at)) = stopped {
        let counts = format!("{applied} applied, {rejected} refused");
        let tail = match (at, flushed) {
            (Some(at), Ok(())) => format!(
                ". Ingest stopped at line {at}; everything before it is applied and durable \
                 ({counts})"
            ),
            (None, Ok(())) => format!(". Everything ingested is durable ({counts})"),
            (_, Err(e)) => format!(
                ". Making what was applied durable failed too ({e}): the last writes may \
                 be lost ({counts})"
            ),
        };
        failure.message.push_str(&tail);
        return Err(failure);
    }
    if let Err(e) = flushed {
        return Err(Failure::new(format!(
            "cannot make the ingested messages durable: {e}"
        )));
    }
    context::close(db)?;
    if rejected > 0 {
        return Err(Failure {
            code: 2,
            message: if applied == 0 && rejected == 1 {
                "the message was refused (named above)".to_owned()
            } else if applied == 0 {
                format!("all {rejected} messages were refused (each named above)")
            } else {
                format!(
                    "{rejected} of {} messages were refused (each named above); the others \
                     are applied",
                    applied + rejected
                )
            },
        });
    }
    Ok(())
}

/// A writer that remembers its first error (kind and text), so a closed pipe can be told
/// from a real failure after the library has wrapped the error.
struct Watched<W> {
    inner: W,
    error: Option<(std::io::ErrorKind, String)>,
}

impl<W: Write> Watched<W> {
    fn watch<T>(&mut self, r: std::io::Result<T>) -> std::io::Result<T> {
        if let Err(e) = &r {
            self.error.get_or_insert_with(|| (e.kind(), e.to_string()));
        }
        r
    }
}

impl<W: Write> Write for Watched<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let r = self.inner.write(buf);
        self.watch(r)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        let r = self.inner.flush();
        self.watch(r)
    }
}

/// `FILE.tmp` beside `FILE`.
fn temporary(path: &Path) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(".tmp");
    PathBuf::from(name)
}

/// Runs `export`.
pub fn export(ctx: &Context, args: ExportArgs) -> CmdResult {
    #[cfg(feature = "parquet")]
    if args.format == ExportFormat::Parquet {
        return export_parquet(ctx, args);
    }
    if args.since.is_some() {
        return Err(Failure::new(
            "--since is for --format parquet: the JSON-lines export is always whole",
        ));
    }
    let db = ctx.open_existing()?;
    if is_dash(&args.output) {
        let mut out = Watched {
            inner: BufWriter::with_capacity(READ_BUFFER, std::io::stdout().lock()),
            error: None,
        };
        let result = db.export(&mut out);
        let error = out.error.take();
        drop(out);
        return match (result, error) {
            (Ok(_), _) => context::close(db),
            // A reader that went away (`| head`) is not a failure.
            (Err(_), Some((std::io::ErrorKind::BrokenPipe, _))) => context::close(db),
            (Err(_), Some((_, why))) => Err(Failure::new(format!(
                "cannot write to standard output: {why}"
            ))),
            (Err(e), None) => Err(e.into()),
        };
    }
    let path = args.output;
    let tmp = temporary(&path);
    let written = write_file(&db, &tmp);
    let written = written.and_then(|lines| {
        std::fs::rename(&tmp, &path).map_err(|e| {
            Failure::new(format!(
                "cannot rename {} to {}: {e}",
                tmp.display(),
                path.display()
            ))
        })?;
        Ok(lines)
    });
    match written {
        Ok(lines) => {
            context::close(db)?;
            outln!("exported {lines} lines to {}", path.display());
            Ok(())
        }
        Err(failure) => {
            let _ = std::fs::remove_file(&tmp);
            Err(failure)
        }
    }
}

/// Writes the export to `tmp` and makes it durable; returns the number of lines.
fn write_file(db: &ProfileDb, tmp: &Path) -> Result<u64, Failure> {
    let cannot = |e: &dyn std::fmt::Display| {
        Failure::new(format!("cannot write the export to {}: {e}", tmp.display()))
    };
    let file = File::create(tmp).map_err(|e| cannot(&e))?;
    let mut out = BufWriter::with_capacity(READ_BUFFER, file);
    let lines = db.export(&mut out).map_err(|e| cannot(&e))?;
    let file = out.into_inner().map_err(|e| cannot(e.error()))?;
    file.sync_all().map_err(|e| cannot(&e))?;
    Ok(lines)
}

/// Runs `export --format parquet`.
#[cfg(feature = "parquet")]
fn export_parquet(ctx: &Context, args: ExportArgs) -> CmdResult {
    use profiledb::export::parquet::{ParquetOptions, ParquetProgress};
    if is_dash(&args.output) {
        return Err(Failure::new(
            "export --format parquet writes a directory of files: name one (DIR), not `-`",
        ));
    }
    let since = match &args.since {
        Some(text) => Some(
            text.parse::<profiledb::Cursor>()
                .map_err(|e| Failure::new(format!("--since: {e}")))?,
        ),
        None => None,
    };
    let db = ctx.open_existing()?;
    let bar = progress_bar(0, "exporting to Parquet");
    let show = |p: ParquetProgress| {
        bar.set_length(p.total);
        bar.set_position(p.done);
    };
    let mut options = ParquetOptions::new().progress(&show);
    if let Some(since) = since {
        options = options.since(since);
    }
    let started = std::time::Instant::now();
    let report = db.export_parquet(&args.output, options);
    bar.finish_and_clear();
    let report = report.map_err(|e| match &e {
        // The feed cannot serve the cursor: never a silent gap.
        profiledb::Error::CursorExpired { .. } => Failure::new(format!(
            "cannot export what changed since {}: {e}",
            args.since.as_deref().unwrap_or_default()
        )),
        e if e
            .input()
            .is_some_and(|i| i.field == "change_feed" || i.field == "cursor") =>
        {
            Failure::new(format!(
                "cannot export what changed since {}: {e}",
                args.since.as_deref().unwrap_or_default()
            ))
        }
        e => Failure::new(format!(
            "cannot export to {} as Parquet: {e}",
            args.output.display()
        )),
    })?;
    let seconds = started.elapsed().as_secs_f64();
    let feed_on = db.change_feed()?.is_some();
    context::close(db)?;
    for f in &report.files {
        outln!(
            "{:<20} {:>12} rows {:>14} bytes  {}",
            f.table,
            f.rows,
            f.bytes,
            f.path.display()
        );
    }
    let what = match report.since {
        Some(c) => format!("changes after {c}"),
        None => "full".to_owned(),
    };
    outln!(
        "run {} ({what}): {} rows, {} bytes in {} files at commit {} in {seconds:.1} s; \
         manifest {}",
        report.run,
        report.rows(),
        report.bytes(),
        report.files.len(),
        report.commit,
        report.manifest.display()
    );
    outln!("next cursor: {}", report.cursor);
    if !feed_on {
        outln!(
            "the change feed is off: `--since {}` needs `profiledb feed on` first (and then \
             a full export, whose cursor the feed starts from)",
            report.cursor
        );
    }
    Ok(())
}
