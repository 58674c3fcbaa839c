{#
  Quest progression funnel per quest, stage and region.

  starts: attempts that ENTERED the stage = quest_start at that stage (stage 1)
    + quest_stage of the previous stage (finishing stage s-1 enters stage s), up
    to the quest's final stage (the stage quest_complete is emitted at).
  completions: quest_stage events at the stage (the stage was finished).
  abandonments: quest_abandon at the stage. quest_completions: quest_complete.
  Over a window of the lake, attempts in flight at its edges make these counts
  not close exactly (starts >= completions + abandonments is not guaranteed).

  Performance: the quest events are counted once per (quest, stage, region)
  and the "finishing stage s-1 enters stage s" shift is applied to those few
  thousand counts, not to every event (half the CPU of shifting events).
#}
{{ config(materialized = 'table') }}

with quest_events as (
    select quest_id, stage, region, kind
    from {{ ref('stg_lake__events') }}
    where kind in ('quest_start', 'quest_stage', 'quest_complete', 'quest_abandon')
),

per_stage as (
    select
        quest_id,
        stage,
        region,
        count(*) filter (where kind = 'quest_start') as n_start,
        count(*) filter (where kind = 'quest_stage') as n_stage,
        count(*) filter (where kind = 'quest_abandon') as n_abandon,
        count(*) filter (where kind = 'quest_complete') as n_complete
    from quest_events
    group by quest_id, stage, region
),

final_stage as (
    select
        quest_id,
        coalesce(max(stage) filter (where n_complete > 0), max(stage)) as final_stage
    from per_stage
    group by quest_id
),

roles as (
    select quest_id, stage, region, n_start as entries, n_stage, n_abandon, n_complete
    from per_stage
    union all
    select
        p.quest_id,
        p.stage + 1 as stage,
        p.region,
        p.n_stage as entries,
        0 as n_stage,
        0 as n_abandon,
        0 as n_complete
    from per_stage as p
    join final_stage as f using (quest_id)
    where p.n_stage > 0 and p.stage < f.final_stage
),

counts as (
    select
        quest_id,
        stage,
        region,
        cast(sum(entries) as bigint) as starts,
        cast(sum(n_stage) as bigint) as completions,
        cast(sum(n_abandon) as bigint) as abandonments,
        cast(sum(n_complete) as bigint) as quest_completions
    from roles
    group by quest_id, stage, region
)

select
    *,
    coalesce(completions / nullif(starts, 0), 0.0) as stage_completion_rate,
    coalesce(
        starts / nullif(first_value(starts) over (partition by quest_id, region order by stage), 0), 0.0
    ) as reached_share
from counts
