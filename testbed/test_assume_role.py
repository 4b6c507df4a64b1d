"""Checks of the AssumeRole correction (assume_role.py) through boto3 against a launcher on a
loopback port: a missing role, a trust policy for another account and a wrong external id are
refused with 403 AccessDenied; an existing, trusting role gives credentials of its account."""

import json

import pytest
from botocore.exceptions import ClientError

from test_testbed import client  # noqa: F401  (shared helpers and fixtures)
from test_testbed import account, server  # noqa: F401

CALLER = "123456789012"


def trust(principal: str, external_id: str | None = None) -> str:
    st = {"Effect": "Allow", "Principal": {"AWS": principal}, "Action": "sts:AssumeRole"}
    if external_id is not None:
        st["Condition"] = {"StringEquals": {"sts:ExternalId": external_id}}
    return json.dumps({"Version": "2012-10-17", "Statement": [st]})


def make_role(server, member: str, name: str, document: str) -> str:  # noqa: F811
    iam = client("iam", server, member)
    return iam.create_role(RoleName=name, AssumeRolePolicyDocument=document)["Role"]["Arn"]


def sts_as(server, who: str):  # noqa: F811
    return client("sts", server, who)


def denied(exc: ClientError) -> None:
    assert exc.response["Error"]["Code"] == "AccessDenied"
    assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert "is not authorized to perform: sts:AssumeRole on resource: arn:aws:iam::" in (
        exc.response["Error"]["Message"]
    )


def test_a_missing_role_is_refused(server, account):  # noqa: F811
    with pytest.raises(ClientError) as e:
        sts_as(server, CALLER).assume_role(
            RoleArn=f"arn:aws:iam::{account}:role/autosnap", RoleSessionName="autosnap"
        )
    denied(e.value)


def test_a_trusting_role_gives_credentials_of_its_account(server, account):  # noqa: F811
    arn = make_role(server, account, "autosnap", trust(f"arn:aws:iam::{CALLER}:root"))
    creds = sts_as(server, CALLER).assume_role(RoleArn=arn, RoleSessionName="autosnap")[
        "Credentials"
    ]
    import boto3

    who = boto3.client(
        "sts",
        endpoint_url=server,
        region_name="us-east-1",
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    ).get_caller_identity()
    assert who["Account"] == account
    assert who["Arn"] == f"arn:aws:sts::{account}:assumed-role/autosnap/autosnap"


def test_a_role_trusting_another_account_is_refused(server, account):  # noqa: F811
    arn = make_role(server, account, "autosnap", trust("arn:aws:iam::999999999999:root"))
    with pytest.raises(ClientError) as e:
        sts_as(server, CALLER).assume_role(RoleArn=arn, RoleSessionName="autosnap")
    denied(e.value)


def test_the_external_id_must_match_the_trust_policy(server, account):  # noqa: F811
    arn = make_role(server, account, "autosnap", trust(CALLER, external_id="s3cret"))
    sts = sts_as(server, CALLER)
    for kwargs in ({}, {"ExternalId": "wrong"}):
        with pytest.raises(ClientError) as e:
            sts.assume_role(RoleArn=arn, RoleSessionName="autosnap", **kwargs)
        denied(e.value)
    ok = sts.assume_role(RoleArn=arn, RoleSessionName="autosnap", ExternalId="s3cret")
    assert ok["AssumedRoleUser"]["Arn"].startswith(f"arn:aws:sts::{account}:assumed-role/")


def test_a_role_path_is_part_of_the_arn(server, account):  # noqa: F811
    iam = client("iam", server, account)
    arn = iam.create_role(
        RoleName="autosnap", Path="/ops/", AssumeRolePolicyDocument=trust("*")
    )["Role"]["Arn"]
    assert arn == f"arn:aws:iam::{account}:role/ops/autosnap"
    sts_as(server, CALLER).assume_role(RoleArn=arn, RoleSessionName="autosnap")
    with pytest.raises(ClientError) as e:
        sts_as(server, CALLER).assume_role(
            RoleArn=f"arn:aws:iam::{account}:role/autosnap", RoleSessionName="autosnap"
        )
    denied(e.value)


def test_the_refusal_has_the_sts_query_error_shape(server, account):  # noqa: F811
    """The shape the SDKs parse: `ErrorResponse/Error/Code` (not EC2's `Errors/Error`)."""
    import urllib.error
    import urllib.request
    import xml.etree.ElementTree as ET

    body = (
        "Action=AssumeRole&Version=2011-06-15&RoleSessionName=autosnap"
        f"&RoleArn=arn%3Aaws%3Aiam%3A%3A{account}%3Arole%2Fmissing"
    ).encode()
    req = urllib.request.Request(server + "/", data=body, method="POST", headers={
        "Content-Type": "application/x-www-form-urlencoded",
        "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/sts/aws4_request,"
        " SignedHeaders=host, Signature=0",
    })
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req)
    assert e.value.code == 403
    ns = {"s": "https://sts.amazonaws.com/doc/2011-06-15/"}
    root = ET.fromstring(e.value.read())
    assert root.tag == "{https://sts.amazonaws.com/doc/2011-06-15/}ErrorResponse"
    assert root.find("s:Error/s:Code", ns).text == "AccessDenied"
    assert root.find("s:Error/s:Type", ns).text == "Sender"
