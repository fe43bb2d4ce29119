"""The control plane's AWS clients: a service that does not answer costs seconds, not minutes."""

from __future__ import annotations

import boto3

from auto_repair.aws import Clients


def test_clients_bound_connecting_and_retrying() -> None:
    clients = Clients(region="us-east-1", session=boto3.Session(aws_access_key_id="x", aws_secret_access_key="y"))
    for client in (clients.ssm, clients.cloudwatch, clients.table("ledger").meta.client):
        config = client.meta.config
        assert (config.connect_timeout, config.read_timeout) == (5, 30)
        assert config.retries == {"mode": "standard", "total_max_attempts": 4}  # the first attempt and three retries
