//! Resolved runtime settings: the config file found and parsed, merged with
//! the environment and the command line. Precedence, highest first:
//! command line > environment > config file > the AWS SDK's own chain.
//! The rest of the CLI only sees `Settings`, never raw flags.

use std::path::{Path, PathBuf};

use anyhow::Context;
use autosnap_aws::{AwsSettings, StaticKeys};
use autosnap_core::config::{check_endpoint_url, ConfigFile};
use autosnap_core::ids::is_plausible_region;
use serde::Serialize;

use crate::cli::GlobalArgs;
use crate::exit::UsageError;

/// Environment variable naming the config file.
pub const CONFIG_ENV: &str = "AUTOSNAP_CONFIG";
/// File looked for in the current directory.
pub const LOCAL_CONFIG: &str = "autosnap.toml";

/// Where the config file came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfigOrigin {
    Flag,
    Environment,
    CurrentDirectory,
    UserConfigDir,
}

#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub path: Option<(PathBuf, ConfigOrigin)>,
    pub file: ConfigFile,
}

/// One resolved value and where it came from.
#[derive(Debug, Clone, Serialize)]
pub struct Setting {
    pub value: Option<String>,
    pub source: String,
}

impl Setting {
    fn none(source: &str) -> Setting {
        Setting {
            value: None,
            source: source.into(),
        }
    }
}

/// Everything commands need to know about the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config: LoadedConfig,
    pub region: Setting,
    pub profile: Setting,
    pub endpoint_url: Setting,
    pub role_arn: Setting,
    pub credentials: Setting,
    pub max_attempts: Setting,
    pub aws: AwsSettings,
}

/// The user's config file location (`~/.config/autosnap/config.toml`).
pub fn user_config_path() -> Option<PathBuf> {
    dirs::config_dir().map(|d| d.join("autosnap").join("config.toml"))
}

/// Finds the config file: `-c`, then `$AUTOSNAP_CONFIG`, then
/// `./autosnap.toml`, then the user config dir. A file named explicitly must
/// exist; the implicit ones are optional.
pub fn locate(flag: Option<&Path>) -> anyhow::Result<Option<(PathBuf, ConfigOrigin)>> {
    if let Some(p) = flag {
        if !p.exists() {
            return Err(UsageError(format!(
                "config file {} (given with -c/--config) does not exist: create it with `autosnap -c {} init`",
                p.display(),
                p.display()
            ))
            .into());
        }
        return Ok(Some((p.to_path_buf(), ConfigOrigin::Flag)));
    }
    if let Some(p) = std::env::var_os(CONFIG_ENV).filter(|v| !v.is_empty()) {
        let p = PathBuf::from(p);
        if !p.exists() {
            return Err(UsageError(format!(
                "config file {} (from ${CONFIG_ENV}) does not exist: create it with `autosnap init`, or unset {CONFIG_ENV}",
                p.display()
            ))
            .into());
        }
        return Ok(Some((p, ConfigOrigin::Environment)));
    }
    let local = PathBuf::from(LOCAL_CONFIG);
    if local.is_file() {
        return Ok(Some((local, ConfigOrigin::CurrentDirectory)));
    }
    if let Some(p) = user_config_path().filter(|p| p.is_file()) {
        return Ok(Some((p, ConfigOrigin::UserConfigDir)));
    }
    Ok(None)
}

/// Reads, parses and validates the config file, if there is one.
pub fn load(flag: Option<&Path>) -> anyhow::Result<LoadedConfig> {
    let path = locate(flag)?;
    let file = match &path {
        None => ConfigFile::default(),
        Some((p, _)) => {
            let text = std::fs::read_to_string(p).map_err(|source| {
                autosnap_core::config::ConfigError::Read {
                    path: p.clone(),
                    source,
                }
            })?;
            let file = ConfigFile::parse(&text, p)?;
            if file.has_static_keys() {
                check_private(p)?;
            }
            file
        }
    };
    Ok(LoadedConfig { path, file })
}

/// Static keys may only live in a file nobody else can read.
fn check_private(path: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .with_context(|| format!("cannot read the permissions of {}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(UsageError(format!(
                "config file {} holds static AWS keys but other users can read it (mode {:04o}): \
                 run `chmod 600 {}`, or better, move the keys to a profile (`aws configure`) and \
                 remove them from the file",
                path.display(),
                mode & 0o7777,
                path.display()
            ))
            .into());
        }
    }
    Ok(())
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Any endpoint variable the SDK reads by itself.
fn endpoint_from_env() -> Option<(String, String)> {
    if let Some(v) = env("AWS_ENDPOINT_URL") {
        return Some(("AWS_ENDPOINT_URL".into(), v));
    }
    for svc in ["EC2", "EBS", "S3", "STS"] {
        let name = format!("AWS_ENDPOINT_URL_{svc}");
        if let Some(v) = env(&name) {
            return Some((name, v));
        }
    }
    None
}

