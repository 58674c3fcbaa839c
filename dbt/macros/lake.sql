{#
  Where the lake lives, and how the staging models read its tables in place.

  Why macros and not a Jinja expression in the sources' `external_location`: dbt
  renders a sources file with var() and env_var() only (no project macros), and
  dbt-duckdb then passes the rendered string through str.format_map (a "{{ }}"
  smuggled past dbt in a raw block comes out as "{ }"), so neither layer can
  call a macro. The sources (models/staging/_lake__sources.yml) keep
  each table's layout below the root (meta lake_path, read_options), their
  dagster asset keys and docs; lake_source() joins lake_root() to that layout
  when a model runs, so the root is resolved in exactly one place.
#}

{#
  The lake root, without a trailing slash: var lake_root, else $AEGIS_LAKE_ROOT
  (prod: the S3 lake), else <aegis_home>/lake with aegis_home the var
  dagster passes (absolute) or $AEGIS_HOME (default ../.aegis, relative to the
  directory dbt runs in).
#}
{% macro lake_root() -%}
    {%- set root = var('lake_root', '') or env_var('AEGIS_LAKE_ROOT', '')
        or (var('aegis_home', env_var('AEGIS_HOME', '../.aegis')) ~ '/lake') -%}
    {{- return(root.rstrip('/')) -}}
{%- endmacro %}

{#
  The lake source `table_name` as a relation to select from:
  read_parquet('<lake_root()>/<meta lake_path>', <meta read_options>).

  It is source('lake', table_name) with dbt-duckdb's external location set, so
  lineage (the dagster asset key of the source), --empty and --sample behave
  as for any source. While parsing (not execute) the layout is not needed; in a
  unit test the source is a fixture and is returned untouched.
#}
{% macro lake_source(table_name) -%}
    {%- set relation = source('lake', table_name) -%}
    {%- if not execute or model.resource_type == 'unit_test' -%}
        {{- return(relation) -}}
    {%- else -%}
        {%- set meta = graph.sources['source.' ~ project_name ~ '.lake.' ~ table_name].meta -%}
        {%- set path = lake_root() ~ '/' ~ meta.lake_path -%}
        {%- set location = "read_parquet('" ~ (path | replace("'", "''")) ~ "', " ~ meta.read_options ~ ")" -%}
        {{- return(relation.incorporate(external=location)) -}}
    {%- endif -%}
{%- endmacro %}
