{#
  Abandonment by quest stage and region, over all quests.
  abandon_rate = abandonments / (abandonments + completions): of the attempts
  that left the stage, the share that quit; in [0, 1] by construction and the
  same definition as fct_shard_kpis.abandon_rate. abandon_share_of_starts is the
  designers' reading (quits per attempt entering the stage).
#}
{{ config(materialized = 'table') }}

select
    stage,
    region,
    sum(starts) as starts,
    sum(completions) as completions,
    sum(abandonments) as abandonments,
    coalesce(sum(abandonments) / nullif(sum(abandonments) + sum(completions), 0), 0.0) as abandon_rate,
    coalesce(sum(abandonments) / nullif(sum(starts), 0), 0.0) as abandon_share_of_starts
from {{ ref('fct_progression_funnel') }}
group by stage, region
