"""The MLflow layout of a tuning run: every tag name written by the tracker and read back by history.

A parent run per task try (or ``run_tuning`` call) and one child run per finished trial. Keep these
names stable: earlier runs are read back by them (resume, warm start) and users filter on them.
"""

from __future__ import annotations

PARENT_RUN = "mlflow.parentRunId"  # MLflow's own: makes a trial run a child of the parent run

# Parent run
TUNING_KEY = "sparktune.tuning_key"  # what a warm start matches earlier runs by
RUN_KEY = "sparktune.run_key"  # run_tuning's resume key: every try of one run carries the same
SEARCH_SPACE = "sparktune.search_space"
STOPPED_REASON = "sparktune.stopped_reason"
STAGING_REASON = "sparktune.staging_reason"
RESUMED_FROM = "sparktune.resumed_from"  # parent runs of the earlier tries, comma-separated
RESUMED_TRIALS = "sparktune.resumed_trials"
SUPERSEDED_BY = "sparktune.superseded_by"  # on a try left RUNNING by a kill: the try that closed it
WARM_START_FROM = "sparktune.warm_start.from_runs"
WARM_START_TRIALS = "sparktune.warm_start.trials"
WARM_START_DROPPED = "sparktune.warm_start.dropped"

# Trial runs (and ERROR on the parent run of a failed or killed run)
TID = "sparktune.tid"
STATUS = "sparktune.status"  # ok | failed | cancelled | pruned
VALS = "sparktune.vals"  # JSON of the active labels' values: enough to rebuild the hyperopt trial
ORIGIN = "sparktune.origin"  # new | resumed | warm_start
SOURCE_RUN = "sparktune.source_run"  # the trial run a resumed or warm-start trial came from
ERROR = "sparktune.error"
PRUNED_STEP = "sparktune.pruned_step"  # the step a pruned trial stopped at
PARETO_FRONT = "sparktune.pareto_front"  # parent run of a multi-objective run: the front's trial ids
PARETO_FRONT_OF = "sparktune.pareto_front_of"  # a trial run on that front: the parent run's id

# Airflow's identity of a task try, on the parent run
AIRFLOW_DAG_ID = "airflow.dag_id"
AIRFLOW_TASK_ID = "airflow.task_id"
AIRFLOW_RUN_ID = "airflow.run_id"
AIRFLOW_TRY_NUMBER = "airflow.try_number"
AIRFLOW_MAP_INDEX = "airflow.map_index"  # a mapped task instance only: its tries are apart from its siblings'

# Run statuses by trial status; a reader trusts only complete trial runs (FINISHED or FAILED)
RUN_STATUS = {"ok": "FINISHED", "failed": "FAILED", "cancelled": "KILLED", "pruned": "FINISHED"}

# Nightly loop: whether a run beat the earlier runs of its tuning key (also in XCom and the asset event)
IMPROVED = "sparktune.improved"  # "true" | "false"
PREVIOUS_BEST_LOSS = "sparktune.previous_best_loss"  # "" on the first run of a tuning key

# Registry gate: on the model version it registered (the decision also in XCom and the task log)
TUNING_RUN_ID = "sparktune.tuning_run_id"  # the parent run of the tuning night that chose the params
DATA_URI = "sparktune.data_uri"  # the dataset the model was trained on, without credentials
GATE_DECISION = "sparktune.gate.decision"  # promote | challenger | keep
GATE_REASON = "sparktune.gate.reason"
GATE_METRIC = "sparktune.gate.metric"
GATE_VALUE = "sparktune.gate.value"
GATE_CHAMPION_VERSION = "sparktune.gate.champion_version"  # "" on the first night
GATE_CHAMPION_VALUE = "sparktune.gate.champion_value"
