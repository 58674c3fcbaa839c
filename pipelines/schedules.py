"""Schedules where a cadence is natural: the daily telemetry quality report."""

from __future__ import annotations

import dagster as dg

from assets.telemetry import quality_report_job

DAILY_REPORT_CRON = "0 6 * * *"

telemetry_daily_report = dg.ScheduleDefinition(
    name="telemetry_daily_quality_report",
    job=quality_report_job,
    cron_schedule=DAILY_REPORT_CRON,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Quarantine by rule, rejected files and ingest backlog, every morning.",
)

SCHEDULES = [telemetry_daily_report]
