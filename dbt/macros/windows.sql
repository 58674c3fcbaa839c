{# Bucket width as a SQL interval literal; equals aegis.telemetry.KPI_BUCKET_MINUTES. #}
{% macro kpi_bucket() -%}
    interval '{{ var("kpi_bucket_minutes") }} minutes'
{%- endmacro %}

{#
  A window over the trailing `minutes` of buckets, current bucket included, for
  multiwindow burn rates: RANGE on the bucket timestamp, so a missing bucket is
  never silently replaced by an older one.
#}
{% macro trailing_window(partition_by, order_by, minutes) -%}
    partition by {{ partition_by }} order by {{ order_by }}
    range between interval '{{ minutes - var("kpi_bucket_minutes") }} minutes' preceding and current row
{%- endmacro %}