/// Merges the command line, the environment and the file.
pub fn resolve(global: &GlobalArgs, config: LoadedConfig) -> anyhow::Result<Settings> {
    let file = &config.file.aws;
    let file_source = || match &config.path {
        Some((p, _)) => format!("config file {}", p.display()),
        None => "config file".into(),
    };

    let pick = |flag: Option<&String>,
                flag_name: &str,
                env_names: &[&str],
                file_value: Option<&String>,
                fallback: &str|
     -> Setting {
        if let Some(v) = flag {
            return Setting {
                value: Some(v.clone()),
                source: flag_name.into(),
            };
        }
        for name in env_names {
            if let Some(v) = env(name) {
                return Setting {
                    value: Some(v),
                    source: format!("environment {name}"),
                };
            }
        }
        if let Some(v) = file_value {
            return Setting {
                value: Some(v.clone()),
                source: file_source(),
            };
        }
        Setting::none(fallback)
    };

    let region = pick(
        global.region.as_ref(),
        "--region",
        &["AWS_REGION", "AWS_DEFAULT_REGION"],
        file.region.as_ref(),
        "AWS SDK chain (profile or instance metadata)",
    );
    if let Some(r) = &region.value {
        if !is_plausible_region(r) {
            return Err(UsageError(format!(
                "region '{r}' (from {}) is not a region name such as us-east-1",
                region.source
            ))
            .into());
        }
    }
    let profile = pick(
        global.profile.as_ref(),
        "--profile",
        &["AWS_PROFILE"],
        file.profile.as_ref(),
        "default profile",
    );

    // The endpoint: a flag always wins; an environment variable is left for
    // the SDK to apply (it knows the per-service ones); the file comes last.
    let (endpoint_url, endpoint_to_pass) = if let Some(u) = &global.endpoint_url {
        check_endpoint_url(u).map_err(|p| UsageError(format!("--endpoint-url: {p}")))?;
        (
            Setting {
                value: Some(u.clone()),
                source: "--endpoint-url".into(),
            },
            Some(u.clone()),
        )
    } else if let Some((name, v)) = endpoint_from_env() {
        (
            Setting {
                value: Some(v),
                source: format!("environment {name}"),
            },
            None,
        )
    } else if let Some(u) = &file.endpoint_url {
        (
            Setting {
                value: Some(u.clone()),
                source: file_source(),
            },
            Some(u.clone()),
        )
    } else {
        (Setting::none("AWS default endpoints"), None)
    };

    let role_arn = Setting {
        value: file.role_arn.clone(),
        source: if file.role_arn.is_some() {
            file_source()
        } else {
            "none".into()
        },
    };
    let max_attempts = match (env("AWS_MAX_ATTEMPTS"), file.max_attempts) {
        (Some(v), _) => Setting {
            value: Some(v),
            source: "environment AWS_MAX_ATTEMPTS".into(),
        },
        (None, Some(n)) => Setting {
            value: Some(n.to_string()),
            source: file_source(),
        },
        (None, None) => Setting {
            value: Some("3".into()),
            source: "AWS SDK default (standard retry mode)".into(),
        },
    };

    // Static keys from the file apply only when nothing with higher
    // precedence names credentials.
    let env_keys = env("AWS_ACCESS_KEY_ID").is_some();
    let use_file_keys = file.access_key_id.is_some() && global.profile.is_none() && !env_keys;
    let credentials = Setting {
        value: Some(
            if use_file_keys {
                "static keys (***)"
            } else if env_keys {
                "environment keys (***)"
            } else {
                "AWS SDK chain"
            }
            .into(),
        ),
        source: if use_file_keys {
            file_source()
        } else if env_keys {
            "environment AWS_ACCESS_KEY_ID".into()
        } else {
            "profile, SSO, web identity or instance metadata".into()
        },
    };
    let static_keys = if use_file_keys {
        Some(StaticKeys {
            access_key_id: file.access_key_id.clone().unwrap_or_default(),
            secret_access_key: file
                .secret_access_key
                .as_ref()
                .map(|s| s.expose().to_string())
                .unwrap_or_default(),
            session_token: file.session_token.as_ref().map(|s| s.expose().to_string()),
        })
    } else {
        None
    };

    let aws = AwsSettings {
        region: region.value.clone(),
        profile: if static_keys.is_some() {
            None
        } else {
            profile.value.clone()
        },
        endpoint_url: endpoint_to_pass,
        endpoint_for_messages: endpoint_url.value.clone(),
        role_arn: file.role_arn.clone(),
        external_id: file.external_id.as_ref().map(|s| s.expose().to_string()),
        static_keys,
        max_attempts: if env("AWS_MAX_ATTEMPTS").is_some() {
            None
        } else {
            file.max_attempts
        },
    };

    Ok(Settings {
        config,
        region,
        profile,
        endpoint_url,
        role_arn,
        credentials,
        max_attempts,
        aws,
    })
}
