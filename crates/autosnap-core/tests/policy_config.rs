//! `[[policy]]` in the config file: the documented example parses, `config show` round-trips,
//! and every mistake gets a message naming the policy and the field.

use std::path::Path;

use autosnap_core::config::{ConfigError, ConfigFile};
use autosnap_core::policy::{validate_policies, PolicyConfig, ResourceKind};
use autosnap_core::retention::Count;

fn parse(text: &str) -> Result<ConfigFile, ConfigError> {
    ConfigFile::parse(text, Path::new("autosnap.toml"))
}

const EXAMPLE: &str = r#"
[aws]
region = "us-east-1"

[[policy]]
name = "prod-daily"
resource = "volume"
select = [{ tags = { Backup = "daily", Env = "prod" } }]
exclude = { tags = { NoBackup = "true" }, ids = ["vol-0123456789abcdef0"] }
schedule = "0 3 * * *"
timezone = "Europe/Berlin"
retain = { last = 3, daily = 7, weekly = 4, monthly = 12, within = "2d" }
tags = { Team = "$(tag:Team)", Source = "$(volume-id)" }
copy = [{ region = "us-west-2", kms_key = "alias/backup", retain = { daily = 30 } }]
regions = ["us-east-1"]
description = "$(policy) backup of $(name)"

[[policy]]
name = "db-sets"
resource = "instance"
select = [{ tags = { Role = "db" } }, { tags = { Critical = "*" } }]
exclude_boot = true
schedule = "6h"
retain = { last = 4, daily = 7 }
"#;

#[test]
fn the_documented_example_parses() {
    let config = parse(EXAMPLE).unwrap();
    assert_eq!(config.policies.len(), 2);
    let p = &config.policies[0];
    assert_eq!(p.name, "prod-daily");
    assert_eq!(p.resource, ResourceKind::Volume);
    assert_eq!(p.select[0].tags["Env"], "prod");
    assert_eq!(p.exclude.ids, ["vol-0123456789abcdef0"]);
    assert_eq!(p.schedule.to_string(), "0 3 * * *");
    assert_eq!(p.tz().name(), "Europe/Berlin");
    assert_eq!(p.retain.daily, Count::N(7));
    assert_eq!(p.copy[0].kms_key.as_deref(), Some("alias/backup"));
    assert_eq!(p.copy_retention(&p.copy[0]).to_string(), "keep daily 30");
    assert_eq!(p.regions_or("eu-west-1"), ["us-east-1"]);
    let sets = &config.policies[1];
    assert_eq!(sets.resource, ResourceKind::Instance);
    assert!(sets.exclude_boot);
    assert_eq!(sets.regions_or("us-east-1"), ["us-east-1"]);
    assert_eq!(sets.tz().name(), "UTC");
    assert_eq!(config.policy("db-sets"), Some(sets));
}

#[test]
fn config_show_round_trips() {
    let config = parse(EXAMPLE).unwrap();
    let shown = toml::to_string(&config).unwrap();
    assert!(shown.contains("[[policy]]"), "{shown}");
    assert!(shown.contains("schedule = \"0 3 * * *\""), "{shown}");
    assert!(!shown.contains("exclude_boot = false"), "{shown}");
    let again = parse(&shown).unwrap_or_else(|e| panic!("{e}\n{shown}"));
    assert_eq!(again, config);
    // JSON too (config show -o json).
    let json = serde_json::to_value(&config).unwrap();
    assert_eq!(json["policy"][0]["retain"]["daily"], 7);
    assert_eq!(json["policy"][1]["schedule"], "6h");
}

/// A valid volume policy; each case below changes or adds one line.
fn policy_with(extra: &str) -> String {
    let mut lines = vec![
        "[aws]",
        "region = \"us-east-1\"",
        "[[policy]]",
        "name = \"prod-daily\"",
        "resource = \"volume\"",
        "select = [{ tags = { Backup = \"daily\" } }]",
        "schedule = \"0 3 * * *\"",
        "retain = { daily = 7 }",
    ];
    // A second table is appended as it is.
    if extra.starts_with("[[") {
        return lines.join("\n") + "\n" + extra + "\n";
    }
    // A line `key = …` in `extra` replaces the base line with the same key.
    for line in extra.lines().filter(|l| !l.trim().is_empty()) {
        let key = line.split('=').next().unwrap().trim();
        if let Some(at) = lines
            .iter()
            .position(|l| l.split('=').next().unwrap().trim() == key && !l.starts_with('['))
        {
            lines.remove(at);
        }
        lines.push(line);
    }
    lines.join("\n") + "\n"
}

#[test]
fn the_base_of_the_bad_cases_is_valid() {
    parse(&policy_with("")).unwrap();
}

