{#
  The world model's training input: one row per shard per 5-minute bucket, with
  EXACTLY the columns aegis.telemetry.KPI_KEY_COLUMNS + KPI_COLUMNS +
  config_columns() in that order (a pytest holds the two together). Definitions
  are the comments in aegis/telemetry.py; the notes below are the choices left open:

  - price_index carries the last observed level forward through buckets without
    gold trades (a price level persists when nobody trades), and is 1.0 before
    a shard's first trade; inflation is then 0 in those buckets.
  - money_supply is the cumulative net gold inflow observed since the shard's
    first bucket in the lake.
  - players_online is 0 in a bucket without server ticks; tick percentiles are
    null there (there is no latency to report).
  - p_* columns come from the config version in force at the bucket's last event.
#}
{{ config(materialized = 'table') }}

with buckets as (
    select * from {{ ref('int_shard_buckets') }}
),

first_trade as (
    select shard_id, min(bucket_start) as first_trade_bucket
    from buckets
    where gold_trades > 0
    group by shard_id
),

base_price as (
    select b.shard_id, sum(b.trade_volume) / sum(b.gold_trades) as base_price
    from buckets as b
    join first_trade as f using (shard_id)
    where b.gold_trades > 0 and b.bucket_start < f.first_trade_bucket + interval '1 hour'
    group by b.shard_id
),

levels as (
    select
        b.*,
        coalesce(b.players_online, 0) as players_online_filled,
        b.currency_sources - b.currency_sinks as net_inflow,
        sum(b.currency_sources - b.currency_sinks) over (
            partition by b.shard_id order by b.bucket_start rows between unbounded preceding and current row
        ) as money_supply,
        coalesce(
            last_value(
                case when b.gold_trades > 0 then (b.trade_volume / b.gold_trades) / p.base_price end ignore nulls
            ) over (partition by b.shard_id order by b.bucket_start rows between unbounded preceding and current row),
            1.0
        ) as price_index
    from buckets as b
    left join base_price as p using (shard_id)
),

kpis as (
    select
        *,
        coalesce(
            price_index / lag(price_index) over (partition by shard_id order by bucket_start) - 1.0, 0.0
        ) as inflation
    from levels
)

select
    k.shard_id,
    k.region,
    k.bucket_start,
    k.config_version,
    cast(k.players_online_filled as double) as players_online,
    k.sessions_started,
    k.deaths_early,
    k.deaths_mid,
    k.deaths_late,
    k.quest_starts,
    k.completions_early,
    k.completions_mid,
    k.completions_late,
    k.quest_completions,
    k.abandons_early,
    k.abandons_mid,
    k.abandons_late,
    coalesce(
        (k.abandons_early + k.abandons_mid + k.abandons_late)
        / nullif(k.abandons_early + k.abandons_mid + k.abandons_late + k.quest_completions, 0),
        0.0
    ) as abandon_rate,
    k.currency_sources,
    k.currency_sinks,
    k.net_inflow,
    k.money_supply,
    k.trade_volume,
    k.trades,
    k.price_index,
    k.inflation,
    case when k.money_supply > 0 then k.trade_volume / k.money_supply else 0.0 end as velocity,
    k.tick_p50_ms,
    k.tick_p95_ms,
    k.tick_p99_ms,
    coalesce(k.players_online_filled / nullif(c.capacity, 0), 0.0) as saturation,
    k.reconnects,
    coalesce(k.reconnects / nullif(k.players_online_filled, 0), 0.0) as reconnect_rate,
    k.churned,
    coalesce(k.churned / nullif(k.players_online_filled, 0), 0.0) as churn_rate,
    columns('^p_')
from kpis as k
left join {{ ref('stg_lake__world_configs') }} as c
    on k.shard_id = c.shard_id and k.config_version = c.config_version
order by k.shard_id, k.bucket_start
