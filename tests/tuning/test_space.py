"""Unit tests for the declarative search space: compilation, sampling ranges, labels, facts, validation."""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import hyperopt
import numpy as np
import pytest
from hyperopt import hp
from hyperopt.pyll import Apply
from hyperopt.pyll.stochastic import sample

from airflow_provider_sparktune.exceptions import SearchSpaceError, SparktuneError
from airflow_provider_sparktune.tuning.space import (
    DISTRIBUTIONS,
    SpaceFacts,
    build_space,
    compile_space,
    default_label,
    is_hyperopt_expression,
    parse_space_spec,
    space_facts,
    validate_space,
)

pytestmark = pytest.mark.unit

N_DRAWS = 200

NOTEBOOK_SPACE: dict[str, Any] = {
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


def draws(spec: Any, n: int = N_DRAWS) -> list[Any]:
    """``n`` samples of the compiled space with a fixed generator."""
    space = build_space(spec)
    rng = np.random.default_rng(0)
    return [sample(space, rng=rng) for _ in range(n)]


def xs(spec_node: dict[str, Any], n: int = N_DRAWS) -> list[Any]:
    """Samples of a single distribution placed at key ``x``."""
    return [d["x"] for d in draws({"x": spec_node}, n)]


def listify(value: Any) -> Any:
    """hyperopt renders lists as tuples; compare sampled structures as JSON would see them."""
    if isinstance(value, dict):
        return {k: listify(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [listify(v) for v in value]
    return value


def is_multiple(value: float, q: float) -> bool:
    return math.isclose(value / q, round(value / q), abs_tol=1e-9)


# --------------------------------------------------------------------------------------------------
# every distribution compiles and samples in range
# --------------------------------------------------------------------------------------------------


# One example per distribution the module offers, with what every sample of it must satisfy.
EXAMPLES: dict[str, tuple[dict[str, Any], Any]] = {
    "choice": ({"options": ["a", 2]}, lambda v: v in ("a", 2)),
    "pchoice": ({"options": [[0.5, "a"], [0.5, "b"]]}, lambda v: v in ("a", "b")),
    "randint": ({"low": 3, "high": 6}, lambda v: type(v) is int and 3 <= v < 6),
    "uniform": ({"low": -2, "high": 3}, lambda v: -2 <= v <= 3),
    "quniform": ({"low": 0, "high": 10, "q": 2.5}, lambda v: 0 <= v <= 10 and is_multiple(v, 2.5)),
    "loguniform": ({"low": 1e-3, "high": 1}, lambda v: 1e-3 * (1 - 1e-9) <= v <= 1 + 1e-9),
    "qloguniform": ({"low": 1, "high": 100, "q": 5}, lambda v: 0 <= v <= 100 and is_multiple(v, 5)),
    "normal": ({"mu": 0, "sigma": 1}, lambda v: isinstance(v, float) and -10 < v < 10),
    "qnormal": ({"mu": 0, "sigma": 5, "q": 0.5}, lambda v: is_multiple(v, 0.5)),
    "lognormal": ({"mu": 0, "sigma": 1}, lambda v: v > 0),
    "qlognormal": ({"mu": 1, "sigma": 1, "q": 2}, lambda v: v >= 0 and is_multiple(v, 2)),
    "uniformint": ({"low": 2, "high": 5}, lambda v: type(v) is int and 2 <= v <= 5),
    "const": ({"value": {"k": [1]}}, lambda v: listify(v) == {"k": [1]}),
}


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_every_distribution_compiles_samples_in_range_and_counts(name: str) -> None:
    """Iterates the module's own table: a distribution added without an example fails here."""
    assert name in EXAMPLES, f"no example for distribution {name!r}: add one to EXAMPLES"
    arguments, valid = EXAMPLES[name]
    node = {"hp": name, **arguments}
    values = xs(node, n=50)
    assert all(valid(v) for v in values), (name, values[:5])
    facts = space_facts({"x": node})
    assert facts.n_hyperparameters == (0 if name == "const" else 1)
    assert facts.labels == (() if name == "const" else ("x",))


def test_the_examples_name_only_real_distributions() -> None:
    assert set(EXAMPLES) <= set(DISTRIBUTIONS)


def test_choice_samples_are_among_options_and_all_are_reached() -> None:
    values = xs({"hp": "choice", "options": ["a", 2, None]})
    assert set(values) <= {"a", 2, None}
    assert set(values) == {"a", 2, None}


@pytest.mark.parametrize(
    "options",
    [
        pytest.param([{"p": 0.3, "value": "a"}, {"p": 0.7, "value": "b"}], id="keyed-form"),
        pytest.param([[0.3, "a"], [0.7, "b"]], id="pair-form"),
    ],
)
def test_pchoice_samples_are_among_options(options: list[Any]) -> None:
    values = xs({"hp": "pchoice", "options": options})
    assert set(values) == {"a", "b"}


@pytest.mark.parametrize(
    "options",
    [
        pytest.param([{"p": 0.0, "value": "never"}, {"p": 1.0, "value": "always"}], id="keyed-form"),
        pytest.param([[0.0, "never"], [1.0, "always"]], id="pair-form"),
    ],
)
def test_pchoice_probabilities_are_honoured(options: list[Any]) -> None:
    assert set(xs({"hp": "pchoice", "options": options})) == {"always"}


def test_pchoice_keyed_values_can_hold_subspaces() -> None:
    spec = {
        "hp": "pchoice",
        "options": [
            {"p": 0.5, "value": {"k": "lin", "c": {"hp": "uniform", "low": 0, "high": 1}}},
            {"p": 0.5, "value": {"k": "rbf"}},
        ],
    }
    values = xs(spec)
    assert {v["k"] for v in values} == {"lin", "rbf"}
    assert all(0 <= v["c"] <= 1 for v in values if v["k"] == "lin")
    assert all("c" not in v for v in values if v["k"] == "rbf")


def test_randint_without_low_samples_ints_in_zero_to_high() -> None:
    values = xs({"hp": "randint", "high": 4})
    assert all(type(v) is int for v in values)
    assert set(values) == {0, 1, 2, 3}


def test_randint_with_low_samples_ints_in_low_to_high_exclusive() -> None:
    values = xs({"hp": "randint", "low": 3, "high": 6})
    assert all(type(v) is int for v in values)
    assert set(values) == {3, 4, 5}


def test_randint_accepts_integral_floats() -> None:
    values = xs({"hp": "randint", "low": 1.0, "high": 3.0})
    assert set(values) == {1, 2}


def test_uniform_samples_in_range() -> None:
    values = xs({"hp": "uniform", "low": -2.0, "high": 3.0})
    assert all(-2.0 <= v <= 3.0 for v in values)
    assert len(set(values)) > N_DRAWS // 2  # continuous, not a handful of points
    assert min(values) < 0 < max(values)


def test_quniform_samples_are_multiples_of_q_in_range() -> None:
    values = xs({"hp": "quniform", "low": 0, "high": 10, "q": 2.5})
    assert all(is_multiple(v, 2.5) for v in values)
    assert all(0 <= v <= 10 for v in values)
    assert len(set(values)) >= 3


def test_loguniform_bounds_are_natural_units() -> None:
    low, high = 1e-4, 0.1
    values = xs({"hp": "loguniform", "low": low, "high": high})
    assert all(low * (1 - 1e-9) <= v <= high * (1 + 1e-9) for v in values)
    # log-uniform: about two thirds of the mass lies below 1e-2 (a plain uniform would put ~10% there)
    assert sum(v < 1e-2 for v in values) > N_DRAWS / 2


def test_qloguniform_samples_are_multiples_of_q_in_natural_units() -> None:
    values = xs({"hp": "qloguniform", "low": 1, "high": 1000, "q": 5})
    assert all(is_multiple(v, 5) for v in values)
    assert all(0 <= v <= 1000 for v in values)
    assert max(values) > 100  # bounds were taken as natural units, not as log-space exponents


def test_normal_samples_center_on_mu() -> None:
    values = xs({"hp": "normal", "mu": 10.0, "sigma": 1.0})
    assert abs(float(np.mean(values)) - 10.0) < 0.5
    assert 0.5 < float(np.std(values)) < 1.5


def test_qnormal_samples_are_multiples_of_q() -> None:
    values = xs({"hp": "qnormal", "mu": 0.0, "sigma": 5.0, "q": 0.5})
    assert all(is_multiple(v, 0.5) for v in values)
    assert len(set(values)) > 5


def test_lognormal_samples_are_positive() -> None:
    values = xs({"hp": "lognormal", "mu": 0.0, "sigma": 1.0})
    assert all(v > 0 for v in values)
    assert abs(float(np.median(values)) - 1.0) < 0.5


def test_qlognormal_samples_are_non_negative_multiples_of_q() -> None:
    values = xs({"hp": "qlognormal", "mu": 1.0, "sigma": 1.0, "q": 2})
    assert all(v >= 0 and is_multiple(v, 2) for v in values)


def test_uniformint_samples_ints_in_closed_range() -> None:
    values = xs({"hp": "uniformint", "low": 2, "high": 5})
    assert all(type(v) is int for v in values)
    assert set(values) <= {2, 3, 4, 5}
    assert len(set(values)) >= 3


def test_uniformint_honours_q() -> None:
    values = xs({"hp": "uniformint", "low": 0, "high": 100, "q": 10})
    assert all(v % 10 == 0 for v in values)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(3, id="int"),
        pytest.param("adam", id="str"),
        pytest.param([1, 2, 3], id="list"),
        pytest.param({"a": 1, "b": [True, None]}, id="dict"),
        pytest.param({"hp": "uniform", "low": 0, "high": 1}, id="literal-dict-with-hp-key"),
        pytest.param(None, id="null"),
    ],
)
def test_const_passes_value_through(value: Any) -> None:
    values = xs({"hp": "const", "value": value}, n=5)
    assert all(listify(v) == value for v in values)


def test_const_literal_hp_dict_is_not_a_hyperparameter() -> None:
    spec = {"x": {"hp": "const", "value": {"hp": "choice", "options": [1, 2]}}, "y": 1}
    assert build_space(spec) == {"x": {"hp": "choice", "options": [1, 2]}, "y": 1}
    facts = space_facts(spec)
    assert facts.labels == ()
    assert facts.n_hyperparameters == 0


def test_plain_constants_pass_through() -> None:
    spec = {"a": 1, "b": 2.5, "c": "s", "d": True, "e": None, "f": [1, {"g": "h"}]}
    assert build_space(spec) == spec
    assert listify(draws(spec, n=1)[0]) == spec


def test_build_space_does_not_mutate_input() -> None:
    spec = copy.deepcopy(NOTEBOOK_SPACE)
    build_space(spec)
    assert spec == NOTEBOOK_SPACE


# --------------------------------------------------------------------------------------------------
# nesting and conditional sub-spaces
# --------------------------------------------------------------------------------------------------


def test_nested_dicts_and_lists_keep_their_shape() -> None:
    spec = {
        "layers": [{"hp": "choice", "options": [16, 32]}, 7, "relu"],
        "opt": {"name": "adam", "lr": {"hp": "uniform", "low": 0.1, "high": 0.2}},
    }
    for d in map(listify, draws(spec, n=50)):
        assert set(d) == {"layers", "opt"}
        assert isinstance(d["layers"], list)
        assert len(d["layers"]) == 3
        assert d["layers"][0] in (16, 32)
        assert d["layers"][1:] == [7, "relu"]
        assert d["opt"]["name"] == "adam"
        assert 0.1 <= d["opt"]["lr"] <= 0.2


def test_notebook_space_conditional_samples() -> None:
    seen = set()
    for d in draws(NOTEBOOK_SPACE):
        model = d["model"]
        seen.add(model["name"])
        if model["name"] == "model a":
            assert set(model) == {"name", "x"}
            assert model["x"] in (1, 2, 4, 6, 8)
        else:
            assert model["name"] == "model b"
            assert set(model) == {"name", "x", "y"}
            assert model["x"] in (0, 1, 2, 3, 4)
            assert model["y"] in (0, 3, 5, 7, 9)
    assert seen == {"model a", "model b"}


def test_notebook_space_eval_model_a() -> None:
    assert hyperopt.space_eval(build_space(NOTEBOOK_SPACE), {"my_choice": 0, "model_a_x": 0}) == {
        "model": {"name": "model a", "x": 1}
    }


def test_notebook_space_eval_model_b() -> None:
    point = {"my_choice": 1, "model_b_x": 2, "model_b_y": 3}
    assert hyperopt.space_eval(build_space(NOTEBOOK_SPACE), point) == {
        "model": {"name": "model b", "x": 2, "y": 7}
    }


# --------------------------------------------------------------------------------------------------
# labels
# --------------------------------------------------------------------------------------------------

LABELLED_SPACE: dict[str, Any] = {
    "model": {
        "hp": "choice",
        "options": [
            {"lr": {"hp": "uniform", "low": 0, "high": 1}},
            {"lr": {"hp": "loguniform", "low": 1e-3, "high": 1}},
        ],
    },
    "opt": {"beta": {"hp": "uniform", "label": "beta_1", "low": 0.8, "high": 0.99}},
}


def test_default_labels_are_dotted_paths_without_root() -> None:
    assert space_facts(LABELLED_SPACE).labels == (
        "model",
        "model.options[0].lr",
        "model.options[1].lr",
        "beta_1",
    )


def test_default_labels_are_the_hyperopt_labels() -> None:
    point = {"model": 1, "model.options[1].lr": 0.01, "beta_1": 0.9}
    assert hyperopt.space_eval(build_space(LABELLED_SPACE), point) == {
        "model": {"lr": 0.01},
        "opt": {"beta": 0.9},
    }


def test_explicit_label_wins_over_path() -> None:
    spec = {"a": {"b": {"hp": "uniform", "label": "learning_rate", "low": 0, "high": 1}}}
    assert space_facts(spec).labels == ("learning_rate",)
    assert hyperopt.space_eval(build_space(spec), {"learning_rate": 0.5}) == {"a": {"b": 0.5}}


def test_pchoice_keyed_default_label_path() -> None:
    spec = {
        "p": {
            "hp": "pchoice",
            "options": [{"p": 1.0, "value": {"lr": {"hp": "uniform", "low": 0, "high": 1}}}],
        }
    }
    assert space_facts(spec).labels == ("p", "p.options[0].value.lr")


@pytest.mark.parametrize(
    ("path", "label"),
    [
        pytest.param("search_space.model.lr", "model.lr", id="dotted"),
        pytest.param("search_space.m.options[1].lr", "m.options[1].lr", id="indexed"),
        pytest.param("search_space", "search_space", id="root"),
        pytest.param("other.path", "other.path", id="foreign-root"),
    ],
)
def test_default_label(path: str, label: str) -> None:
    assert default_label(path) == label


# --------------------------------------------------------------------------------------------------
# JSON input and hyperopt passthrough
# --------------------------------------------------------------------------------------------------


def test_json_string_parses_like_the_dict() -> None:
    text = json.dumps(NOTEBOOK_SPACE)
    assert parse_space_spec(text) == NOTEBOOK_SPACE
    assert space_facts(text) == space_facts(NOTEBOOK_SPACE)
    point = {"my_choice": 1, "model_b_x": 4, "model_b_y": 0}
    assert hyperopt.space_eval(build_space(text), point) == hyperopt.space_eval(
        build_space(NOTEBOOK_SPACE), point
    )


def test_json_bytes_parse_like_the_dict() -> None:
    assert parse_space_spec(json.dumps(NOTEBOOK_SPACE).encode()) == NOTEBOOK_SPACE


@pytest.mark.parametrize(
    "text",
    [
        pytest.param('{"x": {"hp": "uniform", "low": 0, ', id="truncated"),
        pytest.param("{'x': 1}", id="single-quotes"),
        pytest.param("", id="empty"),
    ],
)
def test_invalid_json_raises_search_space_error(text: str) -> None:
    with pytest.raises(SearchSpaceError) as exc:
        build_space(text)
    message = str(exc.value)
    assert message.startswith("search_space: not valid JSON")
    assert "pass a dict or a JSON object string" in message
    assert isinstance(exc.value, ValueError)
    assert isinstance(exc.value, SparktuneError)


def test_hyperopt_expression_passes_through_unchanged() -> None:
    expr = hp.uniform("x", 0, 1)
    assert build_space(expr) is expr


def test_dict_holding_hp_nodes_passes_through_unchanged() -> None:
    space = {"lr": hp.loguniform("lr", -5, 0), "fixed": 3, "nested": [{"d": hp.randint("d", 4)}]}
    assert build_space(space) is space
    assert is_hyperopt_expression(space)


def test_is_hyperopt_expression() -> None:
    assert is_hyperopt_expression(hp.choice("c", [1, 2]))
    assert is_hyperopt_expression([1, (2, hp.uniform("u", 0, 1))])
    assert not is_hyperopt_expression(NOTEBOOK_SPACE)
    assert not is_hyperopt_expression(json.dumps(NOTEBOOK_SPACE))
    assert isinstance(build_space({"x": {"hp": "uniform", "low": 0, "high": 1}})["x"], Apply)


# --------------------------------------------------------------------------------------------------
# size facts
# --------------------------------------------------------------------------------------------------


def test_notebook_space_facts() -> None:
    facts = space_facts(NOTEBOOK_SPACE)
    assert facts.n_hyperparameters == 4
    assert facts.n_categorical == 4
    assert facts.categorical_breadth == 17  # 2 + 5 + 5 + 5
    assert facts.n_ordinal == 0
    assert facts.labels == ("my_choice", "model_a_x", "model_b_x", "model_b_y")
    assert facts.suggested_max_evals() == 15 * 17
    assert facts.suggested_parallelism(task_slots=64) == 8
    assert facts.suggested_parallelism(task_slots=3) == 3


MIXED_SPACE: dict[str, Any] = {
    "lr": {"hp": "loguniform", "low": 1e-4, "high": 1e-1},
    "depth": {"hp": "randint", "low": 2, "high": 10},
    "model": {
        "hp": "choice",
        "options": [
            {"kind": "ridge", "alpha": {"hp": "uniform", "low": 0, "high": 1}},
            {"kind": "lasso"},
            "none",
        ],
    },
    "opt": {"hp": "pchoice", "options": [[0.4, "sgd"], [0.6, "adam"]]},
    "fixed": {"hp": "const", "value": 3},
    "constant": [1, 2, 3],
}


def test_mixed_space_facts() -> None:
    facts = space_facts(MIXED_SPACE)
    assert facts.n_ordinal == 3  # lr, depth, model.options[0].alpha
    assert facts.n_categorical == 2  # model, opt
    assert facts.categorical_breadth == 5  # 3 + 2
    assert facts.n_hyperparameters == 5
    assert dict(facts.kinds) == {
        "lr": "loguniform",
        "depth": "randint",
        "model": "choice",
        "model.options[0].alpha": "uniform",
        "opt": "pchoice",
    }
    assert facts.suggested_max_evals() == 20 * 3 + 15 * 5
    assert facts.suggested_parallelism(task_slots=100) == 10


def test_validate_space_returns_the_same_facts() -> None:
    assert validate_space(MIXED_SPACE) == space_facts(MIXED_SPACE)


@pytest.mark.parametrize(
    ("n_ordinal", "n_categorical", "breadth", "expected"),
    [
        pytest.param(0, 0, 0, 1, id="empty-space-min-1"),
        pytest.param(1, 0, 0, 20, id="one-ordinal"),
        pytest.param(0, 1, 4, 60, id="one-choice-of-4"),
        pytest.param(3, 2, 7, 165, id="mixed"),
    ],
)
def test_suggested_max_evals(n_ordinal: int, n_categorical: int, breadth: int, expected: int) -> None:
    facts = SpaceFacts(
        labels=(), n_ordinal=n_ordinal, n_categorical=n_categorical, categorical_breadth=breadth
    )
    assert facts.suggested_max_evals() == expected


@pytest.mark.parametrize(
    ("n_params", "task_slots", "expected"),
    [
        pytest.param(4, 64, 8, id="2x-params"),
        pytest.param(4, 5, 5, id="capped-by-slots"),
        pytest.param(100, 1000, 128, id="capped-at-128"),
        pytest.param(0, 64, 2, id="no-params-counts-as-one"),
        pytest.param(4, 0, 1, id="no-slots-min-1"),
        pytest.param(1, 1, 1, id="one-slot"),
    ],
)
def test_suggested_parallelism(n_params: int, task_slots: int, expected: int) -> None:
    facts = SpaceFacts(labels=(), n_ordinal=n_params, n_categorical=0, categorical_breadth=0)
    assert facts.suggested_parallelism(task_slots) == expected


def test_space_facts_of_hand_built_expression() -> None:
    space = {"a": hp.choice("a", [1, 2, 3]), "b": hp.uniform("b", 0, 1), "c": hp.randint("c", 2, 5)}
    facts = space_facts(space)
    assert set(facts.labels) == {"a", "b", "c"}
    assert facts.n_ordinal == 1
    assert facts.n_categorical == 2
    assert facts.categorical_breadth == 3 + 3


def test_space_facts_of_compiled_seed_space_match_declarative() -> None:
    compiled = space_facts(build_space(NOTEBOOK_SPACE))
    declared = space_facts(NOTEBOOK_SPACE)
    assert compiled.n_hyperparameters == declared.n_hyperparameters == 4
    assert compiled.categorical_breadth == declared.categorical_breadth == 17


def test_space_facts_of_compiled_pchoice() -> None:
    facts = space_facts(build_space({"opt": {"hp": "pchoice", "options": [[0.4, "sgd"], [0.6, "adam"]]}}))
    assert facts.n_categorical == 1
    assert facts.categorical_breadth == 2


# --------------------------------------------------------------------------------------------------
# validation errors
# --------------------------------------------------------------------------------------------------

U01 = {"hp": "uniform", "low": 0, "high": 1}


class _Opaque:
    pass


INVALID_SPACES = [
    pytest.param(
        {"x": {"hp": "gauss", "mu": 0}},
        [
            "search_space.x.hp: unknown distribution 'gauss'",
            "use one of: choice, const, lognormal, loguniform",
        ],
        id="unknown-distribution",
    ),
    pytest.param(
        {"x": {"hp": 3}},
        ["search_space.x.hp: unknown distribution 3", "use one of:"],
        id="non-string-distribution",
    ),
    pytest.param(
        {"x": {"hp": "uniform", "low": 0}},
        ["search_space.x: missing key(s) 'high' for uniform", "expected low, high, label"],
        id="missing-high",
    ),
    pytest.param(
        {"x": {"hp": "qnormal", "mu": 0}},
        ["search_space.x: missing key(s) 'sigma', 'q' for qnormal", "expected mu, sigma, q, label"],
        id="missing-several",
    ),
    pytest.param(
        {"x": {"hp": "choice"}},
        ["search_space.x: missing key(s) 'options' for choice", "expected options, label"],
        id="missing-options",
    ),
    pytest.param(
        {"x": {"hp": "const"}},
        ["search_space.x: missing key(s) 'value' for const", "expected value"],
        id="missing-const-value",
    ),
    pytest.param(
        {"x": {"hp": "uniform", "low": 0, "high": 1, "step": 2, "dist": 1}},
        ["search_space.x: unknown key(s) 'dist', 'step' for uniform", "expected low, high, label"],
        id="extra-keys",
    ),
    pytest.param(
        {"x": {"hp": "randint", "high": 3, "q": 1}},
        ["search_space.x: unknown key(s) 'q' for randint", "expected high, low, label"],
        id="extra-key-randint",
    ),
    pytest.param(
        {"x": {"hp": "const", "value": 1, "label": "c"}},
        ["search_space.x: unknown key(s) 'label' for const", "expected value"],
        id="const-takes-no-label",
    ),
    pytest.param(
        {"x": {"hp": "uniform", "low": 1, "high": 1}},
        ["search_space.x: low must be < high (got low=1, high=1)"],
        id="low-equals-high",
    ),
    pytest.param(
        {"x": {"hp": "quniform", "low": 5, "high": 1, "q": 1}},
        ["search_space.x: low must be < high (got low=5, high=1)"],
        id="low-above-high",
    ),
    pytest.param(
        {"x": {"hp": "randint", "high": 0}},
        ["search_space.x: low must be < high (got low=0, high=0)"],
        id="randint-high-zero",
    ),
    pytest.param(
        {"x": {"hp": "loguniform", "low": 0, "high": 1}},
        [
            "search_space.x.low: loguniform bounds are in natural units and must be > 0 (got 0)",
            "use uniform for ranges that include 0",
        ],
        id="loguniform-zero-low",
    ),
    pytest.param(
        {"x": {"hp": "qloguniform", "low": -1, "high": 10, "q": 1}},
        [
            "search_space.x.low: qloguniform bounds are in natural units and must be > 0 (got -1)",
            "use uniform",
        ],
        id="qloguniform-negative-low",
    ),
    pytest.param(
        {"x": {"hp": "quniform", "low": 0, "high": 1, "q": 0}},
        ["search_space.x.q: must be > 0 (got 0)"],
        id="q-zero",
    ),
    pytest.param(
        {"x": {"hp": "qlognormal", "mu": 0, "sigma": 1, "q": -0.5}},
        ["search_space.x.q: must be > 0 (got -0.5)"],
        id="q-negative",
    ),
    pytest.param(
        {"x": {"hp": "normal", "mu": 0, "sigma": 0}},
        ["search_space.x.sigma: must be > 0 (got 0)"],
        id="sigma-zero",
    ),
    pytest.param(
        {"x": {"hp": "lognormal", "mu": 0, "sigma": -2}},
        ["search_space.x.sigma: must be > 0 (got -2)"],
        id="sigma-negative",
    ),
    pytest.param(
        {"x": {"hp": "choice", "options": []}},
        ["search_space.x.options: choice needs a non-empty list of options"],
        id="empty-choice",
    ),
    pytest.param(
        {"x": {"hp": "choice", "options": "abc"}},
        ["search_space.x.options: choice needs a non-empty list of options"],
        id="choice-options-not-a-list",
    ),
    pytest.param(
        {"x": {"hp": "pchoice", "options": []}},
        ["search_space.x.options: pchoice needs a non-empty list of options"],
        id="empty-pchoice",
    ),
    pytest.param(
        {"x": {"hp": "pchoice", "options": [[0.5, "a"], [0.4, "b"]]}},
        ["search_space.x.options: probabilities sum to 0.9; they must sum to 1"],
        id="pchoice-pairs-sum-below-1",
    ),
    pytest.param(
        {"x": {"hp": "pchoice", "options": [{"p": 0.7, "value": "a"}, {"p": 0.7, "value": "b"}]}},
        ["search_space.x.options: probabilities sum to 1.4; they must sum to 1"],
        id="pchoice-keyed-sum-above-1",
    ),
    pytest.param(
        {"x": {"hp": "pchoice", "options": [{"p": 1.5, "value": "a"}, {"p": -0.5, "value": "b"}]}},
        [
            "search_space.x.options[0]: probability 1.5 must be in [0, 1]",
            "search_space.x.options[1]: probability -0.5 must be in [0, 1]",
        ],
        id="pchoice-probability-out-of-range",
    ),
    pytest.param(
        {"x": {"hp": "pchoice", "options": ["a", {"p": 1.0, "value": "b", "extra": 1}]}},
        [
            'search_space.x.options[0]: pchoice options are {"p": prob, "value": v} or [prob, v]',
            "search_space.x.options[1]: pchoice options are",
        ],
        id="pchoice-option-shape",
    ),
    pytest.param(
        {"x": {"hp": "randint", "low": 0.5, "high": 3}},
        ["search_space.x.low: randint bounds must be integers, got 0.5"],
        id="randint-float-low",
    ),
    pytest.param(
        {"x": {"hp": "randint", "high": 2.5}},
        ["search_space.x.high: randint bounds must be integers, got 2.5"],
        id="randint-float-high",
    ),
    pytest.param(
        {"x": {"hp": "uniformint", "low": 0, "high": 9.5}},
        ["search_space.x.high: uniformint bounds must be integers, got 9.5"],
        id="uniformint-float-high",
    ),
    pytest.param(
        {"x": {"hp": "uniform", "low": "0", "high": 1}},
        ["search_space.x.low: '0' is not a finite number"],
        id="string-bound",
    ),
    pytest.param(
        {"x": {"hp": "uniform", "low": True, "high": 2}},
        ["search_space.x.low: True is not a finite number"],
        id="bool-bound",
    ),
    pytest.param(
        {"x": {"hp": "normal", "mu": float("nan"), "sigma": 1}},
        ["search_space.x.mu: nan is not a finite number"],
        id="nan-bound",
    ),
    pytest.param(
        {"x": {"hp": "uniform", "low": 0, "high": float("inf")}},
        ["search_space.x.high: inf is not a finite number"],
        id="inf-bound",
    ),
    pytest.param(
        {"x": {1, 2}},
        ["search_space.x: value of type set is not JSON data", "use numbers, strings, booleans, null"],
        id="set-value",
    ),
    pytest.param(
        {"x": [1, _Opaque()]},
        ["search_space.x[1]: value of type _Opaque is not JSON data", "pass a hyperopt expression"],
        id="object-value",
    ),
    pytest.param(
        {"x": float("nan")},
        ["search_space.x: nan is not JSON data; use a finite number or null"],
        id="nan-value",
    ),
    pytest.param(
        {"x": {"hp": "const", "value": {"a": [float("inf")]}}},
        ["search_space.x.value.a[0]: inf is not JSON data; use a finite number or null"],
        id="inf-inside-const",
    ),
    pytest.param(
        {"x": {"hp": "choice", "options": [1, float("-inf")]}},
        ["search_space.x.options[1]: -inf is not JSON data"],
        id="inf-choice-option",
    ),
    pytest.param(
        {"x": {1: "a"}},
        ["search_space.x: key 1 is not a string; JSON objects have string keys only"],
        id="non-string-key",
    ),
    pytest.param(
        {"a": {**U01, "label": "lr"}, "b": {**U01, "label": "lr"}},
        [
            "search_space.b.label: duplicate label 'lr' (already used at search_space.a)",
            "give each hyperparameter its own label",
        ],
        id="duplicate-explicit-labels",
    ),
    pytest.param(
        {"a": {**U01, "label": "b"}, "b": U01},
        ["search_space.b: duplicate label 'b' (already used at search_space.a)", "its own label"],
        id="duplicate-default-label",
    ),
    pytest.param(
        {"x": {**U01, "label": 5}},
        ["search_space.x.label: must be a non-empty string"],
        id="non-string-label",
    ),
    pytest.param(
        {"x": {**U01, "label": ""}},
        ["search_space.x.label: must be a non-empty string"],
        id="empty-label",
    ),
    pytest.param(
        {"m": {"hp": "choice", "options": [{"lr": U01}, {"lr": {"hp": "uniform", "low": 1, "high": 0}}]}},
        ["search_space.m.options[1].lr: low must be < high"],
        id="nested-in-choice",
    ),
    pytest.param(
        {"layers": [1, {"width": {"hp": "quniform", "low": 8, "high": 64, "q": 0}}]},
        ["search_space.layers[1].width.q: must be > 0"],
        id="nested-in-list",
    ),
    pytest.param(
        {
            "p": {
                "hp": "pchoice",
                "options": [{"p": 1.0, "value": {"s": {"hp": "normal", "mu": 0, "sigma": 0}}}],
            }
        },
        ["search_space.p.options[0].value.s.sigma: must be > 0"],
        id="nested-in-pchoice",
    ),
]


@pytest.mark.parametrize(("spec", "fragments"), INVALID_SPACES)
def test_validation_error_names_path_and_fix(spec: Any, fragments: list[str]) -> None:
    with pytest.raises(SearchSpaceError) as exc:
        build_space(spec)
    message = str(exc.value)
    for fragment in fragments:
        assert fragment in message
    with pytest.raises(SearchSpaceError):
        space_facts(spec)


def test_validation_error_from_json_text() -> None:
    text = json.dumps({"m": {"hp": "choice", "options": [{"lr": U01}, {"lr": {**U01, "low": 2}}]}})
    with pytest.raises(SearchSpaceError, match=r"search_space\.m\.options\[1\]\.lr: low must be < high"):
        build_space(text)


def test_all_problems_reported_in_one_error() -> None:
    spec = {
        "a": {"hp": "gauss"},
        "b": {"hp": "uniform", "low": 2, "high": 1},
        "c": {"hp": "loguniform", "low": 0, "high": 1},
        "d": {"hp": "choice", "options": []},
        "e": float("nan"),
        "f": {"hp": "normal", "mu": 0, "sigma": 1, "extra": 1},
    }
    with pytest.raises(SearchSpaceError) as exc:
        validate_space(spec)
    lines = str(exc.value).splitlines()
    assert len(lines) == 6
    assert lines[0].startswith("search_space.a.hp: unknown distribution 'gauss'")
    assert lines[1].startswith("search_space.b: low must be < high")
    assert lines[2].startswith("search_space.c.low: loguniform bounds are in natural units")
    assert lines[3].startswith("search_space.d.options: choice needs a non-empty list")
    assert lines[4].startswith("search_space.e: nan is not JSON data")
    assert lines[5].startswith("search_space.f: unknown key(s) 'extra' for normal")


def test_valid_space_validates_without_error() -> None:
    facts = validate_space(MIXED_SPACE)
    assert facts.n_hyperparameters == 5


def test_pchoice_pair_form_bad_probability_names_option_path() -> None:
    with pytest.raises(SearchSpaceError) as exc:
        validate_space({"x": {"hp": "pchoice", "options": [[2, "a"], [0.8, "b"]]}})
    assert "search_space.x.options[0]: probability 2 must be in [0, 1]" in str(exc.value)


def test_unknown_keys_of_mixed_types_raise_search_space_error() -> None:
    with pytest.raises(SearchSpaceError, match="unknown key"):
        validate_space({"x": {"hp": "uniform", "low": 0, "high": 1, 1: 2, "foo": 3}})


# -- checks that mutation testing showed missing ---------------------------------------------------


def test_a_hyperparameter_inside_a_pchoice_option_is_labelled_by_its_path() -> None:
    spec = {
        "m": {
            "hp": "pchoice",
            "options": [
                {"p": 0.5, "value": {"c": {"hp": "uniform", "low": 0, "high": 1}}},
                {"p": 0.5, "value": 1},
            ],
        }
    }
    assert space_facts(spec).labels == ("m", "m.options[0].value.c")
    assert space_facts(build_space(spec)).labels == ("m", "m.options[0].value.c")  # the compiled labels


def test_facts_of_a_hyperopt_expression_count_every_categorical() -> None:
    facts = space_facts(
        {"a": hp.choice("a", [1, 2]), "b": hp.choice("b", [3, 4, 5]), "c": hp.uniform("c", 0, 1)}
    )
    assert (facts.n_categorical, facts.n_ordinal, facts.categorical_breadth) == (2, 1, 5)
    weighted = space_facts({"a": hp.pchoice("a", [(0.5, 1), (0.5, 2)]), "b": hp.pchoice("b", [(1.0, 3)])})
    assert (weighted.n_categorical, weighted.categorical_breadth) == (2, 3)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        pytest.param(42, "search_space: int given; use a dict of hyperparameters", id="not-a-dict"),
        pytest.param(
            {"x": {"hp": ["uniform"]}}, "search_space.x.hp: unknown distribution ['uniform']", id="hp-list"
        ),
        pytest.param(
            {"x": {"hp": "pchoice", "options": [[0.5, "a", "z"], [0.5, "b"]]}},
            "search_space.x.options[0]: pchoice options are",
            id="pchoice-triple",
        ),
    ],
)
def test_malformed_specs_are_refused_with_the_path(spec: Any, message: str) -> None:
    with pytest.raises(SearchSpaceError) as caught:
        validate_space(spec)
    assert str(caught.value).startswith(message), str(caught.value)


