"""Sphinx extension: tables generated from the code, so a page cannot drift from what runs.

``argument-reference``: an operator's argument table from its signature and docstring. Usage (MyST)::

    ```{argument-reference} airflow_provider_sparktune.operators.hyperopt_spark.HyperoptSparkOperator
    ```

``spark-conf-allow-list``: the Spark conf keys a rendered template may set, each with its kind of
value and why it is data, from ``operators/spark_conf.py``.

The table is parsed as reStructuredText, as docstrings are. An argument without a ``:param`` entry (or an entry without an argument) is a warning, which
``make docs`` (``-W``) turns into a failed build.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from argument_reference import arguments, problems
from docutils import nodes
from docutils.parsers.rst import Parser
from docutils.utils import new_document
from sphinx.application import Sphinx
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)


def _load(path: str) -> type:
    module, _, name = path.rpartition(".")
    return getattr(import_module(module), name)


def _cell(text: str) -> list[str]:
    return [text] if text else ["\\-"]


class ArgumentReference(SphinxDirective):
    """A list-table: argument, type, default, templated, meaning."""

    required_arguments = 1
    has_content = False

    def run(self) -> list[nodes.Node]:
        cls = _load(self.arguments[0])
        for problem in problems(cls):
            logger.warning(problem, location=self.get_location())
        lines = [
            ".. list-table::",
            "   :header-rows: 1",
            "   :widths: 18 18 14 8 42",
            "",
            "   * - argument",
            "     - type",
            "     - default",
            "     - templated",
            "     - meaning",
        ]
        for arg in arguments(cls):
            lines.append(f"   * - ``{arg.name}``")
            lines.append(f"     - ``{arg.annotation}``" if arg.annotation else "     - \\-")
            lines.append("     - required" if arg.default == "required" else f"     - ``{arg.default}``")
            lines.append(f"     - {'yes' if arg.templated else 'no'}")
            lines.extend(
                f"     - {line}" if i == 0 else f"       {line}" for i, line in enumerate(_cell(arg.meaning))
            )
        # The docstrings are reStructuredText, whichever parser (MyST or rST) reads the page.
        return [_parsed(self.state.document, lines, "argument-reference")]


def _parsed(document: Any, lines: list[str], css_class: str) -> nodes.container:
    table = new_document(document["source"], document.settings)
    table.reporter = document.reporter
    Parser().parse("\n".join(lines), table)
    container = nodes.container(classes=[css_class])
    container.extend(table.children)
    return container


class SparkConfAllowList(SphinxDirective):
    """A list-table: key, value kind (with an example), why a template may set it."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        from airflow_provider_sparktune.operators.spark_conf import TEMPLATABLE_SPARK_CONF, VALUE_KINDS

        lines = [
            ".. list-table::",
            "   :header-rows: 1",
            "   :widths: 38 20 42",
            "",
            "   * - key",
            "     - value",
            "     - why it is data",
        ]
        for key, kind, reason in TEMPLATABLE_SPARK_CONF:
            _, name, _, example = VALUE_KINDS[kind]
            lines += [f"   * - ``{key}``", f"     - {name} (``{example}``)", f"     - {reason}"]
        return [_parsed(self.state.document, lines, "spark-conf-allow-list")]


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("argument-reference", ArgumentReference)
    app.add_directive("spark-conf-allow-list", SparkConfAllowList)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
