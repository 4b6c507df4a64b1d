"""Corrections to moto's EC2 AMI emulation, so the test bed behaves like AWS
where autosnap depends on it. Each correction is small, named, and says what
AWS does. Applied in-process by autosnap_testbed.py before the server starts.
"""

from typing import Any

CORRECTIONS = {
    "register-image-mappings": (
        "RegisterImage keeps BlockDeviceMappings, RootDeviceName, Architecture, "
        "VirtualizationType, EnaSupport, BootMode and image tags on create, as AWS does "
        "(moto ignored them and invented a 15 GiB snapshot)"
    ),
    "describe-images-snapshot-filter": (
        "DescribeImages supports the block-device-mapping.snapshot-id filter, matching an "
        "image when any of its mappings uses any of the given snapshots (moto answered 500)"
    ),
    "snapshot-in-use-by-any-image": (
        "DeleteSnapshot answers InvalidSnapshot.InUse for a snapshot behind any registered "
        "image's mappings (moto only knew CreateImage's own snapshot)"
    ),
    "test-controls": (
        "TEST-BED ONLY, not AWS behaviour: the tags autosnap-testbed:start-time=<RFC 3339> "
        "and autosnap-testbed:state=<pending|error|completed> on a snapshot set its start "
        "time and state (on an AMI: its creation date and state; on a volume: its state), so tests can build a backup history (moto stamps every snapshot "
        "'now' and has no pending phase); autosnap-testbed:fail=CreateSnapshot on a volume "
        "makes snapshots of it fail (IncorrectState), for partial-failure tests; "
        "autosnap-testbed:delay-seconds=N on a volume makes CreateSnapshot of it take N seconds"
    ),
}

# Tags that drive the test-controls correction.
START_TIME_TAG = "autosnap-testbed:start-time"
STATE_TAG = "autosnap-testbed:state"
FAIL_TAG = "autosnap-testbed:fail"
DELAY_TAG = "autosnap-testbed:delay-seconds"

_applied = False


def _mapping_snapshot_ids(image: Any) -> set:
    return {
        (m.get("Ebs") or {}).get("SnapshotId")
        for m in image.block_device_mappings
        if (m.get("Ebs") or {}).get("SnapshotId")
    }


