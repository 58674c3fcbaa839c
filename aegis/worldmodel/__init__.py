"""The world model: how the game world answers to tuning, learned from ``fct_shard_kpis``.

Deliberately empty of imports: the Dagster code location imports
``aegis.worldmodel.settings`` (names, thresholds, defaults) in every run
subprocess and code server, and importing that must not drag torch or mlflow
along. Import the heavy modules (``train``, ``model``, ``registry``,
``pipeline``, ``metrics``) by name where they are used.
"""
