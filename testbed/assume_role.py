"""STS AssumeRole as AWS decides it: only a role that exists and whose trust policy lets the
caller in. moto 5.2.x hands out credentials for any role ARN, existing or not ("the role does
not need to exist"), so a missing member-account role could never be shown failing.

Behaviour follows AWS's documentation:
- https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRole.html
- https://docs.aws.amazon.com/IAM/latest/UserGuide/id_roles_common-scenarios_third-party.html
  (the external id as a `sts:ExternalId` condition in the trust policy)
- https://docs.aws.amazon.com/IAM/latest/UserGuide/troubleshoot_roles.html

A refused AssumeRole is HTTP 403 `AccessDenied` with AWS's message, "User: <caller ARN> is not
authorized to perform: sts:AssumeRole on resource: <role ARN>", the same whether the role is
missing or its trust policy does not allow the caller (AWS does not tell the two apart).

Choices where AWS's evaluation is richer than a test bed needs (see testbed/README.md):
- A trust policy statement lets the caller in when its Effect is Allow, its Action covers
  sts:AssumeRole (`sts:AssumeRole`, `sts:*` or `*`) and its Principal.AWS is `*`, the caller's
  account id, `arn:<partition>:iam::<account>:root`, or any ARN in the caller's account (AWS
  matches the exact principal ARN; the test bed's callers have no IAM user of their own).
- Of the conditions only `StringEquals` on `sts:ExternalId` is evaluated; others are ignored.
- Deny statements are not evaluated.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote

CORRECTIONS = {
    "assume-role-needs-a-role": "AssumeRole of a role that does not exist in its account, or "
    "whose trust policy does not allow the caller's account (or asks for another external id): "
    "403 AccessDenied, as AWS answers",
}

_ROLE_ARN = re.compile(r"^arn:(aws[a-z-]*):iam::(\d{12}):role/(.+)$")

_applied = False


def _as_list(v: Any) -> list:
    if v is None:
        return []
    return v if isinstance(v, list) else [v]


def _policy(document: Any) -> dict:
    if isinstance(document, dict):
        return document
    try:
        return json.loads(document)
    except (TypeError, ValueError):
        return json.loads(unquote(document))


def trust_allows(document: Any, caller_account: str, external_id: str | None) -> bool:
    """Whether a role's trust policy lets `caller_account` assume it with `external_id`."""
    for st in _as_list(_policy(document).get("Statement")):
        if st.get("Effect") != "Allow":
            continue
        if not any(a in ("sts:AssumeRole", "sts:*", "*") for a in _as_list(st.get("Action"))):
            continue
        principal = st.get("Principal")
        aws = _as_list(principal.get("AWS")) if isinstance(principal, dict) else _as_list(principal)
        if not any(
            p == "*" or p == caller_account or re.match(rf"^arn:[a-z-]+:[a-z]+::{caller_account}:", p)
            for p in aws
        ):
            continue
        wanted = (st.get("Condition") or {}).get("StringEquals", {}).get("sts:ExternalId")
        if wanted is not None and external_id not in _as_list(wanted):
            continue
        return True
    return False


def apply() -> None:
    global _applied
    if _applied:
        return
    _applied = True

    from moto.core.exceptions import AccessDeniedError
    from moto.iam.models import iam_backends
    from moto.sts.responses import TokenResponse
    from xmltodict import unparse

    class AssumeRoleDenied(AccessDeniedError):
        """403 (moto's STS service errors are 400) in STS's query error shape,
        `<ErrorResponse><Error><Type/><Code/><Message/></Error><RequestId/></ErrorResponse>`,
        which the SDKs parse (moto's generic one nests `<Errors>`, as EC2 does)."""

        def __init__(self, caller_arn: str, role_arn: str):
            super().__init__(caller_arn, f"sts:AssumeRole on resource: {role_arn}")
            self.description = unparse(
                {
                    "ErrorResponse": {
                        "@xmlns": "https://sts.amazonaws.com/doc/2011-06-15/",
                        "Error": {"Type": "Sender", "Code": "AccessDenied", "Message": self.message},
                        "RequestId": "autosnap-testbed",
                    }
                },
                full_document=True,
            )

    original = TokenResponse.assume_role

    def assume_role(self: Any):
        role_arn = self._get_param("RoleArn") or ""
        external_id = self._get_param("ExternalId")
        caller = self.current_account
        _, caller_arn, _ = self.backend.get_caller_identity(self.get_access_key(), self.region)
        denied = AssumeRoleDenied(caller_arn, role_arn)
        m = _ROLE_ARN.match(role_arn)
        if m is None:
            raise denied
        partition, account = m.group(1), m.group(2)
        role = next(
            (r for r in iam_backends[account][partition].get_roles() if r.arn == role_arn), None
        )
        if role is None or not trust_allows(role.assume_role_policy_document, caller, external_id):
            raise denied
        return original(self)

    TokenResponse.assume_role = assume_role