@pytest.mark.unit
def test_the_facts_of_a_hyperopt_expression_name_each_label_kind() -> None:
    facts = space_facts({"a": hp.uniform("a", 0, 1), "c": hp.choice("c", [1, 2])})
    assert facts.kinds == {"a": "uniform", "c": "randint"}
    assert (facts.n_ordinal, facts.n_categorical, facts.categorical_breadth) == (1, 1, 2)


@pytest.mark.unit
def test_a_non_string_key_is_reported_with_the_problems_after_it() -> None:
    with pytest.raises(SearchSpaceError) as raised:
        validate_space({1: 2, "x": {"hp": "uniform", "low": 2, "high": 1}})
    assert "key 1 is not a string" in str(raised.value)
    assert "search_space.x: low must be < high" in str(raised.value)


@pytest.mark.unit
def test_a_space_key_mlflow_refuses_as_a_param_name_is_refused_with_a_fix() -> None:
    spec = {"precision@k": {"hp": "quniform", "low": 1, "high": 10, "q": 1}, "model": {"lr/2": 0.1}}
    with pytest.raises(SearchSpaceError) as refused:
        compile_space(spec)
    message = str(refused.value)
    assert "search_space.precision@k: key 'precision@k' cannot be part of an MLflow param name" in message
    assert "rename it, e.g. 'precision_k'" in message
    compile_space(
        {"model": {"lr/2": 0.1, "depth 2": {"hp": "choice", "options": [1, 2]}}}
    )  # MLflow takes these
