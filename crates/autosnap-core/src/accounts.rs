//! Many accounts from one config: `[[account]]` entries and `accounts = "organization"`.
//!
//! Each account is reached by assuming a role in it from the base credentials. This module holds
//! the pure part: the config types, their validation, turning an organization's account list
//! into accounts to back up, `--account` selection, and which policies (in which regions) apply
//! to an account. Talking to STS and Organizations is autosnap-aws's job.

use serde::{Deserialize, Serialize};

use crate::config::Secret;
use crate::policy::PolicyConfig;

/// One `[[account]]` table.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    /// The 12-digit account id.
    pub id: String,
    /// The role autosnap assumes in that account (its account must be `id`).
    pub role_arn: String,
    /// The external id the role's trust policy asks for, if it asks for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<Secret>,
    /// The regions backed up in this account; when empty, each policy's own regions (or the
    /// configured region). When set, a policy that names regions runs only in those of them
    /// that are also listed here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,
    /// The policies that apply to this account (by name); all of them when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<String>,
}

/// `accounts = "organization"`: discover the accounts through AWS Organizations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountDiscovery {
    Organization,
}

/// An account to back up, explicit or discovered.
#[derive(Debug, Clone, PartialEq)]
pub struct Account {
    pub id: String,
    /// The account's name in the organization, when it was discovered.
    pub name: Option<String>,
    pub role_arn: String,
    pub external_id: Option<Secret>,
    pub regions: Vec<String>,
    pub policies: Vec<String>,
}

impl From<&AccountConfig> for Account {
    fn from(c: &AccountConfig) -> Account {
        Account {
            id: c.id.clone(),
            name: None,
            role_arn: c.role_arn.clone(),
            external_id: c.external_id.clone(),
            regions: c.regions.clone(),
            policies: c.policies.clone(),
        }
    }
}

/// A problem with the accounts part of the config: which account (or key) and which field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{place}: {field} {problem}")]
pub struct AccountConfigError {
    /// `account "111111111111"`, `account #2` or the top-level key.
    pub place: String,
    pub field: &'static str,
    pub problem: String,
}

/// Whether `id` is an AWS account id: 12 digits.
pub fn is_account_id(id: &str) -> bool {
    id.len() == 12 && id.bytes().all(|b| b.is_ascii_digit())
}

