"""The layers go one way: nothing under ``pipeline/`` imports ``jobs`` or ``submitit``, and the
modules of ``pipeline/distributed/`` import one another without a circle.

Every module is parsed (``ast``), so imports inside functions count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("jobs", "submitit")


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
            roots.add(str(node.args[0].value).split(".")[0])
    return roots


def test_pipeline_imports_neither_jobs_nor_submitit():
    files = sorted((ROOT / "pipeline").rglob("*.py"))
    assert len(files) > 50
    bad = {str(f.relative_to(ROOT)): sorted(imported_roots(f) & set(FORBIDDEN)) for f in files}
    bad = {k: v for k, v in bad.items() if v}
    assert not bad, f"pipeline/ must not import {FORBIDDEN}: {bad}"


def test_the_check_sees_imports_inside_functions(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def g():\n    from jobs.profiles import load_profile\n    import submitit.helpers\n")
    assert imported_roots(f) >= {"jobs", "submitit"}


DISTRIBUTED = ROOT / "pipeline" / "distributed"


def sibling_imports(path: Path, package: str = "pipeline.distributed") -> set[str]:
    """The modules of ``path``'s own package that ``path`` imports, at any depth of the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 1:
                base = package + ("." + node.module if node.module else "")
            elif node.level == 0 and node.module:
                base = node.module
            else:
                continue
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)  # from . import launch
    prefix = package + "."
    return {n[len(prefix):].split(".")[0] for n in names if n.startswith(prefix)} - {path.stem}


def import_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle ``[a, b, ..., a]`` in ``graph`` (module -> modules it imports), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return path[path.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_distributed_modules_import_one_way():
    files = sorted(f for f in DISTRIBUTED.glob("*.py") if f.name != "__init__.py")
    assert {"launch", "failure", "watchdog"} <= {f.stem for f in files}
    graph = {f.stem: sibling_imports(f) for f in files}
    mutual = sorted((a, b) for a in graph for b in graph[a] if a < b and a in graph.get(b, set()))
    assert not mutual, f"pipeline/distributed/ modules that import each other: {mutual}"
    assert import_cycle(graph) is None, f"import circle in pipeline/distributed/: {import_cycle(graph)}"
    assert "failure" not in graph["launch"] and "launch" in graph["failure"]


def test_the_circle_check_sees_imports_inside_functions(tmp_path):
    pkg = tmp_path / "distributed"
    pkg.mkdir()
    (pkg / "a.py").write_text("from .b import x\n")
    (pkg / "b.py").write_text("def f():\n    from . import a\n")
    (pkg / "c.py").write_text("import pipeline.distributed.a\n")
    graph = {f.stem: sibling_imports(f) for f in sorted(pkg.glob("*.py"))}
    assert graph == {"a": {"b"}, "b": {"a"}, "c": {"a"}}
    assert import_cycle(graph) == ["a", "b", "a"]
    assert import_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_diffda_command_has_the_slurm_commands():
    from jobs.cli import build_parser

    text = build_parser().format_help()
    for name in ("run", "submit", "campaign", "status", "prepare", "run-window"):
        assert name in text
