"""The import contract (docs/architecture.md, "Layers"): imports point down only, and no module imports
itself back through others. Read from the source with `ast`, so an import inside a function or under
`TYPE_CHECKING` counts like any other: a cycle a type checker needs is still a cycle to read."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("policies", "drivers", "simulators", "daemon")

# Rank of each part of the project: a module may import its own rank or lower ones, never higher.
# Within daemon: the command line on top; the site daemon, the edge agents, the fleet dispatcher and
# the replay (the same core on a simulated clock) side by side (none imports another); the
# active/standby pair; the controller core; then what everything shares (config, journal and
# reports, metrics, logs, secrets, listeners).
RANKS = (
    ("mullet.policies", 0),
    ("mullet.drivers", 1),
    ("mullet.simulators", 2),
    ("mullet.daemon", 3),  # the shared modules at daemon/'s top level, and daemon.config, daemon.records
    ("mullet.daemon.records", 3),
    ("mullet.daemon.config", 3),
    ("mullet.daemon.core", 4),
    ("mullet.daemon.pair", 5),
    ("mullet.daemon.site", 6),
    ("mullet.daemon.agents", 6),
    ("mullet.daemon.fleet", 6),
    ("mullet.daemon.replay", 6),
    ("mullet.daemon.cli", 7),
)
SIBLINGS = ("mullet.daemon.site", "mullet.daemon.agents", "mullet.daemon.fleet", "mullet.daemon.replay")


def module_files() -> Iterator[tuple[str, Path]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            yield "mullet." + ".".join(parts), path


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Project modules `name` imports (a `from package import module` counts as the module)."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    files = dict(module_files())
    known = set(files)
    return {name: imports_of(name, path, known) for name, path in files.items()}


def rank(module: str) -> tuple[int, str]:
    best = ("", -1)
    for prefix, level in RANKS:
        if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best[0]):
            best = (prefix, level)
    return best[1], best[0]


def test_imports_point_down_only() -> None:
    upward = []
    for module, targets in sorted(graph().items()):
        level, home = rank(module)
        for target in sorted(targets):
            target_level, target_home = rank(target)
            sideways = home in SIBLINGS and target_home in SIBLINGS and home != target_home
            if target_level > level or sideways:
                upward.append(f"{module} -> {target}")
    assert not upward, "imports that point up or sideways:\n" + "\n".join(upward)


def test_policies_import_nothing_of_the_project_and_drivers_only_policies() -> None:
    wrong = []
    for module, targets in graph().items():
        for target in targets:
            if module.startswith("mullet.policies") and not target.startswith("mullet.policies"):
                wrong.append(f"{module} -> {target}")
            if module.startswith("mullet.drivers") and not target.startswith(
                ("mullet.drivers", "mullet.policies")
            ):
                wrong.append(f"{module} -> {target}")
            if module.startswith("mullet.simulators") and target.startswith("mullet.daemon"):
                wrong.append(f"{module} -> {target}")
    assert not wrong, "\n".join(sorted(wrong))


def test_no_import_cycles_between_modules() -> None:
    edges = graph()
    # Tarjan's strongly connected components: any component of two or more modules is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_contract_sees_the_whole_project() -> None:
    """A contract over an empty or partial graph would pass for nothing."""
    edges = graph()
    assert {"mullet.daemon.core.controller", "mullet.daemon.site.app", "mullet.policies.plan"} <= set(edges)
    assert "mullet.daemon.core.controller" in edges["mullet.daemon.site.app"]
    assert sum(len(t) for t in edges.values()) > 200
