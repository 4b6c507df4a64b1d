//! The configuration file (`autosnap.toml`): its types, parsing and validation.
//! Resolving it against the command line and the environment happens in the
//! CLI; this module only knows the file.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::policy::{validate_policies, PolicyConfig};
use crate::tags::Tags;

mod toml_error;

/// The whole file. Unknown keys anywhere are errors (with line and column).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub aws: AwsSection,
    #[serde(default)]
    pub defaults: DefaultsSection,
    /// `[[policy]]` tables: backup policies (see [`crate::policy`]).
    #[serde(default, rename = "policy", skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<PolicyConfig>,
    /// `accounts = "organization"`: back up the organization's member accounts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accounts: Option<crate::accounts::AccountDiscovery>,
    /// The role (name or path/name) assumed in each discovered member account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_role: Option<String>,
    /// `[[account]]` tables: accounts reached by assuming a role (see [`crate::accounts`]).
    #[serde(default, rename = "account", skip_serializing_if = "Vec::is_empty")]
    pub account_entries: Vec<crate::accounts::AccountConfig>,
    /// `[[backup_account]]` tables: accounts that receive copies (a copy rule's `account`),
    /// reached by assuming a role (see [`crate::backup_account`]).
    #[serde(
        default,
        rename = "backup_account",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub backup_account_entries: Vec<crate::backup_account::BackupAccountConfig>,
}

/// `[aws]`: where and as whom autosnap talks to AWS. Everything is optional:
/// the standard AWS credential and region chain fills in what is missing.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AwsSection {
    /// The account these settings are meant for; `config check` fails when the
    /// credentials belong to another one.
    pub account_id: Option<String>,
    pub region: Option<String>,
    /// A named profile from ~/.aws/config (SSO profiles included).
    pub profile: Option<String>,
    /// A role to assume (through STS) on top of the base credentials.
    pub role_arn: Option<String>,
    pub external_id: Option<Secret>,
    /// Send all AWS calls here instead of AWS (for example a local emulator).
    pub endpoint_url: Option<String>,
    /// Attempts per AWS call, including the first (standard retry mode).
    pub max_attempts: Option<u32>,
    /// Static keys: accepted only when the file is readable by its owner alone.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Secret>,
    pub session_token: Option<Secret>,
}

/// `[defaults]`: behaviour shared by all commands.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultsSection {
    /// Copy the volume's own tags (Name, …) onto its snapshots.
    #[serde(default = "yes")]
    pub copy_volume_tags: bool,
    /// Extra tags put on everything autosnap creates.
    #[serde(default)]
    pub tags: Tags,
}

impl Default for DefaultsSection {
    fn default() -> Self {
        DefaultsSection {
            copy_volume_tags: true,
            tags: Tags::new(),
        }
    }
}

fn yes() -> bool {
    true
}

/// A value that must never be printed or logged. `Debug` and `Display` show
/// `***`; `expose` is the only way to the value.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Everything that can be wrong with a configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is invalid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: {field} {problem}")]
    Invalid {
        path: PathBuf,
        field: &'static str,
        problem: String,
    },
}

