"""``GameBackendResource``: the game backend contract (/v1) as a Dagster resource.

Locally it is the bundled world server on loopback; in prod the studio's
backend behind the same contract.  Assets open a short-lived client per use
(``with game.client() as c:``) so no connection outlives a run.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from dagster import ConfigurableResource
from pydantic import Field

from aegis.config import WORLD_PORT

if TYPE_CHECKING:
    from aegis.world.client import GameBackendClient

DEFAULT_TIMEOUT_S = 10.0


class GameBackendResource(ConfigurableResource):
    """Where the game backend answers, and how patiently."""

    base_url: str = Field(
        default=f"http://127.0.0.1:{WORLD_PORT}", description="Game backend root (contract /v1)"
    )
    timeout_s: float = Field(default=DEFAULT_TIMEOUT_S, gt=0)
    retries: int = Field(default=2, ge=0)
    token: str | None = Field(
        default=None,
        description="Bearer token; default: the profile's secret source (env AEGIS_TOKEN_CONTROL, "
        "else AEGIS_HOME/secrets/control.token; see docs/security.md)",
    )

    @contextmanager
    def client(self) -> Iterator[GameBackendClient]:
        from aegis.world.client import GameBackendClient

        with GameBackendClient(
            self.base_url, timeout=self.timeout_s, retries=self.retries, token=self.token or None
        ) as c:
            yield c
