"""The package's layers, checked from the source: imports point down only, no module
imports itself back through others, and the core never imports a feature module.

Counted: the imports a module runs when it is imported.  Not counted: imports under
``if TYPE_CHECKING:`` (annotations only) and imports inside functions (deliberately lazy,
e.g. the ``xmppd`` command importing a subcommand's dependencies when it runs).
"""

from __future__ import annotations

import ast
from pathlib import Path

import xmppd

ROOT = Path(xmppd.__file__).parent

#: Higher imports lower (or the same rank when no cycle results).
RANK = {
    "_impl": 0, "eager": 0, "randompool": 0, "secretfile": 0, "_speedups": 0, "jid": 1, "xml": 2, "storage": 2,
    "transport": 3, "c2s": 4, "web": 4, "s2s": 4, "component": 4,
    "core": 5, "modules": 6, "cluster": 6,
    "control": 7, "server": 7, "preflight": 7, "configref": 7, "certcheck": 7, "reload": 7,
    "drain": 7,
    "cli": 8, "__init__": 0,
    "logs": 0, "metrics": 0,
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    name = ".".join(("xmppd", *parts))
    return name.removesuffix(".__init__")


def _runtime_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip: set[int] = set()
    for node in ast.walk(tree):
        lazy = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        if lazy or (isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)):
            skip.update(id(n) for n in ast.walk(node))
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "xmppd":
                out.update(f"xmppd.{a.name}" for a in node.names)
            elif node.module.startswith("xmppd."):
                out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("xmppd."))
    return out


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _runtime_imports(p) for p in ROOT.rglob("*.py")}


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_top_level_name_has_a_rank():
    assert {_top(m) for m in _graph()} <= set(RANK)


def test_imports_point_down():
    wrong = [
        f"{m} imports {d}"
        for m, deps in _graph().items()
        for d in deps
        if RANK[_top(m)] < RANK.get(_top(d), 0)
    ]
    assert wrong == []


def test_the_core_imports_no_feature_module():
    assert [m for m, deps in _graph().items()
            if _top(m) == "core" and any(_top(d) == "modules" for d in deps)] == []


def test_no_import_cycles():
    graph = _graph()
    # Resolve "xmppd.pkg.mod" imports to the modules that exist (a package import means
    # its __init__).
    edges = {m: {d for d in deps if d in graph} for m, deps in graph.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in edges[node]:
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [])
    assert cycles == []
