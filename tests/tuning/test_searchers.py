"""The searcher interface: hyperopt unchanged behind it, Optuna's samplers beside it, on Spark too."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

from airflow_provider_sparktune.exceptions import SearchSpaceError, TuningConfigError
from airflow_provider_sparktune.search.base import SearcherSuggest
from airflow_provider_sparktune.search.optuna_space import OptunaSpace
from airflow_provider_sparktune.tracking.history import EarlierTrial
from airflow_provider_sparktune.tuning.prepare import prepare_run
from airflow_provider_sparktune.tuning.run import execute_run
from airflow_provider_sparktune.tuning.space import build_space
from tests.tuning.test_run import UNIT_SPACE, shifted_x, x_objective
from tests.tuning.test_space import NOTEBOOK_SPACE

HAS_TORCH = importlib.util.find_spec("torch") is not None
OPTUNA_SEARCHERS = [
    "optuna.tpe",
    "optuna.random",
    "optuna.qmc",
    "optuna.cmaes",
    "optuna.nsga2",
    pytest.param("optuna.gp", marks=pytest.mark.skipif(not HAS_TORCH, reason="optuna.gp needs torch")),
]
MIXED_SPACE = {
    "lr": {"hp": "loguniform", "low": 1e-4, "high": 1.0},
    "depth": {"hp": "randint", "low": 2, "high": 9},
    "width": {"hp": "quniform", "low": 8, "high": 64, "q": 8},
    "units": {"hp": "uniformint", "low": 1, "high": 5},
    "model": {
        "hp": "choice",
        "options": [
            {"kind": "linear", "alpha": {"hp": "uniform", "low": 0, "high": 1}},
            {"kind": "tree", "leaves": {"hp": "choice", "options": [8, 16, 32]}},
        ],
    },
}


def notebook_objective(params: dict[str, Any]) -> float:
    model = params["model"]
    return float(model["x"] + model.get("y", 0))


def simulate(suggest: Any, space: Any, fn: Any, n: int, p: int) -> Any:
    """An asynchronous run without Spark: ``p`` running, the oldest finishes next (the benchmark's loop)."""
    from collections import deque

    from hyperopt import Trials, base

    trials, domain, running = Trials(), base.Domain(fn, space), deque()  # type: ignore[var-annotated]
    started = 0
    while started < n or running:
        while started < n and len(running) < p:
            new_ids = trials.new_trial_ids(1)
            trials.refresh()
            # the dispatcher's own seed differs with the timing (here: with p); per-trial seeding ignores it
            trials.insert_trial_docs(suggest(new_ids, domain, trials, 1000 * p + started))
            trials.refresh()
            doc = next(t for t in trials._dynamic_trials if t["tid"] == new_ids[0])
            doc["state"] = base.JOB_STATE_RUNNING
            running.append(doc)
            started += 1
        doc = running.popleft()
        doc["result"] = domain.evaluate(base.spec_from_misc(doc["misc"]), ctrl=None)
        doc["state"] = base.JOB_STATE_DONE
        trials.refresh()
    return trials


# -- the space as Optuna sees it -----------------------------------------------------------------


@pytest.mark.unit
def test_every_bounded_distribution_maps_onto_optuna() -> None:
    space = OptunaSpace(build_space(MIXED_SPACE))
    dists = {label: (d.kind, d.low, d.high, d.step, d.log) for label, d in space.dists.items()}
    assert dists["lr"] == ("float", pytest.approx(1e-4), pytest.approx(1.0), None, True)
    assert dists["depth"] == ("int", 2, 8, None, False)  # randint's high is exclusive
    assert dists["width"] == ("float", 8, 64, 8, False)
    assert dists["units"] == ("float", 1, 5, 1, False)
    assert dists["model"][:3] == ("index", 0, 2)  # a choice: the option's index, as hyperopt keeps it
    assert dists["model.options[1].leaves"][:3] == ("index", 0, 3)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("node", "message"),
    [
        ({"hp": "normal", "mu": 0, "sigma": 1}, r"'x' is a normal, which has no bounds.*Use uniform"),
        ({"hp": "qloguniform", "low": 1, "high": 9, "q": 1}, r"'x' is a qloguniform.*Use loguniform"),
        ({"hp": "pchoice", "options": [[0.2, 1], [0.8, 2]]}, r"'x' is a pchoice.*Use choice"),
    ],
)
def test_what_cannot_map_is_refused_before_spark_with_the_label_and_the_fix(
    node: dict[str, Any], message: str
) -> None:
    with pytest.raises(SearchSpaceError, match=rf"^search_space: {message}.*or keep hyperopt's algo='tpe'"):
        prepare_run({"x": node}, x_objective, algo="optuna.tpe")
    prepare_run({"x": node}, x_objective, algo="tpe")  # hyperopt takes it as before


