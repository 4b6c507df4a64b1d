//! `KeepPolicy` as command-line flags (`--features clap`): every `--keep-…` flag lands in its
//! field, and the flags and the config file's `retain = {…}` give the same policy.
#![cfg(feature = "clap")]

use autosnap_core::duration::CalendarDuration;
use autosnap_core::retention::{Count, KeepFlagsError, KeepPolicy, PolicyError};
use clap::{Args, Parser};
use rstest::rstest;

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    keep: KeepPolicy,
}

fn parse(args: &[&str]) -> KeepPolicy {
    let argv = std::iter::once("autosnap").chain(args.iter().copied());
    Cli::try_parse_from(argv)
        .unwrap_or_else(|e| panic!("{args:?} did not parse: {e}"))
        .keep
}

fn days(d: &str) -> Option<CalendarDuration> {
    Some(d.parse().unwrap())
}

/// Each flag, the field it must set, and the TOML of the same rule.
fn table() -> Vec<(&'static str, &'static str, KeepPolicy, &'static str)> {
    let p = KeepPolicy::default;
    vec![
        (
            "--keep-last",
            "3",
            KeepPolicy {
                last: Count::N(3),
                ..p()
            },
            "last = 3",
        ),
        (
            "--keep-hourly",
            "unlimited",
            KeepPolicy {
                hourly: Count::Unlimited,
                ..p()
            },
            "hourly = \"unlimited\"",
        ),
        (
            "--keep-daily",
            "7",
            KeepPolicy {
                daily: Count::N(7),
                ..p()
            },
            "daily = 7",
        ),
        (
            "--keep-weekly",
            "4",
            KeepPolicy {
                weekly: Count::N(4),
                ..p()
            },
            "weekly = 4",
        ),
        (
            "--keep-monthly",
            "12",
            KeepPolicy {
                monthly: Count::N(12),
                ..p()
            },
            "monthly = 12",
        ),
        (
            "--keep-yearly",
            "2",
            KeepPolicy {
                yearly: Count::N(2),
                ..p()
            },
            "yearly = 2",
        ),
        (
            "--keep-within",
            "2d",
            KeepPolicy {
                within: days("2d"),
                ..p()
            },
            "within = \"2d\"",
        ),
        (
            "--keep-within-hourly",
            "1d",
            KeepPolicy {
                within_hourly: days("1d"),
                ..p()
            },
            "within_hourly = \"1d\"",
        ),
        (
            "--keep-within-daily",
            "7d",
            KeepPolicy {
                within_daily: days("7d"),
                ..p()
            },
            "within_daily = \"7d\"",
        ),
        (
            "--keep-within-weekly",
            "1mo",
            KeepPolicy {
                within_weekly: days("1mo"),
                ..p()
            },
            "within_weekly = \"1mo\"",
        ),
        (
            "--keep-within-monthly",
            "1y",
            KeepPolicy {
                within_monthly: days("1y"),
                ..p()
            },
            "within_monthly = \"1y\"",
        ),
        (
            "--keep-within-yearly",
            "1y2mo3d4h",
            KeepPolicy {
                within_yearly: days("1y2mo3d4h"),
                ..p()
            },
            "within_yearly = \"1y2mo3d4h\"",
        ),
        (
            "--keep-tag",
            " a, b,",
            KeepPolicy {
                keep_tags: vec![vec!["a".into(), "b".into()]],
                ..p()
            },
            "tags = [[\"a\", \"b\"]]",
        ),
    ]
}

#[test]
fn every_flag_sets_its_field_and_matches_the_config_file() {
    for (flag, value, expected, toml_rule) in table() {
        let from_flags = parse(&[flag, value]);
        assert_eq!(from_flags, expected, "{flag} {value}");
        let from_toml: KeepPolicy = toml::from_str(toml_rule).unwrap();
        assert_eq!(from_toml, expected, "{toml_rule}");
    }
}

#[test]
fn the_table_names_every_flag_the_struct_defines() {
    let defined: Vec<String> = KeepPolicy::augment_args(clap::Command::new("t"))
        .get_arguments()
        .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
        .collect();
    let tested: Vec<String> = table().iter().map(|row| row.0.to_string()).collect();
    assert_eq!(defined, tested);
}

#[test]
fn no_flags_is_the_empty_policy_and_validate_flags_says_which_flags_to_give() {
    let none = parse(&[]);
    assert_eq!(none, KeepPolicy::default());
    let err = none.validate_flags().unwrap_err();
    assert_eq!(err, KeepFlagsError(PolicyError::Empty));
    assert!(
        err.to_string()
            .ends_with(": give at least one --keep-… rule (for example --keep-daily 7)"),
        "{err}"
    );
}

#[rstest]
#[case::two_lists(&["--keep-tag", "a,b", "--keep-tag", "c"], vec![vec!["a", "b"], vec!["c"]])]
#[case::only_commas(&["--keep-tag", ","], vec![vec![]])]
fn each_keep_tag_is_one_list(#[case] args: &[&str], #[case] lists: Vec<Vec<&str>>) {
    let lists: Vec<Vec<String>> = lists
        .into_iter()
        .map(|l| l.into_iter().map(String::from).collect())
        .collect();
    assert_eq!(parse(args).keep_tags, lists);
}

#[test]
fn an_empty_tag_list_is_refused_with_the_flags_hint() {
    let err = parse(&["--keep-tag", ","]).validate_flags().unwrap_err();
    assert_eq!(err, KeepFlagsError(PolicyError::EmptyTagList { index: 0 }));
}

#[test]
fn a_bad_count_is_a_parse_error_naming_the_flag() {
    let err = Cli::try_parse_from(["autosnap", "--keep-daily", "seven"]).unwrap_err();
    assert!(err.to_string().contains("--keep-daily <N>"), "{err}");
}

#[test]
fn flags_combine_like_the_config_file() {
    let from_flags = parse(&[
        "--keep-last",
        "3",
        "--keep-daily",
        "7",
        "--keep-within",
        "2d",
        "--keep-tag",
        "keep",
    ]);
    let from_toml: KeepPolicy =
        toml::from_str("last = 3\ndaily = 7\nwithin = \"2d\"\ntags = [[\"keep\"]]").unwrap();
    assert_eq!(from_flags, from_toml);
    assert_eq!(
        from_flags.to_string(),
        "keep last 3, daily 7, within 2d, tags [keep]"
    );
}
