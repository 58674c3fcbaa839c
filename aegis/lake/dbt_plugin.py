"""A dbt-duckdb plugin that lets the warehouse build read the S3 lake (profile ``prod``).

``dbt/profiles.yml``'s prod output loads it (``plugins: - module: aegis.lake.dbt_plugin``);
on every connection dbt opens it registers Arrow's S3 filesystem for ``s3://`` paths
(:func:`aegis.lake.store.register_duckdb`), honouring ``AWS_ENDPOINT_URL``.  DuckDB's own
``httpfs`` extension would be downloaded at run time, which locked-down clusters cannot do.
"""

from __future__ import annotations

from typing import Any

from dbt.adapters.duckdb.plugins import BasePlugin

from aegis.lake.store import register_duckdb


class Plugin(BasePlugin):  # type: ignore[misc]
    """Registers the lake's S3 filesystem on each DuckDB connection dbt opens."""

    def initialize(self, plugin_config: dict[str, Any]) -> None:
        self.region = plugin_config.get("region") or None

    def configure_connection(self, conn: Any) -> None:
        register_duckdb(conn, self.region)
