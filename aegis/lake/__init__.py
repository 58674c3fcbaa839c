"""The telemetry lake: landing -> bronze (validated) + quarantine (rejected, with reasons).

Pure Python + pyarrow/DuckDB, no Dagster: ``assets/telemetry.py`` is a thin wrapper
that calls :func:`aegis.lake.bronze.ingest_batches` and reports its metadata.
Modules: ``landing`` (what has landed), ``validate`` (schema v1 rules),
``bronze`` (the ingest itself), ``manifest`` (processed batches, conserved counts),
``event_index`` (event ids already in bronze), ``synth`` (fast valid batches).
"""
