"""A real world server (subprocess, real HTTP) and lifecycles wired to it, for the changeset tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.support import CANARY_WORLD_ARGS, WorldServer


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorldServer]:
    server = WorldServer(
        tmp_path_factory.mktemp("world") / "home", speed="300", args=CANARY_WORLD_ARGS
    ).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def policy_engine():
    from aegis.policy.engine import PolicyEngine

    return PolicyEngine()


@pytest.fixture
def make_lifecycle(world: WorldServer, aegis_home, policy_engine) -> Iterator[Callable[..., object]]:
    """Build a Lifecycle on the test's AEGIS_HOME (store, ledger, artifacts) against the module's server."""
    from aegis.changes.gate import HttpRunner
    from aegis.changes.lifecycle import Lifecycle, LifecycleConfig
    from aegis.changes.store import ChangeSetStore
    from aegis.ledger.ledger import Ledger
    from aegis.world.client import GameBackendClient

    made: list = []

    def make(backend=None, **config_kw):
        config = LifecycleConfig(simulation_hours=1.0, **config_kw)
        lc = Lifecycle(
            backend or GameBackendClient(world.url),
            store=ChangeSetStore(),
            policy=policy_engine,
            ledger=Ledger(),
            # the gate over real HTTP: POST /v1/shards/{id}/simulations on the server
            simulator=HttpRunner(world.url),
            config=config,
            aegis_paths=aegis_home,
        )
        made.append(lc)
        return lc

    yield make
    for lc in made:
        lc.store.close()
        lc.ledger.dispose()
        close = getattr(lc.backend, "close", None)
        if close:
            close()
