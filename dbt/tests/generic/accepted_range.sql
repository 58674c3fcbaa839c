{#
  Values of a column lie in [min_value, max_value] (either bound optional).
  Written here because dbt packages (dbt_utils) cannot be installed offline.
  Nulls pass: pair with not_null where a value is required.
#}
{% test accepted_range(model, column_name, min_value=none, max_value=none, inclusive=true) %}
{%- set lo_op = '>=' if inclusive else '>' -%}
{%- set hi_op = '<=' if inclusive else '<' -%}
select *
from {{ model }}
where {{ column_name }} is not null
  and not (
    true
    {%- if min_value is not none %} and {{ column_name }} {{ lo_op }} {{ min_value }}{% endif %}
    {%- if max_value is not none %} and {{ column_name }} {{ hi_op }} {{ max_value }}{% endif %}
  )
{% endtest %}
