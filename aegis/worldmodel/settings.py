"""The world model's names, thresholds and defaults, importable without torch, mlflow or numpy.

The Dagster code location builds its definitions (asset keys, config classes,
resource fields) from these values, and every Dagster run subprocess and code
server imports it; the heavy modules (:mod:`~aegis.worldmodel.train`,
:mod:`~aegis.worldmodel.registry`, :mod:`~aegis.worldmodel.metrics`,
:mod:`~aegis.worldmodel.dataset`) import them from here and re-export them, so
each value is defined once and reading one never costs a torch import.
Standard library only: a test asserts that importing this module pulls in
nothing else.
"""

# --------------------------------------------------------------- registry (MLflow)
MODEL_NAME = "aegis-world-model"
EXPERIMENT = "aegis-world-model"
# Aliases: ``challenger`` names the newest trained version, ``champion`` the one that serves.
CHAMPION = "champion"
CHALLENGER = "challenger"

# --------------------------------------------------------------- dataset
KPI_TABLE = "fct_shard_kpis"
DEFAULT_WINDOW = 12  # one hour of 5-minute buckets
DEFAULT_TEST_SHARD_FRACTION = 0.25
DEFAULT_TEST_TIME_FRACTION = 0.2
DEFAULT_VAL_FRACTION = 0.15

# --------------------------------------------------------------- judgement
EVAL_SPLITS: tuple[str, ...] = ("test_time", "test_shard")
DEFAULT_MARGIN = 0.02  # a challenger must cut relative MAE by 2% to replace a champion
DEFAULT_BASELINE_MARGIN = 0.05  # a first model must beat the baselines by 5%
COVERAGE_BAND = (0.75, 0.98)  # outside it the intervals lie, whatever the MAE

# --------------------------------------------------------------- training hyper-parameters
DEFAULT_EPOCHS = 60
DEFAULT_PATIENCE = 10
DEFAULT_BATCH = 64
DEFAULT_LR = 2e-3
DEFAULT_HIDDEN = 64
DEFAULT_MEMBERS = 5
DEFAULT_SEED = 0
DEFAULT_DEVICE = "auto"  # CUDA when present, CPU otherwise

# --------------------------------------------------------------- retraining triggers
# Rows ``fct_shard_kpis`` must gain before the sensor retrains (about six shards x 7 game hours).
RETRAIN_NEW_ROWS_ENV = "AEGIS_RETRAIN_NEW_ROWS"
DEFAULT_RETRAIN_NEW_ROWS = 2000
