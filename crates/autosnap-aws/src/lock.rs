//! EBS snapshot lock: LockSnapshot, UnlockSnapshot and DescribeLockedSnapshots, returning
//! autosnap-core's lock model and classified errors.

use autosnap_core::lock::{LockLength, LockRequest, LockState, SnapshotLock};
use aws_sdk_ec2::types::{LockMode as SdkLockMode, LockedSnapshotsInfo};
use aws_smithy_types::DateTime as SmithyDateTime;
use chrono::{DateTime, Utc};

use crate::ec2::{to_chrono, Ec2};
use crate::error::AwsError;

/// Ids per DescribeLockedSnapshots request: the same bound autosnap keeps for filters.
const IDS_PER_REQUEST: usize = 200;
/// DescribeLockedSnapshots accepts 5 to 1000.
const PAGE_SIZE: i32 = 1000;

fn from_sdk(s: &LockedSnapshotsInfo) -> SnapshotLock {
    SnapshotLock {
        snapshot_id: s.snapshot_id().unwrap_or_default().to_string(),
        state: LockState::parse(s.lock_state().map(|l| l.as_str()).unwrap_or("")),
        expires_on: s.lock_expires_on().and_then(to_chrono),
        cool_off_ends: s.cool_off_period_expires_on().and_then(to_chrono),
        duration_days: s.lock_duration(),
        created_on: s.lock_created_on().and_then(to_chrono),
    }
}

fn smithy(t: DateTime<Utc>) -> SmithyDateTime {
    SmithyDateTime::from_secs(t.timestamp())
}

impl Ec2 {
    /// The locks of these snapshots, expired ones included: one request per 200 ids, each
    /// paged through. Snapshots that were never locked are simply absent. No ids, no call.
    pub async fn locked_snapshots(
        &self,
        snapshot_ids: &[String],
    ) -> Result<Vec<SnapshotLock>, AwsError> {
        let mut out = Vec::new();
        for ids in snapshot_ids.chunks(IDS_PER_REQUEST) {
            let mut token: Option<String> = None;
            loop {
                let page = self
                    .raw()
                    .describe_locked_snapshots()
                    .set_snapshot_ids(Some(ids.to_vec()))
                    .max_results(PAGE_SIZE)
                    .set_next_token(token.take())
                    .send()
                    .await
                    .map_err(|e| {
                        AwsError::from_sdk(e, "DescribeLockedSnapshots", None, self.site())
                    })?;
                out.extend(page.snapshots().iter().map(from_sdk));
                match page.next_token() {
                    Some(t) if !t.is_empty() => token = Some(t.to_string()),
                    _ => break,
                }
            }
        }
        Ok(out)
    }

    /// Every lock in this account and region (locks are few next to snapshots, so this is
    /// cheaper than asking by id for a whole listing), paged through.
    pub async fn all_locked_snapshots(&self) -> Result<Vec<SnapshotLock>, AwsError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .raw()
                .describe_locked_snapshots()
                .max_results(PAGE_SIZE)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| AwsError::from_sdk(e, "DescribeLockedSnapshots", None, self.site()))?;
            out.extend(page.snapshots().iter().map(from_sdk));
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(out)
    }

    /// Locks (or changes the lock of) one snapshot; returns the lock as EC2 now has it.
    pub async fn lock_snapshot(
        &self,
        snapshot_id: &str,
        lock: &LockRequest,
    ) -> Result<SnapshotLock, AwsError> {
        let mut call = self
            .raw()
            .lock_snapshot()
            .snapshot_id(snapshot_id)
            .lock_mode(SdkLockMode::from(lock.mode.as_str()))
            .set_cool_off_period(lock.cool_off_hours);
        call = match lock.length {
            LockLength::Days(d) => call.lock_duration(d),
            LockLength::Until(t) => call.expiration_date(smithy(t)),
        };
        let out = call.send().await.map_err(|e| {
            AwsError::from_sdk(
                e,
                "LockSnapshot",
                Some(("snapshot", snapshot_id)),
                self.site(),
            )
        })?;
        Ok(SnapshotLock {
            snapshot_id: snapshot_id.to_string(),
            state: LockState::parse(out.lock_state().map(|l| l.as_str()).unwrap_or("")),
            expires_on: out.lock_expires_on().and_then(to_chrono),
            cool_off_ends: out.cool_off_period_expires_on().and_then(to_chrono),
            duration_days: out.lock_duration(),
            created_on: out.lock_created_on().and_then(to_chrono),
        })
    }

    /// Removes the lock of one snapshot (governance, or compliance in its cooling-off period).
    pub async fn unlock_snapshot(&self, snapshot_id: &str) -> Result<(), AwsError> {
        self.raw()
            .unlock_snapshot()
            .snapshot_id(snapshot_id)
            .send()
            .await
            .map_err(|e| {
                AwsError::from_sdk(
                    e,
                    "UnlockSnapshot",
                    Some(("snapshot", snapshot_id)),
                    self.site(),
                )
            })?;
        Ok(())
    }
}
