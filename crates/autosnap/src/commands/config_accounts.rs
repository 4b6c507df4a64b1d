//! The accounts part of `config show` and `config check`: the accounts the config names
//! (`[[account]]`, `accounts = "organization"` and its role, `[[backup_account]]`), and for
//! `check` whether each one's role can be assumed, at most [`ACCOUNTS_AT_ONCE`] at a time.

use autosnap_aws::accounts::{self as aws_accounts, AccountError, ACCOUNTS_AT_ONCE};
use autosnap_aws::AwsContext;
use autosnap_core::accounts::{self, Account, AccountDiscovery};
use autosnap_core::config::ConfigFile;
use futures::stream::{self, StreamExt};
use serde::Serialize;

use crate::output;

/// One account as `config show` lists it.
#[derive(Debug, Serialize)]
pub(super) struct ShownAccount {
    pub id: String,
    /// `backed up` (`[[account]]`) or `backup` (`[[backup_account]]`).
    pub kind: &'static str,
    pub role_arn: String,
    /// `***` when one is configured (never the value).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_id: Option<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<String>,
}

/// The accounts part of `config show -o json`.
#[derive(Debug, Serialize)]
pub(super) struct ShownAccounts {
    /// `organization` when member accounts are discovered through AWS Organizations.
    pub discovery: Option<&'static str>,
    /// The role assumed in each discovered member account.
    pub organization_role: Option<String>,
    /// `[[account]]` and `[[backup_account]]` entries, in config order.
    pub accounts: Vec<ShownAccount>,
}

/// What the config says of accounts; `None` when it names none (one account, the credentials').
pub(super) fn shown(file: &ConfigFile) -> Option<ShownAccounts> {
    if !file.has_accounts() && file.backup_account_entries.is_empty() {
        return None;
    }
    let secret = |s: &Option<autosnap_core::config::Secret>| s.as_ref().map(|_| "***");
    let mut list: Vec<ShownAccount> = file
        .account_entries
        .iter()
        .map(|a| ShownAccount {
            id: a.id.clone(),
            kind: "backed up",
            role_arn: a.role_arn.clone(),
            external_id: secret(&a.external_id),
            regions: a.regions.clone(),
            policies: a.policies.clone(),
        })
        .collect();
    list.extend(file.backup_account_entries.iter().map(|a| ShownAccount {
        id: a.id.clone(),
        kind: "backup",
        role_arn: a.role_arn.clone(),
        external_id: secret(&a.external_id),
        regions: Vec::new(),
        policies: Vec::new(),
    }));
    Some(ShownAccounts {
        discovery: file
            .accounts
            .map(|AccountDiscovery::Organization| "organization"),
        organization_role: file.organization_role.clone(),
        accounts: list,
    })
}

/// The table of `config show`: one row per account, and the organization's role.
pub(super) fn table(s: &ShownAccounts) -> comfy_table::Table {
    let mut t = output::table(["ACCOUNT", "KIND", "ROLE", "REGIONS", "POLICIES"]);
    if let (Some(d), Some(role)) = (s.discovery, &s.organization_role) {
        t.add_row([
            d.to_string(),
            "backed up (every active member)".to_string(),
            format!("{role} in each member account"),
            "-".into(),
            "-".into(),
        ]);
    }
    let list = |v: &[String]| {
        if v.is_empty() {
            "all".to_string()
        } else {
            v.join(", ")
        }
    };
    for a in &s.accounts {
        let role = match a.external_id {
            Some(e) => format!("{} (external id {e})", a.role_arn),
            None => a.role_arn.clone(),
        };
        let (regions, policies) = if a.kind == "backup" {
            ("-".to_string(), "-".to_string())
        } else {
            (list(&a.regions), list(&a.policies))
        };
        t.add_row([a.id.clone(), a.kind.to_string(), role, regions, policies]);
    }
    t
}

/// One account's role check.
#[derive(Debug)]
pub(super) struct RoleCheck {
    pub account_id: String,
    pub backup: bool,
    pub ok: bool,
    pub detail: String,
    /// Copies into backup accounts (its role assumed): the volumes they cannot be made of, or
    /// why that could not be read. `None`: no copy rule names an account.
    pub shareable: Option<Result<Vec<String>, String>>,
}

