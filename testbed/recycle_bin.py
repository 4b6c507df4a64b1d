"""Recycle Bin for the test bed: the `rbin` service (retention rules) and, in EC2, deletes that a
rule retains going to the bin instead of away, with the four EC2 calls that list and restore what
is in it. moto 5.2.x has no `rbin` service at all (its server cannot route a request signed for
`rbin`) and deletes every snapshot and AMI for good.

Behaviour follows AWS's documentation:
- https://docs.aws.amazon.com/recyclebin/latest/APIReference/API_CreateRule.html (and GetRule,
  ListRules, DeleteRule, RuleSummary, ResourceTag)
- https://docs.aws.amazon.com/ebs/latest/userguide/recycle-bin-working-with-rules.html
  ("Resources of the specified type that are tagged with at least one of the tag key and value
  pairs that are specified in the retention rule are automatically retained"; a Region-level rule
  "applies to all of the resources of the specified type in the Region ... even if the resources
  are not tagged", "but can exclude resources that have specific tags")
- https://docs.aws.amazon.com/ebs/latest/userguide/recycle-bin-create-rule.html (retention 1-365
  days for snapshots and AMIs, 1-7 for volumes; only Region-level rules can be locked, with an
  unlock delay of 7-30 days)
- https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_ListSnapshotsInRecycleBin.html,
  API_RestoreSnapshotFromRecycleBin.html, API_ListImagesInRecycleBin.html,
  API_RestoreImageFromRecycleBin.html

The `rbin` service is served by a WSGI layer in front of moto (`wsgi`): a request whose SigV4
credential scope names the service `rbin` (the SDKs' signing name for Recycle Bin) is answered
here; every other request goes to moto unchanged. Rules live per account (the
`x-moto-account-id` header, else moto's default account) and Region (the credential scope's), and
`POST /moto-api/reset` clears them with the rest.

Choices where AWS does not document the exact answer (see testbed/README.md):
- A resource that several rules retain is kept for the longest retention period (ties: the rule
  whose identifier sorts first).
- A ResourceTag without a ResourceTagValue matches only a tag with that key and an empty value.
- A rule is `available` as soon as it is created (AWS shows `pending` for a short while).
- A deleted resource keeps its tags in the bin and gets them back when restored; a restored
  snapshot is `completed` at once (AWS shows `recovering` for a while).
- An AMI in the bin does not keep its snapshots from being deleted (to the bin, if a snapshot rule
  retains them, else for good).

Test control (AWS IAM is not emulated): a rule created with the rule tag
`autosnap-testbed:deny=rbin:ListRules` makes every later ListRules and GetRule in its account and
Region answer 403 AccessDeniedException, as for a caller without those permissions.

Test observation: `GET /_autosnap_testbed/rbin-calls` answers a JSON array of
`{account, region, action, count}`: how many requests of each rbin action the server answered
(so a test can prove a client reads the rules once per Region, not once per resource).
"""

from __future__ import annotations

import json
import random
import string
import threading
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable

CORRECTIONS = {
    "rbin-service": "the rbin service: CreateRule, GetRule, ListRules (paged, ResourceType "
    "required, LockState filter), DeleteRule, tag-level and Region-level rules, exclusion tags "
    "(Region-level only), optional lock on creation (a locked rule cannot be deleted)",
    "delete-to-recycle-bin": "DeleteSnapshot / DeregisterImage of a resource that an available "
    "rule retains moves it to the Recycle Bin (it leaves DescribeSnapshots/DescribeImages) for "
    "the longest matching retention period",
    "recycle-bin-ec2-calls": "ListSnapshotsInRecycleBin, RestoreSnapshotFromRecycleBin, "
    "ListImagesInRecycleBin, RestoreImageFromRecycleBin (paged; restore brings back tags)",
}

