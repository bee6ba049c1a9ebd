"""The layers go one way: nothing under ``pipeline/`` imports ``jobs`` or ``submitit``.

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


def test_diffda_command_has_the_slurm_commands():
    from jobs.cli import build_parser

    text = build_parser().format_help()
    for name in ("run", "submit", "campaign", "status", "prepare", "run-window"):
        assert name in text
