"""Corrections that make moto's EBS direct emulation ("ebs" service) behave like AWS.

Imported and applied in-process by autosnap_testbed.py before the server starts. Written against
the moto version pinned in testbed/setup.sh (moto/ebs/models.py, responses.py): apply() refuses to
run against another moto major.minor so that a silent upgrade cannot change the test bed.

The seam is moto's two EBS classes: the backend (`moto.ebs.models.EBSBackend`, state and rules) and
the response handler (`moto.ebs.responses.EBSResponse`, parameters in, dicts out; moto's model-driven
serializer turns those dicts and our `ServiceException`s into AWS-shaped JSON). Each method moto
ships is replaced by a corrected one; inside them every correction is tagged `[C<n> name]` with what
AWS does and what moto did. CORRECTIONS below lists them (the README explains each in prose).

Everything is in memory, per account and region, like the rest of moto; `POST /moto-api/reset`
clears it too.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import datetime
import hashlib
import json
import threading
from typing import Any

BLOCK_SIZE = 524288  # bytes per EBS direct block (AWS fixed value)
BLOCKS_PER_GIB = (1 << 30) // BLOCK_SIZE  # 2048
MAX_VOLUME_GIB = 65536  # StartSnapshot VolumeSize maximum (64 TiB)
MIN_MAX_RESULTS, MAX_MAX_RESULTS = 100, 10000  # List* MaxResults range
DEFAULT_MAX_RESULTS = 10000
DEFAULT_TIMEOUT_MINUTES = 60  # StartSnapshot Timeout default (allowed 10..4320)
BLOCK_TOKEN_LIFETIME = datetime.timedelta(days=7)
EBS_DIRECT_VOLUME_ID = "vol-ffffffff"  # what EC2 shows as VolumeId of an EBS-direct snapshot
ZERO_BLOCK = bytes(BLOCK_SIZE)
ZERO_CHECKSUM = base64.b64encode(hashlib.sha256(ZERO_BLOCK).digest()).decode()

SUPPORTED_MOTO = ("5.2.",)

# name -> one-line summary (shown by `autosnap_testbed.py --verbose`, explained in README.md)
CORRECTIONS = {
    "C1 block-geometry": "BlockSize 524288 (moto: 512); BlockIndex always a JSON integer; "
                         "VolumeSize and ExpiryTime on list responses",
    "C2 start-snapshot": "ParentSnapshotId inheritance, ClientToken idempotency (409 on mismatch), "
                         "Encrypted/KmsKeyArn, Timeout, VolumeSize checks; no phantom EC2 volume",
    "C3 put-validation": "PutSnapshotBlock checks DataLength==524288==body, SHA256 checksum, index "
                         "range, pending state -> 400 ValidationException",
    "C4 zero-overwrite": "a written block (zeros included) replaces the parent's block in the child",
    "C5 complete": "CompleteSnapshot checks ChangedBlocksCount and the LINEAR aggregate checksum "
                   "-> Status error (EBS and EC2) on mismatch",
    "C6 changed-blocks": "ListChangedBlocks: indexes whose content differs, present in either "
                         "snapshot, First/SecondBlockToken as AWS; lineage check; Second only = all",
    "C7 paging": "MaxResults (100..10000), NextToken and StartingBlockIndex on both list calls; "
                 "pages cover block-index windows, so a page can be empty and carry a NextToken",
    "C8 errors": "unknown snapshot/block -> 404 ResourceNotFoundException, bad block token -> 400, "
                 "JSON bodies (moto: 500 HTML)",
    "C9 block-tokens": "per-snapshot block tokens, checked by GetSnapshotBlock (moto: ignored)",
    "C10 ec2-views": "EC2 CreateSnapshot/CopySnapshot snapshots readable through EBS direct "
                     "(no blocks, or the blocks of the snapshot the volume/copy came from)",
    "C11 ec2-state": "EBS-direct snapshots show in EC2 DescribeSnapshots as pending -> "
                     "completed/error with VolumeId vol-ffffffff, Encrypted and KmsKeyId",
}


def _b64sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def apply() -> None:
    """Install the corrections into moto (idempotent)."""
    import moto

    if not moto.__version__.startswith(SUPPORTED_MOTO):
        raise RuntimeError(
            f"ebs_corrections was written for moto {SUPPORTED_MOTO}, found {moto.__version__}: "
            "re-check moto/ebs/{models,responses}.py and update testbed/setup.sh"
        )

    from moto.core.exceptions import ServiceException
    from moto.core.responses import ActionResult
    from moto.ebs import models as ebs_models
    from moto.ebs import responses as ebs_responses
    from moto.ec2.models.elastic_block_store import EBSBackend as EC2EBSMixin
    from moto.ec2.models.elastic_block_store import Snapshot as EC2Snapshot
    from moto.ec2.utils import random_snapshot_id

    if getattr(ebs_models.EBSBackend, "_autosnap_corrected", False):
        return

    # ------------------------------------------------------------------ errors ([C8 errors])
    # AWS answers with restJson errors: HTTP status from the model, `x-amzn-ErrorType`, and a JSON
    # body with Message and Reason. moto let KeyErrors escape (HTTP 500, HTML body), which SDKs
    # retry and then report as a malformed response. moto serializes ServiceException subclasses
    # whose `code` names an error shape of the service model, with that shape's HTTP status.
    class _EBSError(ServiceException):
        def __init__(self, message: str, reason: str | None = None):
            super().__init__(message)
            if reason is not None:
                self.reason = reason
                self.Reason = reason

    class ValidationException(_EBSError):  # 400
        code = "ValidationException"

    class ResourceNotFoundException(_EBSError):  # 404
        code = "ResourceNotFoundException"

    class ConflictException(_EBSError):  # 409
        code = "ConflictException"

    def not_found(snapshot_id: str) -> ResourceNotFoundException:
        return ResourceNotFoundException(
            f"The snapshot '{snapshot_id}' does not exist.", "SNAPSHOT_NOT_FOUND")

    class _StubVolume:
        """What an EBS-direct snapshot points at in EC2: AWS shows VolumeId vol-ffffffff."""

        def __init__(self, size: int, encrypted: bool, kms_key_id: str | None):
            self.id = EBS_DIRECT_VOLUME_ID
            self.size = size
            self.encrypted = encrypted
            self.kms_key_id = kms_key_id
            self.snapshot_id = None

    Block = ebs_models.Block
    EBSSnapshot = ebs_models.EBSSnapshot

    def new_block(data: bytes, checksum: str) -> Any:
        if data == ZERO_BLOCK:
            data = ZERO_BLOCK  # share one buffer for all zero blocks (memory)
        b = Block(data, checksum, "SHA256", len(data))
        # block.block_token (a uuid) stays moto's per-write identity; tokens handed to clients
        # are derived per snapshot (see block_token()).
        return b

    def make_view(backend: Any, snapshot_id: str, ec2snap: Any, *, volume_size: int,
                  blocks: dict, lineage: str, origin: str) -> Any:
        """An EBSSnapshot without calling moto's constructor (which needs snapshot.volume)."""
        v = EBSSnapshot.__new__(EBSSnapshot)
        v.account_id = backend.account_id
        v.snapshot_id = snapshot_id
        v.status = "pending"
        v.start_time = ec2snap.start_time
        v.volume_size = volume_size
        v.block_size = BLOCK_SIZE  # [C1 block-geometry] moto: 512
        v.tags = [{"Key": t["key"], "Value": t["value"]} for t in ec2snap.get_tags()]
        v.description = ec2snap.description
        v.blocks = blocks
        v.written = {}  # index -> checksum of blocks written to *this* snapshot (C5)
        v.parent_snapshot_id = None
        v.encrypted = bool(ec2snap.encrypted)
        v.kms_key_arn = ec2snap.kms_key_id
        v.lineage = lineage
        v.origin = origin  # "ebs-direct" | "ec2"
        v.timeout = datetime.timedelta(minutes=DEFAULT_TIMEOUT_MINUTES)
        v.last_activity = _now()
        v.lock = threading.Lock()
        v.ec2 = ec2snap
        v.sorted_index_cache = None
        return v

    def set_status(view: Any, status: str, message: str | None = None) -> None:
        # [C11 ec2-state] keep EC2's view of the snapshot in step with EBS direct's.
        view.status = status
        view.ec2.status = status
        if message is not None:
            view.ec2.state_message = message

    def expire_if_timed_out(view: Any) -> None:
        # [C2 start-snapshot] AWS cancels a pending snapshot (-> error) when no block is written
        # for Timeout minutes, or it is not completed within Timeout minutes of the last write.
        if view.status == "pending" and view.origin == "ebs-direct" \
                and _now() - view.last_activity > view.timeout:
            set_status(view, "error", "Snapshot timed out before CompleteSnapshot")

    def sorted_indexes(view: Any) -> list:
        cache = view.sorted_index_cache
        if cache is None or view.status == "pending":
            cache = sorted(view.blocks)
            if view.status != "pending":
                view.sorted_index_cache = cache
        return cache

    def block_token(view: Any, index: int, block: Any) -> str:
        # [C9 block-tokens] AWS hands out opaque per-snapshot tokens and GetSnapshotBlock
        # requires the right one. Derived, so the same block in parent and child has different
        # tokens, and a rewritten block gets a new one.
        raw = f"{view.snapshot_id}/{index}/{block.block_token}".encode()
        return base64.b64encode(hashlib.sha256(raw).digest()).decode()

    # ------------------------------------------------------------------ backend
    Backend = ebs_models.EBSBackend
    orig_init = Backend.__init__

    def __init__(self: Any, region_name: str, account_id: str) -> None:
        orig_init(self, region_name, account_id)
        self.client_tokens = {}  # token -> (request fingerprint, snapshot id)
        self.lock = threading.RLock()

    def get_view(self: Any, snapshot_id: str) -> Any:
        """The EBS-direct view of a snapshot, or 404 ResourceNotFoundException."""
        if not isinstance(snapshot_id, str) or not snapshot_id:
            raise ValidationException("SnapshotId is required.", "INVALID_SNAPSHOT_ID")
        ec2snap = self.ec2_backend.snapshots.get(snapshot_id)
        with self.lock:
            view = self.snapshots.get(snapshot_id)
            if ec2snap is None:
                # Deleted through EC2 (or never existed): gone for EBS direct too.
                self.snapshots.pop(snapshot_id, None)
                raise not_found(snapshot_id)
            if view is None:
                view = self._view_of_ec2_snapshot(ec2snap, depth=0)
            expire_if_timed_out(view)
            return view

    def _view_of_ec2_snapshot(self: Any, ec2snap: Any, depth: int) -> Any:
        # [C10 ec2-views] moto kept EBS-direct snapshots in a table of their own, so a snapshot
        # made by EC2 (CreateSnapshot, CreateSnapshots, CreateImage, CopySnapshot) raised a
        # KeyError (500). On AWS every snapshot is readable through EBS direct. moto volumes hold
        # no data, so such a snapshot has no blocks -- unless its volume was created from a
        # snapshot (it then holds that snapshot's blocks) or it is a copy (the source's blocks).
        blocks: dict = {}
        volume = ec2snap.volume
        lineage = getattr(volume, "id", ec2snap.id)
        source = getattr(ec2snap, "autosnap_copied_from", None)
        origin_view = None
        if depth < 32:
            try:
                if source is not None:
                    src_region, src_id = source
                    src_backend = ebs_models.ebs_backends[self.account_id][src_region]
                    origin_view = src_backend.get_view(src_id)
                elif getattr(volume, "snapshot_id", None):
                    origin_view = self.get_view(volume.snapshot_id)
            except ServiceException:
                origin_view = None
        if origin_view is not None and origin_view.status == "completed":
            blocks = dict(origin_view.blocks)
            lineage = origin_view.lineage
        elif lineage == EBS_DIRECT_VOLUME_ID:
            lineage = ec2snap.id  # a copy of an EBS-direct snapshot whose source is gone
        view = make_view(self, ec2snap.id, ec2snap, volume_size=int(volume.size), blocks=blocks,
                         lineage=lineage, origin="ec2")
        view.status = ec2snap.status if ec2snap.status in ("pending", "completed", "error") \
            else "completed"
        self.snapshots[ec2snap.id] = view
        return view

    def start_snapshot(self: Any, volume_size: Any, tags: list | None, description: str | None,
                       parent_snapshot_id: str | None = None, client_token: str | None = None,
                       encrypted: bool | None = None, kms_key_arn: str | None = None,
                       timeout: int | None = None) -> Any:
        # [C2 start-snapshot] moto ignored ParentSnapshotId, ClientToken, Encrypted, KmsKeyArn
        # and Timeout, and created a phantom EC2 volume for every snapshot.
        try:
            volume_size = int(volume_size)
        except (TypeError, ValueError):
            raise ValidationException("VolumeSize is required.", "INVALID_VOLUME_SIZE")
        if not 1 <= volume_size <= MAX_VOLUME_GIB:
            raise ValidationException(
                f"VolumeSize must be between 1 and {MAX_VOLUME_GIB} GiB.", "INVALID_VOLUME_SIZE")
        if timeout is not None and not 10 <= int(timeout) <= 4320:
            raise ValidationException("Timeout must be between 10 and 4320 minutes.",
                                      "INVALID_PARAMETER_VALUE")
        if parent_snapshot_id and encrypted:
            # AWS: "If you specify a value for ParentSnapshotId, omit this parameter" (Encrypted);
            # the child takes the parent's encryption.
            raise ValidationException(
                "Encrypted cannot be specified together with ParentSnapshotId.",
                "INVALID_PARAMETER_VALUE")
        tags = tags or []
        fingerprint = json.dumps([volume_size, parent_snapshot_id, bool(encrypted), kms_key_arn,
                                  description, timeout, tags], sort_keys=True, default=str)
        with self.lock:
            if client_token:
                seen = self.client_tokens.get(client_token)
                if seen is not None:
                    if seen[0] != fingerprint:
                        raise ConflictException(
                            "The request uses the same client token as a previous, but "
                            "non-identical request.")
                    # AWS: a retry with the same token returns the original result.
                    return self.get_view(seen[1])

            parent = None
            if parent_snapshot_id:
                parent = self.get_view(parent_snapshot_id)
                if parent.status != "completed":
                    raise ValidationException(
                        f"The parent snapshot '{parent_snapshot_id}' is not completed.",
                        "INVALID_PARAMETER_VALUE")
                if volume_size < parent.volume_size:
                    raise ValidationException(
                        "VolumeSize cannot be smaller than the parent snapshot's "
                        f"({parent.volume_size} GiB).", "INVALID_VOLUME_SIZE")
                encrypted = parent.encrypted
                kms_key_arn = kms_key_arn or parent.kms_key_arn
            if encrypted and not kms_key_arn:
                # AWS uses the account's default EBS key (aws/ebs) and echoes its ARN.
                kms_key_arn = self.ec2_backend._create_default_encryption_key()
            encrypted = bool(encrypted)

            ec2snap = EC2Snapshot(
                self.ec2_backend, random_snapshot_id(),
                volume=_StubVolume(volume_size, encrypted, kms_key_arn),
                description=description or "", encrypted=encrypted,
                kms_key_id=kms_key_arn if encrypted else None,
                owner_id=self.account_id,
            )
            if tags:
                ec2snap.add_tags({t["Key"]: t["Value"] for t in tags})
            ec2snap.status = "pending"  # [C11 ec2-state] moto: completed at once
            self.ec2_backend.snapshots[ec2snap.id] = ec2snap

            # [C2] a child starts with the parent's blocks (shared Block objects: no copy).
            view = make_view(self, ec2snap.id, ec2snap, volume_size=volume_size,
                             blocks=dict(parent.blocks) if parent else {},
                             lineage=parent.lineage if parent else ec2snap.id,
                             origin="ebs-direct")
            view.parent_snapshot_id = parent_snapshot_id or None
            view.encrypted = encrypted
            view.kms_key_arn = kms_key_arn if encrypted else None
            if timeout is not None:
                view.timeout = datetime.timedelta(minutes=int(timeout))
            self.snapshots[view.snapshot_id] = view
            if client_token:
                self.client_tokens[client_token] = (fingerprint, view.snapshot_id)
            return view

    def put_snapshot_block(self: Any, snapshot_id: str, block_index: Any, block_data: Any,
                           checksum: str | None, checksum_algorithm: str | None,
                           data_length: Any) -> tuple:
        view = self.get_view(snapshot_id)
        # TEST-BED ONLY: autosnap-testbed:hold-writes=<seconds> (a StartSnapshot tag) holds each
        # PutSnapshotBlock of the snapshot that long, so a test can interrupt a transfer.
        hold = {t["key"]: t["value"] for t in view.ec2.get_tags()}.get(
            "autosnap-testbed:hold-writes")
        if hold:
            threading.Event().wait(float(hold))
        # [C3 put-validation] moto stored whatever came. AWS rejects with ValidationException:
        if view.status != "pending":
            raise ValidationException(
                f"The snapshot '{snapshot_id}' is {view.status}: blocks can only be written to a "
                "pending snapshot.", "INVALID_SNAPSHOT_ID")
        try:
            index = int(block_index)
        except (TypeError, ValueError):
            raise ValidationException("BlockIndex must be an integer.", "INVALID_PARAMETER_VALUE")
        limit = view.volume_size * BLOCKS_PER_GIB
        if not 0 <= index < limit:
            raise ValidationException(
                f"BlockIndex {index} is outside the volume (0..{limit - 1} for "
                f"{view.volume_size} GiB).", "INVALID_PARAMETER_VALUE")
        if block_data is None:
            block_data = b""
        if isinstance(block_data, str):
            block_data = block_data.encode("latin-1")
        block_data = bytes(block_data)
        try:
            declared = int(data_length)
        except (TypeError, ValueError):
            raise ValidationException("DataLength (x-amz-Data-Length) is required.",
                                      "INVALID_PARAMETER_VALUE")
        if declared != BLOCK_SIZE:
            raise ValidationException(
                f"DataLength must be {BLOCK_SIZE}, got {declared}.", "INVALID_PARAMETER_VALUE")
        if len(block_data) != declared:
            raise ValidationException(
                f"DataLength {declared} does not match the {len(block_data)} bytes sent.",
                "INVALID_BLOCK")
        if checksum_algorithm != "SHA256":
            raise ValidationException("ChecksumAlgorithm must be SHA256.",
                                      "INVALID_PARAMETER_VALUE")
        actual = _b64sha256(block_data)
        if checksum != actual:
            raise ValidationException(
                "The checksum does not match the data (expected the base64 SHA-256 of the "
                "block).", "INVALID_BLOCK")
        # [C4 zero-overwrite] the write replaces whatever the child inherited from its parent,
        # zeros included (moto did replace, but had no inheritance to replace).
        with view.lock:
            view.blocks[index] = new_block(block_data, actual)
            view.written[index] = actual
            view.last_activity = _now()
        return actual, "SHA256"

    def complete_snapshot(self: Any, snapshot_id: str, changed_blocks_count: Any = None,
                          checksum: str | None = None, checksum_algorithm: str | None = None,
                          checksum_aggregation_method: str | None = None) -> str:
        view = self.get_view(snapshot_id)
        if view.status != "pending":
            return view.status  # a retried CompleteSnapshot: report the state it reached
        # [C5 complete] moto ignored every parameter. AWS seals the snapshot; a wrong
        # ChangedBlocksCount or aggregate checksum makes the snapshot fail (Status "error",
        # EC2 State "error") instead of silently completing.
        try:
            count = int(changed_blocks_count)
        except (TypeError, ValueError):
            raise ValidationException("ChangedBlocksCount is required.",
                                      "INVALID_PARAMETER_VALUE")
        if count < 0:
            raise ValidationException("ChangedBlocksCount must be >= 0.",
                                      "INVALID_PARAMETER_VALUE")
        if checksum is not None:
            if checksum_algorithm != "SHA256" or checksum_aggregation_method != "LINEAR":
                raise ValidationException(
                    "A Checksum needs ChecksumAlgorithm SHA256 and ChecksumAggregationMethod "
                    "LINEAR.", "INVALID_PARAMETER_VALUE")
        with view.lock:
            written = dict(view.written)
            problem = None
            if count != len(written):
                problem = (f"ChangedBlocksCount {count} does not match the {len(written)} "
                           "blocks written")
            elif checksum is not None and checksum != linear_checksum(written):
                problem = "the aggregate (LINEAR) checksum does not match the written blocks"
            if problem:
                set_status(view, "error", f"CompleteSnapshot failed: {problem}")
            else:
                set_status(view, "completed")
                view.ec2.state_message = None
                # TEST-BED ONLY: the test-controls state tag holds EC2's view (e.g. pending).
                held = {t["key"]: t["value"] for t in view.ec2.get_tags()}.get(
                    "autosnap-testbed:state")
                if held:
                    view.ec2.status = held
            view.sorted_index_cache = None
            return view.status

    def get_snapshot_block(self: Any, snapshot_id: str, block_index: Any,
                           block_token_: str | None = None) -> Any:
        view = self.get_view(snapshot_id)
        require_completed(view)
        try:
            index = int(block_index)
        except (TypeError, ValueError):
            raise ValidationException("BlockIndex must be an integer.", "INVALID_PARAMETER_VALUE")
        block = view.blocks.get(index)
        if block is None:
            # [C8 errors] moto: KeyError -> 500.
            raise ResourceNotFoundException(
                f"Block {index} does not exist in snapshot '{snapshot_id}'.")
        if block_token_ != block_token(view, index, block):
            raise ValidationException("The block token is not valid for this snapshot and "
                                      "block index.", "INVALID_BLOCK_TOKEN")
        return block

    def require_completed(view: Any) -> None:
        # AWS reads (list/get) only from completed snapshots.
        if view.status != "completed":
            raise ValidationException(
                f"The snapshot '{view.snapshot_id}' is {view.status}, not completed.",
                "INVALID_SNAPSHOT_ID")

    def page_bounds(kind: str, ids: list, next_token: str | None, max_results: Any,
                    starting_block_index: Any) -> tuple:
        # [C7 paging] moto ignored MaxResults, NextToken and StartingBlockIndex.
        if max_results is None:
            max_results = DEFAULT_MAX_RESULTS
        try:
            max_results = int(max_results)
        except (TypeError, ValueError):
            raise ValidationException("MaxResults must be an integer.", "INVALID_PARAMETER_VALUE")
        if not MIN_MAX_RESULTS <= max_results <= MAX_MAX_RESULTS:
            raise ValidationException(
                f"MaxResults must be between {MIN_MAX_RESULTS} and {MAX_MAX_RESULTS}.",
                "INVALID_PARAMETER_VALUE")
        if next_token:
            try:
                tok = json.loads(base64.b64decode(next_token.encode(), validate=True))
                if tok["k"] != kind or tok["ids"] != ids:
                    raise ValueError("token of another listing")
                start = int(tok["n"])
            except (ValueError, KeyError, TypeError, binascii.Error):
                raise ValidationException("The pagination token is not valid.",
                                          "INVALID_PAGE_TOKEN")
        else:
            start = 0
            if starting_block_index is not None:
                try:
                    start = int(starting_block_index)
                except (TypeError, ValueError):
                    start = -1
                if start < 0:
                    raise ValidationException("StartingBlockIndex must be >= 0.",
                                              "INVALID_PARAMETER_VALUE")
        return start, max_results

    def window(indexes: list, start: int, max_results: int, kind: str, ids: list) -> tuple:
        # AWS pages over ranges of block indexes: a page holds the listed blocks whose index is
        # in [start, start + MaxResults), so it has at most MaxResults entries and may be empty
        # while a NextToken still follows. There is a NextToken while listed blocks remain.
        end = start + max_results
        lo = bisect.bisect_left(indexes, start)
        hi = bisect.bisect_left(indexes, end)
        token = None
        if hi < len(indexes):
            token = base64.b64encode(json.dumps({"k": kind, "ids": ids, "n": end}).encode()).decode()
        return indexes[lo:hi], token

    def list_snapshot_blocks(self: Any, snapshot_id: str, next_token: str | None = None,
                             max_results: Any = None, starting_block_index: Any = None) -> tuple:
        view = self.get_view(snapshot_id)
        require_completed(view)
        start, limit = page_bounds("blocks", [snapshot_id], next_token, max_results,
                                   starting_block_index)
        page, token = window(sorted_indexes(view), start, limit, "blocks", [snapshot_id])
        entries = [{"BlockIndex": int(i), "BlockToken": block_token(view, i, view.blocks[i])}
                   for i in page]
        return entries, view, token

    def list_changed_blocks(self: Any, first_snapshot_id: str | None, second_snapshot_id: str,
                            next_token: str | None = None, max_results: Any = None,
                            starting_block_index: Any = None) -> tuple:
        second = self.get_view(second_snapshot_id)
        require_completed(second)
        first = None
        if first_snapshot_id:
            first = self.get_view(first_snapshot_id)
            require_completed(first)
            if first.lineage != second.lineage:
                raise ValidationException(
                    "The snapshots are not of the same volume/snapshot lineage.",
                    "UNRELATED_SNAPSHOTS")
        ids = [first_snapshot_id or "", second_snapshot_id]
        start, limit = page_bounds("changed", ids, next_token, max_results, starting_block_index)
        # [C6 changed-blocks] moto looked only at the first snapshot's blocks. AWS lists every
        # index whose data differs: present in only one of them, or in both with other content;
        # with no FirstSnapshotId, every block of the second.
        if first is None:
            changed = sorted_indexes(second)
        else:
            changed = []
            for i in sorted(set(first.blocks) | set(second.blocks)):
                a, b = first.blocks.get(i), second.blocks.get(i)
                if a is b:
                    continue
                if a is not None and b is not None and a.checksum == b.checksum:
                    continue
                changed.append(i)
        page, token = window(changed, start, limit, "changed", ids)
        entries = []
        for i in page:
            e: dict = {"BlockIndex": int(i)}
            if first is not None and i in first.blocks:
                e["FirstBlockToken"] = block_token(first, i, first.blocks[i])
            if i in second.blocks:
                e["SecondBlockToken"] = block_token(second, i, second.blocks[i])
            entries.append(e)
        return entries, second, token

    def linear_checksum(written: dict) -> str:
        # [C5] AWS: "arrange the checksums for each written block in ascending order of their
        # block index, concatenate them ..., and then generate the checksum on the entire string
        # using the SHA256 algorithm". The checksums concatenated are the 32-byte SHA-256
        # digests (the base64 decoded), as AWS's own uploader coldsnap does and real EBS
        # accepts; the result is sent base64-encoded. See README.md for the reasoning.
        h = hashlib.sha256()
        for i in sorted(written):
            h.update(base64.b64decode(written[i]))
        return base64.b64encode(h.digest()).decode()

    Backend.__init__ = __init__
    Backend.get_view = get_view
    Backend._view_of_ec2_snapshot = _view_of_ec2_snapshot
    Backend.start_snapshot = start_snapshot
    Backend.put_snapshot_block = put_snapshot_block
    Backend.complete_snapshot = complete_snapshot
    Backend.get_snapshot_block = get_snapshot_block
    Backend.list_snapshot_blocks = list_snapshot_blocks
    Backend.list_changed_blocks = list_changed_blocks
    Backend.linear_checksum = staticmethod(linear_checksum)
    Backend._autosnap_corrected = True
    # Backends are created lazily on first request; apply() runs before the server starts, so
    # every EBS backend gets the patched __init__.

    # [C10 ec2-views] remember where an EC2 CopySnapshot came from, so that the copy carries the
    # source's blocks when read through EBS direct (moto keeps no link).
    orig_copy = EC2EBSMixin.copy_snapshot

    def copy_snapshot(self: Any, source_snapshot_id: str, source_region: str, *args: Any,
                      **kwargs: Any) -> Any:
        snap = orig_copy(self, source_snapshot_id, source_region, *args, **kwargs)
        snap.autosnap_copied_from = (source_region, source_snapshot_id)
        return snap

    EC2EBSMixin.copy_snapshot = copy_snapshot
    if not hasattr(EC2Snapshot, "state_message"):
        EC2Snapshot.state_message = None

    # ------------------------------------------------------------------ responses
    R = ebs_responses.EBSResponse

    def expiry() -> datetime.datetime:
        return _now() + BLOCK_TOKEN_LIFETIME

    def r_start_snapshot(self: Any) -> Any:
        v = self.ebs_backend.start_snapshot(
            volume_size=self._get_param("VolumeSize"),
            tags=self._get_param("Tags"),
            description=self._get_param("Description"),
            parent_snapshot_id=self._get_param("ParentSnapshotId"),
            client_token=self._get_param("ClientToken"),
            encrypted=self._get_param("Encrypted"),
            kms_key_arn=self._get_param("KmsKeyArn"),
            timeout=self._get_param("Timeout"),
        )
        result = {
            "SnapshotId": v.snapshot_id,
            "OwnerId": v.account_id,
            "Status": v.status,
            "StartTime": v.start_time,
            "VolumeSize": v.volume_size,
            "BlockSize": BLOCK_SIZE,  # [C1]
            "Tags": v.tags,
            "Description": v.description,
        }
        if v.parent_snapshot_id:
            result["ParentSnapshotId"] = v.parent_snapshot_id
        if v.encrypted and v.kms_key_arn:
            result["KmsKeyArn"] = v.kms_key_arn
        return ActionResult(result)

    def r_complete_snapshot(self: Any) -> Any:
        status = self.ebs_backend.complete_snapshot(
            snapshot_id=self._get_param("SnapshotId"),
            changed_blocks_count=self._get_param("ChangedBlocksCount"),
            checksum=self._get_param("Checksum"),
            checksum_algorithm=self._get_param("ChecksumAlgorithm"),
            checksum_aggregation_method=self._get_param("ChecksumAggregationMethod"),
        )
        return ActionResult({"Status": status})

    def r_put_snapshot_block(self: Any) -> Any:
        checksum, algorithm = self.ebs_backend.put_snapshot_block(
            snapshot_id=self._get_param("SnapshotId"),
            block_index=self._get_param("BlockIndex"),
            block_data=self._get_param("BlockData"),
            checksum=self._get_param("Checksum"),
            checksum_algorithm=self._get_param("ChecksumAlgorithm"),
            data_length=self._get_param("DataLength"),
        )
        return ActionResult({"Checksum": checksum, "ChecksumAlgorithm": algorithm})

    def r_get_snapshot_block(self: Any) -> Any:
        block = self.ebs_backend.get_snapshot_block(
            snapshot_id=self._get_param("SnapshotId"),
            block_index=self._get_param("BlockIndex"),
            block_token_=self._get_param("BlockToken"),
        )
        # Headers x-amz-Data-Length, x-amz-Checksum, x-amz-Checksum-Algorithm come from the model.
        return ActionResult({
            "DataLength": len(block.block_data),
            "BlockData": block.block_data,
            "Checksum": block.checksum,
            "ChecksumAlgorithm": "SHA256",
        })

    def list_result(key: str, entries: list, view: Any, token: str | None) -> Any:
        result = {
            key: entries,
            "ExpiryTime": expiry(),  # [C1] AWS: when the block tokens expire
            "VolumeSize": view.volume_size,
            "BlockSize": BLOCK_SIZE,
        }
        if token:
            result["NextToken"] = token
        return ActionResult(result)

    def r_list_snapshot_blocks(self: Any) -> Any:
        entries, view, token = self.ebs_backend.list_snapshot_blocks(
            snapshot_id=self._get_param("SnapshotId"),
            next_token=self._get_param("NextToken"),
            max_results=self._get_param("MaxResults"),
            starting_block_index=self._get_param("StartingBlockIndex"),
        )
        return list_result("Blocks", entries, view, token)

    def r_list_changed_blocks(self: Any) -> Any:
        entries, view, token = self.ebs_backend.list_changed_blocks(
            first_snapshot_id=self._get_param("FirstSnapshotId"),
            second_snapshot_id=self._get_param("SecondSnapshotId"),
            next_token=self._get_param("NextToken"),
            max_results=self._get_param("MaxResults"),
            starting_block_index=self._get_param("StartingBlockIndex"),
        )
        return list_result("ChangedBlocks", entries, view, token)

    R.start_snapshot = r_start_snapshot
    R.complete_snapshot = r_complete_snapshot
    R.put_snapshot_block = r_put_snapshot_block
    R.get_snapshot_block = r_get_snapshot_block
    R.list_snapshot_blocks = r_list_snapshot_blocks
    R.list_changed_blocks = r_list_changed_blocks
