"""The layout shows the architecture, and this test keeps it so (docs/architecture.md).

Every import in `vidaccel/`, `kernels/` (installed as `vidaccel.kernels`) and `pipelines/`
(`vidaccel.pipelines`) - module level and inside functions alike - is read with `ast`. The import
graph must have no cycle, and each unit may import only the units listed for it in `ALLOWED`:
the core imports no method, kernels import nothing of vidaccel, the report imports no CLI.
"""

import ast
import pathlib

import pytest

import vidaccel

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = {"vidaccel": ROOT / "vidaccel", "vidaccel.kernels": ROOT / "kernels", "vidaccel.pipelines": ROOT / "pipelines"}

# unit -> the units it may import (besides itself). "vidaccel" is the package facade (vidaccel/__init__.py).
ALLOWED = {
    "version": set(),
    "kernels": set(),
    "metrics": set(),
    "core": set(),
    "report": {"version"},
    "sparse": {"core", "kernels"},
    "freeswim": {"core", "sparse"},
    "caches": {"core", "version"},
    "api": {"core", "sparse", "freeswim", "caches"},
    "distributed": {"core", "sparse"},
    "support": {"core", "sparse"},
    "tuning": {"core", "sparse", "version"},
    "vidaccel": {"api", "distributed", "caches", "freeswim", "sparse", "support", "tuning", "core", "version"},
    "pipelines": {"freeswim", "report"},
    "tiny": {"vidaccel"},
    "cli": {"vidaccel", "api", "core", "sparse", "freeswim", "caches", "distributed", "metrics", "report", "tiny",
            "pipelines", "tuning", "version"},
}


def _modules() -> dict[str, pathlib.Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if package == "vidaccel" and parts[:1] in (["kernels"], ["pipelines"]):
                continue  # links that scripts/gpu_check.sh makes on the GPU machine
            found[".".join([package, *parts])] = path
    return found


MODULES = _modules()


def unit(module: str) -> str:
    """vidaccel.kernels.* -> kernels, vidaccel.sparse.plan -> sparse, vidaccel.api -> api, vidaccel -> vidaccel."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "vidaccel"


def _targets(module: str, path: pathlib.Path, node) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    if node.level:
        base = base[: len(base) - node.level + 1]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module
    return [target] + [f"{target}.{alias.name}" for alias in node.names]


def _imports(module: str, path: pathlib.Path) -> set[str]:
    """The vidaccel modules `module` imports (the longest known prefix of each import)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for target in _targets(module, path, node):
                while target and target not in MODULES:
                    target = target.rpartition(".")[0]
                if target and target != module and not module.startswith(target + "."):
                    out.add(target)
    return out


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def test_the_graph_covers_the_package():
    assert {"vidaccel.core.features", "vidaccel.sparse.attention", "vidaccel.kernels.ops",
            "vidaccel.pipelines.freeswim", "vidaccel.cli.main"} <= set(MODULES)
    assert "vidaccel.sparse.attention" in GRAPH["vidaccel.sparse.route"]  # relative imports resolve
    assert "vidaccel.kernels" in GRAPH["vidaccel.sparse.attention"]  # imports inside functions count
    assert set(map(unit, MODULES)) == set(ALLOWED)  # every unit has a rule


def test_no_import_cycles():
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(GRAPH):
        if module not in index:
            visit(module)
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("source", sorted(ALLOWED))
def test_each_unit_imports_only_what_its_layer_allows(source):
    wrong = sorted(f"{m} -> {t}" for m, targets in GRAPH.items() if unit(m) == source
                   for t in targets if unit(t) != source and unit(t) not in ALLOWED[source])
    assert not wrong, f"{source} may import only {sorted(ALLOWED[source])}: {wrong}"


def test_the_rules_themselves_have_no_cycle_and_keep_the_core_and_kernels_free():
    assert ALLOWED["core"] == set() and ALLOWED["kernels"] == set()
    assert not {"cli", "tiny", "pipelines"} & ALLOWED["report"]
    assert not {"sparse", "freeswim", "caches"} & ALLOWED["core"]
    order, seen = [], set()

    def place(u, path=()):
        assert u not in path, f"layer rules form a cycle: {path + (u,)}"
        if u not in seen:
            for dep in ALLOWED[u]:
                place(dep, path + (u,))
            seen.add(u)
            order.append(u)

    for u in ALLOWED:
        place(u)


def test_no_subpackage_shares_a_name_with_a_public_function():
    subpackages = {p.name for p in (ROOT / "vidaccel").iterdir() if (p / "__init__.py").is_file()}
    modules = {p.stem for p in (ROOT / "vidaccel").glob("*.py")}
    public_callables = {n for n in vidaccel.__all__ if callable(getattr(vidaccel, n))}
    assert not (subpackages | modules) & public_callables
