{#
  The economy per day, shard and currency.

  money_supply: cumulative net inflow (sources - sinks) observed since the shard's
    first day in the lake; opening_supply is the previous day's.
  net_inflation: net_inflow / opening_supply (null on the first day).
  velocity: trade_volume / money_supply (0 while the supply is not positive).
  price_index: mean trade price / the mean on the first day with trades (1.0 that
    day); price_inflation: its relative change against the previous day.
#}
{{ config(materialized = 'table') }}

with daily as (
    select
        event_date,
        shard_id,
        any_value(region) as region,
        currency,
        coalesce(sum(amount) filter (where kind = 'currency_source'), 0) as sources,
        coalesce(sum(amount) filter (where kind = 'currency_sink'), 0) as sinks,
        coalesce(sum(price) filter (where kind = 'trade'), 0) as trade_volume,
        count(*) filter (where kind = 'trade') as trades
    from {{ ref('stg_lake__events') }}
    where kind in ('currency_source', 'currency_sink', 'trade') and currency is not null
    group by event_date, shard_id, currency
),

supply as (
    select
        *,
        sources - sinks as net_inflow,
        sum(sources - sinks) over (
            partition by shard_id, currency order by event_date rows between unbounded preceding and current row
        ) as money_supply,
        trade_volume / nullif(trades, 0) as avg_trade_price
    from daily
),

indexed as (
    select
        *,
        money_supply - net_inflow as opening_supply,
        avg_trade_price / first_value(avg_trade_price ignore nulls) over (
            partition by shard_id, currency order by event_date
            rows between unbounded preceding and unbounded following
        ) as price_index
    from supply
)

select
    event_date,
    shard_id,
    region,
    currency,
    sources,
    sinks,
    net_inflow,
    opening_supply,
    money_supply,
    case when opening_supply > 0 then net_inflow / opening_supply end as net_inflation,
    trade_volume,
    trades,
    case when money_supply > 0 then trade_volume / money_supply else 0.0 end as velocity,
    avg_trade_price,
    price_index,
    price_index / lag(price_index) over (partition by shard_id, currency order by event_date) - 1.0 as price_inflation
from indexed
