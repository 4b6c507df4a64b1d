//! Who am I: the instance id, region and block-device mapping from the
//! instance metadata service (IMDSv2: a session token first, then GETs).
//! `AWS_EC2_METADATA_SERVICE_ENDPOINT` points it elsewhere (tests use a
//! local server); `AWS_EC2_METADATA_DISABLED=true` turns it off.

use std::time::Duration;

use aws_config::imds::Client;

/// Metadata calls are local: fail fast when not on EC2.
const IMDS_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ImdsError {
    #[error("instance metadata is disabled (AWS_EC2_METADATA_DISABLED=true): autosnap needs it to find this instance's id and region; unset it, or run this on an EC2 instance with metadata enabled")]
    Disabled,
    #[error("cannot read instance metadata ({path}): {detail}. Is this an EC2 instance with IMDSv2 enabled (metadata options HttpEndpoint=enabled)? Mapping mounts to volumes needs it")]
    Unavailable { path: String, detail: String },
}

/// This instance, as its metadata describes it.
#[derive(Debug, Clone)]
pub struct InstanceIdentity {
    pub instance_id: String,
    pub region: String,
    pub availability_zone: String,
    /// (mapping name such as `ebs1` or `root`, device such as `sdf`) pairs.
    pub block_device_mapping: Vec<(String, String)>,
}

fn client() -> Result<Client, ImdsError> {
    if std::env::var("AWS_EC2_METADATA_DISABLED")
        .map(|v| v.eq_ignore_ascii_case("true"))
        .unwrap_or(false)
    {
        return Err(ImdsError::Disabled);
    }
    Ok(Client::builder()
        .connect_timeout(IMDS_TIMEOUT)
        .read_timeout(IMDS_TIMEOUT)
        .max_attempts(2)
        .build())
}

async fn get(client: &Client, path: &str) -> Result<String, ImdsError> {
    client
        .get(path)
        .await
        .map(|s| s.as_ref().trim().to_string())
        .map_err(|e| {
            use std::error::Error;
            let mut detail = e.to_string();
            let mut cur = e.source();
            while let Some(c) = cur {
                detail = format!("{detail}: {c}");
                cur = c.source();
            }
            ImdsError::Unavailable {
                path: path.to_string(),
                detail,
            }
        })
}

/// Reads this instance's identity.
pub async fn instance_identity() -> Result<InstanceIdentity, ImdsError> {
    let client = client()?;
    let instance_id = get(&client, "/latest/meta-data/instance-id").await?;
    let region = get(&client, "/latest/meta-data/placement/region").await?;
    let availability_zone = get(&client, "/latest/meta-data/placement/availability-zone").await?;
    let mut block_device_mapping = Vec::new();
    // Only Xen instances need the mapping; a failure to list it is not fatal.
    if let Ok(names) = get(&client, "/latest/meta-data/block-device-mapping/").await {
        for name in names.lines().map(str::trim).filter(|n| !n.is_empty()) {
            let name = name.trim_end_matches('/');
            if let Ok(dev) = get(
                &client,
                &format!("/latest/meta-data/block-device-mapping/{name}"),
            )
            .await
            {
                block_device_mapping.push((name.to_string(), dev));
            }
        }
    }
    Ok(InstanceIdentity {
        instance_id,
        region,
        availability_zone,
        block_device_mapping,
    })
}
