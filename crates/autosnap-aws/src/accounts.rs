//! Reaching many accounts: a role assumed in each from the base credentials, AWS Organizations
//! discovery, and a bounded number of accounts worked on at once.
//!
//! Each account's context keeps the SDK's [`AssumeRoleProvider`] as its credentials provider
//! (not one-shot credentials): the SDK's identity cache asks STS again before the session
//! expires, so a run or a daemon longer than the session keeps working. The base credentials
//! may themselves be an assumed role (`aws.role_arn`): the member role is then assumed from it.

use std::future::Future;

use autosnap_core::accounts::{Account, OrganizationAccount};
use aws_config::sts::AssumeRoleProvider;
use aws_config::Region;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use futures::stream::{self, StreamExt};

use crate::context::{credential_error_detail, AwsContext, FirstThen};
use crate::error::AwsError;

/// Accounts worked on at the same time. Each has its own EC2 request budgets (EC2 throttles
/// per account and Region), so more accounts at once do not slow one another down at EC2;
/// the bound keeps this process's connections, memory and output in check.
pub const ACCOUNTS_AT_ONCE: usize = 4;

/// The session name on every assumed role: CloudTrail in the member account shows
/// `assumed-role/<role>/autosnap`.
pub const SESSION_NAME: &str = "autosnap";

/// Why an account could not be worked on.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error(
        "cannot assume {role_arn}: {detail}. The role must exist in account {account} and its \
         trust policy must allow the account of the base credentials (and name the external id, \
         if one is configured): see \"Many accounts\" in the README"
    )]
    AssumeRole {
        account: String,
        role_arn: String,
        detail: String,
    },
    #[error(
        "the role {role_arn} gave credentials of account {actual}, not {expected}: check the \
         account's id and role_arn"
    )]
    WrongAccount {
        role_arn: String,
        expected: String,
        actual: String,
    },
    #[error(transparent)]
    Aws(#[from] AwsError),
}

/// A context acting in `account`: its role assumed from `base`'s credentials, checked to
/// belong to that account (one AssumeRole and one GetCallerIdentity).
pub async fn assume(base: &AwsContext, account: &Account) -> Result<AwsContext, AccountError> {
    let mut builder = AssumeRoleProvider::builder(account.role_arn.clone())
        .session_name(SESSION_NAME)
        .configure(base.sdk_config());
    if let Some(e) = &account.external_id {
        builder = builder.external_id(e.expose().to_owned());
    }
    let provider = builder.build().await;
    // Asked once now, so a missing role or a refusing trust policy is this account's error
    // before any work starts; those first credentials are handed to the SDK's cache, which
    // asks the provider again before they expire.
    let first = provider
        .provide_credentials()
        .await
        .map_err(|e| AccountError::AssumeRole {
            account: account.id.clone(),
            role_arn: account.role_arn.clone(),
            detail: credential_error_detail(&e),
        })?;
    let ctx = base.with_credentials(SharedCredentialsProvider::new(FirstThen::new(
        first, provider,
    )));
    let actual = ctx.account_id().await?;
    if actual != account.id {
        return Err(AccountError::WrongAccount {
            role_arn: account.role_arn.clone(),
            expected: account.id.clone(),
            actual,
        });
    }
    Ok(ctx)
}

/// Runs `work` in every account, at most [`ACCOUNTS_AT_ONCE`] at a time, each with its own
/// context; one account's failure (its role, its access, a Region it has not enabled) is its
/// result and does not stop the others. Results come back in the order of `accounts`.
pub async fn across<T, E, F, Fut>(
    base: &AwsContext,
    accounts: &[Account],
    work: F,
) -> Vec<(Account, Result<T, E>)>
where
    E: From<AccountError>,
    F: Fn(Account, AwsContext) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let work = &work;
    let mut done: Vec<(usize, Account, Result<T, E>)> =
        stream::iter(accounts.iter().cloned().enumerate())
            .map(|(index, account)| async move {
                let result = match assume(base, &account).await {
                    Ok(ctx) => work(account.clone(), ctx).await,
                    Err(e) => Err(E::from(e)),
                };
                (index, account, result)
            })
            .buffer_unordered(ACCOUNTS_AT_ONCE)
            .collect()
            .await;
    done.sort_by_key(|(index, _, _)| *index);
    done.into_iter().map(|(_, a, r)| (a, r)).collect()
}

/// The organization's management account and every account AWS Organizations lists
/// (DescribeOrganization, then ListAccounts page by page). Works with the management account's
/// credentials or a delegated administrator's.
pub async fn organization(
    base: &AwsContext,
) -> Result<(String, Vec<OrganizationAccount>), AwsError> {
    // Organizations is a global service answered in one Region per partition.
    let partition = partition(base).await;
    let region = match partition.as_str() {
        "aws-cn" => "cn-northwest-1",
        "aws-us-gov" => "us-gov-west-1",
        _ => "us-east-1",
    };
    let conf = aws_sdk_organizations::config::Builder::from(base.sdk_config())
        .region(Region::new(region))
        .build();
    let client = aws_sdk_organizations::Client::from_conf(conf);
    let site = base.call_site("Organizations", region);
    let org = client
        .describe_organization()
        .send()
        .await
        .map_err(|e| AwsError::from_sdk(e, "DescribeOrganization", None, &site))?;
    let management = org
        .organization()
        .and_then(|o| o.master_account_id())
        .unwrap_or_default()
        .to_string();
    let mut accounts = Vec::new();
    let mut pages = client.list_accounts().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| AwsError::from_sdk(e, "ListAccounts", None, &site))?;
        for a in page.accounts() {
            // `State` replaces `Status` (retired by AWS in September 2026); either may be sent.
            let status = a
                .state()
                .map(|s| s.as_str().to_owned())
                .or_else(|| a.status().map(|s| s.as_str().to_owned()))
                .unwrap_or_default();
            accounts.push(OrganizationAccount {
                id: a.id().unwrap_or_default().to_owned(),
                name: a.name().map(str::to_owned),
                status,
            });
        }
    }
    Ok((management, accounts))
}

/// The partition of the base credentials (`aws` when it cannot be told).
pub async fn partition(base: &AwsContext) -> String {
    base.identity()
        .await
        .ok()
        .and_then(|i| autosnap_core::accounts::partition_of(&i.arn).map(str::to_owned))
        .unwrap_or_else(|| "aws".into())
}
