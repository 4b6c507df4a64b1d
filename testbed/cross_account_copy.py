"""CopySnapshot of a snapshot another account owns, as AWS allows it: only when that snapshot is
shared with the caller; and the KmsKeyId of a snapshot of an encrypted volume. moto 5.2.x looks the source snapshot up in the caller's own account
only, so a copy into a backup account could never be made (nor refused for the right reason).

Behaviour follows AWS's documentation:
- https://docs.aws.amazon.com/ebs/latest/userguide/ebs-modifying-snapshot-permissions.html
  (a snapshot is shared by its createVolumePermission: an account id, or the group `all`)
- https://docs.aws.amazon.com/ebs/latest/userguide/ebs-copy-snapshot.html
  (an account can copy a snapshot shared with it; the copy is owned by the account that copies)
- https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CopySnapshot.html

Choices where AWS does not document the answer (see testbed/README.md):
- A snapshot of another account that is not shared with the caller is answered as if it did
  not exist: 400 `InvalidSnapshot.NotFound`, the code AWS gives for a snapshot id the caller
  cannot see (DescribeSnapshots does not show it either).
- Not emulated: KMS across accounts (that the caller may use the source's key through a grant
  or key policy, and that a snapshot encrypted with the AWS managed key `aws/ebs` cannot be
  shared); the copy is encrypted with the KmsKeyId given, as moto does for any copy.
"""

from __future__ import annotations

from typing import Any

CORRECTIONS = {
    "copy-shared-snapshot": "CopySnapshot of another account's snapshot works only when it is "
    "shared with the caller (createVolumePermission for its account id, or public); otherwise "
    "400 InvalidSnapshot.NotFound",
    "snapshot-keeps-volume-key": "CreateSnapshot of an encrypted volume gives the snapshot the "
    "volume's KmsKeyId (moto leaves it empty), so the key a snapshot is encrypted with can be read",
    "snapshot-copy-state": "TEST-BED ONLY: autosnap-testbed:copy-state=<state> on a snapshot "
    "holds the snapshots CopySnapshot makes of it (in any account) in that state (e.g. pending), "
    "as the same tag on an AMI does for CopyImage; autosnap-testbed:state on the copy releases it",
}

COPY_STATE_TAG = "autosnap-testbed:copy-state"

_applied = False


def shared_with(snapshot: Any, account: str) -> bool:
    """Whether `snapshot` may be copied by `account` (its owner, or shared with it)."""
    return (
        snapshot.owner_id == account
        or account in snapshot.create_volume_permission_userids
        or "all" in snapshot.create_volume_permission_groups
    )


def find_foreign(source_region: str, snapshot_id: str, caller: str) -> Any | None:
    """The snapshot `snapshot_id` in `source_region` of an account other than `caller`."""
    from moto.ec2.models import ec2_backends

    for account in list(ec2_backends.keys()):
        if account == caller:
            continue
        regions = ec2_backends[account]
        # Only backends that exist already: looking one up would create it.
        backend = regions.get(source_region) if source_region in regions.keys() else None
        if backend is not None and snapshot_id in backend.snapshots:
            return backend.snapshots[snapshot_id]
    return None


def apply() -> None:
    global _applied
    if _applied:
        return
    _applied = True

    from moto.ec2.exceptions import InvalidSnapshotIdError
    from moto.ec2.models import ec2_backends
    from moto.ec2.models.elastic_block_store import EBSBackend, Snapshot
    from moto.ec2.utils import random_snapshot_id

    original = EBSBackend.copy_snapshot

    def copy_snapshot(self: Any, source_snapshot_id: str, source_region: str,
                      description: str, kms_key_id: str | None, *args: Any,
                      **kwargs: Any) -> Any:
        own = ec2_backends[self.account_id][source_region]
        if source_snapshot_id in own.snapshots:
            copy = original(self, source_snapshot_id, source_region, description, kms_key_id,
                            *args, **kwargs)
            return _held(copy, own.snapshots[source_snapshot_id])
        source = find_foreign(source_region, source_snapshot_id, self.account_id)
        if source is None or not shared_with(source, self.account_id):
            raise InvalidSnapshotIdError()
        # The copy belongs to the caller's account, as any copy does.
        copy = Snapshot(self, random_snapshot_id(), volume=source.volume,
                        description=description, encrypted=source.encrypted,
                        kms_key_id=kms_key_id)
        copy.autosnap_copied_from = (source_region, source_snapshot_id)
        self.snapshots[copy.id] = copy
        return _held(copy, source)

    def _held(copy: Any, source: Any) -> Any:
        # [snapshot-copy-state] The source's copy-state tag holds its copies in that state.
        state = source.ec2_backend.tags.get(source.id, {}).get(COPY_STATE_TAG)
        if state is not None:
            copy.status = state
        return copy

    EBSBackend.copy_snapshot = copy_snapshot

    # [snapshot-keeps-volume-key] A snapshot of an encrypted volume is encrypted with the
    # volume's key (https://docs.aws.amazon.com/ebs/latest/userguide/ebs-encryption.html).
    original_create = EBSBackend.create_snapshot

    def create_snapshot(self: Any, volume_id: str, *args: Any, **kwargs: Any) -> Any:
        snapshot = original_create(self, volume_id, *args, **kwargs)
        volume = getattr(snapshot, "volume", None)
        if snapshot.encrypted and snapshot.kms_key_id is None and volume is not None:
            snapshot.kms_key_id = getattr(volume, "kms_key_id", None)
        return snapshot

    EBSBackend.create_snapshot = create_snapshot
