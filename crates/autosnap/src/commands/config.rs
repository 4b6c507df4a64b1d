//! `autosnap config show` and `autosnap config check`.

use serde::Serialize;

use crate::cli::OutputFormat;
use crate::commands::Env;
use crate::exit::Exit;
use crate::output;
use crate::settings::Setting;

#[derive(Serialize)]
struct ShownConfig<'a> {
    config_file: Option<String>,
    config_origin: Option<crate::settings::ConfigOrigin>,
    settings: Vec<(&'static str, &'a Setting)>,
    defaults: &'a autosnap_core::config::DefaultsSection,
}

pub fn show(env: &Env) -> anyhow::Result<Exit> {
    let s = &env.settings;
    let external = Setting {
        value: s
            .config
            .file
            .aws
            .external_id
            .as_ref()
            .map(|_| "***".to_string()),
        source: if s.config.file.aws.external_id.is_some() {
            "config file".into()
        } else {
            "none".into()
        },
    };
    let account = Setting {
        value: s.config.file.aws.account_id.clone(),
        source: if s.config.file.aws.account_id.is_some() {
            "config file".into()
        } else {
            "not pinned".into()
        },
    };
    let rows: Vec<(&'static str, &Setting)> = vec![
        ("account_id", &account),
        ("region", &s.region),
        ("profile", &s.profile),
        ("endpoint_url", &s.endpoint_url),
        ("role_arn", &s.role_arn),
        ("external_id", &external),
        ("credentials", &s.credentials),
        ("max_attempts", &s.max_attempts),
    ];
    let shown = ShownConfig {
        config_file: s.config.path.as_ref().map(|(p, _)| p.display().to_string()),
        config_origin: s.config.path.as_ref().map(|(_, o)| *o),
        settings: rows.clone(),
        defaults: &s.config.file.defaults,
    };
    match env.output {
        OutputFormat::Json => {
            let mut map = serde_json::Map::new();
            for (k, v) in &shown.settings {
                map.insert(k.to_string(), serde_json::to_value(v)?);
            }
            output::print_json(&serde_json::json!({
                "config_file": shown.config_file,
                "config_origin": shown.config_origin,
                "settings": map,
                "defaults": shown.defaults,
                "accounts": super::config_accounts::shown(&s.config.file),
            }))?;
        }
        OutputFormat::Table | OutputFormat::Prometheus => {
            let file = match &s.config.path {
                Some((p, o)) => format!("{} ({})", p.display(), origin_text(*o)),
                None => "none found; using defaults".into(),
            };
            output::print(&format!("config file: {file}\n"));
            let mut t = output::table(["SETTING", "VALUE", "SOURCE"]);
            for (k, v) in rows {
                t.add_row([k.to_string(), output::opt(&v.value), v.source.clone()]);
            }
            t.add_row([
                "copy_volume_tags".to_string(),
                s.config.file.defaults.copy_volume_tags.to_string(),
                "config file or default".to_string(),
            ]);
            let tags: Vec<String> = s
                .config
                .file
                .defaults
                .tags
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            t.add_row([
                "tags".to_string(),
                if tags.is_empty() {
                    "-".into()
                } else {
                    tags.join(", ")
                },
                "config file or default".to_string(),
            ]);
            output::print_table(&t);
            if let Some(accounts) = super::config_accounts::shown(&s.config.file) {
                output::print("\naccounts:");
                output::print_table(&super::config_accounts::table(&accounts));
            }
        }
    }
    Ok(Exit::Success)
}

fn origin_text(o: crate::settings::ConfigOrigin) -> &'static str {
    use crate::settings::ConfigOrigin::*;
    match o {
        Flag => "from -c/--config",
        Environment => "from $AUTOSNAP_CONFIG",
        CurrentDirectory => "found in the current directory",
        UserConfigDir => "found in the user config directory",
    }
}

#[derive(Serialize)]
struct Check {
    check: &'static str,
    ok: bool,
    detail: String,
    /// The account a role check is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    account_id: Option<String>,
}

/// The check that backups copied into backup accounts can be shared (none is encrypted with
/// the AWS managed key).
fn shareable_check(found: Result<Vec<String>, String>, account_id: Option<String>) -> Check {
    let (ok, detail) = match found {
        Ok(problems) if problems.is_empty() => (
            true,
            "no volume copied into a backup account is encrypted with the AWS managed key"
                .to_string(),
        ),
        Ok(problems) => (false, problems.join("; ")),
        Err(e) => (false, e),
    };
    let detail = match &account_id {
        Some(a) => format!("{a}: {detail}"),
        None => detail,
    };
    Check {
        check: "shareable backups",
        ok,
        detail,
        account_id,
    }
}

/// `config check` when the config file cannot be used (missing, unreadable,
/// invalid, untrusted): the report names the problem, and nothing else is
/// checked, since every other check depends on the file.
pub fn report_unusable(format: OutputFormat, error: &anyhow::Error) -> anyhow::Result<Exit> {
    let checks = [Check {
        account_id: None,
        check: "config file",
        ok: false,
        detail: format!("{error:#}"),
    }];
    print_checks(format, &checks)?;
    Ok(crate::exit::exit_for_error(error))
}

