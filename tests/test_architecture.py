"""The import graph of the project's own code: no cycles, and catalog never imports recommender.

The graph is read from source, never by importing anything: every ``.py`` file under the
project packages (``config``, ``catalog``, ``recommender``, ``bench``) is parsed and every
``import`` statement in it becomes an edge, wherever it sits — module level, inside a function
or a method, under ``if TYPE_CHECKING:``, in a ``try``. A function-local import that dodges a
cycle at import time is still a cycle in the design, and a type-only import is still a
dependency, so both count.

How a statement becomes an edge (``importer → imported``):

- ``import a.b.c`` → ``a.b.c``.
- ``from a.b import name`` → ``a.b.name`` when that is a module of the project, else ``a.b``
  (the name is defined in, or re-exported by, ``a/b/__init__.py``); ``from a.b import *`` → ``a.b``.
- Relative imports are resolved against the importing module's package first
  (``from ..models import X`` in ``catalog/services/items.py`` is ``catalog.models``).
- Importing ``a.b.c`` does NOT add edges to the parent packages ``a`` and ``a.b``. Python does
  run their ``__init__`` first, but the importing code did not choose that, and counting it would
  turn every package whose ``__init__`` re-exports its submodules into a cycle with each of them.
  A module that really uses something from a package's ``__init__`` names it
  (``from a.b import name``), and that is an edge.
- A dotted name that is not a module of the project (a typo, or a module that no longer exists)
  falls back to its longest prefix that is one. Imports of anything outside the project packages
  (Django, numpy, the tests) are not edges, and neither is a module importing itself (it gets
  itself back from ``sys.modules``; nothing depends on anything else).

One string spelling counts too, because it is an import by another name: Django's model
lookups, ``apps.get_model("app", "Model")`` / ``apps.get_model("app.Model")``, and lazy
relations, ``ForeignKey("app.Model")`` (also ``OneToOneField``, ``ManyToManyField``), are
edges to ``<app>.models`` when the project has that module (the app label is the package name
here). Other strings are not seen (``importlib.import_module``, ``INSTALLED_APPS``, Celery's
autodiscovery, ``include("app.urls")``): they are configuration, not code depending on code.

Cycles are the strongly connected components of the graph with more than one module. Each is
reported with, for every import inside it, the shortest chain of imports that leads back to
where it started, so every import that takes part in a cycle appears in the message with its
line.
"""

from __future__ import annotations

import ast
import textwrap
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROJECT_PACKAGES = ("config", "catalog", "recommender", "bench")


@dataclass(frozen=True)
class Import:
    """One import statement of the project that names another module of the project."""

    importer: str
    imported: str
    line: int
    via: str = ""  # set for a string lookup, e.g. "apps.get_model('recommender', 'ModelVersion')"


