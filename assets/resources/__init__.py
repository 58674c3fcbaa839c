"""Resources the areas ask for by key; ``pipelines.profiles`` configures them per profile.

One module per resource, imported by name (``from assets.resources.lake import
LakeResource``): this package imports nothing itself, so an area pays only for
the resources it uses (``dbt`` parses the project, ``changes`` loads the
lifecycle). Layering: an area under ``assets/`` imports ``assets.resources``,
a resource imports only the core (``aegis``) and libraries, never an area or
``pipelines`` (tests/pipelines/test_layering.py).

| key | class | module |
|---|---|---|
| ``lake`` | ``LakeResource`` | ``assets.resources.lake`` |
| ``game`` | ``GameBackendResource`` | ``assets.resources.game`` |
| ``dbt`` | ``DbtCliResource`` (``dbt_resource(profile)``) | ``assets.resources.dbt`` |
| ``mlflow`` | ``MlflowResource`` | ``assets.resources.mlflow`` |
| ``training`` | ``TrainingResource`` | ``assets.resources.training`` |
| ``changes`` | ``ChangeSetResource`` | ``assets.resources.changes`` |
| ``healing`` | ``HealingResource`` | ``assets.resources.healing`` |
"""
