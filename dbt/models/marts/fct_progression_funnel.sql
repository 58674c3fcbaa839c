{#
  Quest progression funnel per quest, stage and region.

  starts: attempts that ENTERED the stage = quest_start at that stage (stage 1)
    + quest_stage of the previous stage (finishing stage s-1 enters stage s), up
    to the quest's final stage (the stage quest_complete is emitted at).
  completions: quest_stage events at the stage (the stage was finished).
  abandonments: quest_abandon at the stage. quest_completions: quest_complete.
  Over a window of the lake, attempts in flight at its edges make these counts
  not close exactly (starts >= completions + abandonments is not guaranteed).
#}
{{ config(materialized = 'table') }}

with quest_events as (
    select quest_id, stage, region, kind
    from {{ ref('stg_lake__events') }}
    where kind in ('quest_start', 'quest_stage', 'quest_complete', 'quest_abandon')
),

final_stage as (
    select
        quest_id,
        coalesce(max(stage) filter (where kind = 'quest_complete'), max(stage)) as final_stage
    from quest_events
    group by quest_id
),

roles as (
    select quest_id, stage, region, 'entry' as role from quest_events where kind = 'quest_start'
    union all
    select e.quest_id, e.stage + 1, e.region, 'entry'
    from quest_events as e
    join final_stage as f using (quest_id)
    where e.kind = 'quest_stage' and e.stage < f.final_stage
    union all
    select quest_id, stage, region, kind from quest_events where kind <> 'quest_start'
),

counts as (
    select
        quest_id,
        stage,
        region,
        count(*) filter (where role = 'entry') as starts,
        count(*) filter (where role = 'quest_stage') as completions,
        count(*) filter (where role = 'quest_abandon') as abandonments,
        count(*) filter (where role = 'quest_complete') as quest_completions
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
