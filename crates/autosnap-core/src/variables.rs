//! Variables in policy tag values and descriptions: `$(name)`, `$(tag:Team)`, …, expanded
//! per target when a backup is planned.
//!
//! | variable | value |
//! | --- | --- |
//! | `$(tag:KEY)` | the target's tag `KEY`; empty when the target has no such tag |
//! | `$(name)` | the target's name (its `Name` tag), or its id when it has none |
//! | `$(volume-id)` | the volume's id for a volume target; empty for an instance |
//! | `$(instance-id)` | the instance's id for an instance target; empty for a volume |
//! | `$(target-id)` | the target's id, volume or instance |
//! | `$(policy)` | the policy's name |
//! | `$(region)` | the target's region |
//! | `$(date)` | `now` as `YYYY-MM-DD` (UTC) |
//! | `$(time)` | `now` as `HHMMSS` (UTC) |
//!
//! A `$` that is not followed by `(` is plain text; there is no escape for a literal `$(`.
//! [`check_template`] rejects unknown names and an unclosed `$(`, so the config is checked
//! before anything runs; [`expand`] never fails.

use chrono::{DateTime, Utc};

use crate::plan::Target;
use crate::policy::ResourceKind;

/// The longest value EC2 accepts for a tag; [`expand`] cuts its result to this many characters.
pub const MAX_TAG_VALUE_CHARS: usize = 256;

/// The variable names, for messages.
const KNOWN: &str = "$(tag:KEY), $(name), $(volume-id), $(instance-id), $(target-id), \
                     $(policy), $(region), $(date) or $(time)";

/// What is wrong with a template. Every message quotes the template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VariableError {
    #[error("unknown variable \"$({name})\" in {template:?}: use {KNOWN}")]
    Unknown { name: String, template: String },
    #[error("{template:?} has a \"$(\" without a closing \")\"")]
    Unclosed { template: String },
    #[error("\"$(tag:)\" in {template:?} names no tag: write $(tag:KEY), e.g. $(tag:Team)")]
    EmptyTagKey { template: String },
}

/// Everything a template can refer to.
#[derive(Debug, Clone, Copy)]
pub struct VarContext<'a> {
    pub policy: &'a str,
    pub region: &'a str,
    pub target: &'a Target,
    pub now: DateTime<Utc>,
}

/// One variable of a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variable<'t> {
    Tag(&'t str),
    Name,
    VolumeId,
    InstanceId,
    TargetId,
    Policy,
    Region,
    Date,
    Time,
}

/// A template cut into text and variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece<'t> {
    Text(&'t str),
    Var(Variable<'t>),
}

fn variable(name: &str) -> Option<Variable<'_>> {
    if let Some(key) = name.strip_prefix("tag:") {
        return Some(Variable::Tag(key));
    }
    Some(match name {
        "name" => Variable::Name,
        "volume-id" => Variable::VolumeId,
        "instance-id" => Variable::InstanceId,
        "target-id" => Variable::TargetId,
        "policy" => Variable::Policy,
        "region" => Variable::Region,
        "date" => Variable::Date,
        "time" => Variable::Time,
        _ => return None,
    })
}

/// Cuts `template` into pieces, or says what is wrong with it.
fn pieces(template: &str) -> Result<Vec<Piece<'_>>, VariableError> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("$(") {
        if start > 0 {
            out.push(Piece::Text(&rest[..start]));
        }
        let after = &rest[start + 2..];
        let Some(end) = after.find(')') else {
            return Err(VariableError::Unclosed {
                template: template.to_owned(),
            });
        };
        let name = &after[..end];
        match variable(name) {
            Some(Variable::Tag("")) => {
                return Err(VariableError::EmptyTagKey {
                    template: template.to_owned(),
                })
            }
            Some(var) => out.push(Piece::Var(var)),
            None => {
                return Err(VariableError::Unknown {
                    name: name.to_owned(),
                    template: template.to_owned(),
                })
            }
        }
        rest = &after[end + 1..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest));
    }
    Ok(out)
}

/// Checks that every `$(…)` in `s` is closed and names a known variable.
pub fn check_template(s: &str) -> Result<(), VariableError> {
    pieces(s).map(|_| ())
}

/// Whether `s` uses any variable (a `$(`).
pub fn has_variables(s: &str) -> bool {
    s.contains("$(")
}

/// Replaces the variables in `s`, cutting the result to [`MAX_TAG_VALUE_CHARS`] characters.
///
/// A template that [`check_template`] rejects is returned as it is (cut to length): check
/// templates when the config is loaded.
pub fn expand(s: &str, ctx: &VarContext) -> String {
    let mut out = String::with_capacity(s.len());
    match pieces(s) {
        Ok(pieces) => {
            for piece in pieces {
                match piece {
                    Piece::Text(text) => out.push_str(text),
                    Piece::Var(var) => push_value(&mut out, var, ctx),
                }
            }
        }
        Err(_) => out.push_str(s),
    }
    truncate_chars(out, MAX_TAG_VALUE_CHARS)
}

