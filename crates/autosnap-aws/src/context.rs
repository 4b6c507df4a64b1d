//! Building AWS clients: the standard credential chain (environment, shared
//! profiles, SSO, web identity, instance metadata), an optional role to
//! assume, an optional endpoint override, standard retries and timeouts.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::{future, ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use tokio::sync::OnceCell;

use crate::ec2::Ec2;
use crate::error::{AwsError, CallSite};

/// Static keys from the config file (already checked to be private).
#[derive(Clone)]
pub struct StaticKeys {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for StaticKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StaticKeys(***)")
    }
}

/// What the CLI resolved from flags, environment and config file. `None`
/// leaves the choice to the SDK's own chain.
#[derive(Debug, Clone, Default)]
pub struct AwsSettings {
    pub region: Option<String>,
    pub profile: Option<String>,
    /// Set only when the endpoint comes from a flag or the config file; the
    /// SDK reads `AWS_ENDPOINT_URL` and `AWS_ENDPOINT_URL_<SERVICE>` itself.
    pub endpoint_url: Option<String>,
    /// The endpoint in effect, for messages (including one from the environment).
    pub endpoint_for_messages: Option<String>,
    pub role_arn: Option<String>,
    pub external_id: Option<String>,
    pub static_keys: Option<StaticKeys>,
    pub max_attempts: Option<u32>,
}

/// Connect timeout: a closed port or a black-holed address fails fast.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// One attempt of one call; waits are built from many short calls.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);

/// A loaded AWS configuration from which service clients are made.
pub struct AwsContext {
    config: SdkConfig,
    region: String,
    endpoint: Option<String>,
    identity: OnceCell<CallerIdentity>,
    /// One EC2 client per region, made on first use ([`AwsContext::ec2_in`]).
    ec2_clients: Mutex<HashMap<String, Ec2>>,
}

/// Who the credentials belong to (STS GetCallerIdentity).
#[derive(Debug, Clone)]
pub struct CallerIdentity {
    pub account: String,
    pub arn: String,
}

