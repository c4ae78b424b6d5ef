"""The dependency rules of docs/architecture.md, checked on the source (no imports executed).

Every ``import`` in ``regkit/`` and ``cli/`` (installed as ``regkit.cli``) counts, also those inside
functions (kept there only to make ``import`` fast, they are dependencies all the same):

* no import cycles between modules, and none between the units of :data:`LAYERS` (a package such
  as ``regkit.io``, or a top-level module such as ``regkit.space``);
* a unit imports only units of a LOWER layer, or of its own layer when ``SIBLING_IMPORTS``
  allows it. So ``io``/``space``/``transforms``/``losses`` never import an engine or the CLI, the
  engines (``optimize``, ``nn``, ``train``) never import the CLI or ``workflows``, and of the
  engines only ``train`` imports ``nn`` (a trainer trains the network);
* every module of ``regkit/`` and ``cli/`` belongs to exactly one unit of :data:`LAYERS`.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

ROOT = Path(__file__).resolve().parents[1]

# bottom to top
LAYERS: List[Set[str]] = [
    # errors; the similarity metrics by name (plain data)
    {"regkit.errors", "regkit.similarities"},
    # conventions: world/voxel/normalised coordinates; memory budgets; torch devices and threads
    {"regkit.space", "regkit.resources", "regkit.devices"},
    # a grid in world space: affine + shape
    {"regkit.grid"},
    # data in world space
    {"regkit.image", "regkit.transforms"},
    # operations on images and transforms
    {"regkit.resample", "regkit.inverse", "regkit.checks"},
    # files: images, transforms, manifests, a registration's result folder
    {"regkit.io"},
    # the settings schemas' strict base and YAML reader
    {"regkit.config"},
    # what the engines share
    {"regkit.intensity", "regkit.losses", "regkit.pyramid"},
    # what is computed from results
    {"regkit.metrics"},
    {"regkit.report", "regkit.export"},
    # the engines, siblings
    {"regkit.optimize", "regkit.nn", "regkit.train"},
    # jobs that combine engines (a cascade's prediction refined by the optimiser; cohorts)
    {"regkit.workflows"},
    # the command line, a thin shell
    {"regkit.cli"},
]
SIBLING_IMPORTS = {("regkit.train", "regkit.nn")}  # (importer, imported) within one layer
PACKAGES = {"regkit.io", "regkit.transforms", "regkit.losses", "regkit.optimize", "regkit.nn", "regkit.train",
            "regkit.workflows", "regkit.cli"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] == "cli":
        parts = ["regkit", "cli"] + parts[1:]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> Dict[str, Path]:
    files = [*(ROOT / "regkit").rglob("*.py"), *(ROOT / "cli").glob("*.py")]
    return {_module_name(p): p for p in sorted(files)}


def _root_exports() -> Dict[str, str]:
    """``regkit.__init__``'s lazy names -> their modules (``from regkit import Image`` is regkit.image)."""
    tree = ast.parse((ROOT / "regkit" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "_EXPORTS":
            return ast.literal_eval(node.value)
    return {}


def import_graph() -> Dict[str, Set[str]]:
    """module -> the regkit modules it imports (anywhere in its source)."""
    sources, exports = _sources(), _root_exports()
    graph: Dict[str, Set[str]] = {}
    for name, path in sources.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps: Set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                for a in node.names:
                    if f"{module}.{a.name}" in sources:
                        deps.add(f"{module}.{a.name}")
                    elif module == "regkit" and a.name in exports:
                        deps.add(exports[a.name])
                    else:
                        deps.add(module)
        graph[name] = {d for d in deps if d in sources and d != name}
    return graph


def unit_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if ".".join(parts[:2]) in PACKAGES else module


def _layer_of() -> Dict[str, int]:
    return {unit: i for i, layer in enumerate(LAYERS) for unit in layer}


def _cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _unit_graph(graph: Dict[str, Set[str]]) -> Dict[str, Set[str]]:
    units: Dict[str, Set[str]] = {}
    for module, deps in graph.items():
        units.setdefault(unit_of(module), set()).update(unit_of(d) for d in deps if unit_of(d) != unit_of(module))
    return units


def test_every_module_has_a_layer():
    layer = _layer_of()
    assert sorted({unit_of(m) for m in _sources() if m != "regkit"} - set(layer)) == []


def test_no_import_cycles_between_modules():
    graph = import_graph()
    graph.pop("regkit", None)  # the package's names are imported lazily, on first use
    assert _cycles(graph) == []


def test_no_import_cycles_between_units():
    assert _cycles(_unit_graph(import_graph())) == []


def test_imports_point_down_the_layers():
    layer = _layer_of()
    wrong = []
    for unit, deps in _unit_graph(import_graph()).items():
        for dep in deps:
            if dep == "regkit" or unit == "regkit":
                continue
            if layer[dep] > layer[unit] or (layer[dep] == layer[unit] and (unit, dep) not in SIBLING_IMPORTS):
                wrong.append(f"{unit} (layer {layer[unit]}) imports {dep} (layer {layer[dep]})")
    assert sorted(wrong) == []


def test_the_rules_of_the_issue():
    """The rules stated in words (a check of the table above as much as of the code)."""
    units = _unit_graph(import_graph())
    engines, cli = {"regkit.optimize", "regkit.nn", "regkit.train"}, "regkit.cli"
    for bottom in ("regkit.losses", "regkit.transforms", "regkit.io", "regkit.space"):
        assert not units[bottom] & (engines | {cli, "regkit.workflows"}), bottom
    for engine in engines:
        assert cli not in units[engine] and "regkit.workflows" not in units[engine], engine
    assert not units["regkit.nn"] & {"regkit.train", "regkit.optimize"}
    assert not units["regkit.optimize"] & {"regkit.nn", "regkit.train"}
    assert "regkit.optimize" not in units["regkit.train"]


def test_monai_only_in_training_and_only_when_used():
    """``import monai`` costs seconds per process (benchmarks/README.md, "Why not MONAI's"): only the
    training package uses it, and only inside the function that builds its loss, so neither
    ``regkit register`` nor ``import regkit.train`` pays for it."""
    found = []
    for name, path in _sources().items():
        tree = ast.parse(path.read_text(), str(path))
        top_level = set(map(id, tree.body))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n.split(".")[0] == "monai" for n in names):
                found.append((name, id(node) in top_level))
    assert found and all(unit_of(m) == "regkit.train" and not top for m, top in found), found


def test_docs_table_is_this_table():
    """docs/architecture.md's layer table lists exactly :data:`LAYERS` (so the picture matches the code)."""
    import re

    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| (\d+) \| ([^|]+) \|", text, flags=re.M)
    documented = [{"regkit." + name.strip("/") for name in re.findall(r"`([^`]+)`", modules)} for _, modules in rows]
    assert [int(n) for n, _ in rows] == list(range(len(LAYERS)))
    assert documented == LAYERS


def test_the_cycle_finder_finds_cycles():
    """The checker itself: a ring of three and a pair are found, a chain is not."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"e"}, "e": {"d"}, "f": {"a"}}
    assert sorted(_cycles(graph)) == [["a", "b", "c"], ["d", "e"]]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
