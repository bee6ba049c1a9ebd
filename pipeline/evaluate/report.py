"""``docs/benchmarks.md``: each benchmark owns one section between markers, replaced on rerun."""

from __future__ import annotations

import re
from pathlib import Path

HEADER = "# Benchmarks\n\nEvery table below was written by the command shown above it (`diffda bench ...`).\n"


def write_section(path: str | Path, name: str, body: str) -> None:
    """Replace (or append) the section ``name`` of the markdown file at ``path``."""
    path = Path(path)
    text = path.read_text() if path.exists() else HEADER
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)
