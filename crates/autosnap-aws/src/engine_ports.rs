//! The engine's traits (autosnap-engine's `ports`) over this crate's SDK wrappers: EBS direct
//! for blocks, EC2 for snapshots and AMIs, S3 for a repository's objects. Only translation
//! here (ids, base64 checksums, error kinds); retries and concurrency limits are the
//! wrappers' own, and what to archive, keep or restore is the engine's.

use std::time::{Duration, Instant};

use autosnap_engine::ports::{
    BlockEntry, BlockPage, BlockSink, BlockSource, Images, NewImageFromMappings, NewSnapshot,
    ObjectStore, RemoteError, RemoteErrorKind, Repo, Snapshots,
};
use futures::future::BoxFuture;

use crate::ebs::{Ebs, EbsError};
use crate::ec2::{Ec2, SnapshotQuery, WaitObserver};
use crate::error::AwsError;
use crate::s3_backend::S3Backend;

fn aws(e: AwsError) -> RemoteError {
    let kind = match &e {
        AwsError::NotFound { .. } => RemoteErrorKind::NotFound,
        AwsError::InvalidRequest { code, .. } | AwsError::Service { code, .. }
            if code == "InvalidAMIName.Duplicate" =>
        {
            RemoteErrorKind::NameTaken
        }
        _ => RemoteErrorKind::Other,
    };
    RemoteError::new(kind, e)
}

/// An EBS direct failure as the engine sees it.
pub(crate) fn remote_ebs(e: EbsError) -> RemoteError {
    match e {
        EbsError::Aws(e) => aws(e),
        e => RemoteError::other(e),
    }
}

fn base64(digest: &[u8; 32]) -> String {
    aws_smithy_types::base64::encode(digest)
}

impl BlockSource for Ebs {
    async fn list_blocks(
        &self,
        snapshot: &str,
        token: Option<String>,
    ) -> Result<BlockPage, RemoteError> {
        self.list_blocks_page(snapshot, token)
            .await
            .map_err(remote_ebs)
    }

    async fn list_changed_blocks(
        &self,
        first: &str,
        second: &str,
        token: Option<String>,
    ) -> Result<BlockPage, RemoteError> {
        self.list_changed_page(first, second, token)
            .await
            .map_err(remote_ebs)
    }

    async fn get_block(
        &self,
        snapshot: &str,
        block: &BlockEntry,
        buf: bytes::BytesMut,
    ) -> Result<(bytes::Bytes, [u8; 32]), RemoteError> {
        self.get_block_hashed_into(snapshot, block, buf)
            .await
            .map_err(remote_ebs)
    }
}

impl BlockSink for Ebs {
    async fn start_snapshot(&self, new: &NewSnapshot) -> Result<String, RemoteError> {
        Ebs::start_snapshot(self, new).await.map_err(remote_ebs)
    }

    async fn put_block(
        &self,
        snapshot: &str,
        index: u64,
        data: bytes::Bytes,
        sha256: &[u8; 32],
        started: Instant,
    ) -> Result<(), RemoteError> {
        Ebs::put_block(self, snapshot, index, data, &base64(sha256), started)
            .await
            .map_err(aws)
    }

    async fn complete_snapshot(
        &self,
        snapshot: &str,
        blocks_written: u64,
        linear_sha256: &[u8; 32],
    ) -> Result<(), RemoteError> {
        self.complete(snapshot, blocks_written, &base64(linear_sha256))
            .await
            .map_err(remote_ebs)
    }
}

struct QuietWait;
impl WaitObserver for QuietWait {}

impl Snapshots for Ec2 {
    fn region(&self) -> &str {
        Ec2::region(self)
    }

    fn account(&self) -> &str {
        Ec2::account(self)
    }

    async fn describe_snapshots(
        &self,
        ids: &[String],
    ) -> Result<Vec<autosnap_core::model::Snapshot>, RemoteError> {
        self.list_snapshots(&SnapshotQuery {
            snapshot_ids: ids.to_vec(),
            ..Default::default()
        })
        .await
        .map_err(aws)
    }

    async fn delete_snapshot(&self, id: &str) -> Result<(), RemoteError> {
        Ec2::delete_snapshot(self, id).await.map_err(aws)
    }

    async fn wait_completed(&self, ids: &[String], timeout: Duration) -> Result<(), RemoteError> {
        self.wait_snapshots_completed(ids, timeout, &QuietWait)
            .await
            .map(|_| ())
            .map_err(aws)
    }

    async fn tag(
        &self,
        ids: &[String],
        tags: &autosnap_core::tags::Tags,
    ) -> Result<(), RemoteError> {
        self.create_tags(ids, tags).await.map_err(aws)
    }
}

impl Images for Ec2 {
    async fn image_named(&self, name: &str) -> Result<Option<String>, RemoteError> {
        Ok(self
            .images_named(name)
            .await
            .map_err(aws)?
            .into_iter()
            .next()
            .map(|i| i.image_id))
    }

    async fn register_image(&self, image: &NewImageFromMappings) -> Result<String, RemoteError> {
        self.register_image_with_mappings(image).await.map_err(aws)
    }
}

impl ObjectStore for S3Backend {
    fn exists<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<bool, autosnap_repo::BackendError>> {
        Box::pin(self.exists_async(name))
    }

    fn create<'a>(
        &'a self,
        name: &'a str,
        data: bytes::Bytes,
    ) -> BoxFuture<'a, Result<bool, autosnap_repo::BackendError>> {
        Box::pin(self.create_async(name, data))
    }

    fn write<'a>(
        &'a self,
        name: &'a str,
        data: bytes::Bytes,
    ) -> BoxFuture<'a, Result<(), autosnap_repo::BackendError>> {
        Box::pin(self.write_async(name, data))
    }

    fn read_at_most<'a>(
        &'a self,
        name: &'a str,
        limit: u64,
    ) -> BoxFuture<'a, Result<Vec<u8>, autosnap_repo::BackendError>> {
        Box::pin(self.read_at_most_async(name, limit))
    }
}

/// `repo` for the engine: on S3 its chunks are read and written from async code through the
/// S3 backend itself; a local directory's through its blocking backend.
pub fn engine_repo(repo: &autosnap_repo::Repository) -> Repo<'_> {
    match repo
        .backend()
        .as_any()
        .and_then(|b| b.downcast_ref::<S3Backend>())
    {
        Some(s3) => Repo::with_objects(repo, s3),
        None => Repo::blocking(repo),
    }
}
