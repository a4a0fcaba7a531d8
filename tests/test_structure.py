"""The package's shape: one import name, arrows pointing one way, no cycles.

Checked on the source (ast) and on the installed package, so a change that makes
the core import a plug-in, or that installs a second top-level name, fails here.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "evolopt"
PLUGIN_PACKAGES = ("evolopt.strategies", "evolopt.task_families")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every module an import statement in ``path`` names, at any depth (lazy imports too)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out |= {f"{node.module}.{alias.name}" for alias in node.names}
    return out


def _core_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in CORE.rglob("*.py")}
    # A module's ancestor packages are initialised before it whatever it imports, so an
    # import naming one (``from evolopt.architectures import features``) is no edge to it.
    return {
        name: {m for m in _imports(path) if m in modules and m != name and not name.startswith(m + ".")}
        for name, path in modules.items()
    }


def test_installed_package_has_one_import_name(tmp_path):
    code = (
        "import importlib.util as u, evolopt.strategies, evolopt.task_families;"
        "print(u.find_spec('strategies'), u.find_spec('task_families'),"
        " evolopt.strategies.EvosaxStrategy.__name__, 'pes' in __import__('evolopt.registry').registry.STRATEGIES)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["None", "None", "EvosaxStrategy", "True"]


def test_core_never_imports_the_plugin_packages():
    offenders = {
        name: sorted(m for m in deps if m.startswith(PLUGIN_PACKAGES))
        for name, deps in ((_module_name(p), _imports(p)) for p in CORE.rglob("*.py"))
    }
    assert {k: v for k, v in offenders.items() if v} == {}
    for path in CORE.rglob("*.py"):
        assert not {m for m in _imports(path) if m.split(".")[0] in ("strategies", "task_families")}, path


def test_core_has_no_import_cycles():
    graph = _core_graph()
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            assert state.get(dep) != 1, "import cycle: " + " -> ".join(stack + [node, dep])
            if dep not in state:
                visit(dep, stack + [node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])


def test_export_is_a_leaf_needing_only_jax_numpy_optax():
    third_party = {m.split(".")[0] for m in _imports(CORE / "export.py")} - set(sys.stdlib_module_names)
    assert third_party <= {"jax", "numpy", "optax", "evolopt"}
    evolopt_deps = {m for m in _imports(CORE / "export.py") if m.startswith("evolopt")}
    assert all(m.startswith(("evolopt.architectures", "evolopt.registry")) for m in evolopt_deps), evolopt_deps


def test_builtins_load_through_the_plugin_entry_points():
    from importlib.metadata import entry_points

    values = {ep.value for ep in entry_points(group="evolopt.plugins")}
    assert {"evolopt.architectures", "evolopt.strategies", "evolopt.task_families"} <= values
