"""What the world's routers receive per request through ``Depends``: the service and scope checks.

The service lives on the app (``app.state``, set once by :func:`install_service`);
:func:`get_service` hands it to a handler as a parameter::

    def handler(service: World) -> ...

It is an ``async`` dependency on purpose: FastAPI awaits it on the event loop,
where a plain ``def`` one would cost a thread-pool hop on every request.

``READ``, ``CONTROL`` and ``FAULTS`` are the scope checks
(:func:`aegis.security.auth.require_scope`), declared per route as
``dependencies=[READ]``; they also put the scope into the OpenAPI document.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request

from aegis.security.auth import require_scope
from aegis.world.service import Unavailable, WorldService

STATE_SERVICE = "aegis_world_service"

READ = Depends(require_scope("read"))
CONTROL = Depends(require_scope("control"))
FAULTS = Depends(require_scope("faults"))


def install_service(app: FastAPI, service: WorldService | None) -> None:
    """Put ``service`` where :func:`get_service` finds it (``None``: an app for its OpenAPI document)."""
    setattr(app.state, STATE_SERVICE, service)


async def get_service(request: Request) -> WorldService:
    """The app's :class:`WorldService`; 503 ``unavailable`` when the app has none."""
    service: WorldService | None = getattr(request.app.state, STATE_SERVICE, None)
    if service is None:
        raise Unavailable("no world is running behind this app")
    return service


World = Annotated[WorldService, Depends(get_service)]


async def snapshot_loader(service: World) -> Callable[[str, str], dict[str, Any]]:
    """The simulations endpoint's snapshot reader (:mod:`aegis.world.simulations_api`)."""
    return service.snapshot_state
