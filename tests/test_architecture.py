"""The package's shape: an Airflow-free core (tuning/, data/, tracking/) under thin Airflow adapters."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

PACKAGE = Path(__file__).resolve().parents[1] / "airflow_provider_sparktune"
ADAPTERS = ("hooks", "operators", "sensors", "triggers", "links", "get_provider_info")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Every import of the package's own modules, at module level, in functions or for type checking."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
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


def test_the_core_runs_without_importing_airflow() -> None:
    """What an executor or a notebook imports pulls in no Airflow, directly or through a dependency."""
    code = (
        "import sys\n"
        "import airflow_provider_sparktune, airflow_provider_sparktune.engine, airflow_provider_sparktune.space\n"
        "from airflow_provider_sparktune import run_tuning, TuningSession\n"
        "import airflow_provider_sparktune.tuning.dispatch.resident, airflow_provider_sparktune.tracking.summary\n"
        "import airflow_provider_sparktune.data.cache, airflow_provider_sparktune.tracking.history\n"
        "print(sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_documented_import_paths_keep_working() -> None:
    from airflow_provider_sparktune import TuningSession as root_session
    from airflow_provider_sparktune import run_tuning as root_run_tuning
    from airflow_provider_sparktune.engine import run_tuning
    from airflow_provider_sparktune.space import build_space
    from airflow_provider_sparktune.tuning.session import TuningSession
    from airflow_provider_sparktune.tuning.session import run_tuning as core_run_tuning
    from airflow_provider_sparktune.tuning.space import build_space as core_build_space

    assert run_tuning is core_run_tuning is root_run_tuning
    assert build_space is core_build_space
    assert root_session is TuningSession
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        import airflow_provider_sparktune

        _ = airflow_provider_sparktune.nothing_here
