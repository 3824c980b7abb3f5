//! How commands speak: standard output that survives a closed pipe, JSON printing, and
//! the one error type every command returns (a sentence and an exit code).

use std::io::Write;
use std::sync::Mutex;

/// Prints one line on standard output (see [`write_line`]).
macro_rules! outln {
    () => {
        $crate::output::write_line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::output::write_line(format_args!($($arg)*))
    };
}

/// Why a command failed: printed as `error: <message>` on stderr, then the process exits
/// with `code`.
#[derive(Debug)]
pub struct Failure {
    /// The exit code: 1 for fatal errors (2 is clap's, for usage errors).
    pub code: u8,
    /// One sentence naming the cause.
    pub message: String,
}

impl Failure {
    /// A fatal failure (exit 1).
    pub fn new(message: impl Into<String>) -> Failure {
        Failure {
            code: 1,
            message: message.into(),
        }
    }
}

impl From<profiledb::Error> for Failure {
    fn from(e: profiledb::Error) -> Failure {
        Failure::new(e.to_string())
    }
}

/// What every command returns.
pub type CmdResult = Result<(), Failure>;

/// The first error writing to standard output; later writes are skipped.
static STDOUT_ERROR: Mutex<Option<std::io::Error>> = Mutex::new(None);

/// Writes one line to standard output. A write error (a reader that went away, a full
/// disk) is remembered and reported by [`finish`] instead of panicking as `println!`
/// does; nothing more is written after it.
pub fn write_line(args: std::fmt::Arguments<'_>) {
    let mut slot = STDOUT_ERROR
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if slot.is_some() {
        return;
    }
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        *slot = Some(e);
    }
}

/// Flushes standard output and reports a write failure. A closed pipe is not a failure:
/// `profiledb people | head` is a normal way to read the first lines.
pub fn finish() -> CmdResult {
    let flushed = std::io::stdout().lock().flush();
    let mut slot = STDOUT_ERROR
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let error = slot.take().or(flushed.err());
    match error {
        Some(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Some(e) => Err(Failure::new(format!(
            "cannot write to standard output: {e}"
        ))),
        None => Ok(()),
    }
}

/// Prints `value` as pretty JSON on standard output.
pub fn print_json(value: &serde_json::Value) -> CmdResult {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Failure::new(format!("cannot print JSON: {e}")))?;
    outln!("{text}");
    Ok(())
}

/// A value for a human table cell: the text, or `-` when there is none.
pub fn or_dash(v: Option<&str>) -> &str {
    v.unwrap_or("-")
}

/// A unix time for humans: `2026-01-01 00:00:00 UTC`, or the number when it is out of
/// the calendar's range.
pub fn time(t: i64) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    match civil_from_days(days) {
        Some((y, m, d)) => format!(
            "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
            secs / 3600,
            (secs % 3600) / 60,
            secs % 60
        ),
        None => t.to_string(),
    }
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// algorithm), for years 0 to 9999.
fn civil_from_days(days: i64) -> Option<(i64, i64, i64)> {
    let z = days.checked_add(719_468)?;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (0..=9999).contains(&y).then_some((y, m, d))
}

/// A progress bar on stderr when stderr is a terminal; hidden otherwise, so logs and
/// pipes get no control characters.
pub fn progress_bar(total: u64, what: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg:<28} [{bar:32}] {pos}/{len} {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_owned());
    bar
}

/// A spinner counting `what` on stderr when stderr is a terminal (for a total that is not
/// known in advance); hidden otherwise.
pub fn progress_spinner(what: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new_spinner();
    if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {msg} {pos}") {
        bar.set_style(style);
    }
    bar.set_message(what.to_owned());
    bar
}

#[cfg(test)]
mod tests {
    use super::time;

    #[test]
    fn times_print_as_utc_dates() {
        assert_eq!(time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(time(1_767_225_600), "2026-01-01 00:00:00 UTC");
        assert_eq!(time(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(time(-1), "1969-12-31 23:59:59 UTC");
        assert_eq!(time(i64::MAX), i64::MAX.to_string());
        assert_eq!(time(i64::MIN), i64::MIN.to_string());
    }
}
