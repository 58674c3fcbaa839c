{#
  World configs as a validity interval per shard: [valid_from, valid_to). The
  p_* parameter columns pass through untouched (selected by pattern, so a new
  WorldParams field flows to the marts without editing SQL). A view, not a
  table: the feed is tiny, and a view can never be staler than the lake, so a
  new config version is visible to the next mart build without its own refresh.
  On the prod target (S3) a table, read once per build (see stg_lake__events).
#}
{{ config(materialized = 'table' if target.name == 'prod' else 'view') }}

select
    shard_id,
    region,
    config_version,
    valid_from,
    lead(valid_from) over (partition by shard_id order by config_version) as valid_to,
    capacity,
    source,
    columns('^p_')
from {{ lake_source('world_configs') }}
