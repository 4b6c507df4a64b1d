"""Test observation, not a correction: how many requests of each service and action the test bed
answered, so a test can prove that a command resolves credentials, assumes its role and asks who
it is once per process (STS AssumeRole, GetCallerIdentity), not once per client it makes.

`GET /_autosnap_testbed/calls` answers a JSON array of `{service, action, count}`:
- `service`: the signing name in the request's SigV4 credential scope (`sts`, `ec2`, `s3`, …),
  `unknown` when the request is not signed;
- `action`: the `X-Amz-Target` operation (JSON protocols), else the `Action` parameter of the
  query string or of a form-encoded body (query protocols: EC2, STS, IAM), else the HTTP method
  (REST protocols: S3, EBS direct).
`POST /moto-api/reset` clears the counts with the rest of the test bed.
"""

from __future__ import annotations

import io
import json
import threading
from typing import Callable, Iterable
from urllib.parse import parse_qs

CALLS_PATH = "/_autosnap_testbed/calls"

_lock = threading.Lock()
# (service, action) -> requests answered
_calls: dict[tuple[str, str], int] = {}


def reset() -> None:
    with _lock:
        _calls.clear()


def _service(environ: dict) -> str:
    auth = environ.get("HTTP_AUTHORIZATION") or ""
    try:
        credential = auth.split("Credential=", 1)[1].split(",")[0]
        return credential.split("/")[3].lower()
    except IndexError:
        return "unknown"


def _action(environ: dict) -> str:
    target = environ.get("HTTP_X_AMZ_TARGET")
    if target:
        return target.rsplit(".", 1)[-1]
    query = parse_qs(environ.get("QUERY_STRING") or "")
    if query.get("Action"):
        return query["Action"][0]
    content_type = environ.get("CONTENT_TYPE") or ""
    if content_type.startswith("application/x-www-form-urlencoded"):
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        body = environ["wsgi.input"].read(length) if length > 0 else b""
        # The app behind reads the body again.
        environ["wsgi.input"] = io.BytesIO(body)
        form = parse_qs(body.decode("utf-8", "replace"))
        if form.get("Action"):
            return form["Action"][0]
    return environ.get("REQUEST_METHOD", "")


def counts() -> list[dict]:
    with _lock:
        return [{"service": s, "action": a, "count": n} for (s, a), n in sorted(_calls.items())]


def wsgi(app: Callable) -> Callable:
    """Counts every request on its way to `app`; answers the observation endpoint itself."""

    def dispatch(environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == CALLS_PATH:
            data = json.dumps(counts()).encode()
            start_response("200 OK", [("Content-Type", "application/json"),
                                      ("Content-Length", str(len(data)))])
            return [data]
        if path.startswith("/moto-api/reset"):
            reset()
        elif not path.startswith("/moto-api"):
            key = (_service(environ), _action(environ))
            with _lock:
                _calls[key] = _calls.get(key, 0) + 1
        return app(environ, start_response)

    return dispatch