def apply() -> None:
    global _applied
    if _applied:
        return
    _applied = True

    from moto.ec2.exceptions import InvalidSnapshotIdError, InvalidSnapshotInUse
    from moto.ec2.models.amis import Ami, AmiBackend
    from moto.ec2.models.elastic_block_store import EBSBackend
    from moto.ec2.responses.amis import AmisResponse
    from moto.ec2.responses.instances import InstanceResponse
    from moto.core.responses import ActionResult

    # --- register-image-mappings -------------------------------------------
    original_bdm = Ami.block_device_mappings

    def block_device_mappings(self: Any) -> list:
        registered = getattr(self, "_autosnap_mappings", None)
        if registered is not None:
            return registered
        return original_bdm.fget(self)

    Ami.block_device_mappings = property(block_device_mappings)

    def register_image(self: Any) -> Any:
        name = self._get_param("Name")
        description = self._get_param("Description", "")
        self.error_on_dryrun()
        image = self.ec2_backend.register_image(name, description)
        mappings = InstanceResponse._parse_block_device_mapping(self)
        if mappings:
            # AWS creates no snapshot of its own for a registered image.
            fake = getattr(image, "ebs_snapshot", None)
            if fake is not None:
                self.ec2_backend.snapshots.pop(fake.id, None)
            for m in mappings:
                ebs = m.get("Ebs") or {}
                snap_id = ebs.get("SnapshotId")
                if snap_id:
                    if snap_id not in self.ec2_backend.snapshots:
                        self.ec2_backend.amis.pop(image.id, None)
                        raise InvalidSnapshotIdError()
                    snap = self.ec2_backend.snapshots[snap_id]
                    if ebs.get("VolumeSize") is None:
                        ebs["VolumeSize"] = snap.volume.size
                    ebs["Encrypted"] = bool(snap.encrypted)
                if not ebs.get("VolumeType"):
                    ebs["VolumeType"] = "gp2"
            image._autosnap_mappings = mappings
        for param, attr in [
            ("RootDeviceName", "root_device_name"),
            ("Architecture", "architecture"),
            ("VirtualizationType", "virtualization_type"),
            ("BootMode", "boot_mode"),
        ]:
            value = self._get_param(param)
            if value:
                setattr(image, attr, value)
        ena = self._get_param("EnaSupport")
        if ena is not None:
            image.ena_support = str(ena).lower() == "true"
        tags = self._parse_tag_specification().get("image", {})
        if tags:
            self.ec2_backend.create_tags([image.id], tags)
        return ActionResult({"ImageId": image.id})

    AmisResponse.register_image = register_image

    # --- describe-images-snapshot-filter -------------------------------------
    original_describe = AmiBackend.describe_images

    def describe_images(self: Any, ami_ids=None, filters=None, exec_users=None, owners=None):
        filters = dict(filters or {})
        wanted = filters.pop("block-device-mapping.snapshot-id", None)
        images = original_describe(
            self, ami_ids=ami_ids, filters=filters or None, exec_users=exec_users, owners=owners
        )
        if wanted is not None:
            wanted = set(wanted if isinstance(wanted, list) else [wanted])
            images = [i for i in images if _mapping_snapshot_ids(i) & wanted]
        return images

    AmiBackend.describe_images = describe_images

    # --- snapshot-in-use-by-any-image ------------------------------------------
    original_delete = EBSBackend.delete_snapshot

    def delete_snapshot(self: Any, snapshot_id: str) -> Any:
        for image in getattr(self, "amis", {}).values():
            if snapshot_id in _mapping_snapshot_ids(image):
                raise InvalidSnapshotInUse(snapshot_id, image.id)
        return original_delete(self, snapshot_id)

    EBSBackend.delete_snapshot = delete_snapshot

    # --- test-controls ---------------------------------------------------------
    from datetime import datetime, timezone

    from moto.ec2.models.tags import TagBackend

    original_create_tags = TagBackend.create_tags

    def create_tags(self: Any, resource_ids: list, tags: dict) -> bool:
        result = original_create_tags(self, resource_ids, tags)
        snapshots = getattr(self, "snapshots", {})
        images = getattr(self, "amis", {})
        volumes = getattr(self, "volumes", {})
        for rid in resource_ids:
            volume = volumes.get(rid)
            if volume is not None:
                # On a volume: its state (e.g. `creating`, to keep a wait waiting).
                if STATE_TAG in tags:
                    volume._autosnap_state = tags[STATE_TAG]
                continue
            image = images.get(rid)
            if image is not None:
                # The same controls on an AMI: its creation date and state.
                if START_TIME_TAG in tags:
                    t = datetime.fromisoformat(tags[START_TIME_TAG].replace("Z", "+00:00"))
                    image.creation_date = t.astimezone(timezone.utc).replace(tzinfo=None)
                if STATE_TAG in tags:
                    image.state = tags[STATE_TAG]
                continue
            snap = snapshots.get(rid)
            if snap is None:
                continue
            if START_TIME_TAG in tags:
                t = datetime.fromisoformat(tags[START_TIME_TAG].replace("Z", "+00:00"))
                if t.tzinfo is not None:
                    # moto keeps naive UTC datetimes.
                    t = (t - t.utcoffset()).replace(tzinfo=None)
                snap.start_time = t
            if STATE_TAG in tags:
                snap.status = tags[STATE_TAG]
        return result

    TagBackend.create_tags = create_tags

    from moto.ec2.models.elastic_block_store import Volume

    original_volume_status = Volume.status

    def volume_status(self: Any) -> str:
        return getattr(self, "_autosnap_state", None) or original_volume_status.fget(self)

    Volume.status = property(volume_status)

    from moto.ec2.exceptions import EC2ClientError

    original_create_snapshot = EBSBackend.create_snapshot

    def create_snapshot(self: Any, volume_id: str, *args: Any, **kwargs: Any) -> Any:
        tags = getattr(self, "tags", {}).get(volume_id, {})
        if tags.get(FAIL_TAG) == "CreateSnapshot":
            raise EC2ClientError(
                "IncorrectState", f"test bed: snapshots of {volume_id} are set to fail"
            )
        delay = tags.get(DELAY_TAG)
        if delay:
            # A slow CreateSnapshot, for tests that interrupt autosnap mid-call.
            import time

            time.sleep(float(delay))
        return original_create_snapshot(self, volume_id, *args, **kwargs)

    EBSBackend.create_snapshot = create_snapshot
