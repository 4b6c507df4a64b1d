//! Rendering results: human tables or stable JSON on standard output. Logs
//! and progress go to standard error, so output can always be piped.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};
use comfy_table::{presets, ContentArrangement, Table};
use serde::Serialize;

use crate::cli::OutputFormat;

/// Writes to standard output; a closed pipe (`autosnap … | head`) ends the
/// process quietly instead of panicking.
pub fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    let result = out
        .write_all(text.as_bytes())
        .and_then(|_| {
            if text.ends_with('\n') {
                Ok(())
            } else {
                out.write_all(b"\n")
            }
        })
        .and_then(|_| out.flush());
    if let Err(e) = result {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

/// Pretty JSON, one document per command.
pub fn print_json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    print(&serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A borderless table in the style of `kubectl get`.
pub fn table<I, S>(headers: I) -> Table
where
    I: IntoIterator<Item = S>,
    S: Into<comfy_table::Cell>,
{
    let mut t = Table::new();
    t.load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(headers);
    // comfy-table pads cells with one space on each side; drop the left
    // padding so the first column starts at the margin.
    for col in t.column_iter_mut() {
        col.set_padding((0, 2));
    }
    t
}

pub fn print_table(t: &Table) {
    let text = t.to_string();
    let trimmed: Vec<&str> = text.lines().map(str::trim_end).collect();
    print(&trimmed.join("\n"));
}

/// Prints either the table or the JSON.
pub fn emit<T: Serialize + ?Sized>(
    format: OutputFormat,
    value: &T,
    table: impl FnOnce() -> Table,
) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json => print_json(value),
        // `-o prometheus` is refused before any command other than `status` runs.
        OutputFormat::Table | OutputFormat::Prometheus => {
            print_table(&table());
            Ok(())
        }
    }
}

pub fn time(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| "-".into())
}

/// A short age such as `45s`, `12min`, `3h`, `6d` (in the duration grammar, so it can be
/// pasted into `--older-than`).
pub fn age(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    let Some(t) = t else { return "-".into() };
    let secs = (now - t).num_seconds();
    if secs < 0 {
        return "in future".into();
    }
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}min", s / 60),
        s if s < 2 * 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

pub fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref()
        .map(ToString::to_string)
        .unwrap_or_else(|| "-".into())
}

pub fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// Whether `-o json` is in effect for this process. Set once in `main`, so
/// that messages printed far from the command's `Env` (errors, an
/// interrupted wait) follow it too.
static JSON_MODE: AtomicBool = AtomicBool::new(false);

pub fn set_json_mode(on: bool) {
    JSON_MODE.store(on, Ordering::Relaxed);
}

pub fn json_mode() -> bool {
    JSON_MODE.load(Ordering::Relaxed)
}

/// The error object of `-o json`, on one line (docs/json-output.md).
pub fn error_object(kind: &str, message: &str, resource: Option<&str>) -> String {
    serde_json::json!({
        "error": { "kind": kind, "message": message, "resource": resource }
    })
    .to_string()
}

/// Reports an error on standard error: `error: MESSAGE` for people, or with
/// `-o json` the error object, one line a script can parse.
pub fn report_error(kind: &str, message: &str, resource: Option<&str>) {
    if json_mode() {
        eprintln!("{}", error_object(kind, message, resource));
    } else {
        eprintln!("error: {message}");
    }
}

/// A summary saying that some items failed (their reasons are in the
/// output): as is for people, an error object of kind `failed` with
/// `-o json`, so a script finds it where it finds every error.
pub fn report_failed_items(message: &str) {
    if json_mode() {
        eprintln!("{}", error_object("failed", message, None));
    } else {
        eprintln!("{message}");
    }
}

/// Names fields of the output in a hint such as "see REASON": the table's
/// columns in table mode, the JSON fields with `-o json` (where there are no
/// columns to see).
pub fn field_hint(columns: &[&str]) -> String {
    if json_mode() {
        let fields: Vec<String> = columns
            .iter()
            .map(|c| format!("`{}`", c.to_lowercase()))
            .collect();
        format!("{} in the output", fields.join(" and "))
    } else {
        columns.join(" and ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn ages_read_naturally() {
        let now = Utc.with_ymd_and_hms(2026, 1, 10, 12, 0, 0).unwrap();
        let at = |s: i64| Some(now - chrono::Duration::seconds(s));
        assert_eq!(age(at(30), now), "30s");
        assert_eq!(age(at(600), now), "10min");
        assert_eq!(age(at(3 * 3600), now), "3h");
        assert_eq!(age(at(5 * 86400), now), "5d");
        assert_eq!(age(None, now), "-");
        assert_eq!(age(at(-10), now), "in future");
    }
}
