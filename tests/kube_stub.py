"""A loopback stand-in for the Kubernetes API server, over HTTPS with a throwaway CA.

It keeps Nodes and Pods in memory and answers the way the API server does for what the repair
control plane asks: Nodes by name (get, JSON merge patch with ``metadata.resourceVersion``
checked, delete with a uid precondition), Nodes listed by label selector in pages (equality and
existence terms: ``k``, ``!k``, ``k=v``, ``k==v``, ``k!=v``, which a Node without ``k`` meets),
Pods listed by ``spec.nodeName`` in pages, evictions.
It records every request as it arrived, and the (API group, resource, verb) that the API
server's authorizer would check for it, worked out from the method and the path alone.
A request whose bearer token is not an EKS token for the cluster, signed with the tests' fake key
(checked as STS would), is refused (401).
"""

from __future__ import annotations

import base64
import datetime
import functools
import hashlib
import hmac
import ipaddress
import json
import re
import ssl
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CLUSTER = "demo"
REGION = "us-east-1"
ACCESS_KEY, SECRET_KEY = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"  # fake: nothing is sent to AWS
TOKEN = re.compile(r"Bearer k8s-aws-v1\.([A-Za-z0-9_-]+)")


# A throwaway PKI ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Authority:
    """A certificate authority made for one test run."""

    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @classmethod
    def make(cls, name: str) -> Authority:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(key, certificate)

    @property
    def data(self) -> str:
        """The CA as CloudFormation's ``CertificateAuthorityData`` gives it: base64 of the PEM."""
        return base64.b64encode(self.certificate.public_bytes(serialization.Encoding.PEM)).decode()

    def issue(self, directory: Path, *, ip: str = "127.0.0.1", dns: str = "localhost") -> tuple[Path, Path]:
        """A server certificate for ``ip`` and ``dns``: the certificate and key files."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        names = [x509.DNSName(dns), x509.IPAddress(ipaddress.ip_address(ip))]
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns)]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        directory.mkdir(parents=True, exist_ok=True)
        chain, key_file = directory / "server.pem", directory / "server.key"
        chain.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return chain, key_file


# What the API server's authorizer checks -----------------------------------------------------------

VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch"}


@dataclass
class Pki:
    """A throwaway cluster CA and a server certificate it issued for 127.0.0.1, in ``folder``."""

    ca: Authority
    chain: Path
    key: Path
    folder: Path

    @classmethod
    def make(cls, folder: Path) -> Pki:
        ca = Authority.make("cluster-ca")
        chain, key = ca.issue(folder / "server")
        return cls(ca, chain, key, folder)


def rbac_of(method: str, path: str, query: dict[str, list[str]]) -> tuple[str, str, str]:
    """(API group, resource, verb) of a request, as Kubernetes' request info resolver names them."""
    parts = path.strip("/").split("/")
    if parts[0] == "api":
        group, rest = "", parts[2:]
    elif parts[0] == "apis":
        group, rest = parts[1], parts[3:]
    else:
        raise ValueError(f"not a resource path: {path}")
    if rest[:1] == ["namespaces"] and len(rest) > 2:
        rest = rest[2:]
    resource = rest[0] + (f"/{rest[2]}" if len(rest) > 2 else "")
    named = len(rest) > 1
    if method == "GET":
        verb = "get" if named else "watch" if query.get("watch") == ["true"] else "list"
    elif method == "DELETE":
        verb = "delete" if named else "deletecollection"
    else:
        verb = VERBS[method]
    return group, resource, verb


def decoded_token(authorization: str | None) -> str | None:
    """The presigned URL in an EKS bearer token, None when the header is not one."""
    match = TOKEN.fullmatch(authorization or "")
    if match is None:
        return None
    text = match[1]
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()


