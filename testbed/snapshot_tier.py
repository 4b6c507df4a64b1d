"""EBS Snapshots Archive for the test bed: ModifySnapshotTier, RestoreSnapshotTier,
DescribeSnapshotTierStatus, DescribeSnapshots' StorageTier/RestoreExpiryTime, and CreateVolume
refusing an archived snapshot. moto 5.2.x has the three calls but archives anything (pending,
already archived, behind an AMI), restores what is not archived, never pages, and creates volumes
from archived snapshots.

Behaviour follows AWS's documentation:
- https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_ModifySnapshotTier.html
- https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_RestoreSnapshotTier.html
- https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeSnapshotTierStatus.html
- https://docs.aws.amazon.com/ebs/latest/userguide/snapshot-archive-considerations.html
  ("The minimum archive period is 90 days", "It can take up to 72 hours to restore")
- https://docs.aws.amazon.com/AWSEC2/latest/WindowsGuide/working-with-snapshot-archiving.html
  ("You can archive any snapshot that is in the completed state and that you own", AMIs first)

Choices where AWS does not document the exact answer (see testbed/README.md):
- Archiving a snapshot that is not `completed`, or is already archived: 400 `IncorrectState`.
- Archiving a snapshot behind a registered AMI: 400 `InvalidSnapshot.InUse`.
- Archiving a snapshot another account owns: 400 `UnauthorizedOperation`.
- Restoring a snapshot that is not archived: 400 `IncorrectState`.
- CreateVolume from an archived, not restored snapshot: 400 `IncorrectState`.
- A temporarily restored snapshot reads `StorageTier: standard` with a `RestoreExpiryTime`; after
  that time it reads `archive` again.

Test control (archiving and restoring take hours on AWS): a transition completes at once unless
the snapshot carries the tag `autosnap-testbed:tiering-hold`; while it does, the transition stays
`*-in-progress` and completes at the first call after the tag is removed. The tag
`autosnap-testbed:archived-on=<ISO 8601>` moves an archived snapshot's ArchivalCompleteTime (for
the 90-day minimum).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

CORRECTIONS = {
    "modify-snapshot-tier": "ModifySnapshotTier: only completed, self-owned snapshots in the "
    "standard tier that no registered AMI uses; StorageTier must be archive",
    "restore-snapshot-tier": "RestoreSnapshotTier: only archived snapshots; exactly one of "
    "TemporaryRestoreDays (1-180) and PermanentRestore; a temporary restore can be re-timed",
    "describe-snapshot-tier-status": "DescribeSnapshotTierStatus: filters snapshot-id, volume-id, "
    "last-tiering-operation; MaxResults 5-1000 with NextToken",
    "tier-in-describe-snapshots": "DescribeSnapshots: StorageTier and RestoreExpiryTime as AWS "
    "shows them; a temporary restore falls back to archive when it expires",
    "create-volume-from-archive": "CreateVolume from an archived, not restored snapshot: 400 "
    "IncorrectState",
}

HOLD_TAG = "autosnap-testbed:tiering-hold"
ARCHIVED_ON_TAG = "autosnap-testbed:archived-on"

_applied = False


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _parse_time(value: Any) -> datetime:
    t = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t.astimezone(timezone.utc)


def _held(backend: Any, snapshot_id: str) -> bool:
    return HOLD_TAG in backend.tags.get(snapshot_id, {})


def settle(backend: Any, snap: Any) -> None:
    """Brings a snapshot's tier up to now: finishes a transition that is no longer held and
    returns an expired temporary restore to the archive tier."""
    status = snap.last_tiering_operation_status or ""
    now = _now()
    if status.endswith("-in-progress") and not _held(backend, snap.id):
        op = status[: -len("-in-progress")]
        snap.last_tiering_progress = 100
        snap.last_tiering_operation_status = f"{op}-completed"
        if op == "archival":
            snap.storage_tier = "archive"
            snap.archival_complete_time = now
            snap.last_tiering_operation_status_detail = "Archival completed successfully"
        elif op == "temporary-restore":
            snap.storage_tier = "standard"
            snap.restore_expiry_time = now + timedelta(days=snap._autosnap_restore_days)
            snap.last_tiering_operation_status_detail = "Temporary restore completed"
        else:
            snap.storage_tier = "standard"
            snap.archival_complete_time = None
            snap.restore_expiry_time = None
            snap.last_tiering_operation_status_detail = "Permanent restore completed"
    expiry = snap.restore_expiry_time
    if expiry is not None and snap.storage_tier == "standard" and now >= _aware(expiry):
        snap.storage_tier = "archive"
        snap.restore_expiry_time = None


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def _archived(snap: Any) -> bool:
    """In the archive tier and not usable: archived, or being restored."""
    return snap.storage_tier == "archive"


def apply() -> None:
    global _applied
    if _applied:
        return
    _applied = True

    from moto.core.responses import ActionResult
    from moto.ec2.exceptions import EC2ClientError, InvalidSnapshotIdError
    from moto.ec2.models.elastic_block_store import EBSBackend
    from moto.ec2.models.tags import TagBackend
    from moto.ec2.responses.elastic_block_store import ElasticBlockStore

    def bad(message: str) -> EC2ClientError:
        return EC2ClientError("InvalidParameterValue", message)

    def state(message: str) -> EC2ClientError:
        return EC2ClientError("IncorrectState", message)

    def snapshot_or_404(backend: Any, snapshot_id: str) -> Any:
        snap = backend.snapshots.get(snapshot_id)
        if snap is None:
            raise InvalidSnapshotIdError()
        settle(backend, snap)
        return snap

    def used_by_image(backend: Any, snapshot_id: str) -> str | None:
        for image in getattr(backend, "amis", {}).values():
            for m in image.block_device_mappings:
                if (m.get("Ebs") or {}).get("SnapshotId") == snapshot_id:
                    return image.id
        return None

    # --- modify-snapshot-tier ------------------------------------------------------------
    def modify_snapshot_tier(self: Any) -> ActionResult:
        snapshot_id = self._get_param("SnapshotId")
        tier = self._get_param("StorageTier") or "archive"
        self.error_on_dryrun()
        backend = self.ec2_backend
        snap = snapshot_or_404(backend, snapshot_id)
        if tier != "archive":
            raise bad(f"StorageTier must be archive, not {tier!r}.")
        if snap.owner_id != self.current_account:
            raise EC2ClientError(
                "UnauthorizedOperation",
                f"The snapshot '{snapshot_id}' is owned by another account; only the owner "
                "can archive it.",
            )
        if snap.status != "completed":
            raise state(f"The snapshot '{snapshot_id}' is in the {snap.status} state; only "
                        "completed snapshots can be archived.")
        status = snap.last_tiering_operation_status or ""
        if _archived(snap) or status.endswith("-in-progress"):
            raise state(f"The snapshot '{snapshot_id}' is already archived or being archived "
                        "or restored.")
        image = used_by_image(backend, snapshot_id)
        if image is not None:
            raise EC2ClientError(
                "InvalidSnapshot.InUse",
                f"The snapshot '{snapshot_id}' is used by the AMI {image}; disable or "
                "deregister the AMI before archiving it.",
            )
        now = _now()
        snap.last_tiering_start_time = now
        snap.last_tiering_progress = 0
        snap.last_tiering_operation_status = "archival-in-progress"
        snap.last_tiering_operation_status_detail = "Archival in progress"
        snap.restore_expiry_time = None
        settle(backend, snap)
        return ActionResult({"SnapshotId": snapshot_id, "TieringStartTime": now})

    # --- restore-snapshot-tier -----------------------------------------------------------
    def restore_snapshot_tier(self: Any) -> ActionResult:
        snapshot_id = self._get_param("SnapshotId")
        days = self._get_int_param("TemporaryRestoreDays")
        permanent = self._get_bool_param("PermanentRestore", False)
        self.error_on_dryrun()
        backend = self.ec2_backend
        snap = snapshot_or_404(backend, snapshot_id)
        if (days is None) == (not permanent):
            raise EC2ClientError(
                "InvalidParameterCombination",
                "Specify exactly one of TemporaryRestoreDays and PermanentRestore.",
            )
        if days is not None and not 1 <= days <= 180:
            raise bad(f"TemporaryRestoreDays must be 1 to 180, not {days}.")
        status = snap.last_tiering_operation_status or ""
        now = _now()
        if days is not None and status == "temporary-restore-completed" and not _archived(snap):
            # "Modify the restore period" of a snapshot that is temporarily restored.
            snap.restore_expiry_time = now + timedelta(days=days)
            return ActionResult({"SnapshotId": snapshot_id, "RestoreStartTime": now,
                                 "RestoreDuration": days, "IsPermanentRestore": False})
        if not _archived(snap):
            raise state(f"The snapshot '{snapshot_id}' is not archived; only archived "
                        "snapshots can be restored.")
        if status.endswith("-in-progress"):
            raise state(f"The snapshot '{snapshot_id}' is already being restored.")
        op = "permanent-restore" if permanent else "temporary-restore"
        snap._autosnap_restore_days = days
        snap.restore_start_time = now
        snap.last_tiering_start_time = now
        snap.last_tiering_progress = 0
        snap.last_tiering_operation_status = f"{op}-in-progress"
        snap.last_tiering_operation_status_detail = "Restore in progress"
        settle(backend, snap)
        out: dict = {"SnapshotId": snapshot_id, "RestoreStartTime": now,
                     "IsPermanentRestore": bool(permanent)}
        if days is not None:
            out["RestoreDuration"] = days
        return ActionResult(out)

    # --- describe-snapshot-tier-status ---------------------------------------------------
    def describe_snapshot_tier_status(self: Any) -> ActionResult:
        filters = self._filters_from_querystring() or {}
        max_results = self._get_int_param("MaxResults")
        token = self._get_param("NextToken")
        self.error_on_dryrun()
        if max_results is not None and not 5 <= max_results <= 1000:
            raise bad(f"MaxResults must be 5 to 1000, not {max_results}.")
        for name in filters:
            if name not in ("snapshot-id", "volume-id", "last-tiering-operation"):
                raise bad(f"The filter '{name}' is invalid.")
        backend = self.ec2_backend
        rows = []
        for snapshot_id in sorted(backend.snapshots):
            snap = backend.snapshots[snapshot_id]
            if snap.owner_id != self.current_account:
                continue
            settle(backend, snap)
            values = {
                "snapshot-id": snap.id,
                "volume-id": snap.volume_id,
                "last-tiering-operation": snap.last_tiering_operation_status,
            }
            if any(values[k] not in v for k, v in filters.items()):
                continue
            row = {
                "SnapshotId": snap.id,
                "VolumeId": snap.volume_id,
                "Status": snap.status,
                "OwnerId": snap.owner_id,
                "Tags": snap.tag_set,
                "StorageTier": snap.storage_tier,
                "LastTieringStartTime": snap.last_tiering_start_time,
                "LastTieringProgress": snap.last_tiering_progress,
                "LastTieringOperationStatus": snap.last_tiering_operation_status,
                "LastTieringOperationStatusDetail": snap.last_tiering_operation_status_detail,
                "ArchivalCompleteTime": snap.archival_complete_time,
                "RestoreExpiryTime": snap.restore_expiry_time,
            }
            rows.append({k: v for k, v in row.items() if v is not None})
        start = 0
        if token:
            try:
                start = int(token)
            except ValueError:
                raise bad(f"The NextToken '{token}' is invalid.") from None
        size = max_results or 1000
        out: dict = {"SnapshotTierStatuses": rows[start : start + size]}
        if start + size < len(rows):
            out["NextToken"] = str(start + size)
        return ActionResult(out)

    ElasticBlockStore.modify_snapshot_tier = modify_snapshot_tier
    ElasticBlockStore.restore_snapshot_tier = restore_snapshot_tier
    ElasticBlockStore.describe_snapshot_tier_status = describe_snapshot_tier_status

    # --- tier-in-describe-snapshots --------------------------------------------------------
    inner_describe = EBSBackend.describe_snapshots

    def describe_snapshots(self: Any, *args: Any, **kwargs: Any) -> Any:
        for snap in list(self.snapshots.values()):
            settle(self, snap)
        return inner_describe(self, *args, **kwargs)

    EBSBackend.describe_snapshots = describe_snapshots

    # --- create-volume-from-archive ------------------------------------------------------
    inner_create_volume = EBSBackend.create_volume

    def create_volume(self: Any, *args: Any, **kwargs: Any) -> Any:
        snapshot_id = kwargs.get("snapshot_id")
        if snapshot_id is None and len(args) >= 3:
            snapshot_id = args[2]
        snap = self.snapshots.get(snapshot_id) if snapshot_id else None
        if snap is not None:
            settle(self, snap)
            if _archived(snap):
                raise state(
                    f"The snapshot '{snapshot_id}' is in the archive tier: restore it "
                    "(RestoreSnapshotTier) before creating a volume from it."
                )
        return inner_create_volume(self, *args, **kwargs)

    EBSBackend.create_volume = create_volume

    # --- test control: hold and archived-on ----------------------------------------------
    inner_create_tags = TagBackend.create_tags

    def create_tags(self: Any, resource_ids: list, tags: dict) -> bool:
        result = inner_create_tags(self, resource_ids, tags)
        if ARCHIVED_ON_TAG in tags:
            for rid in resource_ids:
                snap = getattr(self, "snapshots", {}).get(rid)
                if snap is not None and snap.archival_complete_time is not None:
                    snap.archival_complete_time = _parse_time(tags[ARCHIVED_ON_TAG])
        return result

    TagBackend.create_tags = create_tags