fn push_value(out: &mut String, var: Variable<'_>, ctx: &VarContext) {
    let target = ctx.target;
    match var {
        Variable::Tag(key) => {
            if let Some(value) = target.tags.get(key) {
                out.push_str(value);
            }
        }
        Variable::Name => out.push_str(target.display_name()),
        Variable::VolumeId => {
            if target.kind == ResourceKind::Volume {
                out.push_str(&target.id);
            }
        }
        Variable::InstanceId => {
            if target.kind == ResourceKind::Instance {
                out.push_str(&target.id);
            }
        }
        Variable::TargetId => out.push_str(&target.id),
        Variable::Policy => out.push_str(ctx.policy),
        Variable::Region => out.push_str(ctx.region),
        Variable::Date => out.push_str(&ctx.now.format("%Y-%m-%d").to_string()),
        Variable::Time => out.push_str(&ctx.now.format("%H%M%S").to_string()),
    }
}

/// `s` cut to at most `max` characters (not bytes).
pub(crate) fn truncate_chars(mut s: String, max: usize) -> String {
    if let Some((index, _)) = s.char_indices().nth(max) {
        s.truncate(index);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tags::Tags;
    use chrono::TimeZone;

    fn volume() -> Target {
        Target {
            id: "vol-0123abcd".into(),
            kind: ResourceKind::Volume,
            region: "us-east-1".into(),
            tags: Tags::from([
                ("Team".to_owned(), "db".to_owned()),
                ("Name".to_owned(), "pg-data".to_owned()),
            ]),
            name: Some("pg-data".into()),
            volume_ids: Vec::new(),
        }
    }

    fn instance() -> Target {
        Target {
            id: "i-0123abcd".into(),
            kind: ResourceKind::Instance,
            region: "eu-west-1".into(),
            tags: Tags::new(),
            name: None,
            volume_ids: vec!["vol-0123abcd".into()],
        }
    }

    fn expand_for(template: &str, target: &Target) -> String {
        let ctx = VarContext {
            policy: "prod-daily",
            region: &target.region,
            target,
            now: Utc.with_ymd_and_hms(2026, 1, 3, 3, 4, 5).unwrap(),
        };
        expand(template, &ctx)
    }

    #[test]
    fn every_variable_for_a_volume() {
        let v = volume();
        for (template, expected) in [
            ("$(tag:Team)", "db"),
            ("$(tag:Missing)", ""),
            ("$(name)", "pg-data"),
            ("$(volume-id)", "vol-0123abcd"),
            ("$(instance-id)", ""),
            ("$(target-id)", "vol-0123abcd"),
            ("$(policy)", "prod-daily"),
            ("$(region)", "us-east-1"),
            ("$(date)", "2026-01-03"),
            ("$(time)", "030405"),
            (
                "backup of $(name) [$(tag:Team)] at $(date)T$(time)",
                "backup of pg-data [db] at 2026-01-03T030405",
            ),
            ("no variables, $5 and $ (x)", "no variables, $5 and $ (x)"),
            ("", ""),
        ] {
            assert_eq!(expand_for(template, &v), expected, "{template}");
        }
    }

    #[test]
    fn instance_without_name_uses_its_id() {
        let i = instance();
        assert_eq!(expand_for("$(name)", &i), "i-0123abcd");
        assert_eq!(expand_for("$(volume-id)", &i), "");
        assert_eq!(
            expand_for("$(instance-id)/$(region)", &i),
            "i-0123abcd/eu-west-1"
        );
    }

    #[test]
    fn values_are_cut_to_256_characters() {
        let mut v = volume();
        v.tags.insert("Long".into(), "é".repeat(300));
        let value = expand_for("$(tag:Long)", &v);
        assert_eq!(value.chars().count(), 256);
    }

    #[test]
    fn checks_templates() {
        assert_eq!(check_template("$(name)-$(tag:Team)"), Ok(()));
        assert_eq!(check_template("plain"), Ok(()));
        let unknown = check_template("$(hostname)").unwrap_err();
        assert_eq!(
            unknown.to_string(),
            "unknown variable \"$(hostname)\" in \"$(hostname)\": use $(tag:KEY), $(name), \
             $(volume-id), $(instance-id), $(target-id), $(policy), $(region), $(date) or $(time)"
        );
        assert_eq!(
            check_template("x $(name").unwrap_err().to_string(),
            "\"x $(name\" has a \"$(\" without a closing \")\""
        );
        assert!(matches!(
            check_template("$(tag:)"),
            Err(VariableError::EmptyTagKey { .. })
        ));
        assert!(matches!(
            check_template("$(Name)"),
            Err(VariableError::Unknown { .. })
        ));
    }
}
