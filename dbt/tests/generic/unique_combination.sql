{#
  The combination of `columns` identifies a row: the grain test of every mart.
  Returns one row per duplicated key with how often it occurs.
#}
{% test unique_combination(model, columns) %}
select {{ columns | join(', ') }}, count(*) as n_rows
from {{ model }}
group by {{ columns | join(', ') }}
having count(*) > 1
{% endtest %}
