//! toml and serde errors rephrased for the person editing the file: the reason first, in
//! the config's own words (`unknown key "regoin" in [aws] at line 3, column 1; did you mean
//! "region"?`, `expected a whole number`, not `u32`), then toml's picture of the line.

/// One line with the reason and the place, then the snippet of the offending line.
pub(super) fn describe(err: &toml::de::Error, text: &str) -> String {
    let message = err.message();
    let Some(span) = err.span() else {
        return message.to_string();
    };
    let place = Place::of(text, span.start);
    let first = rephrase(message, &place).unwrap_or_else(|| match &place.key {
        Some(key) => format!("{} at {}: {message}", place.full_key(key), place.at()),
        None => format!("{message} (at {})", place.at()),
    });
    let snippet = snippet(&err.to_string(), message);
    if snippet.is_empty() {
        first
    } else {
        format!("{first}\n{snippet}")
    }
}

/// Where in the file an error points.
struct Place {
    line: usize,
    column: usize,
    /// The table the line belongs to, as written (`[aws]`, `[[policy]]`); `None` at the top.
    table: Option<String>,
    /// The key of a `key = value` line.
    key: Option<String>,
    /// The error points into a table header (`[awz]`).
    in_header: bool,
}

impl Place {
    fn of(text: &str, offset: usize) -> Place {
        let offset = offset.min(text.len());
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        let this_line = text[line_start..].lines().next().unwrap_or_default().trim();
        let in_header = this_line.starts_with('[');
        let table = text[..line_start]
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| l.starts_with('['))
            .map(|l| l.split('#').next().unwrap_or(l).trim().to_string());
        let key = (!in_header)
            .then(|| this_line.split_once('='))
            .flatten()
            .map(|(k, _)| k.trim().trim_matches('"').to_string())
            .filter(|k| !k.is_empty());
        Place {
            line,
            column,
            table,
            key,
            in_header,
        }
    }

    fn at(&self) -> String {
        format!("line {}, column {}", self.line, self.column)
    }

    /// `aws.max_attempts`, `policy.schedule`, or the key alone at the top.
    fn full_key(&self, key: &str) -> String {
        match &self.table {
            Some(t) => format!("{}.{key}", t.trim_matches(|c| c == '[' || c == ']')),
            None => key.to_string(),
        }
    }

    fn table_text(&self) -> String {
        match &self.table {
            Some(t) => format!(" in {t}"),
            None => " at the top level".into(),
        }
    }
}

/// The serde messages toml passes on, in the user's words; `None` for anything else (a
/// message autosnap wrote itself is already in them).
fn rephrase(message: &str, place: &Place) -> Option<String> {
    if let Some(rest) = message.strip_prefix("unknown field ") {
        let (name, expected) = rest.split_once(", expected ").unwrap_or((rest, ""));
        let name = unquote(name.split(',').next().unwrap_or(name));
        let candidates = backticked(expected);
        let (what, shown) = if place.in_header {
            ("section", format!("[{name}]"))
        } else {
            ("key", format!("\"{name}\""))
        };
        let mut line = format!("unknown {what} {shown}");
        match &place.key {
            // Inside an inline table: `select = [{ tag = … }]`.
            Some(key) if *key != name => line.push_str(&format!(" in {}", place.full_key(key))),
            _ if !place.in_header => line.push_str(&place.table_text()),
            _ => {}
        }
        line.push_str(&format!(" at {}", place.at()));
        match closest(&name, &candidates) {
            Some(c) if place.in_header => line.push_str(&format!("; did you mean [{c}]?")),
            Some(c) => line.push_str(&format!("; did you mean \"{c}\"?")),
            None if !candidates.is_empty() => {
                line.push_str(&format!("; expected one of: {}", candidates.join(", ")))
            }
            None => {}
        }
        return Some(line);
    }
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        let (value, expected) = rest.split_once(", expected ").unwrap_or((rest, ""));
        let value = unquote(value);
        let candidates = backticked(expected);
        let what = match &place.key {
            Some(key) => format!("{} at {}", place.full_key(key), place.at()),
            None => format!("the value at {}", place.at()),
        };
        let mut line = format!("{what}: unknown value \"{value}\"");
        match closest(&value, &candidates) {
            Some(c) => line.push_str(&format!("; did you mean \"{c}\"?")),
            None if !candidates.is_empty() => {
                line.push_str(&format!("; expected one of: {}", candidates.join(", ")))
            }
            None => {}
        }
        return Some(line);
    }
    if let Some(rest) = message.strip_prefix("missing field ") {
        return Some(format!(
            "missing key \"{}\"{} (the table at {})",
            unquote(rest),
            place
                .table
                .as_deref()
                .map(|t| format!(" in {t}"))
                .unwrap_or_default(),
            place.at()
        ));
    }
    let rest = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "))?;
    let (found, expected) = rest.rsplit_once(", expected ")?;
    let what = match &place.key {
        Some(key) => format!("{} at {}", place.full_key(key), place.at()),
        None => format!("the value at {}", place.at()),
    };
    Some(format!(
        "{what}: expected {}, found {}",
        expected_in_words(expected),
        found_in_words(found)
    ))
}

