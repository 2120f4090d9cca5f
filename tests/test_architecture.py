"""The package's layout rules, checked on the source (``ast``, nothing is imported).

- No import cycle in ``posefeed``: the graph has an edge ``a -> b`` for every ``import`` of
  module ``b`` in module ``a``, at the top or inside a function (a lazy import that closes
  a cycle only hides it), plus ``a -> p`` for each package ``p`` above ``b`` that is not
  above ``a`` (importing ``p.b`` runs ``p/__init__.py`` first). Imports under
  ``if TYPE_CHECKING:`` never run and are left out.
- Every lazy import (one inside a function) says why, in a comment on its line
  (``# noqa: PLC0415 - why``), on the run of import lines it stands in, or on the comment
  line right above that run (one reason for a block).

``python tests/test_architecture.py`` lists the lazy imports with their reasons, counts them
and prints any cycle.
"""
from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "posefeed"


@dataclass(frozen=True)
class Import:
    source: str          # importing module, e.g. "posefeed.datasets.table"
    target: str          # imported module, e.g. "posefeed.datasets.dlc" or "torch"
    line: int
    lazy: bool           # inside a function body
    reason: str          # for a lazy import, the comment that says why ("" when none)


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


_MARKERS = re.compile(r"noqa(:\s*[A-Z]+[0-9]+(,\s*[A-Z]+[0-9]+)*)?|type:\s*ignore(\[[^]]*\])?")


def _reason(comment: str) -> str:
    """The words of a ``#`` comment once lint markers (``noqa: X``, ``type: ignore``) and
    separators are taken out; "" when nothing is left."""
    text = _MARKERS.sub("", comment.lstrip("#")).strip(" -:\t")
    return text if re.search(r"[A-Za-z]{3}", text) else ""


def _comment(line: str) -> str:
    i = line.find("#")
    return line[i:] if i >= 0 else ""


def _block_reason(lines: list[str], body: list[ast.AST], node: ast.AST) -> str:
    """A lazy import's reason: a comment on the lines of the run of consecutive import
    statements it stands in, else on the comment lines right above that run."""
    i = next(j for j, n in enumerate(body) if n is node)
    lo = hi = i
    while lo > 0 and isinstance(body[lo - 1], (ast.Import, ast.ImportFrom)):
        lo -= 1
    while hi + 1 < len(body) and isinstance(body[hi + 1], (ast.Import, ast.ImportFrom)):
        hi += 1
    first, last = body[lo], body[hi]
    for n in range(first.lineno, (last.end_lineno or last.lineno) + 1):
        why = _reason(_comment(lines[n - 1]))
        if why:
            return why
    n = first.lineno - 1
    while n >= 1 and lines[n - 1].strip().startswith("#"):
        why = _reason(lines[n - 1].strip())
        if why:
            return why
        n -= 1
    return ""


def package_imports(root: Path = PACKAGE) -> list[Import]:
    """Every module each import statement in ``root``'s package imports (one `Import` per
    statement and module; ``posefeed`` targets resolved to the deepest existing module)."""
    files = sorted(root.rglob("*.py"))
    modules = {module_name(f, root) for f in files}
    found: list[Import] = []
    for f in files:
        src = f.read_text(encoding="utf-8")
        lines = src.splitlines()
        name = module_name(f, root)
        is_pkg = f.name == "__init__.py"

        def visit(node: ast.AST, lazy: bool) -> None:
            for _, value in ast.iter_fields(node):
                children = value if isinstance(value, list) else [value]
                for child in children:
                    if not isinstance(child, ast.AST):
                        continue
                    if isinstance(child, ast.If) and _is_type_checking(child):
                        for other in child.orelse:
                            visit(other, lazy)
                        continue
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
                    if targets:
                        why = _block_reason(lines, children, child) if lazy else ""
                        for t in dict.fromkeys(targets):
                            if t.split(".")[0] == root.name:
                                while t not in modules and "." in t:
                                    t = t.rsplit(".", 1)[0]
                            found.append(Import(name, t, child.lineno, lazy, why))
                    visit(child, lazy or isinstance(child, (ast.FunctionDef,
                                                            ast.AsyncFunctionDef, ast.Lambda)))

        visit(ast.parse(src, filename=str(f)), False)
    return found


def internal(imports: list[Import], root: Path = PACKAGE) -> list[Import]:
    """The imports of the package's own modules."""
    return [i for i in imports if i.target.split(".")[0] == root.name]


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


def unexplained_lazy(imports: list[Import]) -> list[Import]:
    return [i for i in imports if i.lazy and not i.reason]


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
    assert find_cycles(import_graph(internal(imports, pkg))) == [["posefeed.sub.a",
                                                                  "posefeed.sub.b"]]
    assert [(i.target, i.reason) for i in imports if i.lazy] == [("posefeed.sub.b", "planted")]
    (pkg / "sub" / "a.py").write_text("def f():\n    from posefeed.sub import b  # noqa: "
                                      "PLC0415\n\n    import os\n")
    assert [i.target for i in unexplained_lazy(package_imports(pkg))] == ["posefeed.sub.b",
                                                                          "os"]
    (pkg / "sub" / "a.py").write_text("def f():\n    # the reason, once for the block\n"
                                      "    import os\n    import re  # noqa: PLC0415\n")
    assert unexplained_lazy(package_imports(pkg)) == []
    (pkg / "sub" / "b.py").write_text("B = 1\n")
    assert find_cycles(import_graph(internal(package_imports(pkg), pkg))) == []


def test_posefeed_has_no_import_cycle():
    assert find_cycles(import_graph(internal(package_imports()))) == []


def test_every_lazy_import_says_why():
    missing = unexplained_lazy(package_imports())
    assert not missing, "\n".join(f"{i.source}:{i.line}: import {i.target}" for i in missing)


def test_no_test_module_imports_another():
    """Shared test code lives in tests/oracles.py and tests/helpers.py, not in test_*.py."""
    tests = Path(__file__).resolve().parent
    names = {f.stem for f in tests.glob("test_*.py")}
    found = []
    for f in sorted(tests.glob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            found += [f"{f.name}:{node.lineno}: {m}" for m in mods if m.split(".")[0] in names]
    assert not found, "\n".join(found)


if __name__ == "__main__":
    imps = package_imports()
    stmts = {(i.source, i.line): i for i in imps if i.lazy}
    bare = {(i.source, i.line) for i in unexplained_lazy(imps)}
    for (src, line), i in sorted(stmts.items()):
        print(f"{src}:{line}: import {i.target}  # {i.reason or '(no reason)'}")
    ours = {k for k, i in stmts.items() if i.target.startswith("posefeed")}
    print(f"lazy import statements: {len(stmts)} ({len(ours)} of posefeed modules), "
          f"{len(bare)} without a reason")
    print("cycles:", find_cycles(import_graph(internal(imps))) or "none")
