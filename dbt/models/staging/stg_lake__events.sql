{#
  Bronze events, typed and bucketed, stored once in the warehouse so every mart
  reads DuckDB's columnar storage instead of rescanning Parquet.

  Incremental by batch: bronze holds one file per batch_id, and re-processing a
  batch rewrites that file with a new ingested_at. A run therefore takes exactly
  the (batch_id, ingested_at) pairs it has not seen (an anti-join on a few
  thousand batches, not on events) and replaces those batches wholesale
  (delete+insert on batch_id). Late or out-of-order batches are picked up
  because the filter is on batch identity, not on time. Batches the lake has
  since dropped (retention) stay here; `dbt build --full-refresh` rebuilds from
  the lake as it is.
#}
{{
  config(
    materialized = 'incremental',
    incremental_strategy = 'delete+insert',
    unique_key = 'batch_id',
    on_schema_change = 'fail',
  )
}}

select
    event_id,
    ts,
    cast(schema_version as smallint) as schema_version,
    region,
    shard_id,
    player_id,
    kind,
    quest_id,
    stage,
    zone,
    x,
    y,
    cause,
    currency,
    amount,
    item_id,
    price,
    tick_ms,
    players_online,
    config_version,
    batch_id,
    ingested_at,
    time_bucket({{ kpi_bucket() }}, ts) as bucket_start,
    cast(ts as date) as event_date
from {{ source('lake', 'bronze_events') }} as src
{% if is_incremental() %}
where not exists (
    select 1
    from (select distinct batch_id, ingested_at from {{ this }}) as seen
    where seen.batch_id = src.batch_id and seen.ingested_at = src.ingested_at
)
{% endif %}
