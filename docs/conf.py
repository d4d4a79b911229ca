"""Sphinx configuration of the provider's documentation (``make docs``: strict, warnings are errors)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(HERE.parent))
# autodoc imports the package and its Airflow adapters: no Spark is started, and an Airflow home of
# its own keeps the build off any real deployment's configuration.
os.environ.setdefault("AIRFLOW_HOME", str(HERE / "_build" / "airflow"))

from airflow_provider_sparktune import __version__  # noqa: E402

project = "airflow-provider-sparktune"
author = "airflow-provider-sparktune contributors"
copyright = "the airflow-provider-sparktune contributors, Apache-2.0"
version = release = __version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sparktune_docs",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "_ext", "Thumbs.db", ".DS_Store"]

# Markdown: `[text](page.md#a-heading)` links resolve to heading anchors, and a broken one is a warning.
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"show-inheritance": True}

# Names outside this package have no inventory to link to (the build runs offline, without intersphinx):
# nitpicky mode checks every reference into airflow_provider_sparktune and leaves these alone.
nitpick_ignore_regex = [
    (r"py:.*", r"(airflow|pyspark|hyperopt|mlflow|pandas|pyarrow|numpy|fsspec|sklearn|optuna)(\..*)?"),
    (r"py:.*", r"(typing|collections|collections\.abc|concurrent|threading|pathlib|datetime|logging|os)\..*"),
    (r"py:.*", r"(Any|Callable|Mapping|Sequence|Iterable|Iterator|Literal|Path|Context|Self)"),
    (r"py:.*", r"(Asset|BaseOperator|PokeReturnValue|TaskInstanceKey)"),  # Airflow's, named unqualified
    (r"py:.*", r"(int|float|str|bool|dict|list|tuple|set|object|bytes|type|None|Exception|RuntimeError)"),
]
# The handle between a run and whoever cancels it: internal, named in signatures only.
nitpick_ignore = [("py:class", "airflow_provider_sparktune.tuning.run.RunControl")]

html_theme = "furo"
html_title = f"airflow-provider-sparktune {release}"
html_static_path: list[str] = []