DEFAULT_ACCOUNT = "123456789012"
DENY_TAG = "autosnap-testbed:deny"
RESOURCE_TYPES = ("EBS_SNAPSHOT", "EC2_IMAGE", "EBS_VOLUME")
# Retention periods AWS accepts per resource type (the user guide's "supported retention periods").
MAX_RETENTION_DAYS = {"EBS_SNAPSHOT": 365, "EC2_IMAGE": 365, "EBS_VOLUME": 7}

_lock = threading.Lock()
# (account, region) -> {identifier: rule}
_rules: dict[tuple[str, str], dict[str, dict]] = {}
# (account, region) -> denied actions (test control)
_denied: dict[tuple[str, str], set[str]] = {}
# (account, region, action) -> requests answered (test observation)
_calls: dict[tuple[str, str, str], int] = {}
CALLS_PATH = "/_autosnap_testbed/rbin-calls"
_applied = False


def _now() -> datetime:
    return datetime.now(timezone.utc)


def reset() -> None:
    with _lock:
        _rules.clear()
        _denied.clear()
        _calls.clear()


# --- matching (the same semantics as autosnap-core's recycle_bin.rs) ---------------------------

def _pair_matches(tags: dict, pair: dict) -> bool:
    key = pair["ResourceTagKey"]
    return key in tags and (tags[key] or "") == (pair.get("ResourceTagValue") or "")


def rule_retains(rule: dict, resource_type: str, tags: dict) -> bool:
    """Whether `rule` retains a deleted resource of `resource_type` carrying `tags`."""
    if rule["Status"] != "available" or rule["ResourceType"] != resource_type:
        return False
    if rule.get("ResourceTags"):
        return any(_pair_matches(tags, p) for p in rule["ResourceTags"])
    return not any(_pair_matches(tags, p) for p in rule.get("ExcludeResourceTags") or [])


def retaining_rule(account: str, region: str, resource_type: str, tags: dict) -> dict | None:
    with _lock:
        rules = list(_rules.get((account, region), {}).values())
    matching = [r for r in rules if rule_retains(r, resource_type, tags)]
    if not matching:
        return None
    # Longest retention first; the identifier breaks ties so the answer is stable.
    matching.sort(key=lambda r: (-r["RetentionPeriod"]["RetentionPeriodValue"], r["Identifier"]))
    return matching[0]


# --- the rbin service (REST-JSON) --------------------------------------------------------------