impl ConfigFile {
    /// Parses and validates the text of a config file. `path` is only used in
    /// messages.
    pub fn parse(text: &str, path: &Path) -> Result<ConfigFile, ConfigError> {
        let file: ConfigFile = toml::from_str(text).map_err(|e| {
            // The reason and its place first, in the config's words; toml's picture of the
            // line after it; inside a [[policy]] we add which one.
            let mut message = toml_error::describe(&e, text);
            if let Some(policy) = failing_policy(text) {
                message.push_str(&format!("\n(in {policy})"));
            }
            ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            }
        })?;
        file.validate(path)?;
        Ok(file)
    }

    /// Checks values the type system cannot.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |field: &'static str, problem: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            field,
            problem,
        };
        let aws = &self.aws;
        if let Some(a) = &aws.account_id {
            if a.len() != 12 || !a.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid(
                    "aws.account_id",
                    format!("'{a}' is not an AWS account id: expected 12 digits"),
                ));
            }
        }
        if let Some(r) = &aws.region {
            if let Some(problem) = crate::region::region_problem(r) {
                return Err(invalid("aws.region", problem));
            }
        }
        if let Some(p) = &aws.profile {
            if p.trim().is_empty() {
                return Err(invalid("aws.profile", "is empty".into()));
            }
        }
        if let Some(arn) = &aws.role_arn {
            if !(arn.starts_with("arn:") && arn.contains(":role/")) {
                return Err(invalid(
                    "aws.role_arn",
                    format!(
                        "'{arn}' is not a role ARN such as arn:aws:iam::123456789012:role/autosnap"
                    ),
                ));
            }
        }
        if aws.external_id.is_some() && aws.role_arn.is_none() {
            return Err(invalid(
                "aws.external_id",
                "is set without aws.role_arn: an external id only applies when assuming a role"
                    .into(),
            ));
        }
        if let Some(url) = &aws.endpoint_url {
            check_endpoint_url(url).map_err(|p| invalid("aws.endpoint_url", p))?;
        }
        if let Some(n) = aws.max_attempts {
            if !(1..=20).contains(&n) {
                return Err(invalid(
                    "aws.max_attempts",
                    format!("is {n}: use a number from 1 to 20"),
                ));
            }
        }
        match (&aws.access_key_id, &aws.secret_access_key) {
            (Some(_), None) => {
                return Err(invalid(
                    "aws.access_key_id",
                    "is set without aws.secret_access_key".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "aws.secret_access_key",
                    "is set without aws.access_key_id".into(),
                ))
            }
            _ => {}
        }
        if aws.session_token.is_some() && aws.access_key_id.is_none() {
            return Err(invalid(
                "aws.session_token",
                "is set without aws.access_key_id".into(),
            ));
        }
        for key in self.defaults.tags.keys() {
            if key.to_ascii_lowercase().starts_with("aws:") || key.starts_with("autosnap:") {
                return Err(invalid(
                    "defaults.tags",
                    format!("has key '{key}': the prefixes aws: and autosnap: are reserved"),
                ));
            }
        }
        // Reads `config file F: policy "name": field problem`.
        validate_policies(&self.policies, aws.region.as_deref()).map_err(|e| {
            let message = e.to_string();
            invalid(
                "policy",
                message
                    .strip_prefix("policy ")
                    .unwrap_or(&message)
                    .to_owned(),
            )
        })?;
        // Reads `config file F: account "111111111111": role_arn problem`.
        crate::accounts::validate_accounts(
            &self.account_entries,
            self.accounts,
            self.organization_role.as_deref(),
            &self.policies,
        )
        .map_err(|e| {
            if e.place == "accounts" {
                return invalid(e.field, e.problem);
            }
            let message = e.to_string();
            invalid(
                "account",
                message
                    .strip_prefix("account ")
                    .unwrap_or(&message)
                    .to_owned(),
            )
        })?;
        // Reads `config file F: backup_account "222222222222": role_arn problem` or
        // `config file F: policy "daily": copy [0].account problem`.
        crate::backup_account::validate_backup_accounts(
            &self.backup_account_entries,
            &self.account_entries,
            &self.policies,
        )
        .map_err(|e| {
            let message = e.to_string();
            let (field, rest) = match message.split_once(' ') {
                Some(("policy", rest)) => ("policy", rest),
                Some((_, rest)) => ("backup_account", rest),
                None => ("backup_account", message.as_str()),
            };
            invalid(field, rest.to_owned())
        })?;
        Ok(())
    }

    /// Whether backups run across accounts (`[[account]]` or `accounts = "organization"`).
    pub fn has_accounts(&self) -> bool {
        !self.account_entries.is_empty() || self.accounts.is_some()
    }

    /// The policy called `name`.
    pub fn policy(&self, name: &str) -> Option<&PolicyConfig> {
        self.policies.iter().find(|p| p.name == name)
    }

    /// Whether the file holds static credentials (and so must be private).
    pub fn has_static_keys(&self) -> bool {
        self.aws.access_key_id.is_some() || self.aws.secret_access_key.is_some()
    }
}

/// When a config file does not deserialize, the `[[policy]]` that does not (`policy "name"`
/// or `policy #N`), if the problem is inside one.
fn failing_policy(text: &str) -> Option<String> {
    let table: toml::Table = toml::from_str(text).ok()?;
    let policies = table.get("policy")?.as_array()?;
    policies.iter().enumerate().find_map(|(index, value)| {
        if value.clone().try_into::<PolicyConfig>().is_ok() {
            return None;
        }
        Some(match value.get("name").and_then(toml::Value::as_str) {
            Some(name) if !name.is_empty() => format!("policy {name:?}"),
            _ => format!("policy #{}", index + 1),
        })
    })
}