impl AwsContext {
    /// Loads configuration and checks that a region and credentials can be
    /// found, so that their absence is reported before any work starts.
    pub async fn connect(settings: &AwsSettings) -> Result<AwsContext, AwsError> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(p) = &settings.profile {
            loader = loader.profile_name(p);
        }
        if let Some(r) = &settings.region {
            loader = loader.region(Region::new(r.clone()));
        }
        if let Some(u) = &settings.endpoint_url {
            loader = loader.endpoint_url(u);
        }
        if let Some(keys) = &settings.static_keys {
            loader = loader.credentials_provider(Credentials::new(
                keys.access_key_id.clone(),
                keys.secret_access_key.clone(),
                keys.session_token.clone(),
                None,
                "autosnap-config-file",
            ));
        }
        if let Some(n) = settings.max_attempts {
            loader = loader.retry_config(RetryConfig::standard().with_max_attempts(n));
        }
        loader = loader.timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .build(),
        );
        let mut config = loader.load().await;

        let region = config
            .region()
            .map(|r| r.to_string())
            .ok_or(AwsError::NoRegion)?;
        // A region given by flag, environment or config file was checked by the caller;
        // one from a profile is checked here, still before any call.
        if settings.region.is_none() {
            if let Some(problem) = autosnap_core::region::region_problem(&region) {
                return Err(AwsError::InvalidRegion {
                    origin: format!(
                        "AWS profile '{}' in the shared config file (AWS_CONFIG_FILE or ~/.aws/config)",
                        settings.profile.as_deref().unwrap_or("default")
                    ),
                    problem,
                });
            }
            if let Some(note) = autosnap_core::region::unknown_region_note(&region) {
                tracing::warn!("{note} (from the AWS profile)");
            }
        }

        if let Some(role) = &settings.role_arn {
            let mut builder = AssumeRoleProvider::builder(role.clone())
                .session_name("autosnap")
                .configure(&config);
            if let Some(ext) = &settings.external_id {
                builder = builder.external_id(ext.clone());
            }
            let provider = builder.build().await;
            config = config
                .to_builder()
                .credentials_provider(SharedCredentialsProvider::new(provider))
                .build();
        }

        // Resolve credentials once now: a missing or broken chain is the most
        // common first-run problem and deserves its own message. Those credentials are the
        // first the clients use (the SDK's cache asks the provider again before they
        // expire), so checking them costs no second AssumeRole or chain lookup.
        let Some(provider) = config.credentials_provider() else {
            return Err(AwsError::NoCredentials {
                detail: "no credential provider is configured".into(),
            });
        };
        let first = provider
            .provide_credentials()
            .await
            .map_err(|e| AwsError::NoCredentials {
                detail: credential_error_detail(&e),
            })?;
        let config = config
            .to_builder()
            .credentials_provider(SharedCredentialsProvider::new(FirstThen::new(
                first, provider,
            )))
            .build();

        Ok(AwsContext {
            config,
            region,
            endpoint: settings.endpoint_for_messages.clone(),
            identity: OnceCell::new(),
            ec2_clients: Mutex::new(HashMap::new()),
        })
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    /// The same region, endpoint and settings with other credentials (another account's role,
    /// see [`crate::accounts`]); who they belong to is asked anew.
    pub(crate) fn with_credentials(&self, provider: SharedCredentialsProvider) -> AwsContext {
        AwsContext {
            config: self
                .config
                .to_builder()
                .credentials_provider(provider)
                .build(),
            region: self.region.clone(),
            endpoint: self.endpoint.clone(),
            identity: OnceCell::new(),
            ec2_clients: Mutex::new(HashMap::new()),
        }
    }

    pub fn sdk_config(&self) -> &SdkConfig {
        &self.config
    }

    pub fn call_site(&self, service: &'static str, region: &str) -> CallSite {
        CallSite {
            service,
            region: region.to_string(),
            account: self.identity.get().map(|i| i.account.clone()),
            endpoint: self.endpoint.clone(),
        }
    }

    /// Who the credentials belong to; one STS call, then cached.
    pub async fn identity(&self) -> Result<&CallerIdentity, AwsError> {
        self.identity
            .get_or_try_init(|| async {
                let sts = aws_sdk_sts::Client::new(&self.config);
                let site = self.call_site("STS", &self.region);
                let out = sts
                    .get_caller_identity()
                    .send()
                    .await
                    .map_err(|e| AwsError::from_sdk(e, "GetCallerIdentity", None, &site))?;
                Ok(CallerIdentity {
                    account: out.account().unwrap_or_default().to_string(),
                    arn: out.arn().unwrap_or_default().to_string(),
                })
            })
            .await
    }

    /// The account id of the credentials (needed to list only our own snapshots).
    pub async fn account_id(&self) -> Result<String, AwsError> {
        Ok(self.identity().await?.account.clone())
    }

    /// An EC2 client for the configured region, knowing our account.
    pub async fn ec2(&self) -> Result<Ec2, AwsError> {
        self.ec2_in(&self.region.clone()).await
    }

    /// An EC2 client for another region (copies), same credentials; made once per region.
    pub async fn ec2_in(&self, region: &str) -> Result<Ec2, AwsError> {
        let account = self.account_id().await?;
        let mut clients = self.ec2_clients.lock().expect("not poisoned");
        let ec2 = clients.entry(region.to_string()).or_insert_with(|| {
            let conf = aws_sdk_ec2::config::Builder::from(&self.config)
                .region(Region::new(region.to_string()))
                .build();
            let client = aws_sdk_ec2::Client::from_conf(conf);
            let mut site = self.call_site("EC2", region);
            site.account = Some(account.clone());
            Ec2::new(client, site, account)
        });
        Ok(ec2.clone())
    }
}

/// Credentials already fetched, then the provider's: a check of the credentials (the
/// context's, an account's role in [`crate::accounts::assume`]) is also the session the first
/// calls use, not a lookup or an AssumeRole of its own.
#[derive(Debug)]
pub(crate) struct FirstThen<P> {
    first: std::sync::Mutex<Option<Credentials>>,
    then: P,
}

impl<P> FirstThen<P> {
    pub(crate) fn new(first: Credentials, then: P) -> FirstThen<P> {
        FirstThen {
            first: std::sync::Mutex::new(Some(first)),
            then,
        }
    }
}

impl<P: ProvideCredentials> ProvideCredentials for FirstThen<P> {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        let first = self.first.lock().expect("not poisoned").take();
        match first {
            Some(c) => future::ProvideCredentials::ready(Ok(c)),
            None => self.then.provide_credentials(),
        }
    }
}

pub(crate) fn credential_error_detail(
    e: &aws_credential_types::provider::error::CredentialsError,
) -> String {
    use std::error::Error;
    let mut msg = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        msg = format!("{msg}: {s}");
        cur = s.source();
    }
    msg
}
