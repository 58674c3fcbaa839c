{#
  Deaths per zone, grid cell and cause (and region): var heatmap_cells cells per
  axis over the world square [0, var world_size). Positions on the far edge fall
  in the last cell.
#}
{{ config(materialized = 'table') }}

{%- set cell = var('world_size') / var('heatmap_cells') %}

select
    region,
    zone,
    cause,
    least(cast(floor(x / {{ cell }}) as integer), {{ var('heatmap_cells') - 1 }}) as cell_x,
    least(cast(floor(y / {{ cell }}) as integer), {{ var('heatmap_cells') - 1 }}) as cell_y,
    count(*) as deaths
from {{ ref('stg_lake__events') }}
where kind = 'combat_death' and x is not null and y is not null
group by all
