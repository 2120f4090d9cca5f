"""The repository's own docs are complete for someone who clones it: no page sends the reader
to files outside the repository (the developers' ``../shared`` folder; naming the public
datasets a benchmark ran on, ``../shared/datasets/...``, is a record, not a reference)."""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def test_docs_do_not_point_outside_the_repository():
    found = [f"{p.relative_to(REPO)}:{i}: {line.strip()}" for p in PAGES
             for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
             if re.search(r"\.\./shared/(?!datasets/)|DESIGN\.md", line)]
    assert not found, "\n".join(found)


def test_every_docs_page_the_readme_names_exists():
    names = re.findall(r"`(docs/[\w.-]+\.md)`", (REPO / "README.md").read_text(encoding="utf-8"))
    assert "docs/design.md" in names
    assert [n for n in names if not (REPO / n).is_file()] == []
