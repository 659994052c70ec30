"""The benchmarks' shared writer of docs/benchmarks.md: each benchmark owns one ``## `` section
and replaces it on every run (appended when absent), leaving the others alone."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def write_section(title: str, text: str, path: Path = DOC) -> None:
    """Replace the section that starts with ``title`` by ``text`` (which starts with it too)."""
    doc = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(title) + r".*?(?=\n## |\Z)", re.S)
    doc = pattern.sub("", doc).rstrip() + "\n\n" + text
    path.write_text(doc.rstrip() + "\n")
