"""The documentation's own promises: one argument reference per operator, examples that exist, a short README.

The site itself is built strictly by ``make docs`` (CI); these checks need no Sphinx.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS / "_ext"))

from argument_reference import arguments, docstring_params, problems, signature_params  # noqa: E402

pytestmark = pytest.mark.unit

OPERATORS = [
    "airflow_provider_sparktune.operators.hyperopt_spark.HyperoptSparkOperator",
    "airflow_provider_sparktune.operators.registry_gate.ModelRegistryGateOperator",
    "airflow_provider_sparktune.sensors.staged_data.StagedDataSensor",
]


def load(path: str) -> type:
    from importlib import import_module

    module, _, name = path.rpartition(".")
    return getattr(import_module(module), name)


@pytest.mark.parametrize("path", OPERATORS)
def test_the_reference_covers_every_argument_once(path: str) -> None:
    cls = load(path)
    assert problems(cls) == []
    rows = arguments(cls)
    assert [row.name for row in rows] == [p.name for p in signature_params(cls)]
    assert all(row.meaning for row in rows)
    assert set(docstring_params(cls)) == {row.name for row in rows}


@pytest.mark.parametrize("path", OPERATORS)
def test_every_argument_reference_is_on_a_page(path: str) -> None:
    pages = "".join(page.read_text() for page in DOCS.glob("*.md"))
    assert "{argument-reference} " + path in pages


def test_templated_column_follows_the_tuning_spec() -> None:
    from airflow_provider_sparktune.operators.hyperopt_spark import HyperoptSparkOperator
    from airflow_provider_sparktune.tuning.spec import setting_names, templated_settings

    rows = {row.name: row for row in arguments(HyperoptSparkOperator)}
    for name in setting_names():
        assert rows[name].templated == (name in templated_settings()), name
    assert rows["search_space"].templated and not rows["objective"].templated


def test_a_missing_param_entry_is_named() -> None:
    class Op:
        """Does things.

        :param documented: yes.
        :param gone: an argument that no longer exists.
        """

        def __init__(self, *, documented: int = 1, undocumented: str = "x", **kwargs: object) -> None: ...

    assert problems(Op) == [
        "Op: argument 'undocumented' has no ':param undocumented:' in the docstring",
        "Op: ':param gone:' documents no argument of __init__",
    ]
    rows = arguments(Op)
    assert [(r.name, r.default, r.annotation) for r in rows] == [
        ("documented", "1", "int"),
        ("undocumented", "'x'", "str"),
    ]


def markers(text: str, kind: str) -> set[str]:
    return set(re.findall(rf"\[{kind} (\w+)\]", text))


def test_every_example_marker_is_paired_and_shown() -> None:
    shown = set()
    for page in DOCS.glob("*.md"):
        shown |= set(re.findall(r':start-after: "\[START (\w+)\]"', page.read_text()))
    defined = set()
    for example in (ROOT / "example_dags").glob("*.py"):
        text = example.read_text()
        assert markers(text, "START") == markers(text, "END"), example.name
        defined |= markers(text, "START")
    assert shown == defined


def test_the_readme_is_a_front_page() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) < 10 * 1024
    assert "make demo " in readme and "make test " in readme
    for target in re.findall(r"\]\(((?:docs/)?[\w./-]+\.md)(?:#[\w-]+)?\)", readme):
        assert (ROOT / target).is_file(), target


def test_every_page_is_in_the_toctree() -> None:
    index = (DOCS / "index.md").read_text()
    listed = set(re.findall(r"^([\w-]+)$", index, flags=re.M))
    pages = {page.stem for page in DOCS.glob("*.md")} - {"index"}
    assert pages <= listed
