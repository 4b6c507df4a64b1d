"""EBS snapshot lock for the test bed: LockSnapshot, UnlockSnapshot, DescribeLockedSnapshots,
and DeleteSnapshot refusing a locked snapshot. moto 5.2.x answers all three calls with HTTP 500
"not implemented".

Behaviour follows AWS's documentation:
- https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_LockSnapshot.html
- https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_UnlockSnapshot.html
- https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeLockedSnapshots.html
- https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_LockedSnapshotsInfo.html
- https://docs.aws.amazon.com/ebs/latest/userguide/snapshot-lock-concepts.html

Lock states derive from the server's clock at every call: `compliance-cooloff` while a
compliance lock is inside its cooling-off period, then `compliance`; `governance`; `expired` once
the lock's expiry has passed (an expired lock no longer protects the snapshot).

Choices where AWS does not document the exact answer (see testbed/README.md):
- DeleteSnapshot of a locked snapshot: 400 `SnapshotLocked`.
- UnlockSnapshot of a snapshot that was never locked: 400 `InvalidParameterValue`.
- LockDuration counts from the lock's creation (the test bed's snapshots are `completed` at once,
  so "the lock duration starts once the snapshot is completed" is the same moment).

Test control (tests cannot wait hours): the tag `autosnap-testbed:lock-created-on=<ISO 8601>` on
a locked snapshot moves its lock's creation (and with it the cooling-off end and, for a lock
given as a duration, the expiry) to that time.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

CORRECTIONS = {
    "lock-snapshot": "LockSnapshot: governance or compliance, cooling-off 1-72 h (compliance "
    "only), LockDuration 1-36500 days or ExpirationDate; modification rules per lock state",
    "unlock-snapshot": "UnlockSnapshot: governance any time, compliance only in its cooling-off",
    "describe-locked-snapshots": "DescribeLockedSnapshots: SnapshotId.N, filter lock-state, "
    "MaxResults 5-1000 with NextToken",
    "delete-locked-snapshot": "DeleteSnapshot of a snapshot whose lock has not expired: 400 "
    "SnapshotLocked; each refusal is counted in the tag autosnap-testbed:delete-refused",
}

LOCK_CREATED_TAG = "autosnap-testbed:lock-created-on"
DELETE_REFUSED_TAG = "autosnap-testbed:delete-refused"
LOCKED_CODE = "SnapshotLocked"

_applied = False


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _locks(backend: Any) -> dict[str, dict]:
    locks = getattr(backend, "_autosnap_locks", None)
    if locks is None:
        locks = {}
        backend._autosnap_locks = locks
    return locks


def _expires_on(lock: dict) -> datetime:
    if lock["duration_days"] is not None:
        return lock["created"] + timedelta(days=lock["duration_days"])
    return lock["expiration"]


def _cool_off_ends(lock: dict) -> datetime | None:
    if lock["mode"] != "compliance" or not lock["cool_off_hours"]:
        return None
    return lock["created"] + timedelta(hours=lock["cool_off_hours"])


def lock_state(lock: dict, now: datetime | None = None) -> str:
    now = now or _now()
    if now >= _expires_on(lock):
        return "expired"
    if lock["mode"] == "governance":
        return "governance"
    ends = _cool_off_ends(lock)
    if ends is not None and now < ends:
        return "compliance-cooloff"
    return "compliance"


def _info(owner: str, snapshot_id: str, lock: dict) -> dict:
    info = {
        "OwnerId": owner,
        "SnapshotId": snapshot_id,
        "LockState": lock_state(lock),
        "LockCreatedOn": lock["created"],
        "LockDurationStartTime": lock["created"],
        "LockExpiresOn": _expires_on(lock),
    }
    if lock["duration_days"] is not None:
        info["LockDuration"] = lock["duration_days"]
    ends = _cool_off_ends(lock)
    if ends is not None:
        info["CoolOffPeriod"] = lock["cool_off_hours"]
        info["CoolOffPeriodExpiresOn"] = ends
    return info


def _parse_time(value: Any) -> datetime:
    if isinstance(value, datetime):
        t = value
    else:
        t = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t.astimezone(timezone.utc)


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

    def combination(message: str) -> EC2ClientError:
        return EC2ClientError("InvalidParameterCombination", message)

    def snapshot_or_404(backend: Any, snapshot_id: str) -> Any:
        snap = backend.snapshots.get(snapshot_id)
        if snap is None:
            raise InvalidSnapshotIdError()
        return snap

    # --- lock-snapshot -------------------------------------------------------------
    def lock_snapshot(self: Any) -> ActionResult:
        snapshot_id = self._get_param("SnapshotId")
        mode = self._get_param("LockMode")
        cool_off = self._get_int_param("CoolOffPeriod")
        duration = self._get_int_param("LockDuration")
        expiration = self._get_param("ExpirationDate")
        self.error_on_dryrun()
        backend = self.ec2_backend
        snap = snapshot_or_404(backend, snapshot_id)
        # "You can lock a snapshot that is in the pending or completed state."
        if snap.status not in ("pending", "completed"):
            raise EC2ClientError(
                "IncorrectState", f"The snapshot '{snapshot_id}' is in the {snap.status} state."
            )
        if mode not in ("governance", "compliance"):
            raise bad(f"LockMode must be governance or compliance, not {mode!r}.")
        if (duration is None) == (expiration is None):
            raise combination("Specify exactly one of LockDuration and ExpirationDate.")
        if duration is not None and not 1 <= duration <= 36500:
            raise bad(f"LockDuration must be 1 to 36500 days, not {duration}.")
        if cool_off is not None:
            if mode != "compliance":
                raise combination("CoolOffPeriod applies only to compliance mode.")
            if not 1 <= cool_off <= 72:
                raise bad(f"CoolOffPeriod must be 1 to 72 hours, not {cool_off}.")
        now = _now()
        new = {
            "mode": mode,
            "created": now,
            "duration_days": duration,
            "expiration": _parse_time(expiration) if expiration is not None else None,
            "cool_off_hours": cool_off,
        }
        if new["expiration"] is not None and new["expiration"] <= now:
            raise bad("ExpirationDate must be in the future.")

        locks = _locks(backend)
        old = locks.get(snapshot_id)
        state = lock_state(old, now) if old else None
        if state == "compliance":
            # After the cooling-off period: only a longer lock, same mode, no cooling-off.
            if mode != "compliance" or cool_off is not None:
                raise combination(
                    f"The snapshot '{snapshot_id}' is locked in compliance mode and its "
                    "cooling-off period has ended: only the lock duration can be increased."
                )
            new["created"] = old["created"] if duration is not None else now
            if _expires_on(new) < _expires_on(old):
                raise bad(
                    f"The snapshot '{snapshot_id}' is locked in compliance mode: its lock "
                    "can be extended, not shortened."
                )
            new["cool_off_hours"] = old["cool_off_hours"]
        elif state in ("governance", "compliance-cooloff"):
            # A modification: the lock keeps its creation time, so durations count from it.
            new["created"] = old["created"]
        locks[snapshot_id] = new
        info = _info(self.current_account, snapshot_id, new)
        info.pop("OwnerId")
        return ActionResult(info)

    # --- unlock-snapshot ---------------------------------------------------------------
    def unlock_snapshot(self: Any) -> ActionResult:
        snapshot_id = self._get_param("SnapshotId")
        self.error_on_dryrun()
        backend = self.ec2_backend
        snapshot_or_404(backend, snapshot_id)
        locks = _locks(backend)
        lock = locks.get(snapshot_id)
        if lock is None:
            raise bad(f"The snapshot '{snapshot_id}' is not locked.")
        if lock_state(lock) == "compliance":
            raise combination(
                f"The snapshot '{snapshot_id}' is locked in compliance mode and its cooling-off "
                "period has ended: it cannot be unlocked."
            )
        del locks[snapshot_id]
        return ActionResult({"SnapshotId": snapshot_id})

    # --- describe-locked-snapshots -------------------------------------------------------
    def describe_locked_snapshots(self: Any) -> ActionResult:
        snapshot_ids = self._get_param("SnapshotIds", [])
        filters = self._filters_from_querystring() or {}
        max_results = self._get_int_param("MaxResults")
        token = self._get_param("NextToken")
        self.error_on_dryrun()
        if max_results is not None and not 5 <= max_results <= 1000:
            raise bad(f"MaxResults must be 5 to 1000, not {max_results}.")
        for name in filters:
            if name != "lock-state":
                raise bad(f"The filter '{name}' is invalid.")
        backend = self.ec2_backend
        locks = _locks(backend)
        rows = []
        for snapshot_id in sorted(locks):
            if snapshot_ids and snapshot_id not in snapshot_ids:
                continue
            info = _info(self.current_account, snapshot_id, locks[snapshot_id])
            if "lock-state" in filters and info["LockState"] not in filters["lock-state"]:
                continue
            rows.append(info)
        start = 0
        if token:
            try:
                start = int(token)
            except ValueError:
                raise bad(f"The NextToken '{token}' is invalid.") from None
        size = max_results or 1000
        page = rows[start : start + size]
        out: dict = {"Snapshots": page}
        if start + size < len(rows):
            out["NextToken"] = str(start + size)
        return ActionResult(out)

    ElasticBlockStore.lock_snapshot = lock_snapshot
    ElasticBlockStore.unlock_snapshot = unlock_snapshot
    ElasticBlockStore.describe_locked_snapshots = describe_locked_snapshots

    # --- delete-locked-snapshot ----------------------------------------------------------
    inner_delete = EBSBackend.delete_snapshot

    def delete_snapshot(self: Any, snapshot_id: str) -> Any:
        lock = _locks(self).get(snapshot_id)
        if lock is not None and lock_state(lock) != "expired":
            # Counted where a test can read it: a tag on the snapshot it tried to delete.
            tags = self.tags.get(snapshot_id, {})
            refused = int(tags.get(DELETE_REFUSED_TAG, "0")) + 1
            original_create_tags(self, [snapshot_id], {DELETE_REFUSED_TAG: str(refused)})
            raise EC2ClientError(
                LOCKED_CODE,
                f"The snapshot '{snapshot_id}' is locked ({lock_state(lock)}) until "
                f"{_expires_on(lock).isoformat()} and cannot be deleted.",
            )
        result = inner_delete(self, snapshot_id)
        _locks(self).pop(snapshot_id, None)
        return result

    EBSBackend.delete_snapshot = delete_snapshot

    # --- test control: lock-created-on ---------------------------------------------------
    original_create_tags = TagBackend.create_tags

    def create_tags(self: Any, resource_ids: list, tags: dict) -> bool:
        result = original_create_tags(self, resource_ids, tags)
        if LOCK_CREATED_TAG in tags:
            for rid in resource_ids:
                lock = _locks(self).get(rid)
                if lock is not None:
                    lock["created"] = _parse_time(tags[LOCK_CREATED_TAG])
        return result

    TagBackend.create_tags = create_tags