def modules_find(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """Dotted module name → file, for every ``.py`` file under ``root/<package>``."""
    modules: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _known_prefix(name: str, modules: dict[str, Path]) -> str | None:
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def _relative_base(importer: str, path: Path, level: int) -> str:
    """The package a ``from <dots> import`` with ``level`` dots starts from."""
    package = importer.split(".") if path.name == "__init__.py" else importer.split(".")[:-1]
    if level - 1 >= len(package):
        raise ValueError(f"{path}: relative import goes above the top-level package")
    return ".".join(package[: len(package) - (level - 1)])


_MODEL_LOOKUPS = {"get_model", "ForeignKey", "OneToOneField", "ManyToManyField"}


def _model_lookup(node: ast.Call, modules: dict[str, Path]) -> tuple[str, str] | None:
    """``(<app>.models, how it was spelled)`` for a model named by app label in a string, else None."""
    function = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
    if function not in _MODEL_LOOKUPS or not node.args:
        return None
    first = node.args[0]
    if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
        return None
    if "." in first.value:
        label = first.value.split(".")[0]
    elif function == "get_model":
        label = first.value
    else:
        return None  # ForeignKey("Item"): a model of the same app
    if f"{label}.models" not in modules:
        return None
    return f"{label}.models", f"{function}({', '.join(ast.unparse(arg) for arg in node.args[:2])})"


def _import_targets(
    node: ast.Import | ast.ImportFrom, importer: str, path: Path, modules: dict[str, Path]
) -> list[str]:
    """The dotted names one import statement makes ``importer`` depend on (see the module docstring)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = _relative_base(importer, path, node.level)
        source = ".".join(part for part in (base, node.module) if part)
    else:
        source = node.module or ""
    targets = []
    for alias in node.names:
        submodule = f"{source}.{alias.name}"
        targets.append(submodule if alias.name != "*" and submodule in modules else source)
    return targets


def imports_find(modules: dict[str, Path]) -> list[Import]:
    """Every edge between project modules, one per imported module per statement."""
    found: list[Import] = []
    for importer, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                for target in _import_targets(node, importer, path, modules):
                    imported = _known_prefix(target, modules)
                    if imported is not None and imported != importer:
                        found.append(Import(importer=importer, imported=imported, line=node.lineno))
            elif isinstance(node, ast.Call) and (lookup := _model_lookup(node, modules)) and lookup[0] != importer:
                found.append(Import(importer=importer, imported=lookup[0], line=node.lineno, via=lookup[1]))
    return sorted(set(found), key=lambda edge: (edge.importer, edge.line, edge.imported))


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (a deep import chain must not hit the recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            advanced = False
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = counter
                    counter += 1
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph[successor]))))
                    advanced = True
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def _shortest_path(graph: dict[str, set[str]], start: str, goal: str, within: set[str]) -> list[str]:
    previous: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if node == goal:
            path = [node]
            step = previous[node]
            while step is not None:
                path.append(step)
                step = previous[step]
            return path[::-1]
        for successor in sorted(graph[node] & within):
            if successor not in previous:
                previous[successor] = node
                queue.append(successor)
    raise AssertionError(f"{goal} is not reachable from {start} inside its own component")


def cycles_find(imports: Iterable[Import]) -> list[list[list[Import]]]:
    """Import cycles, one list per strongly connected component.

    Each component's list holds cycles as lists of imports (the last one leads back to the first
    importer): for every import inside the component, the shortest cycle through it, without
    repeats. Together they show every import that takes part in a cycle.
    """
    imports = list(imports)
    graph: dict[str, set[str]] = {}
    first_line: dict[tuple[str, str], Import] = {}
    for edge in imports:
        graph.setdefault(edge.importer, set()).add(edge.imported)
        graph.setdefault(edge.imported, set())
        key = (edge.importer, edge.imported)
        if key not in first_line or edge.line < first_line[key].line:
            first_line[key] = edge
    found: list[list[list[Import]]] = []
    for component in sorted(_strongly_connected(graph)):
        if len(component) == 1:
            continue
        members = set(component)
        cycles: list[list[Import]] = []
        seen: set[tuple[str, ...]] = set()
        for importer in component:
            for imported in sorted(graph[importer] & members):
                chain = [importer, *_shortest_path(graph, imported, importer, members)]
                modules = chain[:-1]
                rotation = modules.index(min(modules))
                canonical = tuple(modules[rotation:] + modules[:rotation])
                if canonical in seen:
                    continue
                seen.add(canonical)
                cycles.append([first_line[(a, b)] for a, b in pairwise(chain)])
        found.append(cycles)
    return found


def cycles_describe(components: list[list[list[Import]]]) -> str:
    """One line per component, then one per cycle: ``a (line 3) → b (line 9) → a`` reads "line 3
    of a imports b, whose line 9 imports a"."""
    lines = []
    for cycles in components:
        members = sorted({edge.importer for cycle in cycles for edge in cycle})
        lines.append(f"cycle among {len(members)} modules: {', '.join(members)}")
        for cycle in cycles:
            steps = [f"{edge.importer} (line {edge.line}{', ' + edge.via if edge.via else ''})" for edge in cycle]
            lines.append("    " + " → ".join([*steps, cycle[0].importer]))
    return "\n".join(lines)


def forbidden_imports_find(imports: Iterable[Import], *, importer_package: str, imported_package: str) -> list[Import]:
    """Imports from a module of ``importer_package`` into any module of ``imported_package``."""

    def inside(module: str, package: str) -> bool:
        return module == package or module.startswith(package + ".")

    return [
        edge for edge in imports if inside(edge.importer, importer_package) and inside(edge.imported, imported_package)
    ]


def _project_imports() -> tuple[dict[str, Path], list[Import]]:
    modules = modules_find(REPO, PROJECT_PACKAGES)
    return modules, imports_find(modules)


def test_the_project_has_no_import_cycles():
    _, imports = _project_imports()
    cycles = cycles_find(imports)
    assert cycles == [], "import cycles (module-level and function-level imports alike):\n" + cycles_describe(cycles)


def test_catalog_imports_nothing_from_recommender():
    modules, imports = _project_imports()
    forbidden = forbidden_imports_find(imports, importer_package="catalog", imported_package="recommender")
    report = "\n".join(
        f"{modules[edge.importer].relative_to(REPO)}:{edge.line}: {edge.importer} imports {edge.imported}"
        + (f" through {edge.via}" if edge.via else "")
        for edge in forbidden
    )
    assert forbidden == [], "catalog must not import recommender (the data flows one way):\n" + report


def test_the_graph_sees_the_project():
    """Guard against a check that passes because it read nothing: known edges are found."""
    modules, imports = _project_imports()
    edges = {(edge.importer, edge.imported) for edge in imports}
    assert {"catalog.models", "catalog.services.feedback", "recommender.ml.training", "config.settings"} <= set(modules)
    assert ("catalog.services.feedback", "catalog.models") in edges
    assert ("config.settings.development", "config.settings.base") in edges  # `from .base import *`


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")


