"""The package's layout rules, checked on the source (``ast``, nothing is imported).

- No import cycle in ``posefeed``: the graph has an edge ``a -> b`` for every ``import`` of
  module ``b`` in module ``a``, at the top or inside a function (a lazy import that closes
  a cycle only hides it), plus ``a -> p`` for each package ``p`` above ``b`` that is not
  above ``a`` (importing ``p.b`` runs ``p/__init__.py`` first). Imports under
  ``if TYPE_CHECKING:`` never run and are left out.
- Every lazy import (one inside a function) says why on its line: ``# noqa: PLC0415 - why``
  (or a ``#`` comment with words after the noqa code).

``python tests/test_architecture.py`` prints the lazy imports, their count and any cycle.
"""
from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "posefeed"


@dataclass(frozen=True)
class Import:
    source: str          # importing module, e.g. "posefeed.datasets.table"
    target: str          # imported module, e.g. "posefeed.datasets.dlc"
    line: int
    lazy: bool           # inside a function body
    text: str            # the source line


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def package_imports(root: Path = PACKAGE) -> list[Import]:
    """Every import of a module of ``root``'s package made inside that package."""
    files = sorted(root.rglob("*.py"))
    modules = {module_name(f, root) for f in files}
    found: list[Import] = []
    for f in files:
        src = f.read_text(encoding="utf-8")
        lines = src.splitlines()
        name = module_name(f, root)
        is_pkg = f.name == "__init__.py"

        def visit(node: ast.AST, lazy: bool) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.If) and _is_type_checking(child):
                    for other in child.orelse:
                        visit(other, lazy)
                    continue
                inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                   ast.Lambda))
                targets: list[str] = []
                if isinstance(child, ast.Import):
                    targets = [a.name for a in child.names]
                elif isinstance(child, ast.ImportFrom):
                    base = child.module or ""
                    if child.level:
                        pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                        pkg = pkg[:len(pkg) - child.level + 1]
                        base = ".".join(pkg + ([base] if base else []))
                    for a in child.names:
                        sub = f"{base}.{a.name}"
                        targets.append(sub if sub in modules else base)
                for t in targets:
                    if t.split(".")[0] == root.name:
                        while t not in modules and "." in t:
                            t = t.rsplit(".", 1)[0]
                        found.append(Import(name, t, child.lineno, lazy,
                                            lines[child.lineno - 1].strip()))
                visit(child, inner)

        visit(ast.parse(src, filename=str(f)), False)
    return found


def import_graph(imports: list[Import]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for imp in imports:
        edges = graph.setdefault(imp.source, set())
        parts = imp.target.split(".")
        above_source = {".".join(imp.source.split(".")[:i])
                        for i in range(1, imp.source.count(".") + 2)}
        for i in range(1, len(parts) + 1):
            mod = ".".join(parts[:i])
            if mod not in above_source and mod != imp.source:
                edges.add(mod)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


REASON = re.compile(r"#.*\bnoqa: PLC0415\b\s*[-:–]\s*\w+|#(?!.*noqa).*\w{3,}")


def unexplained_lazy(imports: list[Import]) -> list[Import]:
    return [i for i in imports if i.lazy and not REASON.search(i.text)]


def lazy_imports_of_anything(root: Path = PACKAGE) -> int:
    """How many import statements sit inside a function (any module, not only posefeed's)."""
    n = 0
    for f in root.rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n += sum(isinstance(c, (ast.Import, ast.ImportFrom)) for c in ast.walk(node)
                         if c is not node)
    return n


def test_graph_finds_a_planted_cycle(tmp_path):
    pkg = tmp_path / "posefeed"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from posefeed.sub.b import B\n")
    (pkg / "sub" / "a.py").write_text("def f():\n    from posefeed.sub import b  # noqa: "
                                      "PLC0415 - planted\n")
    (pkg / "sub" / "b.py").write_text("from typing import TYPE_CHECKING\n"
                                      "from posefeed.sub.a import f\nB = 1\n"
                                      "if TYPE_CHECKING:\n    from posefeed import c\n")
    (pkg / "c.py").write_text("from posefeed.sub.a import f\n")
    imports = package_imports(pkg)
    assert find_cycles(import_graph(imports)) == [["posefeed.sub.a", "posefeed.sub.b"]]
    assert [i.target for i in imports if i.lazy] == ["posefeed.sub.b"]
    assert unexplained_lazy(imports) == []
    (pkg / "sub" / "a.py").write_text("def f():\n    from posefeed.sub import b  # noqa: "
                                      "PLC0415\n")
    assert len(unexplained_lazy(package_imports(pkg))) == 1


@pytest.mark.xfail(strict=True, reason="bench.harness <-> bench.runners: split next (issue 13)")
def test_posefeed_has_no_import_cycle():
    assert find_cycles(import_graph(package_imports())) == []


@pytest.mark.xfail(strict=True, reason="48 lazy imports without a reason yet (issue 13)")
def test_every_lazy_import_says_why():
    missing = unexplained_lazy(package_imports())
    assert not missing, "\n".join(f"{i.source}:{i.line}: {i.text}" for i in missing)


if __name__ == "__main__":
    imps = package_imports()
    lazy = list({(i.source, i.line): i for i in imps if i.lazy}.values())
    for i in lazy:
        print(f"{i.source}:{i.line}: {i.text}")
    bare = {(i.source, i.line) for i in unexplained_lazy(imps)}
    print(f"lazy import statements of posefeed modules: {len(lazy)} ({len(bare)} without a "
          f"reason); lazy import statements of any module: {lazy_imports_of_anything()}")
    print("cycles:", find_cycles(import_graph(imps)) or "none")