fn print_checks(format: OutputFormat, checks: &[Check]) -> anyhow::Result<()> {
    output::emit(format, checks, || {
        let mut t = output::table(["CHECK", "RESULT", "DETAIL"]);
        for c in checks {
            t.add_row([
                c.check.to_string(),
                if c.ok { "ok" } else { "FAILED" }.to_string(),
                c.detail.clone(),
            ]);
        }
        t
    })
}

/// Validates the file (already done by loading it) and then the AWS side:
/// region, credentials, identity, the pinned account and EC2 access.
pub async fn check(env: &Env) -> anyhow::Result<Exit> {
    let s = &env.settings;
    let mut checks = vec![Check {
        account_id: None,
        check: "config file",
        ok: true,
        detail: match &s.config.path {
            Some((p, _)) => format!("{} is valid", p.display()),
            None => "none found; built-in defaults apply".into(),
        },
    }];
    let mut exit = Exit::Success;

    match env.connect().await {
        Err(e) => {
            checks.push(Check {
                account_id: None,
                check: "region and credentials",
                ok: false,
                detail: e.to_string(),
            });
            exit = Exit::Usage;
        }
        Ok(ctx) => {
            checks.push(Check {
                account_id: None,
                check: "region",
                ok: true,
                detail: ctx.region().to_string(),
            });
            match ctx.identity().await {
                Err(e) => {
                    checks.push(Check {
                        account_id: None,
                        check: "credentials",
                        ok: false,
                        detail: e.to_string(),
                    });
                    exit = Exit::Failure;
                }
                Ok(id) => {
                    checks.push(Check {
                        account_id: None,
                        check: "credentials",
                        ok: true,
                        detail: format!("{} ({})", id.arn, s.credentials.source),
                    });
                    if let Some(pinned) = &s.config.file.aws.account_id {
                        let ok = pinned == &id.account;
                        checks.push(Check {
                            account_id: None,
                            check: "account",
                            ok,
                            detail: if ok {
                                format!("{} as pinned in the config", id.account)
                            } else {
                                format!(
                                    "credentials are for account {}, but the config pins account_id = \"{pinned}\": use the right profile or fix account_id",
                                    id.account
                                )
                            },
                        });
                        if !ok {
                            exit = Exit::Usage;
                        }
                    }
                    let ec2 = ctx.ec2().await?;
                    let probe = ec2.raw().describe_volumes().max_results(5).send().await;
                    let (ok, detail) = match probe {
                        Ok(_) => (true, format!("DescribeVolumes allowed in {}", ctx.region())),
                        Err(e) => (
                            false,
                            autosnap_aws::AwsError::from_sdk(
                                e,
                                "DescribeVolumes",
                                None,
                                &ctx.call_site("EC2", ctx.region()),
                            )
                            .to_string(),
                        ),
                    };
                    checks.push(Check {
                        account_id: None,
                        check: "EC2 access",
                        ok,
                        detail,
                    });
                    if !ok && exit == Exit::Success {
                        exit = Exit::Failure;
                    }
                    // Each account's role, from these credentials; some failing is exit 3.
                    match super::config_accounts::check(&ctx, &s.config.file).await {
                        Err(detail) => {
                            checks.push(Check {
                                check: "accounts",
                                ok: false,
                                detail,
                                account_id: None,
                            });
                            if exit == Exit::Success {
                                exit = Exit::Failure;
                            }
                        }
                        Ok(roles) => {
                            let failed = roles.iter().filter(|r| !r.ok).count();
                            let mut unshareable = false;
                            for r in roles {
                                checks.push(Check {
                                    check: if r.backup {
                                        "backup account role"
                                    } else {
                                        "account role"
                                    },
                                    ok: r.ok,
                                    detail: format!("{}: {}", r.account_id, r.detail),
                                    account_id: Some(r.account_id.clone()),
                                });
                                if let Some(s) = r.shareable {
                                    let check = shareable_check(s, Some(r.account_id));
                                    unshareable |= !check.ok;
                                    checks.push(check);
                                }
                            }
                            if failed > 0 && exit == Exit::Success {
                                exit = Exit::Partial;
                            }
                            if unshareable && exit == Exit::Success {
                                exit = Exit::Failure;
                            }
                        }
                    }
                    // One account: copies into backup accounts from the credentials' own.
                    if !s.config.file.has_accounts() {
                        let own =
                            super::config_accounts::unshareable(&ctx, &s.config.file.policies);
                        if let Some(found) = own.await {
                            let check = shareable_check(found, None);
                            if !check.ok && exit == Exit::Success {
                                exit = Exit::Failure;
                            }
                            checks.push(check);
                        }
                    }
                }
            }
        }
    }

    print_checks(env.output, &checks)?;
    Ok(exit)
}
