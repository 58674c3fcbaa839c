{#
  Values of a column lie in [min_value, max_value] (either bound optional).
  Written here because dbt packages (dbt_utils) cannot be installed offline.
  Nulls pass: pair with not_null where a value is required.
#}
{% test accepted_range(model, column_name, min_value=none, max_value=none, inclusive=true) %}
    {%- set bounds = [] -%}
    {%- if min_value is not none -%}
        {%- do bounds.append(column_name ~ (' >= ' if inclusive else ' > ') ~ min_value) -%}
    {%- endif -%}
    {%- if max_value is not none -%}
        {%- do bounds.append(column_name ~ (' <= ' if inclusive else ' < ') ~ max_value) -%}
    {%- endif -%}
select *
from {{ model }}
where {{ column_name }} is not null and not ({{ bounds | join(' and ') or 'true' }})
{% endtest %}
