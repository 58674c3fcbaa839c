{#
  SLO burn per shard, SLI and 5-minute interval, with multiwindow multi-burn-rate
  alerts (Google SRE workbook, "Alerting on SLOs"). SLO = var slo_target (99.9%).

  SLIs, over server ticks:
  - availability: share of EXPECTED ticks that happened (a crashed shard emits no
    ticks, so its buckets count fully bad); observed ticks above expectation are
    capped, never credited.
  - latency: share of observed ticks faster than var latency_threshold_ms.

  burn_rate_<w> = (bad / total over the trailing window w) / (1 - SLO).
  page_fast: 1h AND 5m burn > 14.4; page_slow: 6h AND 30m > 6; ticket: 3d AND 6h > 1.
  Windows at the start of the data hold fewer buckets than their length: the
  burn rate is over what was observed so far, as a live alerting system sees it.
#}
{{ config(materialized = 'table') }}

with spine as (
    select * from {{ ref('int_shard_bucket_spine') }}
),

per_sli as (
    select
        shard_id, region, bucket_start, 'availability' as sli,
        expected_ticks as total_events,
        least(ticks, expected_ticks) as good_events
    from spine
    union all
    select
        shard_id, region, bucket_start, 'latency' as sli,
        ticks as total_events,
        ticks - slow_ticks as good_events
    from spine
),

windows as (
    select
        *,
        {% for name, minutes in [('5m', 5), ('30m', 30), ('1h', 60), ('6h', 360), ('3d', 4320)] %}
            {% set w = trailing_window('shard_id, sli', 'bucket_start', minutes) %}
            coalesce(
                sum(total_events - good_events) over ({{ w }}) / nullif(sum(total_events) over ({{ w }}), 0),
                0.0
            ) / (1 - {{ var('slo_target') }}) as burn_rate_{{ name }},
        {% endfor %}
        total_events - good_events as bad_events
    from per_sli
)

select
    shard_id,
    region,
    bucket_start,
    sli,
    {{ var('slo_target') }} as slo_target,
    total_events,
    good_events,
    bad_events,
    coalesce(bad_events / nullif(total_events, 0), 0.0) as error_ratio,
    burn_rate_5m,
    burn_rate_30m,
    burn_rate_1h,
    burn_rate_6h,
    burn_rate_3d,
    burn_rate_1h > 14.4 and burn_rate_5m > 14.4 as page_fast,
    burn_rate_6h > 6 and burn_rate_30m > 6 as page_slow,
    burn_rate_3d > 1 and burn_rate_6h > 1 as ticket
from windows
