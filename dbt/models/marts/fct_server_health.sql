{#
  Server health per shard per 5-minute interval over the complete bucket grid
  (int_shard_bucket_spine), so an interval in which a shard was down is a row
  with ticks = 0 and is_down = true rather than a silent gap. Capacity is the
  config's: the version the shard reported in the bucket, or else the version in
  force at the bucket's end (ASOF join on valid_from) when it reported nothing.
#}
{{ config(materialized = 'table') }}

with grid as (
    select
        s.shard_id,
        s.region,
        s.bucket_start,
        s.expected_ticks,
        s.ticks,
        b.config_version as reported_version,
        b.players_online,
        b.tick_p50_ms,
        b.tick_p95_ms,
        b.tick_p99_ms,
        coalesce(b.reconnects, 0) as reconnects
    from {{ ref('int_shard_bucket_spine') }} as s
    left join {{ ref('int_shard_buckets') }} as b using (shard_id, bucket_start)
),

in_force as (
    select g.shard_id, g.bucket_start, c.config_version
    from grid as g
    asof left join {{ ref('stg_lake__world_configs') }} as c
        on g.shard_id = c.shard_id and g.bucket_start + {{ kpi_bucket() }} > c.valid_from
)

select
    g.shard_id,
    g.region,
    g.bucket_start,
    coalesce(g.reported_version, f.config_version) as config_version,
    g.expected_ticks,
    g.ticks,
    g.ticks = 0 as is_down,
    g.tick_p50_ms,
    g.tick_p95_ms,
    g.tick_p99_ms,
    coalesce(g.players_online, 0) as players_online,
    c.capacity,
    coalesce(g.players_online, 0) / nullif(c.capacity, 0) as saturation,
    g.reconnects,
    coalesce(g.reconnects / nullif(g.players_online, 0), 0.0) as reconnect_rate
from grid as g
join in_force as f using (shard_id, bucket_start)
left join {{ ref('stg_lake__world_configs') }} as c
    on g.shard_id = c.shard_id and coalesce(g.reported_version, f.config_version) = c.config_version