def signature_checks(url: str, *, secret_key: str = SECRET_KEY, cluster: str = CLUSTER) -> bool:
    """Whether a presigned STS URL's signature is right for ``secret_key`` with the header
    ``x-k8s-aws-id: <cluster>`` (what STS checks when EKS forwards the URL), worked out here by
    hand from AWS's Signature Version 4 rules, not by botocore."""
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    signature = query.pop("X-Amz-Signature", "")
    signed = query.get("X-Amz-SignedHeaders", "").split(";")
    values = {"host": parts.netloc, "x-k8s-aws-id": cluster}
    if (
        parts.netloc != f"sts.{REGION}.amazonaws.com"
        or query.get("Action") != "GetCallerIdentity"
        or not query.get("X-Amz-Credential", "").startswith(f"{ACCESS_KEY}/")
        or "x-k8s-aws-id" not in signed
        or not set(signed) <= set(values)
    ):
        return False
    date, (day, region, service, _) = query.get("X-Amz-Date", ""), query["X-Amz-Credential"].split("/")[1:]
    encode = functools.partial(quote, safe="-_.~")
    canonical = "\n".join(
        [
            "GET",
            parts.path or "/",
            "&".join(f"{encode(k)}={encode(v)}" for k, v in sorted(query.items())),
            "".join(f"{h}:{values[h]}\n" for h in signed),
            ";".join(signed),
            hashlib.sha256(b"").hexdigest(),
        ]
    )
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = f"AWS4-HMAC-SHA256\n{date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    key = f"AWS4{secret_key}".encode()
    for part in (day, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.compare_digest(hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest(), signature)


# The server ---------------------------------------------------------------------------------------


@dataclass
class Seen:
    """A request as the stub received it."""

    method: str
    path: str
    query: dict[str, list[str]]
    content_type: str | None
    authorization: str | None
    body: Any


def node(name: str, instance_id: str, *, zone: str = "us-east-1a", **spec: Any) -> dict[str, Any]:
    labels = {
        "kubernetes.io/hostname": name,
        "training-cluster/instance-group": "gpu",
        "training-cluster/cluster": CLUSTER,
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "uid": f"uid-{name}-{instance_id}", "resourceVersion": "100", "labels": labels},
        "spec": {"providerID": f"aws:///{zone}/{instance_id}", **spec},
    }


def pod(
    name: str, node_name: str, *, namespace: str = "training", phase: str = "Running", **metadata: Any
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{namespace}-{name}", **metadata},
        "spec": {"nodeName": node_name},
        "status": {"phase": phase},
    }


_SELECTOR_TERM = re.compile(r"(?P<not>!)?(?P<key>[A-Za-z0-9./_-]+)(?:(?P<op>==|!=|=)(?P<value>[A-Za-z0-9._-]*))?")


def label_selector(selector: str) -> Callable[[dict[str, str]], bool]:
    """Kubernetes' equality-based and existence label selector terms, comma-separated (all must
    hold); a ``ValueError`` for anything else (set-based terms: this stub does not need them)."""
    terms = []
    for text in filter(None, selector.split(",")):
        term = _SELECTOR_TERM.fullmatch(text)
        if term is None or (term["not"] and term["op"]):
            raise ValueError(f"this stub does not parse the selector term {text!r}")
        terms.append((bool(term["not"]), term["key"], term["op"], term["value"]))

    def holds(labels: dict[str, str]) -> bool:
        for negated, key, op, value in terms:
            if op is None and (key in labels) == negated:
                return False
            if op in ("=", "==") and labels.get(key) != value:
                return False
            if op == "!=" and labels.get(key) == value:
                return False
        return True

    return holds


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "reason": reason,
        "message": message,
        "code": code,
    }


