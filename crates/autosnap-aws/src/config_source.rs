//! Where autosnap's config comes from when it runs as an AWS Lambda function: an S3 object
//! (`AUTOSNAP_CONFIG_S3=s3://bucket/key`), an SSM parameter (`AUTOSNAP_CONFIG_SSM=/name`,
//! read with decryption, so a SecureString works) or the TOML text itself (`AUTOSNAP_CONFIG`).
//! Exactly one of them; it is read anew on every invocation, so an edited config applies to
//! the next run.

use crate::context::AwsContext;
use crate::error::AwsError;
use crate::s3::S3;

/// The environment variables, in the order they are described.
pub const S3_VAR: &str = "AUTOSNAP_CONFIG_S3";
pub const SSM_VAR: &str = "AUTOSNAP_CONFIG_SSM";
pub const INLINE_VAR: &str = "AUTOSNAP_CONFIG";

/// One source of the config text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    S3 { bucket: String, key: String },
    Ssm { name: String },
    Inline(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigSourceError {
    #[error(
        "no config: set exactly one of {S3_VAR} (s3://bucket/key), {SSM_VAR} (a parameter \
         name) or {INLINE_VAR} (the TOML text) in the function's environment"
    )]
    Missing,
    #[error(
        "{} are set together: set exactly one of {S3_VAR}, {SSM_VAR} or {INLINE_VAR}",
        .0.join(" and ")
    )]
    Several(Vec<&'static str>),
    #[error("{S3_VAR}={0} is not s3://BUCKET/KEY")]
    BadS3Url(String),
    #[error("cannot read the config from {from}: {source}")]
    Fetch {
        from: String,
        #[source]
        source: AwsError,
    },
    #[error("the config from {0} is not UTF-8 text")]
    NotText(String),
}

impl ConfigSource {
    /// The one source `var` names (`var` reads the environment; empty counts as unset).
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigSourceError> {
        let set: Vec<(&'static str, String)> = [S3_VAR, SSM_VAR, INLINE_VAR]
            .into_iter()
            .filter_map(|name| {
                var(name)
                    .filter(|v| !v.trim().is_empty())
                    .map(|v| (name, v))
            })
            .collect();
        match set.as_slice() {
            [] => Err(ConfigSourceError::Missing),
            [(name, value)] if *name == S3_VAR => {
                let rest = value
                    .trim()
                    .strip_prefix("s3://")
                    .ok_or_else(|| ConfigSourceError::BadS3Url(value.clone()))?;
                match rest.split_once('/') {
                    Some((bucket, key)) if !bucket.is_empty() && !key.is_empty() => {
                        Ok(ConfigSource::S3 {
                            bucket: bucket.to_string(),
                            key: key.to_string(),
                        })
                    }
                    _ => Err(ConfigSourceError::BadS3Url(value.clone())),
                }
            }
            [(name, value)] if *name == SSM_VAR => Ok(ConfigSource::Ssm {
                name: value.trim().to_string(),
            }),
            [(_, value)] => Ok(ConfigSource::Inline(value.clone())),
            several => Err(ConfigSourceError::Several(
                several.iter().map(|(n, _)| *n).collect(),
            )),
        }
    }

    /// Where the config comes from, for messages (never its text).
    pub fn describe(&self) -> String {
        match self {
            ConfigSource::S3 { bucket, key } => format!("s3://{bucket}/{key}"),
            ConfigSource::Ssm { name } => format!("SSM parameter {name}"),
            ConfigSource::Inline(_) => format!("${INLINE_VAR}"),
        }
    }

    /// The config text.
    pub async fn fetch(&self, ctx: &AwsContext) -> Result<String, ConfigSourceError> {
        let fetch_err = |source| ConfigSourceError::Fetch {
            from: self.describe(),
            source,
        };
        match self {
            ConfigSource::Inline(text) => Ok(text.clone()),
            ConfigSource::S3 { bucket, key } => {
                let s3 = S3::connect(ctx, ctx.region()).await.map_err(fetch_err)?;
                let bytes = s3.get(bucket, key).await.map_err(fetch_err)?;
                String::from_utf8(bytes).map_err(|_| ConfigSourceError::NotText(self.describe()))
            }
            ConfigSource::Ssm { name } => {
                let client = aws_sdk_ssm::Client::new(ctx.sdk_config());
                let out = client
                    .get_parameter()
                    .name(name)
                    .with_decryption(true)
                    .send()
                    .await
                    .map_err(|e| {
                        let site = ctx.call_site("SSM", ctx.region());
                        fetch_err(ssm_error(e, name, &site))
                    })?;
                out.parameter
                    .and_then(|p| p.value)
                    .ok_or_else(|| ConfigSourceError::NotText(self.describe()))
            }
        }
    }
}

/// A GetParameter error: a missing parameter is named as such, the rest as any AWS error.
fn ssm_error(
    e: aws_smithy_runtime_api::client::result::SdkError<
        aws_sdk_ssm::operation::get_parameter::GetParameterError,
        aws_smithy_runtime_api::client::orchestrator::HttpResponse,
    >,
    name: &str,
    site: &crate::error::CallSite,
) -> AwsError {
    if e.as_service_error()
        .is_some_and(|s| s.is_parameter_not_found())
    {
        return AwsError::NotFound {
            kind: "SSM parameter",
            id: name.to_string(),
            region: site.region.clone(),
            account: String::new(),
        };
    }
    AwsError::from_sdk(e, "GetParameter", Some(("SSM parameter", name)), site)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn exactly_one_variable_names_the_source() {
        assert_eq!(
            ConfigSource::from_env(env(&[(S3_VAR, "s3://b/dir/autosnap.toml")])).unwrap(),
            ConfigSource::S3 {
                bucket: "b".into(),
                key: "dir/autosnap.toml".into()
            }
        );
        assert_eq!(
            ConfigSource::from_env(env(&[(SSM_VAR, "/autosnap/config")])).unwrap(),
            ConfigSource::Ssm {
                name: "/autosnap/config".into()
            }
        );
        assert_eq!(
            ConfigSource::from_env(env(&[(INLINE_VAR, "[[policy]]"), (S3_VAR, " ")])).unwrap(),
            ConfigSource::Inline("[[policy]]".into())
        );
    }

    #[test]
    fn none_several_or_a_bad_url_is_refused_with_the_variables_named() {
        let missing = ConfigSource::from_env(env(&[])).unwrap_err().to_string();
        for v in [S3_VAR, SSM_VAR, INLINE_VAR] {
            assert!(missing.contains(v), "{missing}");
        }
        let several = ConfigSource::from_env(env(&[(S3_VAR, "s3://b/k"), (SSM_VAR, "/p")]))
            .unwrap_err()
            .to_string();
        assert!(
            several.starts_with("AUTOSNAP_CONFIG_S3 and AUTOSNAP_CONFIG_SSM are set together"),
            "{several}"
        );
        for bad in ["b/k", "s3://b", "s3:///k", "s3://b/"] {
            let e = ConfigSource::from_env(env(&[(S3_VAR, bad)])).unwrap_err();
            assert!(matches!(e, ConfigSourceError::BadS3Url(_)), "{bad}: {e}");
        }
    }
}
