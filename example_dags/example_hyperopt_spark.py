"""Tune the two-model space of the original notebook (the hand-written hyperopt + SparkTrials workflow
this provider replaces) with HyperoptSparkOperator on embedded defaults.

Without connections this runs Spark ``local[*]`` and logs to a SQLite MLflow store under
AIRFLOW_HOME; point ``spark_default`` / ``mlflow_default`` at a cluster and a tracking server to run
it there unchanged. The best point is the original notebook's: ``{"name": "model a", "x": 1}`` with loss 1.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_sparktune.operators.hyperopt_spark import HyperoptSparkOperator

# "model a" takes x; "model b" takes x and y: a conditional space, written as plain data.
# [START howto_search_space]
SEARCH_SPACE = {
    "model": {
        "hp": "choice",
        "label": "my_choice",
        "options": [
            {"name": "model a", "x": {"hp": "choice", "label": "model_a_x", "options": [1, 2, 4, 6, 8]}},
            {
                "name": "model b",
                "x": {"hp": "choice", "label": "model_b_x", "options": [0, 1, 2, 3, 4]},
                "y": {"hp": "choice", "label": "model_b_y", "options": [0, 3, 5, 7, 9]},
            },
        ],
    }
}
# [END howto_search_space]


# [START howto_objective]
def notebook_objective(params: dict[str, Any], data: Any = None) -> float:
    """The original notebook's objective: the loss is x + y (y is 0 for model a)."""
    model = params["model"]
    return model["x"] + model.get("y", 0)
    # [END howto_objective]


with DAG(
    dag_id="example_hyperopt_spark",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["example", "sparktune"],
    doc_md=__doc__,
) as dag:
    # [START howto_operator_hyperopt_spark]
    tune = HyperoptSparkOperator(
        task_id="tune",
        search_space=SEARCH_SPACE,
        objective=notebook_objective,
        max_evals=10,
        parallelism=3,
        seed=3,
        spark_conn_id="spark_default",
        mlflow_conn_id="mlflow_default",
    )
    # [END howto_operator_hyperopt_spark]

    @task
    def report(result: dict[str, Any]) -> dict[str, Any]:
        """What a downstream training task would read: the concrete best parameters."""
        print(f"best params {result['best_params']} loss {result['best_loss']}")
        return result["best_params"]

    report(tune.output)
