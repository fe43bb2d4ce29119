"""AWS clients for the control plane, created lazily so tests can hand in moto or a Stubber."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

THROTTLING = {"Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException", "SlowDown"}
T = TypeVar("T")
CONFIG = Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 3, "mode": "standard"})
"""A service that cannot be reached costs seconds, not botocore's default minutes: the function
has five minutes in all, and a reserved concurrency of one."""


@dataclass
class Clients:
    region: str | None = None
    session: boto3.Session | None = None  # default: boto3's default session
    _made: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, service: str) -> Any:
        if service.startswith("_"):
            raise AttributeError(service)
        if service not in self._made:
            self._made[service] = (self.session or boto3).client(service, region_name=self.region, config=CONFIG)
        return self._made[service]

    @property
    def lambda_(self) -> Any:
        """The Lambda client (``lambda`` is a keyword)."""
        return self.__getattr__("lambda")

    def set(self, service: str, client: Any) -> None:
        self._made[service] = client

    def table(self, name: str) -> Any:
        key = f"table:{name}"
        if key not in self._made:
            resource = (self.session or boto3).resource("dynamodb", region_name=self.region, config=CONFIG)
            self._made[key] = resource.Table(name)
        return self._made[key]


def with_retries(
    method: Callable[..., T],
    /,
    *,
    attempts: int = 5,
    base_seconds: float = 0.2,
    sleep: Callable[[float], None] = time.sleep,
    **params: Any,
) -> T:
    """``method(**params)``, retrying throttling errors with exponential backoff and full jitter."""
    for attempt in range(attempts):
        try:
            return method(**params)
        except ClientError as error:
            if error.response["Error"]["Code"] not in THROTTLING or attempt == attempts - 1:
                raise
            sleep(random.uniform(0, base_seconds * 2**attempt))
    raise AssertionError("unreachable")
