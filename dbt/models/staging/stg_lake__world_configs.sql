{#
  World configs as a validity interval per shard: [valid_from, valid_to). The
  p_* parameter columns pass through untouched (selected by pattern, so a new
  WorldParams field flows to the marts without editing SQL). A view, not a
  table: the feed is tiny, and a view can never be staler than the lake, so a
  new config version is visible to the next mart build without its own refresh.
#}
{{ config(materialized = 'view') }}

select
    shard_id,
    region,
    config_version,
    valid_from,
    lead(valid_from) over (partition by shard_id order by config_version) as valid_to,
    capacity,
    source,
    columns('^p_')
from {{ source('lake', 'world_configs') }}
