"""The bundled game world: the simulator (``sim``), its telemetry landing writer
(``landing``), live-ops exploration (``exploration``) and the batch runner
(``runner``); the HTTP server, store and CLI sit on top of them.

Import from the submodules (``from aegis.world.sim import World``): this package
stays import-light so ``aegis --help`` does not load numpy and pyarrow.
"""