/// The account and role name of `arn:<partition>:iam::<account>:role/<path/><name>`.
pub fn parse_role_arn(arn: &str) -> Option<(&str, &str)> {
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some("iam"), Some(""), Some(account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let name = resource.strip_prefix("role/")?;
    (!partition.is_empty() && is_account_id(account) && !name.is_empty() && !name.ends_with('/'))
        .then_some((account, name))
}

/// Checks the accounts part of a config: every `[[account]]` entry, the organization keys and
/// that every policy an account names exists.
pub fn validate_accounts(
    accounts: &[AccountConfig],
    discovery: Option<AccountDiscovery>,
    organization_role: Option<&str>,
    policies: &[PolicyConfig],
) -> Result<(), AccountConfigError> {
    let top = |field: &'static str, problem: String| AccountConfigError {
        place: "accounts".into(),
        field,
        problem,
    };
    match (discovery, organization_role) {
        (Some(AccountDiscovery::Organization), None) => {
            return Err(top(
                "organization_role",
                "is missing: accounts = \"organization\" needs the name of the role to assume \
                 in each member account, e.g. organization_role = \"autosnap\""
                    .into(),
            ))
        }
        (None, Some(_)) => {
            return Err(top(
                "organization_role",
                "is set without accounts = \"organization\"".into(),
            ))
        }
        (Some(_), Some(role)) => {
            if role.is_empty()
                || role.starts_with("arn:")
                || role.starts_with('/')
                || role.ends_with('/')
                || role.chars().any(char::is_whitespace)
            {
                return Err(top(
                    "organization_role",
                    format!(
                        "'{role}' is not a role name: give the name (or path/name) of the role \
                         that exists in every member account, e.g. \"autosnap\"; its ARN is made \
                         per account"
                    ),
                ));
            }
        }
        (None, None) => {}
    }
    let mut seen = std::collections::HashSet::new();
    for (index, a) in accounts.iter().enumerate() {
        let place = if is_account_id(&a.id) {
            format!("account \"{}\"", a.id)
        } else {
            format!("account #{}", index + 1)
        };
        let invalid = |field: &'static str, problem: String| AccountConfigError {
            place: place.clone(),
            field,
            problem,
        };
        if !is_account_id(&a.id) {
            return Err(invalid(
                "id",
                format!("'{}' is not an AWS account id: expected 12 digits", a.id),
            ));
        }
        if !seen.insert(a.id.as_str()) {
            return Err(invalid(
                "id",
                "is listed twice: give each account one [[account]] entry".into(),
            ));
        }
        match parse_role_arn(&a.role_arn) {
            None => {
                return Err(invalid(
                    "role_arn",
                    format!(
                        "'{}' is not a role ARN such as arn:aws:iam::{}:role/autosnap",
                        a.role_arn, a.id
                    ),
                ))
            }
            Some((account, _)) if account != a.id => {
                return Err(invalid(
                    "role_arn",
                    format!(
                        "'{}' is a role in account {account}, not in {}: the role must be in the \
                         account it backs up",
                        a.role_arn, a.id
                    ),
                ))
            }
            Some(_) => {}
        }
        if let Some(e) = &a.external_id {
            if e.expose().len() < 2 || e.expose().len() > 1224 {
                return Err(invalid(
                    "external_id",
                    "must be 2 to 1224 characters (STS's limits)".into(),
                ));
            }
        }
        let mut regions = std::collections::HashSet::new();
        for r in &a.regions {
            if let Some(problem) = crate::region::region_problem(r) {
                return Err(invalid("regions", problem));
            }
            if !regions.insert(r.as_str()) {
                return Err(invalid("regions", format!("lists {r} twice")));
            }
        }
        for name in &a.policies {
            if !policies.iter().any(|p| &p.name == name) {
                let known: Vec<&str> = policies.iter().map(|p| p.name.as_str()).collect();
                return Err(invalid(
                    "policies",
                    if known.is_empty() {
                        format!("names policy '{name}', but the config has no [[policy]]")
                    } else {
                        format!(
                            "names policy '{name}', which is not in the config (it has {})",
                            known.join(", ")
                        )
                    },
                ));
            }
        }
    }
    Ok(())
}

/// An account as AWS Organizations lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct OrganizationAccount {
    pub id: String,
    pub name: Option<String>,
    /// `ACTIVE`, `SUSPENDED`, `PENDING_CLOSURE`.
    pub status: String,
}

