{# A column is not null on the rows matching `condition` (e.g. ticks present). #}
{% test not_null_where(model, column_name, condition) %}
select *
from {{ model }}
where ({{ condition }}) and {{ column_name }} is null
{% endtest %}