@pytest.mark.unit
def test_a_nested_choice_asks_only_the_chosen_branch() -> None:
    prepared = prepare_run(NOTEBOOK_SPACE, notebook_objective, algo="optuna.tpe", seed=1, max_evals=30)
    trials = simulate(prepared.suggest, prepared.space, notebook_objective, 30, 3)
    study = prepared.suggest.searcher.study  # type: ignore[attr-defined]
    # the last three finished after the last ask: the study never heard of them, nor needed to
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 27 + ["RUNNING"] * 3
    for frozen in study.trials:
        branch = frozen.params["my_choice"]
        assert set(frozen.params) == (
            {"my_choice", "model_a_x"} if branch == 0 else {"my_choice", "model_b_x", "model_b_y"}
        )
    assert min(trials.losses()) <= 1  # model a with x = 1, or model b with x + y <= 1


# -- the interface --------------------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize("algo", ["tpe", "rand", "anneal"])
def test_hyperopt_behind_the_interface_proposes_the_points_it_proposed_before(algo: str) -> None:
    from hyperopt import anneal, rand, tpe

    from airflow_provider_sparktune.tuning.algorithms import per_trial_seeded

    before = per_trial_seeded({"tpe": tpe, "rand": rand, "anneal": anneal}[algo].suggest, 5)
    prepared = prepare_run(NOTEBOOK_SPACE, notebook_objective, algo=algo, seed=5, max_evals=30)
    assert isinstance(prepared.suggest, SearcherSuggest)
    old = simulate(before, prepared.space, notebook_objective, 30, 4)
    new = simulate(prepared.suggest, prepared.space, notebook_objective, 30, 4)
    assert [t["misc"]["vals"] for t in new.trials] == [t["misc"]["vals"] for t in old.trials]


@pytest.mark.unit
def test_the_sampler_sees_running_finished_and_failed_trials() -> None:
    from hyperopt import Trials, base

    prepared = prepare_run(UNIT_SPACE, x_objective, algo="optuna.tpe", seed=2, max_evals=5)
    study = prepared.suggest.searcher.study  # type: ignore[attr-defined]
    trials, domain = Trials(), base.Domain(x_objective, prepared.space)
    for _ in range(3):
        ids = trials.new_trial_ids(1)
        trials.insert_trial_docs(prepared.suggest(ids, domain, trials, 0))
        trials.refresh()
    assert [t.state.name for t in study.trials] == ["RUNNING"] * 3
    done, failed = trials._dynamic_trials[0], trials._dynamic_trials[1]
    done["state"], done["result"] = base.JOB_STATE_DONE, {"status": "ok", "loss": 0.25}
    failed["state"] = base.JOB_STATE_ERROR
    trials.refresh()
    ids = trials.new_trial_ids(1)
    trials.insert_trial_docs(prepared.suggest(ids, domain, trials, 0))
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "RUNNING", "RUNNING"]
    assert study.trials[0].value == 0.25


@pytest.mark.unit
def test_a_warm_start_point_runs_as_an_enqueued_trial_of_the_study() -> None:
    from hyperopt import Trials, base

    from airflow_provider_sparktune.tuning.algorithms import WarmStartSuggest
    from airflow_provider_sparktune.tuning.earlier_trials import space_labels

    prepared = prepare_run(UNIT_SPACE, x_objective, algo="optuna.tpe", seed=2, max_evals=5)
    suggest = WarmStartSuggest(
        [EarlierTrial({"x": 0.2}, "ok", 0.2, "best")], space_labels(prepared.space), prepared.suggest
    )  # what a run with warm start puts in front of the searcher
    trials, domain = Trials(), base.Domain(x_objective, prepared.space)
    for _ in range(2):
        ids = trials.new_trial_ids(1)
        trials.insert_trial_docs(suggest(ids, domain, trials, 0))
        trials.refresh()
    study = prepared.suggest.searcher.study  # type: ignore[attr-defined]
    assert [(t.state.name, t.params) for t in study.trials][0] == ("RUNNING", {"x": 0.2})
    assert len(study.trials) == 2