/// serde's names of Rust types, as the config's reader knows them.
fn expected_in_words(expected: &str) -> String {
    match expected {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a whole number (0 or more)".into(),
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number".into(),
        "f32" | "f64" => "a number".into(),
        "a boolean" => "true or false".into(),
        "a string" => "a string in quotes".into(),
        "a map" => "a table such as { Key = \"value\" }".into(),
        "a sequence" => "a list such as [\"a\", \"b\"]".into(),
        other if other.starts_with("struct ") => "a table".into(),
        other => other.replace('`', "\""),
    }
}

/// serde's `string "five"`, `integer `1``, … as `the string "five"`, `the number 1`.
fn found_in_words(found: &str) -> String {
    let found = found.replace('`', "");
    if let Some(v) = found.strip_prefix("floating point ") {
        return format!("the number {v}");
    }
    match found.split_once(' ') {
        Some(("string", v)) => format!("the string {v}"),
        Some(("integer", v)) => format!("the number {v}"),
        Some(("boolean", v)) => v.to_string(),
        _ if found == "map" => "a table".into(),
        _ if found == "sequence" => "a list".into(),
        _ => found,
    }
}

fn unquote(s: &str) -> String {
    s.trim().trim_matches('`').to_string()
}

/// The `name`s in "`a`, `b` or `c`".
fn backticked(s: &str) -> Vec<String> {
    s.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// The candidate `name` was most likely meant to be: at most two edits away (three for
/// long names).
fn closest(name: &str, candidates: &[String]) -> Option<String> {
    let limit = if name.len() >= 8 { 3 } else { 2 };
    candidates
        .iter()
        .map(|c| (strsim::levenshtein(name, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.clone())
}

/// toml's picture of the line (the `N | text` and `^^^` lines), without its header line
/// and without the raw message that [`describe`] replaced.
fn snippet(display: &str, message: &str) -> String {
    display
        .lines()
        .skip(1)
        .filter(|l| l.trim() != message.trim() && !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Aws {
        region: Option<String>,
        max_attempts: Option<u32>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct File {
        aws: Option<Aws>,
        copy: Option<bool>,
    }

    fn first_line(text: &str) -> String {
        let err = toml::from_str::<File>(text).unwrap_err();
        let described = describe(&err, text);
        described.lines().next().unwrap().to_string()
    }

    #[test]
    fn unknown_keys_and_sections_are_named_with_the_likely_one() {
        assert_eq!(
            first_line("# x\n[aws]\nregoin = \"us-east-1\"\n"),
            "unknown key \"regoin\" in [aws] at line 3, column 1; did you mean \"region\"?"
        );
        assert_eq!(
            first_line("[awz]\n"),
            "unknown section [awz] at line 1, column 2; did you mean [aws]?"
        );
        assert_eq!(
            first_line("[aws]\nzzz = 1\n"),
            "unknown key \"zzz\" in [aws] at line 2, column 1; expected one of: region, max_attempts"
        );
    }

    #[test]
    fn type_errors_speak_the_users_language() {
        assert_eq!(
            first_line("[aws]\nmax_attempts = \"five\"\n"),
            "aws.max_attempts at line 2, column 16: expected a whole number (0 or more), found \
             the string \"five\""
        );
        assert_eq!(
            first_line("[aws]\nmax_attempts = -1\n"),
            "aws.max_attempts at line 2, column 16: expected a whole number (0 or more), found \
             the number -1"
        );
        assert_eq!(
            first_line("copy = \"yes\"\n"),
            "copy at line 1, column 8: expected true or false, found the string \"yes\""
        );
        assert_eq!(
            first_line("[aws]\nregion = 1\n"),
            "aws.region at line 2, column 10: expected a string in quotes, found the number 1"
        );
    }

    #[test]
    fn the_snippet_follows_the_reason() {
        let text = "[aws]\nregoin = 1\n";
        let err = toml::from_str::<File>(text).unwrap_err();
        let described = describe(&err, text);
        let lines: Vec<&str> = described.lines().collect();
        assert!(lines.len() >= 3, "{described}");
        assert!(
            lines[1..].iter().any(|l| l.contains("regoin = 1")),
            "{described}"
        );
        assert!(!described.contains("unknown field"), "{described}");
    }
}