/// The volumes `policies` cover in the account of `ctx` whose backups could not be copied into
/// a backup account: encrypted with the AWS managed key `aws/ebs`, which cannot be shared.
/// `None` when no policy copies into another account.
pub(super) async fn unshareable(
    ctx: &AwsContext,
    policies: &[autosnap_core::policy::PolicyConfig],
) -> Option<Result<Vec<String>, String>> {
    use autosnap_aws::backup_account::{aws_managed_ebs_key, is_key, managed_key_problem};
    use autosnap_core::policy::ResourceKind;
    if !autosnap_core::backup_account::any(policies) {
        return None;
    }
    let default_region = ctx.region().to_string();
    let mut problems = Vec::new();
    let mut keys = std::collections::HashMap::new();
    let mut volumes = std::collections::HashMap::new();
    for policy in policies.iter().filter(|p| {
        p.resource == ResourceKind::Volume
            && autosnap_core::backup_account::account_rules(p)
                .next()
                .is_some()
    }) {
        let account = autosnap_core::backup_account::account_rules(policy)
            .filter_map(|(_, r)| r.account.clone())
            .collect::<Vec<_>>()
            .join(", ");
        for region in policy.regions_or(&default_region) {
            if !keys.contains_key(&region) {
                let key = aws_managed_ebs_key(ctx, &region).await;
                keys.insert(region.clone(), key.map_err(|e| e.to_string()));
            }
            let managed = match &keys[&region] {
                Ok(Some(k)) => k.clone(),
                // No AWS managed EBS key there: nothing is encrypted with it.
                Ok(None) => continue,
                Err(e) => return Some(Err(format!("cannot read the KMS keys in {region}: {e}"))),
            };
            if !volumes.contains_key(&region) {
                let listed = match ctx.ec2_in(&region).await {
                    Ok(ec2) => ec2
                        .list_volumes(&autosnap_aws::ec2::VolumeQuery::default())
                        .await
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                volumes.insert(region.clone(), listed);
            }
            let listed = match &volumes[&region] {
                Ok(v) => v,
                Err(e) => return Some(Err(format!("cannot list the volumes in {region}: {e}"))),
            };
            for v in listed {
                let key = v.kms_key_id.as_deref().unwrap_or_default();
                if !(v.encrypted && is_key(key, &managed)) {
                    continue;
                }
                let target = autosnap_core::plan::Target {
                    id: v.volume_id.clone(),
                    kind: ResourceKind::Volume,
                    region: region.clone(),
                    tags: v.tags.clone(),
                    name: v.name.clone(),
                    volume_ids: Vec::new(),
                };
                if policy.covers(&target, &default_region) {
                    problems.push(managed_key_problem(
                        &format!(
                            "volume {} in {region} (policy {})",
                            v.volume_id, policy.name
                        ),
                        &account,
                    ));
                }
            }
        }
    }
    Some(Ok(problems))
}

/// Assumes every configured account's role (the organization's members when discovered, and
/// the backup accounts) from `base`, bounded like `plan`. Err: the organization could not be
/// listed.
pub(super) async fn check(base: &AwsContext, file: &ConfigFile) -> Result<Vec<RoleCheck>, String> {
    let mut all: Vec<(Account, bool)> = match file.accounts {
        Some(AccountDiscovery::Organization) => {
            let (management, listed) = aws_accounts::organization(base).await.map_err(|e| {
                format!(
                    "cannot list the organization's accounts: {e} (accounts = \"organization\" \
                     needs the management account's credentials or a delegated \
                     administrator's, with organizations:DescribeOrganization and \
                     organizations:ListAccounts)"
                )
            })?;
            let partition = aws_accounts::partition(base).await;
            accounts::organization_accounts(
                &listed,
                &management,
                file.organization_role.as_deref().unwrap_or_default(),
                &partition,
                &file.account_entries,
            )
        }
        None => file.account_entries.iter().map(Account::from).collect(),
    }
    .into_iter()
    .map(|a| (a, false))
    .collect();
    all.extend(
        file.backup_account_entries
            .iter()
            .map(|b| (b.as_account(), true)),
    );
    let mut checks: Vec<(usize, RoleCheck)> = stream::iter(all.into_iter().enumerate())
        .map(|(i, (account, backup))| async move {
            let (ok, detail, shareable) = match aws_accounts::assume(base, &account).await {
                Ok(ctx) => {
                    let shareable = if backup {
                        None
                    } else {
                        unshareable(&ctx, &accounts::policies_for(&account, &file.policies)).await
                    };
                    (true, format!("assumed {}", account.role_arn), shareable)
                }
                Err(e) => (false, cause(&account, &e), None),
            };
            (
                i,
                RoleCheck {
                    account_id: account.id.clone(),
                    backup,
                    ok,
                    detail,
                    shareable,
                },
            )
        })
        .buffer_unordered(ACCOUNTS_AT_ONCE)
        .collect()
        .await;
    checks.sort_by_key(|(i, _)| *i);
    Ok(checks.into_iter().map(|(_, c)| c).collect())
}

/// Why an account's role could not be assumed, with what to check. AWS answers a missing role
/// and a trust policy that refuses the caller (or wants another external id) alike, so the
/// hint names every cause that fits.
fn cause(account: &Account, e: &AccountError) -> String {
    match e {
        AccountError::AssumeRole { detail, .. } => {
            let denied = detail.contains("AccessDenied") || detail.contains("not authorized");
            let why = if !denied {
                String::new()
            } else if account.external_id.is_some() {
                " (the role is missing, its trust policy does not allow these credentials' \
                 account, or the external id is wrong)"
                    .to_string()
            } else {
                " (the role is missing, or its trust policy does not allow these credentials' \
                 account, or it asks for an external id)"
                    .to_string()
            };
            format!("cannot assume {}: {detail}{why}", account.role_arn)
        }
        other => other.to_string(),
    }
}
