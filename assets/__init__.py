"""Dagster software-defined assets, one module per stage; each exports ``defs`` (no resources)."""
