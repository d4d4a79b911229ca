"""The package's shape: an Airflow-free core (tuning/, data/, tracking/) under thin Airflow adapters.

Layers, lowest first; a module imports its own layer and those below it, never one above:

0. plain rules and facts: ``exceptions``, ``values``, ``redaction``, ``session_kind``, ``spark_version``
1. ``data/`` (staging the dataset) and ``tracking/`` (MLflow)
2. ``tuning/`` (the run, the dispatchers) and ``search/`` (the searchers behind ``algo``), which
   share the trial records and so one layer
3. the Airflow adapters: ``hooks/``, ``operators/``, ``sensors/``, ``triggers/``, ``links``,
   ``get_provider_info``

The package root re-exports the public names on first use, by name, and imports nothing above 0.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

PACKAGE = Path(__file__).resolve().parents[1] / "airflow_provider_sparktune"
ADAPTERS = ("hooks", "operators", "sensors", "triggers", "links", "get_provider_info")
LAYERS = {"data": 1, "tracking": 1, "tuning": 2, "search": 2, **dict.fromkeys(ADAPTERS, 3)}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def type_checking_only(tree: ast.AST) -> set[ast.AST]:
    """The nodes inside ``if TYPE_CHECKING:`` blocks: annotations only, never run."""
    inside: set[ast.AST] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for child in node.body:
                inside.update(ast.walk(child))
    return inside


def import_graph(*, runtime_only: bool = False) -> dict[str, set[str]]:
    """Every import of the package's own modules, at module level, in functions and (unless
    ``runtime_only``) for type checking."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        tree = ast.parse(path.read_text())
        skipped = type_checking_only(tree) if runtime_only else set()
        for node in ast.walk(tree):
            if node in skipped:
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            deps.update(t for t in targets if t in modules and t != name)
        graph[name] = deps
    return graph


def is_adapter(module: str) -> bool:
    parts = module.split(".")
    return len(parts) > 1 and parts[1] in ADAPTERS


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.get(parts[1], 0) if len(parts) > 1 else 0


def test_no_import_cycle() -> None:
    graph = import_graph()
    state: dict[str, str] = {}
    path: list[str] = []
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        state[module] = "open"
        path.append(module)
        for dep in sorted(graph[module]):
            if state.get(dep) == "open":
                cycles.append([*path[path.index(dep) :], dep])
            elif dep not in state:
                visit(dep)
        path.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert cycles == []


def test_the_core_never_imports_an_adapter() -> None:
    """Data flows one way: adapters use the core, the core knows nothing of them."""
    graph = import_graph()
    upward = {
        (module, dep)
        for module, deps in graph.items()
        if not is_adapter(module)
        for dep in deps
        if is_adapter(dep)
    }
    assert upward == set()


def test_no_module_imports_a_higher_layer() -> None:
    """What runs never reaches up: a lower layer that needs a name from a higher one gets it moved down."""
    upward = sorted(
        f"{module} (layer {layer(module)}) imports {dep} (layer {layer(dep)})"
        for module, deps in import_graph(runtime_only=True).items()
        for dep in deps
        if layer(dep) > layer(module)
    )
    assert upward == []


def test_the_layers_cover_every_package() -> None:
    """A new sub-package gets a layer of its own choosing, not layer 0 by accident."""
    packages = {path.name for path in PACKAGE.iterdir() if (path / "__init__.py").exists()}
    assert packages <= set(LAYERS)


def test_the_core_runs_without_importing_airflow() -> None:
    """What an executor or a notebook imports pulls in no Airflow, directly or through a dependency."""
    code = (
        "import sys\n"
        "import airflow_provider_sparktune\n"
        "from airflow_provider_sparktune import run_tuning, TuningSession, build_space, execute_run\n"
        "import airflow_provider_sparktune.tuning.dispatch.resident, airflow_provider_sparktune.tracking.summary\n"
        "import airflow_provider_sparktune.data.cache, airflow_provider_sparktune.tracking.history\n"
        "print(sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_public_names_are_the_root_package_s() -> None:
    import airflow_provider_sparktune
    from airflow_provider_sparktune import TuningSession as root_session
    from airflow_provider_sparktune import build_space as root_build_space
    from airflow_provider_sparktune import execute_run as root_execute_run
    from airflow_provider_sparktune import run_tuning as root_run_tuning
    from airflow_provider_sparktune.tuning.run import execute_run
    from airflow_provider_sparktune.tuning.session import TuningSession, run_tuning
    from airflow_provider_sparktune.tuning.space import build_space

    assert root_run_tuning is run_tuning
    assert root_build_space is build_space
    assert root_execute_run is execute_run
    assert root_session is TuningSession
    for name in airflow_provider_sparktune.__all__:
        assert getattr(airflow_provider_sparktune, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        _ = airflow_provider_sparktune.nothing_here
