"""The control plane's connection to the Kubernetes API (EKS): standard library and botocore only.

:func:`eks_token` and :class:`EksToken` authenticate with the function's IAM role (a presigned STS
``GetCallerIdentity``, as ``aws eks get-token`` makes); :class:`KubeApi` speaks HTTPS to the API
endpoint, verified against the cluster's CA, with a timeout on every request, every request checked
against ``kube_access.REPAIR_RULES`` before it is sent, and, after one that went unanswered, the
next ones refused at once for a while (they stand between a fault and its repair).
"""

from __future__ import annotations

import base64
import binascii
import http.client
import json
import ssl
import time
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit

from botocore.auth import SigV4QueryAuth
from botocore.awsrequest import AWSRequest

from training_cluster.kube_access import granted

from .drain import DrainError

TOKEN_PREFIX = "k8s-aws-v1."
CLUSTER_HEADER = "x-k8s-aws-id"
TOKEN_REFRESH_SECONDS = 14 * 60  # EKS accepts a token for 15 minutes from its signing
TIMEOUT_SECONDS = 4.0  # each request, connecting included: a drain starts before the evidence capture
UNREACHABLE_SECONDS = 60.0  # after a connection failure, further requests fail at once for this long
GRANTED = granted()


class KubeError(DrainError):
    """A request failed, or the API answered with an unexpected status (``status``, else None)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class NodeMismatch(DrainError):
    """The Node of that name is not the instance's: nothing is written to it."""


# Authentication ----------------------------------------------------------------------------------


def eks_token(credentials: Any, cluster_name: str, region: str) -> str:
    """A bearer token for EKS: ``k8s-aws-v1.`` and the unpadded base64url of a presigned STS
    ``GetCallerIdentity`` URL (regional endpoint, 60 s expiry) whose signed headers include
    ``x-k8s-aws-id: <cluster_name>``. ``credentials``: a boto3 (or botocore) session, botocore
    credentials, or frozen credentials."""
    if hasattr(credentials, "get_credentials"):
        credentials = credentials.get_credentials()
        if credentials is None:
            raise KubeError("no AWS credentials to sign the EKS token with")
    if hasattr(credentials, "get_frozen_credentials"):
        credentials = credentials.get_frozen_credentials()
    url = f"https://sts.{region}.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15"
    request = AWSRequest(method="GET", url=url, headers={CLUSTER_HEADER: cluster_name})
    SigV4QueryAuth(credentials, "sts", region, expires=60).add_auth(request)
    return TOKEN_PREFIX + base64.urlsafe_b64encode(str(request.url).encode()).decode().rstrip("=")


class TokenSource(Protocol):
    def __call__(self) -> str: ...

    def expire(self) -> None: ...


class EksToken:
    """:func:`eks_token`, signed again :data:`TOKEN_REFRESH_SECONDS` after the last one (or after
    the API refused it), so a warm Lambda never sends one that EKS no longer accepts."""

    def __init__(
        self, credentials: Any, cluster_name: str, region: str, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.credentials = credentials
        self.cluster_name = cluster_name
        self.region = region
        self.clock = clock
        self._token: tuple[str, float] | None = None

    def __call__(self) -> str:
        now = self.clock()
        if self._token is None or now - self._token[1] >= TOKEN_REFRESH_SECONDS:
            self._token = (eks_token(self.credentials, self.cluster_name, self.region), now)
        return self._token[0]

    def expire(self) -> None:
        self._token = None


# Transport ---------------------------------------------------------------------------------------


def tls_context(certificate_authority: str) -> ssl.SSLContext:
    """A client context that trusts only the cluster's CA (base64 PEM, as CloudFormation's
    ``CertificateAuthorityData`` gives it), host names checked."""
    try:
        pem = base64.b64decode(certificate_authority, validate=True).decode("ascii")
        context = ssl.create_default_context(cadata=pem)
    except (binascii.Error, UnicodeDecodeError, ssl.SSLError, ValueError) as error:
        raise ValueError(f"the cluster's certificate authority is not base64 of a PEM certificate: {error}") from None
    return context


class KubeApi:
    """Requests to the API server at ``endpoint`` (``https://...``), one kept-alive connection."""

    def __init__(
        self,
        endpoint: str,
        certificate_authority: str,
        token: TokenSource,
        *,
        timeout_seconds: float = TIMEOUT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme != "https" or not parts.hostname or parts.path.strip("/") or parts.query:
            raise ValueError(f"the API endpoint {endpoint!r} is not an https://host[:port] URL")
        self.host, self.port = parts.hostname, parts.port or 443
        self.context = tls_context(certificate_authority)
        self.token = token
        self.timeout_seconds = timeout_seconds
        self.clock = clock
        self._connection: http.client.HTTPSConnection | None = None
        self._unreachable: tuple[float, str] | None = None  # (until, why)

    def call(
        self,
        verb: str,
        resource: str,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        ok: tuple[int, ...] = (200,),
        timeout: float | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """``method path`` (the RBAC ``verb`` on the core group's ``resource``), its status and
        JSON answer; a status not in ``ok`` raises. A refused token (401) is signed again once."""
        if ("", resource, verb) not in GRANTED:
            raise KubeError(f"{verb} {resource} is not granted by kube_access.REPAIR_RULES: not sent")
        if self._unreachable is not None and self.clock() < self._unreachable[0]:
            # one unanswered request costs a timeout; the next ones would each cost another, and
            # they stand between a fault and its repair
            raise KubeError(f"{method} {path}: not sent, the API did not answer a moment ago ({self._unreachable[1]})")
        target = path + (f"?{urlencode(query)}" if query else "")
        data = None if body is None else json.dumps(body).encode()
        for attempt in (1, 2):
            headers = {"Authorization": f"Bearer {self.token()}", "Accept": "application/json"}
            if data is not None:
                headers["Content-Type"] = content_type
            status, answer = self._send(method, target, data, headers, timeout or self.timeout_seconds)
            if status == 401 and attempt == 1:
                self.token.expire()
                continue
            break
        if status not in ok:
            message = str(answer.get("message", ""))[:300]
            raise KubeError(f"{method} {path}: {status} {message}".rstrip(), status)
        return status, answer

    def _send(
        self, method: str, target: str, data: bytes | None, headers: dict[str, str], timeout: float
    ) -> tuple[int, dict[str, Any]]:
        for attempt in (1, 2):
            reused = self._connection is not None
            if self._connection is None:
                self._connection = http.client.HTTPSConnection(
                    self.host, self.port, context=self.context, timeout=timeout
                )
            connection = self._connection
            try:
                if connection.sock is not None:
                    connection.sock.settimeout(timeout)
                connection.request(method, target, body=data, headers=headers)
                response = connection.getresponse()
                raw = response.read()
            except (OSError, http.client.HTTPException) as error:
                self.close()
                # a kept-alive connection the server closed meanwhile: once more on a new one
                # (every request here is safe to repeat: a patch carries its resourceVersion)
                if reused and attempt == 1 and not isinstance(error, TimeoutError):
                    continue
                self._unreachable = (self.clock() + UNREACHABLE_SECONDS, str(error)[:200])
                raise KubeError(f"{method} {target.split('?')[0]}: {error}") from error
            if response.will_close:
                self.close()
            try:
                answer = json.loads(raw) if raw else {}
            except ValueError:
                answer = {"message": raw[:300].decode(errors="replace")}
            return response.status, answer if isinstance(answer, dict) else {}
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