@dataclass
class KubeStub:
    """The stand-in: ``nodes`` by name, ``pods``; ``scripted`` answers (``(method, path)`` -> the
    statuses of its next requests); ``before_patch`` run one each before the next node patches
    (another writer); ``each_request`` run on every request as it arrives (a clock that moves, say);
    ``page_size`` pods (or Nodes) per list page; ``evictions_linger``: an accepted eviction leaves
    the pod terminating (a long grace period) instead of gone."""

    rbac: set[tuple[str, str, str]]
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    pods: list[dict[str, Any]] = field(default_factory=list)
    requests: list[Seen] = field(default_factory=list)
    scripted: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    before_patch: list[Callable[[dict[str, Any]], None]] = field(default_factory=list)
    each_request: Callable[[Seen], None] | None = None
    page_size: int = 500
    evictions_linger: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, *objects: dict[str, Any]) -> None:
        for o in objects:
            if o.get("kind") == "Node":
                self.nodes[o["metadata"]["name"]] = o
            else:
                self.pods.append(o)

    def writes(self) -> list[Seen]:
        return [r for r in self.requests if r.method != "GET"]

    def answer(self, seen: Seen) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.requests.append(seen)
            self.rbac.add(rbac_of(seen.method, seen.path, seen.query))
            if self.each_request is not None:
                self.each_request(seen)
            url = decoded_token(seen.authorization)
            if url is None or not signature_checks(url):
                return 401, status(401, "Unauthorized", "Unauthorized")
            queue = self.scripted.get((seen.method, seen.path))
            if queue:
                code = queue.pop(0)
                return code, status(code, "Scripted", f"scripted {code}")
            return self._route(seen)

    def _route(self, seen: Seen) -> tuple[int, dict[str, Any]]:
        parts = seen.path.strip("/").split("/")
        if parts[:3] == ["api", "v1", "nodes"] and len(parts) == 4:
            return self._node(seen, parts[3])
        if parts == ["api", "v1", "nodes"] and seen.method == "GET":
            return self._list_nodes(seen)
        if parts == ["api", "v1", "pods"] and seen.method == "GET":
            return self._list_pods(seen)
        if parts[:3] == ["api", "v1", "namespaces"] and parts[4:5] == ["pods"] and parts[6:] == ["eviction"]:
            return self._evict(seen, parts[3], parts[5])
        return 404, status(404, "NotFound", f"no route {seen.method} {seen.path}")

    def _node(self, seen: Seen, name: str) -> tuple[int, dict[str, Any]]:
        current = self.nodes.get(name)
        if current is None:
            return 404, status(404, "NotFound", f'nodes "{name}" not found')
        if seen.method == "GET":
            return 200, current
        if seen.method == "PATCH":
            if seen.content_type != "application/merge-patch+json":
                return 415, status(415, "UnsupportedMediaType", str(seen.content_type))
            if self.before_patch:
                self.before_patch.pop(0)(current)
            wanted = (seen.body.get("metadata") or {}).get("resourceVersion")
            if wanted is not None and wanted != current["metadata"]["resourceVersion"]:
                return 409, status(409, "Conflict", "the object has been modified")
            self.nodes[name] = updated = merge_patch(current, seen.body)
            updated["metadata"]["resourceVersion"] = str(int(current["metadata"]["resourceVersion"]) + 1)
            return 200, updated
        if seen.method == "DELETE":
            uid = ((seen.body or {}).get("preconditions") or {}).get("uid")
            if uid is not None and uid != current["metadata"]["uid"]:
                return 409, status(409, "Conflict", "Precondition failed: UID in precondition")
            del self.nodes[name]
            return 200, current
        return 405, status(405, "MethodNotAllowed", seen.method)

    def _list_nodes(self, seen: Seen) -> tuple[int, dict[str, Any]]:
        (selector,) = seen.query.get("labelSelector", [""])
        try:
            wanted = label_selector(selector)
        except ValueError as error:
            return 400, status(400, "BadRequest", str(error))
        selected = [n for _, n in sorted(self.nodes.items()) if wanted((n.get("metadata") or {}).get("labels") or {})]
        return 200, self._page(seen, "NodeList", selected)

    def _page(self, seen: Seen, kind: str, items: list[dict[str, Any]]) -> dict[str, Any]:
        start = int(seen.query.get("continue", ["0"])[0])
        size = min(self.page_size, int(seen.query.get("limit", ["1000000"])[0]))
        metadata = {"resourceVersion": "100"}
        if start + size < len(items):
            metadata["continue"] = str(start + size)
        return {"kind": kind, "apiVersion": "v1", "metadata": metadata, "items": items[start : start + size]}

    def _list_pods(self, seen: Seen) -> tuple[int, dict[str, Any]]:
        (selector,) = seen.query.get("fieldSelector", [""])
        if not selector.startswith("spec.nodeName="):
            return 400, status(400, "BadRequest", f"this stub lists pods by spec.nodeName only: {selector!r}")
        on_node = [p for p in self.pods if p["spec"]["nodeName"] == selector.removeprefix("spec.nodeName=")]
        return 200, self._page(seen, "PodList", on_node)

    def _evict(self, seen: Seen, namespace: str, name: str) -> tuple[int, dict[str, Any]]:
        expected = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": namespace}}
        if seen.method != "POST" or seen.body != expected:
            return 400, status(400, "BadRequest", "not an eviction of this pod")
        found = [p for p in self.pods if (p["metadata"]["namespace"], p["metadata"]["name"]) == (namespace, name)]
        if not found:
            return 404, status(404, "NotFound", f'pods "{name}" not found')
        if self.evictions_linger:
            found[0]["metadata"]["deletionTimestamp"] = "2026-12-02T00:00:00Z"
        else:
            self.pods.remove(found[0])
        return 201, {"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 201}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # kept-alive connections, as the API server
    disable_nagle_algorithm = True  # headers and body go in two writes: no delayed-ACK stall
    server: _Server

    def _any(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        seen = Seen(
            method=self.command,
            path=parts.path,
            query=parse_qs(parts.query),
            content_type=self.headers.get("Content-Type"),
            authorization=self.headers.get("Authorization"),
            body=json.loads(raw) if raw else None,
        )
        code, answer = self.server.stub.answer(seen)
        data = json.dumps(answer).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _any

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    stub: KubeStub
    handshake_errors: list[BaseException]

    def handle_error(self, request: Any, client_address: Any) -> None:  # a refused handshake: kept, not printed
        error = sys.exc_info()[1]
        if error is not None:
            self.handshake_errors.append(error)


class Running:
    """A :class:`KubeStub` served on 127.0.0.1 with the given certificate until :meth:`stop`."""

    def __init__(self, stub: KubeStub, chain: Path, key: Path) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(chain, key)
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.stub = stub
        self.server.handshake_errors = []
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True, do_handshake_on_connect=False)
        self.stub = stub
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