/// An endpoint must be an absolute http(s) URL.
pub fn check_endpoint_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && !host.starts_with('/') => Ok(()),
        _ => Err(format!(
            "'{url}' is not an http(s) URL such as https://ec2.us-east-1.amazonaws.com"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ConfigFile, ConfigError> {
        ConfigFile::parse(text, Path::new("autosnap.toml"))
    }

    #[test]
    fn empty_file_is_valid_with_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c, ConfigFile::default());
        assert!(c.defaults.copy_volume_tags);
    }

    #[test]
    fn full_aws_section() {
        let c = parse(
            r#"
[aws]
account_id = "123456789012"
region = "eu-west-1"
profile = "prod"
role_arn = "arn:aws:iam::123456789012:role/autosnap"
external_id = "xyz"
endpoint_url = "http://127.0.0.1:5000"
max_attempts = 5

[defaults]
copy_volume_tags = false
tags = { CostCenter = "ops" }
"#,
        )
        .unwrap();
        assert_eq!(c.aws.region.as_deref(), Some("eu-west-1"));
        assert_eq!(c.aws.external_id.as_ref().unwrap().expose(), "xyz");
        assert!(!c.defaults.copy_volume_tags);
        assert_eq!(c.defaults.tags["CostCenter"], "ops");
    }

    #[test]
    fn unknown_key_names_key_line_and_column() {
        let err = parse("[aws]\nregion = \"us-east-1\"\nregoin = \"x\"\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("regoin"), "{msg}");
        assert!(msg.contains("line 3"), "{msg}");
        assert!(msg.contains("column 1"), "{msg}");
    }

    #[test]
    fn wrong_type_is_named() {
        let msg = parse("[aws]\nmax_attempts = \"five\"\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("line 2"), "{msg}");
        assert!(
            msg.contains("max_attempts") || msg.contains("integer"),
            "{msg}"
        );
    }

    #[test]
    fn invalid_values_name_the_field() {
        for (text, field) in [
            ("[aws]\nregion = \"US EAST\"", "aws.region"),
            ("[aws]\naccount_id = \"123\"", "aws.account_id"),
            ("[aws]\nrole_arn = \"role\"", "aws.role_arn"),
            ("[aws]\nexternal_id = \"x\"", "aws.external_id"),
            (
                "[aws]\nendpoint_url = \"localhost:5000\"",
                "aws.endpoint_url",
            ),
            ("[aws]\nmax_attempts = 0", "aws.max_attempts"),
            ("[aws]\naccess_key_id = \"AKIA\"", "aws.access_key_id"),
            ("[defaults]\ntags = { \"aws:x\" = \"1\" }", "defaults.tags"),
        ] {
            let msg = parse(text).unwrap_err().to_string();
            assert!(msg.contains(field), "{text}: {msg}");
        }
    }

    #[test]
    fn accounts_parse_and_problems_name_the_account() {
        let c = parse(
            r#"
accounts = "organization"
organization_role = "autosnap"

[[account]]
id = "111111111111"
role_arn = "arn:aws:iam::111111111111:role/autosnap"
external_id = "shared-secret"
regions = ["eu-west-1"]
"#,
        )
        .unwrap();
        assert!(c.has_accounts());
        assert_eq!(c.account_entries[0].regions, ["eu-west-1"]);
        assert!(!format!("{c:?}").contains("shared-secret"));
        assert!(!parse("").unwrap().has_accounts());
        let msg = parse(
            "[[account]]\nid = \"111111111111\"\nrole_arn = \"arn:aws:iam::222222222222:role/a\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            msg.contains(": account \"111111111111\": role_arn"),
            "{msg}"
        );
        let msg = parse("accounts = \"organization\"\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains(": organization_role is missing"), "{msg}");
        let msg = parse("accounts = \"all\"\n").unwrap_err().to_string();
        assert!(msg.contains("organization"), "{msg}");
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let c =
            parse("[aws]\naccess_key_id = \"AKIAEXAMPLE\"\nsecret_access_key = \"s3cr3t-value\"\n")
                .unwrap();
        assert!(c.has_static_keys());
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("s3cr3t-value"), "{dbg}");
    }
}
