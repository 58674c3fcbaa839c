{#
  Every bucket each shard SHOULD have reported, from its first bucket to the
  fleet's last complete bucket, joined to what it did report. A crashed shard
  emits nothing, so its outage only shows against this spine (availability SLI).

  The fleet's newest bucket is still filling when the lake is read; it is left
  out so a partial bucket is never mistaken for an outage. Expected ticks per
  bucket come from var expected_ticks_per_bucket, or else from the shard's own
  cadence (the 90th percentile of its ticks per bucket: robust to outages, and to
  partial first buckets, without hard-coding the game server's tick rate).
#}
{{ config(materialized = 'table') }}

with bounds as (
    select
        shard_id,
        min(bucket_start) as first_bucket,
        quantile_disc(ticks, 0.9) filter (where ticks > 0) as inferred_ticks
    from {{ ref('int_shard_buckets') }}
    group by shard_id
),

fleet as (
    -- the newest bucket any shard ticked in is still filling: stop one before it
    select max(bucket_start) - {{ kpi_bucket() }} as last_complete_bucket
    from {{ ref('int_shard_buckets') }}
    where ticks > 0
),

spine as (
    select
        b.shard_id,
        unnest(generate_series(b.first_bucket, f.last_complete_bucket, {{ kpi_bucket() }})) as bucket_start,
        {% if var('expected_ticks_per_bucket') is not none -%}
            {{ var('expected_ticks_per_bucket') }}
        {%- else -%}
            coalesce(b.inferred_ticks, 0)
        {%- endif %} as expected_ticks
    from bounds as b
    cross join fleet as f
    where b.first_bucket <= f.last_complete_bucket
),

regions as (
    select shard_id, any_value(region) as region
    from {{ ref('int_shard_buckets') }}
    group by shard_id
)

select
    s.shard_id,
    r.region,
    s.bucket_start,
    s.expected_ticks,
    coalesce(k.ticks, 0) as ticks,
    coalesce(k.slow_ticks, 0) as slow_ticks
from spine as s
join regions as r using (shard_id)
left join {{ ref('int_shard_buckets') }} as k using (shard_id, bucket_start)