#[test]
fn every_mistake_names_the_policy_and_the_field() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "freeze timeout below the minimum",
            "resource = \"instance\"\nconsistency = { freeze = [\"/data\"], freeze_timeout = \"500ms\" }",
            &["policy \"prod-daily\": consistency.freeze_timeout is \"500ms\": give at least 1s"],
        ),
        (
            "freeze timeout that does not parse",
            "resource = \"instance\"\nconsistency = { freeze = [\"/data\"], freeze_timeout = \"ten\" }",
            &["policy \"prod-daily\": consistency.freeze_timeout is \"ten\": invalid duration \"ten\""],
        ),
        (
            "hook timeout with a bare m",
            "resource = \"instance\"\nconsistency = { pre = [\"true\"], hook_timeout = \"2m\" }",
            &["policy \"prod-daily\": consistency.hook_timeout is \"2m\": \"2m\" is ambiguous: write 2min for minutes or 2mo for months"],
        ),
        (
            "freeze timeout in months",
            "resource = \"instance\"\nconsistency = { freeze = [\"/data\"], freeze_timeout = \"1mo\" }",
            &["consistency.freeze_timeout is \"1mo\": duration \"1mo\" has months or years"],
        ),
        (
            "schedule with a bare m",
            "schedule = \"30m\"",
            &["\"30m\" is ambiguous: write 30min for minutes or 30mo for months", "(in policy \"prod-daily\")"],
        ),
        (
            "freeze timeout of zero",
            "resource = \"instance\"\nconsistency = { freeze = [\"/data\"], freeze_timeout = \"0s\" }",
            &["policy \"prod-daily\": consistency.freeze_timeout is \"0s\": give at least 1s"],
        ),
        (
            "hook timeout of zero",
            "resource = \"instance\"\nconsistency = { pre = [\"true\"], hook_timeout = \"0s\" }",
            &["consistency.hook_timeout", "give at least 1s"],
        ),
        (
            "bad cron",
            "schedule = \"0 3 * *\"",
            &[
                "schedule \"0 3 * *\" is not a cron expression (a cron expression has 5 fields",
                "or an interval like \"6h\"",
                "line 8",
                "(in policy \"prod-daily\")",
            ],
        ),
        (
            "bad interval",
            "schedule = \"6x\"",
            &["schedule \"6x\" is not a cron expression like", "(in policy \"prod-daily\")"],
        ),
        (
            "cron that never fires",
            "schedule = \"0 0 30 2 *\"",
            &["schedule \"0 0 30 2 *\" never fires", "(in policy \"prod-daily\")"],
        ),
        (
            "unknown variable",
            "tags = { Team = \"$(tag:Team)\", Host = \"$(hostname)\" }",
            &[
                "policy \"prod-daily\": tags.Host has unknown variable \"$(hostname)\" in \
                 \"$(hostname)\": use $(tag:KEY), $(name),",
            ],
        ),
        (
            "unclosed variable",
            "description = \"backup of $(name\"",
            &["policy \"prod-daily\": description has \"backup of $(name\" has a \"$(\" without a closing \")\""],
        ),
        (
            "empty retention",
            "retain = {}",
            &["policy \"prod-daily\": retain is invalid: the retention policy is empty"],
        ),
        (
            "retention of zeros is empty",
            "retain = { daily = 0, within = \"0d\" }",
            &["policy \"prod-daily\": retain is invalid: the retention policy is empty"],
        ),
        (
            "negative count",
            "retain = { daily = -1 }",
            &["counts cannot be negative", "line 8", "(in policy \"prod-daily\")"],
        ),
        (
            "duplicate names",
            "[[policy]]\nname = \"prod-daily\"\nresource = \"instance\"\nselect = [{ tags = { A = \"1\" } }]\nschedule = \"1d\"\nretain = { last = 1 }",
            &["policy \"prod-daily\": name is used by another policy: policy names must be unique"],
        ),
        (
            "copy to a region the policy backs up",
            "copy = [{ region = \"us-east-1\" }]",
            &["policy \"prod-daily\": copy[0].region is \"us-east-1\", a region this policy backs up"],
        ),
        (
            "copy to one of several source regions",
            "regions = [\"eu-west-1\", \"eu-central-1\"]\ncopy = [{ region = \"eu-central-1\" }]",
            &["policy \"prod-daily\": copy[0].region is \"eu-central-1\", a region this policy backs up"],
        ),
        (
            "two copy rules for one region",
            "copy = [{ region = \"us-west-2\" }, { region = \"us-west-2\", retain = { last = 1 } }]",
            &["policy \"prod-daily\": copy[1].region \"us-west-2\" has more than one copy rule"],
        ),
        (
            "copy region that is not a region",
            "copy = [{ region = \"US-WEST-2\" }]",
            &["policy \"prod-daily\": copy[0].region 'US-WEST-2' is not an AWS region name; did you mean us-west-2?"],
        ),
        (
            "empty copy retention",
            "copy = [{ region = \"us-west-2\", retain = {} }]",
            &["policy \"prod-daily\": copy[0].retain is invalid: the retention policy is empty"],
        ),
        (
            "empty kms key",
            "copy = [{ region = \"us-west-2\", kms_key = \" \" }]",
            &["policy \"prod-daily\": copy[0].kms_key is empty"],
        ),
        (
            "exclude_boot on a volume policy",
            "exclude_boot = true",
            &["policy \"prod-daily\": exclude_boot only applies to instance policies"],
        ),
        (
            "unknown field",
            "retian = { daily = 7 }",
            &["unknown key \"retian\" in [[policy]] at line 9", "did you mean \"retain\"?", "(in policy \"prod-daily\")"],
        ),
        (
            "unknown field in a selector",
            "select = [{ tag = { Backup = \"daily\" } }]",
            &["unknown key \"tag\" in policy.select", "did you mean \"tags\"?", "(in policy \"prod-daily\")"],
        ),
        (
            "unknown resource",
            "resource = \"bucket\"",
            &["policy.resource at line", "unknown value \"bucket\"; expected one of: volume, instance", "(in policy \"prod-daily\")"],
        ),
        (
            "bad timezone",
            "timezone = \"Europe/Berlinn\"",
            &["policy \"prod-daily\": timezone \"Europe/Berlinn\" is not an IANA time zone name"],
        ),
        (
            "timezone with an interval",
            "schedule = \"6h\"\ntimezone = \"Europe/Berlin\"",
            &["policy \"prod-daily\": timezone only applies to cron schedules"],
        ),
        (
            "no selector",
            "select = []",
            &["policy \"prod-daily\": select is empty"],
        ),
        (
            "empty selector",
            "select = [{ tags = { Backup = \"daily\" } }, { tags = {} }]",
            &["policy \"prod-daily\": select[1] has no tags"],
        ),
        (
            "reserved tag key",
            "tags = { \"autosnap:policy\" = \"x\" }",
            &["policy \"prod-daily\": tags has key \"autosnap:policy\": the prefixes aws: and autosnap: are reserved"],
        ),
        (
            "aws tag key",
            "tags = { \"AWS:x\" = \"x\" }",
            &["policy \"prod-daily\": tags has key \"AWS:x\""],
        ),
        (
            "bad region",
            "regions = [\"useast1\"]",
            &["policy \"prod-daily\": regions 'useast1' is not an AWS region name; did you mean us-east-1?"],
        ),
        (
            "bad name",
            "name = \"prod daily\"",
            &["policy \"prod daily\": name contains ' ': use letters, digits"],
        ),
        (
            "empty name",
            "name = \"\"",
            &["policy #1: name is empty"],
        ),
        (
            "exclude id of the wrong kind",
            "exclude = { ids = [\"i-0123456789abcdef0\"] }",
            &["policy \"prod-daily\": exclude.ids has \"i-0123456789abcdef0\": expected a volume id"],
        ),
    ];
    let mut failures = Vec::new();
    for (name, extra, expected) in cases {
        let text = policy_with(extra);
        let message = match parse(&text) {
            Ok(_) => format!("<parsed without error>\n{text}"),
            Err(e) => e.to_string(),
        };
        for fragment in *expected {
            if !message.contains(fragment) {
                failures.push(format!("{name}: {fragment:?} not in\n{message}\n"));
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn invalid_policies_are_config_errors_with_the_policy_field() {
    let err = parse(&policy_with("exclude_boot = true")).unwrap_err();
    match err {
        ConfigError::Invalid { field, problem, .. } => {
            assert_eq!(field, "policy");
            assert!(
                problem.starts_with("\"prod-daily\": exclude_boot"),
                "{problem}"
            );
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn copy_region_check_uses_the_default_region_only_when_known() {
    let text = policy_with("copy = [{ region = \"us-east-1\" }]")
        .replace("region = \"us-east-1\"\n[[policy]]", "[[policy]]");
    let config: ConfigFile = toml::from_str(&text.replace("[aws]\n", "")).unwrap();
    let policies: &[PolicyConfig] = &config.policies;
    assert!(validate_policies(policies, None).is_ok());
    let err = validate_policies(policies, Some("us-east-1")).unwrap_err();
    assert_eq!(err.policy, "prod-daily");
    assert_eq!(err.field, "copy[0].region");
    assert_eq!(
        err.to_string(),
        "policy \"prod-daily\": copy[0].region is \"us-east-1\", a region this policy backs up: \
         copies must go to another region"
    );
}
