"""Corrections to moto's EC2 image emulation for autosnap's AMI backups: CreateImage and CopyImage
as AWS does them, unique AMI names, a pending phase, and the S3 image tasks (store and restore)
that moto does not implement at all. Each correction is small, named, and says what AWS does.
Applied in-process by autosnap_testbed.py after ec2_corrections (it builds on its mappings).

Test-bed-only controls (not AWS behaviour) are tags, like ec2_corrections' test controls:
  autosnap-testbed:fail=CreateImage       on an instance: CreateImage makes an image that goes
                                          to state `failed` (its snapshots are made, as on AWS)
  autosnap-testbed:fail=StoreImageTask    on an image: its store task ends `Failed`
  autosnap-testbed:fail=RestoreImageTask  on an image when it is stored: the AMI restored from
                                          the object goes to state `failed`
  autosnap-testbed:copy-state=<state>     on an image: the AMIs CopyImage makes of it are held
                                          in that state (e.g. pending)
  autosnap-testbed:store-state=<state>    on an image: its store task is held in that state
                                          (e.g. InProgress)
  autosnap-testbed:restore-state=<state>  on an image when it is stored: the AMI restored from
                                          the object is held in that state (e.g. pending)
(With ec2_corrections' autosnap-testbed:state, these let tests interrupt each kind of wait.)
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

CORRECTIONS = {
    "create-image-snapshots-volumes": (
        "CreateImage snapshots each EBS volume attached to the instance (one snapshot per volume, "
        "described 'Created by CreateImage(<instance>) for <ami>', encrypted with the volume's key "
        "when the volume is) and the image's block device mappings point at them with the "
        "volumes' size, type, IOPS, throughput and delete-on-termination; TagSpecifications for "
        "'image' and 'snapshot' are applied (moto made one fake 15 GiB snapshot and answered 500 "
        "to a 'snapshot' tag specification)"
    ),
    "copy-image-encryption": (
        "CopyImage copies the source's mappings with one new snapshot per source snapshot "
        "(described 'Copied for DestinationAmi <new> from SourceAmi <src> for SourceSnapshot "
        "<snap>'); Encrypted=true encrypts them with KmsKeyId (any key id, ARN or alias, stored "
        "as the key's ARN) or the account's default EBS key; an encrypted source stays encrypted; "
        "KmsKeyId without Encrypted is InvalidParameterCombination; a key that does not exist or "
        "is not enabled makes the new image go to 'failed' with 'Copy image failed with an "
        "internal error.' as AWS does; TagSpecifications for 'image' and 'snapshot' are applied; "
        "SourceImageId/SourceImageRegion are reported (moto ignored all of it)"
    ),
    "image-name-unique": (
        "CreateImage, CopyImage, RegisterImage and CreateRestoreImageTask refuse a name already "
        "used by one of the account's AMIs in the region with InvalidAMIName.Duplicate "
        "(moto accepted duplicates)"
    ),
    "image-pending-phase": (
        "an image made by CreateImage, CopyImage or CreateRestoreImageTask is 'pending' the first "
        "time DescribeImages returns it, then 'available' (or 'failed'), so clients must wait as "
        "on AWS (moto made them 'available' at once)"
    ),
    "store-image-task": (
        "CreateStoreImageTask(ImageId, Bucket, S3ObjectTags) answers ObjectKey '<ami-id>.bin'; "
        "unknown image -> InvalidAMIID.NotFound, missing bucket -> InvalidParameterValue "
        "(moto: 500 not implemented)"
    ),
    "describe-store-image-tasks": (
        "DescribeStoreImageTasks(ImageIds, Filters task-state/bucket) reports each task "
        "InProgress (33%, then 67%) on the first two polls, then Completed (100%), writing the "
        "object into the bucket at that moment (AWS: 'the AMI object appears in the bucket only "
        "after the upload task has completed'; the object here is a JSON description of the "
        "image, not disk data) with the S3ObjectTags; or Failed with a StoreTaskFailureReason "
        "under the test control (moto: 500 not implemented)"
    ),
    "restore-image-task": (
        "CreateRestoreImageTask(Bucket, ObjectKey, Name, TagSpecifications) reads the stored "
        "object and registers a new AMI (Name, else the original's) with the same mappings, "
        "attributes and new, unencrypted snapshots (AWS decrypts on store); tags are only those "
        "given (AWS does not restore the original tags); missing bucket or object, or an object "
        "that is not a stored AMI -> InvalidParameterValue (moto: 500 not implemented)"
    ),
    "ami-test-controls": (
        "TEST-BED ONLY, not AWS behaviour: the tag autosnap-testbed:fail=CreateImage on an "
        "instance, =StoreImageTask or =RestoreImageTask on an image, makes that step fail; "
        "autosnap-testbed:copy-state, store-state and restore-state on an image hold its "
        "copies, its store task or the AMIs restored from it in a state (see the module docstring)"
    ),
}

FAIL_TAG = "autosnap-testbed:fail"
STATE_TAG = "autosnap-testbed:state"
COPY_STATE_TAG = "autosnap-testbed:copy-state"
STORE_STATE_TAG = "autosnap-testbed:store-state"
RESTORE_STATE_TAG = "autosnap-testbed:restore-state"
OBJECT_FORMAT = "autosnap-testbed-stored-image/1"
# How many DescribeStoreImageTasks polls report InProgress before the task ends.
STORE_POLLS_IN_PROGRESS = 2
# How many DescribeImages answers show a new image as pending.
PENDING_DESCRIBES = 1

_applied = False


def _store_tasks(backend: Any) -> dict[str, dict]:
    """Image id -> its store task (AWS keeps one current task per AMI). Kept on the region's
    EC2 backend, so a moto reset forgets them with everything else."""
    tasks = getattr(backend, "_autosnap_store_tasks", None)
    if tasks is None:
        tasks = backend._autosnap_store_tasks = {}
    return tasks


def _tags_of(backend: Any, resource_id: str) -> dict:
    return dict(getattr(backend, "tags", {}).get(resource_id, {}))


def _fail_control(backend: Any, resource_id: str, step: str) -> bool:
    return _tags_of(backend, resource_id).get(FAIL_TAG) == step


def _check_name_free(backend: Any, name: str | None) -> None:
    from moto.ec2.exceptions import EC2ClientError

    if not name:
        return
    for image in list(backend.amis.values()):
        if image.name == name and image.owner_id == backend.account_id:
            raise EC2ClientError(
                "InvalidAMIName.Duplicate", f"AMI name {name} is already in use by AMI {image.id}"
            )


def _drop_fake_snapshot(backend: Any, image: Any) -> None:
    # moto's Ami() always invents a 15 GiB snapshot; AWS makes only the real ones.
    fake = getattr(image, "ebs_snapshot", None)
    if fake is not None:
        backend.snapshots.pop(fake.id, None)


def _set_pending(image: Any, final_state: str = "available", reason: dict | None = None) -> None:
    image._autosnap_final_state = final_state
    image._autosnap_pending = PENDING_DESCRIBES
    image._autosnap_state_reason = reason
    image.state = "pending"


def _spec_tags(response: Any) -> tuple[dict, dict]:
    specs = response._parse_tag_specification()
    return dict(specs.get("image", {})), dict(specs.get("snapshot", {}))


def _kms_arn(account: str, region: str, key_id: str) -> str | None:
    """The ARN of an enabled KMS key given by id, ARN or alias; None if there is none."""
    from moto.kms.models import kms_backends

    try:
        key = kms_backends[account][region].describe_key(key_id)
    except Exception:
        return None
    if getattr(key, "key_state", "Enabled") != "Enabled":
        return None
    return key.arn


def _default_ebs_key(backend: Any) -> str:
    if not getattr(backend, "default_kms_key_id", None):
        backend._create_default_encryption_key()
    return backend.default_kms_key_id


def _mapping(device: str, snapshot: Any, size: int, volume_type: str | None,
             delete_on_termination: bool, iops: int | None = None,
             throughput: int | None = None) -> dict:
    ebs: dict[str, Any] = {
        "SnapshotId": snapshot.id,
        "VolumeSize": size,
        "VolumeType": volume_type or "gp2",
        "DeleteOnTermination": bool(delete_on_termination),
        "Encrypted": bool(snapshot.encrypted),
    }
    if iops:
        ebs["Iops"] = iops
    if throughput:
        ebs["Throughput"] = throughput
    return {"DeviceName": device, "Ebs": ebs}


def _s3(account: str) -> Any:
    from moto.s3.models import s3_backends

    return s3_backends[account]["aws"]


def _bucket_exists(account: str, bucket: str) -> bool:
    try:
        _s3(account).get_bucket(bucket)
        return True
    except Exception:
        return False


def _image_document(backend: Any, image: Any) -> dict:
    return {
        "Format": OBJECT_FORMAT,
        "ImageId": image.id,
        "Name": image.name,
        "Description": image.description,
        "Architecture": image.architecture,
        "RootDeviceName": image.root_device_name,
        "VirtualizationType": image.virtualization_type,
        "BootMode": getattr(image, "boot_mode", None),
        "EnaSupport": getattr(image, "ena_support", None),
        "Platform": image.platform,
        "Tags": _tags_of(backend, image.id),
        "BlockDeviceMappings": image.block_device_mappings,
    }


def apply() -> None:
    global _applied
    if _applied:
        return
    _applied = True

    from moto.core.responses import ActionResult
    from moto.ec2.exceptions import EC2ClientError, InvalidParameterCombination
    from moto.ec2.models.amis import AmiBackend
    from moto.ec2.responses.amis import AmisResponse

    # --- image-pending-phase -------------------------------------------------
    inner_describe = AmiBackend.describe_images

    def describe_images(self: Any, *args: Any, **kwargs: Any) -> Any:
        images = inner_describe(self, *args, **kwargs)
        for image in images:
            pending = getattr(image, "_autosnap_pending", None)
            if pending is None:
                continue
            # The test-controls state tag holds an image in that state (e.g. pending).
            held = image.ec2_backend.tags.get(image.id, {}).get("autosnap-testbed:state")
            if held:
                image.state = held
                continue
            if pending > 0:
                image._autosnap_pending = pending - 1
                image.state = "pending"
            else:
                image.state = image._autosnap_final_state
                if image._autosnap_state_reason:
                    image.state_reason = image._autosnap_state_reason
        return images

    AmiBackend.describe_images = describe_images

    # --- create-image-snapshots-volumes --------------------------------------
    def create_image(self: Any) -> ActionResult:
        name = self._get_param("Name")
        description = self._get_param("Description", "")
        instance_id = self._get_param("InstanceId")
        image_tags, snapshot_tags = _spec_tags(self)
        self.error_on_dryrun()
        backend = self.ec2_backend
        instance = backend.get_instance(instance_id)
        _check_name_free(backend, name)
        # No tag specifications here: moto raises NotImplementedError for 'snapshot'.
        image = backend.create_image(instance_id, name, description, tag_specifications=[])
        _drop_fake_snapshot(backend, image)
        mappings = []
        for device, block in instance.get_block_device_mapping:
            volume = backend.get_volume(block.volume_id)
            snap = backend.create_snapshot(
                volume.id, f"Created by CreateImage({instance_id}) for {image.id}", from_ami=image.id
            )
            if volume.encrypted:
                snap.encrypted = True
                snap.kms_key_id = volume.kms_key_id
            if snapshot_tags:
                backend.create_tags([snap.id], snapshot_tags)
            mappings.append(_mapping(device, snap, volume.size, volume.volume_type,
                                     block.delete_on_termination, getattr(volume, "iops", None),
                                     getattr(volume, "throughput", None)))
        image._autosnap_mappings = mappings
        image.root_device_name = instance.root_device_name
        image.root_device_type = "ebs"
        if image_tags:
            backend.create_tags([image.id], image_tags)
        if _fail_control(backend, instance_id, "CreateImage"):
            _set_pending(image, "failed", {
                "Code": "Server.InternalError",
                "Message": "test bed: images of this instance are set to fail",
            })
        else:
            _set_pending(image)
        return ActionResult({"ImageId": image.id})

    AmisResponse.create_image = create_image

    # --- copy-image-encryption -----------------------------------------------
    def copy_image(self: Any) -> ActionResult:
        from moto.ec2.models import ec2_backends

        source_image_id = self._get_param("SourceImageId")
        source_region = self._get_param("SourceRegion")
        name = self._get_param("Name")
        description = self._get_param("Description")
        encrypted = str(self._get_param("Encrypted", "false")).lower() == "true"
        kms_key_id = self._get_param("KmsKeyId")
        image_tags, snapshot_tags = _spec_tags(self)
        self.error_on_dryrun()
        if kms_key_id and not encrypted:
            raise InvalidParameterCombination(
                "KmsKeyId is only allowed when Encrypted is set to true"
            )
        backend = self.ec2_backend
        _check_name_free(backend, name)
        source_backend = ec2_backends[self.current_account][source_region]
        source = source_backend.describe_images(ami_ids=[source_image_id])[0]
        image = backend.copy_image(source_image_id, source_region, name, description)
        _drop_fake_snapshot(backend, image)
        key_arn = None
        key_ok = True
        if kms_key_id:
            key_arn = _kms_arn(self.current_account, self.region, kms_key_id)
            key_ok = key_arn is not None
        mappings = []
        for m in source.block_device_mappings:
            ebs = dict(m.get("Ebs") or {})
            src_id = ebs.get("SnapshotId")
            if not src_id:
                mappings.append(dict(m))
                continue
            src = source_backend.snapshots[src_id]
            encrypt = encrypted or bool(src.encrypted)
            if not encrypt:
                key = None
            elif key_arn:
                key = key_arn
            elif src.encrypted and src.kms_key_id and not encrypted:
                key = src.kms_key_id
            else:
                key = _default_ebs_key(backend)
            snap = backend.copy_snapshot(
                src_id, source_region,
                f"Copied for DestinationAmi {image.id} from SourceAmi {source.id} "
                f"for SourceSnapshot {src_id}",
                key,
            )
            snap.encrypted = encrypt
            snap.kms_key_id = key
            snap.from_ami = image.id
            if snapshot_tags:
                backend.create_tags([snap.id], snapshot_tags)
            mappings.append(_mapping(
                m["DeviceName"], snap, ebs.get("VolumeSize") or src.volume.size,
                ebs.get("VolumeType"), ebs.get("DeleteOnTermination", False),
                ebs.get("Iops"), ebs.get("Throughput"),
            ))
        image._autosnap_mappings = mappings
        for attr in ("root_device_name", "architecture", "virtualization_type", "boot_mode",
                     "ena_support", "platform"):
            if getattr(source, attr, None) is not None:
                setattr(image, attr, getattr(source, attr))
        image.root_device_type = "ebs"
        image.source_image_id = source.id
        image.source_image_region = source_region
        if image_tags:
            backend.create_tags([image.id], image_tags)
        held = _tags_of(source_backend, source.id).get(COPY_STATE_TAG)
        if held:
            backend.create_tags([image.id], {STATE_TAG: held})
        if key_ok:
            _set_pending(image)
        else:
            _set_pending(image, "failed", {
                "Code": "Client.InternalError",
                "Message": "Copy image failed with an internal error.",
            })
        return ActionResult({"ImageId": image.id})

    AmisResponse.copy_image = copy_image

    # --- image-name-unique (RegisterImage: wraps ec2_corrections' version) ----
    inner_register = AmisResponse.register_image

    def register_image(self: Any) -> Any:
        _check_name_free(self.ec2_backend, self._get_param("Name"))
        return inner_register(self)

    AmisResponse.register_image = register_image

    # --- store-image-task ------------------------------------------------------
    def create_store_image_task(self: Any) -> ActionResult:
        image_id = self._get_param("ImageId")
        bucket = self._get_param("Bucket")
        object_tags = self._get_param("S3ObjectTags", [])
        self.error_on_dryrun()
        backend = self.ec2_backend
        image = backend.describe_images(ami_ids=[image_id])[0]
        if not _bucket_exists(self.current_account, bucket):
            raise EC2ClientError("InvalidParameterValue", f"The S3 bucket '{bucket}' does not exist")
        key = f"{image_id}.bin"
        tasks = _store_tasks(backend)
        tasks[image_id] = {
            "AmiId": image_id,
            "Bucket": bucket,
            "S3objectKey": key,
            "TaskStartTime": datetime.now(timezone.utc),
            "StoreTaskState": "InProgress",
            "ProgressPercentage": 0,
            "polls": 0,
            "fail": _fail_control(backend, image_id, "StoreImageTask"),
            "hold": _tags_of(backend, image_id).get(STORE_STATE_TAG),
            "document": _image_document(backend, image),
            "object_tags": {t.get("Key"): t.get("Value", "") for t in object_tags},
            "written": False,
        }
        return ActionResult({"ObjectKey": key})

    # --- describe-store-image-tasks ---------------------------------------------
    def _advance(account: str, task: dict) -> None:
        if task["StoreTaskState"] != "InProgress":
            return
        if task["hold"]:
            task["StoreTaskState"] = task["hold"]
            return
        task["polls"] += 1
        if task["polls"] <= STORE_POLLS_IN_PROGRESS:
            task["ProgressPercentage"] = 100 * task["polls"] // (STORE_POLLS_IN_PROGRESS + 1)
            return
        if task["fail"]:
            task["StoreTaskState"] = "Failed"
            task["StoreTaskFailureReason"] = "test bed: store tasks of this image are set to fail"
            return
        s3 = _s3(account)
        body = json.dumps(task["document"], default=str, indent=1).encode()
        key = s3.put_object(task["Bucket"], task["S3objectKey"], body)
        if task["object_tags"]:
            try:
                s3.put_object_tagging(key, task["object_tags"])
            except Exception:  # tagging is a nicety here; the object is what matters
                pass
        task["written"] = True
        task["StoreTaskState"] = "Completed"
        task["ProgressPercentage"] = 100

    def describe_store_image_tasks(self: Any) -> ActionResult:
        image_ids = self._get_param("ImageIds", [])
        filters = self._filters_from_querystring() or {}
        self.error_on_dryrun()
        tasks = _store_tasks(self.ec2_backend)
        out = []
        for image_id, task in tasks.items():
            if image_ids and image_id not in image_ids:
                continue
            if "bucket" in filters and task["Bucket"] not in filters["bucket"]:
                continue
            _advance(self.current_account, task)
            if "task-state" in filters and task["StoreTaskState"] not in filters["task-state"]:
                continue
            out.append({k: v for k, v in task.items() if k[0].isupper()})
        return ActionResult({"StoreImageTaskResults": out})

    # --- restore-image-task --------------------------------------------------------
    def create_restore_image_task(self: Any) -> ActionResult:
        bucket = self._get_param("Bucket")
        object_key = self._get_param("ObjectKey")
        name = self._get_param("Name")
        image_tags, snapshot_tags = _spec_tags(self)
        self.error_on_dryrun()
        backend = self.ec2_backend
        if not _bucket_exists(self.current_account, bucket):
            raise EC2ClientError("InvalidParameterValue", f"The S3 bucket '{bucket}' does not exist")
        obj = _s3(self.current_account).get_object(bucket, object_key)
        if obj is None:
            raise EC2ClientError(
                "InvalidParameterValue",
                f"The S3 object '{object_key}' does not exist in bucket '{bucket}'",
            )
        try:
            doc = json.loads(obj.value)
            assert doc.get("Format") == OBJECT_FORMAT
        except Exception:
            raise EC2ClientError(
                "InvalidParameterValue",
                f"The S3 object '{object_key}' is not an AMI stored by CreateStoreImageTask",
            )
        name = name or doc.get("Name")
        _check_name_free(backend, name)
        image = backend.register_image(name, doc.get("Description") or "")
        _drop_fake_snapshot(backend, image)
        zone = f"{self.region}a"
        mappings = []
        for m in doc.get("BlockDeviceMappings", []):
            ebs = m.get("Ebs") or {}
            if not ebs.get("SnapshotId"):
                mappings.append(m)
                continue
            size = int(ebs.get("VolumeSize") or 8)
            volume = backend.create_volume(size=size, zone_name=zone)
            snap = backend.create_snapshot(
                volume.id, f"Created by CreateRestoreImageTask for {image.id}", from_ami=image.id
            )
            backend.delete_volume(volume.id)
            if snapshot_tags:
                backend.create_tags([snap.id], snapshot_tags)
            mappings.append(_mapping(m["DeviceName"], snap, size, ebs.get("VolumeType"),
                                     ebs.get("DeleteOnTermination", False), ebs.get("Iops"),
                                     ebs.get("Throughput")))
        image._autosnap_mappings = mappings
        for attr, key in (("root_device_name", "RootDeviceName"), ("architecture", "Architecture"),
                          ("virtualization_type", "VirtualizationType"),
                          ("boot_mode", "BootMode"), ("ena_support", "EnaSupport"),
                          ("platform", "Platform")):
            if doc.get(key) is not None:
                setattr(image, attr, doc[key])
        image.root_device_type = "ebs"
        if image_tags:
            backend.create_tags([image.id], image_tags)
        if (doc.get("Tags") or {}).get(FAIL_TAG) == "RestoreImageTask":
            _set_pending(image, "failed", {
                "Code": "Client.RestoreImageTaskFailed",
                "Message": "test bed: restores of this image are set to fail",
            })
        else:
            _set_pending(image)
        held = (doc.get("Tags") or {}).get(RESTORE_STATE_TAG)
        if held:
            backend.create_tags([image.id], {STATE_TAG: held})
        return ActionResult({"ImageId": image.id})

    AmisResponse.create_store_image_task = create_store_image_task
    AmisResponse.describe_store_image_tasks = describe_store_image_tasks
    AmisResponse.create_restore_image_task = create_restore_image_task