def test_the_checks_find_a_planted_cycle_and_a_planted_forbidden_import(tmp_path):
    # A re-exporting __init__ whose submodules import each other through the package path: with
    # no edge to the parent package from `import shop.prices`, this part alone is no cycle.
    # The planted cycle: prices -> pricing.tax at module level, pricing.tax -> prices inside a
    # function, spelled relatively from two packages down.
    # The planted forbidden imports, stock -> shop: one inside a method, as `from package import
    # name`, two spelled as strings (a lazy relation and apps.get_model).
    _write(
        tmp_path,
        {
            "shop/__init__.py": "from .orders import order_place\n",
            "shop/orders.py": """
                import shop.prices

                def order_place():
                    return shop.prices.price()
            """,
            "shop/prices.py": """
                from shop.pricing import tax

                def price():
                    return tax.rate()
            """,
            "shop/pricing/__init__.py": "",
            "shop/pricing/tax.py": """
                def rate():
                    from .. import prices  # dodges the cycle at import time
                    return 0.2 if prices else 0
            """,
            "shop/models.py": "",
            "stock/__init__.py": "",
            "stock/levels.py": """
                class Level:
                    def reorder(self):
                        from shop import order_place
                        return order_place()
            """,
            "stock/clean.py": """
                import os
                from stock import levels
            """,
            "stock/models.py": """
                from django.db import models

                class Bin(models.Model):
                    order = models.ForeignKey("shop.Order", on_delete=models.CASCADE)
                    twin = models.ForeignKey("Bin", on_delete=models.CASCADE)  # same app: no edge
            """,
            "stock/report.py": """
                from django.apps import apps

                def report():
                    return apps.get_model("shop", "Order"), apps.get_model("stock.Bin")
            """,
        },
    )
    modules = modules_find(tmp_path, ["shop", "stock"])
    imports = imports_find(modules)

    assert set(modules) == {
        "shop",
        "shop.models",
        "shop.orders",
        "shop.prices",
        "shop.pricing",
        "shop.pricing.tax",
        "stock",
        "stock.clean",
        "stock.levels",
        "stock.models",
        "stock.report",
    }
    assert {(edge.importer, edge.imported, edge.line, edge.via) for edge in imports} == {
        ("shop", "shop.orders", 1, ""),
        ("shop.orders", "shop.prices", 1, ""),
        ("shop.prices", "shop.pricing.tax", 1, ""),
        ("shop.pricing.tax", "shop.prices", 2, ""),
        ("stock.levels", "shop", 3, ""),
        ("stock.clean", "stock.levels", 2, ""),
        ("stock.models", "shop.models", 4, "ForeignKey('shop.Order')"),
        ("stock.report", "shop.models", 4, "get_model('shop', 'Order')"),
        ("stock.report", "stock.models", 4, "get_model('stock.Bin')"),
    }

    cycles = cycles_find(imports)
    assert [[(edge.importer, edge.imported) for edge in cycle] for component in cycles for cycle in component] == [
        [("shop.prices", "shop.pricing.tax"), ("shop.pricing.tax", "shop.prices")],
    ]
    assert cycles_describe(cycles).splitlines() == [
        "cycle among 2 modules: shop.prices, shop.pricing.tax",
        "    shop.prices (line 1) → shop.pricing.tax (line 2) → shop.prices",
    ]

    forbidden = forbidden_imports_find(imports, importer_package="stock", imported_package="shop")
    assert [(edge.importer, edge.imported, edge.line) for edge in forbidden] == [
        ("stock.levels", "shop", 3),
        ("stock.models", "shop.models", 4),
        ("stock.report", "shop.models", 4),
    ]
    assert forbidden_imports_find(imports, importer_package="shop", imported_package="stock") == []


def test_a_cycle_through_three_modules_is_one_component_with_every_import_shown(tmp_path):
    _write(
        tmp_path,
        {
            "ring/__init__.py": "",
            "ring/a.py": "from ring import b\n",
            "ring/b.py": "from ring.c import anything\n",
            "ring/c.py": """
                import ring.a
                import ring.b
            """,
            "ring/me.py": "from ring import me\n",  # itself: not an edge, so not a cycle
        },
    )
    cycles = cycles_find(imports_find(modules_find(tmp_path, ["ring"])))
    described = cycles_describe(cycles).splitlines()
    assert described == [
        "cycle among 3 modules: ring.a, ring.b, ring.c",
        "    ring.a (line 1) → ring.b (line 1) → ring.c (line 1) → ring.a",
        "    ring.b (line 1) → ring.c (line 2) → ring.b",
    ]
