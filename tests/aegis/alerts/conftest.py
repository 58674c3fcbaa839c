"""Fixtures of the alerting tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from aegis.config import AegisPaths
from tests.aegis.alerts.alerting_support import Receiver, start_receiver, stop_receiver


@pytest.fixture
def receiver(aegis_home: AegisPaths) -> Iterator[Receiver]:
    r = start_receiver(aegis_home)
    try:
        yield r
    finally:
        stop_receiver(r)
