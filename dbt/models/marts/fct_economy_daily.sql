{#
  The economy per day, shard and currency.

  The lake holds flows (sources, sinks, trades), never the players' holdings, so
  the money supply is known only relative to the shard's first day in the lake:
  money_supply = cumulative net inflow (sources - sinks) since that day, and
  opening_supply = the previous day's money_supply. The first day therefore has
  no opening supply (it was 0 by construction, which made day one's velocity
  trade_volume / one day's net inflow, ~5, and its inflation undefined): it is
  flagged is_partial and its rates are null, not computed against a base that
  does not exist. From day two the opening supply is what the lake has seen
  accumulate, and the rates are:
    net_inflation = net_inflow / opening_supply
    velocity      = trade_volume / average supply over the day
                    ((opening_supply + money_supply) / 2)
  both null (never NaN or infinite) while the base is not positive (a sink-heavy
  start drained more than it added); accepted ranges in _marts.yml.
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
        trade_volume / nullif(trades, 0) as avg_trade_price,
        event_date = min(event_date) over (partition by shard_id, currency) as is_partial
    from daily
),

indexed as (
    select
        *,
        case when not is_partial then money_supply - net_inflow end as opening_supply,
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
    is_partial,
    sources,
    sinks,
    net_inflow,
    opening_supply,
    money_supply,
    case when opening_supply > 0 then net_inflow / opening_supply end as net_inflation,
    trade_volume,
    trades,
    case
        when opening_supply > 0 and money_supply > 0
            then trade_volume / ((opening_supply + money_supply) / 2.0)
    end as velocity,
    avg_trade_price,
    price_index,
    price_index / lag(price_index) over (partition by shard_id, currency order by event_date) - 1.0 as price_inflation
from indexed
