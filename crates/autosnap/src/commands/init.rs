//! `autosnap init`: a commented starter config with the account and region
//! discovered from the credential chain. Never writes secrets; never
//! overwrites without `--force` (and then keeps a `.bak`).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use crate::cli::{GlobalArgs, InitArgs, OutputFormat};
use crate::commands::Env;
use crate::exit::{Exit, UsageError};
use crate::output;
use crate::settings::{user_config_path, CONFIG_ENV};

pub async fn run(env: &Env, global: &GlobalArgs, args: &InitArgs) -> anyhow::Result<Exit> {
    let path = target_path(global)?;
    if path.exists() && !args.force {
        return Err(UsageError(format!(
            "config file {} already exists: pass --force to replace it (the old file is kept as {}.bak)",
            path.display(),
            path.display()
        ))
        .into());
    }

    let ctx = env.connect().await?;
    let identity = ctx.identity().await?.clone();
    let endpoint = global.endpoint_url.as_deref();
    let text = starter_config(
        &identity.account,
        ctx.region(),
        env.settings.aws.profile.as_deref(),
        endpoint,
    );

    let mut backup = None;
    if path.exists() {
        let kept = PathBuf::from(format!("{}.bak", path.display()));
        std::fs::copy(&path, &kept).with_context(|| {
            format!(
                "cannot keep a backup of {} at {}",
                path.display(),
                kept.display()
            )
        })?;
        backup = Some(kept);
    }
    write_private(&path, &text)?;

    let next = ["autosnap config check", "autosnap volume list"];
    match env.output {
        OutputFormat::Json => output::print_json(&Initialized {
            path: path.display().to_string(),
            account_id: &identity.account,
            region: ctx.region(),
            arn: &identity.arn,
            backup: backup.map(|b| b.display().to_string()),
            next: &next,
        })?,
        // People read this on the terminal; standard output stays empty.
        _ => {
            eprintln!(
                "wrote {} for account {} in {} (as {}){}",
                path.display(),
                identity.account,
                ctx.region(),
                identity.arn,
                backup
                    .map(|b| format!("; the old file is {}", b.display()))
                    .unwrap_or_default()
            );
            eprintln!("next: `{}`, then `{}`", next[0], next[1]);
        }
    }
    Ok(Exit::Success)
}

/// `init -o json`: what was written and what to run next.
#[derive(Serialize)]
struct Initialized<'a> {
    path: String,
    account_id: &'a str,
    region: &'a str,
    arn: &'a str,
    /// The previous file, kept (with --force).
    backup: Option<String>,
    next: &'a [&'a str],
}

/// Where `init` writes: `-c`, then `$AUTOSNAP_CONFIG`, then the user config dir.
fn target_path(global: &GlobalArgs) -> anyhow::Result<PathBuf> {
    if let Some(p) = &global.config {
        return Ok(p.clone());
    }
    if let Some(p) = std::env::var_os(CONFIG_ENV).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    user_config_path().ok_or_else(|| {
        UsageError("cannot find a user config directory: pass -c PATH".into()).into()
    })
}

/// Writes a file readable by its owner only, through a temporary file and a
/// rename so that a crash never leaves half a config.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("autosnap"),
        std::process::id()
    ));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    // Errors name `path`, the file the user will look for, not the temp file behind it.
    let mut f = opts.open(&tmp).with_context(|| {
        format!(
            "cannot write {}: cannot create a file in {}",
            path.display(),
            dir.display()
        )
    })?;
    let written = f
        .write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .and_then(|()| {
            drop(f);
            std::fs::rename(&tmp, path)
        });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(())
}

fn starter_config(
    account: &str,
    region: &str,
    profile: Option<&str>,
    endpoint: Option<&str>,
) -> String {
    let profile_line = match profile {
        Some(p) => format!("profile = \"{p}\""),
        None => "# profile = \"prod\"                  # a profile from ~/.aws/config (SSO works)"
            .into(),
    };
    let endpoint_line = match endpoint {
        Some(e) => format!("endpoint_url = \"{e}\""),
        None => "# endpoint_url = \"http://127.0.0.1:5000\"  # send AWS calls elsewhere (a local emulator)".into(),
    };
    format!(
        r#"# autosnap configuration. Reference: the README's "Configuration" section.
# Precedence, highest first: command line > environment > this file > AWS SDK defaults.
# Unknown keys are errors, so typos are caught.

[aws]
# The account these settings are for; `autosnap config check` fails if the
# credentials in use belong to another account.
account_id = "{account}"
region = "{region}"
{profile_line}
# role_arn = "arn:aws:iam::{account}:role/autosnap"   # assume this role through STS
# external_id = "..."                                 # when the role requires one
{endpoint_line}
# max_attempts = 5                     # attempts per AWS call (standard retry mode)
#
# Credentials come from the standard AWS chain (environment, profiles, SSO, web
# identity, instance metadata). Static keys (access_key_id, secret_access_key)
# are accepted here only if this file is readable by its owner alone (chmod 600);
# a profile is the better place for them.

[defaults]
# Copy each volume's own tags (Name, ...) onto its snapshots.
copy_volume_tags = true
# Extra tags for everything autosnap creates:
# tags = {{ CostCenter = "ops" }}
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use autosnap_core::config::ConfigFile;

    #[test]
    fn starter_config_parses_and_has_no_secrets() {
        for (profile, endpoint) in [(None, None), (Some("prod"), Some("http://127.0.0.1:5000"))] {
            let text = starter_config("123456789012", "eu-west-1", profile, endpoint);
            let c = ConfigFile::parse(&text, Path::new("x.toml")).unwrap();
            assert_eq!(c.aws.account_id.as_deref(), Some("123456789012"));
            assert_eq!(c.aws.region.as_deref(), Some("eu-west-1"));
            assert_eq!(c.aws.profile.as_deref(), profile);
            assert_eq!(c.aws.endpoint_url.as_deref(), endpoint);
            assert!(!c.has_static_keys());
        }
    }
}
