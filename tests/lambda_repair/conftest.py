"""Fixtures for the auto-repair control plane: moto, and a cluster in it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from moto import mock_aws

from repair_world import World, make_world


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws():
        yield


@pytest.fixture
def world(aws: None) -> World:
    return make_world({"gpu": 8, "login": 1})
