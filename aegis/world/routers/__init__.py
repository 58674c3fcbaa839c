"""The world server's HTTP routers, one module per resource (FastAPI's "bigger applications" layout).

:func:`aegis.world.server.create_app` assembles them; each handler receives the
:class:`~aegis.world.service.WorldService` and the caller's scope check through
``Depends`` (:mod:`aegis.world.routers.deps`), never from closures.

- :mod:`~aegis.world.routers.health`: ``GET /v1/health`` (open, for liveness probes)
- :mod:`~aegis.world.routers.shards`: shards and their roles
- :mod:`~aegis.world.routers.config`: world configs (``ETag``/``If-Match``, ``Idempotency-Key``)
- :mod:`~aegis.world.routers.snapshots`: snapshots, verified restores, integrity
- :mod:`~aegis.world.routers.faults`: fault injection
- :mod:`~aegis.world.routers.metrics`: ``GET /metrics`` (Prometheus)

The remediation and simulation endpoints live in :mod:`aegis.world.remediation_api`
and :mod:`aegis.world.simulations_api`.
"""