class RbinError(Exception):
    def __init__(self, status: int, code: str, message: str, reason: str | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.reason = status, code, message, reason


def _validation(message: str) -> RbinError:
    return RbinError(400, "ValidationException", message, "INVALID_PARAMETER_VALUE")


def _not_found(identifier: str) -> RbinError:
    return RbinError(404, "ResourceNotFoundException",
                     f"The retention rule '{identifier}' does not exist.", "RULE_NOT_FOUND")


def _scope(environ: dict) -> tuple[str | None, str | None]:
    auth = environ.get("HTTP_AUTHORIZATION") or ""
    try:
        credential = auth.split(",")[0].split()[1]
        _, _, region, service, _ = credential.split("/")
        return service.lower(), region
    except (IndexError, ValueError):
        return None, None


def _check_tags(tags: Any, what: str, most: int) -> list[dict]:
    if tags is None:
        return []
    if not isinstance(tags, list) or len(tags) > most:
        raise _validation(f"{what} must be a list of at most {most} tags.")
    out = []
    for t in tags:
        key = (t or {}).get("ResourceTagKey")
        if not isinstance(key, str) or not 1 <= len(key) <= 128:
            raise _validation(f"Each of {what} needs a ResourceTagKey of 1-128 characters.")
        pair = {"ResourceTagKey": key}
        if t.get("ResourceTagValue") is not None:
            pair["ResourceTagValue"] = str(t["ResourceTagValue"])
        out.append(pair)
    return out


def _summary(rule: dict) -> dict:
    out = {k: rule[k] for k in ("Identifier", "Description", "RetentionPeriod", "RuleArn")
           if rule.get(k) is not None}
    if rule.get("LockState"):
        out["LockState"] = rule["LockState"]
    return out


def _full(rule: dict) -> dict:
    keys = ("Identifier", "Description", "ResourceType", "RetentionPeriod", "ResourceTags",
            "ExcludeResourceTags", "Status", "LockConfiguration", "LockState", "RuleArn")
    return {k: rule[k] for k in keys if rule.get(k) not in (None, [])}


def create_rule(account: str, region: str, body: dict) -> dict:
    rtype = body.get("ResourceType")
    if rtype not in RESOURCE_TYPES:
        raise _validation(f"ResourceType must be one of {', '.join(RESOURCE_TYPES)}.")
    period = body.get("RetentionPeriod") or {}
    value, unit = period.get("RetentionPeriodValue"), period.get("RetentionPeriodUnit")
    most = MAX_RETENTION_DAYS[rtype]
    if unit != "DAYS" or not isinstance(value, int) or not 1 <= value <= most:
        raise _validation(f"RetentionPeriod for {rtype} must be 1-{most} DAYS.")
    resource_tags = _check_tags(body.get("ResourceTags"), "ResourceTags", 50)
    exclude = _check_tags(body.get("ExcludeResourceTags"), "ExcludeResourceTags", 5)
    if resource_tags and exclude:
        raise _validation("ExcludeResourceTags apply to Region-level retention rules only; a "
                          "rule with ResourceTags cannot have them.")
    lock = body.get("LockConfiguration")
    if lock is not None:
        if resource_tags:
            raise _validation("Only Region-level retention rules can be locked.")
        delay = (lock or {}).get("UnlockDelay") or {}
        if delay.get("UnlockDelayUnit") != "DAYS" or not isinstance(
                delay.get("UnlockDelayValue"), int) or not 7 <= delay["UnlockDelayValue"] <= 30:
            raise _validation("UnlockDelay must be 7-30 DAYS.")
    description = body.get("Description")
    if description is not None and len(description) > 255:
        raise _validation("Description must be at most 255 characters.")
    identifier = "".join(random.choice(string.ascii_letters + string.digits) for _ in range(11))
    rule = {
        "Identifier": identifier,
        "Description": description,
        "ResourceType": rtype,
        "RetentionPeriod": {"RetentionPeriodValue": value, "RetentionPeriodUnit": "DAYS"},
        "ResourceTags": resource_tags,
        "ExcludeResourceTags": exclude,
        "Status": "available",
        "LockConfiguration": lock,
        "LockState": "locked" if lock is not None else None,
        "RuleArn": f"arn:aws:rbin:{region}:{account}:rule/{identifier}",
        "Tags": body.get("Tags") or [],
    }
    with _lock:
        _rules.setdefault((account, region), {})[identifier] = rule
        for t in rule["Tags"]:
            if t.get("Key") == DENY_TAG:
                _denied.setdefault((account, region), set()).add(t.get("Value") or "")
    out = _full(rule)
    if rule["Tags"]:
        out["Tags"] = rule["Tags"]
    return out


def _deny(account: str, region: str, action: str) -> None:
    with _lock:
        denied = _denied.get((account, region), set())
    if f"rbin:{action}" in denied or ("rbin:ListRules" in denied and action == "GetRule"):
        raise RbinError(403, "AccessDeniedException",
                        f"User: arn:aws:iam::{account}:user/testing is not authorized to "
                        f"perform: rbin:{action}")


def list_rules(account: str, region: str, body: dict) -> dict:
    _deny(account, region, "ListRules")
    rtype = body.get("ResourceType")
    if rtype not in RESOURCE_TYPES:
        raise _validation(f"ResourceType is required: one of {', '.join(RESOURCE_TYPES)}.")
    max_results = body.get("MaxResults")
    if max_results is not None and not (isinstance(max_results, int) and 1 <= max_results <= 1000):
        raise _validation("MaxResults must be 1-1000.")
    lock_state = body.get("LockState")
    want_tags = _check_tags(body.get("ResourceTags"), "ResourceTags", 50)
    want_exclude = _check_tags(body.get("ExcludeResourceTags"), "ExcludeResourceTags", 5)
    with _lock:
        rules = sorted(_rules.get((account, region), {}).values(), key=lambda r: r["Identifier"])
    rows = []
    for r in rules:
        if r["ResourceType"] != rtype:
            continue
        if lock_state and r.get("LockState") != lock_state:
            continue
        if want_tags and not all(p in r["ResourceTags"] for p in want_tags):
            continue
        if want_exclude and not all(p in r["ExcludeResourceTags"] for p in want_exclude):
            continue
        rows.append(_summary(r))
    start = 0
    token = body.get("NextToken")
    if token:
        try:
            start = int(token)
        except ValueError:
            raise _validation(f"The NextToken '{token}' is invalid.") from None
    size = max_results or 1000
    out: dict = {"Rules": rows[start:start + size]}
    if start + size < len(rows):
        out["NextToken"] = str(start + size)
    return out


def get_rule(account: str, region: str, identifier: str) -> dict:
    _deny(account, region, "GetRule")
    with _lock:
        rule = _rules.get((account, region), {}).get(identifier)
    if rule is None:
        raise _not_found(identifier)
    return _full(rule)


def delete_rule(account: str, region: str, identifier: str) -> None:
    with _lock:
        rules = _rules.get((account, region), {})
        rule = rules.get(identifier)
        if rule is None:
            raise _not_found(identifier)
        if rule.get("LockState") in ("locked", "pending_unlock"):
            raise RbinError(409, "ConflictException",
                            f"The retention rule '{identifier}' is locked and cannot be deleted.",
                            "INVALID_RULE_STATE")
        del rules[identifier]


def _route(method: str, path: str) -> tuple[str, str | None]:
    parts = [p for p in path.split("/") if p]
    if method == "POST" and parts == ["rules"]:
        return "CreateRule", None
    if method == "POST" and parts == ["list-rules"]:
        return "ListRules", None
    if len(parts) == 2 and parts[0] == "rules":
        if method == "GET":
            return "GetRule", parts[1]
        if method == "DELETE":
            return "DeleteRule", parts[1]
    return "", None


def handle_rbin(environ: dict, start_response: Callable, region: str) -> Iterable[bytes]:
    account = environ.get("HTTP_X_MOTO_ACCOUNT_ID") or DEFAULT_ACCOUNT
    method = environ.get("REQUEST_METHOD", "GET")
    path = environ.get("PATH_INFO", "")
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    raw = environ["wsgi.input"].read(length) if length else b""
    status, payload = 200, None
    try:
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            raise _validation("The request body is not JSON.") from None
        action, identifier = _route(method, path)
        with _lock:
            key = (account, region, action or "unknown")
            _calls[key] = _calls.get(key, 0) + 1
        if action == "CreateRule":
            status, payload = 201, create_rule(account, region, body)
        elif action == "ListRules":
            payload = list_rules(account, region, body)
        elif action == "GetRule":
            payload = get_rule(account, region, identifier or "")
        elif action == "DeleteRule":
            delete_rule(account, region, identifier or "")
            status = 204
        else:
            raise RbinError(404, "UnknownOperationException",
                            f"The test bed's Recycle Bin does not serve {method} {path}.")
        headers = [("Content-Type", "application/json")]
    except RbinError as e:
        status = e.status
        payload = {"Message": e.message}
        if e.reason:
            payload["Reason"] = e.reason
        headers = [("Content-Type", "application/json"), ("x-amzn-ErrorType", e.code)]
    data = b"" if payload is None else json.dumps(payload).encode()
    reasons = {200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request",
               403: "Forbidden", 404: "Not Found", 409: "Conflict"}
    start_response(f"{status} {reasons.get(status, 'Error')}",
                   headers + [("Content-Length", str(len(data)))])
    return [data]


def wsgi(app: Callable) -> Callable:
    """Serves `rbin` requests here and everything else through moto's `app`."""

    def dispatch(environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith("/moto-api/reset"):
            reset()
        if path == CALLS_PATH:
            with _lock:
                rows = [{"account": a, "region": r, "action": x, "count": n}
                        for (a, r, x), n in sorted(_calls.items())]
            data = json.dumps(rows).encode()
            start_response("200 OK", [("Content-Type", "application/json"),
                                      ("Content-Length", str(len(data)))])
            return [data]
        service, region = _scope(environ)
        if service == "rbin" and region:
            return handle_rbin(environ, start_response, region)
        return app(environ, start_response)

    return dispatch


# --- EC2: deletes to the bin, and the bin's list/restore calls ----------------------------------

def _bin(backend: Any, kind: str) -> dict[str, dict]:
    """What is in the bin of one EC2 backend (account and Region): id -> entry. Kept on the
    backend so that a moto reset empties it too."""
    name = f"_autosnap_recycle_bin_{kind}"
    entries = getattr(backend, name, None)
    if entries is None:
        entries = {}
        setattr(backend, name, entries)
    now = _now()
    for rid in [r for r, e in entries.items() if e["exit"] <= now]:
        del entries[rid]  # the retention period is over: deleted for good
    return entries


def _to_bin(backend: Any, kind: str, resource_id: str, resource: Any, rule: dict) -> None:
    now = _now()
    tags = dict(backend.tags.pop(resource_id, {}) or {})
    days = rule["RetentionPeriod"]["RetentionPeriodValue"]
    _bin(backend, kind)[resource_id] = {
        "resource": resource, "tags": tags, "enter": now, "exit": now + timedelta(days=days),
        "rule": rule["Identifier"],
    }


def _page(rows: list, token: str | None, max_results: int | None, low: int, bad: Callable) -> tuple:
    if max_results is not None and not low <= max_results <= 1000:
        raise bad(f"MaxResults must be {low} to 1000, not {max_results}.")
    start = 0
    if token:
        try:
            start = int(token)
        except ValueError:
            raise bad(f"The NextToken '{token}' is invalid.") from None
    size = max_results or 1000
    return rows[start:start + size], (str(start + size) if start + size < len(rows) else None)


def apply() -> None:
    global _applied
    if _applied:
        return
    _applied = True

    from moto.core.responses import ActionResult
    from moto.ec2.exceptions import EC2ClientError, InvalidAMIIdError, InvalidSnapshotIdError
    from moto.ec2.models.amis import AmiBackend
    from moto.ec2.models.elastic_block_store import EBSBackend
    from moto.ec2.responses.elastic_block_store import ElasticBlockStore

    def bad(message: str) -> EC2ClientError:
        return EC2ClientError("InvalidParameterValue", message)

    # --- delete-to-recycle-bin ----------------------------------------------------------
    # Installed before snapshot_lock: a locked snapshot is refused before it could reach here.
    inner_delete = EBSBackend.delete_snapshot

    def delete_snapshot(self: Any, snapshot_id: str) -> Any:
        snap = self.snapshots.get(snapshot_id)
        if snap is not None:
            rule = retaining_rule(self.account_id, self.region_name, "EBS_SNAPSHOT",
                                  self.tags.get(snapshot_id, {}) or {})
            if rule is not None:
                # moto's own checks (in use by an AMI, …) still apply: delete, then keep it.
                result = inner_delete(self, snapshot_id)
                _to_bin(self, "snapshots", snapshot_id, snap, rule)
                return result
        return inner_delete(self, snapshot_id)

    EBSBackend.delete_snapshot = delete_snapshot

    inner_deregister = AmiBackend.deregister_image

    def deregister_image(self: Any, ami_id: str) -> Any:
        image = self.amis.get(ami_id)
        if image is not None:
            rule = retaining_rule(self.account_id, self.region_name, "EC2_IMAGE",
                                  self.tags.get(ami_id, {}) or {})
            if rule is not None:
                result = inner_deregister(self, ami_id)
                # In the bin it is not "deregistered" (that would answer
                # InvalidAMIID.Unavailable); it is gone from DescribeImages until restored.
                if ami_id in self.deleted_amis:
                    self.deleted_amis.remove(ami_id)
                _to_bin(self, "images", ami_id, image, rule)
                return result
        return inner_deregister(self, ami_id)

    AmiBackend.deregister_image = deregister_image

    # --- recycle-bin-ec2-calls ----------------------------------------------------------
    def list_snapshots_in_recycle_bin(self: Any) -> ActionResult:
        ids = self._get_param("SnapshotIds", [])
        max_results = self._get_int_param("MaxResults")
        token = self._get_param("NextToken")
        self.error_on_dryrun()
        entries = _bin(self.ec2_backend, "snapshots")
        rows = []
        for sid in sorted(entries):
            if ids and sid not in ids:
                continue
            e = entries[sid]
            snap = e["resource"]
            row = {"SnapshotId": sid, "RecycleBinEnterTime": e["enter"],
                   "RecycleBinExitTime": e["exit"], "Description": snap.description,
                   "VolumeId": snap.volume_id}
            rows.append({k: v for k, v in row.items() if v is not None})
        page, next_token = _page(rows, token, max_results, 5, bad)
        out: dict = {"Snapshots": page}
        if next_token:
            out["NextToken"] = next_token
        return ActionResult(out)

    def restore_snapshot_from_recycle_bin(self: Any) -> ActionResult:
        sid = self._get_param("SnapshotId")
        self.error_on_dryrun()
        backend = self.ec2_backend
        entry = _bin(backend, "snapshots").pop(sid, None)
        if entry is None:
            raise InvalidSnapshotIdError()
        snap = entry["resource"]
        backend.snapshots[sid] = snap
        if entry["tags"]:
            backend.tags[sid] = dict(entry["tags"])
        out = {"SnapshotId": sid, "Description": snap.description, "Encrypted": snap.encrypted,
               "OwnerId": snap.owner_id, "Progress": "100%", "StartTime": snap.start_time,
               "State": snap.status, "VolumeId": snap.volume_id, "VolumeSize": snap.volume_size}
        return ActionResult({k: v for k, v in out.items() if v is not None})

    def list_images_in_recycle_bin(self: Any) -> ActionResult:
        ids = self._get_param("ImageIds", [])
        max_results = self._get_int_param("MaxResults")
        token = self._get_param("NextToken")
        self.error_on_dryrun()
        entries = _bin(self.ec2_backend, "images")
        rows = []
        for iid in sorted(entries):
            if ids and iid not in ids:
                continue
            e = entries[iid]
            image = e["resource"]
            row = {"ImageId": iid, "Name": image.name, "Description": image.description,
                   "RecycleBinEnterTime": e["enter"], "RecycleBinExitTime": e["exit"]}
            rows.append({k: v for k, v in row.items() if v is not None})
        page, next_token = _page(rows, token, max_results, 1, bad)
        out: dict = {"Images": page}
        if next_token:
            out["NextToken"] = next_token
        return ActionResult(out)

    def restore_image_from_recycle_bin(self: Any) -> ActionResult:
        iid = self._get_param("ImageId")
        self.error_on_dryrun()
        backend = self.ec2_backend
        entry = _bin(backend, "images").pop(iid, None)
        if entry is None:
            raise InvalidAMIIdError(iid)
        backend.amis[iid] = entry["resource"]
        if entry["tags"]:
            backend.tags[iid] = dict(entry["tags"])
        return ActionResult({"Return": True})

    ElasticBlockStore.list_snapshots_in_recycle_bin = list_snapshots_in_recycle_bin
    ElasticBlockStore.restore_snapshot_from_recycle_bin = restore_snapshot_from_recycle_bin
    ElasticBlockStore.list_images_in_recycle_bin = list_images_in_recycle_bin
    ElasticBlockStore.restore_image_from_recycle_bin = restore_image_from_recycle_bin
