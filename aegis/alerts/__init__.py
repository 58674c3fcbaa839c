"""Alerts in: the durable inbox, the receiver, and the Prometheus/Alertmanager rules and config."""
