"""The package's modules import each other without cycles (lazy imports inside functions
included): a module's dependencies can be read top-down."""

import ast
from pathlib import Path

ROOT = Path(__file__).parent.parent


def module_names() -> dict[str, Path]:
    names = {}
    for package, folder in (("tyllm", "tyllm"), ("tyllm.backends", "backends")):
        for path in (ROOT / folder).rglob("*.py"):
            name = ".".join((package, *path.relative_to(ROOT / folder).with_suffix("").parts))
            names[name.removesuffix(".__init__")] = path
    return names


def imports_of(path: Path, names: dict) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in names else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name in names}


def cycle_from(start: str, graph: dict) -> list[str] | None:
    """A path start -> ... -> start, if there is one (depth-first)."""
    stack, seen = [(start, [start])], set()
    while stack:
        node, path = stack.pop()
        for nxt in graph[node]:
            if nxt == start:
                return [*path, start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None


def test_no_import_cycles():
    names = module_names()
    graph = {name: imports_of(path, names) - {name} for name, path in names.items()}
    cycles = [c for name in graph if (c := cycle_from(name, graph))]
    assert not cycles, " ; ".join(" -> ".join(c) for c in cycles[:3])
