//! Resolved runtime settings: the config file found and parsed, merged with
//! the environment and the command line. Precedence, highest first:
//! command line > environment > config file > the AWS SDK's own chain.
//! The rest of the CLI only sees `Settings`, never raw flags.

use std::path::{Path, PathBuf};

use anyhow::Context;
use autosnap_aws::{AwsSettings, StaticKeys};
use autosnap_core::config::{check_endpoint_url, ConfigFile};
use autosnap_core::region;
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

/// Reads, parses and validates the config file, if there is one. The file
/// is refused when someone other than the running user or root could have
/// written it (see [`check_trusted`]), unless `allow_insecure`
/// (`--allow-insecure-config`), which turns the refusal into a warning.
pub fn load(flag: Option<&Path>, allow_insecure: bool) -> anyhow::Result<LoadedConfig> {
    let path = locate(flag)?;
    let file = match &path {
        None => ConfigFile::default(),
        Some((p, _)) => {
            let read_error = |source| autosnap_core::config::ConfigError::Read {
                path: p.clone(),
                source,
            };
            // Checked and read through one open file: no swap in between.
            let mut opened = std::fs::File::open(p).map_err(read_error)?;
            let meta = opened.metadata().map_err(read_error)?;
            check_trusted(p, &meta, allow_insecure)?;
            let mut text = String::new();
            std::io::Read::read_to_string(&mut opened, &mut text).map_err(read_error)?;
            let file = ConfigFile::parse(&text, p)?;
            if file.has_static_keys() {
                check_private(p)?;
            }
            file
        }
    };
    Ok(LoadedConfig { path, file })
}

/// Why a config file might not be the trusted user's, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Untrusted {
    reason: String,
    fix: String,
}

/// The config decides which hooks autosnap runs (as root, on a server) and
/// where backups go: it must be writable only by the running user or root.
/// Refused, with the reason and the fix, when the file is owned by anyone
/// else or writable by group or others, or when a directory above it is
/// owned by anyone else or writable by group or others without the sticky
/// bit (then anyone can replace the file). Files the config names (hook
/// scripts) are not checked.
fn check_trusted(
    path: &Path,
    meta: &std::fs::Metadata,
    allow_insecure: bool,
) -> anyhow::Result<()> {
    let me = autosnap_freeze::harden::effective_uid();
    let Some(problem) = untrusted(path, meta, me) else {
        return Ok(());
    };
    if allow_insecure {
        tracing::warn!(
            "using config file {} although {} (--allow-insecure-config)",
            path.display(),
            problem.reason
        );
        return Ok(());
    }
    Err(UsageError(format!(
        "refusing config file {}: {}. Its policies can run hooks (as root when autosnap runs as \
         root) and decide where backups go, so only you or root may be able to change it. {}, \
         or pass --allow-insecure-config to use it anyway",
        path.display(),
        problem.reason,
        problem.fix
    ))
    .into())
}

#[cfg(unix)]
fn untrusted(path: &Path, meta: &std::fs::Metadata, me: u32) -> Option<Untrusted> {
    use std::os::unix::fs::MetadataExt;
    const GROUP_OR_OTHER_WRITE: u32 = 0o022;
    const STICKY: u32 = 0o1000;
    let trusted_owner = |uid: u32| uid == me || uid == 0;
    if !trusted_owner(meta.uid()) {
        return Some(Untrusted {
            reason: format!(
                "it is owned by {}, not by {}",
                user_name(meta.uid()),
                trusted_owners(me)
            ),
            fix: format!(
                "Take it over with `chown {} {}` (as root), or use your own copy",
                login_name(me).unwrap_or_else(|| me.to_string()),
                path.display()
            ),
        });
    }
    if meta.mode() & GROUP_OR_OTHER_WRITE != 0 {
        return Some(Untrusted {
            reason: format!(
                "it is writable by other users (mode {:04o})",
                meta.mode() & 0o7777
            ),
            fix: format!("Run `chmod go-w {}`", path.display()),
        });
    }
    // Directories above it: the file's real location, and where the name
    // given points from (a symlink such as ./autosnap.toml).
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut add_ancestors = |start: Option<PathBuf>| {
        for dir in start
            .iter()
            .flat_map(|p| p.ancestors().map(Path::to_path_buf))
        {
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
    };
    add_ancestors(
        std::fs::canonicalize(path)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf)),
    );
    let given_parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    add_ancestors(std::fs::canonicalize(given_parent).ok());
    for dir in dirs {
        let Ok(dir_meta) = std::fs::metadata(&dir) else {
            continue;
        };
        if !trusted_owner(dir_meta.uid()) {
            return Some(Untrusted {
                reason: format!(
                    "the directory {} above it is owned by {}, who can replace the file",
                    dir.display(),
                    user_name(dir_meta.uid())
                ),
                fix: "Move the file to a directory that only you or root can change".into(),
            });
        }
        if dir_meta.mode() & GROUP_OR_OTHER_WRITE != 0 && dir_meta.mode() & STICKY == 0 {
            return Some(Untrusted {
                reason: format!(
                    "the directory {} above it is writable by other users (mode {:04o}) without \
                     the sticky bit, so anyone can replace the file",
                    dir.display(),
                    dir_meta.mode() & 0o7777
                ),
                fix: format!(
                    "Run `chmod go-w {}`, or move the file elsewhere",
                    dir.display()
                ),
            });
        }
    }
    None
}

#[cfg(not(unix))]
fn untrusted(_: &Path, _: &std::fs::Metadata, _: u32) -> Option<Untrusted> {
    None
}

/// Who may own the config: `root`, or `you (name (uid N)) or root`.
fn trusted_owners(me: u32) -> String {
    if me == 0 {
        "root".into()
    } else {
        format!("you, {}, or root", user_name(me))
    }
}

/// `name (uid N)`, or `uid N` when /etc/passwd does not name it.
fn user_name(uid: u32) -> String {
    match login_name(uid) {
        Some(name) => format!("{name} (uid {uid})"),
        None => format!("uid {uid}"),
    }
}

fn login_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id: u32 = fields.nth(1)?.parse().ok()?;
        (id == uid).then(|| name.to_string())
    })
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
    // Checked here, before any call: the SDK would only fail on DNS (or, against an
    // emulator, not at all).
    if let Some(r) = &region.value {
        if let Some(problem) = region::region_problem(r) {
            return Err(UsageError(format!("{}: {problem}", region.source)).into());
        }
        if let Some(note) = region::unknown_region_note(r) {
            tracing::warn!("{note} (from {})", region.source);
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