@pytest.mark.unit
def test_per_trial_seeding_gives_the_same_start_up_points_at_any_parallelism() -> None:
    def points(p: int) -> list[Any]:
        prepared = prepare_run(UNIT_SPACE, x_objective, algo="optuna.tpe", seed=11, max_evals=8)
        return [
            t["misc"]["vals"] for t in simulate(prepared.suggest, prepared.space, x_objective, 8, p).trials
        ]

    assert points(1) == points(4)  # TPE's first 10 points are its start-up draws


# -- settings refused before Spark ---------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"algo": "optuna.bogus"}, r"^algo: unknown algorithm 'optuna.bogus'; use one of tpe, "),
        (
            {"algo": "optuna.tpe", "algo_options": {"n_startup": 3}},
            r"^algo_options: TPESampler refuses \{'n_startup': 3\}.*unexpected keyword",
        ),
        ({"algo": "optuna.tpe", "algo_options": '{"n_startup_trials": '}, r"^algo_options: not valid JSON"),
        ({"algo": "optuna.tpe", "algo_options": [1]}, r"^algo_options: \[1\] must be a JSON object"),
        ({"algo": "optuna.tpe", "algo_options": {"seed": 3}}, r"^algo_options.seed: the run's `seed`"),
        (
            {"algo": "tpe", "algo_options": {"gamma": 0.2}},
            r"^algo_options: hyperopt's 'tpe' takes no options",
        ),
        (
            {"algo": "optuna.tpe", "dispatcher": "sparktrials"},
            r"^dispatcher: 'sparktrials' runs hyperopt's own fmin loop.*use dispatcher='resident'",
        ),
    ],
)
def test_bad_searcher_settings_are_refused_naming_the_field(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(TuningConfigError, match=message):
        prepare_run(UNIT_SPACE, x_objective, **settings)


@pytest.mark.unit
def test_templated_options_arrive_as_json_text() -> None:
    prepared = prepare_run(
        UNIT_SPACE, x_objective, algo="optuna.tpe", algo_options='{"n_startup_trials": 3}', seed=1
    )
    assert prepared.spec.algo_options == {"n_startup_trials": 3}
    assert prepared.suggest.searcher.study.sampler._n_startup_trials == 3  # type: ignore[attr-defined]


@pytest.mark.unit
@pytest.mark.parametrize(
    ("algo", "missing", "message"),
    [
        (
            "optuna.tpe",
            "optuna",
            r"^algo: 'optuna.tpe' needs Optuna.*pip install 'airflow-provider-sparktune\[optuna\]'",
        ),
        ("optuna.gp", "torch", r"^algo: 'optuna.gp' needs the 'torch' package.*\[optuna-gp\]'"),
        ("optuna.cmaes", "cmaes", r"^algo: 'optuna.cmaes' needs the 'cmaes' package.*\[optuna\]'"),
    ],
)
def test_a_missing_package_fails_before_spark_with_the_install_command(
    monkeypatch: pytest.MonkeyPatch, algo: str, missing: str, message: str
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == missing else real(name, *a)
    )
    with pytest.raises(TuningConfigError, match=message):
        prepare_run(UNIT_SPACE, x_objective, algo=algo)


# -- on Spark: every Optuna searcher end to end, with resume and warm start ----------------------


@pytest.mark.integration
@pytest.mark.parametrize("algo", OPTUNA_SEARCHERS)
def test_each_optuna_searcher_runs_resumes_and_warm_starts_on_spark(spark: Any, algo: str) -> None:
    resume = [
        EarlierTrial({"x": 0.05}, "ok", 1.05, "run-a"),
        EarlierTrial({"x": 0.9}, "failed", None, "run-b", error="boom"),
    ]
    warm = [EarlierTrial({"x": 0.2}, "ok", 0.2, "best")]
    prepared = prepare_run(
        UNIT_SPACE, shifted_x, objective_kwargs={"offset": 1.0}, algo=algo, max_evals=8, parallelism=2, seed=3
    )
    result = execute_run(prepared, spark, resume=resume, warm_start=warm)
    origins = [r.origin for r in result.records]
    assert origins == ["resumed"] * 2 + ["warm_start"] + ["new"] * 5
    assert result.records[2].params == {"x": 0.2} and result.records[2].loss == pytest.approx(1.2)
    assert result.trials_total == 8 and result.trials_ok == 7 and result.trials_failed == 1
    assert all(0 <= r.params["x"] <= 1 for r in result.records)
    assert result.best_loss == min(r.loss for r in result.records if r.loss is not None)
    study = prepared.suggest.searcher.study  # type: ignore[attr-defined]
    # the resumed ok trial was told, the warm-start point ran as an enqueued trial, the rest were asked
    assert len(study.trials) == 1 + 1 + 5
    states = [t.state.name for t in study.trials]
    assert states[:2] == ["COMPLETE", "COMPLETE"]  # the resumed trial, and the warm-start point once done
    # the trials still running at the last ask (two at most) finished after it: never told, nor needed
    assert states.count("COMPLETE") >= 5 and set(states) <= {"COMPLETE", "RUNNING"}


@pytest.mark.integration
def test_a_nested_choice_space_runs_with_optuna_on_spark(spark: Any) -> None:
    prepared = prepare_run(
        NOTEBOOK_SPACE, notebook_objective, algo="optuna.tpe", max_evals=6, parallelism=3, seed=0
    )
    result = execute_run(prepared, spark)
    assert result.trials_ok == 6
    for record in result.records:
        model = record.params["model"]
        assert ("y" in model) == (model["name"] == "model b")
        assert set(record.vals) == (
            {"my_choice", "model_a_x"}
            if record.vals["my_choice"] == 0
            else {"my_choice", "model_b_x", "model_b_y"}
        )


# -- several losses: the Pareto front -------------------------------------------------------------

TWO_LOSSES = {"error": "minimize", "latency_ms": "minimize"}


def error_and_latency(params: dict[str, Any]) -> dict[str, Any]:
    x = params["x"]
    return {"losses": {"error": (x - 0.3) ** 2, "latency_ms": 10 * x}}


def assert_is_front(records: Any, front: Any) -> None:
    """Nothing on the front is beaten on both losses; everything off it is, by a front member."""
    from airflow_provider_sparktune.search.pareto import dominates, signed

    assert front
    points = {r.tid: signed(r.losses, TWO_LOSSES) for r in records if r.status == "ok"}
    on = {r.tid for r in front}
    assert not any(dominates(points[a], points[b]) for a in on for b in on)
    assert all(any(dominates(points[a], points[b]) for a in on) for b in set(points) - on)


def record_with(tid: int, **losses: float) -> Any:
    from airflow_provider_sparktune.tuning.records import TrialRecord

    return TrialRecord(tid, "ok", losses.get("a"), {}, {}, {}, None, None, None, losses=losses)


@pytest.mark.unit
def test_the_pareto_front_keeps_what_nothing_beats_on_every_loss() -> None:
    from airflow_provider_sparktune.search.pareto import pareto_front

    records = [
        record_with(0, a=1.0, b=5.0),
        record_with(1, a=2.0, b=2.0),
        record_with(2, a=3.0, b=3.0),  # beaten by 1 on both
        record_with(3, a=5.0, b=1.0),
        record_with(4, a=1.0, b=6.0),  # beaten by 0: equal a, worse b
        record_with(5, a=2.0, b=2.0),  # equal to 1: neither beats the other
    ]
    front = pareto_front(records, {"a": "minimize", "b": "minimize"})
    assert [r.tid for r in front] == [0, 1, 5, 3]  # best primary loss first
    maximized = pareto_front(records, {"a": "minimize", "b": "maximize"})
    assert [r.tid for r in maximized] == [4]  # best a, and the highest b among those


@pytest.mark.unit
def test_named_losses_become_the_primary_loss_and_loss_metrics() -> None:
    from airflow_provider_sparktune.exceptions import ObjectiveError
    from airflow_provider_sparktune.tuning.objective import normalize_result

    result = normalize_result({"losses": {"auc": 0.9, "size": 3}}, {"auc": "maximize", "size": "minimize"})
    assert result["loss"] == -0.9 and result["losses"] == {"auc": 0.9, "size": 3.0}
    assert result["metrics"] == {"loss.auc": 0.9, "loss.size": 3.0}
    with pytest.raises(
        ObjectiveError, match=r"losses \['auc'\]; the run's directions name \['auc', 'size'\]"
    ):
        normalize_result({"losses": {"auc": 0.9}}, {"auc": "maximize", "size": "minimize"})
    with pytest.raises(ObjectiveError, match=r"returned losses, but the run has one loss: pass directions="):
        normalize_result({"losses": {"auc": 0.9}})
    with pytest.raises(ObjectiveError, match=r"a run with directions needs \{'losses'"):
        normalize_result(0.5, TWO_LOSSES)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"directions": {"error": "minimize"}}, r"^directions: .* must map two or more loss names"),
        (
            {"directions": {"error": "down", "size": "minimize"}},
            r"^directions.error: 'down' is not a direction",
        ),
        (
            {"directions": TWO_LOSSES, "pruner": "median"},
            r"^pruner: a run with several objectives .* set pruner=None",
        ),
        ({"directions": TWO_LOSSES, "algo": "optuna.cmaes"}, r"^algo: 'optuna.cmaes' optimizes one loss"),
        ({"directions": '{"error": '}, r"^directions: not valid JSON"),
    ],
)
def test_bad_directions_are_refused_naming_the_field(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(TuningConfigError, match=message):
        prepare_run(UNIT_SPACE, x_objective, **settings)


@pytest.mark.integration
def test_a_multi_objective_run_resumes_and_warm_starts_through_run_tuning(
    spark: Any, mlflow_uri: str, experiment_name: str
) -> None:
    from airflow_provider_sparktune import TrackingOptions, run_tuning

    def tune(run_key: str, *, warm_start: bool = False, max_evals: int = 6) -> Any:
        tracking = TrackingOptions(
            mlflow_uri,
            experiment_name,
            run_name=run_key,
            run_key=run_key,
            warm_start=warm_start,
            warm_start_k=2,
        )
        return run_tuning(
            UNIT_SPACE,
            error_and_latency,
            spark=spark,
            tracking=tracking,
            algo="optuna.tpe",
            directions=TWO_LOSSES,
            max_evals=max_evals,
            parallelism=2,
            seed=1,
        )

    night = tune("night-1", max_evals=5)
    assert_is_front(night.records, night.pareto_front)
    assert night.best_params == night.pareto_front[0].params

    retry = tune("night-1", max_evals=7)  # the same run key: a retry resumes the five trials
    assert [r.origin for r in retry.records] == ["resumed"] * 5 + ["new"] * 2
    assert [r.losses for r in retry.records[:5]] == [r.losses for r in night.records]
    assert_is_front(retry.records, retry.pareto_front)
    # the front covers the resumed trials too: it is never worse than the first try's
    assert retry.pareto_front[0].losses["error"] <= night.pareto_front[0].losses["error"]
    # every front member is marked for the retry's parent run; a resumed one on its earlier trial run
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment_name).experiment_id])
    tries = sorted(
        (
            r
            for r in runs
            if r.data.tags.get("mlflow.runName") == "night-1" and "mlflow.parentRunId" not in r.data.tags
        ),
        key=lambda r: r.info.start_time,
    )
    marked = {
        r.info.run_id for r in runs if r.data.tags.get("sparktune.pareto_front_of") == tries[-1].info.run_id
    }
    assert len(marked) == len(retry.pareto_front)
    assert {r.source_run_id for r in retry.pareto_front if r.origin == "resumed"} <= marked

    night2 = tune("night-2", warm_start=True, max_evals=4)
    assert [r.origin for r in night2.records[:2]] == ["warm_start"] * 2
    assert all(set(r.losses) == set(TWO_LOSSES) for r in night2.records)