/// The accounts of an organization to back up: the ACTIVE ones (a suspended or closing account
/// cannot be used), without the management account (it holds no member role and AWS advises
/// against workloads there; an `[[account]]` entry adds it). An explicit `[[account]]` entry
/// for a discovered id replaces the discovered one (its role, regions and policies), and
/// explicit entries not in the organization are kept. `partition` comes from the base
/// credentials' ARN (`aws`, `aws-cn`, `aws-us-gov`).
pub fn organization_accounts(
    listed: &[OrganizationAccount],
    management_account: &str,
    role_name: &str,
    partition: &str,
    explicit: &[AccountConfig],
) -> Vec<Account> {
    let mut out: Vec<Account> = listed
        .iter()
        .filter(|a| a.status == "ACTIVE" && a.id != management_account)
        .map(|a| match explicit.iter().find(|e| e.id == a.id) {
            Some(e) => Account {
                name: a.name.clone(),
                ..Account::from(e)
            },
            None => Account {
                id: a.id.clone(),
                name: a.name.clone(),
                role_arn: format!("arn:{partition}:iam::{}:role/{role_name}", a.id),
                external_id: None,
                regions: Vec::new(),
                policies: Vec::new(),
            },
        })
        .collect();
    for e in explicit {
        if !out.iter().any(|a| a.id == e.id) {
            out.push(Account::from(e));
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

/// `--account ID` (repeatable): the accounts named, in the order configured; every id must be
/// one of them.
pub fn select_accounts(all: Vec<Account>, only: &[String]) -> Result<Vec<Account>, String> {
    if only.is_empty() {
        return Ok(all);
    }
    for id in only {
        if !all.iter().any(|a| &a.id == id) {
            let known: Vec<&str> = all.iter().map(|a| a.id.as_str()).collect();
            return Err(if is_account_id(id) {
                format!(
                    "--account {id}: no such account in the config (it has {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                )
            } else {
                format!("--account {id}: not an AWS account id (12 digits)")
            });
        }
    }
    Ok(all.into_iter().filter(|a| only.contains(&a.id)).collect())
}

/// The policies that apply to `account`, with the regions they run in there: the account's
/// policy subset (all when it names none); when the account lists regions, a policy without
/// regions runs in those, and a policy with regions only in those also listed by the account
/// (a policy left with no region is dropped for this account).
pub fn policies_for(account: &Account, policies: &[PolicyConfig]) -> Vec<PolicyConfig> {
    policies
        .iter()
        .filter(|p| account.policies.is_empty() || account.policies.contains(&p.name))
        .filter_map(|p| {
            let mut p = p.clone();
            if !account.regions.is_empty() {
                if p.regions.is_empty() {
                    p.regions = account.regions.clone();
                } else {
                    p.regions.retain(|r| account.regions.contains(r));
                    if p.regions.is_empty() {
                        return None;
                    }
                }
            }
            Some(p)
        })
        .collect()
}

/// The partition of an ARN (`arn:aws:sts::…` gives `aws`).
pub fn partition_of(arn: &str) -> Option<&str> {
    let mut parts = arn.split(':');
    (parts.next() == Some("arn"))
        .then(|| parts.next())
        .flatten()
        .filter(|p| !p.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, role: &str) -> AccountConfig {
        AccountConfig {
            id: id.into(),
            role_arn: role.into(),
            external_id: None,
            regions: Vec::new(),
            policies: Vec::new(),
        }
    }

    fn policy(name: &str, regions: &[&str]) -> PolicyConfig {
        let text = format!(
            "name = \"{name}\"\nresource = \"volume\"\nschedule = \"1d\"\nselect = [{{ tags = {{ Backup = \"yes\" }} }}]\nretain = {{ daily = 7 }}\nregions = [{}]\n",
            regions
                .iter()
                .map(|r| format!("\"{r}\""))
                .collect::<Vec<_>>()
                .join(", ")
        );
        toml::from_str(&text).unwrap()
    }

    #[test]
    fn role_arns_are_parsed_with_their_account() {
        assert_eq!(
            parse_role_arn("arn:aws:iam::111111111111:role/autosnap"),
            Some(("111111111111", "autosnap"))
        );
        assert_eq!(
            parse_role_arn("arn:aws-cn:iam::111111111111:role/ops/autosnap"),
            Some(("111111111111", "ops/autosnap"))
        );
        for bad in [
            "autosnap",
            "arn:aws:iam::111111111111:user/autosnap",
            "arn:aws:iam::1111:role/autosnap",
            "arn:aws:sts::111111111111:role/autosnap",
            "arn:aws:iam::111111111111:role/",
            "arn::iam::111111111111:role/x",
        ] {
            assert_eq!(parse_role_arn(bad), None, "{bad}");
        }
    }

    #[test]
    fn validation_names_the_account_and_the_field() {
        let ok = "arn:aws:iam::111111111111:role/autosnap";
        let policies = [policy("daily", &[])];
        let check = |a: AccountConfig| {
            validate_accounts(&[a], None, None, &policies)
                .unwrap_err()
                .to_string()
        };
        let msg = check(entry("1111", ok));
        assert!(msg.starts_with("account #1: id '1111'"), "{msg}");
        let msg = check(entry(
            "111111111111",
            "arn:aws:iam::222222222222:role/autosnap",
        ));
        assert!(
            msg.starts_with("account \"111111111111\": role_arn")
                && msg.contains("account 222222222222"),
            "{msg}"
        );
        let msg = check(entry("111111111111", "autosnap"));
        assert!(
            msg.contains("role_arn 'autosnap' is not a role ARN"),
            "{msg}"
        );
        let msg = check(AccountConfig {
            regions: vec!["eu_west_1".into()],
            ..entry("111111111111", ok)
        });
        assert!(
            msg.contains("regions 'eu_west_1' is not an AWS region name"),
            "{msg}"
        );
        let msg = check(AccountConfig {
            policies: vec!["hourly".into()],
            ..entry("111111111111", ok)
        });
        assert!(
            msg.contains("policies names policy 'hourly'") && msg.contains("it has daily"),
            "{msg}"
        );
        let msg = check(AccountConfig {
            external_id: Some(Secret::new("x")),
            ..entry("111111111111", ok)
        });
        assert!(msg.contains("external_id"), "{msg}");
        let twice = [entry("111111111111", ok), entry("111111111111", ok)];
        let msg = validate_accounts(&twice, None, None, &policies)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("listed twice"), "{msg}");
        assert!(validate_accounts(&[entry("111111111111", ok)], None, None, &policies).is_ok());
    }

    #[test]
    fn organization_needs_a_role_name() {
        let org = Some(AccountDiscovery::Organization);
        let msg = validate_accounts(&[], org, None, &[])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("organization_role is missing"), "{msg}");
        let msg = validate_accounts(&[], org, Some("arn:aws:iam::1:role/x"), &[])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("not a role name"), "{msg}");
        let msg = validate_accounts(&[], None, Some("autosnap"), &[])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("without accounts"), "{msg}");
        assert!(validate_accounts(&[], org, Some("ops/autosnap"), &[]).is_ok());
    }

    #[test]
    fn organization_accounts_are_the_active_members_with_explicit_entries_winning() {
        let listed = [
            ("123456789012", "management", "ACTIVE"),
            ("111111111111", "prod", "ACTIVE"),
            ("222222222222", "old", "SUSPENDED"),
            ("333333333333", "dev", "ACTIVE"),
            ("444444444444", "leaving", "PENDING_CLOSURE"),
        ]
        .map(|(id, name, status)| OrganizationAccount {
            id: id.into(),
            name: Some(name.into()),
            status: status.into(),
        });
        let explicit = [
            AccountConfig {
                regions: vec!["eu-west-1".into()],
                ..entry("333333333333", "arn:aws:iam::333333333333:role/special")
            },
            entry("999999999999", "arn:aws:iam::999999999999:role/outside"),
        ];
        let got = organization_accounts(&listed, "123456789012", "autosnap", "aws", &explicit);
        let summary: Vec<(&str, &str, Option<&str>)> = got
            .iter()
            .map(|a| (a.id.as_str(), a.role_arn.as_str(), a.name.as_deref()))
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "111111111111",
                    "arn:aws:iam::111111111111:role/autosnap",
                    Some("prod")
                ),
                (
                    "333333333333",
                    "arn:aws:iam::333333333333:role/special",
                    Some("dev")
                ),
                (
                    "999999999999",
                    "arn:aws:iam::999999999999:role/outside",
                    None
                ),
            ]
        );
        assert_eq!(got[1].regions, ["eu-west-1"]);
    }

    #[test]
    fn account_flag_selects_known_accounts_only() {
        let all: Vec<Account> = ["111111111111", "222222222222"]
            .iter()
            .map(|id| Account::from(&entry(id, &format!("arn:aws:iam::{id}:role/a"))))
            .collect();
        let one = select_accounts(all.clone(), &["222222222222".into()]).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].id, "222222222222");
        assert_eq!(select_accounts(all.clone(), &[]).unwrap().len(), 2);
        let msg = select_accounts(all.clone(), &["333333333333".into()]).unwrap_err();
        assert!(msg.contains("it has 111111111111, 222222222222"), "{msg}");
        let msg = select_accounts(all, &["prod".into()]).unwrap_err();
        assert!(msg.contains("not an AWS account id"), "{msg}");
    }

    #[test]
    fn an_account_narrows_policies_and_regions() {
        let policies = [
            policy("everywhere", &[]),
            policy("eu", &["eu-west-1", "eu-central-1"]),
            policy("us", &["us-west-2"]),
        ];
        let mut account = Account::from(&entry("111111111111", "arn:aws:iam::111111111111:role/a"));
        assert_eq!(policies_for(&account, &policies), policies.to_vec());
        account.regions = vec!["eu-west-1".into(), "us-east-1".into()];
        let got = policies_for(&account, &policies);
        let names: Vec<(&str, Vec<String>)> = got
            .iter()
            .map(|p| (p.name.as_str(), p.regions.clone()))
            .collect();
        assert_eq!(
            names,
            [
                (
                    "everywhere",
                    vec!["eu-west-1".to_string(), "us-east-1".to_string()]
                ),
                ("eu", vec!["eu-west-1".to_string()]),
            ]
        );
        account.policies = vec!["eu".into()];
        assert_eq!(policies_for(&account, &policies).len(), 1);
    }

    #[test]
    fn partition_comes_from_the_arn() {
        assert_eq!(
            partition_of("arn:aws-us-gov:sts::123456789012:assumed-role/x/y"),
            Some("aws-us-gov")
        );
        assert_eq!(partition_of("nope"), None);
    }
}
